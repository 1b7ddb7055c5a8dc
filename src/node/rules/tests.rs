//! Scripted runs of the rules: facts in at chosen times, actions out.
//! Each test quotes the SPEC (/work/shared/SPEC.md, in the repository
//! as the contract README follows) or README row it checks.

use super::*;

const ME: u64 = 1;
const PEER: u64 = 2;
const OWN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PEER_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const ET: Duration = Duration::from_millis(1000);
const PRIORITY: u8 = 100;
/// A peer caught up and promoted, advertising a priority above ours
/// (its configured 150): a serving node with preempt hands the VIP back.
const OUTRANKING: PeerWord = PeerWord {
    master: false,
    priority: 150,
    leaving: false,
};

/// One node's rules on a virtual clock, with the facts it was last fed.
struct Script {
    rules: PairRules,
    t0: Instant,
    now: Instant,
    vrrp: VrrpFacts,
    raft: RaftFacts,
}

impl Script {
    fn new(has_witness: bool) -> Script {
        let t0 = Instant::now();
        Script {
            rules: PairRules::new(RulesConfig {
                me: ME,
                peer: PEER,
                has_witness,
                priority: PRIORITY,
                election_timeout: ET,
                preempt: true,
            }),
            t0,
            now: t0,
            vrrp: VrrpFacts {
                state: State::Backup,
                master: None,
                own: OWN,
                adverts_received: 0,
                priority_zero_received: 0,
            },
            raft: RaftFacts {
                role: StateRole::Follower,
                leader: None,
                term: 1,
                in_sync: true,
                voters: vec![ME, PEER],
                learners: vec![],
            },
        }
    }

    /// A backup that follows the peer, VRRP master and raft leader.
    fn following(has_witness: bool) -> Script {
        let mut s = Script::new(has_witness);
        s.raft.leader = Some(PEER);
        s.feed_raft();
        s.vrrp.master = Some(PEER_ADDR);
        s.vrrp.adverts_received = 3;
        s.feed_vrrp();
        s.actions();
        s
    }

    /// A node that serves alone: master, leader, both voters.
    fn serving() -> Script {
        let mut s = Script::new(false);
        s.raft.role = StateRole::Leader;
        s.raft.leader = Some(ME);
        s.feed_raft();
        s.vrrp.state = State::Master;
        s.vrrp.master = Some(OWN);
        s.feed_vrrp();
        assert!(serves(&s.actions()), "a master and leader serves");
        s
    }

    fn at_ms(&mut self, ms: u64) {
        self.now = self.t0 + Duration::from_millis(ms);
    }

    fn feed_vrrp(&mut self) {
        self.rules.handle_vrrp(self.now, self.vrrp.clone());
    }

    /// This leader lost its quorum: a follower in the next term, with no
    /// leader seen.
    fn lose_leadership(&mut self) {
        self.raft.role = StateRole::Follower;
        self.raft.leader = None;
        self.raft.term += 1;
        self.feed_raft();
    }

    fn feed_raft(&mut self) {
        self.rules.handle_raft(self.now, self.raft.clone());
    }

    /// A VRRP transition and the status that comes with it.
    fn become_state(&mut self, to: State, reason: Reason) {
        self.vrrp.state = to;
        self.vrrp.master = match to {
            State::Master => Some(OWN),
            _ => self.vrrp.master,
        };
        self.rules.handle_transition(to, Some(reason));
        self.feed_vrrp();
    }

    /// Runs the rules' timers up to `ms`, as a driver would.
    fn run_until_ms(&mut self, ms: u64) -> Vec<Action> {
        let end = self.t0 + Duration::from_millis(ms);
        let mut out = self.actions();
        while let Some(at) = self.rules.poll_timeout().filter(|at| *at <= end) {
            assert!(at >= self.now, "a deadline in the past: the driver would spin");
            self.now = at;
            self.rules.handle_timeout(at);
            out.extend(self.actions());
        }
        self.now = end;
        out
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.rules.poll_action()).collect()
    }

    fn takeover_answer(&mut self, result: Result<(), String>) -> Vec<Action> {
        if result.is_ok() {
            self.raft = RaftFacts {
                role: StateRole::Leader,
                leader: Some(ME),
                term: self.raft.term + 1,
                in_sync: true,
                voters: vec![ME],
                learners: vec![PEER],
            };
        }
        self.rules.takeover_result(self.now, result, self.raft.clone());
        self.actions()
    }
}

fn serves(actions: &[Action]) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Serve { serve: true, .. }))
}

fn takes_over(actions: &[Action]) -> bool {
    actions.contains(&Action::TakeOverAsSoleVoter)
}

fn stops(actions: &[Action]) -> Option<&'static str> {
    actions.iter().find_map(|a| match a {
        Action::Serve {
            serve: false, why, ..
        } => *why,
        _ => None,
    })
}

fn priorities(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SetPriority { priority, .. } => Some(*priority),
            _ => None,
        })
        .collect()
}

