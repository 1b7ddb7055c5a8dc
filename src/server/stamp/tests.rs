//! The rule against one member's clock going wrong: forward jumps, steps
//! back, restarts with a wrong clock, a member that caught up late, each
//! with failovers, on the real table. Each case runs twice: stamped by the
//! rule, and (the control) stamped with the serving node's wall clock.

use super::*;
use crate::table::{ClientReport, ClientState, Command, LicenseTable, TableConfig};

/// The heartbeat interval (the table's default) and the rule's burst.
const HB: u64 = 30_000;
const BURST: u64 = HB / 2;
const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;
/// True time at the start.
const T0: u64 = 1_767_225_600_000;
/// The sweep runs every 5 s on the serving node, as in the daemon.
const SWEEP: u64 = 5_000;
const CLIENTS: u64 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Stamps follow the rule.
    Rule,
    /// The control: stamps are the serving node's wall clock.
    Wall,
}

#[derive(Debug, Clone, Copy)]
enum Event {
    /// A member's wall clock jumps by this much (back if negative).
    Jump(usize, i64),
    /// The other member serves from now on.
    Failover,
    /// A member restarts: it restores the table (its newest time) and
    /// replays the log's tail since the snapshot (the last commit).
    Restart(usize),
    /// A member restarts from a snapshot alone (no tail to replay): it
    /// knows only the table's newest time, its clients' last heard.
    RestoreOnly(usize),
    /// A member applies each commit this long after it was made
    /// (catching up).
    Lag(usize, u64),
}

struct Member {
    stamper: Stamper,
    /// Its wall clock's error.
    wall_off: i64,
    /// It applies a commit this long after it was made.
    lag: u64,
    /// Committed stamps it has not applied yet: (true time made, stamp).
    backlog: VecDeque<(u64, u64)>,
}

/// Two members over one table; member `serving` stamps. Clients heartbeat
/// every interval (each at its own phase); sweeps every 5 s.
struct Pair {
    mode: Mode,
    start: Instant,
    /// True time since the start (ms).
    t: u64,
    members: [Member; 2],
    serving: usize,
    table: LicenseTable,
    /// Every committed stamp with the true time it was made at.
    stamps: Vec<(u64, u64)>,
    /// The most clients down or removed at once so far.
    worst: usize,
    /// The most heartbeats a client missed in a row so far.
    in_a_row: u32,
}

impl Pair {
    fn new(mode: Mode) -> Pair {
        let member = || Member {
            stamper: Stamper::new(),
            wall_off: 0,
            lag: 0,
            backlog: VecDeque::new(),
        };
        let mut pair = Pair {
            mode,
            start: Instant::now(),
            t: 0,
            members: [member(), member()],
            serving: 0,
            table: LicenseTable::new(TableConfig::default()),
            stamps: Vec::new(),
            worst: 0,
            in_a_row: 0,
        };
        for i in 0..CLIENTS {
            pair.commit(|now_ms| Command::Register {
                now_ms,
                id: format!("sw{i}"),
                serial: format!("SN{i}"),
                address: "192.0.2.50:4000".into(),
                version: "8.10".into(),
                report: ClientReport::default(),
            });
        }
        // Not registered yet is not lost.
        pair.worst = 0;
        pair
    }

    fn now(&self) -> Instant {
        self.start + Duration::from_millis(self.t)
    }

    fn wall(&self, m: usize) -> u64 {
        (T0 + self.t).saturating_add_signed(self.members[m].wall_off)
    }

    /// Each member applies what is due for it.
    fn apply_due(&mut self) {
        let (t, now) = (self.t, self.now());
        for m in &mut self.members {
            while m.backlog.front().is_some_and(|&(made, _)| made + m.lag <= t) {
                let (_, stamp) = m.backlog.pop_front().expect("front");
                m.stamper.observe(stamp, now, HB);
            }
        }
    }

