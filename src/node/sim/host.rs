//! One simulated host: a server (VRRP `Instance`, cluster `Node` over the
//! license table, `PairRules`, the beacons, the license server's gate) or
//! the witness (a `Node` only), fed the way `node::Glue` and `node::run`
//! feed the real pieces, in virtual time.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::raft::eraftpb::Message;
use cluster::{Disk, LogStore, Node, NodeConfig, SnapshotError, StateMachine, Token};
use vrrp::proto::{Config as VrrpConfig, Instance, State};

use super::super::beacon::Beacon;
use super::super::rules::{PairRules, RaftFacts, RulesConfig, VrrpFacts};
use super::super::settings::Configured;
use crate::license::{SeenSignatures, ServerKeyEntry, TrustedIssuers};
use crate::pki::ClientIdentity;
use crate::proto::{Request, ServerError};
use crate::server::request::{self, RequestContext, RequestLimits};
use crate::server::stamp::Stamper;
use crate::table::{Command, CommandError, Key, LicenseTable, Reply, TableConfig, VerifiedKey};

mod beacons;
mod glue;

use beacons::Beacons;

/// The VIP every switch talks to.
pub(super) const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
/// VRRP advertisement interval (ms).
pub(super) const ADVERT_MS: u64 = 100;
/// Raft tick (ms), election and heartbeat ticks: election timeout 100 ms,
/// two of them (200 ms) under the Master_Down_Interval (~360 ms), as
/// `node`'s module doc asks.
pub(super) const TICK_MS: u64 = 10;
const ELECTION_TICKS: usize = 10;
/// Raft's election timeout (ms).
pub(super) const ELECTION_MS: u64 = TICK_MS * ELECTION_TICKS as u64;
const HEARTBEAT_TICKS: usize = 3;
/// The switches' heartbeat interval (ms), replicated in the table's settings.
pub(super) const HEARTBEAT_MS: u64 = 1000;
/// The server's sweep (ms), while serving.
const SWEEP_MS: u64 = 500;
/// A request to a VRRP master that does not serve yet is held this long.
const HOLD_MS: u64 = 1000;
/// How long a graceful stop or a handback lets requests in flight finish.
const DRAIN_MS: u64 = 1000;
/// How long a leaving node waits for the peer's acknowledgement.
const LEAVE_ACK_MS: u64 = 100;
/// How long a stopping node tries to hand leadership over.
const HAND_OVER_MS: u64 = 1000;
/// Retry of a settings proposal that did not commit (as `settings::RETRY`).
const SETTINGS_RETRY_MS: u64 = 2000;
/// Wall clock at true time 0: 2026-01-01.
const EPOCH_MS: i64 = 1_767_225_600_000;

/// The license table as the simulated members apply it: the real table,
/// and the pair's times it applied or restored (the applier's clock
/// observes them, as `SharedTable::apply` and `restore` do).
#[derive(Debug)]
pub(super) struct SimTable {
    pub(super) table: LicenseTable,
    stamps: Arc<Mutex<Vec<u64>>>,
}

impl SimTable {
    fn new(stamps: Arc<Mutex<Vec<u64>>>) -> Self {
        SimTable {
            table: LicenseTable::new(TableConfig::default()),
            stamps,
        }
    }
}

impl StateMachine for SimTable {
    type Command = Command;
    type Response = Result<Reply, CommandError>;

    fn apply(&mut self, index: u64, command: Command) -> Self::Response {
        if let Some(stamped) = command.pair_time_ms() {
            self.stamps.lock().expect("stamps lock").push(stamped);
        }
        self.table.apply_command(index, command)
    }

    fn applied_index(&self) -> u64 {
        self.table.applied_index()
    }

    fn snapshot(&self) -> Vec<u8> {
        self.table.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        self.table.restore(snapshot).map_err(SnapshotError::new)?;
        if let Some(newest) = self.table.latest_stamp_ms() {
            self.stamps.lock().expect("stamps lock").push(newest);
        }
        Ok(())
    }
}

