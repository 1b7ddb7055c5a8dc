//! The pair end to end: two `vipool node` processes on a namespaced
//! broadcast domain, simulated switches (`vipool client --json`) and a
//! prober drawing licenses through the VIP under continuous load, while
//! the primary is stopped (SIGTERM) or killed (SIGKILL and cut off).
//!
//! Each scenario checks SPEC S1 (one node serves), S2 (no acknowledged
//! grant lost: the prober counts what the VIP acknowledged and compares it
//! with the surviving table) and S3 (used never above total), and prints
//! its counts and the client-visible gap.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{in_netns, lab_available, wait_for, Host, Lab, Speaker};
use vipool::client::{ClientError, Connection};
use vipool::proto::{ServerError, SwitchReport, TableDump};
use vipool::table::LicenseType;

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const CLIENT_PORT: u16 = 4333;
const OPERATOR_PORT: u16 = 4334;
const RAFT_PORT: u16 = 4335;
const ADVERT_MS: u64 = 130;
/// Generous: the lab shares two cores with compilers.
const WAIT: Duration = Duration::from_secs(30);

fn node_config(
    lab: &Lab,
    host: &Host,
    id: u64,
    name: &str,
    priority: u8,
    peers: &[(u64, &str, Ipv4Addr)],
) -> String {
    let peers: Vec<String> = peers
        .iter()
        .map(|(id, name, addr)| {
            let role = if *name == "witness" { "witness" } else { "server" };
            format!("{{ id = {id}, name = \"{name}\", address = \"{addr}:{RAFT_PORT}\", role = \"{role}\" }}")
        })
        .collect();
    let data = lab.dir().join(format!("{name}-data"));
    let license = lab.server_license(name, 100_000);
    let text = format!(
        r#"
[node]
name = "{name}"
id = {id}
cluster_id = 7
data_dir = "{data}"
{serial}

[vrrp]
interface = "eth0"
vrid = 51
priority = {priority}
vips = ["{VIP}/24"]
advert_interval_ms = {ADVERT_MS}
pair_handoff = true
vmac = true

[cluster]
peers = [{peers}]
tick_ms = 20
election_ticks = 10
heartbeat_ticks = 2
request_timeout_ms = 2000

[license]
client_port = {CLIENT_PORT}
operator_listen = "{addr}:{OPERATOR_PORT}"
{license_lines}
heartbeat_interval_ms = 2000
sweep_interval_ms = 500

{tls}"#,
        data = data.display(),
        tls = lab.tls_section(name),
        serial = license.serial,
        license_lines = license.lines,
        peers = peers.join(", "),
        addr = host.addr,
    );
    let path = lab.dir().join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write node config");
    let path = path.to_string_lossy().into_owned();
    common::init_member(&path);
    path
}

struct Pair {
    lab: Lab,
    primary: Speaker,
    backup: Speaker,
}

/// Hosts: 0 primary (priority 200), 1 backup (100), 2 the switches' host.
fn start_pair() -> Pair {
    let mut lab = Lab::new(3);
    let (a, b) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    let peers = [(1, "primary", a.addr), (2, "backup", b.addr)];
    let ca = node_config(&lab, &a, 1, "primary", 200, &peers);
    let cb = node_config(&lab, &b, 2, "backup", 100, &peers);
    let primary = lab.vipool(&a, &["node", "--config", &ca]);
    let backup = lab.vipool(&b, &["node", "--config", &cb]);
    Pair { lab, primary, backup }
}

/// As [`start_pair`], plus a witness on host 3.
fn start_pair_with_witness() -> Pair {
    let mut lab = Lab::new(4);
    let (a, b, w) = (lab.hosts[0].clone(), lab.hosts[1].clone(), lab.hosts[3].clone());
    let peers = [
        (1, "primary", a.addr),
        (2, "backup", b.addr),
        (3, "witness", w.addr),
    ];
    let ca = node_config(&lab, &a, 1, "primary", 200, &peers);
    let cb = node_config(&lab, &b, 2, "backup", 100, &peers);
    // The witness's file: the same [node] and [cluster], nothing else.
    let text = std::fs::read_to_string(&ca).unwrap();
    let cluster = &text[text.find("[cluster]").unwrap()..text.find("[license]").unwrap()];
    let data = lab.dir().join("witness-data");
    let cw = lab.dir().join("witness.toml");
    std::fs::write(
        &cw,
        format!(
            "[node]\nname = \"witness\"\nid = 3\ncluster_id = 7\ndata_dir = \"{}\"\n\n{cluster}\n{}\n\
             [witness]\noperator_listen = \"{}:{OPERATOR_PORT}\"\n",
            data.display(),
            lab.tls_section("witness"),
            w.addr
        ),
    )
    .unwrap();
    common::init_member(cw.to_str().unwrap());
    let _witness = lab.vipool(&w, &["witness", "--config", cw.to_str().unwrap()]);
    let primary = lab.vipool(&a, &["node", "--config", &ca]);
    let backup = lab.vipool(&b, &["node", "--config", &cb]);
    Pair { lab, primary, backup }
}

/// The node's status and table through its operator endpoint, asked from `from`.
fn show(from: &Host, node: Ipv4Addr) -> Result<TableDump, String> {
    common::operator_show(from, node, OPERATOR_PORT)
}

