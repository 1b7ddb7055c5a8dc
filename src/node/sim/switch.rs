//! A simulated switch: the client library's session as `switch` runs it,
//! in virtual time. It registers with its whole state on every new
//! connection, heartbeats, acquires and releases toward what its APs
//! need, gives up on a request after the answer deadline, reconnects at
//! once when its connection ends, and remembers what was acknowledged.

use std::collections::BTreeMap;

use crate::proto::{Request, ServerError, SwitchReport};
use crate::table::{CommandError, LicenseType, Reply};

use super::host::HEARTBEAT_MS;

/// A request unanswered this long ends the session (`answer_timeout`).
pub(super) const ANSWER_DEADLINE_MS: u64 = 1500;
/// A new connection not accepted and registered this fast is given up
/// (the client library's connect timeout): its SYN went to a host that
/// does not hold the VIP (any more).
const CONNECT_TIMEOUT_MS: u64 = 300;
/// After a refusal or a failed attempt (`backoff_min`).
const BACKOFF_MS: u64 = 100;
/// After a grant refused for want of licenses, ask again this much later.
const REFUSED_WAIT_MS: u64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Register,
    Heartbeat,
    Acquire(u32),
    Release(u32),
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Outstanding {
    pub(super) req: u64,
    pub(super) kind: Kind,
    pub(super) sent: u64,
    pub(super) deadline: u64,
    /// A new connection not accepted yet (its deadline is the connect
    /// timeout until it is).
    pub(super) connecting: bool,
}

/// What the switch sends: a request on connection `conn`.
#[derive(Debug)]
pub(super) struct Send {
    pub(super) conn: u64,
    pub(super) req: u64,
    pub(super) request: Request,
}

#[derive(Debug)]
pub(super) struct Switch {
    pub(super) id: String,
    pub(super) serial: String,
    /// APs up beyond the built-in licenses: what it wants from the pool.
    pub(super) want: u32,
    /// What it holds from the pool, as far as it knows (its claim).
    pub(super) granted: u32,
    /// What the serving table must hold for it at least: acknowledged
    /// and not since (possibly) given back.
    pub(super) sure: u32,
    pub(super) conn: Option<u64>,
    next_conn: u64,
    pub(super) registered: bool,
    pub(super) outstanding: Option<Outstanding>,
    next_req: u64,
    /// When it may send next (heartbeat, retry, reconcile).
    next_at: u64,
    next_heartbeat: u64,
    /// A refused acquire is asked again no sooner than this.
    retry_acquire_at: u64,
    /// True time of its last acknowledged request.
    pub(super) last_ack: Option<u64>,
    /// An acknowledgement came while the servers were cut off from each
    /// other (no witness): the documented risk; S2 is not asked of it
    /// until a whole-state report is acknowledged by a reunited pair.
    pub(super) at_risk: bool,
    /// When it last registered (true ms).
    pub(super) registered_at: Option<u64>,
    /// The host its ARP entry for the VIP names (gratuitous ARP sets it).
    pub(super) arp: Option<u64>,
    /// Attempts in a row that went unanswered: after a few the switch's
    /// neighbour discovery finds the entry stale and asks again (a
    /// broadcast ARP request the VIP's holder answers).
    pub(super) silent_tries: u32,
    pub(super) rearps: u64,
    pub(super) grants: u64,
    pub(super) refusals: u64,
    pub(super) uncertain: u64,
}

fn ap() -> LicenseType {
    LicenseType::new("AP")
}

impl Switch {
    pub(super) fn new(idx: usize, want: u32, start_at: u64) -> Switch {
        Switch {
            id: format!("sw{idx}"),
            serial: format!("SW{idx}"),
            want,
            granted: 0,
            sure: 0,
            conn: None,
            next_conn: 1,
            registered: false,
            outstanding: None,
            next_req: 1,
            next_at: start_at,
            next_heartbeat: 0,
            retry_acquire_at: 0,
            last_ack: None,
            at_risk: false,
            registered_at: None,
            arp: None,
            silent_tries: 0,
            rearps: 0,
            grants: 0,
            refusals: 0,
            uncertain: 0,
        }
    }

    fn report(&self) -> SwitchReport {
        let mut used = BTreeMap::new();
        if self.granted > 0 {
            used.insert(ap(), self.granted);
        }
        SwitchReport {
            builtin: BTreeMap::new(),
            keys: Vec::new(),
            used,
        }
    }

    pub(super) fn next_deadline(&self) -> u64 {
        match &self.outstanding {
            Some(o) => o.deadline,
            None => self.next_at,
        }
    }

