//! Framing: bytes in, messages out. No I/O here.
//!
//! A frame is a big-endian `u32` length `L`, then `L` bytes: a big-endian
//! `u16` protocol version and the message in bincode's standard
//! configuration. `L` covers the version, so an empty body is malformed.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::PROTOCOL_VERSION;

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

/// Encodes `message` as one frame of the current protocol version.
///
/// # Errors
/// The message does not fit in `max` bytes.
pub fn encode<T: Serialize>(message: &T, max: u32) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0; LENGTH_BYTES];
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
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

/// Decodes one whole frame from the start of `buf`.
///
/// Returns `Ok(None)` while `buf` holds less than a frame, else the message
/// and how many bytes of `buf` it took.
///
/// # Errors
/// The frame is too large, of another version or does not decode.
pub fn decode<T: DeserializeOwned>(buf: &[u8], max: u32) -> Result<Option<(T, usize)>, FrameError> {
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
    if version != PROTOCOL_VERSION {
        return Err(FrameError::VersionNotSupported {
            got: version,
            supported: PROTOCOL_VERSION,
        });
    }
    let body = &frame[VERSION_BYTES..];
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
    Ok(Some((message, end)))
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
    }
}
