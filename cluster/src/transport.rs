//! Raft messages between members over TCP.
//!
//! A frame is a big-endian `u32` length, then that many bytes: the protocol
//! version (bincode `u16`), the sender's release (a bincode string, the
//! vipool package version), then a bincode body naming the cluster, the
//! sender and the recipient around the protobuf-encoded raft message. The
//! version and the release come first and alone so that a peer of another
//! release is told apart from garbage before anything else is decoded.
//!
//! Both servers of a pair must run the same release: a frame of another
//! release is refused (never delivered), logged at error level naming both
//! releases, counted, and kept as [`TransportStats::last_release_refusal`]
//! until a frame of our release arrives from that peer's address.
//!
//! Each peer has a writer task fed by a bounded queue: `send` never blocks,
//! a full queue drops the message (raft retransmits). A writer that cannot
//! connect retries with exponential backoff and reports the peer unreachable
//! to raft. A frame from another cluster, another protocol version, another
//! release, of oversize length, or undecodable is rejected with a logged
//! reason and counted, and the connection is closed: nothing of it reaches
//! raft.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::member::Outbox;

/// The version of the frame format this build speaks (2: the release
/// follows the version).
pub const PROTOCOL_VERSION: u16 = 2;

/// This build's release: the workspace package version, shared by every
/// crate of vipool. [`TransportConfig::release`] defaults to it.
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// Longest release string a frame may carry; a longer one is malformed.
pub const MAX_RELEASE_LEN: usize = 64;

/// Whether `release` looks like a package version (letters, digits and
/// `.+-_~`, at most [`MAX_RELEASE_LEN`] bytes): safe to log and show as is.
fn valid_release(release: &str) -> bool {
    !release.is_empty()
        && release.len() <= MAX_RELEASE_LEN
        && release
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+-_~".contains(&b))
}

/// What the transport delivers to and reports to (a [`crate::Member`]).
pub trait Inbox: Send + Sync + 'static {
    /// A raft message arrived.
    fn deliver(&self, msg: Message);
    /// `id` could not be reached.
    fn report_unreachable(&self, id: u64);
    /// A snapshot to `to` was written to the socket (or not).
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

/// Settings of a member's transport.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Frames carrying another cluster id are refused.
    pub cluster_id: u64,
    /// This member's raft id.
    pub id: u64,
    /// Where to listen (port 0 picks one; see [`TcpTransport::local_addr`]).
    pub listen: SocketAddr,
    /// Addresses of the other members.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// Largest frame accepted or sent, in bytes (snapshots travel whole).
    pub max_frame: u32,
    /// Messages queued per peer before new ones are dropped.
    pub queue: usize,
    /// First reconnect delay; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Inbound connections served at once; more are closed at accept.
    pub max_connections: usize,
    /// The release this member runs and sends; frames of any other release
    /// are refused. Defaults to [`RELEASE`].
    pub release: String,
}

impl TransportConfig {
    /// Defaults: 64 MiB frames, 1024 queued messages per peer, 50 ms to 2 s backoff.
    pub fn new(cluster_id: u64, id: u64, listen: SocketAddr) -> TransportConfig {
        TransportConfig {
            cluster_id,
            id,
            listen,
            peers: BTreeMap::new(),
            max_frame: 64 * 1024 * 1024,
            queue: 1024,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            max_connections: 64,
            release: RELEASE.to_owned(),
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
    /// Outgoing messages dropped (queue full, or peer unknown or down).
    pub dropped: AtomicU64,
    /// Frames delivered to raft.
    pub delivered: AtomicU64,
    /// Inbound connections closed because `max_connections` were open.
    pub refused_connections: AtomicU64,
    /// Frames of another release (the connection is refused).
    pub wrong_release: AtomicU64,
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

/// Why an inbound frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Declared length above the limit.
    #[error("oversize frame: {len} bytes, limit {max}")]
    Oversize {
        /// Declared length.
        len: u32,
        /// Limit.
        max: u32,
    },
    /// Another protocol version (another vipool release).
    #[error(
        "protocol version {0}, this member speaks {PROTOCOL_VERSION}: refusing to pair with another \
         release; upgrade both servers to the same release"
    )]
    Version(u16),
    /// Another vipool release: both servers must run the same one.
    #[error(
        "peer runs vipool release {theirs}, this member runs {ours}: refusing to pair \
         with another release; upgrade both servers to the same release"
    )]
    Release {
        /// What the frame says.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// Another cluster id.
    #[error("frame from cluster {got}, this is cluster {want}")]
    Cluster {
        /// What the frame says.
        got: u64,
        /// Ours.
        want: u64,
    },
    /// Addressed to another member.
    #[error("frame for member {0}, this is another member")]
    Misaddressed(u64),
    /// Not decodable.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Body {
    cluster_id: u64,
    from: u64,
    to: u64,
    msg: Vec<u8>,
}

fn bincode_cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes one frame (length prefix included) of this build's [`RELEASE`].
pub fn encode_frame(version: u16, cluster_id: u64, msg: &Message) -> Vec<u8> {
    encode_release_frame(version, RELEASE, cluster_id, msg)
}

