//! A pair of real `vipool node` processes on a namespaced lab, and what
//! tests watch it with: simulated switches, a prober that draws licenses
//! through the VIP and measures the gaps, a monitor that samples both
//! nodes' status, and the nodes' logs.
//!
//! Hosts: 0 the primary (priority 200), 1 the backup (100), then the
//! extra hosts a test asks for (switches, an attacker, ...), then the
//! witness if there is one. Each node's log (stderr) goes to a file in the
//! lab's directory; a restart starts a new file.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vipool::client::{ClientError, Connection};
use vipool::proto::{NodeStatus, ServerError, SwitchReport, TableDump};
use vipool::table::{LicenseType, Pool};

use super::{in_netns, wait_for, Host, Lab, Speaker};

/// The pair's virtual address.
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// Where switches reach the license server (on the VIP).
pub const CLIENT_PORT: u16 = 4333;
/// Each node's operator endpoint (on its own address).
pub const OPERATOR_PORT: u16 = 4334;
/// The raft port of every member.
pub const RAFT_PORT: u16 = 4335;
/// Each node's metrics listener (on its own address), with `PairOptions::metrics`.
pub const METRICS_PORT: u16 = 9464;
/// The cluster id in every member's configuration.
pub const CLUSTER_ID: u64 = 7;
/// The licenses each server's `license.keys` installs.
pub const SERVER_AP: u32 = 100_000;
/// Generous: the lab shares two cores with compilers.
pub const WAIT: Duration = Duration::from_secs(30);

/// The AP license type.
pub fn ap() -> LicenseType {
    LicenseType::new("AP")
}

/// The timers and options of a pair lab.
#[derive(Debug, Clone)]
pub struct PairOptions {
    /// VRRP advertisement interval.
    pub advert_ms: u64,
    /// VRRP virtual router id.
    pub vrid: u8,
    /// One raft tick.
    pub tick_ms: u64,
    /// Raft election timeout in ticks.
    pub election_ticks: usize,
    /// Raft heartbeat interval in ticks.
    pub heartbeat_ticks: usize,
    /// The virtual MAC on a macvlan (`vrrp.vmac`).
    pub vmac: bool,
    /// Adverts unicast to the other server (`vrrp.unicast_peers`).
    pub unicast: bool,
    /// A vote-only witness on the last host.
    pub witness: bool,
    /// Hosts beyond the two servers (and the witness).
    pub extra_hosts: usize,
    /// `license.heartbeat_interval_ms`: three of them without a word and
    /// a client's used licenses return to the pool.
    pub heartbeat_interval_ms: u64,
    /// `license.sweep_interval_ms`.
    pub sweep_interval_ms: u64,
    /// The AP licenses each server's key file installs (the pool holds
    /// twice this once the pair is settled).
    pub server_ap: u32,
    /// `license.max_clients_per_source`: raised far above the default in
    /// the lab, where one host runs many simulated switches.
    pub max_clients_per_source: u32,
    /// `license.registrations_per_s_per_source`: raised as above.
    pub registrations_per_s_per_source: u32,
    /// More `[license]` lines, as written (timers and connection limits a
    /// test sets, e.g. `idle_timeout_ms = 3000`).
    pub license_extra: String,
    /// More `[license]` lines for the primary alone and the backup alone
    /// (settings a test makes differ between the servers).
    pub node_license_extra: [String; 2],
    /// A server that keeps the default operator endpoint, loopback only
    /// (127.0.0.1:4334): the lab's operator asks it from its own host.
    /// The others listen on their own address.
    pub loopback_operator: Option<Which>,
    /// `[metrics] listen` on each server's own address, port [`METRICS_PORT`].
    pub metrics: bool,
    /// A `[notify]` section whose every script is [`NOTIFY_RECORDER`],
    /// appending to `NAME-notify.log` in the lab's directory (see
    /// [`Node::notified`]).
    pub notify: bool,
    /// A second interface on the primary, `uplink0`, a veth whose other
    /// end, [`UPLINK_PEER`], is in the switch namespace: taking that end
    /// down takes the primary's carrier away, as a pulled uplink cable.
    pub uplink: bool,
    /// More top-level lines for the primary alone and the backup alone,
    /// appended to their files (e.g. `[[track.interface]]` tables).
    pub node_extra: [String; 2],
}

