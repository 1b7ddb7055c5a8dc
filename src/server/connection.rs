//! One connection: the handshake, then frames in and answers out, and
//! pool changes pushed to registered switches.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info};

use super::request::{self, RequestContext, TableReader};
use super::{Applier, Port, Shared};
use crate::pki::{ClientIdentity, IdentityError};
use crate::proto::connection::{Framed, WriteError};
use crate::proto::{
    frame, Request, RequestFrame, Response, ServerError, ServerMessage, TableDump, PAGE_CLIENTS,
};
use crate::table::{Actor, Command, LicenseTable, Pool, Reply};

/// The table as the applier holds it, for `request::command`.
struct ReadThrough<'a, A>(&'a A);

impl<A: Applier> TableReader for ReadThrough<'_, A> {
    fn read_table(&self, f: &mut dyn FnMut(&LicenseTable)) {
        self.0.read(|table| f(table));
    }
}

/// A connected stream, TLS or plain.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Runs the handshake of an accepted connection (TLS: the certificate must
/// be a switch's on the client port, an operator's on the operator port),
/// then serves it.
///
/// Not an `async fn`, for the reason [`serve`] gives (the lint would have
/// one).
#[allow(clippy::manual_async_fn)]
pub(super) fn accept<A: Applier>(
    shared: Arc<Shared<A>>,
    tcp: TcpStream,
    peer: SocketAddr,
    port: Port,
) -> impl std::future::Future<Output = ()> {
    async move {
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().ok();
        let Some(tls) = shared.config.tls.clone() else {
            return serve(shared, Box::new(tcp), peer, local, None, port).await;
        };
        // Boxed: the task of a connection that waits for its next frame
        // holds only what waiting needs, not the larger state of the
        // handshake (10,000 switches stay connected). Nothing of it is
        // left in this future while serving: `serve`, not boxed, is what
        // this task is for, and in the task itself it needs no allocation
        // of its own (a 640-byte task cell beside a boxed `serve` before).
        let Some((stream, who)) = Box::pin(admit(&shared, tls, tcp, peer, port)).await else {
            return;
        };
        serve(shared, Box::new(stream), peer, local, who, port).await;
    }
}

/// Completes the handshake and checks that the certificate names who may
/// use `port`: the stream and who it names, or `None` once it is refused
/// (said to the peer when it completed the handshake).
async fn admit<A: Applier>(
    shared: &Shared<A>,
    tls: crate::tls::ServerTls,
    tcp: TcpStream,
    peer: SocketAddr,
    port: Port,
) -> Option<(crate::tls::ServerStream, Option<ClientIdentity>)> {
    let refused = |why: &str| {
        shared
            .counters
            .refused_connections
            .fetch_add(1, Ordering::Relaxed);
        cluster::warn_limited!(shared.log, "client handshake", %peer, ?port, "connection refused: {why}");
    };
    let (stream, who) = match tls.accept(tcp, shared.config.handshake_timeout).await {
        Ok(accepted) => accepted,
        Err(e) => {
            refused(&e.to_string());
            return None;
        }
    };
    let refusal = match &who {
        Ok(ClientIdentity::Switch { .. }) if port == Port::Client => None,
        Ok(ClientIdentity::Operator { .. }) if port == Port::Operator => None,
        Ok(who) => {
            refused(&format!("{who} on the {port:?} port"));
            Some(ServerError::Forbidden(
                match port {
                    Port::Client => {
                        "the client port takes switch certificates only: operators use the operator port"
                    }
                    Port::Operator => {
                        "the operator port takes operator certificates only (`vipool pki operator`)"
                    }
                }
                .into(),
            ))
        }
        Err(IdentityError::Member { member }) => {
            // A server's or the witness's own certificate used as a
            // client's: a mistake in a script or a switch's setup, or the
            // key of a member in the wrong hands. Counted apart.
            shared.counters.refuse("client_member_certificate");
            shared
                .counters
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            cluster::warn_limited!(shared.log, "member certificate", %peer, ?port, member = %member,
                "connection refused: a member certificate of the pair is not a switch certificate");
            Some(ServerError::MemberCertificate {
                member: member.clone(),
            })
        }
        Err(e @ IdentityError::Unusable(_)) => {
            refused(&format!("client certificate: {e}"));
            Some(ServerError::Forbidden(format!("client certificate: {e}")))
        }
    };
    let Some(refusal) = refusal else {
        return Some((stream, who.ok()));
    };
    // Say why before closing: a certificate of the wrong kind is an
    // operator's mistake more often than an attack. (No frame read yet:
    // in the oldest version served, which every client reads.)
    {
        let mut framed = Framed::answering(stream, shared.config.max_frame);
        let message = ServerMessage::Reply {
            seq: 0,
            response: Err(refusal),
        };
        if write_within(&mut framed, &message, shared.config.frame_timeout)
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(shared.config.frame_timeout, framed.shutdown()).await;
        }
    }
    None
}

