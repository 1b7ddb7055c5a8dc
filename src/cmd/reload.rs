//! SIGHUP: re-read the configuration file and apply what may change while
//! the daemon runs; say what else changed and needs a restart. A daemon
//! never exits on SIGHUP (its default action would kill it silently, and
//! systemd's `Restart=on-failure` counts that as a clean exit).

use std::path::PathBuf;

use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, error, info, warn};
use vipool::config::AnyConfig;

/// What the running daemon was started with.
pub struct Running {
    /// Its configuration file.
    pub path: PathBuf,
    /// The configuration it runs with.
    pub config: AnyConfig,
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
        let new = match AnyConfig::load(&running.path) {
            Ok(c) => c,
            Err(e) => {
                error!(
                    file = %running.path.display(),
                    "SIGHUP: configuration refused, nothing changed (fix it and send SIGHUP again):\n{e}"
                );
                continue;
            }
        };
        let changed = differences(&running.config, &new);
        let (now, restart): (Vec<&String>, Vec<&String>) = changed.iter().partition(|f| *f == "node.log");
        if !now.is_empty() {
            apply_log_filter(&new);
        }
        if changed.is_empty() {
            info!(file = %running.path.display(), "SIGHUP: configuration reloaded, nothing changed");
        } else if restart.is_empty() {
            info!(reloaded = ?now, "SIGHUP: configuration reloaded");
        } else {
            warn!(
                reloaded = ?now,
                needs_restart = ?restart,
                "SIGHUP: configuration reloaded; these changes take effect only at the next start"
            );
        }
        // Later signals compare with what runs; a field waiting for a
        // restart is still reported as different.
        let mut applied = running.config.clone();
        if let (Some(log), AnyConfig::Server(c)) = (&new.node().log, &mut applied) {
            c.node.log = Some(log.clone());
        }
        if let (Some(log), AnyConfig::Witness(c)) = (&new.node().log, &mut applied) {
            c.node.log = Some(log.clone());
        }
        running.config = applied;
    }
}

/// The dotted names of the fields that differ between two configurations.
fn differences(old: &AnyConfig, new: &AnyConfig) -> Vec<String> {
    let as_table = |c: &AnyConfig| toml::from_str::<toml::Table>(&c.to_toml()).unwrap_or_default();
    let mut out = Vec::new();
    diff(
        "",
        &toml::Value::Table(as_table(old)),
        &toml::Value::Table(as_table(new)),
        &mut out,
    );
    out
}

fn diff(at: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
    match (a, b) {
        (toml::Value::Table(a), toml::Value::Table(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff(&path, x, y, out),
                    _ => out.push(path),
                }
            }
        }
        (a, b) if a != b => out.push(at.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_changed_field() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/primary.toml")).unwrap();
        let a: AnyConfig = text.parse().unwrap();
        let b: AnyConfig = text
            .replace("priority = 200", "priority = 150")
            .replace("[node]\n", "[node]\nlog = \"debug\"\n")
            .parse()
            .unwrap();
        assert_eq!(differences(&a, &b), ["node.log", "vrrp.priority"]);
        assert!(differences(&a, &a).is_empty());
    }
}
