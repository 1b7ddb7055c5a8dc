//! Benchmark: the herd. N switches are registered with a vipool pair; the
//! VIP holder fails (a graceful stop or a power loss) and every switch
//! reconnects and registers again with the survivor at once; then the old
//! primary returns and preempts, and they all come back to it.
//!
//! ```text
//! cargo build --release --bin vipool --example herd_bench && sudo target/release/examples/herd_bench
//! ```
//!
//! Options: `--switches N[,N...]` (default 1000,5000,10000), `--runs N`
//! (failovers per size and kind, default 3), `--how graceful|crash`
//! (default both), `--vmac on|off` (default off, as deploy/ ships),
//! `--advert-ms N` (default 100), `--tick-ms N` (raft tick, default 10),
//! `--heartbeat-ms N` (the switches' heartbeat interval, default 5000),
//! `--client-processes N` (the `vipool client` processes the switches are
//! spread over, default 4), `--connection-threads N` (the nodes'
//! `license.connection_threads`, default theirs; 0 for the node's thread),
//! `--probe-after-ms N` (the switches' probe interval, default the client
//! library's; 0: no probes), `--somaxconn N` (the servers' kernel cap on a
//! listener's accept queue, `net.core.somaxconn`, default 30000, as
//! README advises for as many switches; 0 leaves the kernel's, 4096),
//! `--client-nice N` (the switches' processes run at this nice value,
//! default 0: on the lab machine they share the pair's cores, where real
//! switches are machines of their own; 10 lets the pair go first),
//! `--verbose` (the switches' registrations per
//! 100 ms). Each run also prints why the switches' sessions ended so far. With
//! `HERD_BENCH_KEEP_LOGS` set, the nodes' and switches' logs are kept
//! (`VIPOOL_LAB_LOG` sets the nodes' filter). Needs root and `ip`.
//!
//! One namespaced lab per size: the primary (priority 200) and the backup
//! (100) run `vipool node`, a third host runs the N switches in
//! `--client-processes` `vipool client --count` processes (each switch with its own certificate of the
//! pair's CA, its own TLS 1.3 connection, and the client library's default
//! connect timeout and reconnect policy: what a switch does). Times come
//! from the switches' own acknowledgements: the instant the bench reads
//! each `registered` event.
//!
//! Figures, per size and kind (median, min, max over the runs, in ms):
//!
//! - VIP taken after: the kernel of the new holder reporting the VIP added,
//!   from the failure;
//! - last switch noticed: the last `disconnected` event, from the VIP
//!   taken. After a graceful stop the server closes every connection and
//!   all switches notice at once; after a power loss a switch notices only
//!   when it next sends (its heartbeat, `--heartbeat-ms`) and the new
//!   holder answers with a reset, so this is bound by the heartbeat;
//! - 50%, 90%, all registered: from the VIP taken until that share of the
//!   N switches registered again on the survivor;
//! - herd rate: N over the time from the first switch noticing to the
//!   last registration;
//! - the same for the handback (from the restarted primary's VIP taken).
//!
//! Goal (issue 12): all of 10,000 registered again within 1 s of the VIP
//! taken, printed beside the figures, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{lab_available, wait_for, Host, Lab, Speaker, VipWatch};
use nix::sys::signal::Signal;
use vipool::proto::TableDump;

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VRID: u8 = 52;
const CLIENT_PORT: u16 = 4333;
const OPERATOR_PORT: u16 = 4334;
const RAFT_PORT: u16 = 4335;
/// Generous: 10,000 handshakes on two shared cores take a while.
const WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq)]
enum How {
    Graceful,
    Crash,
}

#[derive(Debug)]
struct Opts {
    sizes: Vec<usize>,
    runs: usize,
    kinds: Vec<How>,
    vmac: bool,
    advert_ms: u32,
    tick_ms: u64,
    heartbeat_ms: u64,
    /// `vipool client --probe-after-ms` (`--probe-after-ms`; default the
    /// client library's).
    probe_after_ms: Option<u64>,
    /// `vipool client` processes the switches are spread over.
    processes: usize,
    /// The nodes' `license.connection_threads` (`None`: their default).
    connection_threads: Option<usize>,
    /// `net.core.somaxconn` on the servers' hosts (0: the kernel's).
    somaxconn: u64,
    /// The nice value of the switches' processes.
    client_nice: u64,
    verbose: bool,
}

