//! The client protocol: what license clients and operator tools say to the
//! server, and what it answers.
//!
//! TCP, one [`frame`] per message. A client sends [`RequestFrame`]s and
//! reads [`ServerMessage`]s: a [`ServerMessage::Reply`] for each request, in
//! order and tagged with the request's `seq`, and, between them, unsolicited
//! [`ServerMessage::Push`]es of revised pool totals to registered clients.

pub mod connection;
mod denied;
pub mod frame;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use denied::{KeyRefusal, RequestError};

use crate::license::SignedKey;
use crate::table::{Client, CommandError, LicenseType, Pool, TableConfig, TableState, TypeKind};

/// The protocol version this build speaks. 2: a switch's keys are signed
/// key lines, and operators have write requests.
pub const PROTOCOL_VERSION: u16 = 2;

/// What a switch reports about itself (SPEC §3): its whole license state,
/// so that a report is idempotent and a new leader can rebuild anything it
/// owns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchReport {
    /// Factory licenses per type; never part of the pool.
    pub builtin: BTreeMap<LicenseType, u32>,
    /// License keys installed on the switch, as signed key lines. Only keys
    /// that verify count (SPEC S7): a trusted issuer's, bound to this
    /// switch's serial, valid now, and counted by nobody else.
    pub keys: Vec<SignedKey>,
    /// Licenses per poolable type the switch takes from the pool (what it
    /// needs beyond its built-in licenses): a claim, checked like an
    /// acquire wherever it is more than the switch holds in the table.
    pub used: BTreeMap<LicenseType, u32>,
}

/// A request with the sequence number its reply will carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// Chosen by the client; echoed in the reply.
    pub seq: u64,
    /// The request.
    pub request: Request,
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Announce the client with its whole license state.
    Register {
        /// Client id.
        id: String,
        /// Serial number.
        serial: String,
        /// Software version.
        version: String,
        /// Whole license state.
        report: SwitchReport,
    },
    /// Periodic heartbeat with the whole state.
    Heartbeat {
        /// Client id.
        id: String,
        /// Whole license state.
        report: SwitchReport,
    },
    /// Immediate update after a change on the client, whole state.
    Update {
        /// Client id.
        id: String,
        /// Whole license state.
        report: SwitchReport,
    },
    /// Ask for `count` licenses of a poolable type.
    Acquire {
        /// Client id.
        id: String,
        /// Poolable type.
        license_type: LicenseType,
        /// How many.
        count: u32,
    },
    /// Give back `count` licenses.
    Release {
        /// Client id.
        id: String,
        /// Poolable type.
        license_type: LicenseType,
        /// How many.
        count: u32,
    },
    /// Operator: this node's status (small, whatever the table's size).
    Status,
    /// Operator: one page of the table: at most [`PAGE_CLIENTS`] clients
    /// after the id `after` (from the start when `None`), with the pool,
    /// the server keys and the status; [`TableDump::next`] says where the
    /// next page starts.
    Show {
        /// The last client id of the previous page.
        after: Option<String>,
    },
    /// Operator: remove a client and everything it contributes.
    RemoveClient {
        /// Client id.
        id: String,
    },
    /// Operator: install a key on a server of the pair, at run time. It
    /// must be bound to that server's serial.
    InstallKey {
        /// The server (node name).
        server: String,
        /// The key line.
        key: SignedKey,
    },
    /// Operator: remove a server's key.
    RemoveKey {
        /// The key's id.
        key_id: String,
    },
}

/// Clients per page of [`Request::Show`]: a page stays far below any frame
/// limit however large the table grows.
pub const PAGE_CLIENTS: usize = 256;

/// Everything a server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// The answer to the request of sequence number `seq`.
    Reply {
        /// The request's `seq` (0 when the request could not be read).
        seq: u64,
        /// The answer.
        response: Result<Response, ServerError>,
    },
    /// The pool changed; revised totals for registered clients.
    Push {
        /// The pool now.
        pool: Pool,
    },
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to client requests: the server's view of the client and the pool.
    Client {
        /// The client as the table holds it after the request.
        client: Box<Client>,
        /// The pool after the request.
        pool: Pool,
    },
    /// Answer to [`Request::Show`].
    Table(Box<TableDump>),
    /// Answer to [`Request::Status`].
    Status(Box<NodeStatus>),
    /// An operator's change committed: the pool after it.
    Changed {
        /// The pool after the change.
        pool: Pool,
    },
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ServerError {
    /// This node does not hold the VIP, or the request came to another address.
    #[error("not the license server, use VIP {}", vip.as_deref().unwrap_or("(unknown)"))]
    NotLicenseServer {
        /// Where the license server answers, when this node knows.
        vip: Option<String>,
    },
    /// The frame's protocol version is not spoken here.
    #[error("protocol version {got} not supported (server speaks {supported})")]
    VersionNotSupported {
        /// The client's version.
        got: u16,
        /// The server's version.
        supported: u16,
    },
    /// The frame is larger than the server accepts.
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Announced size.
        size: u32,
        /// The server's maximum.
        max: u32,
    },
    /// The frame does not decode.
    #[error("malformed frame: {0}")]
    MalformedFrame(String),
    /// The table refused the command (unknown client, over-subscribed, not enough licenses, ...).
    #[error(transparent)]
    Refused(#[from] CommandError),
    /// The server refused the request before proposing anything: a key
    /// that does not verify, a request for another client's id, a source
    /// over its limits, ...
    #[error(transparent)]
    Denied(#[from] RequestError),
    /// The change could not be committed (the node stopped leading, or is shutting down).
    #[error("not committed: {0}")]
    NotCommitted(String),
    /// The request is answered on the other port: license requests on the
    /// client port (the VIP), status, views and operator commands on the
    /// operator port.
    #[error("{0}")]
    WrongPort(String),
    /// The connection's certificate does not allow this request (another
    /// switch's id, or a certificate of the wrong kind for this port).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The connection presented a member certificate of the pair (a
    /// server's or the witness's): it authenticates the cluster link, not
    /// a switch nor an operator. (Appended last: errors travel by index.)
    #[error(
        "refused: a member certificate (member {member:?} of the pair) is not a switch certificate: \
         switches present one from `vipool pki switch`, operators one from `vipool pki operator`"
    )]
    MemberCertificate {
        /// The member the certificate names.
        member: String,
    },
}

