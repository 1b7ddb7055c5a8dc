//! Benchmark: figures for the license service through the real protocol.
//!
//! ```text
//! cargo build --release && target/release/examples/license_bench [--switches 2000] ...
//! ```
//!
//! It starts `vipool serve` (the release binary beside this example's
//! directory) as a child process on 127.0.0.1 so
//! that the server's CPU and memory are its own, then prints:
//!
//! - acquire/release operations per second and p50/p99 latency with 1 and
//!   64 concurrent clients;
//! - heartbeat handling for many switches at a (scaled) interval: server CPU,
//!   CPU per heartbeat and the extrapolation to 10,000 switches at 30 s, and
//!   the server's resident memory with all of them registered.
//!
//! As in production, every switch has its own connection over mutual TLS
//! 1.3 with a certificate of the pair's CA (a CA made for the run) naming
//! its id and serial, and presents two signed license keys bound to its
//! serial (an issuer made for the run, which the server trusts), so the
//! figures include the handshakes, the TLS records and verifying the keys.
//! `--plaintext` runs the same over plain TCP, for comparison.
//! `--reconnect` makes each heartbeat a connection of its own, closed
//! after the answer, as a switch that does not keep its connection: TLS
//! 1.3 resumes the session from the ticket of the previous connection, so
//! the server holds nothing per idle switch.
//!
//! A benchmark, not a test: it prints figures and fails only if the server
//! cannot be started or stops answering.

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use vipool::client::Connection;
use vipool::license::{IssuerKey, KeyStatement, SignedKey};
use vipool::pki::Ca;
use vipool::proto::SwitchReport;
use vipool::table::LicenseType;
use vipool::tls::ClientTls;

/// Options of the license benchmark.
#[derive(Debug, Parser)]
#[command(
    name = "license_bench",
    about = "License service throughput, latency, CPU and memory"
)]
struct Args {
    /// Seconds each acquire/release run lasts.
    #[arg(long, default_value_t = 3)]
    ops_seconds: u64,
    /// Simulated switches for the heartbeat run.
    #[arg(long, default_value_t = 2000)]
    switches: usize,
    /// Real heartbeat interval being simulated, in seconds.
    #[arg(long, default_value_t = 30)]
    interval_s: u64,
    /// Time compression: heartbeats come this many times faster than the real interval.
    #[arg(long, default_value_t = 10)]
    scale: u64,
    /// Seconds the heartbeat run lasts.
    #[arg(long, default_value_t = 10)]
    heartbeat_seconds: u64,
    /// Connections opened at once while the switches register.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Plain TCP instead of TLS (a standalone `serve --insecure-plaintext`),
    /// for comparison.
    #[arg(long)]
    plaintext: bool,
    /// A connection per heartbeat (resuming the TLS session) instead of
    /// one kept open per switch.
    #[arg(long)]
    reconnect: bool,
}

struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // The bench owns this child; it is not needed past the figures.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the benchmark and prints its figures.
async fn run(args: Args) -> anyhow::Result<()> {
    let port = StdListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    // target/<profile>/examples/license_bench -> target/<profile>/vipool
    let exe = std::env::current_exe()?
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("vipool"))
        .context("cannot locate the target directory")?;
    if !exe.exists() {
        bail!("{} is missing: run `cargo build --release` first", exe.display());
    }
    let dir = tempfile::tempdir()?;
    let issuer = IssuerKey::generate("bench")?;
    let issuers = dir.path().join("bench.pub");
    std::fs::write(&issuers, format!("{}\n", issuer.trusted()))?;
    let key_file = dir.path().join("bench.keys");
    std::fs::write(
        &key_file,
        format!(
            "{}\n",
            sign(&issuer, "server-ap", "BENCH-SERVER", "AP", 1_000_000)?
        ),
    )?;
    let limit = (args.switches + 1000).to_string();
    // The pair's CA for the run, the server's certificate, and a switch
    // certificate per switch (issued in memory, as `vipool pki switch` does).
    let pki = dir.path().join("pki");
    let ca = Ca::create(&pki, 1, 30)?;
    ca.issue_member("bench", 30)?.write(&pki, "bench")?;
    let security: Vec<String> = if args.plaintext {
        vec!["--insecure-plaintext".into()]
    } else {
        vec![
            "--ca".into(),
            pki.join("ca.crt").to_string_lossy().into_owned(),
            "--cert".into(),
            pki.join("bench.crt").to_string_lossy().into_owned(),
        ]
    };
    let tls_for = |id: &str, serial: &str| -> anyhow::Result<Option<ClientTls>> {
        if args.plaintext {
            return Ok(None);
        }
        let issued = ca.issue_switch(id, serial, 30)?;
        Ok(Some(ClientTls::from_pem(
            ca.cert_pem().as_bytes(),
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
        )?))
    };
    let child = Command::new(exe)
        .args(["--log", "warn", "serve", "--listen", &addr])
        .args(&security)
        .args(["--max-connections-per-address", &limit])
        .args(["--operator-listen", "127.0.0.1:0", "--node", "bench"])
        .args(["--serial", "BENCH-SERVER"])
        .arg("--issuer")
        .arg(&issuers)
        .arg("--key-file")
        .arg(&key_file)
        .args(["--max-clients-per-source", &limit])
        .args(["--registrations-per-s-per-source", &limit])
        .args(["--sweep-interval-ms", "1000"])
        .stdout(Stdio::null())
        .spawn()
        .context("starting vipool serve")?;
    let server = ServerProcess(child);
    let pid = server.0.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("server did not come up on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{}",
        if args.plaintext {
            "plain TCP (serve --insecure-plaintext)"
        } else {
            "mutual TLS 1.3, a certificate per switch"
        }
    );

    println!(
        "acquire/release through the protocol ({}s per run)",
        args.ops_seconds
    );
    for concurrency in [1usize, 64] {
        let tls: Vec<Option<ClientTls>> = (0..concurrency)
            .map(|n| {
                let id = format!("ops-{concurrency}-{n}");
                tls_for(&id, &id)
            })
            .collect::<anyhow::Result<_>>()?;
        let (ops, mut latencies) = ops_run(&addr, tls, Duration::from_secs(args.ops_seconds)).await?;
        latencies.sort_unstable();
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
        println!(
            "  {concurrency:>2} clients: {:>8.0} ops/s  p50 {:>7.1} us  p99 {:>7.1} us",
            ops as f64 / args.ops_seconds as f64,
            pct(0.50).as_secs_f64() * 1e6,
            pct(0.99).as_secs_f64() * 1e6,
        );
    }

    let interval = Duration::from_secs(args.interval_s) / u32::try_from(args.scale.max(1))?;
    println!(
        "heartbeats: {} switches every {}s scaled x{} (every {:?}), {}, {}s",
        args.switches,
        args.interval_s,
        args.scale,
        interval,
        if args.reconnect {
            "a connection per heartbeat"
        } else {
            "one connection each, kept open"
        },
        args.heartbeat_seconds
    );
    let mut switches = Vec::with_capacity(args.switches);
    for n in 0..args.switches {
        let id = format!("hb-{n:05}");
        let tls = tls_for(&id, &serial(n))?;
        switches.push((id, serial(n), report(&issuer, n)?, tls));
    }
    let rss_before = rss_kb(pid)?;
    let cpu_before = cpu_ticks(pid)?;
    let started = Instant::now();
    let conns = register_all(&addr, switches, args.connect_concurrency, args.reconnect).await?;
    let register_s = started.elapsed().as_secs_f64();
    let register_cpu_s = (cpu_ticks(pid)? - cpu_before) as f64 / 100.0;
    let rss_registered = rss_kb(pid)?;
    println!(
        "  registered {} switches (connect, handshake, register) in {register_s:.1} s, server CPU {register_cpu_s:.1} s \
         ({:.0} us each)",
        conns.len(),
        register_cpu_s * 1e6 / conns.len().max(1) as f64
    );
    let cpu_before = cpu_ticks(pid)?;
    let started = Instant::now();
    let sent = heartbeat_run(
        &addr,
        conns,
        interval,
        Duration::from_secs(args.heartbeat_seconds),
    )
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_s = (cpu_ticks(pid)? - cpu_before) as f64 / 100.0;
    let per_heartbeat = cpu_s / sent.max(1) as f64;
    let target_rate = 10_000.0 / 30.0;
    println!("  heartbeats answered: {sent} ({:.0}/s)", sent as f64 / elapsed);
    println!("  server CPU: {:.1}% of one core", 100.0 * cpu_s / elapsed);
    println!("  CPU per heartbeat: {:.1} us", per_heartbeat * 1e6);
    println!(
        "  extrapolated, 10,000 switches at 30 s: {:.2}% of one core",
        100.0 * per_heartbeat * target_rate
    );
    println!(
        "  server RSS: {} kB before, {} kB with {} clients registered, {} kB now",
        rss_before,
        rss_registered,
        args.switches,
        rss_kb(pid)?
    );
    Ok(())
}

async fn connect(addr: &str, tls: Option<&ClientTls>) -> anyhow::Result<Connection> {
    Ok(match tls {
        Some(tls) => Connection::connect(addr, tls).await?,
        None => Connection::connect_insecure(addr).await?,
    })
}

