//! The records the license table is made of.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The name of a license type, such as `AP` or `PEFNG`.
///
/// Types are data: which names exist and which of them are poolable comes
/// from [`TableConfig`](super::TableConfig), not from code.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
// Through `new` on the way in, so a type read from the wire or a file is
// normalized exactly like one typed on the command line.
#[serde(from = "String", into = "String")]
pub struct LicenseType(String);

impl From<String> for LicenseType {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

impl From<LicenseType> for String {
    fn from(license_type: LicenseType) -> Self {
        license_type.0
    }
}

impl LicenseType {
    /// A license type of this name, upper-cased so that `ap` and `AP` are one type.
    pub fn new(name: impl AsRef<str>) -> Self {
        Self(name.as_ref().trim().to_ascii_uppercase())
    }

    /// The type's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LicenseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for LicenseType {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

/// An installed license key: `count` licenses of one type, optionally an
/// evaluation key that counts only until `expires_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    /// What the key licenses.
    pub license_type: LicenseType,
    /// How many licenses it carries (at least 1).
    pub count: u32,
    /// Evaluation keys: milliseconds since the Unix epoch at which the key
    /// stops counting. `None` for permanent keys.
    pub expires_at_ms: Option<u64>,
}

impl Key {
    /// A permanent key.
    pub fn permanent(license_type: impl Into<LicenseType>, count: u32) -> Self {
        Self {
            license_type: license_type.into(),
            count,
            expires_at_ms: None,
        }
    }

    /// Whether the key has stopped counting at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// A license key as the table counts it: what a signed key said, once the
/// node that proposed the command verified its signature with a trusted
/// issuer, its binding to the presenter's serial and its validity.
///
/// The table cannot verify signatures (the trusted issuers are each node's
/// own configuration, and `apply` reads nothing but the entry); it checks
/// again what it can from the entry alone: the key's id is counted once in
/// the whole table, the key is bound to the serial of whoever presents it,
/// it has not expired at the entry's `now_ms`, and its strings are within
/// bounds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VerifiedKey {
    /// The key's id: unique per issued key; the table counts it once.
    pub key_id: String,
    /// The issuer whose signature verified.
    pub issuer: String,
    /// The serial of the switch or server the key is bound to.
    pub serial: String,
    /// What it licenses, how many, and until when.
    pub key: Key,
}

impl VerifiedKey {
    /// Whether the key has stopped counting at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.key.is_expired(now_ms)
    }
}

/// Who made a change an operator should be able to trace: a server keeping
/// its own keys equal to its key files, or an operator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Actor {
    /// A license server, by node name, from its own key files.
    Server(String),
    /// An operator, by the name their certificate carries.
    Operator(String),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Quoted: a name in a refused entry was never checked, and an
        // operator's terminal must not receive its control characters.
        match self {
            Self::Server(name) => write!(f, "server {name:?}"),
            Self::Operator(name) => write!(f, "operator {name:?}"),
        }
    }
}

/// A key installed on one of the license servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerKey {
    /// The server (node name) the key was installed on.
    pub server: String,
    /// The key itself, bound to that server's serial.
    pub key: VerifiedKey,
    /// Who installed it: the server from its key files (it keeps those
    /// equal to the files), or an operator (it stays until an operator
    /// removes it or it expires).
    pub installed_by: Actor,
}

/// What the table knows of one license server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Its serial (`node.serial`): its keys are bound to it, and an
    /// operator's key for it is verified against it.
    pub serial: String,
}

/// Whether the server considers a client alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ClientState {
    /// The client is heard from; what it uses is counted.
    Up,
    /// The client missed too many heartbeats: its used licenses went back to
    /// the pool; its installed keys still count.
    Down,
}

impl fmt::Display for ClientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Up => "up",
            Self::Down => "down",
        })
    }
}

/// Heartbeat bookkeeping for one client, as the operator's heartbeat view shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatStats {
    /// Heartbeats applied to the table (each one was answered).
    pub heartbeats: u64,
    /// Heartbeats missed over the client's life in the table.
    pub missed_total: u64,
    /// Heartbeats missed since the client was last heard.
    pub missed_in_a_row: u32,
}

