//! The VRRP codec: bytes in, bytes out. No sockets, no clock, no tokio.
//!
//! [`Packet`] is a zero-copy view over a buffer holding one VRRP message (the
//! IP payload); [`Repr`] is its parsed, validated form. [`ipv4`] wraps a
//! message in an IPv4 header for captures and for tests that inject packets.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use vrrp::wire::{Checksum, Packet, Repr, Version};
//!
//! let repr = Repr::advertisement(Version::V3, 7, 100, 100, vec![Ipv4Addr::new(192, 0, 2, 7)]);
//! let (src, dst) = (Ipv4Addr::new(192, 0, 2, 1), vrrp::wire::MULTICAST_GROUP);
//! let mut buf = vec![0u8; repr.buffer_len()];
//! repr.emit(&mut Packet::new_unchecked(&mut buf[..]), Checksum::PseudoHeader { src, dst });
//!
//! let packet = Packet::new_checked(&buf[..]).unwrap();
//! assert!(packet.verify_checksum(Checksum::PseudoHeader { src, dst }));
//! assert_eq!(Repr::parse(&packet, Checksum::PseudoHeader { src, dst }).unwrap(), repr);
//! ```

pub mod ipv4;
mod packet;
#[cfg(test)]
mod tests;

pub use packet::{field, Auth, AuthType, Checksum, MessageType, Packet, Repr, Version};

use std::net::Ipv4Addr;

/// IP protocol number assigned to VRRP.
pub const IP_PROTOCOL: u8 = 112;
/// The IPv4 multicast group VRRP advertisements are sent to (RFC 5798 §5.1.1.2).
pub const MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The only IP TTL a VRRP advertisement may be sent or accepted with.
pub const TTL: u8 = 255;
/// Length of the fixed VRRP header (both versions).
pub const HEADER_LEN: usize = 8;
/// Length of the authentication data trailer of a VRRPv2 message.
pub const V2_AUTH_LEN: usize = 8;
/// Largest advertisement interval a VRRPv3 message can carry, in centiseconds.
pub const V3_MAX_INTERVAL_CS: u16 = 0x0fff;

/// Why a buffer is not an acceptable VRRP message.
///
/// Small and `Copy` so the receive path can count drops by reason without
/// allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header, or than the address list and
    /// authentication data the header announces.
    #[error("truncated: {len} bytes, need {need}")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes the header announces.
        need: usize,
    },
    /// The buffer is longer than the header announces (trailing bytes).
    #[error("length mismatch: {len} bytes, header announces {expected}")]
    Length {
        /// Bytes present.
        len: usize,
        /// Bytes the header announces.
        expected: usize,
    },
    /// The version field is neither 2 nor 3.
    #[error("unsupported VRRP version {0}")]
    Version(u8),
    /// The type field is not 1 (ADVERTISEMENT).
    #[error("unknown VRRP message type {0}")]
    Type(u8),
    /// The checksum does not verify.
    #[error("bad checksum")]
    Checksum,
    /// The virtual router id is 0, which RFC 5798 reserves.
    #[error("virtual router id 0 is invalid")]
    Vrid,
    /// The address count is 0.
    #[error("advertisement carries no addresses")]
    NoAddresses,
    /// The advertisement interval is 0.
    #[error("advertisement interval 0 is invalid")]
    Interval,
    /// VRRPv2 authentication type other than 0 (none) or 1 (simple text).
    #[error("unsupported VRRPv2 authentication type {0}")]
    AuthType(u8),
}

/// Result alias for the codec.
pub type Result<T> = core::result::Result<T, Error>;

/// RFC 1071 one's-complement sum of `data`, folded with `initial`.
pub(crate) fn ones_complement_sum(initial: u32, data: &[u8]) -> u32 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Folds a 32-bit one's-complement accumulator into the final 16-bit checksum.
pub(crate) fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