/// The switch namespace's end of the primary's `uplink0` (see `PairOptions::uplink`).
pub const UPLINK_PEER: &str = "upl0";

/// The lab's notify script: one line per run, `ARGC ARGS...|` then
/// `VIPOOL_STATE|VIPOOL_NODE|VIPOOL_VIP|VIPOOL_PRIORITY|VIPOOL_REASON`.
pub const NOTIFY_RECORDER: &str = r#"#!/bin/sh
echo "$# $*|$VIPOOL_STATE|$VIPOOL_NODE|$VIPOOL_VIP|$VIPOOL_PRIORITY|$VIPOOL_REASON" >> "$(dirname "$0")/$3-notify.log"
"#;

impl Default for PairOptions {
    /// The shipped configuration's shape with lab timers: adverts every
    /// 400 ms (Master_Down_Interval 1.44 s for the backup), raft ticks of
    /// 50 ms (two election timeouts, 1 s, stay below it as `check-config`
    /// requires), slow enough that two shared cores cause no spurious
    /// election; one extra host for the switches.
    fn default() -> Self {
        PairOptions {
            advert_ms: 400,
            vrid: 51,
            tick_ms: 50,
            election_ticks: 10,
            heartbeat_ticks: 2,
            vmac: false,
            unicast: false,
            witness: false,
            extra_hosts: 1,
            heartbeat_interval_ms: 60_000,
            sweep_interval_ms: 10_000,
            server_ap: SERVER_AP,
            max_clients_per_source: 20_000,
            registrations_per_s_per_source: 20_000,
            license_extra: String::new(),
            node_license_extra: Default::default(),
            loopback_operator: None,
            metrics: false,
            notify: false,
            uplink: false,
            node_extra: Default::default(),
        }
    }
}

impl PairOptions {
    /// The advertisement interval.
    pub fn advert(&self) -> Duration {
        Duration::from_millis(self.advert_ms)
    }

    /// RFC 9568 §6.1: Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256.
    pub fn skew(&self, priority: u8) -> Duration {
        self.advert() * (256 - u32::from(priority)) / 256
    }

    /// Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time, for a
    /// backup of `priority`: how long a master may be silent before it
    /// takes over.
    pub fn master_down(&self, priority: u8) -> Duration {
        self.advert() * 3 + self.skew(priority)
    }

    /// Raft's election timeout.
    pub fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.tick_ms) * u32::try_from(self.election_ticks).unwrap_or(u32::MAX)
    }
}

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Host 0, priority 200, raft id 1.
    Primary,
    /// Host 1, priority 100, raft id 2.
    Backup,
}

/// One server of the pair: its host, configuration, process and logs.
#[derive(Debug)]
pub struct Node {
    /// Its name in the configuration and its certificate.
    pub name: &'static str,
    /// Its raft id.
    pub id: u64,
    /// Its configured VRRP priority.
    pub priority: u8,
    /// Its host.
    pub host: Host,
    /// Its configuration file.
    pub config: PathBuf,
    /// The running (or last) process.
    pub process: Speaker,
    /// Its log files, one per start.
    pub logs: Vec<PathBuf>,
}

impl Node {
    /// Its own address.
    pub fn addr(&self) -> Ipv4Addr {
        self.host.addr
    }

    /// Everything it logged, over all its starts.
    pub fn log(&self) -> String {
        self.logs
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("")
    }

