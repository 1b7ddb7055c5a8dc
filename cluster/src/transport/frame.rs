//! The frame format of the peer transport.
//!
//! A frame is a big-endian `u32` length, then that many bytes: the protocol
//! version (bincode `u16`), the sender's release (a bincode string, the
//! vipool package version), then a bincode [`Body`] naming the cluster, the
//! sender and the recipient around the payload: a protobuf-encoded raft
//! message (its bytes are the rest of the frame, raw), a small pair message
//! for the application (the servers' VRRP state), or one chunk of a raft
//! message too large for one frame. The version and the release come first
//! and alone so that a peer of another release is told apart from garbage
//! before anything else is decoded.
//!
//! # Chunks
//!
//! A raft message whose frame would exceed `max_frame` (a snapshot of a
//! large table) is encoded once and sent as a run of chunk frames, each
//! within `max_frame`. A chunk's body carries a [`ChunkHeader`] (the
//! message's number, its total length, where this chunk starts in it); the
//! chunk's bytes are the rest of the frame, raw, so the sender writes slices
//! of the one encoding and the receiver copies them straight into the
//! message it reassembles (see `chunk.rs`). The chunks of one message are
//! consecutive on the connection, in order, and nothing comes between them.

use protobuf::Message as _;
use raft::eraftpb::Message;

/// The version of the frame format this build speaks (4: raft messages
/// larger than one frame travel in chunks; 3: TLS only, the body carries
/// raft messages or pair messages).
pub const PROTOCOL_VERSION: u16 = 4;

/// The first protocol whose frames start with the sender's release: a
/// frame of any protocol from this one on names its release, which is
/// logged when the protocol is not ours. Earlier ones spoke plain TCP.
const FIRST_RELEASE_PROTOCOL: u16 = 3;

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
    /// A protobuf-encoded raft message; its bytes follow the body to the
    /// end of the frame (raw: bincode would copy them byte by byte).
    Raft,
    /// A pair message for the application.
    Pair(Vec<u8>),
    /// One chunk of a protobuf-encoded raft message; its bytes follow the
    /// body to the end of the frame.
    Chunk(ChunkHeader),
}

/// Where a chunk sits in the raft message it is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkHeader {
    /// The message's number, chosen by the sender: every chunk of one
    /// message carries the same.
    pub message: u64,
    /// The length of the whole encoded message, the same in every chunk.
    pub total: u64,
    /// Where this chunk's bytes start in the message.
    pub offset: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Body {
    cluster_id: u64,
    from: u64,
    to: u64,
    payload: Payload,
}

/// A decoded frame; a chunk borrows its bytes from the frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame<'a> {
    /// A raft message (its `from` and `to` agree with the envelope).
    Raft(Message),
    /// A pair message from member `from`.
    Pair {
        /// The sender the envelope names.
        from: u64,
        /// What it says (at most [`MAX_PAIR_MESSAGE`] bytes).
        data: Vec<u8>,
    },
    /// One chunk of a raft message from member `from`.
    Chunk {
        /// The sender the envelope names.
        from: u64,
        /// Which message, and where in it.
        header: ChunkHeader,
        /// This chunk's bytes (the rest of the frame).
        data: &'a [u8],
    },
}

impl Frame<'_> {
    /// The member the frame says it comes from.
    pub fn from(&self) -> u64 {
        match self {
            Frame::Raft(m) => m.from,
            Frame::Pair { from, .. } | Frame::Chunk { from, .. } => *from,
        }
    }
}

pub(crate) fn bincode_cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The frame up to the end of `body`, its length prefix counting `tail`
/// more bytes that the caller sends after it.
fn encode_head(version: u16, release: &str, body: &Body, tail: usize) -> Vec<u8> {
    let mut frame = vec![0u8; 4];
    let cfg = bincode_cfg();
    bincode::serde::encode_into_std_write(version, &mut frame, cfg).expect("u16 encodes");
    bincode::serde::encode_into_std_write(release, &mut frame, cfg).expect("str encodes");
    bincode::serde::encode_into_std_write(body, &mut frame, cfg).expect("body encodes");
    let len = (frame.len() - 4 + tail) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame
}

/// Encodes one raft frame (length prefix included) of this build's [`RELEASE`].
pub fn encode_frame(version: u16, cluster_id: u64, msg: &Message) -> Vec<u8> {
    encode_release_frame(version, RELEASE, cluster_id, msg)
}

/// Encodes one raft frame (length prefix included) claiming `release`.
pub fn encode_release_frame(version: u16, release: &str, cluster_id: u64, msg: &Message) -> Vec<u8> {
    let bytes = msg.write_to_bytes().expect("raft messages encode");
    let mut frame = encode_raft_head(version, release, cluster_id, msg.from, msg.to, bytes.len());
    frame.extend_from_slice(&bytes);
    frame
}

/// Encodes the head of a raft frame (length prefix included): what goes
/// on the wire before the `len` bytes of the encoded message.
pub(crate) fn encode_raft_head(
    version: u16,
    release: &str,
    cluster_id: u64,
    from: u64,
    to: u64,
    len: usize,
) -> Vec<u8> {
    let body = Body {
        cluster_id,
        from,
        to,
        payload: Payload::Raft,
    };
    encode_head(version, release, &body, len)
}