/// What a host sends or does that the world carries out.
#[derive(Debug)]
pub(super) enum Out {
    /// A VRRP advert on the segment (an IPv4 datagram).
    Advert(Vec<u8>),
    /// A raft message.
    Raft(Message),
    /// A beacon to the peer.
    Beacon { to: u64, bytes: Vec<u8> },
    /// An answer to a switch's request on connection `conn`.
    Answer {
        switch: usize,
        conn: u64,
        req: u64,
        answer: Result<Reply, ServerError>,
    },
    /// The connection is closed (serving ended) or reset (unknown here).
    Close { switch: usize, conn: u64 },
    /// A new connection is accepted (its handshakes are done).
    Accepted { switch: usize, conn: u64 },
    /// This host became VRRP master: its gratuitous ARP moves the VIP here.
    Garp,
    /// A line for the trace.
    Note(String),
}

/// A request a switch sent to the VIP.
#[derive(Debug, Clone)]
pub(super) struct Incoming {
    pub(super) switch: usize,
    pub(super) conn: u64,
    pub(super) req: u64,
    pub(super) id: String,
    pub(super) serial: String,
    pub(super) request: Request,
}

/// What the glue is doing that takes time (it awaits, and feeds the
/// rules nothing meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Busy {
    /// `Glue::hand_back`: requests in flight finish (until `until`).
    HandBackDrain { until: u64 },
    /// `Glue::hand_back`: waiting for the peer to acknowledge our leaving.
    HandBackAck { seq: u64, until: u64 },
    /// `node::run`'s graceful stop: requests in flight finish.
    StopDrain { until: u64 },
    /// The graceful stop waits for the acknowledgement of our leaving.
    StopAck { seq: u64, until: u64 },
    /// The graceful stop hands leadership to the peer.
    StopHandOver { until: u64 },
}

/// Why a proposal was made.
#[derive(Debug, Clone)]
enum Pending {
    /// A switch's request: answered on its connection.
    Switch { switch: usize, conn: u64, req: u64 },
    /// The node's own (keys, settings, sweeps).
    Own,
}

/// A running server's parts beside its raft member.
pub(super) struct ServerRun {
    pub(super) vrrp: Instance,
    rules: PairRules,
    beacons: Beacons,
    stamper: Stamper,
    pub(super) serving: bool,
    soon: bool,
    port_paused: bool,
    /// The facts last fed to the rules (what `Member::leadership` pushes).
    published: Option<RaftFacts>,
    pending: BTreeMap<Token, Pending>,
    /// Open client connections: switch -> connection id.
    conns: BTreeMap<usize, u64>,
    /// Requests held until this node serves.
    held: Vec<(u64, Incoming)>,
    busy: Option<Busy>,
    next_refresh: u64,
    next_sweep: u64,
    settings_retry: Option<u64>,
    /// The VRRP status as last fed (to notice a change).
    last_vrrp: Option<VrrpFacts>,
    /// The settings proposal in flight, if any.
    settings_token: Option<Token>,
    /// A graceful stop is under way.
    pub(super) stopping: bool,
    /// When the speaker announces the VIP again (true ms): the driver's
    /// gratuitous ARP plan on becoming master (`vrrp.garp`: a burst of 3,
    /// 100 ms apart, then 1 s and 2 s after).
    garp_plan: Vec<u64>,
}

/// A running member.
pub(super) struct Running {
    pub(super) node: Node<SimTable>,
    pub(super) srv: Option<ServerRun>,
    next_tick: u64,
    next_token: Token,
    /// The stamps the table applied, not yet observed.
    stamps: Arc<Mutex<Vec<u64>>>,
}

/// One host, up or down.
pub(super) struct Host {
    pub(super) id: u64,
    pub(super) peer: u64,
    pub(super) witness: bool,
    pub(super) has_witness: bool,
    pub(super) priority: u8,
    pub(super) addr: Ipv4Addr,
    pub(super) disk: Disk,
    /// Founding voters (`vipool init`); none once the disk was lost.
    voters: Vec<u64>,
    /// The next start is a `--rejoin`: an empty store that waits for the
    /// leader's snapshot.
    pub(super) rejoin: bool,
    pub(super) run: Option<Running>,
    /// Starts so far (a connection of an earlier one is unknown).
    pub(super) incarnation: u64,
    base: Instant,
    /// This host's monotonic clock runs this far ahead of the base.
    mono_off: u64,
    /// Its wall clock is this far off the true time (skew and jumps).
    pub(super) wall_off: i64,
    /// The wall clock's error at the first start: what NTP sets it back
    /// to at boot (see `World`'s `Knobs::wrong_clock_at_restart`).
    pub(super) boot_wall_off: i64,
    seed: u64,
    keys: Vec<ServerKeyEntry>,
    configured: Configured,
    /// Storage failures seen (the member stopped on them).
    pub(super) storage_failures: u64,
}

