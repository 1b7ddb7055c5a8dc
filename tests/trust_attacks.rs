//! Trust I: the attacks of the issue, replayed from a third host of the
//! pair's broadcast domain that holds no credentials (only the addresses,
//! the cluster id and the release string, all guessable), against a real
//! pair of `vipool node` processes running the shipped configuration with
//! lab timers, while simulated switches and a prober draw licenses through
//! the VIP.
//!
//! Every test checks what SPEC S6 promises, as far as the attack reaches:
//! no foreign entry commits (the table holds only what legitimate clients
//! did), no leadership change (same term, same serving node, no VRRP state
//! change), no committed entry lost (every acknowledged grant is in the
//! table, the applied index never goes down), the switches keep being
//! served (no failed probe under raft attacks, no gap longer than one
//! Master_Down_Interval under forged adverts), the refusal is counted where
//! the node says so (`status.refused`), and a flood of refusals leaves a
//! couple of log lines, not one per attempt. Each test ends with a control:
//! the legitimate path through the same mechanism still works in the same
//! lab, so no test passes because the lab is broken.
//!
//! The attacks: a1 forged proposals (plain TCP, and TLS with a CA the
//! attacker made); a2 forged higher-term heartbeats; a3 the same against a
//! sole voter; a4 hundreds of held raft connections while the backup
//! restarts; a5a adverts from the attacker's own address; a5b adverts in
//! the backup's name; a5c both names in a unicast pair; a5d a priority 0 in
//! the primary's name. a5e and a5f go one step past the issue's list: the
//! same forgeries once the peer's authenticated word has stopped (the
//! backup stopped for maintenance, the primary crashed), when nothing
//! but VRRP speaks for the peer. a5g: adverts in the backup's name while
//! the primary, stopping gracefully, keeps the VIP until it hears the
//! backup.
//!
//! Hosts: 0 the primary, 1 the backup, 2 the switches and the prober,
//! 3 the attacker. The tests take a lock so that only one lab runs at a
//! time: their bounds are timers, and two pairs on two shared cores would
//! measure each other.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::raft::eraftpb::{Entry, EntryType, Message, MessageType};
use cluster::transport::{encode_frame, PROTOCOL_VERSION};
use common::pair::{
    ap, refused_of, switch_grants, Findings, Monitor, PairLab, PairOptions, Probe, Prober, Sample, Which,
    CLUSTER_ID, RAFT_PORT, VIP, WAIT,
};
use common::{in_netns, inject, lab_available, wait_for, Host, Speaker};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vipool::proto::TableDump;
use vipool::table::{Actor, Command, Key, VerifiedKey};
use vrrp::wire::{self, Checksum, Repr, Version};

/// One lab at a time (see the module docs).
static ONE_LAB: Mutex<()> = Mutex::new(());

fn one_lab() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB.lock().unwrap_or_else(|p| p.into_inner())
}

/// The prober's limit per request: the pair's `request_timeout_ms`. A
/// probe that fails under a raft attack failed because of it, not because
/// a loaded machine answered a little late.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Time between two probes: about a hundred grants a second, plenty to see
/// a gap, little load on two shared cores.
const PROBE_PACE: Duration = Duration::from_millis(10);
/// How often the monitor asks both nodes for their status.
const SAMPLE: Duration = Duration::from_millis(100);
/// Simulated switches, two APs each.
const SWITCHES: usize = 5;
/// Lines a flood of one refused cause may leave in a node's log: the
/// first, and one more if a rate-limit interval ends during the test.
const LINES_PER_CAUSE: usize = 2;
/// What the raft transport logs for a connection from a stranger.
const STRANGER_LINE: &str = "no configured peer's";
/// What the VRRP speaker logs for an advert from an untrusted source.
const UNTRUSTED_LINE: &str = "VRRP advert dropped: its source is not trusted";
/// What the VRRP speaker logs for an advert its peer's word contradicts.
const CONTRADICTED_LINE: &str = "VRRP advert dropped: the peer's authenticated state contradicts it";

/// The scene of one test: a settled pair, switches and a prober drawing
/// through the VIP, a monitor sampling both nodes, and what they held
/// before the attack.
struct Scene {
    test: &'static str,
    pair: PairLab,
    client: Host,
    attacker: Host,
    switches: Speaker,
    prober: Option<Prober>,
    monitor: Option<Monitor>,
    /// The primary's table and status before the attack.
    before: TableDump,
    /// "VRRP state change" lines in each node's log before the attack.
    vrrp_changes: (usize, usize),
}

impl Scene {
    /// Builds the lab, waits until the pair is settled and serving the
    /// switches and the prober.
    fn start(test: &'static str, opts: PairOptions) -> Scene {
        let opts = PairOptions {
            extra_hosts: 2,
            ..opts
        };
        let mut pair = PairLab::start(opts);
        let (client, attacker) = (pair.host(2), pair.host(3));
        pair.wait_settled(&client);
        let switches = pair.switches(&client, SWITCHES, 2, 1000);
        let prober = Prober::start(&client, "prober", PROBE_TIMEOUT, PROBE_PACE);
        assert!(prober.wait_acks(20), "the prober was never served");
        let monitor = Monitor::start(&pair, &client, SAMPLE);
        let before = pair.show(&client, Which::Primary).expect("the primary's table");
        let vrrp_changes = (
            pair.primary.log_lines("VRRP state change").len(),
            pair.backup.log_lines("VRRP state change").len(),
        );
        println!(
            "{test}: settled; term {}, applied {}, Master_Down_Interval {:?}, election timeout {:?}",
            before.status.term,
            before.status.applied_index,
            pair.opts.master_down(100),
            pair.opts.election_timeout()
        );
        Scene {
            test,
            pair,
            client,
            attacker,
            switches,
            prober: Some(prober),
            monitor: Some(monitor),
            before,
            vrrp_changes,
        }
    }

    fn show(&self, which: Which) -> Result<TableDump, String> {
        self.pair.show(&self.client, which)
    }

    /// Node `which`'s refusal counter `cause` now.
    fn refused(&self, which: Which, cause: &str) -> u64 {
        self.show(which)
            .map(|d| refused_of(&d.status, cause))
            .unwrap_or_else(|e| panic!("{}: {which:?} does not answer: {e}", self.test))
    }

    /// Waits until counter `cause` of `which` reaches `at_least` (false after `within`).
    fn wait_refused(&self, which: Which, cause: &str, at_least: u64, within: Duration) -> bool {
        wait_for(within, || {
            self.show(which)
                .is_ok_and(|d| refused_of(&d.status, cause) >= at_least)
        })
    }

    /// Stops the prober and the monitor and checks what they saw, the table
    /// and the logs: everything the attack `window` may not have changed
    /// (see [`Expect`]). Under forged adverts a gap up to one
    /// Master_Down_Interval is VRRP's own bound; under raft attacks not
    /// even one probe may fail.
    fn verdict(&mut self, f: &mut Findings, window: (Instant, Instant), expect: Expect) -> Probe {
        let test = self.test;
        let mdi = self.pair.opts.master_down(100);
        // Keep probing for two Master_Down_Intervals after the attack: a
        // takeover it caused would show as a gap of one by then.
        std::thread::sleep(2 * mdi);
        let probe = self.prober.take().expect("prober").finish();
        let samples = self.monitor.take().expect("monitor").finish();
        let (from, to) = window;
        let until = to + 2 * mdi;
        let failures = probe.failures_between(from, until);
        let (gap, gap_end) = probe.max_gap_between(from, until);
        println!(
            "{test}: prober acked {} (uncertain {}, refused {}, unreachable {}); in the attack window \
             {:?}: {} failed, longest gap {gap:?} (ended {:?} after the attack began); whole run \
             longest gap {:?}",
            probe.acked,
            probe.uncertain,
            probe.refused,
            probe.unreachable,
            to - from,
            failures.len(),
            gap_end.saturating_duration_since(from),
            probe.max_gap()
        );
        // The switches keep being served.
        if expect.no_failed_probe {
            f.check(failures.is_empty(), || {
                format!(
                    "{} probes failed during the attack: {:?}",
                    failures.len(),
                    first(&failures)
                )
            });
        }
        f.check(gap < mdi, || {
            format!("the prober went {gap:?} without a grant, above Master_Down_Interval {mdi:?}")
        });

        // No leadership change, no lost entry, no foreign entry: sample by sample.
        steady(f, &samples, &self.before, from, until, expect);

        // The table now: only what legitimate clients did.
        let after = match self.show(expect.serving) {
            Ok(d) => d,
            Err(e) => {
                f.check(false, || {
                    format!("the serving node does not answer after the attack: {e}")
                });
                return probe;
            }
        };
        table_unchanged(f, &self.before, &after, &probe, &self.switches);
        // No VRRP state change on either node.
        let changes = (
            self.pair.primary.log_lines("VRRP state change").len(),
            self.pair.backup.log_lines("VRRP state change").len(),
        );
        f.check(changes == self.vrrp_changes, || {
            format!(
                "VRRP state changes (primary, backup): {:?} before the attack, {changes:?} after:\n{}\n{}\n{}",
                self.vrrp_changes,
                self.pair.primary.log_lines("VRRP state change").join("\n"),
                self.pair.backup.log_lines("VRRP state change").join("\n"),
                self.vrrp_evidence()
            )
        });
        probe
    }