    /// Lines of its log containing `what`.
    pub fn log_lines(&self, what: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(what))
            .map(str::to_owned)
            .collect()
    }

    /// Lines of its current run's log (since its last start) containing `what`.
    pub fn run_log_lines(&self, what: &str) -> Vec<String> {
        let log = self
            .logs
            .last()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default());
        log.unwrap_or_default()
            .lines()
            .filter(|l| l.contains(what))
            .map(str::to_owned)
            .collect()
    }

    /// Sends a signal to the running process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        self.process.signal(sig);
    }

    /// The lines its notify scripts recorded (with `PairOptions::notify`).
    pub fn notified(&self) -> Vec<String> {
        let log = self.config.with_file_name(format!("{}-notify.log", self.name));
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// A pair lab: the hosts and both servers.
#[derive(Debug)]
pub struct PairLab {
    /// The lab (dropping it kills everything and removes the namespaces).
    pub lab: Lab,
    /// The timers it runs with.
    pub opts: PairOptions,
    /// Host 0.
    pub primary: Node,
    /// Host 1.
    pub backup: Node,
    /// The witness's process, if any.
    pub witness: Option<Speaker>,
}

/// The `[tls]` section of member `name` (the lab's PKI).
fn tls_section(lab: &Lab, name: &str) -> String {
    lab.tls_section(name)
}

fn node_config(
    lab: &Lab,
    opts: &PairOptions,
    me: (&Host, u64, &str, u8),
    peers: &[(u64, &str, Ipv4Addr)],
) -> PathBuf {
    let (host, id, name, priority) = me;
    let limits = (opts.max_clients_per_source, opts.registrations_per_s_per_source);
    let license = lab.server_license_with(name, opts.server_ap, limits);
    let which = if id == 1 { Which::Primary } else { Which::Backup };
    // Without the line the node keeps its default: loopback only.
    let operator_listen = if opts.loopback_operator == Some(which) {
        String::new()
    } else {
        format!("operator_listen = \"{}:{OPERATOR_PORT}\"", host.addr)
    };
    let list: Vec<String> = peers
        .iter()
        .map(|(id, name, addr)| {
            let role = if *name == "witness" { "witness" } else { "server" };
            format!("{{ id = {id}, name = \"{name}\", address = \"{addr}:{RAFT_PORT}\", role = \"{role}\" }}")
        })
        .collect();
    let unicast = if opts.unicast {
        let other: Vec<String> = peers
            .iter()
            .filter(|(i, n, _)| *i != id && *n != "witness")
            .map(|(_, _, a)| format!("\"{a}\""))
            .collect();
        format!("unicast_peers = [{}]\n", other.join(", "))
    } else {
        String::new()
    };
    let text = format!(
        r#"
[node]
name = "{name}"
id = {id}
cluster_id = {CLUSTER_ID}
data_dir = "{data}"
{serial}

[vrrp]
interface = "eth0"
vrid = {vrid}
priority = {priority}
vips = ["{VIP}/24"]
advert_interval_ms = {advert}
pair_handoff = true
vmac = {vmac}
{unicast}
[cluster]
peers = [{list}]
tick_ms = {tick}
election_ticks = {election}
heartbeat_ticks = {heartbeat}
request_timeout_ms = 2000

[license]
client_port = {CLIENT_PORT}
{operator_listen}
{license_lines}
heartbeat_interval_ms = {hb}
sweep_interval_ms = {sweep}
{license_extra}
{node_license_extra}
{metrics}
{notify}
{tls}
{node_extra}"#,
        data = lab.dir().join(format!("{name}-data")).display(),
        vrid = opts.vrid,
        advert = opts.advert_ms,
        vmac = opts.vmac,
        list = list.join(", "),
        tick = opts.tick_ms,
        election = opts.election_ticks,
        heartbeat = opts.heartbeat_ticks,
        hb = opts.heartbeat_interval_ms,
        license_extra = opts.license_extra,
        node_license_extra = opts.node_license_extra[usize::from(which == Which::Backup)],
        sweep = opts.sweep_interval_ms,
        tls = tls_section(lab, name),
        metrics = if opts.metrics {
            format!("[metrics]\nlisten = \"{}:{METRICS_PORT}\"\n", host.addr)
        } else {
            String::new()
        },
        notify = if opts.notify {
            let script = lab.dir().join("notify.sh");
            std::fs::write(&script, NOTIFY_RECORDER).expect("write the notify script");
            std::fs::set_permissions(
                &script,
                <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
            )
            .expect("chmod the notify script");
            let s = script.display();
            format!(
                "[notify]\nmaster = \"{s}\"\nbackup = \"{s}\"\nfault = \"{s}\"\nserving = \"{s}\"\n\
                 stopped = \"{s}\"\ntimeout_ms = 5000\n"
            )
        } else {
            String::new()
        },
        serial = license.serial,
        license_lines = license.lines,
        node_extra = opts.node_extra[usize::from(which == Which::Backup)],
    );
    let path = lab.dir().join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write node config");
    path
}

impl PairLab {
    /// Builds the lab and starts both servers (and the witness).
    pub fn start(opts: PairOptions) -> PairLab {
        let n = 2 + opts.extra_hosts + usize::from(opts.witness);
        let mut lab = Lab::new(n);
        let (a, b) = (lab.hosts[0].clone(), lab.hosts[1].clone());
        if opts.uplink {
            super::sh(&[
                "ip",
                "-n",
                &lab.switch,
                "link",
                "add",
                UPLINK_PEER,
                "type",
                "veth",
                "peer",
                "name",
                "uplink0",
                "netns",
                &a.ns,
            ]);
            super::sh(&["ip", "-n", &lab.switch, "link", "set", UPLINK_PEER, "up"]);
            super::sh(&["ip", "-n", &a.ns, "link", "set", "uplink0", "up"]);
        }
        let mut peers = vec![(1, "primary", a.addr), (2, "backup", b.addr)];
        let w = opts.witness.then(|| lab.hosts[n - 1].clone());
        if let Some(w) = &w {
            peers.push((3, "witness", w.addr));
        }
        let ca = node_config(&lab, &opts, (&a, 1, "primary", 200), &peers);
        let cb = node_config(&lab, &opts, (&b, 2, "backup", 100), &peers);
        let witness = w.map(|w| {
            // The witness's file: the same [node] and [cluster], nothing else.
            let text = std::fs::read_to_string(&ca).unwrap();
            let cluster = &text[text.find("[cluster]").unwrap()..text.find("[license]").unwrap()];
            let cw = lab.dir().join("witness.toml");
            std::fs::write(
                &cw,
                format!(
                    "[node]\nname = \"witness\"\nid = 3\ncluster_id = {CLUSTER_ID}\ndata_dir = \"{}\"\n\n{cluster}\n{}\n\
                     [witness]\noperator_listen = \"{}:{OPERATOR_PORT}\"\n",
                    lab.dir().join("witness-data").display(),
                    tls_section(&lab, "witness"),
                    w.addr
                ),
            )
            .unwrap();
            let log = lab.dir().join("witness.log");
            super::init_member(cw.to_str().unwrap());
            lab.vipool_logged(&w, &["witness", "--config", cw.to_str().unwrap()], &log)
        });
        let mut start = |host: &Host, name: &'static str, id, priority, config: PathBuf| {
            let log = lab.dir().join(format!("{name}.log"));
            super::init_member(config.to_str().unwrap());
            let process = lab.vipool_logged(host, &["node", "--config", config.to_str().unwrap()], &log);
            Node {
                name,
                id,
                priority,
                host: host.clone(),
                config,
                process,
                logs: vec![log],
            }
        };
        let primary = start(&a, "primary", 1, 200, ca);
        let backup = start(&b, "backup", 2, 100, cb);
        PairLab {
            lab,
            opts,
            primary,
            backup,
            witness,
        }
    }

    /// Host `i` (0 primary, 1 backup, 2.. the extra hosts).
    pub fn host(&self, i: usize) -> Host {
        self.lab.hosts[i].clone()
    }

    /// The server `which`.
    pub fn node(&self, which: Which) -> &Node {
        match which {
            Which::Primary => &self.primary,
            Which::Backup => &self.backup,
        }
    }

    /// Starts server `which` again with its configuration and data (its
    /// previous process must have ended); its log goes to a new file.
    pub fn restart(&mut self, which: Which) {
        let node = match which {
            Which::Primary => &mut self.primary,
            Which::Backup => &mut self.backup,
        };
        let log = self
            .lab
            .dir()
            .join(format!("{}-{}.log", node.name, node.logs.len()));
        node.process = self.lab.vipool_logged(
            &node.host,
            &["node", "--config", node.config.to_str().unwrap()],
            &log,
        );
        node.logs.push(log);
    }

    /// Node `which`'s status and table through its operator endpoint, asked from `from`
    /// (from the node's own host if its endpoint is on loopback).
    pub fn show(&self, from: &Host, which: Which) -> Result<TableDump, String> {
        let (host, addr) = self.operator_endpoint(from, which);
        super::operator_show(&host, addr, OPERATOR_PORT)
    }

    /// Where the lab's operator asks node `which` from, and at which
    /// address: from `from` at the node's address, or from the node's own
    /// host at 127.0.0.1 if its endpoint stays on loopback.
    pub fn operator_endpoint(&self, from: &Host, which: Which) -> (Host, Ipv4Addr) {
        if self.opts.loopback_operator == Some(which) {
            (self.node(which).host.clone(), Ipv4Addr::LOCALHOST)
        } else {
            (from.clone(), self.node(which).addr())
        }
    }

    /// Waits until the primary serves, the backup follows as VRRP backup,
    /// and both servers' keys are pooled on both: the pair is settled.
    /// Panics with both logs if it does not settle within `WAIT`s.
    pub fn wait_settled(&self, from: &Host) {
        let pooled = |d: &TableDump| {
            d.state.server_keys.keys().collect::<Vec<_>>() == ["backup-AP", "primary-AP"]
                && d.pool
                    .get(&ap())
                    .is_some_and(|e| e.total == 2 * u64::from(self.opts.server_ap))
        };
        let settled = wait_for(2 * WAIT, || {
            let p = self.show(from, Which::Primary);
            let b = self.show(from, Which::Backup);
            match (p, b) {
                (Ok(p), Ok(b)) => {
                    p.status.serving
                        && p.status.vrrp_state == "Master"
                        && b.status.raft_role == "Follower"
                        && b.status.vrrp_state == "Backup"
                        && pooled(&p)
                        && pooled(&b)
                }
                _ => false,
            }
        });
        assert!(
            settled,
            "the pair never settled: primary {:?}\nbackup {:?}\nprimary's log:\n{}\nbackup's log:\n{}",
            self.show(from, Which::Primary).map(|d| d.status),
            self.show(from, Which::Backup).map(|d| d.status),
            self.primary.log(),
            self.backup.log()
        );
    }

    /// Starts `count` simulated switches (`sw-0001`, ...) on `host`, each
    /// holding `aps` AP licenses through the VIP and sending its heartbeat
    /// every `heartbeat_ms`, and waits until all hold their grants.
    pub fn switches(&mut self, host: &Host, count: usize, aps: u32, heartbeat_ms: u64) -> Speaker {
        let server = format!("{VIP}:{CLIENT_PORT}");
        let pki = self.lab.pki_dir();
        let (count_s, aps_s, hb) = (count.to_string(), aps.to_string(), heartbeat_ms.to_string());
        let log = self.lab.dir().join("switches.log");
        let switches = self.lab.vipool_logged(
            host,
            &[
                "client",
                "--pki",
                &pki,
                "--server",
                &server,
                "--id",
                "sw",
                "--count",
                &count_s,
                "--aps",
                &aps_s,
                "--heartbeat-interval-ms",
                &hb,
                "--json",
            ],
            &log,
        );
        assert!(
            wait_for(WAIT, || switch_grants(&switches)
                .values()
                .filter(|n| **n == i64::from(aps))
                .count()
                == count),
            "the switches did not all get their grants: {:?}",
            switch_grants(&switches)
        );
        switches
    }
}

