//! [`Observed`] as OpenMetrics text, through prometheus-client.
//!
//! Names follow the Prometheus conventions: the `vipool_` prefix, the unit
//! in the name (`_seconds`, `_entries`, `_licenses`), `_total` on counters
//! only (prometheus-client adds it to a counter's samples), and labels
//! for the dimensions (`type`, `reason`, `kind`, `state`, `peer`).

use std::fmt::Error;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::Observed;

/// The VRRP states, as the `state` label of `vipool_vrrp_state`.
/// `Fault` is a node that gave up the VIP for a tracker (see `node::track`).
const VRRP_STATES: [&str; 4] = ["Initialize", "Backup", "Master", "Fault"];
/// The raft roles, as the `role` label of `vipool_raft_role`.
const RAFT_ROLES: [&str; 4] = ["Follower", "Candidate", "PreCandidate", "Leader"];

/// `observed` as an OpenMetrics exposition (ends with `# EOF`).
pub fn openmetrics(observed: &Observed) -> String {
    let mut registry = Registry::with_prefix("vipool");
    registry.register_collector(Box::new(Scrape(observed.clone())));
    let mut out = String::with_capacity(8 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// One scrape's worth of numbers.
#[derive(Debug)]
struct Scrape(Observed);

fn family<'a>(
    encoder: &'a mut DescriptorEncoder<'_>,
    name: &'a str,
    help: &str,
    kind: MetricType,
) -> Result<MetricEncoder<'a>, Error> {
    encoder.encode_descriptor(name, help, None, kind)
}

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Result<(), Error> {
    family(encoder, name, help, MetricType::Gauge)?.encode_gauge(&value)
}

fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Result<(), Error> {
    family(encoder, name, help, MetricType::Counter)?.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// One family of gauges with one label.
fn gauges<'v, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help, label): (&str, &str, &str),
    values: impl IntoIterator<Item = (&'v str, V)>,
) -> Result<(), Error> {
    let mut metric = family(encoder, name, help, MetricType::Gauge)?;
    for (value, n) in values {
        metric.encode_family(&[(label, value)])?.encode_gauge(&n)?;
    }
    Ok(())
}

/// One family of counters with one label.
fn counters<'v>(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help, label): (&str, &str, &str),
    values: impl IntoIterator<Item = (&'v str, u64)>,
) -> Result<(), Error> {
    let mut metric = family(encoder, name, help, MetricType::Counter)?;
    for (value, n) in values {
        metric
            .encode_family(&[(label, value)])?
            .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
    }
    Ok(())
}

fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help): (&str, &str),
    sum: f64,
    count: u64,
    buckets: &[(f64, u64)],
) -> Result<(), Error> {
    // prometheus-client takes each bucket's own count and sums them up.
    let mut all = Vec::with_capacity(buckets.len() + 1);
    let mut below = 0;
    for (bound, cumulative) in buckets {
        all.push((*bound, cumulative.saturating_sub(below)));
        below = *cumulative;
    }
    all.push((f64::INFINITY, count.saturating_sub(below)));
    family(encoder, name, help, MetricType::Histogram)?.encode_histogram::<NoLabelSet>(sum, count, &all, None)
}

