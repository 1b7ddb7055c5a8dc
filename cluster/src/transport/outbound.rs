//! The dialling side: one writer task per peer.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use raft::eraftpb::MessageType;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frame::{encode_pair_frame, encode_release_frame, PROTOCOL_VERSION};
use super::{Outgoing, TcpTransport};
use crate::warn_limited;

/// A connected stream, TLS or plain.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

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
    /// transport or the queue ends (`None`).
    async fn write_batches<W: AsyncWrite + Unpin>(
        &self,
        to: u64,
        out: &mut W,
        rx: &mut mpsc::Receiver<Outgoing>,
        closed: &CancellationToken,
    ) -> Option<()> {
        let cfg = &self.0.cfg;
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
            let mut failed = false;
            for m in &batch {
                let frame = match m {
                    Outgoing::Raft(m) => {
                        encode_release_frame(PROTOCOL_VERSION, &cfg.release, cfg.cluster_id, m)
                    }
                    Outgoing::Pair(data) => encode_pair_frame(&cfg.release, cfg.cluster_id, cfg.id, to, data),
                };
                if frame.len() - 4 > cfg.max_frame as usize {
                    self.0.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    warn_limited!(
                        self.0.log,
                        "too large",
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
            for m in &batch {
                if let Outgoing::Raft(m) = m {
                    if m.get_msg_type() == MessageType::MsgSnapshot {
                        if let Some(i) = self.inbox() {
                            i.report_snapshot(m.to, !failed);
                        }
                    }
                }
            }
            if failed {
                return Some(());
            }
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