    /// The serving member stamps a command; it commits now.
    fn commit(&mut self, command: impl FnOnce(u64) -> Command) {
        let s = self.serving;
        let wall = self.wall(s);
        let now = self.now();
        // A serving member has applied the whole log first.
        let m = &mut self.members[s];
        while let Some((_, stamp)) = m.backlog.pop_front() {
            m.stamper.observe(stamp, now, HB);
        }
        let stamped = m.stamper.stamp(wall, now, HB).ms;
        let ms = match self.mode {
            Mode::Rule => stamped,
            Mode::Wall => wall,
        };
        let index = self.table.applied_index() + 1;
        // A heartbeat of a removed client is refused: what it then sees.
        let _ = self.table.apply_command(index, command(ms));
        self.stamps.push((self.t, ms));
        self.worst = self.worst.max(self.down());
        let in_a_row = self
            .table
            .state()
            .clients
            .values()
            .map(|c| c.stats.missed_in_a_row);
        self.in_a_row = self.in_a_row.max(in_a_row.max().unwrap_or(0));
        for m in &mut self.members {
            m.backlog.push_back((self.t, ms));
        }
        self.apply_due();
    }

    fn on(&mut self, event: Event) {
        match event {
            Event::Jump(m, by) => self.members[m].wall_off += by,
            Event::Failover => self.serving = 1 - self.serving,
            Event::Restart(m) | Event::RestoreOnly(m) => {
                let now = self.now();
                let member = &mut self.members[m];
                member.stamper = Stamper::new();
                member.backlog.clear();
                let newest = self.table.latest_stamp_ms().expect("clients were heard");
                member.stamper.observe(newest, now, HB);
                if let (Event::Restart(_), Some(&(_, last))) = (event, self.stamps.last()) {
                    member.stamper.observe(last, now, HB);
                }
            }
            Event::Lag(m, lag) => self.members[m].lag = lag,
        }
    }

    /// Runs until true time `end` (ms), with `events` at their times.
    fn run(&mut self, end: u64, events: &[(u64, Event)]) {
        let mut events = events.to_vec();
        events.sort_by_key(|e| e.0);
        let mut events = events.into_iter().peekable();
        while self.t < end {
            self.t += 1000;
            while let Some((_, e)) = events.next_if(|e| e.0 <= self.t) {
                self.on(e);
            }
            if self.t.is_multiple_of(SWEEP) {
                self.commit(|now_ms| Command::Sweep { now_ms });
            }
            for i in 0..CLIENTS {
                if self.t % HB == (i * 7_000) % HB {
                    self.commit(|now_ms| Command::Heartbeat {
                        now_ms,
                        id: format!("sw{i}"),
                        address: "192.0.2.50:4000".into(),
                        report: ClientReport::default(),
                    });
                }
            }
            self.apply_due();
        }
    }

    /// The most clients marked down or removed at once, though every one
    /// heartbeats.
    fn lost(&self) -> usize {
        self.worst
    }

    fn down(&self) -> usize {
        let up = self
            .table
            .state()
            .clients
            .values()
            .filter(|c| c.state == ClientState::Up)
            .count();
        CLIENTS as usize - up
    }

    /// The rule's bounds on every two committed stamps: never back, and
    /// ahead of the true time between them by at most the burst and 1/8.
    fn check_bounds(&self) {
        for (i, &(ti, si)) in self.stamps.iter().enumerate() {
            for &(tj, sj) in &self.stamps[i + 1..] {
                assert!(
                    sj >= si,
                    "the pair's time went back from {si} (at {ti}) to {sj} (at {tj})"
                );
            }
        }
        self.check_gain();
    }

    /// Ahead of the true time between any two committed stamps by at most
    /// the burst and 1/8 of it.
    fn check_gain(&self) {
        for (i, &(ti, si)) in self.stamps.iter().enumerate() {
            for &(tj, sj) in &self.stamps[i + 1..] {
                let elapsed = tj - ti;
                assert!(
                    within_bound(sj.saturating_sub(si), elapsed),
                    "the pair's time gained {} ms in {elapsed} ms (from {ti})",
                    sj - si
                );
            }
        }
    }
}

/// Whether the pair's time gained no more than the rule allows in
/// `elapsed` ms of true time: that, 1/8 of it and the burst (and 1 ms, for
/// stamps are whole milliseconds of a time kept in microseconds).
fn within_bound(gain: u64, elapsed: u64) -> bool {
    gain <= elapsed + elapsed / SLEW + BURST + 1
}

/// Runs `events` until `end` under the rule and under the control;
/// returns the clients lost by each.
fn both(end: u64, events: &[(u64, Event)]) -> (Pair, usize) {
    let mut rule = Pair::new(Mode::Rule);
    rule.run(end, events);
    rule.check_bounds();
    let mut wall = Pair::new(Mode::Wall);
    wall.run(end, events);
    let lost = wall.lost();
    (rule, lost)
}

