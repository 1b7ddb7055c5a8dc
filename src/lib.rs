//! vipool: a high-availability license server pair for network switches.
//!
//! - [`table`]: the shared license table, a pure deterministic state machine
//!   that the `cluster` crate replicates;
//! - [`proto`]: the client protocol (length-prefixed, versioned bincode frames);
//! - [`server`]: answers clients from the table, only on the VIP;
//! - [`client`]: one connection to the server; [`switch`]: a simulated switch on top of it;
//! - [`views`]: the operator views of `vipool show`;
//! - [`node`]: one server of the pair (VRRP, the replicated table and the server together);
//! - [`license`]: signed license keys, their issuers, and the keys a server trusts.
//!
//! The heart of the service is the [`table`]: the shared license table as a
//! pure, deterministic state machine. Every change to it is a
//! [`table::Command`], stamped with the proposer's clock, so that the same
//! commands applied in the same order give the same table on every node.
//!
//! ```
//! use std::collections::BTreeMap;
//! use vipool::table::{Command, Key, LicenseTable, LicenseType, TableConfig};
//!
//! let mut table = LicenseTable::new(TableConfig::default());
//! let ap = LicenseType::new("AP");
//! for (n, server) in ["primary", "backup"].into_iter().enumerate() {
//!     let key = Key { license_type: ap.clone(), count: 16, expires_at_ms: None };
//!     let command = Command::InstallServerKey {
//!         now_ms: 0,
//!         key_id: format!("{server}-ap"),
//!         server: server.into(),
//!         key,
//!     };
//!     table.apply_command(n as u64 + 1, command).unwrap();
//! }
//! assert_eq!(table.pool().get(&ap).unwrap().total, 32);
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod client;
pub mod config;
pub mod license;
pub mod node;
pub mod pki;
pub mod proto;
pub mod server;
pub mod switch;
pub mod table;
pub mod tls;
pub mod views;