fn info(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    labels: &impl EncodeLabelSet,
) -> Result<(), Error> {
    family(encoder, name, help, MetricType::Info)?.encode_info(labels)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), Error> {
        let o = &self.0;
        let s = &o.server.status;
        let vip = s.vip.clone().unwrap_or_default();
        info(
            &mut e,
            "build",
            "This node: its name, release and VIP",
            &[
                ("node", s.node.as_str()),
                ("version", env!("CARGO_PKG_VERSION")),
                ("vip", vip.as_str()),
            ],
        )?;
        gauge(
            &mut e,
            "serving",
            "1 while this node answers license requests (VRRP master and raft leader)",
            u64::from(s.serving),
        )?;

        // VRRP.
        gauges(
            &mut e,
            ("vrrp_state", "1 for this node's VRRP state", "state"),
            VRRP_STATES.iter().map(|st| (*st, u64::from(s.vrrp_state == *st))),
        )?;
        if let Some(p) = &o.pair {
            gauge(
                &mut e,
                "vrrp_priority",
                "The VRRP priority advertised now (the lowest while behind the log)",
                u64::from(p.priority),
            )?;
            gauge(
                &mut e,
                "vrrp_configured_priority",
                "The VRRP priority of the configuration",
                u64::from(p.configured_priority),
            )?;
            if !p.trackers.is_empty() {
                let mut metric = family(
                    &mut e,
                    "track_up",
                    "1 while a tracked interface or script is up ([[track.interface]], [[track.script]])",
                    MetricType::Gauge,
                )?;
                for (kind, name, up) in &p.trackers {
                    metric
                        .encode_family(&[("kind", *kind), ("name", name.as_str())])?
                        .encode_gauge(&u64::from(*up))?;
                }
                gauge(
                    &mut e,
                    "track_fault",
                    "1 while a tracker without a weight is down: this node gave up the VIP",
                    u64::from(p.track_fault),
                )?;
            }
            counters(
                &mut e,
                (
                    "vrrp_transitions",
                    "VRRP state transitions, by the state entered",
                    "to",
                ),
                p.transitions.iter().map(|(to, n)| (*to, *n)),
            )?;
            counter(
                &mut e,
                "vrrp_adverts_sent",
                "VRRP advertisements sent",
                p.adverts_sent,
            )?;
            counter(
                &mut e,
                "vrrp_adverts_received",
                "VRRP advertisements accepted",
                p.adverts_received,
            )?;
            counters(
                &mut e,
                ("vrrp_drops", "VRRP datagrams dropped, by reason", "reason"),
                p.drops.iter().map(|(r, n)| (r.as_str(), *n)),
            )?;
        }

        // Raft.
        gauges(
            &mut e,
            ("raft_role", "1 for this node's raft role", "role"),
            RAFT_ROLES.iter().map(|r| (*r, u64::from(s.raft_role == *r))),
        )?;
        gauge(&mut e, "raft_term", "The raft term", s.term)?;
        gauge(
            &mut e,
            "raft_commit_index",
            "The highest committed raft index",
            s.commit_index,
        )?;
        gauge(
            &mut e,
            "raft_applied_index",
            "The highest raft index applied to the license table",
            s.applied_index,
        )?;
        if let Some(p) = &o.pair {
            gauge(
                &mut e,
                "raft_last_index",
                "The last index of this node's raft log",
                p.last_index,
            )?;
            gauges(
                &mut e,
                (
                    "raft_learners",
                    "1 for each member that is a raft learner (does not vote)",
                    "peer",
                ),
                p.learners.iter().map(|l| (l.as_str(), 1u64)),
            )?;
            gauge(
                &mut e,
                "raft_in_sync",
                "1 while this node's log is known to hold everything its leader committed",
                u64::from(p.in_sync),
            )?;
            gauges(
                &mut e,
                (
                    "raft_follower_lag_entries",
                    "On the leader: entries each follower lacks (last index minus matched)",
                    "peer",
                ),
                p.follower_lag.iter().map(|(peer, lag)| (peer.as_str(), *lag)),
            )?;
            histogram(
                &mut e,
                (
                    "raft_fsync_duration_seconds",
                    "Durations of the raft log's durable writes (one fsync each)",
                ),
                p.fsync.sum_seconds,
                p.fsync.count,
                &p.fsync.buckets,
            )?;
        }

        // Failovers.
        let f = &o.failovers;
        counter(
            &mut e,
            "failovers",
            "Times this node took the service over from its peer",
            f.count,
        )?;
        histogram(
            &mut e,
            (
                "failover_duration_seconds",
                "Gaps without a server before this node took over: from the last advert heard from \
                 the peer as master (or its priority-0 advert) to serving",
            ),
            f.sum_seconds,
            f.count,
            &f.buckets,
        )?;

        // The pool.
        let pool = &o.server.pool;
        let types: Vec<&str> = pool.keys().map(|t| t.as_str()).collect();
        gauges(
            &mut e,
            ("pool_size_licenses", "Licenses in the pool, by type", "type"),
            types.iter().zip(pool.values()).map(|(t, p)| (*t, p.total)),
        )?;
        gauges(
            &mut e,
            (
                "pool_used_licenses",
                "Licenses clients take from the pool, by type",
                "type",
            ),
            types.iter().zip(pool.values()).map(|(t, p)| (*t, p.used)),
        )?;
        gauges(
            &mut e,
            (
                "pool_available_licenses",
                "Licenses left in the pool, by type (negative when over-subscribed)",
                "type",
            ),
            types.iter().zip(pool.values()).map(|(t, p)| (*t, p.available())),
        )?;

        // Clients and connections.
        gauges(
            &mut e,
            ("clients", "Clients in the table, by state", "state"),
            [("up", o.server.clients_up), ("down", o.server.clients_down)],
        )?;
        gauge(
            &mut e,
            "connections",
            "Open connections on the client and operator ports",
            s.connections,
        )?;
        counters(
            &mut e,
            (
                "bad_frames",
                "Connections closed for a bad frame, by kind",
                "kind",
            ),
            o.server.bad_frames.iter().map(|(k, n)| (*k, *n)),
        )?;
        counters(
            &mut e,
            (
                "refusals",
                "What this node refused (client requests and connections, raft connections and \
                 frames), by reason; VRRP drops are in vipool_vrrp_drops_total",
                "reason",
            ),
            o.refusals(),
        )?;
        counters(
            &mut e,
            (
                "tls_handshakes",
                "Client TLS handshakes completed, by kind: full, or resumed from a session ticket \
                 of either server of the pair",
                "kind",
            ),
            s.tls_handshakes.iter().map(|(kind, n)| (kind.as_str(), *n)),
        )?;
        gauge(
            &mut e,
            "tls_ticket_keys",
            "The pair's TLS session-ticket keys this node seals and opens with (0: none yet, a \
             switch then resumes only with the server that gave it its ticket)",
            s.tls_ticket_keys,
        )?;
        counter(
            &mut e,
            "requests_paced",
            "License requests that waited because their client sent faster than \
             license.requests_per_s_per_client",
            s.paced,
        )?;
        gauge(
            &mut e,
            "warnings",
            "Warnings shown by `vipool show status` and the status page",
            u64::try_from(s.warnings.len()).unwrap_or(u64::MAX),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{FailoverLog, PairObserved};
    use crate::table::{LicenseType, PoolEntry};
    use std::time::{Duration, SystemTime};

    fn sample() -> Observed {
        let mut o = Observed::default();
        o.server.status.node = "primary".into();
        o.server.status.serving = true;
        o.server.status.vrrp_state = "Master".into();
        o.server.status.raft_role = "Leader".into();
        o.server.status.term = 3;
        o.server.status.paced = 4;
        o.server.status.refused.insert("client_key_refused".into(), 2);
        o.server.status.refused.insert("vrrp_unknown_peer".into(), 9);
        o.server
            .pool
            .insert(LicenseType::new("AP"), PoolEntry { total: 32, used: 40 });
        o.server.clients_up = 5;
        o.server.clients_down = 1;
        o.server.bad_frames = vec![("oversize", 1), ("malformed", 0)];
        o.pair = Some(PairObserved {
            priority: 200,
            configured_priority: 200,
            transitions: [("master", 1), ("backup", 1), ("initialize", 0)],
            drops: vec![("unknown_peer".into(), 9)],
            follower_lag: vec![("backup".into(), 7)],
            trackers: vec![
                ("interface", "uplink0".into(), false),
                ("script", "gw".into(), true),
            ],
            ..PairObserved::default()
        });
        let times = cluster::FlushTimes::default();
        times.record(Duration::from_micros(50));
        times.record(Duration::from_millis(3));
        if let Some(p) = o.pair.as_mut() {
            p.fsync = times.snapshot();
        }
        let log = FailoverLog::default();
        log.took_over(SystemTime::now(), Duration::from_millis(40), "peer left");
        o.failovers = log.snapshot();
        o
    }

    #[test]
    fn the_exposition_names_every_family_with_its_labels() {
        let text = openmetrics(&sample());
        for line in [
            "vipool_serving 1\n",
            "vipool_vrrp_state{state=\"Master\"} 1\n",
            "vipool_vrrp_state{state=\"Backup\"} 0\n",
            "vipool_vrrp_transitions_total{to=\"master\"} 1\n",
            "vipool_vrrp_drops_total{reason=\"unknown_peer\"} 9\n",
            "vipool_raft_role{role=\"Leader\"} 1\n",
            "vipool_raft_term 3\n",
            "vipool_raft_follower_lag_entries{peer=\"backup\"} 7\n",
            "vipool_failovers_total 1\n",
            "vipool_failover_duration_seconds_count 1\n",
            "vipool_failover_duration_seconds_bucket{le=\"0.05\"} 1\n",
            "vipool_failover_duration_seconds_bucket{le=\"0.025\"} 0\n",
            "vipool_failover_duration_seconds_bucket{le=\"30.0\"} 1\n",
            "vipool_failover_duration_seconds_bucket{le=\"+Inf\"} 1\n",
            "vipool_pool_size_licenses{type=\"AP\"} 32\n",
            "vipool_pool_available_licenses{type=\"AP\"} -8\n",
            "vipool_clients{state=\"down\"} 1\n",
            "vipool_bad_frames_total{kind=\"oversize\"} 1\n",
            "vipool_refusals_total{reason=\"client_key_refused\"} 2\n",
            "vipool_requests_paced_total 4\n",
            "vipool_raft_fsync_duration_seconds_count 2\n",
            "vipool_raft_fsync_duration_seconds_bucket{le=\"0.0001\"} 1\n",
            "vipool_raft_fsync_duration_seconds_bucket{le=\"0.0025\"} 1\n",
            "vipool_raft_fsync_duration_seconds_bucket{le=\"0.005\"} 2\n",
            "vipool_raft_fsync_duration_seconds_bucket{le=\"+Inf\"} 2\n",
            "vipool_track_up{kind=\"interface\",name=\"uplink0\"} 0\n",
            "vipool_track_up{kind=\"script\",name=\"gw\"} 1\n",
            "vipool_track_fault 0\n",
            "# TYPE vipool_failovers counter\n",
            "# TYPE vipool_failover_duration_seconds histogram\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // VRRP drops are not refusals twice.
        assert!(!text.contains("reason=\"vrrp_unknown_peer\""), "{text}");
        assert!(text.contains("vipool_build_info{node=\"primary\""), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn label_values_from_the_network_are_escaped() {
        let mut o = sample();
        o.server.status.refused.insert("a\"b\\c\nd".into(), 1);
        let text = openmetrics(&o);
        assert!(text.contains(r#"reason="a\"b\\c\nd""#), "{text}");
        // Every sample line still parses as name{labels} value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.rsplit_once(' ')
                    .is_some_and(|(_, v)| v.parse::<f64>().is_ok()),
                "{line:?}"
            );
        }
    }
}