const USAGE: &str = "herd_bench [--switches N[,N...]] [--runs N] [--how graceful|crash] [--vmac on|off] \
                     [--advert-ms N] [--tick-ms N] [--heartbeat-ms N] [--client-processes N] [--connection-threads N] [--probe-after-ms N] [--somaxconn N] [--client-nice N] [--verbose]";

fn parse_args() -> Result<Opts, String> {
    let mut opts = Opts {
        sizes: vec![1000, 5000, 10_000],
        runs: 3,
        kinds: vec![How::Graceful, How::Crash],
        vmac: false,
        advert_ms: 100,
        tick_ms: 10,
        heartbeat_ms: 5000,
        processes: 4,
        connection_threads: None,
        probe_after_ms: None,
        somaxconn: 30_000,
        client_nice: 0,
        verbose: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "-v" | "--verbose" => {
                opts.verbose = true;
                continue;
            }
            _ => {}
        }
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{arg} {v}: {e}"));
        match arg.as_str() {
            "--switches" => {
                opts.sizes = value
                    .split(',')
                    .map(|v| number(v).map(|n| n.max(1) as usize))
                    .collect::<Result<_, _>>()?
            }
            "--runs" => opts.runs = number(&value)?.max(1) as usize,
            "--advert-ms" => {
                opts.advert_ms = u32::try_from(number(&value)?.max(1)).map_err(|e| e.to_string())?
            }
            "--tick-ms" => opts.tick_ms = number(&value)?.max(1),
            "--heartbeat-ms" => opts.heartbeat_ms = number(&value)?.max(100),
            "--client-processes" => opts.processes = number(&value)?.max(1) as usize,
            "--connection-threads" => opts.connection_threads = Some(number(&value)? as usize),
            "--probe-after-ms" => opts.probe_after_ms = Some(number(&value)?),
            "--somaxconn" => opts.somaxconn = number(&value)?,
            "--client-nice" => opts.client_nice = number(&value)?.min(19),
            "--how" => {
                opts.kinds = match value.as_str() {
                    "graceful" => vec![How::Graceful],
                    "crash" => vec![How::Crash],
                    _ => return Err(format!("--how graceful|crash, not {value}")),
                }
            }
            "--vmac" => {
                opts.vmac = match value.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => return Err(format!("--vmac on|off, not {value}")),
                }
            }
            _ => return Err(format!("unknown option {arg}")),
        }
    }
    Ok(opts)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Soft RLIMIT_NOFILE up to the hard limit: the switches' process and the
/// nodes (children inherit it) each hold a socket per switch.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

// ---------------------------------------------------------------- the pair

fn node_config(lab: &Lab, host: &Host, id: u64, name: &str, priority: u8, opts: &Opts) -> String {
    let peers = [
        (1, "primary", lab.hosts[0].addr),
        (2, "backup", lab.hosts[1].addr),
    ]
    .iter()
    .map(|(id, name, addr)| {
        format!("{{ id = {id}, name = \"{name}\", address = \"{addr}:{RAFT_PORT}\", role = \"server\" }}")
    })
    .collect::<Vec<_>>()
    .join(", ");
    let data = lab.dir().join(format!("{name}-data"));
    let license = lab.server_license_with(name, 100_000, (1_000_000, 1_000_000));
    // All the switches are on one host: the limits per source address
    // (production defaults: 64 clients, 16 registrations/s, 256
    // connections) are lifted, so that what is measured is the herd.
    let text = format!(
        r#"
[node]
name = "{name}"
id = {id}
cluster_id = 7
{serial}
data_dir = "{data}"

[vrrp]
interface = "eth0"
vrid = {VRID}
priority = {priority}
vips = ["{VIP}/24"]
advert_interval_ms = {advert}
pair_handoff = true
vmac = {vmac}

[cluster]
peers = [{peers}]
tick_ms = {tick}
election_ticks = 15
heartbeat_ticks = 3
request_timeout_ms = 5000

[license]
client_port = {CLIENT_PORT}
operator_listen = "{addr}:{OPERATOR_PORT}"
{license_lines}
heartbeat_interval_ms = {heartbeat}
sweep_interval_ms = 1000
max_connections = 30000
max_connections_per_address = 30000
{threads}
{tls}"#,
        data = data.display(),
        tls = lab.tls_section(name),
        serial = license.serial,
        license_lines = license.lines,
        addr = host.addr,
        advert = opts.advert_ms,
        vmac = opts.vmac,
        tick = opts.tick_ms,
        heartbeat = opts.heartbeat_ms,
        threads = opts
            .connection_threads
            .map_or(String::new(), |n| format!("connection_threads = {n}\n")),
    );
    let path = lab.dir().join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write node config");
    let path = path.to_string_lossy().into_owned();
    common::init_member(&path);
    path
}

