//! A node's metrics (OpenMetrics text, for Prometheus) and its status page,
//! both on one small read-only HTTP listener (`[metrics] listen`, off by
//! default).
//!
//! Nothing here keeps numbers of its own but the failovers: a scrape or a
//! page load reads what the node already keeps (the server's counters and
//! status, the pool, the VRRP and raft view the glue publishes, the raft
//! store's write times) into one [`Observed`], then renders it. The
//! failovers are recorded by the glue as they happen in a [`FailoverLog`]:
//! a counter, a histogram of their durations and a bounded ring of the
//! last ones for the page's timeline.
//!
//! - `encode`: [`Observed`] as OpenMetrics text (prometheus-client);
//! - `page`: [`Observed`] as one HTML page, every text escaped (client
//!   ids, warnings and causes can come from the network);
//! - `http`: the listener: `GET /metrics`, `GET /`, nothing else.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use vipool::metrics::{FailoverLog, Observed};
//!
//! let log = FailoverLog::default();
//! log.took_over(SystemTime::now(), Duration::from_millis(40), "the peer left (priority 0)");
//! let observed = Observed { failovers: log.snapshot(), ..Observed::default() };
//! let text = vipool::metrics::openmetrics(&observed);
//! assert!(text.contains("vipool_failovers_total 1\n"));
//! assert!(text.ends_with("# EOF\n"));
//! let page = vipool::metrics::status_page(&observed);
//! assert!(page.contains("the peer left (priority 0)"));
//! ```

mod encode;
mod http;
mod page;

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

pub use encode::openmetrics;
pub use http::{serve, Source, OPENMETRICS};
pub use page::{escape, status_page};

use crate::server::ServerView;

/// Failovers kept for the status page's timeline.
pub const FAILOVER_RING: usize = 16;

/// Upper bounds of the failover duration buckets, in seconds: from a
/// graceful handoff (a few milliseconds) to a crash detected after a long
/// Master_Down_Interval.
pub const FAILOVER_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Everything one scrape or one page shows, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// What the license server knows: status, pool, clients, bad frames.
    pub server: ServerView,
    /// What a server of a pair adds: VRRP, raft, the store.
    pub pair: Option<PairObserved>,
    /// The failovers this node took part in since it started.
    pub failovers: Failovers,
}

/// The VRRP and raft side of a server of the pair.
#[derive(Debug, Clone, Default)]
pub struct PairObserved {
    /// This node's name.
    pub node: String,
    /// The other server's name.
    pub peer: String,
    /// The other server's address (its VRRP source).
    pub peer_address: Option<Ipv4Addr>,
    /// This node's own address on the VRRP interface.
    pub own_address: Option<Ipv4Addr>,
    /// The VRRP master as this node last saw it.
    pub vrrp_master: Option<Ipv4Addr>,
    /// The priority advertised now (the lowest while behind the log).
    pub priority: u8,
    /// The configured priority.
    pub configured_priority: u8,
    /// The VRRP advertisement interval.
    pub advert_interval: Duration,
    /// Whether a witness is configured.
    pub witness: bool,
    /// VRRP transitions into Master, Backup, Initialize.
    pub transitions: [(&'static str, u64); 3],
    /// Adverts sent and accepted.
    pub adverts_sent: u64,
    /// Adverts accepted.
    pub adverts_received: u64,
    /// VRRP datagrams dropped, every reason (zero included).
    pub drops: Vec<(String, u64)>,
    /// The raft leader this node knows of, by name.
    pub leader: Option<String>,
    /// Index of the last entry of this node's log.
    pub last_index: u64,
    /// As leader: how many entries each other member lacks, by name.
    pub follower_lag: Vec<(String, u64)>,
    /// Whether this node's log is known to be complete (see
    /// `cluster::Status::in_sync`).
    pub in_sync: bool,
    /// The raft learners, by name: a member that a sole voter took over
    /// from (it rejoins and is promoted once caught up), or a new one.
    pub learners: Vec<String>,
    /// Durations of the raft store's durable writes.
    pub fsync: cluster::FlushSnapshot,
    /// Each tracker (`[[track.interface]]`, `[[track.script]]`): its kind
    /// (`interface`, `script`), name, and whether it is up.
    pub trackers: Vec<(&'static str, String, bool)>,
    /// Whether a tracker without a weight is down: the node gave up the VIP.
    pub track_fault: bool,
}

/// One change of who serves, as this node saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverEvent {
    /// When it happened (this node's clock).
    pub at: SystemTime,
    /// What happened.
    pub kind: FailoverKind,
    /// Why, in words.
    pub why: String,
}

/// What a [`FailoverEvent`] was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailoverKind {
    /// This node took the service over from its peer; the gap is how long
    /// nobody served as this node measured it: from the last advert it
    /// heard from the peer as master (or the peer's priority-0 advert) to
    /// the moment it served.
    TookOver {
        /// The gap.
        gap: Duration,
    },
    /// This node stopped serving while it kept running (it lost the VIP or
    /// raft leadership).
    GaveUp,
}

/// A copy of the [`FailoverLog`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Failovers {
    /// Takeovers since start.
    pub count: u64,
    /// Their total gap, in seconds.
    pub sum_seconds: f64,
    /// Takeovers per bucket of [`FAILOVER_BUCKETS`], cumulative.
    pub buckets: Vec<(f64, u64)>,
    /// The last events, oldest first (at most [`FAILOVER_RING`]).
    pub recent: Vec<FailoverEvent>,
}

