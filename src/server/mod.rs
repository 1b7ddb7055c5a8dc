//! The license server: accepts client connections and answers them from
//! the table, only while this node holds the VIP and only on the VIP.
//!
//! In the shape of mini-redis: [`Server::run`] accepts connections under a
//! semaphore and hands each to a task (`connection`); changes go through
//! an [`Applier`]; shutdown is a cancellation token.
//!
//! Two kinds of listener ([`Port`]): the client port, where switches ask
//! for licenses, and the operator port, where operators read the views
//! and give their commands. Over TLS ([`ServerConfig::tls`]) each
//! connection proves who it is with a certificate of the pair's CA: a
//! switch's on the client port, an operator's on the operator port.
//! What any host can cost the server is bounded: connections per source
//! address, a deadline for the handshake, for each frame once it has
//! begun, and for a connection that sends nothing.

mod applier;
mod connection;
pub mod rate;
pub mod request;
pub mod stamp;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use applier::{Applier, LocalApplier};

use crate::license::TrustedIssuers;
use crate::proto::{frame, HeartbeatCounters, NodeStatus};
use crate::table::{Command, ExpiryWarning, Reply};

use rate::SourceRate;
use request::RequestLimits;

/// How a server is configured.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This node's name, shown in status.
    pub node: String,
    /// The VIP: license requests to any other local address are refused.
    /// `None` answers on every address (a standalone server without VRRP).
    pub vip: Option<IpAddr>,
    /// Largest request frame accepted.
    pub max_frame: u32,
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    /// How often the serving node proposes a sweep.
    pub sweep_interval: Duration,
    /// How long a pool change waits before it is pushed, so that a burst of
    /// changes costs one push per client.
    pub push_delay: Duration,
    /// Evaluation keys that stop counting within this window are warned
    /// about in the log and in status.
    pub expiry_warning: Duration,
    /// Connections served at once from one source address.
    pub max_connections_per_address: usize,
    /// A TLS handshake must complete within this.
    pub handshake_timeout: Duration,
    /// Once a frame has begun, the rest of it must arrive within this; and
    /// an answer must be taken by the client within as long.
    pub frame_timeout: Duration,
    /// A connection that sends no whole frame for this long is closed
    /// (switches heartbeat far more often).
    pub idle_timeout: Duration,
    /// The node's certificate and the pair's CA: every connection proves
    /// who it is. `None` is plain TCP, anyone claims any identity: for a
    /// standalone `vipool serve --insecure-plaintext` only (tests,
    /// development), logged at error level.
    pub tls: Option<crate::tls::ServerTls>,
    /// The issuers whose keys count when a client presents them
    /// (`license.issuers`); none: no client key counts.
    pub trusted: TrustedIssuers,
    /// Clients and registrations per source address.
    pub limits: RequestLimits,
    /// Threads of their own that serve client and operator connections
    /// (TLS handshakes, frames, answers); 0 serves them on the caller's
    /// runtime. A herd of switches reconnecting after a failover makes a
    /// full TLS handshake each (about 1 ms of CPU): on the node's single
    /// thread 1,000 of them starve its VRRP adverts and raft ticks for
    /// seconds (herd_bench saw the peer take the VIP for it).
    pub connection_threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            node: "vipool".into(),
            vip: None,
            max_frame: frame::DEFAULT_MAX_REQUEST,
            max_connections: 20_000,
            sweep_interval: Duration::from_secs(10),
            push_delay: Duration::from_millis(100),
            expiry_warning: Duration::from_secs(7 * 24 * 3600),
            max_connections_per_address: 256,
            handshake_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            tls: None,
            connection_threads: 0,
            trusted: TrustedIssuers::new(),
            limits: RequestLimits::default(),
        }
    }
}

/// What a listener is for, and so what its connections may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// Switches: license requests only (register, heartbeat, update,
    /// acquire, release), answered only by the VIP holder on the VIP.
    Client,
    /// Operators: status, the views and operator commands, answered by any
    /// node on its own address.
    Operator,
}

