use std::os::unix::fs::PermissionsExt;

use super::writer::Writer;
use super::*;
use crate::table::{PoolEntry, SweepReport, TableConfig};

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn rotates_at_the_size_keeps_n_files_each_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.jsonl");
    // 9 bytes a line with its newline: 3 lines fit in 30 bytes, a 4th does not.
    let mut w = Writer::open(path.clone(), 30, 2).unwrap();
    for n in 0..10 {
        w.write_line(&format!("line-{n:03}")).unwrap();
    }
    w.flush().unwrap();
    // 10 lines, 3 per file: 0-2, 3-5 dropped (only 2 kept), 6-8 in .1, 9 current.
    assert_eq!(lines(&path), ["line-009"]);
    assert_eq!(
        lines(&dir.path().join("usage.jsonl.1")),
        ["line-006", "line-007", "line-008"]
    );
    assert_eq!(
        lines(&dir.path().join("usage.jsonl.2")),
        ["line-003", "line-004", "line-005"]
    );
    assert!(!dir.path().join("usage.jsonl.3").exists());
    for p in [
        &path,
        &dir.path().join("usage.jsonl.1"),
        &dir.path().join("usage.jsonl.2"),
    ] {
        assert_eq!(mode(p), 0o600, "{}", p.display());
        assert!(std::fs::metadata(p).unwrap().len() <= 30);
    }
}

#[test]
fn reopening_counts_what_the_file_already_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.jsonl");
    let mut w = Writer::open(path.clone(), 20, 1).unwrap();
    w.write_line("aaaaaaaa").unwrap();
    w.flush().unwrap();
    drop(w);
    let mut w = Writer::open(path.clone(), 20, 1).unwrap();
    w.write_line("bbbbbbbb").unwrap();
    w.write_line("cccccccc").unwrap();
    w.flush().unwrap();
    assert_eq!(lines(&path), ["cccccccc"]);
    assert_eq!(lines(&dir.path().join("u.jsonl.1")), ["aaaaaaaa", "bbbbbbbb"]);
}

#[test]
fn keep_zero_keeps_only_the_current_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.jsonl");
    // "one\ntwo\n" is 8 bytes, "three" would make 14: rotated; "three\nfour\n" is 11.
    let mut w = Writer::open(path.clone(), 12, 0).unwrap();
    for l in ["one", "two", "three", "four"] {
        w.write_line(l).unwrap();
    }
    w.flush().unwrap();
    assert_eq!(lines(&path), ["three", "four"]);
    assert!(!dir.path().join("u.jsonl.1").exists());
}

#[test]
fn a_hostile_client_id_stays_one_line_of_valid_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.jsonl");
    let log = UsageLog::open(
        &UsageConfig {
            path: path.clone(),
            max_bytes: DEFAULT_MAX_BYTES,
            keep: DEFAULT_KEEP,
        },
        "primary",
    )
    .unwrap();
    let evil = "sw\n{\"event\":\"release\"}\u{1b}[2J\"\\\u{0}";
    let command = Command::Acquire {
        now_ms: 1_764_468_072_345,
        id: evil.into(),
        license_type: LicenseType::new("AP"),
        count: 3,
    };
    let pool: Pool = [(LicenseType::new("AP"), PoolEntry { total: 32, used: 3 })].into();
    let reply = Ok(Reply::ServerKey { pool: pool.clone() });
    log.record(Pending::of(&command).unwrap(), 7, &reply, &pool);
    drop(log);
    // The writer thread flushes when its queue is empty and ends when the sender is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&path).unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing written");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(!text.trim_end().chars().any(char::is_control), "{text:?}");
    let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(v["client"], evil);
    assert_eq!(v["event"], "grant");
    assert_eq!(v["time"], "2025-11-30T02:01:12.345Z");
    assert_eq!(v["node"], "primary");
    assert_eq!(v["index"], 7);
    assert_eq!(
        (
            v["count"].as_u64(),
            v["pool_total"].as_u64(),
            v["pool_used"].as_u64()
        ),
        (Some(3), Some(32), Some(3))
    );
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn a_refused_acquire_is_denied_with_the_reason_other_refusals_log_nothing() {
    let pool: Pool = [(LicenseType::new("AP"), PoolEntry { total: 4, used: 4 })].into();
    let refused: Result<Reply, CommandError> = Err(CommandError::UnknownClient("sw1".into()));
    let acquire = Command::Acquire {
        now_ms: 0,
        id: "sw1".into(),
        license_type: LicenseType::new("AP"),
        count: 1,
    };
    let events = Pending::of(&acquire).unwrap().events("n", 1, &refused, &pool, 0);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, Kind::Denied);
    assert!(events[0].detail.as_deref().unwrap().contains("sw1"));
    let release = Command::Release {
        now_ms: 0,
        id: "sw1".into(),
        license_type: LicenseType::new("AP"),
        count: 1,
    };
    assert!(Pending::of(&release)
        .unwrap()
        .events("n", 2, &refused, &pool, 0)
        .is_empty());
}

#[test]
fn a_sweep_logs_each_client_down_and_removed_operator_changes_name_the_operator() {
    let pool = Pool::new();
    let swept = Ok(Reply::Swept(SweepReport {
        down: vec!["a".into(), "b".into()],
        removed: vec!["c".into()],
        expired_keys: 0,
    }));
    let events = Pending::of(&Command::Sweep { now_ms: 1000 })
        .unwrap()
        .events("n", 3, &swept, &pool, 0);
    let kinds: Vec<(Kind, &str)> = events
        .iter()
        .map(|e| (e.event, e.client.as_deref().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            (Kind::ClientDown, "a"),
            (Kind::ClientDown, "b"),
            (Kind::ClientRemoved, "c")
        ]
    );
    assert_eq!(events[0].time, "1970-01-01T00:00:01.000Z");
    let remove = Command::RemoveClient {
        id: "a".into(),
        by: Actor::Operator("alice".into()),
    };
    let removed = Ok(Reply::ClientRemoved { pool: pool.clone() });
    let events = Pending::of(&remove)
        .unwrap()
        .events("n", 4, &removed, &pool, 2000);
    assert_eq!(events[0].operator.as_deref(), Some("alice"));
    // No stamp in the command: the node's clock.
    assert_eq!(events[0].time, "1970-01-01T00:00:02.000Z");
    let settings = Command::Settings {
        settings: TableConfig::default(),
        by: Actor::Server("primary".into()),
    };
    let applied = Ok(Reply::Settings { pool: pool.clone() });
    let events = Pending::of(&settings).unwrap().events("n", 5, &applied, &pool, 0);
    assert_eq!(
        (events[0].event, events[0].by_server.as_deref()),
        (Kind::Settings, Some("primary"))
    );
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking() {
    let (tx, _rx) = mpsc::sync_channel(1);
    let log = UsageLog {
        node: "n".into(),
        lines: tx,
        serving: None,
        dropped: Arc::default(),
        log: Arc::new(cluster::ratelog::RateLimiter::new(
            std::time::Duration::from_secs(60),
        )),
    };
    let register = Command::Register {
        now_ms: 0,
        id: "sw".into(),
        serial: "SN".into(),
        address: "192.0.2.1".into(),
        version: "1".into(),
        report: Default::default(),
    };
    let reply = Ok(Reply::Settings { pool: Pool::new() });
    for n in 0..3 {
        log.record(Pending::of(&register).unwrap(), n, &reply, &Pool::new());
    }
    assert_eq!(log.dropped(), 2);
}