    /// What explains a VRRP state change nobody asked for: each node's
    /// word on a master-down takeover (adverts of the peer accepted, held,
    /// released, contradicted; its beacons), any stall of a node's thread,
    /// slow raft log flushes, and what each node refused.
    fn vrrp_evidence(&self) -> String {
        let mut out = String::from("evidence:");
        for (which, node) in [
            (Which::Primary, &self.pair.primary),
            (Which::Backup, &self.pair.backup),
        ] {
            let lines: Vec<String> = ["VRRP master down", "held up", "slow log flush"]
                .iter()
                .flat_map(|what| node.log_lines(what))
                .collect();
            let refused = self.show(which).map(|d| d.status.refused);
            out.push_str(&format!("\n{which:?}: refused {refused:?}\n{}", lines.join("\n")));
        }
        out
    }

    /// Control: a SIGTERM of the primary still hands the VIP and the
    /// service to the backup at once (the real priority-0 advert, announced
    /// over the cluster link, is believed), well within one
    /// Master_Down_Interval.
    fn control_graceful_handover(&mut self, f: &mut Findings) {
        let test = self.test;
        let mdi = self.pair.opts.master_down(100);
        let prober = Prober::start(&self.client, "prober-control", PROBE_TIMEOUT, PROBE_PACE);
        f.check(prober.wait_acks(20), || {
            "control: the prober was not served".into()
        });
        let t0 = Instant::now();
        self.pair.primary.signal(Signal::SIGTERM);
        let exited = self.pair.primary.process.wait_exit(WAIT);
        let served = wait_for(WAIT, || self.show(Which::Backup).is_ok_and(|d| d.status.serving));
        let took = t0.elapsed();
        let served_again = prober.wait_acks(20);
        // A flap after the takeover would show within one more interval.
        std::thread::sleep(mdi);
        let probe = prober.finish();
        let (gap, _) = probe.max_gap_between(t0, Instant::now());
        println!(
            "{test}: control: SIGTERM of the primary: backup serving after {took:?}, client gap {gap:?}, \
             {} failed probes; the backup's log:\n{}",
            probe.failed(),
            self.pair.backup.log_lines("serving").join("\n")
        );
        f.check(exited == Some(0), || {
            format!("control: the primary exited with {exited:?}")
        });
        f.check(served && served_again, || {
            format!(
                "control: the backup did not serve after the primary's SIGTERM: {:?}\n{}",
                self.show(Which::Backup).map(|d| d.status),
                self.pair.backup.log()
            )
        });
        f.check(gap < mdi, || {
            format!("control: graceful handover gap {gap:?}, not below Master_Down_Interval {mdi:?}")
        });
    }
}

/// What the attack must not have changed.
#[derive(Debug, Clone, Copy)]
struct Expect {
    /// The node that serves throughout.
    serving: Which,
    /// Whether the other server runs (and is sampled) during the attack.
    other_up: bool,
    /// Raft attacks: not one probe may fail.
    no_failed_probe: bool,
}

fn first<T: std::fmt::Debug>(v: &[T]) -> Vec<&T> {
    v.iter().take(5).collect()
}

/// Sample by sample over `[from, to]`: the same term; the serving node
/// serves as VRRP master and raft leader, the other (when up) is backup and
/// follower; the applied index never goes down; the table never shows a
/// server key or client the attacker named, and keeps every one it had.
fn steady(f: &mut Findings, samples: &[Sample], before: &TableDump, from: Instant, to: Instant, e: Expect) {
    let term = before.status.term;
    let keys: Vec<String> = before.state.server_keys.keys().cloned().collect();
    let clients: BTreeSet<String> = before.state.clients.keys().cloned().collect();
    let mut bad = Vec::new();
    let mut last_applied = [0u64; 2];
    let mut errors = 0;
    let mut seen = 0;
    let mut broke = 0;
    for s in samples {
        let idx = usize::from(s.node == Which::Backup);
        let serving_node = s.node == e.serving;
        if !serving_node && !e.other_up {
            continue;
        }
        let Ok(st) = &s.status else {
            if s.at >= from && s.at <= to {
                errors += 1;
            }
            continue;
        };
        let found = bad.len();
        // Applied never goes down, over the whole run of the process.
        if st.applied_index < last_applied[idx] {
            bad.push(format!(
                "{:?}: applied index went down from {} to {}",
                s.node, last_applied[idx], st.applied_index
            ));
        }
        last_applied[idx] = last_applied[idx].max(st.applied_index);
        if s.at < from || s.at > to {
            broke += usize::from(bad.len() > found);
            continue;
        }
        seen += 1;
        if st.term != term {
            bad.push(format!("{:?}: term {} (was {term})", s.node, st.term));
        }
        if serving_node {
            if !(st.serving && st.vrrp_state == "Master" && st.raft_role == "Leader") {
                bad.push(format!(
                    "{:?}: serving {}, VRRP {}, raft {}",
                    s.node, st.serving, st.vrrp_state, st.raft_role
                ));
            }
        } else if st.serving || st.vrrp_state == "Master" || st.raft_role == "Leader" {
            bad.push(format!(
                "{:?}: serving {}, VRRP {}, raft {}",
                s.node, st.serving, st.vrrp_state, st.raft_role
            ));
        }
        if s.server_keys != keys {
            bad.push(format!(
                "{:?}: server keys {:?} (were {keys:?})",
                s.node, s.server_keys
            ));
        }
        let now: BTreeSet<String> = s.clients.iter().cloned().collect();
        let extra: Vec<&String> = now
            .difference(&clients)
            .filter(|c| !c.starts_with("prober"))
            .collect();
        let missing: Vec<&String> = clients.difference(&now).collect();
        if !extra.is_empty() || !missing.is_empty() {
            bad.push(format!(
                "{:?}: clients added {extra:?}, removed {missing:?}",
                s.node
            ));
        }
        broke += usize::from(bad.len() > found);
    }
    bad.dedup();
    println!(
        "steady: {seen} samples in the attack window, {errors} unanswered, {broke} broke the steady state"
    );
    f.check(seen > 0, || "no status sample in the attack window".into());
    // A node too busy to answer its operator is not steady either; a few
    // misses are a loaded machine's.
    f.check(errors * 10 <= seen, || {
        format!("{errors} status requests unanswered, {seen} answered in the attack window")
    });
    f.check(bad.is_empty(), || {
        format!("{broke} samples broke the steady state, e.g. {:?}", first(&bad))
    });
}

/// The table after the attack holds only what legitimate clients did:
/// the same server keys and pool total, the switches with their grants,
/// the prober with every grant it was acknowledged (and at most the
/// uncertain ones more), and nothing the attacker named.
fn table_unchanged(
    f: &mut Findings,
    before: &TableDump,
    after: &TableDump,
    probe: &Probe,
    switches: &Speaker,
) {
    f.check(after.state.server_keys == before.state.server_keys, || {
        format!(
            "server keys changed: {:?} -> {:?}",
            before.state.server_keys.keys().collect::<Vec<_>>(),
            after.state.server_keys
        )
    });
    f.check(after.pool[&ap()].total == before.pool[&ap()].total, || {
        format!(
            "the AP pool total changed: {} -> {}",
            before.pool[&ap()].total,
            after.pool[&ap()].total
        )
    });
    for (id, granted) in switch_grants(switches) {
        let used = after.state.clients.get(&id).map(|c| i64::from(c.used_of(&ap())));
        f.check(used == Some(granted), || {
            format!("switch {id}: acknowledged {granted} AP, the table holds {used:?}")
        });
    }
    let extra: Vec<&String> = after
        .state
        .clients
        .keys()
        .filter(|c| !before.state.clients.contains_key(*c) && !c.starts_with("prober"))
        .collect();
    f.check(extra.is_empty(), || {
        format!("clients nobody legitimate registered: {extra:?}")
    });
    let used = after
        .state
        .clients
        .get(&probe.id)
        .map_or(0, |c| u64::from(c.used_of(&ap())));
    println!(
        "table: {} holds {used} (acknowledged {}, uncertain {}); server keys {:?}; {} clients",
        probe.id,
        probe.acked,
        probe.uncertain,
        after.state.server_keys.keys().collect::<Vec<_>>(),
        after.state.clients.len()
    );
    f.check(
        used >= probe.acked && used <= probe.acked + probe.uncertain,
        || {
            format!(
                "acknowledged {} grants (+{} uncertain), the table holds {used}: a committed entry was lost",
                probe.acked, probe.uncertain
            )
        },
    );
}

