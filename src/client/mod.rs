//! The client side of the protocol: one connection to the license server.
//!
//! A switch connects with [`Connection::connect`]: TLS with the pair's CA
//! pinned and its own certificate presented (see [`crate::tls`]).
//! [`Connection::connect_insecure`] speaks the same protocol over plain TCP,
//! to a standalone `vipool serve --insecure-plaintext` only.
//! [`Connection::connect_with`] does either within the deadlines of
//! [`ConnectOptions`], as a switch does across a failover: staggered TCP
//! attempts (a SYN lost to the VIP's old holder costs one stagger, not a
//! connect timeout), a bound on how long sent bytes may go
//! unacknowledged (a holder that lost power is left within it), and probes
//! while it waits for a silent server (a holder that lost power after its
//! kernel acknowledged what the client sent is left within a probe
//! interval and the ack timeout: see `probe.rs`).
//!
//! Every error says whether trying again can help ([`ClientError::verdict`]).

mod connect;
mod probe;
mod verdict;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, ToSocketAddrs};

pub use verdict::Verdict;

use crate::license::SignedKey;
use crate::proto::connection::{Framed, ReadError, WriteError};
use crate::proto::frame::{self, FrameError};
use crate::proto::{Request, RequestFrame, Response, ServerError, ServerMessage, SwitchReport, TableDump};
use crate::table::{Client, LicenseType, Pool};
use crate::tls::ClientTls;
use probe::{HandshakeProbe, Probes};

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed. (The cause is in the message and not also
    /// the error's source: a report would print it twice.)
    #[error("connection: {0}")]
    Io(std::io::Error),
    /// The TLS handshake failed: the server is not one of the pair (its
    /// certificate is not of the pinned CA, or does not name the license
    /// server), or it refused our certificate.
    #[error("TLS handshake with the server failed: {0}")]
    Tls(std::io::Error),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server sent something this client cannot read.
    #[error("bad frame from the server: {0}")]
    Frame(FrameError),
    /// The first bytes the other end sent are not a vipool frame at all:
    /// another service answers on that address and port (a web server
    /// answering a request's bytes with "HTTP/1.1 400" reads as a frame
    /// of 1,213,486,160 bytes).
    #[error("{peer} is not a vipool server: its answer does not read as the vipool protocol ({why})")]
    NotVipool {
        /// The address that answered.
        peer: SocketAddr,
        /// What did not read.
        why: FrameError,
    },
    /// A connection without TLS (`--insecure-plaintext`) to a server that
    /// speaks TLS: its first bytes are a TLS record (an alert).
    #[error("{peer} speaks TLS: connect with the pair's CA and a certificate (--ca, --cert), not --insecure-plaintext")]
    SpeaksTls {
        /// The address that answered.
        peer: SocketAddr,
    },
    /// The server answered with an error.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The server answered with something that does not fit the request.
    #[error("unexpected answer from the server")]
    Unexpected,
    /// A request got no answer within the answer deadline
    /// ([`ConnectOptions::answer_timeout`]): the connection is dead (its
    /// host lost power, say, after its kernel acknowledged the request)
    /// and every later request on it fails the same way. Connect again:
    /// the VIP's next holder answers. Whether the request took effect is
    /// unknown.
    #[error("no answer from {peer} within {} ms: connection given up", after.as_millis())]
    NoAnswer {
        /// The address that did not answer.
        peer: SocketAddr,
        /// The deadline that passed.
        after: Duration,
    },
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        ClientError::Frame(e)
    }
}

impl From<ReadError> for ClientError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => ClientError::Io(e),
            ReadError::Truncated => ClientError::Closed,
            ReadError::Frame(e) => ClientError::Frame(e),
        }
    }
}

impl From<WriteError> for ClientError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Io(e) => ClientError::Io(e),
            WriteError::Frame(e) => ClientError::Frame(e),
        }
    }
}

/// A connected stream, TLS or plain.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// A connection to a license server.
pub struct Connection {
    framed: Framed<Box<dyn Stream>>,
    peer: SocketAddr,
    seq: u64,
    /// Whether a whole message has come: until one has, bytes that are
    /// not a frame mean the other end is not a vipool server at all.
    heard: bool,
    last_push: Option<Pool>,
    /// How long a request may wait for its answer (`None`: for ever).
    answer_timeout: Option<Duration>,
    /// How long the server may stay silent while a request waits before
    /// the connection is probed (`None`: never).
    probe_after: Option<Duration>,
    /// The least time between two probes: the ack timeout the connection
    /// was made with (see `Probes::spaced`).
    probe_spacing: Duration,
    /// Set when a request's deadline passed: the connection is dead.
    gave_up: Option<Duration>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("peer", &self.peer).finish()
    }
}

