//! The witness: a vote-only third member. It stores the log and votes, so
//! that a pair plus a witness fails over by election, but it never
//! campaigns, never leads, never holds the VIP and never answers clients.
//! Its operator endpoint answers `vipool show status` (raft role, term,
//! commit, a peer refused for its release) and `show table` (its replica).

use std::sync::Arc;

use cluster::Member;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::applier::ReplicatedApplier;
use super::{io, NodeError, SharedTable, Start};
use crate::config::{Role, WitnessConfig};
use crate::server::{Port, Server, ServerConfig};
use crate::table::{LicenseTable, TableConfig};

/// Runs a witness until `stop` resolves.
///
/// # Errors
/// The raft port cannot be bound, the data directory or the log cannot be
/// used, or the member stopped on a storage failure.
pub async fn run_witness(
    config: WitnessConfig,
    start: Start,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let me = config.node.id;
    let super::RaftParts {
        store,
        flush_times: _,
        transport,
        listener,
        member: mut mcfg,
        identity,
    } = super::raft_parts(&config.node, &config.cluster, &config.tls, Role::Witness, &start).await?;
    mcfg.node.witness = true;
    // The witness never answers from its table, but it is a replica like
    // the others: it starts from the SPEC's settings and applies the log's
    // (the table's settings are replicated state), so its snapshots are
    // the servers'.
    let table = SharedTable::new(LicenseTable::new(TableConfig::default()));
    // No initial voters: see `run`. On this thread, unlike a server's
    // member: a witness serves no switches and speaks no VRRP, and what
    // its log writes hold up (the raft transport) waits for them anyway.
    let member = Member::start(mcfg, store, table.clone(), &[], Arc::new(transport.clone()))
        .map_err(NodeError::MemberStart)?;
    transport.attach(listener, Arc::new(member.clone()));

    // The operator endpoint: a license server that never serves (no VIP,
    // `serving` stays false), so it answers status and show requests only.
    let operator_addr = config.operator_address();
    let operator_listener = TcpListener::bind(operator_addr)
        .await
        .map_err(io(format!("binding operator endpoint {operator_addr}")))?;
    let applier = Arc::new(ReplicatedApplier::new(member.clone(), table, None));
    let hook = super::status_hook(
        member.leadership(),
        None,
        &transport,
        &config.node.data_dir,
        &start,
        None,
    );
    let (_never_serving, serving) = watch::channel(false);
    let server_shutdown = CancellationToken::new();
    let server = Arc::new(Server::with_status_hook(
        applier,
        ServerConfig {
            node: config.node.name.clone(),
            vip: None,
            // Operators only (their certificates), on its operator port.
            tls: Some(crate::tls::ServerTls::new(&identity).map_err(|e| NodeError::Io {
                what: "operator TLS".into(),
                source: std::io::Error::other(e),
            })?),
            ..ServerConfig::default()
        },
        serving,
        server_shutdown.clone(),
        hook,
    ));
    let running = Arc::clone(&server);
    let server_task =
        tokio::spawn(async move { running.run_on(vec![(operator_listener, Port::Operator)]).await });
    info!(
        node = %config.node.name, id = me, raft = %transport.local_addr(), operator = %operator_addr,
        "witness up: votes, never leads"
    );
    super::sd_notify::notify(super::sd_notify::READY);

    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    tokio::pin!(stop);
    let failure = loop {
        tokio::select! {
            () = &mut stop => {
                super::sd_notify::notify(super::sd_notify::STOPPING);
                break None;
            }
            _ = tick.tick() => {
                if let Some(why) = member.failure() {
                    break Some(why);
                }
            }
        }
    };
    server_shutdown.cancel();
    if let Ok(Err(e)) = server_task.await {
        warn!(error = %e, "operator endpoint stopped with an error");
    }
    transport.shutdown();
    member.shutdown().await;
    match failure {
        Some(why) => {
            warn!(reason = %why, "witness member stopped");
            Err(NodeError::MemberStopped(why))
        }
        None => {
            info!("witness stopped");
            Ok(())
        }
    }
}
