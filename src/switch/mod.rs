//! A simulated switch: a long-running license client that behaves as SPEC
//! section 3 and 4 say.
//!
//! It registers with its whole state, takes from the pool what its
//! licensed things (APs, ...) need beyond its built-in licenses, heartbeats
//! every interval, sends an update at once when something changes on it,
//! treats the server as down after three heartbeat intervals without an
//! answer, and keeps its last limits for the retention period. Every grant
//! and refusal is an [`Event`], so a test (or `vipool client --json`) can
//! count what was acknowledged.
//!
//! It reconnects to the VIP as a failover needs (`switch/reconnect.rs`): each
//! connect has a short timeout ([`SwitchConfig::connect_timeout`]), one
//! that times out within the failover window is retried at once (its SYN
//! went to the dead holder; the new one reaches whoever holds the VIP
//! now), and only failures that outlast the window back off, doubling.
//! After a few failed tries past the window it says "server unreachable"
//! (a warning, repeated at most once a minute). A request unanswered
//! within the answer deadline ([`SwitchConfig::answer_timeout`]: a holder
//! that lost power after its kernel acknowledged the request) ends the
//! session as a reset would: the switch reconnects at once and registers
//! its whole state with the next holder. Before that, while it waits, a
//! silent server is probed ([`SwitchConfig::probe_after`]): a holder that
//! lost power is left within the probe interval and the ack timeout. A
//! refusal that no retry can change ([`crate::client::Verdict::Permanent`]:
//! an unknown license type, its certificate refused by the server, an id
//! its certificate does not name, ...) stops the switch: it logs what happened and what to do at
//! error level, emits [`Event::Stopped`], and its task ends. Only the
//! pair's word stops it: a handshake that fails before the other end
//! proved to be the pair (a server certificate not of the pinned CA) is
//! said at error level once a minute ([`Event::Unproven`]) and tried
//! again, backing off, since a host that holds the VIP could send it.
//!
//! It presents its license keys as signed key lines; a key the server
//! does not count (not signed by an issuer it trusts, bound to another
//! serial, expired, counted for another client) is dropped from what it
//! presents, and a report whose `used` claims more than the pool can give
//! is sent again claiming what the switch holds in the table; it then
//! asks for the rest like any other need.

mod reconnect;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{ClientError, ConnectOptions, Connection, Verdict};
use crate::clock::now_ms;
use crate::license::SignedKey;
use crate::proto::{RequestError, ServerError, SwitchReport};
use crate::table::{pool_demand, Client, CommandError, LicenseType, Pool};