// SPEC §6: "A server answers license requests only while it holds the
// VIP, and only on the VIP." Module doc: "A node answers license
// requests (`serving`) exactly while it is VRRP master *and* raft leader".
#[test]
fn only_the_master_that_leads_serves() {
    let mut s = Script::new(false);
    s.raft.role = StateRole::Leader;
    s.raft.leader = Some(ME);
    s.feed_raft();
    s.feed_vrrp();
    let a = s.actions();
    assert!(
        !serves(&a),
        "a raft leader that is a VRRP backup must not serve: {a:?}"
    );

    let mut s = Script::new(false);
    s.raft.leader = Some(PEER);
    s.feed_raft();
    s.become_state(State::Master, Reason::Preempt);
    let a = s.actions();
    assert!(!serves(&a), "a VRRP master that follows must not serve: {a:?}");
    // It holds requests instead: leadership is on its way.
    assert!(a.contains(&Action::SoonServing(true)), "{a:?}");

    s.raft.role = StateRole::Leader;
    s.raft.leader = Some(ME);
    s.feed_raft();
    let a = s.actions();
    assert!(serves(&a), "master and leader serves at once: {a:?}");
    assert!(a.contains(&Action::SoonServing(false)), "{a:?}");
    let serving = a.iter().position(|x| matches!(x, Action::Serve { .. })).unwrap();
    assert!(
        matches!(
            &a[serving + 1],
            Action::Notify {
                event: Event::Serving,
                ..
            }
        ),
        "the SERVING script runs: {a:?}"
    );
}

// SPEC §6: "A request to a node's own address, or to a node that has
// just lost the VIP, gets a clear error ... When a node loses the VIP it
// closes its client connections so that clients reconnect to the new
// holder."
#[test]
fn losing_the_vip_stops_serving() {
    let mut s = Script::serving();
    s.at_ms(10);
    s.vrrp.master = Some(PEER_ADDR);
    s.become_state(State::Backup, Reason::HigherPriority);
    let a = s.actions();
    assert_eq!(stops(&a), Some("lost the VIP (no longer VRRP master)"), "{a:?}");
    assert!(
        a.iter().any(|x| matches!(
            x,
            Action::Notify {
                event: Event::Stopped,
                ..
            }
        )),
        "{a:?}"
    );
    // And leadership goes to the new holder.
    assert!(a.contains(&Action::PreferLeader(Some(PEER))), "{a:?}");
}

// Module doc: "serving ... exactly while it is VRRP master *and* raft
// leader": a master that loses leadership (check-quorum, a transfer)
// stops. README, partition with a witness: "the side without a
// majority stops serving (check-quorum)".
#[test]
fn losing_leadership_stops_serving() {
    let mut s = Script::serving();
    s.lose_leadership();
    let a = s.actions();
    assert_eq!(stops(&a), Some("not the raft leader"), "{a:?}");
}

// Module doc: "Leadership follows the VIP: each member names the VRRP
// master as its preferred raft leader".
#[test]
fn leadership_follows_the_vip() {
    let mut s = Script::new(false);
    s.feed_raft();
    s.feed_vrrp();
    let a = s.actions();
    assert!(
        !a.iter().any(|x| matches!(x, Action::PreferLeader(_))),
        "without a master raft elects freely: {a:?}"
    );
    s.vrrp.master = Some(PEER_ADDR);
    s.feed_vrrp();
    assert!(s.actions().contains(&Action::PreferLeader(Some(PEER))));
    s.become_state(State::Master, Reason::Preempt);
    assert!(s.actions().contains(&Action::PreferLeader(Some(ME))));
    s.feed_vrrp();
    assert!(
        !s.actions().iter().any(|x| matches!(x, Action::PreferLeader(_))),
        "told once"
    );
}

// SPEC §4: "primary stops (graceful) | backup takes the VIP and the
// service". README: "sends priority 0 (the backup takes the VIP at once
// with `pair_handoff`), hands raft leadership over as soon as that
// advert is out ... the backup takes over as sole voter". Module doc:
// "it sent priority 0 (at once once this node leads, or no longer sees
// the peer lead)".
#[test]
fn graceful_stop_of_the_peer_takes_over_once_the_peer_no_longer_leads() {
    let mut s = Script::following(false);
    s.at_ms(100);
    s.vrrp.priority_zero_received = 1;
    s.become_state(State::Master, Reason::MasterLeft);
    let a = s.actions();
    assert!(
        !takes_over(&a),
        "the peer still leads: it hands leadership over first: {a:?}"
    );
    assert!(a.contains(&Action::SoonServing(true)), "{a:?}");
    assert!(
        a.iter().any(|x| matches!(
            x,
            Action::Notify { event: Event::Master, reason: Some(r), .. } if r == "MasterLeft"
        )),
        "{a:?}"
    );
    // The peer stops its member: this node no longer sees it lead.
    s.at_ms(120);
    s.raft.leader = None;
    s.feed_raft();
    let a = s.actions();
    assert!(takes_over(&a), "no leader and the peer left: at once: {a:?}");
    assert!(!serves(&a));
    // The takeover's answer comes with the facts it made: serving flips
    // in the same round.
    s.at_ms(121);
    let a = s.takeover_answer(Ok(()));
    assert!(a.contains(&Action::TookOver), "{a:?}");
    let gap = a.iter().find_map(|x| match x {
        Action::Serve {
            serve: true,
            why,
            gap,
        } => Some((*why, *gap)),
        _ => None,
    });
    assert_eq!(
        gap,
        Some((
            Some("the peer left (priority 0)"),
            Some(Duration::from_millis(21))
        )),
        "served in the takeover's round, the gap counted from the priority-0 advert: {a:?}"
    );
    assert!(a.contains(&Action::PeerDemoted(true)), "{a:?}");
}