/// Serves one connection until the peer closes it, sends a bad frame, is
/// too slow, the node stops serving or shuts down.
///
/// Not an `async fn`: one would keep its arguments in its future beside
/// the connection state they are moved into (about 150 bytes more per
/// connection). The future owns the connection state and nothing else.
fn serve<A: Applier>(
    shared: Arc<Shared<A>>,
    stream: Box<dyn Stream>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    who: Option<ClientIdentity>,
    port: Port,
) -> impl std::future::Future<Output = ()> {
    let mut framed = Framed::answering(stream, shared.config.max_frame);
    let mut conn = Conn {
        shared,
        peer,
        local,
        who,
        port,
        last_pool: None,
        registered: false,
    };
    // `conn` and `framed` are used in place, never moved: moved, they
    // would be stored twice.
    async move {
        conn.count(true);
        let reason = conn.run(&mut framed).await;
        if matches!(reason, "idle" | "frame too slow" | "answer not taken") {
            conn.shared.counters.timed_out.fetch_add(1, Ordering::Relaxed);
        }
        debug!(peer = %conn.peer, reason, "connection closed");
        conn.count(false);
    }
}

struct Conn<A> {
    shared: Arc<Shared<A>>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    /// Who the connection's certificate names (`None`: plain TCP).
    who: Option<ClientIdentity>,
    port: Port,
    // The last pool this client was sent: pushes only carry news.
    last_pool: Option<PoolPrint>,
    // Set once the peer registers or heartbeats: only license clients get pushes.
    registered: bool,
}

/// A pool as a client was last told it, to push only news: its exact
/// encoding (tens of bytes), not a copy of the map (a B-tree node of
/// about 500 bytes, kept by every connection: 10,000 switches).
#[derive(Debug, PartialEq, Eq)]
struct PoolPrint(Box<[u8]>);

impl PoolPrint {
    /// `None` if the pool does not encode (not seen: then every push goes).
    fn of(pool: &Pool) -> Option<PoolPrint> {
        bincode::serde::encode_to_vec(pool, bincode::config::standard())
            .ok()
            .map(|bytes| PoolPrint(bytes.into_boxed_slice()))
    }
}

impl<A: Applier> Conn<A> {
    /// Counts the connection in (`open`) or out of those open.
    fn count(&self, open: bool) {
        let counters = &self.shared.counters;
        let change = |n: &std::sync::atomic::AtomicU64| {
            if open {
                n.fetch_add(1, Ordering::Relaxed);
            } else {
                n.fetch_sub(1, Ordering::Relaxed);
            }
        };
        change(&counters.connections);
        if self.port == Port::Client {
            change(&counters.client_connections);
        }
    }

