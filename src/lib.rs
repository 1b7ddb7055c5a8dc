//! vipool: a high-availability license server pair for network switches.
//!
//! - [`clock`]: the wall and monotonic clocks, read in one place;
//! - [`table`]: the shared license table, a pure deterministic state machine
//!   that the `cluster` crate replicates;
//! - [`proto`]: the client protocol (length-prefixed, versioned bincode frames);
//! - [`server`]: answers clients from the table, only on the VIP;
//! - [`client`]: one connection to the server; [`switch`]: a simulated switch on top of it;
//! - [`views`]: the operator views of `vipool show`;
//! - [`node`]: one server of the pair (VRRP, the replicated table and the server together);
//! - [`license`]: signed license keys, their issuers, and the keys a server trusts;
//! - [`metrics`]: a node's OpenMetrics endpoint and status page (`[metrics] listen`).
//!
//! The heart of the service is the [`table`]: the shared license table as a
//! pure, deterministic state machine. Every change to it is a
//! [`table::Command`], stamped with the proposer's clock, so that the same
//! commands applied in the same order give the same table on every node.
//!
//! ```
//! use vipool::license::{IssuerKey, KeyStatement, TrustedIssuers};
//! use vipool::table::{Actor, Command, LicenseTable, LicenseType, TableConfig};
//!
//! // Keys count only if an issuer the servers trust signed them.
//! let acme = IssuerKey::generate("acme")?;
//! let trusted = TrustedIssuers::from_iter([acme.trusted()]);
//! let mut table = LicenseTable::new(TableConfig::default());
//! // The issuers the pair trusts are replicated state: the VIP holder
//! // records its own before any key; the table counts no other's keys.
//! let issuers = trusted.by_name_text();
//! table.apply_command(1, Command::Issuers { issuers, by: Actor::Server("primary".into()) })?;
//! let ap = LicenseType::new("AP");
//! let mut index = 1;
//! for (server, serial) in [("primary", "CV1"), ("backup", "CV2")] {
//!     // Each server announces its serial, then installs its keys, bound to it.
//!     index += 1;
//!     let announce = Command::ServerSerial { server: server.into(), serial: serial.into() };
//!     table.apply_command(index, announce)?;
//!     let key = acme.sign(KeyStatement {
//!         key_id: format!("{server}-ap"),
//!         license_type: ap.clone(),
//!         count: 16,
//!         serial: serial.into(),
//!         not_before: 0,
//!         expires: None,
//!         issuer: "acme".into(),
//!     })?;
//!     // Verified where the command is proposed; the table re-checks what it can.
//!     let key = key.verified(&trusted, serial, 1_750_000_000)?;
//!     index += 1;
//!     let by = Actor::Server(server.into());
//!     table.apply_command(index, Command::InstallServerKey { now_ms: 0, server: server.into(), key, by })?;
//! }
//! assert_eq!(table.pool().get(&ap).unwrap().total, 32);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod client;
pub mod clock;
pub mod config;
pub mod license;
pub mod metrics;
pub mod node;
pub mod pki;
pub mod proto;
pub mod server;
pub mod switch;
pub mod table;
pub mod tls;
pub mod usage;
pub mod views;
