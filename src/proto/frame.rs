//! Framing: bytes in, messages out. No I/O here.
//!
//! A frame is a big-endian `u32` length `L`, then `L` bytes: a big-endian
//! `u16` protocol version and the message in bincode's standard
//! configuration. `L` covers the version. An empty body is malformed in
//! version 2; from version 3 on it is a probe ([`PROBE`]): it carries
//! nothing, is answered with nothing, and is there only for the
//! receiver's TCP to acknowledge.
//!
//! A side reads frames of every version from [`OLDEST_PROTOCOL_VERSION`]
//! to [`PROTOCOL_VERSION`] and says which one each frame was; what it
//! writes is the caller's choice ([`encode_as`]): a server answers in the
//! version it was asked in.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// Bytes of the length prefix.
pub const LENGTH_BYTES: usize = 4;
/// Bytes of the version field.
pub const VERSION_BYTES: usize = 2;
/// Largest request frame a server accepts by default (length prefix excluded).
pub const DEFAULT_MAX_REQUEST: u32 = 64 * 1024;
/// Largest frame a client accepts by default: table dumps for operator views are big.
pub const DEFAULT_MAX_RESPONSE: u32 = 64 * 1024 * 1024;

/// Why bytes are not a frame this side can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the receiver accepts.
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced length.
        size: u32,
        /// The receiver's maximum.
        max: u32,
    },
    /// The frame is of a protocol version this side does not speak.
    #[error("protocol version {got} not supported (this side speaks {supported})")]
    VersionNotSupported {
        /// The version in the frame.
        got: u16,
        /// The version this side speaks.
        supported: u16,
    },
    /// The frame does not decode into a message.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// The probe frame: a frame of the current version with no body. A
/// client sends it while it waits for the server and has heard nothing
/// for a while: the server's TCP must acknowledge it within the client's
/// ack timeout (`TCP_USER_TIMEOUT`) whatever its application is busy
/// with, so a connection to a host that lost power ends then, and one to
/// a busy server does not (see `client::DEFAULT_PROBE_AFTER`). The
/// receiver drops it.
pub const PROBE: [u8; LENGTH_BYTES + VERSION_BYTES] = {
    let v = PROTOCOL_VERSION.to_be_bytes();
    [0, 0, 0, VERSION_BYTES as u8, v[0], v[1]]
};

/// The first protocol version in which an empty body is a probe.
pub const PROBE_VERSION: u16 = 3;

/// What a whole frame held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// A message, in this protocol version.
    Message {
        /// The message.
        message: T,
        /// The frame's protocol version.
        version: u16,
    },
    /// A probe ([`PROBE`]): nothing to read, nothing to answer.
    Probe,
}

/// Encodes `message` as one frame of the current protocol version.
///
/// # Errors
/// The message does not fit in `max` bytes.
pub fn encode<T: Serialize>(message: &T, max: u32) -> Result<Vec<u8>, FrameError> {
    encode_as(message, PROTOCOL_VERSION, max)
}

/// Encodes `message` as one frame of protocol version `version` (the
/// caller makes sure the message means the same in it).
///
/// # Errors
/// The message does not fit in `max` bytes.
pub fn encode_as<T: Serialize>(message: &T, version: u16, max: u32) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0; LENGTH_BYTES];
    out.extend_from_slice(&version.to_be_bytes());
    bincode::serde::encode_into_std_write(message, &mut out, bincode::config::standard())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let size = u32::try_from(out.len() - LENGTH_BYTES).unwrap_or(u32::MAX);
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    out[..LENGTH_BYTES].copy_from_slice(&size.to_be_bytes());
    Ok(out)
}

/// Reads the length prefix at the start of `buf`, if it is all there.
///
/// # Errors
/// The announced length is above `max`: the receiver must not read the body.
pub fn peek_len(buf: &[u8], max: u32) -> Result<Option<u32>, FrameError> {
    let Some(prefix) = buf.get(..LENGTH_BYTES) else {
        return Ok(None);
    };
    let size = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    Ok(Some(size))
}

/// Decodes one whole message frame from the start of `buf`, of any
/// version this side reads (a probe is malformed here: see [`decode_frame`]).
///
/// Returns `Ok(None)` while `buf` holds less than a frame, else the message
/// and how many bytes of `buf` it took.
///
/// # Errors
/// The frame is too large, of another version or does not decode.
pub fn decode<T: DeserializeOwned>(buf: &[u8], max: u32) -> Result<Option<(T, usize)>, FrameError> {
    match decode_frame(buf, max)? {
        Some((Decoded::Message { message, .. }, used)) => Ok(Some((message, used))),
        Some((Decoded::Probe, _)) => Err(FrameError::Malformed("a probe, not a message".into())),
        None => Ok(None),
    }
}

