//! The frame format of the peer transport.
//!
//! A frame is a big-endian `u32` length, then that many bytes: the protocol
//! version (bincode `u16`), the sender's release (a bincode string, the
//! vipool package version), then a bincode [`Body`] naming the cluster, the
//! sender and the recipient around the payload: a protobuf-encoded raft
//! message, or a small pair message for the application (the servers' VRRP
//! state). The version and the release come first and alone so that a peer
//! of another release is told apart from garbage before anything else is
//! decoded.

use protobuf::Message as _;
use raft::eraftpb::Message;

/// The version of the frame format this build speaks (3: TLS only, and
/// the body carries raft messages or pair messages).
pub const PROTOCOL_VERSION: u16 = 3;

/// This build's release: the workspace package version, shared by every
/// crate of vipool.
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// Longest release string a frame may carry; a longer one is malformed.
pub const MAX_RELEASE_LEN: usize = 64;

/// Largest pair message: a handful of fields, never a table.
pub const MAX_PAIR_MESSAGE: usize = 4096;

/// Whether `release` looks like a package version (letters, digits and
/// `.+-_~`, at most [`MAX_RELEASE_LEN`] bytes): safe to log and show as is.
pub(crate) fn valid_release(release: &str) -> bool {
    !release.is_empty()
        && release.len() <= MAX_RELEASE_LEN
        && release
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+-_~".contains(&b))
}