impl PairLab {
    /// Takes the switch's end of the primary's uplink down or up (see
    /// [`PairOptions::uplink`]).
    pub fn set_uplink(&self, up: bool) {
        super::sh(&[
            "ip",
            "-n",
            &self.lab.switch,
            "link",
            "set",
            UPLINK_PEER,
            if up { "up" } else { "down" },
        ]);
    }

    /// The last `n` lines of both servers' logs.
    pub fn log_tails(&self, n: usize) -> String {
        let tail = |node: &Node| {
            let log = node.log();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        format!(
            "--- the primary's log (last {n} lines):\n{}\n--- the backup's log (last {n} lines):\n{}",
            tail(&self.primary),
            tail(&self.backup)
        )
    }
}

/// The status and table of the node at `node` (its operator endpoint),
/// asked from inside `from`'s namespace.
pub fn show(from: &Host, node: Ipv4Addr) -> Result<TableDump, String> {
    super::operator_show(from, node, OPERATOR_PORT)
}

/// What the node says it refused, by cause (`NodeStatus::refused`).
pub fn refused(status: &NodeStatus) -> BTreeMap<String, u64> {
    status.refused.clone()
}

/// One refusal counter of `status` (0 when never seen).
pub fn refused_of(status: &NodeStatus, cause: &str) -> u64 {
    refused(status).get(cause).copied().unwrap_or(0)
}

/// The grants each switch saw acknowledged, net of releases, from `vipool client --json` events.
pub fn switch_grants(switches: &Speaker) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for e in switches.events() {
        let v = &e.value;
        let sign = match v["event"].as_str() {
            Some("granted") => 1,
            Some("released") => -1,
            _ => continue,
        };
        if v["license_type"] == "AP" {
            *out.entry(v["id"].as_str().unwrap().to_string()).or_insert(0) +=
                sign * v["count"].as_i64().unwrap();
        }
    }
    out
}