/// How a simulated switch is set up.
#[derive(Debug, Clone)]
pub struct SwitchConfig {
    /// The license server: VIP and port.
    pub server: String,
    /// Client id.
    pub id: String,
    /// Serial number.
    pub serial: String,
    /// Software version it reports.
    pub version: String,
    /// License keys installed on the switch: they count if they are bound
    /// to its serial and signed by an issuer the server trusts.
    pub keys: Vec<SignedKey>,
    /// Factory licenses per type.
    pub builtin: BTreeMap<LicenseType, u32>,
    /// Licensed things up per type (APs for `AP`, ...).
    pub in_use: BTreeMap<LicenseType, u32>,
    /// Heartbeat interval (default 30 s).
    pub heartbeat_interval: Duration,
    /// Intervals without an answer after which the server is down (default 3).
    pub missed_limit: u32,
    /// How long the last limits are kept while the server is down (default 30 days).
    pub retention: Duration,
    /// Within the failover window, attempts start at least this far
    /// apart; past it, the first reconnect delay (doubling up to
    /// `backoff_max`). After an established session ends, the first retry
    /// comes at a spread point within it. At least 1 ms.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// How long a TCP connect may take before it is given up and tried
    /// again (default [`crate::client::DEFAULT_CONNECT_TIMEOUT`], 300 ms:
    /// why, there). Past the failover window it doubles with the backoff,
    /// up to `backoff_max`.
    pub connect_timeout: Duration,
    /// While a TCP connect is pending, start another this long after it
    /// (default [`crate::client::DEFAULT_CONNECT_STAGGER`], 50 ms: why,
    /// there); `None`: one at a time.
    pub connect_stagger: Option<Duration>,
    /// How long bytes sent may go unacknowledged by the server's TCP
    /// before the connection is taken for dead (`TCP_USER_TIMEOUT`, less
    /// TCP's minimum retransmission timeout, see
    /// [`crate::client::ConnectOptions::ack_timeout`];
    /// default [`crate::client::DEFAULT_ACK_TIMEOUT`], 300 ms: why, there;
    /// `None`: the kernel's limit, minutes). A holder that lost power
    /// acknowledges nothing, a live one at once: the switch reconnects
    /// within this, as after any failover, where the answer deadline would
    /// take 1.5 s.
    pub ack_timeout: Option<Duration>,
    /// How long the TLS handshake may take once TCP is connected (default
    /// [`crate::client::DEFAULT_HANDSHAKE_TIMEOUT`], 5 s).
    pub handshake_timeout: Duration,
    /// How long a request may wait for its answer before the connection is
    /// taken for dead (default [`crate::client::DEFAULT_ANSWER_TIMEOUT`],
    /// 1.5 s: why, there; `None`: the heartbeat interval). Past it the
    /// switch reconnects at once, as after any session that worked, and
    /// registers with its whole state on the new connection: that repeats
    /// a register, heartbeat or update (each carries the whole state), and
    /// repairs an acquire or release whose outcome is unknown
    /// ([`Event::Uncertain`]). An idle connection has no deadline.
    pub answer_timeout: Option<Duration>,
    /// While the switch waits for the server (its first handshake bytes,
    /// an answer) and the server has sent nothing for this long, probe the
    /// connection (default [`crate::client::DEFAULT_PROBE_AFTER`], 100 ms:
    /// why, there; `None`: never). A probe the server's TCP does not
    /// acknowledge within `ack_timeout` ends the connection: a holder that
    /// lost power just after acknowledging a registration or a handshake
    /// is left within this plus the ack timeout (400 ms), where the answer
    /// deadline would take 1.5 s and the handshake deadline 5 s; a live
    /// server, however busy, acknowledges at once and is waited for.
    pub probe_after: Option<Duration>,
    /// How long failures may last and still be a failover (default 1 s).
    /// Within it a connect that timed out is retried at once, one refused
    /// (a TCP reset, as while the VIP's holder hands it over) after 10 to
    /// 20 ms, and one that failed otherwise after `backoff_min`; the delay doubles only for
    /// failures that outlast it, and only then is the server called
    /// unreachable. Set it to the pair's Master_Down_Interval plus a raft
    /// election (with the fast configuration, 100 ms adverts and 10 ms
    /// raft ticks: about 0.5 s; with 1 s adverts: about 4 s).
    pub failover_window: Duration,
    /// The pair's CA and this switch's certificate (TLS, as a real switch
    /// connects); `None` speaks plain TCP to a standalone
    /// `vipool serve --insecure-plaintext`.
    pub tls: Option<crate::tls::ClientTls>,
}

impl SwitchConfig {
    /// A switch of id `id` talking to `server`, with the SPEC's timers and nothing installed.
    pub fn new(server: impl Into<String>, id: impl Into<String>) -> Self {
        let id = id.into();
        Self {
            server: server.into(),
            serial: format!("SIM-{id}"),
            id,
            version: env!("CARGO_PKG_VERSION").into(),
            keys: Vec::new(),
            builtin: BTreeMap::new(),
            in_use: BTreeMap::new(),
            heartbeat_interval: Duration::from_secs(30),
            missed_limit: 3,
            retention: Duration::from_secs(30 * 24 * 3600),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            connect_timeout: crate::client::DEFAULT_CONNECT_TIMEOUT,
            connect_stagger: Some(crate::client::DEFAULT_CONNECT_STAGGER),
            ack_timeout: Some(crate::client::DEFAULT_ACK_TIMEOUT),
            handshake_timeout: crate::client::DEFAULT_HANDSHAKE_TIMEOUT,
            answer_timeout: Some(crate::client::DEFAULT_ANSWER_TIMEOUT),
            probe_after: Some(crate::client::DEFAULT_PROBE_AFTER),
            failover_window: Duration::from_secs(1),
            tls: None,
        }
    }
}

