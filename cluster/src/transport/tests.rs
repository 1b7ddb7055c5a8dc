//! Tests of the peer transport: frames, releases, and (with TLS) every
//! step of who may talk to a member.

use std::net::IpAddr;
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::{bincode_cfg, peer_release};
use super::*;
use crate::member::tests::fast;
use crate::sim::Recorder;
use crate::{LogStore, Member};
use raft::StateRole;

pub(super) fn msg(from: u64, to: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = from;
    m.to = to;
    m.term = 3;
    m
}

#[test]
fn frame_roundtrip_and_each_rejection() {
    let m = msg(1, 2);
    let f = encode_frame(PROTOCOL_VERSION, 42, &m);
    assert_eq!(
        u32::from_be_bytes(f[..4].try_into().unwrap()) as usize,
        f.len() - 4
    );
    assert_eq!(decode_payload(&f[4..], 42, 2).unwrap(), Frame::Raft(m.clone()));
    assert_eq!(
        decode_payload(&encode_frame(PROTOCOL_VERSION, 43, &m)[4..], 42, 2),
        Err(FrameError::Cluster { got: 43, want: 42 })
    );
    assert_eq!(
        decode_payload(&encode_frame(PROTOCOL_VERSION + 1, 42, &m)[4..], 42, 2),
        Err(FrameError::Version(PROTOCOL_VERSION + 1))
    );
    assert_eq!(
        decode_payload(
            &encode_release_frame(PROTOCOL_VERSION, "0.0.1", 42, &m)[4..],
            42,
            2
        ),
        Err(FrameError::Release {
            theirs: "0.0.1".into(),
            ours: RELEASE.into()
        })
    );
    assert_eq!(
        decode_release_payload(
            &encode_release_frame(PROTOCOL_VERSION, "9.9", 42, &m)[4..],
            "9.9",
            42,
            2
        ),
        Ok(Frame::Raft(m.clone()))
    );
    assert_eq!(decode_payload(&f[4..], 42, 3), Err(FrameError::Misaddressed(2)));
    assert!(matches!(
        decode_payload(&f[4..f.len() - 1], 42, 2),
        Err(FrameError::Malformed(_))
    ));
    let mut trailing = f[4..].to_vec();
    trailing.push(0);
    assert!(matches!(
        decode_payload(&trailing, 42, 2),
        Err(FrameError::Malformed(_))
    ));
    assert!(matches!(
        decode_payload(&[], 42, 2),
        Err(FrameError::Malformed(_))
    ));
}

proptest::proptest! {
    #[test]
    fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
        let _ = decode_payload(&bytes, 42, 2);
    }

    #[test]
    fn valid_frames_roundtrip(from in 1u64..10, to in 1u64..10, term in 0u64..1000, commit in 0u64..1000) {
        let mut m = msg(from, to);
        m.term = term;
        m.commit = commit;
        let f = encode_frame(PROTOCOL_VERSION, 5, &m);
        proptest::prop_assert_eq!(decode_payload(&f[4..], 5, to), Ok(Frame::Raft(m)));
    }
}

#[test]
fn huge_length_claim_inside_a_frame_is_malformed() {
    // our version and release, cluster 42, from 1, to 2, a pair message
    // (variant 1) claiming 2^40 bytes (bincode varint: 0xfd + u64 LE).
    let mut p = bincode::serde::encode_to_vec(PROTOCOL_VERSION, bincode_cfg()).unwrap();
    p.extend(bincode::serde::encode_to_vec(RELEASE, bincode_cfg()).unwrap());
    p.extend([42, 1, 2, 1, 0xfd]);
    p.extend((1u64 << 40).to_le_bytes());
    p.extend([0u8; 16]);
    assert!(matches!(decode_payload(&p, 42, 2), Err(FrameError::Malformed(_))));
}

