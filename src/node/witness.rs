//! The witness: a vote-only third member. It stores the log and votes, so
//! that a pair plus a witness fails over by election, but it never
//! campaigns, never leads, never holds the VIP and never answers clients.

use std::sync::Arc;

use cluster::Member;
use tracing::{info, warn};

use super::{NodeError, SharedTable};
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
    let (store, transport, listener, mut mcfg) = super::raft_parts(&config.node, &config.cluster).await?;
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
