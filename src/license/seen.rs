//! Signatures a server has already verified ([`SeenSignatures`]).
//!
//! A switch presents its keys again in every registration and heartbeat.
//! Checking an Ed25519 signature is the largest part of what a heartbeat
//! costs the server (about 100 µs of a core on the lab machine, more than
//! the TLS record and the raft commit together), and the answer never
//! changes for the same issuer key, statement and signature. The server
//! remembers the signatures that verified, by a SHA-256 digest of exactly
//! what was checked, and skips the curve arithmetic when it sees one again.
//! Everything else (issuer trusted now, serial, validity at this instant)
//! is checked every time.
//!
//! Only successes are remembered: a forger cannot fill the set with his
//! attempts, and a failure is never taken for a success. The set is
//! bounded; when full it starts again empty (the next round of heartbeats
//! refills it), so its memory stays under [`SeenSignatures::capacity`]
//! digests whatever clients send.

use std::collections::HashSet;
use std::sync::Mutex;

use ed25519_dalek::VerifyingKey;
use ring::digest::{Context, SHA256};

/// Distinct keys remembered by default: two keys for each of 10,000
/// switches, with room to spare; about 2.5 MB when full.
const DEFAULT_CAPACITY: usize = 65_536;

/// A bounded set of signatures known to verify (see the module docs).
#[derive(Debug)]
pub struct SeenSignatures {
    digests: Mutex<HashSet<[u8; 32]>>,
    capacity: usize,
}

impl Default for SeenSignatures {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl SeenSignatures {
    /// Remembers at most `capacity` signatures (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            digests: Mutex::new(HashSet::new()),
            capacity: capacity.max(1),
        }
    }

    /// How many signatures it remembers at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many it remembers now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `check` already succeeded for this issuer key, message (in
    /// `parts`, concatenated) and signature; if not, runs it and remembers
    /// a success.
    pub(super) fn check<E>(
        &self,
        issuer: &VerifyingKey,
        message: &[&[u8]],
        signature: &[u8; 64],
        check: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let digest = digest(issuer, message, signature);
        if self.lock().contains(&digest) {
            return Ok(());
        }
        check()?;
        let mut digests = self.lock();
        if digests.len() >= self.capacity {
            digests.clear();
        }
        digests.insert(digest);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        // The set holds no invariant a panicking holder could break.
        self.digests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// SHA-256 over the issuer's public key, the signature and the message,
/// each of fixed length or last, so that no two different triples encode
/// alike.
fn digest(issuer: &VerifyingKey, message: &[&[u8]], signature: &[u8; 64]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(issuer.as_bytes());
    ctx.update(signature);
    for part in message {
        ctx.update(part);
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}