/// The TCP connect timeout of [`ConnectOptions::default`]: 300 ms.
///
/// Why this long. When the VIP holder dies, the backup takes the VIP after
/// the VRRP Master_Down_Interval (3 adverts and a skew: about 360 ms with
/// 100 ms adverts, 3.6 s with the default 1 s). A SYN sent to the VIP in
/// between goes to the dead host and is lost, and the kernel would send it
/// again only after 1 s, then 3 s, 7 s: a switch would reach the new
/// master up to seconds after it took over. With a timeout of 300 ms the
/// switch gives that SYN up and sends a new one (at once: see
/// [`crate::switch::SwitchConfig::failover_window`]), so it reaches the new
/// master at most about 300 ms after the takeover, whatever the
/// Master_Down_Interval. Shorter would be faster still, but a TCP connect
/// on a campus network takes well under 10 ms, and 300 ms leaves room for
/// a slow WAN path or a busy server's SYN queue; a switch whose failures
/// outlast the failover window doubles its timeout with its backoff, so a
/// path slower than this still gets through.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// The TLS handshake deadline of [`ConnectOptions::default`]: 5 s, the
/// servers' own handshake deadline (`license.handshake_timeout_ms`), after
/// which they drop the connection anyway. The handshake runs with a live
/// server (the TCP connection is up) and TCP retransmits a lost segment
/// within its own timer, so it needs no failover-sized deadline; a short
/// one would only make a herd of switches, reconnecting at once after a
/// failover, start their handshakes again while the server works through
/// them. A holder that lost power after its kernel took the ClientHello
/// is left sooner, by a probe ([`DEFAULT_PROBE_AFTER`]), not by this.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A handshake hedge for [`ConnectOptions::handshake_hedge`]: 300 ms.
/// Off in [`ConnectOptions::default`] (see below).
///
/// Why a hedge. A holder that hangs or loses power just after its kernel
/// acknowledged a new connection's SYN and ClientHello never sends its
/// ServerHello: no byte of ours is left unacknowledged (so
/// `TCP_USER_TIMEOUT` does not fire), and the handshake deadline is 5 s
/// (why, at [`DEFAULT_HANDSHAKE_TIMEOUT`]). A holder that lost power is
/// left by the handshake's probe ([`DEFAULT_PROBE_AFTER`]) within 400 ms,
/// with no second handshake; a holder whose kernel is up and whose
/// process hung acknowledges the probe, and only the hedge (or the
/// deadline) ends that handshake. So
/// when a handshake has not completed this long after its TCP connection
/// was made, one more connection and handshake start beside it, and the
/// first to complete wins; the other is reset (no close handshake, so a
/// busy server wastes no handshake on it). A live server completes a
/// handshake within a few milliseconds; 300 ms, the connect timeout, is
/// outlasted by nothing but a dead or swamped server.
///
/// Why off by default. A swamped server is the herd's case: after a
/// failover of 10,000 switches every handshake waits behind the others for
/// longer than 300 ms, every switch hedges, and the extra handshakes feed
/// the queue. herd_bench, 10,000 switches, graceful stop, on this
/// project's two-core lab machine: all registered again 47.7 s after the
/// VIP moved with a 300 ms hedge (6,849 full and 49,415 resumed handshakes
/// on the survivor), 5.3 s without (22 full, 10,785 resumed). Turn it on
/// for a pair serving a few hundred switches, where a fresh switch that
/// met a dying holder otherwise waits out the handshake deadline.
pub const DEFAULT_HANDSHAKE_HEDGE: Duration = Duration::from_millis(300);

/// The answer deadline of [`ConnectOptions::default`]: 1.5 s.
///
/// Why this long. When the VIP holder loses power, a request its kernel
/// had already acknowledged is never answered and nothing resets the
/// connection (the host is gone): without a deadline a switch would wait
/// for its own much longer timers (the heartbeat interval, 30 s) while the
/// backup serves after the Master_Down_Interval (about 0.36 s with 100 ms
/// adverts). So a request unanswered for this long means the connection is
/// dead, and the switch reconnects to the VIP at once.
///
/// It must not cut short a request that is legitimately slow: a node that
/// has just taken the VIP holds license requests for up to
/// [`crate::server::HOLD_FOR_SERVING`] (1 s) while its raft leadership
/// arrives, and then answers after a commit (milliseconds with the fast
/// configuration's 10 ms raft ticks, tens with the default ones). 1.5 s is
/// that hold plus a margin of half a second for the commit, a busy node
/// and the network; shorter would give up on a node about to answer,
/// and make the switch register again with the very node that held it.
/// A request sent just before a power loss is then retried on the new
/// holder about 1.5 s later, instead of 30 s or more.
///
/// Probes ([`DEFAULT_PROBE_AFTER`]) end that wait sooner, about 400 ms
/// after the holder fell silent, when its host lost power (nothing
/// acknowledges the probe). This deadline stays for what a probe cannot
/// see: a host that is up (its kernel acknowledges) whose server does not
/// answer, and connections without probes or without an ack timeout.
pub const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_millis(1500);