/// Something a simulated switch did or saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Registered with the server.
    Registered {
        /// Switch id.
        id: String,
        /// Server address.
        server: String,
    },
    /// The server granted licenses (the change is committed).
    Granted {
        /// Switch id.
        id: String,
        /// Type.
        license_type: LicenseType,
        /// How many.
        count: u32,
    },
    /// The server refused a grant.
    Refused {
        /// Switch id.
        id: String,
        /// Type.
        license_type: LicenseType,
        /// How many were asked for.
        count: u32,
        /// Why.
        reason: String,
    },
    /// The server does not count one of the switch's keys: the switch no
    /// longer presents it.
    KeyRefused {
        /// Switch id.
        id: String,
        /// The key's id.
        key_id: String,
        /// Why.
        reason: String,
    },
    /// A report claimed more than the pool could give: the switch claims
    /// what it holds in the table, and asks for the rest.
    ClaimLowered {
        /// Switch id.
        id: String,
        /// Type.
        license_type: LicenseType,
        /// What it holds in the table.
        held: u32,
        /// Why.
        reason: String,
    },
    /// Licenses given back (committed).
    Released {
        /// Switch id.
        id: String,
        /// Type.
        license_type: LicenseType,
        /// How many.
        count: u32,
    },
    /// An acquire or release got no answer within the answer deadline:
    /// whether the server committed it is unknown. The switch counts it as
    /// not done, reconnects, and registers with its whole state (what it
    /// holds as far as it knows), which sets the server's record to that;
    /// then it asks again for what it still needs, or gives back again.
    Uncertain {
        /// Switch id.
        id: String,
        /// `acquire` or `release`.
        request: String,
        /// Type.
        license_type: LicenseType,
        /// How many.
        count: u32,
        /// Why.
        reason: String,
    },
    /// No answer for `missed_limit` heartbeat intervals: the server is down.
    ServerDown {
        /// Switch id.
        id: String,
    },
    /// An answer came again after the server was down.
    ServerUp {
        /// Switch id.
        id: String,
    },
    /// The retained limits expire soon.
    LimitsExpiring {
        /// Switch id.
        id: String,
        /// Time left, in seconds.
        remaining_s: u64,
    },
    /// The retained limits expired: the switch holds no pool licenses any more.
    LimitsExpired {
        /// Switch id.
        id: String,
    },
    /// The connection ended.
    Disconnected {
        /// Switch id.
        id: String,
        /// Why.
        reason: String,
    },
    /// Failed tries outlasted the failover window: the server is
    /// unreachable (said again at most once a minute while it stays so).
    Unreachable {
        /// Switch id.
        id: String,
        /// Server address.
        server: String,
        /// How long the tries have failed, in milliseconds.
        for_ms: u64,
        /// Failed tries so far.
        tries: u32,
        /// Why the last one failed.
        error: String,
    },
    /// The TLS handshake failed before the other end proved to be the
    /// pair (its certificate is not of the pinned CA, or it refused ours
    /// before showing its own): said at error level once a minute while
    /// it lasts; the switch keeps trying, backing off, since a host that
    /// holds the VIP could cause it (see [`crate::client::Verdict::Unproven`]).
    Unproven {
        /// Switch id.
        id: String,
        /// Server address.
        server: String,
        /// What the handshake said.
        reason: String,
        /// What an operator has to change if it is not an attack.
        remedy: String,
    },
    /// The server refused the switch for good: no retry can change it, the
    /// switch stops.
    Stopped {
        /// Switch id.
        id: String,
        /// Server address.
        server: String,
        /// What the server (or the TLS handshake) said.
        reason: String,
        /// What an operator has to change.
        remedy: String,
    },
}

/// What a simulated switch currently believes, for tests and status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SwitchView {
    /// Connected and registered.
    pub connected: bool,
    /// The server answered within the last `missed_limit` intervals.
    pub server_up: bool,
    /// Licenses per type held from the pool.
    pub granted: BTreeMap<LicenseType, u32>,
    /// The last pool the server sent (the switch's limits).
    pub limits: Option<Pool>,
    /// Grants received.
    pub grants: u64,
    /// Grants refused.
    pub refusals: u64,
    /// Registered at least once since it started.
    pub reached: bool,
    /// Why the last attempt to connect or register failed, if it did.
    pub last_error: Option<String>,
    /// Why the switch stopped, when a permanent refusal stopped it.
    pub stopped: Option<String>,
}

/// A change on the switch, sent to the server at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Now this many licensed things of the type are up.
    SetInUse(LicenseType, u32),
    /// A key was installed.
    AddKey(SignedKey),
    /// A key was deleted.
    RemoveKey(SignedKey),
}