/// What the switches said, as the bench read it.
#[derive(Default)]
struct Seen {
    /// When each switch last registered.
    registered: HashMap<String, Instant>,
    /// When each switch last lost its session.
    disconnected: HashMap<String, Instant>,
    /// Every registration, in order.
    registrations: Vec<Instant>,
    /// Switches that stopped for good (a setup problem).
    stopped: Vec<String>,
    /// Why sessions ended, digits left out, with how many.
    reasons: std::collections::BTreeMap<String, u64>,
}

/// Reads the switches' JSON lines; keeps only what the figures need (the
/// whole stream of 10,000 switches would cost the bench more CPU than the
/// pair, on the same two cores).
fn read_events(child: &mut Child, seen: &Arc<Mutex<Seen>>) {
    let out = child.stdout.take().expect("stdout piped");
    let sink = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let at = Instant::now();
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let id = v["id"].as_str().unwrap_or_default().to_string();
            let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
            match v["event"].as_str() {
                Some("registered") => {
                    s.registered.insert(id, at);
                    s.registrations.push(at);
                }
                Some("disconnected") => {
                    s.disconnected.insert(id, at);
                    let reason: String = v["reason"]
                        .as_str()
                        .unwrap_or_default()
                        .chars()
                        .filter(|c| !c.is_ascii_digit())
                        .collect();
                    *s.reasons.entry(reason).or_default() += 1;
                }
                Some("stopped") => s.stopped.push(line),
                _ => {}
            }
        }
    });
}

struct Pair {
    lab: Lab,
    hosts: [Host; 2],
    client: Host,
    nodes: [Speaker; 2],
    configs: [String; 2],
    seen: Arc<Mutex<Seen>>,
    n: usize,
    starts: usize,
}

/// As `wait_for`, polling every 200 ms.
fn wait_slowly(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    cond()
}

fn show(from: &Host, node: Ipv4Addr) -> Result<TableDump, String> {
    common::operator_show(from, node, OPERATOR_PORT)
}

fn serving(from: &Host, node: Ipv4Addr) -> bool {
    show(from, node).is_ok_and(|d| d.status.serving)
}

