//! One virtual router: the RFC 9568 §6.4 state machine (RFC 3768 §6.4 for v2).
//!
//! An [`Instance`] is driven by four inputs, each taking the current time:
//! [`Instance::startup`], [`Instance::shutdown`], [`Instance::handle_datagram`]
//! and [`Instance::handle_timeout`] (plus [`Instance::set_priority`], and
//! [`Instance::set_peer_claim`] for a pair whose peer also speaks over an
//! authenticated link). Its
//! outputs are pulled: [`Instance::poll_event`] yields advertisements to send
//! and state changes to carry out, in order; [`Instance::poll_timeout`] says
//! when to call [`Instance::handle_timeout`] next.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use std::time::{Duration, Instant};
//! use vrrp::proto::{Config, Event, Instance, Reason, State};
//!
//! let vip = Ipv4Addr::new(192, 0, 2, 7);
//! let mut vr = Instance::new(Config::v3(7, 100, Ipv4Addr::new(192, 0, 2, 1), vec![vip])).unwrap();
//! let t0 = Instant::now(); // the driver's clock; the instance never reads one
//! vr.startup(t0);
//! assert_eq!(vr.poll_event(), Some(Event::BecomeBackup(Reason::Startup)));
//!
//! // Nobody advertises: Master_Down_Interval = 3 * 1 s + (256 - 100) / 256 s.
//! let down = vr.poll_timeout().unwrap();
//! assert_eq!(down - t0, Duration::from_micros(3_609_375));
//! vr.handle_timeout(down);
//! assert!(matches!(vr.poll_event(), Some(Event::Transmit(_))));
//! assert_eq!(vr.poll_event(), Some(Event::BecomeMaster(Reason::MasterDown)));
//! assert_eq!(vr.state(), State::Master);
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::claim::{self, Held, PeerClaim, Verdict};
use super::timers::{Timer, TimerTable};
use super::{Config, ConfigError, Counters, DropReason, Event, Reason, State, V3Checksum};
use crate::wire::{self, ipv4, Checksum, Packet, Repr, Version};

/// The priority of the router that owns the virtual addresses.
const OWNER: u8 = 255;
/// The priority a master advertises when it stops (RFC 9568 §6.4.3).
const LEAVING: u8 = 0;

/// The master as seen by a backup: the sender of the last accepted advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    src: Ipv4Addr,
    priority: u8,
}

/// One virtual router instance.
#[derive(Debug)]
pub struct Instance {
    config: Config,
    state: State,
    counters: Counters,
    events: VecDeque<Event>,
    timers: TimerTable,
    /// The configured virtual addresses as a set, to compare received lists
    /// regardless of order.
    addresses: BTreeSet<Ipv4Addr>,
    /// Master_Adver_Interval in centiseconds: learned from the master's
    /// adverts by a v3 backup, the configured interval otherwise.
    master_adver_interval_cs: u16,
    /// What the Master_Down_Timer's expiry would mean: the master went
    /// silent ([`Reason::MasterDown`]), it sent priority 0
    /// ([`Reason::MasterLeft`]), or it is alive but outranked by us and its
    /// adverts were discarded ([`Reason::Preempt`], preemption without delay).
    down_reason: Reason,
    /// Backup only: the last accepted advert's sender.
    master: Option<Seen>,
    /// What the peer last said over the authenticated link, if anything.
    peer_claim: Option<PeerClaim>,
    /// The advert held for the peer's next claim, if any (at most one: a
    /// newer advert from the same source supersedes it).
    held: Option<Held>,
    /// Started and not shut down: what [`Instance::set_fault`] returns to
    /// when the fault clears.
    running: bool,
    /// In fault (see [`Instance::set_fault`]): held in Initialize.
    fault: bool,
}