/// Encodes one frame (length prefix included) claiming `release`.
pub fn encode_release_frame(version: u16, release: &str, cluster_id: u64, msg: &Message) -> Vec<u8> {
    let body = Body {
        cluster_id,
        from: msg.from,
        to: msg.to,
        msg: msg.write_to_bytes().expect("raft messages encode"),
    };
    let mut payload = bincode::serde::encode_to_vec(version, bincode_cfg()).expect("u16 encodes");
    payload.extend(bincode::serde::encode_to_vec(release, bincode_cfg()).expect("str encodes"));
    payload.extend(bincode::serde::encode_to_vec(&body, bincode_cfg()).expect("body encodes"));
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend(payload);
    frame
}

/// Decodes a frame's payload (after the length prefix) and checks it
/// against this build's [`RELEASE`].
///
/// # Errors
/// As [`decode_release_payload`].
pub fn decode_payload(payload: &[u8], cluster_id: u64, me: u64) -> Result<Message, FrameError> {
    decode_release_payload(payload, RELEASE, cluster_id, me)
}

/// Decodes a frame's payload (after the length prefix) and checks it: our
/// protocol version, our `release`, our cluster, for member `me`.
///
/// # Errors
/// Another version, another release, another cluster, another recipient,
/// or garbage.
pub fn decode_release_payload(
    payload: &[u8],
    release: &str,
    cluster_id: u64,
    me: u64,
) -> Result<Message, FrameError> {
    let (version, used_v): (u16, usize) = bincode::serde::decode_from_slice(payload, bincode_cfg())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version(version));
    }
    // Decoded under a byte limit: a forged length claim must not allocate.
    let limited = bincode_cfg().with_limit::<{ MAX_RELEASE_LEN + 16 }>();
    let (theirs, used_r): (String, usize) = bincode::serde::decode_from_slice(&payload[used_v..], limited)
        .map_err(|e| FrameError::Malformed(format!("release (at most {MAX_RELEASE_LEN} bytes): {e}")))?;
    if !valid_release(&theirs) {
        return Err(FrameError::Malformed(format!(
            "release string of {} bytes: 1 to {MAX_RELEASE_LEN} letters, digits or .+-_~ expected",
            theirs.len()
        )));
    }
    if theirs != release {
        return Err(FrameError::Release {
            theirs,
            ours: release.to_owned(),
        });
    }
    let used = used_v + used_r;
    let (body, used2): (Body, usize) = bincode::serde::decode_from_slice(&payload[used..], bincode_cfg())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used + used2 != payload.len() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes",
            payload.len() - used - used2
        )));
    }
    if body.cluster_id != cluster_id {
        return Err(FrameError::Cluster {
            got: body.cluster_id,
            want: cluster_id,
        });
    }
    if body.to != me {
        return Err(FrameError::Misaddressed(body.to));
    }
    let msg = Message::parse_from_bytes(&body.msg).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if msg.to != body.to || msg.from != body.from {
        return Err(FrameError::Malformed(
            "envelope and message disagree on from/to".into(),
        ));
    }
    Ok(msg)
}

/// The release of a member whose frame carries another protocol `version`,
/// if the frame is one of vipool's and not garbage: a frame of protocol 1
/// (the release before releases were sent) whose body names our cluster, or
/// a frame of a later protocol that, as this one, starts with its release.
fn peer_release(payload: &[u8], version: u16, cluster_id: u64) -> Option<String> {
    let (_, used): (u16, usize) = bincode::serde::decode_from_slice(payload, bincode_cfg()).ok()?;
    let rest = &payload[used..];
    if version == 1 {
        let (body, _): (Body, usize) = bincode::serde::decode_from_slice(rest, bincode_cfg()).ok()?;
        return (body.cluster_id == cluster_id).then(|| "older (frame protocol 1)".to_owned());
    }
    if version > PROTOCOL_VERSION {
        let limited = bincode_cfg().with_limit::<{ MAX_RELEASE_LEN + 16 }>();
        let (release, _): (String, usize) = bincode::serde::decode_from_slice(rest, limited).ok()?;
        return valid_release(&release).then(|| format!("{release} (frame protocol {version})"));
    }
    None
}

struct Inner {
    cfg: TransportConfig,
    local: SocketAddr,
    peers: Mutex<BTreeMap<u64, SocketAddr>>,
    writers: Mutex<BTreeMap<u64, mpsc::Sender<Message>>>,
    inbox: OnceLock<Arc<dyn Inbox>>,
    stats: TransportStats,
    cancel: CancellationToken,
    connections: Arc<tokio::sync::Semaphore>,
}

