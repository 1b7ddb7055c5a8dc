//! The pair's rules as a sans-IO state machine: who serves, when to take
//! over as sole voter, which VRRP priority to advertise, whom raft should
//! prefer as leader, when to bring this server's keys and settings to the
//! table. [`PairRules`] is fed facts with the time they were seen
//! (`handle_vrrp`, `handle_transition`, `handle_raft`, `takeover_result`,
//! `keys_done`, `set_base_priority`, `stop`, `handle_timeout`) and answers
//! with [`Action`]s (`poll_action`) and its next deadline (`poll_timeout`).
//! It reads no clock, awaits nothing and touches no socket: the node's glue
//! (`Glue::run` in `node`) feeds it and carries out what it asks, in order.
//!
//! # The rules
//!
//! - A node answers license requests (`serving`) exactly while it is VRRP
//!   master *and* raft leader, and only on the VIP (the server's gate). When
//!   serving ends, the server closes its client connections so that clients
//!   reconnect to the new holder.
//! - Leadership follows the VIP: each member names the VRRP master as its
//!   preferred raft leader, so a leader that lost the VIP hands leadership to
//!   the new master as soon as the master's log is caught up.
//! - A VRRP master without a witness takes over as sole voter when VRRP says
//!   the peer is gone: it sent priority 0 (at once once this node leads, or
//!   no longer sees the peer lead), its adverts stopped after this node had
//!   followed it (once raft sees no leader either, for half an election
//!   timeout), or no raft leader has been seen for two election timeouts
//!   (the peer stopped or lost its raft link). The last two need the
//!   peer's word (its beacon over the cluster link) to have lapsed, or to
//!   say it is behind (the lowest priority: not in sync, rebuilding or a
//!   learner, so refused a takeover): a peer in sync whose word is fresh
//!   runs and reaches this node over the cluster link, so VRRP's silence
//!   is the segment's and raft elects over the link; both taking over then
//!   would make two sole voters that can both commit (S1, S2). A new word
//!   from such a peer, after it left or fell silent, makes that evidence
//!   stale. A refused takeover (this
//!   node's log cannot be shown complete) is logged at error level (at once
//!   for a new reason, then once a minute with the count of retries) and
//!   retried when the facts change, never forced. With a witness there is
//!   no takeover: raft elects, and the preferred leader brings leadership
//!   to the VIP holder.
//! - While this node has not caught up with the log since it started, or
//!   is not a voter, it advertises the lowest VRRP priority
//!   ([`BEHIND_PRIORITY`]), so a restarted primary never preempts with a
//!   stale table. Otherwise it advertises its base priority: the
//!   configured one, or what [`PairRules::set_base_priority`] last set.
//! - Serving flips in the round that makes it true: a takeover's outcome
//!   comes with the facts it made (sole voter, leader).
//! - Graceful stop (carried out by `node::run` after [`PairRules::stop`]):
//!   stop serving (connections close), let requests in flight commit and be
//!   answered, hand the VIP over (priority-0 advert: the peer takes over at
//!   once with `vrrp.pair_handoff`), hand raft leadership to the peer, and
//!   stop the member as soon as the peer leads. The peer, on the priority-0
//!   evidence, takes over as sole voter (this node is now a learner) and
//!   commits alone; when this node returns it catches up and is promoted
//!   back.
//! - Each server keeps its own license keys (`license.key_files`, verified
//!   against `node.serial` at start) in the table, and its serial with
//!   them (see `keys`): the VIP holder proposes its changes, the other
//!   server submits its own to the leader; at once when it starts serving,
//!   then every [`KEY_CHECK`] while it serves or follows a leader, one
//!   round at a time.
//! - The table's settings are the log's, the same on every member (see
//!   `settings`): the VIP holder proposes its configured ones when they
//!   differ; another server whose configuration differs says so. They are
//!   compared when serving or in-sync changes and every [`SETTINGS_CHECK`].
//! - The raft log says the peer is a learner (this node took over): this
//!   node stands in for the peer's word to VRRP (see `beacon`).

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use cluster::raft::StateRole;
use vrrp::proto::{Reason, State};

use super::notify::Event;