impl Pair {
    fn start(n: usize, opts: &Opts) -> Result<Pair, String> {
        let mut lab = Lab::new(3);
        let hosts = [lab.hosts[0].clone(), lab.hosts[1].clone()];
        let client = lab.hosts[2].clone();
        // Three connections per switch in a run (the first, the failover,
        // the handback) and the closed ones linger in TIME_WAIT for 60 s:
        // more than the default 28,000 ephemeral ports at 10,000 switches.
        client.run(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"]);
        client.run(&["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"]);
        // A listener's accept queue is capped by the kernel (4096): a herd
        // larger than that overflows it and its connects wait for TCP's
        // retransmissions. Raised before the nodes listen, as README tells
        // an operator to.
        if opts.somaxconn > 0 {
            for host in &hosts {
                host.run(&["sysctl", "-qw", &format!("net.core.somaxconn={}", opts.somaxconn)]);
            }
        }
        let configs = [
            node_config(&lab, &hosts[0], 1, "primary", 200, opts),
            node_config(&lab, &hosts[1], 2, "backup", 100, opts),
        ];
        let dir = lab.dir();
        let log = |name: &str| dir.join(format!("{name}.log"));
        let (la, lb) = (log("primary-0"), log("backup-0"));
        let a = lab.vipool_logged(&hosts[0], &["node", "--config", &configs[0]], &la);
        let b = lab.vipool_logged(&hosts[1], &["node", "--config", &configs[1]], &lb);
        if !wait_slowly(WAIT, || serving(&client, hosts[0].addr)) {
            return Err(format!(
                "the primary never served: {:?}",
                show(&client, hosts[0].addr)
            ));
        }
        // The switches are spread over several processes: one process
        // (one thread) making every switch's handshake would measure
        // itself, not the pair.
        let server = format!("{VIP}:{CLIENT_PORT}");
        let (heartbeat, pki) = (opts.heartbeat_ms.to_string(), lab.pki_dir());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let processes = opts.processes.min(n);
        for p in 0..processes {
            let count = (n / processes + usize::from(p < n % processes)).to_string();
            let id = format!("herd{p}");
            let mut args = vec![
                "client".to_string(),
                "--pki".into(),
                pki.clone(),
                "--server".into(),
                server.clone(),
                "--id".into(),
                id,
                "--count".into(),
                count,
                "--heartbeat-interval-ms".into(),
                heartbeat.clone(),
                "--json".into(),
            ];
            if let Some(probe) = opts.probe_after_ms {
                args.extend(["--probe-after-ms".into(), probe.to_string()]);
            }
            let file = std::fs::File::create(log(&format!("switches-{p}"))).map_err(|e| e.to_string())?;
            let mut child = client
                .command("nice")
                .args([
                    "-n".to_string(),
                    opts.client_nice.to_string(),
                    common::vipool_bin(),
                ])
                .args(args)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::from(file))
                .spawn()
                .map_err(|e| format!("spawn the switches: {e}"))?;
            read_events(&mut child, &seen);
            lab.adopt(child);
        }
        let pair = Pair {
            lab,
            hosts,
            client,
            nodes: [a, b],
            configs,
            seen,
            n,
            starts: 1,
        };
        let began = Instant::now();
        // The first registrations are full handshakes (several times the
        // CPU of a resumed one): 10,000 of them took over 120 s on the
        // shared two-core lab machine.
        if !wait_for(WAIT * 3, || pair.registered_since(began) == n) {
            return Err(format!(
                "only {} of {n} switches registered; stopped: {:?}",
                pair.registered_since(began),
                pair.seen.lock().map(|s| s.stopped.clone()).unwrap_or_default()
            ));
        }
        println!(
            "  {n} switches registered in {:.1} s (the first full handshakes)",
            began.elapsed().as_secs_f64()
        );
        Ok(pair)
    }

    /// Switches whose last registration came after `at`.
    fn registered_since(&self, at: Instant) -> usize {
        let s = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        s.registered.values().filter(|t| **t > at).count()
    }

    /// Waits until the primary serves every switch and the backup has
    /// caught up: each run starts from a steady pair.
    fn settle(&self) -> Result<(), String> {
        let (a, b) = (self.hosts[0].addr, self.hosts[1].addr);
        let mut last = String::new();
        // A show of the whole table (every switch) is work for the node:
        // asked five times a second, not every 5 ms.
        let ok = wait_slowly(WAIT, || match (show(&self.client, a), show(&self.client, b)) {
            (Ok(x), Ok(y)) => {
                last = format!("{:?} / {:?}", x.status, y.status);
                x.status.serving
                    && x.status.connections >= self.n as u64
                    && y.status.vrrp_state == "Backup"
                    && y.status.applied_index + 5 >= x.status.commit_index
            }
            (x, y) => {
                last = format!("{:?} / {:?}", x.map(|d| d.status), y.map(|d| d.status));
                false
            }
        });
        if ok {
            Ok(())
        } else {
            Err(format!("the pair did not settle: {last}"))
        }
    }

