//! Scenario tests of the state machine: N instances on one simulated link, in
//! virtual time that jumps to the next wakeup.
//!
//! Each test quotes the RFC text it checks. Expected instants are written
//! out as literals (not recomputed with the code under test) wherever the
//! arithmetic is short enough to check by hand.
//!
//! - [`election`]: timers, election, failover, preemption, shutdown, ties,
//!   interval learning, the owner, priority changes (RFC 9568 §6).
//! - [`validation`]: every receive check and drop reason (RFC 9568 §7.1,
//!   RFC 3768 §7.1), and proptests over arbitrary bytes.
//! - [`trust`]: who may move the VIP: the source filter, spoofs of our own
//!   addresses, and the peer's authenticated claims (SPEC §9, S6).
//! - [`fault`]: a router that gives up the virtual addresses while
//!   something it tracks is down (keepalived's FAULT state).

mod election;
mod fault;
mod trust;
mod validation;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::{Config, ConfigError, DropReason, Event, Instance, PeerClaim, Reason, State, Timer, V3Checksum};
use crate::wire::{self, ipv4, Auth, Checksum, Packet, Repr, Version};

const VRID: u8 = 7;
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const GROUP: Ipv4Addr = wire::MULTICAST_GROUP;

fn host(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A v3 router `10.0.0.<n>` with the RFC defaults.
fn v3(priority: u8, n: u8) -> Config {
    Config::v3(VRID, priority, host(n), vec![VIP])
}

/// A v2 router `10.0.0.<n>`, advert 1 s, password "secret".
fn v2(priority: u8, n: u8) -> Config {
    Config {
        version: Version::V2,
        auth: Auth::simple_text(b"secret").unwrap(),
        ..v3(priority, n)
    }
}

/// The checksum `sender` fills in.
fn checksum_of(sender: &Config, src: Ipv4Addr, dst: Ipv4Addr) -> Checksum {
    match (sender.version, sender.v3_checksum) {
        (Version::V3, V3Checksum::PseudoHeader) => Checksum::PseudoHeader { src, dst },
        _ => Checksum::MessageOnly,
    }
}

/// What a Transmit from `sender` becomes on the link.
fn on_the_wire(sender: &Config, repr: &Repr) -> Vec<u8> {
    let src = sender.primary_address;
    let payload = repr.to_bytes(checksum_of(sender, src, GROUP));
    ipv4::build(src, GROUP, wire::TTL, &payload)
}

/// One router on the simulated link.
struct Node {
    vr: Instance,
    /// Crashed: runs no timers, sends and receives nothing, never shut down.
    crashed: bool,
    /// Cut off from the link but still running its timers.
    isolated: bool,
    /// Every event the node output, stamped with the virtual time.
    log: Vec<(Instant, Event)>,
    /// When an advert from another node last reached it.
    last_rx: Option<Instant>,
    /// Stopping gracefully: its claims say `leaving`.
    leaving: bool,
}

/// N instances on one link; a Transmit reaches every other live node at
/// once (and loops back to its sender, as multicast does on Linux).
struct Network {
    t0: Instant,
    now: Instant,
    nodes: Vec<Node>,
    /// Directed links that lose everything: (from, to).
    cut: BTreeSet<(usize, usize)>,
    /// A pair whose members also tell each other their state over an
    /// authenticated link that shares the VRRP link's fate (cut, isolated,
    /// crashed): after every round of adverts each live member's truthful
    /// claim reaches the other, valid for three advert intervals. Claims
    /// arrive just after the adverts of the same instant, the race that
    /// holding exists for. They are also refreshed every advert interval.
    claims: bool,
    /// With claims: the next periodic refresh.
    claim_refresh: Option<Instant>,
}

impl Network {
    /// Builds the nodes; none is started.
    fn new(configs: Vec<Config>) -> Network {
        let t0 = Instant::now(); // an origin only; time moves by jumps
        let nodes = configs
            .into_iter()
            .map(|c| Node {
                vr: Instance::new(c).unwrap(),
                crashed: false,
                isolated: false,
                log: Vec::new(),
                last_rx: None,
                leaving: false,
            })
            .collect();
        Network {
            t0,
            now: t0,
            nodes,
            cut: BTreeSet::new(),
            claims: false,
            claim_refresh: None,
        }
    }

    /// As [`Network::new`] for a pair that exchanges claims (see `claims`).
    fn with_claims(configs: Vec<Config>) -> Network {
        assert_eq!(configs.len(), 2, "claims are for a pair");
        let net = Network::new(configs);
        Network {
            claims: true,
            claim_refresh: Some(net.t0 + net.claim_interval()),
            ..net
        }
    }

    /// How often claims are refreshed: the pair's advert interval.
    fn claim_interval(&self) -> Duration {
        us(u64::from(self.nodes[0].vr.config().advert_interval_cs) * 10_000)
    }

    /// Builds the nodes and starts them all at `t0`.
    fn started(configs: Vec<Config>) -> Network {
        let mut net = Network::new(configs);
        for i in 0..net.nodes.len() {
            net.nodes[i].vr.startup(net.now);
        }
        net.flush();
        net
    }

    fn at(&self, offset: Duration) -> Instant {
        self.t0 + offset
    }

    fn vr(&self, i: usize) -> &Instance {
        &self.nodes[i].vr
    }

    fn state(&self, i: usize) -> State {
        self.nodes[i].vr.state()
    }

    fn start(&mut self, i: usize) {
        self.nodes[i].leaving = false;
        self.nodes[i].vr.startup(self.now);
        self.flush();
    }

    /// Replaces node `i` by a fresh instance of `config` and starts it.
    fn restart(&mut self, i: usize, config: Config) {
        self.nodes[i].vr = Instance::new(config).unwrap();
        self.nodes[i].crashed = false;
        self.start(i);
    }

    /// Stops node `i` dead: no priority-0 advert, no more timers.
    fn crash(&mut self, i: usize) {
        self.nodes[i].crashed = true;
        while self.nodes[i].vr.poll_event().is_some() {}
    }

    fn isolate(&mut self, i: usize, isolated: bool) {
        self.nodes[i].isolated = isolated;
    }

    /// A graceful stop. With claims, the leaving claim reaches the peer
    /// before the priority-0 advert, as the glue must ensure.
    fn shutdown(&mut self, i: usize) {
        if self.claims {
            self.nodes[i].leaving = true;
            self.send_claims();
        }
        self.nodes[i].vr.shutdown(self.now);
        self.flush();
    }

    /// Every live member tells the other what it is now.
    fn send_claims(&mut self) {
        for from in 0..self.nodes.len() {
            for to in 0..self.nodes.len() {
                if from == to || !self.delivers(from, to) {
                    continue;
                }
                let vr = &self.nodes[from].vr;
                let claim = PeerClaim {
                    address: vr.config().primary_address,
                    priority: vr.config().priority,
                    master: vr.state() == State::Master,
                    leaving: self.nodes[from].leaving,
                    valid_until: self.now + 3 * us(u64::from(vr.config().advert_interval_cs) * 10_000),
                };
                self.nodes[to].vr.set_peer_claim(self.now, Some(claim));
            }
        }
    }

    /// Node `i` enters or leaves fault. With claims, entering fault says
    /// `leaving` first (the priority-0 advert must be believed), as the
    /// glue does; leaving fault says it no more.
    fn set_fault(&mut self, i: usize, fault: bool) {
        if self.claims {
            self.nodes[i].leaving = fault;
            self.send_claims();
        }
        self.nodes[i].vr.set_fault(self.now, fault);
        self.flush();
    }

    fn set_priority(&mut self, i: usize, priority: u8) {
        self.nodes[i].vr.set_priority(self.now, priority);
        self.flush();
    }

    fn delivers(&self, from: usize, to: usize) -> bool {
        let (a, b) = (&self.nodes[from], &self.nodes[to]);
        if a.crashed || b.crashed {
            return false;
        }
        from == to || (!a.isolated && !b.isolated && !self.cut.contains(&(from, to)))
    }

    /// Drains every node's events and delivers adverts until the link is
    /// quiet. With claims, every member's claim follows each round of
    /// adverts, and is refreshed once more when the link is quiet (as the
    /// glue refreshes them every interval whether or not anything changed).
    fn flush(&mut self) {
        let mut refreshed = false;
        loop {
            let mut sent = Vec::new();
            for (i, node) in self.nodes.iter_mut().enumerate() {
                if node.crashed {
                    continue;
                }
                while let Some(event) = node.vr.poll_event() {
                    if let Event::Transmit(repr) = &event {
                        sent.push((i, on_the_wire(node.vr.config(), repr)));
                    }
                    node.log.push((self.now, event));
                }
            }
            if sent.is_empty() {
                if !self.claims || refreshed {
                    return;
                }
                self.send_claims();
                refreshed = true;
                continue;
            }
            refreshed = false;
            for (from, datagram) in sent {
                for to in 0..self.nodes.len() {
                    if self.delivers(from, to) {
                        self.nodes[to].vr.handle_datagram(self.now, &datagram);
                        if to != from {
                            self.nodes[to].last_rx = Some(self.now);
                        }
                    }
                }
            }
            if self.claims {
                self.send_claims();
            }
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        self.nodes
            .iter()
            .filter(|n| !n.crashed)
            .filter_map(|n| n.vr.poll_timeout())
            .chain(self.claim_refresh)
            .min()
    }

    /// Jumps to the next wakeup, fires every node's due timers, then
    /// delivers; so timers due at the same instant race as on a real link.
    fn step(&mut self) -> bool {
        let Some(t) = self.next_wakeup() else {
            return false;
        };
        self.now = t;
        for node in self.nodes.iter_mut().filter(|n| !n.crashed) {
            if node.vr.poll_timeout().is_some_and(|d| d <= t) {
                node.vr.handle_timeout(t);
            }
        }
        // A quiet flush refreshes the claims.
        self.flush();
        if self.claim_refresh.is_some_and(|r| r <= t) {
            self.claim_refresh = Some(t + self.claim_interval());
        }
        true
    }

    /// Runs every wakeup up to and including `t0 + offset`, then sets the clock there.
    fn run_until(&mut self, offset: Duration) {
        let t = self.at(offset);
        assert!(t >= self.now, "time runs forward");
        while self.next_wakeup().is_some_and(|w| w <= t) {
            self.step();
        }
        self.now = t;
    }

    /// When node `i` became master, and why.
    fn masterships(&self, i: usize) -> Vec<(Instant, Reason)> {
        self.nodes[i]
            .log
            .iter()
            .filter_map(|(t, e)| match e {
                Event::BecomeMaster(r) => Some((*t, *r)),
                _ => None,
            })
            .collect()
    }

    /// When node `i` became backup, and why.
    fn backups(&self, i: usize) -> Vec<(Instant, Reason)> {
        self.nodes[i]
            .log
            .iter()
            .filter_map(|(t, e)| match e {
                Event::BecomeBackup(r) => Some((*t, *r)),
                _ => None,
            })
            .collect()
    }

    /// The live, connected nodes in Master.
    fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].crashed && self.state(i) == State::Master)
            .collect()
    }
}