// Same row, the other order: the peer handed leadership here before it
// stopped ("at once once this node leads").
#[test]
fn graceful_stop_of_the_peer_takes_over_at_once_when_this_node_leads() {
    let mut s = Script::following(false);
    s.raft.role = StateRole::Leader;
    s.raft.leader = Some(ME);
    s.raft.term += 1;
    s.feed_raft();
    assert!(!takes_over(&s.actions()), "a backup never takes over");
    s.vrrp.priority_zero_received = 1;
    s.become_state(State::Master, Reason::MasterLeft);
    let a = s.actions();
    assert!(takes_over(&a), "{a:?}");
    // Already leader and master: it serves while the takeover runs.
    assert!(serves(&a), "{a:?}");
}

// SPEC §4: "primary dies (crash, power) | backup takes the VIP after the
// VRRP master-down interval and keeps serving the same table". Module
// doc: "its adverts stopped after this node had followed it (once raft
// sees no leader either, for half an election timeout)".
#[test]
fn a_silent_peer_that_was_followed_is_taken_over_from() {
    let mut s = Script::following(false);
    s.at_ms(3000);
    s.become_state(State::Master, Reason::MasterDown);
    let a = s.actions();
    assert!(!takes_over(&a), "raft still sees the peer lead: {a:?}");
    // Raft's leader lease runs out.
    s.at_ms(3200);
    s.raft.leader = None;
    s.feed_raft();
    assert!(
        !takes_over(&s.actions()),
        "a transfer passes through a moment without a leader"
    );
    let a = s.run_until_ms(3699);
    assert!(!takes_over(&a), "{a:?}");
    let a = s.run_until_ms(3700);
    assert!(takes_over(&a), "half an election timeout without a leader: {a:?}");
    let a = s.takeover_answer(Ok(()));
    let why = a.iter().find_map(|x| match x {
        Action::Serve { serve: true, why, .. } => *why,
        _ => None,
    });
    assert_eq!(why, Some("the peer fell silent (Master_Down_Interval)"), "{a:?}");
}

// Module doc: "The last two need the peer's word (its beacon over the
// cluster link) to have lapsed: a peer whose word is fresh runs and
// reaches this node over the cluster link, so VRRP's silence is the
// segment's and raft elects over the link; both taking over then would
// make two sole voters that can both commit (S1, S2)." SPEC S1: "at most
// one node answers clients at any time, except during a partition between
// the two servers of a pair that has no witness". Found by the pair
// simulation (seed 1512: the segment cut one way, both servers master,
// both took over as sole voter 9 ms apart over a working cluster link).
#[test]
fn a_peer_whose_word_is_fresh_is_not_taken_over_from_until_it_lapses() {
    let word = PeerWord {
        master: true,
        priority: PRIORITY,
        leaving: false,
    };
    // Its adverts stopped reaching this node, its beacons did not.
    let mut s = Script::following(false);
    s.rules.handle_peer_word(s.now, Some(word));
    s.at_ms(3000);
    s.become_state(State::Master, Reason::MasterDown);
    s.at_ms(3200);
    s.raft.leader = None;
    s.feed_raft();
    let a = s.run_until_ms(6000);
    assert!(
        !takes_over(&a),
        "silent adverts, fresh word, for far past both rules: {a:?}"
    );
    // The word lapses (three advert intervals without a beacon): the peer
    // or the link is gone, and the rules that waited apply at once.
    s.rules.handle_peer_word(s.now, None);
    let a = s.actions();
    assert!(takes_over(&a), "{a:?}");

    // No leader for two election timeouts, with the word fresh, then not.
    let mut s = Script::serving();
    s.rules.handle_peer_word(s.now, Some(word));
    s.at_ms(500);
    s.lose_leadership();
    let a = s.run_until_ms(5000);
    assert!(!takes_over(&a), "{a:?}");
    s.rules.handle_peer_word(s.now, None);
    assert!(takes_over(&s.actions()));

    // A peer whose word says it is behind (the lowest priority: not in
    // sync, rebuilding, a learner) is refused a takeover itself: no
    // second sole voter, so its word does not hold this node back (seed
    // 700: the peer back empty after a lost disk, this node with the log).
    let mut s = Script::serving();
    s.rules.handle_peer_word(
        s.now,
        Some(PeerWord {
            master: false,
            priority: BEHIND_PRIORITY,
            leaving: false,
        }),
    );
    s.at_ms(500);
    s.lose_leadership();
    let a = s.run_until_ms(2499);
    assert!(!takes_over(&a), "{a:?}");
    let a = s.run_until_ms(2500);
    assert!(takes_over(&a), "{a:?}");

    // A peer whose word says it is leaving is handled as leaving, not
    // as heard.
    let mut s = Script::following(false);
    s.rules.handle_peer_word(
        s.now,
        Some(PeerWord {
            leaving: true,
            ..word
        }),
    );
    s.at_ms(3000);
    s.become_state(State::Master, Reason::MasterDown);
    s.at_ms(3200);
    s.raft.leader = None;
    s.feed_raft();
    let a = s.run_until_ms(3700);
    assert!(takes_over(&a), "{a:?}");
}