    async fn run(&mut self, framed: &mut Framed<Box<dyn Stream>>) -> &'static str {
        // Its own handle: the steps below borrow all of `self`.
        let shared = Arc::clone(&self.shared);
        let config = &shared.config;
        let mut pool_rx = self.shared.applier.pool_changes();
        let mut serving = self.shared.serving.clone();
        // A node that does not serve yet still answers (errors and views);
        // only a change from serving to not serving closes the connection.
        serving.borrow_and_update();
        let mut serving_follows = true;
        let mut push_at: Option<Instant> = None;
        let mut lost_vip = false;
        // The last whole frame, and when the one being read began.
        let mut last_frame = Instant::now();
        let mut frame_began: Option<Instant> = None;
        loop {
            // Answer every whole frame already buffered before reading more.
            loop {
                match framed.try_buffered::<RequestFrame>() {
                    Ok(Some(request)) => {
                        last_frame = Instant::now();
                        frame_began = framed.in_frame().then_some(last_frame);
                        // Boxed, as every other step below that writes: this
                        // future's size is that of its largest await, and
                        // a connection spends nearly all its life in the wait
                        // for its next frame (10,000 switches stay
                        // connected), which then is the largest.
                        if let Err(why) = Box::pin(self.exchange(framed, request)).await {
                            return why;
                        }
                    }
                    Ok(None) if lost_vip => return "stopped serving",
                    Ok(None) => break,
                    Err(e) => return Box::pin(self.refuse_frame(framed, e)).await,
                }
            }
            if framed.in_frame() {
                frame_began.get_or_insert_with(Instant::now);
            } else {
                frame_began = None;
            }
            // A frame that has begun must end soon; a connection must send
            // a whole frame now and then. Either way a host that opens
            // connections and says little holds them for a bounded time.
            let (deadline, why) = match frame_began {
                Some(began) => (began + config.frame_timeout, "frame too slow"),
                None => (last_frame + config.idle_timeout, "idle"),
            };
            // One timer for the deadline and a push, whichever comes first.
            let wake = push_at.map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                read = framed.fill() => match read {
                    Ok(0) if framed.in_frame() => return "closed in a frame",
                    Ok(0) => return "closed by peer",
                    Ok(_) => {}
                    Err(_) => return "read failed",
                },
                () = tokio::time::sleep_until(wake) => {
                    if push_at != Some(wake) {
                        return why;
                    }
                    push_at = None;
                    if let Err(e) = Box::pin(self.push(framed, &mut pool_rx)).await {
                        return write_failed(&e);
                    }
                }
                changed = pool_rx.changed(), if self.registered && push_at.is_none() => {
                    if changed.is_err() {
                        return "table gone";
                    }
                    // Coalesce a burst of changes into one push per connection.
                    push_at = Some(Instant::now() + config.push_delay);
                }
                changed = serving.changed(), if serving_follows && self.port == Port::Client => {
                    if changed.is_err() {
                        // Nobody will change it any more: it stays as it is.
                        serving_follows = false;
                    } else if !*serving.borrow_and_update() {
                        // Lost the VIP: clients must reconnect to the new
                        // holder. Requests already received are answered
                        // first (refused, naming the VIP) rather than lost
                        // to a reset of the connection.
                        lost_vip = true;
                        Box::pin(framed.read_pending(Duration::from_millis(1))).await;
                    }
                }
                // The node stops (see `Server::stop_accepting`): as when it
                // loses the VIP, and also for a connection whose handshake
                // ended after serving did (no change of `serving` to see).
                () = self.shared.stop_accepting.cancelled(), if self.port == Port::Client && !lost_vip => {
                    lost_vip = true;
                    Box::pin(framed.read_pending(Duration::from_millis(1))).await;
                }
                () = self.shared.shutdown.cancelled() => return "shutdown",
            }
        }
    }

    /// Answers one request and writes the answer (first that it is held,
    /// if it takes a while); `Err` says why the connection closes.
    async fn exchange(
        &mut self,
        framed: &mut Framed<Box<dyn Stream>>,
        request: RequestFrame,
    ) -> Result<(), &'static str> {
        // Its own handle: `answer` below borrows all of `self`.
        let shared = Arc::clone(&self.shared);
        let config = &shared.config;
        shared.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        // A request not answered at once is said to be held (version 3):
        // the client then knows that this server, not only its host's TCP,
        // has it.
        let (seq, held) = (request.seq, framed.version() >= 3);
        let (message, heartbeat_of) = {
            let answer = self.answer(request);
            tokio::pin!(answer);
            tokio::select! {
                biased;
                done = &mut answer => done,
                () = tokio::time::sleep(crate::proto::HELD_AFTER), if held => {
                    let held = ServerMessage::Held { seq };
                    if let Err(e) = write_within(framed, &held, config.frame_timeout).await {
                        shared.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
                        return Err(write_failed(&e));
                    }
                    answer.await
                }
            }
        };
        let written = match write_within(framed, &message, config.frame_timeout).await {
            Err(WriteError::Frame(e)) => {
                // Too large to send: say so instead.
                let seq = match message {
                    ServerMessage::Reply { seq, .. } | ServerMessage::Held { seq } => seq,
                    ServerMessage::Push { .. } => 0,
                };
                let fallback = ServerMessage::Reply {
                    seq,
                    response: Err(ServerError::from(e)),
                };
                write_within(framed, &fallback, config.frame_timeout).await
            }
            other => other,
        };
        shared.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        written.map_err(|e| write_failed(&e))?;
        if let Some(id) = heartbeat_of {
            shared.counters.heartbeat(&id, |c| c.responses += 1);
        }
        Ok(())
    }

    /// Says why a frame that cannot be read closes the connection, and
    /// returns that reason.
    async fn refuse_frame(
        &self,
        framed: &mut Framed<Box<dyn Stream>>,
        e: crate::proto::frame::FrameError,
    ) -> &'static str {
        self.shared.counters.bad_frame(&e);
        if let Some(suppressed) = self.shared.log.allow("bad frame") {
            info!(suppressed, peer = %self.peer, error = %e, "bad frame; closing the connection");
        }
        let message = ServerMessage::Reply {
            seq: 0,
            response: Err(ServerError::from(e)),
        };
        // Best effort: the connection closes either way.
        let _ = write_within(framed, &message, self.shared.config.frame_timeout).await;
        "bad frame"
    }

    /// Pushes the pool if it changed since this client was last told.
    async fn push(
        &mut self,
        framed: &mut Framed<Box<dyn Stream>>,
        pool_rx: &mut tokio::sync::watch::Receiver<Pool>,
    ) -> Result<(), WriteError> {
        let pool = pool_rx.borrow_and_update().clone();
        let print = PoolPrint::of(&pool);
        if print.is_some() && self.last_pool == print {
            return Ok(());
        }
        self.last_pool = print;
        let push = ServerMessage::Push { pool };
        write_within(framed, &push, self.shared.config.frame_timeout).await
    }

    /// Whether license requests may be answered on this connection.
    async fn gate(&self) -> Result<(), ServerError> {
        let vip = self.shared.config.vip;
        let not_server = || ServerError::NotLicenseServer {
            vip: vip.map(|v| v.to_string()),
        };
        if !*self.shared.serving.borrow() && vip.is_some() && self.local.map(|l| l.ip()) == vip {
            self.await_serving().await;
        }
        if !*self.shared.serving.borrow() {
            return Err(not_server());
        }
        match (vip, self.local) {
            (Some(vip), Some(local)) if local.ip() != vip => Err(not_server()),
            (Some(_), None) => Err(not_server()),
            _ => Ok(()),
        }
    }

    /// A request to the VIP of a node that holds it but does not serve yet
    /// (leadership is on its way, see [`super::Server::with_serving_soon`])
    /// waits for serving, up to [`super::HOLD_FOR_SERVING`], instead of
    /// being refused. A refusal only makes the client reconnect to the same
    /// VIP, that is to this node, in a loop: with TLS every new connection
    /// is a full handshake (the new holder cannot resume the old one's
    /// tickets), and on the node's single thread a herd of them delays the
    /// very leadership transfer that would let it serve.
    async fn await_serving(&self) {
        let mut soon = self.shared.soon.clone();
        if !*soon.borrow_and_update() {
            return;
        }
        let mut serving = self.shared.serving.clone();
        tokio::select! {
            _ = serving.wait_for(|s| *s) => {}
            _ = soon.wait_for(|s| !*s) => {}
            () = tokio::time::sleep(super::HOLD_FOR_SERVING) => {}
            // A node that stops refuses at once: its drain waits for us.
            () = self.shared.stop_accepting.cancelled() => {}
            () = self.shared.shutdown.cancelled() => {}
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
        if let Some(client) = self.paced_as(&request) {
            self.pace(client).await;
        }
        let response = self.respond(request).await;
        if let Err(ServerError::Refused(e)) = &response {
            // What the table refused (a claim above what the pool can give,
            // a key counted for another client, a bound): counted by cause
            // and said once a minute per cause, so that a flood of bad
            // claims shows in `show status` and the log, not in neither.
            let cause = e.cause();
            self.shared.counters.refuse(cause);
            if let Some(suppressed) = self.shared.log.allow(cause) {
                // Escaped: the error quotes what the client sent (a
                // license type, a key id), which may hold escape sequences.
                info!(suppressed, peer = %self.peer, error = %e.to_string().escape_debug(), "the table refused a request");
            }
        }
        if let Ok(Response::Client { pool, .. }) = &response {
            self.registered = true;
            self.last_pool = PoolPrint::of(pool);
        }
        (ServerMessage::Reply { seq, response }, heartbeat_of)
    }

    /// Whose rate a license request spends: the client id the certificate
    /// names (over plain TCP, the id the request claims).
    fn paced_as(&self, request: &Request) -> Option<String> {
        let claimed = match request {
            Request::Register { id, .. }
            | Request::Heartbeat { id, .. }
            | Request::Update { id, .. }
            | Request::Acquire { id, .. }
            | Request::Release { id, .. } => id,
            _ => return None,
        };
        match &self.who {
            Some(ClientIdentity::Switch { id, .. }) => Some(id.clone()),
            Some(ClientIdentity::Operator { .. }) => None,
            None => Some(claimed.clone()),
        }
    }

    /// Waits until `client` may send another request
    /// (`license.requests_per_s_per_client`): a client that sends faster
    /// is slowed down, not refused, and its connection is not read
    /// meanwhile (TCP pushes back).
    async fn pace(&self, client: String) {
        let mut counted = false;
        loop {
            let now_ms = u64::try_from(self.shared.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            let Err(wait_ms) = self.shared.requests.take(client.clone(), now_ms) else {
                return;
            };
            if !counted {
                counted = true;
                self.shared.counters.paced.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.shared.log.allow("paced") {
                    info!(
                        suppressed,
                        peer = %self.peer,
                        client = %client.escape_debug(),
                        per_s = self.shared.config.limits.requests_per_s_per_client,
                        "a client sends faster than license.requests_per_s_per_client: its requests wait"
                    );
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(wait_ms.max(1))) => {}
                () = self.shared.shutdown.cancelled() => return,
            }
        }
    }

    async fn respond(&mut self, request: Request) -> Result<Response, ServerError> {
        let now_ms = self.shared.applier.stamp();
        let operator = matches!(
            request,
            Request::Show { .. }
                | Request::Status
                | Request::RemoveClient { .. }
                | Request::InstallKey { .. }
                | Request::RemoveKey { .. }
        );
        if operator != (self.port == Port::Operator) {
            self.shared.counters.forbidden.fetch_add(1, Ordering::Relaxed);
            return Err(ServerError::WrongPort(match self.port {
                Port::Client => "status, views and operator commands are answered on the operator port \
                                 (license.operator_listen), not on the client port"
                    .into(),
                Port::Operator => "license requests are answered on the VIP's client port, not on the \
                                   operator port"
                    .into(),
            }));
        }
        match request {
            Request::Status => return Ok(Response::Status(Box::new(self.shared.status()))),
            Request::Show { after } => return Ok(Response::Table(Box::new(self.dump(now_ms, after)))),
            _ => {}
        }
        // Changes are made by the serving node only. License requests also
        // only on the VIP: checked first, so a request to the wrong node
        // spends nothing of its source's allowance and gets the one answer
        // that helps it. An operator's change goes to the serving node's
        // operator port.
        if operator {
            if !*self.shared.serving.borrow() {
                return Err(ServerError::NotLicenseServer {
                    vip: self.shared.config.vip.map(|v| v.to_string()),
                });
            }
        } else {
            self.gate().await?;
        }
        let who = match &self.who {
            Some(who) => who.clone(),
            None => self.claimed_identity(&request),
        };
        let what = request_kind(&request);
        // An acquire refused here is usage too (see `usage`).
        let acquire = match &request {
            Request::Acquire {
                id,
                license_type,
                count,
            } if self.shared.applier.usage().is_some_and(|u| u.active()) => {
                Some((id.clone(), license_type.clone(), *count))
            }
            _ => None,
        };
        let mapped = {
            let trusted = self.shared.trusted();
            // Not held across an await: the context borrows the table's reader.
            let context = RequestContext {
                now_ms,
                peer: self.peer,
                trusted: &trusted,
                limits: &self.shared.config.limits,
                registrations: &self.shared.registrations,
                seen: &self.shared.seen,
                table: &ReadThrough(&*self.shared.applier),
            };
            request::command(request, &who, &context)
        };
        let command = match mapped {
            Ok(command) => command,
            Err(ServerError::Refused(e)) => {
                if let (Some(usage), Some((id, license_type, count))) = (self.shared.applier.usage(), acquire)
                {
                    let pool = self.shared.applier.read(|t| t.pool().clone());
                    usage.denied(now_ms, &id, &license_type, count, &e.to_string(), &pool);
                }
                return Err(e.into());
            }
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
            other => {
                let e = ServerError::UnexpectedReply {
                    command: format!("the {what} request"),
                    reply: reply_kind(&other).to_owned(),
                };
                // A fault of this server: said at error level (rate-limited).
                if let Some(suppressed) = self.shared.log.allow("unexpected reply") {
                    tracing::error!(suppressed, peer = %self.peer, "{}", e.to_string().escape_debug());
                }
                Err(e)
            }
        }
    }

    /// Over plain TCP (a standalone `vipool serve --insecure-plaintext`, for
    /// tests and development) no certificate says who is connected: what
    /// the request claims is believed. A switch request is the switch of the
    /// id it names (its serial as it registers, or as the table holds it),
    /// an operator request an operator named after the peer address.
    fn claimed_identity(&self, request: &Request) -> ClientIdentity {
        let switch = |id: &str, serial: Option<&str>| ClientIdentity::Switch {
            issued_s: None,
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
            Request::Show { .. }
            | Request::Status
            | Request::RemoveClient { .. }
            | Request::InstallKey { .. }
            | Request::RemoveKey { .. } => ClientIdentity::Operator {
                name: format!("unauthenticated@{}", self.peer.ip()),
            },
        }
    }

    /// One page of the table: the clients after `after`.
    fn dump(&self, now_ms: u64, after: Option<String>) -> TableDump {
        let (state, pool, config, next) = self.shared.applier.read(|t| {
            let all = &t.state().clients;
            let from = match &after {
                Some(id) => {
                    all.range::<String, _>((std::ops::Bound::Excluded(id), std::ops::Bound::Unbounded))
                }
                None => all.range::<String, _>(..),
            };
            let clients: std::collections::BTreeMap<_, _> = from
                .take(PAGE_CLIENTS + 1)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let next = (clients.len() > PAGE_CLIENTS).then(|| clients.keys().nth(PAGE_CLIENTS - 1).cloned());
            let clients = clients.into_iter().take(PAGE_CLIENTS).collect();
            let state = crate::table::TableState {
                clients,
                server_keys: t.state().server_keys.clone(),
                servers: t.state().servers.clone(),
                // The page shows clients, not which certificates replaced whose.
                cert_floors: Default::default(),
                issuers: t.state().issuers.clone(),
                // Secret: never in a view.
                ticket_keys: Vec::new(),
            };
            (state, t.pool().clone(), t.config().clone(), next.flatten())
        });
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
            next,
        }
    }
}

