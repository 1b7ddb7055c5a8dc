//! How long the store's durable writes (one fsync each) take, for a
//! node's metrics: a fixed set of buckets kept in atomics, so that the
//! member task records without a lock and a reader takes a copy at any
//! time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: 100 µs (a fast SSD) up to
/// 2.5 s (a disk in trouble).
pub const FLUSH_BUCKETS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Durations of the store's durable writes. Shared: the store records,
/// anyone holding a clone of the `Arc` reads.
#[derive(Debug, Default)]
pub struct FlushTimes {
    count: AtomicU64,
    sum_ns: AtomicU64,
    /// Writes no longer than `FLUSH_BUCKETS[i]` (not cumulative).
    buckets: [AtomicU64; FLUSH_BUCKETS.len()],
}

/// A copy of [`FlushTimes`] at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlushSnapshot {
    /// Durable writes.
    pub count: u64,
    /// Their total duration, in seconds.
    pub sum_seconds: f64,
    /// `(upper bound in seconds, writes at most that long)`, cumulative,
    /// ascending, as Prometheus histograms have them (`+Inf` is `count`).
    pub buckets: Vec<(f64, u64)>,
}

impl FlushTimes {
    /// Records one durable write of `took`.
    pub fn record(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = FLUSH_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The writes so far.
    pub fn snapshot(&self) -> FlushSnapshot {
        let mut cumulative = 0;
        let buckets = FLUSH_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| {
                cumulative += n.load(Ordering::Relaxed);
                (*bound, cumulative)
            })
            .collect();
        FlushSnapshot {
            // Read last: never fewer writes than the buckets hold.
            count: self.count.load(Ordering::Relaxed).max(cumulative),
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_land_in_cumulative_buckets() {
        let t = FlushTimes::default();
        t.record(Duration::from_micros(50));
        t.record(Duration::from_millis(3));
        t.record(Duration::from_secs(4));
        let s = t.snapshot();
        assert_eq!(s.count, 3);
        assert!((s.sum_seconds - 4.003_05).abs() < 1e-9, "{}", s.sum_seconds);
        assert_eq!(s.buckets[0], (0.000_1, 1));
        // 3 ms is above 2.5 ms, within 5 ms.
        assert_eq!(s.buckets[4], (0.002_5, 1));
        assert_eq!(s.buckets[5], (0.005, 2));
        // 4 s is beyond the last bucket: only in the count (+Inf).
        assert_eq!(s.buckets.last(), Some(&(2.5, 2)));
    }
}
