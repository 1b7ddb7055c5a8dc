//! One server of the pair: the VRRP speaker, the cluster member holding the
//! license table, the license server and its operator endpoint, and the
//! glue that ties them together.
//!
//! # The rules the glue enforces
//!
//! - A node answers license requests (`serving`) exactly while it is VRRP
//!   master *and* raft leader, and only on the VIP (the server's gate). When
//!   serving ends, the server closes its client connections so that clients
//!   reconnect to the new holder.
//! - Leadership follows the VIP: each member names the VRRP master as its
//!   preferred raft leader, so a leader that lost the VIP hands leadership to
//!   the new master as soon as the master's log is caught up.
//! - A VRRP master without a witness takes over as sole voter when VRRP says
//!   the peer is gone: it sent priority 0 (at once once this node leads, or
//!   no longer sees the peer lead), its adverts stopped after this node had
//!   followed it (once raft sees no leader either), or no raft leader has
//!   been seen for two election timeouts (the peer stopped or lost its raft
//!   link). A refused takeover (this node's log cannot be shown complete) is
//!   logged at error level and retried as the status changes, never forced.
//!   With a witness there is no takeover: raft elects, and the preferred
//!   leader brings leadership to the VIP holder.
//! - While this node has not caught up with the log since it started, it
//!   advertises the lowest VRRP priority, so a restarted primary never
//!   preempts with a stale table.
//! - Graceful stop: stop serving (connections close), let requests in flight
//!   commit and be answered, hand the VIP over (priority-0 advert: the peer
//!   takes over at once with `vrrp.pair_handoff`), hand raft leadership to
//!   the peer, and stop the member as soon as the peer leads. The peer, on
//!   the priority-0 evidence, takes over as sole voter (this node is now a
//!   learner) and commits alone; when this node returns it catches up and is
//!   promoted back.
//! - Each server keeps its own license keys (`license.key_files`, verified
//!   against `node.serial` at start) in the table, and its serial with
//!   them (see `keys`): the VIP holder proposes its changes, the other
//!   server submits its own to the leader.
//! - The table's settings are the log's, the same on every member (see
//!   `settings`): the VIP holder proposes its configured ones when they
//!   differ; another server whose configuration differs says so.
//!
//! # Timers
//!
//! With a witness, an isolated former leader keeps serving until raft's
//! check-quorum steps it down, up to two election timeouts after it last
//! heard from a majority; it can commit nothing meanwhile. For no overlap
//! at all with the new holder, keep VRRP's Master_Down_Interval (three
//! adverts plus skew) above two election timeouts (`cluster.tick_ms` times
//! `cluster.election_ticks`).

pub mod applier;
mod beacon;
mod keys;
mod notify;
mod sd_notify;
mod settings;
pub mod store;
mod track;
mod witness;
pub mod yields;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::raft::StateRole;
use cluster::transport::Security;
use cluster::{LogStore, Member, MemberConfig, StoreError, TcpTransport, TransportConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use vrrp::proto::{Reason, State};
use vrrp::sys::Speaker;

pub use applier::{ReplicatedApplier, SharedTable};
pub use store::{init, Start, STORE_FILE};
pub use witness::run_witness;

use crate::config::{ClusterSection, Config, NodeSection, Role, TlsSection};
use crate::proto::NodeStatus;
use crate::server::{now_ms, Applier, Port, Server, StatusHook};
use crate::table::{LicenseTable, TableConfig};
use crate::usage::UsageLog;

/// Why a node could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// An I/O step failed (binding a port, the data directory, VRRP).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The raft log cannot be opened or trusted.
    #[error("raft log: {0}")]
    Log(String),
    /// The member's TLS files cannot be used.
    #[error("cluster link credentials: {0}")]
    Tls(crate::pki::MemberTlsError),
    /// The raft log file cannot be used as it is; `remedy` says what to do.
    #[error("{}", store_refusal(path, source, remedy))]
    Store {
        /// The store's file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        source: Box<StoreError>,
        /// The way out, as commands to run.
        remedy: String,
    },
    /// The raft log holds no log and was not emptied on purpose (`--rejoin`,
    /// a split-brain yield): it never was bootstrapped, or lost its content.
    #[error(
        "raft log {} holds no log: it was never bootstrapped, or lost its content. {remedy}",
        path.display()
    )]
    StoreEmpty {
        /// The store's file.
        path: std::path::PathBuf,
        /// The way out.
        remedy: String,
    },
    /// `vipool init` found a store (or any file) where it would create one.
    #[error(
        "raft log {} already exists: this member is initialized. `vipool init` is only for a \
         brand-new pair; a member whose store is damaged rebuilds from its peer with --rejoin",
        path.display()
    )]
    AlreadyInitialized {
        /// What is in the way.
        path: std::path::PathBuf,
    },
    /// The cluster member stopped on its own (a storage failure).
    #[error("cluster member stopped: {0}")]
    MemberStopped(String),
    /// The trusted issuers or this server's key files cannot be used.
    #[error("license keys: {0}")]
    Keys(crate::config::ConfigError),
    /// A `[notify]` script cannot be used (missing, not executable,
    /// writable by every user).
    #[error("notify scripts: {0}")]
    Notify(crate::config::ConfigError),
    /// A `[[track.script]]` program cannot be used (missing, not
    /// executable, writable by every user).
    #[error("track scripts: {0}")]
    Track(crate::config::ConfigError),
}

