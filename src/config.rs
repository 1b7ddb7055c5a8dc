//! The node configuration: one TOML file per host.
//!
//! A server (`vipool node --config node.toml`) has four sections:
//! `[node]` (who it is), `[vrrp]` (the virtual router that owns the VIP),
//! `[cluster]` (the raft members) and `[license]` (the license service). A
//! witness (`vipool witness --config witness.toml`) has only `[node]` and
//! `[cluster]`: it never holds the VIP and never answers clients.
//!
//! Loading checks every field and every rule that ties fields together, and
//! reports every problem at once, each naming its field, saying what is wrong
//! and what to do. Defaults follow SPEC.md; after loading, the defaults that
//! depend on other fields (the raft listen address, the operator endpoint)
//! are filled in, so that printing a loaded configuration shows exactly what
//! the node runs with (`vipool check-config`).
//!
//! ```
//! use vipool::config::Config;
//!
//! let config: Config = r#"
//!     [node]
//!     name = "primary"
//!     id = 1
//!     cluster_id = 7
//!
//!     [vrrp]
//!     interface = "eth0"
//!     vrid = 10
//!     priority = 200
//!     vips = ["192.0.2.100/24"]
//!
//!     [cluster]
//!     peers = [
//!         { id = 1, name = "primary", address = "192.0.2.11:4335" },
//!         { id = 2, name = "backup", address = "192.0.2.12:4335" },
//!     ]
//!
//!     [license]
//!     keys = { AP = 16, PEFNG = 16 }
//! "#
//! .parse()
//! .unwrap();
//! assert_eq!(config.vrrp.advert_interval_ms, 1000);
//! assert_eq!(config.license.heartbeat_interval_ms, 30_000);
//! assert_eq!(config.speaker_config().vrrp.priority, 200);
//! assert_eq!(config.license.operator_listen.unwrap().to_string(), "192.0.2.11:4334");
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vrrp::proto::{Config as VrrpConfig, ConfigError as VrrpError, V3Checksum};
use vrrp::sys::{GarpConfig, SpeakerConfig};
use vrrp::wire::{Auth, Version};

use crate::proto::frame;
use crate::server::ServerConfig;
use crate::table::{
    Command, Key, LicenseType, TableConfig, TypeKind, DEFAULT_POOLABLE, DEFAULT_SWITCH_SPECIFIC,
};

/// TCP port license clients connect to on the VIP, unless `license.client_port` says otherwise.
pub const DEFAULT_CLIENT_PORT: u16 = 4333;
/// Port of the operator endpoint, unless `license.operator_listen` says otherwise.
pub const DEFAULT_OPERATOR_PORT: u16 = 4334;
/// Where the node keeps its raft log and snapshots, unless `node.data_dir` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/vipool";

/// The configuration of a server: one of the pair that holds the VIP in turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this node is.
    pub node: NodeSection,
    /// The VRRP instance that elects the VIP holder.
    pub vrrp: VrrpSection,
    /// The raft members that replicate the license table.
    pub cluster: ClusterSection,
    /// The license service.
    #[serde(default)]
    pub license: LicenseSection,
}

/// The configuration of a witness: a vote-only third raft member. It has
/// no `[vrrp]` and no `[license]`: it never holds the VIP and never answers clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// Who this node is.
    pub node: NodeSection,
    /// The raft members; this node's entry has `role = "witness"`.
    pub cluster: ClusterSection,
}

/// A configuration file of either kind, told apart by its sections and by
/// this node's `role` in `cluster.peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per process, read once at start: a box would only add noise at every match"
)]
pub enum AnyConfig {
    /// A server's configuration.
    Server(Config),
    /// A witness's configuration.
    Witness(WitnessConfig),
}

/// `[node]`: who this node is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This node's name (letters, digits, `.`, `_`, `-`; at most 63): shown
    /// in logs and status, and the server its `license.keys` are installed
    /// under. Must be the name of its entry in `cluster.peers`.
    pub name: String,
    /// This node's raft id (non-zero); its entry in `cluster.peers` has this id.
    /// Never reuse the id of a node that was replaced.
    pub id: u64,
    /// Identifies the pair (non-zero, the same on all its members): raft
    /// traffic from another cluster is refused, so two pairs on one network
    /// cannot mix.
    pub cluster_id: u64,
    /// Directory of the raft log and snapshots (an absolute path). Losing it
    /// makes the node rejoin as a new, empty member.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Release check: when set, the node refuses to start unless it runs
    /// exactly this vipool release (e.g. "0.1.0"). Pin it to the same value
    /// on every member so that an upgrade of one host alone is caught at
    /// start; whatever it says, members of different releases refuse to
    /// pair (SPEC §1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_release: Option<String>,
}

/// `[vrrp]`: the VRRP instance (RFC 9568) that elects the VIP holder.
/// Both servers must agree on `vrid`, `vips`, `version`, `advert_interval_ms`
/// and `auth_pass`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpSection {
    /// Interface on the broadcast domain shared with the peer (its parent
    /// when `vmac` is on).
    pub interface: String,
    /// Virtual router id, 1-255, the same on both servers and unique on the network.
    pub vrid: u8,
    /// Priority, 1-254; the higher one is master. 255 only on the owner of
    /// the address: a VIP that is this node's own address. Default 100.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// The virtual addresses with their prefix length, e.g. "192.0.2.100/24";
    /// all with one prefix length. License clients connect to the first.
    pub vips: Vec<Vip>,
    /// Advertisement interval in milliseconds: a multiple of 10 up to 40950
    /// (v3), whole seconds up to 255000 (v2). Default 1000.
    #[serde(default = "default_advert_interval_ms")]
    pub advert_interval_ms: u32,
    /// VRRP version: 3 (RFC 5798/9568, default) or 2 (RFC 3768).
    #[serde(default = "default_vrrp_version")]
    pub version: u8,
    /// Preempt_Mode: a higher-priority backup takes over from a
    /// lower-priority master (default true).
    #[serde(default = "yes")]
    pub preempt: bool,
    /// With `preempt`, how long a backup that outranks the master keeps
    /// deferring to it before taking over, in milliseconds (default 0).
    #[serde(default)]
    pub preempt_delay_ms: u64,
    /// Accept_Mode: whether the master answers on the VIP when it is not the
    /// address owner. The license service answers only while it is true
    /// (default true).
    #[serde(default = "yes")]
    pub accept_mode: bool,
    /// VRRPv2 simple-text password, 1 to 8 bytes; only with `version = 2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_pass: Option<String>,
    /// This node's own IPv4 address on `interface`: the advertisement
    /// source and the tie-breaker between equal priorities. Default: the
    /// interface's first IPv4 address that is not a VIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Ipv4Addr>,
    /// Send advertisements to these addresses (and accept them only from
    /// them) instead of multicast 224.0.0.18; for networks that filter
    /// multicast. Usually the peer server's address. Default: multicast.
    #[serde(default)]
    pub unicast_peers: Vec<Ipv4Addr>,
    /// VRRPv3 checksum: "pseudo-header" (RFC 5798, default) or
    /// "message-only" (older VRRPv3 peers).
    #[serde(default)]
    pub v3_checksum: ChecksumMode,
    /// Pair handoff: on the master's priority-0 advert (a graceful stop)
    /// the backup takes over at once instead of after Skew_Time. Safe
    /// because a pair has exactly one backup (default true).
    #[serde(default = "yes")]
    pub pair_handoff: bool,
    /// Use the RFC 5798 virtual MAC 00:00:5e:00:01:VRID on a macvlan named
    /// `vrrp.VRID` on `interface`, so switches need no ARP update on
    /// failover (default false).
    #[serde(default)]
    pub vmac: bool,
    /// Gratuitous ARP on takeover.
    #[serde(default)]
    pub garp: GarpSection,
}

/// `[vrrp.garp]`: gratuitous ARP sent when this node becomes master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GarpSection {
    /// Requests per VIP on becoming master, 0 to 100; 0 disables (default 3).
    pub count: u32,
    /// Delay between two requests of a burst, in milliseconds (default 100).
    pub interval_ms: u64,
    /// While master, send another burst this often, in seconds (default: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_s: Option<u64>,
}