    fn fail(&mut self, how: How) -> Instant {
        match how {
            How::Graceful => {
                let t0 = Instant::now();
                self.nodes[0].signal(Signal::SIGTERM);
                t0
            }
            How::Crash => {
                let host = self.hosts[0].clone();
                self.lab.power_loss(&host)
            }
        }
    }

    fn restart(&mut self, how: How) {
        let host = self.hosts[0].clone();
        if how == How::Crash {
            self.lab.power_back(&host, VRID);
        }
        let log = self.lab.dir().join(format!("primary-{}.log", self.starts));
        self.starts += 1;
        let config = self.configs[0].clone();
        self.nodes[0] = self
            .lab
            .vipool_logged(&host, &["node", "--config", &config], &log);
    }

    fn keep_logs(&self) -> String {
        self.lab.keep_logs("herd_bench")
    }
}

// ---------------------------------------------------------------- one herd

/// One herd: every switch back after a VIP move.
#[derive(Debug, Default, Clone)]
struct Herd {
    /// From the failure (or the restart) to the VIP taken.
    vip: Duration,
    /// From the VIP taken to the last switch noticing.
    noticed: Duration,
    /// From the VIP taken to 50%, 90% and all of the switches registered.
    half: Duration,
    most: Duration,
    all: Duration,
    /// Registrations per second from the first switch noticing to the last registration.
    rate: f64,
    /// Registrations per 100 ms from the VIP taken (with --verbose).
    histogram: Vec<usize>,
    /// Client TLS handshakes the new holder made during the herd: full,
    /// resumed (from a ticket of either server).
    handshakes: (u64, u64),
    /// TCP connections the new holder's host accepted during the herd, and
    /// connects it dropped for a full accept queue.
    tcp: (u64, u64),
    /// Raft entries the new holder committed during the herd (unknown for
    /// a restarted primary, which did not answer before).
    entries: Option<u64>,
}

