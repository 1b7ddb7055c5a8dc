//! The usage log of a real server over TCP: a switch registers, acquires,
//! is refused, releases, an operator removes it; each is one JSON line.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vipool::client::Connection;
use vipool::clock::now_ms;
use vipool::license::{IssuerKey, KeyStatement, SignedKey, TrustedIssuers};
use vipool::proto::SwitchReport;
use vipool::server::{Applier, LocalApplier, Port, Server, ServerConfig};
use vipool::table::{Actor, Command, LicenseTable, LicenseType, TableConfig};
use vipool::usage::{UsageConfig, UsageLog};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(10);

fn acme() -> IssuerKey {
    IssuerKey::from_secret_bytes("acme", &[7; 32]).unwrap()
}

fn signed(key_id: &str, serial: &str, count: u32) -> SignedKey {
    acme()
        .sign(KeyStatement {
            key_id: key_id.into(),
            license_type: LicenseType::new("AP"),
            count,
            serial: serial.into(),
            not_before: now_ms() / 1000 - 3600,
            expires: None,
            issuer: "acme".into(),
        })
        .unwrap()
}

/// Every line of the log once at least `n` are there.
async fn lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n || tokio::time::Instant::now() > deadline {
            return text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn grants_releases_and_removals_are_logged_one_json_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.jsonl");
    let usage = UsageLog::open(
        &UsageConfig {
            path: path.clone(),
            max_bytes: 1 << 20,
            keep: 2,
        },
        "primary",
    )
    .unwrap();
    let trusted = TrustedIssuers::from_iter([acme().trusted()]);
    // The issuers the pair trusts, recorded before the log starts here.
    let mut table = LicenseTable::new(TableConfig::default());
    let issuers = Command::Issuers {
        issuers: trusted.by_name_text(),
        by: Actor::Server("primary".into()),
    };
    table.apply_command(1, issuers).unwrap();
    let applier = Arc::new(LocalApplier::with_usage(table, usage));
    let serial = Command::ServerSerial {
        server: "primary".into(),
        serial: "CV-primary".into(),
    };
    applier.propose(serial).await.unwrap().unwrap();
    let key = signed("primary-AP", "CV-primary", 16)
        .verified(&trusted, "CV-primary", now_ms() / 1000)
        .unwrap();
    let install = Command::InstallServerKey {
        now_ms: now_ms(),
        server: "primary".into(),
        key,
        by: Actor::Server("primary".into()),
    };
    applier.propose(install).await.unwrap().unwrap();

    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let operator = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let operator_addr = operator.local_addr().unwrap();
    let (_serving, serving_rx) = watch::channel(true);
    let shutdown = CancellationToken::new();
    let config = ServerConfig {
        node: "primary".into(),
        vip: Some(LOOPBACK),
        trusted: trusted.clone(),
        ..ServerConfig::default()
    };
    let server = Server::new(Arc::clone(&applier), config, serving_rx, shutdown.clone());
    let task = tokio::spawn(async move {
        server
            .run_on(vec![(listener, Port::Client), (operator, Port::Operator)])
            .await
    });

    let before = now_ms();
    let mut conn = Connection::connect_insecure(addr).await.unwrap();
    // Ids are printable ASCII (the table refuses control characters, see
    // the unit tests for those), but a quote and a backslash must be escaped.
    let id = r#"sw"1\"#;
    let report = SwitchReport {
        keys: vec![signed("SN1-AP", "SN1", 4)],
        ..SwitchReport::default()
    };
    conn.register(id, "SN1", "6.5.3", report).await.unwrap();
    let ap = LicenseType::new("AP");
    conn.acquire(id, &ap, 15).await.unwrap();
    // Refused by the server's check before it proposes: no log entry, but a line.
    conn.acquire(id, &ap, 10).await.unwrap_err();
    conn.release(id, &ap, 5).await.unwrap();
    // A heartbeat is not usage: no line.
    conn.heartbeat(
        id,
        SwitchReport {
            used: [(ap.clone(), 10)].into(),
            keys: vec![signed("SN1-AP", "SN1", 4)],
            ..SwitchReport::default()
        },
    )
    .await
    .unwrap();
    let remove = Command::RemoveClient {
        id: id.into(),
        by: Actor::Operator("alice".into()),
    };
    applier.propose(remove).await.unwrap().unwrap();
    let after = now_ms();

    let got = lines(&path, 6).await;
    let kinds: Vec<&str> = got.iter().map(|v| v["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "key_installed",
            "client_up",
            "grant",
            "denied",
            "release",
            "client_removed"
        ],
        "{got:#?}"
    );
    for (n, v) in got.iter().enumerate() {
        assert_eq!(v["node"], "primary");
        let time = time::OffsetDateTime::parse(
            v["time"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        let ms = u64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap();
        if n > 0 {
            assert!((before..=after).contains(&ms), "{v}");
        }
        if n > 1 {
            assert_eq!(v["client"], id);
        }
    }
    // Indexes are the entries': the trusted issuers (1, recorded before
    // the log was opened) and the serial announcement (2) have no line,
    // nor do the sweeper's empty sweeps and the heartbeat in between; the
    // refused acquire was never an entry.
    let indexes: Vec<Option<u64>> = got.iter().map(|v| v["index"].as_u64()).collect();
    // The key install follows the serial at once; the registration may
    // follow a sweep of the server's sweeper (an entry without a line).
    assert_eq!(indexes[0], Some(3), "{indexes:?}");
    assert!(indexes[1].is_some_and(|i| i >= 4), "{indexes:?}");
    assert_eq!(indexes[3], None);
    let entries: Vec<u64> = indexes.iter().flatten().copied().collect();
    assert!(entries.windows(2).all(|w| w[0] < w[1]), "{indexes:?}");
    assert_eq!(
        (got[0]["key_id"].as_str(), got[0]["by_server"].as_str()),
        (Some("primary-AP"), Some("primary"))
    );
    assert_eq!(
        (got[0]["pool_total"].as_u64(), got[0]["count"].as_u64()),
        (Some(16), Some(16))
    );
    assert_eq!(got[1]["serial"], "SN1");
    // 16 of the server and 4 of the switch's key: 20 in the pool.
    assert_eq!(
        (
            got[2]["count"].as_u64(),
            got[2]["pool_total"].as_u64(),
            got[2]["pool_used"].as_u64()
        ),
        (Some(15), Some(20), Some(15))
    );
    assert_eq!(
        (got[3]["count"].as_u64(), got[3]["pool_used"].as_u64()),
        (Some(10), Some(15))
    );
    assert!(got[3]["detail"].as_str().is_some_and(|d| !d.is_empty()));
    assert_eq!(
        (got[4]["count"].as_u64(), got[4]["pool_used"].as_u64()),
        (Some(5), Some(10))
    );
    assert_eq!(got[5]["operator"], "alice");
    // The switch's key left with it: the server's 16 remain, nothing used.
    assert_eq!(got[5]["pool"]["AP"]["total"].as_u64(), Some(16));
    assert_eq!(got[5]["pool"]["AP"]["used"].as_u64(), Some(0));
    // Every line is one line, the id escaped.
    let raw = std::fs::read_to_string(&path).unwrap();
    assert_eq!(raw.lines().count(), 6);
    assert!(raw.contains(r#""client":"sw\"1\\""#), "{raw}");
    let _ = operator_addr;
    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap().unwrap();
}