impl Default for GarpSection {
    fn default() -> Self {
        let garp = GarpConfig::default();
        Self {
            count: garp.count,
            interval_ms: u64::try_from(garp.interval.as_millis()).unwrap_or(u64::MAX),
            refresh_s: garp.refresh.map(|d| d.as_secs()),
        }
    }
}

/// How VRRPv3 checksums are computed (`vrrp.v3_checksum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChecksumMode {
    /// RFC 5798 §5.2.8: over the IPv4 pseudo-header and the message.
    #[default]
    PseudoHeader,
    /// Over the message only, like VRRPv2, for older VRRPv3 peers.
    MessageOnly,
}

impl From<ChecksumMode> for V3Checksum {
    fn from(mode: ChecksumMode) -> Self {
        match mode {
            ChecksumMode::PseudoHeader => V3Checksum::PseudoHeader,
            ChecksumMode::MessageOnly => V3Checksum::MessageOnly,
        }
    }
}

/// A virtual address with its prefix length, written "192.0.2.100/24".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Vip {
    /// The address.
    pub address: Ipv4Addr,
    /// Its prefix length, 1-32.
    pub prefix_len: u8,
}

impl FromStr for Vip {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (address, len) = s
            .split_once('/')
            .ok_or_else(|| format!("VIP {s:?}: expected ADDRESS/PREFIX, e.g. \"192.0.2.100/24\""))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("VIP {s:?}: {address:?} is not an IPv4 address"))?;
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| (1..=32).contains(l))
            .ok_or_else(|| format!("VIP {s:?}: prefix length {len:?} must be 1 to 32"))?;
        Ok(Vip { address, prefix_len })
    }
}

impl TryFrom<String> for Vip {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Vip> for String {
    fn from(vip: Vip) -> String {
        vip.to_string()
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// `[cluster]`: the raft members that replicate the license table. The
/// same `peers` list goes into every member's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Where this node listens for raft traffic. Default: its own address in
    /// `peers`. Set it (e.g. "0.0.0.0:4335") to listen on every address, or
    /// when its address in `peers` is not local (behind NAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Every member: exactly two servers and at most one witness, this node included.
    pub peers: Vec<Peer>,
    /// Length of one raft tick, in milliseconds (default 100).
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Ticks without a leader before a member campaigns, more than
    /// `heartbeat_ticks` (default 10: one second at 100 ms ticks).
    #[serde(default = "default_election_ticks")]
    pub election_ticks: usize,
    /// Ticks between leader heartbeats, at least 1 (default 3).
    #[serde(default = "default_heartbeat_ticks")]
    pub heartbeat_ticks: usize,
    /// Snapshot the table and compact the log after this many applied
    /// entries, at least 1 (default 10000).
    #[serde(default = "default_snapshot_interval")]
    pub snapshot_interval: u64,
    /// How long a change waits to commit before it fails, in milliseconds;
    /// longer than one election (default 5000).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Largest raft message, in bytes, at least 1 MiB; snapshots travel whole,
    /// so it bounds the table's size (default 64 MiB).
    #[serde(default = "default_raft_max_frame")]
    pub max_frame: u32,
}

/// One member of the cluster (`[[cluster.peers]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Its raft id (non-zero, unique).
    pub id: u64,
    /// Its name (its `node.name`).
    pub name: String,
    /// Its raft address, IP and port, as the other members reach it.
    pub address: SocketAddr,
    /// "server" (default) or "witness".
    #[serde(default)]
    pub role: Role,
}

/// What a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// One of the pair: holds the VIP in turn and answers clients.
    #[default]
    Server,
    /// Votes and stores the log, never leads, never holds the VIP.
    Witness,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Server => "server",
            Role::Witness => "witness",
        })
    }
}

/// `[license]`: the license service. Everything but `keys`, `client_port`
/// and `operator_listen` decides how the replicated table behaves and must
/// be the same on both servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LicenseSection {
    /// TCP port license clients connect to on the VIP (default 4333); not the
    /// raft port nor the operator port.
    pub client_port: u16,
    /// The operator endpoint (`vipool show --server`), on this node's own
    /// address so it answers whether or not the node holds the VIP.
    /// Default: this node's address in `cluster.peers`, port 4334.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_listen: Option<SocketAddr>,
    /// Keys installed on this server: licenses per type, e.g.
    /// `{ AP = 16, PEFNG = 16 }`. Types are case-insensitive and must be
    /// listed in `poolable` or `switch_specific`.
    pub keys: BTreeMap<String, u32>,
    /// License types shared through the pool (default AP, PEFNG, RFPROTECT, XSEC, ACR).
    pub poolable: Vec<String>,
    /// License types that license one switch only, never pooled (default PEFV, WEBCC).
    pub switch_specific: Vec<String>,
    /// How often clients send heartbeats, in milliseconds (default 30000).
    pub heartbeat_interval_ms: u64,
    /// Heartbeats missed in a row after which a client is down and its used
    /// licenses return to the pool (default 3).
    pub missed_heartbeats: u32,
    /// Silence after which a client's installed contributions leave the
    /// table, in seconds (default 2592000: 30 days).
    pub silence_remove_s: u64,
    /// How often the VIP holder sweeps the table for missed heartbeats,
    /// silent clients and expired keys, in milliseconds (default 10000).
    pub sweep_interval_ms: u64,
    /// Warn (log and status) about evaluation keys that stop counting
    /// within this many seconds (default 604800: 7 days).
    pub expiry_warning_s: u64,
    /// Largest client request, in bytes, at least 1024 (default 65536).
    pub max_frame: u32,
    /// Client connections served at once; more wait (default 20000).
    pub max_connections: usize,
    /// How long a pool change waits before it is pushed to clients, so that a
    /// burst costs one push per client, in milliseconds (default 100).
    pub push_delay_ms: u64,
}

impl Default for LicenseSection {
    fn default() -> Self {
        let table = TableConfig::default();
        let server = ServerConfig::default();
        Self {
            client_port: DEFAULT_CLIENT_PORT,
            operator_listen: None,
            keys: BTreeMap::new(),
            poolable: DEFAULT_POOLABLE.iter().map(|t| t.to_string()).collect(),
            switch_specific: DEFAULT_SWITCH_SPECIFIC.iter().map(|t| t.to_string()).collect(),
            heartbeat_interval_ms: table.heartbeat_interval_ms,
            missed_heartbeats: table.missed_heartbeats_down,
            silence_remove_s: table.silence_remove_ms / 1000,
            sweep_interval_ms: millis(server.sweep_interval),
            expiry_warning_s: server.expiry_warning.as_secs(),
            max_frame: server.max_frame,
            max_connections: server.max_connections,
            push_delay_ms: millis(server.push_delay),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_priority() -> u8 {
    100
}
fn default_advert_interval_ms() -> u32 {
    1000
}
fn default_vrrp_version() -> u8 {
    3
}
fn yes() -> bool {
    true
}
fn default_tick_ms() -> u64 {
    100
}
fn default_election_ticks() -> usize {
    10
}
fn default_heartbeat_ticks() -> usize {
    3
}
fn default_snapshot_interval() -> u64 {
    10_000
}
fn default_request_timeout_ms() -> u64 {
    5_000
}
fn default_raft_max_frame() -> u32 {
    64 * 1024 * 1024
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field, as written in the file: `vrrp.priority`, `cluster.peers[1].address`.
    pub field: String,
    /// The offending value as written, when one field holds it.
    pub value: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{} = {}: {}", self.field, value, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, a field of the wrong type, a missing or unknown field; the
    /// message shows the line.
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// Well-formed but wrong: every problem found, each naming its field.
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The problems of an [`ConfigError::Invalid`] configuration (empty otherwise).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(problems) => problems,
            _ => &[],
        }
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, problem) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Collects problems as validation goes.
#[derive(Default)]
struct Report(Vec<Problem>);

impl Report {
    fn add(&mut self, field: impl Into<String>, value: impl fmt::Display, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            value: Some(value.to_string()),
            message: message.into(),
        });
    }

    fn add_field(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            value: None,
            message: message.into(),
        });
    }

    fn finish(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.0))
        }
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