/// The lowest priority a backup may advertise: what a node that is not
/// caught up uses, so that it never preempts.
pub const BEHIND_PRIORITY: u8 = 1;

/// How often a server compares its keys in the table with its configuration.
pub(crate) const KEY_CHECK: Duration = Duration::from_secs(2);

/// How often a server compares its table settings with the pair's.
pub(crate) const SETTINGS_CHECK: Duration = Duration::from_millis(500);

/// How long a refused takeover with the same reason is not logged again.
const REFUSAL_LOG: Duration = Duration::from_secs(60);

/// What the rules are built with.
#[derive(Debug, Clone)]
pub(crate) struct RulesConfig {
    /// This member's raft id.
    pub(crate) me: u64,
    /// The other server's.
    pub(crate) peer: u64,
    /// A witness votes: no takeover as sole voter.
    pub(crate) has_witness: bool,
    /// The configured VRRP priority (what the speaker starts with).
    pub(crate) priority: u8,
    /// Raft's election timeout (ticks times tick length).
    pub(crate) election_timeout: Duration,
    /// VRRP preempts (`vrrp.preempt`, the same on both servers): a peer
    /// that outranks this master takes the VIP back, so this node hands
    /// it back first (see [`Action::HandBack`]).
    pub(crate) preempt: bool,
}

/// The peer's own word over the authenticated cluster link (its beacon),
/// while it is fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerWord {
    /// It is VRRP master.
    pub(crate) master: bool,
    /// The priority it advertises.
    pub(crate) priority: u8,
    /// It is leaving (stopping, or in fault).
    pub(crate) leaving: bool,
}

impl PeerWord {
    /// The peer is staying and advertises more than [`BEHIND_PRIORITY`]:
    /// a voter in sync, which could take over as sole voter itself. A
    /// peer that is behind, rebuilding or a learner advertises the lowest
    /// priority and is refused a takeover (not in sync): this node taking
    /// over leaves no second sole voter.
    fn could_take_over(self) -> bool {
        !self.leaving && self.priority > BEHIND_PRIORITY
    }
}

/// What the rules read of the VRRP speaker's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VrrpFacts {
    pub(crate) state: State,
    /// The master as last seen.
    pub(crate) master: Option<Ipv4Addr>,
    /// This node's own address (a master that is not the peer).
    pub(crate) own: Ipv4Addr,
    /// Adverts accepted.
    pub(crate) adverts_received: u64,
    /// Priority-0 adverts accepted (the master leaves).
    pub(crate) priority_zero_received: u64,
}

impl VrrpFacts {
    /// A backup that hears a master other than itself.
    fn peer_is_master(&self) -> bool {
        self.state == State::Backup && self.master.is_some_and(|m| m != self.own)
    }
}

impl From<&vrrp::sys::Status> for VrrpFacts {
    fn from(s: &vrrp::sys::Status) -> Self {
        VrrpFacts {
            state: s.state,
            master: s.master,
            own: s.primary_address,
            adverts_received: s.counters.adverts_received,
            priority_zero_received: s.counters.priority_zero_received,
        }
    }
}

/// What the rules read of the cluster member (pushed on its watch, see
/// `cluster::Leadership`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct RaftFacts {
    pub(crate) role: StateRole,
    /// The leader this member knows of (0 or none: none).
    pub(crate) leader: Option<u64>,
    pub(crate) term: u64,
    /// This member's log is known to be complete.
    pub(crate) in_sync: bool,
    pub(crate) voters: Vec<u64>,
    pub(crate) learners: Vec<u64>,
}

impl From<&cluster::Leadership> for RaftFacts {
    fn from(l: &cluster::Leadership) -> Self {
        RaftFacts {
            role: l.role,
            leader: l.leader,
            term: l.term,
            in_sync: l.in_sync,
            voters: l.voters.clone(),
            learners: l.learners.clone(),
        }
    }
}

