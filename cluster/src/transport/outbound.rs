//! The dialling side: one writer task per peer.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frame::{
    chunk_overhead, encode_chunk_head, encode_pair_frame, encode_raft_head, ChunkHeader, PROTOCOL_VERSION,
};
use super::{Outgoing, TcpTransport};
use crate::warn_limited;

/// A connected stream, TLS or plain.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The most bytes of a message one chunk carries, however large
/// `max_frame`: larger chunks only cost. The receiver reads each frame into
/// a buffer of its own, which for tens of MiB is fresh memory, page faults
/// and all, every time, and copies it out whole before it reads on
/// (measured with `benches/snapshot.rs`: 256 MiB in 64 MiB chunks took
/// twice as long as in 1 MiB chunks).
const MAX_CHUNK: usize = 1024 * 1024;

/// Writes a frame's head, then its raw bytes (a slice of the message's one
/// encoding, never copied into a frame).
async fn write_frame<W: AsyncWrite + Unpin>(out: &mut W, head: &[u8], data: &[u8]) -> std::io::Result<()> {
    out.write_all(head).await?;
    out.write_all(data).await
}

/// What became of one raft message handed to the connection.
enum Sent {
    /// Written (buffered until the batch is flushed).
    Written,
    /// Not sent: too large even for chunks.
    Dropped,
    /// The connection failed while writing it.
    Failed,
    /// The transport is shutting down.
    Cancelled,
}

impl TcpTransport {
    /// Dials `addr` from our source address: peers accept only the
    /// address they have configured for us.
    async fn dial(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let cfg = &self.0.cfg;
        let source = cfg
            .source
            .or_else(|| (!cfg.listen.ip().is_unspecified()).then(|| cfg.listen.ip()))
            .filter(|s| s.is_ipv4() == addr.is_ipv4());
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Dials and, with TLS, authenticates peer `to` at `addr`.
    async fn connect(&self, to: u64, addr: SocketAddr) -> Result<Box<dyn Stream>, String> {
        let tcp = self
            .dial(addr)
            .await
            .map_err(|e| format!("connect failed: {e}"))?;
        let Some(tls) = &self.0.tls else {
            return Ok(Box::new(tcp));
        };
        let Some(name) = tls.names.get(&to) else {
            return Err(format!("no member name configured for member {to}"));
        };
        let server_name =
            ServerName::try_from(name.clone()).map_err(|e| format!("member name {name:?}: {e}"))?;
        let deadline = self.0.cfg.handshake_timeout;
        match tokio::time::timeout(deadline, tls.connector.connect(server_name, tcp)).await {
            Ok(Ok(s)) => Ok(Box::new(s)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                let e = std::io::Error::new(e.kind(), format!("dialling member {to} ({name}): {e}"));
                self.handshake_failed(addr, &e);
                Err(format!("TLS handshake refused: {e}"))
            }
            // The peer went away mid-handshake (it stopped, or restarts):
            // the writer retries as for any connection that failed.
            Ok(Err(e)) => Err(format!("TLS handshake did not complete: {e}")),
            Err(_) => {
                let e = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("dialling member {to} ({name}): no handshake within {deadline:?}"),
                );
                self.handshake_failed(addr, &e);
                Err("TLS handshake timed out".into())
            }
        }
    }

    pub(super) async fn write_loop(self, to: u64, addr: SocketAddr, mut rx: mpsc::Receiver<Outgoing>) {
        let cfg = &self.0.cfg;
        let mut backoff = cfg.backoff_min;
        loop {
            let stream = tokio::select! {
                _ = self.0.cancel.cancelled() => return,
                s = self.connect(to, addr) => s,
            };
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(member = cfg.id, peer = to, %addr, "{e}; retry in {backoff:?}");
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
            tracing::debug!(member = cfg.id, peer = to, %addr, "connected");
            let (mut read_half, write_half) = tokio::io::split(stream);
            // The peer never sends on this connection; reading notices when
            // it closes (say, for a newer connection of ours) and lets TLS
            // handle its own records.
            let closed = CancellationToken::new();
            let watch = closed.clone();
            tokio::spawn(async move {
                let mut sink = [0u8; 512];
                while matches!(read_half.read(&mut sink).await, Ok(n) if n > 0) {}
                watch.cancel();
            });
            let mut out = BufWriter::new(write_half);
            let lost = self.write_batches(to, &mut out, &mut rx, &closed).await;
            closed.cancel();
            match lost {
                None => return,
                Some(()) => {
                    tracing::debug!(member = cfg.id, peer = to, "connection lost; reconnecting");
                    self.unreachable(to, &mut rx);
                }
            }
        }
    }

