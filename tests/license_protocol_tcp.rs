//! The client protocol over real TCP on 127.0.0.1: every typed error produced
//! by a real bad client, the connection handled, the table untouched.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vipool::client::{ClientError, Connection};
use vipool::clock::now_ms;
use vipool::license::{IssuerKey, KeyStatement, SignedKey, TrustedIssuers};
use vipool::proto::frame::{self, DEFAULT_MAX_REQUEST};
use vipool::proto::{
    KeyRefusal, Request, RequestError, RequestFrame, ServerError, ServerMessage, SwitchReport,
    PROTOCOL_VERSION,
};
use vipool::server::request::RequestLimits;
use vipool::server::{Applier, LocalApplier, Port, Server, ServerConfig};
use vipool::table::{Actor, Command, CommandError, LicenseTable, LicenseType, TableConfig, TableState};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(10);

struct Harness {
    addr: SocketAddr,
    operator_addr: SocketAddr,
    applier: Arc<LocalApplier>,
    serving: watch::Sender<bool>,
    /// The node's word that it holds the VIP and will serve soon.
    soon: watch::Sender<bool>,
    server: Arc<Server<LocalApplier>>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Harness {
    async fn start(vip: Option<IpAddr>) -> Self {
        Self::start_with(vip, 0, RequestLimits::default()).await
    }

    /// With `connection_threads` (0: connections on the test's runtime)
    /// and the request limits `limits`.
    async fn start_with(vip: Option<IpAddr>, connection_threads: usize, limits: RequestLimits) -> Self {
        let applier = Arc::new(LocalApplier::new(LicenseTable::new(TableConfig::default())));
        // The issuers the pair trusts, recorded before any key counts.
        let issuers = Command::Issuers {
            issuers: trusted().by_name_text(),
            by: Actor::Server("primary".into()),
        };
        applier.propose(issuers).await.unwrap().unwrap();
        for server in ["primary", "backup"] {
            let command = Command::ServerSerial {
                server: server.into(),
                serial: format!("CV-{server}"),
            };
            applier.propose(command).await.unwrap().unwrap();
        }
        for (server, ty, count) in [
            ("primary", "AP", 16),
            ("backup", "AP", 16),
            ("primary", "XSEC", 2),
        ] {
            install(
                &applier,
                server,
                signed(
                    &format!("{server}-{ty}"),
                    &format!("CV-{server}"),
                    ty,
                    count,
                    None,
                ),
            )
            .await;
        }
        let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let operator = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        let operator_addr = operator.local_addr().unwrap();
        let (serving, serving_rx) = watch::channel(true);
        let (soon, soon_rx) = watch::channel(false);
        let shutdown = CancellationToken::new();
        let config = ServerConfig {
            node: "test".into(),
            vip,
            trusted: trusted(),
            limits,
            connection_threads,
            ..ServerConfig::default()
        };
        let server = Arc::new(
            Server::new(Arc::clone(&applier), config, serving_rx, shutdown.clone())
                .with_serving_soon(soon_rx),
        );
        let running = Arc::clone(&server);
        let task = tokio::spawn(async move {
            running
                .run_on(vec![(listener, Port::Client), (operator, Port::Operator)])
                .await
        });
        Self {
            addr,
            operator_addr,
            applier,
            serving,
            soon,
            server,
            shutdown,
            task,
        }
    }

    async fn connect(&self) -> Connection {
        Connection::connect_insecure(self.addr).await.unwrap()
    }

    /// A connection to the operator endpoint (views).
    async fn operator(&self) -> Connection {
        Connection::connect_insecure(self.operator_addr).await.unwrap()
    }

    fn state(&self) -> TableState {
        self.applier.read(|t| t.state().clone())
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

fn acme() -> IssuerKey {
    IssuerKey::from_secret_bytes("acme", &[7; 32]).unwrap()
}

fn trusted() -> TrustedIssuers {
    TrustedIssuers::from_iter([acme().trusted()])
}

/// A key signed by acme, valid from an hour ago (an evaluation key until
/// `expires` when given, in Unix seconds).
fn signed(key_id: &str, serial: &str, ty: &str, count: u32, expires: Option<u64>) -> SignedKey {
    acme()
        .sign(KeyStatement {
            key_id: key_id.into(),
            license_type: LicenseType::new(ty),
            count,
            serial: serial.into(),
            not_before: now_ms() / 1000 - 3600,
            expires,
            issuer: "acme".into(),
        })
        .unwrap()
}

/// Installs a key on `server` as the server does from its key files.
async fn install(applier: &LocalApplier, server: &str, key: SignedKey) {
    let serial = format!("CV-{server}");
    let command = Command::InstallServerKey {
        now_ms: now_ms(),
        server: server.into(),
        key: key.verified(&trusted(), &serial, now_ms() / 1000).unwrap(),
        by: Actor::Server(server.into()),
    };
    applier.propose(command).await.unwrap().unwrap();
}

/// A switch's report: a key per `(type, count)`, signed for `serial`.
fn keys(serial: &str, list: &[(&str, u32)]) -> SwitchReport {
    SwitchReport {
        keys: list
            .iter()
            .map(|(t, n)| signed(&format!("{serial}-{t}-{n}"), serial, t, *n, None))
            .collect(),
        ..SwitchReport::default()
    }
}

/// Sends raw bytes, then reads everything the server sends until it closes.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<ServerMessage> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may close before reading all of it: a failed write is part of the test.
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("server never closed");
    // A reset after the server closed with unread input is fine: what was sent before still counts.
    let _ = read;
    let mut messages = Vec::new();
    let mut at = 0;
    while let Ok(Some((message, used))) = frame::decode::<ServerMessage>(&received[at..], u32::MAX) {
        messages.push(message);
        at += used;
    }
    messages
}

fn only_error(messages: &[ServerMessage]) -> &ServerError {
    match messages {
        [ServerMessage::Reply {
            seq: 0,
            response: Err(e),
        }] => e,
        other => panic!("expected one error reply, got {other:?}"),
    }
}

#[tokio::test]
async fn register_acquire_release_over_tcp() {
    let h = Harness::start(Some(LOOPBACK)).await;
    let mut conn = h.connect().await;
    let (client, pool) = conn
        .register("sw1", "SN1", "6.5.3", keys("SN1", &[("AP", 4)]))
        .await
        .unwrap();
    assert_eq!(
        client.address,
        conn.peer_addr().map(|_| client.address.clone()).unwrap()
    );
    assert_eq!(pool[&ap()].total, 36);
    let (client, pool) = conn.acquire("sw1", &ap(), 30).await.unwrap();
    assert_eq!(client.used_of(&ap()), 30);
    assert_eq!((pool[&ap()].used, pool[&ap()].available()), (30, 6));
    let (_, pool) = conn.release("sw1", &ap(), 10).await.unwrap();
    assert_eq!(pool[&ap()].used, 20);
    let (client, _) = conn
        .heartbeat(
            "sw1",
            SwitchReport {
                used: [(ap(), 20)].into(),
                ..keys("SN1", &[("AP", 4)])
            },
        )
        .await
        .unwrap();
    assert_eq!(client.stats.heartbeats, 1);
    let dump = h.operator().await.show().await.unwrap();
    assert_eq!(dump.state.clients.len(), 1);
    assert_eq!(dump.heartbeats["sw1"].requests, 1);
    assert_eq!(dump.heartbeats["sw1"].responses, 1);
    assert!(dump.status.serving);
    h.stop().await;
}

#[tokio::test]
async fn connections_on_threads_of_their_own_serve_and_close_as_on_the_nodes() {
    // `connection_threads`: connections move to a runtime of their own;
    // they answer from the same table, are still refused off the VIP, and
    // close when the node stops serving.
    let h = Harness::start_with(Some(LOOPBACK), 2, RequestLimits::default()).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let addr = h.addr;
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection::connect_insecure(addr).await.unwrap();
            let id = format!("sw{i}");
            conn.register(&id, &format!("SN{i}"), "v", SwitchReport::default())
                .await
                .unwrap();
            let (client, _) = conn.acquire(&id, &ap(), 1).await.unwrap();
            assert_eq!(client.used_of(&ap()), 1);
            conn
        }));
    }
    let mut conns = Vec::new();
    for task in tasks {
        conns.push(tokio::time::timeout(WAIT, task).await.unwrap().unwrap());
    }
    let state = h.state();
    assert_eq!(state.clients.len(), 20);
    assert!(state.clients.values().all(|c| c.used_of(&ap()) == 1));
    assert_eq!(h.server.client_connections(), 20);
    let dump = h.operator().await.show().await.unwrap();
    assert_eq!(dump.pool[&ap()].used, 20);

    h.serving.send(false).unwrap();
    for conn in &mut conns {
        let closed = tokio::time::timeout(WAIT, conn.next_push()).await.unwrap();
        assert!(
            matches!(closed, Err(ClientError::Closed) | Err(ClientError::Io(_))),
            "{closed:?}"
        );
    }
    let mut late = h.connect().await;
    assert!(matches!(
        late.acquire("sw0", &ap(), 1).await,
        Err(ClientError::Server(ServerError::NotLicenseServer { .. }))
    ));
    assert_eq!(h.state(), state);
    drop(late);
    h.stop().await;
}

