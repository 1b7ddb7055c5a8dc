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
//!
//! With a source filter (trusted sources, unicast peers), the receive side
//! is two sockets, each with a classic BPF filter on the IPv4 source
//! address: one queue for the allowed sources, one for every other source.
//! Any host of the segment can send adverts, as fast as the link goes; in
//! one shared queue, a flood from its own address faster than the speaker
//! reads fills the queue, the kernel then drops the peer's adverts as well,
//! and a backup takes the VIP from a live master. In a queue of their own
//! the allowed sources' adverts are lost only to a flood in their own name
//! (one forged in the peer's source address, which nothing at this layer
//! tells apart; the authenticated cluster link is the defence there). The
//! two queues take turns, so an advert of the peer waits for at most one
//! other datagram, and the others are still judged, counted (`unknown_peer`,
//! `own_address`) and logged, so that a misconfigured peer address still
//! shows, and so does a flood from both kinds of source. What overflows
//! the others' queue is dropped by the kernel, uncounted by the speaker
//! (the `drops` column of `/proc/net/raw` counts it); what each filter
//! keeps out of its queue goes into the other, so once both are open no
//! datagram is lost to the filters themselves.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, SockFilter, Socket, Type};
use tokio::io::unix::AsyncFd;

use crate::wire::{self, IP_PROTOCOL, MULTICAST_GROUP, TTL};

/// A nonblocking raw VRRP socket: one bound to one interface, or a pair
/// (received on the parent, sent from the virtual-MAC interface); with a
/// source filter, the receive side is two sockets (see the module docs).
#[derive(Debug)]
pub struct VrrpSocket {
    /// Receives (with a source filter, only from the allowed sources);
    /// also sends unless `tx` is set.
    fd: AsyncFd<Socket>,
    /// With a source filter: receives from every other source, in a queue
    /// of its own.
    others: Option<AsyncFd<Socket>>,
    /// Whether `others` has the next turn (when both queues have datagrams).
    others_next: AtomicBool,
    /// Sends only, on the virtual-MAC interface (never joins a group).
    tx: Option<AsyncFd<Socket>>,
    source: Ipv4Addr,
}

/// A socket filter that keeps no packet.
const DROP_ALL: [Insn; 1] = [Insn::ret(DROP)];

impl VrrpSocket {
    /// Opens the socket on interface `ifindex`, joins 224.0.0.18 there unless
    /// `multicast` is false (unicast peers), and sends with `source` as the
    /// IP source address. With `allowed` sources, datagrams from them get
    /// a queue of their own, apart from all others (see the module docs);
    /// `Some(&[])` gives every datagram the second queue.
    ///
    /// # Errors
    /// The OS error, with the step that failed. Needs `CAP_NET_RAW`.
    /// `InvalidInput` for more than [`MAX_FILTERED_SOURCES`] allowed sources.
    pub fn open(
        interface: &str,
        ifindex: u32,
        source: Ipv4Addr,
        multicast: bool,
        allowed: Option<&[Ipv4Addr]>,
    ) -> io::Result<VrrpSocket> {
        let (fd, others) = receivers(interface, multicast.then_some(ifindex), allowed)?;
        Ok(VrrpSocket {
            fd,
            others,
            others_next: AtomicBool::new(false),
            tx: None,
            source,
        })
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
        allowed: Option<&[Ipv4Addr]>,
    ) -> io::Result<VrrpSocket> {
        let (fd, others) = receivers(parent, multicast.then_some(parent_index), allowed)?;
        Ok(VrrpSocket {
            fd,
            others,
            others_next: AtomicBool::new(false),
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

    /// Receives one datagram (IP header included) into `buf`, returning its
    /// length. With two queues, when both have datagrams, they take turns.
    ///
    /// # Errors
    /// The OS error.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let (mut guard, from_others) = match &self.others {
                None => (self.fd.readable().await?, false),
                Some(others) if self.others_next.load(Ordering::Relaxed) => tokio::select! {
                    biased;
                    ready = others.readable() => (ready?, true),
                    ready = self.fd.readable() => (ready?, false),
                },
                Some(others) => tokio::select! {
                    biased;
                    ready = self.fd.readable() => (ready?, false),
                    ready = others.readable() => (ready?, true),
                },
            };
            let result = guard.try_io(|fd| {
                // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout,
                // and recv only writes initialised bytes into the prefix it
                // reports, which we then read as `u8`.
                let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
                fd.get_ref().recv(uninit)
            });
            match result {
                Ok(result) => {
                    self.others_next.store(!from_others, Ordering::Relaxed);
                    return result;
                }
                Err(_would_block) => continue,
            }
        }
    }
}