const M10: u64 = 10 * 60_000;

/// Issue 11 item 4: the serving node's clock jumps 31 days ahead (then
/// minutes) while it serves for ten minutes: no client goes down or
/// leaves, the stamps stay within the rule's bounds, and the pair's time
/// creeps towards the wrong clock at 1/8 at most (so a sweep may find a
/// heartbeat late by that, one at a time, never two in a row). Control:
/// the wall clock's stamps mark every client down at the first sweep.
#[test]
fn a_forward_jump_of_the_leaders_clock_purges_nobody() {
    for jump in [31 * DAY, 40 * DAY, 10 * MIN] {
        let (pair, control) = both(M10, &[(60_000, Event::Jump(0, jump))]);
        assert_eq!(pair.lost(), 0, "jump {jump}: {:?}", pair.table.state().clients);
        assert!(
            pair.in_a_row <= 1,
            "jump {jump}: {} missed in a row",
            pair.in_a_row
        );
        let (_, last) = *pair.stamps.last().expect("stamps");
        assert!(last <= T0 + M10 + M10 / SLEW + BURST, "{last}");
        assert_eq!(
            control, CLIENTS as usize,
            "control: the wall clock's stamps mark every client down"
        );
    }
}

/// A backup whose clock jumped 31 days ahead while the other served
/// takes over: it goes on from the pair's time. Control: its wall clock
/// purges.
#[test]
fn a_forward_jump_of_the_backups_clock_then_a_failover_purges_nobody() {
    let events = [(30_000, Event::Jump(1, 31 * DAY)), (120_000, Event::Failover)];
    let (pair, control) = both(M10, &events);
    assert_eq!(pair.lost(), 0, "{:?}", pair.table.state().clients);
    assert_eq!(control, CLIENTS as usize);
}

/// Seed 47's shape: the serving node's clock steps back by minutes (or a
/// day), then the other one, whose clock is right, takes over. The
/// pair's time never went back, so the new holder's stamps are not ahead
/// of the times the table holds. Control: the step back is followed, the
/// clients' last heard times stay where they were, and the failover
/// marks every client down.
#[test]
fn a_step_back_of_the_leaders_clock_then_a_failover_marks_nobody_down() {
    for back in [-10 * MIN, -DAY] {
        let events = [(60_000, Event::Jump(0, back)), (240_000, Event::Failover)];
        let (pair, control) = both(M10, &events);
        assert_eq!(pair.lost(), 0, "step {back}: {:?}", pair.table.state().clients);
        assert_eq!(control, CLIENTS as usize, "control, step {back}");
    }
}

/// While its wall clock is behind, the pair's time runs at 7/8 until they
/// meet, then follows the wall clock again.
#[test]
fn the_pairs_time_slows_to_meet_a_clock_that_stepped_back() {
    let start = Instant::now();
    let mut s = Stamper::new();
    assert_eq!(s.stamp(T0, start, HB).ms, T0);
    s.observe(T0, start, HB);
    let at = |ms: u64| start + Duration::from_millis(ms);
    // Back by 8 s at 1 s: stamps run at 7/8 of the monotonic clock.
    let first = s.stamp(T0 + 1_000 - 8_000, at(1_000), HB);
    assert_eq!(first.ms, T0 + 875);
    let mut last = first.ms;
    for k in 2..=80u64 {
        let stamp = s.stamp(T0 + 1_000 * k - 8_000, at(1_000 * k), HB);
        assert!(
            stamp.ms >= last && stamp.ms - last <= 1_000,
            "{k}: {stamp:?} after {last}"
        );
        last = stamp.ms;
    }
    // 8 s behind, caught up at 1/8 of 64 s: they met; it follows the wall.
    assert_eq!(last, T0 + 80_000 - 8_000);
    assert_eq!(s.stamp(T0 + 81_000 - 8_000, at(81_000), HB).ms, T0 + 73_000);
}

/// Seeds 13 and 119's shape: a member restarts with its wall clock 31
/// days (or minutes) ahead and serves before the other commits anything:
/// it stamps the table's newest time and on from there. Control: its wall
/// clock marks every client down or removes it.
#[test]
fn a_restart_with_a_wrong_wall_clock_purges_nobody() {
    for wrong in [31 * DAY, 10 * MIN] {
        let events = [
            (60_000, Event::Jump(1, wrong)),
            (61_000, Event::Restart(1)),
            (90_000, Event::Failover),
        ];
        let (pair, control) = both(M10, &events);
        assert_eq!(pair.lost(), 0, "{wrong}: {:?}", pair.table.state().clients);
        assert_eq!(control, CLIENTS as usize, "control, {wrong}");
    }
}

