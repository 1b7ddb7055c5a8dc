//! The in-sync rule against a leader that counts this member as a
//! learner: a schedule the whole-pair simulation (`src/node/sim`) found,
//! scripted here at the layer that was wrong.

use super::*;

/// Found by the whole-pair simulation (seeds 21034 and 25998, issue 11).
/// 1 has just restarted (not in sync); 2 takes over as sole voter (VRRP
/// says 1 is gone) and commits writes alone. 2's first appends of its new
/// term went out when it took over, carrying its commit index of that
/// moment; 1 gets one of them a little later, its log reaches that commit,
/// and it counted itself in sync, its configuration still saying both are
/// voters (the demotion is in entries it never got). Cut off a moment
/// later, it took over in turn without what 2 had acknowledged alone.
///
/// A leader's commit index in a message is a floor of what it has
/// committed. From a leader that needs our acknowledgement to commit (we
/// are one of its two voters), that floor is enough: whatever it commits
/// later, we hold. From one that counts us as a learner it says nothing
/// about what comes next.
#[test]
fn a_member_is_not_in_sync_from_a_commit_the_sole_voter_left_behind() {
    for seed in 0..10 {
        let mut sim = Sim::new(900 + seed, &pair());
        let l = elected(&mut sim);
        let o = 3 - l;
        write_some(&mut sim, 5);
        sim.run(20);
        // `o` restarts: not in sync until its leader tells it so. It
        // learns the commit index from heartbeats, its answers are lost
        // (so no append and no answer to its probe tells it more).
        sim.crash(o);
        sim.start(o);
        let before = sim.nodes[&l].commit_index();
        for _ in 0..50 {
            if sim.nodes[&o].commit_index() >= before {
                break;
            }
            sim.net.retain(|f| f.msg.from != o);
            sim.step();
        }
        sim.net.retain(|f| f.msg.from != o);
        assert!(
            !sim.nodes[&o].in_sync(),
            "seed {seed}: not in sync since its start"
        );
        assert_eq!(
            sim.nodes[&o].commit_index(),
            before,
            "seed {seed}: {o} learns the commit index from heartbeats"
        );
        sim.take_over(l);
        let alone: Vec<u64> = (0..3).filter_map(|_| sim.propose_on(l)).collect();
        assert!(
            alone.iter().all(|c| sim.acked.contains_key(c)),
            "seed {seed}: the sole voter acknowledges alone"
        );
        assert!(sim.nodes[&l].commit_index() > before, "seed {seed}");
        // Of what `l` sent, `o` gets only what left with the commit of
        // the takeover; then the two are cut off.
        sim.net = std::mem::take(&mut sim.net)
            .into_iter()
            .filter(|f| f.msg.to == o && f.msg.commit <= before)
            .collect();
        sim.step();
        sim.partition(&[o]);
        let lcommit = sim.nodes[&l].commit_index();
        let n = &sim.nodes[&o];
        assert!(
            !n.in_sync() || n.commit_index() >= lcommit,
            "seed {seed}: {o} in sync at commit {} although {l} committed {lcommit} alone",
            n.commit_index()
        );
        sim.run(50);
        let r = sim.nodes.get_mut(&o).unwrap().take_over_as_sole_voter();
        assert!(
            r.is_err(),
            "seed {seed}: {o} took over without {l}'s acknowledged writes"
        );
    }
}

/// As above, with a peer that was in sync before the takeover (seed 21034:
/// 1 took over while 2, alive, was in sync with it): the first word it gets
/// of the sole voter's new term is a heartbeat (the appends are lost),
/// which says nothing of what the sole voter committed. In sync with the
/// leader of the term before, it is not in sync with this one.
#[test]
fn a_member_in_sync_with_one_leader_is_not_in_sync_with_the_next_by_a_heartbeat() {
    use raft::eraftpb::MessageType;
    for seed in 0..10 {
        let mut sim = Sim::new(950 + seed, &pair());
        let l = elected(&mut sim);
        let o = 3 - l;
        write_some(&mut sim, 5);
        sim.run(20);
        assert!(sim.nodes[&o].in_sync(), "seed {seed}: in sync with {l}");
        // The cross-check would stop the run on the state this test
        // provokes before the fix; the assertions below say it instead.
        sim.cross_checks = false;
        sim.take_over(l);
        let alone: Vec<u64> = (0..3).filter_map(|_| sim.propose_on(l)).collect();
        assert!(
            alone.iter().all(|c| sim.acked.contains_key(c)),
            "seed {seed}: the sole voter acknowledges alone"
        );
        let term = sim.nodes[&l].term();
        for _ in 0..50 {
            if sim.nodes[&o].term() == term {
                break;
            }
            sim.net.retain(|f| {
                f.msg.from != o && (f.msg.to != o || f.msg.get_msg_type() == MessageType::MsgHeartbeat)
            });
            sim.step();
        }
        assert_eq!(
            sim.nodes[&o].term(),
            term,
            "seed {seed}: a heartbeat of the new term reaches {o}"
        );
        sim.partition(&[o]);
        let lcommit = sim.nodes[&l].commit_index();
        let n = &sim.nodes[&o];
        assert!(
            !n.in_sync() || n.store().last() >= lcommit,
            "seed {seed}: {o} in sync at log end {} although {l} committed {lcommit} alone",
            n.store().last()
        );
        sim.run(50);
        let r = sim.nodes.get_mut(&o).unwrap().take_over_as_sole_voter();
        assert!(
            r.is_err(),
            "seed {seed}: {o} took over without {l}'s acknowledged writes"
        );
    }
}