/// The receive sockets on `interface` (joining 224.0.0.18 on `join`):
/// one, or with `allowed` sources, theirs and the others'.
fn receivers(
    interface: &str,
    join: Option<u32>,
    allowed: Option<&[Ipv4Addr]>,
) -> io::Result<(AsyncFd<Socket>, Option<AsyncFd<Socket>>)> {
    let Some(allowed) = allowed else {
        return Ok((
            register(raw(interface, Role::Receive { join, filter: None })?)?,
            None,
        ));
    };
    let filter = source_filter(allowed, Keep::Listed)?;
    let fd = register(raw(
        interface,
        Role::Receive {
            join,
            filter: Some(&filter),
        },
    )?)?;
    let filter = source_filter(allowed, Keep::Unlisted)?;
    let others = register(raw(
        interface,
        Role::Receive {
            join,
            filter: Some(&filter),
        },
    )?)?;
    Ok((fd, Some(others)))
}

/// At most this many allowed sources fit the kernel's source filter: a
/// classic BPF jump reaches at most 255 instructions ahead.
pub const MAX_FILTERED_SOURCES: usize = 255;

/// A classic BPF instruction (`struct sock_filter`), comparable in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// `BPF_LD | BPF_W | BPF_ABS`: the 32-bit word at offset `k`, in host order.
const LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K`: on `A == k` skip `jt` instructions, else `jf`.
const JEQ_K: u16 = 0x15;
/// `BPF_RET | BPF_K`: keep the first `k` bytes of the packet.
const RET_K: u16 = 0x06;
/// Where the IPv4 source address is: a raw IPv4 socket's filter sees the
/// packet from its IP header on (and an `AF_INET` socket only IPv4).
const IPV4_SOURCE: u32 = 12;
/// A return value that keeps the whole packet.
const KEEP: u32 = u32::MAX;
/// A return value that drops the packet.
const DROP: u32 = 0;

impl Insn {
    const fn ret(k: u32) -> Insn {
        Insn {
            code: RET_K,
            jt: 0,
            jf: 0,
            k,
        }
    }

    fn to_sock_filter(self) -> SockFilter {
        SockFilter::new(self.code, self.jt, self.jf, self.k)
    }
}

/// Which datagrams a [`source_filter`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Those from a listed source.
    Listed,
    /// Those from any other source.
    Unlisted,
}

/// A socket filter that keeps the IPv4 datagrams whose source address is
/// (`Keep::Listed`) or is not (`Keep::Unlisted`) in `sources`:
///
/// ```text
///        ld  [12]                 ; the source address
///        jeq #sources[0], match   ; one per source
///        ...
///        ret #no-match            ; DROP for Listed, KEEP for Unlisted
/// match: ret #match
/// ```
///
/// # Errors
/// `InvalidInput` for more than [`MAX_FILTERED_SOURCES`] sources.
fn source_filter(sources: &[Ipv4Addr], keep: Keep) -> io::Result<Vec<Insn>> {
    let (on_match, otherwise) = match keep {
        Keep::Listed => (KEEP, DROP),
        Keep::Unlisted => (DROP, KEEP),
    };
    if sources.is_empty() {
        return Ok(vec![Insn::ret(otherwise)]);
    }
    if sources.len() > MAX_FILTERED_SOURCES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} allowed advert sources (trusted sources, unicast peers): the kernel's source \
                 filter holds at most {MAX_FILTERED_SOURCES}; list fewer",
                sources.len()
            ),
        ));
    }
    let n = sources.len();
    let mut program = Vec::with_capacity(n + 3);
    program.push(Insn {
        code: LD_W_ABS,
        jt: 0,
        jf: 0,
        k: IPV4_SOURCE,
    });
    for (i, &source) in sources.iter().enumerate() {
        program.push(Insn {
            code: JEQ_K,
            // From instruction 1 + i past the rest of the comparisons and
            // the no-match return: n - i (at most 255, checked above).
            jt: u8::try_from(n - i).expect("at most MAX_FILTERED_SOURCES"),
            jf: 0,
            k: u32::from(source),
        });
    }
    program.push(Insn::ret(otherwise));
    program.push(Insn::ret(on_match));
    Ok(program)
}

