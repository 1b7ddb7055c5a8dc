//! Tracking, as keepalived's `track_interface` and `track_script`: what
//! this node depends on (an uplink, a health check) lowers its VRRP
//! priority, or puts it in fault, while it fails (`[[track.interface]]`,
//! `[[track.script]]`; see `config::TrackSection` for the rules).
//!
//! Each tracker runs in its own task and publishes into one
//! [`watch::Receiver<TrackState>`]; the node never waits for a tracker. The
//! glue reads it in two places: the priority it advertises is
//! [`tracked`]`(configured, state)`, and [`TrackState::fault`] makes the
//! speaker give up the VIP (one priority-0 advert, so the peer takes over
//! at once) and stay out until it clears.
//!
//! Interfaces are polled over rtnetlink every [`POLL`], not followed by
//! link events: one small request per interface per poll costs nothing
//! next to the VRRP adverts, reacts well within an advert interval, needs
//! no multicast subscription, and sees an interface that is created or
//! renamed later without any bookkeeping. A netlink socket (unlike
//! /sys/class/net) always answers for the node's own network namespace.
//!
//! A script runs without a shell, one run at a time, in its own process
//! group, killed with the group at its timeout; a timeout, a failure to
//! start or a non-zero exit is a failure. `fall` failures in a row take
//! it down, `rise` successes in a row bring it up. A script is up until
//! its first runs say otherwise (keepalived's default); an interface's
//! state is read before the node starts contending.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{TrackScript, TrackSection};
use crate::proto::NodeStatus;
use crate::server::StatusHook;

/// How often a tracked interface's state is read.
pub(crate) const POLL: Duration = Duration::from_millis(100);
/// How often a tracker's repeated warnings (a flapping link, a failing
/// script) may be logged.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// What is tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A network interface.
    Interface,
    /// A check script.
    Script,
}

impl Kind {
    /// As `show status` and the metrics' `kind` label say it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Interface => "interface",
            Kind::Script => "script",
        }
    }
}

/// One tracker's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tracker {
    pub(crate) kind: Kind,
    pub(crate) name: String,
    /// None (or 0): fault while down.
    pub(crate) weight: Option<i16>,
    pub(crate) up: bool,
    /// Why it is down (or what it last said), for `show status`.
    pub(crate) detail: String,
}

impl Tracker {
    /// Whether this tracker puts the node in fault while down.
    fn faults(&self) -> bool {
        self.weight.unwrap_or(0) == 0
    }

    /// What it adds to the priority now (keepalived: a negative weight
    /// counts while down, a positive one while up).
    fn adjustment(&self) -> i32 {
        match self.weight {
            Some(w) if w < 0 && !self.up => i32::from(w),
            Some(w) if w > 0 && self.up => i32::from(w),
            _ => 0,
        }
    }

    /// One line for `show status`.
    fn describe(&self) -> String {
        let effect = match self.weight {
            None | Some(0) => "FAULT: the VIP is given up until it is up again".to_owned(),
            Some(w) if w < 0 => format!("priority lowered by {}", -w),
            Some(w) => format!("priority not raised by {w}"),
        };
        format!(
            "track: {} {} is down ({}): {effect}",
            self.kind.as_str(),
            self.name,
            self.detail
        )
    }
}

/// Every tracker's state, in configuration order (interfaces, then scripts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TrackState {
    pub(crate) trackers: Vec<Tracker>,
}

impl TrackState {
    /// The state before anything was read: everything up.
    fn new(section: &TrackSection) -> TrackState {
        let interfaces = section.interface.iter().map(|t| Tracker {
            kind: Kind::Interface,
            name: t.name.clone(),
            weight: t.weight,
            up: true,
            detail: "not read yet".into(),
        });
        let scripts = section.script.iter().map(|s| Tracker {
            kind: Kind::Script,
            name: s.name.clone(),
            weight: s.weight,
            up: true,
            detail: "not run yet".into(),
        });
        TrackState {
            trackers: interfaces.chain(scripts).collect(),
        }
    }

    /// Whether a tracker without a weight is down: the node must give up
    /// the VIP and not contend.
    pub(crate) fn fault(&self) -> bool {
        self.trackers.iter().any(|t| t.faults() && !t.up)
    }

    /// The weights that count now, summed.
    pub(crate) fn adjustment(&self) -> i32 {
        self.trackers.iter().map(Tracker::adjustment).sum()
    }