// Module doc: "A new word from a peer that is not leaving, after it left
// or fell silent, makes that evidence stale." Found by the pair simulation
// (seed 32338): the peer stopped on a storage failure (priority 0), came
// back as sole voter and led; this node, once in sync, took over on the
// old "it left" and both served.
#[test]
fn a_peer_that_speaks_again_after_it_left_is_not_taken_over_from() {
    let mut s = Script::following(false);
    s.vrrp.priority_zero_received = 1;
    s.at_ms(3000);
    s.raft.in_sync = false;
    s.raft.leader = None;
    s.feed_raft();
    s.become_state(State::Master, Reason::MasterLeft);
    // Refused: not in sync.
    let a = s.actions();
    assert!(takes_over(&a), "{a:?}");
    let a = s.takeover_answer(Err("not in sync".into()));
    assert!(!serves(&a), "{a:?}");
    // The peer is back, and in sync (it led alone): its word, not
    // leaving, at its priority.
    s.at_ms(3400);
    s.rules.handle_peer_word(
        s.now,
        Some(PeerWord {
            master: false,
            priority: PRIORITY,
            leaving: false,
        }),
    );
    // Now in sync, without a leader for a moment: the old "it left" no
    // longer counts, and the word is fresh.
    s.raft.in_sync = true;
    s.raft.leader = None;
    s.feed_raft();
    let a = s.run_until_ms(6000);
    assert!(!takes_over(&a), "{a:?}");
    // The word lapses: two election timeouts without a leader do.
    s.rules.handle_peer_word(s.now, None);
    assert!(takes_over(&s.actions()));
}

// Module doc: "Silence at start-up, before any master was seen, says
// nothing about the peer": only the two-election-timeout rule applies.
#[test]
fn silence_at_start_up_is_no_evidence() {
    let mut s = Script::new(false);
    s.raft.leader = Some(PEER);
    s.feed_raft();
    s.feed_vrrp();
    s.at_ms(3000);
    s.become_state(State::Master, Reason::MasterDown);
    s.at_ms(3200);
    s.raft.leader = None;
    s.feed_raft();
    // A followed master's silence would be taken over at 3700.
    let a = s.run_until_ms(5199);
    assert!(!takes_over(&a), "{a:?}");
    let a = s.run_until_ms(5200);
    assert!(
        takes_over(&a),
        "two election timeouts since no leader was seen: {a:?}"
    );
}

// Module doc: "or no raft leader has been seen for two election
// timeouts (the peer stopped or lost its raft link)". README, partition
// without a witness: "both may hold the VIP on their side (documented
// risk)".
#[test]
fn leaderless_for_two_election_timeouts_takes_over() {
    let mut s = Script::serving();
    // The leader lost its quorum (the peer's raft link broke).
    s.at_ms(500);
    s.lose_leadership();
    let a = s.actions();
    assert!(stops(&a).is_some() && !takes_over(&a), "{a:?}");
    let a = s.run_until_ms(2499);
    assert!(!takes_over(&a), "{a:?}");
    let a = s.run_until_ms(2500);
    assert!(takes_over(&a), "{a:?}");
    let a = s.takeover_answer(Ok(()));
    assert!(serves(&a), "{a:?}");
}

// Module doc: "A refused takeover (this node's log cannot be shown
// complete) is logged at error level (at once for a new reason, then
// once a minute with the count of retries) and retried when the facts
// change, never forced."
#[test]
fn a_refused_takeover_is_retried_on_change_never_forced_and_logged_rate_limited() {
    let mut s = Script::following(false);
    s.raft.in_sync = false;
    s.feed_raft();
    s.at_ms(100);
    s.vrrp.priority_zero_received = 1;
    s.raft.leader = None;
    s.feed_raft();
    s.become_state(State::Master, Reason::MasterLeft);
    assert!(takes_over(&s.actions()));
    let refused = "not in sync".to_string();
    let a = s.takeover_answer(Err(refused.clone()));
    assert!(
        a.contains(&Action::TakeoverRefused {
            reason: refused.clone(),
            retries: 0
        }),
        "{a:?}"
    );
    assert!(!takes_over(&a), "not retried in a loop on the same facts: {a:?}");
    assert!(!serves(&a));
    // Not held: a refusal tells clients more than a wait.
    assert!(a.contains(&Action::SoonServing(false)), "{a:?}");
    // Time alone changes nothing, nor the same status again.
    let a = s.run_until_ms(10_000);
    assert!(!takes_over(&a), "{a:?}");
    s.feed_vrrp();
    assert!(!takes_over(&s.actions()));
    // A new fact: retried; refused again within the minute: counted, not logged.
    for (i, ms) in [11_000, 12_000, 13_000].into_iter().enumerate() {
        s.at_ms(ms);
        s.raft.term += 1;
        s.feed_raft();
        let a = s.actions();
        assert!(takes_over(&a), "retry {i}: {a:?}");
        let a = s.takeover_answer(Err(refused.clone()));
        assert!(
            !a.iter().any(|x| matches!(x, Action::TakeoverRefused { .. })),
            "logged once a minute: {a:?}"
        );
    }
    s.at_ms(100 + 61_000);
    s.raft.term += 1;
    s.feed_raft();
    assert!(takes_over(&s.actions()));
    let a = s.takeover_answer(Err(refused.clone()));
    assert!(
        a.contains(&Action::TakeoverRefused {
            reason: refused,
            retries: 3
        }),
        "a minute later, with the retries in between: {a:?}"
    );
    // Nothing here forces: the only takeover the rules ask for is the
    // plain one (forcing is an operator's command).
    s.raft.in_sync = true;
    s.feed_raft();
    let a = s.actions();
    assert!(takes_over(&a), "in sync: retried: {a:?}");
    let a = s.takeover_answer(Ok(()));
    assert!(serves(&a), "{a:?}");
}

