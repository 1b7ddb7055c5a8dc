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
use crate::server::stamp::PairClock;
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
    clock: Arc<PairClock>,
    /// Written while this node serves (see `usage`).
    usage: Option<UsageLog>,
    /// Seals and opens the client port's session tickets with the keys
    /// the table holds (see `node::tickets`).
    tickets: Option<Arc<crate::tls::PairTicketer>>,
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
            tickets: None,
        }
    }

    /// Keeps `tickets` sealing and opening with the table's ticket keys.
    pub fn with_tickets(mut self, tickets: Arc<crate::tls::PairTicketer>) -> Self {
        self.read(|t| tickets.set_keys(&t.state().ticket_keys));
        self.tickets = Some(tickets);
        self
    }

    fn install_ticket_keys(&self, table: &LicenseTable) {
        if let Some(tickets) = &self.tickets {
            tickets.set_keys(&table.state().ticket_keys);
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

    /// The time to stamp into a command this member proposes now: the
    /// pair's time (see `server::stamp`).
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
            if let Some(stamped) = command.pair_time_ms() {
                self.clock.observe(stamped, table.config().heartbeat_interval_ms);
            }
            let pending = self
                .usage
                .as_ref()
                .filter(|u| u.active())
                .and_then(|_| Pending::of(&command));
            let ticket_key = matches!(command, Command::TicketKey { .. });
            let reply = table.apply_command(index, command);
            if let (Some(usage), Some(pending)) = (&self.usage, pending) {
                usage.record(pending, index, &reply, table.pool());
            }
            if ticket_key {
                self.install_ticket_keys(&table);
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
        self.lock().snapshot()
    }

    fn describe(command: &Command) -> String {
        command.describe()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        let pool = {
            let mut table = self.lock();
            table.restore(snapshot).map_err(SnapshotError::new)?;
            // The pair's time goes on from the restored table's newest.
            if let Some(newest) = table.latest_stamp_ms() {
                self.clock.observe(newest, table.config().heartbeat_interval_ms);
            }
            self.install_ticket_keys(&table);
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

    use crate::table::tests::trusting_acme;

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
        applier.propose(trusting_acme()).await.unwrap().unwrap();
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

    /// The usage log is written by the serving node only: the follower
    /// applies the same entries and writes nothing.
    #[test]
    fn applied_entries_reach_the_usage_log_only_while_serving() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.jsonl");
        let config = crate::usage::UsageConfig {
            path: path.clone(),
            max_bytes: 1 << 20,
            keep: 1,
        };
        let (serving, serving_rx) = watch::channel(false);
        let usage = UsageLog::open(&config, "primary")
            .unwrap()
            .while_serving(serving_rx);
        let mut table = SharedTable::with_usage(LicenseTable::new(TableConfig::default()), Some(usage));
        let sweep = |now_ms| Command::Sweep { now_ms };
        let serial = |n: u32| Command::ServerSerial {
            server: "primary".into(),
            serial: format!("CV{n}"),
        };
        let key = |id: &str| Command::InstallServerKey {
            now_ms: 1,
            server: "primary".into(),
            key: VerifiedKey {
                key_id: id.into(),
                issuer: "acme".into(),
                serial: "CV1".into(),
                key: Key::permanent("AP", 4),
            },
            by: Actor::Operator("alice".into()),
        };
        table.apply(0, trusting_acme()).unwrap();
        table.apply(1, serial(1)).unwrap();
        table.apply(2, key("not-serving")).unwrap();
        serving.send_replace(true);
        table.apply(3, key("serving")).unwrap();
        table.apply(4, sweep(2)).unwrap();
        serving.send_replace(false);
        table
            .apply(
                5,
                Command::RemoveServerKey {
                    key_id: "serving".into(),
                    by: Actor::Operator("alice".into()),
                },
            )
            .unwrap();
        // Dropping the table drops the last sender: the writer flushes and ends.
        drop(table);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let text = loop {
            let text = std::fs::read_to_string(&path).unwrap();
            if !text.is_empty() || std::time::Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert_eq!(lines[0]["event"], "key_installed");
        assert_eq!(lines[0]["key_id"], "serving");
        assert_eq!(lines[0]["index"], 3);
        assert_eq!(lines[0]["operator"], "alice");
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
