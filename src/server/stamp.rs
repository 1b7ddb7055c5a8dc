//! The time the proposer stamps into commands, bounded against clock jumps.
//!
//! The table applies every command as of the time stamped in it (it never
//! reads a clock), so the proposer's clock is the pair's: a sweep stamped
//! 31 days ahead removes every client, one stamped a few minutes ahead
//! marks them all down. A wall clock can jump (an NTP step, an operator's
//! `date`, a host resumed from a snapshot); the monotonic clock cannot.
//!
//! # The rule
//!
//! Stamps run on the monotonic clock from an anchor, the pair's time at a
//! monotonic instant; the wall clock is followed only while it stays
//! within `limit` (one heartbeat interval of the replicated settings) of
//! that:
//!
//! - `stamp = wall` when `wall <= anchor + elapsed + limit` (the anchor
//!   moves to it: ordinary clock behaviour, slews, small steps and steps
//!   back are followed);
//! - otherwise `stamp = anchor + elapsed + limit`, and the anchor stays: a
//!   forward jump is not followed (logged, rate-limited), so the pair's
//!   time keeps running at the monotonic clock's rate, one `limit` ahead at
//!   most. A client that heartbeats is then never seen silent for more
//!   than two intervals, short of the three that mark it down.
//!
//! Where the anchor comes from:
//!
//! - a member follows the stamps it sees commit: once two of another
//!   member's stamps at least `limit` apart on the monotonic clock agree
//!   with it (their difference is the monotonic time between them, within
//!   `limit`), the pair's time is anchored there. A replay of old entries
//!   at start-up runs far faster than the time they span, so it anchors
//!   nothing. A backup whose clock is 31 days ahead thus stamps, once it
//!   serves, with the time the pair ran on;
//! - with no anchor (the first leader after the whole pair was down, the
//!   standalone `serve`), the wall clock is taken as it is, once.
//!
//! What it does not cover: a member whose clock is already wrong when the
//! whole pair starts, and which serves before it has seen another member
//! commit. A backward step is followed: it can only delay what the table
//! does (a client's last heard time never moves back, see `table`).

use std::time::Duration;

use tokio::time::Instant;

/// One stamp, and by how much the wall clock was ahead of what the rule
/// allows (then the stamp is the bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Milliseconds since the Unix epoch, to stamp into a command.
    pub ms: u64,
    /// The wall clock was this far beyond the bound, if it was.
    pub ahead_ms: Option<u64>,
}

/// The rule's state (see the module's documentation). Sans-IO: every
/// input carries its own wall and monotonic time.
#[derive(Debug, Clone, Default)]
pub struct Stamper {
    /// The pair's time at a monotonic instant.
    anchor: Option<(u64, Instant)>,
    /// The first of the observed stamps the next anchor is checked against.
    window: Option<(u64, Instant)>,
    /// The latest stamp this member bounded: a stamp the member sees commit
    /// at or below it may be its own, and must not move the anchor.
    bounded: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Stamper {
    /// A stamper with no anchor yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pair's time at `now`, as far as this member knows it.
    pub fn projected(&self, now: Instant) -> Option<u64> {
        self.anchor
            .map(|(at_ms, at)| at_ms.saturating_add(ms(now.saturating_duration_since(at))))
    }

    /// The time to stamp into a command proposed now: `wall_ms` from the
    /// wall clock, `now` from the monotonic one, `limit_ms` the step the
    /// rule follows.
    #[must_use]
    pub fn stamp(&mut self, wall_ms: u64, now: Instant, limit_ms: u64) -> Stamp {
        match self.projected(now).map(|p| p.saturating_add(limit_ms)) {
            Some(bound) if wall_ms > bound => {
                self.bounded = self.bounded.max(bound);
                Stamp {
                    ms: bound,
                    ahead_ms: Some(wall_ms - bound),
                }
            }
            _ => {
                self.anchor = Some((wall_ms, now));
                Stamp {
                    ms: wall_ms,
                    ahead_ms: None,
                }
            }
        }
    }

    /// A committed command stamped `stamped_ms` was applied at `now`.
    pub fn observe(&mut self, stamped_ms: u64, now: Instant, limit_ms: u64) {
        if stamped_ms <= self.bounded {
            return;
        }
        match self.window {
            Some((first_ms, first)) if stamped_ms >= first_ms => {
                let elapsed = ms(now.saturating_duration_since(first));
                if elapsed < limit_ms.max(1) {
                    return;
                }
                // Live commits: the stamps advanced as the monotonic clock did.
                if (stamped_ms - first_ms).abs_diff(elapsed) <= limit_ms {
                    self.anchor = Some((stamped_ms, now));
                }
                self.window = Some((stamped_ms, now));
            }
            _ => self.window = Some((stamped_ms, now)),
        }
    }
}

/// A [`Stamper`] behind a lock, with the wall and monotonic clocks and a
/// rate-limited warning: what an applier holds.
#[derive(Debug, Default)]
pub struct Clock {
    stamper: std::sync::Mutex<Stamper>,
    log: cluster::ratelog::RateLimiter,
}

impl Clock {
    /// A clock with no anchor yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stamper> {
        self.stamper.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The time to stamp into a command proposed now (see the rule).
    pub fn stamp(&self, limit_ms: u64) -> u64 {
        let stamp = self.lock().stamp(crate::clock::now_ms(), Instant::now(), limit_ms);
        if let Some(ahead_ms) = stamp.ahead_ms {
            cluster::warn_limited!(
                self.log,
                "clock ahead",
                ahead_ms,
                stamp = stamp.ms,
                "this host's wall clock jumped ahead of the pair's time: commands are stamped with \
                 the pair's time (it follows the monotonic clock) until the wall clock is back \
                 within one heartbeat interval of it; check the host's time source"
            );
        }
        stamp.ms
    }

