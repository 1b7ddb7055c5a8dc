//! The clocks vipool reads, in one place: the wall clock (milliseconds
//! since the Unix epoch) and the monotonic clock.
//!
//! The wall clock says what time it is and can jump (an NTP step, an
//! operator's `date`, a host resumed from a snapshot); the monotonic clock
//! says how much time passed and never jumps. The license table reads
//! neither: the serving node stamps the pair's time into each command
//! (`server::stamp`), computed from both.
//!
//! Code that needs "now" asks a [`Source`]: [`System`] in the daemon,
//! [`Manual`] in a test that moves time by hand. State machines take their
//! time as arguments (`stamp::Stamper`, the pair simulation's virtual
//! clocks), so they need neither.
//!
//! ```
//! use std::time::Duration;
//! use vipool::clock::{Manual, Source};
//!
//! let clock = Manual::new(1_767_225_600_000);
//! let start = clock.monotonic();
//! clock.advance(Duration::from_secs(2));
//! // An NTP step moves the wall clock only.
//! clock.step_wall(-60_000);
//! assert_eq!(clock.wall_ms(), 1_767_225_542_000);
//! assert_eq!(clock.monotonic() - start, Duration::from_secs(2));
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The wall clock, in milliseconds since the Unix epoch (0 before it).
/// Proposals are stamped with the pair's time instead (`server::stamp`),
/// which this alone must not decide.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The monotonic clock (tokio's, so that a test with paused time moves it).
pub fn monotonic() -> Instant {
    Instant::now()
}

/// Where a component reads both clocks.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// The wall clock, in milliseconds since the Unix epoch.
    fn wall_ms(&self) -> u64;
    /// The monotonic clock.
    fn monotonic(&self) -> Instant;
}

/// The host's clocks: [`now_ms`] and [`monotonic`].
#[derive(Debug, Clone, Copy, Default)]
pub struct System;

impl Source for System {
    fn wall_ms(&self) -> u64 {
        now_ms()
    }

    fn monotonic(&self) -> Instant {
        monotonic()
    }
}

/// Clocks a test sets: both advance together with [`Manual::advance`], the
/// wall clock alone jumps with [`Manual::step_wall`]. Clones share the
/// same time.
#[derive(Debug, Clone)]
pub struct Manual {
    now: Arc<Mutex<(u64, Instant)>>,
}

impl Manual {
    /// Clocks at `wall_ms`, the monotonic one at the real one's now.
    pub fn new(wall_ms: u64) -> Self {
        Self {
            now: Arc::new(Mutex::new((wall_ms, Instant::now()))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, Instant)> {
        self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Time passes: both clocks move by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        now.0 = now
            .0
            .saturating_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX));
        now.1 += by;
    }

    /// The wall clock alone jumps by `by_ms` (back if negative).
    pub fn step_wall(&self, by_ms: i64) {
        let mut now = self.lock();
        now.0 = now.0.saturating_add_signed(by_ms);
    }
}

impl Source for Manual {
    fn wall_ms(&self) -> u64 {
        self.lock().0
    }

    fn monotonic(&self) -> Instant {
        self.lock().1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clocks_read_the_host() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let wall = System.wall_ms();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(before <= wall && wall <= after, "{before} <= {wall} <= {after}");
        let a = System.monotonic();
        let b = System.monotonic();
        assert!(b >= a);
    }

    /// A step of the wall clock leaves the monotonic clock alone; clones
    /// see the same time.
    #[test]
    fn a_manual_clock_steps_its_wall_clock_alone() {
        let clock = Manual::new(1_000_000);
        let other = clock.clone();
        let start = clock.monotonic();
        clock.advance(Duration::from_millis(1500));
        assert_eq!(
            (other.wall_ms(), other.monotonic() - start),
            (1_001_500, Duration::from_millis(1500))
        );
        clock.step_wall(31 * 86_400_000);
        assert_eq!(other.wall_ms(), 1_001_500 + 31 * 86_400_000);
        clock.step_wall(-2 * 31 * 86_400_000);
        assert_eq!(other.wall_ms(), 0, "never before the epoch");
        assert_eq!(other.monotonic() - start, Duration::from_millis(1500));
    }
}
