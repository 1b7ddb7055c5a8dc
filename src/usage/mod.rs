//! The usage log for license audits: one JSON object per line for every
//! grant, release, client up or down, key change and settings change the
//! pair commits, as FlexNet's report log and RLM's reportlog give their
//! users. Off unless `license.usage_log` names a file.
//!
//! Where events are observed: in the state machine's `apply` of the node
//! that serves (VRRP master and raft leader), right after the command is
//! applied, with the entry's log index, the command and its reply. That is
//! the one place every committed change passes, whoever proposed it: client
//! requests (`server::connection`), the sweeper's `Sweep` (clients marked
//! down or removed), the keys and settings the node proposes, and those the
//! other server submits. The follower applies the same entries but writes
//! nothing; each line carries the entry's `index`, so the two servers' logs
//! merge without double counting across a failover (an entry applied around
//! the handover may appear in both, with the same index; one applied by a
//! node before it serves appears in neither).
//!
//! Writing never blocks applying: lines go through a bounded channel to a
//! writer thread ([`writer`]); when it is full the line is dropped, counted,
//! and a rate-limited warning says how many.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use crate::table::{Actor, Command, CommandError, LicenseType, Pool, Reply};

pub mod writer;

/// Lines waiting for the writer before new ones are dropped.
pub const QUEUE: usize = 4096;

/// Where and how the usage log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageConfig {
    /// The file (`license.usage_log`).
    pub path: PathBuf,
    /// Rotate when the file would grow beyond this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (`path.1` … `path.N`).
    pub keep: u32,
}

/// The default of `license.usage_log_max_bytes`: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The default of `license.usage_log_keep`.
pub const DEFAULT_KEEP: u32 = 4;

/// One line of the usage log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// RFC 3339, UTC, milliseconds: the leader's stamp in the command when
    /// it carries one, else the serving node's clock.
    pub time: String,
    /// The node that wrote the line (it served when it applied the entry).
    pub node: String,
    /// The entry's index in the replicated log; absent for an acquire the
    /// server refused before proposing it (the table would have refused it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// What happened.
    pub event: Kind,
    /// The client concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Its serial (registration) or the key's serial (key changes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The license type of a grant, release, refusal or key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_type: Option<LicenseType>,
    /// How many licenses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// The pool of `license_type` after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_total: Option<u64>,
    /// Used of `license_type` after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_used: Option<u64>,
    /// The whole pool after a change not of one type (a client down or
    /// removed, a key removed, new settings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<Pool>,
    /// The key of a key change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The server a key was installed on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_server: Option<String>,
    /// The operator who made the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The server that made the change from its own configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_server: Option<String>,
    /// Why a request was refused, or what new settings say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The kinds of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Licenses taken from the pool.
    Grant,
    /// An acquire refused by the table (not enough available, ...).
    Denied,
    /// Licenses given back.
    Release,
    /// A client registered.
    ClientUp,
    /// A client missed its heartbeats: its used licenses returned.
    ClientDown,
    /// A client and its contributions left the table (silence or operator).
    ClientRemoved,
    /// A server key installed.
    KeyInstalled,
    /// A server key removed.
    KeyRemoved,
    /// The table's settings changed.
    Settings,
}

/// What the log needs of a command, taken before `apply` consumes it.
#[derive(Debug)]
pub struct Pending {
    now_ms: Option<u64>,
    what: What,
}

#[derive(Debug)]
enum What {
    Register {
        id: String,
        serial: String,
    },
    Acquire {
        id: String,
        ty: LicenseType,
        count: u32,
    },
    Release {
        id: String,
        ty: LicenseType,
        count: u32,
    },
    Remove {
        id: String,
        by: Actor,
    },
    InstallKey {
        server: String,
        key_id: String,
        serial: String,
        ty: LicenseType,
        count: u32,
        by: Actor,
    },
    RemoveKey {
        key_id: String,
        by: Actor,
    },
    Sweep,
    Settings {
        detail: String,
        by: Actor,
    },
}

