//! A takeover that finds entries in the log it has not written yet.

use super::*;

/// Found by herd_bench (issue 12): 10,000 switches starved the pair of
/// CPU during its setup, both servers took over as sole voter, and one
/// died inside raft (`assert_eq!(last_index, persisted)` in
/// `become_leader`, 3606 against 3350): the member's driver handles a
/// batch of requests before it writes, and an append from the leader was
/// stepped in the same batch as the takeover. A sole voter's campaign
/// makes it leader at once, which raft allows only with the whole log
/// written. Here the append is stepped and the takeover asked for with
/// no ready handled between them: the takeover writes the entries first,
/// leads, and keeps them.
#[test]
fn a_takeover_right_after_an_unwritten_append_writes_it_and_leads() {
    for seed in 0..5 {
        let mut sim = Sim::new(900 + seed, &pair());
        let leader = elected(&mut sim);
        let follower = 3 - leader;
        write_some(&mut sim, 3);
        // The leader takes three more commands; its appends are caught
        // instead of routed.
        let mut sent = Vec::new();
        for n in 0..3u64 {
            let node = sim.nodes.get_mut(&leader).unwrap();
            node.propose(10_000 + n, &(1_000_000 + n)).unwrap();
            node.process_ready().unwrap();
            for out in node.drain_outputs() {
                if let Output::Send(m) = out {
                    sent.push(m);
                }
            }
        }
        let appends: Vec<_> = sent
            .into_iter()
            .filter(|m| m.to == follower && m.get_msg_type() == raft::eraftpb::MessageType::MsgAppend)
            .collect();
        assert!(!appends.is_empty(), "seed {seed}: the leader sent appends");
        sim.crash(leader);
        let node = sim.nodes.get_mut(&follower).unwrap();
        let before = node.last_index();
        for m in appends {
            node.step(m).unwrap();
        }
        let stepped = node.last_index();
        assert!(
            stepped > before,
            "seed {seed}: the appends brought entries ({before} -> {stepped})"
        );
        assert!(node.has_ready(), "seed {seed}: and they are not written yet");
        sim.take_over(follower);
        let node = &sim.nodes[&follower];
        assert_eq!(node.role(), StateRole::Leader, "seed {seed}");
        assert!(
            node.last_index() > stepped,
            "seed {seed}: the new leader's log holds the stepped entries and its own"
        );
        // What it took over with commits alone, the stepped commands too.
        let cmds = write_some(&mut sim, 3);
        assert!(!cmds.is_empty(), "seed {seed}: it commits alone");
        let applied = &sim.nodes[&follower].state_machine().by_index;
        for n in 0..3u64 {
            assert!(
                applied.values().any(|&c| c == 1_000_000 + n),
                "seed {seed}: command {n} of the unwritten appends is kept: {applied:?}"
            );
        }
    }
}
