//! How long a snapshot takes to cross from one member to another over
//! loopback with mutual TLS 1.3, as the daemon runs: first between two bare
//! transports (send to delivery of the whole message), then between members
//! (a member that joins empty, from its start to having applied the
//! leader's last entry: snapshot sent, restored and stored, in memory).
//! Prints figures; it is not a test.
//!
//! ```text
//! cargo bench -p cluster --bench snapshot
//! BENCH_SIZES_MIB=1,64,256 cargo bench -p cluster --bench snapshot
//! ```
//!
//! Transports run with the default `max_frame` (64 MiB: a 1 MiB snapshot
//! goes in one frame, a 64 MiB one, a little more than a frame, in chunks
//! of 1 MiB) and with 1 MiB frames (everything in chunks), to show what
//! chunking costs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::raft::eraftpb::{Message, MessageType, Snapshot};
use cluster::tls::Identity;
use cluster::transport::{Inbox, Security, TcpTransport, TransportConfig};
use cluster::{Disk, LogStore, Member, MemberConfig, Outbox, SnapshotError, StateMachine};
use tokio::sync::mpsc;

const MIB: usize = 1024 * 1024;

fn sizes_mib() -> Vec<usize> {
    std::env::var("BENCH_SIZES_MIB")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 64])
}

/// A throwaway CA and a certificate for each of three members, as the
/// daemon gets them from `vipool pki`.
fn tls_identities() -> Vec<(u64, Security)> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let names = [
        (1u64, "m1".to_owned()),
        (2, "m2".to_owned()),
        (3, "m3".to_owned()),
    ];
    names
        .iter()
        .map(|(id, name)| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(vec![name.clone()]).unwrap();
            p.extended_key_usages = vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = p.signed_by(&key, &issuer).unwrap().pem();
            let identity =
                Identity::from_pem(ca_pem.as_bytes(), cert.as_bytes(), key.serialize_pem().as_bytes())
                    .unwrap();
            let security = Security::Tls {
                identity: Arc::new(identity),
                names: names.iter().cloned().collect(),
            };
            (*id, security)
        })
        .collect()
}

/// Hands every delivered message, with when it arrived, to the bench.
struct Deliveries(mpsc::UnboundedSender<(Instant, Message)>);
impl Inbox for Deliveries {
    fn deliver(&self, msg: Message) {
        let _ = self.0.send((Instant::now(), msg));
    }
    fn report_unreachable(&self, _: u64) {}
    fn report_snapshot(&self, _: u64, _: bool) {}
}

/// Keeps when the sender reported each snapshot written.
#[derive(Default)]
struct Reports(Mutex<Vec<(Instant, bool)>>);
impl Inbox for Reports {
    fn deliver(&self, _: Message) {}
    fn report_unreachable(&self, _: u64) {}
    fn report_snapshot(&self, _: u64, delivered: bool) {
        self.0.lock().unwrap().push((Instant::now(), delivered));
    }
}

fn snapshot_msg(len: usize) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.from = 1;
    m.to = 2;
    m.term = 2;
    let mut s = Snapshot::default();
    s.mut_metadata().index = 1000;
    s.mut_metadata().term = 2;
    s.mut_metadata().mut_conf_state().voters = vec![1, 2];
    s.set_data(vec![0x5a; len].into());
    m.set_snapshot(s);
    m
}