impl Pending {
    /// What to log of `command`, if anything (heartbeats, updates and
    /// serial announcements are not usage).
    pub fn of(command: &Command) -> Option<Self> {
        let what = match command.inner() {
            Command::Register { id, serial, .. } => What::Register {
                id: id.clone(),
                serial: serial.clone(),
            },
            Command::Acquire {
                id,
                license_type,
                count,
                ..
            } => What::Acquire {
                id: id.clone(),
                ty: license_type.clone(),
                count: *count,
            },
            Command::Release {
                id,
                license_type,
                count,
                ..
            } => What::Release {
                id: id.clone(),
                ty: license_type.clone(),
                count: *count,
            },
            Command::RemoveClient { id, by } => What::Remove {
                id: id.clone(),
                by: by.clone(),
            },
            Command::InstallServerKey { server, key, by, .. } => What::InstallKey {
                server: server.clone(),
                key_id: key.key_id.clone(),
                serial: key.serial.clone(),
                ty: key.key.license_type.clone(),
                count: key.key.count,
                by: by.clone(),
            },
            Command::RemoveServerKey { key_id, by } => What::RemoveKey {
                key_id: key_id.clone(),
                by: by.clone(),
            },
            Command::Sweep { .. } => What::Sweep,
            Command::Settings { settings, by } => What::Settings {
                detail: settings.describe(),
                by: by.clone(),
            },
            Command::Issuers { issuers, by } => What::Settings {
                detail: format!("trusted issuers: {}", crate::table::describe_issuers(issuers)),
                by: by.clone(),
            },
            // `inner` took the certificate's wrapper off.
            Command::Heartbeat { .. }
            | Command::Update { .. }
            | Command::ServerSerial { .. }
            | Command::TicketKey { .. }
            | Command::Certified { .. } => return None,
        };
        Some(Self {
            now_ms: command.now_ms(),
            what,
        })
    }

    /// The events of the applied command: none when the table refused it,
    /// but a refused acquire (`denied`).
    pub fn events(
        self,
        node: &str,
        index: u64,
        reply: &Result<Reply, CommandError>,
        pool: &Pool,
        wall_ms: u64,
    ) -> Vec<Event> {
        let base = base(node, Some(index), self.now_ms.unwrap_or(wall_ms));
        let typed =
            |event: Kind, id: String, ty: LicenseType, count: u32| typed(&base, event, id, ty, count, pool);
        let by = |by: Actor, e: Event| match by {
            Actor::Operator(name) => Event {
                operator: Some(name),
                ..e
            },
            Actor::Server(name) => Event {
                by_server: Some(name),
                ..e
            },
        };
        let ok = reply.is_ok();
        match self.what {
            What::Acquire { id, ty, count } => match reply {
                Ok(_) => vec![typed(Kind::Grant, id, ty, count)],
                Err(e) => vec![Event {
                    detail: Some(e.to_string()),
                    ..typed(Kind::Denied, id, ty, count)
                }],
            },
            _ if !ok => Vec::new(),
            What::Release { id, ty, count } => vec![typed(Kind::Release, id, ty, count)],
            What::Register { id, serial } => vec![Event {
                event: Kind::ClientUp,
                client: Some(id),
                serial: Some(serial),
                ..base
            }],
            What::Remove { id, by: actor } => vec![by(
                actor,
                Event {
                    event: Kind::ClientRemoved,
                    client: Some(id),
                    pool: Some(pool.clone()),
                    ..base
                },
            )],
            What::InstallKey {
                server,
                key_id,
                serial,
                ty,
                count,
                by: actor,
            } => {
                let entry = pool.get(&ty).copied().unwrap_or_default();
                vec![by(
                    actor,
                    Event {
                        event: Kind::KeyInstalled,
                        key_id: Some(key_id),
                        key_server: Some(server),
                        serial: Some(serial),
                        license_type: Some(ty),
                        count: Some(count),
                        pool_total: Some(entry.total),
                        pool_used: Some(entry.used),
                        ..base
                    },
                )]
            }
            What::RemoveKey { key_id, by: actor } => vec![by(
                actor,
                Event {
                    event: Kind::KeyRemoved,
                    key_id: Some(key_id),
                    pool: Some(pool.clone()),
                    ..base
                },
            )],
            What::Settings { detail, by: actor } => vec![by(
                actor,
                Event {
                    event: Kind::Settings,
                    detail: Some(detail),
                    pool: Some(pool.clone()),
                    ..base
                },
            )],
            What::Sweep => {
                let Ok(Reply::Swept(report)) = reply else {
                    return Vec::new();
                };
                let each = |kind: Kind, id: &String| Event {
                    event: kind,
                    client: Some(id.clone()),
                    pool: Some(pool.clone()),
                    ..base.clone()
                };
                let mut out: Vec<Event> = report.down.iter().map(|id| each(Kind::ClientDown, id)).collect();
                out.extend(report.removed.iter().map(|id| each(Kind::ClientRemoved, id)));
                out
            }
        }
    }
}