    /// Writes queued messages until the connection fails (`Some`) or the
    /// transport or the queue ends (`None`). This task alone writes to the
    /// connection and writes each message whole (all its chunks) before it
    /// takes the next: the chunks of two messages never interleave.
    async fn write_batches<W: AsyncWrite + Unpin>(
        &self,
        to: u64,
        out: &mut W,
        rx: &mut mpsc::Receiver<Outgoing>,
        closed: &CancellationToken,
    ) -> Option<()> {
        let cfg = &self.0.cfg;
        // Numbers the chunked messages of this connection.
        let mut chunked = 0u64;
        loop {
            let first = tokio::select! {
                _ = self.0.cancel.cancelled() => return None,
                _ = closed.cancelled() => return Some(()),
                m = rx.recv() => m?,
            };
            let mut batch = vec![first];
            while let Ok(m) = rx.try_recv() {
                batch.push(m);
                if batch.len() >= 64 {
                    break;
                }
            }
            // Snapshots written in this batch, reported once it is flushed.
            let mut snapshots = 0;
            let mut failed = false;
            let mut batch = batch.into_iter();
            for m in batch.by_ref() {
                let (sent, snapshot) = match m {
                    Outgoing::Pair(data) => {
                        let frame = encode_pair_frame(&cfg.release, cfg.cluster_id, cfg.id, to, &data);
                        let sent = match out.write_all(&frame).await {
                            Ok(()) => Sent::Written,
                            Err(_) => Sent::Failed,
                        };
                        (sent, false)
                    }
                    Outgoing::Raft(m) => {
                        let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
                        (self.write_raft(to, out, m, &mut chunked, closed).await, snapshot)
                    }
                };
                match sent {
                    Sent::Written => snapshots += usize::from(snapshot),
                    Sent::Dropped => {
                        if snapshot {
                            self.report_snapshot(to, false);
                        }
                    }
                    Sent::Failed => {
                        if snapshot {
                            self.report_snapshot(to, false);
                        }
                        failed = true;
                        break;
                    }
                    Sent::Cancelled => {
                        if snapshot {
                            self.report_snapshot(to, false);
                        }
                        return None;
                    }
                }
            }
            // What follows a failed write was never written.
            for m in batch {
                if matches!(&m, Outgoing::Raft(m) if m.get_msg_type() == MessageType::MsgSnapshot) {
                    self.report_snapshot(to, false);
                }
            }
            if !failed && out.flush().await.is_err() {
                failed = true;
            }
            for _ in 0..snapshots {
                self.report_snapshot(to, !failed);
            }
            if failed {
                return Some(());
            }
        }
    }

    /// Writes one raft message: one frame, or chunks of at most `max_frame`
    /// bytes back to back. The message is encoded once and the chunks are
    /// slices of that encoding; the message itself is dropped first (a
    /// snapshot's data in it is shared with the store, not a copy).
    async fn write_raft<W: AsyncWrite + Unpin>(
        &self,
        to: u64,
        out: &mut W,
        m: Message,
        chunked: &mut u64,
        closed: &CancellationToken,
    ) -> Sent {
        let cfg = &self.0.cfg;
        let (from, msg_to) = (m.from, m.to);
        let bytes = m.write_to_bytes().expect("raft messages encode");
        drop(m);
        let overhead = chunk_overhead(&cfg.release, cfg.cluster_id, from, msg_to);
        let max_frame = cfg.max_frame as usize;
        if bytes.len() + overhead <= max_frame {
            let head = encode_raft_head(
                PROTOCOL_VERSION,
                &cfg.release,
                cfg.cluster_id,
                from,
                msg_to,
                bytes.len(),
            );
            return match write_frame(out, &head, &bytes).await {
                Ok(()) => Sent::Written,
                Err(_) => Sent::Failed,
            };
        }
        if bytes.len() as u64 > cfg.max_message || max_frame <= overhead {
            self.0.stats.dropped.fetch_add(1, Ordering::Relaxed);
            warn_limited!(
                self.0.log,
                "too large",
                member = cfg.id,
                peer = to,
                len = bytes.len(),
                max_message = cfg.max_message,
                "message too large to send"
            );
            return Sent::Dropped;
        }
        *chunked += 1;
        self.0.stats.chunked.fetch_add(1, Ordering::Relaxed);
        let step = (max_frame - overhead).min(MAX_CHUNK);
        for (i, data) in bytes.chunks(step).enumerate() {
            if self.0.cancel.is_cancelled() {
                return Sent::Cancelled;
            }
            if closed.is_cancelled() {
                return Sent::Failed;
            }
            let header = ChunkHeader {
                message: *chunked,
                total: bytes.len() as u64,
                offset: (i * step) as u64,
            };
            let head = encode_chunk_head(&cfg.release, cfg.cluster_id, from, msg_to, header, data.len());
            if write_frame(out, &head, data).await.is_err() {
                return Sent::Failed;
            }
        }
        Sent::Written
    }

    fn report_snapshot(&self, to: u64, delivered: bool) {
        if let Some(i) = self.inbox() {
            i.report_snapshot(to, delivered);
        }
    }

    /// Tells raft the peer is down and drops what was queued for it (raft
    /// resends from its own state once the peer is back).
    fn unreachable(&self, to: u64, rx: &mut mpsc::Receiver<Outgoing>) {
        let Some(inbox) = self.inbox() else { return };
        inbox.report_unreachable(to);
        while let Ok(m) = rx.try_recv() {
            self.0.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if matches!(&m, Outgoing::Raft(m) if m.get_msg_type() == MessageType::MsgSnapshot) {
                inbox.report_snapshot(to, false);
            }
        }
    }
}
