//! One server of the pair: the VRRP speaker, the cluster member holding the
//! license table, the license server and its operator endpoint, and the
//! glue that ties them together.
//!
//! The rules that make the pair (who serves, takeover as sole voter, the
//! VRRP priority, the preferred leader, keys and settings) are a sans-IO
//! state machine in `rules`, whose module doc states them; the glue here
//! only feeds it the VRRP speaker's status and transitions and the cluster
//! member's facts (pushed on one watch, `Member::leadership`) and carries
//! out its actions.
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
mod reload;
mod rules;
mod sd_notify;
mod settings;
#[cfg(test)]
mod sim;
pub mod store;
mod tickets;
mod track;
mod witness;
pub mod yields;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::raft::StateRole;
use cluster::transport::Security;
use cluster::{LogStore, Member, MemberConfig, StoreError, TcpTransport, TransportConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use vrrp::proto::State;
use vrrp::sys::Speaker;

pub use applier::{ReplicatedApplier, SharedTable};
pub use reload::{reload_channel, ReloadError, Reloader, Reloads};
pub use store::{init, Start, STORE_FILE};
pub use witness::run_witness;

use crate::clock::now_ms;
use crate::config::{ClusterSection, Config, NodeSection, Role, TlsSection};
use crate::proto::NodeStatus;
use crate::server::{Applier, Port, Server, StatusHook};
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
    /// `cluster.peers` has no raft address for this member (`node.id`),
    /// so it has nothing to listen on.
    #[error(
        "member {id} has no address in cluster.peers: add this member's raft address there \
         (the same list on every member), or correct node.id"
    )]
    NoRaftAddress {
        /// This member's id (`node.id`).
        id: u64,
    },
    /// The cluster member did not start: its raft log cannot be trusted,
    /// the state machine refused the stored snapshot, or raft refused the
    /// stored state.
    #[error("the cluster member cannot start on its raft log: {0}")]
    MemberStart(#[source] cluster::NodeError),
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
    MemberStopped(#[source] std::sync::Arc<cluster::NodeError>),
    /// The cluster member's task ended without recording why.
    #[error("cluster member stopped without saying why (its task ended)")]
    MemberGone,
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

pub use rules::BEHIND_PRIORITY;

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
/// server and on a witness: the member's facts and log positions as it
/// pushes them, the VRRP speaker's status (none on a witness), and a peer
/// refused for running another release.
fn status_hook(
    facts: watch::Receiver<cluster::Leadership>,
    vrrp: Option<watch::Receiver<vrrp::sys::Status>>,
    transport: &TcpTransport,
    data_dir: &std::path::Path,
    start: &Start,
    settings: Option<(watch::Receiver<settings::Configured>, SharedTable)>,
) -> StatusHook {
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
                .extend(settings::status_warning(&configured.borrow(), table));
        }
        for (cause, n) in transport_refusals(transport.stats()) {
            if n > 0 {
                status.refused.insert(cause.to_owned(), n);
            }
        }
        match &vrrp {
            Some(vrrp) => {
                let v = vrrp.borrow();
                for (reason, n) in &v.counters.drops {
                    status.refused.insert(format!("vrrp_{}", drop_name(*reason)), *n);
                }
                status.vrrp_state = v.state.to_string();
            }
            None => status.vrrp_state = "none (witness)".into(),
        }
        let f = facts.borrow();
        status.raft_role = format!("{:?}", f.role);
        status.term = f.term;
        // The member applies entries before it publishes the positions, so
        // the table read just before may be one step ahead: committed is
        // never behind applied.
        status.commit_index = f.commit.max(status.applied_index);
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
        .ok_or(NodeError::NoRaftAddress { id: me })?;
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
/// Configurations sent through the [`Reloader`] of `reloads` are taken
/// while it runs (SIGHUP; see `config::reload`).
///
/// # Errors
/// The node could not start (ports, data directory, raft log, VRRP), or a
/// part of it failed while running.
pub async fn run(
    config: Config,
    start: Start,
    stop: impl std::future::Future<Output = ()>,
    reloads: Reloads,
) -> Result<(), NodeError> {
    let me = config.node.id;
    let peer = config.pair_peer().id;
    let has_witness = config.cluster.has_witness();
    let vip = config.client_vip();

    // Before anything starts: a server whose keys cannot be verified would
    // serve a pool it cannot prove.
    let (trusted, own_keys) = config.load_server_keys().map_err(NodeError::Keys)?;
    // What this server's configuration says of the pair's settings.
    let configured = settings::Configured {
        table: config.table_config(),
        issuers: trusted.by_name_text(),
    };
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
    // The client port's session tickets, sealed with the pair's keys as
    // the log holds them (see `tickets`).
    let ticketer = crate::tls::PairTicketer::new().map_err(|e| NodeError::Io {
        what: "client TLS session tickets".into(),
        source: std::io::Error::other(e),
    })?;
    // What can fail before the member starts does: a started member's
    // thread must be shut down on the way out.
    let client_addr = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), config.license.client_port);
    let client_listener = crate::server::listen_for_clients(
        client_addr,
        config.license.max_connections,
        "license.max_connections",
    )
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
    // Validation insists on an IPv4 peer address for VRRP.
    let peer_address = config.vrrp_peer_address().ok_or_else(|| NodeError::Io {
        what: "vrrp.peer_address".into(),
        source: std::io::Error::other("the pair peer has no IPv4 address for VRRP"),
    })?;
    // Switches and operators see the node's member certificate, which names
    // the license server; they show theirs.
    let client_tls =
        crate::tls::ServerTls::with_pair_tickets(&identity, Arc::clone(&ticketer)).map_err(|e| {
            NodeError::Io {
                what: "client TLS".into(),
                source: std::io::Error::other(e),
            }
        })?;
    let table =
        SharedTable::with_usage(LicenseTable::new(TableConfig::default()), usage).with_tickets(ticketer);
    // No initial voters: the store was bootstrapped by `vipool init`, or
    // waits for the leader's snapshot (`--rejoin`, a yield). On a thread
    // of its own: its log writes (fsync) would hold up this thread's
    // sockets and timers (the client port's accepts, the beacons).
    let member = Member::start_on_own_thread(
        "vipool-raft",
        mcfg,
        store,
        table.clone(),
        &[],
        Arc::new(transport.clone()),
    )
    .map_err(NodeError::MemberStart)?;
    transport.attach(raft_listener, Arc::new(member.clone()));

    let speaker_config = config.speaker_config();
    let priority = speaker_config.vrrp.priority;
    let advert = Duration::from_millis(u64::from(config.vrrp.advert_interval_ms));
    // On a thread of its own: a raft log flush that a busy disk stretches
    // holds up this thread, and must not hold up the adverts (the peer
    // would take the VIP from a master that never failed) or the
    // Master_Down_Timer.
    let speaker = match Speaker::start_on_own_thread(speaker_config).await {
        Ok(speaker) => speaker,
        Err(e) => {
            member.shutdown().await;
            return Err(io(format!("starting VRRP on {}", config.vrrp.interface))(e));
        }
    };
    let beacons = beacon::Beacons::install(&transport, peer, peer_address, speaker.peer_claims(), advert);

    let applier = Arc::new(ReplicatedApplier::new(
        member.clone(),
        table.clone(),
        Some(vip.to_string()),
    ));
    let (soon_tx, soon) = watch::channel(false);
    let settings = settings::SettingsSync::new(configured, config.node.name.clone());
    let hook = status_hook(
        member.leadership(),
        Some(speaker.status()),
        &transport,
        &config.node.data_dir,
        &start,
        Some((settings.subscribe(), table.clone())),
    );
    let hook = track::status_hook(hook, tracking.subscribe());
    let server_shutdown = CancellationToken::new();
    let mut server_config = config.server_config();
    server_config.tls = Some(client_tls);
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
        let source = metrics_source(
            &config,
            &server,
            (member.leadership(), speaker.status()),
            &flush_times,
            &failovers,
            peer_address,
        );
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
        rules: rules::PairRules::new(rules::RulesConfig {
            me,
            peer,
            has_witness,
            priority,
            election_timeout,
            preempt: config.vrrp.preempt,
        }),
        server: Arc::clone(&server),
        member: member.clone(),
        applier,
        config: config.clone(),
        serving: serving_tx,
        soon: soon_tx,
        log: Arc::default(),
        settings,
        tickets: tickets::TicketRotation::default(),
        own_keys,
        beacons: Arc::clone(&beacons),
        advert,
        failovers,
        notifier: notifier.clone(),
        track: tracking,
        faulted: false,
        reloads: Some(reloads),
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
    // Leadership goes once the VIP is given up (below), not before the
    // priority-0 advert: the peer, still a VRRP backup that prefers this
    // node, would hand it straight back. Nor with the rest of the
    // speaker's stop (deleting its interface), which need not delay it.
    // The peer believes our priority-0 advert only once it has our word
    // that we leave (a forged one is dropped): announce it first.
    if !beacons.leave(advert.min(Duration::from_millis(200))).await {
        warn!(
            "the peer did not acknowledge our leaving over the cluster link: it takes the VIP by VRRP alone"
        );
    }
    let mut vrrp = speaker.status();
    let leaving = async {
        // The speaker keeps the VIP after its priority-0 advert until it
        // hears the new master's first advert, which the new master sends
        // once it has installed the VIP and announced it (gratuitous ARP):
        // until then hosts still send here, and our closed client port
        // resets their connects (they try again within milliseconds)
        // rather than losing them. Leadership goes once the VIP is given
        // up: the new master takes over as sole voter on it (a snapshot and
        // an fsync, tens of milliseconds on a busy host), and handed over
        // sooner that work delayed its VIP and its announcement behind it
        // (failover_bench timelines: the new master's VIP 50 ms after its
        // takeover began).
        let advert_out = vrrp.wait_for(|s| s.state == State::Initialize && !s.vip_installed);
        // The advert went out, or the speaker stopped without one: hand over anyway.
        let _ = tokio::time::timeout(advert + Duration::from_millis(500), advert_out).await;
        // Named only now: the leader hands over as soon as it is named.
        member.set_preferred_leader(Some(peer)).await;
        hand_over(&member, me, peer, config.cluster.request_timeout()).await;
    };
    // The speaker deletes its virtual-MAC interface only once leadership
    // is handed over: the kernel does that inside the netlink call, tens of
    // milliseconds on a busy host. The speaker runs on a thread of its own
    // now, but that thread and this one share the host's cores, and the
    // transfer the new master waits for goes first.
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

/// The tokio side of the pair's rules: feeds [`rules::PairRules`] and
/// carries out its actions.
struct Glue {
    rules: rules::PairRules,
    /// The license server: a handback waits for its requests in flight.
    server: Arc<Server<ReplicatedApplier>>,
    member: Member<SharedTable>,
    applier: Arc<ReplicatedApplier>,
    config: Config,
    serving: watch::Sender<bool>,
    /// VRRP master, not serving yet, leadership on its way: the server
    /// holds requests to the VIP until it serves instead of refusing them.
    soon: watch::Sender<bool>,
    /// Warnings that repeat while a condition lasts.
    log: Arc<cluster::ratelog::RateLimiter>,
    /// This server's table settings against the pair's.
    settings: settings::SettingsSync,
    tickets: tickets::TicketRotation,
    /// This server's key files, verified.
    own_keys: Vec<crate::license::ServerKeyEntry>,
    /// Our VRRP state to the peer, the peer's to our speaker.
    beacons: Arc<beacon::Beacons>,
    /// The VRRP advertisement interval: beacons are refreshed as often.
    advert: Duration,
    /// Takeovers and losses of the service, for the metrics and the page.
    failovers: Arc<crate::metrics::FailoverLog>,
    /// The operator's `[notify]` scripts.
    notifier: notify::Notifier,
    /// What this node tracks (`[track]`): the priority it advertises, and
    /// whether it must give up the VIP.
    track: track::Tracking,
    /// In fault for a tracker: the speaker gave up the VIP and stays out.
    faulted: bool,
    /// Configurations reloaded on SIGHUP (see `reload`).
    reloads: Option<reload::Reloads>,
}

/// What the metrics and the status page read, at each request: the
/// server's own view, the glue's, the store's write times, the failovers.
fn metrics_source(
    config: &Config,
    server: &Arc<Server<ReplicatedApplier>>,
    (facts, vrrp): (
        watch::Receiver<cluster::Leadership>,
        watch::Receiver<vrrp::sys::Status>,
    ),
    flush_times: &Arc<cluster::FlushTimes>,
    failovers: &Arc<crate::metrics::FailoverLog>,
    peer_address: std::net::Ipv4Addr,
) -> crate::metrics::Source {
    let server = Arc::clone(server);
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
        let vrrp = vrrp.borrow().clone();
        let v = facts.borrow().clone();
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
        // The member pushes its facts (leadership, membership, in-sync):
        // a change wakes the glue at once, with no status request.
        let mut facts = self.member.leadership();
        // A tracker's change wakes the glue at once.
        let mut track = self.track.subscribe();
        let mut refresh = tokio::time::interval(self.advert);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut keys_task: Option<tokio::task::JoinHandle<usize>> = None;
        let mut reloads = self.reloads.take();
        // One sleep, reset only when the rules' deadline moves.
        let mut deadline = None;
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);

        let now = Instant::now();
        let raft = rules::RaftFacts::from(&*facts.borrow_and_update());
        debug!(role = ?raft.role, leader = ?raft.leader, "raft role");
        let mut role = raft.role;
        self.rules.handle_raft(now, raft);
        self.rules.handle_vrrp(now, (&*vrrp.borrow_and_update()).into());
        // Trackers read before the speaker started: their priority and
        // fault from the first round.
        let status = vrrp.borrow().clone();
        self.follow_track(&speaker, &status).await;
        self.act(&speaker, &mut keys_task, &mut facts).await;
        loop {
            let next = self.rules.poll_timeout();
            if next != deadline {
                deadline = next;
                if let Some(at) = next {
                    sleep.as_mut().reset(at.into());
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = &mut sleep, if deadline.is_some() => {
                    deadline = None;
                    self.rules.handle_timeout(Instant::now());
                }
                due = refresh.tick() => {
                    self.beacons.refresh(due.into_std());
                    self.beacons.peer_demoted(self.rules.peer_demoted(), BEHIND_PRIORITY);
                }
                // The status is fed below, after every wake-up.
                _ = vrrp.changed() => {}
                // The sender lives as long as `self.track`: never closed here.
                _ = track.changed() => {
                    let status = vrrp.borrow().clone();
                    self.follow_track(&speaker, &status).await;
                }
                changed = facts.changed() => {
                    if changed.is_err() {
                        // The member stopped on its own (its task is gone).
                        self.rules.failed(Instant::now(), "the cluster member stopped");
                        self.act(&speaker, &mut keys_task, &mut facts).await;
                        return Err(self.member.failure().map_or(NodeError::MemberGone, NodeError::MemberStopped));
                    }
                    let raft = rules::RaftFacts::from(&*facts.borrow_and_update());
                    if raft.role != role {
                        debug!(role = ?raft.role, leader = ?raft.leader, "raft role");
                        role = raft.role;
                    }
                    self.rules.handle_raft(Instant::now(), raft);
                }
                t = transitions.recv() => {
                    // Lagged: the status watch still carries the state.
                    if let Ok(t) = t {
                        info!(from = %t.from, to = %t.to, reason = ?t.reason, "VRRP state change");
                        if t.to == State::Master && t.reason == Some(vrrp::proto::Reason::MasterDown) {
                            self.beacons.log_master_down(&vrrp.borrow().counters);
                        }
                        self.rules.handle_transition(t.to, t.reason);
                    }
                }
                request = async { reloads.as_mut().expect("guarded").next().await }, if reloads.is_some() => {
                    match request {
                        Some(request) => self.handle_reload(request),
                        None => reloads = None,
                    }
                }
                sent = async { keys_task.as_mut().expect("guarded").await }, if keys_task.is_some() => {
                    keys_task = None;
                    self.rules.keys_done(Instant::now(), sent.ok());
                }
                r = speaker.stopped() => {
                    self.rules.failed(Instant::now(), "the VRRP speaker stopped");
                    self.act(&speaker, &mut keys_task, &mut facts).await;
                    let source = match r {
                        Ok(_) => std::io::Error::other("stopped by itself"),
                        Err(e) => e,
                    };
                    return Err(NodeError::Io { what: "VRRP speaker".into(), source });
                }
            }
            // After a transition, its status; after anything else, the
            // status as it is (the rules ignore what did not change).
            self.rules
                .handle_vrrp(Instant::now(), (&*vrrp.borrow_and_update()).into());
            // The peer's word arrives on the cluster link, not as a wake-up:
            // read at every one (at least every advert interval).
            self.rules
                .handle_peer_word(Instant::now(), self.beacons.peer_word());
            self.act(&speaker, &mut keys_task, &mut facts).await;
        }
        // Stopping: nothing is coming any more.
        self.rules.stop();
        self.act(&speaker, &mut keys_task, &mut facts).await;
        Ok((self.serving, speaker))
    }

    /// Follows the trackers (`[track]`): the priority the rules advertise
    /// when caught up is the configured one as weights change it; while a
    /// tracker without a weight is down the node gives up the VIP and does
    /// not contend (keepalived's FAULT state): the peer hears that we leave
    /// over the cluster link, then our speaker sends priority 0 once (the
    /// peer, believing it, takes over at once), removes the VIP and stays
    /// silent; raft leadership goes to the peer (the rules prefer it). The
    /// FAULT notify script runs as the fault begins.
    async fn follow_track(&mut self, speaker: &Speaker, vrrp: &vrrp::sys::Status) {
        let state = self.track.state();
        let now = Instant::now();
        self.rules
            .set_base_priority(now, track::tracked(self.config.vrrp.priority, &state));
        let fault = state.fault();
        if fault == self.faulted {
            return;
        }
        self.faulted = fault;
        if fault {
            let why = state.fault_reason();
            warn!(reason = %why, "tracking: FAULT: giving up the VIP; not contending until the tracker is up");
            self.notifier
                .notify(notify::Event::Fault, Some(self.rules.advertised()), Some(&why));
            // Only a master sends priority 0: only then must the peer
            // believe it before it arrives.
            let wait = if vrrp.state == State::Master {
                self.advert.min(Duration::from_millis(200))
            } else {
                Duration::ZERO
            };
            // No beacon of ours may say otherwise meanwhile.
            self.rules.set_fault(now, true);
            if !self.beacons.fault(wait).await && vrrp.state == State::Master {
                warn!("the peer did not acknowledge our fault over the cluster link: it takes the VIP by VRRP alone");
            }
            speaker.set_fault(true).await;
        } else {
            info!("tracking: fault cleared: contending for the VIP again");
            speaker.set_fault(false).await;
            self.rules.set_fault(now, false);
        }
    }

    /// Hands the VIP back to the peer, as a graceful stop does, but stays
    /// up (see [`rules::Action::HandBack`]). Serving has ended: client
    /// connections close while the VIP is still here, so that no request
    /// is lost in flight. Then the peer hears that we leave, the speaker
    /// sends priority 0 and gives up the VIP; the rules hand leadership to
    /// the peer and ask to rejoin as a backup once it leads.
    async fn hand_back(&mut self, speaker: &Speaker) {
        info!("the peer is back, caught up, and outranks this node: handing the VIP back");
        // No new connection from here until the VIP is gone (the client
        // listener closes: a switch is refused by the kernel and tries
        // again, reaching the peer once the VIP moved); requests in flight
        // are answered and client connections close while the VIP is
        // still here, as on a graceful stop.
        self.server.pause_client_port(true);
        let drain = Instant::now() + self.config.cluster.request_timeout().min(Duration::from_secs(1));
        while (self.server.in_flight() > 0 || self.server.client_connections() > 0) && Instant::now() < drain
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The peer believes our priority-0 advert once it has our word.
        if !self
            .beacons
            .fault(self.advert.min(Duration::from_millis(200)))
            .await
        {
            warn!("the peer did not acknowledge the handback over the cluster link: it takes the VIP by VRRP alone");
        }
        speaker.set_fault(true).await;
        // Leadership goes to the peer at once: it is master from our
        // priority-0 advert on, and holds its clients' requests until it
        // leads.
        self.rules.handback_resigned(Instant::now());
        // The listener reopens once the VIP is gone (the speaker carries
        // out the fault after this call): a switch accepted here in the
        // meantime would lose its next packets with the address. Waited
        // for aside, so that the rules' next actions are not delayed.
        // The speaker keeps the VIP until the peer's first advert as master
        // is heard, one advert interval at most (see `vrrp::sys`).
        let mut vrrp = speaker.status();
        let server = Arc::clone(&self.server);
        let wait = self.advert + Duration::from_millis(500);
        tokio::spawn(async move {
            let gone = vrrp.wait_for(|s| !s.vip_installed);
            if tokio::time::timeout(wait, gone).await.is_err() {
                warn!("the VIP was not removed in time after the handback; reopening the client port anyway");
            }
            server.pause_client_port(false);
        });
    }

    /// Carries out the rules' actions, in order.
    async fn act(
        &mut self,
        speaker: &Speaker,
        keys_task: &mut Option<tokio::task::JoinHandle<usize>>,
        facts: &mut watch::Receiver<cluster::Leadership>,
    ) {
        use rules::Action;
        while let Some(action) = self.rules.poll_action() {
            match action {
                Action::PreferLeader(id) => self.member.set_preferred_leader(id).await,
                Action::TakeOverAsSoleVoter => {
                    let result = self
                        .member
                        .take_over_as_sole_voter()
                        .await
                        .map_err(|e| e.to_string());
                    // The member publishes the facts the takeover made
                    // before it answers: serving flips in this round.
                    let raft = rules::RaftFacts::from(&*facts.borrow_and_update());
                    self.rules.takeover_result(Instant::now(), result, raft);
                }
                Action::TookOver => warn!(
                    peer = self.config.pair_peer().id,
                    "VRRP master: took over as sole voter; the peer rejoins as a learner"
                ),
                Action::TakeoverRefused { reason, retries } => error!(
                    reason,
                    retries,
                    "VRRP master but the takeover as sole voter was REFUSED: not serving; \
                     retrying as the status changes (an operator who knows the peer is gone for good can force it)"
                ),
                Action::PeerDemoted(demoted) => self.beacons.peer_demoted(demoted, BEHIND_PRIORITY),
                Action::SetPriority {
                    priority,
                    caught_up,
                    in_sync,
                    voter,
                } => {
                    let track = self.track.state();
                    if caught_up && priority != self.config.vrrp.priority {
                        // A tracker changed it, not the log.
                        track::log_priority(self.config.vrrp.priority, priority, &track);
                    } else {
                        info!(
                            priority,
                            in_sync,
                            voter,
                            "{}",
                            if caught_up {
                                "caught up with the log and a voter: advertising the configured VRRP priority"
                            } else {
                                "behind the log or not a voter yet: advertising the lowest VRRP priority until \
                                 caught up and promoted"
                            }
                        );
                    }
                    speaker.set_priority(priority).await;
                }
                Action::Beacon { master, priority } => {
                    self.beacons.publish(master, priority);
                }
                Action::HandBack => self.hand_back(speaker).await,
                Action::RejoinAsBackup => {
                    speaker.set_fault(false).await;
                    info!("VIP handed back: contending again as a backup");
                }
                Action::Serve { serve, why, gap } => self.set_serving(serve, why, gap),
                Action::SoonServing(soon) => {
                    self.soon.send_if_modified(|s| std::mem::replace(s, soon) != soon);
                }
                Action::Settings { leads, in_sync } => {
                    self.settings.step(leads, in_sync, &self.applier, &self.log);
                    self.tickets
                        .step(leads, in_sync, &self.config.node.name, &self.applier, &self.log);
                }
                Action::SyncKeys { serve, rounds } => *keys_task = Some(self.sync_keys(serve, rounds)),
                Action::Notify {
                    event,
                    priority,
                    reason,
                } => self.notifier.notify(event, Some(priority), reason.as_deref()),
            }
        }
    }

    /// Serves or stops serving, as the rules said (see [`rules::Action::Serve`]).
    fn set_serving(&mut self, serve: bool, why: Option<&'static str>, gap: Option<Duration>) {
        self.serving.send_replace(serve);
        if !serve {
            let why_not = why.unwrap_or("not serving");
            info!(reason = why_not, "not serving: client connections close");
            self.failovers.gave_up(std::time::SystemTime::now(), why_not);
            return;
        }
        match (gap, why) {
            (Some(gap), Some(why)) => {
                info!(
                    gap_ms = gap.as_secs_f64() * 1000.0,
                    reason = why,
                    "serving: VRRP master and raft leader; took over from the peer"
                );
                self.failovers.took_over(std::time::SystemTime::now(), gap, why);
            }
            _ => info!("serving: VRRP master and raft leader"),
        }
    }

    /// One round of bringing this server's keys in the table to its
    /// configuration (see `keys.rs`); the task answers how many changes it
    /// sent.
    fn sync_keys(&self, serve: bool, rounds: u32) -> tokio::task::JoinHandle<usize> {
        let files = self.own_keys.clone();
        let server = self.config.node.name.clone();
        let serial = self.config.serial().to_owned();
        let (applier, member) = (Arc::clone(&self.applier), self.member.clone());
        let log = Arc::clone(&self.log);
        let mut settings_idle = self.settings.idle();
        let wait = self.config.cluster.request_timeout();
        if rounds == 5 {
            warn!(
                "this server's license keys are still not in the table after 5 rounds: \
                 is the leader refusing them? (see the leader's log)"
            );
        }
        tokio::spawn(async move {
            let mut sent = 0;
            let send = |command| send_key_change(command, serve, rounds, &applier, &member, &log);
            if serve {
                // The serial needs no issuer: announced at once. The keys
                // wait for the issuers this node proposes first in the same
                // round (see `settings`), so that they follow them into the
                // log rather than being refused.
                let announce = applier.read(|t| {
                    keys::key_changes(t.state(), &server, &serial, &files, 0)
                        .into_iter()
                        .find(|c| matches!(c, crate::table::Command::ServerSerial { .. }))
                });
                if let Some(command) = announce {
                    sent += 1;
                    send(command).await;
                }
                let _ = tokio::time::timeout(wait, settings_idle.wait_for(|idle| *idle)).await;
            }
            let now = applier.stamp();
            let (changes, waiting) = applier.read(|t| {
                let waiting = keys::waiting_for_issuer(t.state(), &files, now)
                    .iter()
                    .map(|e| format!("{} ({})", e.key.key_id, e.key.issuer))
                    .collect::<Vec<_>>();
                let recorded = !t.state().issuers.is_empty();
                (
                    keys::key_changes(t.state(), &server, &serial, &files, now),
                    (!waiting.is_empty()).then_some((waiting.join(", "), recorded)),
                )
            });
            match waiting {
                // A brand-new pair: the VIP holder's issuers are on their way.
                Some((keys, false)) => debug!(keys, "server keys wait for the pair's trusted issuers"),
                Some((keys, true)) => cluster::warn_limited!(
                    log,
                    "keys of an untrusted issuer",
                    keys,
                    "these keys of this server do not count: the pair does not trust their issuer \
                     (its trusted issuers are the VIP holder's license.issuers)"
                ),
                None => {}
            }
            sent += changes.len();
            for command in changes {
                send(command).await;
            }
            sent
        })
    }
}