    /// The trackers that are down.
    pub(crate) fn down(&self) -> impl Iterator<Item = &Tracker> {
        self.trackers.iter().filter(|t| !t.up)
    }

    /// Why the node is in fault, in words (empty when it is not).
    pub(crate) fn fault_reason(&self) -> String {
        let names: Vec<String> = self
            .down()
            .filter(|t| t.faults())
            .map(|t| format!("{} {} down ({})", t.kind.as_str(), t.name, t.detail))
            .collect();
        names.join(", ")
    }
}

/// The priority to advertise: `base` (the configured one) plus the weights
/// that count, kept within 1..=254. The address owner's 255 never changes
/// (RFC 9568: only the owner advertises 255, and its priority is fixed).
pub(crate) fn tracked(base: u8, state: &TrackState) -> u8 {
    if base == 255 {
        return 255;
    }
    let p = (i32::from(base) + state.adjustment()).clamp(1, 254);
    u8::try_from(p).unwrap_or(1)
}

/// Counts results in a row: `fall` failures take an up tracker down, `rise`
/// successes bring a down one up.
#[derive(Debug, Clone)]
pub(crate) struct Streak {
    up: bool,
    fall: u32,
    rise: u32,
    /// Results in a row that disagree with `up`.
    against: u32,
}

impl Streak {
    /// Starts up (keepalived's default for a script).
    pub(crate) fn new(fall: u32, rise: u32) -> Streak {
        Streak {
            up: true,
            fall: fall.max(1),
            rise: rise.max(1),
            against: 0,
        }
    }

    /// Records one result; `Some(up)` when the state changes.
    pub(crate) fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.against = 0;
            return None;
        }
        self.against += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.against < needed {
            return None;
        }
        self.up = ok;
        self.against = 0;
        Some(ok)
    }
}

/// The running trackers: their state, and their tasks (stopped when this
/// is dropped).
pub(crate) struct Tracking {
    tx: Arc<watch::Sender<TrackState>>,
    _stop: tokio_util::sync::DropGuard,
}

impl Tracking {
    /// Reads every tracked interface once, then starts a task per tracker
    /// (needs a tokio runtime).
    ///
    /// # Errors
    /// The netlink socket for the interfaces cannot be opened.
    pub(crate) async fn start(section: &TrackSection) -> std::io::Result<Tracking> {
        let (tx, _) = watch::channel(TrackState::new(section));
        let tx = Arc::new(tx);
        let stop = CancellationToken::new();
        if !section.interface.is_empty() {
            let netlink = vrrp::sys::netlink::Netlink::open()?;
            for (slot, t) in section.interface.iter().enumerate() {
                let mut watcher = InterfaceWatch {
                    netlink: netlink.clone(),
                    name: t.name.clone(),
                    slot,
                    tx: Arc::clone(&tx),
                    log: cluster::ratelog::RateLimiter::new(LOG_EVERY),
                };
                watcher.poll().await;
                tokio::spawn(watcher.run(stop.clone()));
            }
        }
        let offset = section.interface.len();
        for (i, s) in section.script.iter().enumerate() {
            let runner = ScriptRunner {
                script: s.clone(),
                slot: offset + i,
                tx: Arc::clone(&tx),
                log: cluster::ratelog::RateLimiter::new(LOG_EVERY),
            };
            tokio::spawn(runner.run(stop.clone()));
        }
        for t in &tx.borrow().trackers {
            info!(
                kind = t.kind.as_str(),
                name = %t.name,
                weight = ?t.weight,
                up = t.up,
                "tracking {} {}: {}",
                t.kind.as_str(),
                t.name,
                if t.faults() { "fault while down".to_owned() } else { format!("weight {}", t.weight.unwrap_or(0)) }
            );
        }
        Ok(Tracking {
            tx,
            _stop: stop.drop_guard(),
        })
    }

    /// The state, for whoever wants to follow it.
    pub(crate) fn subscribe(&self) -> watch::Receiver<TrackState> {
        self.tx.subscribe()
    }

    /// The state now.
    pub(crate) fn state(&self) -> TrackState {
        self.tx.borrow().clone()
    }
}