// SPEC §1: "a third, vote-only Raft member ... lets the pair fail over
// without any split-brain risk". Module doc: "With a witness there is no
// takeover: raft elects, and the preferred leader brings leadership to
// the VIP holder." README, primary dies: "with a witness raft elects it".
#[test]
fn with_a_witness_there_is_no_takeover() {
    let mut s = Script::following(true);
    s.vrrp.priority_zero_received = 1;
    s.raft.leader = None;
    s.feed_raft();
    s.become_state(State::Master, Reason::MasterLeft);
    let mut a = s.actions();
    a.extend(s.run_until_ms(60_000));
    assert!(!takes_over(&a), "{a:?}");
    assert!(a.contains(&Action::PreferLeader(Some(ME))), "{a:?}");
    // Raft elects this node: it serves.
    s.raft.role = StateRole::Leader;
    s.raft.leader = Some(ME);
    s.raft.term += 1;
    s.feed_raft();
    assert!(serves(&s.actions()));
}

// Module doc: "While this node has not caught up with the log since it
// started, or is not a voter, it advertises the lowest VRRP priority".
// README, old primary returns: "until it is caught up and a voter it
// advertises VRRP priority 1, so it cannot preempt with a stale table
// or without being able to lead".
#[test]
fn a_node_behind_the_log_or_a_learner_advertises_the_lowest_priority() {
    let mut s = Script::new(false);
    s.raft.in_sync = false;
    s.feed_raft();
    s.feed_vrrp();
    let a = s.actions();
    assert_eq!(priorities(&a), [BEHIND_PRIORITY], "{a:?}");
    let beacon = a.iter().position(|x| matches!(x, Action::Beacon { .. })).unwrap();
    let priority = a
        .iter()
        .position(|x| matches!(x, Action::SetPriority { .. }))
        .unwrap();
    assert!(
        beacon < priority,
        "the peer hears of it before the adverts: {a:?}"
    );
    // Caught up, but a learner (the peer took over as sole voter).
    s.raft.in_sync = true;
    s.raft.voters = vec![PEER];
    s.raft.learners = vec![ME];
    s.raft.leader = Some(PEER);
    s.feed_raft();
    assert_eq!(priorities(&s.actions()), Vec::<u8>::new(), "still the lowest");
    // Promoted back.
    s.raft.voters = vec![PEER, ME];
    s.raft.learners = vec![];
    s.feed_raft();
    assert_eq!(priorities(&s.actions()), [PRIORITY]);
    // README, partition with a witness: "the side that missed commits
    // learns it from the leader's first append, advertises VRRP
    // priority 1 until caught up".
    s.raft.in_sync = false;
    s.feed_raft();
    assert_eq!(priorities(&s.actions()), [BEHIND_PRIORITY]);
}

// Module doc: "Otherwise it advertises its base priority: the
// configured one, or what `set_base_priority` last set."
#[test]
fn a_base_priority_change_is_advertised() {
    let mut s = Script::following(false);
    s.rules.set_base_priority(s.now, 50);
    let a = s.actions();
    assert_eq!(priorities(&a), [50], "{a:?}");
    assert!(
        a.contains(&Action::Beacon {
            master: false,
            priority: 50
        }),
        "{a:?}"
    );
    // Behind the log: the lowest, whatever the base.
    s.raft.in_sync = false;
    s.feed_raft();
    assert_eq!(priorities(&s.actions()), [BEHIND_PRIORITY]);
    s.rules.set_base_priority(s.now, 100);
    assert_eq!(priorities(&s.actions()), Vec::<u8>::new());
    s.raft.in_sync = true;
    s.feed_raft();
    assert_eq!(
        priorities(&s.actions()),
        [100],
        "caught up: the base as it is now"
    );
}

// SPEC §9: "An advert that the peer's authenticated state contradicts
// does not take service away"; `beacon`: "While the peer is a learner
// and silent, this node stands in for its word".
#[test]
fn a_demoted_peer_is_stood_in_for() {
    let mut s = Script::serving();
    s.raft.voters = vec![ME];
    s.raft.learners = vec![PEER];
    s.feed_raft();
    assert!(s.actions().contains(&Action::PeerDemoted(true)));
    s.raft.voters = vec![ME, PEER];
    s.raft.learners = vec![];
    s.feed_raft();
    assert!(s.actions().contains(&Action::PeerDemoted(false)));
}

// Module doc, keys: "the VIP holder proposes its changes, the other
// server submits its own to the leader; at once when it starts serving,
// then every KEY_CHECK while it serves or follows a leader, one round
// at a time".
#[test]
fn keys_are_synced_at_once_when_serving_then_every_key_check() {
    let mut s = Script::following(false);
    // The follower's first round went out when it first heard a leader.
    s.rules.keys_done(s.now, Some(2));
    let a = s.run_until_ms(1999);
    assert!(!a.iter().any(|x| matches!(x, Action::SyncKeys { .. })), "{a:?}");
    let a = s.run_until_ms(2000);
    assert!(
        a.contains(&Action::SyncKeys {
            serve: false,
            rounds: 1
        }),
        "{a:?}"
    );
    // One round at a time: none while this one runs.
    let a = s.run_until_ms(5000);
    assert!(!a.iter().any(|x| matches!(x, Action::SyncKeys { .. })), "{a:?}");
    s.rules.keys_done(s.now, Some(0));
    let a = s.actions();
    assert!(
        a.contains(&Action::SyncKeys {
            serve: false,
            rounds: 0
        }),
        "overdue: at once: {a:?}"
    );
    s.rules.keys_done(s.now, Some(0));
    // Serving: at once, not at the next check.
    s.at_ms(5100);
    s.raft.role = StateRole::Leader;
    s.raft.leader = Some(ME);
    s.feed_raft();
    s.become_state(State::Master, Reason::Preempt);
    let a = s.actions();
    assert!(serves(&a));
    assert!(
        a.contains(&Action::SyncKeys {
            serve: true,
            rounds: 0
        }),
        "{a:?}"
    );
    // Serving while a follower's round is still in flight: a serving
    // round as soon as it ends (that one may have left keys waiting for
    // the pair's issuers, which only the VIP holder records).
    let mut s = Script::following(false);
    s.at_ms(100);
    s.raft.role = StateRole::Leader;
    s.raft.leader = Some(ME);
    s.feed_raft();
    s.become_state(State::Master, Reason::Preempt);
    let a = s.actions();
    assert!(serves(&a));
    assert!(!a.iter().any(|x| matches!(x, Action::SyncKeys { .. })), "{a:?}");
    s.rules.keys_done(s.now, Some(1));
    let a = s.actions();
    assert!(
        a.contains(&Action::SyncKeys {
            serve: true,
            rounds: 1
        }),
        "at once, not at the next check: {a:?}"
    );
    // Neither serving nor following: no rounds.
    let mut s = Script::new(false);
    s.feed_raft();
    s.feed_vrrp();
    let a = s.run_until_ms(10_000);
    assert!(!a.iter().any(|x| matches!(x, Action::SyncKeys { .. })), "{a:?}");
}

