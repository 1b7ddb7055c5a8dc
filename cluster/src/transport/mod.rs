//! Raft messages between members over mutually authenticated TLS 1.3.
//!
//! Each member dials every peer (one outbound connection per peer, written
//! by a writer task fed from a bounded queue) and accepts the peers'
//! connections. Who may talk to us is decided in steps, cheapest first:
//!
//! 1. a connection from an address that is not a configured peer's is
//!    closed at once, before any TLS work;
//! 2. each peer address gets a few handshake slots, and a handshake has a
//!    deadline: a slow or silent client holds a slot for a bounded time
//!    and can never take another address's slot;
//! 3. the client certificate must chain to the pair's CA and name a
//!    configured peer (see [`crate::tls`]) whose address the connection
//!    comes from;
//! 4. every frame on that connection must say it comes from that peer; a
//!    frame claiming another sender is dropped and counted.
//!
//! An authenticated peer holds one inbound slot: its newest connection
//! replaces an older one. Every refusal is counted in [`TransportStats`]
//! and logged at most once a minute per cause (see [`crate::ratelog`]).
//!
//! Both servers of a pair must run the same release: a frame of another
//! release is refused (never delivered), logged at error level naming both
//! releases, counted, and kept as [`TransportStats::last_release_refusal`]
//! until a frame of our release arrives from that peer.
//!
//! `send` never blocks: a full queue drops the message (raft retransmits).
//! A writer that cannot connect retries with exponential backoff and
//! reports the peer unreachable to raft.
//!
//! A raft message too large for one frame (a snapshot of a large table)
//! travels as a run of chunk frames, each within
//! [`TransportConfig::max_frame`]: the writer encodes it once and writes
//! slices of that encoding. The writer task owns its connection and writes
//! one message's chunks back to back before it takes the next message from
//! its queue, so the chunks of two messages never interleave. The receiver
//! reassembles at most one message per connection, up to
//! [`TransportConfig::max_message`] bytes, and delivers it to raft whole; a
//! peer that announces more, or whose chunks come out of order, with a gap,
//! past the announced length, of another message or sender, or with a whole
//! frame among them, has its connection closed
//! ([`TransportStats::chunk_refusals`]). Every chunk passes step 4 like any
//! frame. A snapshot is reported delivered to raft once its last chunk is
//! written and flushed, failed if the connection broke before.
//!
//! [`Security::InsecurePlaintext`] (plain TCP, anyone who reaches the port
//! is a member) exists for tests and benchmarks only; the daemon has no
//! setting for it, and it is logged at error level when used.

mod chunk;
#[cfg(test)]
mod chunk_tests;
mod frame;
mod inbound;
mod outbound;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use raft::eraftpb::{Message, MessageType};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use frame::{
    decode_payload, decode_release_payload, encode_chunk_frame, encode_frame, encode_pair_frame,
    encode_release_frame, ChunkHeader, Frame, FrameError, MAX_PAIR_MESSAGE, MAX_RELEASE_LEN,
    PROTOCOL_VERSION, RELEASE,
};

use crate::member::Outbox;
use crate::ratelog::RateLimiter;
use crate::tls::Identity;

/// What the transport delivers to and reports to (a [`crate::Member`]).
pub trait Inbox: Send + Sync + 'static {
    /// A raft message arrived.
    fn deliver(&self, msg: Message);
    /// `id` could not be reached.
    fn report_unreachable(&self, id: u64);
    /// A snapshot to `to` was written to the socket and flushed, its last
    /// chunk included when it was sent in chunks (`delivered`), or not.
    fn report_snapshot(&self, to: u64, delivered: bool);
}

impl<S: crate::StateMachine> Inbox for crate::Member<S> {
    fn deliver(&self, msg: Message) {
        crate::Member::deliver(self, msg)
    }
    fn report_unreachable(&self, id: u64) {
        crate::Member::report_unreachable(self, id)
    }
    fn report_snapshot(&self, to: u64, delivered: bool) {
        crate::Member::report_snapshot(self, to, delivered)
    }
}

/// Receives the pair messages peers send with [`TcpTransport::send_pair`]:
/// `(from, data)`, `from` authenticated. Called on the connection's task:
/// it must not block.
pub type PairHandler = Arc<dyn Fn(u64, Vec<u8>) + Send + Sync>;