#[tokio::test]
async fn table_refusals_are_typed_and_keep_the_connection() {
    let h = Harness::start(Some(LOOPBACK)).await;
    let mut conn = h.connect().await;
    let unknown = conn
        .heartbeat("ghost", SwitchReport::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown, ClientError::Server(ServerError::Refused(CommandError::UnknownClient(id))) if id == "ghost"),
        "{unknown:?}"
    );
    conn.register("sw1", "SN1", "v", SwitchReport::default())
        .await
        .unwrap();
    let before = h.state();
    let short = conn.acquire("sw1", &ap(), 33).await.unwrap_err();
    assert!(
        matches!(
            short,
            ClientError::Server(ServerError::Refused(CommandError::NotEnoughLicenses {
                requested: 33,
                available: 32,
                ..
            }))
        ),
        "{short:?}"
    );
    assert_eq!(h.state(), before);

    // A heartbeat claiming more than the pool has is a claim refused like an acquire.
    let xsec = LicenseType::new("XSEC");
    let report = SwitchReport {
        used: BTreeMap::from([(xsec.clone(), 3)]),
        ..SwitchReport::default()
    };
    let claim = conn.heartbeat("sw1", report).await.unwrap_err();
    assert!(
        matches!(
            claim,
            ClientError::Server(ServerError::Refused(CommandError::ClaimExceedsAvailable {
                claimed: 3,
                held: 0,
                available: 2,
                ..
            }))
        ),
        "{claim:?}"
    );
    assert_eq!(h.state(), before);
    // Over-subscribed the way it happens: the switch brings 2 XSEC of its
    // own, uses 3, then its key is deleted (its APs stay up).
    let with_key = SwitchReport {
        used: BTreeMap::from([(xsec.clone(), 3)]),
        ..keys("SN1", &[("XSEC", 2)])
    };
    conn.update("sw1", with_key).await.unwrap();
    let without = SwitchReport {
        used: BTreeMap::from([(xsec.clone(), 3)]),
        ..SwitchReport::default()
    };
    conn.update("sw1", without).await.unwrap();
    let before = h.state();
    let over = conn.acquire("sw1", &xsec, 1).await.unwrap_err();
    assert!(
        matches!(
            over,
            ClientError::Server(ServerError::Refused(CommandError::OverSubscribed {
                available: -1,
                ..
            }))
        ),
        "{over:?}"
    );
    assert_eq!(h.state(), before);
    // Same connection still answers.
    conn.acquire("sw1", &ap(), 1).await.unwrap();
    // Each refusal is counted by its cause, for the operator to see.
    let refused = h.operator().await.show().await.unwrap().status.refused;
    for cause in [
        "table_unknown_client",
        "table_not_enough_licenses",
        "table_claim_exceeds_available",
        "table_over_subscribed",
    ] {
        assert_eq!(refused.get(cause), Some(&1), "{cause}: {refused:?}");
    }
    h.stop().await;
}

