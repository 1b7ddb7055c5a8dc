//! The commands that change the table, what applying one returns, and why
//! one can be refused.

use serde::{Deserialize, Serialize};

use super::{Client, ClientReport, Key, LicenseType, Pool};

/// A change to the license table, as proposed to the replicated log.
///
/// Everything time-dependent is in the command: the proposer (the leader)
/// stamps its clock into `now_ms` (milliseconds since the Unix epoch), and
/// applying never reads a clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A client announces itself, or re-announces itself (a new switch may
    /// register under the id of the one it replaces).
    Register {
        /// Leader's clock.
        now_ms: u64,
        /// Client id.
        id: String,
        /// Serial number.
        serial: String,
        /// Address the client connected from, as the server saw it.
        address: String,
        /// Software version.
        version: String,
        /// The client's whole license state.
        report: ClientReport,
    },
    /// Periodic heartbeat carrying the client's whole state; idempotent.
    Heartbeat {
        /// Leader's clock.
        now_ms: u64,
        /// Client id.
        id: String,
        /// Address the client connected from, as the server saw it.
        address: String,
        /// The client's whole license state.
        report: ClientReport,
    },
    /// Something changed on the client (an AP came up, a key was added or
    /// expired); sent at once with the client's whole state.
    Update {
        /// Leader's clock.
        now_ms: u64,
        /// Client id.
        id: String,
        /// The client's whole license state.
        report: ClientReport,
    },
    /// Take `count` licenses of a poolable type from the pool; granted only if
    /// that many are available when the command applies.
    Acquire {
        /// Leader's clock.
        now_ms: u64,
        /// Client id.
        id: String,
        /// Poolable type.
        license_type: LicenseType,
        /// How many (at least 1).
        count: u32,
    },
    /// Give `count` licenses of a type back to the pool.
    Release {
        /// Leader's clock.
        now_ms: u64,
        /// Client id.
        id: String,
        /// Poolable type.
        license_type: LicenseType,
        /// How many (at least 1, at most what the client uses).
        count: u32,
    },
    /// The operator removes a client and everything it contributes.
    RemoveClient {
        /// Client id.
        id: String,
    },
    /// The operator installs a key on one of the servers.
    InstallServerKey {
        /// Leader's clock (an already expired key is refused).
        now_ms: u64,
        /// Operator-chosen id of the key, unique in the table.
        key_id: String,
        /// Server (node name) the key belongs to.
        server: String,
        /// The key.
        key: Key,
    },
    /// The operator removes a server key.
    RemoveServerKey {
        /// Id given at installation.
        key_id: String,
    },
    /// The leader's periodic sweep: marks silent clients down, removes long
    /// silent ones and drops expired keys, all as of `now_ms`.
    Sweep {
        /// Leader's clock.
        now_ms: u64,
    },
}

impl Command {
    /// One line an operator reads: what a split-brain yield lists of the
    /// entries it discards (so that a lost grant can be redone by hand).
    /// Times are the leader's clock, in milliseconds since the Unix epoch.
    pub fn describe(&self) -> String {
        match self {
            Command::Register {
                now_ms,
                id,
                serial,
                address,
                version,
                report,
            } => format!(
                "register client {id:?} serial {serial:?} from {address} version {version:?}: {} at {now_ms}",
                describe_report(report)
            ),
            Command::Heartbeat {
                now_ms,
                id,
                address,
                report,
            } => format!(
                "heartbeat of client {id:?} from {address}: {} at {now_ms}",
                describe_report(report)
            ),
            Command::Update { now_ms, id, report } => {
                format!("update of client {id:?}: {} at {now_ms}", describe_report(report))
            }
            Command::Acquire {
                now_ms,
                id,
                license_type,
                count,
            } => format!("client {id:?} acquires {count} {license_type} at {now_ms}"),
            Command::Release {
                now_ms,
                id,
                license_type,
                count,
            } => format!("client {id:?} releases {count} {license_type} at {now_ms}"),
            Command::RemoveClient { id } => format!("remove client {id:?}"),
            Command::InstallServerKey {
                now_ms,
                key_id,
                server,
                key,
            } => format!(
                "install key {key_id:?} on server {server:?}: {} at {now_ms}",
                describe_key(key)
            ),
            Command::RemoveServerKey { key_id } => format!("remove server key {key_id:?}"),
            Command::Sweep { now_ms } => format!("sweep at {now_ms}"),
        }
    }
}

fn describe_key(key: &Key) -> String {
    match key.expires_at_ms {
        Some(at) => format!("{} {} (evaluation, expires at {at})", key.count, key.license_type),
        None => format!("{} {}", key.count, key.license_type),
    }
}

