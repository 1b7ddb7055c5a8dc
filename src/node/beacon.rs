//! What each server tells its peer about its VRRP state over the
//! authenticated cluster link, and how the peer's word becomes the VRRP
//! speaker's [`PeerClaim`].
//!
//! SPEC §9: "VRRP is the fast signal of who holds the VIP; the
//! authenticated cluster link is the truth. An advert that the peer's
//! authenticated state contradicts does not take service away." Adverts
//! travel as raw IP packets anyone on the segment can forge; a beacon
//! travels over mutual TLS from the peer's certificate. Each server sends
//! its beacon (VRRP master or not, the priority it advertises, whether it
//! is leaving) whenever that changes and every advert interval; the peer
//! turns it into a claim valid for three intervals, against which the
//! speaker judges every advert from the peer's address (see
//! `vrrp::proto::PeerClaim`). Without fresh beacons (the link or the peer
//! is down) VRRP alone decides, as it must for a crashed peer.
//!
//! A graceful stop announces `leaving` and waits for the peer to
//! acknowledge it before the priority-0 advert goes out: only then does
//! the peer's speaker believe that advert (a forged one is dropped), and
//! takes over at once.
//!
//! One authenticated fact outlives the beacons: once this node took over
//! as sole voter, the raft log says the peer is a learner, and a learner
//! comes back advertising the lowest priority until it is caught up and
//! promoted (and beacons again as soon as its link is up). While the peer
//! is a learner and silent, this node stands in for its word: not master,
//! priority 1. So after a maintenance stop or a crash of the peer, adverts
//! forged in its name take nothing from the survivor.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::ratelog::RateLimiter;
use cluster::TcpTransport;
use tokio::sync::watch;
use vrrp::proto::PeerClaim;
use vrrp::sys::PeerClaims;

/// One server's word about its VRRP state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Beacon {
    /// Grows with every change the sender makes (per run).
    pub(crate) seq: u64,
    /// The sender is VRRP master.
    pub(crate) master: bool,
    /// The priority its adverts carry (when not leaving).
    pub(crate) priority: u8,
    /// The sender is stopping: its priority-0 advert is genuine.
    pub(crate) leaving: bool,
    /// The `seq` of the peer's `leaving` beacon this one acknowledges.
    pub(crate) ack: Option<u64>,
}

/// A beacon's encoding is tiny and bounded: anything longer is refused.
const MAX_BEACON: usize = 64;
/// The first byte of every beacon: its format.
const FORMAT: u8 = 1;

impl Beacon {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        out.extend(
            bincode::serde::encode_to_vec(self, bincode::config::standard()).expect("a beacon encodes"),
        );
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Beacon, String> {
        match bytes.split_first() {
            _ if bytes.len() > MAX_BEACON => Err(format!("{} bytes, at most {MAX_BEACON}", bytes.len())),
            Some((&FORMAT, body)) => {
                let (b, used): (Beacon, usize) =
                    bincode::serde::decode_from_slice(body, bincode::config::standard())
                        .map_err(|e| e.to_string())?;
                if used != body.len() {
                    return Err(format!("{} trailing bytes", body.len() - used));
                }
                Ok(b)
            }
            Some((f, _)) => Err(format!("format {f}, this release reads {FORMAT}")),
            None => Err("empty".into()),
        }
    }
}

/// This server's side of the beacons: what it sends, and the claims it
/// makes of what its peer sends.
pub(crate) struct Beacons {
    transport: TcpTransport,
    /// The pair peer's member id; beacons from anyone else are ignored.
    peer: u64,
    /// The peer's VRRP source address (`vrrp.peer_address`).
    peer_address: Ipv4Addr,
    claims: PeerClaims,
    /// How long a beacon counts: three advert intervals.
    validity: Duration,
    ours: Mutex<Beacon>,
    /// The highest of our `seq`s the peer acknowledged.
    acked: watch::Sender<u64>,
    /// When the peer's last beacon arrived.
    heard: Mutex<Option<Instant>>,
    /// Beacons of the peer taken (for the log of a master-down takeover).
    received: AtomicU64,
    log: RateLimiter,
}

