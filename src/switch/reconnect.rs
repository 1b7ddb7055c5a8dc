//! When a switch tries the server again, and how long it gives a connect:
//! the reconnect policy, sans-IO (time is an argument; the switch's task
//! reads the clock and sleeps).
//!
//! A run of failures is split in two by the failover window:
//!
//! - within it (a failover: the VIP's next holder answers once it takes
//!   over, after the Master_Down_Interval), an attempt starts at most
//!   `backoff_min` after the previous one started: a connect that timed
//!   out (its SYN went to the dead holder) is retried at once, and one that
//!   failed at once waits the rest of `backoff_min`; except a connect
//!   refused (a TCP reset), which is retried after [`REFUSED_PAUSE`] plus
//!   a spread: in a graceful stop or a handback the VIP's holder keeps the
//!   VIP with its client port closed until the new master is heard (tens
//!   of milliseconds), so a refusal says the VIP is about to move, and a
//!   switch that waited all of `backoff_min` would lose most of it;
//! - past it (the server is down, not failing over), the delay doubles from
//!   `backoff_min` to `backoff_max`, with a spread so that a herd of
//!   switches does not retry in step, and the connect timeout doubles with
//!   it (a path slower than the configured timeout still gets through).
//!
//! A run ends when a session has lasted the failover window: a session
//! that ends sooner (a server that accepts and drops the switch) continues
//! the run, so that a flapping server is backed off too.

use std::time::Duration;

use tokio::time::Instant;

/// How often "server unreachable" is said again while it stays so.
pub(crate) const UNREACHABLE_REPEAT: Duration = Duration::from_secs(60);

/// Failed attempts in a row before the server is called unreachable (and
/// only once the failures outlast the failover window).
pub(crate) const UNREACHABLE_TRIES: u32 = 3;

/// Within the failover window, a connect refused (a TCP reset: the host
/// holding the VIP is up and not listening, as while it hands the VIP
/// over) is tried again this long after the refusal, plus a spread of up
/// to as much again, instead of after `backoff_min`.
///
/// Why this long. The holder refuses from its priority-0 advert until the
/// new master's first advert, tens of milliseconds; a retry every 10 to
/// 20 ms reaches the new holder within that of the move. A refusal costs
/// the holder's kernel one reset and no listener; within the 1 s window a
/// switch sends at most 100 of them, and past it the delays double as for
/// any failure. Never longer than `backoff_min`.
pub(crate) const REFUSED_PAUSE: Duration = Duration::from_millis(10);

/// The policy's settings (from [`super::SwitchConfig`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) connect_timeout: Duration,
    pub(crate) failover_window: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
}

/// What the switch does after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retry {
    /// Wait this long before the next attempt.
    pub(crate) delay: Duration,
    /// Say that the server is unreachable: failing for this long, this many tries.
    pub(crate) unreachable: Option<(Duration, u32)>,
}

/// The reconnect state of one switch.
#[derive(Debug)]
pub(crate) struct Reconnect {
    settings: Settings,
    /// A per-switch number that spreads the delays of a herd without
    /// drawing randomness.
    spread: u64,
    /// When the current run of failures began.
    failing_since: Option<Instant>,
    /// Failed attempts since the last registration.
    tries: u32,
    /// The next delay once past the failover window.
    backoff: Duration,
    /// The connect timeout of the next attempt.
    connect_timeout: Duration,
    /// When "server unreachable" was last said (in this run).
    warned_at: Option<Instant>,
    /// When the current session registered.
    session_since: Option<Instant>,
}

impl Reconnect {
    pub(crate) fn new(mut settings: Settings, spread: u64) -> Self {
        // A zero would retry a refusing server in a tight loop.
        settings.backoff_min = settings.backoff_min.max(Duration::from_millis(1));
        Self {
            settings,
            spread,
            failing_since: None,
            tries: 0,
            backoff: settings.backoff_min,
            connect_timeout: settings.connect_timeout,
            warned_at: None,
            session_since: None,
        }
    }

    /// The connect timeout for the next attempt.
    #[must_use]
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// An attempt that began at `started` failed at `now` (no connection,
    /// or no registration).
    #[must_use]
    pub(crate) fn failed(&mut self, now: Instant, started: Instant) -> Retry {
        self.failed_as(now, started, false)
    }

    /// An attempt that began at `started` had its connect refused at `now`
    /// (a TCP reset): within the failover window it is tried again after
    /// [`REFUSED_PAUSE`] plus a spread; past it, as [`Self::failed`].
    #[must_use]
    pub(crate) fn refused(&mut self, now: Instant, started: Instant) -> Retry {
        self.failed_as(now, started, true)
    }

