//! Simulated switches against a real server over TCP on 127.0.0.1.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use vipool::clock::now_ms;
use vipool::license::{IssuerKey, KeyStatement, SignedKey, TrustedIssuers};
use vipool::server::{Applier, LocalApplier, Server, ServerConfig};
use vipool::switch::{self, Change, Event, SwitchConfig, SwitchHandle};
use vipool::table::{Actor, Command, LicenseTable, LicenseType, Pool, TableConfig};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(20);

struct Node {
    applier: Arc<LocalApplier>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn acme() -> IssuerKey {
    IssuerKey::from_secret_bytes("acme", &[7; 32]).unwrap()
}

/// `count` AP for `serial`, signed by `issuer`, valid from an hour ago.
fn key_by(issuer: &IssuerKey, key_id: &str, serial: &str, count: u32) -> SignedKey {
    issuer
        .sign(KeyStatement {
            key_id: key_id.into(),
            license_type: LicenseType::new("AP"),
            count,
            serial: serial.into(),
            not_before: now_ms() / 1000 - 3600,
            expires: None,
            issuer: issuer.name().into(),
        })
        .unwrap()
}

/// `count` AP for switch `id` (its default serial `SIM-ID`), signed by acme.
fn key(id: &str, count: u32) -> SignedKey {
    key_by(&acme(), &format!("{id}-ap-{count}"), &format!("SIM-{id}"), count)
}

/// A server trusting acme, with `ap` AP of its own.
async fn start_server(addr: SocketAddr, ap: u32) -> (Node, SocketAddr) {
    let applier = Arc::new(LocalApplier::new(LicenseTable::new(TableConfig::default())));
    let trusted = TrustedIssuers::from_iter([acme().trusted()]);
    applier
        .propose(Command::Issuers {
            issuers: trusted.by_name_text(),
            by: Actor::Server("primary".into()),
        })
        .await
        .unwrap()
        .unwrap();
    applier
        .propose(Command::ServerSerial {
            server: "primary".into(),
            serial: "CV1".into(),
        })
        .await
        .unwrap()
        .unwrap();
    if ap > 0 {
        let key = key_by(&acme(), "primary-ap", "CV1", ap);
        let command = Command::InstallServerKey {
            now_ms: now_ms(),
            server: "primary".into(),
            key: key.verified(&trusted, "CV1", now_ms() / 1000).unwrap(),
            by: Actor::Server("primary".into()),
        };
        applier.propose(command).await.unwrap().unwrap();
    }
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_, serving) = watch::channel(true);
    let shutdown = CancellationToken::new();
    let config = ServerConfig {
        vip: Some(LOOPBACK),
        sweep_interval: Duration::from_millis(50),
        trusted,
        ..ServerConfig::default()
    };
    let server = Server::new(Arc::clone(&applier), config, serving, shutdown.clone());
    let task = tokio::spawn(async move { server.run(listener).await });
    (
        Node {
            applier,
            shutdown,
            task,
        },
        addr,
    )
}

impl Node {
    fn pool(&self) -> Pool {
        self.applier.read(|t| t.pool().clone())
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

fn ap() -> LicenseType {
    LicenseType::new("AP")
}

fn sim(addr: SocketAddr, id: &str, interval_ms: u64) -> SwitchConfig {
    let mut config = SwitchConfig::new(addr.to_string(), id);
    config.heartbeat_interval = Duration::from_millis(interval_ms);
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(100);
    config
}

/// Polls `check` every 10 ms until it holds or the wait runs out.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn drain(events: &mut mpsc::UnboundedReceiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(event) = events.try_recv() {
        out.push(event);
    }
    out
}

#[tokio::test]
async fn many_switches_converge_on_the_server_table() {
    let (node, addr) = start_server((LOOPBACK, 0).into(), 10).await;
    let shutdown = CancellationToken::new();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let switches: Vec<SwitchHandle> = (0..40)
        .map(|n| {
            let id = format!("sw{n:02}");
            let mut config = sim(addr, &id, 200);
            config.keys = vec![key(&id, 1)];
            config.builtin = BTreeMap::from([(ap(), 2)]);
            config.in_use = BTreeMap::from([(ap(), 3)]);
            switch::spawn(config, Some(events_tx.clone()), shutdown.clone())
        })
        .collect();
    // 10 + 40 keys = 50 AP in the pool, 40 needed beyond built-in: everyone gets one.
    eventually("every switch granted and seeing the server's pool", || {
        let pool = node.pool();
        switches.iter().all(|s| {
            let view = s.view.borrow();
            view.granted.get(&ap()) == Some(&1) && view.limits.as_ref() == Some(&pool)
        })
    })
    .await;
    assert_eq!((node.pool()[&ap()].total, node.pool()[&ap()].used), (50, 40));
    let granted = drain(&mut events)
        .iter()
        .filter(|e| matches!(e, Event::Granted { .. }))
        .count();
    assert_eq!(granted, 40);
    shutdown.cancel();
    for s in switches {
        s.task.await.unwrap();
    }
    node.stop().await;
}

