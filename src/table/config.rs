//! The table's settings: the license types and the client timers.
//!
//! They decide how every command applies, so they are replicated state,
//! not each node's configuration: a committed [`Command::Settings`]
//! (super::Command::Settings) sets them, snapshots carry them, and every
//! member (the witness too) applies the log with the same ones. A table
//! starts from [`TableConfig::default`] (the SPEC's) until the first such
//! entry. The VIP holder proposes its configured settings when they differ
//! from the replicated ones; a member whose configuration differs names
//! the difference ([`TableConfig::differences`]) and applies the pair's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::LicenseType;

/// Whether a license type is shared through the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TypeKind {
    /// Counted into the pool and drawn from it by every client.
    Poolable,
    /// Licenses one switch only; reported but never pooled.
    SwitchSpecific,
}

/// The table's settings. Replicated: every member of a pair applies the
/// log with the ones the log set (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableConfig {
    /// The known license types and whether each is poolable.
    pub types: BTreeMap<LicenseType, TypeKind>,
    /// How often clients send heartbeats, in milliseconds (default 30 s).
    pub heartbeat_interval_ms: u64,
    /// Heartbeats missed in a row after which a client is down (default 3).
    pub missed_heartbeats_down: u32,
    /// Silence after which a client's contributions leave the table (default 30 days).
    pub silence_remove_ms: u64,
}

/// The SPEC's poolable types.
pub const DEFAULT_POOLABLE: [&str; 5] = ["AP", "PEFNG", "RFPROTECT", "XSEC", "ACR"];
/// The SPEC's switch-specific types.
pub const DEFAULT_SWITCH_SPECIFIC: [&str; 2] = ["PEFV", "WEBCC"];

impl Default for TableConfig {
    fn default() -> Self {
        let types = DEFAULT_POOLABLE
            .iter()
            .map(|t| (LicenseType::new(t), TypeKind::Poolable))
            .chain(
                DEFAULT_SWITCH_SPECIFIC
                    .iter()
                    .map(|t| (LicenseType::new(t), TypeKind::SwitchSpecific)),
            )
            .collect();
        Self {
            types,
            heartbeat_interval_ms: 30_000,
            missed_heartbeats_down: 3,
            silence_remove_ms: 30 * 24 * 3600 * 1000,
        }
    }
}

/// At most this many license types in the settings.
pub const MAX_TYPES: usize = 64;

/// One setting on which two [`TableConfig`]s differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingDifference {
    /// The setting, as the configuration names it (`license.poolable`
    /// holds the type's kind: `XSEC` for a type).
    pub setting: String,
    /// Its value on the left side (this node's configuration).
    pub ours: String,
    /// Its value on the right side (the replicated settings).
    pub theirs: String,
}

impl std::fmt::Display for SettingDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: configured {}, the pair's {}",
            self.setting, self.ours, self.theirs
        )
    }
}

/// Why settings cannot be applied. A table refuses them whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("table setting {setting}: {why}")]
pub struct SettingsError {
    /// The setting.
    pub setting: String,
    /// What is wrong with it.
    pub why: String,
}

fn kind_name(kind: Option<TypeKind>) -> &'static str {
    match kind {
        Some(TypeKind::Poolable) => "poolable",
        Some(TypeKind::SwitchSpecific) => "switch-specific",
        None => "unknown",
    }
}

impl TableConfig {
    /// Whether a table may apply these settings: the bounds `vipool
    /// check-config` enforces, checked again on every member because the
    /// entry may come from any proposer.
    ///
    /// # Errors
    /// The first setting out of bounds.
    pub fn check(&self) -> Result<(), SettingsError> {
        let bad = |setting: &str, why: String| {
            Err(SettingsError {
                setting: setting.to_owned(),
                why,
            })
        };
        if self.types.is_empty() {
            return bad("types", "no license types at all".into());
        }
        if self.types.len() > MAX_TYPES {
            return bad(
                "types",
                format!("{} types: at most {MAX_TYPES}", self.types.len()),
            );
        }
        for t in self.types.keys() {
            let name = t.as_str();
            let valid = !name.is_empty()
                && name.len() <= 32
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid || LicenseType::new(name) != *t {
                return bad(
                    "types",
                    format!("{name:?} is not a license type name (1-32 letters, digits, '_', '-')"),
                );
            }
        }
        if self.heartbeat_interval_ms == 0 {
            return bad("heartbeat_interval_ms", "must be at least 1".into());
        }
        if self.missed_heartbeats_down == 0 {
            return bad("missed_heartbeats", "must be at least 1".into());
        }
        let down_ms = self
            .heartbeat_interval_ms
            .saturating_mul(u64::from(self.missed_heartbeats_down));
        if self.silence_remove_ms <= down_ms {
            return bad(
                "silence_remove_s",
                format!(
                    "{} ms is not longer than the {down_ms} ms after which a client is down",
                    self.silence_remove_ms
                ),
            );
        }
        Ok(())
    }

