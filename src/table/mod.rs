//! The shared license table: a pure, deterministic state machine.
//!
//! [`LicenseTable::apply_command`] is the only way to change it. It uses
//! nothing but the table, the configuration and the command (the leader
//! stamps its clock into every command), keeps every map ordered, and
//! refuses a bad command with a [`CommandError`] without touching anything,
//! so every node that applies the same log ends with the same table.
//!
//! The table implements [`cluster::StateMachine`], snapshot and restore
//! included, so the replicated log carries it unchanged.

mod command;
mod config;
pub mod limits;
pub mod pool;
mod snapshot;
mod sweep;
mod types;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use command::{Command, CommandError, Reply, SweepReport};
pub use config::{TableConfig, TypeKind, DEFAULT_POOLABLE, DEFAULT_SWITCH_SPECIFIC};
pub use snapshot::SNAPSHOT_VERSION;
pub use types::{
    pool_demand, Client, ClientReport, ClientState, HeartbeatStats, Key, LicenseType, Pool, PoolEntry,
    ServerKey,
};

/// The replicated part of the table: what a snapshot holds besides the applied index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableState {
    /// Clients by id.
    pub clients: BTreeMap<String, Client>,
    /// The servers' own keys by key id.
    pub server_keys: BTreeMap<String, ServerKey>,
}

/// The license table with its configuration and the pool derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseTable {
    config: TableConfig,
    state: TableState,
    // Derived from `state`; kept up to date incrementally, rebuilt on restore.
    pool: Pool,
    applied_index: u64,
}

impl LicenseTable {
    /// An empty table.
    pub fn new(config: TableConfig) -> Self {
        let pool = pool::empty(&config);
        Self {
            config,
            state: TableState::default(),
            pool,
            applied_index: 0,
        }
    }

    /// The configuration the table applies commands with.
    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// Clients and server keys.
    pub fn state(&self) -> &TableState {
        &self.state
    }

    /// The pool per poolable type.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// One client.
    pub fn client(&self, id: &str) -> Option<&Client> {
        self.state.clients.get(id)
    }

    /// Evaluation keys (on servers and clients) that stop counting within
    /// `within_ms` of `now_ms`, soonest first: what both sides warn about
    /// before limits shrink (SPEC section 4). Already expired keys are not
    /// listed; the sweep removes them.
    pub fn expiring(&self, now_ms: u64, within_ms: u64) -> Vec<ExpiryWarning> {
        let soon = |key: &Key| {
            key.expires_at_ms
                .filter(|at| *at > now_ms && *at - now_ms <= within_ms)
                .map(|at| at - now_ms)
        };
        let servers = self.state.server_keys.values().filter_map(|sk| {
            soon(&sk.key).map(|left| ExpiryWarning {
                owner: format!("server:{}", sk.server),
                key: sk.key.clone(),
                expires_in_ms: left,
            })
        });
        let clients = self.state.clients.values().flat_map(|c| {
            c.keys.iter().filter_map(move |k| {
                soon(k).map(|left| ExpiryWarning {
                    owner: format!("client:{}", c.id),
                    key: k.clone(),
                    expires_in_ms: left,
                })
            })
        });
        let mut all: Vec<ExpiryWarning> = servers.chain(clients).collect();
        all.sort_by(|a, b| (a.expires_in_ms, &a.owner).cmp(&(b.expires_in_ms, &b.owner)));
        all
    }

    /// The log index of the last applied command.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Applies the command at log `index`.
    ///
    /// # Errors
    /// The command is refused; the table (all but the applied index) is unchanged.
    pub fn apply_command(&mut self, index: u64, command: Command) -> Result<Reply, CommandError> {
        self.applied_index = self.applied_index.max(index);
        match command {
            Command::Register {
                now_ms,
                id,
                serial,
                address,
                version,
                report,
            } => self.register(now_ms, id, serial, address, version, report),
            Command::Heartbeat {
                now_ms,
                id,
                address,
                report,
            } => self.report(now_ms, &id, Some(address), report, true),
            Command::Update { now_ms, id, report } => self.report(now_ms, &id, None, report, false),
            Command::Acquire {
                now_ms,
                id,
                license_type,
                count,
            } => self.acquire(now_ms, &id, &license_type, count),
            Command::Release {
                now_ms,
                id,
                license_type,
                count,
            } => self.release(now_ms, &id, &license_type, count),
            Command::RemoveClient { id } => self.remove_client(&id),
            Command::InstallServerKey {
                now_ms,
                key_id,
                server,
                key,
            } => self.install_server_key(now_ms, key_id, server, key),
            Command::RemoveServerKey { key_id } => self.remove_server_key(&key_id),
            Command::Sweep { now_ms } => Ok(Reply::Swept(self.sweep(now_ms))),
        }
    }

    fn client_reply(client: &Client, pool: &Pool) -> Reply {
        Reply::Client {
            client: Box::new(client.clone()),
            pool: pool.clone(),
        }
    }