impl Config {
    /// Reads, parses and validates a server's configuration file, and fills
    /// in the defaults that depend on other fields.
    ///
    /// # Errors
    /// The file cannot be read, is not valid TOML for this shape, or breaks a rule.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        read(path.as_ref())?.parse()
    }

    /// Checks every field and the rules between them.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut report = Report::default();
        check_common(&self.node, &self.cluster, Role::Server, &mut report);
        self.check_vrrp(&mut report);
        self.check_license(&mut report);
        self.check_ports(&mut report);
        report.finish()
    }

    /// This node's entry in `cluster.peers`.
    ///
    /// # Panics
    /// On a configuration that did not pass [`Config::validate`] and lacks the entry.
    pub fn me(&self) -> &Peer {
        self.cluster
            .peer(self.node.id)
            .expect("validated: own entry in cluster.peers")
    }

    /// The other server of the pair.
    ///
    /// # Panics
    /// On a configuration that did not pass [`Config::validate`].
    pub fn pair_peer(&self) -> &Peer {
        self.cluster
            .peers
            .iter()
            .find(|p| p.role == Role::Server && p.id != self.node.id)
            .expect("validated: two servers")
    }

    /// This node's own IPv4 address, if its raft address is one.
    fn own_v4(&self) -> Option<Ipv4Addr> {
        self.vrrp
            .source
            .or(match self.cluster.peer(self.node.id)?.address.ip() {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            })
    }

    /// The VRRP instance for the speaker. `primary_address` is `vrrp.source`,
    /// or for the address owner (priority 255) the owned VIP, or else
    /// unspecified so that the speaker takes the interface's own address.
    pub fn vrrp_config(&self) -> VrrpConfig {
        let v = &self.vrrp;
        let addresses: Vec<Ipv4Addr> = v.vips.iter().map(|vip| vip.address).collect();
        let primary_address = match (v.source, self.own_v4()) {
            (Some(source), _) => source,
            (None, Some(own)) if v.priority == 255 && addresses.contains(&own) => own,
            _ => Ipv4Addr::UNSPECIFIED,
        };
        VrrpConfig {
            version: Version::from(v.version),
            vrid: v.vrid,
            priority: v.priority,
            advert_interval_cs: u16::try_from(v.advert_interval_ms / 10).unwrap_or(u16::MAX),
            preempt: v.preempt,
            preempt_delay: Duration::from_millis(v.preempt_delay_ms),
            accept_mode: v.accept_mode,
            addresses,
            primary_address,
            auth: match &v.auth_pass {
                Some(pass) => Auth::simple_text(pass.as_bytes()).unwrap_or(Auth::None),
                None => Auth::None,
            },
            v3_checksum: v.v3_checksum.into(),
            unicast_peers: v.unicast_peers.clone(),
            pair_handoff: v.pair_handoff,
        }
    }

    /// Everything the VRRP speaker needs.
    pub fn speaker_config(&self) -> SpeakerConfig {
        let garp = &self.vrrp.garp;
        SpeakerConfig {
            interface: self.vrrp.interface.clone(),
            vrrp: self.vrrp_config(),
            prefix_len: self.vrrp.vips.first().map_or(32, |v| v.prefix_len),
            garp: GarpConfig {
                count: garp.count,
                interval: Duration::from_millis(garp.interval_ms),
                refresh: garp.refresh_s.map(Duration::from_secs),
            },
            virtual_mac: self.vrrp.vmac,
        }
    }

    /// The VIP license clients connect to: the first of `vrrp.vips`.
    ///
    /// # Panics
    /// On a configuration that did not pass [`Config::validate`] (no VIP).
    pub fn client_vip(&self) -> Ipv4Addr {
        self.vrrp.vips[0].address
    }

    /// Where license clients connect: the first VIP, `license.client_port`.
    pub fn client_address(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.client_vip()), self.license.client_port)
    }

    /// The license server's settings; it answers clients only on the VIP.
    pub fn server_config(&self) -> ServerConfig {
        let l = &self.license;
        ServerConfig {
            node: self.node.name.clone(),
            vip: Some(IpAddr::V4(self.client_vip())),
            max_frame: l.max_frame,
            max_connections: l.max_connections,
            sweep_interval: Duration::from_millis(l.sweep_interval_ms),
            push_delay: Duration::from_millis(l.push_delay_ms),
            expiry_warning: Duration::from_secs(l.expiry_warning_s),
        }
    }

    /// The replicated table's settings: license types and client timers.
    pub fn table_config(&self) -> TableConfig {
        let l = &self.license;
        let types = l
            .poolable
            .iter()
            .map(|t| (LicenseType::new(t), TypeKind::Poolable))
            .chain(
                l.switch_specific
                    .iter()
                    .map(|t| (LicenseType::new(t), TypeKind::SwitchSpecific)),
            )
            .collect();
        TableConfig {
            types,
            heartbeat_interval_ms: l.heartbeat_interval_ms,
            missed_heartbeats_down: l.missed_heartbeats,
            silence_remove_ms: l.silence_remove_s.saturating_mul(1000),
        }
    }

    /// This server's keys as permanent [`Key`]s, one per type.
    pub fn server_keys(&self) -> Vec<Key> {
        self.license
            .keys
            .iter()
            .map(|(t, n)| Key::permanent(LicenseType::new(t), *n))
            .collect()
    }

    /// The commands that install this server's keys, with key ids
    /// `NAME-TYPE` (as `vipool serve` names them), stamped `now_ms`.
    pub fn server_key_commands(&self, now_ms: u64) -> Vec<Command> {
        self.server_keys()
            .into_iter()
            .map(|key| Command::InstallServerKey {
                now_ms,
                key_id: format!("{}-{}", self.node.name, key.license_type),
                server: self.node.name.clone(),
                key,
            })
            .collect()
    }

    /// The operator endpoint's address (filled in by loading).
    pub fn operator_address(&self) -> SocketAddr {
        self.license.operator_listen.unwrap_or_else(|| {
            let own = self.cluster.peer(self.node.id).map(|p| p.address.ip());
            SocketAddr::new(
                own.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                DEFAULT_OPERATOR_PORT,
            )
        })
    }

    fn fill_defaults(&mut self) {
        self.cluster.fill_defaults(self.node.id);
        self.license.operator_listen = Some(self.operator_address());
        for t in self
            .license
            .poolable
            .iter_mut()
            .chain(self.license.switch_specific.iter_mut())
        {
            *t = LicenseType::new(&*t).to_string();
        }
        self.license.keys = std::mem::take(&mut self.license.keys)
            .into_iter()
            .map(|(t, n)| (LicenseType::new(t).to_string(), n))
            .collect();
    }

    fn check_vrrp(&self, r: &mut Report) {
        let v = &self.vrrp;
        if v.interface.is_empty()
            || v.interface.len() > 15
            || v.interface.contains(|c: char| c == '/' || c.is_whitespace())
        {
            r.add(
                "vrrp.interface",
                format!("{:?}", v.interface),
                "must be a Linux interface name (1 to 15 characters, no '/' or spaces), e.g. \"eth0\"",
            );
        }
        if v.vrid == 0 {
            r.add("vrrp.vrid", 0, "must be 1-255, the same on both servers");
        }
        let own = self.own_v4();
        let owns_a_vip = own.is_some_and(|a| v.vips.iter().any(|vip| vip.address == a));
        if v.priority == 0 || (v.priority == 255 && !owns_a_vip) {
            r.add(
                "vrrp.priority",
                v.priority,
                "must be 1-254 (255 only if a vip is this node's own address)",
            );
        }
        if v.vips.is_empty() {
            r.add_field(
                "vrrp.vips",
                "at least one VIP is needed, e.g. vips = [\"192.0.2.100/24\"]",
            );
        } else if v.vips.len() > 255 {
            r.add_field("vrrp.vips", "at most 255 VIPs fit an advertisement");
        }
        if let Some(first) = v.vips.first() {
            if v.vips.iter().any(|vip| vip.prefix_len != first.prefix_len) {
                r.add_field(
                    "vrrp.vips",
                    format!(
                        "every VIP must have the prefix length of the first (/{})",
                        first.prefix_len
                    ),
                );
            }
        }
        let mut seen = BTreeSet::new();
        for (n, vip) in v.vips.iter().enumerate() {
            let field = format!("vrrp.vips[{n}]");
            let a = vip.address;
            if !seen.insert(a) {
                r.add(&field, vip, "listed twice: remove one");
            }
            if a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback() {
                r.add(
                    &field,
                    vip,
                    "must be a unicast address on the servers' shared network",
                );
            }
            for peer in &self.cluster.peers {
                if peer.address.ip() != IpAddr::V4(a) {
                    continue;
                }
                if peer.id != self.node.id {
                    r.add(
                        &field,
                        vip,
                        format!(
                            "is the address of {} {} (id {}): a VIP must be an address no member owns",
                            peer.role, peer.name, peer.id
                        ),
                    );
                } else if v.priority != 255 {
                    r.add(
                        &field,
                        vip,
                        "is this node's own address: a VIP must be an address no member owns, \
                         or set vrrp.priority = 255 to make this node its owner",
                    );
                }
            }
            if Some(a) == v.source && v.priority != 255 {
                r.add(
                    &field,
                    vip,
                    "is vrrp.source, this node's own address: use an address no host owns, \
                     or set vrrp.priority = 255 to make this node its owner",
                );
            }
        }
        if v.advert_interval_ms % 10 != 0 || v.advert_interval_ms / 10 > u32::from(u16::MAX) {
            r.add(
                "vrrp.advert_interval_ms",
                v.advert_interval_ms,
                "must be a multiple of 10 (VRRP counts centiseconds), at most 40950 for v3 and 255000 for v2",
            );
        }
        if v.version != 2 && v.version != 3 {
            r.add("vrrp.version", v.version, "must be 3 (RFC 5798) or 2 (RFC 3768)");
        }
        if let Some(pass) = &v.auth_pass {
            if pass.is_empty() || pass.len() > 8 {
                r.add(
                    "vrrp.auth_pass",
                    "\"…\"",
                    "must be 1 to 8 bytes (VRRPv2 simple-text password)",
                );
            } else if v.version == 3 {
                r.add(
                    "vrrp.auth_pass",
                    "\"…\"",
                    "VRRPv3 has no authentication (RFC 5798 §9): remove it, or set vrrp.version = 2",
                );
            }
        }
        if let Some(source) = v.source {
            if source.is_unspecified() || source.is_multicast() || source.is_broadcast() {
                r.add(
                    "vrrp.source",
                    source,
                    "must be this node's own unicast address on vrrp.interface, or left out",
                );
            }
        }
        let mut seen = BTreeSet::new();
        for (n, peer) in v.unicast_peers.iter().enumerate() {
            let field = format!("vrrp.unicast_peers[{n}]");
            if !seen.insert(*peer) {
                r.add(&field, peer, "listed twice: remove one");
            }
            if peer.is_unspecified() || peer.is_multicast() || peer.is_broadcast() {
                r.add(&field, peer, "must be the unicast address of the other server");
            } else if Some(*peer) == own {
                r.add(
                    &field,
                    peer,
                    "is this node's own address: list the other server's address",
                );
            } else if v.vips.iter().any(|vip| vip.address == *peer) {
                r.add(&field, peer, "is a VIP: list the other server's own address");
            }
        }
        if v.garp.count > 100 {
            r.add(
                "vrrp.garp.count",
                v.garp.count,
                "must be 0 to 100 (0 disables gratuitous ARP)",
            );
        }
        if v.garp.count > 1 && v.garp.interval_ms == 0 {
            r.add(
                "vrrp.garp.interval_ms",
                0,
                "must be at least 1 when vrrp.garp.count sends more than one request",
            );
        }
        if v.garp.refresh_s == Some(0) {
            r.add(
                "vrrp.garp.refresh_s",
                0,
                "must be at least 1, or left out to never refresh",
            );
        }
        // The VRRP crate's own rules, on the instance the speaker will run, so
        // that nothing passes here that the speaker would refuse. Problems
        // already reported above are not repeated.
        let reported: BTreeSet<String> = r.0.iter().map(|p| p.field.clone()).collect();
        let mut probe = self.vrrp_config();
        if probe.primary_address.is_unspecified() {
            // Resolved from the interface at start; any unicast address will do here.
            probe.primary_address = Ipv4Addr::new(192, 0, 2, 254);
        }
        if let Err(e) = probe.validate() {
            let (field, value) = match e {
                VrrpError::Vrid => ("vrrp.vrid", v.vrid.to_string()),
                VrrpError::Priority => ("vrrp.priority", v.priority.to_string()),
                VrrpError::Interval(_) => ("vrrp.advert_interval_ms", v.advert_interval_ms.to_string()),
                VrrpError::Version(n) => ("vrrp.version", n.to_string()),
                VrrpError::Auth(_) => ("vrrp.auth_pass", "\"…\"".to_owned()),
                VrrpError::Addresses(_) => ("vrrp.vips", format!("{} addresses", v.vips.len())),
                VrrpError::PrimaryAddress => (
                    "vrrp.source",
                    v.source.map_or_else(|| "(unset)".to_owned(), |s| s.to_string()),
                ),
            };
            if !reported.iter().any(|f| f.starts_with(field)) {
                r.add(field, value, e.to_string());
            }
        }
    }

    fn check_license(&self, r: &mut Report) {
        let l = &self.license;
        let mut kinds: BTreeMap<LicenseType, &str> = BTreeMap::new();
        for (list, name) in [
            (&l.poolable, "license.poolable"),
            (&l.switch_specific, "license.switch_specific"),
        ] {
            for (n, t) in list.iter().enumerate() {
                let field = format!("{name}[{n}]");
                let valid = !t.trim().is_empty()
                    && t.trim()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    r.add(
                        &field,
                        format!("{t:?}"),
                        "a license type is a name of letters, digits, '_' and '-', e.g. \"AP\"",
                    );
                    continue;
                }
                if let Some(first) = kinds.insert(LicenseType::new(t), name) {
                    r.add(
                        &field,
                        format!("{t:?}"),
                        format!("already listed in {first} (types are case-insensitive): list it once"),
                    );
                }
            }
        }
        if kinds.is_empty() {
            r.add_field(
                "license.poolable",
                "no license types at all: list at least one in license.poolable or license.switch_specific",
            );
        }
        let mut seen = BTreeSet::new();
        for (t, n) in &l.keys {
            let field = format!("license.keys.{t}");
            let license_type = LicenseType::new(t);
            if !seen.insert(license_type.clone()) {
                r.add(
                    &field,
                    n,
                    "the same type is listed twice (types are case-insensitive): add them up",
                );
            }
            if !kinds.contains_key(&license_type) {
                r.add(
                    &field,
                    n,
                    format!(
                        "unknown license type {license_type}: add it to license.poolable or license.switch_specific"
                    ),
                );
            }
            if *n == 0 {
                r.add(
                    &field,
                    0,
                    "a key carries at least 1 license: remove the line instead",
                );
            }
        }
        if l.heartbeat_interval_ms == 0 {
            r.add(
                "license.heartbeat_interval_ms",
                0,
                "must be at least 1 (SPEC default 30000)",
            );
        }
        if l.missed_heartbeats == 0 {
            r.add(
                "license.missed_heartbeats",
                0,
                "must be at least 1 (SPEC default 3)",
            );
        }
        let down_ms = l
            .heartbeat_interval_ms
            .saturating_mul(u64::from(l.missed_heartbeats));
        if l.silence_remove_s.saturating_mul(1000) <= down_ms {
            r.add(
                "license.silence_remove_s",
                l.silence_remove_s,
                format!(
                    "must be longer than the {down_ms} ms after which a silent client is down \
                     (heartbeat_interval_ms x missed_heartbeats), or clients lose their keys before \
                     their APs (SPEC default 30 days: 2592000)"
                ),
            );
        }
        if l.sweep_interval_ms == 0 {
            r.add(
                "license.sweep_interval_ms",
                0,
                "must be at least 1 (default 10000)",
            );
        }
        if l.max_frame < 1024 {
            r.add(
                "license.max_frame",
                l.max_frame,
                format!(
                    "must be at least 1024 bytes (default {})",
                    frame::DEFAULT_MAX_REQUEST
                ),
            );
        }
        if l.max_connections == 0 {
            r.add("license.max_connections", 0, "must be at least 1 (default 20000)");
        }
        if l.client_port == 0 {
            r.add(
                "license.client_port",
                0,
                format!("must be a port clients can be told (default {DEFAULT_CLIENT_PORT})"),
            );
        }
        if let Some(op) = l.operator_listen {
            if op.port() == 0 {
                r.add(
                    "license.operator_listen",
                    op,
                    "needs a port operators can be told, e.g. 4334",
                );
            }
        }
    }

    fn check_ports(&self, r: &mut Report) {
        let Some(me) = self.cluster.peer(self.node.id) else {
            return;
        };
        let raft = self.cluster.listen.unwrap_or(me.address);
        let operator = self.operator_address();
        let client_port = self.license.client_port;
        if client_port != 0 && raft.port() == client_port {
            r.add(
                "license.client_port",
                client_port,
                format!("is also the raft port of this node ({raft}): use another port for one of them"),
            );
        }
        if operator.port() != 0 && operator.port() == client_port {
            r.add(
                "license.operator_listen",
                operator,
                "uses license.client_port: give the operator endpoint its own port",
            );
        }
        if operator.port() != 0 && operator.port() == raft.port() && overlaps(operator.ip(), raft.ip()) {
            r.add(
                "license.operator_listen",
                operator,
                format!("is also the raft address of this node ({raft}): use another port"),
            );
        }
    }
}