    fn failed_as(&mut self, now: Instant, started: Instant, refused: bool) -> Retry {
        let since = *self.failing_since.get_or_insert(started);
        self.tries += 1;
        let failing_for = now.saturating_duration_since(since);
        let min = self.settings.backoff_min;
        let delay = if failing_for < self.settings.failover_window {
            if refused {
                let pause = REFUSED_PAUSE.min(min);
                let spread = self.spread % (pause.as_millis() as u64 + 1);
                (pause + Duration::from_millis(spread)).min(min)
            } else {
                min.saturating_sub(now.saturating_duration_since(started))
            }
        } else {
            let jitter = self.spread % (self.backoff.as_millis() as u64 / 4 + 1);
            let delay = self.backoff + Duration::from_millis(jitter);
            self.backoff = (self.backoff * 2).min(self.settings.backoff_max.max(min));
            let longest = self.settings.connect_timeout.max(self.settings.backoff_max);
            self.connect_timeout = (self.connect_timeout * 2).min(longest);
            delay
        };
        let due = self
            .warned_at
            .is_none_or(|at| now.saturating_duration_since(at) >= UNREACHABLE_REPEAT);
        let unreachable = (self.tries >= UNREACHABLE_TRIES
            && failing_for >= self.settings.failover_window
            && due)
            .then(|| {
                self.warned_at = Some(now);
                (failing_for, self.tries)
            });
        Retry { delay, unreachable }
    }

    /// Registered at `now`. When "server unreachable" had been said, how
    /// long the failures lasted and how many tries it took.
    #[must_use]
    pub(crate) fn registered(&mut self, now: Instant) -> Option<(Duration, u32)> {
        let back = self.warned_at.take().map(|_| {
            let since = self.failing_since.unwrap_or(now);
            (now.saturating_duration_since(since), self.tries)
        });
        self.tries = 0;
        self.session_since = Some(now);
        back
    }