/// A refused store, named once: most store errors name the file themselves.
fn store_refusal(path: &std::path::Path, source: &StoreError, remedy: &str) -> String {
    if source.to_string().contains(&path.display().to_string()) {
        format!("{source}. {remedy}")
    } else {
        format!("raft log {}: {source}. {remedy}", path.display())
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Io { what, source }
}

/// The lowest priority a backup may advertise: what a node that is not
/// caught up uses, so that it never preempts.
pub const BEHIND_PRIORITY: u8 = 1;

/// How often a server compares its keys in the table with its configuration.
const KEY_CHECK: Duration = Duration::from_secs(2);

/// The state of [`Glue::sync_keys`].
#[derive(Default)]
struct KeySync {
    /// The round in flight.
    task: Option<tokio::sync::oneshot::Receiver<usize>>,
    /// When the last round started.
    checked: Option<Instant>,
    /// Rounds in a row that had something to change.
    rounds: u32,
    /// Serving at the last check.
    serving: bool,
}

/// What the glue publishes for `vipool show status` and the metrics.
#[derive(Debug, Clone, Default)]
struct PairView {
    vrrp_state: String,
    raft_role: String,
    term: u64,
    commit: u64,
    /// The VRRP status as last published (priority, master, counters,
    /// drops by reason).
    vrrp: Option<vrrp::sys::Status>,
    /// The raft leader, by id.
    leader: Option<u64>,
    /// The last index of this member's log.
    last_index: u64,
    /// As leader: each other member's matched index.
    progress: Vec<(u64, u64)>,
    /// Whether this member's log is known to be complete.
    in_sync: bool,
    /// The raft learners (a peer that a sole voter took over from).
    learners: Vec<u64>,
}

/// A VRRP drop reason as `show status` and the metrics name it.
fn drop_name(reason: vrrp::proto::DropReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{reason:?}"))
}

/// The transport's refusals, by cause, as `show status` names them.
fn transport_refusals(stats: &cluster::transport::TransportStats) -> Vec<(&'static str, u64)> {
    use std::sync::atomic::Ordering::Relaxed;
    vec![
        ("raft_strangers", stats.strangers.load(Relaxed)),
        ("raft_handshake_failures", stats.handshake_failures.load(Relaxed)),
        (
            "raft_unknown_certificates",
            stats.unknown_certificates.load(Relaxed),
        ),
        ("raft_impersonations", stats.impersonations.load(Relaxed)),
        (
            "raft_refused_connections",
            stats.refused_connections.load(Relaxed),
        ),
        ("raft_oversize", stats.oversize.load(Relaxed)),
        ("raft_wrong_version", stats.wrong_version.load(Relaxed)),
        ("raft_wrong_release", stats.wrong_release.load(Relaxed)),
        ("raft_wrong_cluster", stats.wrong_cluster.load(Relaxed)),
        ("raft_misaddressed", stats.misaddressed.load(Relaxed)),
        ("raft_malformed", stats.malformed.load(Relaxed)),
    ]
}

/// What `vipool show status` adds to the license server's own status on a
/// server and on a witness: the view its loop publishes, and a peer refused
/// for running another release.
fn status_hook(
    view: &Arc<Mutex<PairView>>,
    transport: &TcpTransport,
    data_dir: &std::path::Path,
    start: &Start,
    settings: Option<(TableConfig, SharedTable)>,
) -> StatusHook {
    let view = Arc::clone(view);
    let transport = transport.clone();
    let data_dir = data_dir.to_path_buf();
    let config_file = start.config_file.clone();
    Arc::new(move |status: &mut NodeStatus| {
        if let Some(refusal) = transport.stats().last_release_refusal() {
            status.warnings.push(refusal.to_string());
        }
        // Until an operator acknowledges them (`vipool ack-yield`).
        status.warnings.extend(yields::warnings(&data_dir, &config_file));
        // A server's own settings against the pair's (a witness has none).
        if let Some((configured, table)) = &settings {
            status
                .warnings
                .extend(settings::status_warning(configured, table));
        }
        let v = view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (cause, n) in transport_refusals(transport.stats()) {
            if n > 0 {
                status.refused.insert(cause.to_owned(), n);
            }
        }
        let drops = v.vrrp.iter().flat_map(|s| &s.counters.drops);
        for (reason, n) in drops {
            status.refused.insert(format!("vrrp_{}", drop_name(*reason)), *n);
        }
        status.vrrp_state = v.vrrp_state;
        status.raft_role = v.raft_role;
        status.term = v.term;
        // The view is refreshed by the loop; the table is read now.
        // Committed is never behind applied.
        status.commit_index = v.commit.max(status.applied_index);
    })
}

/// What a server and a witness both start from: the raft log on disk, the
/// transport bound to the raft port, and the member's configuration.
///
/// The raft port is bound first: a second process started with the same
/// configuration (say `--rejoin` while the service runs) stops there,
/// before it touches the store.
async fn raft_parts(
    node: &NodeSection,
    cluster: &ClusterSection,
    tls: &TlsSection,
    role: Role,
    start: &Start,
) -> Result<RaftParts, NodeError> {
    let me = node.id;
    let (security, identity) = tls_security(node, cluster, tls)?;
    let listen = cluster
        .listen_address(me)
        .ok_or_else(|| NodeError::Log(format!("member {me} has no address in cluster.peers")))?;
    let mut tcfg = TransportConfig::new(node.cluster_id, me, listen, security);
    tcfg.peers = cluster.peers_except(me);
    // Peers accept our connections only from the address they know us by.
    tcfg.source = cluster.peer(me).map(|p| p.address.ip());
    tcfg.max_frame = cluster.max_frame;
    tcfg.max_message = cluster.max_message;
    // Every member must run the same release: frames of another are refused.
    tcfg.release = env!("CARGO_PKG_VERSION").to_owned();
    // A peer back from a crash or a partition is reconnected within one
    // election timeout, not after the default two seconds of backoff: until
    // then no leadership can move to the VIP holder.
    let election_timeout = cluster.tick() * u32::try_from(cluster.election_ticks).unwrap_or(u32::MAX);
    tcfg.backoff_max = tcfg.backoff_max.min(election_timeout).max(tcfg.backoff_min);
    let (transport, listener) = TcpTransport::bind(tcfg)
        .await
        .map_err(io(format!("binding raft port {listen}")))?;

    let store = store::open_log(node, role, start)?;
    let flush_times = store.flush_times();

    let mut mcfg = MemberConfig::new(me);
    mcfg.tick = cluster.tick();
    mcfg.request_timeout = cluster.request_timeout();
    mcfg.node.election_tick = cluster.election_ticks;
    mcfg.node.heartbeat_tick = cluster.heartbeat_ticks;
    mcfg.node.snapshot_interval = cluster.snapshot_interval;
    Ok(RaftParts {
        store,
        flush_times,
        transport,
        listener,
        member: mcfg,
        identity,
    })
}

/// What a server and a witness both start from (see [`raft_parts`]).
struct RaftParts {
    store: LogStore,
    /// How long the store's durable writes take (for the metrics).
    flush_times: Arc<cluster::FlushTimes>,
    transport: TcpTransport,
    listener: TcpListener,
    member: MemberConfig,
    /// This member's certificate: the cluster link's, and the one the
    /// node shows switches and operators.
    identity: Arc<cluster::tls::Identity>,
}

/// The cluster link's credentials: this member's certificate, checked as
/// its peers will check it, and the name each peer's certificate carries.
fn tls_security(
    node: &NodeSection,
    cluster: &ClusterSection,
    tls: &TlsSection,
) -> Result<(Security, Arc<cluster::tls::Identity>), NodeError> {
    let (ca, cert, key) = tls.files(&node.name);
    let member = crate::pki::member_identity(&ca, &cert, &key, &node.name).map_err(NodeError::Tls)?;
    let left = member.info.remaining();
    if left < crate::pki::EXPIRY_WARNING {
        warn!(
            cert = %cert.display(),
            days = left.as_secs() / 86_400,
            "this member's certificate expires soon: issue a new one with `vipool pki member` and restart"
        );
    }
    info!(cert = %cert.display(), ca = %ca.display(), "cluster link: mutual TLS 1.3 with the pair's CA");
    let names = cluster.peers.iter().map(|p| (p.id, p.name.clone())).collect();
    let identity = Arc::new(member.identity);
    let security = Security::Tls {
        identity: Arc::clone(&identity),
        names,
    };
    Ok((security, identity))
}

/// Runs one server node until `stop` resolves, then stops gracefully.
///
/// # Errors
/// The node could not start (ports, data directory, raft log, VRRP), or a
/// part of it failed while running.
pub async fn run(
    config: Config,
    start: Start,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let me = config.node.id;
    let peer = config.pair_peer().id;
    let has_witness = config.cluster.has_witness();
    let vip = config.client_vip();

    // Before anything starts: a server whose keys cannot be verified would
    // serve a pool it cannot prove.
    let (trusted, own_keys) = config.load_server_keys().map_err(NodeError::Keys)?;
    // A script the node would run as its own user must be safe to run.
    config
        .notify
        .check_files()
        .map_err(|p| NodeError::Notify(crate::config::ConfigError::Invalid(p)))?;
    for missing in config
        .track
        .check_files()
        .map_err(|p| NodeError::Track(crate::config::ConfigError::Invalid(p)))?
    {
        warn!("{missing}");
    }
    for entry in own_keys.iter().filter(|e| !e.counts_at(now_ms())) {
        warn!(
            key_id = %entry.key.key_id, file = %entry.path.display(), line = entry.line,
            "a key of this server's key files does not count now (expired, or not valid yet)"
        );
    }
    info!(
        issuers = trusted.len(),
        keys = own_keys.len(),
        serial = config.serial(),
        "license keys verified"
    );

    let RaftParts {
        store,
        flush_times,
        transport,
        listener: raft_listener,
        member: mcfg,
        identity,
    } = raft_parts(&config.node, &config.cluster, &config.tls, Role::Server, &start).await?;
    let election_timeout = mcfg.tick * u32::try_from(mcfg.node.election_tick).unwrap_or(u32::MAX);
    // Every member starts from the SPEC's settings: the log (or the
    // snapshot the store holds) sets the pair's, whatever this node's
    // configuration says; see `settings`.
    // Written only while this node serves: see `usage`.
    let (serving_tx, serving) = watch::channel(false);
    let usage = match config.usage_config() {
        Some(usage) => Some(
            UsageLog::open(&usage, &config.node.name)
                .map_err(io(format!(
                    "opening the usage log {} (license.usage_log)",
                    usage.path.display()
                )))?
                .while_serving(serving.clone()),
        ),
        None => None,
    };
    let table = SharedTable::with_usage(LicenseTable::new(TableConfig::default()), usage);
    // No initial voters: the store was bootstrapped by `vipool init`, or
    // waits for the leader's snapshot (`--rejoin`, a yield).
    let member = Member::start(mcfg, store, table.clone(), &[], Arc::new(transport.clone()))
        .map_err(|e| NodeError::Log(e.to_string()))?;
    transport.attach(raft_listener, Arc::new(member.clone()));

    let client_addr = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), config.license.client_port);
    let client_listener = TcpListener::bind(client_addr)
        .await
        .map_err(io(format!("binding client port {client_addr}")))?;
    let operator_addr = config.operator_address();
    let operator_listener = TcpListener::bind(operator_addr)
        .await
        .map_err(io(format!("binding operator endpoint {operator_addr}")))?;
    let metrics_listener = match config.metrics.listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(io(format!(
            "binding the metrics listener {addr} (metrics.listen)"
        )))?),
        None => None,
    };

    // Interfaces are read before the speaker starts: it never contends
    // with a priority a tracked uplink that is down would lower.
    let tracking = track::Tracking::start(&config.track)
        .await
        .map_err(io("tracking interfaces (a netlink socket)"))?;
    let speaker_config = config.speaker_config();
    let priority = speaker_config.vrrp.priority;
    let advert = Duration::from_millis(u64::from(config.vrrp.advert_interval_ms));
    let speaker = Speaker::start(speaker_config)
        .await
        .map_err(io(format!("starting VRRP on {}", config.vrrp.interface)))?;
    // Validation insists on an IPv4 peer address for VRRP.
    let peer_address = config.vrrp_peer_address().ok_or_else(|| NodeError::Io {
        what: "vrrp.peer_address".into(),
        source: std::io::Error::other("the pair peer has no IPv4 address for VRRP"),
    })?;
    let beacons = beacon::Beacons::install(&transport, peer, peer_address, speaker.peer_claims(), advert);

    let applier = Arc::new(ReplicatedApplier::new(
        member.clone(),
        table.clone(),
        Some(vip.to_string()),
    ));
    let (soon_tx, soon) = watch::channel(false);
    let view = Arc::new(Mutex::new(PairView::default()));
    let hook = status_hook(
        &view,
        &transport,
        &config.node.data_dir,
        &start,
        Some((config.table_config(), table.clone())),
    );
    let hook = track::status_hook(hook, tracking.subscribe());
    let server_shutdown = CancellationToken::new();
    let mut server_config = config.server_config();
    // Switches and operators see the node's member certificate, which names
    // the license server; they show theirs.
    server_config.tls = Some(crate::tls::ServerTls::new(&identity).map_err(|e| NodeError::Io {
        what: "client TLS".into(),
        source: std::io::Error::other(e),
    })?);
    server_config.trusted = trusted;
    let server = Arc::new(
        Server::with_status_hook(
            Arc::clone(&applier),
            server_config,
            serving,
            server_shutdown.clone(),
            hook,
        )
        .with_serving_soon(soon),
    );
    info!(
        node = %config.node.name, id = me, peer, %vip, raft = %transport.local_addr(),
        client = %client_addr, operator = %operator_addr,
        "node up: VRRP, cluster member and license server started"
    );
    let failovers = Arc::new(crate::metrics::FailoverLog::default());
    if let Some(listener) = metrics_listener {
        let source = metrics_source(&config, &server, &view, &flush_times, &failovers, peer_address);
        let source = track::metrics_source(source, tracking.subscribe());
        tokio::spawn(crate::metrics::serve(listener, source, server_shutdown.clone()));
    }
    sd_notify::notify(sd_notify::READY);
    let running = Arc::clone(&server);
    let server_task = tokio::spawn(async move {
        running
            .run_on(vec![
                (client_listener, Port::Client),
                (operator_listener, Port::Operator),
            ])
            .await
    });

    let notifier = notify::Notifier::start(&config.notify, &config.node.name, &vip.to_string());
    notify::announce(&config.notify);
    let glue_stop = CancellationToken::new();
    let glue = Glue {
        me,
        peer,
        has_witness,
        priority,
        advertised: priority,
        member: member.clone(),
        applier,
        config: config.clone(),
        serving: serving_tx,
        soon: soon_tx,
        role: None,
        view,
        peer_left: None,
        last_refusal: None,
        log: Arc::default(),
        keys: KeySync::default(),
        settings: settings::SettingsSync::new(config.table_config(), config.node.name.clone()),
        own_keys,
        preferred: None,
        followed_master: false,
        leaderless_since: None,
        election_timeout,
        beacons: Arc::clone(&beacons),
        advert,
        failovers,
        peer_served_at: None,
        heard: (0, 0),
        became_master: None,
        notifier: notifier.clone(),
        track: tracking,
        faulted: false,
    };
    let mut glue_task = tokio::spawn(glue.run(speaker, glue_stop.clone()));

    let ended = tokio::select! {
        () = stop => None,
        ended = &mut glue_task => Some(ended),
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            glue_stop.cancel();
            glue_task.await
        }
    };
    // A stopping node still lets its last hooks run (bounded by their timeout).
    let hook_wait = Duration::from_millis(config.notify.timeout_ms);
    let (serving_tx, speaker) = match ended {
        Ok(Ok(parts)) => parts,
        Ok(Err(e)) => {
            error!(error = %e, "stopping on failure");
            notifier.notify(notify::Event::Fault, None, Some(&e.to_string()));
            server_shutdown.cancel();
            let _ = server_task.await;
            member.shutdown().await;
            transport.shutdown();
            notifier.finish(hook_wait).await;
            return Err(e);
        }
        Err(e) => {
            notifier.notify(notify::Event::Fault, None, Some("the node's glue task failed"));
            server_shutdown.cancel();
            member.shutdown().await;
            transport.shutdown();
            notifier.finish(hook_wait).await;
            return Err(NodeError::Io {
                what: "glue task".into(),
                source: std::io::Error::other(e),
            });
        }
    };

    // Graceful stop: nothing more is answered, the VIP moves, then leadership.
    info!("stopping: serving ends, VIP and leadership go to the peer");
    sd_notify::notify(sd_notify::STOPPING);
    if serving_tx.send_replace(false) {
        notifier.notify(notify::Event::Stopped, None, Some("graceful stop"));
    }
    // No new connection from here on: a client that connected now would
    // lose its packets when the VIP moves a few milliseconds later.
    server.stop_accepting();
    // Requests in flight are answered (they commit, this node still leads)
    // before the VIP leaves: after that, their answers could not reach the
    // clients. New requests are refused from now on, so this ends. And the
    // client connections close while the VIP is still here: a request sent
    // on one as the VIP leaves would be lost until a TCP retransmission
    // (see `Server::client_connections`).
    let drain = Instant::now() + config.cluster.request_timeout().min(Duration::from_secs(1));
    while (server.in_flight() > 0 || server.client_connections() > 0) && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    member.set_preferred_leader(Some(peer)).await;
    // Leadership goes as soon as the priority-0 advert is out (the peer,
    // with pair_handoff, is master from then on and prefers itself), not
    // after the VIP removal and the rest of the speaker's stop: those take
    // tens of milliseconds that would add to the clients' gap. Handing it
    // over before the advert would let the peer, still a VRRP backup that
    // prefers this node, hand it straight back.
    // The peer believes our priority-0 advert only once it has our word
    // that we leave (a forged one is dropped): announce it first.
    if !beacons.leave(advert.min(Duration::from_millis(200))).await {
        warn!(
            "the peer did not acknowledge our leaving over the cluster link: it takes the VIP by VRRP alone"
        );
    }
    let mut vrrp = speaker.status();
    let leaving = async {
        let advert_out = vrrp.wait_for(|s| s.state == State::Initialize);
        // The advert went out, or the speaker stopped without one: hand over anyway.
        let _ = tokio::time::timeout(Duration::from_millis(500), advert_out).await;
        hand_over(&member, me, peer, config.cluster.request_timeout()).await;
    };
    // The speaker deletes its virtual-MAC interface only once leadership
    // is handed over: the kernel does that inside the netlink call, tens of
    // milliseconds on a busy host during which this single thread would
    // send nothing, not even the transfer the new master waits for.
    let left = speaker.shutdown_after(leaving).await;
    match left {
        Ok(counters) => info!(?counters, "VRRP left (priority 0 sent, VIP removed)"),
        Err(e) => warn!(error = %e, "VRRP speaker stopped with an error"),
    }
    transport.shutdown();
    member.shutdown().await;
    server_shutdown.cancel();
    if let Ok(Err(e)) = server_task.await {
        warn!(error = %e, "license server stopped with an error");
    }
    notifier.finish(hook_wait).await;
    if let Some(why) = member.failure() {
        return Err(NodeError::MemberStopped(why));
    }
    info!("stopped");
    Ok(())
}

