//! The client protocol: what license clients and operator tools say to the
//! server, and what it answers.
//!
//! TCP, one [`frame`] per message. A client sends [`RequestFrame`]s and
//! reads [`ServerMessage`]s: a [`ServerMessage::Reply`] for each request, in
//! order and tagged with the request's `seq`, and, between them, unsolicited
//! [`ServerMessage::Push`]es of revised pool totals to registered clients,
//! and (version 3) a [`ServerMessage::Held`] for a request the server read
//! and holds (waiting for serving, or for its commit).
//!
//! Versions. Every frame carries its protocol version. A server reads
//! every version from [`OLDEST_PROTOCOL_VERSION`] to [`PROTOCOL_VERSION`]
//! and answers each frame in the version it came in, sending a client of
//! an older version only what that version knows
//! ([`ServerMessage::for_version`]): switches of the previous release
//! keep working with upgraded servers. Upgrade the servers first: a
//! server of an older release refuses a newer client's frames
//! ([`ServerError::VersionNotSupported`]).

pub mod connection;
mod denied;
pub mod frame;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use denied::{KeyRefusal, RequestError};

use crate::license::SignedKey;
use crate::table::{Client, CommandError, LicenseType, Pool, TableConfig, TableState, TypeKind};

/// The protocol version this build speaks. 2: a switch's keys are signed
/// key lines, and operators have write requests. 3: a server says
/// [`ServerMessage::Held`] for a request it holds, a frame without a body
/// is a probe ([`frame::PROBE`]), and [`ServerError::UnexpectedReply`].
pub const PROTOCOL_VERSION: u16 = 3;

/// The oldest protocol version a server still answers (in that version).
pub const OLDEST_PROTOCOL_VERSION: u16 = 2;

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
    /// (Version 3.) The request of sequence number `seq` was read and is
    /// held: the node waits to serve (its leadership is on its way) or
    /// for the change's commit; its [`ServerMessage::Reply`] follows. Sent
    /// only for a request not answered within [`HELD_AFTER`]. A sign of
    /// life of the server itself, not only of its host's TCP.
    Held {
        /// The request's `seq`.
        seq: u64,
    },
}

/// A request whose answer is not ready this long after it was read gets
/// a [`ServerMessage::Held`] first: 10 ms. A request answered sooner (a
/// refusal, a commit on a quiet pair) costs no second frame.
pub const HELD_AFTER: std::time::Duration = std::time::Duration::from_millis(10);

impl ServerMessage {
    /// This message as a client of protocol version `version` can read
    /// it, or `None` when that version has nothing like it (a
    /// [`ServerMessage::Held`] to a version-2 client). Borrowed unless it
    /// had to change.
    pub fn for_version(&self, version: u16) -> Option<std::borrow::Cow<'_, ServerMessage>> {
        use std::borrow::Cow;
        if version >= 3 {
            return Some(Cow::Borrowed(self));
        }
        match self {
            ServerMessage::Held { .. } => None,
            ServerMessage::Reply {
                seq,
                response: Err(e @ ServerError::UnexpectedReply { .. }),
            } => Some(Cow::Owned(ServerMessage::Reply {
                seq: *seq,
                // Version 2's nearest: transient, and the text says it all.
                response: Err(ServerError::NotCommitted(e.to_string())),
            })),
            other => Some(Cow::Borrowed(other)),
        }
    }
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
    /// (Version 3.) The table applied the request's command and answered
    /// it with a reply of another kind: a fault of this server, not of the
    /// request. The change is committed; its answer is lost. (A version-2
    /// client gets this as [`ServerError::NotCommitted`], with this text.)
    #[error(
        "server fault: the table applied {command} and answered with a {reply} reply; the change is \
         committed but its answer is lost: send the request again (a switch's reports carry its \
         whole state) and report this as a vipool bug"
    )]
    UnexpectedReply {
        /// The command, as the log describes it.
        command: String,
        /// The kind of reply the table gave.
        reply: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-2 client is sent nothing it cannot read: no Held, and
    /// the error variant version 3 added as version 2's nearest, with the
    /// same words; everything else unchanged (and not copied).
    #[test]
    fn a_message_for_an_older_client_is_what_it_can_read() {
        use std::borrow::Cow;
        let held = ServerMessage::Held { seq: 4 };
        assert!(held.for_version(2).is_none());
        assert!(matches!(held.for_version(3), Some(Cow::Borrowed(_))));
        let fault = ServerError::UnexpectedReply {
            command: "the register request".into(),
            reply: "swept".into(),
        };
        let said = fault.to_string();
        let reply = ServerMessage::Reply {
            seq: 9,
            response: Err(fault),
        };
        assert_eq!(
            reply.for_version(2).as_deref(),
            Some(&ServerMessage::Reply {
                seq: 9,
                response: Err(ServerError::NotCommitted(said)),
            })
        );
        assert!(matches!(reply.for_version(3), Some(Cow::Borrowed(m)) if *m == reply));
        let push = ServerMessage::Push { pool: Pool::new() };
        assert!(matches!(push.for_version(2), Some(Cow::Borrowed(_))));
        // The versions' shared messages are encoded alike: a version-2
        // client reads them as it always did.
        let bytes = frame::encode_as(&push, 2, 1024).unwrap();
        assert_eq!(
            frame::decode::<ServerMessage>(&bytes, 1024).unwrap().unwrap().0,
            push
        );
    }
}
