//! Telling a VIP holder that lost power from a busy one, while the client
//! waits for it.
//!
//! A holder that hangs or loses power just after its kernel acknowledged
//! a client's bytes (a ClientHello, a registration) never answers, and no
//! byte of the client is left unacknowledged for the ack timeout
//! (`TCP_USER_TIMEOUT`, [`super::ConnectOptions::ack_timeout`]) to catch:
//! only the answer deadline (1.5 s) or the handshake deadline (5 s) would
//! end the wait. A deadline on the server's first sign of life cannot
//! tell that holder from a live server that is merely busy (a herd of
//! 10,000 switches registering again at once on two cores keeps each
//! waiting for seconds): giving up on the busy one adds a handshake and a
//! registration to the very queue it waits in.
//!
//! So the client asks the host's kernel instead of its application: when
//! the server has sent nothing for [`super::ConnectOptions::probe_after`]
//! while the client waits, it sends a few bytes that the server's
//! application drops, a probe. A live host's TCP acknowledges them at
//! once, however busy its server is, and the client waits on; a host that
//! lost power acknowledges nothing, and the ack timeout ends the
//! connection (the client connects again, to whoever holds the VIP by
//! then). While nothing comes, the probes space out, doubling up to the
//! answer deadline ([`Probes`]); anything the server sends starts them
//! over.
//!
//! - During the TLS handshake, before the server's first byte: one TLS
//!   1.3 `change_cipher_spec` record (`14 03 03 00 01 01`,
//!   [`HandshakeProbe`]). RFC 8446 §5: a server "MUST simply drop it"
//!   until the client's Finished; rustls (the servers' TLS) drops up to
//!   two, and the client's own rustls sends at most one, so one probe per
//!   handshake.
//! - Once connected, while a request waits for its answer: a frame with
//!   no body ([`crate::proto::frame::PROBE`], protocol version 3), which
//!   the server drops.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// When the next probe goes while the server stays silent: `first` after
/// the silence began, then twice the previous interval each time, up to
/// `cap`; anything heard from the server starts over at `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probes {
    first: Duration,
    cap: Duration,
    interval: Duration,
    /// The least time between two probes ([`Probes::spaced`]).
    spacing: Duration,
}

impl Probes {
    /// A schedule starting at `first` (at least 1 ms), doubling up to
    /// `cap` (at least `first`).
    pub(crate) fn new(first: Duration, cap: Duration) -> Self {
        let first = first.max(Duration::from_millis(1));
        Probes {
            first,
            cap: cap.max(first),
            interval: first,
            spacing: Duration::ZERO,
        }
    }

    /// The same schedule, but a probe waits at least `ack_timeout` after
    /// the one before (up to the cap): the time the kernel takes to judge
    /// an unacknowledged probe (`ConnectOptions::ack_timeout`).
    ///
    /// A probe sent while the one before is still unacknowledged and not
    /// yet retransmitted postpones the retransmission timer, and with it
    /// the kernel's verdict on the connection (Linux counts the user
    /// timeout from the first retransmission). With probes 100 and 300 ms
    /// into a dead holder's silence, a namespace pair's connection ended
    /// 523 ms in; with the second at 400 ms, 410 ms (kernel 6.18, user
    /// timeout 100 ms). failover_bench, power loss: the fresh connect's
    /// runs of 515-530 ms had their second probe at 298 ms (capture).
    #[must_use]
    pub(crate) fn spaced(mut self, ack_timeout: Duration) -> Self {
        self.spacing = ack_timeout;
        self
    }

    /// How long the server may stay silent before the next probe.
    #[must_use]
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// A probe went: the next one waits twice as long, and at least the
    /// spacing (up to the cap).
    pub(crate) fn probed(&mut self) {
        self.interval = (self.interval * 2).max(self.spacing).min(self.cap);
    }

    /// The server sent something: its silence starts over.
    pub(crate) fn heard(&mut self) {
        self.interval = self.first;
    }
}

/// A TLS 1.3 `change_cipher_spec` record: legacy version 1.2, one byte 1.
const CCS: [u8; 6] = [0x14, 0x03, 0x03, 0x00, 0x01, 0x01];

/// A TCP stream for the TLS handshake that sends one probe ([`CCS`]) when
/// the server has sent nothing `after` its start (see the module docs).
/// Past the server's first byte it is the TCP stream and nothing more.
pub(crate) struct HandshakeProbe {
    tcp: TcpStream,
    /// Until the probe goes, or the server's first byte comes.
    timer: Option<Pin<Box<Sleep>>>,
    /// Bytes of the probe still to write: written before anything else.
    left: usize,
    /// Probes sent (0 or 1), for tests.
    sent: u32,
}

impl HandshakeProbe {
    /// Wraps `tcp`; a probe goes `after` from now unless the server speaks
    /// first (`None`: never).
    pub(crate) fn new(tcp: TcpStream, after: Option<Duration>) -> Self {
        HandshakeProbe {
            tcp,
            timer: after.map(|after| Box::pin(tokio::time::sleep(after))),
            left: 0,
            sent: 0,
        }
    }

    /// The TCP stream.
    pub(crate) fn get_ref(&self) -> &TcpStream {
        &self.tcp
    }