/// A member restarts from a snapshot alone (no log tail to replay) with
/// its clock 31 days ahead and serves at once: it knows only the table's
/// newest time (its clients' last heard), goes on from there (a sweep
/// stamped before the last one does nothing), and nobody is lost.
#[test]
fn a_restart_from_a_snapshot_alone_with_a_wrong_clock_purges_nobody() {
    let mut pair = Pair::new(Mode::Rule);
    let events = [
        (60_000, Event::Jump(1, 31 * DAY)),
        (63_000, Event::RestoreOnly(1)),
        (63_000, Event::Failover),
    ];
    pair.run(M10, &events);
    pair.check_gain();
    assert_eq!(pair.lost(), 0, "{:?}", pair.table.state().clients);
    let newest = pair.table.latest_stamp_ms().expect("clients");
    assert!(
        (T0 + M10 - HB..=T0 + M10 + M10 / SLEW).contains(&newest),
        "{newest}"
    );
}

/// A restart with a right clock after the whole pair was down for an
/// hour: the outage is not the clients' silence (none goes down at the
/// first sweep); the pair's time catches up at 1/8 of the monotonic rate.
#[test]
fn after_a_whole_pair_outage_the_pairs_time_catches_up_slowly() {
    let mut pair = Pair::new(Mode::Rule);
    pair.run(60_000, &[]);
    let (_, before) = *pair.stamps.last().expect("stamps");
    // Both down for an hour; member 0 comes back first and serves.
    pair.t += 3_600_000;
    pair.on(Event::Restart(0));
    pair.run(pair.t + 8 * 60_000, &[]);
    assert_eq!(pair.lost(), 0, "{:?}", pair.table.state().clients);
    let (t, last) = *pair.stamps.last().expect("stamps");
    let wall = T0 + t;
    let lag = wall - last;
    // Behind by the hour, less 1/8 of the 8 minutes since.
    assert!(
        (3_600_000 - 61_000..=3_600_000 - 59_000).contains(&lag),
        "lag {lag} (last stamp before the outage {before})"
    );
}

/// Seed 436's shape: a member catches up late (it applies each commit
/// 2.5 intervals after it was made) and the serving one fails: it applies
/// the rest of the log, serves from the pair's time, and when the first
/// one comes back and takes over again no client goes down.
#[test]
fn a_member_that_caught_up_late_goes_on_from_the_pairs_time() {
    let mut pair = Pair::new(Mode::Rule);
    let events = [
        (60_000, Event::Restart(1)),
        (60_000, Event::Lag(1, 75_000)),
        (200_000, Event::Failover),
        (200_000, Event::Lag(1, 0)),
        (260_000, Event::Restart(0)),
        (320_000, Event::Failover),
    ];
    pair.run(M10, &events);
    pair.check_bounds();
    assert_eq!(pair.lost(), 0, "{:?}", pair.table.state().clients);
    assert!(pair.in_a_row <= 1, "{} missed in a row", pair.in_a_row);
}

/// Only stamps the member did not make move its view: its own commit
/// late (their latency must not hold its time back), another's ahead or
/// behind are followed, behind ones too: what the table holds is the
/// pair's time, not what this member made.
#[test]
fn own_stamps_are_recognised_and_anothers_followed() {
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let mut s = Stamper::new();
    s.observe(T0, at(0), HB);
    let a = s.stamp(T0, at(0), HB).ms;
    let b = s.stamp(T0 + 10, at(10), HB).ms;
    // Its own, applied 50 ms later: nothing moves.
    s.observe(a, at(50), HB);
    s.observe(b, at(60), HB);
    assert_eq!(s.projected(at(60)), Some(T0 + 60));
    // Another member's stamp 2 s behind (it serves now, lagging): followed,
    // even below what this member made (seed 56380 of the pair simulation:
    // a member whose own stamps held its time up took the clients the
    // lagging one heard 3 s of silence ahead at its next takeover).
    s.observe(T0 - 2_000 + 100, at(100), HB);
    assert_eq!(
        s.projected(at(1_000)),
        Some(T0 - 1_000),
        "the other's time, not its own"
    );
    assert_eq!(
        s.projected(at(2_100)),
        Some(T0 + 100),
        "from the other's stamp on"
    );
    // And ahead.
    s.observe(T0 + 5_000, at(3_000), HB);
    assert_eq!(s.projected(at(3_500)), Some(T0 + 5_500));
}