/// The probe interval of [`ConnectOptions::default`]: 100 ms.
///
/// What it is for. A VIP holder that hangs or loses power just after its
/// kernel acknowledged the client's ClientHello or request never answers,
/// and nothing of the client's is left unacknowledged for the ack timeout
/// ([`DEFAULT_ACK_TIMEOUT`]) to catch: the handshake deadline (5 s) or the
/// answer deadline (1.5 s) would end the wait. So when the server has
/// sent nothing for this long while the client waits for it, the client
/// sends a probe (a few bytes the server drops: see `client/probe.rs`).
/// A live host's TCP acknowledges it at once, however busy its server
/// is; a dead one acknowledges nothing and the ack timeout ends the
/// connection. While the server stays silent the next probes come after
/// 200, 400, 800 ms ... (up to the answer deadline); anything it sends,
/// such as a [`crate::proto::ServerMessage::Held`], starts them over.
///
/// Why not a deadline on the server's first answer instead: it cannot tell
/// a dead holder from a live one that is busy, and after a failover the
/// new holder is busy: 10,000 switches register again at once and each
/// waits for seconds behind the others. A switch that gave up would add a
/// handshake and a registration to the queue it waited in (the handshake
/// hedge did that: a 10,000 herd took 47.7 s instead of 5.3 s). A probe
/// costs a busy server a few bytes it reads and drops, and gives up on no
/// live server.
///
/// Why this long. A switch whose holder died learns it about this plus
/// the ack timeout later: 400 ms, about the Master_Down_Interval with
/// 100 ms adverts (360 ms), so it connects again as the backup takes the
/// VIP. A live server that answers within it (a commit on a quiet pair
/// takes milliseconds) is never probed; one that holds a request (up to
/// 1 s while its leadership arrives) is probed three or four times.
pub const DEFAULT_PROBE_AFTER: Duration = Duration::from_millis(100);

/// The connect stagger of [`ConnectOptions::default`]: 50 ms.
///
/// Why this long. In a graceful failover the VIP moves within a few
/// milliseconds, and a SYN sent in between goes to a host that no longer
/// has it: lost. A second attempt 50 ms later, while the first is still
/// pending, reaches the new holder; the switch is connected about 50 ms
/// after the move, not at the connect timeout (300 ms) or the kernel's
/// SYN retransmission (1 s). Half the fast configuration's 100 ms advert
/// interval: the new holder's first advert and gratuitous ARPs come at
/// once, so the segment knows where the VIP is well within it. On a live
/// path the first attempt connects within a round trip (a campus network:
/// well under 10 ms) and no second one starts.
pub const DEFAULT_CONNECT_STAGGER: Duration = Duration::from_millis(50);

/// Attempts pending at once in [`ConnectOptions::default`]: 4 (with the
/// 50 ms stagger, the first 150 ms of a connect timeout; a switch keeps no
/// more than four half-open sockets, and a struggling server sees no more
/// than four SYNs from it per connect timeout).
pub const DEFAULT_CONNECT_IN_FLIGHT: usize = 4;

/// The unacknowledged-bytes timeout ([`ConnectOptions::ack_timeout`]) of
/// [`ConnectOptions::default`]: 300 ms, the connect timeout.
///
/// Why this long. A live server's kernel acknowledges a segment at once
/// (within its 40 ms delayed-ACK timer at most), also while the server
/// holds the request; a segment lost on the way is sent again after TCP's
/// minimum retransmission timeout (200 ms) and acknowledged then. 300 ms
/// outlasts both. A holder that lost power acknowledges nothing: the
/// connection ends 300 ms after the bytes were sent, and the switch
/// connects again while the backup takes the VIP (Master_Down_Interval:
/// 360 ms with 100 ms adverts), instead of waiting for the answer deadline
/// (1.5 s). Two losses of one segment in a row on a live path also end
/// the connection (the switch reconnects and registers again, as after
/// any failover); raise it for such a path.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_millis(300);