impl From<frame::FrameError> for ServerError {
    fn from(e: frame::FrameError) -> Self {
        match e {
            frame::FrameError::TooLarge { size, max } => Self::FrameTooLarge { size, max },
            frame::FrameError::VersionNotSupported { got, supported } => {
                Self::VersionNotSupported { got, supported }
            }
            frame::FrameError::Malformed(why) => Self::MalformedFrame(why),
        }
    }
}

/// One node's view of itself, for `vipool show status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node name.
    pub node: String,
    /// The VIP this node serves on, if configured.
    pub vip: Option<String>,
    /// Whether the node answers license requests now.
    pub serving: bool,
    /// VRRP state (`Master`, `Backup`, ... or `none` without VRRP).
    pub vrrp_state: String,
    /// Raft role (`Leader`, `Follower`, ... or `standalone`).
    pub raft_role: String,
    /// Raft term.
    pub term: u64,
    /// Raft commit index.
    pub commit_index: u64,
    /// Index of the last command applied to the table.
    pub applied_index: u64,
    /// Connected client connections.
    pub connections: u64,
    /// Frames refused (oversized, malformed, wrong version) since start.
    pub bad_frames: u64,
    /// Evaluation keys about to stop counting, soonest first (SPEC §4:
    /// "limits about to expire: both sides show a warning"), then, on a
    /// node of a pair, a peer refused for running another vipool release
    /// (SPEC §1: "peer refused: ADDRESS runs vipool release X, ours Y; ...").
    pub warnings: Vec<String>,
    /// What this node refused from the network since it started, by cause:
    /// VRRP adverts (`vrrp_unknown_peer`, `vrrp_contradicted`, ...) and
    /// raft connections and frames (`raft_strangers`, `raft_impersonations`,
    /// ...). Causes never seen are left out.
    #[serde(default)]
    pub refused: std::collections::BTreeMap<String, u64>,
    /// License requests that waited because their client sent faster
    /// than `license.requests_per_s_per_client` (paced, not refused).
    #[serde(default)]
    pub paced: u64,
    /// Client TLS handshakes completed since start, by kind (`full`,
    /// `resumed`: a session ticket of either member of the pair).
    #[serde(default)]
    pub tls_handshakes: std::collections::BTreeMap<String, u64>,
    /// The pair's session-ticket keys this node holds (0 before the pair
    /// committed one: then a switch resumes only with the server that
    /// gave it its ticket).
    #[serde(default)]
    pub tls_ticket_keys: u64,
}

/// Per-connection heartbeat counters kept by the serving node (not replicated).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatCounters {
    /// Heartbeat requests received.
    pub requests: u64,
    /// Heartbeat answers sent.
    pub responses: u64,
}

/// The whole table as one node holds it, for the operator views.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDump {
    /// The node's clock when it answered (milliseconds since the Unix epoch).
    pub now_ms: u64,
    /// License types and their kinds.
    pub types: BTreeMap<LicenseType, TypeKind>,
    /// Heartbeat interval the node is configured with.
    pub heartbeat_interval_ms: u64,
    /// Clients and server keys.
    pub state: TableState,
    /// The pool.
    pub pool: Pool,
    /// Heartbeat counters by client id, as this node saw them.
    pub heartbeats: BTreeMap<String, HeartbeatCounters>,
    /// This node's status.
    pub status: NodeStatus,
    /// More clients follow: ask for the page after this id.
    #[serde(default)]
    pub next: Option<String>,
}

impl TableDump {
    /// A table configuration with this dump's types and heartbeat interval.
    pub fn config(&self) -> TableConfig {
        TableConfig {
            types: self.types.clone(),
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            ..TableConfig::default()
        }
    }
}