/// Hands raft leadership to `peer` and waits, up to `wait`, until the peer
/// leads (or this node no longer votes), so that the caller stops the member
/// at once. The peer, master since the priority-0 advert, then takes over as
/// sole voter; a member that stopped acknowledging is not caught up, so the
/// peer does not promote it back and stall on it.
async fn hand_over(member: &Member<SharedTable>, me: u64, peer: u64, wait: Duration) {
    let deadline = Instant::now() + wait;
    loop {
        let Ok(st) = member.status().await else { return };
        if st.leader == Some(peer) || !st.conf.voters.contains(&me) {
            info!(voters = ?st.conf.voters, "the peer leads: leaving the cluster");
            return;
        }
        if st.role == StateRole::Leader {
            member.transfer_leader(peer).await;
        }
        if Instant::now() >= deadline {
            warn!(
                leader = ?st.leader, voters = ?st.conf.voters,
                "the peer did not take leadership in time; stopping anyway"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// VRRP's evidence that the peer is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerGone {
    /// It sent priority 0: a graceful stop.
    Left,
    /// Its adverts stopped (Master_Down_Interval): a crash, or a partition.
    Silent,
}

struct Glue {
    me: u64,
    peer: u64,
    has_witness: bool,
    /// The configured VRRP priority.
    priority: u8,
    /// The priority advertised now.
    advertised: u8,
    member: Member<SharedTable>,
    applier: Arc<ReplicatedApplier>,
    config: Config,
    serving: watch::Sender<bool>,
    /// VRRP master, not serving yet, leadership on its way: the server
    /// holds requests to the VIP until it serves instead of refusing them.
    soon: watch::Sender<bool>,
    /// The raft role last seen (logged when it changes).
    role: Option<StateRole>,
    view: Arc<Mutex<PairView>>,
    /// Why this node became master, when VRRP says the peer is gone: its
    /// evidence, kept until the takeover is done.
    peer_left: Option<PeerGone>,
    /// Warnings that repeat while a condition lasts.
    log: Arc<cluster::ratelog::RateLimiter>,
    /// The last refused takeover: why, when it was logged, retries since.
    last_refusal: Option<(String, Instant, u64)>,
    /// This server's keys in the table.
    keys: KeySync,
    /// This server's table settings against the pair's.
    settings: settings::SettingsSync,
    /// This server's key files, verified.
    own_keys: Vec<crate::license::ServerKeyEntry>,
    /// The preferred leader this member was last told.
    preferred: Option<u64>,
    /// As a backup, a master (other than this node) was heard.
    followed_master: bool,
    /// Since when no raft leader is known.
    leaderless_since: Option<Instant>,
    /// Raft's election timeout (ticks times tick length).
    election_timeout: Duration,
    /// Our VRRP state to the peer, the peer's to our speaker.
    beacons: Arc<beacon::Beacons>,
    /// The VRRP advertisement interval: beacons are refreshed as often.
    advert: Duration,
    /// Takeovers and losses of the service, for the metrics and the page.
    failovers: Arc<crate::metrics::FailoverLog>,
    /// When this node last heard the peer hold the VIP (an advert from it
    /// as master, or its priority-0 advert): where a takeover's gap starts.
    peer_served_at: Option<Instant>,
    /// Adverts and priority-0 adverts accepted, as last seen.
    heard: (u64, u64),
    /// Why this node last became VRRP master.
    became_master: Option<Reason>,
    /// The operator's `[notify]` scripts.
    notifier: notify::Notifier,
    /// What this node tracks (`[track]`): the priority it advertises, and
    /// whether it must give up the VIP.
    track: track::Tracking,
    /// In fault for a tracker: the speaker gave up the VIP and stays out.
    faulted: bool,
}

/// What the metrics and the status page read, at each request: the
/// server's own view, the glue's, the store's write times, the failovers.
fn metrics_source(
    config: &Config,
    server: &Arc<Server<ReplicatedApplier>>,
    view: &Arc<Mutex<PairView>>,
    flush_times: &Arc<cluster::FlushTimes>,
    failovers: &Arc<crate::metrics::FailoverLog>,
    peer_address: std::net::Ipv4Addr,
) -> crate::metrics::Source {
    let (server, view) = (Arc::clone(server), Arc::clone(view));
    let (flush_times, failovers) = (Arc::clone(flush_times), Arc::clone(failovers));
    let names: std::collections::BTreeMap<u64, String> = config
        .cluster
        .peers
        .iter()
        .map(|p| (p.id, p.name.clone()))
        .collect();
    let name = move |id: u64| names.get(&id).cloned().unwrap_or_else(|| format!("member {id}"));
    let node = config.node.name.clone();
    let peer = config.pair_peer().name.clone();
    let configured_priority = config.vrrp.priority;
    let advert_interval = Duration::from_millis(u64::from(config.vrrp.advert_interval_ms));
    let witness = config.cluster.has_witness();
    Arc::new(move || {
        let v = view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let vrrp = v.vrrp.unwrap_or_else(|| vrrp::sys::Status {
            state: State::Initialize,
            priority: configured_priority,
            primary_address: std::net::Ipv4Addr::UNSPECIFIED,
            master: None,
            vip_installed: false,
            accepts_vip_traffic: false,
            counters: vrrp::proto::Counters::default(),
        });
        let c = &vrrp.counters;
        let pair = crate::metrics::PairObserved {
            node: node.clone(),
            peer: peer.clone(),
            peer_address: Some(peer_address),
            own_address: (!vrrp.primary_address.is_unspecified()).then_some(vrrp.primary_address),
            vrrp_master: vrrp.master,
            priority: vrrp.priority,
            configured_priority,
            advert_interval,
            witness,
            transitions: [
                ("master", c.became_master),
                ("backup", c.became_backup),
                ("initialize", c.became_initialize),
            ],
            adverts_sent: c.adverts_sent,
            adverts_received: c.adverts_received,
            drops: vrrp::proto::DropReason::ALL
                .iter()
                .map(|r| (drop_name(*r), c.drops_for(*r)))
                .collect(),
            leader: v.leader.filter(|l| *l != 0).map(&name),
            last_index: v.last_index,
            follower_lag: v
                .progress
                .iter()
                .map(|(id, matched)| (name(*id), v.last_index.saturating_sub(*matched)))
                .collect(),
            in_sync: v.in_sync,
            learners: v.learners.iter().map(|id| name(*id)).collect(),
            fsync: flush_times.snapshot(),
            // Filled in by `track::metrics_source`.
            trackers: Vec::new(),
            track_fault: false,
        };
        crate::metrics::Observed {
            server: server.observe(),
            pair: Some(pair),
            failovers: failovers.snapshot(),
        }
    })
}

impl Glue {
    /// Follows VRRP and raft until `stop`; hands back the serving switch
    /// (dropping it would leave connections open) and the speaker, for the
    /// graceful stop.
    async fn run(
        mut self,
        mut speaker: Speaker,
        stop: CancellationToken,
    ) -> Result<(watch::Sender<bool>, Speaker), NodeError> {
        let mut vrrp = speaker.status();
        let mut transitions = speaker.transitions();
        // Leadership changes wake the glue at once: a new leader that is
        // VRRP master serves without waiting for the next tick.
        let mut leadership = self.member.leadership();
        let mut leadership_open = true;
        // A tracker's change wakes the glue at once.
        let mut track = self.track.subscribe();
        let period = self.config.cluster.tick().max(Duration::from_millis(5));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval(self.advert);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
                _ = refresh.tick() => self.beacons.refresh(),
                _ = vrrp.changed() => {}
                // The sender lives as long as `self.track`: never closed here.
                _ = track.changed() => {}
                changed = leadership.changed(), if leadership_open => {
                    // A closed watch: the member stopped; `step` says why.
                    leadership_open = changed.is_ok();
                }
                t = transitions.recv() => {
                    // Lagged: the status watch still carries the state.
                    if let Ok(t) = t {
                        self.transition(&t);
                    }
                }
                r = speaker.stopped() => {
                    self.set_serving(false, "the VRRP speaker stopped");
                    self.soon.send_replace(false);
                    let source = match r {
                        Ok(_) => std::io::Error::other("stopped by itself"),
                        Err(e) => e,
                    };
                    return Err(NodeError::Io { what: "VRRP speaker".into(), source });
                }
            }
            let status = vrrp.borrow_and_update().clone();
            if status.state == State::Backup && status.master.is_some_and(|m| m != status.primary_address) {
                self.followed_master = true;
            }
            self.heard_from_peer(&status);
            self.follow_fault(&speaker, &status).await;
            let priority = self.step(&status).await?;
            // The peer hears of a change before the adverts that carry it.
            // In fault our word stays "leaving, not master" (see `follow_fault`).
            if !self.faulted {
                self.beacons
                    .publish(status.state == State::Master, self.advertised);
            }
            if let Some(priority) = priority {
                speaker.set_priority(priority).await;
            }
        }
        // Stopping: nothing is coming any more.
        self.soon.send_replace(false);
        Ok((self.serving, speaker))
    }

    /// Gives up the VIP while a tracker without a weight is down, and
    /// contends again once none is (keepalived's FAULT state): the peer
    /// hears that we leave over the cluster link, then our speaker sends
    /// priority 0 once (the peer, believing it, takes over at once),
    /// removes the VIP and stays silent; raft leadership goes to the peer
    /// (see `step`). The FAULT notify script runs as the fault begins.
    async fn follow_fault(&mut self, speaker: &Speaker, vrrp: &vrrp::sys::Status) {
        let state = self.track.state();
        let fault = state.fault();
        if fault == self.faulted {
            return;
        }
        self.faulted = fault;
        if fault {
            let why = state.fault_reason();
            warn!(reason = %why, "tracking: FAULT: giving up the VIP; not contending until the tracker is up");
            self.notifier
                .notify(notify::Event::Fault, Some(self.advertised), Some(&why));
            // Only a master sends priority 0: only then must the peer
            // believe it before it arrives.
            let wait = if vrrp.state == State::Master {
                self.advert.min(Duration::from_millis(200))
            } else {
                Duration::ZERO
            };
            if !self.beacons.fault(wait).await && vrrp.state == State::Master {
                warn!("the peer did not acknowledge our fault over the cluster link: it takes the VIP by VRRP alone");
            }
            speaker.set_fault(true).await;
        } else {
            info!("tracking: fault cleared: contending for the VIP again");
            speaker.set_fault(false).await;
        }
    }

    fn transition(&mut self, t: &vrrp::sys::Transition) {
        info!(from = %t.from, to = %t.to, reason = ?t.reason, "VRRP state change");
        self.peer_left = match (t.to, t.reason) {
            // The peer said it leaves (priority 0).
            (State::Master, Some(Reason::MasterLeft)) => Some(PeerGone::Left),
            // A master we followed fell silent. Silence at start-up, before
            // any master was seen, says nothing about the peer.
            (State::Master, Some(Reason::MasterDown)) if self.followed_master => Some(PeerGone::Silent),
            _ => None,
        };
        if t.to == State::Master {
            self.followed_master = false;
            self.became_master = t.reason;
        }
        let event = match t.to {
            State::Master => Some(notify::Event::Master),
            State::Backup => Some(notify::Event::Backup),
            // Initialize: the speaker stops; STOPPED or FAULT says why.
            State::Initialize => None,
        };
        if let Some(event) = event {
            let reason = t.reason.map(|r| format!("{r:?}"));
            self.notifier
                .notify(event, Some(self.advertised), reason.as_deref());
        }
    }

    /// Notes when the peer was last heard holding the VIP: a new advert
    /// from it as master, or its priority-0 advert (it leaves now).
    fn heard_from_peer(&mut self, status: &vrrp::sys::Status) {
        let c = &status.counters;
        let heard = (c.adverts_received, c.priority_zero_received);
        if heard == self.heard {
            return;
        }
        let left = heard.1 != self.heard.1;
        self.heard = heard;
        let peer_is_master =
            status.state == State::Backup && status.master.is_some_and(|m| m != status.primary_address);
        if left || peer_is_master {
            self.peer_served_at = Some(Instant::now());
        }
    }

    /// One round of the rules; returns a VRRP priority to advertise when it
    /// changes.
    async fn step(&mut self, vrrp: &vrrp::sys::Status) -> Result<Option<u8>, NodeError> {
        let Ok(raft) = self.member.status().await else {
            self.set_serving(false, "the cluster member stopped");
            self.soon.send_replace(false);
            let why = self.member.failure().unwrap_or_else(|| "member stopped".into());
            return Err(NodeError::MemberStopped(why));
        };
        let master = vrrp.state == State::Master;
        let me = self.me;
        let sole = raft.conf.voters == [me];

        // Leadership follows the VIP: the master prefers itself, a backup
        // the master it hears. Without a master, raft elects freely (two
        // backups each preferring the other would bounce leadership).
        let peer_is_master =
            vrrp.state == State::Backup && vrrp.master.is_some_and(|m| m != vrrp.primary_address);
        let preferred = if master {
            Some(me)
        } else if peer_is_master || self.faulted {
            // In fault this node cannot serve: leadership goes to the
            // peer, which takes the VIP.
            Some(self.peer)
        } else {
            None
        };
        if self.preferred != preferred {
            self.preferred = preferred;
            self.member.set_preferred_leader(preferred).await;
        }

        let no_leader = raft.leader.is_none() || raft.leader == Some(0);
        if !no_leader {
            self.leaderless_since = None;
        }
        let leaderless_for = if no_leader {
            self.leaderless_since.get_or_insert_with(Instant::now).elapsed()
        } else {
            Duration::ZERO
        };
        // Takeover without a witness, on VRRP's evidence that the peer is
        // gone: it left or fell silent (then at once, as soon as the peer no
        // longer leads here), or this master has seen no leader for two
        // election timeouts (the peer stopped or lost its raft link).
        if master && !self.has_witness && !sole && raft.conf.voters.contains(&me) {
            let leads = raft.role == StateRole::Leader;
            let peer_leads = raft.leader == Some(self.peer);
            let gone = match self.peer_left {
                // Leaving: it hands leadership over first, then stops.
                Some(PeerGone::Left) => leads || !peer_leads,
                // Silent: gone once raft agrees it no longer leads. Being
                // elected normally needs its vote: then it is alive (this
                // node outranked it and preempted).
                // A transfer to this node also passes through a moment
                // without a leader: wait half an election timeout.
                Some(PeerGone::Silent) => {
                    !leads && !peer_leads && leaderless_for >= self.election_timeout / 2
                }
                None => false,
            };
            if leads && self.peer_left == Some(PeerGone::Silent) {
                self.peer_left = None;
            }
            if gone || leaderless_for >= 2 * self.election_timeout {
                match self.member.take_over_as_sole_voter().await {
                    Ok(()) => {
                        warn!(
                            peer = self.peer,
                            "VRRP master: took over as sole voter; the peer rejoins as a learner"
                        );
                        self.peer_left = None;
                        self.last_refusal = None;
                    }
                    Err(e) => self.refused(&e.to_string()),
                }
            }
        }
        if sole {
            // Already alone: once the peer is back as a voter, it is not gone.
            self.peer_left = None;
        }

        // The raft log says the peer is a learner: its adverts cannot be
        // genuine at more than the lowest priority (see `beacon`).
        let peer_demoted = raft.conf.learners.contains(&self.peer) && raft.conf.voters.contains(&me);
        self.beacons.peer_demoted(peer_demoted, BEHIND_PRIORITY);

        // A node behind the log never outranks the one that has it, and a
        // learner (the peer took over as sole voter and has not promoted
        // it back yet) cannot lead: holding the VIP it could not serve.
        let voter = raft.conf.voters.contains(&me);
        // The configured priority as tracking changes it (`[track]`).
        let base = track::tracked(self.priority, &self.track.state());
        let want = if (raft.in_sync && voter) || sole {
            base
        } else {
            BEHIND_PRIORITY.min(base)
        };
        let mut new_priority = None;
        if want != self.advertised && self.priority != 255 {
            let state = self.track.state();
            if want == base && !state.trackers.is_empty() && self.advertised != BEHIND_PRIORITY {
                // A tracker changed it, not the log.
                track::log_priority(self.priority, want, &state);
            } else {
                info!(
                    priority = want,
                    in_sync = raft.in_sync,
                    voter,
                    "{}",
                    if want == base {
                        "caught up with the log and a voter: advertising the configured VRRP priority"
                    } else {
                        "behind the log or not a voter yet: advertising the lowest VRRP priority until \
                         caught up and promoted"
                    }
                );
            }
            self.advertised = want;
            new_priority = Some(want);
        }

        if self.role != Some(raft.role) {
            debug!(role = ?raft.role, leader = ?raft.leader, vrrp = %vrrp.state, "raft role");
            self.role = Some(raft.role);
        }
        let serve = master && raft.role == StateRole::Leader;
        let why_not = if master {
            "not the raft leader"
        } else {
            "lost the VIP (no longer VRRP master)"
        };
        self.set_serving(serve, why_not);
        self.settings.step(serve, raft.in_sync, &self.applier, &self.log);
        // Leadership is on its way to this master (a handover, a takeover,
        // an election), unless its takeover was refused: then a refusal
        // tells clients more than a wait.
        let soon = master && !serve && voter && self.last_refusal.is_none();
        self.soon.send_if_modified(|s| std::mem::replace(s, soon) != soon);
        // Both servers' keys belong in the pool, whichever leads: the VIP
        // holder proposes its own changes, the other server submits its
        // own to the leader (forwarded by raft).
        let follows = raft.leader.is_some_and(|l| l != 0 && l != me) && raft.role != StateRole::Leader;
        self.sync_keys(serve, follows);
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = PairView {
            vrrp_state: vrrp.state.to_string(),
            raft_role: format!("{:?}", raft.role),
            term: raft.term,
            commit: raft.commit,
            vrrp: Some(vrrp.clone()),
            leader: raft.leader,
            last_index: raft.last_index,
            progress: raft.progress,
            in_sync: raft.in_sync,
            learners: raft.conf.learners.clone(),
        };
        Ok(new_priority)
    }

    /// Logs a refused takeover: at once for a new reason, then once a
    /// minute with the count of retries in between (it is retried at every
    /// change of status, for as long as the cause lasts).
    fn refused(&mut self, why: &str) {
        match &mut self.last_refusal {
            Some((last, at, retries)) if last == why && at.elapsed() < Duration::from_secs(60) => {
                *retries += 1
            }
            _ => {
                let retries = self
                    .last_refusal
                    .as_ref()
                    .filter(|(last, ..)| last == why)
                    .map_or(0, |r| r.2);
                error!(
                    reason = why,
                    retries,
                    "VRRP master but the takeover as sole voter was REFUSED: not serving; \
                     retrying as the status changes (an operator who knows the peer is gone for good can force it)"
                );
                self.last_refusal = Some((why.to_string(), Instant::now(), 0));
            }
        }
    }

    /// Serves or stops serving; `why_not` says why not, when it stops.
    fn set_serving(&mut self, serve: bool, why_not: &str) {
        let changed = self.serving.send_if_modified(|s| {
            let changed = *s != serve;
            *s = serve;
            changed
        });
        if !changed {
            return;
        }
        if !serve {
            self.notifier
                .notify(notify::Event::Stopped, Some(self.advertised), Some(why_not));
            info!(reason = why_not, "not serving: client connections close");
            self.failovers.gave_up(std::time::SystemTime::now(), why_not);
            return;
        }
        // A takeover when the peer was heard holding the VIP since this
        // node last served; the first start of a pair is none.
        match self.peer_served_at.take() {
            Some(since) => {
                let gap = since.elapsed();
                let why = match self.became_master {
                    Some(Reason::MasterLeft) => "the peer left (priority 0)",
                    Some(Reason::MasterDown) => "the peer fell silent (Master_Down_Interval)",
                    Some(Reason::Preempt) => "preempted the peer (higher priority)",
                    _ => "the peer gave up raft leadership",
                };
                info!(
                    gap_ms = gap.as_secs_f64() * 1000.0,
                    reason = why,
                    "serving: VRRP master and raft leader; took over from the peer"
                );
                self.failovers.took_over(std::time::SystemTime::now(), gap, why);
                self.notifier
                    .notify(notify::Event::Serving, Some(self.advertised), Some(why));
            }
            None => {
                info!("serving: VRRP master and raft leader");
                self.notifier
                    .notify(notify::Event::Serving, Some(self.advertised), None);
            }
        }
    }

    /// Brings this server's keys in the table to its configuration (see
    /// `keys.rs`): at once when it starts serving, then every
    /// [`KEY_CHECK`] while it serves or follows a leader, one round at a time.
    fn sync_keys(&mut self, serve: bool, follows: bool) {
        let k = &mut self.keys;
        if let Some(task) = &mut k.task {
            match task.try_recv() {
                Ok(sent) => {
                    k.rounds = if sent == 0 { 0 } else { k.rounds + 1 };
                    k.task = None;
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => k.task = None,
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
        }
        let started_serving = serve && !k.serving;
        k.serving = serve;
        let due = started_serving || k.checked.is_none_or(|at| at.elapsed() >= KEY_CHECK);
        if !(serve || follows) || !due || k.task.is_some() {
            return;
        }
        k.checked = Some(Instant::now());
        let files = self.own_keys.clone();
        let server = self.config.node.name.clone();
        let serial = self.config.serial().to_owned();
        let (applier, member, rounds) = (Arc::clone(&self.applier), self.member.clone(), k.rounds);
        let log = Arc::clone(&self.log);
        if rounds == 5 {
            warn!(
                "this server's license keys are still not in the table after 5 rounds: \
                 is the leader refusing them? (see the leader's log)"
            );
        }
        let (done, task) = tokio::sync::oneshot::channel();
        k.task = Some(task);
        tokio::spawn(async move {
            let now = applier.stamp();
            let changes = applier.read(|t| keys::key_changes(t.state(), &server, &serial, &files, now));
            let sent = changes.len();
            for command in changes {
                let what = match &command {
                    crate::table::Command::InstallServerKey { key, .. } => format!("install {}", key.key_id),
                    crate::table::Command::RemoveServerKey { key_id, .. } => format!("remove {key_id}"),
                    crate::table::Command::ServerSerial { serial, .. } => format!("announce serial {serial}"),
                    _ => continue,
                };
                if serve {
                    match applier.propose(command).await {
                        Ok(Ok(_)) => info!(change = what, "server key change committed"),
                        Ok(Err(e)) => {
                            error!(change = what, error = %e, "server key change refused by the table")
                        }
                        Err(e) => cluster::warn_limited!(
                            log,
                            "key change",
                            change = what,
                            error = %e,
                            "server key change not committed; retried"
                        ),
                    }
                } else {
                    match member.submit(command).await {
                        Ok(()) if rounds == 0 => info!(change = what, "server key change sent to the leader"),
                        Ok(()) => debug!(
                            change = what,
                            rounds, "server key change sent to the leader again"
                        ),
                        Err(e) => debug!(change = what, error = %e, "server key change not sent; retried"),
                    }
                }
            }
            let _ = done.send(sent);
        });
    }
}
