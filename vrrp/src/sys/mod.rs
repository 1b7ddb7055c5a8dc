//! Linux I/O: every OS call and every `unsafe` block of the crate lives here.
//!
//! - [`socket`]: the raw IP protocol-112 socket (TTL 255, 224.0.0.18 joined on
//!   the interface, or unicast peers); with the virtual MAC, received on the
//!   parent and sent from the macvlan.
//! - [`netlink`]: virtual addresses and the virtual-MAC macvlan via rtnetlink.
//! - [`arp`]: gratuitous ARP through an `AF_PACKET` socket (pnet).
//! - [`sysctl`]: the ARP sysctls the virtual-MAC mode needs.
//! - [`driver`]: the tokio task that runs one [`crate::proto::Instance`].

pub mod arp;
pub mod driver;
pub mod netlink;
pub mod socket;
pub mod sysctl;

pub use driver::{GarpConfig, PeerClaims, Speaker, SpeakerConfig, Status, Transition};
