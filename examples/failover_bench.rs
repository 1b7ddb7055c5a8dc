//! Benchmark: what a license client sees of a failover of the vipool pair,
//! beside the raw VRRP VIP move of vipool's speaker and of keepalived, and
//! whether any acknowledged grant is lost over many failovers.
//!
//! ```text
//! cargo build --release --bin vipool --examples && sudo target/release/examples/failover_bench
//! ```
//!
//! Options: `--runs N` (failovers per case; default 3 at advert 1 s and 5 at
//! 100 ms), `--failovers N` (the lost-grants loop, default 100),
//! `--switches N` (simulated switches, default 20), `--probers N` (default
//! 4), `--tick-ms N` (raft tick, default 10), `--only gap|lost`,
//! `--how graceful|crash` and `--advert-ms N` (the gap cases of one kind
//! or one advert interval only), `--vmac on|off` (the nodes' `vrrp.vmac`,
//! default on), `--fresh-connect-ms N` (the fresh-connect prober's connect
//! timeout, default the client library's, 300 ms), `--fresh-deadline-ms N`
//! (its deadline for a whole attempt, default 2000), `--fresh-stagger-ms N`
//! (its connect stagger, default the client library's, 50 ms; 0: one
//! attempt at a time), `--fresh-probe-ms N` (its probe interval, default
//! the client library's, 100 ms; 0: no probes), `--verbose`
//! (one line per failover). With `FAILOVER_BENCH_TRACE` set, the worst
//! prober's attempts across each disruption are printed (what a gap is made
//! of); with `FAILOVER_BENCH_KEEP_LOGS` set, the nodes' logs are kept after
//! every run (`VIPOOL_LAB_LOG` sets their filter); with
//! `FAILOVER_BENCH_CLIENT_LOG=path`, the client library's debug lines of
//! the fresh-connect prober (each TCP attempt, each TLS handshake and how
//! long it took) go to that file. Needs root and `ip`; keepalived for
//! its column. The default run takes about 8 minutes.
//!
//! Every case runs in a fresh namespaced lab: the primary (priority 200) and
//! the backup (100) run `vipool node` (VRRPv3, the virtual MAC as `--vmac`, pair
//! handoff on; raft ticks of 10 ms, elections after 15 ticks, in every case,
//! so that the cases differ only in the advert interval), and one client
//! host runs `--switches` simulated switches (`vipool client --count`,
//! heartbeats every 500 ms) and `--probers` probers: each draws one AP
//! through the VIP in a tight loop (10 ms connect, 250 ms TLS handshake and 250 ms request
//! deadlines) and records the instant of every acknowledged grant. A
//! failover is graceful (SIGTERM of the primary's node) or a crash (every
//! process of the primary's host stopped, its bridge port cut, then killed,
//! as pair_e2e does), at a point of the advert cycle spread over the runs.
//! The old primary is then restarted (after a crash, on a clean link: its
//! stale virtual-MAC interface is deleted, as a reboot would) and, once
//! caught up, preempts back; the probers run through that handback too.
//!
//! Figures, per advert interval and failover kind (median, min, max, in ms
//! from the signal):
//!
//! - client gap: the longest time between two acknowledged grants of one
//!   prober across the failover (the worst prober of each run): what a
//!   client saw of it;
//! - longest gap ended after: when the acknowledgement that ended it came;
//! - last gap >= 20 ms ended after: when service was steady again (a
//!   failover can show more than one gap);
//! - VIP on backup after: the kernel of the backup's host reporting the VIP
//!   added (`ip monitor address`, in the same runs): the raw VIP move
//!   inside the pair, to set against the client gap;
//! - vrrp speaker alone / keepalived: the same VIP move for `vipool vrrp
//!   --pair-handoff` and for keepalived pairs with the same priorities and
//!   interval, no license service (takeover_bench's method, a crash being
//!   SIGSTOP then SIGKILL of the host's processes);
//! - handback gap: the client gap when the restarted primary preempts back;
//! - fresh-connect gap (and its handback gap): a prober beside the others
//!   that, back to back, opens a new TCP connection to the VIP, makes a
//!   full TLS handshake with the certificate of a switch id never seen
//!   before (issued by the bench) and registers it, as a switch that boots
//!   during the failover would; the longest time between two successive
//!   registrations across the disruption. One line per run, then median,
//!   min and max (the worst run); also the gap across the instant the VIP
//!   is added on the new holder's host: for the failover, the VIP move
//!   itself without what slow registrations on a new holder busy with
//!   the herd cost after it; for the handback, without what the restart
//!   and catch-up before it cost;
//! - for crashes, Master_Down_Interval = 3 * advert + (256 - 100) * advert / 256
//!   (RFC 9568, backup priority 100) and the client gap relative to it.
//!
//! Goals: graceful client gap under 50 ms; crash client gap within 10% of
//! Master_Down_Interval; fresh-connect gap at most Master_Down_Interval +
//! 100 ms after a power loss, at most 50 ms after a graceful stop and a
//! handback (issue 12); each printed beside its figures, never asserted. The lost-grants loop alternates graceful and crash
//! failovers at advert 100 ms; after each failover (on the survivor) and each
//! handback (on the primary) it compares what every prober and switch saw
//! acknowledged with the table, and prints the grants lost. It exits 1 if
//! any acknowledged grant was lost, 2 if a failover did not recover.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{in_netns, lab_available, tool_available, wait_for, Host, Lab, Speaker, VipWatch};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use vipool::client::{ClientError, ConnectOptions, Connection};
use vipool::proto::{ServerError, SwitchReport, TableDump};
use vipool::table::LicenseType;
use vipool::tls::ClientTls;

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VRID: u8 = 51;
const CLIENT_PORT: u16 = 4333;
const OPERATOR_PORT: u16 = 4334;
const RAFT_PORT: u16 = 4335;
/// Raft tick (`--tick-ms`); elections after 15 ticks, heartbeats every 3.
static TICK_MS: AtomicU64 = AtomicU64::new(10);
/// `vrrp.vmac` of both nodes (`--vmac on|off`).
static VMAC: AtomicBool = AtomicBool::new(true);
/// The fresh-connect prober's TCP connect timeout in ms (`--fresh-connect-ms`);
/// by default the client library's, what a switch uses.
static FRESH_CONNECT_MS: AtomicU64 =
    AtomicU64::new(vipool::client::DEFAULT_CONNECT_TIMEOUT.as_millis() as u64);
/// The fresh-connect prober's connect stagger in ms (`--fresh-stagger-ms`,
/// 0: one attempt at a time); by default the client library's.
static FRESH_STAGGER_MS: AtomicU64 =
    AtomicU64::new(vipool::client::DEFAULT_CONNECT_STAGGER.as_millis() as u64);