/// Registrations per switch after `at`, from `vipool client --json` events.
pub fn registrations_after(switches: &Speaker, at: Instant) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in switches.events() {
        if e.value["event"] == "registered" && e.at > at {
            *out.entry(e.value["id"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    out
}

/// What the prober saw.
#[derive(Debug, Default, Clone)]
pub struct Probe {
    /// The client id it registered.
    pub id: String,
    /// Acquires of one AP the VIP acknowledged.
    pub acked: u64,
    /// Requests whose outcome is unknown (sent, then the connection broke
    /// or no answer came in time): each may or may not have been applied.
    pub uncertain: u64,
    /// Refusals that changed nothing (not the license server).
    pub refused: u64,
    /// Connections or registrations that did not succeed.
    pub unreachable: u64,
    /// Every failure: when (since the prober started) and why.
    pub failures: Vec<(Duration, String)>,
    /// When each acknowledgement came.
    pub acks: Vec<Instant>,
    /// When the prober started and stopped.
    pub started: Option<Instant>,
    /// When it stopped.
    pub stopped: Option<Instant>,
}

impl Probe {
    /// Probes that failed, of any kind.
    pub fn failed(&self) -> u64 {
        self.uncertain + self.refused + self.unreachable
    }

    /// Failures between `from` and `to`.
    pub fn failures_between(&self, from: Instant, to: Instant) -> Vec<(Duration, String)> {
        let start = self.started.unwrap_or(from);
        self.failures
            .iter()
            .filter(|(at, _)| {
                let at = start + *at;
                at >= from && at <= to
            })
            .cloned()
            .collect()
    }

    /// The longest time without an acknowledgement within `[from, to]`
    /// (a pause that began before `from` or ended after `to` counts only
    /// for its part inside; so do the time before the first and after the
    /// last acknowledgement), and when that pause ended.
    pub fn max_gap_between(&self, from: Instant, to: Instant) -> (Duration, Instant) {
        let mut edges = Vec::with_capacity(self.acks.len() + 2);
        edges.push(self.started.unwrap_or(from));
        edges.extend(self.acks.iter().copied());
        edges.push(self.stopped.unwrap_or(to));
        let mut best = (Duration::ZERO, from);
        for w in edges.windows(2) {
            let (a, b) = (w[0].max(from), w[1].min(to));
            if b > a && b - a > best.0 {
                best = (b - a, w[1]);
            }
        }
        best
    }

    /// The longest time without an acknowledgement of the whole run.
    pub fn max_gap(&self) -> Duration {
        let (from, to) = (
            self.started.unwrap_or_else(Instant::now),
            self.stopped.unwrap_or_else(Instant::now),
        );
        self.max_gap_between(from, to).0
    }
}

/// A prober running: draws one AP at a time through the VIP until
/// stopped (by [`Prober::finish`], or when dropped).
pub struct Prober {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<Probe>>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Prober {
    /// Starts client `id` on `host`: it registers through the VIP, then
    /// acquires one AP after another, `pace` apart, each waiting up to
    /// `timeout` for its answer (then it counts as uncertain and the prober
    /// reconnects: a crashed server sends no reset).
    pub fn start(host: &Host, id: &'static str, timeout: Duration, pace: Duration) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let (stop2, acked2) = (stop.clone(), acked.clone());
        let tls = super::switch_tls(host, id, "PROBE");
        let handle = in_netns(host, move || {
            super::runtime().block_on(probe_loop(id, tls, timeout, pace, stop2, acked2))
        });
        Prober {
            stop,
            acked,
            handle: Some(handle),
        }
    }

    /// Acknowledgements so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits until `n` more acknowledgements than now came (false after `WAIT`).
    pub fn wait_acks(&self, n: u64) -> bool {
        let target = self.acked() + n;
        wait_for(WAIT, || self.acked() >= target)
    }

    /// Stops it and returns what it saw.
    pub fn finish(mut self) -> Probe {
        self.stop.store(true, Ordering::SeqCst);
        let handle = self.handle.take().expect("running");
        handle.join().expect("prober thread")
    }
}

async fn probe_loop(
    id: &'static str,
    tls: vipool::tls::ClientTls,
    timeout: Duration,
    pace: Duration,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> Probe {
    let t0 = Instant::now();
    let mut probe = Probe {
        id: id.to_owned(),
        started: Some(t0),
        ..Probe::default()
    };
    let mut conn: Option<Connection> = None;
    let mut registered = false;
    let fail = |probe: &mut Probe, why: String| probe.failures.push((t0.elapsed(), why));
    while !stop.load(Ordering::SeqCst) {
        let mut c = match conn.take() {
            Some(c) => c,
            None => {
                match tokio::time::timeout(timeout, Connection::connect((VIP, CLIENT_PORT), &tls)).await {
                    Ok(Ok(c)) => c,
                    other => {
                        probe.unreachable += 1;
                        let why = match other {
                            Ok(Err(e)) => format!("connect: {e}"),
                            _ => format!("connect: no answer within {timeout:?}"),
                        };
                        fail(&mut probe, why);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                }
            }
        };
        if !registered {
            match tokio::time::timeout(timeout, c.register(id, "PROBE", "1", SwitchReport::default())).await {
                Ok(Ok(_)) => {
                    registered = true;
                    conn = Some(c);
                }
                other => {
                    probe.unreachable += 1;
                    let why = match other {
                        Ok(Err(e)) => format!("register: {e}"),
                        _ => format!("register: no answer within {timeout:?}"),
                    };
                    fail(&mut probe, why);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            continue;
        }
        match tokio::time::timeout(timeout, c.acquire(id, &ap(), 1)).await {
            Ok(Ok(_)) => {
                probe.acked += 1;
                probe.acks.push(Instant::now());
                acked.fetch_add(1, Ordering::SeqCst);
                conn = Some(c);
                tokio::time::sleep(pace).await;
            }
            Ok(Err(ClientError::Server(ServerError::NotLicenseServer { .. }))) => {
                // Refused before anything was proposed: changed nothing.
                probe.refused += 1;
                fail(&mut probe, "not the license server".into());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(Err(ClientError::Server(ServerError::Refused(e)))) => {
                panic!("the table refused the prober: {e}");
            }
            // Sent, but no acknowledgement: maybe applied.
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {timeout:?}"),
                };
                probe.uncertain += 1;
                fail(&mut probe, format!("acquire: {why}"));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    probe.stopped = Some(Instant::now());
    probe
}

/// What one status sample of one node said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// Which node.
    pub node: Which,
    /// Its status, or why it could not be had.
    pub status: Result<NodeStatus, String>,
    /// The server keys' ids in its table.
    pub server_keys: Vec<String>,
    /// The clients' ids in its table.
    pub clients: Vec<String>,
    /// Its pool (empty when it did not answer).
    pub pool: Pool,
}

/// Samples both servers' status every `period` from a host, until
/// stopped (by [`Monitor::finish`], or when dropped).
pub struct Monitor {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Monitor {
    /// Starts sampling the pair's nodes from `from` (a node whose operator
    /// endpoint is on loopback from its own host; see
    /// [`PairLab::operator_endpoint`]), one thread per host asked from.
    pub fn start(pair: &PairLab, from: &Host, period: Duration) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let mut by_host: Vec<(Host, Vec<(Which, Ipv4Addr)>)> = Vec::new();
        for which in [Which::Primary, Which::Backup] {
            let (host, addr) = pair.operator_endpoint(from, which);
            match by_host.iter_mut().find(|(h, _)| h.ns == host.ns) {
                Some((_, nodes)) => nodes.push((which, addr)),
                None => by_host.push((host, vec![(which, addr)])),
            }
        }
        let handles = by_host
            .into_iter()
            .map(|(host, nodes)| {
                let (stop, sink) = (stop.clone(), samples.clone());
                let tls = super::operator_tls(&host);
                in_netns(&host, move || {
                    super::runtime().block_on(sample_loop(nodes, tls, period, stop, sink))
                })
            })
            .collect();
        Monitor {
            stop,
            samples,
            handles,
        }
    }

    /// The samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Stops it and returns every sample.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        for handle in self.handles.drain(..) {
            handle.join().expect("monitor thread");
        }
        self.samples()
    }
}

async fn sample_loop(
    nodes: Vec<(Which, Ipv4Addr)>,
    tls: vipool::tls::ClientTls,
    period: Duration,
    stop: Arc<AtomicBool>,
    sink: Arc<Mutex<Vec<Sample>>>,
) {
    let mut conns: Vec<Option<Connection>> = nodes.iter().map(|_| None).collect();
    while !stop.load(Ordering::SeqCst) {
        for (i, (which, addr)) in nodes.iter().enumerate() {
            let got = sample(&mut conns[i], *addr, &tls).await;
            let (status, server_keys, clients, pool) = match got {
                Ok(d) => (
                    Ok(d.status),
                    d.state.server_keys.keys().cloned().collect(),
                    d.state.clients.keys().cloned().collect(),
                    d.pool,
                ),
                Err(e) => (Err(e), Vec::new(), Vec::new(), Pool::default()),
            };
            sink.lock().unwrap().push(Sample {
                at: Instant::now(),
                node: *which,
                status,
                server_keys,
                clients,
                pool,
            });
        }
        tokio::time::sleep(period).await;
    }
}

async fn sample(
    conn: &mut Option<Connection>,
    addr: Ipv4Addr,
    tls: &vipool::tls::ClientTls,
) -> Result<TableDump, String> {
    let limit = Duration::from_secs(2);
    if conn.is_none() {
        let c = tokio::time::timeout(limit, Connection::connect((addr, OPERATOR_PORT), tls))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        *conn = Some(c);
    }
    let c = conn.as_mut().expect("connected");
    let r = tokio::time::timeout(limit, c.show())
        .await
        .map_err(|_| "show timed out".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    if r.is_err() {
        *conn = None;
    }
    r
}

/// Problems a test found, reported all together at the end, so that a run
/// against a vulnerable build says everything the attack did, not only the
/// first thing.
#[derive(Debug)]
pub struct Findings {
    test: String,
    problems: Vec<String>,
}

impl Findings {
    /// No problems yet.
    pub fn new(test: &str) -> Findings {
        Findings {
            test: test.to_owned(),
            problems: Vec::new(),
        }
    }

    /// Records `what` as a problem unless `ok`.
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let what = what();
            eprintln!("{}: PROBLEM: {what}", self.test);
            self.problems.push(what);
        }
    }

    /// Whether nothing was found so far.
    pub fn clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Panics listing every problem, if any, after printing `context()`
    /// (the nodes' logs, say).
    pub fn finish_with(self, context: impl FnOnce() -> String) {
        if !self.problems.is_empty() {
            eprintln!("{}: context of the problems:\n{}", self.test, context());
        }
        self.finish();
    }

    /// Panics listing every problem, if any.
    pub fn finish(self) {
        assert!(
            self.problems.is_empty(),
            "{}: {} problem(s):\n- {}",
            self.test,
            self.problems.len(),
            self.problems.join("\n- ")
        );
    }
}