/// How members prove who they are.
#[derive(Debug, Clone)]
pub enum Security {
    /// Mutual TLS 1.3 with the pair's CA: every peer's certificate must name
    /// it as `names` says (member id to member name).
    Tls {
        /// This member's CA, certificate and key.
        identity: Arc<Identity>,
        /// The name each peer's certificate carries.
        names: BTreeMap<u64, String>,
    },
    /// Plain TCP: anyone who reaches the port is taken for the member its
    /// frames name. For tests and benchmarks only; logged at error level.
    InsecurePlaintext,
}

/// The default [`TransportConfig::max_message`]: 1 GiB.
pub const DEFAULT_MAX_MESSAGE: u64 = 1024 * 1024 * 1024;

/// Settings of a member's transport.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Frames carrying another cluster id are refused.
    pub cluster_id: u64,
    /// This member's raft id.
    pub id: u64,
    /// Where to listen (port 0 picks one; see [`TcpTransport::local_addr`]).
    pub listen: SocketAddr,
    /// The address outbound connections come from (default: the listen
    /// address, unless that is unspecified). Peers accept connections
    /// only from the addresses they have configured for us, so a host
    /// with several addresses (a VIP among them) must say which.
    pub source: Option<IpAddr>,
    /// Addresses of the other members.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// How peers authenticate.
    pub security: Security,
    /// Largest frame accepted or sent, in bytes. A larger raft message
    /// travels in chunks of at most this size.
    pub max_frame: u32,
    /// Largest raft message reassembled from chunks, in bytes (and sent in
    /// chunks): it bounds a snapshot, and so the replicated table. A peer
    /// announcing a larger message has its connection closed. A message
    /// that fits one frame is never chunked, so a value below `max_frame`
    /// bounds nothing more than `max_frame` does.
    pub max_message: u64,
    /// Messages queued per peer before new ones are dropped.
    pub queue: usize,
    /// First reconnect delay; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Handshakes in progress at once, over all peers.
    pub max_connections: usize,
    /// Handshakes in progress at once from one peer address.
    pub handshakes_per_address: usize,
    /// A TLS handshake (or, in plaintext, nothing) must finish within this.
    pub handshake_timeout: Duration,
    /// The release this member runs and sends; frames of any other release
    /// are refused. Defaults to [`RELEASE`].
    pub release: String,
    /// How often one cause of a refusal may be logged.
    pub log_interval: Duration,
}

impl TransportConfig {
    /// Defaults: 64 MiB frames, 1 GiB messages, 1024 queued messages per
    /// peer, 50 ms to 2 s backoff, 2 s handshakes, 2 handshakes per peer
    /// address.
    pub fn new(cluster_id: u64, id: u64, listen: SocketAddr, security: Security) -> TransportConfig {
        TransportConfig {
            cluster_id,
            id,
            listen,
            source: None,
            peers: BTreeMap::new(),
            security,
            max_frame: 64 * 1024 * 1024,
            max_message: DEFAULT_MAX_MESSAGE,
            queue: 1024,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            max_connections: 64,
            handshakes_per_address: 2,
            handshake_timeout: Duration::from_secs(2),
            release: RELEASE.to_owned(),
            log_interval: crate::ratelog::DEFAULT_INTERVAL,
        }
    }
}