/// Seed 24551 of the pair simulation (and 24861, 31341, 38848, 63809,
/// 82853, 89089): while the pair committed nothing, member 1 ran its view
/// of the time on and stamped a key it never saw commit; member 0,
/// restarted, went on from the last commit (the outage is not silence)
/// and served minutes behind. Member 1 follows 0's stamps and takes over
/// from them: its sweep is within the bound of the last heartbeat 0
/// stamped, not at its own old stamp minutes ahead.
#[test]
fn a_stamp_that_never_committed_does_not_hold_a_takeover_ahead() {
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let mut one = Stamper::new();
    // Member 1 serves; its sweep at 0 commits.
    let sweep = one.stamp(T0, at(0), HB).ms;
    one.observe(sweep, at(0), HB);
    // Nothing commits for five minutes; 1's wall clock is 40 days ahead
    // by then, and it stamps a key it submits (never the pair's time).
    let key = one
        .stamp(T0 + 5 * MIN as u64 + 40 * DAY as u64, at(5 * MIN as u64), HB)
        .ms;
    assert!(key >= T0 + 5 * MIN as u64, "{key}");
    // Member 0 restarts and replays the log: the last commit is its time.
    let mut zero = Stamper::new();
    zero.observe(sweep, at(5 * MIN as u64), HB);
    // 0 serves and hears a client; 1 applies that.
    let heard = zero.stamp(T0 + 5 * MIN as u64, at(5 * MIN as u64 + 1_000), HB).ms;
    zero.observe(heard, at(5 * MIN as u64 + 1_002), HB);
    one.observe(heard, at(5 * MIN as u64 + 1_002), HB);
    // 0 fails; 1 takes over and sweeps a second later.
    let elapsed = 1_000;
    let swept = one
        .stamp(
            T0 + 5 * MIN as u64 + 40 * DAY as u64 + 1_000 + elapsed,
            at(5 * MIN as u64 + 1_000 + elapsed),
            HB,
        )
        .ms;
    assert!(
        within_bound(swept - heard, elapsed),
        "the sweep is {} ms after the last heartbeat, {elapsed} ms later",
        swept - heard
    );
}

/// Seed 73759 of the pair simulation: a member that replayed an old log
/// leads at once and stamps requests before it has applied its
/// predecessor's last entries, stamped minutes ahead. Its own stamps
/// commit after those, behind them: it follows them back (they are the
/// last the table holds), so its next sweep is within the bound of the
/// clients it heard.
#[test]
fn own_stamps_behind_anothers_are_followed_back() {
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let mut s = Stamper::new();
    s.observe(T0, at(5 * MIN as u64), HB);
    let heard = s.stamp(T0 + 5 * MIN as u64, at(5 * MIN as u64 + 10), HB).ms;
    // The predecessor's sweep, five minutes ahead, applied first.
    s.observe(T0 + 5 * MIN as u64, at(5 * MIN as u64 + 12), HB);
    // Then the heartbeat it stamped itself.
    s.observe(heard, at(5 * MIN as u64 + 15), HB);
    let elapsed = 1_000;
    let swept = s
        .stamp(T0 + 5 * MIN as u64, at(5 * MIN as u64 + 10 + elapsed), HB)
        .ms;
    assert!(
        within_bound(swept - heard, elapsed),
        "the sweep is {} ms after the heartbeat, {elapsed} ms later",
        swept - heard
    );
}