#[test]
fn release_strings_are_bounded() {
    // A release claiming 2^40 bytes, then too little.
    let mut p = bincode::serde::encode_to_vec(PROTOCOL_VERSION, bincode_cfg()).unwrap();
    p.push(0xfd);
    p.extend((1u64 << 40).to_le_bytes());
    p.extend([b'1'; 16]);
    assert!(matches!(decode_payload(&p, 42, 2), Err(FrameError::Malformed(_))));
    // A whole release longer than the limit.
    let long = "9".repeat(MAX_RELEASE_LEN + 1);
    let f = encode_release_frame(PROTOCOL_VERSION, &long, 42, &msg(1, 2));
    assert!(matches!(
        decode_payload(&f[4..], 42, 2),
        Err(FrameError::Malformed(_))
    ));
    // So is a release that is no package version (it is logged).
    let f = encode_release_frame(PROTOCOL_VERSION, "1.0\n[fake log line]", 42, &msg(1, 2));
    assert!(matches!(
        decode_payload(&f[4..], 42, 2),
        Err(FrameError::Malformed(_))
    ));
    assert!(matches!(
        decode_payload(
            &encode_release_frame(PROTOCOL_VERSION, "", 42, &msg(1, 2))[4..],
            42,
            2
        ),
        Err(FrameError::Malformed(_))
    ));
    // Invalid UTF-8 is malformed too.
    let mut p = bincode::serde::encode_to_vec(PROTOCOL_VERSION, bincode_cfg()).unwrap();
    p.extend([2, 0xff, 0xfe]);
    assert!(matches!(decode_payload(&p, 42, 2), Err(FrameError::Malformed(_))));
}

#[tokio::test]
async fn a_peer_of_another_release_is_refused_logged_counted_and_cleared_on_upgrade() {
    let cap = crate::logger::tests::Captured::default();
    let _guard = tracing::subscriber::set_default(cap.subscriber());
    let mut cfg = plain(42, 2);
    cfg.release = "1.2.0".into();
    let (t, l) = TcpTransport::bind(cfg).await.unwrap();
    let inbox = Arc::new(Count::default());
    t.attach(l, inbox.clone());
    let addr = t.local_addr();
    assert_eq!(t.stats().last_release_refusal(), None);

    // An older release, twice (it reconnects): refused each time,
    // logged once at error level, never delivered.
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&encode_release_frame(PROTOCOL_VERSION, "1.1.3", 42, &msg(1, 2)))
            .await
            .unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "connection closed");
    }
    let s = t.stats();
    wait_for("counter", || s.wrong_release.load(Ordering::Relaxed) == 2).await;
    assert_eq!(inbox.0.load(Ordering::Relaxed), 0, "nothing reached raft");
    let r = s.last_release_refusal().expect("refusal recorded");
    assert_eq!((r.theirs.as_str(), r.ours.as_str()), ("1.1.3", "1.2.0"));
    assert_eq!(r.peer.ip(), addr.ip());
    assert_eq!(
        r.to_string(),
        format!(
            "peer refused: {} runs vipool release 1.1.3, ours 1.2.0; \
             upgrade both servers to the same release",
            r.peer
        )
    );
    let text = cap.text();
    let line = "peer runs vipool release 1.1.3, this member runs 1.2.0: refusing to pair \
                with another release; upgrade both servers to the same release";
    let errors = text.lines().filter(|l| l.contains(" ERROR ") && l.contains(line));
    assert_eq!(errors.count(), 1, "logged once at error level:\n{text}");
    let again = text.lines().filter(|l| l.contains(" DEBUG ") && l.contains(line));
    assert_eq!(again.count(), 1, "the retry at debug level:\n{text}");

    // The peer is upgraded: its frames are delivered and the refusal clears.
    let mut s2 = TcpStream::connect(addr).await.unwrap();
    s2.write_all(&encode_release_frame(PROTOCOL_VERSION, "1.2.0", 42, &msg(1, 2)))
        .await
        .unwrap();
    wait_for("delivery", || inbox.0.load(Ordering::Relaxed) == 1).await;
    assert_eq!(s.last_release_refusal(), None);
    t.shutdown();
}