/// A started backup, advanced to `t0 + 1 s` so that acting on an advert
/// would visibly move its Master_Down_Timer.
fn backup(config: Config) -> (Instance, Instant) {
    let mut vr = Instance::new(config).unwrap();
    let t0 = Instant::now();
    vr.startup(t0);
    while vr.poll_event().is_some() {}
    (vr, t0 + secs(1))
}

/// An advert as `sender` would put it on the wire (TTL 255, to the group).
fn advert(sender: &Config) -> Repr {
    Repr {
        version: sender.version,
        vrid: sender.vrid,
        priority: sender.priority,
        interval_cs: sender.advert_interval_cs,
        addresses: sender.addresses.clone(),
        auth: sender.auth,
    }
}

fn datagram(sender: &Config, repr: &Repr) -> Vec<u8> {
    on_the_wire(sender, repr)
}

/// `sender`'s advert with its VRRP bytes edited by `edit` and the checksum
/// filled in again, so only the edit is wrong.
fn tampered(sender: &Config, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let src = sender.primary_address;
    let mode = checksum_of(sender, src, GROUP);
    let mut payload = advert(sender).to_bytes(mode);
    edit(&mut payload);
    Packet::new_unchecked(&mut payload[..]).fill_checksum(mode);
    ipv4::build(src, GROUP, wire::TTL, &payload)
}

