//! The sections of a configuration file and their defaults.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vrrp::proto::V3Checksum;
use vrrp::sys::GarpConfig;

use crate::server::request::RequestLimits;
use crate::server::ServerConfig;
use crate::table::{TableConfig, DEFAULT_POOLABLE, DEFAULT_SWITCH_SPECIFIC};

use super::*;

/// `[node]`: who this node is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This node's name (letters, digits, `.`, `_`, `-`; at most 63): shown
    /// in logs and status, and the server its license keys are installed
    /// under. Must be the name of its entry in `cluster.peers`.
    pub name: String,
    /// This server's serial number, as its license keys name it (1 to 64
    /// printable ASCII characters without spaces, e.g. "CV0012345").
    /// Required on a server: its key files' keys must be bound to it, and
    /// the server announces it in the table so that an operator's key for
    /// it can be checked on whichever node holds the VIP. A replaced server
    /// has a new serial, and its keys are issued anew for it (SPEC §5). A
    /// witness has no keys and needs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// This node's raft id (non-zero); its entry in `cluster.peers` has this id.
    /// Never reuse the id of a node that was replaced.
    pub id: u64,
    /// Identifies the pair (non-zero, the same on all its members): raft
    /// traffic from another cluster is refused, so two pairs on one network
    /// cannot mix.
    pub cluster_id: u64,
    /// Directory of the raft log and snapshots (an absolute path):
    /// `raft.redb`, created by `vipool init`. A node whose log is missing,
    /// empty or damaged refuses to start; `--rejoin` rebuilds it from the
    /// peer.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Release check: when set, the node refuses to start unless it runs
    /// exactly this vipool release (e.g. "0.1.0"). Pin it to the same value
    /// on every member so that an upgrade of one host alone is caught at
    /// start; whatever it says, members of different releases refuse to
    /// pair (SPEC §1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_release: Option<String>,
    /// Log filter (tracing EnvFilter syntax, e.g. "info" or
    /// "warn,vipool=info"); SIGHUP applies a change without a restart.
    /// Default: the `--log` option (`RUST_LOG` overrides both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
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
    #[serde(deserialize_with = "ranged::vrid")]
    pub vrid: u8,
    /// Priority, 1-254; the higher one is master. 255 only on the owner of
    /// the address: a VIP that is this node's own address. Default 100.
    #[serde(default = "default_priority", deserialize_with = "ranged::priority")]
    pub priority: u8,
    /// The virtual addresses with their prefix length, e.g. "192.0.2.100/24";
    /// all with one prefix length. License clients connect to the first.
    pub vips: Vec<Vip>,
    /// Advertisement interval in milliseconds: a multiple of 10 up to 40950
    /// (v3), whole seconds up to 255000 (v2). Default 1000.
    #[serde(default = "default_advert_interval_ms")]
    pub advert_interval_ms: u32,
    /// VRRP version: 3 (RFC 5798/9568, default) or 2 (RFC 3768).
    #[serde(default = "default_vrrp_version", deserialize_with = "ranged::vrrp_version")]
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
    /// The other server's own address on `interface`: the source of its
    /// adverts (its `vrrp.source`). Adverts from any other source are
    /// dropped and counted (`unknown_peer`), multicast or unicast, so no
    /// other host of the network can take the VIP by advertising a higher
    /// priority; they come in on a socket queue of their own, so a flood
    /// of them cannot crowd the peer's adverts out (what overflows that
    /// queue the kernel drops uncounted: the count is then a lower bound,
    /// `/proc/net/raw` has the rest). Default: the IP of the other server's entry in
    /// `cluster.peers`; set it when raft runs over another network or
    /// through NAT. Never this node's own address nor a VIP; with
    /// `unicast_peers`, one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_address: Option<Ipv4Addr>,
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

/// `[vrrp.garp]`: gratuitous ARP sent when this node becomes master. Each
/// announcement is a gratuitous ARP request and a gratuitous ARP reply per
/// VIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GarpSection {
    /// Announcements per VIP on becoming master, 0 to 100; 0 disables (default 3).
    pub count: u32,
    /// Delay between two announcements of a burst, in milliseconds (default 100).
    pub interval_ms: u64,
    /// One more announcement this many milliseconds after becoming master,
    /// for each entry (default [1000, 2000]): a host whose ARP entry was
    /// refreshed by the old master less than its neighbour locktime ago
    /// (Linux: 1 s) ignores the burst, not these.
    pub repeat_after_ms: Vec<u64>,
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
            repeat_after_ms: garp.repeat_after.iter().map(|d| millis(*d)).collect(),
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

/// `[metrics]`: a read-only HTTP listener with the node's metrics in the
/// OpenMetrics text format at `/metrics` (for Prometheus) and a status
/// page at `/`. Off unless `listen` is set. It is plain HTTP without
/// authentication: bind it to a management address, not the switches'.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// `ADDR:PORT` to listen on (9464 is Prometheus's customary port for
    /// such exporters), e.g. "192.0.2.11:9464".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<std::net::SocketAddr>,
}