// Module doc, settings: "compared when serving or in-sync changes and
// every SETTINGS_CHECK"; `settings`: "the VIP holder ... proposes them".
#[test]
fn settings_are_checked_on_change_and_periodically() {
    let mut s = Script::new(false);
    s.feed_raft();
    s.feed_vrrp();
    let a = s.actions();
    assert!(
        a.contains(&Action::Settings {
            leads: false,
            in_sync: true
        }),
        "{a:?}"
    );
    let a = s.run_until_ms(1000);
    let checks = a.iter().filter(|x| matches!(x, Action::Settings { .. })).count();
    assert_eq!(checks, 2, "every 500 ms: {a:?}");
    s.at_ms(1100);
    s.raft.role = StateRole::Leader;
    s.raft.leader = Some(ME);
    s.feed_raft();
    s.become_state(State::Master, Reason::Preempt);
    let a = s.actions();
    assert!(
        a.contains(&Action::Settings {
            leads: true,
            in_sync: true
        }),
        "the new VIP holder proposes at once: {a:?}"
    );
}

// Module doc: "Graceful stop (carried out by `node::run` after
// `stop`)": nothing is held any more and nothing more is decided.
#[test]
fn a_stop_decides_nothing_more() {
    let mut s = Script::new(false);
    s.raft.leader = None;
    s.feed_raft();
    s.become_state(State::Master, Reason::Startup);
    assert!(s.actions().contains(&Action::SoonServing(true)));
    s.rules.stop();
    assert_eq!(s.actions(), [Action::SoonServing(false)]);
    assert_eq!(s.rules.poll_timeout(), None);
    s.raft.role = StateRole::Leader;
    s.feed_raft();
    assert_eq!(s.actions(), []);
}

// SPEC §6 again: a node whose cluster member or VRRP speaker failed
// can no longer know it holds the VIP with the table: it stops.
#[test]
fn a_failed_part_stops_serving() {
    let mut s = Script::serving();
    s.rules.failed(s.now, "the cluster member stopped");
    let a = s.actions();
    assert_eq!(stops(&a), Some("the cluster member stopped"), "{a:?}");
    assert_eq!(a.last(), Some(&Action::SoonServing(false)));
}

// SPEC §8 S1: "at most one node answers clients at any time". Two
// rules, one per server, fed the same raft view: only one serves.
#[test]
fn of_two_masters_only_the_leader_serves() {
    let mut a = Script::new(false);
    let mut b = Script::new(false);
    for (s, leads) in [(&mut a, true), (&mut b, false)] {
        s.raft.leader = Some(ME);
        s.raft.role = if leads {
            StateRole::Leader
        } else {
            StateRole::Follower
        };
        s.feed_raft();
        s.become_state(State::Master, Reason::Startup);
    }
    let (x, y) = (a.actions(), b.actions());
    assert!(serves(&x) && !serves(&y), "{x:?} {y:?}");
}

// README, old primary returns: "joins as a learner, catches up (snapshot
// if needed), is promoted once it keeps up; until it is caught up and a
// voter it advertises VRRP priority 1 ... The preemption itself costs
// clients ~250 ms". The handback: caught up and a voter, it advertises its
// priority, preempts, names itself preferred leader, and serves once
// leadership arrives; it never takes over from a peer that leads.
#[test]
fn the_old_primary_returns_catches_up_and_takes_the_service_back() {
    let mut s = Script::new(false);
    s.raft.in_sync = false;
    s.raft.voters = vec![PEER];
    s.raft.learners = vec![ME];
    s.raft.leader = Some(PEER);
    s.feed_raft();
    s.vrrp.master = Some(PEER_ADDR);
    s.vrrp.adverts_received = 1;
    s.feed_vrrp();
    let a = s.actions();
    assert_eq!(priorities(&a), [BEHIND_PRIORITY], "{a:?}");
    assert!(a.contains(&Action::PreferLeader(Some(PEER))), "{a:?}");
    // Caught up and promoted.
    s.at_ms(5000);
    s.raft.in_sync = true;
    s.raft.voters = vec![PEER, ME];
    s.raft.learners = vec![];
    s.feed_raft();
    assert_eq!(priorities(&s.actions()), [PRIORITY]);
    s.at_ms(5100);
    s.vrrp.adverts_received = 2;
    s.feed_vrrp();
    // VRRP preempts; the peer still leads raft.
    s.at_ms(5150);
    s.become_state(State::Master, Reason::Preempt);
    let mut a = s.actions();
    a.extend(s.run_until_ms(60_000));
    assert!(!takes_over(&a), "the peer is alive and leads: {a:?}");
    assert!(a.contains(&Action::PreferLeader(Some(ME))), "{a:?}");
    assert!(a.contains(&Action::SoonServing(true)), "{a:?}");
    assert!(!serves(&a));
    // Leadership comes (the peer transfers it to the preferred member).
    s.at_ms(60_250);
    s.raft.role = StateRole::Leader;
    s.raft.leader = Some(ME);
    s.raft.term += 1;
    s.feed_raft();
    let a = s.actions();
    let served = a.iter().find_map(|x| match x {
        Action::Serve {
            serve: true,
            why,
            gap,
        } => Some((*why, *gap)),
        _ => None,
    });
    assert_eq!(
        served,
        Some((
            Some("preempted the peer (higher priority)"),
            Some(Duration::from_millis(60_250 - 5100))
        )),
        "{a:?}"
    );
}

