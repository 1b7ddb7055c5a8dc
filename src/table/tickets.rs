//! The pair's TLS session-ticket keys, as replicated state.
//!
//! A switch that reconnects after a failover resumes its TLS session on
//! the survivor instead of a full handshake, only if the survivor can open
//! the ticket the other member gave it. So the serving member proposes a
//! fresh random key now and then ([`Command::TicketKey`]), and every member
//! seals and opens tickets with the keys the log holds (`crate::tls::PairTicketer`).
//!
//! A ticket key is a secret: whoever holds it can forge a ticket that
//! resumes as any switch. It travels only inside the pair (the cluster
//! link is mutual TLS), lives in the log and snapshots on the members'
//! disks beside their own private keys, and is never shown: `Debug` and
//! [`Command::describe`] print its id only.
//!
//! [`Command::TicketKey`]: super::Command::TicketKey
//! [`Command::describe`]: super::Command::describe

use serde::{Deserialize, Serialize};

/// How many ticket keys the table keeps: the newest seals new tickets, and
/// the one before still opens the tickets it sealed until the next
/// rotation.
pub const KEPT_TICKET_KEYS: usize = 2;

/// One session-ticket key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketKey {
    /// Names the key inside each ticket it seals (random, unique in the table).
    pub id: u32,
    /// When the serving member made it (its stamped clock, ms since the Unix epoch).
    pub created_ms: u64,
    /// The AEAD key (ChaCha20-Poly1305), from the system's random source.
    pub secret: [u8; 32],
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKey")
            .field("id", &self.id)
            .field("created_ms", &self.created_ms)
            .field("secret", &"(not shown)")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_never_printed() {
        let key = TicketKey {
            id: 7,
            created_ms: 1,
            secret: [0xab; 32],
        };
        let shown = format!("{key:?}");
        assert!(shown.contains("id: 7") && !shown.contains("171"), "{shown}");
        assert!(!shown.to_lowercase().contains("ab, ab"), "{shown}");
    }
}
