//! Messages larger than one frame: a snapshot crosses between two
//! transports over mutual TLS (or is reported failed when the connection
//! breaks), broken or forged chunks are refused, and a member that joins
//! empty catches up by a snapshot several frames long.

use std::sync::atomic::Ordering;
use std::time::Instant;

use raft::eraftpb::Snapshot;
use raft::StateRole;

use protobuf::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tests::{closed_by_peer, dial_as, ip, msg, plain, tls_cfg, wait_for, Kept, Reports};
use super::*;
use crate::member::tests::fast;
use crate::sim::Recorder;
use crate::tls::tests::TestCa;
use crate::{Disk, LogStore, Member, ProposeError, SnapshotError, StateMachine};

/// `len` bytes that are not all alike, so a byte out of place shows.
fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A MsgSnapshot from `from` to `to` carrying `len` bytes of state.
fn snapshot_msg(from: u64, to: u64, len: usize) -> Message {
    let mut m = msg(from, to);
    m.set_msg_type(MessageType::MsgSnapshot);
    let mut s = Snapshot::default();
    s.mut_metadata().index = 1000;
    s.mut_metadata().term = 3;
    s.mut_metadata().mut_conf_state().voters = vec![from, to];
    s.set_data(pattern(len).into());
    m.set_snapshot(s);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_one_mib_crosses_4_kib_frames_over_mutual_tls_intact() {
    let ca = TestCa::new();
    let small = |id| {
        let mut cfg = tls_cfg(&ca, id);
        cfg.max_frame = 4096;
        cfg
    };
    let (a, al) = TcpTransport::bind(small(1)).await.unwrap();
    let (b, bl) = TcpTransport::bind(small(2)).await.unwrap();
    a.set_peer(2, b.local_addr());
    b.set_peer(1, a.local_addr());
    let (reports, kept) = (Arc::new(Reports::default()), Arc::new(Kept::default()));
    a.attach(al, reports.clone());
    b.attach(bl, kept.clone());
    // A heartbeat first, then the snapshot, then another heartbeat: the
    // chunks of the snapshot travel between whole frames of the same peer.
    let snap = snapshot_msg(1, 2, 1 << 20);
    let started = Instant::now();
    a.send(msg(1, 2));
    a.send(snap.clone());
    a.send(msg(1, 2));
    wait_for("the snapshot and both heartbeats", || {
        kept.0.lock().unwrap().len() == 3
    })
    .await;
    eprintln!(
        "1 MiB snapshot in 4 KiB frames over loopback TLS: {:?}",
        started.elapsed()
    );
    let got = kept.0.lock().unwrap().clone();
    assert_eq!(got[0], msg(1, 2));
    assert!(got[1] == snap, "the snapshot arrived altered");
    assert_eq!(got[2], msg(1, 2));
    wait_for("the snapshot reported delivered", || {
        *reports.snapshots.lock().unwrap() == [(2, true)]
    })
    .await;
    assert_eq!(a.stats().chunked.load(Ordering::Relaxed), 1);
    assert_eq!(b.stats().reassembled.load(Ordering::Relaxed), 1);
    assert_eq!(b.stats().delivered.load(Ordering::Relaxed), 3);
    assert_eq!(b.stats().oversize.load(Ordering::Relaxed), 0);
    a.shutdown();
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_whose_connection_breaks_midway_is_reported_failed() {
    let ca = TestCa::new();
    // A "backup" that reads 64 KiB of the snapshot and hangs up.
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.member(&["backup"]).server_config().unwrap());
    let listener = TcpListener::bind(SocketAddr::new(ip(2), 0)).await.unwrap();
    let backup = listener.local_addr().unwrap();
    let hung_up = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut s = acceptor.accept(tcp).await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        s.read_exact(&mut buf).await.unwrap();
        // The listener goes too: reconnecting fails.
    });
    let mut cfg = tls_cfg(&ca, 1);
    cfg.max_frame = 4096;
    let (a, al) = TcpTransport::bind(cfg).await.unwrap();
    a.set_peer(2, backup);
    let reports = Arc::new(Reports::default());
    a.attach(al, reports.clone());
    // Far more than the socket buffers hold.
    a.send(snapshot_msg(1, 2, 32 << 20));
    hung_up.await.unwrap();
    wait_for("the snapshot reported", || {
        !reports.snapshots.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(*reports.snapshots.lock().unwrap(), [(2, false)]);
    a.shutdown();
}

#[tokio::test]
async fn broken_chunk_sequences_close_the_connection_counted_and_logged() {
    let cap = crate::logger::tests::Captured::default();
    let _guard = tracing::subscriber::set_default(cap.subscriber());
    let mut cfg = plain(42, 2);
    cfg.max_frame = 4096;
    cfg.max_message = 64 * 1024;
    let (t, l) = TcpTransport::bind(cfg).await.unwrap();
    let inbox = Arc::new(Kept::default());
    t.attach(l, inbox.clone());
    let addr = t.local_addr();
    let chunk = |message: u64, total: u64, offset: u64, len: usize| {
        let header = ChunkHeader {
            message,
            total,
            offset,
        };
        encode_chunk_frame(RELEASE, 42, 1, 2, header, &pattern(len))
    };
    let sequences: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "chunked message 1 announced as 65537 bytes, limit 65536 (max_message)",
            vec![chunk(1, 65537, 0, 1000)],
        ),
        (
            "chunk of message 1 at offset 2000 leaves a gap: 1000 bytes received so far",
            vec![chunk(1, 8000, 0, 1000), chunk(1, 8000, 2000, 1000)],
        ),
        (
            "chunk of message 1 at offset 0 is out of order: 1000 bytes already received",
            vec![chunk(1, 8000, 0, 1000), chunk(1, 8000, 0, 1000)],
        ),
        (
            "chunk of message 1 ends at byte 8001, past the 8000 bytes announced",
            vec![chunk(1, 8000, 0, 4000), chunk(1, 8000, 4000, 4001)],
        ),
        (
            "chunk of message 2 while message 1 is incomplete",
            vec![chunk(1, 8000, 0, 1000), chunk(2, 8000, 0, 1000)],
        ),
        (
            "whole frame while chunked message 1 is incomplete",
            vec![
                chunk(1, 8000, 0, 1000),
                encode_frame(PROTOCOL_VERSION, 42, &msg(1, 2)),
            ],
        ),
        (
            // Complete, but not a raft message.
            "chunked message 1: malformed frame",
            vec![chunk(1, 6000, 0, 3000), chunk(1, 6000, 3000, 3000)],
        ),
    ];
    for (_, frames) in &sequences {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        for f in frames {
            s.write_all(f).await.unwrap();
        }
        assert!(closed_by_peer(&mut s).await, "connection closed");
    }
    let s = t.stats();
    wait_for("counters", || {
        s.chunk_refusals.load(Ordering::Relaxed) == 6 && s.malformed.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(s.delivered.load(Ordering::Relaxed), 0);
    assert!(inbox.0.lock().unwrap().is_empty(), "nothing reached raft");
    let text = cap.text();
    for (reason, _) in &sequences {
        assert!(text.contains(reason), "log lacks {reason:?}:\n{text}");
    }
    t.shutdown();
}

#[tokio::test]
async fn a_chunk_in_another_members_name_is_dropped_and_cannot_join_a_message() {
    let ca = TestCa::new();
    let (t, l) = TcpTransport::bind(tls_cfg(&ca, 2)).await.unwrap();
    let inbox = Arc::new(Kept::default());
    t.attach(l, inbox.clone());
    let witness = ca.member(&["witness"]);
    let mut c = dial_as(&witness, ip(3), t.local_addr(), "backup").await.unwrap();
    // Member 3's own snapshot, in three chunks.
    let own = snapshot_msg(3, 2, 9000);
    let bytes = own.write_to_bytes().unwrap();
    let total = bytes.len() as u64;
    let chunk = |from: u64, offset: usize, len: usize| {
        let header = ChunkHeader {
            message: 1,
            total,
            offset: offset as u64,
        };
        encode_chunk_frame(RELEASE, 42, from, 2, header, &bytes[offset..offset + len])
    };
    let third = bytes.len() / 3;
    // A chunk claiming member 1 before, and one inside, member 3's message.
    for f in [
        chunk(1, 0, third),
        chunk(3, 0, third),
        chunk(1, third, third),
        chunk(3, third, third),
        chunk(3, 2 * third, bytes.len() - 2 * third),
    ] {
        c.write_all(&f).await.unwrap();
    }
    c.flush().await.unwrap();
    let s = t.stats();
    wait_for("member 3's snapshot", || inbox.0.lock().unwrap().len() == 1).await;
    assert!(inbox.0.lock().unwrap()[0] == own, "the snapshot arrived altered");
    assert_eq!(s.impersonations.load(Ordering::Relaxed), 2);
    assert_eq!(s.reassembled.load(Ordering::Relaxed), 1);
    assert_eq!(s.chunk_refusals.load(Ordering::Relaxed), 0);
    t.shutdown();
}

// --- A member that joins empty --------------------------------------------

/// Frames of the member test: small, so that the snapshot takes several.
const FRAME: u32 = 64 * 1024;
/// What the state machine adds to its snapshot: five frames' worth.
const PAD: usize = 5 * FRAME as usize;

/// A [`Recorder`] whose snapshot carries [`PAD`] bytes more (the size of a
/// large license table), checked on restore.
#[derive(Default)]
struct Padded {
    rec: Recorder,
    /// The applied index of the last snapshot restored from the leader.
    restored: Option<u64>,
}

impl StateMachine for Padded {
    type Command = u64;
    type Response = u64;
    fn apply(&mut self, index: u64, command: u64) -> u64 {
        self.rec.apply(index, command)
    }
    fn applied_index(&self) -> u64 {
        self.rec.applied
    }
    fn snapshot(&self) -> Vec<u8> {
        let mut b = self.rec.snapshot();
        b.extend(pattern(PAD));
        b
    }
    fn restore(&mut self, b: &[u8]) -> Result<(), SnapshotError> {
        let (rec, used): (Recorder, usize) =
            bincode::serde::decode_from_slice(b, bincode::config::standard()).map_err(SnapshotError::new)?;
        if b[used..] != pattern(PAD)[..] {
            return Err(SnapshotError::new(format!(
                "padding of {} bytes damaged",
                b.len() - used
            )));
        }
        self.rec = rec;
        self.restored = Some(self.rec.applied).filter(|&a| a > 0);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_joins_empty_catches_up_by_a_snapshot_of_several_frames() {
    let ca = TestCa::new();
    let cfg = |id| {
        let mut cfg = tls_cfg(&ca, id);
        cfg.max_frame = FRAME;
        cfg
    };
    let start = |id: u64, t: &TcpTransport, l: TcpListener| {
        let mut mc = fast(id);
        mc.node.snapshot_interval = 20;
        let store = LogStore::open(Disk::memory()).unwrap();
        let m = Member::start(mc, store, Padded::default(), &[1, 2, 3], Arc::new(t.clone())).unwrap();
        t.attach(l, Arc::new(m.clone()));
        m
    };
    // Members 1 and 2 of three run; 3 has not started yet.
    let (t1, l1) = TcpTransport::bind(cfg(1)).await.unwrap();
    let (t2, l2) = TcpTransport::bind(cfg(2)).await.unwrap();
    t1.set_peer(2, t2.local_addr());
    t2.set_peer(1, t1.local_addr());
    let members = [start(1, &t1, l1), start(2, &t2, l2)];
    let leader = async {
        loop {
            for m in &members {
                if m.status().await.is_ok_and(|s| s.role == StateRole::Leader) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), leader)
        .await
        .expect("a leader");
    // Enough writes that the log is compacted past anything member 3 could
    // get by appends: it needs the snapshot, about six frames long.
    let mut acked = BTreeMap::new();
    for c in 0..100u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        'retry: loop {
            for m in &members {
                match m.propose(c).await {
                    Ok(index) => {
                        acked.insert(index, c);
                        break 'retry;
                    }
                    Err(ProposeError::Dropped | ProposeError::NotLeader { .. }) => {}
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
    let last = *acked.keys().last().unwrap();

    // Member 3 starts with an empty store.
    let (t3, l3) = TcpTransport::bind(cfg(3)).await.unwrap();
    for (t, id) in [(&t1, 1), (&t2, 2)] {
        t.set_peer(3, t3.local_addr());
        t3.set_peer(id, t.local_addr());
    }
    let m3 = start(3, &t3, l3);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let st = m3.status().await.unwrap();
        if st.applied >= last {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "member 3 never caught up (applied {}, want {last}): was the snapshot sent?",
            st.applied
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (seen, restored) = m3
        .read(|sm: &Padded| (sm.rec.by_index.clone(), sm.restored))
        .await
        .unwrap();
    assert!(
        restored.is_some(),
        "member 3 caught up by appends, not by a snapshot"
    );
    for (i, c) in &acked {
        assert_eq!(seen.get(i), Some(c), "write at {i} on member 3");
    }
    assert!(t3.stats().reassembled.load(Ordering::Relaxed) > 0);
    for m in members.iter().chain([&m3]) {
        m.shutdown().await;
    }
    for t in [&t1, &t2, &t3] {
        t.shutdown();
    }
}