    /// The registered session ended at `now`: the delay before the next attempt.
    #[must_use]
    pub(crate) fn session_ended(&mut self, now: Instant) -> Duration {
        let since = self.session_since.take().unwrap_or(now);
        if now.saturating_duration_since(since) < self.settings.failover_window {
            // Dropped as soon as it was let in: back off as for a failure.
            return self.failed(now, now).delay;
        }
        // A session that worked ended (the VIP moved, say): the next holder
        // is likely up already. A new run of failures starts; the first
        // retry comes within backoff_min, spread so that a herd of switches
        // does not reconnect in the same millisecond.
        self.failing_since = Some(now);
        self.tries = 0;
        self.backoff = self.settings.backoff_min;
        self.connect_timeout = self.settings.connect_timeout;
        Duration::from_millis(self.spread % (self.settings.backoff_min.as_millis() as u64).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn settings() -> Settings {
        Settings {
            connect_timeout: 300 * MS,
            failover_window: 1000 * MS,
            backoff_min: 100 * MS,
            backoff_max: 10_000 * MS,
        }
    }

    /// A switch whose every attempt to a dead VIP times out, from `t0`,
    /// until the server answers at `up`: when it registers.
    fn blackholed_until(r: &mut Reconnect, t0: Instant, up: Instant) -> (Instant, Vec<Retry>) {
        let mut now = t0;
        let mut retries = Vec::new();
        loop {
            let started = now;
            let timeout = r.connect_timeout();
            // The attempt reaches the server if it is up when the SYN leaves.
            if started >= up {
                return (started, retries);
            }
            now = started + timeout;
            let retry = r.failed(now, started);
            now += retry.delay;
            retries.push(retry);
        }
    }

    #[test]
    fn a_connect_lost_to_the_dead_holder_is_retried_at_once_during_a_failover() {
        // The holder dies as a switch connects; the backup serves 360 ms
        // later (Master_Down_Interval with 100 ms adverts).
        let mut r = Reconnect::new(settings(), 7);
        let t0 = Instant::now();
        let (reached, retries) = blackholed_until(&mut r, t0, t0 + 360 * MS);
        assert!(retries
            .iter()
            .all(|r| r.delay.is_zero() && r.unreachable.is_none()));
        // Attempts at 0 and 300 ms time out; the one at 600 ms gets through:
        // 240 ms after the takeover, not the kernel's 1 s (or 3 s).
        assert_eq!(reached - t0, 600 * MS);
        assert_eq!(r.registered(reached), None, "a failover is not 'unreachable'");
    }

    #[test]
    fn a_connect_failed_at_once_waits_backoff_min_but_does_not_double_within_the_window() {
        let mut r = Reconnect::new(settings(), 7);
        let t0 = Instant::now();
        let mut now = t0;
        for _ in 0..5 {
            let retry = r.failed(now + MS, now);
            assert_eq!(retry.delay, 99 * MS);
            now += MS + retry.delay;
        }
        assert!(now - t0 < settings().failover_window);
    }

    #[test]
    fn a_refused_connect_is_tried_again_within_a_few_ms_during_a_failover() {
        // The holder hands the VIP over: it refuses from its priority-0
        // advert until the new master is heard 25 ms later.
        for spread in [0, 7, 10, 1234] {
            let mut r = Reconnect::new(settings(), spread);
            let t0 = Instant::now();
            let moved = t0 + 25 * MS;
            let mut now = t0;
            let mut tries = 0;
            while now < moved {
                let retry = r.refused(now + MS, now);
                assert!(retry.unreachable.is_none());
                assert!(
                    retry.delay >= REFUSED_PAUSE && retry.delay <= 2 * REFUSED_PAUSE,
                    "spread {spread}: {:?}",
                    retry.delay
                );
                now += MS + retry.delay;
                tries += 1;
            }
            // Connected at most one pause and its spread (21 ms) after the
            // move, not backoff_min (100 ms) after the first refusal.
            assert!(now - moved <= 21 * MS, "spread {spread}: {:?}", now - moved);
            assert!((2..=3).contains(&tries), "spread {spread}: {tries}");
        }
    }

    #[test]
    fn refusals_that_outlast_the_window_back_off_as_any_failure() {
        let mut r = Reconnect::new(settings(), 0);
        let t0 = Instant::now();
        let mut now = t0;
        let mut delays = Vec::new();
        while now - t0 < Duration::from_secs(30) {
            let retry = r.refused(now + MS, now);
            delays.push(retry.delay);
            now += MS + retry.delay;
        }
        // About 90 refusals in the first second, 11 ms apart (spread 0)...
        let within = delays.iter().filter(|d| **d == 10 * MS).count();
        assert!((80..=100).contains(&within), "{within}: {delays:?}");
        // ...then doubling from backoff_min, as any failure.
        let past: Vec<u128> = delays[within..].iter().map(Duration::as_millis).take(5).collect();
        assert_eq!(past, [100, 200, 400, 800, 1600]);
    }

    #[test]
    fn a_refused_pause_is_never_longer_than_backoff_min() {
        let mut r = Reconnect::new(
            Settings {
                backoff_min: 4 * MS,
                ..settings()
            },
            1234,
        );
        let t0 = Instant::now();
        assert_eq!(r.refused(t0 + MS, t0).delay, 4 * MS);
    }

    #[test]
    fn failures_that_outlast_the_window_back_off_doubling_and_say_unreachable_once() {
        let mut r = Reconnect::new(settings(), 0);
        let t0 = Instant::now();
        let (_, retries) = blackholed_until(&mut r, t0, t0 + Duration::from_secs(120));
        let delays: Vec<u128> = retries.iter().map(|r| r.delay.as_millis()).collect();
        // 300 ms timeouts retried at once within the first second, then
        // doubling (spread 0: no jitter) up to backoff_max.
        assert_eq!(&delays[..8], &[0, 0, 0, 100, 200, 400, 800, 1600], "{delays:?}");
        assert_eq!(*delays.last().unwrap(), 10_000);
        // The connect timeout doubles past the window too, up to backoff_max.
        assert_eq!(r.connect_timeout(), 10_000 * MS);
        let said: Vec<(Duration, u32)> = retries.iter().filter_map(|r| r.unreachable).collect();
        // Once on the fourth failure (at 1.2 s, past the 1 s window), then
        // at most once a minute.
        assert_eq!(said[0], (1200 * MS, 4));
        assert!(said.len() >= 2, "{said:?}");
        assert!(
            said.windows(2).all(|w| w[1].0 >= w[0].0 + UNREACHABLE_REPEAT),
            "{said:?}"
        );
        // Back: how long it took, once.
        let back = r.registered(t0 + Duration::from_secs(121)).unwrap();
        assert_eq!(back.0, Duration::from_secs(121));
        assert_eq!(back.1, retries.len() as u32);
    }

    #[test]
    fn a_session_that_worked_retries_within_backoff_min_and_a_flapping_one_backs_off() {
        let mut r = Reconnect::new(settings(), 1234);
        let t0 = Instant::now();
        let _ = r.registered(t0);
        let delay = r.session_ended(t0 + Duration::from_secs(60));
        assert_eq!(delay, 34 * MS, "1234 % 100");
        // A server that lets the switch register and drops it at once,
        // again and again: the delays grow once that outlasts the window.
        let mut now = t0 + Duration::from_secs(60) + delay;
        let mut delays = Vec::new();
        for _ in 0..20 {
            let _ = r.registered(now);
            let delay = r.session_ended(now + MS);
            delays.push(delay);
            now += MS + delay;
        }
        assert_eq!(delays[0], 100 * MS, "{delays:?}");
        assert!(delays[19] >= Duration::from_secs(6), "{delays:?}");
    }
}
