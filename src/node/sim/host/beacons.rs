//! The beacons of `node::beacon`, re-stated without the transport.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use vrrp::proto::{Instance, PeerClaim};

use super::super::super::beacon::Beacon;
use super::super::super::rules::{PeerWord, BEHIND_PRIORITY};
use super::Out;

/// The beacons of `beacon::Beacons`, without the transport: the same
/// encoding, claims, acknowledgements and stand-in for a demoted peer.
#[derive(Debug)]
pub(super) struct Beacons {
    pub(super) peer: u64,
    pub(super) peer_address: Ipv4Addr,
    pub(super) validity: Duration,
    pub(super) ours: Beacon,
    pub(super) acked: u64,
    pub(super) heard: Option<Instant>,
    pub(super) claim: Option<PeerClaim>,
    /// Beacons that did not decode (S5: dropped, counted).
    pub(super) garbage: u64,
}

impl Beacons {
    pub(super) fn receive(&mut self, now: Instant, bytes: &[u8], vrrp: &mut Instance, out: &mut Vec<Out>) {
        let b = match Beacon::decode(bytes) {
            Ok(b) => b,
            Err(_) => {
                self.garbage += 1;
                return;
            }
        };
        self.heard = Some(now);
        let claim = PeerClaim {
            address: self.peer_address,
            priority: b.priority,
            master: b.master,
            leaving: b.leaving,
            valid_until: now + self.validity,
        };
        self.claim = Some(claim);
        vrrp.set_peer_claim(now, Some(claim));
        if let Some(seq) = b.ack {
            self.acked = self.acked.max(seq);
        }
        if b.leaving {
            let ours = Beacon {
                ack: Some(b.seq),
                ..self.ours
            };
            out.push(Out::Beacon {
                to: self.peer,
                bytes: ours.encode(),
            });
        }
    }

    pub(super) fn publish(&mut self, master: bool, priority: u8, out: &mut Vec<Out>) {
        let o = &self.ours;
        if o.seq > 0 && o.master == master && o.priority == priority && !o.leaving {
            return;
        }
        self.ours = Beacon {
            seq: o.seq + 1,
            master,
            priority,
            leaving: false,
            ack: None,
        };
        out.push(Out::Beacon {
            to: self.peer,
            bytes: self.ours.encode(),
        });
    }

    pub(super) fn peer_word(&self, now: Instant) -> Option<PeerWord> {
        if self
            .heard
            .is_none_or(|at| now.saturating_duration_since(at) >= self.validity)
        {
            return None;
        }
        self.claim.filter(|c| c.valid_until > now).map(|c| PeerWord {
            master: c.master,
            priority: c.priority,
            leaving: c.leaving,
        })
    }

    pub(super) fn refresh(&self, out: &mut Vec<Out>) {
        if self.ours.seq > 0 {
            out.push(Out::Beacon {
                to: self.peer,
                bytes: self.ours.encode(),
            });
        }
    }

    pub(super) fn peer_demoted(&mut self, now: Instant, demoted: bool, vrrp: &mut Instance) {
        if !demoted
            || self
                .heard
                .is_some_and(|at| now.saturating_duration_since(at) < self.validity)
        {
            return;
        }
        let claim = PeerClaim {
            address: self.peer_address,
            priority: BEHIND_PRIORITY,
            master: false,
            leaving: false,
            valid_until: now + self.validity,
        };
        self.claim = Some(claim);
        vrrp.set_peer_claim(now, Some(claim));
    }

    /// Says we leave; returns the seq the peer must acknowledge.
    pub(super) fn announce_leaving(&mut self, master: Option<bool>, out: &mut Vec<Out>) -> u64 {
        self.ours.seq += 1;
        self.ours.master = master.unwrap_or(self.ours.master);
        self.ours.leaving = true;
        self.ours.ack = None;
        out.push(Out::Beacon {
            to: self.peer,
            bytes: self.ours.encode(),
        });
        self.ours.seq
    }
}