/// How long [`Connection::connect_with`] waits, and how long the
/// connection it makes waits for each answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectOptions {
    /// For the TCP connection: the whole attempt when staggered, each
    /// address in turn when not.
    pub connect_timeout: Duration,
    /// While a connection attempt is pending, start another this long
    /// after it, to the resolved addresses in turn; the first to connect
    /// wins ([`DEFAULT_CONNECT_STAGGER`]: why, there). `None`: one
    /// attempt at a time.
    pub connect_stagger: Option<Duration>,
    /// At most this many attempts pending at once (with a stagger).
    pub connect_in_flight: usize,
    /// The longest time bytes sent may go unacknowledged by the server's
    /// TCP before the kernel ends the connection (`TCP_USER_TIMEOUT`, less
    /// TCP's minimum retransmission timeout, from which Linux counts it;
    /// [`DEFAULT_ACK_TIMEOUT`]: why, there). The kernel gives up no sooner
    /// than its first retransmission goes unacknowledged, so below about
    /// 250 ms this is 200 ms and a little more; and a retransmission must
    /// be acknowledged within this less 200 ms: keep that above the path's
    /// round trip. `None`: the kernel's own
    /// retransmission limit (minutes).
    pub ack_timeout: Option<Duration>,
    /// For the TLS handshake, once TCP is connected.
    pub handshake_timeout: Duration,
    /// When the handshake has not completed this long after TCP
    /// connected, start one more connection and handshake beside it; the
    /// first to complete wins ([`DEFAULT_HANDSHAKE_HEDGE`]: why, there).
    /// `None`: one handshake.
    pub handshake_hedge: Option<Duration>,
    /// For the answer to each request, from when it is sent
    /// ([`DEFAULT_ANSWER_TIMEOUT`]: why, there). Past it the request fails
    /// with [`ClientError::NoAnswer`] and the connection is dead. `None`
    /// waits for ever. An idle connection (no request outstanding) has no
    /// deadline: pushes may be minutes apart.
    pub answer_timeout: Option<Duration>,
    /// While the client waits for the server (its first handshake bytes,
    /// a request's answer) and the server has sent nothing for this long,
    /// probe the connection: the server's TCP must acknowledge the probe
    /// within [`ConnectOptions::ack_timeout`], or the connection ends
    /// ([`DEFAULT_PROBE_AFTER`]: why, there). `None`: no probes.
    pub probe_after: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            connect_stagger: Some(DEFAULT_CONNECT_STAGGER),
            connect_in_flight: DEFAULT_CONNECT_IN_FLIGHT,
            ack_timeout: Some(DEFAULT_ACK_TIMEOUT),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            // Off: see DEFAULT_HANDSHAKE_HEDGE.
            handshake_hedge: None,
            answer_timeout: Some(DEFAULT_ANSWER_TIMEOUT),
            probe_after: Some(DEFAULT_PROBE_AFTER),
        }
    }
}

