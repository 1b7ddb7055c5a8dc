//! Rate-limited logging for warnings that the network can trigger.
//!
//! Anything a stranger can make us log (a refused connection, a bad
//! frame, a failed handshake) must not let them fill the disk: each cause
//! is written at most once per interval (a minute in the daemon), and the
//! line says how many like it were left out since the last one.
//!
//! ```
//! use std::time::Duration;
//! use cluster::ratelog::RateLimiter;
//!
//! let limiter = RateLimiter::new(Duration::from_secs(60));
//! let peer = "192.0.2.99:40000";
//! for _ in 0..1000 {
//!     // One line, then nothing for a minute; the next line says
//!     // `suppressed=999`.
//!     cluster::warn_limited!(limiter, "stranger", %peer, "connection from a stranger closed");
//! }
//! assert_eq!(limiter.allow("stranger"), None);
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a cause may be logged in the daemon.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Lets each cause through at most once per interval and counts the rest.
///
/// Causes are `&'static str`, so the table stays as small as the set of
/// call sites however many peers or packets the network throws at us.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    causes: Mutex<BTreeMap<&'static str, Slot>>,
}

#[derive(Debug)]
struct Slot {
    logged: Instant,
    suppressed: u64,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new(DEFAULT_INTERVAL)
    }
}

impl RateLimiter {
    /// A limiter that lets each cause through once per `interval`.
    pub fn new(interval: Duration) -> RateLimiter {
        RateLimiter {
            interval,
            causes: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether a line for `cause` may be written now: `Some(n)` with the
    /// number of events of that cause left out since the last line, or
    /// `None` (the event is counted).
    pub fn allow(&self, cause: &'static str) -> Option<u64> {
        self.allow_at(cause, Instant::now())
    }

    fn allow_at(&self, cause: &'static str, now: Instant) -> Option<u64> {
        let mut causes = self.causes.lock().unwrap_or_else(|p| p.into_inner());
        match causes.get_mut(cause) {
            Some(slot) if now.duration_since(slot.logged) < self.interval => {
                slot.suppressed += 1;
                None
            }
            Some(slot) => {
                let n = std::mem::take(&mut slot.suppressed);
                slot.logged = now;
                Some(n)
            }
            None => {
                causes.insert(
                    cause,
                    Slot {
                        logged: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// `tracing::warn!` through a [`RateLimiter`]:
/// `warn_limited!(limiter, "cause", fields…, "message")`. The line carries
/// `suppressed`, the number of events of that cause left out before it.
#[macro_export]
macro_rules! warn_limited {
    ($limiter:expr, $cause:expr, $($rest:tt)+) => {
        if let Some(suppressed) = $limiter.allow($cause) {
            ::tracing::warn!(suppressed, $($rest)+);
        }
    };
}

/// `tracing::error!` through a [`RateLimiter`] (see [`warn_limited!`]).
#[macro_export]
macro_rules! error_limited {
    ($limiter:expr, $cause:expr, $($rest:tt)+) => {
        if let Some(suppressed) = $limiter.allow($cause) {
            ::tracing::error!(suppressed, $($rest)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_cause_per_interval_with_the_count_of_the_rest() {
        let l = RateLimiter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(l.allow_at("a", t0), Some(0));
        for s in 1..60 {
            assert_eq!(l.allow_at("a", t0 + Duration::from_secs(s)), None);
        }
        // Another cause has its own slot.
        assert_eq!(l.allow_at("b", t0 + Duration::from_secs(1)), Some(0));
        // A minute after the last line: one line saying 59 were left out.
        assert_eq!(l.allow_at("a", t0 + Duration::from_secs(60)), Some(59));
        assert_eq!(l.allow_at("a", t0 + Duration::from_secs(61)), None);
        assert_eq!(l.allow_at("a", t0 + Duration::from_secs(121)), Some(1));
    }
}