fn serving(from: &Host, node: Ipv4Addr) -> bool {
    show(from, node).is_ok_and(|d| d.status.serving)
}

/// The node serves and its pool holds AP: a brand-new pair's VIP holder
/// records the trusted issuers before its keys can count, so its pool
/// fills a few commits after it starts serving, and a prober started
/// before would be refused for an empty pool.
fn serving_with_keys(from: &Host, node: Ipv4Addr) -> bool {
    show(from, node).is_ok_and(|d| d.status.serving && d.pool.get(&ap()).is_some_and(|e| e.total > 0))
}

fn ap() -> LicenseType {
    LicenseType::new("AP")
}

/// What the prober saw.
#[derive(Debug, Default)]
struct Probe {
    /// Acquires of one AP the VIP acknowledged.
    acked: u64,
    /// Requests whose outcome is unknown (connection lost or not committed
    /// after sending): each may or may not have been applied.
    uncertain: u64,
    /// Refusals that changed nothing (not the license server).
    refused: u64,
    /// Why each uncertain request failed, and when.
    uncertain_why: Vec<String>,
    /// Longest time without an acknowledgement in the whole run, and when it ended.
    max_gap: Duration,
    gap_ended: Option<Instant>,
    /// Acknowledgements after the failover began.
    acked_after: u64,
    /// The longest time without an acknowledgement that ended after the
    /// failure began: what a client saw of the failover.
    failover_gap: Duration,
}

/// Draws one AP at a time through the VIP as fast as the pair answers, until `stop`.
/// Each request waits this long for its answer, then counts as uncertain
/// and the prober reconnects: a crashed server sends no reset.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