    /// Every setting on which `self` (this node's configuration) and
    /// `theirs` (the replicated settings) differ, in the configuration's
    /// names; empty when they agree.
    pub fn differences(&self, theirs: &TableConfig) -> Vec<SettingDifference> {
        let mut out = Vec::new();
        let names: std::collections::BTreeSet<&LicenseType> =
            self.types.keys().chain(theirs.types.keys()).collect();
        for t in names {
            let (ours, other) = (self.kind(t), theirs.kind(t));
            if ours != other {
                out.push(SettingDifference {
                    setting: format!("license type {t}"),
                    ours: kind_name(ours).into(),
                    theirs: kind_name(other).into(),
                });
            }
        }
        let mut scalar = |setting: &str, ours: u64, other: u64| {
            if ours != other {
                out.push(SettingDifference {
                    setting: setting.into(),
                    ours: ours.to_string(),
                    theirs: other.to_string(),
                });
            }
        };
        scalar(
            "license.heartbeat_interval_ms",
            self.heartbeat_interval_ms,
            theirs.heartbeat_interval_ms,
        );
        scalar(
            "license.missed_heartbeats",
            u64::from(self.missed_heartbeats_down),
            u64::from(theirs.missed_heartbeats_down),
        );
        if self.silence_remove_ms != theirs.silence_remove_ms {
            let secs = |ms: u64| {
                if ms.is_multiple_of(1000) {
                    (ms / 1000).to_string()
                } else {
                    format!("{}.{:03}", ms / 1000, ms % 1000)
                }
            };
            out.push(SettingDifference {
                setting: "license.silence_remove_s".into(),
                ours: secs(self.silence_remove_ms),
                theirs: secs(theirs.silence_remove_ms),
            });
        }
        out
    }

    /// One line listing `differences`, for logs and `show status`.
    pub fn describe_differences(differences: &[SettingDifference]) -> String {
        differences
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// One line an operator reads.
    pub fn describe(&self) -> String {
        let of = |kind: TypeKind| {
            self.types
                .iter()
                .filter(|(_, k)| **k == kind)
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "poolable [{}], switch-specific [{}], heartbeat {} ms, down after {} missed, removed after {} s silent",
            of(TypeKind::Poolable),
            of(TypeKind::SwitchSpecific),
            self.heartbeat_interval_ms,
            self.missed_heartbeats_down,
            self.silence_remove_ms / 1000
        )
    }

    /// The kind of `license_type`, or `None` for a type the configuration does not know.
    pub fn kind(&self, license_type: &LicenseType) -> Option<TypeKind> {
        self.types.get(license_type).copied()
    }

    /// Whether `license_type` is known and poolable.
    pub fn is_poolable(&self, license_type: &LicenseType) -> bool {
        self.kind(license_type) == Some(TypeKind::Poolable)
    }

    /// The poolable types, in order.
    pub fn poolable(&self) -> impl Iterator<Item = &LicenseType> {
        self.types
            .iter()
            .filter(|(_, k)| **k == TypeKind::Poolable)
            .map(|(t, _)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_setting_that_differs() {
        let pair = TableConfig::default();
        assert!(pair.differences(&pair).is_empty());
        let mut ours = pair.clone();
        ours.types
            .insert(LicenseType::new("XSEC"), TypeKind::SwitchSpecific);
        ours.types.insert(LicenseType::new("NEW"), TypeKind::Poolable);
        ours.missed_heartbeats_down = 5;
        let d = ours.differences(&pair);
        assert_eq!(
            TableConfig::describe_differences(&d),
            "license type NEW: configured poolable, the pair's unknown; \
             license type XSEC: configured switch-specific, the pair's poolable; \
             license.missed_heartbeats: configured 5, the pair's 3"
        );
    }

    #[test]
    fn check_refuses_what_check_config_refuses() {
        assert_eq!(TableConfig::default().check(), Ok(()));
        let c = TableConfig {
            heartbeat_interval_ms: 0,
            ..TableConfig::default()
        };
        assert_eq!(c.check().unwrap_err().setting, "heartbeat_interval_ms");
        let c = TableConfig {
            silence_remove_ms: 90_000,
            ..TableConfig::default()
        };
        assert_eq!(c.check().unwrap_err().setting, "silence_remove_s");
        let mut c = TableConfig::default();
        c.types.clear();
        assert!(c.check().is_err());
        let mut c = TableConfig::default();
        // A name from the log is normalized like any other, but only the
        // check keeps control characters out of an operator's terminal.
        c.types.insert(
            serde_json::from_str("\"x\\u001b[2J\"").unwrap(),
            TypeKind::Poolable,
        );
        assert!(c.check().is_err());
        let mut c = TableConfig::default();
        for n in 0..MAX_TYPES {
            c.types
                .insert(LicenseType::new(format!("T{n}")), TypeKind::Poolable);
        }
        assert!(c.check().is_err());
    }
}