async fn ops_run(
    addr: &str,
    tls: Vec<Option<ClientTls>>,
    duration: Duration,
) -> anyhow::Result<(u64, Vec<Duration>)> {
    let ap = LicenseType::new("AP");
    let concurrency = tls.len();
    let mut tasks = Vec::new();
    for (n, tls) in tls.into_iter().enumerate() {
        let addr = addr.to_owned();
        let ap = ap.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("ops-{concurrency}-{n}");
            let mut conn = connect(&addr, tls.as_ref()).await?;
            conn.register(&id, &id, "bench", SwitchReport::default()).await?;
            let mut latencies = Vec::new();
            let end = Instant::now() + duration;
            while Instant::now() < end {
                let t = Instant::now();
                conn.acquire(&id, &ap, 1).await?;
                latencies.push(t.elapsed());
                let t = Instant::now();
                conn.release(&id, &ap, 1).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok((all.len() as u64, all))
}

fn sign(
    issuer: &IssuerKey,
    key_id: &str,
    serial: &str,
    license_type: &str,
    count: u32,
) -> anyhow::Result<SignedKey> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    Ok(issuer.sign(KeyStatement {
        key_id: key_id.into(),
        license_type: LicenseType::new(license_type),
        count,
        serial: serial.into(),
        not_before: now - 3600,
        expires: None,
        issuer: issuer.name().into(),
    })?)
}

/// Switch `n`'s serial.
fn serial(n: usize) -> String {
    format!("BENCH-{n:05}")
}

/// Switch `n`'s whole state: 16 AP built in, two keys bound to its serial,
/// a few AP from the pool.
fn report(issuer: &IssuerKey, n: usize) -> anyhow::Result<SwitchReport> {
    Ok(SwitchReport {
        builtin: BTreeMap::from([(LicenseType::new("AP"), 16)]),
        keys: vec![
            sign(issuer, &format!("ap-{n:05}"), &serial(n), "AP", 4)?,
            sign(
                issuer,
                &format!("pefng-{n:05}"),
                &serial(n),
                "PEFNG",
                1 + (n % 3) as u32,
            )?,
        ],
        used: BTreeMap::from([(LicenseType::new("AP"), (n % 5) as u32)]),
    })
}

/// A registered switch: its connection (if it keeps one), TLS end, id and
/// whole state.
struct Registered {
    conn: Option<Connection>,
    tls: Option<ClientTls>,
    id: String,
    report: SwitchReport,
}

/// Connects and registers every switch, `concurrency` at a time; the
/// connections stay open, as switches keep theirs, unless `close`.
async fn register_all(
    addr: &str,
    switches: Vec<(String, String, SwitchReport, Option<ClientTls>)>,
    concurrency: usize,
    close: bool,
) -> anyhow::Result<Vec<Registered>> {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::new();
    for (id, serial, report, tls) in switches {
        let addr = addr.to_owned();
        let gate = std::sync::Arc::clone(&gate);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let mut conn = connect(&addr, tls.as_ref()).await?;
            conn.register(&id, &serial, "bench", report.clone()).await?;
            let conn = (!close).then_some(conn);
            anyhow::Ok(Registered {
                conn,
                tls,
                id,
                report,
            })
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await??);
    }
    Ok(out)
}

/// Every switch heartbeats on its own connection every `interval`, the
/// switches' phases spread over the interval; a switch without a
/// connection opens one for the heartbeat and closes it after the answer.
async fn heartbeat_run(
    addr: &str,
    switches: Vec<Registered>,
    interval: Duration,
    duration: Duration,
) -> anyhow::Result<u64> {
    let n = switches.len().max(1) as u32;
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for (i, mut s) in switches.into_iter().enumerate() {
        let phase = interval * u32::try_from(i)? / n;
        let addr = addr.to_owned();
        tasks.push(tokio::spawn(async move {
            let start = tokio::time::Instant::now() + phase;
            let mut tick = tokio::time::interval_at(start, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut sent = 0u64;
            loop {
                tick.tick().await;
                if Instant::now() >= end {
                    break;
                }
                match &mut s.conn {
                    Some(conn) => {
                        conn.heartbeat(&s.id, s.report.clone()).await?;
                    }
                    None => {
                        let mut conn = connect(&addr, s.tls.as_ref()).await?;
                        conn.heartbeat(&s.id, s.report.clone()).await?;
                    }
                }
                sent += 1;
            }
            anyhow::Ok(sent)
        }));
    }
    let mut sent = 0;
    for task in tasks {
        sent += task.await??;
    }
    Ok(sent)
}

/// User plus system CPU of `pid` in clock ticks (USER_HZ, 100 on Linux).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("odd /proc stat")?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // After the command name: state is field 3 of proc(5), utime 14, stime 15.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// Resident memory of `pid` in kB.
fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("odd VmRSS")?.parse()?)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}