/// What a host's TCP did so far: connections it accepted (each a TCP
/// handshake), and connects its listeners dropped for a full accept queue
/// (`ListenOverflows`: each waits for a retransmission, 1 s or more).
fn tcp_counters(host: &Host) -> (u64, u64) {
    // Rows of names, then rows of values, per protocol.
    let counter = |file: &str, proto: &str, name: &str| {
        let text = host.run(&["cat", file]);
        let mut rows = text.lines().filter(|l| l.starts_with(proto));
        let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
            return 0;
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    (
        counter("/proc/net/snmp", "Tcp:", "PassiveOpens"),
        counter("/proc/net/netstat", "TcpExt:", "ListenOverflows"),
    )
}

/// The client TLS handshakes `node` has completed: full, resumed (none if
/// it does not answer: a node that is not running has made none); and its
/// raft commit index.
fn handshakes(from: &Host, node: Ipv4Addr) -> (u64, u64, u64) {
    show(from, node).map_or((0, 0, 0), |d| {
        let n = |kind: &str| d.status.tls_handshakes.get(kind).copied().unwrap_or(0);
        (n("full"), n("resumed"), d.status.commit_index)
    })
}

/// Moves the VIP with `disrupt` (which returns the instant it began) and
/// waits for every switch to register again; `holder` is the host that
/// takes the VIP.
fn herd(pair: &mut Pair, holder: usize, disrupt: impl FnOnce(&mut Pair) -> Instant) -> Result<Herd, String> {
    let watch = VipWatch::new(&pair.hosts[holder], VIP);
    let holder_addr = pair.hosts[holder].addr;
    let before = handshakes(&pair.client, holder_addr);
    let tcp_before = tcp_counters(&pair.hosts[holder]);
    let t0 = disrupt(pair);
    let taken = watch
        .added(WAIT)
        .ok_or_else(|| "the VIP was never taken".to_string())?;
    let n = pair.n;
    if !wait_for(WAIT, || pair.registered_since(t0) == n) {
        return Err(format!(
            "only {} of {n} switches registered again within {WAIT:?}",
            pair.registered_since(t0)
        ));
    }
    let counted = handshakes(&pair.client, holder_addr);
    let tcp_after = tcp_counters(&pair.hosts[holder]);
    let s = pair.seen.lock().unwrap_or_else(|p| p.into_inner());
    let mut times: Vec<Instant> = s.registered.values().copied().filter(|t| *t > t0).collect();
    times.sort();
    let after = |t: Instant| t.saturating_duration_since(taken);
    let at = |share: f64| after(times[((n as f64 * share).ceil() as usize).clamp(1, n) - 1]);
    let noticed: Vec<Instant> = s.disconnected.values().copied().filter(|t| *t > t0).collect();
    let first = noticed.iter().min().copied().unwrap_or(taken);
    let last = *times.last().expect("n >= 1");
    let mut histogram = Vec::new();
    for t in &times {
        let slot = (after(*t).as_millis() / 100) as usize;
        if histogram.len() <= slot {
            histogram.resize(slot + 1, 0);
        }
        histogram[slot] += 1;
    }
    Ok(Herd {
        vip: taken.saturating_duration_since(t0),
        noticed: noticed.iter().max().map_or(Duration::ZERO, |t| after(*t)),
        half: at(0.5),
        most: at(0.9),
        all: at(1.0),
        rate: n as f64 / last.saturating_duration_since(first).as_secs_f64().max(1e-3),
        histogram,
        // A restarted node starts counting from zero; the read of the
        // counts is a full handshake of its own (the operator's).
        handshakes: if counted.0 >= before.0 && counted.1 >= before.1 {
            ((counted.0 - before.0).saturating_sub(1), counted.1 - before.1)
        } else {
            (counted.0.saturating_sub(1), counted.1)
        },
        tcp: (
            tcp_after.0.saturating_sub(tcp_before.0),
            tcp_after.1.saturating_sub(tcp_before.1),
        ),
        entries: (before.2 > 0).then(|| counted.2.saturating_sub(before.2)),
    })
}

fn run_once(pair: &mut Pair, how: How) -> Result<(Herd, Herd), String> {
    pair.settle()?;
    let failover = herd(pair, 1, |pair| pair.fail(how))?;
    pair.nodes[0].wait_exit(Duration::from_secs(10));
    // The restarted primary catches up on the survivor's log, then preempts.
    let handback = herd(pair, 0, |pair| {
        let t0 = Instant::now();
        pair.restart(how);
        t0
    })?;
    Ok((failover, handback))
}

// ---------------------------------------------------------------- reporting

fn stats(v: &[f64]) -> String {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match (v.first(), v.last()) {
        (Some(min), Some(max)) => format!("{:9.1} {:9.1} {:9.1}", v[v.len() / 2], min, max),
        _ => "   no successful run".into(),
    }
}

fn report(name: &str, herds: &[Herd]) {
    let col = |f: &dyn Fn(&Herd) -> f64| herds.iter().map(f).collect::<Vec<_>>();
    println!("  {name}:");
    println!("    {:<34} {:>9} {:>9} {:>9}", "(ms)", "median", "min", "max");
    for (label, v) in [
        ("VIP taken after (from the failure)", col(&|h| ms(h.vip))),
        ("last switch noticed", col(&|h| ms(h.noticed))),
        ("50% registered", col(&|h| ms(h.half))),
        ("90% registered", col(&|h| ms(h.most))),
        ("all registered", col(&|h| ms(h.all))),
        ("herd rate (registrations/s)", col(&|h| h.rate)),
    ] {
        println!("    {label:<34} {}", stats(&v));
    }
}

fn case(n: usize, how: How, opts: &Opts) {
    println!(
        "\n{n} switches in {} processes (nice {}), {}, {} runs (advert {} ms, vmac {}, switch heartbeat {} ms)",
        opts.processes.min(n),
        opts.client_nice,
        match how {
            How::Graceful => "graceful stop (SIGTERM)",
            How::Crash => "power loss (SIGSTOP, port cut, SIGKILL)",
        },
        opts.runs,
        opts.advert_ms,
        if opts.vmac { "on" } else { "off" },
        opts.heartbeat_ms
    );
    let mut pair = None;
    let (mut failovers, mut handbacks, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..opts.runs {
        if pair.is_none() {
            match Pair::start(n, opts) {
                Ok(p) => pair = Some(p),
                Err(e) => {
                    notes.push(format!("run {i}: {e}"));
                    continue;
                }
            }
        }
        let p = pair.as_mut().expect("a pair");
        match run_once(p, how) {
            Ok((f, h)) => {
                println!(
                    "  run {i}: failover: VIP after {:.0} ms, then all {n} registered after {:.0} ms \
                     (last noticed {:.0} ms; TLS handshakes there {} full, {} resumed; TCP {} accepted, \
                     {} dropped for a full accept queue; {} raft entries committed); handback: all after {:.0} \
                     ms ({} full, {} resumed; TCP {} accepted, {} dropped; {} entries)",
                    ms(f.vip),
                    ms(f.all),
                    ms(f.noticed),
                    f.handshakes.0,
                    f.handshakes.1,
                    f.tcp.0,
                    f.tcp.1,
                    f.entries.map_or("-".into(), |e| e.to_string()),
                    ms(h.all),
                    h.handshakes.0,
                    h.handshakes.1,
                    h.tcp.0,
                    h.tcp.1,
                    h.entries.map_or("-".into(), |e| e.to_string())
                );
                {
                    let seen = p.seen.lock().unwrap_or_else(|e| e.into_inner());
                    println!("    sessions ended so far, by reason: {:?}", seen.reasons);
                }
                if opts.verbose {
                    println!(
                        "    failover registrations per 100 ms from the VIP taken: {:?}",
                        f.histogram
                    );
                    println!(
                        "    handback registrations per 100 ms from the VIP taken: {:?}",
                        h.histogram
                    );
                }
                if std::env::var_os("HERD_BENCH_KEEP_LOGS").is_some() {
                    println!("    logs kept in {}", p.keep_logs());
                }
                failovers.push(f);
                handbacks.push(h);
            }
            Err(e) => {
                notes.push(format!("run {i}: {e}\n    logs kept in {}", p.keep_logs()));
                pair = None;
            }
        }
    }
    drop(pair);
    report("failover (times from the survivor taking the VIP)", &failovers);
    report(
        "handback (times from the restarted primary taking the VIP)",
        &handbacks,
    );
    if n >= 10_000 {
        let all: Vec<Duration> = failovers.iter().chain(&handbacks).map(|h| h.all).collect();
        let worst = all.iter().max();
        println!(
            "  goal all of 10,000 registered within 1 s of the VIP taken: worst {}: {}",
            worst.map_or("-".into(), |w| format!("{:.0} ms", ms(*w))),
            match worst {
                Some(w) if *w <= Duration::from_secs(1) => "met",
                Some(_) => "NOT met",
                None => "no successful run",
            }
        );
    }
    for note in notes {
        println!("  note: {note}");
    }
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}");
            }
            eprintln!("usage: {USAGE}");
            std::process::exit(if e.is_empty() { 0 } else { 64 });
        }
    };
    if !lab_available("herd_bench") {
        return;
    }
    let nofile = raise_nofile();
    let need = opts.sizes.iter().max().copied().unwrap_or(0) as u64 + 1000;
    if nofile < need {
        eprintln!(
            "herd_bench: RLIMIT_NOFILE is {nofile}, below the {need} a node needs; raise the hard limit"
        );
    }
    println!(
        "the herd: every switch registers again after a failover of a vipool pair (priorities 200 -> 100, \
         VRRPv3, advert {} ms, servers' net.core.somaxconn {}); times in ms, median/min/max over the runs",
        opts.advert_ms,
        if opts.somaxconn > 0 {
            opts.somaxconn.to_string()
        } else {
            "the kernel's".into()
        }
    );
    for &n in &opts.sizes {
        for &how in &opts.kinds {
            case(n, how, &opts);
        }
    }
}
