//! The table's settings (license types and client timers) in the pair.
//!
//! They are replicated state (see `table::config`): every member applies
//! the log with the settings the log set, never with its own
//! configuration, so two servers configured differently cannot end with
//! different tables. What each server does with its own `[license]`
//! settings:
//!
//! - the VIP holder (VRRP master and raft leader) proposes them when they
//!   differ from the replicated ones, logs it, and logs the commit: the
//!   pair runs with the settings of whoever serves;
//! - any other server that is caught up with the log and whose settings
//!   differ says which setting differs, in its log (rate-limited) and in
//!   `vipool show status`, and applies the pair's.
//!
//! The witness has no settings of its own: it applies the log's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use super::applier::{ReplicatedApplier, SharedTable};
use crate::server::Applier;
use crate::table::{Actor, Command, TableConfig};

/// How long after a proposal that did not commit the next one goes out.
const RETRY: Duration = Duration::from_secs(2);

/// A server's configured settings, and the proposal of them in flight.
pub(super) struct SettingsSync {
    configured: TableConfig,
    server: String,
    task: Option<tokio::sync::oneshot::Receiver<bool>>,
    /// When the last proposal that did not commit was sent.
    failed_at: Option<Instant>,
    /// The differences last logged as proposed: a retry is not logged again.
    announced: Option<String>,
}

impl SettingsSync {
    pub(super) fn new(configured: TableConfig, server: String) -> Self {
        Self {
            configured,
            server,
            task: None,
            failed_at: None,
            announced: None,
        }
    }

    /// One round: `leads` is VRRP master and raft leader (the node that
    /// proposes); `in_sync` that this member has caught up with the log
    /// (before that the replicated settings may be older than the log's).
    pub(super) fn step(
        &mut self,
        leads: bool,
        in_sync: bool,
        applier: &Arc<ReplicatedApplier>,
        log: &Arc<cluster::ratelog::RateLimiter>,
    ) {
        if let Some(task) = &mut self.task {
            match task.try_recv() {
                Ok(committed) => {
                    self.task = None;
                    self.failed_at = (!committed).then(Instant::now);
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => self.task = None,
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => return,
            }
        }
        let differences = applier.read(|t| self.configured.differences(t.config()));
        if differences.is_empty() {
            // The next difference, even the same one again, is news.
            self.announced = None;
            return;
        }
        let listed = TableConfig::describe_differences(&differences);
        if !leads {
            if in_sync {
                cluster::warn_limited!(
                    log,
                    "table settings",
                    differences = %listed,
                    "this server's [license] settings differ from the pair's replicated ones: it \
                     applies the pair's (set by the VIP holder); it proposes its own only when it serves"
                );
            }
            return;
        }
        if self.failed_at.is_some_and(|at| at.elapsed() < RETRY) {
            return;
        }
        if self.announced.as_deref() != Some(listed.as_str()) {
            info!(
                differences = %listed,
                "VIP holder: this server's [license] settings differ from the pair's replicated ones: \
                 proposing them for every member"
            );
            self.announced = Some(listed);
        }
        let command = Command::Settings {
            settings: self.configured.clone(),
            by: Actor::Server(self.server.clone()),
        };
        let applier = Arc::clone(applier);
        let log = Arc::clone(log);
        let (done, task) = tokio::sync::oneshot::channel();
        self.task = Some(task);
        tokio::spawn(async move {
            let committed = match applier.propose(command).await {
                Ok(Ok(_)) => {
                    info!("table settings committed: every member applies this server's from now on");
                    true
                }
                Ok(Err(e)) => {
                    cluster::error_limited!(
                        log,
                        "settings refused",
                        error = %e,
                        "table settings refused by the table: the pair keeps its own; retried"
                    );
                    false
                }
                Err(e) => {
                    cluster::warn_limited!(log, "settings proposal", error = %e, "table settings not committed; retried");
                    false
                }
            };
            let _ = done.send(committed);
        });
    }
}

/// What `vipool show status` says when `configured` (this server's
/// settings) differ from those `table` applies (the pair's).
pub(super) fn status_warning(configured: &TableConfig, table: &SharedTable) -> Option<String> {
    let differences = table.read(|t| configured.differences(t.config()));
    (!differences.is_empty()).then(|| {
        format!(
            "table settings differ from the pair's (this node applies the pair's, set by the VIP holder): {}",
            TableConfig::describe_differences(&differences)
        )
    })
}
