//! The raw IP protocol-112 socket.
//!
//! We build the IPv4 header ourselves (`IP_HDRINCL`) so the source address,
//! TTL 255 and TOS are exactly what RFC 9568 §5.1.1 asks for whatever the
//! routing table says; the kernel still fills the IP id and header checksum.
//!
//! With the virtual MAC, adverts are received (and 224.0.0.18 joined) on
//! the parent interface and sent from the macvlan: a join makes the kernel
//! send IGMP membership reports from the joining interface, and a report
//! from the virtual MAC of a backup teaches the switch that the VIP's MAC
//! is on the backup's port until the master's next advert (failover_bench:
//! a returning primary's reports stalled the VIP's traffic about 200 ms, one
//! TCP retransmission). keepalived's `vmac_xmit_base` joins on the parent
//! for the same reason, but sends adverts from the parent too; RFC 5798
//! §7.3 wants them from the virtual MAC, which also keeps the switch's
//! entry fresh while master. The parent sees the peer's adverts, which
//! come from the same virtual MAC, only because the macvlan is in bridge
//! mode ([`super::netlink::Netlink::create_macvlan`] says why).

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, SockFilter, Socket, Type};
use tokio::io::unix::AsyncFd;

use crate::wire::{self, IP_PROTOCOL, MULTICAST_GROUP, TTL};

/// A nonblocking raw VRRP socket: one bound to one interface, or a pair
/// (received on the parent, sent from the virtual-MAC interface).
#[derive(Debug)]
pub struct VrrpSocket {
    /// Receives; also sends unless `tx` is set.
    fd: AsyncFd<Socket>,
    /// Sends only, on the virtual-MAC interface (never joins a group).
    tx: Option<AsyncFd<Socket>>,
    source: Ipv4Addr,
}

/// `BPF_RET | BPF_K` with 0: a socket filter that keeps no packet.
const DROP_ALL: [SockFilter; 1] = [SockFilter::new(0x06, 0, 0, 0)];

impl VrrpSocket {
    /// Opens the socket on interface `ifindex`, joins 224.0.0.18 there unless
    /// `multicast` is false (unicast peers), and sends with `source` as the
    /// IP source address.
    ///
    /// # Errors
    /// The OS error, with the step that failed. Needs `CAP_NET_RAW`.
    pub fn open(interface: &str, ifindex: u32, source: Ipv4Addr, multicast: bool) -> io::Result<VrrpSocket> {
        let fd = register(raw(
            interface,
            Role::Receive {
                join: multicast.then_some(ifindex),
            },
        )?)?;
        Ok(VrrpSocket { fd, tx: None, source })
    }

    /// Receives on `parent` (interface `parent_index`, joining 224.0.0.18
    /// there unless `multicast` is false) and sends from `macvlan`, the
    /// virtual-MAC interface on it: no frame ever leaves the macvlan but
    /// the adverts this socket sends (see the module docs).
    ///
    /// # Errors
    /// As [`VrrpSocket::open`].
    pub fn open_virtual_mac(
        parent: &str,
        parent_index: u32,
        macvlan: &str,
        source: Ipv4Addr,
        multicast: bool,
    ) -> io::Result<VrrpSocket> {
        let join = multicast.then_some(parent_index);
        Ok(VrrpSocket {
            fd: register(raw(parent, Role::Receive { join })?)?,
            tx: Some(register(raw(macvlan, Role::SendOnly)?)?),
            source,
        })
    }

    /// The IP source address used on send.
    pub fn source(&self) -> Ipv4Addr {
        self.source
    }

    /// Sends one VRRP message to `dst` inside an IPv4 header with TTL 255.
    ///
    /// # Errors
    /// The OS error.
    pub async fn send(&self, dst: Ipv4Addr, message: &[u8]) -> io::Result<()> {
        let datagram = wire::ipv4::build(self.source, dst, TTL, message);
        let addr = SockAddr::from(SocketAddrV4::new(dst, 0));
        let fd = self.tx.as_ref().unwrap_or(&self.fd);
        loop {
            let mut guard = fd.writable().await?;
            match guard.try_io(|fd| fd.get_ref().send_to(&datagram, &addr)) {
                Ok(result) => return result.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one datagram (IP header included) into `buf`, returning its length.
    ///
    /// # Errors
    /// The OS error.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let result = guard.try_io(|fd| {
                // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout,
                // and recv only writes initialised bytes into the prefix it
                // reports, which we then read as `u8`.
                let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
                fd.get_ref().recv(uninit)
            });
            match result {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

/// What a raw socket is for.
enum Role {
    /// Receives (and may send); joins 224.0.0.18 on the interface of this
    /// index, if any.
    Receive { join: Option<u32> },
    /// Only sends: it keeps nothing it receives (nobody reads it).
    SendOnly,
}

/// A raw protocol-112 socket bound to `interface`, sending with TTL 255 and
/// its own IP header.
fn raw(interface: &str, role: Role) -> io::Result<Socket> {
    let ctx = |what: &'static str| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let socket = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(IP_PROTOCOL))),
    )
    .map_err(ctx("raw socket for IP protocol 112 (needs root or CAP_NET_RAW)"))?;
    if let Role::SendOnly = role {
        // Before the bind: not even one packet is queued.
        socket.attach_filter(&DROP_ALL).map_err(ctx("SO_ATTACH_FILTER"))?;
    }
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(ctx("SO_BINDTODEVICE"))?;
    socket.set_header_included_v4(true).map_err(ctx("IP_HDRINCL"))?;
    // Multicast sent from this socket must not come back to it.
    socket
        .set_multicast_loop_v4(false)
        .map_err(ctx("IP_MULTICAST_LOOP"))?;
    socket
        .set_multicast_ttl_v4(u32::from(TTL))
        .map_err(ctx("IP_MULTICAST_TTL"))?;
    socket.set_ttl_v4(u32::from(TTL)).map_err(ctx("IP_TTL"))?;
    if let Role::Receive { join } = role {
        if let Some(ifindex) = join {
            socket
                .join_multicast_v4_n(&MULTICAST_GROUP, &InterfaceIndexOrAddress::Index(ifindex))
                .map_err(ctx("join 224.0.0.18"))?;
        }
        socket
            .set_recv_buffer_size(256 * 1024)
            .map_err(ctx("SO_RCVBUF"))?;
    }
    socket.set_nonblocking(true).map_err(ctx("O_NONBLOCK"))?;
    Ok(socket)
}

fn register(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its descriptor, keeps it open until it is
    // dropped with the `AsyncFd`, and always returns the same one.
    unsafe { AsyncFd::register(socket) }.map_err(io::Error::from)
}