impl Beacons {
    /// Beacons to member `peer` (VRRP address `peer_address`) over
    /// `transport`, its claims fed to `claims`; `advert` is the VRRP
    /// advertisement interval.
    pub(crate) fn install(
        transport: &TcpTransport,
        peer: u64,
        peer_address: Ipv4Addr,
        claims: PeerClaims,
        advert: Duration,
    ) -> Arc<Beacons> {
        let beacons = Arc::new(Beacons {
            transport: transport.clone(),
            peer,
            peer_address,
            claims,
            validity: advert * 3,
            ours: Mutex::new(Beacon::default()),
            acked: watch::channel(0).0,
            heard: Mutex::new(None),
            received: AtomicU64::new(0),
            log: RateLimiter::default(),
        });
        let handler = Arc::clone(&beacons);
        transport.set_pair_handler(Arc::new(move |from, data| handler.receive(from, &data)));
        beacons
    }

    /// A beacon from member `from` (authenticated by the transport).
    fn receive(&self, from: u64, data: &[u8]) {
        if from != self.peer {
            cluster::warn_limited!(
                self.log,
                "beacon sender",
                from,
                "VRRP state from a member that is not the pair peer: ignored"
            );
            return;
        }
        let b = match Beacon::decode(data) {
            Ok(b) => b,
            Err(e) => {
                cluster::warn_limited!(
                    self.log,
                    "beacon",
                    from,
                    "peer's VRRP state unreadable ({e}): ignored"
                );
                return;
            }
        };
        // Set before anything else: an advert handled from now on is judged
        // by this word.
        *self.heard.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.received.fetch_add(1, Ordering::Relaxed);
        self.claims.set(Some(PeerClaim {
            address: self.peer_address,
            priority: b.priority,
            master: b.master,
            leaving: b.leaving,
            valid_until: Instant::now() + self.validity,
        }));
        if let Some(seq) = b.ack {
            self.acked.send_if_modified(|a| {
                let newer = seq > *a;
                *a = (*a).max(seq);
                newer
            });
        }
        if b.leaving {
            // The peer waits for this before its priority-0 advert.
            let ours = Beacon {
                ack: Some(b.seq),
                ..*self.ours.lock().unwrap_or_else(|p| p.into_inner())
            };
            self.transport.send_pair(self.peer, ours.encode());
        }
    }

    /// Tells the peer our state now if it changed (and returns true), so
    /// that a priority change reaches it before the adverts that carry it.
    pub(crate) fn publish(&self, master: bool, priority: u8) -> bool {
        let mut ours = self.ours.lock().unwrap_or_else(|p| p.into_inner());
        if ours.seq > 0 && ours.master == master && ours.priority == priority && !ours.leaving {
            return false;
        }
        *ours = Beacon {
            seq: ours.seq + 1,
            master,
            priority,
            leaving: false,
            ack: None,
        };
        self.transport.send_pair(self.peer, ours.encode());
        true
    }

    /// The peer's own word, while it is fresh (not this node standing in
    /// for a demoted peer: see [`Beacons::peer_demoted`]).
    pub(crate) fn peer_word(&self) -> Option<crate::node::rules::PeerWord> {
        let now = Instant::now();
        let heard = *self.heard.lock().unwrap_or_else(|p| p.into_inner());
        if heard.is_none_or(|at| now.duration_since(at) >= self.validity) {
            return None;
        }
        self.claims
            .get()
            .filter(|c| c.valid_until > now)
            .map(|c| crate::node::rules::PeerWord {
                master: c.master,
                priority: c.priority,
                leaving: c.leaving,
            })
    }

    /// Sends our state again (every advert interval: the peer's claim of
    /// us lasts three). `due` is when this refresh was due: one more than
    /// an advert interval late means this node's thread was held up (see
    /// [`late_refresh`]), and says so.
    pub(crate) fn refresh(&self, due: Instant) {
        if let Some(late) = late_refresh(due, Instant::now(), self.validity / 3) {
            cluster::warn_limited!(
                self.log,
                "held up",
                late_ms = late.as_millis(),
                "this node's thread was held up: its VRRP state reached the peer late"
            );
        }
        let ours = *self.ours.lock().unwrap_or_else(|p| p.into_inner());
        if ours.seq > 0 {
            self.transport.send_pair(self.peer, ours.encode());
        }
    }