/// Whether two listeners on these addresses would take the same port.
fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}

impl FromStr for Config {
    type Err = ConfigError;

    /// Parses and validates a server's configuration, filling in defaults.
    fn from_str(s: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(s)?;
        config.validate()?;
        config.fill_defaults();
        Ok(config)
    }
}

impl WitnessConfig {
    /// Reads, parses and validates a witness's configuration file.
    ///
    /// # Errors
    /// The file cannot be read, is not valid TOML for this shape, or breaks a rule.
    pub fn load(path: impl AsRef<Path>) -> Result<WitnessConfig, ConfigError> {
        read(path.as_ref())?.parse()
    }

    /// Checks every field and the rules between them.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut report = Report::default();
        check_common(&self.node, &self.cluster, Role::Witness, &mut report);
        report.finish()
    }
}

impl FromStr for WitnessConfig {
    type Err = ConfigError;

    /// Parses and validates a witness's configuration, filling in defaults.
    fn from_str(s: &str) -> Result<WitnessConfig, ConfigError> {
        let mut config: WitnessConfig = toml::from_str(s)?;
        config.validate()?;
        config.cluster.fill_defaults(config.node.id);
        Ok(config)
    }
}

impl AnyConfig {
    /// Reads a configuration file of either kind (see [`AnyConfig::from_str`]).
    ///
    /// # Errors
    /// As [`Config::load`] or [`WitnessConfig::load`].
    pub fn load(path: impl AsRef<Path>) -> Result<AnyConfig, ConfigError> {
        read(path.as_ref())?.parse()
    }

