//! The license table inside the replicated log: an [`Applier`] whose
//! proposals go through a [`cluster::Member`] and are answered only once
//! committed and applied.
//!
//! The member's task owns the state machine, but the server reads the
//! table synchronously (views, the heartbeat counters' guard, expiry
//! warnings). So the table is shared: [`SharedTable`] is the state machine
//! the member applies to, a handle on one `Mutex<LicenseTable>` that the
//! applier reads too. Every lock is a short critical section, never held
//! across an `.await`.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use cluster::{Member, ProposeError, SnapshotError, StateMachine};
use tokio::sync::watch;

use crate::proto::ServerError;
use crate::server::stamp::Clock;
use crate::server::Applier;
use crate::table::{Command, CommandError, LicenseTable, Pool, Reply};
use crate::usage::{Pending, UsageLog};

/// The license table as the member's state machine, shared with readers.
/// Clones are handles on the same table.
#[derive(Debug, Clone)]
pub struct SharedTable {
    table: Arc<Mutex<LicenseTable>>,
    pool: Arc<watch::Sender<Pool>>,
    /// The pair's time: follows the stamps this member sees commit.
    clock: Arc<Clock>,
    /// Written while this node serves (see `usage`).
    usage: Option<UsageLog>,
}

impl SharedTable {
    /// Wraps `table`.
    pub fn new(table: LicenseTable) -> Self {
        let pool = Arc::new(watch::Sender::new(table.pool().clone()));
        Self {
            table: Arc::new(Mutex::new(table)),
            pool,
            clock: Arc::default(),
            usage: None,
        }
    }

    /// Wraps `table`; applied entries go to `usage` while it is active
    /// (while this node serves).
    pub fn with_usage(table: LicenseTable, usage: Option<UsageLog>) -> Self {
        Self {
            usage,
            ..Self::new(table)
        }
    }

    /// The time to stamp into a command this member proposes now (see
    /// `server::stamp`: bounded against forward jumps of the wall clock).
    pub fn stamp(&self) -> u64 {
        let limit = self.read(|t| t.config().heartbeat_interval_ms);
        self.clock.stamp(limit)
    }

    fn lock(&self) -> MutexGuard<'_, LicenseTable> {
        // A panic inside `apply` would have stopped the member anyway; the
        // table itself is never left half-changed by a command.
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the table as this node holds it.
    pub fn read<R>(&self, f: impl FnOnce(&LicenseTable) -> R) -> R {
        f(&self.lock())
    }

    /// Follows the pool.
    pub fn pool_changes(&self) -> watch::Receiver<Pool> {
        self.pool.subscribe()
    }

    fn publish(&self, pool: &Pool) {
        self.pool.send_if_modified(|current| {
            if current == pool {
                false
            } else {
                current.clone_from(pool);
                true
            }
        });
    }
}

impl StateMachine for SharedTable {
    type Command = Command;
    type Response = Result<Reply, CommandError>;

    fn apply(&mut self, index: u64, command: Command) -> Self::Response {
        let (reply, pool) = {
            let mut table = self.lock();
            if let Some(stamped) = command.now_ms() {
                self.clock.observe(stamped, table.config().heartbeat_interval_ms);
            }
            let pending = self
                .usage
                .as_ref()
                .filter(|u| u.active())
                .and_then(|_| Pending::of(&command));
            let reply = table.apply_command(index, command);
            if let (Some(usage), Some(pending)) = (&self.usage, pending) {
                usage.record(pending, index, &reply, table.pool());
            }
            (reply, table.pool().clone())
        };
        self.publish(&pool);
        reply
    }

    fn applied_index(&self) -> u64 {
        self.lock().applied_index()
    }

    fn snapshot(&self) -> Vec<u8> {
        StateMachine::snapshot(&*self.lock())
    }

    fn describe(command: &Command) -> String {
        command.describe()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        let pool = {
            let mut table = self.lock();
            StateMachine::restore(&mut *table, snapshot)?;
            table.pool().clone()
        };
        self.publish(&pool);
        Ok(())
    }
}

/// Proposes through the replicated log; reads the local copy of the table.
#[derive(Debug, Clone)]
pub struct ReplicatedApplier {
    member: Member<SharedTable>,
    table: SharedTable,
    vip: Option<String>,
}

impl ReplicatedApplier {
    /// An applier over `member`, which applies to `table`. `vip` is named in
    /// the error a node that does not lead gives.
    pub fn new(member: Member<SharedTable>, table: SharedTable, vip: Option<String>) -> Self {
        Self { member, table, vip }
    }
}

/// What a client is told when the log did not take its change.
pub fn server_error(e: ProposeError, vip: Option<String>) -> ServerError {
    match e {
        // Another node leads: this one is not the license server.
        ProposeError::NotLeader { .. } => ServerError::NotLicenseServer { vip },
        // Not applied, or maybe applied: either way not acknowledged, and
        // a client's retry is safe (its reports are whole states; a grant
        // retried is at worst a grant the client reconciles on its next report).
        e @ (ProposeError::Dropped
        | ProposeError::Unknown
        | ProposeError::Timeout
        | ProposeError::ShuttingDown
        | ProposeError::InvalidConfChange(_)) => ServerError::NotCommitted(e.to_string()),
    }
}

