//! A server's configuration reloaded while it runs (SIGHUP; which fields,
//! see `config::reload`).
//!
//! The daemon reads and checks the file, keeps the running values of
//! every field that needs a restart (`config::reload::effective`) and
//! sends the result through a [`Reloader`]. The node's glue takes it
//! between two rounds of the pair's rules: it reads the issuers and the
//! key files again and verifies every key against this server's serial,
//! as at start. If anything fails the node keeps what it runs with,
//! wholly, and the daemon logs why. Otherwise, at once:
//!
//! - the license server verifies the keys switches present with the new
//!   issuers;
//! - the table settings and issuers are compared with the pair's from the
//!   next round of the rules on (every `rules::SETTINGS_CHECK`): the VIP
//!   holder proposes them, another server says they differ, as at start;
//! - the key files are compared with the table at the next key round
//!   (every `rules::KEY_CHECK`): new keys are installed, keys gone from
//!   the files removed.

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{keys, settings, Glue};
use crate::clock::now_ms;
use crate::config::{Config, ConfigError};
use crate::table::describe_issuers;

/// Why a reloaded configuration was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The issuers or the key files cannot be used: each problem names its
    /// file (and line).
    #[error("{0}")]
    Keys(ConfigError),
    /// The node is not running (it stopped, or is stopping).
    #[error("the node is not running")]
    NotRunning,
}

/// The daemon's end: sends reloaded configurations to the running node.
#[derive(Debug, Clone)]
pub struct Reloader {
    tx: mpsc::Sender<Request>,
}

/// The node's end (see [`crate::node::run`]).
#[derive(Debug)]
pub struct Reloads {
    rx: mpsc::Receiver<Request>,
}

/// A configuration to take, and where to say what changed.
#[derive(Debug)]
pub(super) struct Request {
    config: Config,
    done: oneshot::Sender<Result<Vec<String>, ReloadError>>,
}

/// A [`Reloader`] and the [`Reloads`] it sends to.
pub fn reload_channel() -> (Reloader, Reloads) {
    let (tx, rx) = mpsc::channel(1);
    (Reloader { tx }, Reloads { rx })
}

impl Reloader {
    /// Has the node take `config` (already checked, with the running
    /// values of what needs a restart) and answers what changed: one
    /// entry per setting, the issuers, the keys added, removed or changed.
    ///
    /// # Errors
    /// The node refused it (nothing changed) or is not running.
    pub async fn reload(&self, config: Config) -> Result<Vec<String>, ReloadError> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Request { config, done })
            .await
            .map_err(|_| ReloadError::NotRunning)?;
        answer.await.map_err(|_| ReloadError::NotRunning)?
    }
}

impl Reloads {
    pub(super) async fn next(&mut self) -> Option<Request> {
        self.rx.recv().await
    }
}

impl Glue {
    /// Takes a reloaded configuration, or none of it, and answers.
    pub(super) fn handle_reload(&mut self, request: Request) {
        let answer = self.reload(request.config);
        // The daemon may have given up waiting: nothing to tell then.
        let _ = request.done.send(answer);
    }

    fn reload(&mut self, config: Config) -> Result<Vec<String>, ReloadError> {
        let (trusted, own_keys) = config.load_server_keys().map_err(ReloadError::Keys)?;
        let configured = settings::Configured {
            table: config.table_config(),
            issuers: trusted.by_name_text(),
        };
        let old = self.settings.configured();
        let mut changed: Vec<String> = configured
            .table
            .differences(&old.table)
            .into_iter()
            .map(|d| format!("{}: {} (was {})", d.setting, d.ours, d.theirs))
            .collect();
        if configured.issuers != old.issuers {
            changed.push(format!(
                "license.issuers: {} (was {})",
                describe_issuers(&configured.issuers),
                describe_issuers(&old.issuers)
            ));
        }
        if let Some(keys) = keys::file_changes(&self.own_keys, &own_keys) {
            changed.push(format!("license.key_files: {keys}"));
        }
        let now = now_ms();
        for entry in own_keys.iter().filter(|e| !e.counts_at(now)) {
            warn!(
                key_id = %entry.key.key_id, file = %entry.path.display(), line = entry.line,
                "a key of this server's key files does not count now (expired, or not valid yet)"
            );
        }
        self.server.set_trusted(trusted);
        self.settings.set_configured(configured);
        self.own_keys = own_keys;
        self.config = config;
        Ok(changed)
    }
}
