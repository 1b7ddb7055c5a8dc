//! What the table derives from its state and keeps up to date as commands
//! apply: the pool, who counts each key id, and how many clients each
//! source address holds. Never in a snapshot: a restore rebuilds it.
//!
//! Each is kept incrementally (take a client out, change it, put it back)
//! so that a heartbeat costs the size of one client, not of the table;
//! [`Derived::rebuild`] is the definition they must always agree with.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use super::pool::{self, Contributor};
use super::{Client, Pool, ServerKey, TableConfig, TableState};

/// The derived parts of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Derived {
    /// The pool per poolable type.
    pub(super) pool: Pool,
    /// Who counts each key id: a key counts once in the whole table.
    pub(super) key_owners: BTreeMap<String, Contributor>,
    /// Clients per source address (the address part of where each was
    /// last heard from), for the serving node's per-source limit.
    pub(super) sources: BTreeMap<IpAddr, usize>,
}

/// The address part of a client address as the server records it
/// (`192.0.2.50:40000`), if it is one.
pub fn source_of(address: &str) -> Option<IpAddr> {
    address.parse::<SocketAddr>().ok().map(|a| a.ip())
}

impl Derived {
    /// Nothing derived from an empty table.
    pub(super) fn new(config: &TableConfig) -> Self {
        Self {
            pool: pool::empty(config),
            key_owners: BTreeMap::new(),
            sources: BTreeMap::new(),
        }
    }

    /// Everything derived from `state`, from scratch.
    pub(super) fn rebuild(config: &TableConfig, state: &TableState) -> Self {
        let mut derived = Self::new(config);
        for client in state.clients.values() {
            derived.attach_client(config, client);
        }
        for server_key in state.server_keys.values() {
            derived.attach_server_key(server_key);
        }
        derived
    }

    /// Adds what `client` contributes.
    pub(super) fn attach_client(&mut self, config: &TableConfig, client: &Client) {
        pool::apply_client(&mut self.pool, config, client, true);
        for key in &client.keys {
            self.key_owners
                .insert(key.key_id.clone(), Contributor::Client(client.id.clone()));
        }
        if let Some(ip) = source_of(&client.address) {
            *self.sources.entry(ip).or_default() += 1;
        }
    }

    /// Takes back what `client` contributes.
    pub(super) fn detach_client(&mut self, config: &TableConfig, client: &Client) {
        pool::apply_client(&mut self.pool, config, client, false);
        for key in &client.keys {
            self.release_key(&key.key_id, &Contributor::Client(client.id.clone()));
        }
        if let Some(ip) = source_of(&client.address) {
            if let Some(n) = self.sources.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.sources.remove(&ip);
                }
            }
        }
    }

    /// Adds what a server key contributes.
    pub(super) fn attach_server_key(&mut self, server_key: &ServerKey) {
        pool::apply_server_key(&mut self.pool, server_key, true);
        self.key_owners.insert(
            server_key.key.key_id.clone(),
            Contributor::Server(server_key.server.clone()),
        );
    }

    /// Takes back what a server key contributes.
    pub(super) fn detach_server_key(&mut self, server_key: &ServerKey) {
        pool::apply_server_key(&mut self.pool, server_key, false);
        self.release_key(
            &server_key.key.key_id,
            &Contributor::Server(server_key.server.clone()),
        );
    }

    fn release_key(&mut self, key_id: &str, owner: &Contributor) {
        // Only its owner's departure frees a key id.
        if self.key_owners.get(key_id) == Some(owner) {
            self.key_owners.remove(key_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_the_address_part() {
        assert_eq!(source_of("192.0.2.50:4000"), Some(IpAddr::from([192, 0, 2, 50])));
        assert_eq!(
            source_of("[2001:db8::1]:4000"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(source_of("a"), None);
    }
}