/// A running simulated switch.
#[derive(Debug)]
pub struct SwitchHandle {
    /// What the switch believes, updated as it goes.
    pub view: watch::Receiver<SwitchView>,
    /// Changes to make on the switch.
    pub changes: mpsc::UnboundedSender<Change>,
    /// The switch's task; ends when the shutdown token is cancelled, or
    /// when a permanent refusal stops the switch ([`Event::Stopped`]).
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts a simulated switch. Events go to `events` when given.
pub fn spawn(
    config: SwitchConfig,
    events: Option<mpsc::UnboundedSender<Event>>,
    shutdown: CancellationToken,
) -> SwitchHandle {
    let (view_tx, view) = watch::channel(SwitchView::default());
    let (changes, changes_rx) = mpsc::unbounded_channel();
    let switch = Switch {
        keys: config.keys.clone(),
        in_use: config.in_use.clone(),
        config,
        events,
        view: view_tx,
        changes: changes_rx,
        changes_open: true,
        last_answer: None,
        warned_expiry: false,
    };
    let task = tokio::spawn(switch.run(shutdown));
    SwitchHandle { view, changes, task }
}

struct Switch {
    config: SwitchConfig,
    keys: Vec<SignedKey>,
    in_use: BTreeMap<LicenseType, u32>,
    events: Option<mpsc::UnboundedSender<Event>>,
    view: watch::Sender<SwitchView>,
    changes: mpsc::UnboundedReceiver<Change>,
    /// Whether anyone can still send changes (see `session`).
    changes_open: bool,
    last_answer: Option<Instant>,
    warned_expiry: bool,
}

/// Which whole-state report a switch sends.
#[derive(Debug, Clone, Copy)]
enum ReportKind {
    Register,
    Heartbeat,
    Update,
}

/// Why a session with the server ended.
enum End {
    Shutdown,
    /// Connected, but not registered.
    NotRegistered(ClientError),
    /// Registered, then lost.
    Lost(ClientError),
}

impl Switch {
    fn emit(&self, event: Event) {
        match &event {
            Event::Stopped {
                id,
                server,
                reason,
                remedy,
            } => tracing::error!(
                id = %id.escape_debug(),
                "switch stopped, on an error no retry can fix: {reason} (server {server}). What to \
                 do: {remedy}."
            ),
            Event::Unproven {
                id,
                server,
                reason,
                remedy,
            } => tracing::error!(
                id = %id.escape_debug(),
                "the host answering at {server} is not proven to be the pair: {reason}. What to \
                 do: {remedy}. Still trying, backing off (another host may hold the VIP)."
            ),
            Event::Unreachable {
                id,
                server,
                for_ms,
                tries,
                error,
            } => tracing::warn!(
                id = %id.escape_debug(),
                "server unreachable: {server} not reached for {:.1} s ({tries} tries); last error: \
                 {error}; still trying, backing off",
                *for_ms as f64 / 1000.0
            ),
            _ => tracing::info!(?event, "switch"),
        }
        if let Some(events) = &self.events {
            // A dropped receiver only means nobody is counting any more.
            let _ = events.send(event);
        }
    }

    fn id(&self) -> String {
        self.config.id.clone()
    }

    fn report(&self) -> SwitchReport {
        SwitchReport {
            builtin: self.config.builtin.clone(),
            keys: self.keys.clone(),
            used: self.view.borrow().granted.clone(),
        }
    }

    /// Sends its whole state (`kind`), and again without what the server
    /// refused of it: a key that does not count is dropped, a claim above
    /// what the pool can give is lowered to what the switch holds. Each
    /// retry drops a key or lowers a claim, so this ends.
    async fn send_report(
        &mut self,
        conn: &mut Connection,
        kind: ReportKind,
    ) -> Result<(Client, Pool), ClientError> {
        loop {
            let (id, report) = (self.id(), self.report());
            let result = match kind {
                ReportKind::Register => {
                    let (serial, version) = (self.config.serial.clone(), self.config.version.clone());
                    self.call(conn.register(&id, &serial, &version, report)).await
                }
                ReportKind::Heartbeat => self.call(conn.heartbeat(&id, report)).await,
                ReportKind::Update => self.call(conn.update(&id, report)).await,
            };
            let Err(ClientError::Server(refusal)) = &result else {
                return result;
            };
            let reason = refusal.to_string();
            let refused_key = match refusal {
                ServerError::Denied(RequestError::Key(k)) => Some(k.key_id().to_owned()),
                ServerError::Refused(
                    CommandError::KeyCounted { key_id, .. }
                    | CommandError::KeyExpired(key_id)
                    | CommandError::KeyNotBound { key_id, .. }
                    | CommandError::IssuerNotTrusted { key_id, .. }
                    | CommandError::DuplicateKey(key_id),
                ) => Some(key_id.clone()),
                _ => None,
            };
            if let Some(key_id) = refused_key {
                let before = self.keys.len();
                self.keys.retain(|k| k.id() != key_id);
                if self.keys.len() == before {
                    return result;
                }
                self.emit(Event::KeyRefused { id, key_id, reason });
                continue;
            }
            if let ServerError::Refused(CommandError::ClaimExceedsAvailable {
                license_type, held, ..
            }) = refusal
            {
                let (license_type, held) = (license_type.clone(), *held);
                let claimed = self
                    .view
                    .borrow()
                    .granted
                    .get(&license_type)
                    .copied()
                    .unwrap_or(0);
                if held >= claimed {
                    return result;
                }
                self.set_granted(&license_type, held, false);
                self.emit(Event::ClaimLowered {
                    id,
                    license_type,
                    held,
                    reason,
                });
                continue;
            }
            return result;
        }
    }