    /// This node's `[node]` section.
    pub fn node(&self) -> &NodeSection {
        match self {
            AnyConfig::Server(c) => &c.node,
            AnyConfig::Witness(c) => &c.node,
        }
    }

    /// This node's role.
    pub fn role(&self) -> Role {
        match self {
            AnyConfig::Server(_) => Role::Server,
            AnyConfig::Witness(_) => Role::Witness,
        }
    }

    /// The configuration as TOML, every default written out.
    pub fn to_toml(&self) -> String {
        let out = match self {
            AnyConfig::Server(c) => toml::to_string_pretty(c),
            AnyConfig::Witness(c) => toml::to_string_pretty(c),
        };
        // Every field is a string, a number, a bool, an array or a table.
        out.expect("a configuration always serializes")
    }
}

impl FromStr for AnyConfig {
    type Err = ConfigError;

    /// A file with `[vrrp]` or `[license]` is a server's; otherwise it is a
    /// witness's when this node's entry in `cluster.peers` says
    /// `role = "witness"`, and a server's (missing its `[vrrp]`) when not.
    fn from_str(s: &str) -> Result<AnyConfig, ConfigError> {
        let table: toml::Table = toml::from_str(s)?;
        let server_sections = table.contains_key("vrrp") || table.contains_key("license");
        if !server_sections && own_role(&table) == Some(Role::Witness) {
            Ok(AnyConfig::Witness(s.parse()?))
        } else {
            Ok(AnyConfig::Server(s.parse()?))
        }
    }
}

/// This node's role as the raw file says, if it says.
fn own_role(table: &toml::Table) -> Option<Role> {
    let id = table.get("node")?.get("id")?.as_integer()?;
    let peers = table.get("cluster")?.get("peers")?.as_array()?;
    let me = peers
        .iter()
        .find(|p| p.get("id").and_then(|i| i.as_integer()) == Some(id))?;
    match me.get("role").map(|r| r.as_str()) {
        None => Some(Role::Server),
        Some(Some("server")) => Some(Role::Server),
        Some(Some("witness")) => Some(Role::Witness),
        Some(_) => None,
    }
}

impl ClusterSection {
    /// The member of this id.
    pub fn peer(&self, id: u64) -> Option<&Peer> {
        self.peers.iter().find(|p| p.id == id)
    }

    /// Every member's id: the voters a brand-new cluster starts with.
    pub fn initial_voters(&self) -> Vec<u64> {
        self.peers.iter().map(|p| p.id).collect()
    }

    /// The raft addresses of every member but `me`.
    pub fn peers_except(&self, me: u64) -> BTreeMap<u64, SocketAddr> {
        self.peers
            .iter()
            .filter(|p| p.id != me)
            .map(|p| (p.id, p.address))
            .collect()
    }

    /// Whether the cluster has a witness.
    pub fn has_witness(&self) -> bool {
        self.peers.iter().any(|p| p.role == Role::Witness)
    }

    /// Length of one raft tick.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }

    /// How long a proposal waits to commit.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Where member `me` listens for raft traffic (filled in by loading).
    pub fn listen_address(&self, me: u64) -> Option<SocketAddr> {
        self.listen.or_else(|| self.peer(me).map(|p| p.address))
    }

