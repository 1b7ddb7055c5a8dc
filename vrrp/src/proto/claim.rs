//! The peer's claims: what the other router of a pair last said about its
//! own VRRP state over an authenticated link that VRRP itself lacks.
//!
//! VRRPv3 has no authentication (RFC 5798 §9), so anyone on the link can
//! send an advert with the peer's source address. The pair also talks over
//! a mutually authenticated cluster link; SPEC §9: "VRRP is the fast signal
//! of who holds the VIP; the authenticated cluster link is the truth." A
//! [`PeerClaim`] carries the peer's side of that truth into the state
//! machine, and [`verdict`] decides what it makes of an advert.

use std::net::Ipv4Addr;
use std::time::Instant;

use crate::wire::Repr;

/// What the peer last said about itself over the authenticated cluster
/// link, and until when that statement counts.
///
/// The glue that runs the link refreshes it about every advertisement
/// interval with `valid_until` about three intervals ahead, and sends a new
/// one at once whenever the peer's state changes. Once `valid_until` has
/// passed the link is considered down and VRRP alone decides, as without
/// claims. Give it to [`super::Instance::set_peer_claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerClaim {
    /// The peer's VRRP source address (its primary address): the claim
    /// speaks for adverts from this address only.
    pub address: Ipv4Addr,
    /// The priority the peer advertises now (its current priority, which a
    /// node may change at run time).
    pub priority: u8,
    /// Whether the peer is VRRP master now.
    pub master: bool,
    /// Whether the peer is leaving (graceful stop): only then may a
    /// priority-0 advert from its address count. The peer must have this
    /// claim applied here before its priority-0 advert arrives, or the
    /// advert is dropped and the handover waits for Master_Down_Interval.
    pub leaving: bool,
    /// The claim counts while `now < valid_until`.
    pub valid_until: Instant,
}

impl PeerClaim {
    /// Whether the claim speaks for an advert from `src` at `now`.
    pub fn covers(&self, now: Instant, src: Ipv4Addr) -> bool {
        src == self.address && now < self.valid_until
    }
}

/// What the peer's claim makes of an advert from its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// No valid claim for the source, or one that agrees: act on it.
    Process,
    /// The priority matches but the peer says it is not master: most
    /// likely it has just become master and its new claim, sent over TCP,
    /// is a fraction of a millisecond behind its advert. Keep it and decide
    /// when the next claim arrives.
    Hold,
    /// The peer says otherwise: a forgery in its name. Drop it.
    Contradicted,
}

/// The verdict of `claim` (if any) on an advert from `src` with `priority` at `now`.
pub(super) fn verdict(claim: Option<&PeerClaim>, now: Instant, src: Ipv4Addr, priority: u8) -> Verdict {
    let Some(claim) = claim.filter(|c| c.covers(now, src)) else {
        return Verdict::Process;
    };
    if priority == 0 {
        // RFC 9568 §6.4.3: a master sends priority 0 only as it leaves.
        return if claim.leaving {
            Verdict::Process
        } else {
            Verdict::Contradicted
        };
    }
    if priority != claim.priority {
        Verdict::Contradicted
    } else if !claim.master {
        Verdict::Hold
    } else {
        Verdict::Process
    }
}

/// An advert on hold until the peer's next claim (see [`Verdict::Hold`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Held {
    /// Its source (the claim's address when it was held).
    pub(super) src: Ipv4Addr,
    /// The advert, validated.
    pub(super) advert: Repr,
    /// When it arrived; it is released only within one advertisement
    /// interval of this.
    pub(super) received: Instant,
}
