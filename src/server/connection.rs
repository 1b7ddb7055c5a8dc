//! One client connection: read frames, answer them, push pool changes.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info};

use super::request::{self, RequestContext, TableReader};
use super::{now_ms, Applier, Shared};
use crate::pki::ClientIdentity;
use crate::proto::{frame, Request, RequestFrame, Response, ServerError, ServerMessage, TableDump};
use crate::table::{Actor, Command, LicenseTable, Pool, Reply};

/// The table as the applier holds it, for `request::command`.
struct ReadThrough<'a, A>(&'a A);

impl<A: Applier> TableReader for ReadThrough<'_, A> {
    fn read_table(&self, f: &mut dyn FnMut(&LicenseTable)) {
        self.0.read(|table| f(table));
    }
}

/// Serves one connection until the peer closes it, sends a bad frame, the
/// node stops serving or shuts down.
pub(super) async fn serve<A: Applier>(shared: Arc<Shared<A>>, mut stream: TcpStream, peer: SocketAddr) {
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    let local = stream.local_addr().ok();
    let mut conn = Conn {
        shared: &shared,
        peer,
        local,
        last_pool: None,
        client_id: None,
    };
    let reason = conn.run(&mut stream).await;
    debug!(%peer, reason, "connection closed");
    shared.counters.connections.fetch_sub(1, Ordering::Relaxed);
}

struct Conn<'a, A> {
    shared: &'a Shared<A>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    // The last pool this client was sent: pushes only carry news.
    last_pool: Option<Pool>,
    // Set once the peer registers or heartbeats: only license clients get pushes.
    client_id: Option<String>,
}

