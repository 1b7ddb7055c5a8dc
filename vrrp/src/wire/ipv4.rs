//! IPv4 framing around a VRRP message: what a raw socket hands us on receive,
//! and full datagrams for pcap files and packet-injection tests.

use std::net::Ipv4Addr;

use pnet_packet::ip::IpNextHeaderProtocol;
use pnet_packet::ipv4::{checksum, Ipv4Packet, MutableIpv4Packet};

use super::IP_PROTOCOL;

/// The parts of a received IPv4 header that VRRP validation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received<'a> {
    /// IP source address.
    pub src: Ipv4Addr,
    /// IP destination address.
    pub dst: Ipv4Addr,
    /// IP TTL as received.
    pub ttl: u8,
    /// IP protocol number.
    pub protocol: u8,
    /// The IP payload (the VRRP message), trimmed to the IP total length.
    pub payload: &'a [u8],
}

/// Why a datagram from the raw socket could not be split into header and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ipv4Error {
    /// Shorter than an IPv4 header, or than the header length it announces.
    #[error("truncated IPv4 header")]
    Truncated,
    /// Not IP version 4.
    #[error("not an IPv4 datagram")]
    Version,
    /// The total length field disagrees with the bytes received.
    #[error("IPv4 total length {total} does not fit the {len} bytes received")]
    TotalLength {
        /// Total length field.
        total: usize,
        /// Bytes received.
        len: usize,
    },
}

/// Splits a datagram as a Linux raw IPv4 socket delivers it (header included).
///
/// # Errors
/// See [`Ipv4Error`]. Never panics, whatever the input.
pub fn parse(datagram: &[u8]) -> Result<Received<'_>, Ipv4Error> {
    let ip = Ipv4Packet::new(datagram).ok_or(Ipv4Error::Truncated)?;
    if ip.get_version() != 4 {
        return Err(Ipv4Error::Version);
    }
    let header_len = usize::from(ip.get_header_length()) * 4;
    if header_len < 20 || header_len > datagram.len() {
        return Err(Ipv4Error::Truncated);
    }
    let total = usize::from(ip.get_total_length());
    if total < header_len || total > datagram.len() {
        return Err(Ipv4Error::TotalLength {
            total,
            len: datagram.len(),
        });
    }
    Ok(Received {
        src: ip.get_source(),
        dst: ip.get_destination(),
        ttl: ip.get_ttl(),
        protocol: ip.get_next_level_protocol().0,
        payload: &datagram[header_len..total],
    })
}

/// Builds an IPv4 datagram (20-byte header, DF clear, valid header checksum)
/// around `payload` with protocol 112.
pub fn build(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    build_with_protocol(src, dst, ttl, IP_PROTOCOL, payload)
}

/// [`build`] with any protocol number (for wrong-protocol tests).
pub fn build_with_protocol(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut buf = vec![0u8; total];
    {
        let mut ip = MutableIpv4Packet::new(&mut buf).expect("buffer sized for the header");
        ip.set_version(4);
        ip.set_header_length(5);
        ip.set_dscp(0x30); // CS6 (network control), as VRRP speakers send
        ip.set_total_length(total as u16);
        ip.set_ttl(ttl);
        ip.set_next_level_protocol(IpNextHeaderProtocol(protocol));
        ip.set_source(src);
        ip.set_destination(dst);
        ip.set_payload(payload);
        let sum = checksum(&ip.to_immutable());
        ip.set_checksum(sum);
    }
    buf
}
