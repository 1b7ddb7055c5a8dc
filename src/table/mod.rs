//! The shared license table: a pure, deterministic state machine.
//!
//! [`LicenseTable::apply_command`] is the only way to change it. It uses
//! nothing but the table, the configuration and the command (the leader
//! stamps its clock into every command), keeps every map ordered, and
//! refuses a bad command with a [`CommandError`] without touching anything,
//! so every node that applies the same log ends with the same table.
//!
//! What the table checks when it applies, whoever proposed the entry:
//!
//! - every string and count is within the bounds of [`limits`];
//! - a key counts once: its id is counted by at most one client or server,
//!   it is bound to the serial of whoever presents it, it has not expired
//!   at the entry's `now_ms`, and its issuer is one the pair trusts, as
//!   the log recorded them ([`TableState::issuers`], set by
//!   [`Command::Issuers`]: the same on every replica, whatever each
//!   node's configuration says). That its signature verifies under that
//!   issuer's key is checked where the command is proposed (the table
//!   holds no signature; see `server::request`). When the recorded
//!   issuers change, the keys of an issuer no longer among them stop
//!   counting at once (clients' and servers' alike);
//! - S3 for every client command: a grant, and a report that claims to use
//!   more than the client holds, needs that many available (and the type
//!   not over-subscribed). A type becomes over-subscribed only when
//!   contributions shrink (a key expires or is withdrawn, a client or a
//!   server key goes), never by a grant.
//!
//! [`LicenseTable::check`] runs the same checks without applying, so that
//! the proposer can refuse a request with the error the table would give.
//!
//! The settings the table applies commands with (license types and client
//! timers, [`TableConfig`]) are part of the replicated state: a committed
//! [`Command::Settings`] changes them, snapshots carry them, so every
//! member applies the same log the same way whatever its own
//! configuration says.
//!
//! The table knows nothing of the replicated log: it applies commands,
//! and snapshots and restores itself ([`LicenseTable::snapshot`],
//! [`LicenseTable::restore`]). The node wraps it as the log's state machine
//! (`node::applier::SharedTable`).

mod command;
mod config;
mod derived;
pub mod limits;
pub mod pool;
mod snapshot;
mod sweep;
#[cfg(test)]
pub(crate) mod tests;
mod tickets;
mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use command::{describe_issuers, Command, CommandError, Reply, SweepReport};
pub use config::{
    SettingDifference, SettingsError, TableConfig, TypeKind, DEFAULT_POOLABLE, DEFAULT_SWITCH_SPECIFIC,
    MAX_TYPES as MAX_SETTINGS_TYPES,
};
pub use derived::source_of;
pub use snapshot::{SnapshotError, SNAPSHOT_VERSION};
pub use tickets::{TicketKey, KEPT_TICKET_KEYS};
pub use types::{
    pool_demand, Actor, Client, ClientReport, ClientState, HeartbeatStats, Key, LicenseType, Pool, PoolEntry,
    ServerInfo, ServerKey, VerifiedKey,
};

use derived::Derived;
use limits::{MAX_COUNT, MAX_KEYS_PER_CLIENT, MAX_KEYS_PER_SERVER, MAX_TYPES_PER_REPORT};
use pool::Contributor;

/// The replicated part of the table: what a snapshot holds besides the applied index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableState {
    /// Clients by id.
    pub clients: BTreeMap<String, Client>,
    /// The servers' own keys by key id.
    pub server_keys: BTreeMap<String, ServerKey>,
    /// The servers by node name, as each announced itself.
    pub servers: BTreeMap<String, ServerInfo>,
    /// For each client id, the not-before (seconds since the Unix epoch)
    /// of the newest certificate it registered with: commands over an
    /// older certificate of that id are refused. Kept when the client
    /// leaves the table (removed by an operator or after its silence), so
    /// that a replaced switch's certificate cannot take the id back then
    /// either, until [`limits::MAX_SWITCH_CERT_DAYS`] after that issue,
    /// when every older certificate has expired (the sweep drops it).
    pub cert_floors: BTreeMap<String, u64>,
    /// The issuers the pair trusts, as the VIP holder set them last
    /// ([`Command::Issuers`]): name to Ed25519 public key (URL-safe
    /// base64, as in a trust file). A server whose `license.issuers`
    /// differ says so; empty until the first such entry.
    pub issuers: BTreeMap<String, String>,
    /// The pair's TLS session-ticket keys ([`Command::TicketKey`]), oldest
    /// first, at most [`KEPT_TICKET_KEYS`]. Secret: never in a view.
    pub ticket_keys: Vec<TicketKey>,
}

