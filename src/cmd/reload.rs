//! SIGHUP: re-read the configuration file and apply what may change while
//! the daemon runs (see `vipool::config::reload`); say what else changed
//! and needs a restart. A daemon never exits on SIGHUP (its default action
//! would kill it silently, and systemd's `Restart=on-failure` counts that
//! as a clean exit); `systemctl reload` sends it.

use std::path::PathBuf;

use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, error, info, warn};
use vipool::config::reload::{changes, effective, effective_witness};
use vipool::config::AnyConfig;

/// What the running daemon was started with.
pub struct Running {
    /// Its configuration file.
    pub path: PathBuf,
    /// The configuration it runs with.
    pub config: AnyConfig,
    /// A server's node, which takes its issuers, keys and table settings
    /// again (none on a witness).
    pub node: Option<vipool::node::Reloader>,
    /// The member's TLS files as they were at start (see [`TlsFiles`]).
    pub tls: TlsFiles,
}

/// The member's TLS files (CA, certificate, key) as read at start. They
/// are loaded into the cluster link and the client port once: a renewed
/// certificate on disk takes effect at the next start, and every SIGHUP
/// until then says so.
pub struct TlsFiles(Vec<(PathBuf, Option<Vec<u8>>)>);

impl TlsFiles {
    /// Reads the files `config` names now (one that cannot be read counts
    /// as such, and as changed once it can).
    pub fn read(config: &AnyConfig) -> TlsFiles {
        let (ca, cert, key) = config.tls().files(&config.node().name);
        TlsFiles(
            [ca, cert, key]
                .into_iter()
                .map(|path| {
                    let bytes = std::fs::read(&path).ok();
                    (path, bytes)
                })
                .collect(),
        )
    }

    /// Each file whose content on disk is no longer what was read.
    fn changed(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(path, bytes)| std::fs::read(path).ok() != *bytes)
            .map(|(path, _)| format!("{} (changed on disk)", path.display()))
            .collect()
    }
}

/// Applies `node.log` now (unless `RUST_LOG` is set: it overrides).
pub fn apply_log_filter(config: &AnyConfig) {
    if std::env::var_os("RUST_LOG").is_some() {
        return;
    }
    if let Some(filter) = &config.node().log {
        match super::logging::set_filter(filter) {
            Ok(()) => info!(filter, "log filter set"),
            Err(e) => warn!(error = %e, "log filter not changed"),
        }
    }
}

/// Handles every SIGHUP until the process ends.
pub async fn on_hangup(mut running: Running) {
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => return error!(error = %e, "cannot catch SIGHUP: it would stop the daemon"),
    };
    while hup.recv().await.is_some() {
        debug!(file = %running.path.display(), "SIGHUP: reading the configuration again");
        match reload(&running).await {
            Ok(applied) => running.config = applied,
            Err(why) => error!(
                file = %running.path.display(),
                "SIGHUP: configuration refused, nothing changed: the node runs on with the one it has \
                 (fix the file and send SIGHUP again):\n{why}"
            ),
        }
    }
}

/// Reads, checks and applies the file once; answers the configuration the
/// daemon runs with from now on (the running values of what needs a
/// restart, the file's of the rest), or why nothing changed.
async fn reload(running: &Running) -> Result<AnyConfig, String> {
    let new = AnyConfig::load(&running.path).map_err(|e| e.to_string())?;
    let mut changed = changes(&running.config, &new);
    changed.needs_restart.extend(running.tls.changed());
    let (applied, mut reloaded) = match (&running.config, &new) {
        (AnyConfig::Server(old), AnyConfig::Server(new)) => {
            let applied = effective(old, new).map_err(|e| e.to_string())?;
            let node = running
                .node
                .as_ref()
                .ok_or_else(|| "this server's node takes no reload".to_owned())?;
            let what = node.reload(applied.clone()).await.map_err(|e| e.to_string())?;
            (AnyConfig::Server(applied), what)
        }
        (AnyConfig::Witness(old), AnyConfig::Witness(new)) => {
            (AnyConfig::Witness(effective_witness(old, new)), Vec::new())
        }
        (AnyConfig::Server(_), AnyConfig::Witness(_)) => {
            return Err("the file is a witness's configuration now; this process runs a server".into())
        }
        (AnyConfig::Witness(_), AnyConfig::Server(_)) => {
            return Err("the file is a server's configuration now; this process runs a witness".into())
        }
    };
    if changed.reloaded.iter().any(|f| f == "node.log") {
        apply_log_filter(&applied);
        reloaded.push("node.log".into());
    }
    if reloaded.is_empty() && changed.needs_restart.is_empty() {
        info!(file = %running.path.display(), "SIGHUP: configuration reloaded, nothing changed");
    } else if !reloaded.is_empty() {
        info!(file = %running.path.display(), "SIGHUP: configuration reloaded: {}", reloaded.join("; "));
    }
    if !changed.needs_restart.is_empty() {
        warn!(
            file = %running.path.display(),
            needs_restart = ?changed.needs_restart,
            "SIGHUP: these changes take effect only at the next start; the node runs on with the old values"
        );
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate renewed on disk is named as needing a restart, at
    /// every SIGHUP until then; an untouched one is not.
    #[test]
    fn tls_files_changed_on_disk_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/primary.toml"))
            .unwrap()
            .replace("/etc/vipool/pki", &dir.path().display().to_string());
        for f in ["ca.crt", "primary.crt", "primary.key"] {
            std::fs::write(dir.path().join(f), f).unwrap();
        }
        let config: AnyConfig = text.parse().unwrap();
        let tls = TlsFiles::read(&config);
        assert!(tls.changed().is_empty());
        std::fs::write(dir.path().join("primary.crt"), "renewed").unwrap();
        let changed = tls.changed();
        assert_eq!(changed.len(), 1, "{changed:?}");
        assert!(
            changed[0].ends_with("primary.crt (changed on disk)"),
            "{changed:?}"
        );
        assert_eq!(tls.changed(), changed);
    }
}