/// Counters of one node, not replicated.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicU64,
    /// Of which on the client port.
    pub(crate) client_connections: AtomicU64,
    /// Requests read and not answered yet.
    pub(crate) in_flight: AtomicU64,
    pub(crate) bad_frames: AtomicU64,
    /// `bad_frames` by kind, in the order of [`BAD_FRAME_KINDS`].
    pub(crate) bad_frame_kinds: [AtomicU64; BAD_FRAME_KINDS.len()],
    /// Connections refused: too many from one address, a failed or late
    /// handshake, a certificate of the wrong kind for the port.
    pub(crate) refused_connections: AtomicU64,
    /// Connections closed for sending nothing, sending a frame too
    /// slowly, or not taking their answers.
    pub(crate) timed_out: AtomicU64,
    /// Requests refused because they came to the wrong port or acted for
    /// another identity than the connection's.
    pub(crate) forbidden: AtomicU64,
    /// License requests that waited for their client's rate
    /// (`license.requests_per_s_per_client`).
    pub(crate) paced: AtomicU64,
    pub(crate) heartbeats: Mutex<BTreeMap<String, HeartbeatCounters>>,
    /// Requests refused before proposing, by cause (`RequestError::cause`).
    pub(crate) refused: Mutex<BTreeMap<&'static str, u64>>,
}

/// What was wrong with a frame a connection was closed for, as metrics
/// name it: announced larger than the maximum, of another protocol
/// version, or not decodable.
pub const BAD_FRAME_KINDS: [&str; 3] = ["oversize", "wrong_version", "malformed"];

