//! The commands that change the table, what applying one returns, and why
//! one can be refused.

use serde::{Deserialize, Serialize};

use super::config::SettingsError;
use super::limits::TokenError;
use super::pool::Contributor;
use super::{Actor, Client, ClientReport, LicenseType, Pool, TableConfig, VerifiedKey};

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
    /// An operator removes a client and everything it contributes.
    RemoveClient {
        /// Client id.
        id: String,
        /// Who removes it (an operator).
        by: Actor,
    },
    /// A server announces its serial (`node.serial`): its own keys are
    /// bound to it, and keys installed for it are checked against it. A
    /// new serial (the server was replaced, SPEC §5) drops the keys bound
    /// to the old one: its keys are installed anew.
    ServerSerial {
        /// The server (node name).
        server: String,
        /// Its serial.
        serial: String,
    },
    /// Installs a key on one of the servers: the server itself from its
    /// key files, or an operator at run time.
    InstallServerKey {
        /// Leader's clock (an already expired key is refused).
        now_ms: u64,
        /// Server (node name) the key belongs to; its serial must be known
        /// and the key bound to it.
        server: String,
        /// The key, verified by the proposer; its key id must not be
        /// counted anywhere in the table yet.
        key: VerifiedKey,
        /// Who installs it.
        by: Actor,
    },
    /// Removes a server key.
    RemoveServerKey {
        /// The key's id.
        key_id: String,
        /// Who removes it.
        by: Actor,
    },
    /// The leader's periodic sweep: marks silent clients down, removes long
    /// silent ones and drops expired keys, all as of `now_ms`.
    Sweep {
        /// Leader's clock.
        now_ms: u64,
    },
    // New variants go last: bincode numbers variants by position, and the
    // logs and yield files already written must still decode.
    /// Sets the table's settings (license types and client timers) for
    /// every member from this entry on: the VIP holder proposes its
    /// configured settings when they differ from the replicated ones.
    Settings {
        /// The settings.
        settings: TableConfig,
        /// Who sets them (the server proposing its configuration).
        by: Actor,
    },
    /// A switch's command (register, heartbeat, update, acquire, release)
    /// with the issue time of the certificate it came over. Replacing a
    /// switch (SPEC §5) is a new certificate for the old id; the table
    /// remembers the newest certificate an id registered with, and refuses
    /// commands over an older one, so the replaced switch cannot take its
    /// id back (see `LicenseTable::cert_floor`).
    Certified {
        /// The certificate's not-before, seconds since the Unix epoch.
        issued_s: u64,
        /// The switch's command.
        command: Box<Command>,
    },
    /// Sets the issuers the pair trusts (a record, as the settings are:
    /// the VIP holder proposes its `license.issuers` when they differ from
    /// the replicated ones, and another server whose own differ says so).
    Issuers {
        /// Name to Ed25519 public key (URL-safe base64).
        issuers: std::collections::BTreeMap<String, String>,
        /// Who sets them (the server proposing its configuration).
        by: Actor,
    },
    /// A new TLS session-ticket key for every member (see `table::tickets`):
    /// the serving member proposes one when the newest is older than the
    /// rotation period. The table keeps the newest two.
    TicketKey {
        /// The key (secret: `describe` and `Debug` show its id only).
        key: super::TicketKey,
        /// Who made it (the serving server).
        by: Actor,
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
            Command::RemoveClient { id, by } => format!("{by} removes client {id:?}"),
            Command::ServerSerial { server, serial } => {
                format!("server {server:?} announces serial {serial:?}")
            }
            Command::InstallServerKey {
                now_ms,
                server,
                key,
                by,
            } => format!(
                "{by} installs on server {server:?} {} at {now_ms}",
                describe_key(key)
            ),
            Command::RemoveServerKey { key_id, by } => format!("{by} removes server key {key_id:?}"),
            Command::Sweep { now_ms } => format!("sweep at {now_ms}"),
            Command::Settings { settings, by } => {
                format!("{by} sets the table settings: {}", settings.describe())
            }
            Command::Certified { issued_s, command } => {
                format!("{} (certificate issued at {issued_s} s)", command.describe())
            }
            Command::Issuers { issuers, by } => {
                format!("{by} sets the trusted issuers: {}", describe_issuers(issuers))
            }
            Command::TicketKey { key, by } => format!(
                "{by} rotates the TLS session-ticket key (key {}, made at {}; the secret is not shown)",
                key.id, key.created_ms
            ),
        }
    }

    /// The client id a switch's command acts for: register, heartbeat,
    /// update, acquire and release (the commands a certificate may carry).
    pub fn switch_id(&self) -> Option<&str> {
        match self {
            Command::Register { id, .. }
            | Command::Heartbeat { id, .. }
            | Command::Update { id, .. }
            | Command::Acquire { id, .. }
            | Command::Release { id, .. } => Some(id),
            _ => None,
        }
    }

    /// The command itself, without the certificate's issue time of
    /// [`Command::Certified`].
    pub fn inner(&self) -> &Command {
        match self {
            Command::Certified { command, .. } => command.inner(),
            other => other,
        }
    }

    /// The pair's time stamped into the command by the serving node, if
    /// it carries it: every stamp but a server key's, which the server
    /// that owns the key may stamp with its own clock when it submits it
    /// from the backup (see `server::stamp`).
    pub fn pair_time_ms(&self) -> Option<u64> {
        match self.inner() {
            Command::InstallServerKey { .. } => None,
            other => other.now_ms(),
        }
    }

    /// The time stamped into the command, if it carries one.
    pub fn now_ms(&self) -> Option<u64> {
        match self {
            Command::Register { now_ms, .. }
            | Command::Heartbeat { now_ms, .. }
            | Command::Update { now_ms, .. }
            | Command::Acquire { now_ms, .. }
            | Command::Release { now_ms, .. }
            | Command::InstallServerKey { now_ms, .. }
            | Command::Sweep { now_ms } => Some(*now_ms),
            Command::Certified { command, .. } => command.now_ms(),
            Command::RemoveClient { .. }
            | Command::ServerSerial { .. }
            | Command::RemoveServerKey { .. }
            | Command::Settings { .. }
            | Command::Issuers { .. }
            | Command::TicketKey { .. } => None,
        }
    }
}