    fn fill_defaults(&mut self, me: u64) {
        self.listen = self.listen_address(me);
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}

/// The rules of `[node]` and `[cluster]`, for a node of role `expected`.
fn check_common(node: &NodeSection, cluster: &ClusterSection, expected: Role, r: &mut Report) {
    if !valid_name(&node.name) {
        r.add(
            "node.name",
            format!("{:?}", node.name),
            "must be 1 to 63 letters, digits, '.', '_' or '-', e.g. \"primary\"",
        );
    }
    if node.id == 0 {
        r.add(
            "node.id",
            0,
            "must be non-zero (raft reserves 0): give each member its own id, e.g. 1",
        );
    }
    if node.cluster_id == 0 {
        r.add(
            "node.cluster_id",
            0,
            "must be non-zero and the same on every member of the pair, e.g. 1",
        );
    }
    if !node.data_dir.is_absolute() {
        r.add(
            "node.data_dir",
            format!("{:?}", node.data_dir.display().to_string()),
            format!("must be an absolute path, e.g. \"{DEFAULT_DATA_DIR}\""),
        );
    }
    if let Some(release) = &node.require_release {
        let mine = env!("CARGO_PKG_VERSION");
        if release.trim() != mine {
            r.add(
                "node.require_release",
                format!("{release:?}"),
                format!("this is vipool {mine}: install vipool {release} on this host, or change the pin on every member"),
            );
        }
    }

    let mut ids = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    for (n, peer) in cluster.peers.iter().enumerate() {
        let field = |f: &str| format!("cluster.peers[{n}].{f}");
        if peer.id == 0 {
            r.add(field("id"), 0, "must be non-zero (raft reserves 0)");
        } else if !ids.insert(peer.id) {
            r.add(
                field("id"),
                peer.id,
                "is the id of another member: every member needs its own",
            );
        }
        if !valid_name(&peer.name) {
            r.add(
                field("name"),
                format!("{:?}", peer.name),
                "must be 1 to 63 letters, digits, '.', '_' or '-'",
            );
        } else if !names.insert(peer.name.as_str()) {
            r.add(
                field("name"),
                format!("{:?}", peer.name),
                "is the name of another member: every member needs its own",
            );
        }
        let ip = peer.address.ip();
        if ip.is_unspecified() || ip.is_multicast() || peer.address.port() == 0 {
            r.add(
                field("address"),
                peer.address,
                "must be the member's own unicast address and raft port, as the others reach it, \
                 e.g. \"192.0.2.11:4335\"",
            );
        } else if !addresses.insert(peer.address) {
            r.add(
                field("address"),
                peer.address,
                "is the address of another member: every member needs its own",
            );
        }
    }
    let servers = cluster.peers.iter().filter(|p| p.role == Role::Server).count();
    let witnesses = cluster.peers.iter().filter(|p| p.role == Role::Witness).count();
    if servers != 2 {
        r.add_field(
            "cluster.peers",
            format!(
                "lists {servers} server(s): a pair is exactly two servers (role = \"server\", the \
                 default), plus at most one witness"
            ),
        );
    }
    if witnesses > 1 {
        r.add_field(
            "cluster.peers",
            format!("lists {witnesses} witnesses: at most one witness (role = \"witness\")"),
        );
    }
    match cluster.peers.iter().find(|p| p.id == node.id) {
        None if node.id != 0 => r.add_field(
            "cluster.peers",
            format!(
                "has no entry for this node (node.id = {}): add {{ id = {}, name = {:?}, address = \
                 \"IP:PORT\" }}",
                node.id, node.id, node.name
            ),
        ),
        None => {}
        Some(me) => {
            let n = cluster.peers.iter().position(|p| p.id == node.id).unwrap_or(0);
            if me.name != node.name {
                r.add(
                    format!("cluster.peers[{n}].name"),
                    format!("{:?}", me.name),
                    format!(
                        "is this node's entry (id {}), whose name must be node.name {:?}",
                        node.id, node.name
                    ),
                );
            }
            if me.role != expected {
                let what = match expected {
                    Role::Server => {
                        "this file has [vrrp] or [license], which only a server has: set role = \
                         \"server\", or remove those sections for a witness"
                    }
                    Role::Witness => "a witness file has only [node] and [cluster]",
                };
                r.add(
                    format!("cluster.peers[{n}].role"),
                    format!("\"{}\"", me.role),
                    format!("is this node's entry (id {}), but {what}", node.id),
                );
            }
        }
    }
    if let Some(listen) = cluster.listen {
        if listen.port() == 0 {
            r.add(
                "cluster.listen",
                listen,
                "needs the raft port the other members connect to",
            );
        }
    }
    if cluster.tick_ms == 0 || cluster.tick_ms > 10_000 {
        r.add(
            "cluster.tick_ms",
            cluster.tick_ms,
            "must be 1 to 10000 (default 100)",
        );
    }
    if cluster.heartbeat_ticks == 0 {
        r.add("cluster.heartbeat_ticks", 0, "must be at least 1 (default 3)");
    }
    if cluster.election_ticks <= cluster.heartbeat_ticks {
        r.add(
            "cluster.election_ticks",
            cluster.election_ticks,
            format!(
                "must be more than cluster.heartbeat_ticks ({}), or followers campaign between \
                 heartbeats (default 10)",
                cluster.heartbeat_ticks
            ),
        );
    }
    if cluster.snapshot_interval == 0 {
        r.add(
            "cluster.snapshot_interval",
            0,
            "must be at least 1 entry (default 10000)",
        );
    }
    let election_ms = cluster
        .tick_ms
        .saturating_mul(u64::try_from(cluster.election_ticks).unwrap_or(u64::MAX));
    if cluster.request_timeout_ms <= election_ms {
        r.add(
            "cluster.request_timeout_ms",
            cluster.request_timeout_ms,
            format!(
                "must be longer than one election (tick_ms x election_ticks = {election_ms} ms), \
                 or every failover fails the changes in flight (default 5000)"
            ),
        );
    }
    if cluster.max_frame < 1024 * 1024 {
        r.add(
            "cluster.max_frame",
            cluster.max_frame,
            "must be at least 1048576 (1 MiB): snapshots of the table travel in one frame",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: &str = r#"
        [node]
        name = "primary"
        id = 1
        cluster_id = 7

        [vrrp]
        interface = "eth0"
        vrid = 10
        priority = 200
        vips = ["192.0.2.100/24"]

        [cluster]
        peers = [
            { id = 1, name = "primary", address = "192.0.2.11:4335" },
            { id = 2, name = "backup", address = "192.0.2.12:4335" },
            { id = 3, name = "witness", address = "192.0.2.13:4335", role = "witness" },
        ]

        [license]
        keys = { AP = 16, pefng = 16 }
    "#;

    const WITNESS: &str = r#"
        [node]
        name = "witness"
        id = 3
        cluster_id = 7

        [cluster]
        peers = [
            { id = 1, name = "primary", address = "192.0.2.11:4335" },
            { id = 2, name = "backup", address = "192.0.2.12:4335" },
            { id = 3, name = "witness", address = "192.0.2.13:4335", role = "witness" },
        ]
    "#;

    /// `PRIMARY` with `line` (a `key = value` line) replacing the line that
    /// sets the same key, or added to `section` when no line does.
    fn edit(base: &str, section: &str, line: &str) -> String {
        let key = line.split('=').next().unwrap().trim();
        let mut out = Vec::new();
        let mut current = "";
        let mut done = false;
        // Open brackets of a multi-line value being replaced.
        let mut skipping = 0i32;
        let depth = |l: &str| l.matches('[').count() as i32 - l.matches(']').count() as i32;
        for l in base.lines() {
            let t = l.trim();
            if skipping > 0 {
                skipping += depth(t);
                continue;
            }
            if t.starts_with('[') {
                if current == section && !done {
                    out.push(line.to_owned());
                    done = true;
                }
                current = t.trim_matches(|c| c == '[' || c == ']');
            }
            if current == section && t.split('=').next().map(str::trim) == Some(key) && t.contains('=') {
                out.push(line.to_owned());
                done = true;
                skipping = depth(t);
                continue;
            }
            out.push(l.to_owned());
        }
        if !done {
            assert_eq!(current, section, "section [{section}] not found or not last");
            out.push(line.to_owned());
        }
        out.join("\n")
    }

    fn problems(text: &str) -> Vec<Problem> {
        match text.parse::<Config>() {
            Err(ConfigError::Invalid(p)) => p,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    /// Asserts that setting `line` in `[section]` is refused with a problem
    /// naming `field`, and returns its display.
    #[track_caller]
    fn refused(section: &str, line: &str, field: &str) -> String {
        let found = problems(&edit(PRIMARY, section, line));
        let p = found
            .iter()
            .find(|p| p.field == field)
            .unwrap_or_else(|| panic!("{line}: no problem names {field}: {found:?}"));
        let shown = p.to_string();
        assert!(shown.starts_with(field), "{shown}");
        shown
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c: Config = PRIMARY.parse().unwrap();
        assert_eq!(c.vrrp.advert_interval_ms, 1000);
        assert_eq!(c.vrrp.version, 3);
        assert!(c.vrrp.preempt && c.vrrp.accept_mode && c.vrrp.pair_handoff && !c.vrrp.vmac);
        assert_eq!(c.vrrp.preempt_delay_ms, 0);
        assert_eq!(
            c.vrrp.garp,
            GarpSection {
                count: 3,
                interval_ms: 100,
                refresh_s: None
            }
        );
        assert_eq!(c.node.data_dir, Path::new(DEFAULT_DATA_DIR));
        assert_eq!(
            (
                c.cluster.tick_ms,
                c.cluster.election_ticks,
                c.cluster.heartbeat_ticks
            ),
            (100, 10, 3)
        );
        assert_eq!(c.cluster.snapshot_interval, 10_000);
        let l = &c.license;
        assert_eq!(l.heartbeat_interval_ms, 30_000);
        assert_eq!(l.missed_heartbeats, 3);
        assert_eq!(l.silence_remove_s, 30 * 24 * 3600);
        assert_eq!(l.expiry_warning_s, 7 * 24 * 3600);
        assert_eq!(l.sweep_interval_ms, 10_000);
        assert_eq!(l.client_port, DEFAULT_CLIENT_PORT);
        assert_eq!(c.table_config(), TableConfig::default());
        // Defaults that depend on other fields are filled in.
        assert_eq!(c.cluster.listen, Some("192.0.2.11:4335".parse().unwrap()));
        assert_eq!(l.operator_listen, Some("192.0.2.11:4334".parse().unwrap()));
        // Key types are normalized like the table normalizes them.
        assert_eq!(l.keys.keys().collect::<Vec<_>>(), ["AP", "PEFNG"]);
    }

    #[test]
    fn converts_to_the_parts() {
        let c: Config = PRIMARY.parse().unwrap();
        let s = c.speaker_config();
        assert_eq!(s.interface, "eth0");
        assert_eq!(s.prefix_len, 24);
        assert_eq!(s.garp, GarpConfig::default());
        assert_eq!(s.vrrp.addresses, [Ipv4Addr::new(192, 0, 2, 100)]);
        assert_eq!(s.vrrp.advert_interval_cs, 100);
        assert_eq!(s.vrrp.primary_address, Ipv4Addr::UNSPECIFIED);
        assert!(s.vrrp.pair_handoff);
        let server = c.server_config();
        assert_eq!(server.node, "primary");
        assert_eq!(server.vip, Some("192.0.2.100".parse().unwrap()));
        assert_eq!(c.client_address().to_string(), "192.0.2.100:4333");
        assert_eq!(c.server_keys().len(), 2);
        match &c.server_key_commands(5)[0] {
            Command::InstallServerKey {
                now_ms,
                key_id,
                server,
                key,
            } => {
                assert_eq!(
                    (*now_ms, key_id.as_str(), server.as_str()),
                    (5, "primary-AP", "primary")
                );
                assert_eq!(key, &Key::permanent("AP", 16));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.cluster.initial_voters(), [1, 2, 3]);
        assert_eq!(
            c.cluster.peers_except(1).keys().copied().collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(c.pair_peer().name, "backup");
        assert_eq!(c.me().name, "primary");
        assert!(c.cluster.has_witness());
        assert_eq!(c.cluster.tick(), Duration::from_millis(100));
    }

    #[test]
    fn owner_priority_255_uses_the_owned_vip_as_source() {
        let text = edit(PRIMARY, "vrrp", "priority = 255");
        let text = edit(&text, "vrrp", r#"vips = ["192.0.2.11/24"]"#);
        let c: Config = text.parse().unwrap();
        assert_eq!(c.vrrp_config().primary_address, Ipv4Addr::new(192, 0, 2, 11));
        c.vrrp_config().validate().unwrap();
    }

    #[test]
    fn round_trip_through_toml() {
        for text in [
            PRIMARY.to_owned(),
            edit(PRIMARY, "vrrp", "auth_pass = \"s3cret\""),
        ] {
            let text = edit(&text, "vrrp", "version = 2");
            let text = edit(&text, "vrrp", "source = \"192.0.2.11\"");
            let parsed: AnyConfig = text.parse().unwrap();
            let printed = parsed.to_toml();
            let again: AnyConfig = printed.parse().unwrap();
            assert_eq!(parsed, again, "{printed}");
            assert_eq!(again.to_toml(), printed);
        }
        let witness: AnyConfig = WITNESS.parse().unwrap();
        assert_eq!(witness.role(), Role::Witness);
        assert_eq!(witness.node().name, "witness");
        assert_eq!(witness.to_toml().parse::<AnyConfig>().unwrap(), witness);
        assert!(!witness.to_toml().contains("[vrrp]"));
    }

    #[test]
    fn tells_server_and_witness_files_apart() {
        assert_eq!(PRIMARY.parse::<AnyConfig>().unwrap().role(), Role::Server);
        assert_eq!(WITNESS.parse::<AnyConfig>().unwrap().role(), Role::Witness);
        // A witness entry in a file with server sections.
        let text = PRIMARY.replace(
            "{ id = 1, name = \"primary\", address = \"192.0.2.11:4335\" }",
            "{ id = 1, name = \"primary\", address = \"192.0.2.11:4335\", role = \"witness\" }",
        );
        let err = text.parse::<AnyConfig>().unwrap_err().to_string();
        assert!(err.contains("cluster.peers[0].role = \"witness\""), "{err}");
        // A server's entry without [vrrp]: the parser says what is missing.
        let err = WITNESS
            .replace("id = 3\n", "id = 1\n")
            .replace("name = \"witness\"\n        id", "name = \"primary\"\n        id");
        let err = err.parse::<AnyConfig>().unwrap_err().to_string();
        assert!(err.contains("vrrp"), "{err}");
        // [vrrp] in a witness file.
        let err = format!("{WITNESS}\n[vrrp]\ninterface = \"eth0\"\n").parse::<WitnessConfig>();
        assert!(err.unwrap_err().to_string().contains("vrrp"));
        assert!(WITNESS.parse::<WitnessConfig>().is_ok());
    }

    #[test]
    fn witness_entry_must_be_a_witness() {
        let text = WITNESS
            .replace("id = 3\n", "id = 2\n")
            .replace("name = \"witness\"\n        id", "name = \"backup\"\n        id");
        let err = text.parse::<WitnessConfig>().unwrap_err();
        assert_eq!(err.problems()[0].field, "cluster.peers[1].role", "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = edit(PRIMARY, "vrrp", "prioirty = 100")
            .parse::<Config>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("prioirty"), "{err}");
        let err = edit(PRIMARY, "license", "heartbeat_s = 3")
            .parse::<Config>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("heartbeat_s"), "{err}");
    }

    #[test]
    fn bad_vip_syntax_is_refused_with_its_line() {
        let err = edit(PRIMARY, "vrrp", r#"vips = ["192.0.2.100"]"#)
            .parse::<Config>()
            .unwrap_err();
        assert!(err.to_string().contains("ADDRESS/PREFIX"), "{err}");
        assert!(err.to_string().contains("vips"), "{err}");
        let err = edit(PRIMARY, "vrrp", r#"vips = ["192.0.2.100/33"]"#)
            .parse::<Config>()
            .unwrap_err();
        assert!(err.to_string().contains("1 to 32"), "{err}");
    }

    #[test]
    fn node_problems_name_their_field() {
        refused("node", "name = \"my node\"", "node.name");
        refused("node", "id = 0", "node.id");
        refused("node", "cluster_id = 0", "node.cluster_id");
        refused("node", "data_dir = \"var/lib\"", "node.data_dir");
        let shown = refused(
            "node",
            "require_release = \"0.0.0-other\"",
            "node.require_release",
        );
        assert!(shown.contains(env!("CARGO_PKG_VERSION")), "{shown}");
        let ok = edit(
            PRIMARY,
            "node",
            &format!("require_release = \"{}\"", env!("CARGO_PKG_VERSION")),
        );
        ok.parse::<Config>().unwrap();
    }

    #[test]
    fn vrrp_problems_name_their_field() {
        let shown = refused("vrrp", "priority = 0", "vrrp.priority");
        assert_eq!(
            shown,
            "vrrp.priority = 0: must be 1-254 (255 only if a vip is this node's own address)"
        );
        refused("vrrp", "priority = 255", "vrrp.priority");
        refused("vrrp", "vrid = 0", "vrrp.vrid");
        refused("vrrp", "interface = \"\"", "vrrp.interface");
        refused("vrrp", "interface = \"a-very-long-interface\"", "vrrp.interface");
        refused("vrrp", "vips = []", "vrrp.vips");
        refused(
            "vrrp",
            r#"vips = ["192.0.2.100/24", "192.0.2.101/25"]"#,
            "vrrp.vips",
        );
        refused(
            "vrrp",
            r#"vips = ["192.0.2.100/24", "192.0.2.100/24"]"#,
            "vrrp.vips[1]",
        );
        refused("vrrp", r#"vips = ["224.0.0.18/24"]"#, "vrrp.vips[0]");
        let shown = refused("vrrp", r#"vips = ["192.0.2.11/24"]"#, "vrrp.vips[0]");
        assert!(shown.contains("own address"), "{shown}");
        let shown = refused("vrrp", r#"vips = ["192.0.2.12/24"]"#, "vrrp.vips[0]");
        assert!(shown.contains("backup"), "{shown}");
        refused("vrrp", "advert_interval_ms = 1005", "vrrp.advert_interval_ms");
        refused("vrrp", "advert_interval_ms = 0", "vrrp.advert_interval_ms");
        refused("vrrp", "advert_interval_ms = 50000", "vrrp.advert_interval_ms");
        refused("vrrp", "advert_interval_ms = 1000000", "vrrp.advert_interval_ms");
        let v2 = edit(PRIMARY, "vrrp", "version = 2");
        let v2_bad = problems(&edit(&v2, "vrrp", "advert_interval_ms = 1500"));
        assert_eq!(v2_bad[0].field, "vrrp.advert_interval_ms", "{v2_bad:?}");
        edit(&v2, "vrrp", "auth_pass = \"12345678\"")
            .parse::<Config>()
            .unwrap();
        refused("vrrp", "version = 4", "vrrp.version");
        refused("vrrp", "auth_pass = \"secret\"", "vrrp.auth_pass");
        refused("vrrp", "auth_pass = \"much-too-long\"", "vrrp.auth_pass");
        refused("vrrp", "source = \"0.0.0.0\"", "vrrp.source");
        let shown = refused("vrrp", "source = \"192.0.2.100\"", "vrrp.vips[0]");
        assert!(shown.contains("vrrp.source"), "{shown}");
        refused(
            "vrrp",
            r#"unicast_peers = ["192.0.2.12", "192.0.2.12"]"#,
            "vrrp.unicast_peers[1]",
        );
        refused(
            "vrrp",
            r#"unicast_peers = ["192.0.2.11"]"#,
            "vrrp.unicast_peers[0]",
        );
        refused(
            "vrrp",
            r#"unicast_peers = ["192.0.2.100"]"#,
            "vrrp.unicast_peers[0]",
        );
        refused(
            "vrrp",
            r#"unicast_peers = ["224.0.0.18"]"#,
            "vrrp.unicast_peers[0]",
        );
        refused("vrrp", "garp = { count = 1000 }", "vrrp.garp.count");
        refused("vrrp", "garp = { interval_ms = 0 }", "vrrp.garp.interval_ms");
        refused("vrrp", "garp = { refresh_s = 0 }", "vrrp.garp.refresh_s");
    }

    #[test]
    fn cluster_problems_name_their_field() {
        let two = r#"peers = [
            { id = 1, name = "primary", address = "192.0.2.11:4335" },
            { id = 2, name = "backup", address = "192.0.2.12:4335" },
        ]"#;
        edit(PRIMARY, "cluster", two).parse::<Config>().unwrap();
        let cases = [
            (
                r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335" }]"#,
                "cluster.peers",
            ),
            (
                r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335" },
                { id = 2, name = "b", address = "192.0.2.12:4335" },
                { id = 3, name = "c", address = "192.0.2.13:4335" }]"#,
                "cluster.peers",
            ),
            (
                r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335" },
                { id = 2, name = "b", address = "192.0.2.12:4335" },
                { id = 3, name = "w1", address = "192.0.2.13:4335", role = "witness" },
                { id = 4, name = "w2", address = "192.0.2.14:4335", role = "witness" }]"#,
                "cluster.peers",
            ),
            (
                r#"peers = [{ id = 5, name = "primary", address = "192.0.2.11:4335" },
                { id = 2, name = "b", address = "192.0.2.12:4335" }]"#,
                "cluster.peers",
            ),
            (
                r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335" },
                { id = 1, name = "b", address = "192.0.2.12:4335" }]"#,
                "cluster.peers[1].id",
            ),
            (
                r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335" },
                { id = 0, name = "b", address = "192.0.2.12:4335" }]"#,
                "cluster.peers[1].id",
            ),
            (
                r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335" },
                { id = 2, name = "primary", address = "192.0.2.12:4335" }]"#,
                "cluster.peers[1].name",
            ),
            (
                r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335" },
                { id = 2, name = "b", address = "192.0.2.11:4335" }]"#,
                "cluster.peers[1].address",
            ),
            (
                r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335" },
                { id = 2, name = "b", address = "0.0.0.0:4335" }]"#,
                "cluster.peers[1].address",
            ),
            (
                r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:0" },
                { id = 2, name = "b", address = "192.0.2.12:4335" }]"#,
                "cluster.peers[0].address",
            ),
            (
                r#"peers = [{ id = 1, name = "first", address = "192.0.2.11:4335" },
                { id = 2, name = "b", address = "192.0.2.12:4335" }]"#,
                "cluster.peers[0].name",
            ),
            (
                r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335", role = "witness" },
                { id = 2, name = "b", address = "192.0.2.12:4335" },
                { id = 3, name = "c", address = "192.0.2.13:4335" }]"#,
                "cluster.peers[0].role",
            ),
        ];
        for (line, field) in cases {
            refused("cluster", line, field);
        }
        let shown = refused(
            "cluster",
            r#"peers = [{ id = 9, name = "x", address = "192.0.2.11:4335" },
            { id = 2, name = "b", address = "192.0.2.12:4335" }]"#,
            "cluster.peers",
        );
        assert!(shown.contains("no entry for this node"), "{shown}");
        refused("cluster", "listen = \"0.0.0.0:0\"", "cluster.listen");
        edit(PRIMARY, "cluster", "listen = \"0.0.0.0:4335\"")
            .parse::<Config>()
            .unwrap();
        refused("cluster", "tick_ms = 0", "cluster.tick_ms");
        refused("cluster", "heartbeat_ticks = 0", "cluster.heartbeat_ticks");
        refused("cluster", "election_ticks = 3", "cluster.election_ticks");
        refused("cluster", "snapshot_interval = 0", "cluster.snapshot_interval");
        refused(
            "cluster",
            "request_timeout_ms = 1000",
            "cluster.request_timeout_ms",
        );
        refused("cluster", "max_frame = 1000", "cluster.max_frame");
    }

    #[test]
    fn license_problems_name_their_field() {
        refused("license", "keys = { AP = 0 }", "license.keys.AP");
        let shown = refused("license", "keys = { FOO = 3 }", "license.keys.FOO");
        assert!(shown.contains("license.poolable"), "{shown}");
        let dup = problems(&edit(PRIMARY, "license", "keys = { AP = 1, ap = 2 }"));
        assert!(
            dup.iter().any(|p| p.field.starts_with("license.keys.")),
            "{dup:?}"
        );
        refused("license", "poolable = [\"AP\", \"ap\"]", "license.poolable[1]");
        refused(
            "license",
            "switch_specific = [\"AP\"]",
            "license.switch_specific[0]",
        );
        refused("license", "poolable = [\"\"]", "license.poolable[0]");
        refused("license", "poolable = [\"A P\"]", "license.poolable[0]");
        let none = problems(&edit(
            &edit(PRIMARY, "license", "poolable = []"),
            "license",
            "switch_specific = []",
        ));
        assert!(none.iter().any(|p| p.field == "license.poolable"), "{none:?}");
        refused(
            "license",
            "heartbeat_interval_ms = 0",
            "license.heartbeat_interval_ms",
        );
        refused("license", "missed_heartbeats = 0", "license.missed_heartbeats");
        refused("license", "silence_remove_s = 60", "license.silence_remove_s");
        refused("license", "sweep_interval_ms = 0", "license.sweep_interval_ms");
        refused("license", "max_frame = 10", "license.max_frame");
        refused("license", "max_connections = 0", "license.max_connections");
        refused("license", "client_port = 0", "license.client_port");
        refused("license", "client_port = 4335", "license.client_port");
        refused(
            "license",
            "operator_listen = \"192.0.2.11:0\"",
            "license.operator_listen",
        );
        refused(
            "license",
            "operator_listen = \"0.0.0.0:4333\"",
            "license.operator_listen",
        );
        refused(
            "license",
            "operator_listen = \"0.0.0.0:4335\"",
            "license.operator_listen",
        );
        // A timer in milliseconds for tests is fine.
        let fast = edit(PRIMARY, "license", "heartbeat_interval_ms = 50");
        let fast = edit(&fast, "license", "silence_remove_s = 1");
        fast.parse::<Config>().unwrap();
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = edit(PRIMARY, "vrrp", "priority = 0");
        let text = edit(&text, "node", "cluster_id = 0");
        let text = edit(&text, "license", "missed_heartbeats = 0");
        let err = text.parse::<Config>().unwrap_err();
        let fields: Vec<&str> = err.problems().iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["node.cluster_id", "vrrp.priority", "license.missed_heartbeats"],
            "{err}"
        );
        assert_eq!(err.to_string().lines().count(), 3);
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = Config::load("/nonexistent/vipool.toml").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/vipool.toml"), "{err}");
    }
}