impl Counters {
    /// Counts one bad frame, by kind.
    pub(crate) fn bad_frame(&self, e: &crate::proto::frame::FrameError) {
        use crate::proto::frame::FrameError;
        let kind = match e {
            FrameError::TooLarge { .. } => 0,
            FrameError::VersionNotSupported { .. } => 1,
            FrameError::Malformed(_) => 2,
        };
        self.bad_frames.fetch_add(1, Ordering::Relaxed);
        self.bad_frame_kinds[kind].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refuse(&self, cause: &'static str) {
        *self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(cause)
            .or_default() += 1;
    }

    pub(crate) fn heartbeat(&self, id: &str, f: impl FnOnce(&mut HeartbeatCounters)) {
        let mut map = self.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(counters) = map.get_mut(id) {
            f(counters);
        } else {
            let mut counters = HeartbeatCounters::default();
            f(&mut counters);
            map.insert(id.to_owned(), counters);
        }
    }
}

/// The longest a license request waits for a node that holds the VIP to
/// serve (see [`Server::with_serving_soon`]): well beyond a graceful
/// handover or a takeover (tens of milliseconds), short enough that a
/// client whose own deadline is longer still hears a refusal it can act on.
pub const HOLD_FOR_SERVING: Duration = Duration::from_secs(1);

/// Fills in the parts of a node's status the server does not know itself
/// (VRRP state, raft role, term, commit index), for a node that has them.
pub type StatusHook = Arc<dyn Fn(&mut NodeStatus) + Send + Sync>;

/// What every connection task shares.
pub(crate) struct Shared<A> {
    pub(crate) applier: Arc<A>,
    pub(crate) config: ServerConfig,
    pub(crate) serving: watch::Receiver<bool>,
    /// This node holds the VIP and its leadership is on its way: license
    /// requests wait for serving rather than being refused.
    pub(crate) soon: watch::Receiver<bool>,
    pub(crate) counters: Counters,
    pub(crate) shutdown: CancellationToken,
    /// Cancelled by [`Server::stop_accepting`]: the listeners close, the
    /// connections go on until `shutdown`.
    pub(crate) stop_accepting: CancellationToken,
    /// While true the client port's listeners are closed (a node handing
    /// the VIP back): a switch connecting to the VIP is refused by the
    /// kernel and tries again, instead of being accepted here as the VIP
    /// leaves. Reopened when it turns false.
    pub(crate) client_paused: watch::Sender<bool>,
    pub(crate) status_hook: Option<StatusHook>,
    /// Lines any client can cause are written once a minute per cause.
    pub(crate) log: cluster::ratelog::RateLimiter,
    /// Connections open per source address.
    pub(crate) per_address: Mutex<BTreeMap<IpAddr, usize>>,
    /// Registrations per source address.
    pub(crate) registrations: SourceRate,
    /// License requests per client id, and the clock their buckets use.
    pub(crate) requests: rate::ClientRate,
    pub(crate) epoch: tokio::time::Instant,
    /// Key signatures already verified (heartbeats present the same keys).
    pub(crate) seen: crate::license::SeenSignatures,
    /// The issuers whose keys count: [`ServerConfig::trusted`] at start,
    /// then what [`Server::set_trusted`] gave (a SIGHUP).
    pub(crate) trusted: std::sync::RwLock<Arc<TrustedIssuers>>,
}

impl<A: Applier> Shared<A> {
    /// The issuers trusted now.
    pub(crate) fn trusted(&self) -> Arc<TrustedIssuers> {
        Arc::clone(
            &self
                .trusted
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    pub(crate) fn status(&self) -> NodeStatus {
        let applied_index = self.applier.read(|t| t.applied_index());
        let mut status = NodeStatus {
            node: self.config.node.clone(),
            vip: self.config.vip.map(|v| v.to_string()),
            serving: *self.serving.borrow(),
            vrrp_state: "none".into(),
            raft_role: "standalone".into(),
            term: 0,
            commit_index: applied_index,
            applied_index,
            connections: self.counters.connections.load(Ordering::Relaxed),
            bad_frames: self.counters.bad_frames.load(Ordering::Relaxed),
            paced: self.counters.paced.load(Ordering::Relaxed),
            tls_handshakes: self
                .config
                .tls
                .as_ref()
                .map(|tls| {
                    let (full, resumed) = tls.handshakes();
                    [("full".to_owned(), full), ("resumed".to_owned(), resumed)].into()
                })
                .unwrap_or_default(),
            tls_ticket_keys: self
                .config
                .tls
                .as_ref()
                .map_or(0, |tls| tls.pair_ticket_keys() as u64),
            warnings: self.expiring().iter().map(ToString::to_string).collect(),
            refused: [
                ("client_refused_connections", &self.counters.refused_connections),
                ("client_timed_out", &self.counters.timed_out),
                ("client_wrong_port", &self.counters.forbidden),
            ]
            .into_iter()
            .map(|(cause, n)| (cause.to_owned(), n.load(Ordering::Relaxed)))
            .chain(
                self.counters
                    .refused
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|(cause, n)| ((*cause).to_owned(), *n)),
            )
            .filter(|(_, n)| *n > 0)
            .collect(),
        };
        if let Some(hook) = &self.status_hook {
            hook(&mut status);
        }
        status
    }

    fn observe(&self) -> ServerView {
        let status = self.status();
        let (pool, clients_up, clients_down) = self.applier.read(|t| {
            let up = t
                .state()
                .clients
                .values()
                .filter(|c| c.state == crate::table::ClientState::Up)
                .count();
            let all = t.state().clients.len();
            (t.pool().clone(), as_u64(up), as_u64(all - up))
        });
        let bad_frames = BAD_FRAME_KINDS
            .iter()
            .zip(&self.counters.bad_frame_kinds)
            .map(|(kind, n)| (*kind, n.load(Ordering::Relaxed)))
            .collect();
        ServerView {
            status,
            pool,
            clients_up,
            clients_down,
            bad_frames,
        }
    }

    fn expiring(&self) -> Vec<ExpiryWarning> {
        let within = u64::try_from(self.config.expiry_warning.as_millis()).unwrap_or(u64::MAX);
        self.applier.read(|t| t.expiring(crate::clock::now_ms(), within))
    }
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// What the license server knows of itself for metrics and the status
/// page: its status, the pool (one row per type: the only copy of table
/// data a scrape makes) and the count of clients per state.
#[derive(Debug, Clone, Default)]
pub struct ServerView {
    /// As `vipool show status` has it (with the pair's additions).
    pub status: NodeStatus,
    /// The pool per type.
    pub pool: crate::table::Pool,
    /// Clients heard from.
    pub clients_up: u64,
    /// Clients that missed their heartbeats.
    pub clients_down: u64,
    /// Connections closed for a bad frame, by kind ([`BAD_FRAME_KINDS`]).
    pub bad_frames: Vec<(&'static str, u64)>,
}

/// A license server over an [`Applier`].
pub struct Server<A> {
    shared: Arc<Shared<A>>,
    /// Where connections run, if not on the caller's runtime
    /// ([`ServerConfig::connection_threads`]).
    threads: Option<ConnectionThreads>,
}

/// The runtime of [`ServerConfig::connection_threads`].
struct ConnectionThreads(Option<tokio::runtime::Runtime>);

impl ConnectionThreads {
    fn start(n: usize) -> Option<Self> {
        if n == 0 {
            return None;
        }
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .thread_name("vipool-conn")
            .enable_all()
            .build()
        {
            Ok(runtime) => Some(Self(Some(runtime))),
            Err(e) => {
                tracing::error!(error = %e, threads = n,
                    "no threads for client connections: serving them on the node's own thread");
                None
            }
        }
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for ConnectionThreads {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which an async caller may not do; its
        // connections have ended by then (`run_on` waits for them).
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl<A: Applier> Server<A> {
    /// A server answering from `applier`. `serving` says whether this node
    /// holds the VIP; when it turns false every client connection is closed
    /// so that clients reconnect to the new holder.
    pub fn new(
        applier: Arc<A>,
        config: ServerConfig,
        serving: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) -> Self {
        let registrations = config.limits.registrations();
        let threads = ConnectionThreads::start(config.connection_threads);
        let shared = Shared {
            applier,
            registrations,
            requests: config.limits.requests(),
            epoch: tokio::time::Instant::now(),
            seen: crate::license::SeenSignatures::default(),
            trusted: std::sync::RwLock::new(Arc::new(config.trusted.clone())),
            config,
            serving,
            // Never soon unless the node says so (`with_serving_soon`).
            soon: watch::channel(false).1,
            counters: Counters::default(),
            shutdown,
            stop_accepting: CancellationToken::new(),
            client_paused: watch::channel(false).0,
            status_hook: None,
            log: cluster::ratelog::RateLimiter::default(),
            per_address: Mutex::new(BTreeMap::new()),
        };
        Self {
            shared: Arc::new(shared),
            threads,
        }
    }

    /// A server whose status also reports what `hook` fills in (the pair
    /// daemon's VRRP state and raft role, term and commit index).
    pub fn with_status_hook(
        applier: Arc<A>,
        config: ServerConfig,
        serving: watch::Receiver<bool>,
        shutdown: CancellationToken,
        hook: StatusHook,
    ) -> Self {
        let mut server = Self::new(applier, config, serving, shutdown);
        if let Some(shared) = Arc::get_mut(&mut server.shared) {
            shared.status_hook = Some(hook);
        }
        server
    }

    /// A server that, while `soon` is true and it does not serve yet,
    /// holds license requests to the VIP (up to [`HOLD_FOR_SERVING`])
    /// until it serves, instead of refusing them: the pair daemon sets it
    /// while it is VRRP master and raft leadership is on its way (a
    /// graceful handover, a takeover, a handback).
    #[must_use]
    pub fn with_serving_soon(mut self, soon: watch::Receiver<bool>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.soon = soon;
        }
        self
    }

    /// This node's status.
    pub fn status(&self) -> NodeStatus {
        self.shared.status()
    }

    /// Closes the listeners: new connections are refused by the kernel at
    /// once (a reset); client connections answer what they have received
    /// and close (see [`Server::client_connections`]), operator ones go on
    /// until shutdown. A node that gives its VIP away gracefully calls it
    /// first, so that no client connects to it in the last milliseconds and
    /// loses its packets when the VIP moves (a TCP retransmission later,
    /// ~200 ms; the virtual MAC's port in the switch flips back to this
    /// node when it answers after the move).
    pub fn stop_accepting(&self) {
        self.shared.stop_accepting.cancel();
    }

    /// Replaces the issuers whose keys count when a client presents them
    /// (a configuration reloaded on SIGHUP): requests read from now on are
    /// verified with these.
    pub fn set_trusted(&self, trusted: TrustedIssuers) {
        *self
            .shared
            .trusted
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(trusted);
    }

    /// Closes (`true`) or reopens (`false`) the client port's listeners,
    /// the connections going on: see [`Shared::client_paused`].
    pub fn pause_client_port(&self, paused: bool) {
        self.shared.client_paused.send_replace(paused);
    }

    /// What metrics and the status page show of the license server.
    pub fn observe(&self) -> ServerView {
        self.shared.observe()
    }

    /// Requests being answered now (a change waiting for its commit, say).
    /// A node that stops serving waits for them before it lets the VIP go.
    pub fn in_flight(&self) -> u64 {
        self.shared.counters.in_flight.load(Ordering::Relaxed)
    }

    /// Connections open on the client port. A node that gives its VIP away
    /// waits for them to close first: a client that got an answer sends its
    /// next request at once on the same connection, and if that connection
    /// is still open when the VIP leaves, the request is lost with the
    /// address (the reset that a closed socket would send goes nowhere) and
    /// the client only learns on its TCP retransmission, 200 ms or more
    /// later. Closed while the VIP is still here, the socket resets it at
    /// once and the client reconnects.
    pub fn client_connections(&self) -> u64 {
        self.shared.counters.client_connections.load(Ordering::Relaxed)
    }

    /// Serves `listener` until the shutdown token is cancelled, then waits
    /// for the connection tasks to finish.
    ///
    /// # Errors
    /// Accepting failed for a reason other than running out of descriptors.
    pub async fn run(&self, listener: TcpListener) -> std::io::Result<()> {
        self.run_on(vec![(listener, Port::Client)]).await
    }

    /// Serves several listeners (the client port on every address, an
    /// operator endpoint) under one connection limit and one sweeper, until
    /// the shutdown token is cancelled or one of them fails.
    ///
    /// # Errors
    /// Accepting failed for a reason other than running out of descriptors.
    pub async fn run_on(&self, listeners: Vec<(TcpListener, Port)>) -> std::io::Result<()> {
        if self.shared.config.tls.is_none() {
            tracing::error!(
                "INSECURE: license server without TLS (tests and development only): any host can \
                 claim any switch's identity"
            );
        }
        let tracker = TaskTracker::new();
        let limit = Arc::new(Semaphore::new(self.shared.config.max_connections));
        tracker.spawn(sweeper(Arc::clone(&self.shared)));
        let accepts: Vec<_> = listeners
            .into_iter()
            .map(|(listener, port)| self.accept_loop(listener, port, Arc::clone(&limit), tracker.clone()))
            .collect();
        let result = futures_first_error(accepts).await;
        if result.is_ok() {
            // Listeners closed by `stop_accepting`: connections go on.
            self.shared.shutdown.cancelled().await;
        }
        self.shared.shutdown.cancel();
        tracker.close();
        tracker.wait().await;
        result
    }

    async fn accept_loop(
        &self,
        listener: TcpListener,
        port: Port,
        limit: Arc<Semaphore>,
        tracker: TaskTracker,
    ) -> std::io::Result<()> {
        let shutdown = self.shared.shutdown.clone();
        let closing = self.shared.stop_accepting.clone();
        let addr = listener.local_addr()?;
        let mut listener = Some(listener);
        let mut paused = self.shared.client_paused.subscribe();
        let result = loop {
            if port == Port::Client && *paused.borrow_and_update() {
                if listener.take().is_some() {
                    tracing::debug!(%addr, "client listener closed while the VIP is handed back");
                }
                tokio::select! {
                    _ = paused.changed() => continue,
                    () = shutdown.cancelled() => break Ok(()),
                    () = closing.cancelled() => return Ok(()),
                }
            }
            let open = match &listener {
                Some(open) => open,
                None => match listen(addr, self.shared.config.max_connections) {
                    Ok(open) => {
                        tracing::debug!(%addr, "client listener open again");
                        listener.insert(open)
                    }
                    Err(e) => {
                        cluster::warn_limited!(self.shared.log, "rebind", error = %e, %addr,
                            "cannot reopen the client listener; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let permit = tokio::select! {
                permit = Arc::clone(&limit).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break Ok(()),
                },
                () = shutdown.cancelled() => break Ok(()),
                () = closing.cancelled() => return Ok(()),
            };
            let accepted = tokio::select! {
                accepted = open.accept() => accepted,
                _ = paused.changed(), if port == Port::Client => continue,
                () = shutdown.cancelled() => break Ok(()),
                () = closing.cancelled() => return Ok(()),
            };
            match accepted {
                Ok((stream, peer)) => {
                    let Some(slot) = AddressSlot::take(&self.shared, peer.ip()) else {
                        self.shared
                            .counters
                            .refused_connections
                            .fetch_add(1, Ordering::Relaxed);
                        cluster::warn_limited!(
                            self.shared.log,
                            "per address",
                            %peer,
                            limit = self.shared.config.max_connections_per_address,
                            "connection refused: too many from this address"
                        );
                        continue;
                    };
                    let shared = Arc::clone(&self.shared);
                    match self.threads.as_ref().and_then(ConnectionThreads::handle) {
                        // Moved to the connection threads' own reactor, so
                        // that its readiness does not wait for this thread.
                        Some(threads) => match stream.into_std() {
                            Ok(stream) => {
                                threads.spawn(tracker.track_future(async move {
                                    match tokio::net::TcpStream::from_std(stream) {
                                        Ok(stream) => connection::accept(shared, stream, peer, port).await,
                                        Err(e) => {
                                            shared.counters.refused_connections.fetch_add(1, Ordering::Relaxed);
                                            cluster::warn_limited!(shared.log, "accept", error = %e, %peer,
                                                "connection dropped: not registered with the connection threads");
                                        }
                                    }
                                    drop((slot, permit));
                                }));
                            }
                            Err(e) => {
                                self.shared
                                    .counters
                                    .refused_connections
                                    .fetch_add(1, Ordering::Relaxed);
                                cluster::warn_limited!(self.shared.log, "accept", error = %e, %peer,
                                    "connection dropped: not handed to the connection threads");
                            }
                        },
                        None => {
                            tracker.spawn(async move {
                                connection::accept(shared, stream, peer, port).await;
                                drop((slot, permit));
                            });
                        }
                    }
                }
                Err(e) if is_transient(&e) => {
                    cluster::warn_limited!(self.shared.log, "accept", error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => break Err(e),
            }
        };
        // One listener failing stops the others.
        shutdown.cancel();
        result
    }
}

/// A listener on `addr` whose accept queue holds up to `backlog`
/// connections that completed their TCP handshake and wait for `accept`
/// (the kernel caps it at `net.core.somaxconn`, 4096 by default).
///
/// Not `TcpListener::bind`, whose queue is 1,024: after a failover every
/// switch connects to the survivor at once, and with the queue full the
/// kernel drops their SYNs and handshake ACKs, which come again only on
/// TCP's retransmission timer (1 s, then 3 s). herd_bench, 5,000
/// switches, graceful stop: 15,654 listen overflows on the survivor for
/// 5,000 switches, which were all back only 3.7 s after the VIP moved.
/// The server takes a connection in microseconds: a herd waits in the
/// queue, not in TCP's timers.
///
/// # Errors
/// The address cannot be bound (in use, not local, not permitted).
pub fn listen(addr: SocketAddr, backlog: usize) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind`: a restarted node binds again at once, its
    // old connections in TIME_WAIT notwithstanding.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(u32::try_from(backlog.max(1)).unwrap_or(u32::MAX))
}

/// [`listen`] for the client port: its accept queue as long as the
/// connections served at once (`max_connections`, which the operator sets
/// as `setting`), with a warning when the kernel caps it below that
/// ([`accept_queue_note`]).
///
/// # Errors
/// As [`listen`].
pub fn listen_for_clients(
    addr: SocketAddr,
    max_connections: usize,
    setting: &str,
) -> std::io::Result<TcpListener> {
    let listener = listen(addr, max_connections)?;
    if let Some(note) = accept_queue_note(somaxconn(), max_connections, setting) {
        warn!("{note}");
    }
    Ok(listener)
}

/// What to tell an operator whose kernel caps the client port's accept
/// queue (`net.core.somaxconn`, `somaxconn`) below `wanted` connections
/// (set as `setting`, `license.max_connections` on a node): nothing when
/// it holds them all, or when the cap is unknown.
pub fn accept_queue_note(somaxconn: Option<u64>, wanted: usize, setting: &str) -> Option<String> {
    let cap = somaxconn?;
    let wanted = u64::try_from(wanted).unwrap_or(u64::MAX);
    (cap < wanted).then(|| {
        format!(
            "net.core.somaxconn is {cap}: the client port's accept queue holds {cap} connections, not the \
             {wanted} of {setting}; when more switches than that reconnect at once (after a \
             failover) the kernel drops their connects until TCP retries them (1 s, 3 s later). Raise it to \
             the number of switches (sysctl -w net.core.somaxconn={wanted})"
        )
    })
}

/// `net.core.somaxconn` of this network namespace, if it can be read.
pub fn somaxconn() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A connection's place in its source address's count, given back on drop.
struct AddressSlot<A: Applier> {
    shared: Arc<Shared<A>>,
    ip: IpAddr,
}

impl<A: Applier> AddressSlot<A> {
    fn take(shared: &Arc<Shared<A>>, ip: IpAddr) -> Option<Self> {
        let mut map = shared.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= shared.config.max_connections_per_address {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            shared: Arc::clone(shared),
            ip,
        })
    }
}

impl<A: Applier> Drop for AddressSlot<A> {
    fn drop(&mut self) {
        let mut map = self.shared.per_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Runs every accept loop to its end, concurrently; the first error, if any.
async fn futures_first_error<F>(loops: Vec<F>) -> std::io::Result<()>
where
    F: std::future::Future<Output = std::io::Result<()>>,
{
    use std::task::Poll;
    let mut pending: Vec<std::pin::Pin<Box<F>>> = loops.into_iter().map(Box::pin).collect();
    let mut result = Ok(());
    std::future::poll_fn(|cx| {
        pending.retain_mut(|l| match l.as_mut().poll(cx) {
            Poll::Ready(r) => {
                if result.is_ok() {
                    result = r;
                }
                false
            }
            Poll::Pending => true,
        });
        if pending.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    result
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock)
        || e.raw_os_error() == Some(24) // EMFILE: descriptors free up as connections close
        || e.raw_os_error() == Some(23) // ENFILE
}

/// Proposes a sweep every `sweep_interval` while this node serves.
async fn sweeper<A: Applier>(shared: Arc<Shared<A>>) {
    // Each key is warned about once in the log; status lists them all.
    let mut warned = std::collections::BTreeSet::new();
    let mut tick = tokio::time::interval(shared.config.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.shutdown.cancelled() => return,
        }
        if !*shared.serving.borrow() {
            continue;
        }
        for warning in shared.expiring() {
            if warned.insert((warning.owner.clone(), warning.key.clone())) {
                warn!(%warning, "limits about to expire");
            }
        }
        match shared
            .applier
            .propose(Command::Sweep {
                now_ms: shared.applier.stamp(),
            })
            .await
        {
            Ok(Ok(Reply::Swept(report))) if !report.is_empty() => {
                info!(down = ?report.down, removed = ?report.removed, expired_keys = report.expired_keys, "sweep");
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "sweep not committed"),
        }
    }
}

#[cfg(test)]
mod listen_tests {
    use std::time::Duration;

    use super::{accept_queue_note, listen, somaxconn};

    /// Connects `n` clients at once to `addr`; how many the kernel
    /// completed. Nothing accepts them: a connect completes only while the
    /// listener's accept queue has room, and one that finds it full never
    /// does (its SYNs are dropped), so the deadline only bounds the wait.
    async fn connected(addr: std::net::SocketAddr, n: usize) -> usize {
        let tries: Vec<_> = (0..n)
            .map(|_| {
                tokio::spawn(tokio::time::timeout(
                    Duration::from_millis(500),
                    tokio::net::TcpStream::connect(addr),
                ))
            })
            .collect();
        let mut streams = Vec::new();
        for t in tries {
            if let Ok(Ok(Ok(stream))) = t.await {
                streams.push(stream);
            }
        }
        streams.len()
    }

    /// Without what a test needs of the machine: a failure under
    /// `CI=true`, else a skip with the reason.
    fn precondition_failed(test: &str, why: &str) {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: CI=true but {why}");
        }
        eprintln!("SKIP {test}: {why}");
    }

    /// The queue is as long as asked, up to the kernel's cap
    /// (`net.core.somaxconn` of the network namespace the test runs in):
    /// a herd waits in it rather than in TCP's retransmission timers.
    /// Linux queues one more than the backlog, and a kernel may let a few
    /// more connects complete: a queue of 4 takes 4 to 8.
    #[tokio::test]
    async fn the_accept_queue_is_as_long_as_asked() {
        const TEST: &str = "the_accept_queue_is_as_long_as_asked";
        const SHORT: usize = 4;
        const LONG: usize = 24;
        let Some(cap) = somaxconn().and_then(|c| usize::try_from(c).ok()) else {
            return precondition_failed(TEST, "net.core.somaxconn cannot be read");
        };
        let queue = |asked: usize| asked.min(cap);
        // As many clients as the long queue holds; more than the short one
        // could take, or the two cannot be told apart.
        let clients = queue(LONG);
        if clients <= 2 * queue(SHORT) {
            return precondition_failed(
                TEST,
                &format!("net.core.somaxconn is {cap}: a queue of {LONG} holds too few to tell from one of {SHORT}"),
            );
        }
        let short = listen("127.0.0.1:0".parse().unwrap(), SHORT).unwrap();
        let n = connected(short.local_addr().unwrap(), clients).await;
        assert!(
            (queue(SHORT)..=2 * queue(SHORT)).contains(&n),
            "{n} of {clients} connected to a queue of {SHORT}"
        );
        let long = listen("127.0.0.1:0".parse().unwrap(), LONG).unwrap();
        assert_eq!(
            connected(long.local_addr().unwrap(), clients).await,
            clients,
            "a queue of {LONG} (net.core.somaxconn {cap})"
        );
    }

    #[test]
    fn a_kernel_cap_below_the_connections_is_told() {
        let setting = "license.max_connections";
        assert_eq!(accept_queue_note(Some(30_000), 20_000, setting), None);
        assert_eq!(accept_queue_note(None, 20_000, setting), None);
        let note = accept_queue_note(Some(4096), 20_000, setting).unwrap();
        assert!(
            note.contains("4096") && note.contains("net.core.somaxconn=20000"),
            "{note}"
        );
    }
}