/// The license table with its settings and what is derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseTable {
    /// Replicated: set by [`Command::Settings`], carried in snapshots.
    config: TableConfig,
    state: TableState,
    // Kept up to date incrementally, rebuilt on restore.
    derived: Derived,
    applied_index: u64,
}

impl LicenseTable {
    /// An empty table applying commands with `config` until a
    /// [`Command::Settings`] or a snapshot says otherwise. Members of a
    /// pair all start from [`TableConfig::default`], so that the entries
    /// before the first `Settings` apply alike everywhere.
    pub fn new(config: TableConfig) -> Self {
        let derived = Derived::new(&config);
        Self {
            config,
            state: TableState::default(),
            derived,
            applied_index: 0,
        }
    }

    /// The settings the table applies commands with: the replicated ones.
    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// Clients, server keys and servers.
    pub fn state(&self) -> &TableState {
        &self.state
    }

    /// The pool per poolable type.
    pub fn pool(&self) -> &Pool {
        &self.derived.pool
    }

    /// One client.
    pub fn client(&self, id: &str) -> Option<&Client> {
        self.state.clients.get(id)
    }

    /// Who counts the key of this id, if anyone does.
    pub fn key_owner(&self, key_id: &str) -> Option<&Contributor> {
        self.derived.key_owners.get(key_id)
    }

    /// How many clients were last heard from the address `source`.
    pub fn clients_from(&self, source: IpAddr) -> usize {
        self.derived.sources.get(&source).copied().unwrap_or(0)
    }

    /// The serial server `server` announced, if it did.
    pub fn server_serial(&self, server: &str) -> Option<&str> {
        self.state.servers.get(server).map(|s| s.serial.as_str())
    }

    /// The newest of the pair's times the table holds, if any: when a
    /// client was last heard, when the newest session-ticket key was made.
    /// A member that restores the table continues the pair's time from
    /// here (`server::stamp`), not from its own wall clock.
    pub fn latest_stamp_ms(&self) -> Option<u64> {
        let heard = self.state.clients.values().map(|c| c.last_heard_ms);
        let tickets = self.state.ticket_keys.iter().map(|k| k.created_ms);
        heard.chain(tickets).max()
    }

