//! The pair's time: what the serving node stamps into commands.
//!
//! The table applies every command as of the time stamped in it (it never
//! reads a clock), so the stamps are the pair's clock: a sweep stamped 31
//! days ahead removes every client, one stamped a few minutes ahead marks
//! them all down, and a stamp behind the times the table holds followed by
//! one on time does the same. A wall clock can jump (an NTP step, an
//! operator's `date`, a host resumed from a snapshot, a host that boots
//! with a wrong clock); the monotonic clock cannot, but it means nothing
//! across hosts or restarts. The pair's time is built from both, like a
//! hybrid logical clock.
//!
//! # The rule
//!
//! Each member keeps its view of the pair's time, `P`, an anchor (a time
//! at a monotonic instant) that runs on its monotonic clock:
//!
//! 1. **Anchored on what commits.** A stamp this member sees commit that
//!    it did not make itself (the serving node's, a replay at start-up,
//!    the table's newest time when a snapshot is restored) becomes `P`
//!    there, ahead of `P` or behind it: the member always continues from
//!    the pair's time, never from its own wall clock. A new serving node
//!    so goes on from where the last one stopped, whatever its wall clock
//!    says: after a restart, after catching up late, after the other's
//!    clock stepped. Its own stamps that commit after a later stamp of
//!    another (a new leader stamps before it has applied its
//!    predecessor's last entries) are followed as another's.
//! 2. **Forward on its own, back only to follow the table.** `P` runs
//!    forward from its anchor (rule 3 never steps it back); it goes back
//!    only to follow a stamp that committed behind it, never held up by
//!    what this member stamped before. Two members' views can differ: one
//!    ran its view on while the pair committed nothing, the other,
//!    restarted, went on from the last commit (the outage is not
//!    silence). A member held up by its own older stamps would take the
//!    clients the other heard since that far ahead at its next takeover
//!    and mark them down (seeds 24551 and 56380 of the pair simulation).
//!    Going back is harmless: the table keeps a client's last heard time
//!    from moving back, so a time behind the table's only makes clients
//!    look heard more recently, until `P` passes it.
//! 3. **Pulled by the wall clock, a bounded step at a time.** A stamp is
//!    the wall clock when that is within reach: `P` may be pulled ahead
//!    of the monotonic clock by at most half a heartbeat interval at once
//!    and by 1/8 of the monotonic time that passes (a budget that refills
//!    at that rate, up to half an interval; a member starts with none,
//!    and pulls it sees commit spend it too). A wall clock behind `P` slows
//!    `P` to 7/8 of the monotonic rate until they meet, never further.
//! 4. With no anchor at all (a brand-new pair, the standalone `serve`),
//!    the wall clock is taken as it is until the first stamp commits,
//!    which anchors every member.
//!
//! So a stamp is ahead of the stamp it goes on from (the last this member
//! made or saw commit) by at most `elapsed × 9/8 + interval / 2` of the
//! monotonic time between them: a client that heartbeats every interval
//! is seen silent for at most about
//! 1.6 intervals, short of the three (by default) that mark it down,
//! whatever one member's wall clock does, and through any failover. A
//! wall clock that is wrong and stays wrong drags the pair's time at 1/8
//! of the monotonic rate (warned, rate-limited); a right one after a whole
//! pair outage is caught up at the same rate (the outage does not count
//! as the clients' silence).
//!
//! Only the serving node's stamps are the pair's time: a key a server
//! submits carries its own clock ([`Command::pair_time_ms`]). The table
//! keeps a client's last heard time from moving back (`table`), and a
//! restored table gives its newest time ([`LicenseTable::latest_stamp_ms`]).
//!
//! [`Command::pair_time_ms`]: crate::table::Command::pair_time_ms
//! [`LicenseTable::latest_stamp_ms`]: crate::table::LicenseTable::latest_stamp_ms

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::{Source, System};

/// The wall clock pulls the pair's time ahead of the monotonic clock by at
/// most 1/`SLEW` of the monotonic time passed (beyond the burst), and a
/// wall clock behind it slows it by as much.
pub const SLEW: u64 = 8;

/// Own stamps kept to recognise them when they commit.
const OWN_KEPT: usize = 4096;

/// One stamp, with the wall clock it was made at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Milliseconds since the Unix epoch, to stamp into a command.
    pub ms: u64,
    /// The wall clock when it was made.
    pub wall_ms: u64,
}

impl Stamp {
    /// How far the wall clock is ahead of the stamp (negative: behind).
    pub fn wall_ahead_ms(&self) -> i64 {
        let d = i128::from(self.wall_ms) - i128::from(self.ms);
        i64::try_from(d).unwrap_or(if d > 0 { i64::MAX } else { i64::MIN })
    }
}