#[test]
fn releases_of_later_protocols_are_recognised_and_garbage_is_not() {
    let m = msg(1, 2);
    // A later protocol that starts with its release, as this one does.
    let new = encode_release_frame(PROTOCOL_VERSION + 1, "3.0.0", 42, &m);
    assert_eq!(
        decode_payload(&new[4..], 42, 2),
        Err(FrameError::Version(PROTOCOL_VERSION + 1))
    );
    assert_eq!(
        peer_release(&new[4..], PROTOCOL_VERSION + 1).as_deref(),
        Some(format!("3.0.0 (frame protocol {})", PROTOCOL_VERSION + 1).as_str())
    );
    let junk = [PROTOCOL_VERSION as u8 + 1, 3, 0xff, 0, 1];
    assert_eq!(peer_release(&junk, PROTOCOL_VERSION + 1), None);
    // Protocol 3 (whole messages only) starts with its release too: a
    // server not yet upgraded is named, not taken for garbage.
    let old = encode_release_frame(3, "0.9.0", 42, &m);
    assert_eq!(decode_payload(&old[4..], 42, 2), Err(FrameError::Version(3)));
    assert_eq!(
        peer_release(&old[4..], 3).as_deref(),
        Some("0.9.0 (frame protocol 3)")
    );
    // Ours is decoded, not refused.
    assert_eq!(peer_release(&new[4..], PROTOCOL_VERSION), None);
    // Earlier protocols spoke plain TCP: they never pass the handshake.
    assert_eq!(peer_release(&new[4..], 1), None);
    assert_eq!(peer_release(&new[4..], 2), None);
}

#[tokio::test]
async fn members_of_different_releases_never_exchange_messages() {
    let mut a_cfg = plain(42, 1);
    a_cfg.release = "2.0.0".into();
    let mut b_cfg = plain(42, 2);
    b_cfg.release = "2.1.0".into();
    let (a, al) = TcpTransport::bind(a_cfg).await.unwrap();
    let (b, bl) = TcpTransport::bind(b_cfg).await.unwrap();
    a.set_peer(2, b.local_addr());
    b.set_peer(1, a.local_addr());
    let (ai, bi) = (Arc::new(Count::default()), Arc::new(Count::default()));
    a.attach(al, ai.clone());
    b.attach(bl, bi.clone());
    wait_for("both sides refuse", || {
        a.send(msg(1, 2));
        b.send(msg(2, 1));
        a.stats().wrong_release.load(Ordering::Relaxed) > 0
            && b.stats().wrong_release.load(Ordering::Relaxed) > 0
    })
    .await;
    assert_eq!(ai.0.load(Ordering::Relaxed) + bi.0.load(Ordering::Relaxed), 0);
    let ra = a.stats().last_release_refusal().unwrap();
    assert_eq!((ra.theirs.as_str(), ra.ours.as_str()), ("2.1.0", "2.0.0"));
    let rb = b.stats().last_release_refusal().unwrap();
    assert_eq!((rb.theirs.as_str(), rb.ours.as_str()), ("2.0.0", "2.1.0"));
    a.shutdown();
    b.shutdown();
}

/// An inbox that records what the transport reports.
#[derive(Default)]
pub(super) struct Reports {
    pub(super) unreachable: Mutex<Vec<u64>>,
    pub(super) snapshots: Mutex<Vec<(u64, bool)>>,
}
impl Inbox for Reports {
    fn deliver(&self, _: Message) {}
    fn report_unreachable(&self, id: u64) {
        self.unreachable.lock().unwrap().push(id);
    }
    fn report_snapshot(&self, to: u64, delivered: bool) {
        self.snapshots.lock().unwrap().push((to, delivered));
    }
}

#[tokio::test]
async fn unreachable_peer_is_reported_and_retried_with_backoff_then_reached() {
    // A port nobody listens on (yet).
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer_addr = spare.local_addr().unwrap();
    drop(spare);
    let mut cfg = plain(42, 1);
    cfg.peers.insert(9, peer_addr);
    cfg.backoff_min = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(40);
    let (t, l) = TcpTransport::bind(cfg).await.unwrap();
    let reports = Arc::new(Reports::default());
    t.attach(l, reports.clone());
    let mut snap = msg(1, 9);
    snap.set_msg_type(MessageType::MsgSnapshot);
    t.send(snap);
    wait_for("repeated unreachable reports", || {
        reports
            .unreachable
            .lock()
            .unwrap()
            .iter()
            .filter(|&&i| i == 9)
            .count()
            >= 3
    })
    .await;
    assert!(
        reports.snapshots.lock().unwrap().contains(&(9, false)),
        "lost snapshot reported"
    );
    // An unknown member is reported at once.
    t.send(msg(1, 77));
    assert!(reports.unreachable.lock().unwrap().contains(&77));

    // The peer comes up: the writer reconnects and delivers.
    let mut pcfg = TransportConfig::new(42, 9, peer_addr, Security::InsecurePlaintext);
    pcfg.max_connections = 4;
    let (p, pl) = TcpTransport::bind(pcfg).await.unwrap();
    let got = Arc::new(Count::default());
    p.attach(pl, got.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.0.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never delivered after the peer came up"
        );
        t.send(msg(1, 9));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.shutdown();
    p.shutdown();
}