    /// Evaluation keys (on servers and clients) that stop counting within
    /// `within_ms` of `now_ms`, soonest first: what both sides warn about
    /// before limits shrink (SPEC section 4). Already expired keys are not
    /// listed; the sweep removes them.
    pub fn expiring(&self, now_ms: u64, within_ms: u64) -> Vec<ExpiryWarning> {
        let soon = |key: &VerifiedKey| {
            key.key
                .expires_at_ms
                .filter(|at| *at > now_ms && *at - now_ms <= within_ms)
                .map(|at| at - now_ms)
        };
        let servers = self.state.server_keys.values().filter_map(|sk| {
            soon(&sk.key).map(|left| ExpiryWarning {
                owner: Contributor::Server(sk.server.clone()).to_string(),
                key: sk.key.clone(),
                expires_in_ms: left,
            })
        });
        let clients = self.state.clients.values().flat_map(|c| {
            c.keys.iter().filter_map(move |k| {
                soon(k).map(|left| ExpiryWarning {
                    owner: Contributor::Client(c.id.clone()).to_string(),
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
    /// The command is refused ([`LicenseTable::check`]); the table (all but
    /// the applied index) is unchanged.
    pub fn apply_command(&mut self, index: u64, command: Command) -> Result<Reply, CommandError> {
        self.applied_index = self.applied_index.max(index);
        self.check(&command)?;
        self.execute(command)
    }

    /// Whether the table would apply `command` now, and if not, why: every
    /// check `apply_command` makes, without changing anything.
    ///
    /// # Errors
    /// Why the command would be refused.
    pub fn check(&self, command: &Command) -> Result<(), CommandError> {
        match command {
            Command::Register {
                now_ms,
                id,
                serial,
                address,
                version,
                report,
            } => {
                limits::check_client_id(id)?;
                limits::check_serial(serial)?;
                limits::check_address(address)?;
                limits::check_version(version)?;
                self.check_report(*now_ms, id, serial, report)?;
                self.check_claims(self.state.clients.get(id), report)
            }
            Command::Heartbeat {
                now_ms,
                id,
                address,
                report,
            } => {
                let client = self.known(id)?;
                limits::check_address(address)?;
                self.check_report(*now_ms, id, &client.serial, report)?;
                self.check_claims(Some(client), report)
            }
            Command::Update { now_ms, id, report } => {
                let client = self.known(id)?;
                self.check_report(*now_ms, id, &client.serial, report)?;
                self.check_claims(Some(client), report)
            }
            Command::Acquire {
                id,
                license_type,
                count,
                ..
            } => self.check_acquire(id, license_type, *count),
            Command::Release {
                id,
                license_type,
                count,
                ..
            } => {
                let client = self.known(id)?;
                self.check_poolable(license_type, *count)?;
                let used = client.used_of(license_type);
                if *count > used {
                    return Err(CommandError::ReleaseExceedsUsed {
                        license_type: license_type.clone(),
                        requested: *count,
                        used,
                    });
                }
                Ok(())
            }
            Command::RemoveClient { id, by } => {
                check_actor(by)?;
                self.known(id).map(|_| ())
            }
            Command::ServerSerial { server, serial } => {
                limits::check_server_name(server)?;
                limits::check_serial(serial)?;
                Ok(())
            }
            Command::InstallServerKey {
                now_ms,
                server,
                key,
                by,
            } => self.check_install(*now_ms, server, key, by),
            Command::RemoveServerKey { key_id, by } => {
                check_actor(by)?;
                if self.state.server_keys.contains_key(key_id) {
                    return Ok(());
                }
                Err(match self.derived.key_owners.get(key_id) {
                    Some(Contributor::Client(client)) => CommandError::KeyOfClient {
                        key_id: key_id.clone(),
                        client: client.clone(),
                    },
                    _ => CommandError::UnknownKey(key_id.clone()),
                })
            }
            Command::Sweep { .. } => Ok(()),
            Command::Settings { settings, by } => {
                check_actor(by)?;
                Ok(settings.check()?)
            }
            Command::Issuers { issuers, by } => {
                check_actor(by)?;
                if issuers.len() > limits::MAX_ISSUERS {
                    return Err(CommandError::Issuers(format!(
                        "{} issuers: at most {}",
                        issuers.len(),
                        limits::MAX_ISSUERS
                    )));
                }
                for (name, key) in issuers {
                    crate::license::TrustedIssuer::from_parts(name, key)
                        .map_err(|e| CommandError::Issuers(format!("{name:?}: {e}")))?;
                }
                Ok(())
            }
            Command::TicketKey { key, by } => {
                check_actor(by)?;
                if key.secret == [0; 32] {
                    return Err(CommandError::TicketKey("an all-zero secret".into()));
                }
                if self.state.ticket_keys.iter().any(|k| k.id == key.id) {
                    return Err(CommandError::TicketKey(format!(
                        "key id {} is already in use",
                        key.id
                    )));
                }
                Ok(())
            }
            Command::Certified { issued_s, command } => {
                let id = command.switch_id().ok_or(CommandError::NotCertifiable)?;
                if let Some(floor) = self.cert_floor(id) {
                    if *issued_s < floor {
                        return Err(CommandError::SupersededCertificate {
                            id: id.to_owned(),
                            issued_s: *issued_s,
                            floor,
                        });
                    }
                }
                self.check(command)
            }
        }
    }

    /// The not-before (s) of the newest certificate client `id` registered
    /// with, if the table remembers one (see [`TableState::cert_floors`]).
    pub fn cert_floor(&self, id: &str) -> Option<u64> {
        self.state.cert_floors.get(id).copied()
    }

    /// Applies a command that passed [`LicenseTable::check`].
    fn execute(&mut self, command: Command) -> Result<Reply, CommandError> {
        match command {
            Command::Register {
                now_ms,
                id,
                serial,
                address,
                version,
                report,
            } => Ok(self.register(now_ms, id, serial, address, version, normalized(report))),
            Command::Heartbeat {
                now_ms,
                id,
                address,
                report,
            } => self.report(now_ms, &id, Some(address), normalized(report), true),
            Command::Update { now_ms, id, report } => {
                self.report(now_ms, &id, None, normalized(report), false)
            }
            Command::Acquire {
                now_ms,
                id,
                license_type,
                count,
            } => self.update_client(&id, now_ms, |client| {
                let new_used = client.used_of(&license_type).saturating_add(count);
                client.used.insert(license_type, new_used);
            }),
            Command::Release {
                now_ms,
                id,
                license_type,
                count,
            } => self.update_client(&id, now_ms, |client| {
                let used = client.used_of(&license_type).saturating_sub(count);
                if used == 0 {
                    client.used.remove(&license_type);
                } else {
                    client.used.insert(license_type, used);
                }
            }),
            Command::RemoveClient { id, .. } => self.remove_client(&id),
            Command::ServerSerial { server, serial } => Ok(self.server_serial_changed(server, serial)),
            Command::InstallServerKey { server, key, by, .. } => {
                let server_key = ServerKey {
                    server,
                    key,
                    installed_by: by,
                };
                self.derived.attach_server_key(&server_key);
                self.state
                    .server_keys
                    .insert(server_key.key.key_id.clone(), server_key);
                Ok(self.server_key_reply())
            }
            Command::RemoveServerKey { key_id, .. } => {
                let server_key = self
                    .state
                    .server_keys
                    .remove(&key_id)
                    .ok_or(CommandError::UnknownKey(key_id))?;
                self.derived.detach_server_key(&server_key);
                Ok(self.server_key_reply())
            }
            Command::Sweep { now_ms } => Ok(Reply::Swept(self.sweep(now_ms))),
            Command::Settings { settings, .. } => {
                // The pool depends on which types are poolable: rebuild it.
                // A client keeps what it reported; a type that is no longer
                // poolable (or known) just stops counting in the pool.
                self.derived = Derived::rebuild(&settings, &self.state);
                self.config = settings;
                Ok(Reply::Settings {
                    pool: self.derived.pool.clone(),
                })
            }
            Command::Issuers { issuers, .. } => {
                self.state.issuers = issuers;
                self.drop_untrusted_keys();
                Ok(Reply::Settings {
                    pool: self.derived.pool.clone(),
                })
            }
            Command::TicketKey { key, .. } => {
                let keys = &mut self.state.ticket_keys;
                keys.push(key);
                keys.sort_by_key(|k| (k.created_ms, k.id));
                let extra = keys.len().saturating_sub(KEPT_TICKET_KEYS);
                keys.drain(..extra);
                Ok(Reply::Settings {
                    pool: self.derived.pool.clone(),
                })
            }
            Command::Certified { issued_s, command } => {
                let registers = match &*command {
                    Command::Register { id, .. } => Some(id.clone()),
                    _ => None,
                };
                let reply = self.execute(*command)?;
                // A registration over a newer certificate supersedes the
                // older ones of its id.
                if let Some(id) = registers {
                    let floor = self.state.cert_floors.entry(id).or_insert(issued_s);
                    *floor = (*floor).max(issued_s);
                }
                Ok(reply)
            }
        }
    }

    fn known(&self, id: &str) -> Result<&Client, CommandError> {
        self.state
            .clients
            .get(id)
            .ok_or_else(|| CommandError::UnknownClient(id.to_owned()))
    }

    fn kind(&self, license_type: &LicenseType) -> Result<TypeKind, CommandError> {
        self.config
            .kind(license_type)
            .ok_or_else(|| CommandError::UnknownType(license_type.clone()))
    }

    /// Checks a report of client `owner`, whose serial is `serial`: bounds,
    /// known types, and every key (see [`LicenseTable::check_key`]) counted
    /// by nobody else.
    fn check_report(
        &self,
        now_ms: u64,
        owner: &str,
        serial: &str,
        report: &ClientReport,
    ) -> Result<(), CommandError> {
        if report.keys.len() > MAX_KEYS_PER_CLIENT {
            return Err(CommandError::TooManyKeys {
                count: report.keys.len(),
                max: MAX_KEYS_PER_CLIENT,
                per: "client".into(),
            });
        }
        for map in [&report.builtin, &report.used] {
            if map.len() > MAX_TYPES_PER_REPORT {
                return Err(CommandError::TooManyTypes {
                    count: map.len(),
                    max: MAX_TYPES_PER_REPORT,
                });
            }
        }
        let bounded = |license_type: &LicenseType, count: u32| {
            if count > MAX_COUNT {
                return Err(CommandError::CountTooLarge {
                    license_type: license_type.clone(),
                    count,
                    max: MAX_COUNT,
                });
            }
            Ok(())
        };
        for (license_type, n) in &report.builtin {
            self.kind(license_type)?;
            bounded(license_type, *n)?;
        }
        for (license_type, n) in &report.used {
            if self.kind(license_type)? != TypeKind::Poolable && *n > 0 {
                return Err(CommandError::NotPoolable(license_type.clone()));
            }
            bounded(license_type, *n)?;
        }
        let mut seen = BTreeSet::new();
        for key in &report.keys {
            self.check_key(now_ms, key, serial)?;
            if !seen.insert(key.key_id.as_str()) {
                return Err(CommandError::DuplicateKey(key.key_id.clone()));
            }
            match self.derived.key_owners.get(&key.key_id) {
                Some(Contributor::Client(id)) if id == owner => {}
                Some(by) => {
                    return Err(CommandError::KeyCounted {
                        key_id: key.key_id.clone(),
                        by: by.clone(),
                    })
                }
                None => {}
            }
        }
        Ok(())
    }

    /// What the table can check of a verified key from the entry alone: its
    /// strings, its issuer among those the pair trusts, its type, a count
    /// of at least one, its binding to the presenter's `serial`, and that
    /// it has not expired at `now_ms`.
    fn check_key(&self, now_ms: u64, key: &VerifiedKey, serial: &str) -> Result<(), CommandError> {
        limits::check_key_id(&key.key_id)?;
        limits::check_issuer(&key.issuer)?;
        if !self.state.issuers.contains_key(&key.issuer) {
            return Err(CommandError::IssuerNotTrusted {
                key_id: key.key_id.clone(),
                issuer: key.issuer.clone(),
            });
        }
        limits::check_serial(&key.serial)?;
        self.kind(&key.key.license_type)?;
        if key.key.count == 0 {
            return Err(CommandError::ZeroCount);
        }
        if key.serial != serial {
            return Err(CommandError::KeyNotBound {
                key_id: key.key_id.clone(),
                bound: key.serial.clone(),
                presenter: serial.to_owned(),
            });
        }
        if key.is_expired(now_ms) {
            return Err(CommandError::KeyExpired(key.key_id.clone()));
        }
        Ok(())
    }

    /// A report's `used` is a claim: wherever it rises above what the
    /// client holds in the table (`old`; nothing when it is new or down),
    /// the pool must have the difference available once the report's own
    /// keys replace the client's old ones, exactly as an acquire of the
    /// difference would. Lowering and repeating are always fine.
    fn check_claims(&self, old: Option<&Client>, report: &ClientReport) -> Result<(), CommandError> {
        for (license_type, &claimed) in &report.used {
            let held = old.map_or(0, |c| c.used_of(license_type));
            if claimed <= held {
                continue;
            }
            let entry = self.derived.pool.get(license_type).copied().unwrap_or_default();
            let of_type = |keys: &[VerifiedKey]| -> i128 {
                keys.iter()
                    .filter(|k| &k.key.license_type == license_type)
                    .map(|k| i128::from(k.key.count))
                    .sum()
            };
            let total = i128::from(entry.total) - old.map_or(0, |c| of_type(&c.keys)) + of_type(&report.keys);
            let available = total - i128::from(entry.used);
            if i128::from(claimed - held) > available {
                return Err(CommandError::ClaimExceedsAvailable {
                    license_type: license_type.clone(),
                    claimed,
                    held,
                    available: i64::try_from(available).unwrap_or(if available < 0 {
                        i64::MIN
                    } else {
                        i64::MAX
                    }),
                });
            }
        }
        Ok(())
    }

    /// Checks that `license_type` can be drawn from the pool by a command of `count`.
    fn check_poolable(&self, license_type: &LicenseType, count: u32) -> Result<(), CommandError> {
        match self.kind(license_type)? {
            TypeKind::SwitchSpecific => Err(CommandError::NotPoolable(license_type.clone())),
            TypeKind::Poolable if count == 0 => Err(CommandError::ZeroCount),
            TypeKind::Poolable => Ok(()),
        }
    }

    fn check_acquire(&self, id: &str, license_type: &LicenseType, count: u32) -> Result<(), CommandError> {
        let client = self.known(id)?;
        self.check_poolable(license_type, count)?;
        let entry = self.derived.pool.get(license_type).copied().unwrap_or_default();
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
        // What a client holds must fit in its next report.
        if new_used > MAX_COUNT {
            return Err(CommandError::CountTooLarge {
                license_type: license_type.clone(),
                count: new_used,
                max: MAX_COUNT,
            });
        }
        Ok(())
    }

    fn check_install(
        &self,
        now_ms: u64,
        server: &str,
        key: &VerifiedKey,
        by: &Actor,
    ) -> Result<(), CommandError> {
        limits::check_server_name(server)?;
        check_actor(by)?;
        let serial = self
            .server_serial(server)
            .ok_or_else(|| CommandError::UnknownServer(server.to_owned()))?;
        self.check_key(now_ms, key, serial)?;
        match self.derived.key_owners.get(&key.key_id) {
            Some(Contributor::Server(s)) if s == server => {
                return Err(CommandError::KeyExists(key.key_id.clone()))
            }
            Some(by) => {
                return Err(CommandError::KeyCounted {
                    key_id: key.key_id.clone(),
                    by: by.clone(),
                })
            }
            None => {}
        }
        let installed = self
            .state
            .server_keys
            .values()
            .filter(|k| k.server == server)
            .count();
        if installed >= MAX_KEYS_PER_SERVER {
            return Err(CommandError::TooManyKeys {
                count: installed + 1,
                max: MAX_KEYS_PER_SERVER,
                per: "server".into(),
            });
        }
        Ok(())
    }

    fn client_reply(client: &Client, pool: &Pool) -> Reply {
        Reply::Client {
            client: Box::new(client.clone()),
            pool: pool.clone(),
        }
    }

    fn server_key_reply(&self) -> Reply {
        Reply::ServerKey {
            pool: self.derived.pool.clone(),
        }
    }

    fn register(
        &mut self,
        now_ms: u64,
        id: String,
        serial: String,
        address: String,
        version: String,
        report: ClientReport,
    ) -> Reply {
        let previous = self.state.clients.remove(&id);
        if let Some(old) = &previous {
            self.derived.detach_client(&self.config, old);
        }
        // A new serial under an old id is a replaced switch (SPEC §5): a
        // new device, whose history starts anew. What the id used is the
        // id's, and was checked as its claim.
        let same = previous.filter(|c| c.serial == serial);
        let mut client = Client {
            id: id.clone(),
            serial,
            address,
            version,
            builtin: report.builtin,
            keys: report.keys,
            used: report.used,
            state: ClientState::Up,
            registered_ms: same.as_ref().map_or(now_ms, |c| c.registered_ms),
            last_heard_ms: same.as_ref().map_or(now_ms, |c| c.last_heard_ms.max(now_ms)),
            stats: same.map(|c| c.stats).unwrap_or_default(),
        };
        client.stats.missed_in_a_row = 0;
        self.derived.attach_client(&self.config, &client);
        let reply = Self::client_reply(&client, &self.derived.pool);
        self.state.clients.insert(id, client);
        reply
    }

    fn report(
        &mut self,
        now_ms: u64,
        id: &str,
        address: Option<String>,
        report: ClientReport,
        heartbeat: bool,
    ) -> Result<Reply, CommandError> {
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
        self.derived.detach_client(&self.config, client);
        change(client);
        heard(client, now_ms);
        self.derived.attach_client(&self.config, client);
        Ok(Self::client_reply(client, &self.derived.pool))
    }

    fn remove_client(&mut self, id: &str) -> Result<Reply, CommandError> {
        let client = self
            .state
            .clients
            .remove(id)
            .ok_or_else(|| CommandError::UnknownClient(id.to_owned()))?;
        self.derived.detach_client(&self.config, &client);
        Ok(Reply::ClientRemoved {
            pool: self.derived.pool.clone(),
        })
    }

    /// Records a server's serial; keys of that server bound to another
    /// serial (the one it was replaced under) stop counting.
    fn server_serial_changed(&mut self, server: String, serial: String) -> Reply {
        let stale: Vec<String> = self
            .state
            .server_keys
            .iter()
            .filter(|(_, k)| k.server == server && k.key.serial != serial)
            .map(|(id, _)| id.clone())
            .collect();
        for key_id in stale {
            if let Some(server_key) = self.state.server_keys.remove(&key_id) {
                self.derived.detach_server_key(&server_key);
            }
        }
        self.state.servers.insert(server, ServerInfo { serial });
        self.server_key_reply()
    }

    /// Keys whose issuer is no longer among those the pair trusts stop
    /// counting: a server's leave the table, a client's leave the client
    /// (its next report presents them again, and the node that proposes it
    /// refuses them). A type can become over-subscribed by it, as when any
    /// contribution shrinks.
    fn drop_untrusted_keys(&mut self) {
        let issuers = &self.state.issuers;
        let untrusted: Vec<String> = self
            .state
            .server_keys
            .iter()
            .filter(|(_, k)| !issuers.contains_key(&k.key.issuer))
            .map(|(id, _)| id.clone())
            .collect();
        for key_id in untrusted {
            if let Some(server_key) = self.state.server_keys.remove(&key_id) {
                self.derived.detach_server_key(&server_key);
            }
        }
        for client in self.state.clients.values_mut() {
            if client.keys.iter().all(|k| issuers.contains_key(&k.issuer)) {
                continue;
            }
            self.derived.detach_client(&self.config, client);
            client.keys.retain(|k| issuers.contains_key(&k.issuer));
            self.derived.attach_client(&self.config, client);
        }
    }

    /// Replaces settings, state and applied index, rebuilding what is derived.
    fn replace(&mut self, applied_index: u64, config: TableConfig, state: TableState) {
        self.config = config;
        self.derived = Derived::rebuild(&self.config, &state);
        self.state = state;
        self.applied_index = applied_index;
    }
}

/// A report in canonical form: no zero counts, keys sorted by key id.
fn normalized(report: ClientReport) -> ClientReport {
    let ClientReport {
        builtin,
        mut keys,
        used,
    } = report;
    keys.sort();
    ClientReport {
        builtin: builtin.into_iter().filter(|(_, n)| *n > 0).collect(),
        keys,
        used: used.into_iter().filter(|(_, n)| *n > 0).collect(),
    }
}

fn check_actor(actor: &Actor) -> Result<(), CommandError> {
    match actor {
        Actor::Server(name) => limits::check_server_name(name)?,
        Actor::Operator(name) => limits::check_operator(name)?,
    }
    Ok(())
}

/// Marks a client heard at `now_ms`: up, and no heartbeats missed.
fn heard(client: &mut Client, now_ms: u64) {
    // A new leader's clock may lag the old one's: never move backwards.
    client.last_heard_ms = client.last_heard_ms.max(now_ms);
    client.state = ClientState::Up;
    client.stats.missed_in_a_row = 0;
}

impl LicenseTable {
    /// The whole table, settings and applied index included, as bytes
    /// (see `snapshot`: a versioned envelope around bincode).
    pub fn snapshot(&self) -> Vec<u8> {
        snapshot::encode(self.applied_index, &self.config, &self.state)
    }

    /// Replaces the whole table with a snapshot taken by
    /// [`LicenseTable::snapshot`] (of this format or an older one).
    ///
    /// # Errors
    /// The bytes are not a snapshot this build reads; the table is unchanged.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let (applied_index, config, state) = snapshot::decode(bytes)?;
        self.replace(applied_index, config, state);
        Ok(())
    }
}

/// An evaluation key about to stop counting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryWarning {
    /// `server:NAME` or `client:ID`, as the server table labels contributors.
    pub owner: String,
    /// The key.
    pub key: VerifiedKey,
    /// Milliseconds until it stops counting.
    pub expires_in_ms: u64,
}

impl std::fmt::Display for ExpiryWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.expires_in_ms / 1000;
        write!(
            f,
            "evaluation key {:?} ({} x{}) of {} expires in {}d {}h {}m",
            self.key.key_id,
            self.key.key.license_type,
            self.key.key.count,
            self.owner,
            secs / 86_400,
            secs % 86_400 / 3600,
            secs % 3600 / 60
        )
    }
}