/// What a client reports about itself: its whole license state, so that a
/// report is idempotent and a new leader can rebuild anything it owns.
///
/// In a command, the keys are the ones the proposer verified; on the wire
/// a switch sends its keys as signed key lines
/// ([`SwitchReport`](crate::proto::SwitchReport)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientReport {
    /// Factory licenses per type; never part of the pool.
    pub builtin: BTreeMap<LicenseType, u32>,
    /// Keys installed on the client, verified.
    pub keys: Vec<VerifiedKey>,
    /// Licenses per poolable type the client takes from the pool (what it
    /// needs beyond its built-in licenses): a claim, checked like an
    /// acquire wherever it rises above what the client holds.
    pub used: BTreeMap<LicenseType, u32>,
}

/// One license client (switch) as the table knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// The client's id (usually its host name), as its certificate names it.
    pub id: String,
    /// The switch's serial number.
    pub serial: String,
    /// The address the client was last heard from.
    pub address: String,
    /// The client's software version.
    pub version: String,
    /// Factory licenses per type; zero counts are not kept.
    pub builtin: BTreeMap<LicenseType, u32>,
    /// Installed, unexpired keys, sorted by key id.
    pub keys: Vec<VerifiedKey>,
    /// Licenses taken from the pool per poolable type; zero counts are not kept.
    pub used: BTreeMap<LicenseType, u32>,
    /// Up or down.
    pub state: ClientState,
    /// When the client registered (milliseconds since the Unix epoch).
    pub registered_ms: u64,
    /// When the client was last heard (milliseconds since the Unix epoch).
    pub last_heard_ms: u64,
    /// Heartbeat statistics.
    pub stats: HeartbeatStats,
}

impl Client {
    /// Installed licenses of `license_type` on this client (unexpired keys).
    pub fn installed(&self, license_type: &LicenseType) -> u64 {
        self.keys
            .iter()
            .filter(|k| &k.key.license_type == license_type)
            .map(|k| u64::from(k.key.count))
            .sum()
    }

    /// Licenses of `license_type` this client takes from the pool.
    pub fn used_of(&self, license_type: &LicenseType) -> u32 {
        self.used.get(license_type).copied().unwrap_or(0)
    }
}

/// How many licenses a client with `builtin` factory licenses and `in_use`
/// licensed things (APs, ...) takes from the pool: built-in licenses are used first.
pub fn pool_demand(builtin: u32, in_use: u32) -> u32 {
    in_use.saturating_sub(builtin)
}

/// The pool of one license type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolEntry {
    /// Servers' keys plus every client's unexpired installed keys.
    pub total: u64,
    /// What clients take from the pool.
    pub used: u64,
}

impl PoolEntry {
    /// `total - used`; negative when the type is over-subscribed.
    pub fn available(&self) -> i64 {
        i64::try_from(self.total).unwrap_or(i64::MAX) - i64::try_from(self.used).unwrap_or(i64::MAX)
    }

    /// More is used than there is: new grants of this type are refused.
    pub fn over_subscribed(&self) -> bool {
        self.used > self.total
    }
}

/// The pool per poolable type. Every poolable type of the configuration has
/// an entry, zero or not.
pub type Pool = BTreeMap<LicenseType, PoolEntry>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn license_types_are_normalized_however_they_arrive() {
        assert_eq!(LicenseType::new(" pefng "), LicenseType::new("PEFNG"));
        let from_json: LicenseType = serde_json::from_str("\"xsec\"").unwrap();
        assert_eq!(from_json.as_str(), "XSEC");
        assert_eq!(serde_json::to_string(&from_json).unwrap(), "\"XSEC\"");
        let bytes = bincode::serde::encode_to_vec("ap", bincode::config::standard()).unwrap();
        let (from_bincode, _): (LicenseType, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(from_bincode, LicenseType::new("AP"));
    }
}