/// Attaches `program`: from then on only what it keeps is queued.
fn attach(socket: &Socket, program: &[Insn]) -> io::Result<()> {
    let program: Vec<SockFilter> = program.iter().map(|i| i.to_sock_filter()).collect();
    socket.attach_filter(&program)
}

/// The most datagrams [`drain`] discards: a queue's worth of adverts, so
/// that a flood arriving as fast as they are read cannot hold the start up.
const DRAIN_MAX: usize = 4096;

/// Discards what the socket queued before it was filtered and bound to
/// its interface (protocol 112 from any source and any interface), so that
/// everything read from it passed the filter on that interface. What
/// passed in the meantime goes too: nothing reads the socket before it is
/// open.
fn drain(socket: &Socket) -> io::Result<()> {
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    for _ in 0..DRAIN_MAX {
        match socket.recv(&mut byte) {
            // A datagram that arrived before, now gone whole.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What a raw socket is for.
enum Role<'a> {
    /// Receives (and may send); joins 224.0.0.18 on the interface of this
    /// index, if any, and keeps only what `filter` keeps, if any.
    Receive {
        join: Option<u32>,
        filter: Option<&'a [Insn]>,
    },
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
    socket.set_nonblocking(true).map_err(ctx("O_NONBLOCK"))?;
    // First: until the bind, the socket receives protocol 112 from every
    // interface, and whatever is queued must have passed the filter.
    let filter = match role {
        Role::SendOnly => Some(&DROP_ALL[..]),
        Role::Receive { filter, .. } => filter,
    };
    if let Some(filter) = filter {
        attach(&socket, filter).map_err(ctx("SO_ATTACH_FILTER"))?;
    }
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(ctx("SO_BINDTODEVICE"))?;
    drain(&socket).map_err(ctx("discarding what came before the filter and the bind"))?;
    socket.set_header_included_v4(true).map_err(ctx("IP_HDRINCL"))?;
    // Multicast sent from this socket must not come back to it.
    socket
        .set_multicast_loop_v4(false)
        .map_err(ctx("IP_MULTICAST_LOOP"))?;
    socket
        .set_multicast_ttl_v4(u32::from(TTL))
        .map_err(ctx("IP_MULTICAST_TTL"))?;
    socket.set_ttl_v4(u32::from(TTL)).map_err(ctx("IP_TTL"))?;
    if let Role::Receive { join, .. } = role {
        if let Some(ifindex) = join {
            socket
                .join_multicast_v4_n(&MULTICAST_GROUP, &InterfaceIndexOrAddress::Index(ifindex))
                .map_err(ctx("join 224.0.0.18"))?;
        }
        socket
            .set_recv_buffer_size(256 * 1024)
            .map_err(ctx("SO_RCVBUF"))?;
    }
    Ok(socket)
}

fn register(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its descriptor, keeps it open until it is
    // dropped with the `AsyncFd`, and always returns the same one.
    unsafe { AsyncFd::register(socket) }.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, i)
    }

    /// Runs `program` as the kernel would on the 20-byte IPv4 header of a
    /// datagram from `src`, for the instructions [`source_filter`] uses:
    /// how many bytes it keeps (0: dropped).
    fn run(program: &[Insn], src: Ipv4Addr) -> u32 {
        let mut header = [0u8; 20];
        header[0] = 0x45;
        header[12..16].copy_from_slice(&src.octets());
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let insn = program[pc];
            pc += 1;
            match insn.code {
                LD_W_ABS => {
                    let k = insn.k as usize;
                    a = u32::from_be_bytes(header[k..k + 4].try_into().unwrap());
                }
                JEQ_K => pc += usize::from(if a == insn.k { insn.jt } else { insn.jf }),
                RET_K => return insn.k,
                code => panic!("unexpected instruction {code:#x}"),
            }
        }
    }

    #[test]
    fn no_sources_keeps_nothing_in_their_queue_and_everything_in_the_others() {
        assert_eq!(source_filter(&[], Keep::Listed).unwrap(), [Insn::ret(DROP)]);
        assert_eq!(source_filter(&[], Keep::Unlisted).unwrap(), [Insn::ret(KEEP)]);
        assert_eq!(run(&source_filter(&[], Keep::Listed).unwrap(), host(1)), DROP);
    }

    #[test]
    fn one_source() {
        let program = source_filter(&[host(2)], Keep::Listed).unwrap();
        assert_eq!(
            program,
            [
                Insn {
                    code: LD_W_ABS,
                    jt: 0,
                    jf: 0,
                    k: 12
                },
                // 192.0.2.2 in host order; on a match skip the drop.
                Insn {
                    code: JEQ_K,
                    jt: 1,
                    jf: 0,
                    k: 0xc000_0202
                },
                Insn::ret(DROP),
                Insn::ret(KEEP),
            ]
        );
        assert_eq!(run(&program, host(2)), KEEP);
        assert_eq!(run(&program, host(1)), DROP);
        assert_eq!(run(&program, Ipv4Addr::new(2, 2, 0, 192)), DROP, "byte order");

        let others = source_filter(&[host(2)], Keep::Unlisted).unwrap();
        assert_eq!(others[..2], program[..2]);
        assert_eq!(others[2..], [Insn::ret(KEEP), Insn::ret(DROP)]);
        assert_eq!(run(&others, host(2)), DROP);
        assert_eq!(run(&others, host(1)), KEEP);
    }

    #[test]
    fn several_sources_jump_to_the_same_match() {
        let sources = [host(2), host(3), host(4)];
        let program = source_filter(&sources, Keep::Listed).unwrap();
        assert_eq!(program.len(), sources.len() + 3);
        let jumps: Vec<(u8, u8, u32)> = program[1..4].iter().map(|i| (i.jt, i.jf, i.k)).collect();
        assert_eq!(
            jumps,
            [(3, 0, 0xc000_0202), (2, 0, 0xc000_0203), (1, 0, 0xc000_0204)]
        );
        for i in 0..=255 {
            let listed = sources.contains(&host(i));
            assert_eq!(
                run(&program, host(i)),
                if listed { KEEP } else { DROP },
                "{}",
                host(i)
            );
            let others = source_filter(&sources, Keep::Unlisted).unwrap();
            assert_eq!(
                run(&others, host(i)),
                if listed { DROP } else { KEEP },
                "{}",
                host(i)
            );
        }
    }

    /// The first comparison jumps furthest: with the most sources, 255.
    #[test]
    fn the_most_sources_reach_the_match_and_one_more_is_refused() {
        let sources: Vec<Ipv4Addr> = (0..MAX_FILTERED_SOURCES)
            .map(|i| Ipv4Addr::from(0xc633_6400 + i as u32))
            .collect();
        let program = source_filter(&sources, Keep::Listed).unwrap();
        assert_eq!(program[1].jt, 255);
        for &source in &sources {
            assert_eq!(run(&program, source), KEEP, "{source}");
        }
        assert_eq!(run(&program, host(1)), DROP);

        let mut too_many = sources;
        too_many.push(host(1));
        let e = source_filter(&too_many, Keep::Listed).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("at most 255"), "{e}");
    }
}