impl Instance {
    /// Validates `config` and builds an instance in [`State::Initialize`].
    ///
    /// # Errors
    /// The configuration error.
    pub fn new(config: Config) -> Result<Instance, ConfigError> {
        config.validate()?;
        Ok(Instance {
            addresses: config.addresses.iter().copied().collect(),
            master_adver_interval_cs: config.advert_interval_cs,
            config,
            state: State::Initialize,
            counters: Counters::default(),
            events: VecDeque::new(),
            timers: TimerTable::default(),
            down_reason: Reason::MasterDown,
            master: None,
            peer_claim: None,
            held: None,
            running: false,
            fault: false,
        })
    }

    /// Startup event (RFC 9568 §6.4.1).
    ///
    /// The address owner (priority 255) advertises and becomes master at
    /// once; anyone else becomes backup and waits Master_Down_Interval for a
    /// master to show up. A no-op unless in [`State::Initialize`]. In fault
    /// the instance stays in Initialize and starts when the fault clears.
    pub fn startup(&mut self, now: Instant) {
        self.running = true;
        if self.state != State::Initialize || self.fault {
            return;
        }
        self.master = None;
        self.down_reason = Reason::MasterDown;
        // "Set Master_Adver_Interval to Advertisement_Interval"
        self.master_adver_interval_cs = self.config.advert_interval_cs;
        if self.config.priority == OWNER {
            self.become_master(now, Reason::Owner);
        } else {
            self.become_backup(now, Reason::Startup);
        }
    }

    /// Shutdown event: a master sends priority 0; then Initialize.
    ///
    /// Every timer is cancelled. A no-op in [`State::Initialize`]; call
    /// [`Instance::startup`] to run again.
    pub fn shutdown(&mut self, now: Instant) {
        self.running = false;
        self.leave(now);
    }

    /// Enters or leaves fault, as keepalived's FAULT state: something this
    /// router depends on (a tracked uplink, a health check) is down, so it
    /// must not hold the virtual addresses.
    ///
    /// Entering fault acts as [`Instance::shutdown`]: a master sends one
    /// advert with priority 0, so that a backup takes over at once (after
    /// Skew_Time, or at once with [`Config::pair_handoff`]), and the
    /// instance goes to [`State::Initialize`] (the driver removes the
    /// virtual addresses). While in fault it sends nothing, ignores
    /// adverts and never contends: [`Instance::startup`] only remembers to
    /// start. Leaving fault starts the instance again as
    /// [`Instance::startup`] does (Backup, or Master for the owner), if it
    /// was started and not shut down. Setting the state it is already in
    /// is a no-op. The address owner (priority 255) enters fault too.
    pub fn set_fault(&mut self, now: Instant, fault: bool) {
        if fault == self.fault {
            return;
        }
        self.fault = fault;
        if fault {
            self.leave(now);
        } else if self.running {
            self.startup(now);
        }
    }

    /// Whether the instance is in fault (see [`Instance::set_fault`]).
    pub fn in_fault(&self) -> bool {
        self.fault
    }

    /// A master's priority-0 advert, then Initialize with no timer running.
    fn leave(&mut self, _now: Instant) {
        match self.state {
            State::Initialize => return,
            // RFC 9568 §6.4.3: "Cancel the Adver_Timer, Send an ADVERTISEMENT
            // with Priority = 0, Transition to the {Initialize state}".
            State::Master => self.transmit(LEAVING),
            State::Backup => {}
        }
        // Nothing confirmed a held advert before we stopped.
        self.discard_held();
        self.timers.stop_all();
        self.master = None;
        self.down_reason = Reason::MasterDown;
        self.state = State::Initialize;
        self.counters.became_initialize += 1;
        self.events.push_back(Event::BecomeInitialize);
    }