fn describe_report(report: &ClientReport) -> String {
    let counts = |m: &std::collections::BTreeMap<super::LicenseType, u32>| {
        m.iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let keys: Vec<String> = report.keys.iter().map(describe_key).collect();
    format!(
        "uses [{}] from the pool, keys [{}], built-in [{}]",
        counts(&report.used),
        keys.join(", "),
        counts(&report.builtin)
    )
}

/// What applying a command returns to its proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// A client command was applied: the server's view of that client and the pool.
    Client {
        /// The client after the command.
        client: Box<Client>,
        /// The pool after the command.
        pool: Pool,
    },
    /// The client was removed.
    ClientRemoved {
        /// The pool after the removal.
        pool: Pool,
    },
    /// A server key was installed or removed.
    ServerKey {
        /// The pool after the change.
        pool: Pool,
    },
    /// A sweep ran.
    Swept(SweepReport),
}

impl Reply {
    /// The pool after the command, if the reply carries one.
    pub fn pool(&self) -> Option<&Pool> {
        match self {
            Self::Client { pool, .. } | Self::ClientRemoved { pool } | Self::ServerKey { pool } => Some(pool),
            Self::Swept(_) => None,
        }
    }
}

/// What a sweep changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Clients marked down (missed too many heartbeats); their used licenses returned.
    pub down: Vec<String>,
    /// Clients silent so long that they and their contributions were removed.
    pub removed: Vec<String>,
    /// Expired evaluation keys dropped, on clients and servers together.
    pub expired_keys: u32,
}

impl SweepReport {
    /// Whether the sweep changed nothing but heartbeat statistics.
    pub fn is_empty(&self) -> bool {
        self.down.is_empty() && self.removed.is_empty() && self.expired_keys == 0
    }
}

/// Why a command was refused. A refused command never changes the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    /// An empty client id, key id or server name.
    #[error("id must not be empty")]
    EmptyId,
    /// No client of that id is registered.
    #[error("unknown client {0:?}")]
    UnknownClient(String),
    /// The configuration does not know this license type.
    #[error("unknown license type {0}")]
    UnknownType(LicenseType),
    /// Switch-specific types are never taken from or given to the pool.
    #[error("license type {0} is switch-specific and never pooled")]
    NotPoolable(LicenseType),
    /// A count of zero where at least one is needed.
    #[error("count must be at least 1")]
    ZeroCount,
    /// The type is over-subscribed: new grants are refused until it recovers.
    #[error("license type {license_type} is over-subscribed ({available} available)")]
    OverSubscribed {
        /// The type asked for.
        license_type: LicenseType,
        /// `total - used`, negative.
        available: i64,
    },
    /// Fewer licenses are available than asked for.
    #[error("not enough {license_type} licenses: {requested} requested, {available} available")]
    NotEnoughLicenses {
        /// The type asked for.
        license_type: LicenseType,
        /// How many were asked for.
        requested: u32,
        /// How many are available.
        available: i64,
    },
    /// A release of more than the client uses.
    #[error("cannot release {requested} {license_type}: client uses {used}")]
    ReleaseExceedsUsed {
        /// The type released.
        license_type: LicenseType,
        /// How many were to be released.
        requested: u32,
        /// How many the client uses.
        used: u32,
    },
    /// The per-client count would not fit.
    #[error("count overflow")]
    CountOverflow,
    /// A server key id already in use.
    #[error("server key {0:?} already installed")]
    KeyExists(String),
    /// No server key of that id.
    #[error("unknown server key {0:?}")]
    UnknownKey(String),
    /// An evaluation key that has already expired.
    #[error("key already expired")]
    KeyExpired,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::LicenseType;

    #[test]
    fn commands_describe_themselves_for_an_operator() {
        let ap = LicenseType::new("AP");
        let acquire = Command::Acquire {
            now_ms: 1_700_000_000_000,
            id: "sw1".into(),
            license_type: ap.clone(),
            count: 80,
        };
        assert_eq!(
            acquire.describe(),
            "client \"sw1\" acquires 80 AP at 1700000000000"
        );
        let mut report = ClientReport::default();
        report.used.insert(ap.clone(), 100);
        report.builtin.insert(ap.clone(), 16);
        report.keys.push(Key {
            license_type: ap,
            count: 4,
            expires_at_ms: Some(9),
        });
        let heartbeat = Command::Heartbeat {
            now_ms: 5,
            id: "sw2".into(),
            address: "192.0.2.50:1000".into(),
            report,
        };
        assert_eq!(
            heartbeat.describe(),
            "heartbeat of client \"sw2\" from 192.0.2.50:1000: uses [100 AP] from the pool, \
             keys [4 AP (evaluation, expires at 9)], built-in [16 AP] at 5"
        );
        assert_eq!(Command::Sweep { now_ms: 7 }.describe(), "sweep at 7");
    }
}