/// Feeds `datagram` and checks it was accepted.
#[track_caller]
fn assert_accepted(vr: &mut Instance, now: Instant, datagram: &[u8]) {
    let before = vr.counters().clone();
    vr.handle_datagram(now, datagram);
    assert_eq!(vr.counters().adverts_received, before.adverts_received + 1);
    assert_eq!(
        vr.counters().total_drops(),
        before.total_drops(),
        "{:?}",
        vr.counters().drops
    );
}

/// Feeds `datagram` and checks it was dropped for `reason` and nothing else changed.
#[track_caller]
fn assert_dropped(vr: &mut Instance, now: Instant, datagram: &[u8], reason: DropReason) {
    let (state, timeout, before) = (vr.state(), vr.poll_timeout(), vr.counters().clone());
    let timers = Timer::ALL.map(|t| vr.timer(t));
    vr.handle_datagram(now, datagram);
    let after = vr.counters();
    assert_eq!(
        after.drops_for(reason),
        before.drops_for(reason) + 1,
        "not dropped as {reason:?}: {:?}",
        after.drops
    );
    assert_eq!(after.total_drops(), before.total_drops() + 1);
    assert_eq!(after.adverts_received, before.adverts_received);
    assert_eq!(vr.state(), state);
    assert_eq!(vr.poll_timeout(), timeout);
    assert_eq!(Timer::ALL.map(|t| vr.timer(t)), timers);
    assert_eq!(vr.poll_event(), None);
}