/// At most [`LINES_PER_CAUSE`] lines of `what` in `node`'s log after `attempts` attempts.
fn rate_limited(f: &mut Findings, pair: &PairLab, which: Which, what: &str, attempts: u64) {
    let lines = pair.node(which).log_lines(what);
    println!(
        "{which:?}'s log: {} lines of {what:?} after {attempts} attempts",
        lines.len()
    );
    f.check(lines.len() <= LINES_PER_CAUSE, || {
        format!(
            "{which:?}'s log holds {} lines of {what:?} after {attempts} attempts, e.g. {:?}",
            lines.len(),
            first(&lines)
        )
    });
}

// ---------------------------------------------------------------------------
// The attacker's raft tools.

/// A raft proposal "forwarded by member `from`" carrying table commands,
/// bincode-encoded as the cluster crate encodes a proposal.
fn forged_proposal(from: u64, to: u64, commands: &[Command]) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgPropose);
    m.from = from;
    m.to = to;
    for c in commands {
        let mut e = Entry::default();
        e.set_entry_type(EntryType::EntryNormal);
        e.data = bincode::serde::encode_to_vec(c, bincode::config::standard())
            .expect("commands encode")
            .into();
        m.mut_entries().push(e);
    }
    m
}

/// A raft heartbeat "from member `from`" at `term`.
fn forged_heartbeat(from: u64, to: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = from;
    m.to = to;
    m.term = term;
    m
}

fn frame(m: &Message) -> Vec<u8> {
    encode_frame(PROTOCOL_VERSION, CLUSTER_ID, m)
}

/// What the attacker's commands say: a server "ghost" (its serial first,
/// as a server announces it, so that the table would take its key) with a
/// key of a million APs, the removal of a real switch and of the backup's
/// key.
fn attacker_commands() -> Vec<Command> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let ghost = Actor::Operator("ghost".into());
    vec![
        Command::ServerSerial {
            server: "ghost".into(),
            serial: "GHOST".into(),
        },
        Command::InstallServerKey {
            now_ms,
            server: "ghost".into(),
            key: VerifiedKey {
                key_id: "ghost".into(),
                // The lab's issuer, which the pair records as trusted: the
                // table would count it (the entry carries no signature), so
                // only the cluster link's authentication stands in the way.
                issuer: "lab".into(),
                serial: "GHOST".into(),
                key: Key::permanent("AP", 1_000_000),
            },
            by: ghost.clone(),
        },
        Command::RemoveClient {
            id: "sw-0001".into(),
            by: ghost.clone(),
        },
        Command::RemoveServerKey {
            key_id: "backup-AP".into(),
            by: ghost,
        },
    ]
}

/// What became of one connection of the attacker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Delivery {
    /// The TCP connection (or TLS handshake) failed.
    Refused(String),
    /// The frames were written; then the node closed the connection.
    Closed,
    /// The frames were written and the connection stayed open.
    Open,
}

async fn written_then<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    frames: &[Vec<u8>],
    wait: Duration,
) -> Delivery {
    for fr in frames {
        if s.write_all(fr).await.is_err() {
            return Delivery::Closed;
        }
    }
    let _ = s.flush().await;
    // The node may answer (a TLS alert) before it closes: read to the end.
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(wait, async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    match closed.await {
        Ok(()) => Delivery::Closed,
        Err(_) => Delivery::Open,
    }
}

/// Connects from `from` to `to` over plain TCP, writes `frames`, and says
/// whether the node closed the connection within `wait`.
fn send_plain(from: &Host, to: SocketAddr, frames: Vec<Vec<u8>>, wait: Duration) -> Delivery {
    in_netns(from, move || {
        common::runtime().block_on(async move {
            match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(to)).await {
                Ok(Ok(s)) => written_then(s, &frames, wait).await,
                Ok(Err(e)) => Delivery::Refused(e.to_string()),
                Err(_) => Delivery::Refused("connect timed out".into()),
            }
        })
    })
    .join()
    .expect("attacker thread")
}

/// A TLS 1.3 client presenting `cert_pem`/`key_pem` and believing any server.
fn attacker_tls(cert_pem: &str, key_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let provider = cluster::tls::provider();
    let chain = cluster::tls::certificates_from_pem(cert_pem.as_bytes(), std::path::Path::new("attacker"))
        .expect("attacker's certificate");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("attacker's key");
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(common::BelieveAnyServer(provider)))
        .with_client_auth_cert(chain, key)
        .expect("client certificate");
    Arc::new(cfg)
}

/// Connects from `from` to `to` over TLS with `cfg`, writes `frames`, and
/// says whether the node closed the connection within `wait`.
fn send_tls(
    from: &Host,
    to: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    name: &'static str,
    frames: Vec<Vec<u8>>,
    wait: Duration,
) -> Delivery {
    in_netns(from, move || {
        common::runtime().block_on(async move {
            let tcp = match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(to))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Delivery::Refused(e.to_string()),
                Err(_) => return Delivery::Refused("connect timed out".into()),
            };
            let connector = tokio_rustls::TlsConnector::from(cfg);
            let server = rustls_pki_types::ServerName::try_from(name).expect("server name");
            match tokio::time::timeout(Duration::from_secs(3), connector.connect(server, tcp)).await {
                Ok(Ok(s)) => written_then(s, &frames, wait).await,
                Ok(Err(e)) => Delivery::Refused(format!("TLS: {e}")),
                Err(_) => Delivery::Refused("TLS handshake timed out".into()),
            }
        })
    })
    .join()
    .expect("attacker thread")
}

/// Sends `frame` to `to` from `from` every `every` for `rounds` rounds, one
/// connection per round (held until the next); returns the connections
/// made.
fn heartbeat_flood(from: &Host, to: SocketAddr, frame: Vec<u8>, rounds: u32, every: Duration) -> u64 {
    in_netns(from, move || {
        common::runtime().block_on(async move {
            let mut made = 0;
            let mut held = None;
            let start = tokio::time::Instant::now();
            for i in 0..rounds {
                if let Ok(Ok(mut s)) =
                    tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(to)).await
                {
                    made += 1;
                    let _ = s.write_all(&frame).await;
                    held = Some(s);
                }
                tokio::time::sleep_until(start + every * (i + 1)).await;
            }
            drop(held);
            made
        })
    })
    .join()
    .expect("attacker thread")
}

// ---------------------------------------------------------------------------
// The attacker's VRRP tools.

/// A valid VRRPv3 advert of the pair's virtual router (its VRID, its VIP,
/// its interval, a good checksum, TTL 255) from `src` to `dst`.
fn advert(opts: &PairOptions, src: Ipv4Addr, dst: Ipv4Addr, priority: u8) -> Vec<u8> {
    let interval_cs = u16::try_from(opts.advert_ms / 10).expect("interval in centiseconds");
    let repr = Repr::advertisement(Version::V3, opts.vrid, priority, interval_cs, vec![VIP]);
    let msg = repr.to_bytes(Checksum::PseudoHeader { src, dst });
    wire::ipv4::build(src, dst, 255, &msg)
}