/// The fresh-connect prober's deadline for one whole attempt (connect,
/// handshake, registration) in ms (`--fresh-deadline-ms`). A ClientHello
/// or a request that the dead holder's kernel acknowledged before it died
/// is never answered: the client library's probes end it (see
/// `FRESH_PROBE_MS`), else only this deadline does.
static FRESH_DEADLINE_MS: AtomicU64 = AtomicU64::new(2000);
/// The fresh-connect prober's probe interval in ms (`--fresh-probe-ms`, 0:
/// no probes); by default the client library's: after this much silence
/// of the server it probes the connection, and the ack timeout ends it if
/// the holder died.
static FRESH_PROBE_MS: AtomicU64 = AtomicU64::new(vipool::client::DEFAULT_PROBE_AFTER.as_millis() as u64);
const PRIMARY_PRIORITY: u8 = 200;
const BACKUP_PRIORITY: u8 = 100;
/// Generous: the lab shares two cores with compilers.
const WAIT: Duration = Duration::from_secs(30);
/// A prober's connect, handshake and request deadlines. A crashed server
/// sends no reset, so a client only learns by timing out; the TCP connect's
/// is short enough not to hide the server's own figures (the kernel of a
/// live VIP holder answers a SYN in well under a millisecond). The TLS
/// handshake is work, not waiting: after a failover 24 clients make a full
/// one with the new holder at once (it cannot resume another member's
/// tickets), a few ms of CPU each on two shared cores; cutting them at
/// 10 ms only starts them all over again.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(250);
const REQUEST_TIMEOUT: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq)]
enum How {
    Graceful,
    Crash,
}

impl How {
    fn label(self) -> &'static str {
        match self {
            How::Graceful => "graceful (SIGTERM)",
            How::Crash => "crash (SIGSTOP, port cut, SIGKILL)",
        }
    }
}

#[derive(Debug)]
struct Opts {
    runs: Option<usize>,
    failovers: usize,
    switches: usize,
    probers: usize,
    gap: bool,
    lost: bool,
    verbose: bool,
    /// The failover kinds of the gap cases (`--how graceful|crash`).
    kinds: Vec<How>,
    /// The advert intervals of the gap cases (`--advert-ms N`).
    adverts: Vec<u32>,
}

const USAGE: &str = "failover_bench [--runs N] [--failovers N] [--switches N] [--probers N] [--tick-ms N] \
     [--only gap|lost] [--how graceful|crash] [--advert-ms N] [--vmac on|off] [--fresh-connect-ms N] [--fresh-deadline-ms N] [--fresh-stagger-ms N] [--fresh-probe-ms N] [--verbose]";

fn parse_args() -> Result<Opts, String> {
    let mut opts = Opts {
        runs: None,
        failovers: 100,
        switches: 20,
        probers: 4,
        gap: true,
        lost: true,
        verbose: false,
        kinds: vec![How::Graceful, How::Crash],
        adverts: vec![1000, 100],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Err(String::new());
        }
        if arg == "-v" || arg == "--verbose" {
            opts.verbose = true;
            continue;
        }
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{arg} {value}: {e}"));
        match arg.as_str() {
            "--runs" => opts.runs = Some(number()?.max(1)),
            "--failovers" => opts.failovers = number()?,
            "--switches" => opts.switches = number()?.max(1),
            "--probers" => opts.probers = number()?.max(1),
            "--tick-ms" => TICK_MS.store(number()?.max(1) as u64, Ordering::Relaxed),
            "--fresh-connect-ms" => FRESH_CONNECT_MS.store(number()?.max(1) as u64, Ordering::Relaxed),
            "--fresh-deadline-ms" => FRESH_DEADLINE_MS.store(number()?.max(1) as u64, Ordering::Relaxed),
            "--fresh-stagger-ms" => FRESH_STAGGER_MS.store(number()? as u64, Ordering::Relaxed),
            "--fresh-probe-ms" => FRESH_PROBE_MS.store(number()? as u64, Ordering::Relaxed),
            "--vmac" => VMAC.store(
                match value.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => return Err(format!("--vmac on|off, not {value}")),
                },
                Ordering::Relaxed,
            ),
            "--advert-ms" => opts.adverts = vec![u32::try_from(number()?.max(1)).map_err(|e| e.to_string())?],
            "--how" => {
                opts.kinds = match value.as_str() {
                    "graceful" => vec![How::Graceful],
                    "crash" => vec![How::Crash],
                    _ => return Err(format!("--how graceful|crash, not {value}")),
                }
            }
            "--only" => match value.as_str() {
                "gap" => opts.lost = false,
                "lost" => opts.gap = false,
                _ => return Err(format!("--only gap|lost, not {value}")),
            },
            _ => return Err(format!("unknown option {arg}")),
        }
    }
    Ok(opts)
}

fn ap() -> LicenseType {
    LicenseType::new("AP")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// RFC 9568 Master_Down_Interval of the backup.
fn master_down(advert_ms: u32) -> Duration {
    let advert = Duration::from_millis(u64::from(advert_ms));
    advert * 3 + advert * u32::from(256 - u16::from(BACKUP_PRIORITY)) / 256
}

// ---------------------------------------------------------------- the pair

fn node_config(
    lab: &Lab,
    host: &Host,
    id: u64,
    name: &str,
    priority: u8,
    advert_ms: u32,
    peers: &[(u64, &str, Ipv4Addr)],
) -> String {
    let peers: Vec<String> = peers
        .iter()
        .map(|(id, name, addr)| {
            format!("{{ id = {id}, name = \"{name}\", address = \"{addr}:{RAFT_PORT}\", role = \"server\" }}")
        })
        .collect();
    let data = lab.dir().join(format!("{name}-data"));
    let license = lab.server_license_with(name, 100_000, (1_000_000, 1_000_000));
    // As pair_e2e's, with the advert interval of the case, the same raft
    // timers in every case (two election timeouts must stay below
    // Master_Down_Interval, which `vipool node` checks), and a server-side
    // heartbeat interval long enough that a prober (which never heartbeats)
    // is not swept down within a round.
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
advert_interval_ms = {advert_ms}
pair_handoff = true
vmac = {vmac}

[cluster]
peers = [{peers}]
tick_ms = {tick_ms}
election_ticks = 15
heartbeat_ticks = 3
request_timeout_ms = 2000

[license]
client_port = {CLIENT_PORT}
operator_listen = "{addr}:{OPERATOR_PORT}"
{license_lines}
heartbeat_interval_ms = 5000
sweep_interval_ms = 500
# The fresh-connect prober registers a new switch id from the client
# host after every registration: far more clients and registrations than
# one source address may make in production; its clients leave the table
# after 20 s of silence, so it does not grow over the runs.
silence_remove_s = 20

{tls}"#,
        data = data.display(),
        tls = lab.tls_section(name),
        serial = license.serial,
        license_lines = license.lines,
        peers = peers.join(", "),
        addr = host.addr,
        tick_ms = TICK_MS.load(Ordering::Relaxed),
        vmac = VMAC.load(Ordering::Relaxed),
    );
    let path = lab.dir().join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write node config");
    let path = path.to_string_lossy().into_owned();
    common::init_member(&path);
    path
}

/// Hosts 0 (primary), 1 (backup), 2 (switches and probers).
struct Pair {
    lab: Lab,
    hosts: [Host; 2],
    client: Host,
    nodes: [Speaker; 2],
    configs: [String; 2],
    switches: Speaker,
    switch_count: usize,
    starts: usize,
}

fn show(from: &Host, node: Ipv4Addr) -> Result<TableDump, String> {
    common::operator_show(from, node, OPERATOR_PORT)
}

fn serving(from: &Host, node: Ipv4Addr) -> bool {
    show(from, node).is_ok_and(|d| d.status.serving)
}

/// The grants each switch saw acknowledged, net of releases.
fn switch_grants(switches: &Speaker) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for e in switches.events() {
        let v = &e.value;
        let sign = match v["event"].as_str() {
            Some("granted") => 1,
            Some("released") => -1,
            _ => continue,
        };
        if v["license_type"] == "AP" {
            *out.entry(v["id"].as_str().unwrap_or_default().to_string())
                .or_insert(0) += sign * v["count"].as_i64().unwrap_or(0);
        }
    }
    out
}