    /// Says what the VRRP speaker made of the peer's adverts and beacons
    /// when it declared the peer down (Master_Down_Interval without an
    /// advert it acted on): adverts it accepted, held, released and
    /// dropped as contradicted, and when the peer's word last arrived.
    pub(crate) fn log_master_down(&self, counters: &vrrp::proto::Counters) {
        let heard = *self.heard.lock().unwrap_or_else(|p| p.into_inner());
        tracing::info!(
            adverts_received = counters.adverts_received,
            adverts_held = counters.adverts_held,
            held_released = counters.held_released,
            contradicted = counters.drops_for(vrrp::proto::DropReason::Contradicted),
            beacons_received = self.received.load(Ordering::Relaxed),
            beacon_ms_ago = heard.map(|at| at.elapsed().as_millis()),
            "VRRP master down: no advert of the peer acted on within Master_Down_Interval"
        );
    }

    /// While the raft log says the peer is a learner (this node took over
    /// as sole voter) and the peer's own word has lapsed, stands in for it:
    /// not master, priority 1 (what a returning learner advertises). Its
    /// next beacon overrides this at once.
    pub(crate) fn peer_demoted(&self, demoted: bool, behind_priority: u8) {
        if !demoted {
            return;
        }
        let now = Instant::now();
        let heard = *self.heard.lock().unwrap_or_else(|p| p.into_inner());
        if heard.is_some_and(|at| now.duration_since(at) < self.validity) {
            return;
        }
        self.claims.set(Some(PeerClaim {
            address: self.peer_address,
            priority: behind_priority,
            master: false,
            leaving: false,
            valid_until: now + self.validity,
        }));
    }

    /// Announces that we leave and waits up to `wait` for the peer to
    /// acknowledge it; whether it did. Without an acknowledgement (the link
    /// is down) the peer's claim of us expires and VRRP alone decides.
    pub(crate) async fn leave(&self, wait: Duration) -> bool {
        self.announce_leaving(None, wait).await
    }

    /// As [`Beacons::leave`] for a node that enters fault (see
    /// `node::track`): it also says it is no longer master, so that while
    /// it stays out no advert in its name at its priority is acted on
    /// (held, then dropped). The next [`Beacons::publish`] once the fault
    /// clears says what it is again.
    pub(crate) async fn fault(&self, wait: Duration) -> bool {
        self.announce_leaving(Some(false), wait).await
    }

    async fn announce_leaving(&self, master: Option<bool>, wait: Duration) -> bool {
        let seq = {
            let mut ours = self.ours.lock().unwrap_or_else(|p| p.into_inner());
            ours.seq += 1;
            ours.master = master.unwrap_or(ours.master);
            ours.leaving = true;
            ours.ack = None;
            self.transport.send_pair(self.peer, ours.encode());
            ours.seq
        };
        let mut acked = self.acked.subscribe();
        tokio::time::timeout(wait, acked.wait_for(|&a| a >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// How late a refresh due at `due` runs at `now`, if by more than one
/// advert `interval`.
fn late_refresh(due: Instant, now: Instant, interval: Duration) -> Option<Duration> {
    Some(now.saturating_duration_since(due)).filter(|late| *late > interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_more_than_one_interval_late_says_the_thread_was_held_up() {
        let due = Instant::now();
        let interval = Duration::from_millis(400);
        assert_eq!(
            late_refresh(due, due + Duration::from_millis(399), interval),
            None
        );
        assert_eq!(late_refresh(due, due + interval, interval), None);
        // What a 516 ms log flush and what followed it did to a lab
        // primary under disk load.
        assert_eq!(
            late_refresh(due, due + Duration::from_millis(801), interval),
            Some(Duration::from_millis(801))
        );
        assert_eq!(late_refresh(due + interval, due, interval), None);
    }

    #[test]
    fn beacons_roundtrip_and_garbage_is_refused() {
        let b = Beacon {
            seq: 7,
            master: true,
            priority: 200,
            leaving: false,
            ack: Some(3),
        };
        assert_eq!(Beacon::decode(&b.encode()), Ok(b));
        assert!(Beacon::decode(&[]).is_err());
        assert!(Beacon::decode(&[2, 0, 0]).unwrap_err().contains("format 2"));
        let mut long = b.encode();
        long.extend([0u8; 64]);
        assert!(Beacon::decode(&long).is_err());
        let mut trailing = b.encode();
        trailing.push(0);
        assert!(Beacon::decode(&trailing).unwrap_err().contains("trailing"));
        assert!(Beacon::decode(&[FORMAT, 0xff, 0xff]).is_err());
    }
}