#[tokio::test]
async fn refusals_are_logged_and_grants_never_exceed_the_pool() {
    let (node, addr) = start_server((LOOPBACK, 0).into(), 10).await;
    let shutdown = CancellationToken::new();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let switches: Vec<SwitchHandle> = (0..5)
        .map(|n| {
            let mut config = sim(addr, &format!("sw{n}"), 100);
            config.in_use = BTreeMap::from([(ap(), 4)]);
            switch::spawn(config, Some(events_tx.clone()), shutdown.clone())
        })
        .collect();
    eventually("two grants and three refusals", || {
        let views: Vec<_> = switches.iter().map(|s| s.view.borrow().clone()).collect();
        views.iter().filter(|v| v.grants == 1).count() == 2
            && views.iter().filter(|v| v.refusals > 0).count() == 3
    })
    .await;
    let entry = node.pool()[&ap()];
    assert_eq!((entry.total, entry.used), (10, 8));
    let log = drain(&mut events);
    assert_eq!(
        log.iter().filter(|e| matches!(e, Event::Granted { .. })).count(),
        2
    );
    assert!(log
        .iter()
        .any(|e| matches!(e, Event::Refused { reason, .. } if reason.contains("not enough"))));
    shutdown.cancel();
    for s in switches {
        s.task.await.unwrap();
    }
    node.stop().await;
}

#[tokio::test]
async fn a_change_is_sent_at_once_not_at_the_next_heartbeat() {
    let (node, addr) = start_server((LOOPBACK, 0).into(), 10).await;
    let shutdown = CancellationToken::new();
    // A heartbeat interval far longer than the test.
    let s = switch::spawn(sim(addr, "sw1", 60_000), None, shutdown.clone());
    let mut view = s.view.clone();
    tokio::time::timeout(WAIT, view.wait_for(|v| v.connected))
        .await
        .unwrap()
        .unwrap();
    s.changes.send(Change::AddKey(key("sw1", 6))).unwrap();
    s.changes.send(Change::SetInUse(ap(), 3)).unwrap();
    eventually("the key and the use on the server", || {
        node.pool()[&ap()] == vipool::table::PoolEntry { total: 16, used: 3 }
    })
    .await;
    s.changes.send(Change::SetInUse(ap(), 1)).unwrap();
    eventually("the release on the server", || node.pool()[&ap()].used == 1).await;
    shutdown.cancel();
    s.task.await.unwrap();
    node.stop().await;
}

#[tokio::test]
async fn server_down_keeps_limits_then_a_new_server_is_rebuilt_from_the_switch() {
    let (node, addr) = start_server((LOOPBACK, 0).into(), 10).await;
    let shutdown = CancellationToken::new();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut config = sim(addr, "sw1", 50);
    config.keys = vec![key("sw1", 2)];
    config.in_use = BTreeMap::from([(ap(), 5)]);
    config.retention = Duration::from_secs(3600);
    let s = switch::spawn(config, Some(events_tx), shutdown.clone());
    eventually("the grant", || s.view.borrow().granted.get(&ap()) == Some(&5)).await;
    let limits = s.view.borrow().limits.clone();

    node.stop().await;
    eventually("the switch seeing the server down", || !s.view.borrow().server_up).await;
    let view = s.view.borrow().clone();
    assert_eq!(view.limits, limits, "the last limits are kept");
    assert_eq!(view.granted.get(&ap()), Some(&5));
    assert!(drain(&mut events)
        .iter()
        .any(|e| matches!(e, Event::ServerDown { .. })));

    // A new server on the same address with an empty table: the switch's
    // registration carries its whole state, so the table is rebuilt.
    let (node, _) = start_server(addr, 10).await;
    eventually("the switch back and the table rebuilt", || {
        s.view.borrow().server_up && node.pool()[&ap()] == vipool::table::PoolEntry { total: 12, used: 5 }
    })
    .await;
    assert!(drain(&mut events)
        .iter()
        .any(|e| matches!(e, Event::ServerUp { .. })));
    shutdown.cancel();
    s.task.await.unwrap();
    node.stop().await;
}