    async fn run(mut self, shutdown: CancellationToken) {
        // Spread reconnects of many switches without drawing randomness.
        let spread = self
            .config
            .id
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let mut policy = reconnect::Reconnect::new(
            reconnect::Settings {
                connect_timeout: self.config.connect_timeout,
                failover_window: self.config.failover_window,
                backoff_min: self.config.backoff_min,
                backoff_max: self.config.backoff_max,
            },
            spread,
        );
        // When a handshake with an unproven end was last said (once a minute).
        let mut unproven_said: Option<Instant> = None;
        loop {
            self.check_server(Instant::now());
            let started = Instant::now();
            let options = ConnectOptions {
                connect_timeout: policy.connect_timeout(),
                connect_stagger: self.config.connect_stagger,
                ack_timeout: self.config.ack_timeout,
                handshake_timeout: self.config.handshake_timeout,
                answer_timeout: self.config.answer_timeout,
                probe_after: self.config.probe_after,
                ..ConnectOptions::default()
            };
            let connect = Connection::connect_with(&self.config.server, self.config.tls.as_ref(), &options);
            let connected = tokio::select! {
                connected = connect => connected,
                () = shutdown.cancelled() => return,
            };
            let end = match connected {
                Ok(conn) => self.session(conn, &shutdown, &mut policy).await,
                Err(e) => End::NotRegistered(e),
            };
            self.view.send_modify(|v| v.connected = false);
            let (e, was_registered) = match end {
                End::Shutdown => return,
                End::NotRegistered(e) => (e, false),
                End::Lost(e) => (e, true),
            };
            let verdict = e.verdict();
            if let Verdict::Permanent { remedy } = verdict {
                self.stop(&e, remedy);
                return;
            }
            let reason = e.to_string();
            if let Verdict::Unproven { remedy } = verdict {
                let now = Instant::now();
                if unproven_said.is_none_or(|at| now.duration_since(at) >= reconnect::UNREACHABLE_REPEAT) {
                    unproven_said = Some(now);
                    self.emit(Event::Unproven {
                        id: self.id(),
                        server: self.config.server.clone(),
                        reason: reason.clone(),
                        remedy: remedy.to_owned(),
                    });
                }
            }
            let delay = if was_registered {
                self.emit(Event::Disconnected {
                    id: self.id(),
                    reason: reason.clone(),
                });
                policy.session_ended(Instant::now())
            } else {
                // One line per attempt only at debug: during a failover
                // they come every few hundred ms.
                tracing::debug!(id = %self.config.id.escape_debug(), server = %self.config.server,
                    error = %reason, "no connection to the server; trying again");
                let retry = if connect_refused(&e) {
                    policy.refused(Instant::now(), started)
                } else {
                    policy.failed(Instant::now(), started)
                };
                if let Some((failing_for, tries)) = retry.unreachable {
                    self.emit(Event::Unreachable {
                        id: self.id(),
                        server: self.config.server.clone(),
                        for_ms: failing_for.as_millis() as u64,
                        tries,
                        error: reason.clone(),
                    });
                }
                retry.delay.max(retry_after(&e))
            };
            self.view.send_modify(|v| v.last_error = Some(reason));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// An error no retry can fix: say so and what to do, and stop.
    fn stop(&mut self, e: &ClientError, remedy: &str) {
        let reason = e.to_string();
        self.view.send_modify(|v| {
            v.connected = false;
            v.last_error = Some(reason.clone());
            v.stopped = Some(reason.clone());
        });
        self.emit(Event::Stopped {
            id: self.id(),
            server: self.config.server.clone(),
            reason,
            remedy: remedy.to_owned(),
        });
    }

    /// Marks the server down after `missed_limit` silent intervals, and lets
    /// the retained limits expire after the retention period, as of `now`.
    ///
    /// Both run on the monotonic clock (tokio's `Instant`): a jump of the
    /// switch's wall clock neither ends the retention early nor stretches
    /// it. Only key expiry, a calendar date, reads the wall clock.
    fn check_server(&mut self, now: Instant) {
        let Some(last) = self.last_answer else { return };
        let silent = now.saturating_duration_since(last);
        let down_after = self.config.heartbeat_interval * self.config.missed_limit;
        if silent > down_after && self.view.borrow().server_up {
            self.view.send_modify(|v| v.server_up = false);
            self.emit(Event::ServerDown { id: self.id() });
        }
        if self.view.borrow().server_up {
            return;
        }
        let retention = self.config.retention;
        if silent >= retention {
            if self.view.borrow().limits.is_some() {
                self.view.send_modify(|v| {
                    v.limits = None;
                    v.granted.clear();
                });
                self.emit(Event::LimitsExpired { id: self.id() });
            }
        } else if !self.warned_expiry && retention - silent < retention / 10 {
            self.warned_expiry = true;
            self.emit(Event::LimitsExpiring {
                id: self.id(),
                remaining_s: (retention - silent).as_secs(),
            });
        }
    }

    fn heard(&mut self, pool: Pool) {
        // The first answer ever is no news; one after the server was down is.
        let was_up = self.view.borrow().server_up || self.last_answer.is_none();
        self.last_answer = Some(Instant::now());
        self.warned_expiry = false;
        self.view.send_modify(|v| {
            v.server_up = true;
            v.limits = Some(pool);
        });
        if !was_up {
            self.emit(Event::ServerUp { id: self.id() });
        }
    }

    /// One request with the heartbeat interval as its deadline.
    async fn call<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(self.config.heartbeat_interval, request).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Io(std::io::ErrorKind::TimedOut.into())),
        }
    }