fn registered_since(switches: &Speaker, at: Instant) -> usize {
    let mut ids = std::collections::BTreeSet::new();
    for e in switches.events() {
        if e.value["event"] == "registered" && e.at > at {
            ids.insert(e.value["id"].as_str().unwrap_or_default().to_string());
        }
    }
    ids.len()
}

impl Pair {
    fn start(advert_ms: u32, switch_count: usize) -> Result<Pair, String> {
        let mut lab = Lab::new(3);
        let hosts = [lab.hosts[0].clone(), lab.hosts[1].clone()];
        let client = lab.hosts[2].clone();
        let peers = [(1, "primary", hosts[0].addr), (2, "backup", hosts[1].addr)];
        let configs = [
            node_config(&lab, &hosts[0], 1, "primary", PRIMARY_PRIORITY, advert_ms, &peers),
            node_config(&lab, &hosts[1], 2, "backup", BACKUP_PRIORITY, advert_ms, &peers),
        ];
        let log = |name: &str| lab.dir().join(format!("{name}.log"));
        let (la, lb, ls) = (log("primary-0"), log("backup-0"), log("switches"));
        let a = lab.vipool_logged(&hosts[0], &["node", "--config", &configs[0]], &la);
        let b = lab.vipool_logged(&hosts[1], &["node", "--config", &configs[1]], &lb);
        if !wait_for(WAIT, || serving(&client, hosts[0].addr)) {
            let log = std::fs::read_to_string(&la).unwrap_or_default();
            return Err(format!(
                "the primary never served: {:?}\nits log:\n{log}",
                show(&client, hosts[0].addr)
            ));
        }
        let server = format!("{VIP}:{CLIENT_PORT}");
        let count = switch_count.to_string();
        let pki = lab.pki_dir();
        let args = [
            "client",
            "--pki",
            &pki,
            "--server",
            &server,
            "--id",
            "sw",
            "--count",
            &count,
            "--aps",
            "2",
            "--heartbeat-interval-ms",
            "500",
            "--json",
        ];
        let switches = lab.vipool_logged(&client, &args, &ls);
        let pair = Pair {
            lab,
            hosts,
            client,
            nodes: [a, b],
            configs,
            switches,
            switch_count,
            starts: 1,
        };
        if !wait_for(WAIT, || {
            switch_grants(&pair.switches)
                .values()
                .filter(|n| **n == 2)
                .count()
                == switch_count
        }) {
            return Err(format!(
                "the switches did not all get their grants: {:?}",
                switch_grants(&pair.switches)
            ));
        }
        pair.settle()?;
        Ok(pair)
    }

    /// Waits for the initial roles: the primary serves the switches, the
    /// backup follows and has caught up.
    fn settle(&self) -> Result<(), String> {
        let (a, b) = (self.hosts[0].addr, self.hosts[1].addr);
        let mut last = String::new();
        let ok = wait_for(WAIT, || {
            let (x, y) = match (show(&self.client, a), show(&self.client, b)) {
                (Ok(x), Ok(y)) => (x, y),
                (x, y) => {
                    last = format!("{:?} / {:?}", x.map(|d| d.status), y.map(|d| d.status));
                    return false;
                }
            };
            last = format!("{:?} / {:?}", x.status, y.status);
            x.status.serving
                && x.status.connections >= self.switch_count as u64
                && y.status.vrrp_state == "Backup"
                && y.status.raft_role == "Follower"
                && y.status.applied_index + 5 >= x.status.commit_index
        });
        if ok {
            Ok(())
        } else {
            Err(format!("the pair did not settle: {last}"))
        }
    }

    /// Fails the primary; returns the instant of the failure.
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

    /// Restarts the old primary (on a clean link after a crash).
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

    /// Copies the nodes' and switches' logs and configurations out of the
    /// lab (which removes its directory) for a post-mortem; returns where.
    fn keep_logs(&self) -> String {
        self.lab.keep_logs("failover_bench")
    }

    fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.lab.dir().join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

// ---------------------------------------------------------------- probers

/// What one prober saw.
#[derive(Debug, Default)]
struct Probe {
    id: String,
    /// When each acknowledged grant came back.
    acks: Vec<Instant>,
    /// Requests of unknown outcome (timed out or connection lost after sending).
    uncertain: u64,
    /// The prober's used count in the last acknowledgement (the server's view).
    last_used: u32,
    /// The first few reasons of uncertain outcomes.
    why: Vec<String>,
    /// A refusal by the table itself (the pool ran dry): a setup problem.
    refused: Option<String>,
    /// With `FAILOVER_BENCH_TRACE` set: what each attempt ended in, and when.
    trace: Vec<(Instant, String)>,
}

/// `FAILOVER_BENCH_TRACE=1`: print the worst prober's attempts across each
/// disruption (connect, handshake, register, refusals), to see where a gap
/// goes.
fn tracing_on() -> bool {
    std::env::var_os("FAILOVER_BENCH_TRACE").is_some()
}

/// Draws one AP at a time through the VIP until `stop`, then until the next
/// acknowledgement (so that nothing is in flight when the table is read).
fn prober(
    host: &Host,
    id: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Probe> {
    let tls = common::switch_tls(host, &id, "PROBE");
    in_netns(host, move || {
        common::runtime().block_on(async move {
            let mut probe = Probe {
                id: id.clone(),
                ..Probe::default()
            };
            let mut conn: Option<Connection> = None;
            let mut registered = false;
            let mut settled = true; // nothing in flight
            let mut stop_deadline = None;
            let trace = tracing_on();
            let note = |probe: &mut Probe, began: Instant, what: String| {
                if trace {
                    probe
                        .trace
                        .push((began, format!("{what} ({:.1} ms)", ms(began.elapsed()))));
                }
            };
            loop {
                if stop.load(Ordering::SeqCst) {
                    let deadline = *stop_deadline.get_or_insert_with(|| Instant::now() + WAIT);
                    if settled || Instant::now() > deadline {
                        break;
                    }
                }
                let mut c = match conn.take() {
                    Some(c) => c,
                    None => {
                        let options = ConnectOptions {
                            connect_timeout: CONNECT_TIMEOUT,
                            handshake_timeout: HANDSHAKE_TIMEOUT,
                            // The prober keeps its own request deadlines.
                            answer_timeout: None,
                            // The client library's stagger and ack timeout.
                            ..ConnectOptions::default()
                        };
                        let began = Instant::now();
                        match Connection::connect_with((VIP, CLIENT_PORT), Some(&tls), &options).await {
                            Ok(c) => {
                                note(&mut probe, began, "connected".into());
                                c
                            }
                            Err(e) => {
                                note(&mut probe, began, format!("connect: {e}"));
                                tokio::time::sleep(Duration::from_millis(2)).await;
                                continue;
                            }
                        }
                    }
                };
                if !registered {
                    let began = Instant::now();
                    let register = c.register(&id, "PROBE", "1", SwitchReport::default());
                    match tokio::time::timeout(Duration::from_secs(2), register).await {
                        Ok(Ok(_)) => {
                            note(&mut probe, began, "registered".into());
                            registered = true;
                            conn = Some(c);
                        }
                        Ok(Err(e)) => note(&mut probe, began, format!("register: {e}")),
                        Err(_) => note(&mut probe, began, "register: no answer".into()),
                    }
                    continue;
                }
                settled = false;
                let began = Instant::now();
                let acquired = tokio::time::timeout(REQUEST_TIMEOUT, c.acquire(&id, &ap(), 1)).await;
                match &acquired {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => note(&mut probe, began, format!("acquire: {e}")),
                    Err(_) => note(&mut probe, began, "acquire: no answer".into()),
                }
                match acquired {
                    Ok(Ok((client, _))) => {
                        probe.acks.push(Instant::now());
                        probe.last_used = client.used_of(&ap());
                        acked.fetch_add(1, Ordering::SeqCst);
                        settled = true;
                        conn = Some(c);
                    }
                    Ok(Err(ClientError::Server(ServerError::NotLicenseServer { .. }))) => {
                        // Refused before anything was proposed: changed nothing.
                        settled = true;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Ok(Err(ClientError::Server(ServerError::Refused(e)))) => {
                        probe.refused = Some(e.to_string());
                        break;
                    }
                    other => {
                        probe.uncertain += 1;
                        if probe.why.len() < 3 {
                            probe.why.push(match other {
                                Ok(Err(e)) => e.to_string(),
                                _ => format!("no answer within {REQUEST_TIMEOUT:?}"),
                            });
                        }
                    }
                }
            }
            probe
        })
    })
}

/// What the fresh-connect prober saw.
#[derive(Debug, Default)]
struct Fresh {
    /// When each registration was acknowledged.
    acks: Vec<Instant>,
    /// Attempts that failed (connect, handshake or registration).
    failed: u64,
    /// The first few reasons of failed attempts.
    why: Vec<String>,
    /// With `FAILOVER_BENCH_TRACE` set: each step of each attempt (TCP and
    /// TLS, registration, failure), when it began and what it ended in.
    trace: Vec<(Instant, String)>,
}

/// Switch certificates for new ids, issued ahead by a thread of their own
/// (about a millisecond each) so that issuing one is no part of a gap.
fn fresh_identities(
    host: &Host,
    tag: String,
    stop: Arc<AtomicBool>,
) -> mpsc::Receiver<(String, String, ClientTls)> {
    let (tx, rx) = mpsc::sync_channel(32);
    let pki = host.lab_pki();
    std::thread::spawn(move || {
        let ca = common::lab_ca(&pki);
        let ca_pem = ca.cert_pem().as_bytes().to_vec();
        for n in 0u64.. {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let id = format!("fresh-{tag}-{n}");
            let serial = format!("FRESH-{tag}-{n}");
            let issued = ca.issue_switch(&id, &serial, 1).expect("switch certificate");
            let tls = ClientTls::from_pem(&ca_pem, issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())
                .expect("switch TLS");
            if tx.send((id, serial, tls)).is_err() {
                return;
            }
        }
    });
    rx
}

/// Back to back until `stop`: a new TCP connection to the VIP, a full TLS
/// handshake with the certificate of a switch id never seen before, its
/// registration; then the connection is dropped and the next id comes.
/// It connects as a switch does (the client library's default connect and
/// handshake timeouts, or `--fresh-connect-ms`), gives a whole attempt
/// `--fresh-deadline-ms`, and tries again at once when an attempt fails.
fn fresh_prober(
    host: &Host,
    tag: String,
    stop: Arc<AtomicBool>,
    registered: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Fresh> {
    let ids = fresh_identities(host, tag, stop.clone());
    in_netns(host, move || {
        common::runtime().block_on(async move {
            let mut fresh = Fresh::default();
            let options = ConnectOptions {
                connect_timeout: Duration::from_millis(FRESH_CONNECT_MS.load(Ordering::Relaxed)),
                handshake_timeout: vipool::client::DEFAULT_HANDSHAKE_TIMEOUT,
                // --fresh-deadline-ms is the prober's own request deadline.
                answer_timeout: None,
                connect_stagger: Some(Duration::from_millis(FRESH_STAGGER_MS.load(Ordering::Relaxed)))
                    .filter(|d| !d.is_zero()),
                probe_after: Some(Duration::from_millis(FRESH_PROBE_MS.load(Ordering::Relaxed)))
                    .filter(|d| !d.is_zero()),
                // The client library's ack timeout.
                ..ConnectOptions::default()
            };
            let deadline = Duration::from_millis(FRESH_DEADLINE_MS.load(Ordering::Relaxed));
            let trace = tracing_on();
            let mut next = None;
            while !stop.load(Ordering::SeqCst) {
                // A failed attempt tries again with the same id (it may or
                // may not have registered); a success takes a new one.
                let (id, serial, tls) = match next.take() {
                    Some(x) => x,
                    None => match ids.recv() {
                        Ok(x) => x,
                        Err(_) => break,
                    },
                };
                let steps = std::cell::RefCell::new(Vec::new());
                let step = |began: Instant, what: String| {
                    if trace {
                        steps
                            .borrow_mut()
                            .push((began, format!("{what} ({:.1} ms)", ms(began.elapsed()))));
                    }
                };
                let attempt = async {
                    let began = Instant::now();
                    let connected = Connection::connect_with((VIP, CLIENT_PORT), Some(&tls), &options).await;
                    let mut c = match connected {
                        Ok(c) => {
                            step(began, "fresh: connected (TCP, TLS)".into());
                            c
                        }
                        Err(e) => {
                            step(began, format!("fresh: connect: {e}"));
                            return Err(e);
                        }
                    };
                    let began = Instant::now();
                    let registered = c.register(&id, &serial, "1", SwitchReport::default()).await;
                    match &registered {
                        Ok(_) => step(began, "fresh: registered".into()),
                        Err(e) => step(began, format!("fresh: register: {e}")),
                    }
                    registered
                };
                let outcome = tokio::time::timeout(
                    deadline,
                    tracing::Instrument::instrument(
                        attempt,
                        tracing::debug_span!(target: "fresh", "fresh", %id),
                    ),
                )
                .await;
                fresh.trace.append(&mut steps.borrow_mut());
                match outcome {
                    Ok(Ok(_)) => {
                        fresh.acks.push(Instant::now());
                        registered.fetch_add(1, Ordering::SeqCst);
                    }
                    failed => {
                        fresh.failed += 1;
                        if fresh.why.len() < 3 {
                            fresh.why.push(match failed {
                                Ok(Err(e)) => e.to_string(),
                                _ => format!("no registration within {deadline:?}"),
                            });
                        }
                        next = Some((id, serial, tls));
                    }
                }
            }
            fresh
        })
    })
}

/// The longest time between two successive acknowledgements in `acks`
/// that ended after `t0`, and when (from `t0`) it ended.
fn longest_gap(acks: &[Instant], t0: Instant) -> Option<(Duration, Duration)> {
    acks.windows(2)
        .filter(|w| w[1] > t0)
        .map(|w| (w[1] - w[0], w[1] - t0))
        .max_by_key(|(gap, _)| *gap)
}

/// The time between the last of `acks` before `at` and the first after.
fn gap_across(acks: &[Instant], at: Instant) -> Option<Duration> {
    let before = acks.iter().filter(|a| **a <= at).max()?;
    let after = acks.iter().filter(|a| **a > at).min()?;
    Some(*after - *before)
}

/// One disruption seen by the probers.
#[derive(Debug, Default)]
struct Measured {
    /// Longest time between two acknowledgements of one prober that ended
    /// after the disruption began (worst prober).
    gap: Duration,
    /// From the disruption to the acknowledgement that ended that gap.
    served_again: Duration,
    /// From the disruption to the end of the last gap of 20 ms or more (any
    /// prober): when service was steady again.
    steady: Duration,
    /// The worst prober's gaps of 20 ms or more: (end after the disruption, length).
    gaps: Vec<(Duration, Duration)>,
    acked: u64,
    uncertain: u64,
    /// Acknowledged grants missing from the survivor's table.
    lost: u64,
    /// Requests of unknown outcome that the table shows applied.
    uncertain_applied: u64,
    /// Anything else that looks wrong.
    notes: Vec<String>,
    /// Why outcomes were uncertain (a few per prober).
    why: BTreeMap<String, usize>,
    /// The fresh-connect prober: its longest time between two successful
    /// registrations across the disruption, and when (from it) that gap
    /// ended; `None` if it registered nothing on both sides of it.
    fresh: Option<(Duration, Duration)>,
    /// When it registered (to measure the gap across an instant).
    fresh_acks: Vec<Instant>,
    /// Its registrations and failed attempts.
    fresh_registered: u64,
    fresh_failed: u64,
}

/// Runs the probers around `disrupt` (which returns when it began and the
/// index of the node that should serve afterwards, once it serves), waits
/// until they are served again, stops them and checks the survivor's table.
fn probed(
    pair: &mut Pair,
    tag: &str,
    probers: usize,
    disrupt: impl FnOnce(&mut Pair) -> Result<(Instant, usize), String>,
) -> Result<Measured, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let fresh_acked = Arc::new(AtomicU64::new(0));
    let fresh = fresh_prober(&pair.client, tag.to_string(), stop.clone(), fresh_acked.clone());
    let handles: Vec<_> = (0..probers)
        .map(|i| {
            prober(
                &pair.client,
                format!("probe-{tag}-{i}"),
                stop.clone(),
                acked.clone(),
            )
        })
        .collect();
    let join = |stop: &AtomicBool, handles: Vec<std::thread::JoinHandle<Probe>>| -> Vec<Probe> {
        stop.store(true, Ordering::SeqCst);
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    };
    let warm = wait_for(WAIT, || {
        acked.load(Ordering::SeqCst) >= 20 * probers as u64 && fresh_acked.load(Ordering::SeqCst) >= 5
    });
    if !warm {
        join(&stop, handles);
        let _ = fresh.join();
        return Err("the probers were not served before the failover".into());
    }
    let outcome = disrupt(pair);
    let (t0, survivor) = match outcome {
        Ok(x) => x,
        Err(e) => {
            join(&stop, handles);
            let _ = fresh.join();
            return Err(e);
        }
    };
    let base = acked.load(Ordering::SeqCst);
    let fresh_base = fresh_acked.load(Ordering::SeqCst);
    let again = wait_for(WAIT, || {
        acked.load(Ordering::SeqCst) >= base + 20 * probers as u64
            && fresh_acked.load(Ordering::SeqCst) >= fresh_base + 5
    });
    let probes = join(&stop, handles);
    let fresh = fresh
        .join()
        .map_err(|_| "the fresh-connect prober panicked".to_string())?;
    if !again {
        return Err(format!(
            "the probers were not served again ({} acked in all)",
            acked.load(Ordering::SeqCst)
        ));
    }
    if probes.len() != probers {
        return Err("a prober thread panicked".into());
    }
    let node = pair.hosts[survivor].addr;
    let dump = show(&pair.client, node).map_err(|e| format!("the survivor does not answer: {e}"))?;
    let mut m = Measured {
        fresh: longest_gap(&fresh.acks, t0),
        fresh_acks: fresh.acks.clone(),
        fresh_registered: fresh.acks.len() as u64,
        fresh_failed: fresh.failed,
        ..Measured::default()
    };
    for w in &fresh.why {
        *m.why.entry(format!("fresh: {w}")).or_default() += 1;
    }
    for p in &probes {
        if let Some(e) = &p.refused {
            m.notes.push(format!("{}: the table refused a grant: {e}", p.id));
        }
        let mut gaps = Vec::new();
        let mut worst = Duration::ZERO;
        for w in p.acks.windows(2) {
            if w[1] <= t0 {
                continue;
            }
            let gap = w[1] - w[0];
            worst = worst.max(gap);
            if gap >= Duration::from_millis(20) {
                gaps.push((w[1] - t0, gap));
                m.steady = m.steady.max(w[1] - t0);
            }
            if gap > m.gap {
                m.gap = gap;
                m.served_again = w[1] - t0;
            }
        }
        if worst >= m.gap {
            m.gaps = gaps;
        }
        let acked = p.acks.len() as u64;
        let table = u64::from(dump.state.clients.get(&p.id).map_or(0, |c| c.used_of(&ap())));
        m.acked += acked;
        m.uncertain += p.uncertain;
        for w in &p.why {
            *m.why.entry(w.clone()).or_default() += 1;
        }
        let lost = acked.max(u64::from(p.last_used)).saturating_sub(table);
        if lost > 0 {
            m.notes.push(format!(
                "{}: LOST {lost}: acknowledged {acked} (last reply said {} used, {} uncertain), table of {} holds {table}",
                p.id, p.last_used, p.uncertain, pair.hosts[survivor].addr
            ));
        }
        if table > acked + p.uncertain {
            m.notes.push(format!(
                "{}: table holds {table}, more than {acked} acknowledged + {} uncertain",
                p.id, p.uncertain
            ));
        }
        m.lost += lost;
        m.uncertain_applied += table.saturating_sub(acked.max(u64::from(p.last_used)));
        if lost > 0 || table > acked + p.uncertain {
            m.notes.push(format!("{}: uncertain outcomes: {:?}", p.id, p.why));
        }
    }
    if tracing_on() {
        // The prober whose gap was the longest: its attempts from the
        // disruption to the acknowledgement that ended the gap.
        let gap_of = |p: &Probe| {
            p.acks
                .windows(2)
                .filter(|w| w[1] > t0)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or_default()
        };
        if let Some(p) = probes.iter().max_by_key(|p| gap_of(p)) {
            println!(
                "    trace of {} (gap {:.1} ms, ms from the disruption):",
                p.id,
                ms(gap_of(p))
            );
            print_trace(
                &p.trace,
                t0,
                t0.checked_sub(Duration::from_millis(300)).unwrap_or(t0),
                t0 + m.served_again,
            );
        }
    }
    if tracing_on() {
        if let Some((gap, ended)) = m.fresh {
            println!(
                "    trace of the fresh-connect prober (gap {:.1} ms ended at {:.1}; disruption at {} UTC, \
                 gap from {} UTC):",
                ms(gap),
                ms(ended),
                wall_clock(t0),
                wall_clock(t0 + ended - gap)
            );
            // From a little before the gap began: a registration every few ms.
            let from = (t0 + ended)
                .checked_sub(gap + Duration::from_millis(20))
                .unwrap_or(t0);
            print_trace(&fresh.trace, t0, from, t0 + ended);
        }
    }
    let pool = &dump.pool[&ap()];
    if pool.used > pool.total {
        m.notes
            .push(format!("S3: used {} > total {}", pool.used, pool.total));
    }
    Ok(m)
}

/// `at` as the wall clock's time of day (UTC, to the microsecond), to
/// find it in the nodes' logs.
fn wall_clock(at: Instant) -> String {
    let now = (Instant::now(), std::time::SystemTime::now());
    let wall = now.1 - now.0.saturating_duration_since(at);
    let since = wall.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let day = since.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        day / 3600,
        day / 60 % 60,
        day % 60,
        since.subsec_micros()
    )
}

/// Prints the attempts of a trace that began from `from` to `end`, in ms
/// from `t0`; runs of the same failure are one line ("x N until").
fn print_trace(trace: &[(Instant, String)], t0: Instant, from: Instant, end: Instant) {
    let rel = |at: Instant| if at >= t0 { ms(at - t0) } else { -ms(t0 - at) };
    let mut run: Option<(Instant, Instant, &str, usize)> = None;
    let same = |a: &str, b: &str| a.split(" (").next() == b.split(" (").next();
    let flush = |run: &Option<(Instant, Instant, &str, usize)>| {
        if let Some((first, last, what, n)) = run {
            if *n == 1 {
                println!("      {:8.1} {what}", rel(*first));
            } else {
                println!("      {:8.1} {what} x{n} until {:.1}", rel(*first), rel(*last));
            }
        }
    };
    for (at, what) in trace.iter().filter(|(at, _)| *at >= from && *at <= end) {
        match &mut run {
            Some((_, last, w, n)) if same(w, what) => {
                *last = *at;
                *n += 1;
            }
            _ => {
                flush(&run);
                run = Some((*at, *at, what, 1));
            }
        }
    }
    flush(&run);
}

/// One failover and the handback.
#[derive(Debug, Default)]
struct Round {
    failover: Measured,
    vip_added: Option<Duration>,
    /// The fresh-connect prober's gap across the failover's VIP move (the
    /// VIP added on the backup's host): the move itself, without what
    /// slow registrations on the new holder after it cost.
    fresh_at_takeover: Option<Duration>,
    handback: Measured,
    /// The fresh-connect prober's gap across the handback's VIP move (the
    /// VIP added on the primary's host): the handback itself, without
    /// what the restart and catch-up before it cost.
    fresh_at_move: Option<Duration>,
    /// Acknowledged switch grants missing from the survivor's table.
    switch_lost: u64,
    notes: Vec<String>,
}

impl Round {
    fn lost(&self) -> u64 {
        self.failover.lost + self.handback.lost + self.switch_lost
    }

    fn describe(&self) -> String {
        format!(
            "gap {:.1} ms (ended {:.1} ms after, steady after {:.1} ms; gaps >= 20 ms end@length {}), \
             VIP on backup {}, handback gap {:.1} ms, fresh-connect gap {} / handback {}, \
             acked {}+{}, uncertain {}+{} (applied {}+{}), lost {}",
            ms(self.failover.gap),
            ms(self.failover.served_again),
            ms(self.failover.steady),
            self.failover
                .gaps
                .iter()
                .map(|(end, len)| format!("{:.0}@{:.0}", ms(*end), ms(*len)))
                .collect::<Vec<_>>()
                .join(" "),
            self.vip_added
                .map_or("never".into(), |d| format!("{:.1} ms", ms(d))),
            ms(self.handback.gap),
            fresh_text(&self.failover),
            fresh_text(&self.handback),
            self.failover.acked,
            self.handback.acked,
            self.failover.uncertain,
            self.handback.uncertain,
            self.failover.uncertain_applied,
            self.handback.uncertain_applied,
            self.lost(),
        ) + &format!("; uncertain because: {:?}", self.failover.why)
    }
}

/// The fresh-connect prober's gap of one disruption, for a line of text.
fn fresh_text(m: &Measured) -> String {
    match m.fresh {
        Some((gap, ended)) => format!(
            "{:.1} ms (ended {:.1} ms after; {} registered, {} failed attempts)",
            ms(gap),
            ms(ended),
            m.fresh_registered,
            m.fresh_failed
        ),
        None => format!("none ({} registered)", m.fresh_registered),
    }
}

fn round(
    pair: &mut Pair,
    how: How,
    phase: f64,
    advert_ms: u32,
    probers: usize,
    tag: &str,
) -> Result<Round, String> {
    pair.settle()?;
    let vip_added = VipWatch::new(&pair.hosts[1], VIP);
    let mut t_fail = Instant::now();
    let failover = probed(pair, &format!("{tag}f"), probers, |pair| {
        // Spread the failure over the advert cycle.
        std::thread::sleep(Duration::from_millis(u64::from(advert_ms)).mul_f64(phase));
        let t0 = pair.fail(how);
        t_fail = t0;
        let b = pair.hosts[1].addr;
        if !wait_for(WAIT, || serving(&pair.client, b)) {
            return Err(format!(
                "the backup never served: {:?}",
                show(&pair.client, b).map(|d| d.status)
            ));
        }
        Ok((t0, 1))
    });
    let added = vip_added.added(Duration::from_secs(1));
    let mut out = Round {
        vip_added: added.map(|a| a.saturating_duration_since(t_fail)),
        ..Round::default()
    };
    let exit = pair.nodes[0].wait_exit(WAIT);
    out.failover = failover.map_err(|e| format!("{e}\nbackup log:\n{}", pair.log_tail("backup-0.log")))?;
    out.fresh_at_takeover = added.and_then(|at| gap_across(&out.failover.fresh_acks, at));
    if how == How::Graceful && exit != Some(0) {
        out.notes
            .push(format!("the primary's graceful stop exited {exit:?}"));
    }
    // The switches' acknowledged grants are on the survivor, once they are all back.
    let t0 = t_fail;
    if !wait_for(WAIT, || registered_since(&pair.switches, t0) == pair.switch_count) {
        out.notes.push(format!(
            "only {} of {} switches came back through the VIP",
            registered_since(&pair.switches, t0),
            pair.switch_count
        ));
    }
    let dump =
        show(&pair.client, pair.hosts[1].addr).map_err(|e| format!("the survivor does not answer: {e}"))?;
    for (id, granted) in switch_grants(&pair.switches) {
        let used = i64::from(dump.state.clients.get(&id).map_or(0, |c| c.used_of(&ap())));
        if used < granted {
            out.switch_lost += (granted - used) as u64;
            out.notes.push(format!(
                "switch {id}: LOST: acknowledged {granted}, table holds {used}"
            ));
        }
    }
    // The old primary comes back and, once caught up, preempts.
    let vip_back = VipWatch::new(&pair.hosts[0], VIP);
    let handback = probed(pair, &format!("{tag}h"), probers, |pair| {
        let t0 = Instant::now();
        pair.restart(how);
        let a = pair.hosts[0].addr;
        if !wait_for(WAIT, || serving(&pair.client, a)) {
            let log = format!("primary-{}.log", pair.starts - 1);
            return Err(format!(
                "the restarted primary never served: {:?}\nthe backup: {:?}\nthe primary's log:\n{}\n\
                 the backup's log:\n{}",
                show(&pair.client, a).map(|d| d.status),
                show(&pair.client, pair.hosts[1].addr).map(|d| d.status),
                pair.log_tail(&log),
                pair.log_tail("backup-0.log")
            ));
        }
        Ok((t0, 0))
    });
    let moved = vip_back.added(Duration::from_secs(1));
    out.handback = handback?;
    out.fresh_at_move = moved.and_then(|at| gap_across(&out.handback.fresh_acks, at));
    out.notes.extend(out.failover.notes.iter().cloned());
    out.notes.extend(out.handback.notes.iter().cloned());
    Ok(out)
}

// ---------------------------------------------------------------- raw VIP move

#[derive(Clone, Copy, Debug, PartialEq)]
enum Raw {
    /// `vipool vrrp --pair-handoff`, as the nodes' `pair_handoff = true`.
    Vrrp,
    Keepalived,
}

fn start_raw(lab: &mut Lab, which: Raw, host: &Host, priority: u8, advert_ms: u32, tag: &str) -> i32 {
    match which {
        Raw::Vrrp => {
            let (p, a) = (priority.to_string(), advert_ms.to_string());
            let args = [
                "vrrp",
                "--interface",
                "eth0",
                "--vrid",
                "50",
                "--priority",
                &p,
                "--vip",
                "192.0.2.100/24",
                "--advert-interval-ms",
                &a,
                "--pair-handoff",
            ];
            // As `Lab::vipool_vrrp`, without its log on our terminal.
            let child = host
                .command(&common::vipool_bin())
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn vipool vrrp");
            let pid = child.id() as i32;
            lab.adopt(child);
            pid
        }
        Raw::Keepalived => {
            let child = lab.keepalived(
                host,
                tag,
                &common::bench_keepalived_conf(VIP, priority, advert_ms),
            );
            let pid = child.lock().map(|c| c.id() as i32).unwrap_or(0);
            pid
        }
    }
}

/// One VIP move of a bare VRRP pair, as takeover_bench measures it.
fn raw_once(which: Raw, advert_ms: u32, how: How, phase: f64) -> Option<Duration> {
    let mut lab = Lab::new(2);
    let (h0, h1) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    let master = start_raw(&mut lab, which, &h0, PRIMARY_PRIORITY, advert_ms, "m");
    start_raw(&mut lab, which, &h1, BACKUP_PRIORITY, advert_ms, "b");
    let settle = Duration::from_millis(u64::from(advert_ms) * 5 + 5000);
    if !wait_for(settle, || h0.has_addr(VIP) && !h1.has_addr(VIP)) {
        eprintln!("{which:?}: pair did not settle");
        return None;
    }
    std::thread::sleep(Duration::from_millis(u64::from(advert_ms) * 4));
    let watch = VipWatch::new(&h1, VIP);
    std::thread::sleep(Duration::from_millis(u64::from(advert_ms)).mul_f64(phase));
    let victims: Vec<i32> = if how == How::Crash {
        common::sh(&["ip", "netns", "pids", &h0.ns])
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    } else {
        vec![master]
    };
    let t0 = Instant::now();
    if how == How::Crash {
        for pid in &victims {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGSTOP);
        }
    }
    let sig = if how == How::Crash {
        Signal::SIGKILL
    } else {
        Signal::SIGTERM
    };
    for pid in victims {
        let _ = kill(Pid::from_raw(pid), sig);
    }
    let at = watch.added(Duration::from_secs(20))?;
    Some(at.saturating_duration_since(t0))
}

// ---------------------------------------------------------------- reporting

fn median(v: &[Duration]) -> Option<Duration> {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied()
}

fn stats(v: &[Duration]) -> String {
    let mut v = v.to_vec();
    v.sort();
    match (v.first(), v.last(), median(&v)) {
        (Some(min), Some(max), Some(med)) => format!(
            "{:9.1} {:9.1} {:9.1}   (n={})",
            ms(med),
            ms(*min),
            ms(*max),
            v.len()
        ),
        _ => "   no successful run".into(),
    }
}

fn row(name: &str, v: &[Duration]) {
    println!("  {name:<37} {}", stats(v));
}

fn gap_case(advert_ms: u32, how: How, runs: usize, opts: &Opts, keepalived: bool) {
    let bound = master_down(advert_ms);
    println!(
        "\nadvert {advert_ms} ms, {}, {runs} runs; Master_Down_Interval {:.1} ms",
        how.label(),
        ms(bound)
    );
    let (mut gaps, mut served, mut vip, mut handback) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut steady = Vec::new();
    let (mut fresh, mut fresh_handback, mut fresh_move) = (Vec::new(), Vec::new(), Vec::new());
    let mut fresh_takeover = Vec::new();
    let mut lost = 0;
    let mut notes = Vec::new();
    let mut pair = None;
    for i in 0..runs {
        if pair.is_none() {
            match Pair::start(advert_ms, opts.switches) {
                Ok(p) => pair = Some(p),
                Err(e) => {
                    notes.push(format!("run {i}: {e}"));
                    continue;
                }
            }
        }
        let p = pair.as_mut().expect("a pair");
        let tag = format!("{advert_ms}{}{i}", if how == How::Crash { "c" } else { "g" });
        match round(p, how, i as f64 / runs as f64, advert_ms, opts.probers, &tag) {
            Ok(r) => {
                if std::env::var_os("FAILOVER_BENCH_KEEP_LOGS").is_some() {
                    println!("  run {i}: logs kept in {}", p.keep_logs());
                }
                if opts.verbose {
                    println!("  run {i}: {}", r.describe());
                } else {
                    println!(
                        "  run {i}: fresh-connect gap {} ({} across the VIP move); handback {} ({} across the VIP move)",
                        fresh_text(&r.failover),
                        r.fresh_at_takeover
                            .map_or("nothing".to_string(), |g| format!("{:.1} ms", ms(g))),
                        fresh_text(&r.handback),
                        r.fresh_at_move
                            .map_or("nothing".to_string(), |g| format!("{:.1} ms", ms(g)))
                    );
                }
                fresh.extend(r.failover.fresh.map(|(gap, _)| gap));
                fresh_handback.extend(r.handback.fresh.map(|(gap, _)| gap));
                fresh_move.extend(r.fresh_at_move);
                fresh_takeover.extend(r.fresh_at_takeover);
                gaps.push(r.failover.gap);
                served.push(r.failover.served_again);
                steady.push(r.failover.steady);
                vip.extend(r.vip_added);
                handback.push(r.handback.gap);
                lost += r.lost();
                notes.extend(r.notes.iter().map(|n| format!("run {i}: {n}")));
            }
            Err(e) => {
                notes.push(format!("run {i}: {e}\n    logs kept in {}", p.keep_logs()));
                pair = None; // a fresh lab for the next run
            }
        }
    }
    drop(pair);
    let raw = |which| -> Vec<Duration> {
        (0..runs)
            .filter_map(|i| raw_once(which, advert_ms, how, i as f64 / runs as f64))
            .collect()
    };
    let vrrp_alone = raw(Raw::Vrrp);
    let kad = if keepalived {
        raw(Raw::Keepalived)
    } else {
        Vec::new()
    };
    println!("  {:<37} {:>9} {:>9} {:>9}", "(ms)", "median", "min", "max");
    row("vipool client gap", &gaps);
    row("vipool longest gap ended after", &served);
    row("vipool last gap >= 20 ms ended after", &steady);
    row("vipool VIP on backup after", &vip);
    row("vipool vrrp speaker alone, VIP move", &vrrp_alone);
    if keepalived {
        row("keepalived VIP move", &kad);
    } else {
        println!(
            "  {:<37}    skipped: keepalived is not installed",
            "keepalived VIP move"
        );
    }
    row("handback gap (restarted primary)", &handback);
    row("fresh-connect gap", &fresh);
    row("  of it across the VIP move", &fresh_takeover);
    row("fresh-connect handback gap", &fresh_handback);
    row("  of it across the VIP move", &fresh_move);
    let fresh_goal = match how {
        How::Crash => bound + Duration::from_millis(100),
        How::Graceful => Duration::from_millis(50),
    };
    let fresh_goal_name = match how {
        How::Crash => "Master_Down_Interval + 100 ms",
        How::Graceful => "50 ms",
    };
    goal(
        &format!("fresh-connect gap <= {fresh_goal_name}"),
        &fresh,
        fresh_goal,
    );
    goal(
        "fresh-connect handback gap <= 50 ms",
        &fresh_handback,
        Duration::from_millis(50),
    );
    match (how, median(&gaps), gaps.iter().max()) {
        (How::Graceful, Some(med), Some(max)) => println!(
            "  goal graceful gap < 50 ms: median {:.1} ms, max {:.1} ms: {}",
            ms(med),
            ms(*max),
            if *max < Duration::from_millis(50) {
                "met"
            } else if med < Duration::from_millis(50) {
                "median met, not every run"
            } else {
                "NOT met"
            }
        ),
        (How::Crash, Some(med), Some(max)) => {
            let ratio = |d: Duration| d.as_secs_f64() / bound.as_secs_f64();
            println!(
                "  goal crash gap within 10% of Master_Down_Interval: median {:.2}x, max {:.2}x: {}",
                ratio(med),
                ratio(*max),
                if ratio(*max) <= 1.1 {
                    "met"
                } else if ratio(med) <= 1.1 {
                    "median met, not every run"
                } else {
                    "NOT met"
                }
            );
        }
        _ => {}
    }
    if lost > 0 {
        println!("  acknowledged grants LOST in these runs: {lost}");
    }
    for n in notes {
        println!("  note: {n}");
    }
}

/// A goal beside the median and the worst run that it is measured by.
fn goal(name: &str, v: &[Duration], bound: Duration) {
    let (Some(med), Some(max)) = (median(v), v.iter().max()) else {
        println!("  goal {name}: no successful run");
        return;
    };
    println!(
        "  goal {name} ({:.1} ms): median {:.1} ms, worst {:.1} ms: {}",
        ms(bound),
        ms(med),
        ms(*max),
        if *max <= bound {
            "met"
        } else if med <= bound {
            "median met, not every run"
        } else {
            "NOT met"
        }
    );
}

/// The lost-grants loop; returns the exit code.
fn lost_loop(opts: &Opts) -> i32 {
    let advert_ms = 100;
    let n = opts.failovers;
    println!(
        "\nlost grants: {n} failovers at advert {advert_ms} ms, alternating graceful and crash, each followed by \
         the restarted primary's handback; {} switches, {} probers",
        opts.switches, opts.probers
    );
    let mut pair = match Pair::start(advert_ms, opts.switches) {
        Ok(p) => p,
        Err(e) => {
            println!("  the pair did not start: {e}");
            return 2;
        }
    };
    let started = Instant::now();
    let (mut lost, mut acked, mut uncertain, mut applied, mut done) = (0u64, 0u64, 0u64, 0u64, 0usize);
    let mut gaps: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut failed = Vec::new();
    let mut k = 0;
    // A failover that does not recover is reported (logs kept) and the loop
    // goes on with a fresh pair, a few times at most.
    while done < n && failed.len() < 5 {
        k += 1;
        let how = if k % 2 == 1 { How::Graceful } else { How::Crash };
        let phase = (k as f64 * 0.382) % 1.0;
        match round(&mut pair, how, phase, advert_ms, opts.probers, &format!("l{k}")) {
            Ok(r) => {
                if opts.verbose {
                    println!("  failover {k} ({how:?}): {}", r.describe());
                }
                done += 1;
                lost += r.lost();
                acked += r.failover.acked + r.handback.acked;
                uncertain += r.failover.uncertain + r.handback.uncertain;
                applied += r.failover.uncertain_applied + r.handback.uncertain_applied;
                let kind = if how == How::Crash { "crash" } else { "graceful" };
                gaps.entry(kind).or_default().push(r.failover.gap);
                gaps.entry("handback").or_default().push(r.handback.gap);
                let fresh_kind = if how == How::Crash {
                    "fresh-connect crash"
                } else {
                    "fresh-connect graceful"
                };
                gaps.entry(fresh_kind)
                    .or_default()
                    .extend(r.failover.fresh.map(|(gap, _)| gap));
                gaps.entry("fresh-connect handback")
                    .or_default()
                    .extend(r.handback.fresh.map(|(gap, _)| gap));
                for note in &r.notes {
                    println!("  failover {k}: {note}");
                }
                if done % 10 == 0 {
                    println!(
                        "  {done:>4}/{n} failovers, {:.0} s: lost so far {lost}",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            Err(e) => {
                let logs = pair.keep_logs();
                let what = format!("failover {k} ({how:?}) did not recover: {e}\n    logs kept in {logs}");
                println!("  {what}");
                failed.push(what);
                match Pair::start(advert_ms, opts.switches) {
                    Ok(p) => pair = p,
                    Err(e) => {
                        println!("  a fresh pair did not start: {e}");
                        break;
                    }
                }
            }
        }
    }
    drop(pair);
    println!(
        "  prober grants acknowledged {acked}, of unknown outcome {uncertain} (of which the table shows {applied} \
         applied); checked after each failover on the survivor and after each handback on the primary; \
         switch grants checked after each failover"
    );
    for (kind, v) in &gaps {
        println!("  {kind:<22} client gap (ms) median/min/max {}", stats(v));
    }
    println!("  {:.0} s in all", started.elapsed().as_secs_f64());
    if !failed.is_empty() {
        println!(
            "  failovers that did not recover (each replaced by a fresh pair, details above): {}",
            failed.len()
        );
    }
    println!("acknowledged grants lost over {done} failovers: {lost}");
    if lost > 0 {
        1
    } else {
        i32::from(!failed.is_empty()) * 2
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
    // `FAILOVER_BENCH_CLIENT_LOG=path`: the client library's debug lines
    // (each TCP attempt, each TLS handshake) of the fresh-connect prober,
    // timestamped, to set against the nodes' logs.
    if let Some(path) = std::env::var_os("FAILOVER_BENCH_CLIENT_LOG") {
        let file = std::fs::File::create(path).expect("FAILOVER_BENCH_CLIENT_LOG");
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("off,[fresh]=debug"))
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .init();
    }
    if !lab_available("failover_bench") {
        return;
    }
    let keepalived = tool_available("failover_bench", "keepalived", "keepalived");
    let mut code = 0;
    if opts.gap {
        println!(
            "failover of a vipool pair (priorities {PRIMARY_PRIORITY} -> {BACKUP_PRIORITY}, VRRPv3, vmac {}, {} \
             switches, {} probers, a fresh-connect prober with a {} ms connect timeout, a {} ms stagger and {} ms \
             per attempt); times from the failure, median/min/max",
            if VMAC.load(Ordering::Relaxed) { "on" } else { "off" },
            opts.switches,
            opts.probers,
            FRESH_CONNECT_MS.load(Ordering::Relaxed),
            FRESH_STAGGER_MS.load(Ordering::Relaxed),
            FRESH_DEADLINE_MS.load(Ordering::Relaxed)
        );
        for &advert_ms in &opts.adverts {
            let runs = opts.runs.unwrap_or(if advert_ms == 1000 { 3 } else { 5 });
            for &how in &opts.kinds {
                gap_case(advert_ms, how, runs, &opts, keepalived);
            }
        }
    }
    if opts.lost {
        code = lost_loop(&opts);
    }
    std::process::exit(code);
}