fn base(node: &str, index: Option<u64>, ms: u64) -> Event {
    Event {
        time: rfc3339_ms(ms),
        node: node.to_owned(),
        index,
        event: Kind::Grant,
        client: None,
        serial: None,
        license_type: None,
        count: None,
        pool_total: None,
        pool_used: None,
        pool: None,
        key_id: None,
        key_server: None,
        operator: None,
        by_server: None,
        detail: None,
    }
}

fn typed(base: &Event, event: Kind, id: String, ty: LicenseType, count: u32, pool: &Pool) -> Event {
    let entry = pool.get(&ty).copied().unwrap_or_default();
    Event {
        event,
        client: Some(id),
        license_type: Some(ty),
        count: Some(count),
        pool_total: Some(entry.total),
        pool_used: Some(entry.used),
        ..base.clone()
    }
}

/// `ms` since the Unix epoch as RFC 3339 in UTC with milliseconds,
/// e.g. `2026-11-30T02:01:12.345Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        // Beyond year 9999: say so rather than print a wrong date.
        Err(_) => format!("out of range: {ms} ms"),
    }
}

/// The usage log as the applier holds it: a sender to the writer thread,
/// the node's name, and whether this node serves (only then does it write).
#[derive(Debug, Clone)]
pub struct UsageLog {
    node: String,
    lines: SyncSender<String>,
    serving: Option<watch::Receiver<bool>>,
    dropped: Arc<AtomicU64>,
    log: Arc<cluster::ratelog::RateLimiter>,
}

impl UsageLog {
    /// Opens the file (creating it 0600) and starts the writer thread.
    ///
    /// # Errors
    /// The file cannot be opened or created.
    pub fn open(config: &UsageConfig, node: &str) -> std::io::Result<Self> {
        let writer = writer::Writer::open(config.path.clone(), config.max_bytes, config.keep)?;
        let (lines, rx) = mpsc::sync_channel(QUEUE);
        // A thread, not a task: writing a file blocks, and the runtime's
        // workers must not.
        std::thread::Builder::new()
            .name("usage-log".into())
            .spawn(move || writer.run(&rx))?;
        Ok(Self {
            node: node.to_owned(),
            lines,
            serving: None,
            dropped: Arc::default(),
            log: Arc::new(cluster::ratelog::RateLimiter::new(
                std::time::Duration::from_secs(60),
            )),
        })
    }

    /// Writes only while `serving` says this node serves.
    #[must_use]
    pub fn while_serving(mut self, serving: watch::Receiver<bool>) -> Self {
        self.serving = Some(serving);
        self
    }

    /// Whether lines written now reach the file (this node serves).
    pub fn active(&self) -> bool {
        self.serving.as_ref().is_none_or(|s| *s.borrow())
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Logs what applying `pending` at `index` did. Never blocks.
    pub fn record(&self, pending: Pending, index: u64, reply: &Result<Reply, CommandError>, pool: &Pool) {
        for event in pending.events(&self.node, index, reply, pool, crate::clock::now_ms()) {
            self.send(&event);
        }
    }

    /// Logs an acquire the server refused before proposing it (the table
    /// would refuse it: the server checks first, for a clear answer).
    /// Never blocks.
    pub fn denied(
        &self,
        now_ms: u64,
        id: &str,
        license_type: &LicenseType,
        count: u32,
        why: &str,
        pool: &Pool,
    ) {
        let base = base(&self.node, None, now_ms);
        let event = Event {
            detail: Some(why.to_owned()),
            ..typed(
                &base,
                Kind::Denied,
                id.to_owned(),
                license_type.clone(),
                count,
                pool,
            )
        };
        self.send(&event);
    }

    fn send(&self, event: &Event) {
        {
            let Ok(line) = serde_json::to_string(event) else {
                // Serializing plain strings and numbers cannot fail.
                return;
            };
            match self.lines.try_send(line) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    cluster::warn_limited!(
                        self.log,
                        "usage log full",
                        dropped,
                        "usage log: the writer falls behind, lines dropped"
                    );
                }
                Err(TrySendError::Disconnected(_)) => {
                    let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    cluster::warn_limited!(
                        self.log,
                        "usage log stopped",
                        dropped,
                        "usage log: the writer stopped (see its error), lines dropped"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