// README "Tracking": "without a weight a failure puts the node in FAULT:
// ... it gives up the VIP, hands raft leadership to the peer". Keepalived's
// FAULT state: the instance stays out until the tracker is up.
#[test]
fn in_fault_the_node_prefers_the_peer_and_says_nothing_else_until_it_clears() {
    let mut s = Script::serving();
    s.rules.set_fault(s.now, true);
    let a = s.actions();
    assert!(
        !a.iter().any(|a| matches!(a, Action::Beacon { .. })),
        "no beacon of ours may contradict the fault: {a:?}"
    );
    // Serving ends at once: client connections close while the VIP is
    // still here.
    assert!(stops(&a).is_some(), "{a:?}");
    // The speaker gave up the VIP (Initialize): leadership goes to the
    // peer, still no beacon.
    s.vrrp.state = State::Initialize;
    s.vrrp.master = None;
    s.feed_vrrp();
    let a = s.actions();
    assert!(a.contains(&Action::PreferLeader(Some(PEER))), "{a:?}");
    assert!(!a.iter().any(|a| matches!(a, Action::Beacon { .. })), "{a:?}");
    // A backup following the new master: leadership stays with the peer.
    s.vrrp.state = State::Backup;
    s.vrrp.master = Some(PEER_ADDR);
    s.vrrp.adverts_received += 1;
    s.feed_vrrp();
    let a = s.actions();
    assert!(!a.iter().any(|a| matches!(a, Action::Beacon { .. })), "{a:?}");
    // Cleared: the peer hears our word again.
    s.rules.set_fault(s.now, false);
    let a = s.actions();
    assert!(
        a.contains(&Action::Beacon {
            master: false,
            priority: PRIORITY
        }),
        "{a:?}"
    );
}

// Issue 12, item 3: "The handback (the old primary returning and
// preempting) costs switches no more than a graceful stop." README: "old
// primary returns ... is promoted once it keeps up; until it is caught up
// and a voter it advertises VRRP priority 1". Once it advertises more than
// this master, this master hands the VIP back as a graceful stop would.
#[test]
fn a_master_hands_the_vip_back_to_a_caught_up_peer_that_outranks_it() {
    let mut s = Script::serving();
    // The peer back as a learner, behind: priority 1, nothing happens.
    let behind = PeerWord {
        master: false,
        priority: BEHIND_PRIORITY,
        leaving: false,
    };
    s.rules.handle_peer_word(s.now, Some(behind));
    assert!(!s.actions().contains(&Action::HandBack));
    // Caught up and promoted: it advertises its configured 150.
    let back = PeerWord {
        priority: 150,
        ..behind
    };
    s.rules.handle_peer_word(s.now, Some(back));
    let a = s.actions();
    let stop = a
        .iter()
        .position(|a| matches!(a, Action::Serve { serve: false, .. }));
    let hand = a.iter().position(|a| *a == Action::HandBack);
    assert!(
        matches!((stop, hand), (Some(x), Some(y)) if x < y),
        "serving ends (connections close) before the handback: {a:?}"
    );
    assert!(!a.iter().any(|a| matches!(a, Action::Beacon { .. })), "{a:?}");
    // Asked once only.
    s.feed_vrrp();
    assert!(!s.actions().contains(&Action::HandBack));
    // The VIP given up: leadership goes to the peer.
    s.rules.handback_resigned(s.now);
    s.vrrp.state = State::Initialize;
    s.vrrp.master = None;
    s.feed_vrrp();
    let a = s.actions();
    assert!(a.contains(&Action::PreferLeader(Some(PEER))), "{a:?}");
    assert!(!a.contains(&Action::RejoinAsBackup), "{a:?}");
    // The peer leads: rejoin as a backup, and say so to the peer again.
    s.raft.role = StateRole::Follower;
    s.raft.leader = Some(PEER);
    s.feed_raft();
    let a = s.actions();
    assert!(a.contains(&Action::RejoinAsBackup), "{a:?}");
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Beacon { master: false, .. })),
        "{a:?}"
    );
    // The peer fails before its first advert reaches this node: the
    // takeover that follows is one from the peer, with its gap.
    s.at_ms(1_400);
    s.vrrp.state = State::Backup;
    s.feed_vrrp();
    // Its word lapses with it.
    s.rules.handle_peer_word(s.now, None);
    s.actions();
    s.become_state(State::Master, Reason::MasterDown);
    s.raft.role = StateRole::Leader;
    s.raft.leader = Some(ME);
    s.feed_raft();
    let a = s.actions();
    assert!(
        a.iter().any(|a| matches!(
            a,
            Action::Serve {
                serve: true,
                gap: Some(_),
                ..
            }
        )),
        "{a:?}"
    );
}