#[tokio::test]
async fn not_the_license_server_off_the_vip_or_without_it() {
    // Listening on 127.0.0.1 while the VIP is 127.0.0.2: requests arrive on the node's own address.
    let h = Harness::start(Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))).await;
    let mut conn = h.connect().await;
    let before = h.state();
    let err = conn
        .register("sw1", "SN1", "v", SwitchReport::default())
        .await
        .unwrap_err();
    match err {
        ClientError::Server(ServerError::NotLicenseServer { vip }) => {
            assert_eq!(vip.as_deref(), Some("127.0.0.2"))
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err_text(conn.acquire("sw1", &ap(), 1).await).contains("not the license server, use VIP 127.0.0.2")
    );
    // Operator views still work on any address.
    assert_eq!(
        h.operator().await.show().await.unwrap().status.vip.as_deref(),
        Some("127.0.0.2")
    );
    assert_eq!(h.state(), before);
    h.stop().await;

    // On the VIP, but the node just lost it: refused, and connections are closed.
    let h = Harness::start(Some(LOOPBACK)).await;
    let mut conn = h.connect().await;
    conn.register("sw1", "SN1", "v", SwitchReport::default())
        .await
        .unwrap();
    h.serving.send(false).unwrap();
    let closed = tokio::time::timeout(WAIT, conn.next_push()).await.unwrap();
    assert!(
        matches!(closed, Err(ClientError::Closed) | Err(ClientError::Io(_))),
        "{closed:?}"
    );
    let mut late = h.connect().await;
    let before = h.state();
    assert!(matches!(
        late.acquire("sw1", &ap(), 1).await,
        Err(ClientError::Server(ServerError::NotLicenseServer { .. }))
    ));
    assert_eq!(h.state(), before);
    h.stop().await;
}

