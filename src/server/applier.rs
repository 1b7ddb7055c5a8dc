//! How the server gets a command applied: through the replicated log in the
//! daemon, or straight to an in-process table here.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::watch;

use super::stamp::PairClock;
use crate::proto::ServerError;
use crate::table::{Command, CommandError, LicenseTable, Pool, Reply};
use crate::usage::{Pending, UsageLog};

/// Applies commands to the license table on behalf of the server.
pub trait Applier: Send + Sync + 'static {
    /// Proposes `command` and resolves once it is applied (committed): only
    /// then may the client be answered.
    ///
    /// The outer error means the command's fate is unknown or it was not
    /// committed; the inner one that the table refused it.
    fn propose(
        &self,
        command: Command,
    ) -> impl Future<Output = Result<Result<Reply, CommandError>, ServerError>> + Send;

    /// Runs `f` on the table as this node holds it.
    fn read<R>(&self, f: impl FnOnce(&LicenseTable) -> R) -> R;

    /// Follows the pool: changes whenever an applied command changes it.
    fn pool_changes(&self) -> watch::Receiver<Pool>;

    /// The time to stamp into a command proposed now: the pair's time
    /// (see [`stamp`](super::stamp)).
    fn stamp(&self) -> u64;

    /// The usage log, if one is written: the server logs there what it
    /// refuses before proposing (denied acquires).
    fn usage(&self) -> Option<&UsageLog> {
        None
    }
}

/// A single in-process table: every proposal commits at once. For a
/// standalone server and for tests; the pair replicates through `cluster`.
#[derive(Debug)]
pub struct LocalApplier {
    table: Mutex<LicenseTable>,
    pool: watch::Sender<Pool>,
    clock: PairClock,
    usage: Option<UsageLog>,
}

impl LocalApplier {
    /// An applier owning `table`.
    pub fn new(table: LicenseTable) -> Self {
        let pool = watch::Sender::new(table.pool().clone());
        Self {
            table: Mutex::new(table),
            pool,
            clock: PairClock::new(),
            usage: None,
        }
    }

    /// An applier owning `table` that writes the usage log (it serves
    /// whenever it runs).
    pub fn with_usage(table: LicenseTable, usage: UsageLog) -> Self {
        Self {
            usage: Some(usage),
            ..Self::new(table)
        }
    }

    fn apply_now(&self, command: Command) -> Result<Reply, CommandError> {
        let mut table = self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let index = table.applied_index() + 1;
        let pending = self
            .usage
            .as_ref()
            .filter(|u| u.active())
            .and_then(|_| Pending::of(&command));
        let reply = table.apply_command(index, command);
        let pool = table.pool();
        if let (Some(usage), Some(pending)) = (&self.usage, pending) {
            usage.record(pending, index, &reply, pool);
        }
        self.pool.send_if_modified(|current| {
            if current == pool {
                false
            } else {
                current.clone_from(pool);
                true
            }
        });
        reply
    }
}

impl Applier for LocalApplier {
    fn propose(
        &self,
        command: Command,
    ) -> impl Future<Output = Result<Result<Reply, CommandError>, ServerError>> + Send {
        // Applying is a short critical section: no await while the lock is held.
        let result = self.apply_now(command);
        std::future::ready(Ok(result))
    }

    fn read<R>(&self, f: impl FnOnce(&LicenseTable) -> R) -> R {
        f(&self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn pool_changes(&self) -> watch::Receiver<Pool> {
        self.pool.subscribe()
    }

    fn stamp(&self) -> u64 {
        // Every stamp is this node's own: nothing to observe.
        let limit = self.read(|t| t.config().heartbeat_interval_ms);
        self.clock.stamp(limit)
    }

    fn usage(&self) -> Option<&UsageLog> {
        self.usage.as_ref()
    }
}