async fn transports(max_frame: u32, len: usize, runs: usize) {
    let mut ts = Vec::new();
    for (id, security) in tls_identities().into_iter().take(2) {
        let mut cfg = TransportConfig::new(1, id, "127.0.0.1:0".parse().unwrap(), security);
        cfg.max_frame = max_frame;
        ts.push(TcpTransport::bind(cfg).await.unwrap());
    }
    let (b, bl) = ts.pop().unwrap();
    let (a, al) = ts.pop().unwrap();
    a.set_peer(2, b.local_addr());
    b.set_peer(1, a.local_addr());
    let reports = Arc::new(Reports::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    a.attach(al, reports.clone());
    b.attach(bl, Arc::new(Deliveries(tx)));
    // Connect first: the handshake is not what is measured.
    let mut hello = Message::default();
    hello.set_msg_type(MessageType::MsgHeartbeat);
    (hello.from, hello.to) = (1, 2);
    a.send(hello);
    rx.recv().await.unwrap();

    let mut took = Vec::new();
    let mut reported = Vec::new();
    for _ in 0..runs {
        let msg = snapshot_msg(len);
        let started = Instant::now();
        a.send(msg);
        let (at, got) = rx.recv().await.unwrap();
        assert_eq!(got.get_snapshot().get_data().len(), len);
        took.push(at - started);
        let deadline = Instant::now() + Duration::from_secs(60);
        while reports.0.lock().unwrap().len() < took.len() {
            assert!(Instant::now() < deadline, "no report");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (at, ok) = *reports.0.lock().unwrap().last().unwrap();
        assert!(ok, "reported failed");
        reported.push(at - started);
    }
    took.sort();
    reported.sort();
    let median = took[took.len() / 2];
    println!(
        "transport  {:>4} MiB  max_frame {:>3} MiB  {:<7}  delivered: min {:>9.1?}  median {:>9.1?}  \
         ({:>6.0} MiB/s)  reported written: median {:>9.1?}",
        len / MIB,
        max_frame as usize / MIB,
        if a.stats().chunked.load(Ordering::Relaxed) > 0 {
            "chunked"
        } else {
            "whole"
        },
        took[0],
        median,
        len as f64 / MIB as f64 / median.as_secs_f64(),
        reported[reported.len() / 2],
    );
    a.shutdown();
    b.shutdown();
}

/// A table of `len` bytes, rewritten by every command.
struct Blob {
    applied: u64,
    data: Vec<u8>,
    restores: Arc<AtomicU64>,
}

impl StateMachine for Blob {
    type Command = u8;
    type Response = u64;
    fn apply(&mut self, index: u64, c: u8) -> u64 {
        self.applied = index;
        self.data[index as usize % 4096] = c;
        index
    }
    fn applied_index(&self) -> u64 {
        self.applied
    }
    fn snapshot(&self) -> Vec<u8> {
        let mut b = self.applied.to_be_bytes().to_vec();
        b.extend_from_slice(&self.data);
        b
    }
    fn restore(&mut self, b: &[u8]) -> Result<(), SnapshotError> {
        if b.len() < 8 {
            return Err(SnapshotError("short".into()));
        }
        self.applied = u64::from_be_bytes(b[..8].try_into().unwrap());
        self.data = b[8..].to_vec();
        self.restores.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

async fn join(len: usize) {
    let mut ts = Vec::new();
    for (id, security) in tls_identities() {
        let cfg = TransportConfig::new(1, id, "127.0.0.1:0".parse().unwrap(), security);
        ts.push(TcpTransport::bind(cfg).await.unwrap());
    }
    let addrs: Vec<_> = ts.iter().map(|(t, _)| t.local_addr()).collect();
    for (i, (t, _)) in ts.iter().enumerate() {
        for (j, &a) in addrs.iter().enumerate() {
            if i != j {
                t.set_peer(j as u64 + 1, a);
            }
        }
    }
    let restores = Arc::new(AtomicU64::new(0));
    let start = |id: u64, t: &TcpTransport, l| {
        let mut cfg = MemberConfig::new(id);
        cfg.tick = Duration::from_millis(20);
        cfg.node.snapshot_interval = 5;
        let sm = Blob {
            applied: 0,
            data: vec![0; len],
            restores: restores.clone(),
        };
        let store = LogStore::open(Disk::memory()).unwrap();
        let m = Member::start(cfg, store, sm, &[1, 2, 3], Arc::new(t.clone())).unwrap();
        t.attach(l, Arc::new(m.clone()));
        m
    };
    let mut ts = ts.into_iter();
    let (t1, l1) = ts.next().unwrap();
    let (t2, l2) = ts.next().unwrap();
    let (t3, l3) = ts.next().unwrap();
    let members = [start(1, &t1, l1), start(2, &t2, l2)];
    let leader = loop {
        let mut found = None;
        for m in &members {
            if m.status().await.unwrap().role == cluster::raft::StateRole::Leader {
                found = Some(m.clone());
            }
        }
        if let Some(l) = found {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut last = 0;
    for c in 0..12u8 {
        last = leader.propose(c).await.unwrap();
    }
    let before = restores.load(Ordering::Relaxed);
    let started = Instant::now();
    let m3 = start(3, &t3, l3);
    while m3.status().await.unwrap().applied < last {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "member 3 never caught up"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = started.elapsed();
    assert!(
        restores.load(Ordering::Relaxed) > before,
        "caught up without a snapshot"
    );
    println!(
        "member     {:>4} MiB  max_frame  64 MiB  joins empty, caught up in {:>9.1?}  (messages sent in chunks: {})",
        len / MIB,
        took,
        t1.stats().chunked.load(Ordering::Relaxed) + t2.stats().chunked.load(Ordering::Relaxed),
    );
    for m in members.iter().chain([&m3]) {
        m.shutdown().await;
    }
    for t in [&t1, &t2, &t3] {
        t.shutdown();
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let default_frame =
            TransportConfig::new(1, 1, "127.0.0.1:0".parse().unwrap(), Security::InsecurePlaintext).max_frame;
        for mib in sizes_mib() {
            let runs = if mib <= 8 { 20 } else { 3 };
            transports(default_frame, mib * MIB, runs).await;
            transports(MIB as u32, mib * MIB, runs).await;
        }
        for mib in sizes_mib() {
            join(mib * MIB).await;
        }
    });
}