impl MetricsSection {
    /// Whether the endpoint is off (nothing to print).
    pub fn is_off(&self) -> bool {
        self.listen.is_none()
    }
}

/// `[tls]`: this member's credentials for the cluster link, mutual TLS 1.3
/// with the pair's own CA (`vipool pki` issues them). There is no way to
/// run the link without TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// The pair's CA certificate (default /etc/vipool/pki/ca.crt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// This member's certificate, naming `node.name` (default
    /// /etc/vipool/pki/NAME.crt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// This member's private key, readable by its owner only (default
    /// /etc/vipool/pki/NAME.key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

impl TlsSection {
    /// The CA, certificate and key files of member `name`, defaults filled in.
    pub fn files(&self, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let dir = std::path::Path::new(crate::pki::DEFAULT_DIR);
        (
            self.ca.clone().unwrap_or_else(|| dir.join(crate::pki::CA_CERT)),
            self.cert
                .clone()
                .unwrap_or_else(|| dir.join(format!("{name}.crt"))),
            self.key
                .clone()
                .unwrap_or_else(|| dir.join(format!("{name}.key"))),
        )
    }

    pub(super) fn fill_defaults(&mut self, name: &str) {
        let (ca, cert, key) = self.files(name);
        *self = TlsSection {
            ca: Some(ca),
            cert: Some(cert),
            key: Some(key),
        };
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
    /// Largest raft frame, in bytes, at least 1 MiB (default 64 MiB); larger
    /// messages travel in chunks; `max_message` bounds a snapshot, and so
    /// the table.
    #[serde(default = "default_raft_max_frame")]
    pub max_frame: u32,
    /// Largest raft message, in bytes, reassembled from chunks: it bounds a
    /// snapshot, and so the table's size (default 1 GiB). A peer announcing
    /// a larger one is disconnected.
    #[serde(default = "default_raft_max_message")]
    pub max_message: u64,
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

/// `[license]`: the license service. The license types and the client
/// timers decide how the replicated table behaves and must be the same on
/// both servers; so should `issuers` (a switch's keys must count whichever
/// server holds the VIP). `key_files`, the ports and the per-source limits
/// are each server's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LicenseSection {
    /// TCP port license clients connect to on the VIP (default 4333); not the
    /// raft port nor the operator port.
    #[serde(deserialize_with = "ranged::port")]
    pub client_port: u16,
    /// The operator endpoint (`vipool show --server`, operator commands;
    /// operator certificates only), answered whether or not the node holds
    /// the VIP. Default: loopback only, 127.0.0.1:4334; set this node's own
    /// address (e.g. "192.0.2.11:4334") to open it to operators on other
    /// hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_listen: Option<SocketAddr>,
    /// The issuers whose license keys count here: trust files
    /// (`NAME.pub`, as `vipool license keygen` writes them; absolute
    /// paths), e.g. `["/etc/vipool/issuers/acme.pub"]`. A key counts only
    /// if one of them signed it (SPEC S7). Default: none, and then no key
    /// counts, the servers' nor the switches'.
    pub issuers: Vec<PathBuf>,
    /// This server's own license keys: files of key lines (`vipool license
    /// issue` prints them; absolute paths), e.g.
    /// `["/etc/vipool/keys/primary.keys"]`. Every key must be signed by one
    /// of `issuers` and bound to `node.serial`; the server keeps its keys in
    /// the table equal to those that are valid now. Plain license counts
    /// are not keys: there is no other way to give a server licenses.
    pub key_files: Vec<PathBuf>,
    /// Most clients the table may hold whose address is the same source
    /// address, and the burst of registrations one address may make at
    /// once (after a failover all its clients re-register). Default 64: a
    /// rack of switches behind one NAT address fits, one host cannot fill
    /// the table. Raise it for simulated switches run from one host.
    pub max_clients_per_source: u32,
    /// Registrations per second one source address may make beyond that
    /// burst (default 16).
    pub registrations_per_s_per_source: u32,
    /// License requests per second one client id may send, over however
    /// many connections, beyond a burst of `request_burst_per_client`
    /// (default 200): a faster client is paced (its requests wait), not
    /// refused. Bounds how fast one switch can grow the log.
    pub requests_per_s_per_client: u32,
    /// The burst of requests one client id may send at once (default 1000).
    pub request_burst_per_client: u32,
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
    /// Threads that serve client and operator connections (TLS
    /// handshakes, requests, answers) beside the node's own thread, which
    /// keeps VRRP and raft on time while a herd of switches reconnects
    /// after a failover. Default: one per CPU, at most 8; 0 serves
    /// connections on the node's own thread.
    pub connection_threads: usize,
    /// Connections served at once from one source address; more are
    /// closed (default 256).
    pub max_connections_per_address: usize,
    /// A TLS handshake must complete within this many milliseconds
    /// (default 5000).
    pub handshake_timeout_ms: u64,
    /// Once a request frame has begun, the rest of it must arrive within
    /// this many milliseconds, and an answer must be taken by the client
    /// within as long (default 10000).
    pub frame_timeout_ms: u64,
    /// A connection that sends no whole request for this many milliseconds
    /// is closed (default 120000; switches heartbeat every
    /// `heartbeat_interval_ms`, so keep it well above that).
    pub idle_timeout_ms: u64,
    /// How long a pool change waits before it is pushed to clients, so that a
    /// burst costs one push per client, in milliseconds (default 100).
    pub push_delay_ms: u64,
    /// The usage log for license audits (absolute path, e.g.
    /// "/var/lib/vipool/usage.jsonl"): one JSON line per grant, release,
    /// client up, down or removed, key change and settings change, written
    /// by the node that serves. Default: none, no usage log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_log: Option<PathBuf>,
    /// The usage log is rotated when it would grow beyond this many bytes
    /// (default 67108864: 64 MiB).
    pub usage_log_max_bytes: u64,
    /// Rotated usage logs kept (`usage.jsonl.1` … `.N`; default 4).
    pub usage_log_keep: u32,
}

impl Default for LicenseSection {
    fn default() -> Self {
        let table = TableConfig::default();
        let server = ServerConfig::default();
        let limits = RequestLimits::default();
        Self {
            client_port: DEFAULT_CLIENT_PORT,
            operator_listen: None,
            issuers: Vec::new(),
            key_files: Vec::new(),
            max_clients_per_source: limits.max_clients_per_source,
            registrations_per_s_per_source: limits.registrations_per_s_per_source,
            requests_per_s_per_client: limits.requests_per_s_per_client,
            request_burst_per_client: limits.request_burst_per_client,
            poolable: DEFAULT_POOLABLE.iter().map(|t| t.to_string()).collect(),
            switch_specific: DEFAULT_SWITCH_SPECIFIC.iter().map(|t| t.to_string()).collect(),
            heartbeat_interval_ms: table.heartbeat_interval_ms,
            missed_heartbeats: table.missed_heartbeats_down,
            silence_remove_s: table.silence_remove_ms / 1000,
            sweep_interval_ms: millis(server.sweep_interval),
            expiry_warning_s: server.expiry_warning.as_secs(),
            max_frame: server.max_frame,
            max_connections: server.max_connections,
            connection_threads: default_connection_threads(),
            max_connections_per_address: server.max_connections_per_address,
            handshake_timeout_ms: millis(server.handshake_timeout),
            frame_timeout_ms: millis(server.frame_timeout),
            idle_timeout_ms: millis(server.idle_timeout),
            push_delay_ms: millis(server.push_delay),
            usage_log: None,
            usage_log_max_bytes: crate::usage::DEFAULT_MAX_BYTES,
            usage_log_keep: crate::usage::DEFAULT_KEEP,
        }
    }
}

/// The most threads `license.connection_threads` takes by default.
pub(super) const DEFAULT_CONNECTION_THREADS_MAX: usize = 8;

/// One connection thread per CPU, at most [`DEFAULT_CONNECTION_THREADS_MAX`].
fn default_connection_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(DEFAULT_CONNECTION_THREADS_MAX)
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
pub(super) fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
pub(super) fn default_priority() -> u8 {
    100
}
pub(super) fn default_advert_interval_ms() -> u32 {
    1000
}
pub(super) fn default_vrrp_version() -> u8 {
    3
}
pub(super) fn yes() -> bool {
    true
}
pub(super) fn default_tick_ms() -> u64 {
    100
}
pub(super) fn default_election_ticks() -> usize {
    10
}
pub(super) fn default_heartbeat_ticks() -> usize {
    3
}
pub(super) fn default_snapshot_interval() -> u64 {
    10_000
}
pub(super) fn default_request_timeout_ms() -> u64 {
    5_000
}
pub(super) fn default_raft_max_frame() -> u32 {
    64 * 1024 * 1024
}
pub(super) fn default_raft_max_message() -> u64 {
    cluster::transport::DEFAULT_MAX_MESSAGE
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

    pub(super) fn fill_defaults(&mut self, me: u64) {
        self.listen = self.listen_address(me);
    }
}

/// Small integer fields read as any integer first, so that one out of
/// range is refused with the field's own rule ("must be 1-254 ...") rather
/// than serde's "expected u8", which tells an operator nothing.
mod ranged {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};

    fn read<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D, rule: &str) -> Result<T, D::Error> {
        let n = i64::deserialize(d)?;
        T::try_from(n).map_err(|_| D::Error::custom(format!("{n} is out of range: {rule}")))
    }

    pub(super) fn vrid<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
        read(d, "vrrp.vrid must be 1-255, the same on both servers")
    }

    pub(super) fn priority<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
        read(
            d,
            "vrrp.priority must be 1-254 (255 only if a vip is this node's own address)",
        )
    }

    pub(super) fn vrrp_version<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
        read(d, "vrrp.version must be 3 (RFC 5798) or 2 (RFC 3768)")
    }

    pub(super) fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        read(d, "license.client_port must be a TCP port, 1-65535")
    }
}