#[tokio::test]
async fn limits_expire_after_the_retention_period() {
    let (node, addr) = start_server((LOOPBACK, 0).into(), 10).await;
    let shutdown = CancellationToken::new();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut config = sim(addr, "sw1", 50);
    config.in_use = BTreeMap::from([(ap(), 2)]);
    config.retention = Duration::from_millis(400);
    let s = switch::spawn(config, Some(events_tx), shutdown.clone());
    eventually("the grant", || s.view.borrow().granted.get(&ap()) == Some(&2)).await;
    node.stop().await;
    eventually("the limits gone", || s.view.borrow().limits.is_none()).await;
    assert!(s.view.borrow().granted.is_empty());
    let log = drain(&mut events);
    let at = |f: fn(&Event) -> bool| log.iter().position(f).unwrap();
    assert!(at(|e| matches!(e, Event::ServerDown { .. })) < at(|e| matches!(e, Event::LimitsExpired { .. })));
    shutdown.cancel();
    s.task.await.unwrap();
}

#[tokio::test]
async fn a_forgotten_switch_registers_again_with_its_whole_state() {
    let (node, addr) = start_server((LOOPBACK, 0).into(), 10).await;
    let shutdown = CancellationToken::new();
    let mut config = sim(addr, "sw1", 50);
    config.keys = vec![key("sw1", 3)];
    config.in_use = BTreeMap::from([(ap(), 2)]);
    let s = switch::spawn(config, None, shutdown.clone());
    eventually("the grant", || {
        node.pool()[&ap()] == vipool::table::PoolEntry { total: 13, used: 2 }
    })
    .await;
    // The operator removes it (as 30 days of silence would): the next
    // heartbeat is refused as unknown, and the switch registers anew.
    node.applier
        .propose(Command::RemoveClient {
            id: "sw1".into(),
            by: Actor::Operator("alice".into()),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(node.pool()[&ap()].total, 10);
    eventually("the switch back in the table", || {
        node.pool()[&ap()] == vipool::table::PoolEntry { total: 13, used: 2 }
    })
    .await;
    assert_eq!(
        s.view.borrow().grants,
        1,
        "its licenses came back with its state, not a new grant"
    );
    shutdown.cancel();
    s.task.await.unwrap();
    node.stop().await;
}

#[tokio::test]
async fn keys_that_do_not_count_are_dropped_and_the_rest_counts() {
    let (node, addr) = start_server((LOOPBACK, 0).into(), 10).await;
    let shutdown = CancellationToken::new();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let globex = IssuerKey::from_secret_bytes("globex", &[8; 32]).unwrap();
    let mut config = sim(addr, "sw1", 50);
    config.keys = vec![
        key("sw1", 4),
        // Another switch's key, and one of an issuer the server does not trust.
        key("sw2", 50),
        key_by(&globex, "g-1", "SIM-sw1", 100),
    ];
    let s = switch::spawn(config, Some(events_tx), shutdown.clone());
    eventually("its own key counted", || node.pool()[&ap()].total == 14).await;
    let refused: Vec<String> = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            Event::KeyRefused { key_id, reason, .. } => Some(format!("{key_id}: {reason}")),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0].starts_with("sw2-ap-50: ") && refused[0].contains("bound to serial"),
        "{refused:?}"
    );
    assert!(
        refused[1].starts_with("g-1: ") && refused[1].contains("not trusted"),
        "{refused:?}"
    );
    // Heartbeats go on with the key that counts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(node.pool()[&ap()].total, 14);
    let client = node.applier.read(|t| t.client("sw1").cloned()).unwrap();
    assert!(client.stats.heartbeats > 0);
    shutdown.cancel();
    s.task.await.unwrap();
    node.stop().await;
}

#[tokio::test]
async fn a_claim_the_pool_cannot_give_is_lowered_then_asked_for() {
    let (node, addr) = start_server((LOOPBACK, 0).into(), 10).await;
    let shutdown = CancellationToken::new();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut config = sim(addr, "sw1", 50);
    config.in_use = BTreeMap::from([(ap(), 5)]);
    config.retention = Duration::from_secs(3600);
    let s = switch::spawn(config, Some(events_tx), shutdown.clone());
    eventually("the grant", || s.view.borrow().granted.get(&ap()) == Some(&5)).await;
    node.stop().await;
    eventually("the switch seeing the server down", || !s.view.borrow().server_up).await;
    // A new server with a smaller pool: the switch's claim of 5 is more
    // than it can give, so it claims what it holds there (nothing) and
    // asks for the 5, which is refused: S3 holds.
    let (node, _) = start_server(addr, 3).await;
    eventually("the claim lowered and the grant refused", || {
        let v = s.view.borrow();
        v.server_up && v.granted.is_empty() && v.refusals > 0
    })
    .await;
    let entry = node.pool()[&ap()];
    assert_eq!((entry.total, entry.used), (3, 0));
    assert!(drain(&mut events)
        .iter()
        .any(|e| matches!(e, Event::ClaimLowered { held: 0, .. })));
    shutdown.cancel();
    s.task.await.unwrap();
    node.stop().await;
}
