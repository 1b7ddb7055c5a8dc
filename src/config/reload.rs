//! What a running daemon takes from its configuration file again on
//! SIGHUP, and what only a restart applies.
//!
//! A server reloads what is its own business while it runs:
//!
//! - `node.log`, the log filter;
//! - `license.issuers` and `license.key_files`: the issuers it trusts and
//!   its signed key files (the files are read and every key verified
//!   again, even when the paths did not change);
//! - the table's settings (`license.poolable`, `switch_specific`,
//!   `heartbeat_interval_ms`, `missed_heartbeats`, `silence_remove_s`):
//!   replicated state, which the VIP holder proposes to the pair as it
//!   does at start (see `node::settings`).
//!
//! Everything else (addresses and ports, `[vrrp]`, `[cluster]`, `[tls]`,
//! the connection limits and timers, `[metrics]`, `[notify]`, `[track]`,
//! the usage log) is bound into sockets, the VRRP speaker, the raft
//! member or threads at start: a change is reported as needing a
//! restart, and the node runs on with the old value; so is a TLS file
//! (CA, certificate, key) whose content changed on disk (the daemon
//! compares them with what it read at start). A witness reloads
//! `node.log` only.

use super::{AnyConfig, Config, ConfigError};

/// The fields a server takes again on SIGHUP (dotted, as `check-config`
/// prints them).
pub const SERVER_RELOADABLE: [&str; 8] = [
    "node.log",
    "license.issuers",
    "license.key_files",
    "license.poolable",
    "license.switch_specific",
    "license.heartbeat_interval_ms",
    "license.missed_heartbeats",
    "license.silence_remove_s",
];

/// The fields a witness takes again on SIGHUP.
pub const WITNESS_RELOADABLE: [&str; 1] = ["node.log"];

/// What differs between the running configuration and the file's, field
/// by field (dotted names, sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Fields applied at once.
    pub reloaded: Vec<String>,
    /// Fields that take effect only at the next start.
    pub needs_restart: Vec<String>,
}

impl Changes {
    /// Nothing differs.
    pub fn is_empty(&self) -> bool {
        self.reloaded.is_empty() && self.needs_restart.is_empty()
    }
}

/// Sorts every field that differs between `running` and `new` into what a
/// SIGHUP applies and what needs a restart. A file of the other kind
/// (a witness's for a server) is all restart.
pub fn changes(running: &AnyConfig, new: &AnyConfig) -> Changes {
    let reloadable: &[&str] = match (running, new) {
        (AnyConfig::Server(_), AnyConfig::Server(_)) => &SERVER_RELOADABLE,
        (AnyConfig::Witness(_), AnyConfig::Witness(_)) => &WITNESS_RELOADABLE,
        _ => &[],
    };
    let mut out = Changes::default();
    for field in differences(running, new) {
        if reloadable.contains(&field.as_str()) {
            out.reloaded.push(field);
        } else {
            out.needs_restart.push(field);
        }
    }
    out
}

/// The configuration a server runs with after a SIGHUP: `running`, with the
/// reloadable fields taken from `new`. It is checked again as a whole (a
/// new value may break a rule with an old one that stays).
///
/// # Errors
/// [`ConfigError::Invalid`]: the mix breaks a rule between fields.
pub fn effective(running: &Config, new: &Config) -> Result<Config, ConfigError> {
    let mut out = running.clone();
    out.node.log.clone_from(&new.node.log);
    let (l, n) = (&mut out.license, &new.license);
    l.issuers.clone_from(&n.issuers);
    l.key_files.clone_from(&n.key_files);
    l.poolable.clone_from(&n.poolable);
    l.switch_specific.clone_from(&n.switch_specific);
    l.heartbeat_interval_ms = n.heartbeat_interval_ms;
    l.missed_heartbeats = n.missed_heartbeats;
    l.silence_remove_s = n.silence_remove_s;
    out.validate()?;
    Ok(out)
}