/// Writes `message` as one frame, unless the peer takes longer than
/// `within` to take it. A peer that sends requests and never reads the
/// answers fills its receive window and then our send buffer, and the
/// write waits: without a deadline it would wait forever, outside the
/// read deadlines, and such a peer would hold its connection (and its
/// place under the per-address cap) for good. With one, it holds it no
/// longer than a peer that begins a frame and never ends it.
///
/// The message goes as the client's protocol version reads it, or not at
/// all when that version has nothing like it.
async fn write_within<S: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<S>,
    message: &ServerMessage,
    within: Duration,
) -> Result<(), WriteError> {
    let Some(message) = message.for_version(framed.version()) else {
        return Ok(());
    };
    tokio::time::timeout(within, framed.write(&*message, frame::DEFAULT_MAX_RESPONSE))
        .await
        .unwrap_or_else(|_| {
            Err(WriteError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer does not take its answers",
            )))
        })
}

/// Why a connection whose write failed is closed.
fn write_failed(e: &WriteError) -> &'static str {
    match e {
        WriteError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => "answer not taken",
        _ => "write failed",
    }
}

/// What a request is, for a message.
fn request_kind(request: &Request) -> &'static str {
    match request {
        Request::Register { .. } => "register",
        Request::Heartbeat { .. } => "heartbeat",
        Request::Update { .. } => "update",
        Request::Acquire { .. } => "acquire",
        Request::Release { .. } => "release",
        Request::Status => "status",
        Request::Show { .. } => "show",
        Request::RemoveClient { .. } => "remove-client",
        Request::InstallKey { .. } => "install-key",
        Request::RemoveKey { .. } => "remove-key",
    }
}