impl Connection {
    /// Connects to the server at `addr` (the VIP and port) within the
    /// deadlines of `options`: over TLS with `tls` (the pair's CA pinned,
    /// this client's certificate presented), or over plain TCP without.
    ///
    /// # Errors
    /// [`ClientError::Io`] when no TCP connection could be made (of kind
    /// `TimedOut` when none answered within the connect timeout),
    /// [`ClientError::Tls`] when the handshake failed or did not complete
    /// in time. [`ClientError::verdict`] says whether to try again.
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        tls: Option<&ClientTls>,
        options: &ConnectOptions,
    ) -> Result<Self, ClientError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr).await?.collect();
        let tcp = connect::connect_tcp(&addrs[..], options).await?;
        let peer = tcp.peer_addr()?;
        let Some(tls) = tls else {
            return Ok(Self::framed(Box::new(tcp), peer).with_options(options));
        };
        let deadline = options.handshake_timeout;
        let began = tokio::time::Instant::now();
        let handshake = tokio::time::timeout(deadline, Self::hedged_handshake(tcp, &addrs, tls, options))
            .await
            .map_err(|_| {
                ClientError::Tls(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no TLS handshake with {peer} within {} ms", deadline.as_millis()),
                ))
            })
            .and_then(|done| done);
        tracing::debug!(
            ms = began.elapsed().as_secs_f64() * 1000.0,
            ok = handshake.is_ok(),
            "TLS handshake"
        );
        let stream = handshake?;
        let peer = stream.get_ref().0.get_ref().peer_addr()?;
        Ok(Self::framed(Box::new(stream), peer).with_options(options))
    }

    /// The answer deadline and the probes of `options`, the probes spaced
    /// by its ack timeout.
    fn with_options(mut self, options: &ConnectOptions) -> Self {
        self.probe_spacing = options.ack_timeout.unwrap_or_default();
        self.with_answer_timeout(options.answer_timeout)
            .with_probe_after(options.probe_after)
    }

    /// The handshake on `tcp` (probed past [`ConnectOptions::probe_after`]
    /// of silence), and past [`ConnectOptions::handshake_hedge`] one more
    /// on a new connection beside it: the first to complete wins and the
    /// other is reset. Fails when every handshake started failed.
    async fn hedged_handshake(
        tcp: TcpStream,
        addrs: &[SocketAddr],
        tls: &ClientTls,
        options: &ConnectOptions,
    ) -> Result<tokio_rustls::client::TlsStream<HandshakeProbe>, ClientError> {
        // A loser is reset when dropped, not closed: a server that has not
        // reached it yet does no handshake for it. The winner closes normally.
        let reset_on_drop = |tcp: &TcpStream| {
            let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
        };
        let won = |stream: tokio_rustls::client::TlsStream<HandshakeProbe>| {
            let _ = socket2::SockRef::from(stream.get_ref().0.get_ref()).set_linger(None);
            stream
        };
        let probed = |tcp: TcpStream| HandshakeProbe::new(tcp, options.probe_after);
        let Some(hedge) = options.handshake_hedge else {
            return tls.connect(probed(tcp)).await.map_err(ClientError::Tls);
        };
        reset_on_drop(&tcp);
        let first = tls.connect(probed(tcp));
        tokio::pin!(first);
        tokio::select! {
            done = &mut first => return done.map(won).map_err(ClientError::Tls),
            () = tokio::time::sleep(hedge) => {}
        }
        let second = async {
            let tcp = connect::connect_tcp(addrs, options).await?;
            reset_on_drop(&tcp);
            tls.connect(probed(tcp)).await.map_err(ClientError::Tls)
        };
        tokio::pin!(second);
        let (mut first_failed, mut second_failed) = (None, None);
        loop {
            tokio::select! {
                done = &mut first, if first_failed.is_none() => match done {
                    Ok(stream) => return Ok(won(stream)),
                    Err(e) => first_failed = Some(ClientError::Tls(e)),
                },
                done = &mut second, if second_failed.is_none() => match done {
                    Ok(stream) => return Ok(won(stream)),
                    Err(e) => second_failed = Some(e),
                },
            }
            if second_failed.is_some() {
                if let Some(e) = first_failed.take() {
                    // What the first server said is the error to show.
                    return Err(e);
                }
            }
        }
    }

    /// Connects to the server at `addr` (the VIP and port) over TLS, the
    /// pair's CA pinned and this client's certificate presented.
    ///
    /// # Errors
    /// The TCP connection could not be made, or the handshake failed.
    pub async fn connect(addr: impl ToSocketAddrs, tls: &ClientTls) -> Result<Self, ClientError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let peer = tcp.peer_addr()?;
        let stream = tls.connect(tcp).await.map_err(ClientError::Tls)?;
        Ok(Self::framed(Box::new(stream), peer))
    }

    /// Connects over plain TCP: only a standalone `vipool serve
    /// --insecure-plaintext` answers it (tests and development).
    ///
    /// # Errors
    /// The TCP connection could not be made.
    pub async fn connect_insecure(addr: impl ToSocketAddrs) -> Result<Self, ClientError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let peer = tcp.peer_addr()?;
        Ok(Self::framed(Box::new(tcp), peer))
    }

    fn framed(stream: Box<dyn Stream>, peer: SocketAddr) -> Self {
        Connection {
            framed: Framed::new(stream, frame::DEFAULT_MAX_RESPONSE),
            peer,
            seq: 0,
            heard: false,
            last_push: None,
            answer_timeout: None,
            probe_after: None,
            probe_spacing: Duration::ZERO,
            gave_up: None,
        }
    }

    /// Sets how long the server may stay silent while a request waits
    /// before the connection is probed (`None`: never); see
    /// [`ConnectOptions::probe_after`]. [`Connection::connect`] and
    /// [`Connection::connect_insecure`] do not probe.
    #[must_use]
    pub fn with_probe_after(mut self, probe_after: Option<Duration>) -> Self {
        self.probe_after = probe_after;
        self
    }

    /// Sets how long each request waits for its answer (`None`: for ever);
    /// see [`ConnectOptions::answer_timeout`]. [`Connection::connect`] and
    /// [`Connection::connect_insecure`] wait for ever (operator tools, whose
    /// pages of a large table may take a while).
    #[must_use]
    pub fn with_answer_timeout(mut self, answer_timeout: Option<Duration>) -> Self {
        self.answer_timeout = answer_timeout;
        self
    }

    /// The server's address.
    ///
    /// # Errors
    /// Never today; kept for callers that handled a closed socket.
    pub fn peer_addr(&self) -> Result<SocketAddr, ClientError> {
        Ok(self.peer)
    }

    /// The pool of the most recent push, if any came.
    pub fn last_push(&self) -> Option<&Pool> {
        self.last_push.as_ref()
    }

    /// Sends `request` and waits for its answer, keeping pushes that arrive meanwhile.
    ///
    /// # Errors
    /// The connection failed, or the server refused the request.
    /// With an answer deadline, a request unanswered past it fails with
    /// [`ClientError::NoAnswer`], and so does every later one at once: the
    /// caller drops the connection and connects again.
    pub async fn request(&mut self, request: Request) -> Result<Response, ClientError> {
        if let Some(after) = self.gave_up {
            return Err(ClientError::NoAnswer {
                peer: self.peer,
                after,
            });
        }
        let Some(deadline) = self.answer_timeout else {
            return self.exchange(request).await;
        };
        match tokio::time::timeout(deadline, self.exchange(request)).await {
            Ok(result) => result,
            // The exchange may have stopped mid-frame: nothing more can be
            // sent or read on this connection.
            Err(_) => {
                self.gave_up = Some(deadline);
                Err(ClientError::NoAnswer {
                    peer: self.peer,
                    after: deadline,
                })
            }
        }
    }

    /// Sends `request` and reads until its answer, probing the connection
    /// while the server stays silent ([`ConnectOptions::probe_after`]).
    async fn exchange(&mut self, request: Request) -> Result<Response, ClientError> {
        self.seq += 1;
        let seq = self.seq;
        self.framed
            .write(&RequestFrame { seq, request }, u32::MAX)
            .await?;
        let cap = self.answer_timeout.unwrap_or(DEFAULT_ANSWER_TIMEOUT);
        let mut silence = self
            .probe_after
            .map(|first| Probes::new(first, cap).spaced(self.probe_spacing));
        loop {
            let message = match &mut silence {
                None => self.read_message().await?,
                // Reading is cancel-safe: what arrived stays buffered.
                Some(probes) => match tokio::time::timeout(probes.interval(), self.read_message()).await {
                    Ok(message) => {
                        probes.heard();
                        message?
                    }
                    Err(_) => {
                        self.framed.write_probe().await?;
                        probes.probed();
                        continue;
                    }
                },
            };
            match message {
                ServerMessage::Push { pool } => self.last_push = Some(pool),
                // Read and held: the answer follows.
                ServerMessage::Held { .. } => {}
                ServerMessage::Reply { seq: got, response } if got == seq => return Ok(response?),
                // The late answer to a request the caller gave up waiting for.
                ServerMessage::Reply { seq: got, .. } if got != 0 && got < seq => {}
                // A reply to no request of ours: the server could not read what we sent.
                ServerMessage::Reply {
                    seq: 0,
                    response: Err(e),
                } => return Err(e.into()),
                ServerMessage::Reply { .. } => return Err(ClientError::Unexpected),
            }
        }
    }

    /// Waits for the next push of revised totals. Cancel-safe.
    ///
    /// # Errors
    /// The connection failed or the server sent a reply nobody asked for.
    pub async fn next_push(&mut self) -> Result<Pool, ClientError> {
        if let Some(after) = self.gave_up {
            return Err(ClientError::NoAnswer {
                peer: self.peer,
                after,
            });
        }
        loop {
            match self.read_message().await? {
                ServerMessage::Push { pool } => {
                    self.last_push = Some(pool.clone());
                    return Ok(pool);
                }
                // For a request the caller gave up waiting for.
                ServerMessage::Held { .. } => {}
                ServerMessage::Reply {
                    seq: 0,
                    response: Err(e),
                } => return Err(e.into()),
                // The late answer to a request the caller gave up waiting for.
                ServerMessage::Reply { seq, .. } if seq <= self.seq => {}
                ServerMessage::Reply { .. } => return Err(ClientError::Unexpected),
            }
        }
    }

    /// Reads one message. Cancel-safe: bytes read are kept for the next call.
    async fn read_message(&mut self) -> Result<ServerMessage, ClientError> {
        match self.framed.read::<ServerMessage>().await {
            Ok(Some(message)) => {
                self.heard = true;
                Ok(message)
            }
            Ok(None) => Err(ClientError::Closed),
            // Another release of vipool says which version it speaks:
            // that is not "another service".
            Err(ReadError::Frame(why @ (FrameError::TooLarge { .. } | FrameError::Malformed(_))))
                if !self.heard =>
            {
                Err(match why {
                    // A TLS record header read as a length: content type
                    // 21 (alert) or 22 (handshake), version 3.x.
                    FrameError::TooLarge { size, .. } if matches!(size.to_be_bytes(), [21 | 22, 3, ..]) => {
                        ClientError::SpeaksTls { peer: self.peer }
                    }
                    why => ClientError::NotVipool { peer: self.peer, why },
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn client_request(&mut self, request: Request) -> Result<(Client, Pool), ClientError> {
        match self.request(request).await? {
            Response::Client { client, pool } => Ok((*client, pool)),
            _ => Err(ClientError::Unexpected),
        }
    }

    async fn operator_request(&mut self, request: Request) -> Result<Pool, ClientError> {
        match self.request(request).await? {
            Response::Changed { pool } => Ok(pool),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Registers the client.
    ///
    /// # Errors
    /// See [`Connection::request`].
    pub async fn register(
        &mut self,
        id: &str,
        serial: &str,
        version: &str,
        report: SwitchReport,
    ) -> Result<(Client, Pool), ClientError> {
        let request = Request::Register {
            id: id.into(),
            serial: serial.into(),
            version: version.into(),
            report,
        };
        self.client_request(request).await
    }

    /// Sends a heartbeat with the client's whole state.
    ///
    /// # Errors
    /// See [`Connection::request`].
    pub async fn heartbeat(&mut self, id: &str, report: SwitchReport) -> Result<(Client, Pool), ClientError> {
        self.client_request(Request::Heartbeat {
            id: id.into(),
            report,
        })
        .await
    }

    /// Sends an immediate update with the client's whole state.
    ///
    /// # Errors
    /// See [`Connection::request`].
    pub async fn update(&mut self, id: &str, report: SwitchReport) -> Result<(Client, Pool), ClientError> {
        self.client_request(Request::Update {
            id: id.into(),
            report,
        })
        .await
    }

    /// Asks for `count` licenses of `license_type`.
    ///
    /// # Errors
    /// See [`Connection::request`]; a refusal is [`ClientError::Server`].
    pub async fn acquire(
        &mut self,
        id: &str,
        license_type: &LicenseType,
        count: u32,
    ) -> Result<(Client, Pool), ClientError> {
        let request = Request::Acquire {
            id: id.into(),
            license_type: license_type.clone(),
            count,
        };
        self.client_request(request).await
    }

    /// Gives back `count` licenses of `license_type`.
    ///
    /// # Errors
    /// See [`Connection::request`].
    pub async fn release(
        &mut self,
        id: &str,
        license_type: &LicenseType,
        count: u32,
    ) -> Result<(Client, Pool), ClientError> {
        let request = Request::Release {
            id: id.into(),
            license_type: license_type.clone(),
            count,
        };
        self.client_request(request).await
    }

    /// The whole table and the node's status, for the operator views: the
    /// server sends it in pages of [`crate::proto::PAGE_CLIENTS`] clients,
    /// put together here.
    ///
    /// # Errors
    /// See [`Connection::request`].
    pub async fn show(&mut self) -> Result<TableDump, ClientError> {
        let mut whole: Option<TableDump> = None;
        let mut after = None;
        loop {
            let page = match self.request(Request::Show { after }).await? {
                Response::Table(dump) => *dump,
                _ => return Err(ClientError::Unexpected),
            };
            after = page.next.clone();
            match &mut whole {
                None => whole = Some(page),
                Some(w) => {
                    w.state.clients.extend(page.state.clients);
                    w.heartbeats = page.heartbeats;
                    w.status = page.status;
                    w.pool = page.pool;
                }
            }
            if after.is_none() {
                let mut w = whole.expect("at least one page");
                w.next = None;
                return Ok(w);
            }
        }
    }

    /// This node's status (a small message, whatever the table's size).
    ///
    /// # Errors
    /// See [`Connection::request`].
    pub async fn status(&mut self) -> Result<crate::proto::NodeStatus, ClientError> {
        match self.request(Request::Status).await? {
            Response::Status(status) => Ok(*status),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Operator: removes a client; the pool after it.
    ///
    /// # Errors
    /// See [`Connection::request`].
    pub async fn remove_client(&mut self, id: &str) -> Result<Pool, ClientError> {
        self.operator_request(Request::RemoveClient { id: id.into() })
            .await
    }

    /// Operator: installs `key` on server `server`; the pool after it.
    ///
    /// # Errors
    /// See [`Connection::request`].
    pub async fn install_key(&mut self, server: &str, key: SignedKey) -> Result<Pool, ClientError> {
        self.operator_request(Request::InstallKey {
            server: server.into(),
            key,
        })
        .await
    }

    /// Operator: removes the server key `key_id`; the pool after it.
    ///
    /// # Errors
    /// See [`Connection::request`].
    pub async fn remove_key(&mut self, key_id: &str) -> Result<Pool, ClientError> {
        self.operator_request(Request::RemoveKey {
            key_id: key_id.into(),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A port where another service answers: what it sends is not read as
    /// a (huge) frame length, the error says what the other end is not.
    #[tokio::test]
    async fn another_service_is_not_a_vipool_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let web = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        });
        let mut conn = Connection::connect_insecure(addr).await.unwrap();
        let e = conn.status().await.unwrap_err();
        web.await.unwrap();
        let shown = e.to_string();
        assert!(matches!(e, ClientError::NotVipool { .. }), "{e:?}");
        assert!(
            shown.starts_with(&format!("{addr} is not a vipool server")),
            "{shown}"
        );
        assert!(e.verdict().is_permanent());
    }

    /// Plain TCP to a server that speaks TLS: its alert record says so.
    #[tokio::test]
    async fn plain_tcp_to_a_tls_server_says_so() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = tcp.read(&mut buf).await;
            // A fatal decode_error alert, as rustls sends for bytes that
            // are not a ClientHello.
            let _ = tcp.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]).await;
        });
        let mut conn = Connection::connect_insecure(addr).await.unwrap();
        let e = conn.status().await.unwrap_err();
        server.await.unwrap();
        assert!(matches!(e, ClientError::SpeaksTls { .. }), "{e:?}");
        assert!(e.to_string().contains("not --insecure-plaintext"), "{e}");
    }

    /// A server that reads the request and never answers (a host whose
    /// power went after its kernel acknowledged it): the request fails
    /// after the answer deadline, transient, and the connection is dead
    /// from then on: every later call fails at once, even if the answer
    /// would come.
    #[tokio::test]
    async fn a_request_unanswered_past_the_deadline_kills_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        let deadline = Duration::from_millis(200);
        let mut conn = Connection::connect_insecure(addr)
            .await
            .unwrap()
            .with_answer_timeout(Some(deadline));
        let start = std::time::Instant::now();
        let e = conn.status().await.unwrap_err();
        let took = start.elapsed();
        assert!(
            matches!(e, ClientError::NoAnswer { after, .. } if after == deadline),
            "{e:?}"
        );
        assert!(took >= deadline && took < Duration::from_secs(2), "{took:?}");
        assert_eq!(e.verdict(), Verdict::Transient);
        assert!(e.to_string().contains("within 200 ms"), "{e}");
        let start = std::time::Instant::now();
        assert!(matches!(conn.status().await, Err(ClientError::NoAnswer { .. })));
        assert!(matches!(
            conn.next_push().await,
            Err(ClientError::NoAnswer { .. })
        ));
        assert!(start.elapsed() < deadline, "a dead connection fails at once");
        drop(conn);
        silent.await.unwrap();
    }

    /// A live server that is slow to answer (a herd, a hold while its
    /// leadership arrives) is probed while it stays silent, probes
    /// spacing out, and waited for: its TCP acknowledges the probes, so
    /// nothing ends the connection before the answer comes. A Held starts
    /// the probes over.
    #[tokio::test]
    async fn a_silent_live_server_is_probed_and_waited_for() {
        use crate::proto::frame::{decode_frame, Decoded};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // What the server read within `quiet` of the request, as frames.
        async fn frames_within(tcp: &mut TcpStream, quiet: Duration) -> Vec<Decoded<RequestFrame>> {
            let mut buf = Vec::new();
            let until = tokio::time::Instant::now() + quiet;
            let mut chunk = [0u8; 1024];
            while let Ok(Ok(n)) = tokio::time::timeout_at(until, tcp.read(&mut chunk)).await {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let mut frames = Vec::new();
            let mut at = 0;
            while let Some((decoded, used)) = decode_frame::<RequestFrame>(&buf[at..], u32::MAX).unwrap() {
                frames.push(decoded);
                at += used;
            }
            frames
        }
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let reply = |seq| {
                frame::encode(
                    &ServerMessage::Reply {
                        seq,
                        response: Ok(Response::Status(Box::default())),
                    },
                    u32::MAX,
                )
                .unwrap()
            };
            // Silent for 650 ms: probes at 100 and 300 ms (then 700).
            let first = frames_within(&mut tcp, Duration::from_millis(650)).await;
            tcp.write_all(&reply(1)).await.unwrap();
            // Probed at 100 ms; a Held at 250 ms starts the probes over:
            // 350 and 550 ms (without it, one at 450 ms); answered at 650.
            let held = frame::encode(&ServerMessage::Held { seq: 2 }, u32::MAX).unwrap();
            let before = frames_within(&mut tcp, Duration::from_millis(250)).await;
            tcp.write_all(&held).await.unwrap();
            let after = frames_within(&mut tcp, Duration::from_millis(400)).await;
            tcp.write_all(&reply(2)).await.unwrap();
            (first, before, after)
        });
        let mut conn = Connection::connect_insecure(addr)
            .await
            .unwrap()
            .with_answer_timeout(Some(Duration::from_secs(5)))
            .with_probe_after(Some(Duration::from_millis(100)));
        conn.status().await.expect("answered after 650 ms");
        conn.status().await.expect("answered after 650 ms");
        let (first, before, after) = server.await.unwrap();
        let is_probe = |f: &Decoded<RequestFrame>| matches!(f, Decoded::Probe);
        assert!(matches!(first[0], Decoded::Message { .. }), "the request first");
        assert!(first[1..].iter().all(is_probe), "{first:?}");
        // Spaced out: not one every 100 ms. (A busy machine may delay a
        // probe past the answer, never add one.)
        let n = first.len() - 1;
        assert!((1..=2).contains(&n), "{n} probes in 650 ms");
        assert!(matches!(before[0], Decoded::Message { .. }), "the request first");
        assert_eq!(before[1..].iter().filter(|f| is_probe(f)).count(), 1);
        assert!(after.iter().all(is_probe), "{after:?}");
        assert_eq!(after.len(), 2, "the Held started the probes over");
    }

    /// The default deadline lets a new VIP holder hold a request while its
    /// leadership arrives (the integration test
    /// `a_request_held_while_leadership_arrives_is_not_cut_short_by_the_default_deadline`
    /// shows it against a server).
    #[test]
    fn the_default_deadline_outlasts_the_servers_hold() {
        let options = ConnectOptions::default();
        let answer = options.answer_timeout.expect("a switch has a deadline");
        assert!(answer > crate::server::HOLD_FOR_SERVING);
        assert!(
            answer < Duration::from_secs(30),
            "well below the heartbeat interval"
        );
    }

    /// The cause of an I/O error is shown once: in the message, not again
    /// as its source (a report prints every source on a line of its own).
    #[test]
    fn io_errors_show_their_cause_once() {
        let e = ClientError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(e.to_string().starts_with("connection: "), "{e}");
        assert!(std::error::Error::source(&e).is_none());
        let read = crate::proto::connection::ReadError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        ));
        assert!(std::error::Error::source(&read).is_none());
    }
}