/// The failovers of one node, recorded by its glue as they happen.
#[derive(Debug, Default)]
pub struct FailoverLog {
    inner: Mutex<LogInner>,
}

#[derive(Debug, Default)]
struct LogInner {
    count: u64,
    sum_seconds: f64,
    /// Not cumulative.
    buckets: [u64; FAILOVER_BUCKETS.len()],
    recent: VecDeque<FailoverEvent>,
}

impl LogInner {
    fn push(&mut self, event: FailoverEvent) {
        if self.recent.len() == FAILOVER_RING {
            self.recent.pop_front();
        }
        self.recent.push_back(event);
    }
}

impl FailoverLog {
    /// This node took the service over at `at`, after `gap` without a
    /// server, for the reason `why`.
    pub fn took_over(&self, at: SystemTime, gap: Duration, why: &str) {
        let mut log = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        log.count += 1;
        let secs = gap.as_secs_f64();
        log.sum_seconds += secs;
        if let Some(i) = FAILOVER_BUCKETS.iter().position(|b| secs <= *b) {
            log.buckets[i] += 1;
        }
        log.push(FailoverEvent {
            at,
            kind: FailoverKind::TookOver { gap },
            why: why.to_owned(),
        });
    }

    /// This node stopped serving at `at`, for the reason `why`.
    pub fn gave_up(&self, at: SystemTime, why: &str) {
        let mut log = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        log.push(FailoverEvent {
            at,
            kind: FailoverKind::GaveUp,
            why: why.to_owned(),
        });
    }

    /// The log as it is now.
    pub fn snapshot(&self) -> Failovers {
        let log = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut cumulative = 0;
        let buckets = FAILOVER_BUCKETS
            .iter()
            .zip(log.buckets)
            .map(|(bound, n)| {
                cumulative += n;
                (*bound, cumulative)
            })
            .collect();
        Failovers {
            count: log.count,
            sum_seconds: log.sum_seconds,
            buckets,
            recent: log.recent.iter().cloned().collect(),
        }
    }
}

impl Observed {
    /// Refusals by cause, without the VRRP drops (those have their own
    /// metric, `vipool_vrrp_drops_total`).
    pub fn refusals(&self) -> BTreeMap<&str, u64> {
        self.server
            .status
            .refused
            .iter()
            .filter(|(cause, _)| !cause.starts_with("vrrp_"))
            .map(|(cause, n)| (cause.as_str(), *n))
            .collect()
    }

    /// Who holds the VIP as this node sees it: `(name, address)`; the
    /// name is `None` for a master this node does not know.
    pub fn vip_holder(&self) -> Option<(Option<String>, Option<Ipv4Addr>)> {
        let pair = self.pair.as_ref()?;
        if self.server.status.vrrp_state == "Master" {
            return Some((Some(pair.node.clone()), pair.own_address));
        }
        let master = pair.vrrp_master?;
        if Some(master) == pair.own_address {
            return None;
        }
        let name = (Some(master) == pair.peer_address).then(|| pair.peer.clone());
        Some((name, Some(master)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_events_and_the_histogram_counts_them_all() {
        let log = FailoverLog::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for i in 0..20u64 {
            log.took_over(
                t0 + Duration::from_secs(i),
                Duration::from_millis(30 * (i + 1)),
                "peer left",
            );
        }
        log.gave_up(t0 + Duration::from_secs(30), "VRRP backup");
        let s = log.snapshot();
        assert_eq!(s.count, 20);
        assert_eq!(s.recent.len(), FAILOVER_RING);
        // The oldest went: the ring starts at the 6th takeover.
        assert_eq!(s.recent[0].at, t0 + Duration::from_secs(5));
        assert_eq!(s.recent.last().map(|e| e.kind), Some(FailoverKind::GaveUp));
        // 30 ms .. 600 ms: none within 25 ms, 3 within 100 ms, 8 within
        // 250 ms, all within 1 s.
        let within = |b: f64| s.buckets.iter().find(|(u, _)| *u == b).map(|(_, n)| *n);
        assert_eq!(within(0.025), Some(0));
        assert_eq!(within(0.1), Some(3));
        assert_eq!(within(0.25), Some(8));
        assert_eq!(within(1.0), Some(20));
        let expected: f64 = (1..=20).map(|i| 0.03 * f64::from(i)).sum();
        assert!((s.sum_seconds - expected).abs() < 1e-9);
    }

    #[test]
    fn the_vip_holder_is_this_node_the_peer_or_a_stranger() {
        let mut o = Observed::default();
        assert_eq!(o.vip_holder(), None, "no pair, no VIP");
        let me = Ipv4Addr::new(192, 0, 2, 1);
        let peer = Ipv4Addr::new(192, 0, 2, 2);
        o.pair = Some(PairObserved {
            node: "primary".into(),
            peer: "backup".into(),
            own_address: Some(me),
            peer_address: Some(peer),
            vrrp_master: Some(peer),
            ..PairObserved::default()
        });
        o.server.status.vrrp_state = "Backup".into();
        assert_eq!(o.vip_holder(), Some((Some("backup".into()), Some(peer))));
        o.server.status.vrrp_state = "Master".into();
        assert_eq!(o.vip_holder(), Some((Some("primary".into()), Some(me))));
        o.server.status.vrrp_state = "Backup".into();
        let stranger = Ipv4Addr::new(192, 0, 2, 66);
        if let Some(p) = o.pair.as_mut() {
            p.vrrp_master = Some(stranger);
        }
        assert_eq!(o.vip_holder(), Some((None, Some(stranger))));
    }
}
