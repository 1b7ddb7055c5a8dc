//! The replicated log of a vipool pair: a raft-rs member on tokio with
//! persistent storage, two-node takeover and an optional witness.
//!
//! The crate knows nothing about licenses: the license table plugs in
//! through [`StateMachine`].
#![warn(missing_docs, unreachable_pub)]

mod state_machine;

pub use state_machine::{SnapshotError, StateMachine};