/// What the glue must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Start or stop answering license requests. Stopping: `why` says why
    /// not. Starting after the peer held the VIP: `why` is how this node
    /// took over and `gap` how long since the peer was last heard holding it.
    Serve {
        serve: bool,
        why: Option<&'static str>,
        gap: Option<Duration>,
    },
    /// VRRP master, not serving yet, leadership on its way: hold requests
    /// to the VIP rather than refuse them.
    SoonServing(bool),
    /// Name the member raft should prefer as leader.
    PreferLeader(Option<u64>),
    /// Take over as sole voter (not forced); answer with
    /// [`PairRules::takeover_result`].
    TakeOverAsSoleVoter,
    /// The takeover was done (for the log).
    TookOver,
    /// The takeover was refused: log it at error level (rate-limited here).
    TakeoverRefused {
        reason: String,
        retries: u64,
    },
    /// Advertise this VRRP priority: the base one when `caught_up`, else
    /// the lowest; `in_sync` and `voter` say why.
    SetPriority {
        priority: u8,
        caught_up: bool,
        in_sync: bool,
        voter: bool,
    },
    /// Tell the peer our VRRP state over the cluster link (before the
    /// adverts that carry a new priority).
    /// Hand the VIP back to the peer as a graceful stop would, staying up
    /// (the old primary returned, caught up, and outranks this master): the
    /// glue lets requests in flight be answered while client connections
    /// close (serving already ended), tells the peer it leaves, has the
    /// speaker send priority 0 and give up the VIP, and contends again as a
    /// backup once the peer leads; then [`PairRules::handback_done`]. The
    /// peer's preemption would move the VIP anyway, but abruptly: a request
    /// sent as the VIP left this node was lost until a TCP retransmission.
    HandBack,
    /// The handback is over (the peer leads, or it did not within two
    /// election timeouts): the speaker contends again, as a backup.
    RejoinAsBackup,
    Beacon {
        master: bool,
        priority: u8,
    },
    /// The raft log says the peer is a learner (see `beacon`); until told
    /// otherwise, stand in for its word at every beacon refresh.
    PeerDemoted(bool),
    /// Bring this server's keys in the table to its files: propose when
    /// serving, submit to the leader otherwise; answer with
    /// [`PairRules::keys_done`]. `rounds`: rounds in a row that had
    /// something to change.
    SyncKeys {
        serve: bool,
        rounds: u32,
    },
    /// Compare this server's table settings with the pair's (see
    /// `settings::SettingsSync::step`).
    Settings {
        leads: bool,
        in_sync: bool,
    },
    /// Run the operator's `[notify]` script for `event`.
    Notify {
        event: Event,
        priority: u8,
        reason: Option<String>,
    },
}

/// VRRP's evidence that the peer is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerGone {
    /// It sent priority 0: a graceful stop.
    Left,
    /// Its adverts stopped (Master_Down_Interval): a crash, or a partition.
    Silent,
}

/// The rules' deadlines.
#[derive(Debug, Clone, Copy)]
enum Timer {
    /// A silent peer: half an election timeout without a leader.
    HalfElection,
    /// Two election timeouts without a leader.
    TwoElections,
    /// The next key check.
    Keys,
    /// The next settings check.
    Settings,
    /// A handback waits this long at most for the peer to lead.
    HandBack,
}

const TIMERS: usize = 5;

/// Where a handback is ([`Action::HandBack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandBack {
    /// Asked for: the glue drains and gives up the VIP.
    Asked,
    /// The VIP is given up (`handback_resigned`): leadership goes to the
    /// peer; once it leads, this node rejoins as a backup.
    Resigned,
}

/// This server's keys in the table.
#[derive(Debug, Default)]
struct KeyRounds {
    in_flight: bool,
    /// When the last round started.
    checked: Option<Instant>,
    /// Rounds in a row that had something to change.
    rounds: u32,
    /// Serving at the last round.
    serving: bool,
}