fn facts_of(node: &Node<SimTable>) -> RaftFacts {
    let conf = node.conf_state();
    RaftFacts {
        role: node.role(),
        leader: node.leader(),
        term: node.term(),
        in_sync: node.in_sync(),
        voters: conf.voters,
        learners: conf.learners,
    }
}

fn vrrp_facts(v: &Instance) -> VrrpFacts {
    VrrpFacts {
        state: v.state(),
        master: v.master_address(),
        own: v.config().primary_address,
        adverts_received: v.counters().adverts_received,
        priority_zero_received: v.counters().priority_zero_received,
    }
}

/// The table settings both servers are configured with: heartbeats
/// every second, so that a run of seconds sees switches go down.
pub(super) fn configured_settings() -> TableConfig {
    TableConfig {
        heartbeat_interval_ms: HEARTBEAT_MS,
        missed_heartbeats_down: 3,
        silence_remove_ms: 120_000,
        ..TableConfig::default()
    }
}

pub(super) fn server_name(id: u64) -> String {
    format!("server{id}")
}

impl Host {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        id: u64,
        peer: u64,
        witness: bool,
        has_witness: bool,
        priority: u8,
        voters: Vec<u64>,
        base: Instant,
        mono_off: u64,
        wall_off: i64,
        seed: u64,
    ) -> Host {
        let serial = format!("S{id}");
        let keys = if witness {
            Vec::new()
        } else {
            vec![ServerKeyEntry {
                path: format!("server{id}.keys").into(),
                line: 1,
                key: VerifiedKey {
                    key_id: format!("k{id}"),
                    issuer: "sim".into(),
                    serial,
                    key: Key::permanent("AP", 16),
                },
                not_before_ms: 0,
            }]
        };
        Host {
            id,
            peer,
            witness,
            has_witness,
            priority,
            addr: Ipv4Addr::new(10, 0, 0, id as u8),
            disk: Disk::memory(),
            voters,
            rejoin: false,
            run: None,
            incarnation: 0,
            base,
            mono_off,
            wall_off,
            boot_wall_off: wall_off,
            seed,
            keys,
            configured: Configured {
                table: configured_settings(),
                // The issuer of the servers' keys: the VIP holder records
                // it before its keys can count, as a real one does.
                issuers: crate::license::IssuerKey::from_secret_bytes("sim", &[11; 32])
                    .map(|k| k.trusted())
                    .into_iter()
                    .collect::<TrustedIssuers>()
                    .by_name_text(),
            },
            storage_failures: 0,
        }
    }

    pub(super) fn mono(&self, t: u64) -> Instant {
        self.base + Duration::from_millis(t + self.mono_off)
    }

    fn wall(&self, t: u64) -> u64 {
        u64::try_from(EPOCH_MS + t as i64 + self.wall_off).unwrap_or(0)
    }

    /// The true time of an instant of this host's monotonic clock (ms, up).
    fn true_ms(&self, at: Instant) -> u64 {
        let us = at.saturating_duration_since(self.base).as_micros();
        (us.div_ceil(1000) as u64).saturating_sub(self.mono_off)
    }

    pub(super) fn up(&self) -> bool {
        self.run.is_some()
    }

    /// Starts the host (a first start, a restart, or a `--rejoin`).
    ///
    /// A start can fail as a real one does: a write fault armed while the
    /// host was up (it crashed before writing again) strikes the first
    /// write of the next start. The process exits (counted as a storage
    /// failure) and the host stays down; the world starts it again later,
    /// as systemd's `Restart=on-failure` does.
    pub(super) fn start(&mut self, t: u64, out: &mut Vec<Out>) {
        self.incarnation += 1;
        let mut store = match LogStore::open(self.disk.clone()) {
            Ok(store) => store,
            Err(e) => {
                self.storage_failures += 1;
                out.push(Out::Note(format!(
                    "start {} failed: the log does not open: {e}",
                    self.id
                )));
                return;
            }
        };
        let voters = if self.rejoin {
            store.mark_rebuilding("sim: the disk was lost (--rejoin)".into());
            Vec::new()
        } else if store.rebuilding().is_some() {
            // Emptied by a yield (or a rejoin) and waiting for the leader's
            // snapshot: `node::run` starts it with no founding voters, as
            // always; founding it again (`vipool init`) would make it a
            // voter of the founding configuration with an empty log, and
            // write to the disk before the member runs (seed 9128: a write
            // fault armed there failed `Node::new`).
            Vec::new()
        } else {
            self.voters.clone()
        };
        self.rejoin = false;
        let mut cfg = NodeConfig::new(self.id);
        cfg.election_tick = ELECTION_TICKS;
        cfg.heartbeat_tick = HEARTBEAT_TICKS;
        cfg.snapshot_interval = 40;
        cfg.witness = self.witness;
        cfg.timeout_seed = Some(self.seed ^ (self.id << 32) ^ t ^ self.incarnation);
        cfg.max_size_per_msg = 16 * 1024;
        cfg.max_inflight_msgs = 32;
        let stamps = Arc::new(Mutex::new(Vec::new()));
        let node = match Node::new(cfg, store, SimTable::new(Arc::clone(&stamps)), &voters) {
            Ok(node) => node,
            Err(e) => {
                self.storage_failures += 1;
                out.push(Out::Note(format!("start {} failed: {e}", self.id)));
                return;
            }
        };
        let now = self.mono(t);
        let srv = (!self.witness).then(|| {
            let mut vc = VrrpConfig::v3(1, self.priority, self.addr, vec![VIP]);
            vc.advert_interval_cs = (ADVERT_MS / 10) as u16;
            vc.trusted_sources = vec![Ipv4Addr::new(10, 0, 0, self.peer as u8)];
            vc.pair_handoff = true;
            let mut vrrp = Instance::new(vc).expect("a valid VRRP configuration");
            vrrp.startup(now);
            ServerRun {
                vrrp,
                rules: PairRules::new(RulesConfig {
                    me: self.id,
                    peer: self.peer,
                    has_witness: self.has_witness,
                    priority: self.priority,
                    election_timeout: Duration::from_millis(TICK_MS * ELECTION_TICKS as u64),
                    preempt: true,
                }),
                beacons: Beacons {
                    peer: self.peer,
                    peer_address: Ipv4Addr::new(10, 0, 0, self.peer as u8),
                    validity: Duration::from_millis(3 * ADVERT_MS),
                    ours: Beacon::default(),
                    acked: 0,
                    heard: None,
                    claim: None,
                    garbage: 0,
                },
                stamper: Stamper::new(),
                serving: false,
                soon: false,
                port_paused: false,
                published: None,
                pending: BTreeMap::new(),
                conns: BTreeMap::new(),
                held: Vec::new(),
                busy: None,
                next_refresh: t + ADVERT_MS,
                next_sweep: t + SWEEP_MS,
                settings_retry: None,
                last_vrrp: None,
                settings_token: None,
                stopping: false,
                garp_plan: Vec::new(),
            }
        });
        self.run = Some(Running {
            node,
            srv,
            next_tick: t + TICK_MS,
            next_token: 1,
            stamps,
        });
        out.push(Out::Note(format!("start {} (#{})", self.id, self.incarnation)));
        self.settle(t, out);
    }

    /// Power loss: everything in memory is gone, nothing more is sent.
    pub(super) fn crash(&mut self, out: &mut Vec<Out>) {
        if self.run.take().is_some() {
            out.push(Out::Note(format!("crash {}", self.id)));
        }
    }

    /// The disk is lost with the host: it comes back with `--rejoin`.
    pub(super) fn lose_disk(&mut self, out: &mut Vec<Out>) {
        self.crash(out);
        self.disk = Disk::memory();
        self.voters.clear();
        self.rejoin = true;
        out.push(Out::Note(format!("{} lost its disk", self.id)));
    }

    /// The process stops on a failure: serving ends, the speaker leaves
    /// (priority 0 if master, as its driver does on any stop), and the
    /// member is gone.
    fn fail(&mut self, t: u64, why: &str, out: &mut Vec<Out>) {
        let now = self.mono(t);
        if let Some(run) = &mut self.run {
            if let Some(srv) = &mut run.srv {
                srv.vrrp.shutdown(now);
                Self::vrrp_events(srv, self.addr, t, out);
            }
        }
        self.run = None;
        out.push(Out::Note(format!("{} stops on a failure: {why}", self.id)));
    }

    /// Starts the graceful stop (`node::run` after the glue's loop ends).
    pub(super) fn graceful_stop(&mut self, t: u64, out: &mut Vec<Out>) {
        let Some(srv) = self.run.as_mut().and_then(|r| r.srv.as_mut()) else {
            return;
        };
        if srv.stopping {
            return;
        }
        out.push(Out::Note(format!("graceful stop of {}", self.id)));
        srv.stopping = true;
        srv.rules.stop();
        // The rules' last actions (soon off) are carried out first.
        self.settle(t, out);
        let Some(srv) = self.run.as_mut().and_then(|r| r.srv.as_mut()) else {
            return;
        };
        Self::set_serving(srv, false, out);
        srv.port_paused = true;
        srv.busy = Some(Busy::StopDrain { until: t + DRAIN_MS });
        self.settle(t, out);
    }

    /// When this host next needs the time (true ms).
    pub(super) fn next_deadline(&self) -> Option<u64> {
        let run = self.run.as_ref()?;
        let mut next = run.next_tick;
        if let Some(srv) = &run.srv {
            let mut at = |x: Option<u64>| {
                if let Some(x) = x {
                    next = next.min(x);
                }
            };
            at(srv.vrrp.poll_timeout().map(|i| self.true_ms(i)));
            if srv.busy.is_none() && !srv.stopping {
                at(srv.rules.poll_timeout().map(|i| self.true_ms(i)));
            }
            at(Some(srv.next_refresh));
            at(srv.garp_plan.first().copied());
            at(Some(srv.next_sweep));
            at(srv.held.iter().map(|h| h.0).min());
            at(match srv.busy {
                Some(
                    Busy::HandBackDrain { until }
                    | Busy::HandBackAck { until, .. }
                    | Busy::StopDrain { until }
                    | Busy::StopAck { until, .. }
                    | Busy::StopHandOver { until },
                ) => Some(until.min(run.next_tick)),
                None => None,
            });
        }
        Some(next)
    }

    /// Fires whatever is due at `t`.
    pub(super) fn on_time(&mut self, t: u64, out: &mut Vec<Out>) {
        let now = self.mono(t);
        let Some(run) = &mut self.run else { return };
        if t >= run.next_tick {
            run.next_tick = t + TICK_MS;
            run.node.tick();
        }
        if let Some(srv) = &mut run.srv {
            if srv.vrrp.poll_timeout().is_some_and(|at| at <= now) {
                srv.vrrp.handle_timeout(now);
            }
            if srv.garp_plan.first().is_some_and(|&at| at <= t) {
                srv.garp_plan.retain(|&at| at > t);
                out.push(Out::Garp);
            }
            if t >= srv.next_refresh {
                srv.next_refresh = t + ADVERT_MS;
                if srv.busy.is_none() && !srv.stopping {
                    srv.beacons.refresh(out);
                    let demoted = srv.rules.peer_demoted();
                    srv.beacons.peer_demoted(now, demoted, &mut srv.vrrp);
                }
            }
            if srv.busy.is_none() && !srv.stopping && srv.rules.poll_timeout().is_some_and(|at| at <= now) {
                srv.rules.handle_timeout(now);
            }
        }
        self.sweep(t, out);
        self.expire_held(t, out);
        self.settle(t, out);
    }

    fn sweep(&mut self, t: u64, out: &mut Vec<Out>) {
        let stamp_now = self.wall(t);
        let now = self.mono(t);
        let Some(run) = &mut self.run else { return };
        let Some(srv) = &mut run.srv else { return };
        if t < srv.next_sweep {
            return;
        }
        srv.next_sweep = t + SWEEP_MS;
        if !srv.serving {
            return;
        }
        let limit = run.node.state_machine().table.config().heartbeat_interval_ms;
        let now_ms = srv.stamper.stamp(stamp_now, now.into(), limit).ms;
        let token = run.next_token;
        run.next_token += 1;
        out.push(Out::Note(format!(
            "{} sweeps at {now_ms} (wall {stamp_now})",
            self.id
        )));
        if run.node.propose(token, &Command::Sweep { now_ms }).is_ok() {
            srv.pending.insert(token, Pending::Own);
        }
    }

    fn expire_held(&mut self, t: u64, out: &mut Vec<Out>) {
        let Some(srv) = self.run.as_mut().and_then(|r| r.srv.as_mut()) else {
            return;
        };
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut srv.held).into_iter().partition(|h| h.0 <= t);
        srv.held = keep;
        for (_, inc) in due {
            out.push(Out::Answer {
                switch: inc.switch,
                conn: inc.conn,
                req: inc.req,
                answer: Err(ServerError::NotLicenseServer {
                    vip: Some(VIP.to_string()),
                }),
            });
        }
    }

    /// A raft message for this member.
    pub(super) fn raft(&mut self, t: u64, msg: Message, out: &mut Vec<Out>) {
        let Some(run) = &mut self.run else { return };
        if let Err(e) = run.node.step(msg) {
            self.storage_failures += 1;
            self.fail(t, &format!("member failed on a message: {e}"), out);
            return;
        }
        self.settle(t, out);
    }

    /// The transport's word on a snapshot sent to `to`.
    pub(super) fn report_snapshot(&mut self, t: u64, to: u64, delivered: bool, out: &mut Vec<Out>) {
        if let Some(run) = &mut self.run {
            run.node.report_snapshot(to, delivered);
            self.settle(t, out);
        }
    }

    /// A datagram on the segment (an advert, or garbage).
    pub(super) fn datagram(&mut self, t: u64, bytes: &[u8], out: &mut Vec<Out>) {
        let now = self.mono(t);
        let Some(srv) = self.run.as_mut().and_then(|r| r.srv.as_mut()) else {
            return;
        };
        srv.vrrp.handle_datagram(now, bytes);
        self.settle(t, out);
    }

    /// A beacon from the peer over the cluster link.
    pub(super) fn beacon(&mut self, t: u64, bytes: &[u8], out: &mut Vec<Out>) {
        let now = self.mono(t);
        let Some(srv) = self.run.as_mut().and_then(|r| r.srv.as_mut()) else {
            return;
        };
        srv.beacons.receive(now, bytes, &mut srv.vrrp, out);
        self.settle(t, out);
    }

    /// Beacons that did not decode.
    pub(super) fn beacon_garbage(&self) -> u64 {
        self.run
            .as_ref()
            .and_then(|r| r.srv.as_ref())
            .map_or(0, |s| s.beacons.garbage)
    }

    /// Whether this host holds the VIP (its speaker is master).
    pub(super) fn holds_vip(&self) -> bool {
        self.run
            .as_ref()
            .and_then(|r| r.srv.as_ref())
            .is_some_and(|s| s.vrrp.state() == State::Master)
    }

    /// Whether a graceful stop is under way.
    pub(super) fn stopping(&self) -> bool {
        self.run
            .as_ref()
            .and_then(|r| r.srv.as_ref())
            .is_some_and(|s| s.stopping)
    }

    /// Whether this host answers license requests.
    pub(super) fn serving(&self) -> bool {
        self.run
            .as_ref()
            .and_then(|r| r.srv.as_ref())
            .is_some_and(|s| s.serving)
    }

    /// A request to the VIP that reached this host.
    pub(super) fn request(&mut self, t: u64, inc: Incoming, out: &mut Vec<Out>) {
        let Some(srv) = self.run.as_mut().and_then(|r| r.srv.as_mut()) else {
            return;
        };
        if srv.vrrp.state() != State::Master {
            // The VIP is not here: the kernel drops it.
            return;
        }
        let known = srv.conns.get(&inc.switch) == Some(&inc.conn);
        if !known {
            if matches!(inc.request, Request::Register { .. }) && !srv.port_paused {
                srv.conns.insert(inc.switch, inc.conn);
                out.push(Out::Accepted {
                    switch: inc.switch,
                    conn: inc.conn,
                });
            } else {
                out.push(Out::Close {
                    switch: inc.switch,
                    conn: inc.conn,
                });
                return;
            }
        }
        if !srv.serving {
            if srv.soon {
                srv.held.push((t + HOLD_MS, inc));
            } else {
                out.push(Out::Answer {
                    switch: inc.switch,
                    conn: inc.conn,
                    req: inc.req,
                    answer: Err(ServerError::NotLicenseServer {
                        vip: Some(VIP.to_string()),
                    }),
                });
            }
            return;
        }
        self.serve_request(t, inc, out);
        self.settle(t, out);
    }

    /// What the license server does with a request while serving: the
    /// real `request::command`, then a proposal answered once applied.
    fn serve_request(&mut self, t: u64, inc: Incoming, out: &mut Vec<Out>) {
        let wall = self.wall(t);
        let now = self.mono(t);
        let Some(run) = &mut self.run else { return };
        let Some(srv) = &mut run.srv else { return };
        let table = &run.node.state_machine().table;
        let limit = table.config().heartbeat_interval_ms;
        let now_ms = srv.stamper.stamp(wall, now.into(), limit).ms;
        let who = ClientIdentity::Switch {
            id: inc.id.clone(),
            serial: inc.serial.clone(),
            issued_s: Some(1_700_000_000),
        };
        let limits = RequestLimits::default();
        let registrations = limits.registrations();
        let trusted = TrustedIssuers::new();
        let seen = SeenSignatures::default();
        let ctx = RequestContext {
            now_ms,
            peer: SocketAddr::from(([10, 0, 1, inc.switch as u8 + 1], 40_000)),
            trusted: &trusted,
            limits: &limits,
            registrations: &registrations,
            seen: &seen,
            table,
        };
        let command = match request::command(inc.request, &who, &ctx) {
            Ok(c) => c,
            Err(e) => {
                out.push(Out::Answer {
                    switch: inc.switch,
                    conn: inc.conn,
                    req: inc.req,
                    answer: Err(e),
                });
                return;
            }
        };
        let token = run.next_token;
        run.next_token += 1;
        match run.node.propose(token, &command) {
            Ok(()) => {
                srv.pending.insert(
                    token,
                    Pending::Switch {
                        switch: inc.switch,
                        conn: inc.conn,
                        req: inc.req,
                    },
                );
            }
            Err(e) => out.push(Out::Answer {
                switch: inc.switch,
                conn: inc.conn,
                req: inc.req,
                answer: Err(crate::node::applier::server_error(e, Some(VIP.to_string()))),
            }),
        }
    }

    /// Requests held while this node was about to serve, now that it does.
    pub(super) fn release_held(&mut self, t: u64, out: &mut Vec<Out>) {
        let Some(srv) = self.run.as_mut().and_then(|r| r.srv.as_mut()) else {
            return;
        };
        if !srv.serving || srv.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut srv.held);
        for (_, inc) in held {
            self.serve_request(t, inc, out);
        }
        self.settle(t, out);
    }

    /// The table as this member holds it, with its applied index.
    pub(super) fn table(&self) -> Option<&LicenseTable> {
        self.run.as_ref().map(|r| &r.node.state_machine().table)
    }

    pub(super) fn node(&self) -> Option<&Node<SimTable>> {
        self.run.as_ref().map(|r| &r.node)
    }

    /// Injects a write fault into this host's disk.
    pub(super) fn inject(&self, fault: cluster::WriteFault) {
        self.disk.inject_write_fault(fault);
    }

    /// Whether a write fault injected into this host's disk has not struck
    /// yet (the host fails at its next write, maybe its next start).
    pub(super) fn fault_armed(&self) -> bool {
        self.disk.armed_write_fault().is_some()
    }

    /// The VRRP state, if a server is up.
    pub(super) fn vrrp_state(&self) -> Option<State> {
        self.run
            .as_ref()
            .and_then(|r| r.srv.as_ref())
            .map(|s| s.vrrp.state())
    }
}
