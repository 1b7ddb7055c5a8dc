//! The replicated log of a vipool pair: a raft-rs member on tokio with
//! persistent storage, two-node takeover and an optional witness.
//!
//! The crate knows nothing about licenses: the license table plugs in
//! through [`StateMachine`].
//!
//! # Shape
//!
//! - [`storage`]: the log on disk ([`LogStore`] over a redb [`Disk`]), fsynced
//!   once per raft `Ready` before anything that depends on it is sent.
//! - [`node`]: the sans-IO member ([`Node`]): one `RawNode`, the store and the
//!   state machine; `Ready` handled in the order raft-rs documents;
//!   proposals tracked by `(term, index)`; ReadIndex reads; snapshots and
//!   compaction; membership; two-node takeover, split-brain yield, witness,
//!   preferred leader. Time is a [`Node::tick`] call.
//! - [`member`]: the tokio task that owns the node ([`Member`] is its handle).
//! - [`transport`]: raft messages over TCP ([`TcpTransport`]).
//!
//! # Two servers
//!
//! With two voters neither can commit alone. When the caller has independent
//! evidence that its peer is gone (VRRP mastership), it calls
//! [`Member::take_over_as_sole_voter`]: this member becomes the only voter and
//! leader, keeps its log, snapshots, and keeps the peer as a learner. When the
//! peer returns it catches up (by snapshot if needed) and the sole voter
//! promotes it back to voter on its own.
//!
//! A takeover is refused to a member that cannot show its log is complete:
//! one that is not in sync ([`Status::in_sync`]: since it started it neither
//! led nor reached its leader's commit index, learned from appends or a
//! ReadIndex probe, or a leader has since shown it behind by repairing its
//! log; and in sync only with the leader, in the term, that said so), and
//! one whose log shows it was demoted to learner (its peer led
//! alone and may hold writes it lacks).
//! [`Member::force_take_over_as_sole_voter`] skips the first check, for an
//! operator who knows the peer is gone for good.
//!
//! If both members take over during a partition, the first leader message
//! across the healed link reveals it: the side with the lower term (then the
//! higher id) yields, discards its log, rebuilds from the other's snapshot and
//! logs it at error level ([`Status::last_yield`]). Writes it acknowledged
//! alone are lost from the pair: the documented risk of a pair without a
//! witness. They are not lost for the operator: before it discards anything
//! the member keeps its whole log ([`DiscardedLog`], each command described
//! by [`StateMachine::describe`]) where its [`Disk`] keeps such things, a
//! file next to the store; if that fails it stops instead.
//!
//! A witness ([`NodeConfig::witness`]) votes and stores the log but never
//! campaigns or leads, so a pair plus a witness fails over by election.
//! [`Member::set_preferred_leader`] moves leadership to the VIP holder once it
//! is caught up.
//!
//! A follower gets a command into the log with [`Member::submit`]: raft
//! forwards it to the leader and nothing confirms it, so the command must be
//! idempotent and the caller resubmits until it sees it applied. The leader
//! appends forwarded commands only from members of the configuration.
//!
//! # Example
//!
//! A one-member cluster with an in-memory disk and a counter:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cluster::{Disk, LogStore, Member, MemberConfig, Outbox, SnapshotError, StateMachine};
//!
//! #[derive(Default)]
//! struct Counter { applied: u64, total: u64 }
//!
//! impl StateMachine for Counter {
//!     type Command = u64;
//!     type Response = u64;
//!     fn apply(&mut self, index: u64, add: u64) -> u64 {
//!         self.applied = index;
//!         self.total += add;
//!         self.total
//!     }
//!     fn applied_index(&self) -> u64 { self.applied }
//!     fn snapshot(&self) -> Vec<u8> {
//!         [self.applied.to_be_bytes(), self.total.to_be_bytes()].concat()
//!     }
//!     fn restore(&mut self, b: &[u8]) -> Result<(), SnapshotError> {
//!         if b.len() != 16 { return Err(SnapshotError("want 16 bytes".into())); }
//!         self.applied = u64::from_be_bytes(b[..8].try_into().unwrap());
//!         self.total = u64::from_be_bytes(b[8..].try_into().unwrap());
//!         Ok(())
//!     }
//! }
//!
//! /// Nobody else to talk to.
//! struct Alone;
//! impl Outbox for Alone { fn send(&self, _: raft::eraftpb::Message) {} }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut cfg = MemberConfig::new(1);
//! cfg.tick = Duration::from_millis(5);
//! let store = LogStore::open(Disk::memory()).unwrap();
//! let member = Member::start(cfg, store, Counter::default(), &[1], Arc::new(Alone)).unwrap();
//! // Wait for the election (the only voter wins it).
//! while member.status().await.unwrap().role != raft::StateRole::Leader {
//!     tokio::time::sleep(Duration::from_millis(5)).await;
//! }
//! assert_eq!(member.propose(2).await, Ok(2));
//! assert_eq!(member.propose(3).await, Ok(5));
//! assert_eq!(member.read(|c: &Counter| c.total).await, Ok(5));
//! member.shutdown().await;
//! # });
//! ```
#![warn(missing_docs, unreachable_pub)]

mod logger;
pub mod member;
pub mod node;
pub mod ratelog;
#[cfg(test)]
mod sim;
mod state_machine;
pub mod storage;
pub mod tls;
pub mod transport;

pub use member::{Leadership, Member, MemberConfig, Outbox, Status};
pub use node::{Applied, Node, NodeConfig, NodeError, Output, ProposeError, TakeoverError, Token};
/// raft-rs, re-exported for its message and configuration types.
pub use raft;
pub use state_machine::{SnapshotError, StateMachine};
pub use storage::{
    DiscardedEntry, DiscardedLog, DiscardedSnapshot, Disk, FlushSnapshot, FlushTimes, LogStore, StoreError,
    WriteFault, DISCARDED_FORMAT,
};
pub use transport::{TcpTransport, TransportConfig};