    /// A committed command stamped `stamped_ms` was applied now.
    pub fn observe(&self, stamped_ms: u64, limit_ms: u64) {
        self.lock().observe(stamped_ms, Instant::now(), limit_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{ClientReport, ClientState, Command, LicenseTable, TableConfig};

    const HB: u64 = 30_000;
    const DAY: u64 = 86_400_000;
    const T0: u64 = 1_700_000_000_000;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A table with `n` clients registered at `at`.
    fn table_with_clients(n: usize, at: u64) -> LicenseTable {
        let mut t = LicenseTable::new(TableConfig::default());
        for i in 0..n {
            let index = t.applied_index() + 1;
            t.apply_command(
                index,
                Command::Register {
                    now_ms: at,
                    id: format!("sw{i}"),
                    serial: format!("SN{i}"),
                    address: "192.0.2.50:4000".into(),
                    version: "8.10".into(),
                    report: ClientReport::default(),
                },
            )
            .unwrap();
        }
        t
    }

    fn apply(t: &mut LicenseTable, command: Command) {
        let index = t.applied_index() + 1;
        t.apply_command(index, command).unwrap();
    }

    /// The leader's wall clock jumps 31 days ahead while it serves. It
    /// goes on stamping heartbeats and sweeps for ten minutes: every stamp
    /// stays within one heartbeat interval of the monotonic clock's time,
    /// and no client goes down or leaves the table.
    ///
    /// Control: the same commands stamped with the wall clock remove
    /// every client at the first sweep (what the issue found).
    #[test]
    fn a_forward_jump_of_the_leaders_clock_purges_nobody() {
        let start = Instant::now();
        let mut stamper = Stamper::new();
        assert_eq!(stamper.stamp(T0, start, HB).ms, T0);
        let mut bounded = table_with_clients(3, T0);
        let mut unbounded = bounded.clone();
        let jump = 31 * DAY;
        let mut capped = 0;
        // Every 10 s: a sweep; every 30 s: a heartbeat from each client.
        for step in 1..=60u64 {
            let now = start + secs(10 * step);
            let wall = T0 + 10_000 * step + if step >= 3 { jump } else { 0 };
            let commands = |stamp: u64| {
                let mut out = vec![Command::Sweep { now_ms: stamp }];
                if step % 3 == 0 {
                    for i in 0..3 {
                        out.push(Command::Heartbeat {
                            now_ms: stamp,
                            id: format!("sw{i}"),
                            address: "192.0.2.50:4000".into(),
                            report: ClientReport::default(),
                        });
                    }
                }
                out
            };
            let stamp = stamper.stamp(wall, now, HB);
            capped += u32::from(stamp.ahead_ms.is_some());
            let monotonic_time = T0 + 10_000 * step;
            assert!(
                stamp.ms >= monotonic_time && stamp.ms <= monotonic_time + HB,
                "step {step}: stamp {} is not within one interval of {monotonic_time}",
                stamp.ms
            );
            for command in commands(stamp.ms) {
                stamper.observe(stamp.ms, now, HB);
                apply(&mut bounded, command);
            }
            for command in commands(wall) {
                // Heartbeats of removed clients are refused: what the
                // switches then see is "unknown client".
                let index = unbounded.applied_index() + 1;
                let _ = unbounded.apply_command(index, command);
            }
        }
        assert_eq!(capped, 58, "every stamp after the jump is bounded");
        assert_eq!(bounded.state().clients.len(), 3);
        // The step of one interval the rule allows shows as one heartbeat
        // missed at most, short of the three that mark a client down.
        assert!(
            bounded
                .state()
                .clients
                .values()
                .all(|c| c.state == ClientState::Up && c.stats.missed_total <= 1),
            "{:?}",
            bounded.state().clients
        );
        assert!(
            unbounded.state().clients.is_empty(),
            "control: the wall clock's stamps purge"
        );
    }

    /// A follower whose clock is 31 days ahead anchors on the stamps it
    /// sees commit while the other server serves; when it serves itself
    /// it stamps the pair's time, not its own.
    #[test]
    fn a_backup_ahead_stamps_the_pairs_time_once_it_serves() {
        let start = Instant::now();
        let mut backup = Stamper::new();
        // The leader's sweeps and heartbeats commit every 10 s.
        for step in 0..=6u64 {
            backup.observe(T0 + 10_000 * step, start + secs(10 * step), HB);
        }
        assert_eq!(backup.projected(start + secs(60)), Some(T0 + 60_000));
        // The leader is gone; 5 s later the backup serves.
        let now = start + secs(65);
        let stamp = backup.stamp(T0 + 65_000 + 31 * DAY, now, HB);
        assert_eq!(stamp.ms, T0 + 65_000 + HB);
        assert_eq!(stamp.ahead_ms, Some(31 * DAY - HB));
        // Its own bounded stamps, seen committing, do not move its anchor
        // (else each would carry it one interval further).
        let second = backup.stamp(T0 + 95_000 + 31 * DAY, now + secs(30), HB);
        assert_eq!(second.ms, T0 + 95_000 + HB);
        backup.observe(stamp.ms, now + secs(1), HB);
        backup.observe(second.ms, now + secs(31), HB);
        assert_eq!(
            backup.stamp(T0 + 31 * DAY, now + secs(60), HB).ms,
            T0 + 125_000 + HB
        );
    }

    /// A replay of old entries at start-up anchors nothing: the entries
    /// span hours of the pair's time in milliseconds of this member's.
    /// Live commits after it do.
    #[test]
    fn a_replay_is_not_taken_for_the_pairs_time() {
        let start = Instant::now();
        let mut member = Stamper::new();
        for i in 0..1000u64 {
            member.observe(T0 - DAY + 60_000 * i, start + Duration::from_millis(i), HB);
        }
        assert_eq!(member.projected(start), None);
        // The leader's live stamps, every 10 s from now.
        for step in 0..=7u64 {
            member.observe(T0 + 10_000 * step, start + secs(2 + 10 * step), HB);
        }
        assert_eq!(member.projected(start + secs(72)), Some(T0 + 70_000));
    }

    /// Ordinary clock behaviour is followed: small steps either way, and a
    /// first stamp with no anchor is the wall clock as it is.
    #[test]
    fn small_steps_and_steps_back_are_followed() {
        let start = Instant::now();
        let mut s = Stamper::new();
        assert_eq!(s.stamp(T0 + 5 * DAY, start, HB).ms, T0 + 5 * DAY);
        let mut s = Stamper::new();
        assert_eq!(s.stamp(T0, start, HB).ms, T0);
        // 20 s ahead after 1 s: within one interval, followed.
        let step = s.stamp(T0 + 21_000, start + secs(1), HB);
        assert_eq!((step.ms, step.ahead_ms), (T0 + 21_000, None));
        // Back by an hour: followed (it only delays what the table does).
        assert_eq!(s.stamp(T0 - 3_600_000, start + secs(2), HB).ms, T0 - 3_600_000);
        // From there, a jump of two intervals is not.
        let jumped = s.stamp(T0 - 3_600_000 + 61_000, start + secs(3), HB);
        assert_eq!(jumped.ms, T0 - 3_600_000 + 1_000 + HB);
        assert_eq!(jumped.ahead_ms, Some(30_000));
    }
}