/// Encodes the head of a chunk frame (length prefix included): what goes
/// on the wire before the chunk's `len` bytes.
pub(crate) fn encode_chunk_head(
    release: &str,
    cluster_id: u64,
    from: u64,
    to: u64,
    header: ChunkHeader,
    len: usize,
) -> Vec<u8> {
    let body = Body {
        cluster_id,
        from,
        to,
        payload: Payload::Chunk(header),
    };
    encode_head(PROTOCOL_VERSION, release, &body, len)
}

/// Encodes one whole chunk frame (length prefix included): `data` is the
/// part of the message at `header.offset`.
pub fn encode_chunk_frame(
    release: &str,
    cluster_id: u64,
    from: u64,
    to: u64,
    header: ChunkHeader,
    data: &[u8],
) -> Vec<u8> {
    let mut frame = encode_chunk_head(release, cluster_id, from, to, header, data.len());
    frame.extend_from_slice(data);
    frame
}

/// The most a chunk frame of this sender adds to its chunk's bytes, length
/// prefix excluded: bincode integers are varints, so the head is longest
/// with the largest numbers. A whole raft frame adds less.
pub(crate) fn chunk_overhead(release: &str, cluster_id: u64, from: u64, to: u64) -> usize {
    let worst = ChunkHeader {
        message: u64::MAX,
        total: u64::MAX,
        offset: u64::MAX,
    };
    encode_chunk_head(release, cluster_id, from, to, worst, 0).len() - 4
}

/// Encodes one pair-message frame (length prefix included).
pub fn encode_pair_frame(release: &str, cluster_id: u64, from: u64, to: u64, data: &[u8]) -> Vec<u8> {
    let body = Body {
        cluster_id,
        from,
        to,
        payload: Payload::Pair(data.to_vec()),
    };
    encode_head(PROTOCOL_VERSION, release, &body, 0)
}

/// Decodes a frame's payload (after the length prefix) and checks it
/// against this build's [`RELEASE`].
///
/// # Errors
/// As [`decode_release_payload`].
pub fn decode_payload(payload: &[u8], cluster_id: u64, me: u64) -> Result<Frame<'_>, FrameError> {
    decode_release_payload(payload, RELEASE, cluster_id, me)
}

/// Decodes a frame's payload (after the length prefix).
///
/// # Errors
/// The frame is of another protocol version, another `release`, another
/// cluster, for another member, or cannot be decoded.
pub fn decode_release_payload<'a>(
    payload: &'a [u8],
    release: &str,
    cluster_id: u64,
    me: u64,
) -> Result<Frame<'a>, FrameError> {
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
    let tail = &payload[used + used2..];
    if !tail.is_empty() && matches!(body.payload, Payload::Pair(_)) {
        return Err(FrameError::Malformed(format!("{} trailing bytes", tail.len())));
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
        Payload::Raft => {
            let msg = Message::parse_from_bytes(tail).map_err(|e| FrameError::Malformed(e.to_string()))?;
            check_envelope(msg, body.from, body.to).map(Frame::Raft)
        }
        Payload::Chunk(header) => Ok(Frame::Chunk {
            from: body.from,
            header,
            data: tail,
        }),
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

/// Parses a protobuf-encoded raft message reassembled from chunks that
/// the envelope says goes `from` → `to`. The bytes become the message's
/// buffer: a snapshot's data is a view of them, not a copy.
pub(crate) fn decode_raft(bytes: Vec<u8>, from: u64, to: u64) -> Result<Message, FrameError> {
    let msg = Message::parse_from_carllerche_bytes(&bytes.into())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    check_envelope(msg, from, to)
}

/// `msg`, if it goes where its envelope says.
fn check_envelope(msg: Message, from: u64, to: u64) -> Result<Message, FrameError> {
    if msg.to != to || msg.from != from {
        return Err(FrameError::Malformed(
            "envelope and message disagree on from/to".into(),
        ));
    }
    Ok(msg)
}

/// The release of a member whose frame carries another protocol
/// `version`, if the frame starts with a release as this one does (and is
/// not garbage): any protocol from [`FIRST_RELEASE_PROTOCOL`] on, earlier
/// or later than ours. Earlier protocols spoke plain TCP and never get this
/// far.
pub(crate) fn peer_release(payload: &[u8], version: u16) -> Option<String> {
    if version == PROTOCOL_VERSION || version < FIRST_RELEASE_PROTOCOL {
        return None;
    }
    let (_, used): (u16, usize) = bincode::serde::decode_from_slice(payload, bincode_cfg()).ok()?;
    let limited = bincode_cfg().with_limit::<{ MAX_RELEASE_LEN + 16 }>();
    let (release, _): (String, usize) = bincode::serde::decode_from_slice(&payload[used..], limited).ok()?;
    valid_release(&release).then(|| format!("{release} (frame protocol {version})"))
}
