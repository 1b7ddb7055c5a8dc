//! How often one source address may register, and how fast one client
//! may send requests: a token bucket per address (per client id), held in
//! the server's shared state (not replicated: it is the serving node's own
//! policy, and a new VIP holder starts with full buckets).
//!
//! A bucket holds up to `burst` registrations and refills at `per_s` a
//! second. The burst is the number of clients one address may hold
//! (`license.max_clients_per_source`): after a failover every client of an
//! address re-registers at once, and none of them should wait.
//!
//! Time is an argument (`now_ms`), so the buckets are tested without a
//! clock. The map is bounded: past [`MAX_SOURCES`] addresses, full buckets
//! (addresses quiet for a while) are forgotten first; if a flood from more
//! addresses than that leaves none full, the buckets start over: memory
//! stays bounded, and the per-address client limit (checked against the
//! table) still holds.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Registrations per source address.
pub type SourceRate = Rate<IpAddr>;

/// Requests per client id (the id a switch's certificate names).
pub type ClientRate = Rate<String>;

/// Most source addresses tracked at once.
pub const MAX_SOURCES: usize = 65_536;

/// Tokens are counted in thousandths, so refills are exact in integers.
const ONE: u64 = 1000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Thousandths of a registration available.
    tokens: u64,
    /// When `tokens` was last brought up to date.
    at_ms: u64,
}

/// A token bucket per key (a source address, a client id).
#[derive(Debug)]
pub struct Rate<K> {
    per_s: u64,
    burst: u64,
    buckets: Mutex<BTreeMap<K, Bucket>>,
}

impl<K: Ord + Clone> Rate<K> {
    /// Buckets of `burst` registrations refilled at `per_s` a second (both
    /// at least 1).
    pub fn new(per_s: u32, burst: u32) -> Self {
        Self {
            per_s: u64::from(per_s.max(1)),
            burst: u64::from(burst.max(1)),
            buckets: Mutex::new(BTreeMap::new()),
        }
    }

    /// The refill rate, registrations a second.
    pub fn per_s(&self) -> u32 {
        u32::try_from(self.per_s).unwrap_or(u32::MAX)
    }

    fn refilled(&self, bucket: Bucket, now_ms: u64) -> Bucket {
        // A clock that steps back refills nothing.
        let elapsed = now_ms.saturating_sub(bucket.at_ms);
        Bucket {
            tokens: bucket
                .tokens
                .saturating_add(elapsed.saturating_mul(self.per_s))
                .min(self.burst * ONE),
            at_ms: bucket.at_ms.max(now_ms),
        }
    }

    /// Takes one token (a registration, a request) for `source` at `now_ms`.
    ///
    /// # Errors
    /// The bucket is empty: in how many milliseconds the next one would be
    /// taken.
    pub fn take(&self, source: K, now_ms: u64) -> Result<(), u64> {
        // A short critical section, never held across an await.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&source) && buckets.len() >= MAX_SOURCES {
            let full = self.burst * ONE;
            buckets.retain(|_, b| self.refilled(*b, now_ms).tokens < full);
            if buckets.len() >= MAX_SOURCES {
                buckets.clear();
            }
        }
        let bucket = buckets.get(&source).copied().unwrap_or(Bucket {
            tokens: self.burst * ONE,
            at_ms: now_ms,
        });
        let mut bucket = self.refilled(bucket, now_ms);
        let result = if bucket.tokens >= ONE {
            bucket.tokens -= ONE;
            Ok(())
        } else {
            Err((ONE - bucket.tokens).div_ceil(self.per_s))
        };
        buckets.insert(source, bucket);
        result
    }

    /// How many keys are tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn a_burst_then_the_rate() {
        let rate = SourceRate::new(10, 3);
        for _ in 0..3 {
            rate.take(ip(1), 1_000).unwrap();
        }
        // Empty: one more in a tenth of a second.
        assert_eq!(rate.take(ip(1), 1_000), Err(100));
        assert_eq!(rate.take(ip(1), 1_050), Err(50));
        rate.take(ip(1), 1_100).unwrap();
        assert!(rate.take(ip(1), 1_100).is_err());
        // Another address has its own bucket.
        rate.take(ip(2), 1_100).unwrap();
        // Quiet for long: full again, never more than the burst.
        for _ in 0..3 {
            rate.take(ip(1), 60_000).unwrap();
        }
        assert!(rate.take(ip(1), 60_000).is_err());
    }

    #[test]
    fn a_clock_that_steps_back_refills_nothing() {
        let rate = SourceRate::new(1, 1);
        rate.take(ip(1), 10_000).unwrap();
        assert!(rate.take(ip(1), 5_000).is_err());
        assert!(rate.take(ip(1), 10_999).is_err());
        rate.take(ip(1), 11_000).unwrap();
    }

    #[test]
    fn ten_thousand_registrations_in_a_second_from_one_address_when_configured() {
        let rate = SourceRate::new(10_000, 10_000);
        for n in 0..10_000u64 {
            rate.take(ip(1), 1_000 + n / 10).unwrap();
        }
    }

    #[test]
    fn the_map_stays_bounded_and_forgets_quiet_addresses_first() {
        let rate = SourceRate::new(1, 2);
        for n in 0..MAX_SOURCES as u32 {
            rate.take(ip(n), 0).unwrap();
        }
        assert_eq!(rate.tracked(), MAX_SOURCES);
        // Two seconds later every bucket is full again: forgotten for a new one.
        rate.take(ip(MAX_SOURCES as u32), 2_000).unwrap();
        assert_eq!(rate.tracked(), 1);
        // Under a flood where none is full, memory still stays bounded.
        for n in 0..MAX_SOURCES as u32 + 10 {
            let _ = rate.take(ip(n), 2_000);
            let _ = rate.take(ip(n), 2_000);
        }
        assert!(rate.tracked() <= MAX_SOURCES);
    }

    #[test]
    fn each_client_id_has_its_own_bucket() {
        let rate = ClientRate::new(100, 2);
        rate.take("sw1".into(), 0).unwrap();
        rate.take("sw1".into(), 0).unwrap();
        assert_eq!(rate.take("sw1".into(), 0), Err(10));
        rate.take("sw2".into(), 0).unwrap();
        rate.take("sw1".into(), 10).unwrap();
    }
}