/// Counters of what the transport refused or dropped.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Frames longer than `max_frame`.
    pub oversize: AtomicU64,
    /// Frames of another protocol version.
    pub wrong_version: AtomicU64,
    /// Frames of another cluster.
    pub wrong_cluster: AtomicU64,
    /// Frames addressed to another member.
    pub misaddressed: AtomicU64,
    /// Frames that could not be decoded.
    pub malformed: AtomicU64,
    /// Outgoing messages dropped (queue full, peer unknown or down, or
    /// larger than `max_message`).
    pub dropped: AtomicU64,
    /// Raft messages delivered to raft (whole frames and reassembled ones).
    pub delivered: AtomicU64,
    /// Raft messages sent in chunks (larger than one frame).
    pub chunked: AtomicU64,
    /// Raft messages reassembled from chunks and delivered to raft (also
    /// counted in `delivered`).
    pub reassembled: AtomicU64,
    /// Connections closed for their chunks: a message announced above
    /// `max_message`, chunks out of order, with a gap, past the announced
    /// length, of another message or sender while one is incomplete, or a
    /// whole frame in the middle of a chunked message.
    pub chunk_refusals: AtomicU64,
    /// Pair messages delivered to the application.
    pub pair_delivered: AtomicU64,
    /// Connections closed because too many handshakes were in progress.
    pub refused_connections: AtomicU64,
    /// Frames of another release (the connection is refused).
    pub wrong_release: AtomicU64,
    /// Connections from an address that is no configured peer's, closed
    /// before any TLS work.
    pub strangers: AtomicU64,
    /// TLS handshakes that failed or timed out (inbound and outbound).
    pub handshake_failures: AtomicU64,
    /// Verified certificates that name no configured peer, or a peer
    /// configured at another address.
    pub unknown_certificates: AtomicU64,
    /// Frames claiming a sender other than the authenticated peer.
    pub impersonations: AtomicU64,
    /// The latest refusal of a peer of another release, until a frame of our
    /// release arrives from the same address.
    last_release: Mutex<Option<ReleaseRefusal>>,
}

impl TransportStats {
    /// The latest refusal of a peer of another release, if no frame of our
    /// release came from that peer's address since.
    pub fn last_release_refusal(&self) -> Option<ReleaseRefusal> {
        self.last_release
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A peer refused because it runs another release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRefusal {
    /// Where the connection came from.
    pub peer: SocketAddr,
    /// The release the peer sent.
    pub theirs: String,
    /// The release this member runs.
    pub ours: String,
    /// When it was last refused.
    pub at: Instant,
    /// When it was last logged at error level.
    logged: Instant,
}

impl std::fmt::Display for ReleaseRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "peer refused: {} runs vipool release {}, ours {}; \
             upgrade both servers to the same release",
            self.peer, self.theirs, self.ours
        )
    }
}

/// What a writer task sends.
enum Outgoing {
    Raft(Message),
    Pair(Vec<u8>),
}

struct Inner {
    cfg: TransportConfig,
    local: SocketAddr,
    peers: Mutex<BTreeMap<u64, SocketAddr>>,
    writers: Mutex<BTreeMap<u64, mpsc::Sender<Outgoing>>>,
    /// The runtime the transport was bound on, where its connections run:
    /// a writer is started from whatever thread sends first, which is the
    /// member's own when it runs on one ([`crate::Member::start_on_own_thread`]).
    runtime: tokio::runtime::Handle,
    inbox: OnceLock<Arc<dyn Inbox>>,
    pair_handler: OnceLock<PairHandler>,
    stats: TransportStats,
    cancel: CancellationToken,
    /// Handshakes in progress, over all addresses.
    handshakes: Arc<tokio::sync::Semaphore>,
    /// Handshakes in progress per peer address.
    handshakes_by_address: Mutex<BTreeMap<IpAddr, usize>>,
    /// The connection each authenticated peer holds: (serial, its token).
    inbound: Mutex<BTreeMap<u64, (u64, CancellationToken)>>,
    next_serial: AtomicU64,
    /// TLS settings built once from the identity.
    tls: Option<TlsSides>,
    log: RateLimiter,
}

struct TlsSides {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
    names: BTreeMap<u64, String>,
}

/// The transport of one member.
#[derive(Clone)]
pub struct TcpTransport(Arc<Inner>);

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("id", &self.0.cfg.id)
            .field("local", &self.0.local)
            .finish()
    }
}