impl<A: Applier> Conn<'_, A> {
    async fn run(&mut self, stream: &mut TcpStream) -> &'static str {
        let max = self.shared.config.max_frame;
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 8192];
        let mut pool_rx = self.shared.applier.pool_changes();
        let mut serving = self.shared.serving.clone();
        // A node that does not serve yet still answers (errors and views);
        // only a change from serving to not serving closes the connection.
        serving.borrow_and_update();
        let mut serving_follows = true;
        let mut push_at: Option<tokio::time::Instant> = None;
        let mut lost_vip = false;
        loop {
            // Answer every whole frame already buffered before reading more.
            loop {
                match frame::decode::<RequestFrame>(&buf, max) {
                    Ok(Some((request, used))) => {
                        buf.drain(..used);
                        self.shared.counters.in_flight.fetch_add(1, Ordering::Relaxed);
                        let (message, heartbeat_of) = self.answer(request).await;
                        let written = write(stream, &message).await;
                        self.shared.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
                        if written.is_err() {
                            return "write failed";
                        }
                        if let Some(id) = heartbeat_of {
                            self.shared.counters.heartbeat(&id, |c| c.responses += 1);
                        }
                    }
                    Ok(None) if lost_vip => return "stopped serving",
                    Ok(None) => break,
                    Err(e) => {
                        self.shared.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                        if let Some(suppressed) = self.shared.log.allow("bad frame") {
                            info!(suppressed, peer = %self.peer, error = %e, "bad frame; closing the connection");
                        }
                        let message = ServerMessage::Reply {
                            seq: 0,
                            response: Err(ServerError::from(e)),
                        };
                        // Best effort: the connection closes either way.
                        let _ = write(stream, &message).await;
                        return "bad frame";
                    }
                }
            }
            tokio::select! {
                read = stream.read(&mut chunk) => match read {
                    Ok(0) => return "closed by peer",
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(_) => return "read failed",
                },
                changed = pool_rx.changed(), if self.client_id.is_some() && push_at.is_none() => {
                    if changed.is_err() {
                        return "table gone";
                    }
                    // Coalesce a burst of changes into one push per connection.
                    push_at = Some(tokio::time::Instant::now() + self.shared.config.push_delay);
                }
                () = sleep_until(push_at) => {
                    push_at = None;
                    let pool = pool_rx.borrow_and_update().clone();
                    if self.last_pool.as_ref() != Some(&pool) {
                        self.last_pool = Some(pool.clone());
                        if write(stream, &ServerMessage::Push { pool }).await.is_err() {
                            return "write failed";
                        }
                    }
                }
                changed = serving.changed(), if serving_follows => {
                    if changed.is_err() {
                        // Nobody will change it any more: it stays as it is.
                        serving_follows = false;
                    } else if !*serving.borrow_and_update() {
                        // Lost the VIP: clients must reconnect to the new
                        // holder. Requests already received are answered
                        // first (refused, naming the VIP) rather than lost
                        // to a reset of the connection.
                        lost_vip = true;
                        while let Ok(n) = stream.try_read(&mut chunk) {
                            if n == 0 {
                                break;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        }
                    }
                }
                () = self.shared.shutdown.cancelled() => return "shutdown",
            }
        }
    }

    /// Whether license requests may be answered on this connection.
    fn gate(&self) -> Result<(), ServerError> {
        let vip = self.shared.config.vip;
        let not_server = || ServerError::NotLicenseServer {
            vip: vip.map(|v| v.to_string()),
        };
        if !*self.shared.serving.borrow() {
            return Err(not_server());
        }
        match (vip, self.local) {
            (Some(vip), Some(local)) if local.ip() != vip => Err(not_server()),
            (Some(_), None) => Err(not_server()),
            _ => Ok(()),
        }
    }

    /// Answers one request; for a heartbeat of a known client, also returns
    /// its id so that the answer is counted once it is sent.
    async fn answer(&mut self, frame: RequestFrame) -> (ServerMessage, Option<String>) {
        let RequestFrame { seq, request } = frame;
        // Only clients in the table get counters: a stream of made-up ids must not grow the map.
        let heartbeat_of = match &request {
            Request::Heartbeat { id, .. } if self.shared.applier.read(|t| t.client(id).is_some()) => {
                Some(id.clone())
            }
            _ => None,
        };
        if let Some(id) = &heartbeat_of {
            self.shared.counters.heartbeat(id, |c| c.requests += 1);
        }
        let response = self.respond(request).await;
        if let Ok(Response::Client { client, pool }) = &response {
            self.client_id = Some(client.id.clone());
            self.last_pool = Some(pool.clone());
        }
        (ServerMessage::Reply { seq, response }, heartbeat_of)
    }

    async fn respond(&mut self, request: Request) -> Result<Response, ServerError> {
        let now_ms = now_ms();
        if let Request::Show = request {
            return Ok(Response::Table(Box::new(self.dump(now_ms))));
        }
        // Only the VIP holder, only on the VIP, takes changes: checked
        // first, so a request to the wrong node spends nothing of its
        // source's allowance and gets the one answer that helps it.
        self.gate()?;
        let who = self.stand_in_identity(&request);
        let mapped = {
            // Not held across an await: the context borrows the table's reader.
            let context = RequestContext {
                now_ms,
                peer: self.peer,
                trusted: &self.shared.config.trusted,
                limits: &self.shared.config.limits,
                registrations: &self.shared.registrations,
                table: &ReadThrough(&*self.shared.applier),
            };
            request::command(request, &who, &context)
        };
        let command = match mapped {
            Ok(command) => command,
            Err(ServerError::Denied(e)) => {
                self.shared.counters.refuse(e.cause());
                if let Some(suppressed) = self.shared.log.allow(e.cause()) {
                    // Debug, quoted: a claimed id may hold escape sequences.
                    info!(suppressed, peer = %self.peer, who = ?who, error = %e, "request refused");
                }
                return Err(e.into());
            }
            Err(e) => return Err(e),
        };
        // An operator's change is logged with who made it, once committed.
        let audit = matches!(
            &command,
            Command::RemoveClient {
                by: Actor::Operator(_),
                ..
            } | Command::InstallServerKey {
                by: Actor::Operator(_),
                ..
            } | Command::RemoveServerKey {
                by: Actor::Operator(_),
                ..
            }
        )
        .then(|| command.describe());
        match self.shared.applier.propose(command).await?? {
            Reply::Client { client, pool } => Ok(Response::Client { client, pool }),
            Reply::ClientRemoved { pool } | Reply::ServerKey { pool } => {
                if let Some(change) = audit {
                    info!(peer = %self.peer, change, "operator change committed");
                }
                Ok(Response::Changed { pool })
            }
            other => Err(ServerError::NotCommitted(format!("unexpected reply {other:?}"))),
        }
    }

    /// Who the connection is, for `request::command`.
    ///
    /// TEMPORARY (the lead, Trust II: TLS on the client port): until the
    /// client port is TLS and a certificate names who is connected, this
    /// stands in for `ClientIdentity` with what the request itself
    /// claims: a switch request is the switch of the id it names (its
    /// serial as it registers, or as the table holds it), an operator
    /// request an unauthenticated operator named after the peer address.
    /// It checks nothing: replace it with the certificate's identity.
    fn stand_in_identity(&self, request: &Request) -> ClientIdentity {
        let switch = |id: &str, serial: Option<&str>| ClientIdentity::Switch {
            id: id.to_owned(),
            serial: serial.map(str::to_owned).unwrap_or_else(|| {
                self.shared
                    .applier
                    .read(|t| t.client(id).map(|c| c.serial.clone()))
                    .unwrap_or_default()
            }),
        };
        match request {
            Request::Register { id, serial, .. } => switch(id, Some(serial)),
            Request::Heartbeat { id, .. }
            | Request::Update { id, .. }
            | Request::Acquire { id, .. }
            | Request::Release { id, .. } => switch(id, None),
            Request::Show
            | Request::RemoveClient { .. }
            | Request::InstallKey { .. }
            | Request::RemoveKey { .. } => ClientIdentity::Operator {
                name: format!("unauthenticated@{}", self.peer.ip()),
            },
        }
    }

    fn dump(&self, now_ms: u64) -> TableDump {
        let (state, pool, config) = self
            .shared
            .applier
            .read(|t| (t.state().clone(), t.pool().clone(), t.config().clone()));
        let heartbeats = self
            .shared
            .counters
            .heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        TableDump {
            now_ms,
            types: config.types,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            state,
            pool,
            heartbeats,
            status: self.shared.status(),
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn write(stream: &mut TcpStream, message: &ServerMessage) -> std::io::Result<()> {
    let bytes = match frame::encode(message, frame::DEFAULT_MAX_RESPONSE) {
        Ok(bytes) => bytes,
        Err(e) => {
            let fallback = ServerMessage::Reply {
                seq: match message {
                    ServerMessage::Reply { seq, .. } => *seq,
                    ServerMessage::Push { .. } => 0,
                },
                response: Err(ServerError::from(e)),
            };
            frame::encode(&fallback, frame::DEFAULT_MAX_RESPONSE)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
        }
    };
    stream.write_all(&bytes).await
}
