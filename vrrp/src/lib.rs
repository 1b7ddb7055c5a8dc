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
//!
//! # Trust model
//!
//! VRRPv3 has no authentication (RFC 5798 §9), and the highest priority
//! wins: on its own, any host of the link takes the virtual addresses with
//! one advert. A pair of servers knows more than a plain speaker does: who
//! its one peer is, and, over its mutually authenticated cluster link, what
//! that peer says about itself. VRRP stays the fast signal of who holds
//! the VIP; the authenticated link is the truth. Both mechanisms below are
//! off by default, which leaves a plain RFC speaker.
//!
//! - **Source filter**, [`proto::Config::trusted_sources`] (the peer's
//!   address): an advert from any other source is dropped and counted as
//!   [`proto::DropReason::UnknownPeer`], multicast as well as unicast. An
//!   advert forged with our own address, or with a virtual address at a
//!   priority other than the owner's 255, is dropped as
//!   [`proto::DropReason::OwnAddress`]. This stops every other host of
//!   the link from taking the VIP by advertising. A [`sys::Speaker`]
//!   filters in the kernel too: the peer's adverts get a socket queue of
//!   their own, so that a flood from other hosts cannot crowd them out
//!   ([`sys::socket`] says how, and what is then counted).
//! - **Peer claims**, [`proto::PeerClaim`] given to
//!   [`proto::Instance::set_peer_claim`] (or, on a running speaker,
//!   through [`sys::PeerClaims`]): while the peer's latest claim is valid,
//!   an advert from its address that the claim contradicts (priority 0
//!   while it is not leaving, or another priority than it has) is dropped
//!   as [`proto::DropReason::Contradicted`], and one at its priority while
//!   it says it is not master is held until its next claim (it has usually
//!   just become master). This stops a forgery in the peer's name from
//!   making this node give up the VIP or take it. Once the claim has
//!   expired (the link is down) VRRP alone decides, as without claims.
//!
//! What stays out of reach of anything VRRP can do:
//!
//! - ARP. RFC 5798 §9: "even if a hostile node could not disrupt VRRP, it
//!   can disrupt ARP and create the same effect as having all routers go
//!   into Backup." A host of the link can answer ARP for the VIP, or send
//!   gratuitous ARP, and draw the clients' traffic to itself. What makes a
//!   stolen VIP useless is above VRRP: the switches check the pair's
//!   certificate, so the thief cannot answer them.
//! - The peer's address while the cluster link is down (or before it is
//!   up): then a forgery from it is an advert like any other, and can make
//!   this node give up the VIP or keep it from taking it.
//! - A forgery from the peer's address that agrees with its claim (its
//!   priority, while it is master) is acted on like the peer's own adverts;
//!   in VRRPv3 a backup also learns the advertisement interval it carries.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use std::time::{Duration, Instant};
//! use vrrp::proto::{Config, DropReason, Instance, PeerClaim};
//! use vrrp::wire::{ipv4, Checksum, Repr, Version, MULTICAST_GROUP, TTL};
//!
//! let (peer, me) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
//! let vip = Ipv4Addr::new(192, 0, 2, 100);
//! let mut config = Config::v3(7, 100, me, vec![vip]);
//! config.trusted_sources = vec![peer];
//! let mut vr = Instance::new(config).unwrap();
//! let t0 = Instant::now();
//! vr.startup(t0);
//!
//! // A valid priority-254 advert from `src`, as the raw socket delivers it.
//! let advert = |src| {
//!     let repr = Repr::advertisement(Version::V3, 7, 254, 100, vec![vip]);
//!     let message = repr.to_bytes(Checksum::PseudoHeader { src, dst: MULTICAST_GROUP });
//!     ipv4::build(src, MULTICAST_GROUP, TTL, &message)
//! };
//!
//! // From a third host of the link: not the peer.
//! vr.handle_datagram(t0, &advert(Ipv4Addr::new(192, 0, 2, 66)));
//! assert_eq!(vr.counters().drops_for(DropReason::UnknownPeer), 1);
//!
//! // From the peer's address, but the peer says over the authenticated
//! // link that it is backup at priority 50: a forgery in its name.
//! let claim = PeerClaim {
//!     address: peer,
//!     priority: 50,
//!     master: false,
//!     leaving: false,
//!     valid_until: t0 + Duration::from_secs(3),
//! };
//! vr.set_peer_claim(t0, Some(claim));
//! vr.handle_datagram(t0, &advert(peer));
//! assert_eq!(vr.counters().drops_for(DropReason::Contradicted), 1);
//!
//! // The claim has run out (the link is down): VRRP alone decides.
//! vr.handle_datagram(t0 + Duration::from_secs(3), &advert(peer));
//! assert_eq!(vr.counters().adverts_received, 1);
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod proto;
pub mod sys;
pub mod wire;