    /// What to send at `t`, if anything.
    pub(super) fn poll(&mut self, t: u64) -> Option<Send> {
        if let Some(o) = self.outstanding {
            if t >= o.deadline {
                // No answer: the connection is dead; an acquire or release
                // is uncertain; reconnect at once.
                self.silent_tries += 1;
                self.lost(t);
            } else {
                return None;
            }
        }
        if t < self.next_at {
            return None;
        }
        let (conn, fresh) = match self.conn {
            Some(c) => (c, false),
            None => {
                let c = self.next_conn;
                self.next_conn += 1;
                self.conn = Some(c);
                self.registered = false;
                (c, true)
            }
        };
        let (kind, request) = if !self.registered {
            (
                Kind::Register,
                Request::Register {
                    id: self.id.clone(),
                    serial: self.serial.clone(),
                    version: "sim".into(),
                    report: self.report(),
                },
            )
        } else if self.want > self.granted && t >= self.retry_acquire_at {
            let n = self.want - self.granted;
            (
                Kind::Acquire(n),
                Request::Acquire {
                    id: self.id.clone(),
                    license_type: ap(),
                    count: n,
                },
            )
        } else if self.want < self.granted {
            let n = self.granted - self.want;
            // It may apply whatever we hear.
            self.sure = self.sure.min(self.granted - n);
            (
                Kind::Release(n),
                Request::Release {
                    id: self.id.clone(),
                    license_type: ap(),
                    count: n,
                },
            )
        } else if t >= self.next_heartbeat {
            (
                Kind::Heartbeat,
                Request::Heartbeat {
                    id: self.id.clone(),
                    report: self.report(),
                },
            )
        } else {
            self.next_at = if self.want > self.granted {
                self.next_heartbeat.min(self.retry_acquire_at)
            } else {
                self.next_heartbeat
            };
            return None;
        };
        let req = self.next_req;
        self.next_req += 1;
        self.outstanding = Some(Outstanding {
            req,
            kind,
            sent: t,
            deadline: t + if fresh {
                CONNECT_TIMEOUT_MS
            } else {
                ANSWER_DEADLINE_MS
            },
            connecting: fresh,
        });
        Some(Send { conn, req, request })
    }

    /// The session ended without an answer to what was outstanding.
    fn lost(&mut self, t: u64) {
        if let Some(o) = self.outstanding.take() {
            if matches!(o.kind, Kind::Acquire(_) | Kind::Release(_)) {
                self.uncertain += 1;
            }
        }
        self.conn = None;
        self.registered = false;
        self.next_at = t;
    }

    /// The server closed or reset connection `conn`. A session that had
    /// registered is tried again at once (the failover path); a new
    /// connection refused at once waits the rest of `backoff_min` since
    /// its attempt began.
    pub(super) fn closed(&mut self, t: u64, conn: u64) {
        if self.conn == Some(conn) {
            self.silent_tries = 0;
            let refused = self
                .outstanding
                .filter(|o| o.kind == Kind::Register)
                .map(|o| o.sent);
            self.lost(t);
            if let Some(sent) = refused {
                self.next_at = (sent + BACKOFF_MS).max(t);
            }
        }
    }

    /// The host accepted connection `conn` (TCP and TLS handshakes done):
    /// from now on the request has the answer deadline.
    pub(super) fn accepted(&mut self, conn: u64) {
        if self.conn != Some(conn) {
            return;
        }
        self.silent_tries = 0;
        if let Some(o) = &mut self.outstanding {
            if o.connecting {
                o.connecting = false;
                o.deadline = o.sent + ANSWER_DEADLINE_MS;
            }
        }
    }

    /// An answer to request `req` on `conn`; `cut` says whether the
    /// servers are cut off from each other now (no witness).
    pub(super) fn answer(
        &mut self,
        t: u64,
        conn: u64,
        req: u64,
        answer: Result<Reply, ServerError>,
        cut: bool,
    ) {
        if self.conn != Some(conn) {
            return;
        }
        let Some(o) = self.outstanding else { return };
        if o.req != req {
            return;
        }
        self.outstanding = None;
        self.silent_tries = 0;
        match (o.kind, answer) {
            (Kind::Register | Kind::Heartbeat, Ok(_)) => {
                if o.kind == Kind::Register {
                    self.registered_at = Some(t);
                }
                self.registered = true;
                self.sure = self.granted;
                self.acked(t, cut, true);
                self.next_heartbeat = t + HEARTBEAT_MS;
                self.next_at = t;
            }
            (
                Kind::Register | Kind::Heartbeat,
                Err(ServerError::Refused(CommandError::ClaimExceedsAvailable { held, .. })),
            ) if held < self.granted => {
                // Claim what it holds there, and ask again for the rest.
                self.granted = held;
                self.sure = self.sure.min(held);
                self.next_at = t;
            }
            (Kind::Acquire(n), Ok(_)) => {
                self.granted += n;
                self.sure = self.granted;
                self.grants += 1;
                self.acked(t, cut, false);
                self.next_at = t;
            }
            (Kind::Release(n), Ok(_)) => {
                self.granted -= n;
                self.sure = self.sure.min(self.granted);
                self.acked(t, cut, false);
                self.next_at = t;
            }
            (
                Kind::Acquire(_),
                Err(ServerError::Refused(
                    CommandError::NotEnoughLicenses { .. } | CommandError::OverSubscribed { .. },
                )),
            ) => {
                self.refusals += 1;
                // Asks again later; heartbeats go on meanwhile.
                self.retry_acquire_at = t + REFUSED_WAIT_MS;
                self.next_at = t;
            }
            (_, Err(_)) => {
                // Not the license server, not committed, ...: the session
                // ends and the switch tries again (an acquire or release
                // not acknowledged counts as not done).
                if matches!(o.kind, Kind::Acquire(_) | Kind::Release(_)) {
                    self.uncertain += 1;
                }
                self.conn = None;
                self.registered = false;
                self.next_at = t + BACKOFF_MS;
            }
        }
    }

    fn acked(&mut self, t: u64, cut: bool, whole: bool) {
        self.last_ack = Some(t);
        if cut {
            self.at_risk = true;
        } else if whole {
            self.at_risk = false;
        }
    }
}