/// Sets tracker `slot`'s state; logs a change (rate-limited: a flapping
/// link or check must not fill the disk).
fn publish(
    tx: &watch::Sender<TrackState>,
    log: &cluster::ratelog::RateLimiter,
    slot: usize,
    up: bool,
    detail: String,
) {
    let mut changed = None;
    tx.send_if_modified(|s| {
        let Some(t) = s.trackers.get_mut(slot) else {
            return false;
        };
        let flipped = t.up != up;
        let modified = flipped || t.detail != detail;
        t.up = up;
        t.detail = detail;
        if flipped {
            changed = Some(t.clone());
        }
        modified
    });
    let Some(t) = changed else { return };
    if t.up {
        if let Some(suppressed) = log.allow("up") {
            info!(kind = t.kind.as_str(), name = %t.name, suppressed, "tracked {} {} is up again", t.kind.as_str(), t.name);
        }
    } else {
        cluster::warn_limited!(
            log,
            "down",
            kind = t.kind.as_str(),
            name = %t.name,
            detail = %t.detail,
            "tracked {} {} is DOWN: {}",
            t.kind.as_str(),
            t.name,
            if t.faults() { "fault: giving up the VIP".to_owned() } else { format!("weight {} applies", t.weight.unwrap_or(0)) }
        );
    }
}

/// Polls one interface.
struct InterfaceWatch {
    netlink: vrrp::sys::netlink::Netlink,
    name: String,
    slot: usize,
    tx: Arc<watch::Sender<TrackState>>,
    log: cluster::ratelog::RateLimiter,
}

impl InterfaceWatch {
    async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => self.poll().await,
            }
        }
    }

    async fn poll(&mut self) {
        let (up, detail) = match self.netlink.link_running(&self.name).await {
            Ok(Some(true)) => (true, "up, carrier".to_owned()),
            Ok(Some(false)) => (false, "administratively down or no carrier".to_owned()),
            Ok(None) => (false, "no such interface".to_owned()),
            Err(e) => {
                // Keep the last state: a failed read says nothing of the link.
                cluster::warn_limited!(self.log, "read", name = %self.name, error = %e, "tracked interface: cannot read its state");
                return;
            }
        };
        publish(&self.tx, &self.log, self.slot, up, detail);
    }
}

/// Runs one check script every interval.
struct ScriptRunner {
    script: TrackScript,
    slot: usize,
    tx: Arc<watch::Sender<TrackState>>,
    log: cluster::ratelog::RateLimiter,
}

impl ScriptRunner {
    async fn run(self, stop: CancellationToken) {
        let interval = Duration::from_millis(self.script.interval_ms);
        let timeout = Duration::from_millis(self.script.timeout_ms);
        let mut streak = Streak::new(self.script.fall, self.script.rise);
        loop {
            let started = tokio::time::Instant::now();
            let outcome = tokio::select! {
                () = stop.cancelled() => return,
                outcome = run_script(&self.script.command, timeout) => outcome,
            };
            let ok = matches!(outcome, Outcome::Passed);
            if !ok {
                cluster::warn_limited!(
                    self.log,
                    "failed",
                    script = %self.script.name,
                    outcome = %outcome,
                    "track script failed"
                );
            }
            if let Some(up) = streak.record(ok) {
                publish(&self.tx, &self.log, self.slot, up, outcome.to_string());
            } else if streak.up == ok {
                // Same state: keep what it last said, for `show status`.
                publish(&self.tx, &self.log, self.slot, streak.up, outcome.to_string());
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(started + interval) => {}
            }
        }
    }
}

/// How one run of a check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Exit status 0.
    Passed,
    /// Another exit status, or a signal.
    Failed(String),
    /// Still running at the timeout: killed.
    TimedOut(Duration),
    /// Could not be started.
    NotStarted(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Passed => f.write_str("passed"),
            Outcome::Failed(status) => write!(f, "failed: {status}"),
            Outcome::TimedOut(t) => write!(f, "killed at its timeout of {} ms", t.as_millis()),
            Outcome::NotStarted(e) => write!(f, "cannot be run: {e}"),
        }
    }
}

/// Runs `command` once (no shell), killing it and its process group at
/// `timeout`.
pub(crate) async fn run_script(command: &[String], timeout: Duration) -> Outcome {
    let Some((program, args)) = command.split_first() else {
        return Outcome::NotStarted("empty command".into());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so that a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return Outcome::NotStarted(e.to_string()),
    };
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Outcome::Passed,
        Ok(Ok(status)) => Outcome::Failed(status.to_string()),
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            }
            let _ = child.kill().await;
            Outcome::TimedOut(timeout)
        }
    }
}