/// The witness's counterpart of [`effective`]: only `node.log` changes.
pub fn effective_witness(running: &super::WitnessConfig, new: &super::WitnessConfig) -> super::WitnessConfig {
    let mut out = running.clone();
    out.node.log.clone_from(&new.node.log);
    out
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

    fn primary() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/primary.toml")).unwrap()
    }

    fn server(text: &str) -> AnyConfig {
        text.parse().unwrap()
    }

    /// `text` with the raft tick halved (a change that needs a restart,
    /// whatever the example file's tick is).
    fn faster_ticks(text: &str) -> String {
        text.lines()
            .map(|l| match l.strip_prefix("tick_ms = ") {
                Some(n) => format!("tick_ms = {}\n", (n.trim().parse::<u64>().unwrap() / 2).max(1)),
                None => format!("{l}\n"),
            })
            .collect()
    }

    #[test]
    fn nothing_differs_in_the_same_file() {
        let a = server(&primary());
        assert!(changes(&a, &a).is_empty());
    }

    /// Each reloadable field is reloaded; addresses, VRRP, raft and TLS
    /// need a restart, each named.
    #[test]
    fn changed_fields_are_sorted_into_reloaded_and_restart() {
        let text = primary();
        let a = server(&text);
        let b = server(
            &faster_ticks(&text)
                .replace("priority = 200", "priority = 150")
                .replace("[node]\n", "[node]\nlog = \"debug\"\n")
                .replace("heartbeat_interval_ms = 30000", "heartbeat_interval_ms = 45000")
                .replace("missed_heartbeats = 3", "missed_heartbeats = 4")
                .replace("client_port = 4333", "client_port = 4433")
                .replace("/etc/vipool/pki/ca.crt", "/etc/vipool/other/ca.crt"),
        );
        let c = changes(&a, &b);
        assert_eq!(
            c.reloaded,
            [
                "license.heartbeat_interval_ms",
                "license.missed_heartbeats",
                "node.log"
            ]
        );
        assert_eq!(
            c.needs_restart,
            [
                "cluster.tick_ms",
                "license.client_port",
                "tls.ca",
                "vrrp.priority"
            ]
        );
    }

    #[test]
    fn the_license_types_keys_and_issuers_are_reloaded() {
        let text = primary();
        let a = server(&text);
        let b = server(
            &text
                .replace(
                    "poolable = [\"AP\", \"PEFNG\", \"RFPROTECT\", \"XSEC\", \"ACR\"]",
                    "poolable = [\"AP\", \"PEFNG\", \"RFPROTECT\", \"ACR\"]",
                )
                .replace(
                    "switch_specific = [\"PEFV\", \"WEBCC\"]",
                    "switch_specific = [\"PEFV\", \"WEBCC\", \"XSEC\"]",
                )
                .replace("silence_remove_s = 2592000", "silence_remove_s = 86400"),
        );
        let c = changes(&a, &b);
        assert_eq!(
            c.reloaded,
            [
                "license.poolable",
                "license.silence_remove_s",
                "license.switch_specific"
            ]
        );
        assert!(c.needs_restart.is_empty(), "{c:?}");
        let (AnyConfig::Server(a), AnyConfig::Server(b)) = (&a, &b) else {
            unreachable!()
        };
        let e = effective(a, b).unwrap();
        assert_eq!(e.table_config(), b.table_config());
        assert_eq!(e.license.silence_remove_s, 86_400);
    }

    /// The running configuration keeps every field that needs a restart:
    /// the next SIGHUP still reports it.
    #[test]
    fn the_effective_configuration_keeps_what_needs_a_restart() {
        let text = primary();
        let (AnyConfig::Server(a), AnyConfig::Server(b)) = (
            server(&text),
            server(
                &text
                    .replace("priority = 200", "priority = 150")
                    .replace("heartbeat_interval_ms = 30000", "heartbeat_interval_ms = 45000"),
            ),
        ) else {
            unreachable!()
        };
        let e = effective(&a, &b).unwrap();
        assert_eq!(e.vrrp.priority, 200);
        assert_eq!(e.license.heartbeat_interval_ms, 45_000);
        let again = changes(&AnyConfig::Server(e), &AnyConfig::Server(b));
        assert!(again.reloaded.is_empty(), "{again:?}");
        assert_eq!(again.needs_restart, ["vrrp.priority"]);
    }

    /// A witness reloads its log filter only; a file of the other kind is
    /// all restart.
    #[test]
    fn a_witness_reloads_its_log_filter_only() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/witness.toml")).unwrap();
        let a: AnyConfig = text.parse().unwrap();
        let b: AnyConfig = faster_ticks(&text)
            .replace("[node]\n", "[node]\nlog = \"debug\"\n")
            .parse()
            .unwrap();
        let c = changes(&a, &b);
        assert_eq!(c.reloaded, ["node.log"]);
        assert_eq!(c.needs_restart, ["cluster.tick_ms"]);
        let s = server(&primary());
        let c = changes(&a, &s);
        assert!(c.reloaded.is_empty() && !c.needs_restart.is_empty(), "{c:?}");
    }
}