// Module doc: "Leadership follows the VIP: each member names the VRRP
// master as its preferred raft leader". Issue 12, item 3: a handback
// costs switches no more than a graceful stop. The peer is master from
// our priority-0 advert on and holds its clients' requests until it
// leads: once the VIP is given up, leadership goes to it in the same
// round, before the speaker's status says this node left.
#[test]
fn a_handback_hands_leadership_over_as_the_vip_is_given_up() {
    let mut s = Script::serving();
    s.rules.handle_peer_word(s.now, Some(OUTRANKING));
    let a = s.actions();
    assert!(a.contains(&Action::HandBack), "{a:?}");
    assert!(
        !a.iter().any(|a| matches!(a, Action::PreferLeader(_))),
        "still ours while draining: {a:?}"
    );
    s.rules.handback_resigned(s.now);
    let a = s.actions();
    assert!(a.contains(&Action::PreferLeader(Some(PEER))), "{a:?}");
    // The speaker's status follows: nothing flips back.
    s.vrrp.state = State::Initialize;
    s.vrrp.master = None;
    s.feed_vrrp();
    let a = s.actions();
    assert!(!a.iter().any(|a| matches!(a, Action::PreferLeader(_))), "{a:?}");
    // The peer's first advert as master: still the peer.
    s.vrrp.state = State::Backup;
    s.vrrp.master = Some(PEER_ADDR);
    s.vrrp.adverts_received += 1;
    s.feed_vrrp();
    let a = s.actions();
    assert!(!a.iter().any(|a| matches!(a, Action::PreferLeader(_))), "{a:?}");
}

#[test]
fn no_handback_without_preempt_or_when_the_peer_does_not_outrank() {
    let mut s = Script::serving();
    let word = PeerWord {
        master: false,
        priority: PRIORITY,
        leaving: false,
    };
    s.rules.handle_peer_word(s.now, Some(word));
    assert!(!s.actions().contains(&Action::HandBack), "equal priority: no");
    let mut s = Script::new(false);
    s.rules = PairRules::new(RulesConfig {
        me: ME,
        peer: PEER,
        has_witness: false,
        priority: PRIORITY,
        election_timeout: ET,
        preempt: false,
    });
    s.raft.role = StateRole::Leader;
    s.raft.leader = Some(ME);
    s.feed_raft();
    s.vrrp.state = State::Master;
    s.vrrp.master = Some(OWN);
    s.feed_vrrp();
    assert!(serves(&s.actions()));
    s.rules.handle_peer_word(
        s.now,
        Some(PeerWord {
            priority: 200,
            ..word
        }),
    );
    let a = s.actions();
    assert!(
        !a.contains(&Action::HandBack) && !a.iter().any(|a| matches!(a, Action::Serve { serve: false, .. })),
        "{a:?}"
    );
}

#[test]
fn a_handback_gives_up_waiting_for_the_peer_after_two_election_timeouts() {
    let mut s = Script::serving();
    s.rules.handle_peer_word(s.now, Some(OUTRANKING));
    assert!(s.actions().contains(&Action::HandBack));
    s.rules.handback_resigned(s.now);
    s.vrrp.state = State::Initialize;
    s.vrrp.master = None;
    s.feed_vrrp();
    let a = s.run_until_ms(1_999);
    assert!(!a.contains(&Action::RejoinAsBackup), "{a:?}");
    let a = s.run_until_ms(2_001);
    assert!(a.contains(&Action::RejoinAsBackup), "{a:?}");
}

// The other side of a handback (or of a tracker's fault): the peer says
// "leaving, not master" and stays up. It keeps its vote: taking over as
// sole voter would demote it for nothing, and if this node then failed
// before promoting it back, no one could take over. Leadership comes by
// transfer, and the node serves once it leads.
#[test]
fn a_peer_that_hands_back_and_stays_up_keeps_its_vote() {
    let mut s = Script::following(false);
    s.rules.handle_peer_word(
        s.now,
        Some(PeerWord {
            master: false,
            priority: 50,
            leaving: true,
        }),
    );
    s.actions();
    s.vrrp.priority_zero_received += 1;
    s.become_state(State::Master, Reason::MasterLeft);
    let a = s.actions();
    assert!(!takes_over(&a), "{a:?}");
    // The transfer arrives: it serves, still no takeover.
    s.raft.role = StateRole::Leader;
    s.raft.leader = Some(ME);
    s.feed_raft();
    let a = s.run_until_ms(5_000);
    assert!(serves(&a), "{a:?}");
    assert!(!takes_over(&a), "{a:?}");
}

// A graceful stop says "leaving" as master: the takeover as sole voter
// still follows (the peer is about to stop).
#[test]
fn a_peer_that_stops_is_still_taken_over_from() {
    let mut s = Script::following(false);
    s.rules.handle_peer_word(
        s.now,
        Some(PeerWord {
            master: true,
            priority: 150,
            leaving: true,
        }),
    );
    s.actions();
    s.vrrp.priority_zero_received += 1;
    s.become_state(State::Master, Reason::MasterLeft);
    s.raft.leader = None;
    s.feed_raft();
    assert!(takes_over(&s.actions()));
}