/// The issuers by name, each with the start of its public key (enough to
/// tell two keys of one name apart), or "none".
pub fn describe_issuers(issuers: &std::collections::BTreeMap<String, String>) -> String {
    if issuers.is_empty() {
        return "none".into();
    }
    issuers
        .iter()
        .map(|(name, key)| format!("{name} ({}…)", key.chars().take(8).collect::<String>()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_key(key: &VerifiedKey) -> String {
    let VerifiedKey {
        key_id,
        issuer,
        serial,
        key,
    } = key;
    let what = format!(
        "key {key_id:?} of {issuer:?} for serial {serial:?}: {} {}",
        key.count, key.license_type
    );
    match key.expires_at_ms {
        Some(at) => format!("{what} (evaluation, expires at {at})"),
        None => what,
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
    /// A server key was installed or removed, or a server's serial announced.
    ServerKey {
        /// The pool after the change.
        pool: Pool,
    },
    /// A sweep ran.
    Swept(SweepReport),
    /// New settings apply (appended last, like [`Command::Settings`]).
    Settings {
        /// The pool under the new settings.
        pool: Pool,
    },
}

impl Reply {
    /// The pool after the command, if the reply carries one.
    pub fn pool(&self) -> Option<&Pool> {
        match self {
            Self::Client { pool, .. }
            | Self::ClientRemoved { pool }
            | Self::ServerKey { pool }
            | Self::Settings { pool } => Some(pool),
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
    /// A string out of its bounds (see [`limits`](super::limits)): empty,
    /// too long, or with characters an operator's terminal must not get.
    #[error(transparent)]
    Bound(#[from] TokenError),
    /// More keys than one client or server may have.
    #[error("{count} keys: at most {max} per {per}")]
    TooManyKeys {
        /// How many.
        count: usize,
        /// The bound.
        max: usize,
        /// "client" or "server".
        per: String,
    },
    /// More license types in one of a report's maps than any switch has.
    #[error("{count} license types in one report: at most {max}")]
    TooManyTypes {
        /// How many.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A built-in or used count beyond what any switch runs.
    #[error("{count} {license_type} in one report: at most {max} per type")]
    CountTooLarge {
        /// The type.
        license_type: LicenseType,
        /// The count.
        count: u32,
        /// The bound.
        max: u32,
    },
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
    /// A report claims to use more of a type than the client holds in the
    /// table, and the pool cannot give it the difference: a claim is
    /// checked like an acquire.
    #[error(
        "the report claims {claimed} {license_type} from the pool, the client holds {held}: \
         the {} more need as many available, and {available} are{}",
        claimed - held,
        if *available < 0 { " (over-subscribed)" } else { "" }
    )]
    ClaimExceedsAvailable {
        /// The type.
        license_type: LicenseType,
        /// What the report says the client uses.
        claimed: u32,
        /// What the client holds in the table (0 when it is new or down).
        held: u32,
        /// What the pool has available for the difference (with the keys
        /// the same report brings); negative when over-subscribed.
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
    /// The same key id twice in one report.
    #[error("key {0:?} is presented twice")]
    DuplicateKey(String),
    /// A key id someone else already counts: a key counts once, however
    /// many clients present it.
    #[error("key {key_id:?} is already counted for {by}: a key counts once")]
    KeyCounted {
        /// The key's id.
        key_id: String,
        /// Who counts it.
        by: Contributor,
    },
    /// A key bound to another serial than its presenter's.
    #[error("key {key_id:?} is bound to serial {bound:?}, not {presenter:?}")]
    KeyNotBound {
        /// The key's id.
        key_id: String,
        /// The serial it is bound to.
        bound: String,
        /// The serial of the switch or server presenting it.
        presenter: String,
    },
    /// A server key id already installed on that server.
    #[error("server key {0:?} already installed")]
    KeyExists(String),
    /// No server key of that id.
    #[error("unknown server key {0:?}")]
    UnknownKey(String),
    /// The key of that id is a client's: it comes and goes with the
    /// client's reports, not by removal.
    #[error(
        "key {key_id:?} is presented by client {client:?}, not installed on a server: remove the \
         key on the switch, or remove the client"
    )]
    KeyOfClient {
        /// The key's id.
        key_id: String,
        /// The client presenting it.
        client: String,
    },
    /// An evaluation key that has already expired.
    #[error("key {0:?} has already expired")]
    KeyExpired(String),
    /// A key for a server whose serial the table does not know yet.
    #[error("server {0:?} has not announced its serial: it does once it runs and the pair has a leader")]
    UnknownServer(String),
    /// Settings out of bounds (appended last: errors travel in replies).
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A switch's command over an older certificate than the one its id
    /// last registered with: the switch was replaced (a new certificate was
    /// issued for its id) and this is the old one.
    #[error(
        "client {id:?} registered with a certificate issued at {floor} s; this one was issued at \
         {issued_s} s and is superseded: a replaced switch cannot take its id back (issue this \
         switch a new certificate if it is the replacement)"
    )]
    SupersededCertificate {
        /// The client id.
        id: String,
        /// The presented certificate's not-before (s).
        issued_s: u64,
        /// The newest certificate's not-before the id registered with (s).
        floor: u64,
    },
    /// A trusted issuer that is not a name and an Ed25519 public key, or
    /// more of them than any pair needs.
    #[error("trusted issuers refused: {0}")]
    Issuers(String),
    /// A [`Command::Certified`] around anything but a switch's command.
    #[error("only a switch's register, heartbeat, update, acquire or release carries a certificate")]
    NotCertifiable,
    /// A session-ticket key that is not a fresh one.
    #[error("TLS session-ticket key refused: {0}")]
    TicketKey(String),
    /// A key whose issuer is not in the issuers the pair trusts, as the
    /// log recorded them ([`Command::Issuers`]): the node that proposed it
    /// trusts an issuer the pair does not (yet).
    #[error(
        "key {key_id:?} is signed by issuer {issuer:?}, which the pair does not trust (its trusted \
         issuers are the VIP holder's license.issuers, recorded in the log)"
    )]
    IssuerNotTrusted {
        /// The key's id.
        key_id: String,
        /// Its issuer's name.
        issuer: String,
    },
}

impl CommandError {
    /// A short stable name for counting refusals by cause (`show status`
    /// `refused`, logs): `table_` and the variant in snake case.
    pub fn cause(&self) -> &'static str {
        match self {
            Self::Bound { .. } => "table_bound",
            Self::TooManyKeys { .. } => "table_too_many_keys",
            Self::TooManyTypes { .. } => "table_too_many_types",
            Self::CountTooLarge { .. } => "table_count_too_large",
            Self::UnknownClient { .. } => "table_unknown_client",
            Self::UnknownType { .. } => "table_unknown_type",
            Self::NotPoolable { .. } => "table_not_poolable",
            Self::ZeroCount { .. } => "table_zero_count",
            Self::OverSubscribed { .. } => "table_over_subscribed",
            Self::NotEnoughLicenses { .. } => "table_not_enough_licenses",
            Self::ClaimExceedsAvailable { .. } => "table_claim_exceeds_available",
            Self::ReleaseExceedsUsed { .. } => "table_release_exceeds_used",
            Self::CountOverflow { .. } => "table_count_overflow",
            Self::DuplicateKey { .. } => "table_duplicate_key",
            Self::KeyCounted { .. } => "table_key_counted",
            Self::KeyNotBound { .. } => "table_key_not_bound",
            Self::KeyExists { .. } => "table_key_exists",
            Self::UnknownKey { .. } => "table_unknown_key",
            Self::KeyOfClient { .. } => "table_key_of_client",
            Self::KeyExpired { .. } => "table_key_expired",
            Self::UnknownServer { .. } => "table_unknown_server",
            Self::Settings { .. } => "table_settings",
            Self::SupersededCertificate { .. } => "table_superseded_certificate",
            Self::NotCertifiable => "table_not_certifiable",
            Self::IssuerNotTrusted { .. } => "table_issuer_not_trusted",
            Self::Issuers(_) => "table_issuers",
            Self::TicketKey(_) => "table_ticket_key",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Key, LicenseType};

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
        report.keys.push(VerifiedKey {
            key_id: "k1".into(),
            issuer: "acme".into(),
            serial: "SN2".into(),
            key: Key {
                license_type: ap,
                count: 4,
                expires_at_ms: Some(9),
            },
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
             keys [key \"k1\" of \"acme\" for serial \"SN2\": 4 AP (evaluation, expires at 9)], \
             built-in [16 AP] at 5"
        );
        assert_eq!(Command::Sweep { now_ms: 7 }.describe(), "sweep at 7");
        let remove = Command::RemoveClient {
            id: "sw\u{1b}[2J".into(),
            by: Actor::Operator("alice".into()),
        };
        assert_eq!(
            remove.describe(),
            "operator \"alice\" removes client \"sw\\u{1b}[2J\""
        );
        let serial = Command::ServerSerial {
            server: "backup".into(),
            serial: "CV2".into(),
        };
        assert_eq!(serial.describe(), "server \"backup\" announces serial \"CV2\"");
        let install = Command::InstallServerKey {
            now_ms: 3,
            server: "backup".into(),
            key: VerifiedKey {
                key_id: "b-ap".into(),
                issuer: "acme".into(),
                serial: "CV2".into(),
                key: Key::permanent("AP", 16),
            },
            by: Actor::Server("backup".into()),
        };
        assert_eq!(
            install.describe(),
            "server \"backup\" installs on server \"backup\" key \"b-ap\" of \"acme\" for serial \
             \"CV2\": 16 AP at 3"
        );
        let remove = Command::RemoveServerKey {
            key_id: "b-ap".into(),
            by: Actor::Operator("bob".into()),
        };
        assert_eq!(remove.describe(), "operator \"bob\" removes server key \"b-ap\"");
        let mut settings = TableConfig::default();
        settings
            .types
            .insert(LicenseType::new("XSEC"), crate::table::TypeKind::SwitchSpecific);
        let set = Command::Settings {
            settings,
            by: Actor::Server("backup".into()),
        };
        assert_eq!(
            set.describe(),
            "server \"backup\" sets the table settings: poolable [ACR,AP,PEFNG,RFPROTECT], \
             switch-specific [PEFV,WEBCC,XSEC], heartbeat 30000 ms, down after 3 missed, removed \
             after 2592000 s silent"
        );
        assert_eq!(set.now_ms(), None);
        assert_eq!(Command::Sweep { now_ms: 7 }.now_ms(), Some(7));
    }

    /// Logs written before `Settings` existed decode unchanged: the new
    /// variant is appended, so the old ones keep their numbers.
    #[test]
    fn settings_keep_older_variants_numbers() {
        let config = bincode::config::standard();
        let sweep = bincode::serde::encode_to_vec(Command::Sweep { now_ms: 7 }, config).unwrap();
        // Variant 9 (the tenth), then the varint 7: as written before.
        assert_eq!(sweep, [9, 7]);
        let set = Command::Settings {
            settings: TableConfig::default(),
            by: Actor::Server("a".into()),
        };
        let bytes = bincode::serde::encode_to_vec(&set, config).unwrap();
        assert_eq!(bytes[0], 10);
        let (back, _): (Command, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, set);
    }
}