/// A member that follows another's stamp back while one of its own, ahead
/// of it, never commits (a proposal lost with a leadership change): the
/// ones it makes next, behind that one, are still recognised as its own
/// when they commit, so their latency does not hold its time back.
#[test]
fn own_stamps_are_recognised_after_going_back() {
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let mut s = Stamper::new();
    s.observe(T0 + 10_000, at(0), HB);
    let lost = s.stamp(T0 + 10_000, at(0), HB).ms;
    assert_eq!(lost, T0 + 10_000);
    // Another's stamp 10 s behind commits: followed back.
    s.observe(T0, at(5), HB);
    let behind = s.stamp(T0 + 5, at(10), HB).ms;
    assert_eq!(behind, T0 + 5);
    // It commits 20 ms later; the lost one never does.
    s.observe(behind, at(30), HB);
    assert_eq!(s.projected(at(30)), Some(T0 + 25), "its own stamp, not followed");
    let next = s.stamp(T0 + 35, at(40), HB).ms;
    s.observe(next, at(60), HB);
    assert_eq!(s.projected(at(60)), Some(T0 + 55));
}

/// A brand-new member (no anchor) takes its wall clock as it is and keeps
/// nothing of it until a stamp commits; from then on it has no budget
/// but what it earns: a jump of its clock is followed at 1/8.
#[test]
fn a_new_member_starts_from_its_wall_clock_with_no_budget() {
    let start = Instant::now();
    let mut s = Stamper::new();
    assert_eq!(s.stamp(T0 + 5 * DAY as u64, start, HB).ms, T0 + 5 * DAY as u64);
    // Nothing kept: the pair's time is the first stamp that commits.
    assert_eq!(s.projected(start), None);
    assert_eq!(s.stamp(T0, start, HB).ms, T0);
    s.observe(T0, start, HB);
    assert_eq!(s.projected(start), Some(T0));
    let later = start + Duration::from_secs(8);
    // 8 s earned 1 s of budget: a jump of a minute gains 1 s.
    assert_eq!(s.stamp(T0 + 68_000, later, HB).ms, T0 + 9_000);
    // After four intervals the budget is full: half an interval at once.
    let much_later = later + Duration::from_millis(4 * HB);
    let full = s.stamp(T0 + 68_000 + 4 * HB + 10 * 60_000, much_later, HB);
    assert_eq!(full.ms, T0 + 9_000 + 4 * HB + BURST);
    assert_eq!(
        full.wall_ahead_ms(),
        (68_000 - 9_000 + 10 * 60_000 - BURST) as i64
    );
}

/// Random clocks, failovers and restarts: the bounds hold and no client
/// that heartbeats is lost.
#[test]
fn random_clock_faults_never_lose_a_client() {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = |n: u64| {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    };
    for round in 0..20 {
        let mut events = Vec::new();
        for _ in 0..12 {
            let at = 30_000 + next(20) * 30_000;
            let m = next(2) as usize;
            let e = match next(5) {
                0 => Event::Jump(
                    m,
                    [31 * DAY, -DAY, 10 * MIN, -10 * MIN, 20_000, -20_000][next(6) as usize],
                ),
                1 => Event::Failover,
                2 => Event::Restart(m),
                3 => Event::Lag(m, next(4) * 20_000),
                _ => Event::Lag(m, 0),
            };
            events.push((at, e));
        }
        let mut pair = Pair::new(Mode::Rule);
        pair.run(M10 + 60_000, &events);
        pair.check_bounds();
        assert_eq!(
            pair.lost(),
            0,
            "round {round}: {events:?}: {:?}",
            pair.table.state().clients
        );
        assert!(
            pair.in_a_row <= 1,
            "round {round}: {events:?}: {} missed in a row",
            pair.in_a_row
        );
    }
}

/// The applier's clock reads its source: a test moves the clocks by hand,
/// the wall clock jumps, and the stamps follow the rule.
#[test]
fn the_pair_clock_reads_its_source() {
    let clock = crate::clock::Manual::new(T0);
    let pair = PairClock::with_source(Arc::new(clock.clone()));
    assert_eq!(pair.stamp(HB), T0);
    pair.observe(T0, HB);
    clock.advance(Duration::from_secs(10));
    assert_eq!(pair.stamp(HB), T0 + 10_000);
    clock.step_wall(31 * DAY);
    clock.advance(Duration::from_secs(8));
    // 18 s earned 2.25 s of budget.
    assert_eq!(pair.stamp(HB), T0 + 18_000 + 2_250);
    clock.step_wall(-31 * DAY - 60_000);
    clock.advance(Duration::from_secs(8));
    // Behind now: 7/8 of the 8 s.
    assert_eq!(pair.stamp(HB), T0 + 18_000 + 2_250 + 7_000);
    pair.observe(T0 + 40_000, HB);
    assert_eq!(pair.stamp(HB), T0 + 40_000);
}