impl TcpTransport {
    /// Binds the listening socket. Nothing is accepted until [`TcpTransport::attach`].
    ///
    /// # Errors
    /// The address cannot be bound, or the TLS identity is unusable.
    pub async fn bind(cfg: TransportConfig) -> std::io::Result<(TcpTransport, TcpListener)> {
        let tls = match &cfg.security {
            Security::Tls { identity, names } => {
                let mut server =
                    Arc::unwrap_or_clone(identity.server_config().map_err(std::io::Error::other)?);
                // Peers never resume: their connections live for hours.
                server.send_tls13_tickets = 0;
                Some(TlsSides {
                    acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
                    connector: tokio_rustls::TlsConnector::from(
                        identity.client_config().map_err(std::io::Error::other)?,
                    ),
                    names: names.clone(),
                })
            }
            Security::InsecurePlaintext => {
                tracing::error!(
                    member = cfg.id,
                    "INSECURE: raft transport without TLS (tests and benchmarks only): anyone who \
                     reaches {} can act as a member",
                    cfg.listen
                );
                None
            }
        };
        let listener = TcpListener::bind(cfg.listen).await?;
        let local = listener.local_addr()?;
        let t = TcpTransport(Arc::new(Inner {
            peers: Mutex::new(cfg.peers.clone()),
            local,
            writers: Mutex::new(BTreeMap::new()),
            runtime: tokio::runtime::Handle::current(),
            inbox: OnceLock::new(),
            pair_handler: OnceLock::new(),
            stats: TransportStats::default(),
            cancel: CancellationToken::new(),
            handshakes: Arc::new(tokio::sync::Semaphore::new(cfg.max_connections)),
            handshakes_by_address: Mutex::new(BTreeMap::new()),
            inbound: Mutex::new(BTreeMap::new()),
            next_serial: AtomicU64::new(1),
            tls,
            log: RateLimiter::new(cfg.log_interval),
            cfg,
        }));
        Ok((t, listener))
    }

    /// Starts accepting and delivering to `inbox` (the member).
    pub fn attach(&self, listener: TcpListener, inbox: Arc<dyn Inbox>) {
        if self.0.inbox.set(inbox).is_err() {
            tracing::warn!(
                member = self.0.cfg.id,
                "transport attached twice; keeping the first member"
            );
            return;
        }
        let me = self.clone();
        tokio::spawn(async move { me.accept_loop(listener).await });
    }

    /// Where pair messages from peers go (set once; later calls are ignored).
    pub fn set_pair_handler(&self, handler: PairHandler) {
        let _ = self.0.pair_handler.set(handler);
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local
    }

    /// What was refused and dropped so far.
    pub fn stats(&self) -> &TransportStats {
        &self.0.stats
    }

    /// Sets (or changes) the address of member `id`.
    pub fn set_peer(&self, id: u64, addr: SocketAddr) {
        self.0.peers.lock().expect("peers lock").insert(id, addr);
        // A new address: the writer reconnects to it.
        self.0.writers.lock().expect("writers lock").remove(&id);
    }

    /// Stops every task of the transport.
    pub fn shutdown(&self) {
        self.0.cancel.cancel();
    }

    /// Queues a pair message (at most [`MAX_PAIR_MESSAGE`] bytes) for
    /// member `to`; dropped if the queue is full or `to` is unknown.
    pub fn send_pair(&self, to: u64, data: Vec<u8>) {
        if data.len() > MAX_PAIR_MESSAGE {
            self.0.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                member = self.0.cfg.id,
                len = data.len(),
                "pair message too large to send"
            );
            return;
        }
        match self.writer(to) {
            Some(w) if w.try_send(Outgoing::Pair(data)).is_ok() => {}
            _ => {
                self.0.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn writer(&self, to: u64) -> Option<mpsc::Sender<Outgoing>> {
        let mut writers = self.0.writers.lock().expect("writers lock");
        if let Some(w) = writers.get(&to) {
            if !w.is_closed() {
                return Some(w.clone());
            }
        }
        let addr = *self.0.peers.lock().expect("peers lock").get(&to)?;
        let (tx, rx) = mpsc::channel(self.0.cfg.queue);
        writers.insert(to, tx.clone());
        let me = self.clone();
        self.0
            .runtime
            .spawn(async move { me.write_loop(to, addr, rx).await });
        Some(tx)
    }

    fn inbox(&self) -> Option<&Arc<dyn Inbox>> {
        self.0.inbox.get()
    }
}

impl Outbox for TcpTransport {
    fn send(&self, msg: Message) {
        let to = msg.to;
        let Some(w) = self.writer(to) else {
            self.0.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(i) = self.inbox() {
                i.report_unreachable(to);
            }
            return;
        };
        if let Err(e) = w.try_send(Outgoing::Raft(msg)) {
            self.0.stats.dropped.fetch_add(1, Ordering::Relaxed);
            let m = match e {
                mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
            };
            if let Some(i) = self.inbox() {
                i.report_unreachable(to);
                if matches!(&m, Outgoing::Raft(m) if m.get_msg_type() == MessageType::MsgSnapshot) {
                    i.report_snapshot(to, false);
                }
            }
        }
    }
}
