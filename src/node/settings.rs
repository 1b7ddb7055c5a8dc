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
//!
//! The issuers a server trusts (`license.issuers`) go the same way, as a
//! record: the serving node verifies keys with its own, and the pair's
//! log says whose those are, so a server configured with other issuers
//! than the VIP holder's says so before a failover would change which
//! keys count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::info;

use std::collections::BTreeMap;

use super::applier::{ReplicatedApplier, SharedTable};
use crate::server::Applier;
use crate::table::{describe_issuers, Actor, Command, LicenseTable, SettingDifference, TableConfig};

/// What a server's configuration says of the pair's replicated settings:
/// the table's settings and the issuers it trusts (name to public key).
#[derive(Debug, Clone)]
pub(super) struct Configured {
    pub(super) table: TableConfig,
    pub(super) issuers: BTreeMap<String, String>,
}

impl Configured {
    /// Every difference between this configuration and the pair's.
    pub(super) fn differences(&self, t: &LicenseTable) -> Vec<SettingDifference> {
        let mut out = self.table.differences(t.config());
        if self.issuers != t.state().issuers {
            out.push(SettingDifference {
                setting: "license.issuers".into(),
                ours: describe_issuers(&self.issuers),
                theirs: describe_issuers(&t.state().issuers),
            });
        }
        out
    }

    /// The commands that set what differs: the issuers (this server's keys
    /// wait for them), then the settings.
    pub(super) fn proposal(&self, t: &LicenseTable, server: &str) -> Vec<Command> {
        let by = Actor::Server(server.to_owned());
        let mut out = Vec::new();
        if self.issuers != t.state().issuers {
            out.push(Command::Issuers {
                issuers: self.issuers.clone(),
                by: by.clone(),
            });
        }
        if !self.table.differences(t.config()).is_empty() {
            out.push(Command::Settings {
                settings: self.table.clone(),
                by,
            });
        }
        out
    }
}

/// How long after a proposal that did not commit the next one goes out.
const RETRY: Duration = Duration::from_secs(2);

/// One proposal in flight at a time, and a pause of [`RETRY`] after one
/// that did not commit (the settings' and the ticket keys' rounds).
#[derive(Default)]
pub(super) struct InFlight {
    task: Option<tokio::sync::oneshot::Receiver<bool>>,
    /// When the last proposal that did not commit ended.
    failed_at: Option<Instant>,
}

impl InFlight {
    /// Whether a proposal is still in flight (taking the result of one
    /// that ended).
    pub(super) fn pending(&mut self) -> bool {
        let Some(task) = &mut self.task else {
            return false;
        };
        match task.try_recv() {
            Ok(committed) => {
                self.task = None;
                self.failed_at = (!committed).then(Instant::now);
                false
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                self.task = None;
                false
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => true,
        }
    }

    /// Whether the last proposal failed less than [`RETRY`] ago.
    pub(super) fn backing_off(&self) -> bool {
        self.failed_at.is_some_and(|at| at.elapsed() < RETRY)
    }

    /// Forgets a failure: the next round may propose at once.
    fn clear_failure(&mut self) {
        self.failed_at = None;
    }

    /// A proposal starts: send whether it committed on the returned sender.
    pub(super) fn start(&mut self) -> tokio::sync::oneshot::Sender<bool> {
        let (done, task) = tokio::sync::oneshot::channel();
        self.task = Some(task);
        done
    }
}

/// A server's configured settings, and the proposal of them in flight.
pub(super) struct SettingsSync {
    /// A SIGHUP replaces them; `vipool show status` reads them.
    configured: watch::Sender<Configured>,
    server: String,
    proposal: InFlight,
    /// The differences last logged as proposed: a retry is not logged again.
    announced: Option<String>,
    /// False while a proposal of the issuers is in flight: the serving
    /// node's key round waits for it, so that its keys follow the issuers
    /// they need into the log (see `node::keys`).
    idle: Arc<watch::Sender<bool>>,
}

impl SettingsSync {
    pub(super) fn new(configured: Configured, server: String) -> Self {
        Self {
            configured: watch::channel(configured).0,
            server,
            proposal: InFlight::default(),
            announced: None,
            idle: Arc::new(watch::channel(true).0),
        }
    }

    /// Turns true once no proposal of the issuers is in flight.
    pub(super) fn idle(&self) -> watch::Receiver<bool> {
        self.idle.subscribe()
    }

    /// The settings this server's configuration has now.
    pub(super) fn configured(&self) -> Configured {
        self.configured.borrow().clone()
    }

    /// Follows them as they change (for `vipool show status`).
    pub(super) fn subscribe(&self) -> watch::Receiver<Configured> {
        self.configured.subscribe()
    }