/// Decodes one whole frame from the start of `buf`: a message with its
/// version, or a probe.
///
/// Returns `Ok(None)` while `buf` holds less than a frame, else what the
/// frame held and how many bytes of `buf` it took.
///
/// # Errors
/// The frame is too large, of a version this side does not read, or does
/// not decode.
pub fn decode_frame<T: DeserializeOwned>(
    buf: &[u8],
    max: u32,
) -> Result<Option<(Decoded<T>, usize)>, FrameError> {
    let Some(size) = peek_len(buf, max)? else {
        return Ok(None);
    };
    let end = LENGTH_BYTES + size as usize;
    let Some(frame) = buf.get(LENGTH_BYTES..end) else {
        return Ok(None);
    };
    let Some(version) = frame.get(..VERSION_BYTES) else {
        return Err(FrameError::Malformed(
            "frame shorter than its version field".into(),
        ));
    };
    let version = u16::from_be_bytes([version[0], version[1]]);
    if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
        return Err(FrameError::VersionNotSupported {
            got: version,
            supported: PROTOCOL_VERSION,
        });
    }
    let body = &frame[VERSION_BYTES..];
    if body.is_empty() && version >= PROBE_VERSION {
        return Ok(Some((Decoded::Probe, end)));
    }
    // The limit keeps a lying length inside the body from allocating more than the frame.
    let (message, read) = bincode::serde::decode_from_slice::<T, _>(
        body,
        bincode::config::standard().with_limit::<{ DEFAULT_MAX_RESPONSE as usize }>(),
    )
    .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if read != body.len() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes",
            body.len() - read
        )));
    }
    Ok(Some((Decoded::Message { message, version }, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_partial_input() {
        let bytes = encode(&("hello".to_owned(), 7u32), 1024).unwrap();
        assert_eq!(&bytes[..4], &(bytes.len() as u32 - 4).to_be_bytes());
        assert_eq!(&bytes[4..6], &PROTOCOL_VERSION.to_be_bytes());
        for cut in 0..bytes.len() {
            assert_eq!(
                decode::<(String, u32)>(&bytes[..cut], 1024),
                Ok(None),
                "cut at {cut}"
            );
        }
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        let (message, used) = decode::<(String, u32)>(&two, 1024).unwrap().unwrap();
        assert_eq!((message, used), (("hello".to_owned(), 7), bytes.len()));
    }

    #[test]
    fn impossible_len_and_bad_versions() {
        assert_eq!(
            decode::<u32>(&[0, 1, 0, 1], 1024),
            Err(FrameError::TooLarge {
                size: 65_537,
                max: 1024
            })
        );
        assert!(matches!(
            decode::<u32>(&[0, 0, 0, 1, 0], 1024),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            decode::<u32>(&[0, 0, 0, 0], 1024),
            Err(FrameError::Malformed(_))
        ));
        assert_eq!(
            decode::<u32>(&[0, 0, 0, 3, 0xff, 0xff, 1], 1024),
            Err(FrameError::VersionNotSupported {
                got: 0xffff,
                supported: PROTOCOL_VERSION
            })
        );
        let mut trailing = encode(&5u32, 1024).unwrap();
        trailing.push(0);
        trailing[3] += 1;
        assert!(matches!(
            decode::<u32>(&trailing, 1024),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            encode(&vec![0u8; 100], 10),
            Err(FrameError::TooLarge { .. })
        ));
        // Below the oldest version still read: refused the same way.
        let old = OLDEST_PROTOCOL_VERSION - 1;
        let mut too_old = encode(&5u32, 1024).unwrap();
        too_old[4..6].copy_from_slice(&old.to_be_bytes());
        assert_eq!(
            decode::<u32>(&too_old, 1024),
            Err(FrameError::VersionNotSupported {
                got: old,
                supported: PROTOCOL_VERSION
            })
        );
    }

    /// Every version from the oldest on is read, and said; what a side
    /// writes is its choice.
    #[test]
    fn older_versions_are_read_and_said() {
        for version in OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION {
            let bytes = encode_as(&7u32, version, 1024).unwrap();
            assert_eq!(&bytes[4..6], &version.to_be_bytes());
            assert_eq!(
                decode_frame::<u32>(&bytes, 1024).unwrap(),
                Some((Decoded::Message { message: 7, version }, bytes.len()))
            );
        }
    }

    /// A body-less frame is a probe from version 3 on, and malformed in
    /// version 2 (as it always was); `decode`, which wants a message,
    /// refuses a probe.
    #[test]
    fn an_empty_body_is_a_probe_from_version_3() {
        assert_eq!(&PROBE[4..], &PROTOCOL_VERSION.to_be_bytes());
        assert_eq!(
            decode_frame::<u32>(&PROBE, 1024).unwrap(),
            Some((Decoded::Probe, PROBE.len()))
        );
        for cut in 0..PROBE.len() {
            assert_eq!(decode_frame::<u32>(&PROBE[..cut], 1024).unwrap(), None);
        }
        let mut v2 = PROBE;
        v2[4..6].copy_from_slice(&2u16.to_be_bytes());
        assert!(matches!(
            decode_frame::<u32>(&v2, 1024),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            decode::<u32>(&PROBE, 1024),
            Err(FrameError::Malformed(_))
        ));
    }
}