    /// A datagram as received from a raw IPv4 socket (IP header included).
    ///
    /// A datagram that fails validation is counted under its
    /// [`DropReason`] and changes nothing else; an exact echo of our own
    /// advert (a multicast loopback) is ignored without being counted.
    /// While the peer's claim is valid, an advert from the peer may also be
    /// dropped as contradicted or held (see [`Instance::set_peer_claim`]).
    /// Never panics, whatever the bytes.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        let (src, advert) = match self.validate(datagram) {
            Ok(Some(accepted)) => accepted,
            Ok(None) => return,
            Err(reason) => {
                self.counters.drop(reason);
                return;
            }
        };
        // Judged in Initialize too, where an advert changes nothing: what
        // is accepted there is what a master that just left counts as its
        // successor (the driver keeps the addresses until it hears one), so
        // a forgery in the peer's name must not count.
        if self.held.as_ref().is_some_and(|h| h.src == src) {
            // Superseded by a newer word from the same sender.
            self.discard_held();
        }
        match claim::verdict(self.peer_claim.as_ref(), now, src, advert.priority) {
            Verdict::Process => {}
            Verdict::Contradicted => {
                self.counters.drop(DropReason::Contradicted);
                return;
            }
            Verdict::Hold => {
                self.counters.adverts_held += 1;
                self.timers.set(Timer::Hold, now + self.advertisement_interval());
                self.held = Some(Held {
                    src,
                    advert,
                    received: now,
                });
                return;
            }
        }
        self.accept(now, src, &advert);
    }

    /// What the peer last said over the authenticated cluster link
    /// (`None`: nothing, or the link is gone). SPEC §9: "VRRP is the fast
    /// signal of who holds the VIP; the authenticated cluster link is the
    /// truth."
    ///
    /// While `claim` is valid (`now < claim.valid_until`), an advert from
    /// `claim.address` that passed every receive check is judged by it:
    ///
    /// - priority 0 while the claim does not say `leaving`, or a priority
    ///   other than `claim.priority`: contradicted, dropped and counted as
    ///   [`DropReason::Contradicted`], and nothing else changes;
    /// - the claim's priority while the claim says the peer is not master:
    ///   held, since the peer has most likely just become master and its
    ///   new claim is on its way. Only the most recent such advert is kept.
    ///   It changes nothing by itself. A later claim that agrees with it
    ///   releases it, acted on at that claim's `now`, if it is younger than
    ///   one Advertisement_Interval (ours: the peer cannot stretch it); a
    ///   claim that contradicts it discards it as contradicted; otherwise
    ///   the [`Timer::Hold`] discards it as contradicted when that interval
    ///   is up. The next advert from the same source supersedes it;
    /// - anything else is acted on as without claims.
    ///
    /// Without a valid claim for the source, nothing changes from plain
    /// VRRP: when the cluster link is down VRRP alone decides. In
    /// Initialize an advert changes no state, but it is judged all the
    /// same: only one that is accepted (at once, or released) is counted in
    /// [`Counters::adverts_received`], which is how a master that has just
    /// left tells that its successor is heard.
    pub fn set_peer_claim(&mut self, now: Instant, claim: Option<PeerClaim>) {
        self.peer_claim = claim;
        let Some(held) = self.held.take() else {
            return;
        };
        self.timers.stop(Timer::Hold);
        let deadline = held.received + self.advertisement_interval();
        let confirmed = claim.is_some_and(|c| c.covers(now, held.src));
        match claim::verdict(claim.as_ref(), now, held.src, held.advert.priority) {
            _ if now >= deadline => self.counters.drop(DropReason::Contradicted),
            Verdict::Contradicted => self.counters.drop(DropReason::Contradicted),
            Verdict::Process if confirmed => {
                self.counters.held_released += 1;
                self.accept(now, held.src, &held.advert);
            }
            // Still "not master", or no valid claim to decide with: only the
            // link can lift its own objection, so wait for it until the deadline.
            Verdict::Hold | Verdict::Process => {
                self.timers.set(Timer::Hold, deadline);
                self.held = Some(held);
            }
        }
    }

    /// The claim last given to [`Instance::set_peer_claim`], valid or not.
    pub fn peer_claim(&self) -> Option<&PeerClaim> {
        self.peer_claim.as_ref()
    }

    /// Whether an advert is held for the peer's next claim.
    pub fn holds_advert(&self) -> bool {
        self.held.is_some()
    }

    /// Drops the held advert, unconfirmed.
    fn discard_held(&mut self) {
        if self.held.take().is_some() {
            self.timers.stop(Timer::Hold);
            self.counters.drop(DropReason::Contradicted);
        }
    }

    /// Acts on an advert that passed every check.
    fn accept(&mut self, now: Instant, src: Ipv4Addr, advert: &Repr) {
        self.counters.adverts_received += 1;
        if advert.priority == LEAVING {
            self.counters.priority_zero_received += 1;
        }
        match self.state {
            State::Initialize => {}
            State::Backup => self.backup_advert(now, src, advert),
            State::Master => self.master_advert(now, src, advert),
        }
    }

    /// A timer may have expired; a spurious call is a no-op.
    ///
    /// Every timer due at `now` fires, earliest first; a timer that a
    /// previous one cancelled does not.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.take_expired(now) {
            match (timer, self.state) {
                // RFC 9568 §6.4.3: "If the Adver_Timer fires, then: Send an
                // ADVERTISEMENT; Reset the Adver_Timer to Advertisement_Interval".
                (Timer::Adver, State::Master) => {
                    self.transmit(self.config.priority);
                    self.timers.set(Timer::Adver, now + self.advertisement_interval());
                }
                // RFC 9568 §6.4.2: "If the Master_Down_Timer fires, then: Send
                // an ADVERTISEMENT ... Transition to the {Master state}".
                (Timer::MasterDown, State::Backup) => {
                    self.become_master(now, self.down_reason);
                }
                (Timer::Preempt, State::Backup) => self.become_master(now, Reason::Preempt),
                // No claim confirmed the held advert within an interval.
                (Timer::Hold, _) => self.discard_held(),
                // Election timers are cleared on every state change, so one
                // never outlives the state that armed it; nothing to do if
                // one did.
                _ => {}
            }
        }
    }

    /// Changes the local priority at run time (1..=254; ignored otherwise).
    ///
    /// Ignored for the address owner (configured priority 255), whose
    /// priority is fixed. Skew_Time and Master_Down_Interval follow the new
    /// priority from now on, but no running timer is touched:
    ///
    /// - a master keeps advertising on schedule, with the new priority from
    ///   its next advert on; if that is now below a backup's that preempts,
    ///   the backup takes over when its Master_Down_Timer expires;
    /// - a backup keeps its Master_Down_Timer; the new priority decides how
    ///   the next advert is treated (RFC 9568 §6.4.2). The one exception is a
    ///   pending preempt-delay timer, cancelled when the new priority no
    ///   longer outranks the master's last advert, so that the backup does not
    ///   take over from a master it would now follow.
    pub fn set_priority(&mut self, _now: Instant, priority: u8) {
        if !(1..OWNER).contains(&priority) || self.config.priority == OWNER {
            return;
        }
        self.config.priority = priority;
        if let (State::Backup, Some(master)) = (self.state, self.master) {
            if master.priority >= priority {
                self.timers.stop(Timer::Preempt);
            }
        }
    }

    /// The earliest instant at which [`Instance::handle_timeout`] must be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// The next output, in order.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The configuration in force (priority reflects [`Instance::set_priority`]).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The deadline of one timer, if armed (for status displays and tests).
    pub fn timer(&self, timer: Timer) -> Option<Instant> {
        self.timers.get(timer)
    }

    /// Whether the virtual addresses should accept traffic now: master and
    /// (owner or Accept_Mode).
    pub fn accepts_vip_traffic(&self) -> bool {
        self.state == State::Master && (self.config.priority == OWNER || self.config.accept_mode)
    }

    /// Master_Adver_Interval as currently learned.
    ///
    /// v3: the interval of the master's last accepted advert while backup,
    /// our own Advertisement_Interval after startup and while master. v2:
    /// always the configured interval, which every router must share.
    pub fn master_adver_interval(&self) -> Duration {
        cs_to_duration(self.master_adver_interval_cs)
    }

    /// Skew_Time for the current priority and Master_Adver_Interval.
    ///
    /// v3 (RFC 9568 §6.1): `((256 - Priority) * Master_Adver_Interval) / 256`,
    /// computed in nanoseconds rather than centiseconds so that no precision
    /// is lost. v2 (RFC 3768 §6.1): `(256 - Priority) / 256` seconds.
    pub fn skew_time(&self) -> Duration {
        let weight = 256 - u64::from(self.config.priority);
        let unit_ns = match self.config.version {
            Version::V2 => 1_000_000_000,
            _ => u64::from(self.master_adver_interval_cs) * 10_000_000,
        };
        Duration::from_nanos(weight * unit_ns / 256)
    }

    /// Master_Down_Interval: `3 * Master_Adver_Interval + Skew_Time`.
    pub fn master_down_interval(&self) -> Duration {
        3 * self.master_adver_interval() + self.skew_time()
    }

    /// The address of the master as last seen (ourselves when master).
    ///
    /// `None` in [`State::Initialize`] and for a backup that has not yet
    /// accepted an advertisement.
    pub fn master_address(&self) -> Option<Ipv4Addr> {
        match self.state {
            State::Master => Some(self.config.primary_address),
            State::Backup => self.master.map(|m| m.src),
            State::Initialize => None,
        }
    }

    /// Our own Advertisement_Interval.
    fn advertisement_interval(&self) -> Duration {
        cs_to_duration(self.config.advert_interval_cs)
    }

    /// Queues an advertisement with `priority`.
    fn transmit(&mut self, priority: u8) {
        self.counters.adverts_sent += 1;
        if priority == LEAVING {
            self.counters.priority_zero_sent += 1;
        }
        self.events.push_back(Event::Transmit(Repr {
            version: self.config.version,
            vrid: self.config.vrid,
            priority,
            interval_cs: self.config.advert_interval_cs,
            addresses: self.config.addresses.clone(),
            auth: self.config.auth,
        }));
    }

    /// Stops the RFC's timers; a held advert keeps its own deadline.
    fn stop_election_timers(&mut self) {
        for timer in Timer::ELECTION {
            self.timers.stop(timer);
        }
    }

    /// Advertises and enters Master, with only the Adver_Timer running.
    fn become_master(&mut self, now: Instant, reason: Reason) {
        self.transmit(self.config.priority);
        self.stop_election_timers();
        self.timers.set(Timer::Adver, now + self.advertisement_interval());
        // A master advertises, and so runs on, its own interval.
        self.master_adver_interval_cs = self.config.advert_interval_cs;
        self.down_reason = Reason::MasterDown;
        self.master = None;
        self.state = State::Master;
        self.counters.became_master += 1;
        self.events.push_back(Event::BecomeMaster(reason));
    }

    /// Enters Backup with only the Master_Down_Timer running, from the
    /// Master_Adver_Interval already in force.
    fn become_backup(&mut self, now: Instant, reason: Reason) {
        self.stop_election_timers();
        self.timers
            .set(Timer::MasterDown, now + self.master_down_interval());
        self.down_reason = Reason::MasterDown;
        self.state = State::Backup;
        self.counters.became_backup += 1;
        self.events.push_back(Event::BecomeBackup(reason));
    }

    /// RFC 9568 §6.4.2: the Backup state's handling of an accepted advert.
    fn backup_advert(&mut self, now: Instant, src: Ipv4Addr, advert: &Repr) {
        self.master = Some(Seen {
            src,
            priority: advert.priority,
        });
        // "If the Priority in the ADVERTISEMENT is zero, then: Set the
        // Master_Down_Timer to Skew_Time".
        if advert.priority == LEAVING {
            self.down_reason = Reason::MasterLeft;
            if self.config.pair_handoff {
                // The only backup of a pair has no higher backup to defer to.
                self.become_master(now, Reason::MasterLeft);
            } else {
                self.timers.set(Timer::MasterDown, now + self.skew_time());
            }
            return;
        }
        // "If Preempt_Mode is False, or if the Priority in the ADVERTISEMENT
        // is greater than or equal to the local Priority, then: ..."
        if !self.config.preempt || advert.priority >= self.config.priority {
            self.timers.stop(Timer::Preempt);
            self.follow(now, advert);
        } else if !self.config.preempt_delay.is_zero() {
            // We outrank the master but hold back for the preempt delay:
            // follow it as if preemption were off until the Preempt timer fires.
            if !self.timers.is_armed(Timer::Preempt) {
                self.timers.set(Timer::Preempt, now + self.config.preempt_delay);
            }
            self.follow(now, advert);
        } else {
            // "Else: Discard the ADVERTISEMENT": the Master_Down_Timer keeps
            // running and we take over when it expires, from a master that
            // is alive: a preemption, not a master that went down.
            self.down_reason = Reason::Preempt;
        }
    }

    /// Learns the master's interval (v3) and restarts the Master_Down_Timer.
    fn follow(&mut self, now: Instant, advert: &Repr) {
        self.learn_interval(advert);
        self.timers
            .set(Timer::MasterDown, now + self.master_down_interval());
        self.down_reason = Reason::MasterDown;
    }

    /// RFC 9568 §6.4.2: "Set Master_Adver_Interval to Adver Interval
    /// contained in the ADVERTISEMENT". v2 has no such step (RFC 3768 §6.4.2);
    /// its interval was already checked equal to ours.
    fn learn_interval(&mut self, advert: &Repr) {
        if self.config.version == Version::V3 {
            self.master_adver_interval_cs = advert.interval_cs;
        }
    }

    /// RFC 9568 §6.4.3: the Master state's handling of an accepted advert.
    fn master_advert(&mut self, now: Instant, src: Ipv4Addr, advert: &Repr) {
        let local = self.config.priority;
        if advert.priority == LEAVING {
            // "Send an ADVERTISEMENT; Reset the Adver_Timer to
            // Advertisement_Interval".
            self.transmit(local);
            self.timers.set(Timer::Adver, now + self.advertisement_interval());
        } else if advert.priority > local
            || (advert.priority == local && u32::from(src) > u32::from(self.config.primary_address))
        {
            // "Cancel Adver_Timer; Set Master_Adver_Interval to Adver Interval
            // contained in the ADVERTISEMENT; Recompute the Skew_Time;
            // Recompute the Master_Down_Interval; Set Master_Down_Timer to
            // Master_Down_Interval; Transition to the {Backup state}".
            self.learn_interval(advert);
            self.master = Some(Seen {
                src,
                priority: advert.priority,
            });
            self.become_backup(now, Reason::HigherPriority);
        }
        // Else: "Discard the ADVERTISEMENT".
    }

    /// The receive checks: who sent it, then RFC 9568 §7.1 / RFC 3768 §7.1
    /// in order.
    ///
    /// `Ok(None)` for our own looped-back advert, `Ok(Some)` for one to act
    /// on, `Err` with the reason to count otherwise.
    fn validate(&self, datagram: &[u8]) -> Result<Option<(Ipv4Addr, Repr)>, DropReason> {
        let ip = ipv4::parse(datagram).map_err(|_| DropReason::Ip)?;
        if ip.protocol != wire::IP_PROTOCOL {
            return Err(DropReason::Ip);
        }
        if ip.src == self.config.primary_address {
            // Our driver's socket does not loop multicast back, but another
            // driver may: an exact echo of what we send is indistinguishable
            // from one and can change nothing, so it is neither an advert nor
            // a drop. Anything else from our own address is a forgery.
            return match self.check_advert(&ip) {
                Ok(advert) if self.is_own_echo(&advert) => Ok(None),
                _ => Err(DropReason::OwnAddress),
            };
        }
        // Before any parsing: an untrusted sender is reported as such, not
        // as whatever is wrong with its bytes.
        if !self.source_trusted(ip.src) {
            return Err(DropReason::UnknownPeer);
        }
        let advert = self.check_advert(&ip)?;
        // Only the owner advertises from a virtual address (RFC 9568 §1.2:
        // the owner's real address is the virtual one, and it alone sends
        // priority 255); any other advert from one is a forgery of
        // whichever router holds it.
        if self.addresses.contains(&ip.src) && advert.priority != OWNER {
            return Err(DropReason::OwnAddress);
        }
        Ok(Some((ip.src, advert)))
    }

    /// Whether adverts from `src` may be considered at all: every
    /// non-empty filter (trusted sources, unicast peers) must list it.
    fn source_trusted(&self, src: Ipv4Addr) -> bool {
        let listed = |list: &[Ipv4Addr]| list.is_empty() || list.contains(&src);
        listed(&self.config.trusted_sources) && listed(&self.config.unicast_peers)
    }

    /// Whether `advert` is exactly what we would send ourselves (our
    /// priority, or priority 0 as we leave; the VRID, addresses and v2
    /// authentication were checked already).
    fn is_own_echo(&self, advert: &Repr) -> bool {
        (advert.priority == self.config.priority || advert.priority == LEAVING)
            && advert.interval_cs == self.config.advert_interval_cs
    }

    /// RFC 9568 §7.1 / RFC 3768 §7.1 checks of the datagram's content, in order.
    fn check_advert(&self, ip: &ipv4::Received<'_>) -> Result<Repr, DropReason> {
        // "MUST verify that the IP TTL is 255".
        if ip.ttl != wire::TTL {
            return Err(DropReason::Ttl);
        }
        let packet = Packet::new_checked(ip.payload).map_err(wire_drop)?;
        // "MUST verify the VRRP version": before the checksum, whose form
        // depends on the version.
        if packet.version() != self.config.version {
            return Err(DropReason::Version);
        }
        let checksum = match (self.config.version, self.config.v3_checksum) {
            (Version::V3, V3Checksum::PseudoHeader) => Checksum::PseudoHeader {
                src: ip.src,
                dst: ip.dst,
            },
            _ => Checksum::MessageOnly,
        };
        let advert = Repr::parse(&packet, checksum).map_err(wire_drop)?;
        // "MUST verify that the VRID is configured on the receiving interface".
        if advert.vrid != self.config.vrid {
            return Err(DropReason::Vrid);
        }
        if self.config.version == Version::V2 {
            // RFC 3768 §7.1: "MUST perform authentication specified by Auth
            // Type" and "MUST verify that the Adver Interval in the VRRP
            // packet is the same as the locally configured for this virtual
            // router".
            if advert.auth != self.config.auth {
                return Err(DropReason::Auth);
            }
            if advert.interval_cs != self.config.advert_interval_cs {
                return Err(DropReason::Interval);
            }
        }
        // Stricter than RFC 9568 §7.1, which lets an owner's (priority 255)
        // advert through with a differing list: a mismatch is always a
        // configuration error worth surfacing, and acting on it would have
        // two routers disagree on which addresses move.
        let received: BTreeSet<Ipv4Addr> = advert.addresses.iter().copied().collect();
        if received != self.addresses {
            return Err(DropReason::AddressList);
        }
        Ok(advert)
    }
}

/// The drop reason for a codec error.
fn wire_drop(error: wire::Error) -> DropReason {
    match error {
        wire::Error::Truncated { .. } | wire::Error::Length { .. } => DropReason::Length,
        wire::Error::Version(_) => DropReason::Version,
        wire::Error::Type(_) => DropReason::Type,
        wire::Error::Checksum => DropReason::Checksum,
        wire::Error::Vrid => DropReason::Vrid,
        wire::Error::NoAddresses => DropReason::Malformed,
        wire::Error::Interval => DropReason::Interval,
        wire::Error::AuthType(_) => DropReason::Auth,
    }
}

fn cs_to_duration(cs: u16) -> Duration {
    Duration::from_millis(u64::from(cs) * 10)
}
