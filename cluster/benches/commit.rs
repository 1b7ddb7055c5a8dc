//! Commit throughput and latency: two vipool members over loopback with
//! redb fsync on real disk, first over plain TCP, then over mutual TLS 1.3
//! as the daemon always runs, then the same workload against a two-member
//! etcd cluster (Debian `etcd-server`, peers without TLS) on the same
//! machine. Prints figures; it is not a test.
//!
//! ```text
//! cargo bench -p cluster --bench commit
//! BENCH_SECS=10 BENCH_DIR=/var/tmp ETCD=/usr/bin/etcd cargo bench -p cluster --bench commit
//! ```
//!
//! Each proposer sends 100-byte commands one after another and waits for
//! each to be committed (and applied) before the next. Run with 1, 16 and 64
//! proposers. Without an `etcd` binary the etcd half is skipped, saying so.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::tls::Identity;
use cluster::transport::{Security, TcpTransport, TransportConfig};
use cluster::{Disk, LogStore, Member, MemberConfig, SnapshotError, StateMachine};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONCURRENCY: [usize; 3] = [1, 16, 64];
const COMMAND_BYTES: usize = 100;

/// Counts commands; what the benchmark measures is the log, not the table.
#[derive(Default)]
struct Count {
    applied: u64,
    n: u64,
}

impl StateMachine for Count {
    type Command = Vec<u8>;
    type Response = u64;
    fn apply(&mut self, index: u64, _: Vec<u8>) -> u64 {
        self.applied = index;
        self.n += 1;
        index
    }
    fn applied_index(&self) -> u64 {
        self.applied
    }
    fn snapshot(&self) -> Vec<u8> {
        [self.applied.to_be_bytes(), self.n.to_be_bytes()].concat()
    }
    fn restore(&mut self, b: &[u8]) -> Result<(), SnapshotError> {
        let b: [u8; 16] = b.try_into().map_err(|_| SnapshotError("want 16 bytes".into()))?;
        self.applied = u64::from_be_bytes(b[..8].try_into().unwrap());
        self.n = u64::from_be_bytes(b[8..].try_into().unwrap());
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn figures(mut lat: Vec<Duration>, elapsed: Duration) -> Figures {
    lat.sort();
    let pick = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
    };
    Figures {
        per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50).unwrap_or_default(),
        p99: pick(0.99).unwrap_or_default(),
    }
}

fn secs() -> Duration {
    Duration::from_secs(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    )
}

fn work_dir() -> tempfile::TempDir {
    // Not /tmp (often tmpfs): the point is fsync on a real disk.
    let base = std::env::var("BENCH_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("bench-data")
    });
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// A throwaway CA and a certificate for each of the two members, as the
/// daemon gets them from `vipool pki`.
fn tls_identities() -> Vec<(u64, Security)> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let names = [(1u64, "m1".to_owned()), (2, "m2".to_owned())];
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

