//! What the table is configured with: the license types and the timers.

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

/// The table's configuration. Every node of a pair must use the same one:
/// it decides how commands apply.
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

impl TableConfig {
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