#[tokio::test]
async fn a_vip_holder_about_to_serve_holds_requests_until_it_does() {
    // A new VIP holder whose leadership is on its way: a request waits for
    // serving instead of a refusal that would only make the client
    // reconnect (a full TLS handshake each time) to this same node.
    let h = Harness::start(Some(LOOPBACK)).await;
    h.serving.send(false).unwrap();
    h.soon.send(true).unwrap();
    let mut conn = h.connect().await;
    let register = tokio::spawn(async move {
        let r = conn.register("sw1", "SN1", "v", SwitchReport::default()).await;
        (r, conn)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!register.is_finished(), "answered before the node served");
    h.serving.send(true).unwrap();
    let (registered, mut conn) = tokio::time::timeout(WAIT, register).await.unwrap().unwrap();
    registered.expect("held, then served");
    conn.acquire("sw1", &ap(), 1).await.expect("served");

    // Leadership is no longer coming (a refused takeover, a stop): the
    // request waiting is refused then, and new ones at once.
    h.serving.send(false).unwrap();
    let mut conn = h.connect().await;
    let before = h.state();
    let acquire = tokio::spawn(async move { conn.acquire("sw1", &ap(), 1).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!acquire.is_finished(), "refused while the node said soon");
    h.soon.send(false).unwrap();
    let refused = tokio::time::timeout(WAIT, acquire).await.unwrap().unwrap();
    assert!(
        matches!(
            refused,
            Err(ClientError::Server(ServerError::NotLicenseServer { .. }))
        ),
        "{refused:?}"
    );
    let mut late = h.connect().await;
    let quick = tokio::time::timeout(Duration::from_millis(500), late.acquire("sw1", &ap(), 1)).await;
    assert!(
        matches!(
            quick,
            Ok(Err(ClientError::Server(ServerError::NotLicenseServer { .. })))
        ),
        "{quick:?}"
    );
    assert_eq!(h.state(), before);
    h.stop().await;

    // Off the VIP nothing is held, soon or not: that node is never the server there.
    let h = Harness::start(Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))).await;
    h.serving.send(false).unwrap();
    h.soon.send(true).unwrap();
    let mut conn = h.connect().await;
    let quick = tokio::time::timeout(
        Duration::from_millis(500),
        conn.register("sw1", "SN1", "v", SwitchReport::default()),
    )
    .await;
    assert!(
        matches!(
            quick,
            Ok(Err(ClientError::Server(ServerError::NotLicenseServer { .. })))
        ),
        "{quick:?}"
    );
    h.stop().await;
}

fn err_text<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    result.unwrap_err().to_string()
}