async fn vipool(dir: &Path, tls: bool) -> Vec<Figures> {
    let dir = dir.join(if tls { "tls" } else { "plain" });
    std::fs::create_dir_all(&dir).unwrap();
    let security: Vec<(u64, Security)> = if tls {
        tls_identities()
    } else {
        vec![(1, Security::InsecurePlaintext), (2, Security::InsecurePlaintext)]
    };
    let mut ts = Vec::new();
    for (id, security) in security {
        ts.push(
            TcpTransport::bind(TransportConfig::new(
                1,
                id,
                "127.0.0.1:0".parse().unwrap(),
                security,
            ))
            .await
            .unwrap(),
        );
    }
    let addrs: Vec<SocketAddr> = ts.iter().map(|(t, _)| t.local_addr()).collect();
    let mut members = Vec::new();
    for (i, (t, l)) in ts.into_iter().enumerate() {
        let id = i as u64 + 1;
        t.set_peer(3 - id, addrs[2 - id as usize]);
        let mut cfg = MemberConfig::new(id);
        cfg.tick = Duration::from_millis(20);
        cfg.node.snapshot_interval = 50_000;
        let store = LogStore::open(Disk::create(dir.join(format!("m{id}.redb"))).unwrap()).unwrap();
        let m = Member::start(cfg, store, Count::default(), &[1, 2], Arc::new(t.clone())).unwrap();
        t.attach(l, Arc::new(m.clone()));
        members.push(m);
    }
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
    let mut out = Vec::new();
    for c in CONCURRENCY {
        out.push(
            load(c, || {
                let l = leader.clone();
                move || {
                    let l = l.clone();
                    async move {
                        l.propose(vec![0x5a; COMMAND_BYTES])
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                }
            })
            .await,
        );
    }
    for m in &members {
        m.shutdown().await;
    }
    out
}

/// Runs `c` proposers for the configured time; `make` gives each its own
/// operation (an etcd proposer owns its connection).
async fn load<M, F, Fut>(c: usize, make: M) -> Figures
where
    M: Fn() -> F,
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let dur = secs();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let mut op = make();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while start.elapsed() < dur {
                let t = Instant::now();
                if let Err(e) = op().await {
                    eprintln!("proposal failed: {e}");
                    continue;
                }
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    figures(lat, start.elapsed())
}

fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for ch in b.chunks(3) {
        let n =
            (ch[0] as u32) << 16 | (*ch.get(1).unwrap_or(&0) as u32) << 8 | *ch.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= ch.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// A keep-alive HTTP/1.1 connection to etcd's JSON gateway.
struct Http {
    stream: TcpStream,
    addr: SocketAddr,
    buf: Vec<u8>,
}

impl Http {
    async fn connect(addr: SocketAddr) -> std::io::Result<Http> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Http {
            stream,
            addr,
            buf: Vec::new(),
        })
    }

    async fn post(&mut self, path: &str, body: &str) -> Result<String, String> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            return Err(head.lines().next().unwrap_or("").to_string());
        }
        self.buf.drain(..head_end);
        let body = if let Some(len) = head.lines().find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        }) {
            while self.buf.len() < len {
                self.fill().await?;
            }
            self.buf.drain(..len).collect::<Vec<u8>>()
        } else {
            // chunked
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break p;
                    }
                    self.fill().await?;
                };
                let size = usize::from_str_radix(String::from_utf8_lossy(&self.buf[..line_end]).trim(), 16)
                    .map_err(|e| e.to_string())?;
                while self.buf.len() < line_end + 2 + size + 2 {
                    self.fill().await?;
                }
                body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break body;
                }
            }
        };
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    async fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Etcd(Vec<Child>);

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn etcd(bin: &Path, dir: &Path) -> Result<Vec<Figures>, String> {
    let client: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let peer: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let initial = format!("e1=http://127.0.0.1:{},e2=http://127.0.0.1:{}", peer[0], peer[1]);
    let mut children = Etcd(Vec::new());
    for i in 0..2 {
        let child = Command::new(bin)
            .args(["--name", &format!("e{}", i + 1)])
            .arg("--data-dir")
            .arg(dir.join(format!("e{}", i + 1)))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{}", client[i])])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", client[i]),
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", peer[i])])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", peer[i]),
            ])
            .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "vipool-bench", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        children.0.push(child);
    }
    // Find the leader: the member whose id is the leader id it reports.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let mut found = None;
        for &p in &client {
            let addr: SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
            if let Ok(mut h) = Http::connect(addr).await {
                if let Ok(s) = h.post("/v3/maintenance/status", "{}").await {
                    let field = |k: &str| {
                        s.split(&format!("\"{k}\":\""))
                            .nth(1)
                            .and_then(|r| r.split('"').next())
                            .map(str::to_string)
                    };
                    if field("member_id").is_some() && field("member_id") == field("leader") {
                        found = Some(addr);
                    }
                }
            }
        }
        if let Some(a) = found {
            break a;
        }
        if Instant::now() > deadline {
            return Err("etcd cluster did not elect a leader".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let value = base64(&[0x5a; COMMAND_BYTES]);
    let mut out = Vec::new();
    for c in CONCURRENCY {
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let value = value.clone();
        let mut conns = Vec::new();
        for _ in 0..c {
            conns.push(Arc::new(tokio::sync::Mutex::new(
                Http::connect(leader).await.map_err(|e| e.to_string())?,
            )));
        }
        let conns = Arc::new(std::sync::Mutex::new(conns));
        out.push(
            load(c, || {
                let conn = conns.lock().unwrap().pop().expect("one connection per proposer");
                let counter = counter.clone();
                let value = value.clone();
                move || {
                    let conn = conn.clone();
                    let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let body = format!(
                        "{{\"key\":\"{}\",\"value\":\"{value}\"}}",
                        base64(format!("k{n}").as_bytes())
                    );
                    async move { conn.lock().await.post("/v3/kv/put", &body).await.map(|_| ()) }
                }
            })
            .await,
        );
    }
    drop(children);
    Ok(out)
}

fn row(name: &str, c: usize, f: &Figures) {
    println!(
        "{name:<17} {c:>4} proposers  {:>9.0} commits/s  p50 {:>8.2} ms  p99 {:>8.2} ms",
        f.per_sec,
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = work_dir();
    println!(
        "two members, loopback TCP, fsync to {}, {COMMAND_BYTES}-byte commands, {:?} per run",
        dir.path().display(),
        secs()
    );
    let plain = rt.block_on(vipool(dir.path(), false));
    for (c, f) in CONCURRENCY.iter().zip(&plain) {
        row("vipool plain TCP", *c, f);
    }
    let ours = rt.block_on(vipool(dir.path(), true));
    for (c, f) in CONCURRENCY.iter().zip(&ours) {
        row("vipool TLS 1.3", *c, f);
    }
    println!();
    for ((c, p), t) in CONCURRENCY.iter().zip(&plain).zip(&ours) {
        println!(
            "{c:>4} proposers: TLS costs {:.1}% of throughput, {:+.3} ms of p50",
            100.0 * (1.0 - t.per_sec / p.per_sec),
            (t.p50.as_secs_f64() - p.p50.as_secs_f64()) * 1000.0
        );
    }
    let bin = std::env::var("ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/bin/etcd"));
    if !bin.exists() {
        println!(
            "etcd: {} not found (apt-get install etcd-server); skipping the comparison",
            bin.display()
        );
        return;
    }
    match rt.block_on(etcd(&bin, dir.path())) {
        Err(e) => println!("etcd: {e}"),
        Ok(theirs) => {
            for (c, f) in CONCURRENCY.iter().zip(&theirs) {
                row("etcd", *c, f);
            }
            println!();
            for ((c, a), b) in CONCURRENCY.iter().zip(&ours).zip(&theirs) {
                println!(
                    "{c:>4} proposers: vipool (TLS)/etcd (no TLS) throughput ratio {:.2}",
                    a.per_sec / b.per_sec
                );
            }
        }
    }
}