/// Why an inbound frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Declared length above the limit.
    #[error("oversize frame: {len} bytes, limit {max}")]
    Oversize {
        /// Declared length.
        len: u32,
        /// Limit.
        max: u32,
    },
    /// Another protocol version (another vipool release).
    #[error(
        "protocol version {0}, this member speaks {PROTOCOL_VERSION}: refusing to pair with another \
         release; upgrade both servers to the same release"
    )]
    Version(u16),
    /// Another vipool release: both servers must run the same one.
    #[error(
        "peer runs vipool release {theirs}, this member runs {ours}: refusing to pair \
         with another release; upgrade both servers to the same release"
    )]
    Release {
        /// What the frame says.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// Another cluster id.
    #[error("frame from cluster {got}, this is cluster {want}")]
    Cluster {
        /// What the frame says.
        got: u64,
        /// Ours.
        want: u64,
    },
    /// Addressed to another member.
    #[error("frame for member {0}, this is another member")]
    Misaddressed(u64),
    /// Not decodable.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

#[derive(serde::Serialize, serde::Deserialize)]
enum Payload {
    /// A protobuf-encoded raft message.
    Raft(Vec<u8>),
    /// A pair message for the application.
    Pair(Vec<u8>),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Body {
    cluster_id: u64,
    from: u64,
    to: u64,
    payload: Payload,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A raft message (its `from` and `to` agree with the envelope).
    Raft(Message),
    /// A pair message from member `from`.
    Pair {
        /// The sender the envelope names.
        from: u64,
        /// What it says (at most [`MAX_PAIR_MESSAGE`] bytes).
        data: Vec<u8>,
    },
}

impl Frame {
    /// The member the frame says it comes from.
    pub fn from(&self) -> u64 {
        match self {
            Frame::Raft(m) => m.from,
            Frame::Pair { from, .. } => *from,
        }
    }
}

pub(crate) fn bincode_cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn encode_body(version: u16, release: &str, body: &Body) -> Vec<u8> {
    let mut payload = bincode::serde::encode_to_vec(version, bincode_cfg()).expect("u16 encodes");
    payload.extend(bincode::serde::encode_to_vec(release, bincode_cfg()).expect("str encodes"));
    payload.extend(bincode::serde::encode_to_vec(body, bincode_cfg()).expect("body encodes"));
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend(payload);
    frame
}

/// Encodes one raft frame (length prefix included) of this build's [`RELEASE`].
pub fn encode_frame(version: u16, cluster_id: u64, msg: &Message) -> Vec<u8> {
    encode_release_frame(version, RELEASE, cluster_id, msg)
}

/// Encodes one raft frame (length prefix included) claiming `release`.
pub fn encode_release_frame(version: u16, release: &str, cluster_id: u64, msg: &Message) -> Vec<u8> {
    let body = Body {
        cluster_id,
        from: msg.from,
        to: msg.to,
        payload: Payload::Raft(msg.write_to_bytes().expect("raft messages encode")),
    };
    encode_body(version, release, &body)
}

/// Encodes one pair-message frame (length prefix included).
pub fn encode_pair_frame(release: &str, cluster_id: u64, from: u64, to: u64, data: &[u8]) -> Vec<u8> {
    let body = Body {
        cluster_id,
        from,
        to,
        payload: Payload::Pair(data.to_vec()),
    };
    encode_body(PROTOCOL_VERSION, release, &body)
}

/// Decodes a frame's payload (after the length prefix) and checks it
/// against this build's [`RELEASE`].
///
/// # Errors
/// As [`decode_release_payload`].
pub fn decode_payload(payload: &[u8], cluster_id: u64, me: u64) -> Result<Frame, FrameError> {
    decode_release_payload(payload, RELEASE, cluster_id, me)
}

/// Decodes a frame's payload (after the length prefix).
///
/// # Errors
/// The frame is of another protocol version, another `release`, another
/// cluster, for another member, or cannot be decoded.
pub fn decode_release_payload(
    payload: &[u8],
    release: &str,
    cluster_id: u64,
    me: u64,
) -> Result<Frame, FrameError> {
    let (version, used_v): (u16, usize) = bincode::serde::decode_from_slice(payload, bincode_cfg())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version(version));
    }
    // Decoded under a byte limit: a forged length claim must not allocate.
    let limited = bincode_cfg().with_limit::<{ MAX_RELEASE_LEN + 16 }>();
    let (theirs, used_r): (String, usize) = bincode::serde::decode_from_slice(&payload[used_v..], limited)
        .map_err(|e| FrameError::Malformed(format!("release (at most {MAX_RELEASE_LEN} bytes): {e}")))?;
    if !valid_release(&theirs) {
        return Err(FrameError::Malformed(format!(
            "release string of {} bytes: 1 to {MAX_RELEASE_LEN} letters, digits or .+-_~ expected",
            theirs.len()
        )));
    }
    if theirs != release {
        return Err(FrameError::Release {
            theirs,
            ours: release.to_owned(),
        });
    }
    let used = used_v + used_r;
    let (body, used2): (Body, usize) = bincode::serde::decode_from_slice(&payload[used..], bincode_cfg())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used + used2 != payload.len() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes",
            payload.len() - used - used2
        )));
    }
    if body.cluster_id != cluster_id {
        return Err(FrameError::Cluster {
            got: body.cluster_id,
            want: cluster_id,
        });
    }
    if body.to != me {
        return Err(FrameError::Misaddressed(body.to));
    }
    match body.payload {
        Payload::Raft(bytes) => {
            let msg = Message::parse_from_bytes(&bytes).map_err(|e| FrameError::Malformed(e.to_string()))?;
            if msg.to != body.to || msg.from != body.from {
                return Err(FrameError::Malformed(
                    "envelope and message disagree on from/to".into(),
                ));
            }
            Ok(Frame::Raft(msg))
        }
        Payload::Pair(data) if data.len() > MAX_PAIR_MESSAGE => Err(FrameError::Malformed(format!(
            "pair message of {} bytes, limit {MAX_PAIR_MESSAGE}",
            data.len()
        ))),
        Payload::Pair(data) => Ok(Frame::Pair {
            from: body.from,
            data,
        }),
    }
}

/// The release of a member whose frame carries another, later protocol
/// `version`, if the frame starts with a release as this one does (and is
/// not garbage). Earlier protocols spoke plain TCP and never get this far.
pub(crate) fn peer_release(payload: &[u8], version: u16) -> Option<String> {
    if version <= PROTOCOL_VERSION {
        return None;
    }
    let (_, used): (u16, usize) = bincode::serde::decode_from_slice(payload, bincode_cfg()).ok()?;
    let limited = bincode_cfg().with_limit::<{ MAX_RELEASE_LEN + 16 }>();
    let (release, _): (String, usize) = bincode::serde::decode_from_slice(&payload[used..], limited).ok()?;
    valid_release(&release).then(|| format!("{release} (frame protocol {version})"))
}