    async fn register(&mut self, conn: &mut Connection) -> Result<(), ClientError> {
        let (_, pool) = self.send_report(conn, ReportKind::Register).await?;
        let id = self.id();
        self.heard(pool);
        self.view.send_modify(|v| {
            v.connected = true;
            v.reached = true;
            v.last_error = None;
        });
        self.emit(Event::Registered {
            id,
            server: self.config.server.clone(),
        });
        Ok(())
    }

    async fn session(
        &mut self,
        mut conn: Connection,
        shutdown: &CancellationToken,
        policy: &mut reconnect::Reconnect,
    ) -> End {
        let registered = tokio::select! {
            registered = self.register(&mut conn) => registered,
            () = shutdown.cancelled() => return End::Shutdown,
        };
        if let Err(e) = registered {
            return End::NotRegistered(e);
        }
        if let Some((failing_for, tries)) = policy.registered(Instant::now()) {
            tracing::info!(
                id = %self.config.id.escape_debug(),
                "server reachable again: {} registered after {:.1} s ({tries} tries)",
                self.config.server,
                failing_for.as_secs_f64()
            );
        }
        if let Err(e) = self.reconcile(&mut conn).await {
            return End::Lost(e);
        }
        let start = Instant::now() + self.config.heartbeat_interval;
        let mut tick = tokio::time::interval_at(start, self.config.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let expiry = self.next_key_expiry();
            let result = tokio::select! {
                _ = tick.tick() => self.heartbeat(&mut conn).await,
                push = conn.next_push() => push.map(|pool| self.heard(pool)),
                // Once every sender is gone, recv() is ready at once with
                // None forever: stop asking, or this loop spins a core.
                change = self.changes.recv(), if self.changes_open => match change {
                    Some(change) => self.change(&mut conn, change).await,
                    None => {
                        self.changes_open = false;
                        Ok(())
                    }
                },
                () = sleep_until_ms(expiry) => self.expire_keys(&mut conn).await,
                () = shutdown.cancelled() => return End::Shutdown,
            };
            self.check_server(Instant::now());
            match result {
                Ok(()) => {}
                // The switch's own deadline (`call`): the connection may
                // still work. A timeout the kernel reports (an OS error:
                // bytes unacknowledged past the ack timeout) has ended it.
                Err(ClientError::Io(e))
                    if e.kind() == std::io::ErrorKind::TimedOut && e.raw_os_error().is_none() =>
                {
                    if !self.view.borrow().server_up {
                        return End::Lost(ClientError::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "server down: no answer for too long",
                        )));
                    }
                }
                Err(e) => return End::Lost(e),
            }
        }
    }

    async fn heartbeat(&mut self, conn: &mut Connection) -> Result<(), ClientError> {
        match self.send_report(conn, ReportKind::Heartbeat).await {
            Ok((_, pool)) => self.heard(pool),
            // The table forgot us (30 days of silence, or an operator removed us): register anew.
            Err(ClientError::Server(ServerError::Refused(CommandError::UnknownClient(_)))) => {
                self.register(conn).await?;
            }
            Err(e) => return Err(e),
        }
        self.reconcile(conn).await
    }

    async fn change(&mut self, conn: &mut Connection, change: Change) -> Result<(), ClientError> {
        match change {
            Change::SetInUse(license_type, n) => {
                self.in_use.insert(license_type, n);
            }
            Change::AddKey(key) => {
                if !self.keys.contains(&key) {
                    self.keys.push(key);
                    self.keys.sort();
                }
            }
            Change::RemoveKey(key) => {
                if let Some(at) = self.keys.iter().position(|k| *k == key) {
                    self.keys.remove(at);
                }
            }
        }
        self.send_update(conn).await?;
        self.reconcile(conn).await
    }

    async fn send_update(&mut self, conn: &mut Connection) -> Result<(), ClientError> {
        let (_, pool) = self.send_report(conn, ReportKind::Update).await?;
        self.heard(pool);
        Ok(())
    }

    fn next_key_expiry(&self) -> Option<u64> {
        self.keys.iter().filter_map(SignedKey::expires_at_ms).min()
    }

    async fn expire_keys(&mut self, conn: &mut Connection) -> Result<(), ClientError> {
        let now = now_ms();
        let before = self.keys.len();
        self.keys.retain(|k| k.expires_at_ms().is_none_or(|at| at > now));
        if self.keys.len() != before {
            self.send_update(conn).await?;
        }
        Ok(())
    }

    /// Takes from or gives back to the pool so that what the switch holds
    /// matches what its licensed things need beyond the built-in licenses.
    async fn reconcile(&mut self, conn: &mut Connection) -> Result<(), ClientError> {
        let id = self.id();
        let poolable: Vec<LicenseType> = match &self.view.borrow().limits {
            Some(pool) => pool.keys().cloned().collect(),
            None => return Ok(()),
        };
        for license_type in poolable {
            let builtin = self.config.builtin.get(&license_type).copied().unwrap_or(0);
            let want = pool_demand(builtin, self.in_use.get(&license_type).copied().unwrap_or(0));
            let have = self
                .view
                .borrow()
                .granted
                .get(&license_type)
                .copied()
                .unwrap_or(0);
            if want > have {
                let count = want - have;
                match self.call(conn.acquire(&id, &license_type, count)).await {
                    Ok((_, pool)) => {
                        self.set_granted(&license_type, want, true);
                        self.heard(pool);
                        self.emit(Event::Granted {
                            id: id.clone(),
                            license_type,
                            count,
                        });
                    }
                    Err(ClientError::Server(ServerError::Refused(
                        e @ (CommandError::NotEnoughLicenses { .. } | CommandError::OverSubscribed { .. }),
                    ))) => {
                        self.view.send_modify(|v| v.refusals += 1);
                        let reason = e.to_string();
                        self.emit(Event::Refused {
                            id: id.clone(),
                            license_type,
                            count,
                            reason,
                        });
                    }
                    Err(e) => return Err(self.uncertain(e, "acquire", license_type, count)),
                }
            } else if want < have {
                let count = have - want;
                let (_, pool) = match self.call(conn.release(&id, &license_type, count)).await {
                    Ok(answer) => answer,
                    Err(e) => return Err(self.uncertain(e, "release", license_type, count)),
                };
                self.set_granted(&license_type, want, false);
                self.heard(pool);
                self.emit(Event::Released {
                    id: id.clone(),
                    license_type,
                    count,
                });
            }
        }
        Ok(())
    }

    /// An acquire or release failed with `e`: when it went unanswered, its
    /// outcome is unknown; say so. What the switch holds stays as it was:
    /// the registration on the next connection carries it, and the server
    /// takes it (see [`Event::Uncertain`]).
    fn uncertain(&self, e: ClientError, request: &str, license_type: LicenseType, count: u32) -> ClientError {
        if matches!(e, ClientError::NoAnswer { .. }) {
            self.emit(Event::Uncertain {
                id: self.id(),
                request: request.to_owned(),
                license_type,
                count,
                reason: e.to_string(),
            });
        }
        e
    }

    fn set_granted(&self, license_type: &LicenseType, n: u32, grant: bool) {
        self.view.send_modify(|v| {
            if n == 0 {
                v.granted.remove(license_type);
            } else {
                v.granted.insert(license_type.clone(), n);
            }
            if grant {
                v.grants += 1;
            }
        });
    }
}