    /// Checks a report and brings it into canonical form (no zero counts,
    /// keys sorted, keys already expired at `now_ms` dropped).
    fn normalize(&self, now_ms: u64, report: ClientReport) -> Result<ClientReport, CommandError> {
        let known = |t: &LicenseType| {
            self.config
                .kind(t)
                .ok_or_else(|| CommandError::UnknownType(t.clone()))
        };
        let mut builtin = BTreeMap::new();
        for (t, n) in report.builtin {
            known(&t)?;
            if n > 0 {
                builtin.insert(t, n);
            }
        }
        let mut keys = Vec::with_capacity(report.keys.len());
        for key in report.keys {
            known(&key.license_type)?;
            if key.count == 0 {
                return Err(CommandError::ZeroCount);
            }
            if !key.is_expired(now_ms) {
                keys.push(key);
            }
        }
        keys.sort();
        let mut used = BTreeMap::new();
        for (t, n) in report.used {
            if known(&t)? != TypeKind::Poolable && n > 0 {
                return Err(CommandError::NotPoolable(t));
            }
            if n > 0 {
                used.insert(t, n);
            }
        }
        Ok(ClientReport { builtin, keys, used })
    }

    fn register(
        &mut self,
        now_ms: u64,
        id: String,
        serial: String,
        address: String,
        version: String,
        report: ClientReport,
    ) -> Result<Reply, CommandError> {
        if id.is_empty() {
            return Err(CommandError::EmptyId);
        }
        let report = self.normalize(now_ms, report)?;
        let previous = self.state.clients.remove(&id);
        if let Some(old) = &previous {
            pool::apply_client(&mut self.pool, &self.config, old, false);
        }
        let mut client = Client {
            id: id.clone(),
            serial,
            address,
            version,
            builtin: report.builtin,
            keys: report.keys,
            used: report.used,
            state: ClientState::Up,
            registered_ms: previous.as_ref().map_or(now_ms, |c| c.registered_ms),
            last_heard_ms: previous.as_ref().map_or(now_ms, |c| c.last_heard_ms.max(now_ms)),
            stats: previous.map(|c| c.stats).unwrap_or_default(),
        };
        client.stats.missed_in_a_row = 0;
        pool::apply_client(&mut self.pool, &self.config, &client, true);
        let reply = Self::client_reply(&client, &self.pool);
        self.state.clients.insert(id, client);
        Ok(reply)
    }

    fn report(
        &mut self,
        now_ms: u64,
        id: &str,
        address: Option<String>,
        report: ClientReport,
        heartbeat: bool,
    ) -> Result<Reply, CommandError> {
        if !self.state.clients.contains_key(id) {
            return Err(CommandError::UnknownClient(id.to_owned()));
        }
        let report = self.normalize(now_ms, report)?;
        self.update_client(id, now_ms, |client| {
            client.builtin = report.builtin;
            client.keys = report.keys;
            client.used = report.used;
            if let Some(address) = address {
                client.address = address;
            }
            if heartbeat {
                client.stats.heartbeats += 1;
            }
        })
    }

    /// Changes one client: its contribution leaves the pool, `change` runs,
    /// the client counts as heard from, and its contribution returns.
    fn update_client(
        &mut self,
        id: &str,
        now_ms: u64,
        change: impl FnOnce(&mut Client),
    ) -> Result<Reply, CommandError> {
        let client = self
            .state
            .clients
            .get_mut(id)
            .ok_or_else(|| CommandError::UnknownClient(id.to_owned()))?;
        pool::apply_client(&mut self.pool, &self.config, client, false);
        change(client);
        heard(client, now_ms);
        pool::apply_client(&mut self.pool, &self.config, client, true);
        Ok(Self::client_reply(client, &self.pool))
    }

    /// Checks that `license_type` can be drawn from the pool by a command of `count`.
    fn check_poolable(&self, license_type: &LicenseType, count: u32) -> Result<(), CommandError> {
        match self.config.kind(license_type) {
            None => Err(CommandError::UnknownType(license_type.clone())),
            Some(TypeKind::SwitchSpecific) => Err(CommandError::NotPoolable(license_type.clone())),
            Some(TypeKind::Poolable) if count == 0 => Err(CommandError::ZeroCount),
            Some(TypeKind::Poolable) => Ok(()),
        }
    }

    fn acquire(
        &mut self,
        now_ms: u64,
        id: &str,
        license_type: &LicenseType,
        count: u32,
    ) -> Result<Reply, CommandError> {
        let client = self
            .state
            .clients
            .get(id)
            .ok_or_else(|| CommandError::UnknownClient(id.to_owned()))?;
        self.check_poolable(license_type, count)?;
        let entry = self.pool.get(license_type).copied().unwrap_or_default();
        if entry.over_subscribed() {
            return Err(CommandError::OverSubscribed {
                license_type: license_type.clone(),
                available: entry.available(),
            });
        }
        if entry.available() < i64::from(count) {
            return Err(CommandError::NotEnoughLicenses {
                license_type: license_type.clone(),
                requested: count,
                available: entry.available(),
            });
        }
        let new_used = client
            .used_of(license_type)
            .checked_add(count)
            .ok_or(CommandError::CountOverflow)?;
        self.update_client(id, now_ms, |client| {
            client.used.insert(license_type.clone(), new_used);
        })
    }

