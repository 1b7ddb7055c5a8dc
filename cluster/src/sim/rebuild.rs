//! Members that come back empty (a lost disk, a yield) and rebuild from
//! the leader: schedules the whole-pair simulation (`src/node/sim`) found
//! stuck, scripted here at the layer that was wrong.

use super::*;

/// Makes `to` the leader of a pair by a transfer from the current one.
fn lead_on(sim: &mut Sim, to: u64) {
    let l = elected(sim);
    if l != to {
        sim.nodes.get_mut(&l).unwrap().transfer_leader(to);
        sim.pump(l);
    }
    step_until(sim, 200, "the transfer completes", |s| s.leader() == Some(to));
}

/// Found by the whole-pair simulation (seeds 2584 and 20068, issue 11):
/// a leader whose stored snapshot predates its promotion back to voter
/// (the snapshot says: the peer is the sole voter, the leader a learner)
/// sent it to its peer, which had come back empty. The peer installed it,
/// took the leader's next append for a split brain (it, sole voter, hears
/// a leader it holds for a learner) and yielded, again and again: the
/// leader needed the peer to commit anything.
///
/// Here: 2 takes over as sole voter while 1 is away; 1 comes back empty and
/// installs 2's snapshot of the takeover (2 sole voter, 1 a learner); 2
/// promotes 1; 1 leads; 2 loses its disk. 1's snapshot is still the one
/// it installed. Nothing was split: no yield, 2 rebuilds and commits.
#[test]
fn a_peer_rebuilding_from_a_snapshot_older_than_the_leaders_promotion_does_not_yield() {
    for seed in 0..5 {
        let mut sim = Sim::with_snapshot_interval(600 + seed, &pair(), 1000);
        lead_on(&mut sim, 2);
        write_some(&mut sim, 5);
        sim.crash_and_lose_disk(1);
        sim.run(30);
        sim.take_over(2);
        write_some(&mut sim, 5);
        sim.start(1);
        step_until(&mut sim, 600, "2 promotes 1 back to voter", |s| {
            s.nodes[&2].conf_state().voters.len() == 2
        });
        let snap = sim.nodes[&1].store().snapshot_ref().get_metadata().clone();
        assert_eq!(
            (
                snap.get_conf_state().voters.clone(),
                snap.get_conf_state().learners.clone()
            ),
            (vec![2], vec![1]),
            "seed {seed}: 1's snapshot is 2's, from before the promotion"
        );
        write_some(&mut sim, 5);
        lead_on(&mut sim, 1);
        assert_eq!(
            sim.nodes[&1].store().snapshot_ref().get_metadata().index,
            snap.index,
            "seed {seed}: 1 still holds the snapshot from before its promotion"
        );
        sim.crash_and_lose_disk(2);
        sim.start(2);
        step_until(&mut sim, 400, "2 rebuilds from 1", |s| {
            s.nodes[&2].commit_index() >= s.nodes[&1].commit_index()
                && s.nodes[&2].conf_state().voters.len() == 2
        });
        assert!(
            sim.yields.is_empty(),
            "seed {seed}: nothing was split, yet {:?}",
            sim.yields
        );
        let cmds = write_some(&mut sim, 5);
        assert!(
            cmds.iter().any(|c| sim.acked.contains_key(c)),
            "seed {seed}: the pair commits again"
        );
        assert!(sim.yields.is_empty(), "seed {seed}: {:?}", sim.yields);
    }
}

/// Found by the whole-pair simulation (seed 27157, issue 11): a witness
/// leads (to repair a server's log), server 1 has acknowledged its whole
/// log and loses its disk before the witness hands leadership over. The
/// witness still counted 1 as matched at its last index, picked 1, the
/// first voter so matched, every time; 1, empty, has no configuration and
/// never campaigns; 2, which has the whole log, was never tried; an idle
/// leader sends only heartbeats, which an empty member does not reject, so
/// 1 never got a snapshot either.
#[test]
fn a_witness_hands_over_to_the_server_with_the_log_when_the_other_lost_its_disk() {
    let mut failures = Vec::new();
    let mut reached = 0;
    for seed in 0..20 {
        let mut sim = Sim::new(700 + seed, &pair_and_witness());
        lead_on(&mut sim, 1);
        write_some(&mut sim, 5);
        // 2 misses writes that 1 and the witness commit; 1 then crashes.
        sim.partition(&[2]);
        write_some(&mut sim, 3);
        sim.crash(1);
        sim.heal();
        sim.start(1);
        // The witness campaigns to repair 2 (its log is behind) and leads;
        // 1 comes back with its disk and acknowledges the witness's log.
        let mut lost = false;
        for _ in 0..2000 {
            sim.step();
            if sim.leader() != Some(3) {
                continue;
            }
            let last = sim.nodes[&3].last_index();
            if sim.nodes[&3]
                .progress()
                .iter()
                .any(|&(id, m)| id == 1 && m == last)
            {
                sim.crash_and_lose_disk(1);
                sim.start(1);
                lost = true;
                break;
            }
        }
        if !lost {
            // The schedule went otherwise (a server was elected first).
            continue;
        }
        reached += 1;
        let mut served = false;
        for _ in 0..600 {
            sim.step();
            if matches!(sim.leader(), Some(1 | 2)) && sim.nodes[&1].commit_index() > 0 {
                served = true;
                break;
            }
        }
        if !served {
            failures.push(seed);
        }
    }
    assert!(
        reached >= 5,
        "only {reached} of 20 schedules reached the lost disk"
    );
    assert!(
        failures.is_empty(),
        "the witness kept the lead, or 1 never rebuilt, in seeds {failures:?}"
    );
}