/// The pair's rules; see the module doc.
#[derive(Debug)]
pub(crate) struct PairRules {
    cfg: RulesConfig,
    /// The priority to advertise when caught up (configured, or set at run time).
    base: u8,
    /// The priority advertised now.
    advertised: u8,
    vrrp: Option<VrrpFacts>,
    raft: Option<RaftFacts>,
    actions: VecDeque<Action>,
    timers: [Option<Instant>; TIMERS],
    /// As a backup, a master (other than this node) was heard.
    followed_master: bool,
    /// Why this node became master, when VRRP says the peer is gone: its
    /// evidence, kept until the takeover is done.
    peer_left: Option<PeerGone>,
    /// Why this node last became VRRP master.
    became_master: Option<Reason>,
    /// Adverts and priority-0 adverts accepted, as last seen.
    heard: (u64, u64),
    /// When this node last heard the peer hold the VIP (an advert from it
    /// as master, or its priority-0 advert): where a takeover's gap starts.
    peer_served_at: Option<Instant>,
    /// Since when no raft leader is known.
    leaderless_since: Option<Instant>,
    /// The preferred leader this member was last told.
    preferred: Option<u64>,
    serving: bool,
    soon: bool,
    peer_demoted: bool,
    /// The beacon last published.
    beacon: Option<(bool, u8)>,
    /// A takeover asked for and not answered yet.
    takeover_pending: bool,
    /// The facts a takeover was last refused on: retried when they change.
    refused_on: Option<(VrrpFacts, RaftFacts)>,
    /// The last refused takeover: why, when it was logged, retries since.
    last_refusal: Option<(String, Instant, u64)>,
    keys: KeyRounds,
    /// The last settings check: when, and with what.
    settings: Option<(Instant, bool, bool)>,
    /// Stopping, or stopped on a failure: nothing more is decided.
    stopped: bool,
    /// In fault for a tracker (see [`PairRules::set_fault`]).
    faulted: bool,
    /// The peer's word, while fresh.
    peer_word: Option<PeerWord>,
    /// Handing the VIP back (see [`Action::HandBack`]).
    handing_back: Option<HandBack>,
}

impl PairRules {
    pub(crate) fn new(cfg: RulesConfig) -> Self {
        PairRules {
            base: cfg.priority,
            advertised: cfg.priority,
            cfg,
            vrrp: None,
            raft: None,
            actions: VecDeque::new(),
            timers: [None; TIMERS],
            followed_master: false,
            peer_left: None,
            became_master: None,
            heard: (0, 0),
            peer_served_at: None,
            leaderless_since: None,
            preferred: None,
            serving: false,
            soon: false,
            peer_demoted: false,
            beacon: None,
            takeover_pending: false,
            refused_on: None,
            last_refusal: None,
            keys: KeyRounds::default(),
            settings: None,
            stopped: false,
            faulted: false,
            peer_word: None,
            handing_back: None,
        }
    }

