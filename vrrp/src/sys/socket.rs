//! The raw IP protocol-112 socket.
//!
//! We build the IPv4 header ourselves (`IP_HDRINCL`) so the source address,
//! TTL 255 and TOS are exactly what RFC 9568 §5.1.1 asks for whatever the
//! routing table says; the kernel still fills the IP id and header checksum.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use crate::wire::{self, IP_PROTOCOL, MULTICAST_GROUP, TTL};

/// A nonblocking raw VRRP socket bound to one interface.
#[derive(Debug)]
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    source: Ipv4Addr,
}

impl VrrpSocket {
    /// Opens the socket on interface `ifindex`, joins 224.0.0.18 there unless
    /// `multicast` is false (unicast peers), and sends with `source` as the
    /// IP source address.
    ///
    /// # Errors
    /// The OS error, with the step that failed. Needs `CAP_NET_RAW`.
    pub fn open(interface: &str, ifindex: u32, source: Ipv4Addr, multicast: bool) -> io::Result<VrrpSocket> {
        let ctx = |what: &'static str| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        let socket = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IP_PROTOCOL))),
        )
        .map_err(ctx("raw socket for IP protocol 112 (needs root or CAP_NET_RAW)"))?;
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
        if multicast {
            socket
                .join_multicast_v4_n(&MULTICAST_GROUP, &InterfaceIndexOrAddress::Index(ifindex))
                .map_err(ctx("join 224.0.0.18"))?;
        }
        socket
            .set_recv_buffer_size(256 * 1024)
            .map_err(ctx("SO_RCVBUF"))?;
        socket.set_nonblocking(true).map_err(ctx("O_NONBLOCK"))?;
        // SAFETY: `Socket` owns its descriptor, keeps it open until it is
        // dropped with the `AsyncFd`, and always returns the same one.
        let fd = unsafe { AsyncFd::register(socket) }.map_err(io::Error::from)?;
        Ok(VrrpSocket { fd, source })
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
        loop {
            let mut guard = self.fd.writable().await?;
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