/// Proposes one change of this server's keys (the VIP holder: logged once
/// committed or refused) or submits it to the leader (another server).
async fn send_key_change(
    command: crate::table::Command,
    serve: bool,
    rounds: u32,
    applier: &ReplicatedApplier,
    member: &Member<SharedTable>,
    log: &cluster::ratelog::RateLimiter,
) {
    let what = match &command {
        crate::table::Command::InstallServerKey { key, .. } => format!("install {}", key.key_id),
        crate::table::Command::RemoveServerKey { key_id, .. } => format!("remove {key_id}"),
        crate::table::Command::ServerSerial { serial, .. } => format!("announce serial {serial}"),
        _ => return,
    };
    if serve {
        match applier.propose(command).await {
            Ok(Ok(_)) => info!(change = what, "server key change committed"),
            Ok(Err(e)) => error!(change = what, error = %e, "server key change refused by the table"),
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

#[cfg(test)]
mod error_tests {
    use super::NodeError;

    #[test]
    fn start_errors_are_typed_and_keep_their_cause() {
        let e = NodeError::MemberStart(cluster::NodeError::Raft("stored state refused".into()));
        let source = std::error::Error::source(&e).expect("the member's error is the source");
        assert!(
            source.downcast_ref::<cluster::NodeError>().is_some(),
            "{source:?}"
        );
        assert!(e.to_string().contains("stored state refused"), "{e}");
        let e = NodeError::NoRaftAddress { id: 3 };
        let text = e.to_string();
        assert!(
            text.contains("member 3") && text.contains("cluster.peers") && text.contains("node.id"),
            "{text}"
        );
    }
}