    /// The next action to carry out.
    #[must_use]
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call [`PairRules::handle_timeout`] next.
    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        self.timers.iter().flatten().min().copied()
    }

    /// Whether the peer is a learner in the raft log (see [`Action::PeerDemoted`]).
    pub(crate) fn peer_demoted(&self) -> bool {
        self.peer_demoted
    }

    /// A deadline passed (a spurious call is harmless).
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.round(now);
    }

    /// A VRRP state change. The status that comes with it is fed next with
    /// [`PairRules::handle_vrrp`], which decides.
    pub(crate) fn handle_transition(&mut self, to: State, reason: Option<Reason>) {
        self.peer_left = match (to, reason) {
            // The peer said it leaves (priority 0).
            (State::Master, Some(Reason::MasterLeft)) => Some(PeerGone::Left),
            // A master we followed fell silent. Silence at start-up, before
            // any master was seen, says nothing about the peer.
            (State::Master, Some(Reason::MasterDown)) if self.followed_master => Some(PeerGone::Silent),
            _ => None,
        };
        if to == State::Master {
            self.followed_master = false;
            self.became_master = reason;
        }
        let event = match to {
            State::Master => Event::Master,
            State::Backup => Event::Backup,
            // Initialize: the speaker stops; STOPPED or FAULT says why.
            State::Initialize => return,
        };
        self.actions.push_back(Action::Notify {
            event,
            priority: self.advertised,
            reason: reason.map(|r| format!("{r:?}")),
        });
    }

    /// The VRRP speaker's status, as it is now.
    pub(crate) fn handle_vrrp(&mut self, now: Instant, vrrp: VrrpFacts) {
        if vrrp.peer_is_master() {
            self.followed_master = true;
        }
        self.heard_from_peer(now, &vrrp);
        self.vrrp = Some(vrrp);
        self.round(now);
    }

    /// The member's facts, as they are now.
    pub(crate) fn handle_raft(&mut self, now: Instant, raft: RaftFacts) {
        self.raft = Some(raft);
        self.round(now);
    }

    /// The outcome of [`Action::TakeOverAsSoleVoter`] (`Err`: why it was
    /// refused), with the member's facts right after it.
    pub(crate) fn takeover_result(&mut self, now: Instant, result: Result<(), String>, raft: RaftFacts) {
        self.takeover_pending = false;
        self.raft = Some(raft);
        match result {
            Ok(()) => {
                self.actions.push_back(Action::TookOver);
                self.peer_left = None;
                self.last_refusal = None;
                self.refused_on = None;
            }
            Err(why) => {
                self.refused(now, why);
                self.refused_on = self.vrrp.clone().zip(self.raft.clone());
            }
        }
        self.round(now);
    }

    /// A round of [`Action::SyncKeys`] ended: `sent` changes, or `None` if
    /// it failed before it could say.
    pub(crate) fn keys_done(&mut self, now: Instant, sent: Option<usize>) {
        self.keys.in_flight = false;
        if let Some(sent) = sent {
            self.keys.rounds = if sent == 0 { 0 } else { self.keys.rounds + 1 };
        }
        self.round(now);
    }

    /// The priority to advertise when caught up changes at run time (a
    /// tracked interface went down or came back).
    pub(crate) fn set_base_priority(&mut self, now: Instant, priority: u8) {
        if priority != self.base {
            self.base = priority;
            self.round(now);
        }
    }

    /// A tracker without a weight is down (`fault`) or no longer is: in
    /// fault the speaker has given up the VIP (see `node::track`), this
    /// member prefers the peer as leader, and publishes no beacon (its
    /// word to the peer is "leaving", said by the glue).
    pub(crate) fn set_fault(&mut self, now: Instant, fault: bool) {
        if fault != self.faulted {
            self.faulted = fault;
            // Once it clears, the peer hears our word again.
            self.beacon = None;
            self.round(now);
        }
    }

    /// The peer's word over the cluster link changed (or lapsed: `None`).
    pub(crate) fn handle_peer_word(&mut self, now: Instant, word: Option<PeerWord>) {
        if word != self.peer_word {
            // A new word from a peer that is not leaving, after VRRP said it
            // left or fell silent: it is back (restarted, or the segment
            // healed), and that evidence is stale. (The word it sent before
            // it went does not change; it only lapses.)
            if word.is_some_and(PeerWord::could_take_over) && self.peer_left.is_some() {
                self.peer_left = None;
            }
            self.peer_word = word;
            self.round(now);
        }
    }

    /// The handback's VIP is given up (the speaker sent priority 0 and is
    /// silent): leadership goes to the peer; [`Action::RejoinAsBackup`]
    /// follows once it leads, or after two election timeouts.
    pub(crate) fn handback_resigned(&mut self, now: Instant) {
        if self.handing_back == Some(HandBack::Asked) {
            self.handing_back = Some(HandBack::Resigned);
            self.timers[Timer::HandBack as usize] = Some(now + 2 * self.cfg.election_timeout);
            self.round(now);
        }
    }

    /// The priority advertised now.
    pub(crate) fn advertised(&self) -> u8 {
        self.advertised
    }

    /// The node stops gracefully: nothing is coming any more. Serving ends
    /// in `node::run`'s graceful stop, in its own order.
    pub(crate) fn stop(&mut self) {
        self.stopped = true;
        self.soon = false;
        self.actions.push_back(Action::SoonServing(false));
    }

    /// A part the rules depend on failed (`why`: the cluster member or the
    /// VRRP speaker stopped): stop serving, decide nothing more.
    pub(crate) fn failed(&mut self, now: Instant, why: &'static str) {
        self.set_serving(now, false, why);
        self.stop();
    }

    /// Notes when the peer was last heard holding the VIP: a new advert
    /// from it as master, or its priority-0 advert (it leaves now).
    fn heard_from_peer(&mut self, now: Instant, vrrp: &VrrpFacts) {
        let heard = (vrrp.adverts_received, vrrp.priority_zero_received);
        if heard == self.heard {
            return;
        }
        let left = heard.1 != self.heard.1;
        self.heard = heard;
        if left || vrrp.peer_is_master() {
            self.peer_served_at = Some(now);
        }
    }

    /// Logs a refused takeover: at once for a new reason, then once a
    /// minute with the count of retries in between.
    fn refused(&mut self, now: Instant, why: String) {
        match &mut self.last_refusal {
            Some((last, at, retries)) if *last == why && now.saturating_duration_since(*at) < REFUSAL_LOG => {
                *retries += 1
            }
            _ => {
                let retries = self
                    .last_refusal
                    .as_ref()
                    .filter(|(last, ..)| *last == why)
                    .map_or(0, |r| r.2);
                self.actions.push_back(Action::TakeoverRefused {
                    reason: why.clone(),
                    retries,
                });
                self.last_refusal = Some((why, now, 0));
            }
        }
    }

    /// Decides everything again from the facts as they are at `now`.
    fn round(&mut self, now: Instant) {
        if self.stopped {
            return;
        }
        let (Some(vrrp), Some(raft)) = (self.vrrp.clone(), self.raft.clone()) else {
            return;
        };
        let master = vrrp.state == State::Master;
        let me = self.cfg.me;
        let voter = raft.voters.contains(&me);
        let sole = raft.voters == [me];

        // Leadership follows the VIP: the master prefers itself, a backup
        // the master it hears. Without a master, raft elects freely (two
        // backups each preferring the other would bounce leadership).
        let to_peer = if master {
            // Once the VIP is given up, whether or not the speaker's
            // status says so yet: the peer is master or about to be, and
            // holds its clients' requests until it leads.
            self.handing_back == Some(HandBack::Resigned)
        } else {
            // The master it hears; and in fault, or handing back, this
            // node cannot serve: leadership goes to the peer, which takes
            // the VIP.
            vrrp.peer_is_master() || self.faulted || self.handing_back.is_some()
        };
        let preferred = if to_peer {
            Some(self.cfg.peer)
        } else if master {
            Some(me)
        } else {
            None
        };
        if self.preferred != preferred {
            self.preferred = preferred;
            self.actions.push_back(Action::PreferLeader(preferred));
        }

        self.takeover(now, &vrrp, &raft, master, sole, voter);
        if sole {
            // Already alone: once the peer is back as a voter, it is not gone.
            self.peer_left = None;
        }

        // The raft log says the peer is a learner: its adverts cannot be
        // genuine at more than the lowest priority (see `beacon`).
        let peer_demoted = raft.learners.contains(&self.cfg.peer) && voter;
        if peer_demoted != self.peer_demoted {
            self.peer_demoted = peer_demoted;
            self.actions.push_back(Action::PeerDemoted(peer_demoted));
        }

        // A node behind the log never outranks the one that has it, and a
        // learner (the peer took over as sole voter and has not promoted
        // it back yet) cannot lead: holding the VIP it could not serve.
        let want = if (raft.in_sync && voter) || sole {
            self.base
        } else {
            BEHIND_PRIORITY.min(self.base)
        };
        let mut new_priority = None;
        if want != self.advertised && self.base != 255 {
            self.advertised = want;
            new_priority = Some(Action::SetPriority {
                priority: want,
                caught_up: want == self.base,
                in_sync: raft.in_sync,
                voter,
            });
        }

        // The old primary returned, caught up and a voter again, and
        // outranks this master: hand the VIP back before it preempts.
        let peer_outranks = self.peer_word.is_some_and(|w| {
            !w.master && !w.leaving && w.priority > self.advertised && w.priority > BEHIND_PRIORITY
        });
        let hand_back = self.cfg.preempt
            && master
            && raft.role == StateRole::Leader
            && raft.voters.contains(&self.cfg.peer)
            && peer_outranks
            && !self.faulted
            && self.handing_back.is_none();
        if hand_back {
            self.handing_back = Some(HandBack::Asked);
        }
        let rejoin = self.handing_back == Some(HandBack::Resigned)
            && (raft.leader == Some(self.cfg.peer)
                || self.timers[Timer::HandBack as usize].is_some_and(|at| now >= at));
        if rejoin {
            self.handing_back = None;
            self.timers[Timer::HandBack as usize] = None;
            // The peer hears our word again.
            self.beacon = None;
            // We handed the VIP to the peer and it leads: it holds the VIP
            // from now, whether or not its first advert has reached this
            // node yet (should it fail at once, that is where the gap of
            // the takeover starts, and it is a master this node followed).
            self.peer_served_at = Some(now);
            self.followed_master = true;
        }
        let handing_back = self.handing_back.is_some();
        let serve = master && raft.role == StateRole::Leader && !self.faulted && !handing_back;
        let why_not = if handing_back {
            "handing the VIP back to the peer (it outranks this node)"
        } else if self.faulted {
            "in fault (a tracker is down)"
        } else if master {
            "not the raft leader"
        } else {
            "lost the VIP (no longer VRRP master)"
        };
        self.set_serving(now, serve, why_not);
        self.settings_check(now, serve, raft.in_sync);
        // Leadership is on its way to this master (a handover, a takeover,
        // an election), unless its takeover was refused: then a refusal
        // tells clients more than a wait.
        let soon = master && !serve && voter && self.last_refusal.is_none() && !self.faulted && !handing_back;
        if soon != self.soon {
            self.soon = soon;
            self.actions.push_back(Action::SoonServing(soon));
        }
        // Both servers' keys belong in the pool, whichever leads: the VIP
        // holder proposes its own changes, the other server submits its
        // own to the leader (forwarded by raft).
        let follows = raft.leader.is_some_and(|l| l != 0 && l != me) && raft.role != StateRole::Leader;
        self.keys_check(now, serve, follows);
        // The peer hears of a change before the adverts that carry it. In
        // fault or handing back our word stays "leaving".
        if !self.faulted && !handing_back && self.beacon != Some((master, self.advertised)) {
            self.beacon = Some((master, self.advertised));
            self.actions.push_back(Action::Beacon {
                master,
                priority: self.advertised,
            });
        }
        self.actions.extend(new_priority);
        if hand_back {
            self.actions.push_back(Action::HandBack);
        }
        if rejoin {
            self.actions.push_back(Action::RejoinAsBackup);
        }
    }

    /// Takeover without a witness, on VRRP's evidence that the peer is
    /// gone: it left or fell silent (then as soon as the peer no longer
    /// leads here), or this master has seen no leader for two election
    /// timeouts (the peer stopped or lost its raft link).
    fn takeover(
        &mut self,
        now: Instant,
        vrrp: &VrrpFacts,
        raft: &RaftFacts,
        master: bool,
        sole: bool,
        voter: bool,
    ) {
        let no_leader = raft.leader.is_none() || raft.leader == Some(0);
        if !no_leader {
            self.leaderless_since = None;
        } else if self.leaderless_since.is_none() {
            self.leaderless_since = Some(now);
        }
        self.timers[Timer::HalfElection as usize] = None;
        self.timers[Timer::TwoElections as usize] = None;
        if !master || self.cfg.has_witness || sole || !voter {
            return;
        }
        let leaderless_for = self
            .leaderless_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        let et = self.cfg.election_timeout;
        let leads = raft.role == StateRole::Leader;
        let peer_leads = raft.leader == Some(self.cfg.peer);
        // Leaving without stopping (a handback, or a tracker's fault: its
        // word says "leaving, not master"): it stays a voter and hands
        // leadership over. Taking over as sole voter would demote it for
        // nothing, and leave no one to take over should this node fail
        // before it is promoted back. If it does not hand over, the
        // leaderless rule below still applies.
        let stays = self.peer_word.is_some_and(|w| w.leaving && !w.master);
        if stays && self.peer_left == Some(PeerGone::Left) && leads {
            self.peer_left = None;
        }
        // The peer's word is fresh (it is sent every advert interval and
        // holds for three): the peer runs and the cluster link carries
        // it. Silent adverts are then the segment's doing, and raft can
        // elect over the link; a takeover would leave two sole voters.
        let peer_heard = self.peer_word.is_some_and(PeerWord::could_take_over);
        let gone = match self.peer_left {
            // Leaving: it hands leadership over first, then stops.
            Some(PeerGone::Left) => !stays && (leads || !peer_leads),
            // Silent: gone once raft agrees it no longer leads. Being
            // elected normally needs its vote: then it is alive (this
            // node outranked it and preempted).
            // A transfer to this node also passes through a moment
            // without a leader: wait half an election timeout.
            Some(PeerGone::Silent) => !peer_heard && !leads && !peer_leads && leaderless_for >= et / 2,
            None => false,
        };
        if leads && self.peer_left == Some(PeerGone::Silent) {
            self.peer_left = None;
        }
        if let Some(since) = self.leaderless_since {
            let arm = |at: Instant| (at > now).then_some(at);
            if self.peer_left == Some(PeerGone::Silent) && !leads && !peer_leads {
                self.timers[Timer::HalfElection as usize] = arm(since + et / 2);
            }
            self.timers[Timer::TwoElections as usize] = arm(since + 2 * et);
        }
        let leaderless = !peer_heard && leaderless_for >= 2 * et;
        if !(gone || leaderless) || self.takeover_pending {
            return;
        }
        // A refusal is retried when the facts change, not in a loop.
        if self
            .refused_on
            .as_ref()
            .is_some_and(|(v, r)| v == vrrp && r == raft)
        {
            return;
        }
        self.takeover_pending = true;
        self.actions.push_back(Action::TakeOverAsSoleVoter);
    }

    /// Serves or stops serving; `why_not` says why not, when it stops.
    fn set_serving(&mut self, now: Instant, serve: bool, why_not: &'static str) {
        if serve == self.serving {
            return;
        }
        self.serving = serve;
        if !serve {
            self.actions.push_back(Action::Serve {
                serve,
                why: Some(why_not),
                gap: None,
            });
            self.actions.push_back(Action::Notify {
                event: Event::Stopped,
                priority: self.advertised,
                reason: Some(why_not.to_owned()),
            });
            return;
        }
        // A takeover when the peer was heard holding the VIP since this
        // node last served; the first start of a pair is none.
        let took_over = self.peer_served_at.take().map(|since| {
            let why = match self.became_master {
                Some(Reason::MasterLeft) => "the peer left (priority 0)",
                Some(Reason::MasterDown) => "the peer fell silent (Master_Down_Interval)",
                Some(Reason::Preempt) => "preempted the peer (higher priority)",
                _ => "the peer gave up raft leadership",
            };
            (now.saturating_duration_since(since), why)
        });
        self.actions.push_back(Action::Serve {
            serve,
            why: took_over.map(|t| t.1),
            gap: took_over.map(|t| t.0),
        });
        self.actions.push_back(Action::Notify {
            event: Event::Serving,
            priority: self.advertised,
            reason: took_over.map(|t| t.1.to_owned()),
        });
    }

    /// Settings are compared when serving or in-sync changes, and every
    /// [`SETTINGS_CHECK`].
    fn settings_check(&mut self, now: Instant, leads: bool, in_sync: bool) {
        let due = match self.settings {
            Some((at, l, s)) => {
                (l, s) != (leads, in_sync) || now.saturating_duration_since(at) >= SETTINGS_CHECK
            }
            None => true,
        };
        if due {
            self.settings = Some((now, leads, in_sync));
            self.actions.push_back(Action::Settings { leads, in_sync });
        }
        self.timers[Timer::Settings as usize] = self.settings.map(|(at, ..)| at + SETTINGS_CHECK);
    }

    /// A key round at once when this node starts serving, then every
    /// [`KEY_CHECK`] while it serves or follows a leader, one at a time. A
    /// round in flight when serving starts (one of a follower, which may
    /// have left keys waiting for the pair's issuers) is followed at once
    /// by a serving round when it ends.
    fn keys_check(&mut self, now: Instant, serve: bool, follows: bool) {
        let k = &mut self.keys;
        let started_serving = serve && !k.serving;
        if !serve {
            k.serving = false;
        }
        self.timers[Timer::Keys as usize] = None;
        if !(serve || follows) || k.in_flight {
            return;
        }
        k.serving = serve;
        if let Some(at) = k.checked.filter(|_| !started_serving) {
            if now.saturating_duration_since(at) < KEY_CHECK {
                self.timers[Timer::Keys as usize] = Some(at + KEY_CHECK);
                return;
            }
        }
        k.checked = Some(now);
        k.in_flight = true;
        self.actions.push_back(Action::SyncKeys {
            serve,
            rounds: k.rounds,
        });
    }
}

#[cfg(test)]
mod tests;