    /// Whether the probe went.
    #[cfg(test)]
    pub(crate) fn probed(&self) -> bool {
        self.sent > 0
    }

    /// Writes what is left of the probe. Ready once it is all out.
    fn poll_probe(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.left > 0 {
            let from = CCS.len() - self.left;
            match Pin::new(&mut self.tcp).poll_write(cx, &CCS[from..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.left -= n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for HandshakeProbe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if read.is_ready() {
            if buf.filled().len() > before {
                // The server spoke: it is there, no probe.
                this.timer = None;
            }
            return read;
        }
        // Waiting for the server. The handshake writes everything it has
        // before it reads (tokio-rustls), so no record of ours is half
        // written here: the probe goes between two records.
        if let Some(timer) = this.timer.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                this.timer = None;
                this.left = CCS.len();
                this.sent += 1;
            }
        }
        if this.left > 0 {
            if let Poll::Ready(Err(e)) = this.poll_probe(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Pending
    }
}

impl AsyncWrite for HandshakeProbe {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.left > 0 {
            std::task::ready!(this.poll_probe(cx))?;
        }
        Pin::new(&mut this.tcp).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.left > 0 {
            std::task::ready!(this.poll_probe(cx))?;
        }
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// The probes space out, doubling, up to the cap, while the server
    /// stays silent; anything it sends starts them over.
    #[test]
    fn probes_double_while_silent_and_start_over_when_heard() {
        let mut p = Probes::new(100 * MS, 1500 * MS);
        let mut intervals = Vec::new();
        for _ in 0..6 {
            intervals.push(p.interval().as_millis());
            p.probed();
        }
        assert_eq!(intervals, [100, 200, 400, 800, 1500, 1500]);
        p.heard();
        assert_eq!(p.interval(), 100 * MS);
        p.probed();
        assert_eq!(p.interval(), 200 * MS);
        p.heard();
        assert_eq!(p.interval(), 100 * MS);
    }

    /// A probe waits for the kernel's verdict on the one before: with an
    /// ack timeout of 300 ms, the second probe comes 300 ms after the
    /// first, not 200; the doubling goes on from there, up to the cap.
    #[test]
    fn a_probe_waits_an_ack_timeout_after_the_one_before() {
        let mut p = Probes::new(100 * MS, 1500 * MS).spaced(300 * MS);
        let mut intervals = Vec::new();
        for _ in 0..5 {
            intervals.push(p.interval().as_millis());
            p.probed();
        }
        assert_eq!(intervals, [100, 300, 600, 1200, 1500]);
        p.heard();
        assert_eq!(p.interval(), 100 * MS, "the first probe is not spaced");
        let mut p = Probes::new(100 * MS, 250 * MS).spaced(300 * MS);
        p.probed();
        assert_eq!(p.interval(), 250 * MS, "the cap still bounds it");
    }

    /// The handshake probe against the servers' own TLS (rustls): a
    /// server that starts the handshake late finds the probe after the
    /// ClientHello, drops it and completes the handshake; a server that
    /// answers at once gets no probe.
    #[test]
    fn a_handshake_probe_is_dropped_by_the_server_and_only_sent_to_a_silent_one() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        use crate::tls::{fixtures, ServerTls};
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::pki::Ca::create(dir.path(), 7, 3650).unwrap();
        let server = ServerTls::new(&fixtures::member(&ca, "primary")).unwrap();
        let switch = fixtures::switch(&ca, &ca, "sw-1", "SN-1");
        let rt = fixtures::runtime();
        rt.block_on(async {
            for late in [Some(Duration::from_millis(400)), None] {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let server = server.clone();
                let accept = tokio::spawn(async move {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let mut seen = Vec::new();
                    if let Some(late) = late {
                        // A busy server: it reads nothing for a while (its
                        // kernel acknowledges what arrives).
                        tokio::time::sleep(late).await;
                        let mut buf = [0u8; 4096];
                        let n = tcp.peek(&mut buf).await.unwrap();
                        seen.extend_from_slice(&buf[..n]);
                    }
                    let (mut stream, _) = server.accept(tcp, Duration::from_secs(5)).await.unwrap();
                    stream.write_all(b"x").await.unwrap();
                    stream.flush().await.unwrap();
                    seen
                });
                let tcp = TcpStream::connect(addr).await.unwrap();
                let probe = HandshakeProbe::new(tcp, Some(100 * MS));
                let mut stream = switch.connect(probe).await.expect("the handshake completes");
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).await.unwrap();
                let seen = accept.await.unwrap();
                match late {
                    Some(_) => {
                        assert!(stream.get_ref().0.probed());
                        assert_eq!(seen[0], 0x16, "a ClientHello first");
                        assert!(seen.ends_with(&CCS), "then the probe: {seen:02x?}");
                    }
                    None => assert!(!stream.get_ref().0.probed(), "the server spoke at once"),
                }
            }
        });
    }

    /// A zero first interval would probe in a tight loop; a cap below it
    /// would shrink the intervals.
    #[test]
    fn probes_never_spin_nor_shrink() {
        let mut p = Probes::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(p.interval(), MS);
        p.probed();
        assert_eq!(p.interval(), MS);
        let mut p = Probes::new(300 * MS, 100 * MS);
        p.probed();
        assert_eq!(p.interval(), 300 * MS);
    }
}
