//! An embedded VRRP speaker for IPv4: VRRPv3 (RFC 9568, RFC 5798) and VRRPv2
//! (RFC 3768) with simple-text authentication.
//!
//! The crate is split by what each part depends on:
//!
//! - [`wire`]: the codec. Bytes in, bytes out; no clock, no sockets.
//! - [`proto`]: the sans-IO state machine. Time is an argument, outputs are
//!   polled; it never reads a clock or touches a socket.
//! - [`sys`]: Linux I/O: the raw protocol-112 socket, VIP addresses through
//!   netlink, gratuitous ARP, and the tokio driver that runs one instance.
#![warn(missing_docs, unreachable_pub)]

pub mod proto;
pub mod sys;
pub mod wire;