/// `show status` with tracking: a warning per tracker that is down, and
/// `Fault` as the VRRP state while the node is in fault.
pub(crate) fn status_hook(inner: StatusHook, track: watch::Receiver<TrackState>) -> StatusHook {
    Arc::new(move |status: &mut NodeStatus| {
        inner(status);
        let state = track.borrow().clone();
        status.warnings.extend(state.down().map(Tracker::describe));
        if state.fault() && status.vrrp_state == vrrp::proto::State::Initialize.to_string() {
            status.vrrp_state = "Fault".into();
        }
    })
}

/// The metrics with tracking: each tracker's state and the fault.
pub(crate) fn metrics_source(
    inner: crate::metrics::Source,
    track: watch::Receiver<TrackState>,
) -> crate::metrics::Source {
    Arc::new(move || {
        let mut o = inner();
        let state = track.borrow().clone();
        if let Some(pair) = o.pair.as_mut() {
            pair.track_fault = state.fault();
            pair.trackers = state
                .trackers
                .iter()
                .map(|t| (t.kind.as_str(), t.name.clone(), t.up))
                .collect();
        }
        o
    })
}

/// Logs what tracking does to the priority when it changes it.
pub(crate) fn log_priority(configured: u8, advertised: u8, state: &TrackState) {
    let down: Vec<String> = state
        .down()
        .map(|t| format!("{} {}", t.kind.as_str(), t.name))
        .collect();
    if advertised == configured {
        info!(
            priority = advertised,
            "tracking: back to the configured VRRP priority"
        );
    } else {
        warn!(
            priority = advertised,
            configured,
            adjustment = state.adjustment(),
            down = %down.join(", "),
            "tracking: advertising a changed VRRP priority"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrackInterface;

    fn tracker(kind: Kind, weight: Option<i16>, up: bool) -> Tracker {
        Tracker {
            kind,
            name: "t".into(),
            weight,
            up,
            detail: String::new(),
        }
    }

    fn state(trackers: Vec<Tracker>) -> TrackState {
        TrackState { trackers }
    }

    #[test]
    fn priority_arithmetic_as_keepalived() {
        // Nothing tracked, or all up with negative weights: unchanged.
        assert_eq!(tracked(200, &TrackState::default()), 200);
        let all_up = state(vec![tracker(Kind::Interface, Some(-50), true)]);
        assert_eq!(tracked(200, &all_up), 200);
        // A negative weight counts while down; they add up.
        let down = state(vec![
            tracker(Kind::Interface, Some(-50), false),
            tracker(Kind::Script, Some(-30), false),
            tracker(Kind::Script, Some(-100), true),
        ]);
        assert_eq!(down.adjustment(), -80);
        assert_eq!(tracked(200, &down), 120);
        // A positive weight counts while up.
        let raised = state(vec![
            tracker(Kind::Script, Some(20), true),
            tracker(Kind::Script, Some(40), false),
        ]);
        assert_eq!(tracked(100, &raised), 120);
        // Never below 1 nor above 254.
        let deep = state(vec![tracker(Kind::Interface, Some(-253), false)]);
        assert_eq!(tracked(200, &deep), 1);
        let high = state(vec![tracker(Kind::Script, Some(253), true)]);
        assert_eq!(tracked(200, &high), 254);
        // The address owner is never changed.
        assert_eq!(tracked(255, &deep), 255);
        assert_eq!(tracked(255, &high), 255);
        // Weighted trackers never fault; unweighted or weight 0 ones do,
        // and count for nothing in the priority.
        assert!(!deep.fault());
        let fault = state(vec![
            tracker(Kind::Script, None, false),
            tracker(Kind::Interface, Some(0), true),
        ]);
        assert!(fault.fault());
        assert_eq!(tracked(200, &fault), 200);
        assert!(state(vec![tracker(Kind::Interface, Some(0), false)]).fault());
        assert!(!state(vec![tracker(Kind::Interface, None, true)]).fault());
    }

    #[test]
    fn fall_and_rise_count_results_in_a_row() {
        let mut s = Streak::new(3, 2);
        // Two failures, then a success: the run restarts.
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(true), None);
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), None);
        // The third in a row takes it down, once.
        assert_eq!(s.record(false), Some(false));
        assert_eq!(s.record(false), None);
        // Rise: one success is not enough; a failure in between restarts it.
        assert_eq!(s.record(true), None);
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(true), None);
        assert_eq!(s.record(true), Some(true));
        assert_eq!(s.record(true), None);
        // fall = rise = 1: every change at once.
        let mut s = Streak::new(1, 1);
        assert_eq!(s.record(false), Some(false));
        assert_eq!(s.record(true), Some(true));
    }

    #[tokio::test]
    async fn a_script_passes_fails_times_out_or_cannot_start() {
        let cmd = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let t = Duration::from_secs(5);
        assert_eq!(run_script(&cmd(&["/bin/true"]), t).await, Outcome::Passed);
        assert!(matches!(
            run_script(&cmd(&["/bin/sh", "-c", "exit 3"]), t).await,
            Outcome::Failed(s) if s.contains('3')
        ));
        // The whole group is killed at the timeout, not after the sleep.
        let started = std::time::Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("still-running");
        let slow = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        assert_eq!(
            run_script(&cmd(&["/bin/sh", "-c", &slow]), Duration::from_millis(200)).await,
            Outcome::TimedOut(Duration::from_millis(200))
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !marker.exists(),
            "a process the script started outlived the timeout"
        );
        assert!(matches!(
            run_script(&cmd(&["/nonexistent/check"]), t).await,
            Outcome::NotStarted(_)
        ));
        assert!(matches!(run_script(&[], t).await, Outcome::NotStarted(_)));
    }

    #[tokio::test]
    async fn a_tracked_script_goes_down_after_fall_and_up_after_rise() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("ok");
        std::fs::write(&flag, "").unwrap();
        let section = TrackSection {
            interface: vec![
                TrackInterface {
                    name: "lo".into(),
                    weight: Some(-10),
                },
                TrackInterface {
                    name: "nosuchif0".into(),
                    weight: Some(-20),
                },
            ],
            script: vec![TrackScript {
                name: "flag".into(),
                command: vec!["/usr/bin/test".into(), "-e".into(), flag.display().to_string()],
                interval_ms: 50,
                timeout_ms: 1000,
                fall: 2,
                rise: 3,
                weight: None,
            }],
        };
        let tracking = Tracking::start(&section).await.unwrap();
        let mut rx = tracking.subscribe();
        let wait = |rx: &mut watch::Receiver<TrackState>, fault: bool| {
            let mut rx = rx.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.fault() == fault))
                    .await
                    .expect("in time")
                    .expect("open")
                    .clone()
            }
        };
        // Both interfaces were read before start returned: loopback is up
        // (and running), the missing one counts as down.
        {
            let s = rx.borrow();
            assert!(s.trackers[0].up, "{s:?}");
            assert!(
                !s.trackers[1].up && s.trackers[1].detail == "no such interface",
                "{s:?}"
            );
        }
        let s = wait(&mut rx, false).await;
        assert_eq!(tracked(100, &s), 80);
        let removed = std::time::Instant::now();
        std::fs::remove_file(&flag).unwrap();
        let s = wait(&mut rx, true).await;
        // Two failures 50 ms apart at least.
        assert!(removed.elapsed() >= Duration::from_millis(50));
        assert!(
            s.fault_reason().contains("script flag down"),
            "{}",
            s.fault_reason()
        );
        assert!(s.trackers[2].detail.contains("failed"), "{:?}", s.trackers[2]);
        std::fs::write(&flag, "").unwrap();
        let back = std::time::Instant::now();
        wait(&mut rx, false).await;
        assert!(back.elapsed() >= Duration::from_millis(100));
        drop(tracking);
    }

    #[tokio::test]
    async fn status_shows_the_trackers_that_are_down_and_the_fault() {
        let (tx, rx) = watch::channel(state(vec![
            Tracker {
                kind: Kind::Interface,
                name: "uplink0".into(),
                weight: Some(-150),
                up: false,
                detail: "no carrier".into(),
            },
            Tracker {
                kind: Kind::Script,
                name: "gw".into(),
                weight: None,
                up: true,
                detail: "passed".into(),
            },
        ]));
        let inner: StatusHook = Arc::new(|s: &mut NodeStatus| s.vrrp_state = "Initialize".into());
        let hook = status_hook(inner, rx);
        let mut status = NodeStatus::default();
        hook(&mut status);
        assert_eq!(
            status.warnings,
            vec!["track: interface uplink0 is down (no carrier): priority lowered by 150"]
        );
        assert_eq!(status.vrrp_state, "Initialize");
        tx.send_modify(|s| {
            s.trackers[1].up = false;
            s.trackers[1].detail = "failed: exit status: 1".into();
        });
        let mut status = NodeStatus::default();
        hook(&mut status);
        assert_eq!(status.vrrp_state, "Fault");
        assert_eq!(status.warnings.len(), 2);
        assert!(status.warnings[1].contains("script gw is down") && status.warnings[1].contains("FAULT"));
    }
}
