//! The accepting side: who may connect, the handshake, and the frames.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::chunk::{ChunkError, Reassembly};
use super::frame::{decode_raft, decode_release_payload, peer_release, Frame, FrameError, PROTOCOL_VERSION};
use super::{ReleaseRefusal, TcpTransport};
use crate::tls::member_named_by;
use crate::warn_limited;

/// A handshake slot of one peer address, given back on drop.
struct AddressSlot {
    transport: TcpTransport,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut by = self
            .transport
            .0
            .handshakes_by_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by.remove(&self.ip);
            }
        }
    }
}

/// The authenticated peer's hold on its inbound slot, given back on drop
/// unless a newer connection of the same peer took it.
struct PeerSlot {
    transport: TcpTransport,
    peer: u64,
    serial: u64,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut inbound = self.transport.0.inbound.lock().unwrap_or_else(|p| p.into_inner());
        if inbound.get(&self.peer).is_some_and(|(s, _)| *s == self.serial) {
            inbound.remove(&self.peer);
        }
    }
}

impl TcpTransport {
    pub(super) async fn accept_loop(self, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                _ = self.0.cancel.cancelled() => return,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((stream, addr)) => self.admit(stream, addr),
                Err(e) => {
                    warn_limited!(self.0.log, "accept", member = self.0.cfg.id, "accept failed: {e}");
                    tokio::time::sleep(self.0.cfg.backoff_min).await;
                }
            }
        }
    }

    /// Steps 1 and 2 of the module docs, on the accept loop: nothing here
    /// waits for the client.
    fn admit(&self, stream: TcpStream, addr: SocketAddr) {
        let id = self.0.cfg.id;
        let stats = &self.0.stats;
        let known = self
            .0
            .peers
            .lock()
            .expect("peers lock")
            .values()
            .any(|p| p.ip() == addr.ip());
        if self.0.tls.is_some() && !known {
            stats.strangers.fetch_add(1, Ordering::Relaxed);
            warn_limited!(
                self.0.log,
                "stranger",
                member = id,
                peer = %addr,
                "connection to the raft port from an address that is no configured peer's: closed"
            );
            return;
        }
        let Ok(permit) = Arc::clone(&self.0.handshakes).try_acquire_owned() else {
            stats.refused_connections.fetch_add(1, Ordering::Relaxed);
            warn_limited!(
                self.0.log,
                "handshakes",
                member = id,
                peer = %addr,
                "refusing connection: {} handshakes already in progress",
                self.0.cfg.max_connections
            );
            return;
        };
        let slot = {
            let mut by = self
                .0
                .handshakes_by_address
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let n = by.entry(addr.ip()).or_insert(0);
            if *n >= self.0.cfg.handshakes_per_address {
                None
            } else {
                *n += 1;
                Some(AddressSlot {
                    transport: self.clone(),
                    ip: addr.ip(),
                })
            }
        };
        let Some(slot) = slot else {
            stats.refused_connections.fetch_add(1, Ordering::Relaxed);
            warn_limited!(
                self.0.log,
                "address handshakes",
                member = id,
                peer = %addr,
                "refusing connection: {} handshakes from this address already in progress",
                self.0.cfg.handshakes_per_address
            );
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let deadline = me.0.cfg.handshake_timeout;
            let serve = async {
                match &me.0.tls {
                    None => {
                        drop((slot, permit));
                        me.read_loop(stream, addr, None, CancellationToken::new()).await;
                    }
                    Some(tls) => {
                        let handshake = tokio::time::timeout(deadline, tls.acceptor.accept(stream));
                        let stream = tokio::select! {
                            _ = me.0.cancel.cancelled() => return,
                            r = handshake => r,
                        };
                        drop((slot, permit));
                        let stream = match stream {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => return me.handshake_failed(addr, &e),
                            Err(_) => {
                                let e = std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    format!("no handshake within {deadline:?}"),
                                );
                                return me.handshake_failed(addr, &e);
                            }
                        };
                        let Some(peer) = me.identify(&stream, addr) else {
                            return;
                        };
                        let (token, _slot) = me.take_peer_slot(peer);
                        me.read_loop(stream, addr, Some(peer), token).await;
                    }
                }
            };
            serve.await;
        });
    }

    /// Counts and logs a failed handshake. A TLS refusal (tokio-rustls
    /// reports rustls errors as `InvalidData`) is worth a warning with a
    /// hint; a connection that merely dropped or stalled is not news.
    pub(super) fn handshake_failed(&self, addr: SocketAddr, e: &std::io::Error) {
        self.0.stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
        let id = self.0.cfg.id;
        if e.kind() == std::io::ErrorKind::InvalidData {
            warn_limited!(
                self.0.log,
                "handshake",
                member = id,
                peer = %addr,
                "TLS handshake with a peer address refused: {e} (a certificate from another CA, an \
                 expired one, or one naming another member?)"
            );
        } else {
            warn_limited!(
                self.0.log,
                "handshake io",
                member = id,
                peer = %addr,
                "TLS handshake with a peer address did not complete: {e}"
            );
        }
    }

    /// Step 3: which configured peer the verified certificate names, and
    /// that the connection comes from that peer's address.
    fn identify(&self, stream: &tokio_rustls::server::TlsStream<TcpStream>, addr: SocketAddr) -> Option<u64> {
        let tls = self.0.tls.as_ref()?;
        let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first());
        let names = tls
            .names
            .iter()
            .filter(|(&i, _)| i != self.0.cfg.id)
            .map(|(&i, n)| (i, n.as_str()));
        let peer = cert.and_then(|c| member_named_by(c, names));
        let configured = peer.and_then(|p| self.0.peers.lock().expect("peers lock").get(&p).copied());
        match (peer, configured) {
            (Some(p), Some(at)) if at.ip() == addr.ip() => Some(p),
            (Some(p), _) => {
                self.0.stats.unknown_certificates.fetch_add(1, Ordering::Relaxed);
                warn_limited!(
                    self.0.log,
                    "certificate address",
                    member = self.0.cfg.id,
                    peer = %addr,
                    "certificate of member {p} presented from an address that is not member {p}'s: closed"
                );
                None
            }
            (None, _) => {
                self.0.stats.unknown_certificates.fetch_add(1, Ordering::Relaxed);
                warn_limited!(
                    self.0.log,
                    "certificate name",
                    member = self.0.cfg.id,
                    peer = %addr,
                    "certificate of the pair's CA that names no configured peer (a switch's or an \
                     operator's?): closed"
                );
                None
            }
        }
    }

    /// An authenticated peer holds one inbound connection: this one, which
    /// closes the older one (a peer reconnects when its link broke).
    fn take_peer_slot(&self, peer: u64) -> (CancellationToken, PeerSlot) {
        let token = self.0.cancel.child_token();
        let serial = self.0.next_serial.fetch_add(1, Ordering::Relaxed);
        let old = self
            .0
            .inbound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, (serial, token.clone()));
        if let Some((_, old)) = old {
            old.cancel();
        }
        let slot = PeerSlot {
            transport: self.clone(),
            peer,
            serial,
        };
        (token, slot)
    }

    /// Step 4: frames until the connection ends. `peer` is the
    /// authenticated member (None in plaintext, where frames are believed).
    /// Chunks are reassembled here, one message at a time.
    async fn read_loop<S: AsyncRead + Unpin>(
        &self,
        mut stream: S,
        addr: SocketAddr,
        peer: Option<u64>,
        closed: CancellationToken,
    ) {
        let id = self.0.cfg.id;
        let stats = &self.0.stats;
        // The first frame of our release on this connection clears a
        // refusal of the same address (the peer was upgraded).
        let mut cleared = false;
        let mut reassembly = Reassembly::new(self.0.cfg.max_message);
        loop {
            let mut len = [0u8; 4];
            let read = tokio::select! {
                _ = closed.cancelled() => return,
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
                warn_limited!(self.0.log, "oversize", member = id, peer = %addr, "rejecting connection: {e}");
                return;
            }
            let mut payload = vec![0u8; len as usize];
            let read = tokio::select! {
                _ = closed.cancelled() => return,
                _ = self.0.cancel.cancelled() => return,
                r = stream.read_exact(&mut payload) => r,
            };
            if read.is_err() {
                return;
            }
            let frame = match decode_release_payload(&payload, &self.0.cfg.release, self.0.cfg.cluster_id, id)
            {
                Ok(frame) => frame,
                Err(FrameError::Release { theirs, ours }) => {
                    stats.wrong_release.fetch_add(1, Ordering::Relaxed);
                    let e = FrameError::Release {
                        theirs: theirs.clone(),
                        ours: ours.clone(),
                    };
                    self.refuse_release(addr, theirs, ours, &e);
                    return;
                }
                Err(FrameError::Version(v)) if peer_release(&payload, v).is_some() => {
                    stats.wrong_version.fetch_add(1, Ordering::Relaxed);
                    let theirs = peer_release(&payload, v).unwrap_or_default();
                    let ours = format!("{} (frame protocol {PROTOCOL_VERSION})", self.0.cfg.release);
                    self.refuse_release(addr, theirs, ours, &FrameError::Version(v));
                    return;
                }
                Err(e) => {
                    let (counter, cause) = match e {
                        FrameError::Oversize { .. } => (&stats.oversize, "oversize"),
                        FrameError::Version(_) => (&stats.wrong_version, "version"),
                        FrameError::Release { .. } => (&stats.wrong_release, "release"),
                        FrameError::Cluster { .. } => (&stats.wrong_cluster, "cluster"),
                        FrameError::Misaddressed(_) => (&stats.misaddressed, "misaddressed"),
                        FrameError::Malformed(_) => (&stats.malformed, "malformed"),
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    warn_limited!(self.0.log, cause, member = id, peer = %addr, "rejecting connection: {e}");
                    return;
                }
            };
            if let Some(p) = peer {
                if frame.from() != p {
                    // The peer proved it is `p`; a frame in another
                    // member's name is a lie (or a bug): never delivered.
                    stats.impersonations.fetch_add(1, Ordering::Relaxed);
                    warn_limited!(
                        self.0.log,
                        "impersonation",
                        member = id,
                        peer = %addr,
                        "frame claiming member {} on member {p}'s connection: dropped",
                        frame.from()
                    );
                    continue;
                }
            }
            if !cleared {
                cleared = true;
                let mut last = stats.last_release.lock().unwrap_or_else(|p| p.into_inner());
                if last.as_ref().is_some_and(|r| r.peer.ip() == addr.ip()) {
                    tracing::info!(member = id, peer = %addr, "peer now runs our release: pairing");
                    *last = None;
                }
            }
            let msg = match frame {
                Frame::Chunk { from, header, data } => match reassembly.push(from, header, data) {
                    Ok(None) => continue,
                    Ok(Some(bytes)) => match decode_raft(bytes, from, id) {
                        Ok(msg) => {
                            stats.reassembled.fetch_add(1, Ordering::Relaxed);
                            msg
                        }
                        Err(e) => {
                            stats.malformed.fetch_add(1, Ordering::Relaxed);
                            warn_limited!(
                                self.0.log,
                                "malformed",
                                member = id,
                                peer = %addr,
                                "rejecting connection: chunked message {}: {e}",
                                header.message
                            );
                            return;
                        }
                    },
                    Err(e) => return self.refuse_chunks(addr, &e),
                },
                Frame::Raft(msg) => {
                    if let Err(e) = reassembly.whole_frame() {
                        return self.refuse_chunks(addr, &e);
                    }
                    msg
                }
                Frame::Pair { from, data } => {
                    if let Err(e) = reassembly.whole_frame() {
                        return self.refuse_chunks(addr, &e);
                    }
                    stats.pair_delivered.fetch_add(1, Ordering::Relaxed);
                    if let Some(handler) = self.0.pair_handler.get() {
                        handler(from, data);
                    }
                    continue;
                }
            };
            stats.delivered.fetch_add(1, Ordering::Relaxed);
            if let Some(inbox) = self.0.inbox.get() {
                inbox.deliver(msg);
            }
        }
    }

    /// Counts and logs a peer whose chunks broke the rules; the caller
    /// closes its connection (and drops what it had sent of the message).
    fn refuse_chunks(&self, addr: SocketAddr, e: &ChunkError) {
        self.0.stats.chunk_refusals.fetch_add(1, Ordering::Relaxed);
        warn_limited!(
            self.0.log,
            e.cause(),
            member = self.0.cfg.id,
            peer = %addr,
            "rejecting connection: {e}"
        );
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
}