/// What kind of reply the table gave, for a message.
fn reply_kind(reply: &Reply) -> &'static str {
    match reply {
        Reply::Client { .. } => "client",
        Reply::ClientRemoved { .. } => "client-removed",
        Reply::ServerKey { .. } => "server-key",
        Reply::Swept(_) => "swept",
        Reply::Settings { .. } => "settings",
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of_val;
    use std::sync::Arc;

    use tokio::sync::watch;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::server::{LocalApplier, Server, ServerConfig};
    use crate::table::{LicenseTable, TableConfig};

    /// Issue 10 (server RSS at 10,000 switches, each keeping a connection):
    /// a connection's task holds what waiting for the next frame needs and
    /// little else. The task's future (`accept`) holds `serve`'s in place,
    /// not boxed beside it (a 640-byte task cell beside a 1.4 KB box), and
    /// no large state of the handshake or the refusal (both boxed);
    /// `serve`'s holds the connection, its frames and the wait, not its
    /// arguments a second time; the wait holds no answer being written (its
    /// own box, for as long as it is written). Bounds relative to the parts,
    /// so that they hold in every profile (sizes: `--nocapture`).
    #[tokio::test]
    async fn a_waiting_connections_task_holds_the_wait_and_little_else() {
        let server = Server::new(
            Arc::new(LocalApplier::new(LicenseTable::new(TableConfig::default()))),
            ServerConfig::default(),
            watch::channel(true).1,
            CancellationToken::new(),
        );
        let shared = Arc::clone(&server.shared);
        let peer: SocketAddr = "192.0.2.1:1".parse().unwrap();

        let serving = serve(
            Arc::clone(&shared),
            Box::new(tokio::io::duplex(64).0),
            peer,
            None,
            None,
            Port::Client,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let accepting = accept(Arc::clone(&shared), tcp, peer, Port::Client);
        let mut framed = Framed::answering(Box::new(tokio::io::duplex(64).0) as Box<dyn Stream>, 1024);
        let mut conn = Conn {
            shared: Arc::clone(&shared),
            peer,
            local: None,
            who: None,
            port: Port::Client,
            last_pool: None,
            registered: false,
        };
        let (conn_size, framed_size) = (size_of_val(&conn), size_of_val(&framed));
        let waiting = conn.run(&mut framed);
        let run_size = size_of_val(&waiting);
        drop(waiting);
        let mut rx = shared.serving.clone();
        let wait_parts = size_of_val(&framed.fill())
            + size_of_val(&tokio::time::sleep(Duration::ZERO))
            + 2 * size_of_val(&rx.changed())
            + 2 * size_of_val(&shared.shutdown.cancelled());
        eprintln!(
            "accept {} B, serve {} B, run {run_size} B (its wait's futures {wait_parts} B), Conn {conn_size} B, \
             Framed {framed_size} B, a message {} B",
            size_of_val(&accepting),
            size_of_val(&serving),
            std::mem::size_of::<ServerMessage>(),
        );
        assert!(
            size_of_val(&accepting) <= size_of_val(&serving) + 128,
            "accept {} B holds more than serve {} B",
            size_of_val(&accepting),
            size_of_val(&serving)
        );
        assert!(
            size_of_val(&serving) <= conn_size + framed_size + run_size + 64,
            "serve {} B holds more than its connection, frames and wait",
            size_of_val(&serving)
        );
        assert!(
            run_size <= 2 * wait_parts,
            "run {run_size} B: more than twice the futures of its wait ({wait_parts} B)"
        );
    }
}