/// An inbox that only counts.
#[derive(Default)]
struct Count(AtomicU64);
impl Inbox for Count {
    fn deliver(&self, _: Message) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn report_unreachable(&self, _: u64) {}
    fn report_snapshot(&self, _: u64, _: bool) {}
}

pub(super) async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn bad_frames_are_rejected_counted_logged_and_never_delivered() {
    let cap = crate::logger::tests::Captured::default();
    let _guard = tracing::subscriber::set_default(cap.subscriber());
    let mut cfg = plain(42, 2);
    cfg.max_frame = 4096;
    let (t, l) = TcpTransport::bind(cfg).await.unwrap();
    let inbox = Arc::new(Count::default());
    t.attach(l, inbox.clone());
    let addr = t.local_addr();

    let send = |bytes: Vec<u8>| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        // The transport closes the connection after a rejection.
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "connection closed");
    };
    send(8000u32.to_be_bytes().to_vec()).await;
    send(encode_frame(7, 42, &msg(1, 2))).await;
    send(encode_frame(PROTOCOL_VERSION, 41, &msg(1, 2))).await;
    send(encode_frame(PROTOCOL_VERSION, 42, &msg(1, 9))).await;
    let mut junk = 5u32.to_be_bytes().to_vec();
    junk.extend([PROTOCOL_VERSION as u8, 0xff, 0xff, 0xff, 0xff]);
    send(junk).await;

    let s = t.stats();
    wait_for("counters", || s.malformed.load(Ordering::Relaxed) == 1).await;
    assert_eq!(s.oversize.load(Ordering::Relaxed), 1);
    assert_eq!(s.wrong_version.load(Ordering::Relaxed), 1);
    assert_eq!(s.wrong_cluster.load(Ordering::Relaxed), 1);
    assert_eq!(s.misaddressed.load(Ordering::Relaxed), 1);
    assert_eq!(inbox.0.load(Ordering::Relaxed), 0, "nothing reached raft");

    // A good frame on a fresh connection still gets through.
    let mut s2 = TcpStream::connect(addr).await.unwrap();
    s2.write_all(&encode_frame(PROTOCOL_VERSION, 42, &msg(1, 2)))
        .await
        .unwrap();
    wait_for("delivery", || inbox.0.load(Ordering::Relaxed) == 1).await;

    let text = cap.text();
    let version = format!("protocol version 7, this member speaks {PROTOCOL_VERSION}");
    for reason in [
        "oversize frame: 8000 bytes, limit 4096",
        version.as_str(),
        "frame from cluster 41, this is cluster 42",
        "frame for member 9",
        "malformed frame",
    ] {
        assert!(text.contains(reason), "log lacks {reason:?}:\n{text}");
    }
    t.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_over_loopback_tcp_with_restart_of_a_peer() {
    let dir = tempfile::tempdir().unwrap();
    let mut transports = BTreeMap::new();
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        let mut cfg = plain(7, id);
        cfg.backoff_max = Duration::from_millis(200);
        let (t, l) = TcpTransport::bind(cfg).await.unwrap();
        transports.insert(id, t);
        listeners.insert(id, l);
    }
    let addrs: BTreeMap<u64, SocketAddr> = transports.iter().map(|(&i, t)| (i, t.local_addr())).collect();
    let start = |id: u64, t: &TcpTransport, l: TcpListener| {
        for (&p, &a) in &addrs {
            if p != id {
                t.set_peer(p, a);
            }
        }
        let store = LogStore::open(crate::member::tests::disk_at(
            &dir.path().join(format!("{id}.redb")),
        ))
        .unwrap();
        let m = Member::start(
            fast(id),
            store,
            Recorder::default(),
            &[1, 2, 3],
            Arc::new(t.clone()),
        )
        .unwrap();
        t.attach(l, Arc::new(m.clone()));
        m
    };
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let l = listeners.remove(&id).unwrap();
        members.insert(id, start(id, &transports[&id], l));
    }
    let leader = async {
        loop {
            for m in members.values() {
                if m.status()
                    .await
                    .map(|s| s.role == StateRole::Leader)
                    .unwrap_or(false)
                {
                    return m.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let leader = tokio::time::timeout(Duration::from_secs(30), leader)
        .await
        .expect("leader");
    // On two loaded cores leadership can move mid-test; a proposal raft
    // dropped (never appended) or sent to a former leader is retried on
    // the current one, as a client would.
    let propose = |c: u64| {
        let members: Vec<_> = members.values().cloned().collect();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                for m in &members {
                    match m.propose(c).await {
                        Ok(index) => return index,
                        Err(crate::ProposeError::Dropped | crate::ProposeError::NotLeader { .. }) => {}
                        Err(crate::ProposeError::ShuttingDown) => {}
                        Err(e) => panic!("command {c}: {e}"),
                    }
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "command {c} never committed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let mut acked = Vec::new();
    for c in 0..50u64 {
        acked.push((propose(c).await, c));
    }
    // Stop a follower and its transport, write on, bring it back on a new port.
    let f = *members.keys().find(|&&i| i != leader.id()).unwrap();
    members[&f].shutdown().await;
    transports[&f].shutdown();
    for c in 50..150u64 {
        acked.push((propose(c).await, c));
    }
    let mut cfg = plain(7, f);
    cfg.backoff_max = Duration::from_millis(200);
    let (t, l) = TcpTransport::bind(cfg).await.unwrap();
    for tr in transports.values() {
        tr.set_peer(f, t.local_addr());
    }
    let m = start(f, &t, l);
    let last = acked.last().unwrap().0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let st = m.status().await.unwrap();
        if st.applied >= last {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "restarted follower catches up: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = m.read(|sm: &Recorder| sm.by_index.clone()).await.unwrap();
    for (i, c) in acked {
        assert_eq!(seen.get(&i), Some(&c));
    }
    for mm in members.values() {
        mm.shutdown().await;
    }
    m.shutdown().await;
    for tr in transports.values() {
        tr.shutdown();
    }
    t.shutdown();
}

pub(super) fn plain(cluster_id: u64, id: u64) -> TransportConfig {
    TransportConfig::new(
        cluster_id,
        id,
        "127.0.0.1:0".parse().unwrap(),
        Security::InsecurePlaintext,
    )
}

// --- Mutual TLS -----------------------------------------------------------
//
// Members live on their own loopback addresses (127.0.0.N for member N),
// so that the address checks have something to tell apart.

use crate::tls::tests::TestCa;
use crate::tls::Identity;

const NAMES: [(u64, &str); 3] = [(1, "primary"), (2, "backup"), (3, "witness")];

pub(super) fn ip(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

fn names() -> BTreeMap<u64, String> {
    NAMES.iter().map(|&(i, n)| (i, n.to_owned())).collect()
}

fn name_of(id: u64) -> &'static str {
    NAMES.iter().find(|(i, _)| *i == id).unwrap().1
}

/// Member `id`'s transport config, listening on 127.0.0.`id`, every other
/// member configured at its own loopback address (port 9: nobody listens
/// unless a test says otherwise).
pub(super) fn tls_cfg(ca: &TestCa, id: u64) -> TransportConfig {
    let identity = Arc::new(ca.member(&[name_of(id)]));
    let mut cfg = TransportConfig::new(
        42,
        id,
        SocketAddr::new(ip(id as u8), 0),
        Security::Tls {
            identity,
            names: names(),
        },
    );
    for &(p, _) in &NAMES {
        if p != id {
            cfg.peers.insert(p, SocketAddr::new(ip(p as u8), 9));
        }
    }
    cfg.backoff_max = Duration::from_millis(100);
    cfg
}

/// Dials `to` from `from` with `identity`, expecting the server to be
/// member `server` (its certificate is checked as the transport does).
pub(super) async fn dial_as(
    identity: &Identity,
    from: IpAddr,
    to: SocketAddr,
    server: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let tcp = socket.connect(to).await?;
    // As members do: a small frame right after the handshake must not wait
    // for the server's delayed ACK.
    tcp.set_nodelay(true)?;
    let connector = tokio_rustls::TlsConnector::from(identity.client_config().unwrap());
    let name = rustls_pki_types::ServerName::try_from(server.to_owned()).unwrap();
    connector.connect(name, tcp).await
}

/// Whether the other end closes `s` (EOF or an error, such as a TLS alert)
/// within 20 s.
pub(super) async fn closed_by_peer<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// A pair message as the handler receives it: (from, data).
type PairMessage = (u64, Vec<u8>);

/// An inbox that keeps what it is given.
#[derive(Default)]
pub(super) struct Kept(pub(super) Mutex<Vec<Message>>);
impl Inbox for Kept {
    fn deliver(&self, m: Message) {
        self.0.lock().unwrap().push(m);
    }
    fn report_unreachable(&self, _: u64) {}
    fn report_snapshot(&self, _: u64, _: bool) {}
}

#[tokio::test]
async fn members_exchange_raft_and_pair_messages_over_mutual_tls() {
    let ca = TestCa::new();
    let (a, al) = TcpTransport::bind(tls_cfg(&ca, 1)).await.unwrap();
    let (b, bl) = TcpTransport::bind(tls_cfg(&ca, 2)).await.unwrap();
    a.set_peer(2, b.local_addr());
    b.set_peer(1, a.local_addr());
    let (ai, bi) = (Arc::new(Kept::default()), Arc::new(Kept::default()));
    let pairs: Arc<Mutex<Vec<PairMessage>>> = Arc::default();
    let seen = Arc::clone(&pairs);
    b.set_pair_handler(Arc::new(move |from, data| {
        seen.lock().unwrap().push((from, data))
    }));
    a.attach(al, ai.clone());
    b.attach(bl, bi.clone());
    for _ in 0..5 {
        a.send(msg(1, 2));
        b.send(msg(2, 1));
    }
    a.send_pair(2, b"vrrp master 200".to_vec());
    wait_for("deliveries both ways", || {
        ai.0.lock().unwrap().len() == 5 && bi.0.lock().unwrap().len() == 5 && pairs.lock().unwrap().len() == 1
    })
    .await;
    assert_eq!(pairs.lock().unwrap()[0], (1, b"vrrp master 200".to_vec()));
    assert!(bi.0.lock().unwrap().iter().all(|m| m.from == 1 && m.to == 2));
    for t in [&a, &b] {
        let s = t.stats();
        assert_eq!(s.handshake_failures.load(Ordering::Relaxed), 0);
        assert_eq!(s.strangers.load(Ordering::Relaxed), 0);
    }
    a.shutdown();
    b.shutdown();
}

#[tokio::test]
async fn strangers_are_closed_before_any_tls_and_logged_once_a_minute() {
    let cap = crate::logger::tests::Captured::default();
    let _guard = tracing::subscriber::set_default(cap.subscriber());
    let ca = TestCa::new();
    let (t, l) = TcpTransport::bind(tls_cfg(&ca, 2)).await.unwrap();
    let inbox = Arc::new(Kept::default());
    t.attach(l, inbox.clone());
    // 127.0.0.9 is nobody's address: 200 connections, each closed at once,
    // even one that would present a valid member certificate.
    for _ in 0..200 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(ip(9), 0)).unwrap();
        let mut s = socket.connect(t.local_addr()).await.unwrap();
        assert!(closed_by_peer(&mut s).await, "a stranger's connection is closed");
    }
    let primary = ca.member(&["primary"]);
    let r = dial_as(&primary, ip(9), t.local_addr(), "backup").await;
    assert!(r.is_err(), "no TLS with a stranger's address");
    let s = t.stats();
    wait_for("counter", || s.strangers.load(Ordering::Relaxed) == 201).await;
    assert_eq!(
        s.handshake_failures.load(Ordering::Relaxed),
        0,
        "no TLS work for strangers"
    );
    assert!(inbox.0.lock().unwrap().is_empty());
    let text = cap.text();
    let lines = text
        .lines()
        .filter(|l| l.contains("no configured peer's"))
        .count();
    assert_eq!(lines, 1, "one line a minute per cause:\n{text}");
    t.shutdown();
}

#[tokio::test]
async fn certificates_of_another_ca_naming_no_member_or_from_the_wrong_address_are_refused() {
    let ca = TestCa::new();
    let (t, l) = TcpTransport::bind(tls_cfg(&ca, 2)).await.unwrap();
    let inbox = Arc::new(Kept::default());
    t.attach(l, inbox.clone());
    let to = t.local_addr();
    let s = t.stats();

    // Another CA's "primary", from the primary's address: the handshake fails.
    let foreign = TestCa::new().member(&["primary"]);
    if let Ok(mut c) = dial_as(&foreign, ip(1), to, "backup").await {
        // TLS 1.3: the client hears of its refusal on its first read.
        assert!(closed_by_peer(&mut c).await);
    }
    wait_for("handshake failure", || {
        s.handshake_failures.load(Ordering::Relaxed) == 1
    })
    .await;

    // Our CA, but no member name (what a switch or an operator holds).
    let switch = ca.member(&[]);
    let mut c = dial_as(&switch, ip(1), to, "backup").await.unwrap();
    c.write_all(&encode_frame(PROTOCOL_VERSION, 42, &msg(1, 2)))
        .await
        .unwrap();
    assert!(closed_by_peer(&mut c).await);
    wait_for("unknown certificate", || {
        s.unknown_certificates.load(Ordering::Relaxed) == 1
    })
    .await;

    // The witness's certificate, from the primary's address.
    let witness = ca.member(&["witness"]);
    let mut c = dial_as(&witness, ip(1), to, "backup").await.unwrap();
    c.write_all(&encode_frame(PROTOCOL_VERSION, 42, &msg(3, 2)))
        .await
        .unwrap();
    assert!(closed_by_peer(&mut c).await);
    wait_for("wrong address", || {
        s.unknown_certificates.load(Ordering::Relaxed) == 2
    })
    .await;

    // The server must be who we dial: our CA's "primary" is not "backup".
    let primary = ca.member(&["primary"]);
    assert!(dial_as(&primary, ip(1), to, "witness").await.is_err());

    assert!(inbox.0.lock().unwrap().is_empty(), "nothing reached raft");
    t.shutdown();
}

#[tokio::test]
async fn a_frame_in_another_members_name_is_dropped_and_counted() {
    let cap = crate::logger::tests::Captured::default();
    let _guard = tracing::subscriber::set_default(cap.subscriber());
    let ca = TestCa::new();
    let (t, l) = TcpTransport::bind(tls_cfg(&ca, 2)).await.unwrap();
    let inbox = Arc::new(Kept::default());
    let pairs: Arc<Mutex<Vec<u64>>> = Arc::default();
    let seen = Arc::clone(&pairs);
    t.set_pair_handler(Arc::new(move |from, _| seen.lock().unwrap().push(from)));
    t.attach(l, inbox.clone());
    let witness = ca.member(&["witness"]);
    let mut c = dial_as(&witness, ip(3), t.local_addr(), "backup").await.unwrap();
    // Member 3 claims to be member 1, in raft and in a pair message.
    for _ in 0..3 {
        c.write_all(&encode_frame(PROTOCOL_VERSION, 42, &msg(1, 2)))
            .await
            .unwrap();
    }
    c.write_all(&encode_pair_frame(RELEASE, 42, 1, 2, b"master"))
        .await
        .unwrap();
    // Its own frames still count.
    c.write_all(&encode_frame(PROTOCOL_VERSION, 42, &msg(3, 2)))
        .await
        .unwrap();
    c.write_all(&encode_pair_frame(RELEASE, 42, 3, 2, b"witness"))
        .await
        .unwrap();
    c.flush().await.unwrap();
    let s = t.stats();
    wait_for("own frames delivered", || {
        s.delivered.load(Ordering::Relaxed) == 1 && s.pair_delivered.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(s.impersonations.load(Ordering::Relaxed), 4);
    assert_eq!(
        inbox.0.lock().unwrap().iter().map(|m| m.from).collect::<Vec<_>>(),
        [3]
    );
    assert_eq!(*pairs.lock().unwrap(), [3]);
    let text = cap.text();
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("frame claiming member 1 on member 3's connection"))
            .count(),
        1,
        "{text}"
    );
    t.shutdown();
}

#[tokio::test]
async fn handshake_slots_are_per_address_and_have_a_deadline() {
    let ca = TestCa::new();
    let mut cfg = tls_cfg(&ca, 2);
    cfg.handshake_timeout = Duration::from_millis(300);
    cfg.handshakes_per_address = 2;
    let (t, l) = TcpTransport::bind(cfg).await.unwrap();
    let inbox = Arc::new(Kept::default());
    t.attach(l, inbox.clone());
    let to = t.local_addr();
    let s = t.stats();
    let silent = || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(ip(1), 0)).unwrap();
        socket.connect(to).await.unwrap()
    };
    // Two silent connections from the primary's address hold its slots...
    let started = tokio::time::Instant::now();
    let mut held = vec![silent().await, silent().await];
    // ...so a third from there is refused at once,
    let mut third = silent().await;
    assert!(closed_by_peer(&mut third).await);
    wait_for("refusal", || s.refused_connections.load(Ordering::Relaxed) == 1).await;
    // while the witness, at its own address, is not held up.
    let witness = ca.member(&["witness"]);
    let mut w = dial_as(&witness, ip(3), to, "backup").await.unwrap();
    w.write_all(&encode_frame(PROTOCOL_VERSION, 42, &msg(3, 2)))
        .await
        .unwrap();
    wait_for("witness delivered", || inbox.0.lock().unwrap().len() == 1).await;
    // The silent ones are closed at the deadline, not before.
    for c in &mut held {
        assert!(closed_by_peer(c).await);
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    wait_for("deadline failures", || {
        s.handshake_failures.load(Ordering::Relaxed) == 2
    })
    .await;
    // Then the real primary gets in.
    let primary = ca.member(&["primary"]);
    let mut p = dial_as(&primary, ip(1), to, "backup").await.unwrap();
    p.write_all(&encode_frame(PROTOCOL_VERSION, 42, &msg(1, 2)))
        .await
        .unwrap();
    wait_for("primary delivered", || inbox.0.lock().unwrap().len() == 2).await;
    t.shutdown();
}

#[tokio::test]
async fn a_peers_newer_connection_replaces_its_older_one() {
    let ca = TestCa::new();
    let (t, l) = TcpTransport::bind(tls_cfg(&ca, 2)).await.unwrap();
    let inbox = Arc::new(Kept::default());
    t.attach(l, inbox.clone());
    let primary = ca.member(&["primary"]);
    let mut old = dial_as(&primary, ip(1), t.local_addr(), "backup").await.unwrap();
    old.write_all(&encode_frame(PROTOCOL_VERSION, 42, &msg(1, 2)))
        .await
        .unwrap();
    wait_for("first delivered", || inbox.0.lock().unwrap().len() == 1).await;
    let mut new = dial_as(&primary, ip(1), t.local_addr(), "backup").await.unwrap();
    new.write_all(&encode_frame(PROTOCOL_VERSION, 42, &msg(1, 2)))
        .await
        .unwrap();
    wait_for("second delivered", || inbox.0.lock().unwrap().len() == 2).await;
    assert!(closed_by_peer(&mut old).await, "the older connection is closed");
    t.shutdown();
}

#[tokio::test]
async fn a_second_connection_of_a_connected_peer_is_read_before_the_peer_reconnects() {
    let ca = TestCa::new();
    let (a, al) = TcpTransport::bind(tls_cfg(&ca, 1)).await.unwrap();
    let (b, bl) = TcpTransport::bind(tls_cfg(&ca, 2)).await.unwrap();
    a.set_peer(2, b.local_addr());
    b.set_peer(1, a.local_addr());
    let (ai, bi) = (Arc::new(Kept::default()), Arc::new(Kept::default()));
    a.attach(al, ai.clone());
    b.attach(bl, bi.clone());
    a.send(msg(1, 2));
    wait_for("connected", || bi.0.lock().unwrap().len() == 1).await;
    // Member 1 dials again (as after a restart) and says something at once.
    let primary = ca.member(&["primary"]);
    let mut again = dial_as(&primary, ip(1), b.local_addr(), "backup").await.unwrap();
    again
        .write_all(&encode_release_frame(
            PROTOCOL_VERSION,
            "0.0.1-old",
            42,
            &msg(1, 2),
        ))
        .await
        .unwrap();
    again.flush().await.unwrap();
    let s = b.stats();
    wait_for("the frame was read", || {
        s.wrong_release.load(Ordering::Relaxed) == 1
    })
    .await;
    a.shutdown();
    b.shutdown();
}

#[tokio::test]
async fn a_lone_first_frame_is_delivered_at_once() {
    let ca = TestCa::new();
    let (t, l) = TcpTransport::bind(tls_cfg(&ca, 2)).await.unwrap();
    let inbox = Arc::new(Kept::default());
    t.attach(l, inbox.clone());
    let primary = ca.member(&["primary"]);
    let mut c = dial_as(&primary, ip(1), t.local_addr(), "backup").await.unwrap();
    c.write_all(&encode_frame(PROTOCOL_VERSION, 42, &msg(1, 2)))
        .await
        .unwrap();
    c.flush().await.unwrap();
    wait_for("the frame", || inbox.0.lock().unwrap().len() == 1).await;
    t.shutdown();
}
