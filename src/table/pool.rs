//! Pool arithmetic: what each client and server key adds to the pool.
//!
//! The table keeps the pool up to date incrementally (take a client's
//! contribution out, change the client, put it back in) so that a heartbeat
//! costs the size of one client, not of the whole table. [`recompute`] is
//! the straightforward definition it must always agree with.

use std::collections::BTreeMap;

use super::{Client, Pool, PoolEntry, ServerKey, TableConfig};

/// An empty pool with an entry for every poolable type of `config`.
pub(super) fn empty(config: &TableConfig) -> Pool {
    config
        .poolable()
        .map(|t| (t.clone(), PoolEntry::default()))
        .collect()
}

/// Adds (`add`) or takes back (`!add`) what `client` contributes to the pool:
/// its installed poolable keys to `total`, what it takes from the pool to `used`.
pub(super) fn apply_client(pool: &mut Pool, config: &TableConfig, client: &Client, add: bool) {
    for key in client.keys.iter().map(|k| &k.key) {
        if config.is_poolable(&key.license_type) {
            if let Some(entry) = pool.get_mut(&key.license_type) {
                shift(&mut entry.total, u64::from(key.count), add);
            }
        }
    }
    for (license_type, used) in &client.used {
        if let Some(entry) = pool.get_mut(license_type) {
            shift(&mut entry.used, u64::from(*used), add);
        }
    }
}

/// Adds or takes back what a server key contributes to the pool.
pub(super) fn apply_server_key(pool: &mut Pool, server_key: &ServerKey, add: bool) {
    let key = &server_key.key.key;
    if let Some(entry) = pool.get_mut(&key.license_type) {
        shift(&mut entry.total, u64::from(key.count), add);
    }
}

fn shift(value: &mut u64, by: u64, add: bool) {
    // Taking back only ever removes what was added before, so neither
    // direction can wrap; saturating keeps a logic error from panicking a node.
    *value = if add {
        value.saturating_add(by)
    } else {
        value.saturating_sub(by)
    };
}

/// The pool computed from scratch: the servers' keys plus every client's
/// installed poolable keys for `total`, what clients take for `used`.
pub fn recompute<'a>(
    config: &TableConfig,
    clients: impl IntoIterator<Item = &'a Client>,
    server_keys: impl IntoIterator<Item = &'a ServerKey>,
) -> Pool {
    let mut pool = empty(config);
    for client in clients {
        apply_client(&mut pool, config, client, true);
    }
    for server_key in server_keys {
        apply_server_key(&mut pool, server_key, true);
    }
    pool
}

/// Where licenses in the pool come from: who counts a key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Contributor {
    /// A license server, by node name.
    Server(String),
    /// A license client, by id.
    Client(String),
}

impl std::fmt::Display for Contributor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Server(name) => write!(f, "server:{name}"),
            Self::Client(id) => write!(f, "client:{id}"),
        }
    }
}

/// Who contributes how many licenses of each poolable type, for the
/// operator's server table.
pub fn contributors<'a>(
    config: &TableConfig,
    clients: impl IntoIterator<Item = &'a Client>,
    server_keys: impl IntoIterator<Item = &'a ServerKey>,
) -> BTreeMap<super::LicenseType, BTreeMap<Contributor, u64>> {
    let mut by_type: BTreeMap<_, BTreeMap<Contributor, u64>> =
        config.poolable().map(|t| (t.clone(), BTreeMap::new())).collect();
    for server_key in server_keys {
        let key = &server_key.key.key;
        if let Some(who) = by_type.get_mut(&key.license_type) {
            *who.entry(Contributor::Server(server_key.server.clone()))
                .or_default() += u64::from(key.count);
        }
    }
    for client in clients {
        for key in client.keys.iter().map(|k| &k.key) {
            if let Some(who) = by_type.get_mut(&key.license_type) {
                *who.entry(Contributor::Client(client.id.clone())).or_default() += u64::from(key.count);
            }
        }
    }
    by_type
}