    fn release(
        &mut self,
        now_ms: u64,
        id: &str,
        license_type: &LicenseType,
        count: u32,
    ) -> Result<Reply, CommandError> {
        let client = self
            .state
            .clients
            .get(id)
            .ok_or_else(|| CommandError::UnknownClient(id.to_owned()))?;
        self.check_poolable(license_type, count)?;
        let used = client.used_of(license_type);
        if count > used {
            return Err(CommandError::ReleaseExceedsUsed {
                license_type: license_type.clone(),
                requested: count,
                used,
            });
        }
        self.update_client(id, now_ms, |client| {
            if used == count {
                client.used.remove(license_type);
            } else {
                client.used.insert(license_type.clone(), used - count);
            }
        })
    }

    fn remove_client(&mut self, id: &str) -> Result<Reply, CommandError> {
        let client = self
            .state
            .clients
            .remove(id)
            .ok_or_else(|| CommandError::UnknownClient(id.to_owned()))?;
        pool::apply_client(&mut self.pool, &self.config, &client, false);
        Ok(Reply::ClientRemoved {
            pool: self.pool.clone(),
        })
    }

    fn install_server_key(
        &mut self,
        now_ms: u64,
        key_id: String,
        server: String,
        key: Key,
    ) -> Result<Reply, CommandError> {
        if key_id.is_empty() || server.is_empty() {
            return Err(CommandError::EmptyId);
        }
        if self.config.kind(&key.license_type).is_none() {
            return Err(CommandError::UnknownType(key.license_type));
        }
        if key.count == 0 {
            return Err(CommandError::ZeroCount);
        }
        if key.is_expired(now_ms) {
            return Err(CommandError::KeyExpired);
        }
        if self.state.server_keys.contains_key(&key_id) {
            return Err(CommandError::KeyExists(key_id));
        }
        let server_key = ServerKey { server, key };
        pool::apply_server_key(&mut self.pool, &server_key, true);
        self.state.server_keys.insert(key_id, server_key);
        Ok(Reply::ServerKey {
            pool: self.pool.clone(),
        })
    }

    fn remove_server_key(&mut self, key_id: &str) -> Result<Reply, CommandError> {
        let server_key = self
            .state
            .server_keys
            .remove(key_id)
            .ok_or_else(|| CommandError::UnknownKey(key_id.to_owned()))?;
        pool::apply_server_key(&mut self.pool, &server_key, false);
        Ok(Reply::ServerKey {
            pool: self.pool.clone(),
        })
    }

    /// Replaces state and applied index, rebuilding the derived pool.
    fn replace(&mut self, applied_index: u64, state: TableState) {
        self.pool = pool::recompute(&self.config, state.clients.values(), state.server_keys.values());
        self.state = state;
        self.applied_index = applied_index;
    }
}

/// Marks a client heard at `now_ms`: up, and no heartbeats missed.
fn heard(client: &mut Client, now_ms: u64) {
    // A new leader's clock may lag the old one's: never move backwards.
    client.last_heard_ms = client.last_heard_ms.max(now_ms);
    client.state = ClientState::Up;
    client.stats.missed_in_a_row = 0;
}

impl cluster::StateMachine for LicenseTable {
    type Command = Command;
    type Response = Result<Reply, CommandError>;

    fn apply(&mut self, index: u64, command: Command) -> Self::Response {
        self.apply_command(index, command)
    }

    fn applied_index(&self) -> u64 {
        self.applied_index
    }

    fn snapshot(&self) -> Vec<u8> {
        snapshot::encode(self.applied_index, &self.state)
    }

    fn describe(command: &Command) -> String {
        command.describe()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), cluster::SnapshotError> {
        let (applied_index, state) = snapshot::decode(bytes)?;
        self.replace(applied_index, state);
        Ok(())
    }
}

/// An evaluation key about to stop counting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryWarning {
    /// `server:NAME` or `client:ID`, as the server table labels contributors.
    pub owner: String,
    /// The key.
    pub key: Key,
    /// Milliseconds until it stops counting.
    pub expires_in_ms: u64,
}

impl std::fmt::Display for ExpiryWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.expires_in_ms / 1000;
        write!(
            f,
            "evaluation key {} x{} of {} expires in {}d {}h {}m",
            self.key.license_type,
            self.key.count,
            self.owner,
            secs / 86_400,
            secs % 86_400 / 3600,
            secs % 3600 / 60
        )
    }
}
