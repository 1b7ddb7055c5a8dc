//! The witness: a vote-only third member. It stores the log and votes, so
//! that a pair plus a witness fails over by election, but it never
//! campaigns, never leads, never holds the VIP and never answers clients.

use std::sync::Arc;

use cluster::{Disk, LogStore, Member, MemberConfig, TcpTransport, TransportConfig};
use tracing::{info, warn};

use super::{io, NodeError, SharedTable};
use crate::config::WitnessConfig;
use crate::table::{LicenseTable, TableConfig};

/// Runs a witness until `stop` resolves.
///
/// # Errors
/// The raft port cannot be bound, the data directory or the log cannot be
/// used, or the member stopped on a storage failure.
pub async fn run_witness(
    config: WitnessConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let me = config.node.id;
    std::fs::create_dir_all(&config.node.data_dir)
        .map_err(io(format!("creating {}", config.node.data_dir.display())))?;
    let path = config.node.data_dir.join("raft.redb");
    let disk = Disk::open(&path).map_err(|e| NodeError::Log(format!("{}: {e}", path.display())))?;
    let store = LogStore::open(disk).map_err(|e| NodeError::Log(e.to_string()))?;

    let listen = config
        .cluster
        .listen_address(me)
        .ok_or_else(|| NodeError::Log(format!("member {me} has no address in cluster.peers")))?;
    let mut tcfg = TransportConfig::new(config.node.cluster_id, me, listen);
    tcfg.peers = config.cluster.peers_except(me);
    tcfg.max_frame = config.cluster.max_frame;
    // As a server does: reconnect a returning member within an election timeout.
    let election_timeout =
        config.cluster.tick() * u32::try_from(config.cluster.election_ticks).unwrap_or(u32::MAX);
    tcfg.backoff_max = tcfg.backoff_max.min(election_timeout).max(tcfg.backoff_min);
    let (transport, listener) = TcpTransport::bind(tcfg)
        .await
        .map_err(io(format!("binding raft port {listen}")))?;

    let mut mcfg = MemberConfig::new(me);
    mcfg.tick = config.cluster.tick();
    mcfg.request_timeout = config.cluster.request_timeout();
    mcfg.node.election_tick = config.cluster.election_ticks;
    mcfg.node.heartbeat_tick = config.cluster.heartbeat_ticks;
    mcfg.node.snapshot_interval = config.cluster.snapshot_interval;
    mcfg.node.witness = true;
    // The witness never answers from its table: what it applies only has to
    // round-trip through its own snapshots.
    let table = SharedTable::new(LicenseTable::new(TableConfig::default()));
    let member = Member::start(
        mcfg,
        store,
        table,
        &config.cluster.initial_voters(),
        Arc::new(transport.clone()),
    )
    .map_err(|e| NodeError::Log(e.to_string()))?;
    transport.attach(listener, Arc::new(member.clone()));
    info!(node = %config.node.name, id = me, raft = %transport.local_addr(), "witness up: votes, never leads");
    super::notify::notify(super::notify::READY);

    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    tokio::pin!(stop);
    let failure = loop {
        tokio::select! {
            () = &mut stop => {
                super::notify::notify(super::notify::STOPPING);
                break None;
            }
            _ = tick.tick() => {
                if let Some(why) = member.failure() {
                    break Some(why);
                }
            }
        }
    };
    transport.shutdown();
    member.shutdown().await;
    match failure {
        Some(why) => {
            warn!(reason = why, "witness member stopped");
            Err(NodeError::MemberStopped(why))
        }
        None => {
            info!("witness stopped");
            Ok(())
        }
    }
}