impl Applier for ReplicatedApplier {
    fn propose(
        &self,
        command: Command,
    ) -> impl Future<Output = Result<Result<Reply, CommandError>, ServerError>> + Send {
        let member = self.member.clone();
        let vip = self.vip.clone();
        async move { member.propose(command).await.map_err(|e| server_error(e, vip)) }
    }

    fn read<R>(&self, f: impl FnOnce(&LicenseTable) -> R) -> R {
        self.table.read(f)
    }

    fn pool_changes(&self) -> watch::Receiver<Pool> {
        self.table.pool_changes()
    }

    fn stamp(&self) -> u64 {
        self.table.stamp()
    }

    fn usage(&self) -> Option<&UsageLog> {
        self.table.usage.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cluster::{Disk, LogStore, MemberConfig, Outbox};

    use super::*;
    use crate::table::{Actor, ClientReport, Key, LicenseType, TableConfig, VerifiedKey};

    struct Alone;
    impl Outbox for Alone {
        fn send(&self, _: cluster::raft::eraftpb::Message) {}
    }

    fn start(voters: &[u64], timeout: Duration) -> (ReplicatedApplier, Member<SharedTable>) {
        let mut cfg = MemberConfig::new(1);
        cfg.tick = Duration::from_millis(5);
        cfg.request_timeout = timeout;
        let table = SharedTable::new(LicenseTable::new(TableConfig::default()));
        let store = LogStore::open(Disk::memory()).unwrap();
        let member = Member::start(cfg, store, table.clone(), voters, Arc::new(Alone)).unwrap();
        let applier = ReplicatedApplier::new(member.clone(), table, Some("192.0.2.100".into()));
        (applier, member)
    }

    async fn leader(member: &Member<SharedTable>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while member.status().await.unwrap().role != cluster::raft::StateRole::Leader {
            assert!(tokio::time::Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn commits_apply_to_the_shared_table_and_publish_the_pool() {
        let (applier, member) = start(&[1], Duration::from_secs(5));
        leader(&member).await;
        let mut pool = applier.pool_changes();
        let serial = Command::ServerSerial {
            server: "primary".into(),
            serial: "CV1".into(),
        };
        applier.propose(serial).await.unwrap().unwrap();
        let key = Command::InstallServerKey {
            now_ms: 1,
            server: "primary".into(),
            key: VerifiedKey {
                key_id: "primary-AP".into(),
                issuer: "acme".into(),
                serial: "CV1".into(),
                key: Key::permanent("AP", 4),
            },
            by: Actor::Server("primary".into()),
        };
        applier.propose(key).await.unwrap().unwrap();
        assert!(pool.has_changed().unwrap(), "the pool change was published");
        let ap = LicenseType::new("AP");
        assert_eq!(pool.borrow_and_update()[&ap].total, 4);
        let register = Command::Register {
            now_ms: 2,
            id: "sw1".into(),
            serial: "S1".into(),
            address: "192.0.2.50:1000".into(),
            version: "1".into(),
            report: ClientReport::default(),
        };
        applier.propose(register).await.unwrap().unwrap();
        let acquire = |count| Command::Acquire {
            now_ms: 3,
            id: "sw1".into(),
            license_type: ap.clone(),
            count,
        };
        applier.propose(acquire(3)).await.unwrap().unwrap();
        // The table refuses, the log committed it: the inner error.
        let refused = applier.propose(acquire(2)).await.unwrap();
        assert!(
            matches!(refused, Err(CommandError::NotEnoughLicenses { .. })),
            "{refused:?}"
        );
        assert_eq!(applier.read(|t| t.pool()[&ap].used), 3);
        let st = member.status().await.unwrap();
        assert_eq!(applier.read(|t| t.applied_index()), st.applied);
        member.shutdown().await;
        // A stopped member: not committed, never a success.
        assert!(matches!(
            applier.propose(acquire(1)).await,
            Err(ServerError::NotCommitted(_))
        ));
    }

    #[tokio::test]
    async fn without_a_leader_the_node_is_not_the_license_server() {
        // Two voters, the other never answers: nobody leads.
        let (applier, member) = start(&[1, 2], Duration::from_millis(300));
        let err = applier.propose(Command::Sweep { now_ms: 1 }).await.unwrap_err();
        assert_eq!(
            err,
            ServerError::NotLicenseServer {
                vip: Some("192.0.2.100".into())
            }
        );
        assert!(err.to_string().contains("use VIP 192.0.2.100"), "{err}");
        member.shutdown().await;
    }

    #[test]
    fn every_propose_error_maps_to_a_client_error() {
        for e in [
            ProposeError::Dropped,
            ProposeError::Unknown,
            ProposeError::Timeout,
            ProposeError::ShuttingDown,
        ] {
            assert!(matches!(server_error(e, None), ServerError::NotCommitted(_)));
        }
        assert!(matches!(
            server_error(ProposeError::NotLeader { leader: Some(2) }, None),
            ServerError::NotLicenseServer { vip: None }
        ));
    }
}