/// The rule's state (see the module's documentation). Sans-IO: every
/// input carries its own wall and monotonic time. Times inside are in
/// microseconds, so that a slew of 1/8 is not lost to rounding between
/// stamps a millisecond apart.
#[derive(Debug, Clone, Default)]
pub struct Stamper {
    /// The pair's time (µs since the epoch) at a monotonic instant.
    anchor: Option<(u64, Instant)>,
    /// How far (µs) the pair's time may still be pulled ahead of the
    /// monotonic clock, and when that was last refilled.
    budget_us: u64,
    refilled: Option<Instant>,
    /// This member's own stamps not yet seen committing, oldest first.
    own: VecDeque<u64>,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Stamper {
    /// A stamper with no anchor and no budget yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pair's time at `now` (ms), as far as this member knows it.
    pub fn projected(&self, now: Instant) -> Option<u64> {
        self.projected_us(now).map(|p| p / 1000)
    }

    fn projected_us(&self, now: Instant) -> Option<u64> {
        self.anchor
            .map(|(at_us, at)| at_us.saturating_add(us(now.saturating_duration_since(at))))
    }

    /// Refills the budget at 1/[`SLEW`] of the monotonic rate, up to half
    /// of `limit_ms`.
    fn refill(&mut self, now: Instant, limit_ms: u64) {
        let cap = limit_ms.saturating_mul(1000) / 2;
        let earned = self
            .refilled
            .map_or(0, |at| us(now.saturating_duration_since(at)) / SLEW);
        self.budget_us = self.budget_us.saturating_add(earned).min(cap);
        self.refilled = Some(self.refilled.map_or(now, |at| at.max(now)));
    }

    /// The time to stamp into a command proposed now: `wall_ms` from the
    /// wall clock, `now` from the monotonic one, `limit_ms` the heartbeat
    /// interval (the burst is half of it).
    #[must_use]
    pub fn stamp(&mut self, wall_ms: u64, now: Instant, limit_ms: u64) -> Stamp {
        self.refill(now, limit_ms);
        let Some((at_us, at)) = self.anchor else {
            // Nothing committed yet to go on from: the wall clock as it
            // is, and nothing kept (a key submitted by a member that has
            // seen nothing must not become its time). Once a stamp
            // commits, it is the anchor.
            return Stamp { ms: wall_ms, wall_ms };
        };
        let wall_us = wall_ms.saturating_mul(1000);
        let elapsed = us(now.saturating_duration_since(at));
        let free = at_us.saturating_add(elapsed);
        let pair_us = if wall_us >= free {
            let gain = (wall_us - free).min(self.budget_us);
            self.budget_us -= gain;
            free + gain
        } else {
            // Behind: slow down towards the wall clock, never back.
            wall_us.max(at_us.saturating_add(elapsed - elapsed / SLEW))
        };
        self.anchor = Some((pair_us, now));
        let ms = pair_us / 1000;
        if self.own.len() >= OWN_KEPT {
            self.own.pop_front();
        }
        self.own.push_back(ms);
        Stamp { ms, wall_ms }
    }

    /// A committed command stamped `stamped_ms` (the pair's time) was
    /// applied at `now`; or a restored table's newest time.
    pub fn observe(&mut self, stamped_ms: u64, now: Instant, limit_ms: u64) {
        self.refill(now, limit_ms);
        // Own stamps commit in the order they were made (not always in
        // the order of their values: `P` may have gone back between
        // them); those made before this one were dropped or are seen.
        if let Some(i) = self.own.iter().position(|&own| own == stamped_ms) {
            self.own.drain(..=i);
            return;
        }
        // Another's. Own stamps behind it that commit after it are
        // followed as another's (rule 1): the table went past them.
        self.own.retain(|&own| own >= stamped_ms);
        let stamped_us = stamped_ms.saturating_mul(1000);
        if let Some(p) = self.projected_us(now) {
            // A pull ahead of our clock spends our budget as our own would.
            self.budget_us = self.budget_us.saturating_sub(stamped_us.saturating_sub(p));
        }
        self.anchor = Some((stamped_us, now));
    }
}

/// A [`Stamper`] behind a lock, with the clocks it reads and a
/// rate-limited warning: what an applier holds.
#[derive(Debug)]
pub struct PairClock {
    stamper: std::sync::Mutex<Stamper>,
    source: Arc<dyn Source>,
    log: cluster::ratelog::RateLimiter,
}

impl Default for PairClock {
    fn default() -> Self {
        Self::new()
    }
}

impl PairClock {
    /// The pair's time on this host's clocks, with no anchor yet.
    pub fn new() -> Self {
        Self::with_source(Arc::new(System))
    }

    /// The pair's time on `source`'s clocks (a test's [`crate::clock::Manual`]).
    pub fn with_source(source: Arc<dyn Source>) -> Self {
        Self {
            stamper: std::sync::Mutex::default(),
            source,
            log: cluster::ratelog::RateLimiter::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stamper> {
        self.stamper.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The time to stamp into a command proposed now (see the rule).
    pub fn stamp(&self, limit_ms: u64) -> u64 {
        let stamp = self
            .lock()
            .stamp(self.source.wall_ms(), self.source.monotonic(), limit_ms);
        let off = stamp.wall_ahead_ms();
        if off.unsigned_abs() > limit_ms / 2 {
            let (how, what) = if off > 0 {
                (
                    "ahead of",
                    "the pair's time catches up with it at 1/8 of the monotonic clock's rate; after \
                     a jump of this host's clock, check its time source",
                )
            } else {
                (
                    "behind",
                    "the pair's time does not go back: it runs at 7/8 of the monotonic clock's rate \
                     until the wall clock meets it; after a step back of this host's clock, check \
                     its time source",
                )
            };
            cluster::warn_limited!(
                self.log,
                how,
                wall_off_ms = off,
                stamp = stamp.ms,
                "this host's wall clock is {} ms {how} the pair's time: commands are stamped with \
                 the pair's time; {what}",
                off.unsigned_abs()
            );
        }
        stamp.ms
    }

    /// A committed command stamped `stamped_ms` was applied now (or a
    /// restored table's newest time, see the rule).
    pub fn observe(&self, stamped_ms: u64, limit_ms: u64) {
        let now = self.source.monotonic();
        self.lock().observe(stamped_ms, now, limit_ms);
    }
}

#[cfg(test)]
mod tests;