/// Sends `datagrams` (each to its destination) from `from`, once every
/// advert interval for `rounds` intervals.
fn advertise(from: &Host, opts: &PairOptions, rounds: u32, datagrams: &[(Ipv4Addr, Vec<u8>)]) {
    let start = Instant::now();
    for i in 0..rounds {
        for (dst, d) in datagrams {
            inject(from, *dst, vec![d.clone()]);
        }
        let next = start + opts.advert() * (i + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// A flood: `n` copies of each datagram, in bursts of 20 a few
/// milliseconds apart (a socket buffer holds a few hundred; the point is
/// the log, not the buffer).
fn flood(from: &Host, n: usize, datagrams: &[(Ipv4Addr, Vec<u8>)]) {
    for chunk in 0..n.div_ceil(20) {
        let k = 20.min(n - chunk * 20);
        for (dst, d) in datagrams {
            inject(from, *dst, vec![d.clone(); k]);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------
// A1: forged proposals.

/// Issue item 1: a forged `MsgPropose` (a server key "ghost" with a million
/// APs, the removal of a real switch and of the backup's key) sent to the
/// primary's raft port over plain TCP and over TLS with a certificate from
/// a CA the attacker made, naming "backup": from the attacker's address
/// (closed before any TLS work, `raft_strangers`), and, as if the attacker
/// had the backup's address, from the backup's host (the handshake fails,
/// `raft_handshake_failures`). Nothing commits, nothing changes. Control:
/// the same frame from the backup's host with the backup's real
/// certificate is committed, so the frame itself is one raft accepts.
#[test]
fn a1_forged_proposals_commit_nothing() {
    let test = "a1_forged_proposals_commit_nothing";
    if !lab_available(test) {
        return;
    }
    let _one = one_lab();
    let mut s = Scene::start(test, PairOptions::default());
    let mut f = Findings::new(test);
    let primary = SocketAddr::from((s.pair.primary.addr(), RAFT_PORT));
    let backup_host = s.pair.backup.host.clone();
    let proposal = frame(&forged_proposal(2, 1, &attacker_commands()));
    // The attacker's own CA, and its certificate naming "backup".
    let own_ca_dir = s.pair.lab.dir().join("attacker-pki");
    let own = vipool::pki::Ca::create(&own_ca_dir, CLUSTER_ID, 365)
        .and_then(|ca| ca.issue_member("backup", 365))
        .expect("the attacker's CA");
    let fake = attacker_tls(&own.cert_pem, &own.key_pem);
    let (strangers0, handshakes0) = (
        s.refused(Which::Primary, "raft_strangers"),
        s.refused(Which::Primary, "raft_handshake_failures"),
    );

    let t0 = Instant::now();
    // From a peer's address the node starts a TLS handshake: whatever
    // does not complete one is closed by the handshake deadline (2 s).
    let wait = Duration::from_secs(2);
    let mut deliveries = Vec::new();
    // From the attacker's address: 50 plain and 50 TLS connections.
    for _ in 0..50 {
        deliveries.push((
            "plain from the attacker",
            send_plain(&s.attacker, primary, vec![proposal.clone()], wait / 10),
        ));
        deliveries.push((
            "TLS (own CA) from the attacker",
            send_tls(
                &s.attacker,
                primary,
                fake.clone(),
                "primary",
                vec![proposal.clone()],
                wait / 10,
            ),
        ));
    }
    // From the backup's address: the next line of defence.
    let from_backup = [
        (
            "plain from the backup's address",
            send_plain(&backup_host, primary, vec![proposal.clone()], 2 * wait),
        ),
        (
            "TLS (own CA) from the backup's address",
            send_tls(
                &backup_host,
                primary,
                fake.clone(),
                "primary",
                vec![proposal.clone()],
                2 * wait,
            ),
        ),
    ];
    let t1 = Instant::now();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for (how, d) in deliveries.iter().chain(from_backup.iter()) {
        *outcomes.entry(format!("{how}: {d:?}")).or_default() += 1;
    }
    println!("{test}: deliveries: {outcomes:#?}");
    let open: Vec<&&str> = deliveries
        .iter()
        .chain(from_backup.iter())
        .filter(|(_, d)| *d == Delivery::Open)
        .map(|(how, _)| how)
        .collect();
    f.check(open.is_empty(), || {
        format!(
            "the node kept {} connections open: {:?}",
            open.len(),
            first(&open)
        )
    });
    // Counted where the node says so.
    let strangers_ok = s.wait_refused(Which::Primary, "raft_strangers", strangers0 + 100, WAIT);
    let handshakes_ok = s.wait_refused(Which::Primary, "raft_handshake_failures", handshakes0 + 2, WAIT);
    let (strangers, handshakes) = (
        s.refused(Which::Primary, "raft_strangers"),
        s.refused(Which::Primary, "raft_handshake_failures"),
    );
    println!(
        "{test}: raft_strangers +{}, raft_handshake_failures +{}",
        strangers - strangers0,
        handshakes - handshakes0
    );
    f.check(strangers_ok, || {
        format!(
            "raft_strangers grew by {} for 100 connections from the attacker",
            strangers - strangers0
        )
    });
    f.check(handshakes_ok, || {
        format!(
            "raft_handshake_failures grew by {} for 2 handshakes without the pair's certificate",
            handshakes - handshakes0
        )
    });
    s.verdict(
        &mut f,
        (t0, t1),
        Expect {
            serving: Which::Primary,
            other_up: true,
            no_failed_probe: true,
        },
    );
    let dump = s.show(Which::Primary).expect("primary answers");
    f.check(!dump.state.server_keys.contains_key("ghost"), || {
        "the ghost key committed".into()
    });
    f.check(dump.state.clients.contains_key("sw-0001"), || {
        "sw-0001 was removed".into()
    });
    rate_limited(&mut f, &s.pair, Which::Primary, STRANGER_LINE, 100);

    // Control: the backup's real credentials from its address: raft takes
    // it. The real backup is frozen for the moment it takes: its link
    // reconnects within milliseconds and would replace (close) this one
    // before the frame is read. The primary commits once it thaws.
    let pki = s.pair.lab.dir().join("pki");
    let backup_identity = cluster::tls::Identity::load(
        &pki.join("ca.crt"),
        &pki.join("backup.crt"),
        &pki.join("backup.key"),
    )
    .expect("the backup's files");
    s.pair.backup.signal(Signal::SIGSTOP);
    let d = send_tls(
        &backup_host,
        primary,
        backup_identity.client_config().expect("client config"),
        "primary",
        vec![proposal.clone()],
        Duration::from_millis(100),
    );
    s.pair.backup.signal(Signal::SIGCONT);
    let committed = wait_for(WAIT, || {
        s.show(Which::Primary)
            .is_ok_and(|d| d.state.server_keys.contains_key("ghost"))
    });
    println!("{test}: control: the same frame with the backup's certificate: {d:?}, committed {committed}");
    f.check(committed, || {
        "control: the same proposal with the backup's real certificate was not committed: the forged \
         frame may be malformed, and the test proves nothing"
            .into()
    });
    f.finish_with(|| s.pair.log_tails(60));
}

// ---------------------------------------------------------------------------
// A2, A3: forged heartbeats.

/// Forged heartbeats for ~10 s: one every half second.
const HEARTBEATS: u32 = 20;
const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
/// The term the issue's attacker used.
const FORGED_TERM: u64 = 3001;

/// Issue item 2: a forged heartbeat from "member 2" at term 3001, every
/// half second for ten seconds while the prober runs. The leader does not
/// step down, not one probe fails, the term stays. Control: a SIGTERM of
/// the primary still hands over within the graceful bound.
#[test]
fn a2_forged_heartbeats_move_no_leadership() {
    let test = "a2_forged_heartbeats_move_no_leadership";
    if !lab_available(test) {
        return;
    }
    let _one = one_lab();
    let mut s = Scene::start(test, PairOptions::default());
    let mut f = Findings::new(test);
    let primary = SocketAddr::from((s.pair.primary.addr(), RAFT_PORT));
    let strangers0 = s.refused(Which::Primary, "raft_strangers");
    let t0 = Instant::now();
    let made = heartbeat_flood(
        &s.attacker,
        primary,
        frame(&forged_heartbeat(2, 1, FORGED_TERM)),
        HEARTBEATS,
        HEARTBEAT_EVERY,
    );
    let t1 = Instant::now();
    println!(
        "{test}: {made} connections carried a heartbeat at term {FORGED_TERM} in {:?}",
        t1 - t0
    );
    f.check(made > 0, || {
        "the attacker could not even connect: the lab is broken".into()
    });
    let counted = s.wait_refused(Which::Primary, "raft_strangers", strangers0 + made, WAIT);
    let strangers = s.refused(Which::Primary, "raft_strangers") - strangers0;
    println!("{test}: raft_strangers +{strangers}");
    f.check(counted, || {
        format!("raft_strangers grew by {strangers} for {made} connections")
    });
    s.verdict(
        &mut f,
        (t0, t1),
        Expect {
            serving: Which::Primary,
            other_up: true,
            no_failed_probe: true,
        },
    );
    rate_limited(&mut f, &s.pair, Which::Primary, STRANGER_LINE, made);
    s.control_graceful_handover(&mut f);
    f.finish_with(|| s.pair.log_tails(60));
}

/// Issue item 3: the backup stops (SIGTERM); the primary takes over as sole
/// voter; then the forged heartbeats of A2. The sole voter keeps its log
/// and its table, keeps serving, and logs no "SPLIT BRAIN". Control: the
/// backup, started again, rejoins the sole voter and catches up.
#[test]
fn a3_forged_heartbeats_discard_nothing_from_a_sole_voter() {
    let test = "a3_forged_heartbeats_discard_nothing_from_a_sole_voter";
    if !lab_available(test) {
        return;
    }
    let _one = one_lab();
    let mut s = Scene::start(test, PairOptions::default());
    let mut f = Findings::new(test);
    s.pair.backup.signal(Signal::SIGTERM);
    assert_eq!(
        s.pair.backup.process.wait_exit(WAIT),
        Some(0),
        "the backup's graceful stop"
    );
    assert!(
        wait_for(WAIT, || !s
            .pair
            .primary
            .log_lines("took over as sole voter")
            .is_empty()
            && s.show(Which::Primary).is_ok_and(|d| d.status.serving)),
        "the primary did not take over as sole voter:\n{}",
        s.pair.primary.log()
    );
    // The scene as it is now: a sole voter serving alone.
    let old_probe = s.prober.take().expect("prober").finish();
    drop(s.monitor.take());
    let prober = Prober::start(&s.client, "prober-alone", PROBE_TIMEOUT, PROBE_PACE);
    assert!(prober.wait_acks(20), "the sole voter does not serve");
    s.prober = Some(prober);
    s.monitor = Some(Monitor::start(&s.pair, &s.client, SAMPLE));
    s.before = s.show(Which::Primary).expect("the sole voter's table");
    println!(
        "{test}: sole voter serving; term {}, applied {}; the prober acked {} before",
        s.before.status.term, s.before.status.applied_index, old_probe.acked
    );

    let primary = SocketAddr::from((s.pair.primary.addr(), RAFT_PORT));
    let strangers0 = s.refused(Which::Primary, "raft_strangers");
    let t0 = Instant::now();
    let made = heartbeat_flood(
        &s.attacker,
        primary,
        frame(&forged_heartbeat(2, 1, FORGED_TERM)),
        HEARTBEATS,
        HEARTBEAT_EVERY,
    );
    let t1 = Instant::now();
    println!("{test}: {made} connections carried a heartbeat at term {FORGED_TERM}");
    let counted = s.wait_refused(Which::Primary, "raft_strangers", strangers0 + made, WAIT);
    f.check(counted && made > 0, || {
        format!(
            "raft_strangers grew by {} for {made} connections",
            s.refused(Which::Primary, "raft_strangers") - strangers0
        )
    });
    s.verdict(
        &mut f,
        (t0, t1),
        Expect {
            serving: Which::Primary,
            other_up: false,
            no_failed_probe: true,
        },
    );
    // The first prober's grants, acknowledged before the backup stopped,
    // are still there too.
    let dump = s.show(Which::Primary).expect("primary answers");
    let held = dump
        .state
        .clients
        .get("prober")
        .map_or(0, |c| u64::from(c.used_of(&ap())));
    f.check(
        held >= old_probe.acked && held <= old_probe.acked + old_probe.uncertain,
        || {
            format!(
                "the first prober was acknowledged {} (+{} uncertain), the table holds {held}",
                old_probe.acked, old_probe.uncertain
            )
        },
    );
    let split = s.pair.primary.log_lines("SPLIT BRAIN");
    f.check(split.is_empty(), || format!("the primary's log: {split:?}"));
    rate_limited(&mut f, &s.pair, Which::Primary, STRANGER_LINE, made);

    // Control: the backup comes back, rejoins the sole voter, catches up.
    s.pair.restart(Which::Backup);
    let rejoined = wait_for(2 * WAIT, || {
        let (p, b) = (s.show(Which::Primary), s.show(Which::Backup));
        matches!((p, b), (Ok(p), Ok(b)) if b.status.raft_role == "Follower"
            && b.status.applied_index >= p.status.applied_index.min(dump.status.applied_index)
            && !s.pair.backup.run_log_lines("caught up with the log and a voter").is_empty())
    });
    println!("{test}: control: the backup rejoined: {rejoined}");
    f.check(rejoined, || {
        format!(
            "control: the backup did not rejoin: {:?}\n{}",
            s.show(Which::Backup).map(|d| d.status),
            s.pair.backup.log()
        )
    });
    f.finish_with(|| s.pair.log_tails(60));
}

// ---------------------------------------------------------------------------
// A4: holding the peer slots.

/// Connections the attacker holds at once.
const HOLDERS: usize = 256;
/// A holder whose connection was closed connects again after this.
const RECONNECT: Duration = Duration::from_millis(100);

/// Holds `HOLDERS` connections to `to` from `from`, reconnecting each as
/// soon as it is closed, until `stop`; counts connections made.
fn hold_slots(
    from: &Host,
    to: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    made: Arc<AtomicU64>,
) -> std::thread::JoinHandle<u64> {
    in_netns(from, move || {
        common::runtime().block_on(async move {
            let failed = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for _ in 0..HOLDERS {
                let (stop, made, failed) = (stop.clone(), made.clone(), failed.clone());
                tasks.push(tokio::spawn(async move {
                    while !stop.is_cancelled() {
                        let connect =
                            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(to));
                        match connect.await {
                            Ok(Ok(mut s)) => {
                                made.fetch_add(1, Ordering::Relaxed);
                                let mut buf = [0u8; 16];
                                tokio::select! {
                                    _ = stop.cancelled() => return,
                                    _ = s.read(&mut buf) => {}
                                }
                            }
                            _ => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(RECONNECT) => {}
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            failed.load(Ordering::Relaxed)
        })
    })
}

/// Issue item 4: the attacker holds hundreds of connections to the
/// primary's raft port and reconnects each one the moment it is closed,
/// while the backup is killed and started again. The backup rejoins (raft
/// follower, caught up, a voter advertising its configured priority), the
/// primary's log holds a line or two about strangers, not one per
/// connection. Control: a SIGTERM of the primary then still fails over.
#[test]
fn a4_held_connections_do_not_keep_the_backup_out() {
    let test = "a4_held_connections_do_not_keep_the_backup_out";
    if !lab_available(test) {
        return;
    }
    let _one = one_lab();
    let mut s = Scene::start(test, PairOptions::default());
    let mut f = Findings::new(test);
    let primary = SocketAddr::from((s.pair.primary.addr(), RAFT_PORT));
    let strangers0 = s.refused(Which::Primary, "raft_strangers");
    let stop = tokio_util::sync::CancellationToken::new();
    let made = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let holders = hold_slots(&s.attacker, primary, stop.clone(), made.clone());
    assert!(
        wait_for(WAIT, || made.load(Ordering::Relaxed) >= HOLDERS as u64),
        "the attacker could not connect: the lab is broken"
    );
    // The slots are held (or fought for) a while before the backup needs one.
    std::thread::sleep(Duration::from_secs(2));

    // The backup crashes and comes back while the slots are held.
    let flooded = Instant::now();
    s.pair.backup.signal(Signal::SIGKILL);
    // Killed by a signal: no exit code, and it is gone once this returns.
    let _ = s.pair.backup.process.wait_exit(WAIT);
    let killed = Instant::now();
    std::thread::sleep(s.pair.opts.election_timeout() * 2);
    s.pair.restart(Which::Backup);
    let mut last = String::new();
    let rejoined = wait_for(2 * WAIT, || {
        match (s.show(Which::Primary), s.show(Which::Backup)) {
            (Ok(p), Ok(b)) => {
                last = format!(
                    "primary {} {} applied {}; backup {} {} applied {}",
                    p.status.vrrp_state,
                    p.status.raft_role,
                    p.status.applied_index,
                    b.status.vrrp_state,
                    b.status.raft_role,
                    b.status.applied_index
                );
                p.status.serving
                    && b.status.raft_role == "Follower"
                    && b.status.applied_index >= p.status.applied_index
                    && !s
                        .pair
                        .backup
                        .run_log_lines("caught up with the log and a voter")
                        .is_empty()
            }
            (p, b) => {
                last = format!("{:?} / {:?}", p.err(), b.err());
                false
            }
        }
    });
    let back = killed.elapsed();
    // The attack goes on a little longer, then stops.
    std::thread::sleep(Duration::from_secs(1));
    stop.cancel();
    let failed = holders.join().expect("holders");
    let t1 = Instant::now();
    let attempts = made.load(Ordering::Relaxed);
    let strangers = s.refused(Which::Primary, "raft_strangers") - strangers0;
    println!(
        "{test}: {HOLDERS} holders made {attempts} connections ({failed} connects failed) in {:?} \
         ({:.0}/s); raft_strangers +{strangers}; the backup rejoined: {rejoined} after {back:?} ({last})",
        t1 - t0,
        attempts as f64 / (t1 - t0).as_secs_f64()
    );
    f.check(rejoined, || {
        format!(
            "the restarted backup did not rejoin ({last}); its log:\n{}",
            s.pair.backup.log()
        )
    });
    f.check(strangers >= attempts.min(HOLDERS as u64), || {
        format!("raft_strangers grew by {strangers} for {attempts} connections")
    });
    rate_limited(&mut f, &s.pair, Which::Primary, STRANGER_LINE, attempts);
    let warnings = s.pair.primary.log_lines(" WARN ");
    let size = s.pair.primary.log().len();
    println!(
        "{test}: the primary's log: {} warning lines, {size} bytes",
        warnings.len()
    );
    f.check(warnings.len() <= 100, || {
        format!(
            "{} warning lines in the primary's log, e.g. {:?}",
            warnings.len(),
            first(&warnings)
        )
    });

    // The crash of the backup costs the service a sole-voter takeover;
    // nothing acknowledged is lost, the table holds only legitimate work.
    let probe = s.prober.take().expect("prober").finish();
    drop(s.monitor.take());
    let dump = s.show(Which::Primary).expect("primary answers");
    table_unchanged(&mut f, &s.before, &dump, &probe, &s.switches);
    // Before the crash the flood alone may not cost a single probe.
    let before_crash = probe.failures_between(t0, flooded);
    let (gap, _) = probe.max_gap_between(t0, flooded);
    let mdi = s.pair.opts.master_down(100);
    f.check(before_crash.is_empty() && gap < mdi, || {
        format!(
            "under the flood alone {} probes failed ({:?}) and the longest gap was {gap:?}",
            before_crash.len(),
            first(&before_crash)
        )
    });
    // The crash: the primary loses its quorum (one election timeout), takes
    // over as sole voter after two more; the bound of pair_e2e's crash test
    // (a Master_Down_Interval and a generous margin for a loaded machine).
    let bound = s.pair.opts.election_timeout() * 3 + mdi + Duration::from_secs(5);
    println!(
        "{test}: prober acked {}, failed {}; under the flood alone ({:?}): {} failed, longest gap {gap:?}; \
         longest gap of the run {:?} (the backup's crash: a sole-voter takeover)",
        probe.acked,
        probe.failed(),
        flooded - t0,
        before_crash.len(),
        probe.max_gap()
    );
    f.check(probe.max_gap() < bound, || {
        format!(
            "the prober went {:?} without a grant (bound {bound:?})",
            probe.max_gap()
        )
    });
    if s.pair
        .backup
        .run_log_lines("caught up with the log and a voter")
        .is_empty()
    {
        f.finish_with(|| s.pair.log_tails(60));
        return;
    }
    s.control_graceful_handover(&mut f);
    f.finish_with(|| s.pair.log_tails(60));
}

// ---------------------------------------------------------------------------
// A5: forged adverts.

/// Forged adverts go on for this many advert intervals.
const ROUNDS: u32 = 12;
/// Then this many at once, for the log.
const FLOOD: usize = 300;

/// The VRRP refusal counter `cause` on both nodes.
fn vrrp_counts(s: &Scene, cause: &str) -> (u64, u64) {
    (s.refused(Which::Primary, cause), s.refused(Which::Backup, cause))
}

/// Issue item 5: valid adverts at priority 254 from the attacker's own
/// address to 224.0.0.18, every advert interval for twelve intervals, then
/// a flood. The master stays master, the VIP stays, the switches see no
/// gap above Master_Down_Interval; both servers count every advert as
/// `vrrp_unknown_peer` (proof they reached the speakers) and log a line
/// or two. Control: a SIGTERM of the primary hands over at once.
#[test]
fn a5a_adverts_from_a_third_host_are_dropped() {
    let test = "a5a_adverts_from_a_third_host_are_dropped";
    if !lab_available(test) {
        return;
    }
    let _one = one_lab();
    let mut s = Scene::start(test, PairOptions::default());
    let mut f = Findings::new(test);
    let opts = s.pair.opts.clone();
    let forged = [(
        wire::MULTICAST_GROUP,
        advert(&opts, s.attacker.addr, wire::MULTICAST_GROUP, 254),
    )];
    let before = vrrp_counts(&s, "vrrp_unknown_peer");
    let t0 = Instant::now();
    advertise(&s.attacker, &opts, ROUNDS, &forged);
    let n = u64::from(ROUNDS);
    let counted = wait_for(WAIT, || {
        let now = vrrp_counts(&s, "vrrp_unknown_peer");
        now.0 >= before.0 + n && now.1 >= before.1 + n
    });
    let after = vrrp_counts(&s, "vrrp_unknown_peer");
    flood(&s.attacker, FLOOD, &forged);
    let t1 = Instant::now();
    std::thread::sleep(opts.advert() * 2);
    let flooded = vrrp_counts(&s, "vrrp_unknown_peer");
    println!(
        "{test}: {ROUNDS} adverts at priority 254 from {}: vrrp_unknown_peer +{} on the primary, +{} on \
         the backup; after the flood of {FLOOD}: +{} / +{}",
        s.attacker.addr,
        after.0 - before.0,
        after.1 - before.1,
        flooded.0 - before.0,
        flooded.1 - before.1
    );
    f.check(
        counted && after.0 - before.0 == n && after.1 - before.1 == n,
        || {
            format!(
                "vrrp_unknown_peer grew by {} (primary) and {} (backup) for {n} adverts",
                after.0 - before.0,
                after.1 - before.1
            )
        },
    );
    check_vip_on_primary(&mut f, &s);
    s.verdict(
        &mut f,
        (t0, t1),
        Expect {
            serving: Which::Primary,
            other_up: true,
            no_failed_probe: false,
        },
    );
    rate_limited(
        &mut f,
        &s.pair,
        Which::Primary,
        UNTRUSTED_LINE,
        flooded.0 - before.0,
    );
    rate_limited(
        &mut f,
        &s.pair,
        Which::Backup,
        UNTRUSTED_LINE,
        flooded.1 - before.1,
    );
    s.control_graceful_handover(&mut f);
    f.finish_with(|| s.pair.log_tails(60));
}

/// The VIP is on the primary and not on the backup.
fn check_vip_on_primary(f: &mut Findings, s: &Scene) {
    let (p, b) = (
        s.pair.primary.host.has_addr_anywhere(VIP),
        s.pair.backup.host.has_addr_anywhere(VIP),
    );
    f.check(p && !b, || {
        format!("the VIP is on the primary: {p}, on the backup: {b}")
    });
}

/// Issue item 5, the spoofed source: adverts at priority 254 whose IPv4
/// source is the backup's address, to 224.0.0.18. The backup's beacon says
/// it is backup at priority 100: the primary drops every one as
/// `vrrp_contradicted` and stays master.
#[test]
fn a5b_adverts_forged_in_the_backups_name_are_contradicted() {
    let test = "a5b_adverts_forged_in_the_backups_name_are_contradicted";
    if !lab_available(test) {
        return;
    }
    let _one = one_lab();
    let mut s = Scene::start(test, PairOptions::default());
    let mut f = Findings::new(test);
    let opts = s.pair.opts.clone();
    let forged = [(
        wire::MULTICAST_GROUP,
        advert(&opts, s.pair.backup.addr(), wire::MULTICAST_GROUP, 254),
    )];
    let before = s.refused(Which::Primary, "vrrp_contradicted");
    let t0 = Instant::now();
    advertise(&s.attacker, &opts, ROUNDS, &forged);
    let n = u64::from(ROUNDS);
    let counted = s.wait_refused(Which::Primary, "vrrp_contradicted", before + n, WAIT);
    let after = s.refused(Which::Primary, "vrrp_contradicted");
    flood(&s.attacker, FLOOD, &forged);
    let t1 = Instant::now();
    std::thread::sleep(opts.advert() * 2);
    let flooded = s.refused(Which::Primary, "vrrp_contradicted");
    println!(
        "{test}: {ROUNDS} adverts at priority 254 in the backup's name: vrrp_contradicted +{} on the \
         primary; after the flood of {FLOOD}: +{}",
        after - before,
        flooded - before
    );
    f.check(counted && after - before == n, || {
        format!("vrrp_contradicted grew by {} for {n} adverts", after - before)
    });
    check_vip_on_primary(&mut f, &s);
    s.verdict(
        &mut f,
        (t0, t1),
        Expect {
            serving: Which::Primary,
            other_up: true,
            no_failed_probe: false,
        },
    );
    rate_limited(
        &mut f,
        &s.pair,
        Which::Primary,
        CONTRADICTED_LINE,
        flooded - before,
    );
    s.control_graceful_handover(&mut f);
    f.finish_with(|| s.pair.log_tails(60));
}

/// Issue item 5, the scenario it named: a pair with `vrrp.unicast_peers`
/// (each server the other's address). Adverts at priority 254 forged in
/// the backup's name, unicast to the primary, and in the primary's name,
/// unicast to the backup, and the attacker's own unicast to the primary:
/// nobody gives up or takes the VIP, the primary serves throughout, each
/// node counts the forgeries in its peer's name as `vrrp_contradicted`.
#[test]
fn a5c_unicast_pair_ignores_forgeries_in_either_name() {
    let test = "a5c_unicast_pair_ignores_forgeries_in_either_name";
    if !lab_available(test) {
        return;
    }
    let _one = one_lab();
    let mut s = Scene::start(
        test,
        PairOptions {
            unicast: true,
            ..PairOptions::default()
        },
    );
    let mut f = Findings::new(test);
    let opts = s.pair.opts.clone();
    let (a, b) = (s.pair.primary.addr(), s.pair.backup.addr());
    let in_names = [(a, advert(&opts, b, a, 254)), (b, advert(&opts, a, b, 254))];
    let own = [(a, advert(&opts, s.attacker.addr, a, 254))];
    let before = vrrp_counts(&s, "vrrp_contradicted");
    let unknown0 = s.refused(Which::Primary, "vrrp_unknown_peer");
    let t0 = Instant::now();
    let all: Vec<(Ipv4Addr, Vec<u8>)> = in_names.iter().chain(own.iter()).cloned().collect();
    advertise(&s.attacker, &opts, ROUNDS, &all);
    let n = u64::from(ROUNDS);
    let counted = wait_for(WAIT, || {
        let now = vrrp_counts(&s, "vrrp_contradicted");
        now.0 >= before.0 + n && now.1 >= before.1 + n
    });
    let after = vrrp_counts(&s, "vrrp_contradicted");
    let unknown = s.refused(Which::Primary, "vrrp_unknown_peer") - unknown0;
    flood(&s.attacker, FLOOD, &in_names);
    let t1 = Instant::now();
    std::thread::sleep(opts.advert() * 2);
    let flooded = vrrp_counts(&s, "vrrp_contradicted");
    println!(
        "{test}: {ROUNDS} rounds: vrrp_contradicted +{} on the primary, +{} on the backup; \
         vrrp_unknown_peer +{unknown} on the primary; after the flood of {FLOOD}: +{} / +{}",
        after.0 - before.0,
        after.1 - before.1,
        flooded.0 - before.0,
        flooded.1 - before.1
    );
    f.check(
        counted && after.0 - before.0 == n && after.1 - before.1 == n,
        || {
            format!(
                "vrrp_contradicted grew by {} (primary) and {} (backup) for {n} adverts each",
                after.0 - before.0,
                after.1 - before.1
            )
        },
    );
    f.check(unknown == n, || {
        format!("vrrp_unknown_peer grew by {unknown} on the primary for {n} adverts")
    });
    check_vip_on_primary(&mut f, &s);
    s.verdict(
        &mut f,
        (t0, t1),
        Expect {
            serving: Which::Primary,
            other_up: true,
            no_failed_probe: false,
        },
    );
    rate_limited(
        &mut f,
        &s.pair,
        Which::Primary,
        CONTRADICTED_LINE,
        flooded.0 - before.0,
    );
    rate_limited(
        &mut f,
        &s.pair,
        Which::Backup,
        CONTRADICTED_LINE,
        flooded.1 - before.1,
    );
    rate_limited(&mut f, &s.pair, Which::Primary, UNTRUSTED_LINE, unknown);
    s.control_graceful_handover(&mut f);
    f.finish_with(|| s.pair.log_tails(60));
}

/// Issue item 5, the other direction: a priority-0 advert in the primary's
/// name ("I am leaving"), every advert interval, heard by the backup. The
/// primary's beacon does not say it leaves: the backup drops each as
/// `vrrp_contradicted`, does not take the VIP, and does not take over as
/// sole voter. Control: the primary's real SIGTERM, whose priority 0 its
/// beacon announces, hands over at once, and the backup then does take
/// over as sole voter.
#[test]
fn a5d_forged_priority_zero_hands_nothing_over() {
    let test = "a5d_forged_priority_zero_hands_nothing_over";
    if !lab_available(test) {
        return;
    }
    let _one = one_lab();
    let mut s = Scene::start(test, PairOptions::default());
    let mut f = Findings::new(test);
    let opts = s.pair.opts.clone();
    let forged = [(
        wire::MULTICAST_GROUP,
        advert(&opts, s.pair.primary.addr(), wire::MULTICAST_GROUP, 0),
    )];
    let before = s.refused(Which::Backup, "vrrp_contradicted");
    let t0 = Instant::now();
    advertise(&s.attacker, &opts, ROUNDS, &forged);
    let n = u64::from(ROUNDS);
    let counted = s.wait_refused(Which::Backup, "vrrp_contradicted", before + n, WAIT);
    let after = s.refused(Which::Backup, "vrrp_contradicted");
    let t1 = Instant::now();
    println!(
        "{test}: {ROUNDS} priority-0 adverts in the primary's name: vrrp_contradicted +{} on the backup",
        after - before
    );
    f.check(counted && after - before == n, || {
        format!(
            "vrrp_contradicted grew by {} on the backup for {n} adverts",
            after - before
        )
    });
    check_vip_on_primary(&mut f, &s);
    s.verdict(
        &mut f,
        (t0, t1),
        Expect {
            serving: Which::Primary,
            other_up: true,
            no_failed_probe: false,
        },
    );
    let took = s.pair.backup.log_lines("took over as sole voter");
    f.check(took.is_empty(), || format!("the backup took over: {took:?}"));
    s.control_graceful_handover(&mut f);
    f.check(
        wait_for(WAIT, || {
            !s.pair.backup.log_lines("took over as sole voter").is_empty()
        }),
        || "control: after the real priority 0 the backup never took over as sole voter".into(),
    );
    f.finish_with(|| s.pair.log_tails(60));
}

/// A variation the issue's items 3 and 5 together suggest: the backup is
/// stopped (maintenance; the primary serves as sole voter), and the
/// attacker advertises at priority 254 in the backup's name. With no
/// backup there is nobody to hand the VIP to: an advert in its name that
/// made the primary yield would leave nobody serving for as long as the
/// attacker goes on. The sole voter keeps the VIP and serves throughout.
/// Control: the real backup, started again, rejoins.
#[test]
fn a5e_forged_adverts_in_a_stopped_backups_name_take_no_service() {
    let test = "a5e_forged_adverts_in_a_stopped_backups_name_take_no_service";
    if !lab_available(test) {
        return;
    }
    let _one = one_lab();
    let mut s = Scene::start(test, PairOptions::default());
    let mut f = Findings::new(test);
    s.pair.backup.signal(Signal::SIGTERM);
    assert_eq!(
        s.pair.backup.process.wait_exit(WAIT),
        Some(0),
        "the backup's graceful stop"
    );
    assert!(
        wait_for(WAIT, || !s
            .pair
            .primary
            .log_lines("took over as sole voter")
            .is_empty()
            && s.show(Which::Primary).is_ok_and(|d| d.status.serving)),
        "the primary did not take over as sole voter:\n{}",
        s.pair.primary.log()
    );
    drop(s.prober.take());
    drop(s.monitor.take());
    let prober = Prober::start(&s.client, "prober-alone", PROBE_TIMEOUT, PROBE_PACE);
    assert!(prober.wait_acks(20), "the sole voter does not serve");
    s.prober = Some(prober);
    s.monitor = Some(Monitor::start(&s.pair, &s.client, SAMPLE));
    s.before = s.show(Which::Primary).expect("the sole voter's table");
    s.vrrp_changes = (
        s.pair.primary.log_lines("VRRP state change").len(),
        s.pair.backup.log_lines("VRRP state change").len(),
    );

    let opts = s.pair.opts.clone();
    let forged = [(
        wire::MULTICAST_GROUP,
        advert(&opts, s.pair.backup.addr(), wire::MULTICAST_GROUP, 254),
    )];
    let refused0 = s
        .show(Which::Primary)
        .map(|d| d.status.refused)
        .unwrap_or_default();
    let t0 = Instant::now();
    advertise(&s.attacker, &opts, ROUNDS, &forged);
    let t1 = Instant::now();
    let refused = s
        .show(Which::Primary)
        .map(|d| d.status.refused)
        .unwrap_or_default();
    println!("{test}: {ROUNDS} adverts at priority 254 in the stopped backup's name; refused before {refused0:?}, after {refused:?}");
    check_vip_on_primary(&mut f, &s);
    s.verdict(
        &mut f,
        (t0, t1),
        Expect {
            serving: Which::Primary,
            other_up: false,
            no_failed_probe: false,
        },
    );

    // Control: the backup comes back and rejoins.
    s.pair.restart(Which::Backup);
    let rejoined = wait_for(2 * WAIT, || {
        matches!((s.show(Which::Primary), s.show(Which::Backup)), (Ok(p), Ok(b)) if p.status.serving
            && b.status.raft_role == "Follower"
            && b.status.applied_index >= p.status.applied_index
            && !s.pair.backup.run_log_lines("caught up with the log and a voter").is_empty())
    });
    println!("{test}: control: the backup rejoined: {rejoined}");
    f.check(rejoined, || {
        format!(
            "control: the backup did not rejoin: {:?}\n{}",
            s.show(Which::Backup).map(|d| d.status),
            s.pair.backup.log()
        )
    });
    f.finish_with(|| s.pair.log_tails(60));
}

/// A thread that repeats `send` every 2 ms until finished or dropped: a
/// test that fails half-way leaves no injector running into the next
/// test's namespaces.
struct Injector {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Injector {
    fn start(send: impl Fn() + Send + 'static) -> Injector {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    send();
                    sent += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                sent
            }
        });
        Injector {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops it; how many it sent.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().expect("injector"))
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A graceful stop's hold, attacked. The stopping primary keeps the VIP
/// after its priority-0 advert until it hears the backup's first advert as
/// master (at most one advert interval), so that hosts still sending to it
/// are answered rather than lost. An attacker who could end that hold
/// early need only advertise in the backup's name. Here the backup's own
/// adverts never reach the primary (a filter in the primary's namespace
/// drops VRRP from the backup's address unless it comes from the
/// attacker's MAC), while the attacker floods adverts at priority 254 in
/// the backup's name through the stop: the backup's word (100) contradicts
/// each, so none may count as the new master. The primary accepts no
/// advert at all before it leaves (its exit counters say so) and counts
/// the forgeries as contradicted; the backup takes over as after any
/// graceful stop.
#[test]
fn a5g_forged_adverts_do_not_end_a_graceful_stops_hold() {
    let test = "a5g_forged_adverts_do_not_end_a_graceful_stops_hold";
    if !lab_available(test) {
        return;
    }
    let _one = one_lab();
    let s = Scene::start(test, PairOptions::default());
    let mut f = Findings::new(test);
    let opts = s.pair.opts.clone();
    let (primary, backup) = (s.pair.primary.host.clone(), s.pair.backup.addr());
    // Had the backup been master, the primary would have accepted its
    // adverts already: the count below would say nothing.
    let backup_was_master = s.pair.backup.log_lines("VRRP state change from=Backup to=Master");
    assert!(backup_was_master.is_empty(), "{backup_was_master:?}");
    let attacker_mac = s.attacker.mac();
    for rule in [
        vec!["nft", "add", "table", "netdev", "a5g"],
        "nft add chain netdev a5g in { type filter hook ingress device eth0 priority 0 ; }"
            .split(' ')
            .collect(),
        vec![
            "nft",
            "add",
            "rule",
            "netdev",
            "a5g",
            "in",
            "ether",
            "saddr",
            "!=",
            &attacker_mac,
            "ip",
            "saddr",
            &backup.to_string(),
            "ip",
            "protocol",
            "112",
            "drop",
        ],
    ] {
        primary.run(&rule);
    }

    let forged = advert(&opts, backup, wire::MULTICAST_GROUP, 254);
    let before = s.refused(Which::Primary, "vrrp_contradicted");
    let flood = Injector::start({
        let attacker = s.attacker.clone();
        move || inject(&attacker, wire::MULTICAST_GROUP, vec![forged.clone()])
    });
    assert!(
        s.wait_refused(Which::Primary, "vrrp_contradicted", before + 1, WAIT),
        "the forgeries do not reach the primary"
    );
    let at_sigterm = s.refused(Which::Primary, "vrrp_contradicted");
    let t0 = Instant::now();
    s.pair.primary.signal(Signal::SIGTERM);
    let exited = s.pair.primary.process.wait_exit(WAIT);
    let sent = flood.finish();
    let served = wait_for(WAIT, || s.show(Which::Backup).is_ok_and(|d| d.status.serving));
    let left = s.pair.primary.log_lines("VRRP left");
    println!(
        "{test}: {sent} forged adverts at 254 in the backup's name; primary exited {:?} after SIGTERM; {left:?}",
        t0.elapsed()
    );
    f.check(exited == Some(0), || {
        format!("the primary exited with {exited:?}")
    });
    f.check(served, || {
        format!(
            "the backup did not serve after the primary's graceful stop: {:?}",
            s.show(Which::Backup).map(|d| d.status)
        )
    });
    let line = left.last().cloned().unwrap_or_default();
    f.check(line.contains("adverts_received: 0,"), || {
        format!("the leaving primary accepted an advert while the backup's could not reach it: {line}")
    });
    // Counted at exit: the forgeries that came during the hold, after
    // the count at SIGTERM.
    let at_exit = line
        .split("Contradicted: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok());
    f.check(at_exit.is_some_and(|n| n > at_sigterm), || {
        format!("the leaving primary counted no forgery as contradicted after SIGTERM ({at_sigterm} before): {line}")
    });
    f.finish_with(|| s.pair.log_tails(60));
}

/// The same cause from the other side: the primary crashes (SIGKILL, its
/// host off the link) while the attacker advertises in its name at its
/// own priority, as a live primary would. Its authenticated word has
/// stopped; forgeries in its name must not keep the backup waiting: the
/// backup takes over and serves within the bound of a plain crash
/// (pair_e2e's: Master_Down_Interval, raft's takeover, a margin for a
/// loaded machine). Control: once the forgeries stop, the backup does take
/// over, so the wait was their doing.
///
/// Not run by default: it shows the limit the issue itself draws ("When the
/// cluster link is down, VRRP alone decides, as today"). A crashed primary's
/// word stops, and with a pair's two members the survivor cannot tell a
/// crashed peer from one whose cluster link alone broke (a firewall on the
/// raft port) while VRRP still passes; believing the link over VRRP there
/// would make a pair without a witness serve twice on every such fault.
/// Against this attack what remains is what an attacker on the segment can
/// always do (answer ARP for the VIP): deny service, not take it; the
/// switches' check of the pair's certificate keeps a stolen VIP useless.
/// `cargo test --test trust_attacks -- --ignored a5f` shows it.
#[test]
#[ignore = "documented limit: with the cluster link down VRRP alone decides (Trust I, item 5)"]
fn a5f_forged_adverts_in_a_crashed_primarys_name_do_not_hold_the_backup() {
    let test = "a5f_forged_adverts_in_a_crashed_primarys_name_do_not_hold_the_backup";
    if !lab_available(test) {
        return;
    }
    let _one = one_lab();
    let mut s = Scene::start(test, PairOptions::default());
    let mut f = Findings::new(test);
    let opts = s.pair.opts.clone();
    let mdi = opts.master_down(100);
    let bound = mdi + opts.election_timeout() * 3 + Duration::from_secs(5);
    // The forgeries go on well past the bound.
    let rounds = u32::try_from((bound + Duration::from_secs(3)).as_millis() / u128::from(opts.advert_ms))
        .expect("rounds");
    let forged = vec![(
        wire::MULTICAST_GROUP,
        advert(
            &opts,
            s.pair.primary.addr(),
            wire::MULTICAST_GROUP,
            s.pair.primary.priority,
        ),
    )];
    let attacker = s.attacker.clone();
    let opts2 = opts.clone();
    let forging = std::thread::spawn(move || advertise(&attacker, &opts2, rounds, &forged));
    // A couple of forgeries while the primary lives: they agree with it.
    std::thread::sleep(opts.advert() * 2);
    let killed = Instant::now();
    s.pair.primary.signal(Signal::SIGKILL);
    let host = s.pair.primary.host.clone();
    s.pair.lab.set_port(&host, false);
    let served = wait_for(bound, || s.show(Which::Backup).is_ok_and(|d| d.status.serving));
    let took = killed.elapsed();
    println!(
        "{test}: {rounds} adverts in the crashed primary's name; the backup served within {bound:?}: \
         {served} ({took:?}); its refusals: {:?}",
        s.show(Which::Backup).map(|d| d.status.refused)
    );
    f.check(served, || {
        format!("the backup did not serve within {bound:?} of the primary's crash while forgeries went on")
    });
    forging.join().expect("forger");
    let stopped = Instant::now();
    // Control: without the forgeries the backup takes over.
    let then = wait_for(bound, || s.show(Which::Backup).is_ok_and(|d| d.status.serving));
    println!(
        "{test}: control: serving {then} {:?} after the forgeries stopped",
        stopped.elapsed()
    );
    f.check(then, || {
        format!("control: the backup did not serve within {bound:?} after the forgeries stopped")
    });
    // Nothing acknowledged is lost in the failover.
    s.prober.as_ref().map(|p| p.wait_acks(20));
    let probe = s.prober.take().expect("prober").finish();
    drop(s.monitor.take());
    if let Ok(dump) = s.show(Which::Backup) {
        let held = dump
            .state
            .clients
            .get("prober")
            .map_or(0, |c| u64::from(c.used_of(&ap())));
        f.check(
            held >= probe.acked && held <= probe.acked + probe.uncertain,
            || {
                format!(
                    "acknowledged {} (+{} uncertain), the backup's table holds {held}",
                    probe.acked, probe.uncertain
                )
            },
        );
    }
    let (gap, _) = probe.max_gap_between(killed, Instant::now());
    println!("{test}: the prober's gap across the crash: {gap:?} (bound {bound:?})");
    f.check(gap < bound, || {
        format!("the prober went {gap:?} without a grant across the crash (bound {bound:?})")
    });
    f.finish_with(|| s.pair.log_tails(40));
}
