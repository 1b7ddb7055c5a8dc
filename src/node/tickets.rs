//! Rotation of the pair's TLS session-ticket keys (see `table::tickets`
//! and `tls::PairTicketer`).
//!
//! The VIP holder, once caught up with the log, proposes a fresh random
//! key when the log holds none or its newest is older than
//! [`ROTATE_MS`]. Every member (the witness too) installs the keys it
//! applies into its ticketer at once, so a ticket the VIP holder gave a
//! switch opens on the other server after a failover, and the other way
//! after the handback.
//!
//! Keys rotate weekly: a ticket is good for TLS 1.3's longest lifetime
//! (7 days), and a switch keeps its connection, and so the ticket of its
//! last handshake, for days. A switch connected longer than that makes
//! one full handshake at its next reconnection.

use std::sync::Arc;

use ring::rand::SecureRandom;
use tracing::info;

use super::applier::ReplicatedApplier;
use super::settings::InFlight;
use crate::server::Applier;
use crate::table::{Actor, Command, TicketKey};

/// How old the newest ticket key may get before the VIP holder makes the
/// next one: the lifetime a ticket announces (`tls::PAIR_TICKET_LIFETIME_S`).
pub(super) const ROTATE_MS: u64 = crate::tls::PAIR_TICKET_LIFETIME_S as u64 * 1000;

/// Whether the table's keys call for a new one at `now_ms`.
pub(super) fn due(keys: &[TicketKey], now_ms: u64) -> bool {
    keys.last()
        .is_none_or(|newest| now_ms.saturating_sub(newest.created_ms) >= ROTATE_MS)
}

/// A fresh key, its id unlike any of `keys`.
fn fresh(keys: &[TicketKey], now_ms: u64) -> Option<TicketKey> {
    let rng = ring::rand::SystemRandom::new();
    let mut secret = [0u8; 32];
    rng.fill(&mut secret).ok()?;
    let mut id = [0u8; 4];
    loop {
        rng.fill(&mut id).ok()?;
        let id = u32::from_be_bytes(id);
        if !keys.iter().any(|k| k.id == id) {
            return Some(TicketKey {
                id,
                created_ms: now_ms,
                secret,
            });
        }
    }
}

/// The VIP holder's side: the proposal of a new key in flight.
#[derive(Default)]
pub(super) struct TicketRotation {
    proposal: InFlight,
}

impl TicketRotation {
    /// One round (with the settings' rounds): `leads` is VRRP master and
    /// raft leader, `in_sync` that this member has caught up with the log.
    pub(super) fn step(
        &mut self,
        leads: bool,
        in_sync: bool,
        server: &str,
        applier: &Arc<ReplicatedApplier>,
        log: &Arc<cluster::ratelog::RateLimiter>,
    ) {
        if self.proposal.pending() || !(leads && in_sync) || self.proposal.backing_off() {
            return;
        }
        let now_ms = applier.stamp();
        let Some(key) = applier.read(|t| {
            let keys = &t.state().ticket_keys;
            due(keys, now_ms).then(|| fresh(keys, now_ms)).flatten()
        }) else {
            return;
        };
        let id = key.id;
        let command = Command::TicketKey {
            key,
            by: Actor::Server(server.to_owned()),
        };
        let applier = Arc::clone(applier);
        let log = Arc::clone(log);
        let done = self.proposal.start();
        tokio::spawn(async move {
            let committed = match applier.propose(command).await {
                Ok(Ok(_)) => {
                    info!(
                        key = id,
                        "new TLS session-ticket key committed: every member seals and opens with it"
                    );
                    true
                }
                Ok(Err(e)) => {
                    cluster::warn_limited!(log, "ticket key", error = %e, "TLS session-ticket key refused by the table; retried");
                    false
                }
                Err(e) => {
                    cluster::warn_limited!(log, "ticket key", error = %e, "TLS session-ticket key not committed; retried");
                    false
                }
            };
            let _ = done.send(committed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_due_when_none_or_the_newest_is_a_rotation_old() {
        assert!(due(&[], 0));
        let keys = vec![fresh(&[], 1_000).unwrap()];
        assert!(!due(&keys, 1_000));
        assert!(!due(&keys, 1_000 + ROTATE_MS - 1));
        assert!(due(&keys, 1_000 + ROTATE_MS));
        // A clock behind the key's time is not a reason to rotate.
        assert!(!due(&keys, 0));
    }

    #[test]
    fn fresh_keys_are_random_and_unlike_the_kept_ones() {
        let a = fresh(&[], 5).unwrap();
        let b = fresh(std::slice::from_ref(&a), 6).unwrap();
        assert_ne!(a.id, b.id);
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.secret, [0; 32]);
        assert_eq!((a.created_ms, b.created_ms), (5, 6));
    }
}