/// How long the server asked the switch to wait, if it did.
/// The TCP connect was refused (a reset: the host is up, nothing listens).
fn connect_refused(e: &ClientError) -> bool {
    matches!(e, ClientError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused)
}

fn retry_after(e: &ClientError) -> Duration {
    match e {
        ClientError::Server(ServerError::Denied(RequestError::RegistrationRate {
            retry_after_ms, ..
        })) => Duration::from_millis(*retry_after_ms),
        _ => Duration::ZERO,
    }
}

async fn sleep_until_ms(at_ms: Option<u64>) {
    match at_ms {
        Some(at) => tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A switch that last heard the server at `last_answer`, with limits.
    fn switch(retention: Duration) -> (Switch, mpsc::UnboundedReceiver<Event>) {
        let mut config = SwitchConfig::new("192.0.2.100:4333", "sw1");
        config.retention = retention;
        let (events, rx) = mpsc::unbounded_channel();
        let (view, _) = watch::channel(SwitchView::default());
        let (_, changes) = mpsc::unbounded_channel();
        let s = Switch {
            keys: Vec::new(),
            in_use: BTreeMap::new(),
            config,
            events: Some(events),
            view,
            changes,
            changes_open: false,
            last_answer: None,
            warned_expiry: false,
        };
        (s, rx)
    }

    /// A connect to a port nothing listens on (the VIP's holder handing it
    /// over, its client port closed) reads as refused, through the
    /// staggered connect the switch uses; a connect that timed out does not.
    #[tokio::test]
    async fn a_reset_reads_as_refused_and_a_timeout_does_not() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let options = ConnectOptions::default();
        assert!(options.connect_stagger.is_some());
        let Err(e) = Connection::connect_with(addr.to_string().as_str(), None, &options).await else {
            panic!("nothing listens on {addr}, yet it connected");
        };
        assert!(connect_refused(&e), "{e:?}");
        let timed_out = ClientError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connect timed out",
        ));
        assert!(!connect_refused(&timed_out));
        assert!(!connect_refused(&ClientError::Closed));
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Event>) -> Vec<Event> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// An acquire or release unanswered within the deadline is said to be
    /// of unknown outcome; one that failed otherwise (the connection
    /// closed before it was sent, say) is not. Either way what the switch
    /// holds stays as it was, for the registration to carry.
    #[test]
    fn an_unanswered_acquire_is_uncertain_and_changes_nothing_held() {
        let (s, mut events) = switch(Duration::from_secs(60));
        let ap = LicenseType::new("AP");
        s.set_granted(&ap, 2, true);
        let no_answer = ClientError::NoAnswer {
            peer: "192.0.2.100:4333".parse().unwrap(),
            after: Duration::from_millis(1500),
        };
        let e = s.uncertain(no_answer, "acquire", ap.clone(), 3);
        assert!(matches!(e, ClientError::NoAnswer { .. }));
        assert!(
            matches!(&drain(&mut events)[..], [Event::Uncertain { request, count: 3, .. }] if request == "acquire")
        );
        let _ = s.uncertain(ClientError::Closed, "release", ap.clone(), 1);
        assert!(drain(&mut events).is_empty());
        assert_eq!(s.view.borrow().granted.get(&ap), Some(&2));
    }

    /// SPEC §4: "both servers down: clients keep the limits they were last
    /// sent for [30 days]", and "limits about to expire: both sides show a
    /// warning". The window is measured on the monotonic clock from the
    /// last answer: down after three silent intervals, a warning in the
    /// last tenth of the window, the limits gone at its end.
    #[test]
    fn retention_runs_on_the_monotonic_clock() {
        let day = Duration::from_secs(86_400);
        let (mut s, mut events) = switch(30 * day);
        s.heard(Pool::new());
        let t0 = s.last_answer.expect("heard");
        assert!(s.view.borrow().limits.is_some());
        drain(&mut events);

        s.check_server(t0 + s.config.heartbeat_interval * 3);
        assert!(s.view.borrow().server_up, "three intervals: not missed yet");
        s.check_server(t0 + s.config.heartbeat_interval * 3 + Duration::from_millis(1));
        assert!(!s.view.borrow().server_up);
        assert!(matches!(drain(&mut events)[..], [Event::ServerDown { .. }]));

        s.check_server(t0 + 26 * day);
        assert!(drain(&mut events).is_empty(), "no warning before the last tenth");
        s.check_server(t0 + 28 * day);
        assert!(
            matches!(drain(&mut events)[..], [Event::LimitsExpiring { remaining_s, .. }] if remaining_s == 2 * 86_400)
        );
        assert!(s.view.borrow().limits.is_some(), "kept for the whole window");
        s.check_server(t0 + 30 * day - Duration::from_millis(1));
        assert!(s.view.borrow().limits.is_some());
        s.check_server(t0 + 30 * day);
        assert!(s.view.borrow().limits.is_none());
        assert!(matches!(drain(&mut events)[..], [Event::LimitsExpired { .. }]));

        // An answer restarts the window, from its own instant.
        s.heard(Pool::new());
        let t1 = s.last_answer.expect("heard");
        s.check_server(t1 + 29 * day);
        assert!(s.view.borrow().limits.is_some());
        // A monotonic instant before the answer (cannot happen, but a
        // reordered call must not end the window): nothing changes.
        s.check_server(t0);
        assert!(s.view.borrow().limits.is_some());
    }
}