/// The TCP transport of one member.
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
    /// The address cannot be bound.
    pub async fn bind(cfg: TransportConfig) -> std::io::Result<(TcpTransport, TcpListener)> {
        let listener = TcpListener::bind(cfg.listen).await?;
        let cfg_max = cfg.max_connections;
        let local = listener.local_addr()?;
        let t = TcpTransport(Arc::new(Inner {
            peers: Mutex::new(cfg.peers.clone()),
            cfg,
            local,
            writers: Mutex::new(BTreeMap::new()),
            inbox: OnceLock::new(),
            stats: TransportStats::default(),
            cancel: CancellationToken::new(),
            connections: Arc::new(tokio::sync::Semaphore::new(cfg_max)),
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

    async fn accept_loop(self, listener: TcpListener) {
        loop {
            tokio::select! {
                _ = self.0.cancel.cancelled() => return,
                r = listener.accept() => match r {
                    Ok((stream, addr)) => {
                        let Ok(permit) = self.0.connections.clone().try_acquire_owned() else {
                            self.0.stats.refused_connections.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(member = self.0.cfg.id, peer = %addr,
                                "refusing connection: {} already open", self.0.cfg.max_connections);
                            continue;
                        };
                        let me = self.clone();
                        tokio::spawn(async move {
                            me.read_loop(stream, addr).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(member = self.0.cfg.id, "accept failed: {e}");
                        tokio::time::sleep(self.0.cfg.backoff_min).await;
                    }
                }
            }
        }
    }

    async fn read_loop(self, mut stream: TcpStream, addr: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let id = self.0.cfg.id;
        let stats = &self.0.stats;
        // The first frame of our release on this connection clears a
        // refusal of the same address (the peer was upgraded).
        let mut cleared = false;
        loop {
            let mut len = [0u8; 4];
            let read = tokio::select! {
                _ = self.0.cancel.cancelled() => return,
                r = stream.read_exact(&mut len) => r,
            };
            if read.is_err() {
                return; // closed
            }
            let len = u32::from_be_bytes(len);
            if len > self.0.cfg.max_frame {
                stats.oversize.fetch_add(1, Ordering::Relaxed);
                let e = FrameError::Oversize {
                    len,
                    max: self.0.cfg.max_frame,
                };
                tracing::warn!(member = id, peer = %addr, "rejecting connection: {e}");
                return;
            }
            let mut payload = vec![0u8; len as usize];
            if stream.read_exact(&mut payload).await.is_err() {
                return;
            }
            match decode_release_payload(&payload, &self.0.cfg.release, self.0.cfg.cluster_id, id) {
                Ok(msg) => {
                    if !cleared {
                        cleared = true;
                        let mut last = stats.last_release.lock().unwrap_or_else(|p| p.into_inner());
                        if last.as_ref().is_some_and(|r| r.peer.ip() == addr.ip()) {
                            tracing::info!(member = id, peer = %addr, "peer now runs our release: pairing");
                            *last = None;
                        }
                    }
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    if let Some(inbox) = self.0.inbox.get() {
                        inbox.deliver(msg);
                    }
                }
                Err(FrameError::Release { theirs, ours }) => {
                    stats.wrong_release.fetch_add(1, Ordering::Relaxed);
                    let e = FrameError::Release {
                        theirs: theirs.clone(),
                        ours: ours.clone(),
                    };
                    self.refuse_release(addr, theirs, ours, &e);
                    return;
                }
                Err(FrameError::Version(v)) if peer_release(&payload, v, self.0.cfg.cluster_id).is_some() => {
                    stats.wrong_version.fetch_add(1, Ordering::Relaxed);
                    let theirs = peer_release(&payload, v, self.0.cfg.cluster_id).unwrap_or_default();
                    let ours = format!("{} (frame protocol {PROTOCOL_VERSION})", self.0.cfg.release);
                    self.refuse_release(addr, theirs, ours, &FrameError::Version(v));
                    return;
                }
                Err(e) => {
                    let counter = match e {
                        FrameError::Oversize { .. } => &stats.oversize,
                        FrameError::Version(_) => &stats.wrong_version,
                        FrameError::Release { .. } => &stats.wrong_release,
                        FrameError::Cluster { .. } => &stats.wrong_cluster,
                        FrameError::Misaddressed(_) => &stats.misaddressed,
                        FrameError::Malformed(_) => &stats.malformed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(member = id, peer = %addr, "rejecting connection: {e}");
                    return;
                }
            }
        }
    }

    /// Records and logs (as `e`) a peer of another release. The peer
    /// retries with backoff: the same refusal is logged at error level again
    /// only after a minute, in between at debug level.
    fn refuse_release(&self, peer: SocketAddr, theirs: String, ours: String, e: &FrameError) {
        let stats = &self.0.stats;
        let count = stats.wrong_release.load(Ordering::Relaxed) + stats.wrong_version.load(Ordering::Relaxed);
        let now = Instant::now();
        let mut last = stats.last_release.lock().unwrap_or_else(|p| p.into_inner());
        let logged = last
            .as_ref()
            .filter(|r| {
                r.peer.ip() == peer.ip()
                    && r.theirs == theirs
                    && now.duration_since(r.logged) < Duration::from_secs(60)
            })
            .map(|r| r.logged);
        let id = self.0.cfg.id;
        if logged.is_some() {
            tracing::debug!(member = id, %peer, refused = count, "rejecting connection: {e}");
        } else {
            tracing::error!(member = id, %peer, refused = count, "rejecting connection: {e}");
        }
        *last = Some(ReleaseRefusal {
            peer,
            theirs,
            ours,
            at: now,
            logged: logged.unwrap_or(now),
        });
    }

    fn writer(&self, to: u64) -> Option<mpsc::Sender<Message>> {
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
        tokio::spawn(async move { me.write_loop(to, addr, rx).await });
        Some(tx)
    }

    fn inbox(&self) -> Option<&Arc<dyn Inbox>> {
        self.0.inbox.get()
    }

    async fn write_loop(self, to: u64, addr: SocketAddr, mut rx: mpsc::Receiver<Message>) {
        let cfg = &self.0.cfg;
        let mut backoff = cfg.backoff_min;
        loop {
            let stream = tokio::select! {
                _ = self.0.cancel.cancelled() => return,
                s = TcpStream::connect(addr) => s,
            };
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(member = cfg.id, peer = to, %addr, "connect failed: {e}; retry in {backoff:?}");
                    self.unreachable(to, &mut rx);
                    tokio::select! {
                        _ = self.0.cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(cfg.backoff_max);
                    continue;
                }
            };
            backoff = cfg.backoff_min;
            let _ = stream.set_nodelay(true);
            tracing::debug!(member = cfg.id, peer = to, %addr, "connected");
            let mut out = BufWriter::new(stream);
            loop {
                let msg = tokio::select! {
                    _ = self.0.cancel.cancelled() => return,
                    m = rx.recv() => m,
                };
                let Some(msg) = msg else { return };
                let mut batch = vec![msg];
                while let Ok(m) = rx.try_recv() {
                    batch.push(m);
                    if batch.len() >= 64 {
                        break;
                    }
                }
                let mut failed = false;
                for m in &batch {
                    let frame = encode_release_frame(PROTOCOL_VERSION, &cfg.release, cfg.cluster_id, m);
                    if frame.len() - 4 > cfg.max_frame as usize {
                        self.0.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            member = cfg.id,
                            peer = to,
                            len = frame.len(),
                            "message too large to send"
                        );
                        continue;
                    }
                    if out.write_all(&frame).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if !failed && out.flush().await.is_err() {
                    failed = true;
                }
                for m in batch
                    .iter()
                    .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
                {
                    if let Some(i) = self.inbox() {
                        i.report_snapshot(m.to, !failed);
                    }
                }
                if failed {
                    tracing::debug!(member = cfg.id, peer = to, "connection lost; reconnecting");
                    self.unreachable(to, &mut rx);
                    break;
                }
            }
        }
    }

    /// Tells raft the peer is down and drops what was queued for it (raft
    /// resends from its own state once the peer is back).
    fn unreachable(&self, to: u64, rx: &mut mpsc::Receiver<Message>) {
        let Some(inbox) = self.inbox() else { return };
        inbox.report_unreachable(to);
        while let Ok(m) = rx.try_recv() {
            self.0.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if m.get_msg_type() == MessageType::MsgSnapshot {
                inbox.report_snapshot(to, false);
            }
        }
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
        if let Err(e) = w.try_send(msg) {
            self.0.stats.dropped.fetch_add(1, Ordering::Relaxed);
            let m = match e {
                mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
            };
            if let Some(i) = self.inbox() {
                i.report_unreachable(to);
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    i.report_snapshot(to, false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::tests::fast;
    use crate::sim::Recorder;
    use crate::{LogStore, Member};
    use raft::StateRole;

    fn msg(from: u64, to: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.from = from;
        m.to = to;
        m.term = 3;
        m
    }

    #[test]
    fn frame_roundtrip_and_each_rejection() {
        let m = msg(1, 2);
        let f = encode_frame(PROTOCOL_VERSION, 42, &m);
        assert_eq!(
            u32::from_be_bytes(f[..4].try_into().unwrap()) as usize,
            f.len() - 4
        );
        assert_eq!(decode_payload(&f[4..], 42, 2).unwrap(), m);
        assert_eq!(
            decode_payload(&encode_frame(PROTOCOL_VERSION, 43, &m)[4..], 42, 2),
            Err(FrameError::Cluster { got: 43, want: 42 })
        );
        assert_eq!(
            decode_payload(&encode_frame(PROTOCOL_VERSION + 1, 42, &m)[4..], 42, 2),
            Err(FrameError::Version(PROTOCOL_VERSION + 1))
        );
        assert_eq!(
            decode_payload(
                &encode_release_frame(PROTOCOL_VERSION, "0.0.1", 42, &m)[4..],
                42,
                2
            ),
            Err(FrameError::Release {
                theirs: "0.0.1".into(),
                ours: RELEASE.into()
            })
        );
        assert_eq!(
            decode_release_payload(
                &encode_release_frame(PROTOCOL_VERSION, "9.9", 42, &m)[4..],
                "9.9",
                42,
                2
            ),
            Ok(m.clone())
        );
        assert_eq!(decode_payload(&f[4..], 42, 3), Err(FrameError::Misaddressed(2)));
        assert!(matches!(
            decode_payload(&f[4..f.len() - 1], 42, 2),
            Err(FrameError::Malformed(_))
        ));
        let mut trailing = f[4..].to_vec();
        trailing.push(0);
        assert!(matches!(
            decode_payload(&trailing, 42, 2),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            decode_payload(&[], 42, 2),
            Err(FrameError::Malformed(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode_payload(&bytes, 42, 2);
        }

        #[test]
        fn valid_frames_roundtrip(from in 1u64..10, to in 1u64..10, term in 0u64..1000, commit in 0u64..1000) {
            let mut m = msg(from, to);
            m.term = term;
            m.commit = commit;
            let f = encode_frame(PROTOCOL_VERSION, 5, &m);
            proptest::prop_assert_eq!(decode_payload(&f[4..], 5, to), Ok(m));
        }
    }

    #[test]
    fn huge_length_claim_inside_a_frame_is_malformed() {
        // our version and release, cluster 42, from 1, to 2, then a byte
        // string claiming 2^40 bytes (bincode varint: 0xfd + u64 LE).
        let mut p = bincode::serde::encode_to_vec(PROTOCOL_VERSION, bincode_cfg()).unwrap();
        p.extend(bincode::serde::encode_to_vec(RELEASE, bincode_cfg()).unwrap());
        p.extend([42, 1, 2, 0xfd]);
        p.extend((1u64 << 40).to_le_bytes());
        p.extend([0u8; 16]);
        assert!(matches!(decode_payload(&p, 42, 2), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn release_strings_are_bounded() {
        // A release claiming 2^40 bytes, then too little.
        let mut p = bincode::serde::encode_to_vec(PROTOCOL_VERSION, bincode_cfg()).unwrap();
        p.push(0xfd);
        p.extend((1u64 << 40).to_le_bytes());
        p.extend([b'1'; 16]);
        assert!(matches!(decode_payload(&p, 42, 2), Err(FrameError::Malformed(_))));
        // A whole release longer than the limit.
        let long = "9".repeat(MAX_RELEASE_LEN + 1);
        let f = encode_release_frame(PROTOCOL_VERSION, &long, 42, &msg(1, 2));
        assert!(matches!(
            decode_payload(&f[4..], 42, 2),
            Err(FrameError::Malformed(_))
        ));
        // So is a release that is no package version (it is logged).
        let f = encode_release_frame(PROTOCOL_VERSION, "1.0\n[fake log line]", 42, &msg(1, 2));
        assert!(matches!(
            decode_payload(&f[4..], 42, 2),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            decode_payload(
                &encode_release_frame(PROTOCOL_VERSION, "", 42, &msg(1, 2))[4..],
                42,
                2
            ),
            Err(FrameError::Malformed(_))
        ));
        // Invalid UTF-8 is malformed too.
        let mut p = bincode::serde::encode_to_vec(PROTOCOL_VERSION, bincode_cfg()).unwrap();
        p.extend([2, 0xff, 0xfe]);
        assert!(matches!(decode_payload(&p, 42, 2), Err(FrameError::Malformed(_))));
    }

    #[tokio::test]
    async fn a_peer_of_another_release_is_refused_logged_counted_and_cleared_on_upgrade() {
        let cap = crate::logger::tests::Captured::default();
        let _guard = tracing::subscriber::set_default(cap.subscriber());
        let mut cfg = TransportConfig::new(42, 2, "127.0.0.1:0".parse().unwrap());
        cfg.release = "1.2.0".into();
        let (t, l) = TcpTransport::bind(cfg).await.unwrap();
        let inbox = Arc::new(Count::default());
        t.attach(l, inbox.clone());
        let addr = t.local_addr();
        assert_eq!(t.stats().last_release_refusal(), None);

        // An older release, twice (it reconnects): refused each time,
        // logged once at error level, never delivered.
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&encode_release_frame(PROTOCOL_VERSION, "1.1.3", 42, &msg(1, 2)))
                .await
                .unwrap();
            let mut buf = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
                .await
                .unwrap();
            assert!(matches!(n, Ok(0) | Err(_)), "connection closed");
        }
        let s = t.stats();
        wait_for("counter", || s.wrong_release.load(Ordering::Relaxed) == 2).await;
        assert_eq!(inbox.0.load(Ordering::Relaxed), 0, "nothing reached raft");
        let r = s.last_release_refusal().expect("refusal recorded");
        assert_eq!((r.theirs.as_str(), r.ours.as_str()), ("1.1.3", "1.2.0"));
        assert_eq!(r.peer.ip(), addr.ip());
        assert_eq!(
            r.to_string(),
            format!(
                "peer refused: {} runs vipool release 1.1.3, ours 1.2.0; \
                 upgrade both servers to the same release",
                r.peer
            )
        );
        let text = cap.text();
        let line = "peer runs vipool release 1.1.3, this member runs 1.2.0: refusing to pair \
                    with another release; upgrade both servers to the same release";
        let errors = text.lines().filter(|l| l.contains(" ERROR ") && l.contains(line));
        assert_eq!(errors.count(), 1, "logged once at error level:\n{text}");
        let again = text.lines().filter(|l| l.contains(" DEBUG ") && l.contains(line));
        assert_eq!(again.count(), 1, "the retry at debug level:\n{text}");

        // The peer is upgraded: its frames are delivered and the refusal clears.
        let mut s2 = TcpStream::connect(addr).await.unwrap();
        s2.write_all(&encode_release_frame(PROTOCOL_VERSION, "1.2.0", 42, &msg(1, 2)))
            .await
            .unwrap();
        wait_for("delivery", || inbox.0.load(Ordering::Relaxed) == 1).await;
        assert_eq!(s.last_release_refusal(), None);
        t.shutdown();
    }

    /// A frame as releases of frame protocol 1 sent it: no release.
    fn protocol_1_frame(cluster_id: u64, m: &Message) -> Vec<u8> {
        let body = Body {
            cluster_id,
            from: m.from,
            to: m.to,
            msg: m.write_to_bytes().unwrap(),
        };
        let mut payload = bincode::serde::encode_to_vec(1u16, bincode_cfg()).unwrap();
        payload.extend(bincode::serde::encode_to_vec(&body, bincode_cfg()).unwrap());
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend(payload);
        frame
    }

    #[test]
    fn releases_of_other_protocols_are_recognised_and_garbage_is_not() {
        let m = msg(1, 2);
        let old = protocol_1_frame(42, &m);
        assert_eq!(decode_payload(&old[4..], 42, 2), Err(FrameError::Version(1)));
        assert_eq!(
            peer_release(&old[4..], 1, 42).as_deref(),
            Some("older (frame protocol 1)")
        );
        // Another cluster's, or not a frame at all: nothing to say.
        assert_eq!(peer_release(&protocol_1_frame(41, &m)[4..], 1, 42), None);
        assert_eq!(peer_release(&[1, 0xff, 0xff, 0xff], 1, 42), None);
        // A later protocol that starts with its release, as this one does.
        let new = encode_release_frame(PROTOCOL_VERSION + 1, "3.0.0", 42, &m);
        assert_eq!(
            peer_release(&new[4..], PROTOCOL_VERSION + 1, 42).as_deref(),
            Some(format!("3.0.0 (frame protocol {})", PROTOCOL_VERSION + 1).as_str())
        );
        let junk = [PROTOCOL_VERSION as u8 + 1, 3, 0xff, 0, 1];
        assert_eq!(peer_release(&junk, PROTOCOL_VERSION + 1, 42), None);
    }

    #[tokio::test]
    async fn a_member_of_frame_protocol_1_is_refused_as_another_release() {
        let mut cfg = TransportConfig::new(42, 2, "127.0.0.1:0".parse().unwrap());
        cfg.release = "1.2.0".into();
        let (t, l) = TcpTransport::bind(cfg).await.unwrap();
        let inbox = Arc::new(Count::default());
        t.attach(l, inbox.clone());
        let mut s = TcpStream::connect(t.local_addr()).await.unwrap();
        s.write_all(&protocol_1_frame(42, &msg(1, 2))).await.unwrap();
        let st = t.stats();
        wait_for("refusal", || st.last_release_refusal().is_some()).await;
        let r = st.last_release_refusal().unwrap();
        assert_eq!(
            r.to_string(),
            format!(
                "peer refused: {} runs vipool release older (frame protocol 1), ours 1.2.0 (frame \
                 protocol {PROTOCOL_VERSION}); upgrade both servers to the same release",
                r.peer
            )
        );
        assert_eq!(st.wrong_version.load(Ordering::Relaxed), 1);
        assert_eq!(inbox.0.load(Ordering::Relaxed), 0);
        t.shutdown();
    }

    #[tokio::test]
    async fn members_of_different_releases_never_exchange_messages() {
        let mut a_cfg = TransportConfig::new(42, 1, "127.0.0.1:0".parse().unwrap());
        a_cfg.release = "2.0.0".into();
        let mut b_cfg = TransportConfig::new(42, 2, "127.0.0.1:0".parse().unwrap());
        b_cfg.release = "2.1.0".into();
        let (a, al) = TcpTransport::bind(a_cfg).await.unwrap();
        let (b, bl) = TcpTransport::bind(b_cfg).await.unwrap();
        a.set_peer(2, b.local_addr());
        b.set_peer(1, a.local_addr());
        let (ai, bi) = (Arc::new(Count::default()), Arc::new(Count::default()));
        a.attach(al, ai.clone());
        b.attach(bl, bi.clone());
        wait_for("both sides refuse", || {
            a.send(msg(1, 2));
            b.send(msg(2, 1));
            a.stats().wrong_release.load(Ordering::Relaxed) > 0
                && b.stats().wrong_release.load(Ordering::Relaxed) > 0
        })
        .await;
        assert_eq!(ai.0.load(Ordering::Relaxed) + bi.0.load(Ordering::Relaxed), 0);
        let ra = a.stats().last_release_refusal().unwrap();
        assert_eq!((ra.theirs.as_str(), ra.ours.as_str()), ("2.1.0", "2.0.0"));
        let rb = b.stats().last_release_refusal().unwrap();
        assert_eq!((rb.theirs.as_str(), rb.ours.as_str()), ("2.0.0", "2.1.0"));
        a.shutdown();
        b.shutdown();
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_refused() {
        let mut cfg = TransportConfig::new(42, 2, "127.0.0.1:0".parse().unwrap());
        cfg.max_connections = 1;
        let (t, l) = TcpTransport::bind(cfg).await.unwrap();
        let inbox = Arc::new(Count::default());
        t.attach(l, inbox.clone());
        let mut first = TcpStream::connect(t.local_addr()).await.unwrap();
        first
            .write_all(&encode_frame(PROTOCOL_VERSION, 42, &msg(1, 2)))
            .await
            .unwrap();
        wait_for("first delivery", || inbox.0.load(Ordering::Relaxed) == 1).await;
        let mut second = TcpStream::connect(t.local_addr()).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(20), second.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "second connection closed");
        assert_eq!(t.stats().refused_connections.load(Ordering::Relaxed), 1);
        // Closing the first frees the slot.
        drop(first);
        let mut third = TcpStream::connect(t.local_addr()).await.unwrap();
        third
            .write_all(&encode_frame(PROTOCOL_VERSION, 42, &msg(1, 2)))
            .await
            .unwrap();
        wait_for("delivery on a freed slot", || {
            inbox.0.load(Ordering::Relaxed) == 2
        })
        .await;
        t.shutdown();
    }

    /// An inbox that records what the transport reports.
    #[derive(Default)]
    struct Reports {
        unreachable: Mutex<Vec<u64>>,
        snapshots: Mutex<Vec<(u64, bool)>>,
    }
    impl Inbox for Reports {
        fn deliver(&self, _: Message) {}
        fn report_unreachable(&self, id: u64) {
            self.unreachable.lock().unwrap().push(id);
        }
        fn report_snapshot(&self, to: u64, delivered: bool) {
            self.snapshots.lock().unwrap().push((to, delivered));
        }
    }

    #[tokio::test]
    async fn unreachable_peer_is_reported_and_retried_with_backoff_then_reached() {
        // A port nobody listens on (yet).
        let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer_addr = spare.local_addr().unwrap();
        drop(spare);
        let mut cfg = TransportConfig::new(42, 1, "127.0.0.1:0".parse().unwrap());
        cfg.peers.insert(9, peer_addr);
        cfg.backoff_min = Duration::from_millis(10);
        cfg.backoff_max = Duration::from_millis(40);
        let (t, l) = TcpTransport::bind(cfg).await.unwrap();
        let reports = Arc::new(Reports::default());
        t.attach(l, reports.clone());
        let mut snap = msg(1, 9);
        snap.set_msg_type(MessageType::MsgSnapshot);
        t.send(snap);
        wait_for("repeated unreachable reports", || {
            reports
                .unreachable
                .lock()
                .unwrap()
                .iter()
                .filter(|&&i| i == 9)
                .count()
                >= 3
        })
        .await;
        assert!(
            reports.snapshots.lock().unwrap().contains(&(9, false)),
            "lost snapshot reported"
        );
        // An unknown member is reported at once.
        t.send(msg(1, 77));
        assert!(reports.unreachable.lock().unwrap().contains(&77));

        // The peer comes up: the writer reconnects and delivers.
        let mut pcfg = TransportConfig::new(42, 9, peer_addr);
        pcfg.max_connections = 4;
        let (p, pl) = TcpTransport::bind(pcfg).await.unwrap();
        let got = Arc::new(Count::default());
        p.attach(pl, got.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while got.0.load(Ordering::Relaxed) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never delivered after the peer came up"
            );
            t.send(msg(1, 9));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        t.shutdown();
        p.shutdown();
    }

    /// An inbox that only counts.
    #[derive(Default)]
    struct Count(AtomicU64);
    impl Inbox for Count {
        fn deliver(&self, _: Message) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn report_unreachable(&self, _: u64) {}
        fn report_snapshot(&self, _: u64, _: bool) {}
    }

    async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn bad_frames_are_rejected_counted_logged_and_never_delivered() {
        let cap = crate::logger::tests::Captured::default();
        let _guard = tracing::subscriber::set_default(cap.subscriber());
        let mut cfg = TransportConfig::new(42, 2, "127.0.0.1:0".parse().unwrap());
        cfg.max_frame = 4096;
        let (t, l) = TcpTransport::bind(cfg).await.unwrap();
        let inbox = Arc::new(Count::default());
        t.attach(l, inbox.clone());
        let addr = t.local_addr();

        let send = |bytes: Vec<u8>| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            // The transport closes the connection after a rejection.
            let mut buf = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
                .await
                .unwrap();
            assert!(matches!(n, Ok(0) | Err(_)), "connection closed");
        };
        send(8000u32.to_be_bytes().to_vec()).await;
        send(encode_frame(7, 42, &msg(1, 2))).await;
        send(encode_frame(PROTOCOL_VERSION, 41, &msg(1, 2))).await;
        send(encode_frame(PROTOCOL_VERSION, 42, &msg(1, 9))).await;
        let mut junk = 5u32.to_be_bytes().to_vec();
        junk.extend([PROTOCOL_VERSION as u8, 0xff, 0xff, 0xff, 0xff]);
        send(junk).await;

        let s = t.stats();
        wait_for("counters", || s.malformed.load(Ordering::Relaxed) == 1).await;
        assert_eq!(s.oversize.load(Ordering::Relaxed), 1);
        assert_eq!(s.wrong_version.load(Ordering::Relaxed), 1);
        assert_eq!(s.wrong_cluster.load(Ordering::Relaxed), 1);
        assert_eq!(s.misaddressed.load(Ordering::Relaxed), 1);
        assert_eq!(inbox.0.load(Ordering::Relaxed), 0, "nothing reached raft");

        // A good frame on a fresh connection still gets through.
        let mut s2 = TcpStream::connect(addr).await.unwrap();
        s2.write_all(&encode_frame(PROTOCOL_VERSION, 42, &msg(1, 2)))
            .await
            .unwrap();
        wait_for("delivery", || inbox.0.load(Ordering::Relaxed) == 1).await;

        let text = cap.text();
        let version = format!("protocol version 7, this member speaks {PROTOCOL_VERSION}");
        for reason in [
            "oversize frame: 8000 bytes, limit 4096",
            version.as_str(),
            "frame from cluster 41, this is cluster 42",
            "frame for member 9",
            "malformed frame",
        ] {
            assert!(text.contains(reason), "log lacks {reason:?}:\n{text}");
        }
        t.shutdown();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_members_over_loopback_tcp_with_restart_of_a_peer() {
        let dir = tempfile::tempdir().unwrap();
        let mut transports = BTreeMap::new();
        let mut listeners = BTreeMap::new();
        for id in 1..=3u64 {
            let mut cfg = TransportConfig::new(7, id, "127.0.0.1:0".parse().unwrap());
            cfg.backoff_max = Duration::from_millis(200);
            let (t, l) = TcpTransport::bind(cfg).await.unwrap();
            transports.insert(id, t);
            listeners.insert(id, l);
        }
        let addrs: BTreeMap<u64, SocketAddr> = transports.iter().map(|(&i, t)| (i, t.local_addr())).collect();
        let start = |id: u64, t: &TcpTransport, l: TcpListener| {
            for (&p, &a) in &addrs {
                if p != id {
                    t.set_peer(p, a);
                }
            }
            let store = LogStore::open(crate::member::tests::disk_at(
                &dir.path().join(format!("{id}.redb")),
            ))
            .unwrap();
            let m = Member::start(
                fast(id),
                store,
                Recorder::default(),
                &[1, 2, 3],
                Arc::new(t.clone()),
            )
            .unwrap();
            t.attach(l, Arc::new(m.clone()));
            m
        };
        let mut members = BTreeMap::new();
        for id in 1..=3u64 {
            let l = listeners.remove(&id).unwrap();
            members.insert(id, start(id, &transports[&id], l));
        }
        let leader = async {
            loop {
                for m in members.values() {
                    if m.status()
                        .await
                        .map(|s| s.role == StateRole::Leader)
                        .unwrap_or(false)
                    {
                        return m.clone();
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let leader = tokio::time::timeout(Duration::from_secs(30), leader)
            .await
            .expect("leader");
        // On two loaded cores leadership can move mid-test; a proposal raft
        // dropped (never appended) or sent to a former leader is retried on
        // the current one, as a client would.
        let propose = |c: u64| {
            let members: Vec<_> = members.values().cloned().collect();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                loop {
                    for m in &members {
                        match m.propose(c).await {
                            Ok(index) => return index,
                            Err(crate::ProposeError::Dropped | crate::ProposeError::NotLeader { .. }) => {}
                            Err(crate::ProposeError::ShuttingDown) => {}
                            Err(e) => panic!("command {c}: {e}"),
                        }
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "command {c} never committed"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let mut acked = Vec::new();
        for c in 0..50u64 {
            acked.push((propose(c).await, c));
        }
        // Stop a follower and its transport, write on, bring it back on a new port.
        let f = *members.keys().find(|&&i| i != leader.id()).unwrap();
        members[&f].shutdown().await;
        transports[&f].shutdown();
        for c in 50..150u64 {
            acked.push((propose(c).await, c));
        }
        let mut cfg = TransportConfig::new(7, f, "127.0.0.1:0".parse().unwrap());
        cfg.backoff_max = Duration::from_millis(200);
        let (t, l) = TcpTransport::bind(cfg).await.unwrap();
        for tr in transports.values() {
            tr.set_peer(f, t.local_addr());
        }
        let m = start(f, &t, l);
        let last = acked.last().unwrap().0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let st = m.status().await.unwrap();
            if st.applied >= last {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "restarted follower catches up: {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seen = m.read(|sm: &Recorder| sm.by_index.clone()).await.unwrap();
        for (i, c) in acked {
            assert_eq!(seen.get(&i), Some(&c));
        }
        for mm in members.values() {
            mm.shutdown().await;
        }
        m.shutdown().await;
        for tr in transports.values() {
            tr.shutdown();
        }
        t.shutdown();
    }
}
