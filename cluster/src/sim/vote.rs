//! A takeover asked for moments after this member voted for its peer.

use raft::eraftpb::{Message, MessageType};

use super::*;

/// Found by the whole-pair simulation (seed 59006, issue 11, without a
/// witness): raft was leaderless for two election timeouts, so the rules
/// asked 2 to take over as sole voter; meanwhile 2 had voted for 1, which
/// was elected and served, and 2 took over 16 ms after its vote: both
/// served while the cluster link was up (S1). A member that has just
/// voted for its peer refuses, until it hears the leader or the vote's
/// election timeout runs out.
#[test]
fn a_member_that_just_voted_for_its_peer_does_not_take_over() {
    for seed in 0..5 {
        let mut sim = Sim::new(950 + seed, &pair());
        let leader = elected(&mut sim);
        let other = 3 - leader;
        write_some(&mut sim, 3);
        // The leader goes; the other, in sync, finds raft leaderless.
        sim.crash(leader);
        sim.run(40);
        let node = sim.nodes.get_mut(&other).unwrap();
        assert_eq!(node.leader(), None, "seed {seed}: leaderless");
        // The old leader, back, asks for its vote in the next term, with
        // a log as long: the other grants it.
        let mut ask = Message::default();
        ask.set_msg_type(MessageType::MsgRequestVote);
        ask.from = leader;
        ask.to = other;
        ask.term = node.term() + 1;
        ask.log_term = node.term();
        ask.index = node.last_index();
        node.step(ask).unwrap();
        node.process_ready().unwrap();
        let granted = node.drain_outputs().into_iter().any(|o| {
            matches!(o, Output::Send(ref m) if m.get_msg_type() == MessageType::MsgRequestVoteResponse && !m.reject)
        });
        assert!(granted, "seed {seed}: the vote is granted");
        let refused = node.take_over_as_sole_voter();
        assert!(
            matches!(refused, Err(crate::TakeoverError::VotedForPeer(p)) if p == leader),
            "seed {seed}: the peer may lead with this vote: {refused:?}"
        );
        assert_ne!(node.role(), StateRole::Leader, "seed {seed}");
        // No leader comes of it (the peer is gone again): once the vote's
        // election timeout runs out the member campaigns, and the takeover
        // is taken.
        sim.run(40);
        sim.take_over(other);
        assert_eq!(sim.leader(), Some(other), "seed {seed}");
    }
}
