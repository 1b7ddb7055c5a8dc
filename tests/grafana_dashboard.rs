//! The Grafana dashboard (`deploy/grafana/vipool.json`) asks only for
//! metrics a node exposes, and shows every family it exposes.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use vipool::metrics::{openmetrics, FailoverLog, Observed, PairObserved};

/// An exposition with every family present: a node of a pair, leading,
/// after one failover.
fn exposition() -> String {
    let log = FailoverLog::default();
    log.took_over(
        SystemTime::now(),
        Duration::from_millis(40),
        "the peer left (priority 0)",
    );
    let mut o = Observed {
        pair: Some(PairObserved {
            follower_lag: vec![("backup".into(), 0)],
            learners: vec!["backup".into()],
            drops: vec![("unknown_peer".into(), 0)],
            ..PairObserved::default()
        }),
        failovers: log.snapshot(),
        ..Observed::default()
    };
    o.server.status.refused.insert("client_key_refused".into(), 1);
    o.server.status.tls_handshakes.insert("resumed".into(), 1);
    o.server.bad_frames = vec![("oversize", 0)];
    o.server.pool.insert(
        vipool::table::LicenseType::new("AP"),
        vipool::table::PoolEntry { total: 1, used: 0 },
    );
    openmetrics(&o)
}

/// Every `vipool_...` name in `text`.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("vipool_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_dashboard_and_the_exposition_agree() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/vipool.json");
    let text = std::fs::read_to_string(path).expect("read the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "vipool-pair");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());

    let exposed = exposition();
    let samples: BTreeSet<String> = exposed
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect();
    let asked = names(&text);
    let unknown: Vec<_> = asked.difference(&samples).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard asks for metrics no node exposes: {unknown:?}"
    );

    let families: Vec<&str> = exposed
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let missing: Vec<_> = families
        .iter()
        .filter(|f| !asked.iter().any(|a| a.starts_with(*f)))
        .collect();
    assert!(
        missing.is_empty(),
        "families the dashboard does not show: {missing:?}"
    );
}