#[tokio::test]
async fn bad_frames_close_only_their_connection() {
    let h = Harness::start(Some(LOOPBACK)).await;
    let mut good = h.connect().await;
    good.register("sw1", "SN1", "v", keys("SN1", &[("AP", 1)]))
        .await
        .unwrap();
    let before = h.state();

    // Version not supported.
    let mut wrong_version = frame::encode(
        &RequestFrame {
            seq: 1,
            request: Request::Status,
        },
        u32::MAX,
    )
    .unwrap();
    wrong_version[4..6].copy_from_slice(&(PROTOCOL_VERSION + 1).to_be_bytes());
    let messages = raw_exchange(h.addr, &wrong_version).await;
    assert_eq!(
        only_error(&messages),
        &ServerError::VersionNotSupported {
            got: PROTOCOL_VERSION + 1,
            supported: PROTOCOL_VERSION
        }
    );

    // Frame too large: refused from its length prefix alone.
    let mut huge = (DEFAULT_MAX_REQUEST + 1).to_be_bytes().to_vec();
    huge.extend_from_slice(&[0; 64]);
    let messages = raw_exchange(h.addr, &huge).await;
    assert_eq!(
        only_error(&messages),
        &ServerError::FrameTooLarge {
            size: DEFAULT_MAX_REQUEST + 1,
            max: DEFAULT_MAX_REQUEST
        }
    );

    // Malformed: right length and version, garbage body.
    let mut garbage = vec![0, 0, 0, 8];
    garbage.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    garbage.extend_from_slice(&[0xff; 6]);
    let messages = raw_exchange(h.addr, &garbage).await;
    assert!(
        matches!(only_error(&messages), ServerError::MalformedFrame(_)),
        "{messages:?}"
    );

    // A valid request followed by garbage: the first is answered, then the close.
    let mut mixed = frame::encode(
        &RequestFrame {
            seq: 9,
            request: Request::Status,
        },
        u32::MAX,
    )
    .unwrap();
    mixed.extend_from_slice(&garbage);
    let messages = raw_exchange(h.addr, &mixed).await;
    assert!(
        matches!(
            messages.as_slice(),
            [
                // Answered (on the client port a status request is
                // refused, naming the operator port), then the close.
                ServerMessage::Reply {
                    seq: 9,
                    response: Err(ServerError::WrongPort(_))
                },
                ServerMessage::Reply {
                    seq: 0,
                    response: Err(ServerError::MalformedFrame(_))
                }
            ]
        ),
        "{messages:?}"
    );

    assert_eq!(h.state(), before);
    // The good connection was never disturbed.
    good.acquire("sw1", &ap(), 1).await.unwrap();
    let dump = h.operator().await.show().await.unwrap();
    assert_eq!(dump.status.bad_frames, 4);
    h.stop().await;
}

/// Fuzzing-style: random bytes, truncated and bit-flipped valid frames. The
/// server answers or closes, never dies, and the table is untouched unless a
/// mutation happened to be a valid request that the server accepted.
#[tokio::test]
async fn garbage_and_mutated_frames_never_hurt_the_server() {
    let h = Harness::start(Some(LOOPBACK)).await;
    let mut good = h.connect().await;
    good.register("sw1", "SN1", "v", keys("SN1", &[("AP", 1)]))
        .await
        .unwrap();
    let before = h.state();
    let valid = frame::encode(
        &RequestFrame {
            seq: 3,
            request: Request::Acquire {
                id: "sw1".into(),
                license_type: ap(),
                count: 1,
            },
        },
        u32::MAX,
    )
    .unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut accepted = 0;
    for case in 0..300 {
        let bytes: Vec<u8> = match case % 3 {
            0 => (0..next() % 64).map(|_| next() as u8).collect(),
            1 => valid[..(next() as usize % valid.len())].to_vec(),
            _ => {
                let mut flipped = valid.clone();
                for _ in 0..=(next() % 3) {
                    let at = next() as usize % flipped.len();
                    flipped[at] ^= 1 << (next() % 8);
                }
                flipped
            }
        };
        let messages = raw_exchange(h.addr, &bytes).await;
        accepted += messages
            .iter()
            .filter(|m| matches!(m, ServerMessage::Reply { response: Ok(_), .. }))
            .count();
    }
    if accepted == 0 {
        assert_eq!(h.state(), before);
    }
    good.acquire("sw1", &ap(), 1)
        .await
        .expect("the server still serves");
    h.stop().await;
}

#[tokio::test]
async fn pool_changes_are_pushed_to_registered_clients() {
    let h = Harness::start(Some(LOOPBACK)).await;
    let mut a = h.connect().await;
    let mut b = h.connect().await;
    a.register("sw-a", "A", "v", SwitchReport::default())
        .await
        .unwrap();
    b.register("sw-b", "B", "v", keys("B", &[("AP", 8)]))
        .await
        .unwrap();
    // sw-a learns of sw-b's 8 AP without asking.
    let pool = tokio::time::timeout(WAIT, a.next_push()).await.unwrap().unwrap();
    assert_eq!(pool[&ap()].total, 40);
    b.acquire("sw-b", &ap(), 5).await.unwrap();
    let pool = tokio::time::timeout(WAIT, a.next_push()).await.unwrap().unwrap();
    assert_eq!(pool[&ap()].used, 5);
    h.stop().await;
}