fn prober(
    host: &Host,
    id: &'static str,
    failover: Arc<std::sync::Mutex<Option<Instant>>>,
    stop: Arc<AtomicBool>,
    after: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Probe> {
    let tls = common::switch_tls(host, id, "PROBE");
    in_netns(host, move || {
        common::runtime().block_on(async move {
            let mut probe = Probe::default();
            let mut conn: Option<Connection> = None;
            let mut registered = false;
            let mut last_ack = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                let mut c = match conn.take() {
                    Some(c) => c,
                    None => {
                        match tokio::time::timeout(
                            PROBE_TIMEOUT,
                            Connection::connect((VIP, CLIENT_PORT), &tls),
                        )
                        .await
                        {
                            Ok(Ok(c)) => c,
                            _ => {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                continue;
                            }
                        }
                    }
                };
                if !registered {
                    match tokio::time::timeout(
                        Duration::from_secs(3),
                        c.register(id, "PROBE", "1", SwitchReport::default()),
                    )
                    .await
                    {
                        Ok(Ok(_)) => {
                            registered = true;
                            last_ack = Instant::now();
                            conn = Some(c);
                        }
                        _ => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                    continue;
                }
                match tokio::time::timeout(PROBE_TIMEOUT, c.acquire(id, &ap(), 1)).await {
                    Ok(Ok(_)) => {
                        let now = Instant::now();
                        probe.acked += 1;
                        let gap = now - last_ack;
                        if gap > probe.max_gap {
                            probe.max_gap = gap;
                            probe.gap_ended = Some(now);
                        }
                        let failed_at = *failover.lock().unwrap();
                        if failed_at.is_some_and(|f| f < now) {
                            probe.failover_gap = probe.failover_gap.max(gap);
                            probe.acked_after += 1;
                            after.fetch_add(1, Ordering::SeqCst);
                        }
                        last_ack = now;
                        conn = Some(c);
                    }
                    Ok(Err(ClientError::Server(ServerError::NotLicenseServer { .. }))) => {
                        // Refused before anything was proposed: changed nothing.
                        probe.refused += 1;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Ok(Err(ClientError::Server(ServerError::Refused(e)))) => {
                        panic!("the table refused the prober: {e}");
                    }
                    // Sent, but no acknowledgement: maybe applied.
                    other => {
                        let why = match other {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no answer within {PROBE_TIMEOUT:?}"),
                        };
                        let at = failover
                            .lock()
                            .unwrap()
                            .map(|f| Instant::now().saturating_duration_since(f));
                        probe
                            .uncertain_why
                            .push(format!("{why} ({at:?} after the failure)"));
                        probe.uncertain += 1;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            }
            probe
        })
    })
}

/// The grants each switch saw acknowledged, net of releases, from `vipool client --json` events.
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
            *out.entry(v["id"].as_str().unwrap().to_string()).or_insert(0) +=
                sign * v["count"].as_i64().unwrap();
        }
    }
    out
}

fn registrations_after(switches: &Speaker, at: Instant) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in switches.events() {
        if e.value["event"] == "registered" && e.at > at {
            *out.entry(e.value["id"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Failure {
    Stop,
    Kill,
}

const SWITCHES: usize = 20;

fn failover(test: &str, how: Failure) {
    if !lab_available(test) {
        return;
    }
    let mut pair = start_pair();
    let client_host = pair.lab.hosts[2].clone();
    let (a, b) = (pair.lab.hosts[0].addr, pair.lab.hosts[1].addr);
    assert!(
        wait_for(WAIT, || serving(&client_host, a)),
        "the primary never served: {:?}",
        show(&client_host, a)
    );
    // The backup is in sync and not serving (S1).
    assert!(
        wait_for(WAIT, || show(&client_host, b).is_ok_and(|d| d.status.raft_role
            == "Follower"
            && d.status.vrrp_state == "Backup")),
        "the backup never settled: {:?}",
        show(&client_host, b)
    );

    let server = format!("{VIP}:{CLIENT_PORT}");
    let count = SWITCHES.to_string();
    let pki = pair.lab.pki_dir();
    let switches = pair.lab.vipool(
        &client_host,
        &[
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
        ],
    );
    assert!(
        wait_for(WAIT, || switch_grants(&switches)
            .values()
            .filter(|n| **n == 2)
            .count()
            == SWITCHES),
        "the switches did not all get their grants: {:?}",
        switch_grants(&switches)
    );
    let stop = Arc::new(AtomicBool::new(false));
    let failover_at = Arc::new(std::sync::Mutex::new(None));
    let acked_after = Arc::new(AtomicU64::new(0));
    let probe = prober(
        &client_host,
        "prober",
        failover_at.clone(),
        stop.clone(),
        acked_after.clone(),
    );
    std::thread::sleep(Duration::from_millis(500));

    let t0 = Instant::now();
    *failover_at.lock().unwrap() = Some(t0);
    match how {
        Failure::Stop => pair.primary.signal(nix::sys::signal::Signal::SIGTERM),
        Failure::Kill => {
            pair.primary.signal(nix::sys::signal::Signal::SIGKILL);
            // A crash takes the host off the link too (power loss): its
            // kernel would otherwise still answer for the VIP it held.
            let host = pair.lab.hosts[0].clone();
            pair.lab.set_port(&host, false);
        }
    }
    if how == Failure::Stop {
        assert_eq!(pair.primary.wait_exit(WAIT), Some(0), "graceful stop exits 0");
        println!("{test}: primary exited after {:?}", t0.elapsed());
    }
    assert!(
        wait_for(WAIT, || serving(&client_host, b)),
        "the backup never served: {:?}",
        show(&client_host, b)
    );
    println!("{test}: backup serving {:?} after the failure", t0.elapsed());
    // Load goes on through the VIP: the prober and every switch again.
    let acked_then = |p: &Arc<std::sync::Mutex<Option<Instant>>>| p.lock().unwrap().is_some();
    assert!(acked_then(&failover_at));
    assert!(
        wait_for(WAIT, || registrations_after(&switches, t0).len() == SWITCHES),
        "not every switch came back through the VIP: {:?}",
        registrations_after(&switches, t0)
    );
    // Keep the load on until the prober has been served for a while again.
    let served_again = wait_for(WAIT, || acked_after.load(Ordering::SeqCst) >= 50);
    stop.store(true, Ordering::SeqCst);
    let probe = probe.join().expect("prober");

    let dump = show(&client_host, b).expect("the survivor answers");
    let table_used = dump.state.clients["prober"].used_of(&ap()) as u64;
    println!(
        "{test}: prober acked {} ({} after the failure), uncertain {}, refused {}, table holds {}; \
         client-visible failover gap {:?}; longest gap of the run {:?} (ended {:?} after the failure)",
        probe.acked,
        probe.acked_after,
        probe.uncertain,
        probe.refused,
        table_used,
        probe.failover_gap,
        probe.max_gap,
        probe.gap_ended.map(|e| e.saturating_duration_since(t0)),
    );
    println!("{test}: uncertain: {:?}", probe.uncertain_why);
    // S2: every acknowledged grant is in the surviving table; at most the
    // requests of unknown outcome more.
    assert!(served_again, "the prober was not served again: {probe:?}");
    assert!(
        table_used >= probe.acked && table_used <= probe.acked + probe.uncertain,
        "acknowledged {} (+{} uncertain), the survivor's table holds {table_used}",
        probe.acked,
        probe.uncertain
    );
    // The switches' grants as acknowledged are what the survivor holds.
    for (id, granted) in switch_grants(&switches) {
        let used = dump.state.clients.get(&id).map_or(0, |c| c.used_of(&ap()));
        assert_eq!(i64::from(used), granted, "switch {id}");
    }
    // S3.
    let pool = &dump.pool[&ap()];
    assert!(
        pool.used <= pool.total,
        "used {} > total {}",
        pool.used,
        pool.total
    );
    // S1: the survivor is the only one answering.
    assert!(dump.status.serving && dump.status.vrrp_state == "Master" && dump.status.raft_role == "Leader");
    match how {
        Failure::Stop => {
            // The graceful handoff must not wait for a VRRP timeout.
            let master_down = Duration::from_millis(3 * ADVERT_MS);
            assert!(
                probe.max_gap < master_down + Duration::from_secs(2),
                "graceful gap {:?}",
                probe.max_gap
            );
        }
        Failure::Kill => {
            // Master_Down_Interval (3 adverts + skew) plus a generous margin
            // for raft's election timeout, the takeover and a loaded machine.
            let bound = Duration::from_millis(4 * ADVERT_MS) + Duration::from_secs(5);
            assert!(
                probe.max_gap < bound,
                "crash gap {:?} above {bound:?}",
                probe.max_gap
            );
        }
    }
    assert_eq!(
        pair.backup.wait_exit(Duration::ZERO),
        None,
        "the backup keeps running"
    );
}

#[test]
fn sigterm_of_the_primary_hands_over_without_losing_a_grant() {
    failover(
        "sigterm_of_the_primary_hands_over_without_losing_a_grant",
        Failure::Stop,
    );
}

#[test]
fn sigkill_of_the_primary_fails_over_within_the_bound() {
    failover(
        "sigkill_of_the_primary_fails_over_within_the_bound",
        Failure::Kill,
    );
}

/// SPEC 6: only the VIP answers license requests.
/// SPEC §2: the servers' keys add up in one pool (16 + 16 = 32), from the
/// start: the backup, which never held the VIP, has its `license.keys`
/// submitted to the leader. Both replicas show them.
#[test]
fn both_servers_keys_are_pooled_before_any_failover() {
    let test = "both_servers_keys_are_pooled_before_any_failover";
    if !lab_available(test) {
        return;
    }
    let pair = start_pair();
    let client_host = pair.lab.hosts[2].clone();
    let (a, b) = (pair.lab.hosts[0].addr, pair.lab.hosts[1].addr);
    assert!(
        wait_for(WAIT, || serving(&client_host, a)),
        "the primary never served"
    );
    let pooled = |node| {
        show(&client_host, node).is_ok_and(|d| {
            let ids: Vec<&String> = d.state.server_keys.keys().collect();
            ids == ["backup-AP", "primary-AP"] && d.pool.get(&ap()).is_some_and(|e| e.total == 200_000)
        })
    };
    let t0 = Instant::now();
    assert!(
        wait_for(WAIT, || pooled(a) && pooled(b)),
        "keys: primary {:?}, backup {:?}",
        show(&client_host, a).map(|d| (d.state.server_keys, d.pool)),
        show(&client_host, b).map(|d| (d.state.server_keys, d.pool))
    );
    println!(
        "{test}: both keys pooled on both replicas {:?} after the primary served",
        t0.elapsed()
    );
    // The backup still does not serve: it got its keys in without the VIP.
    let backup = show(&client_host, b).unwrap().status;
    assert!(!backup.serving && backup.vrrp_state == "Backup", "{backup:?}");
}

#[test]
fn own_address_and_backup_refuse_with_the_vip() {
    let test = "own_address_and_backup_refuse_with_the_vip";
    if !lab_available(test) {
        return;
    }
    let pair = start_pair();
    let client_host = pair.lab.hosts[2].clone();
    let (a, b) = (pair.lab.hosts[0].addr, pair.lab.hosts[1].addr);
    assert!(
        wait_for(WAIT, || serving(&client_host, a)),
        "the primary never served"
    );
    let targets = [
        (a, CLIENT_PORT),
        (b, CLIENT_PORT),
        (a, OPERATOR_PORT),
        (b, OPERATOR_PORT),
        (VIP, CLIENT_PORT),
    ];
    let tls = common::switch_tls(&client_host, "probe", "P");
    let answers = in_netns(&client_host, move || {
        common::runtime().block_on(async move {
            let mut out = Vec::new();
            for (addr, port) in targets {
                let r = match Connection::connect((addr, port), &tls).await {
                    Ok(mut conn) => conn.register("probe", "P", "1", SwitchReport::default()).await,
                    Err(e) => Err(e),
                };
                out.push(((addr, port), r.map(|_| ()).map_err(|e| e.to_string())));
            }
            out
        })
    })
    .join()
    .unwrap();
    for ((addr, port), r) in &answers {
        println!("{addr}:{port}: {r:?}");
        if *addr == VIP {
            assert!(r.is_ok(), "the VIP serves: {r:?}");
        } else if *port == OPERATOR_PORT {
            // A switch's certificate is refused there, saying why.
            let e = r.as_ref().expect_err("refused");
            assert!(
                e.contains("the operator port takes operator certificates only"),
                "{e}"
            );
        } else {
            let e = r.as_ref().expect_err("refused");
            assert!(e.contains("not the license server, use VIP 192.0.2.100"), "{e}");
        }
    }
    // Refused requests changed nothing; the VIP's registration is the only
    // one, replicated to the backup.
    assert!(
        wait_for(WAIT, || show(&client_host, b)
            .is_ok_and(|d| !d.state.clients.is_empty())),
        "the registration never reached the backup"
    );
    let dump = show(&client_host, b).expect("backup answers views");
    assert_eq!(dump.state.clients.len(), 1, "{:?}", dump.state.clients.keys());
    assert_eq!(dump.status.vrrp_state, "Backup");
    assert!(!dump.status.serving);
    let primary = show(&client_host, a).unwrap().status;
    assert_eq!(
        (primary.vrrp_state.as_str(), primary.raft_role.as_str()),
        ("Master", "Leader")
    );
    assert!(
        primary.term > 0 && primary.commit_index >= primary.applied_index && primary.applied_index > 0,
        "{primary:?}"
    );
    drop(pair);
}

/// Issue 5, scenario 3: the old primary comes back behind the log; it
/// advertises the lowest priority until it has caught up, only then
/// preempts, and both nodes end with the same table.
#[test]
fn restarted_primary_catches_up_before_it_preempts() {
    let test = "restarted_primary_catches_up_before_it_preempts";
    if !lab_available(test) {
        return;
    }
    let mut pair = start_pair();
    let client_host = pair.lab.hosts[2].clone();
    let host_a = pair.lab.hosts[0].clone();
    let (a, b) = (host_a.addr, pair.lab.hosts[1].addr);
    assert!(
        wait_for(WAIT, || serving_with_keys(&client_host, a)),
        "the primary never served"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let since = Arc::new(std::sync::Mutex::new(Some(Instant::now())));
    let acked = Arc::new(AtomicU64::new(0));
    let probe = prober(&client_host, "prober", since, stop.clone(), acked.clone());
    assert!(wait_for(WAIT, || acked.load(Ordering::SeqCst) >= 20), "no load");

    pair.primary.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(pair.primary.wait_exit(WAIT), Some(0));
    assert!(
        wait_for(WAIT, || serving(&client_host, b)),
        "the backup never served"
    );
    // The backup's log moves on without the primary.
    let before = acked.load(Ordering::SeqCst);
    assert!(
        wait_for(WAIT, || acked.load(Ordering::SeqCst) >= before + 100),
        "no load on the backup"
    );
    let behind = show(&client_host, b).expect("backup status").status.commit_index;

    let config = pair.lab.dir().join("primary.toml");
    let log = pair.lab.dir().join("primary-restart.log");
    let _restarted = pair
        .lab
        .vipool_logged(&host_a, &["node", "--config", config.to_str().unwrap()], &log);
    let mut stale_master = None;
    let came_back = wait_for(WAIT, || match show(&client_host, a) {
        Ok(d) => {
            if d.status.vrrp_state == "Master" && d.status.applied_index < behind {
                stale_master.get_or_insert(d.status.applied_index);
            }
            d.status.serving
        }
        Err(_) => false,
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        came_back,
        "the restarted primary never served again; its log:\n{text}"
    );
    assert_eq!(
        stale_master, None,
        "master with a stale table (commit was {behind})"
    );
    // Its own account: lowest priority first, the configured one once caught
    // up, and only then master.
    let at = |what: &str| {
        text.find(what)
            .unwrap_or_else(|| panic!("{what:?} not in the log:\n{text}"))
    };
    let low = at("advertising the lowest VRRP priority");
    let restored = at("advertising the configured VRRP priority");
    let master = at("to=Master");
    assert!(
        low < restored && restored < master,
        "order of events in the log:\n{text}"
    );
    // The backup yielded the VIP and does not serve (S1).
    assert!(wait_for(WAIT, || show(&client_host, b).is_ok_and(|d| !d.status.serving)));

    stop.store(true, Ordering::SeqCst);
    let probe = probe.join().expect("prober");
    // Both nodes converge on one table (S4's convergence, without a partition).
    let mut last = None;
    let same = wait_for(WAIT, || match (show(&client_host, a), show(&client_host, b)) {
        (Ok(x), Ok(y)) => {
            let same = x.state == y.state && x.status.applied_index == y.status.applied_index;
            last = Some((x.status.applied_index, y.status.applied_index));
            same
        }
        _ => false,
    });
    assert!(same, "the tables differ (applied {last:?})");
    let dump = show(&client_host, a).unwrap();
    let used = u64::from(dump.state.clients["prober"].used_of(&ap()));
    println!(
        "{test}: prober acked {}, uncertain {}, refused {}, table holds {used} on both nodes; \
         longest gap {:?} over two failovers",
        probe.acked, probe.uncertain, probe.refused, probe.max_gap
    );
    assert!(
        used >= probe.acked && used <= probe.acked + probe.uncertain,
        "acknowledged {} (+{} uncertain), the table holds {used}",
        probe.acked,
        probe.uncertain
    );
}

/// Issue 5, scenario 4 with a witness: the primary is cut off the link. It
/// loses its raft quorum and stops serving although VRRP still makes it
/// master on its side; the backup and the witness elect the backup, writes
/// continue there; after the heal one node serves and the tables converge.
#[test]
fn partition_with_a_witness_keeps_one_serving_node() {
    let test = "partition_with_a_witness_keeps_one_serving_node";
    if !lab_available(test) {
        return;
    }
    let pair = start_pair_with_witness();
    let client_host = pair.lab.hosts[2].clone();
    let host_a = pair.lab.hosts[0].clone();
    let (a, b) = (host_a.addr, pair.lab.hosts[1].addr);
    assert!(
        wait_for(WAIT, || serving_with_keys(&client_host, a)),
        "the primary never served"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let since = Arc::new(std::sync::Mutex::new(None));
    let after = Arc::new(AtomicU64::new(0));
    let probe = prober(&client_host, "prober", since.clone(), stop.clone(), after.clone());
    std::thread::sleep(Duration::from_millis(300));

    let t0 = Instant::now();
    *since.lock().unwrap() = Some(t0);
    pair.lab.set_port(&host_a, false);
    assert!(
        wait_for(WAIT, || serving(&client_host, b)),
        "the backup never served"
    );
    println!("{test}: backup serving {:?} after the cut", t0.elapsed());
    // The cut-off primary, asked on its own host: still VRRP master, but
    // without a quorum it is not the raft leader and does not serve (S1).
    assert!(
        wait_for(WAIT, || show(&host_a, a).is_ok_and(|d| !d.status.serving)),
        "the cut-off primary still serves: {:?}",
        show(&host_a, a)
    );
    let cut_off = show(&host_a, a).unwrap().status;
    println!("{test}: cut-off primary: {cut_off:?}");
    assert_eq!(
        cut_off.vrrp_state, "Master",
        "it hears no adverts: still master on its side"
    );
    // Writes continue on the majority side.
    assert!(
        wait_for(WAIT, || after.load(Ordering::SeqCst) >= 50),
        "no writes on the majority side"
    );
    for _ in 0..10 {
        let (x, y) = (show(&host_a, a).unwrap(), show(&client_host, b).unwrap());
        assert!(
            !(x.status.serving && y.status.serving),
            "two serving nodes: {x:?} {y:?}"
        );
    }

    pair.lab.set_port(&host_a, true);
    let t1 = Instant::now();
    // After the heal exactly one node serves, and the tables converge.
    let one = || {
        let (x, y) = (show(&client_host, a), show(&client_host, b));
        match (x, y) {
            (Ok(x), Ok(y)) => {
                x.status.serving != y.status.serving
                    && x.state == y.state
                    && x.status.applied_index == y.status.applied_index
            }
            _ => false,
        }
    };
    // Converged while the load runs means: one holder, same table at one instant.
    let converged = wait_for(WAIT, || {
        stop.load(Ordering::SeqCst) || {
            let ok = one();
            if ok {
                stop.store(true, Ordering::SeqCst);
            }
            ok
        }
    });
    stop.store(true, Ordering::SeqCst);
    let probe = probe.join().expect("prober");
    assert!(converged || one(), "no convergence after the heal");
    println!("{test}: converged {:?} after the heal", t1.elapsed());
    let dump = show(&client_host, b).unwrap();
    let used = u64::from(dump.state.clients["prober"].used_of(&ap()));
    // The witness's operator endpoint: a voter that follows, never serves,
    // and holds the same committed log.
    let w = pair.lab.hosts[3].addr;
    assert!(
        wait_for(WAIT, || show(&client_host, w).is_ok_and(|d| {
            d.status.raft_role == "Follower" && d.status.commit_index >= dump.status.applied_index
        })),
        "the witness's status: {:?}",
        show(&client_host, w).map(|d| d.status)
    );
    let witness = show(&client_host, w).unwrap().status;
    println!("{test}: witness: {witness:?}");
    assert!(!witness.serving && witness.vip.is_none(), "{witness:?}");
    assert_eq!(witness.vrrp_state, "none (witness)");
    println!(
        "{test}: prober acked {} ({} after the cut), uncertain {}, refused {}, table holds {used}; \
         longest gap {:?}",
        probe.acked, probe.acked_after, probe.uncertain, probe.refused, probe.max_gap
    );
    assert!(
        used >= probe.acked && used <= probe.acked + probe.uncertain,
        "acknowledged {} (+{} uncertain), the table holds {used}",
        probe.acked,
        probe.uncertain
    );
}

/// Issue 5, scenario 4 without a witness: the primary is cut off. Both
/// sides hold the VIP and lead alone (the documented risk of a pair: the
/// cut-off side has no clients here). After the heal one node serves, the
/// other yields its log and resyncs, and the switches' idempotent
/// heartbeats restore everything they hold (SPEC S4).
#[test]
fn partition_without_a_witness_heals_to_one_holder_and_one_table() {
    let test = "partition_without_a_witness_heals_to_one_holder_and_one_table";
    if !lab_available(test) {
        return;
    }
    let mut pair = start_pair();
    let client_host = pair.lab.hosts[2].clone();
    let host_a = pair.lab.hosts[0].clone();
    let (a, b) = (host_a.addr, pair.lab.hosts[1].addr);
    assert!(
        wait_for(WAIT, || serving(&client_host, a)),
        "the primary never served"
    );
    let server = format!("{VIP}:{CLIENT_PORT}");
    let pki = pair.lab.pki_dir();
    let switches = pair.lab.vipool(
        &client_host,
        &[
            "client",
            "--pki",
            &pki,
            "--server",
            &server,
            "--id",
            "sw",
            "--count",
            "10",
            "--aps",
            "2",
            "--heartbeat-interval-ms",
            "500",
            "--json",
        ],
    );
    assert!(
        wait_for(WAIT, || switch_grants(&switches)
            .values()
            .filter(|n| **n == 2)
            .count()
            == 10),
        "the switches did not all get their grants"
    );

    pair.lab.set_port(&host_a, false);
    let t0 = Instant::now();
    // Both sides end up serving: the backup for the switches, the primary alone.
    assert!(
        wait_for(WAIT, || serving(&client_host, b)),
        "the backup never served"
    );
    let split = wait_for(WAIT, || serving(&host_a, a));
    println!(
        "{test}: backup serving, cut-off primary serving alone: {split} ({:?} after the cut)",
        t0.elapsed()
    );
    assert!(
        wait_for(WAIT, || registrations_after(&switches, t0).len() == 10),
        "the switches did not move to the backup"
    );

    pair.lab.set_port(&host_a, true);
    let t1 = Instant::now();
    let mut last = String::new();
    let healed = wait_for(WAIT, || {
        let (x, y) = match (show(&client_host, a), show(&client_host, b)) {
            (Ok(x), Ok(y)) => (x, y),
            (x, y) => {
                last = format!("{:?} / {:?}", x.err(), y.err());
                return false;
            }
        };
        let grants = switch_grants(&switches);
        let restored = grants.iter().all(|(id, n)| {
            [&x, &y].iter().all(|d| {
                d.state
                    .clients
                    .get(id)
                    .is_some_and(|c| i64::from(c.used_of(&ap())) == *n)
            })
        });
        last = format!(
            "serving {} / {}, vrrp {} / {}, applied {} / {}, restored {restored}",
            x.status.serving,
            y.status.serving,
            x.status.vrrp_state,
            y.status.vrrp_state,
            x.status.applied_index,
            y.status.applied_index
        );
        x.status.serving != y.status.serving
            && u8::from(x.status.vrrp_state == "Master") + u8::from(y.status.vrrp_state == "Master") == 1
            && x.state.clients == y.state.clients
            && restored
    });
    assert!(healed, "no single holder and table after the heal: {last}");
    println!(
        "{test}: one holder, one table, every switch restored {:?} after the heal",
        t1.elapsed()
    );
    if split {
        yield_is_kept_and_acknowledged(&pair.lab, &client_host);
    }
}

/// After a split brain healed: the member that yielded kept what it
/// discarded in a file of its data dir, its status warns about it, and
/// `vipool ack-yield` acknowledges it (the file is renamed, not deleted).
fn yield_is_kept_and_acknowledged(lab: &Lab, client_host: &Host) {
    let kept = |name: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(lab.dir().join(format!("{name}-data")))
            .map(|d| {
                d.map(|e| e.unwrap().path())
                    .filter(|p| {
                        let n = p.file_name().unwrap().to_string_lossy();
                        n.starts_with("yielded-") && n.ends_with(".json")
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (primary, backup) = (kept("primary"), kept("backup"));
    let (name, addr, files) = match (primary.len(), backup.len()) {
        (1, 0) => ("primary", lab.hosts[0].addr, primary),
        (0, 1) => ("backup", lab.hosts[1].addr, backup),
        _ => panic!("exactly one member yields once: primary {primary:?}, backup {backup:?}"),
    };
    let file = &files[0];
    let log: cluster::DiscardedLog = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    println!(
        "{name} yielded to member {}: commit {}, {} committed entries kept in {}",
        log.winner,
        log.commit,
        log.committed_entries,
        file.display()
    );
    let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
    let warned = |d: &TableDump| {
        d.status
            .warnings
            .iter()
            .any(|w| w.contains("SPLIT-BRAIN YIELD") && w.contains(&file_name))
    };
    assert!(
        wait_for(WAIT, || show(client_host, addr).is_ok_and(|d| warned(&d))),
        "no yield warning in the {name}'s status: {:?}",
        show(client_host, addr).map(|d| d.status.warnings)
    );
    let config = lab.dir().join(format!("{name}.toml"));
    let config = config.to_str().unwrap();
    let listed = common::sh(&[&common::vipool_bin(), "ack-yield", "--config", config]);
    assert!(
        listed.contains(&file_name) && listed.contains("--all"),
        "{listed}"
    );
    assert!(file.exists(), "listing acknowledges nothing");
    let acked = common::sh(&[&common::vipool_bin(), "ack-yield", "--config", config, "--all"]);
    assert!(acked.contains(&format!("acknowledged {file_name}")), "{acked}");
    assert!(!file.exists());
    assert!(file.with_file_name(format!("{file_name}.acknowledged")).exists());
    assert!(
        wait_for(WAIT, || show(client_host, addr).is_ok_and(|d| !warned(&d))),
        "the warning outlived its acknowledgement"
    );
}

/// The backup's raft log in its data dir.
fn backup_store(lab: &Lab) -> std::path::PathBuf {
    lab.dir().join("backup-data").join("raft.redb")
}

/// Starts `vipool node --config backup.toml [--rejoin]` on the backup's
/// host, its log in `log`.
fn start_backup(lab: &mut Lab, log: &str, rejoin: bool) -> (Speaker, std::path::PathBuf) {
    let host = lab.hosts[1].clone();
    let config = lab.dir().join("backup.toml").to_string_lossy().into_owned();
    let log = lab.dir().join(log);
    let mut args = vec!["node", "--config", config.as_str()];
    if rejoin {
        args.push("--rejoin");
    }
    (lab.vipool_logged(&host, &args, &log), log)
}

/// A backup whose store is lost or damaged refuses to start and says what
/// to do; `--rejoin` sets the store aside and rebuilds it from the primary
/// under load; the rebuilt backup holds the primary's table and takes over
/// from it without losing an acknowledged grant (SPEC §9 "damage is a
/// clear error", S2).
#[test]
fn a_damaged_backup_refuses_to_start_and_rejoin_rebuilds_it_from_the_primary() {
    let test = "a_damaged_backup_refuses_to_start_and_rejoin_rebuilds_it_from_the_primary";
    if !lab_available(test) {
        return;
    }
    let mut pair = start_pair();
    let client_host = pair.lab.hosts[2].clone();
    let (a, b) = (pair.lab.hosts[0].addr, pair.lab.hosts[1].addr);
    assert!(
        wait_for(WAIT, || serving_with_keys(&client_host, a)),
        "the primary never served"
    );
    assert!(
        wait_for(WAIT, || show(&client_host, b)
            .is_ok_and(|d| d.status.applied_index > 1)),
        "the backup never replicated"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let since = Arc::new(std::sync::Mutex::new(Some(Instant::now())));
    let acked = Arc::new(AtomicU64::new(0));
    let probe = prober(&client_host, "prober", since, stop.clone(), acked.clone());
    assert!(wait_for(WAIT, || acked.load(Ordering::SeqCst) >= 20), "no load");

    pair.backup.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(pair.backup.wait_exit(WAIT), Some(0), "the backup stops cleanly");
    let store = backup_store(&pair.lab);
    let good = std::fs::read(&store).expect("the backup's store");
    let config = pair.lab.dir().join("backup.toml");
    let rejoin = format!("`vipool node --config {} --rejoin`", config.display());

    // Emptied (zero length): refused, naming the file and both ways out.
    std::fs::write(&store, b"").unwrap();
    let (refused, log) = start_backup(&mut pair.lab, "backup-empty.log", false);
    assert_eq!(refused.wait_exit(WAIT), Some(1), "refused with an error");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains(&format!("{} is empty (zero length)", store.display())),
        "{text}"
    );
    assert!(
        text.contains("vipool init --config") && text.contains(&rejoin),
        "{text}"
    );

    // Damaged: every page after redb's header scrambled. Refused, never a
    // panic (exit 1 from the error, not 101), naming the file and --rejoin.
    let mut damaged = good.clone();
    for byte in &mut damaged[4096..] {
        *byte ^= 0x5a;
    }
    std::fs::write(&store, &damaged).unwrap();
    let (refused, log) = start_backup(&mut pair.lab, "backup-damaged.log", false);
    assert_eq!(
        refused.wait_exit(WAIT),
        Some(1),
        "refused with an error, not a panic"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains(&store.display().to_string()), "{text}");
    assert!(
        text.contains("cannot be trusted") && text.contains(&rejoin),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");

    // --rejoin: the damaged store is moved aside, an empty one rebuilds
    // from the primary's snapshot while the prober keeps drawing.
    let t0 = Instant::now();
    let (backup, log) = start_backup(&mut pair.lab, "backup-rejoin.log", true);
    pair.backup = backup;
    assert!(
        wait_for(WAIT, || std::fs::read_to_string(&log)
            .is_ok_and(|t| t.contains("REJOIN"))),
        "no REJOIN in the log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let aside: Vec<std::path::PathBuf> = std::fs::read_dir(store.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("raft.redb.aside-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), damaged, "kept, not deleted");
    // Caught up and promoted back to voter: it advertises its priority again.
    let promoted = "caught up with the log and a voter: advertising the configured VRRP priority";
    assert!(
        wait_for(2 * WAIT, || std::fs::read_to_string(&log)
            .is_ok_and(|t| t.contains(promoted))),
        "the rejoined backup never caught up and became a voter; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    println!(
        "{test}: the rejoined backup caught up and is a voter {:?} after its start",
        t0.elapsed()
    );
    let before = acked.load(Ordering::SeqCst);
    assert!(
        wait_for(WAIT, || acked.load(Ordering::SeqCst) >= before + 20),
        "the pair stopped serving after the rejoin"
    );

    // Same applied table on both once the load stops.
    stop.store(true, Ordering::SeqCst);
    let probe = probe.join().expect("prober");
    let mut last = None;
    let same = wait_for(WAIT, || match (show(&client_host, a), show(&client_host, b)) {
        (Ok(x), Ok(y)) => {
            last = Some((x.status.applied_index, y.status.applied_index));
            x.state == y.state && x.status.applied_index == y.status.applied_index
        }
        _ => false,
    });
    assert!(
        same,
        "the rebuilt table differs from the primary's (applied {last:?})"
    );
    let used = u64::from(show(&client_host, b).unwrap().state.clients["prober"].used_of(&ap()));
    assert!(
        used >= probe.acked && used <= probe.acked + probe.uncertain,
        "acknowledged {} (+{} uncertain), the rebuilt table holds {used}",
        probe.acked,
        probe.uncertain
    );

    // The rebuilt backup is a full member: it takes over from the primary.
    pair.primary.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(pair.primary.wait_exit(WAIT), Some(0));
    assert!(
        wait_for(WAIT, || serving(&client_host, b)),
        "the rebuilt backup never served: {:?}",
        show(&client_host, b)
    );
    let dump = show(&client_host, b).unwrap();
    assert_eq!(u64::from(dump.state.clients["prober"].used_of(&ap())), used);
    println!(
        "{test}: prober acked {} (uncertain {}), the rebuilt backup holds {used} and serves after the primary stopped",
        probe.acked, probe.uncertain
    );
}