    /// New configured settings (a SIGHUP): compared, and proposed when
    /// this node leads, from the next round on, as at start.
    pub(super) fn set_configured(&mut self, configured: Configured) {
        self.configured.send_replace(configured);
        self.proposal.clear_failure();
        self.announced = None;
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
        if self.proposal.pending() {
            return;
        }
        let (differences, commands) = applier.read(|t| {
            let configured = self.configured.borrow();
            (configured.differences(t), configured.proposal(t, &self.server))
        });
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
        if self.proposal.backing_off() {
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
        if commands.is_empty() {
            return;
        }
        let applier = Arc::clone(applier);
        let log = Arc::clone(log);
        let done = self.proposal.start();
        if matches!(commands.first(), Some(Command::Issuers { .. })) {
            self.idle.send_replace(false);
        }
        let idle = Arc::clone(&self.idle);
        tokio::spawn(async move {
            let mut committed = true;
            for command in commands {
                let issuers = matches!(command, Command::Issuers { .. });
                let outcome = applier.propose(command).await;
                if issuers {
                    // Committed or not: the keys waiting for them go on
                    // (a key of an issuer not recorded waits for a later round).
                    idle.send_replace(true);
                }
                committed &= match outcome {
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
            }
            let _ = done.send(committed);
        });
    }
}

/// What `vipool show status` says when `configured` (this server's
/// settings) differ from those `table` applies (the pair's).
pub(super) fn status_warning(configured: &Configured, table: &SharedTable) -> Option<String> {
    let differences = table.read(|t| configured.differences(t));
    (!differences.is_empty()).then(|| {
        format!(
            "table settings differ from the pair's (this node applies the pair's, set by the VIP holder): {}",
            TableConfig::describe_differences(&differences)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::{IssuerKey, TrustedIssuers};

    fn issuers(names: &[(&str, u8)]) -> BTreeMap<String, String> {
        names
            .iter()
            .map(|(name, seed)| {
                IssuerKey::from_secret_bytes(name, &[*seed; 32])
                    .unwrap()
                    .trusted()
            })
            .collect::<TrustedIssuers>()
            .by_name_text()
    }

    fn apply(t: &mut LicenseTable, command: Command) {
        t.apply_command(t.applied_index() + 1, command).unwrap();
    }

    /// The VIP holder proposes its issuers, then its settings, in one go;
    /// once both are the pair's nothing differs. A server trusting
    /// another key under the same name, or another issuer, is told which.
    #[test]
    fn the_issuers_are_compared_and_proposed_with_the_settings() {
        let mut t = LicenseTable::new(TableConfig::default());
        let table = TableConfig {
            heartbeat_interval_ms: 60_000,
            ..TableConfig::default()
        };
        let ours = Configured {
            table,
            issuers: issuers(&[("acme", 7), ("lab", 9)]),
        };
        let listed = TableConfig::describe_differences(&ours.differences(&t));
        assert!(listed.contains("license.heartbeat_interval_ms"), "{listed}");
        assert!(listed.contains("license.issuers: configured acme ("), "{listed}");
        assert!(listed.contains("the pair's none"), "{listed}");
        let commands = ours.proposal(&t, "primary");
        assert!(
            matches!(commands.as_slice(), [Command::Issuers { issuers, .. }, Command::Settings { .. }] if issuers.len() == 2),
            "{commands:?}"
        );
        for command in commands {
            apply(&mut t, command);
        }
        assert!(ours.differences(&t).is_empty());
        assert!(ours.proposal(&t, "primary").is_empty());
        // A snapshot carries them.
        let mut restored = LicenseTable::new(TableConfig::default());
        restored.restore(&t.snapshot()).unwrap();
        assert_eq!(restored.state().issuers, ours.issuers);

        // Another key under the name "lab": the difference shows both.
        let other = Configured {
            table: ours.table.clone(),
            issuers: issuers(&[("acme", 7), ("lab", 10)]),
        };
        let listed = TableConfig::describe_differences(&other.differences(&t));
        assert!(listed.starts_with("license.issuers:"), "{listed}");
        let (ours_lab, theirs_lab) = (&other.issuers["lab"][..8], &ours.issuers["lab"][..8]);
        assert!(
            listed.contains(ours_lab) && listed.contains(theirs_lab),
            "{listed}"
        );
    }

    /// The table refuses issuers that are not a name and an Ed25519 key,
    /// and more than a pair needs; nothing changes.
    #[test]
    fn bad_issuers_are_refused_by_the_table() {
        let mut t = LicenseTable::new(TableConfig::default());
        let by = Actor::Server("primary".into());
        let mut bad = issuers(&[("acme", 7)]);
        bad.insert("junk".into(), "not-a-key".into());
        let e = t
            .apply_command(
                1,
                Command::Issuers {
                    issuers: bad,
                    by: by.clone(),
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("\"junk\""), "{e}");
        let many: BTreeMap<String, String> = (0..=crate::table::limits::MAX_ISSUERS)
            .map(|n| (format!("i{n}"), issuers(&[("x", 7)])["x"].clone()))
            .collect();
        let e = t
            .apply_command(2, Command::Issuers { issuers: many, by })
            .unwrap_err();
        assert!(e.to_string().contains("at most 64"), "{e}");
        assert!(t.state().issuers.is_empty());
    }
}