/// SPEC section 4, "limits about to expire: both sides show a warning": the
/// server lists evaluation keys that stop counting within its warning window
/// in its status, and only those.
#[tokio::test]
async fn status_warns_about_evaluation_keys_about_to_expire() {
    let h = Harness::start(None).await;
    let now = now_ms();
    let hour = 3_600_000;
    for (key_id, hours) in [("eval-soon", 2), ("eval-later", 24 * 30)] {
        let expires = (now + hours * hour) / 1000;
        install(
            &h.applier,
            "primary",
            signed(key_id, "CV-primary", "PEFNG", 8, Some(expires)),
        )
        .await;
    }
    let dump = h.operator().await.show().await.unwrap();
    assert_eq!(dump.status.warnings.len(), 1, "{:?}", dump.status.warnings);
    let warning = &dump.status.warnings[0];
    assert!(
        warning.starts_with("evaluation key \"eval-soon\" (PEFNG x8) of server:primary expires in 0d 1h")
            || warning.contains("0d 2h"),
        "{warning}"
    );
    h.shutdown.cancel();
}

/// A node giving its VIP away gracefully stops accepting first: new
/// connections are refused at once, the open ones are still answered until
/// shutdown.
#[tokio::test]
async fn stop_accepting_refuses_new_connections_and_keeps_open_ones() {
    let applier = Arc::new(LocalApplier::new(LicenseTable::new(TableConfig::default())));
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_serving, serving_rx) = watch::channel(true);
    let shutdown = CancellationToken::new();
    let server = Arc::new(Server::new(
        applier,
        ServerConfig::default(),
        serving_rx,
        shutdown.clone(),
    ));
    let running = Arc::clone(&server);
    let task = tokio::spawn(async move { running.run_on(vec![(listener, Port::Operator)]).await });
    let mut open = Connection::connect_insecure(addr).await.unwrap();
    open.show().await.unwrap();

    server.stop_accepting();
    // A connection that raced into the accept queue is reset when the
    // listener closes; from then on connecting is refused.
    tokio::time::timeout(WAIT, async {
        loop {
            match TcpStream::connect(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await
    .expect("new connections were never refused");
    // The server keeps running and answers the connection it had.
    assert!(!task.is_finished());
    open.show().await.expect("an open connection is still answered");

    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn stop_accepting_closes_client_connections_while_the_vip_is_here() {
    // A node giving its VIP away waits for its client connections to close
    // first: one still open when the VIP leaves loses the client's next
    // request until a TCP retransmission, 200 ms or more later.
    let h = Harness::start(None).await;
    let mut conn = h.connect().await;
    conn.register("sw1", "SN1", "v", SwitchReport::default())
        .await
        .unwrap();
    let mut operator = h.operator().await;
    operator.show().await.unwrap();
    assert_eq!(h.server.client_connections(), 1);
    h.server.stop_accepting();
    let closed = tokio::time::timeout(WAIT, conn.next_push()).await.unwrap();
    assert!(
        matches!(closed, Err(ClientError::Closed) | Err(ClientError::Io(_))),
        "{closed:?}"
    );
    assert!(
        tokio::time::timeout(WAIT, async {
            while h.server.client_connections() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .is_ok(),
        "client connections still counted"
    );
    // The operator's connection goes on.
    operator
        .show()
        .await
        .expect("an operator connection is still answered");
    h.stop().await;
}

/// Over the wire: a key that does not verify, a request for another
/// client's id, and an operator's changes, each named in its answer and
/// counted in the status; over plain TCP (no certificate) the server
/// believes the identity the request claims.
#[tokio::test]
async fn keys_identities_and_operator_changes_over_tcp() {
    let h = Harness::start(Some(LOOPBACK)).await;
    let mut conn = h.connect().await;
    conn.register("sw1", "SN1", "v", keys("SN1", &[("AP", 4)]))
        .await
        .unwrap();
    let before = h.state();
    // sw2 presents sw1's key (bound to SN1).
    let err = conn
        .register("sw2", "SN2", "v", keys("SN1", &[("AP", 4)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Server(ServerError::Denied(RequestError::Key(KeyRefusal::WrongSerial { bound, .. }))) if bound == "SN1"),
        "{err:?}"
    );
    // A copy of sw1's key under sw1's serial, from another id.
    let err = conn
        .register("sw1-clone", "SN1", "v", keys("SN1", &[("AP", 4)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Server(ServerError::Refused(CommandError::KeyCounted { key_id, .. })) if key_id == "SN1-AP-4"),
        "{err:?}"
    );
    assert_eq!(h.state(), before);
    // Views and the operator's changes are on the operator endpoint.
    let mut op = h.operator().await;
    let status = op.show().await.unwrap().status;
    assert_eq!(
        status.refused.get("client_key_refused"),
        Some(&1),
        "{:?}",
        status.refused
    );
    assert_eq!(
        status.refused.get("table_key_counted"),
        Some(&1),
        "{:?}",
        status.refused
    );

    // The operator's writes: committed, and named in the answer.
    let pool = op
        .install_key("backup", signed("backup-XSEC", "CV-backup", "XSEC", 4, None))
        .await
        .unwrap();
    assert_eq!(pool[&LicenseType::new("XSEC")].total, 6);
    let dump = op.show().await.unwrap();
    assert!(
        matches!(&dump.state.server_keys["backup-XSEC"].installed_by, Actor::Operator(name) if name.starts_with("unauthenticated@")),
        "{:?}",
        dump.state.server_keys["backup-XSEC"]
    );
    let err = op
        .install_key("backup", signed("p-2", "CV-primary", "XSEC", 4, None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Server(ServerError::Denied(RequestError::Key(
                KeyRefusal::WrongSerial { .. }
            )))
        ),
        "{err:?}"
    );
    // Not on the client port.
    assert!(matches!(
        conn.remove_key("backup-XSEC").await,
        Err(ClientError::Server(ServerError::WrongPort(_)))
    ));
    let pool = op.remove_key("backup-XSEC").await.unwrap();
    assert_eq!(pool[&LicenseType::new("XSEC")].total, 2);
    let pool = op.remove_client("sw1").await.unwrap();
    assert_eq!(pool[&ap()].total, 32);
    assert!(h.state().clients.is_empty());
    h.stop().await;
}

/// A client sending faster than `license.requests_per_s_per_client` is
/// paced, over all its connections together: every request is answered
/// (none refused), no faster than the rate allows, and counted; another
/// client is served meanwhile.
#[tokio::test]
async fn a_client_faster_than_its_rate_is_paced_not_refused() {
    const PER_S: u32 = 20;
    const BURST: u32 = 5;
    let limits = RequestLimits {
        requests_per_s_per_client: PER_S,
        request_burst_per_client: BURST,
        ..RequestLimits::default()
    };
    let h = Harness::start_with(Some(LOOPBACK), 0, limits).await;
    let mut first = h.connect().await;
    first
        .register("sw1", "SN1", "6.5.3", keys("SN1", &[("AP", 4)]))
        .await
        .unwrap();
    let mut other = h.connect().await;
    other
        .register("sw2", "SN2", "6.5.3", SwitchReport::default())
        .await
        .unwrap();
    let began = std::time::Instant::now();
    // Two connections of sw1, 24 requests each: at most a full burst goes
    // at once, the rest waits for the rate.
    let second = h.connect().await;
    let flood = |mut conn: Connection| async move {
        for _ in 0..12 {
            conn.acquire("sw1", &ap(), 1).await.unwrap();
            conn.release("sw1", &ap(), 1).await.unwrap();
        }
    };
    let sw1 = tokio::spawn(async move {
        tokio::join!(flood(first), flood(second));
        std::time::Instant::now()
    });
    // sw2 has its own rate: served while sw1 waits.
    tokio::time::sleep(Duration::from_millis(200)).await;
    other.acquire("sw2", &ap(), 1).await.unwrap();
    let sw2_done = std::time::Instant::now();
    let sw1_done = sw1.await.unwrap();
    let took = sw1_done - began;
    let least = Duration::from_millis(u64::from(48 - BURST) * 1000 / u64::from(PER_S));
    assert!(
        took >= least,
        "48 requests in {took:?}: the rate allows them in {least:?} at the least"
    );
    assert!(sw2_done < sw1_done, "sw2 waited for sw1's rate");
    let status = h.operator().await.status().await.unwrap();
    assert!(status.paced > 0, "{status:?}");
    assert!(status.refused.is_empty(), "{:?}", status.refused);
    h.stop().await;
}

/// The frames a raw connection receives within `within`, with their
/// protocol versions (probes would show as `None`).
async fn frames_within(stream: &mut TcpStream, within: Duration) -> Vec<(Option<ServerMessage>, u16)> {
    let mut received = Vec::new();
    let until = tokio::time::Instant::now() + within;
    let mut chunk = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, stream.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
    }
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some((decoded, used)) = frame::decode_frame::<ServerMessage>(&received[at..], u32::MAX).unwrap()
    {
        let version = u16::from_be_bytes([received[at + 4], received[at + 5]]);
        frames.push(match decoded {
            frame::Decoded::Message { message, .. } => (Some(message), version),
            frame::Decoded::Probe => (None, version),
        });
        at += used;
    }
    assert_eq!(at, received.len(), "whole frames only");
    frames
}

fn register_frame(seq: u64, id: &str, version: u16) -> Vec<u8> {
    let request = Request::Register {
        id: id.into(),
        serial: format!("SN-{id}"),
        version: "v".into(),
        report: SwitchReport::default(),
    };
    frame::encode_as(&RequestFrame { seq, request }, version, DEFAULT_MAX_REQUEST).unwrap()
}

/// Protocol version 3: a request the server holds (here: a new VIP holder
/// whose leadership is on its way) is said to be held at once, and its
/// reply follows; a probe is dropped without an answer. A client of
/// version 2 (the previous release) is served as before: answered in
/// version 2, and never sent a Held, which it could not read.
#[tokio::test]
async fn a_held_request_is_said_to_be_held_and_an_older_client_is_still_served() {
    let h = Harness::start(Some(LOOPBACK)).await;
    h.serving.send(false).unwrap();
    h.soon.send(true).unwrap();
    let mut new = TcpStream::connect(h.addr).await.unwrap();
    let mut old = TcpStream::connect(h.addr).await.unwrap();
    new.write_all(&register_frame(1, "sw-new", PROTOCOL_VERSION))
        .await
        .unwrap();
    old.write_all(&register_frame(1, "sw-old", 2)).await.unwrap();
    // Well within the hold (1 s), well past HELD_AFTER (10 ms).
    let held = frames_within(&mut new, Duration::from_millis(300)).await;
    assert_eq!(held, [(Some(ServerMessage::Held { seq: 1 }), PROTOCOL_VERSION)]);
    assert_eq!(frames_within(&mut old, Duration::from_millis(50)).await, []);
    h.serving.send(true).unwrap();
    for (stream, version) in [(&mut new, PROTOCOL_VERSION), (&mut old, 2)] {
        let answered = frames_within(stream, Duration::from_millis(500)).await;
        assert!(
            matches!(
                &answered[..],
                [(Some(ServerMessage::Reply { seq: 1, response: Ok(_) }), v)] if *v == version
            ),
            "{answered:?}"
        );
    }
    // Served at once now: no Held. A probe on either connection gets no
    // answer and changes nothing; a version-2 frame on the newer client's
    // connection is answered in version 2.
    let mut bytes = frame::PROBE.to_vec();
    bytes.extend(register_frame(2, "sw-new", 2));
    new.write_all(&bytes).await.unwrap();
    let answered = frames_within(&mut new, Duration::from_millis(300)).await;
    assert!(
        matches!(
            &answered[..],
            [(
                Some(ServerMessage::Reply {
                    seq: 2,
                    response: Ok(_)
                }),
                2
            )]
        ),
        "{answered:?}"
    );
    assert_eq!(h.state().clients.len(), 2);
    // A body-less frame of version 2 is malformed, as it always was.
    let mut v2_probe = frame::PROBE;
    v2_probe[4..6].copy_from_slice(&2u16.to_be_bytes());
    old.write_all(&v2_probe).await.unwrap();
    let refused = frames_within(&mut old, Duration::from_millis(300)).await;
    assert!(
        matches!(
            &refused[..],
            [(
                Some(ServerMessage::Reply {
                    seq: 0,
                    response: Err(ServerError::MalformedFrame(_))
                }),
                2
            )]
        ),
        "{refused:?}"
    );
    h.stop().await;
}
