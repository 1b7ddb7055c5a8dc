//! The two-node takeover as sole voter, and the demotion of a member
//! that the log says was demoted.

use super::*;

impl<S: StateMachine> Node<S> {
    /// Refuses a new entry while a demotion waits to be appended (see
    /// [`Node::demote_if_needed`]). Refused rather than queued: the wait
    /// ends within the same `process_ready` that applies the log's tail,
    /// or when this member leads again, and callers already retry
    /// [`ProposeError::Dropped`].
    pub(super) fn check_demoted(&mut self) -> Result<(), ProposeError> {
        self.demote_if_needed();
        if self.demotion.is_some() && self.raw.raft.state == StateRole::Leader {
            return Err(ProposeError::Dropped);
        }
        Ok(())
    }

    /// Puts in the log, as soon as raft takes it, the change that tells a
    /// learner it is one, while this member leads as sole voter: after a
    /// takeover (its peer believes it is still one of two voters) and at
    /// the start of each term it leads that way with a single learner
    /// (after a restart, the takeover's entry may not have been written; a
    /// learner that already knows gets a no-op). Until it is in the log
    /// this member appends no command and no other change.
    ///
    /// Otherwise the peer, returning, catches up by appends alone, still
    /// believes it is a voter, and reaches in sync; the sole voter commits
    /// more writes alone and dies before sending them; the peer takes over
    /// without them. A demotion in the log makes it refuse
    /// ([`TakeoverError::Learner`]).
    ///
    /// A fresh raft-rs leader refuses any conf change until it has applied
    /// its whole log (it guesses there may be one unapplied, rather than
    /// look), and refuses it by appending an empty entry in its place while
    /// `propose_conf_change` returns `Ok`. So: look at the unapplied tail;
    /// with no conf change there, correct raft's guess (what it would find
    /// if it looked) and the demotion goes in right after the new term's
    /// empty entry, before anything this member commits alone is sent to
    /// the peer. With one, wait until it is applied (proposals refused).
    pub(super) fn demote_if_needed(&mut self) {
        let r = &self.raw.raft;
        if self.cfg.witness || r.state != StateRole::Leader {
            return;
        }
        let cs = self.conf_state();
        let sole = cs.voters == [self.cfg.id] && cs.voters_outgoing.is_empty();
        if r.term != self.lead_term {
            self.lead_term = r.term;
            if sole && cs.learners.len() == 1 && self.demotion.is_none() {
                self.demotion = Some(cs.learners[0]);
            }
        }
        let Some(learner) = self.demotion else { return };
        if !sole || !cs.learners.contains(&learner) {
            // Promoted back, or the configuration changed otherwise
            // (snapshot, yield): nothing left to tell.
            self.demotion = None;
            return;
        }
        let applied = self.applied_index();
        if self.raw.raft.pending_conf_index > applied && !self.conf_change_after(applied) {
            self.raw.raft.pending_conf_index = applied;
        }
        if self.raw.raft.pending_conf_index > applied {
            return;
        }
        let last = self.raw.raft.raft_log.last_index();
        let cc = conf_change(&[(ConfChangeType::AddLearnerNode, learner)]);
        let proposed = self.raw.propose_conf_change(vec![], cc);
        // raft moves its pending index to the entry only if it appended the
        // change itself, not an empty entry in its place.
        if proposed.is_ok() && self.raw.raft.pending_conf_index > last {
            tracing::info!(
                member = self.cfg.id,
                learner,
                index = self.raw.raft.pending_conf_index,
                "demotion of {learner} to learner appended to the log"
            );
            self.demotion = None;
            self.demotion_at = Some((learner, self.raw.raft.pending_conf_index));
        } else {
            tracing::debug!(
                member = self.cfg.id,
                learner,
                "demotion not appended yet ({proposed:?}); retried"
            );
        }
    }

    /// Whether a message raft wants sent to `m.to` must go without the
    /// commit index that could make `m.to` count itself in sync (see
    /// [`Node::send`]): while this member leads as sole voter and `m.to`,
    /// its learner, may not know it is one, from the takeover (or the
    /// start of a term led that way) until the demotion is committed.
    ///
    /// Every append a leader sends carries its commit index of that
    /// moment. A peer that believes it is still a voter, and whose log
    /// reaches that index, counts itself in sync ([`Node::in_sync`]): right
    /// for a leader that needs its acknowledgement to commit, wrong for a
    /// sole voter, which goes on committing alone. The appends of the
    /// takeover itself carry the commit of before it; a peer that got one
    /// and was cut off took over in turn without what this member had
    /// acknowledged alone since (whole-pair simulation, seeds 21034 and
    /// 25998). Once the demotion is committed, every append carries a
    /// commit index the peer reaches only by holding the demotion, which
    /// makes it refuse to take over ([`TakeoverError::Learner`]).
    pub(super) fn holds_back(&self, m: &Message) -> bool {
        let r = &self.raw.raft;
        if self.cfg.witness || r.state != StateRole::Leader || m.to == self.cfg.id {
            return false;
        }
        if self.demotion == Some(m.to)
            || self
                .demotion_at
                .is_some_and(|(learner, index)| learner == m.to && self.commit_index() < index)
        {
            return true;
        }
        // A term just started as sole voter, before `demote_if_needed`
        // has looked (it will put the demotion in the log).
        // The term first: every message a leader sends comes here, and the
        // configuration is read (cloned) only in a term not yet looked at.
        r.term != self.lead_term && {
            let cs = self.conf_state();
            cs.voters == [self.cfg.id] && cs.learners == [m.to]
        }
    }

    /// Whether the log holds a conf change past `index` (conservatively yes
    /// if it cannot be read).
    pub(super) fn conf_change_after(&self, index: u64) -> bool {
        let log = &self.raw.raft.raft_log;
        if log.last_index() <= index {
            return false;
        }
        log.entries(index + 1, None, GetEntriesContext::empty(false))
            .map_or(true, |es| {
                es.iter().any(|e| e.get_entry_type() != EntryType::EntryNormal)
            })
    }

    /// Makes this member the only voter and leader, keeping its log, when
    /// the caller knows by other means (VRRP mastership) that the peer is gone.
    /// The peer stays as a learner, and is promoted back to voter once it has
    /// caught up after its return.
    ///
    /// Only for a two-voter configuration. If both members take over during a
    /// partition, the one with the lower term (then the higher id) yields
    /// when they hear from each other again.
    ///
    /// Refused unless this member is in sync ([`Node::in_sync`]): it led,
    /// or reached its leader's commit index, and no leader has since shown it
    /// behind. Otherwise the peer may have led alone (after a takeover of
    /// its own) and committed writes this member never received. A member
    /// whose log shows it was demoted to learner is refused too.
    ///
    /// The demotion goes into the log as well, ahead of any command this
    /// member commits alone, so that the peer learns it from the entries it
    /// receives; until it is there (rarely: an unapplied membership change
    /// must be applied first) proposals are refused with
    /// [`ProposeError::Dropped`].
    ///
    /// # Errors
    /// This member is a witness, a learner, not in sync, or the configuration
    /// is not two voters; or the store cannot be written.
    pub fn take_over_as_sole_voter(&mut self) -> Result<(), TakeoverError> {
        if !self.cfg.witness && !self.in_sync && self.conf_state().voters != [self.cfg.id] {
            return Err(TakeoverError::NotInSync);
        }
        if let Some(peer) = self.voted_for_a_peer_lately() {
            return Err(TakeoverError::VotedForPeer(peer));
        }
        self.take_over(false)
    }

    /// The peer this member gave its vote in the current term, less than an
    /// election timeout ago, with no leader heard since. That peer needs
    /// only this vote to lead, and may already lead and serve: a takeover
    /// now would make two (whole-pair simulation, seed 59006: a takeover
    /// decided on raft being leaderless, 16 ms after the vote that ended
    /// it). raft restarts the election timer on a vote; once it runs out
    /// with no word of the peer leading, this member campaigns and the
    /// vote is no longer the current one.
    fn voted_for_a_peer_lately(&self) -> Option<u64> {
        let r = &self.raw.raft;
        (!self.cfg.witness
            && r.state == StateRole::Follower
            && r.leader_id == raft::INVALID_ID
            && r.vote != raft::INVALID_ID
            && r.vote != self.cfg.id
            && r.election_elapsed < r.election_timeout())
        .then_some(r.vote)
    }

    /// [`Node::take_over_as_sole_voter`] without the in-sync check, for an
    /// operator who knows the peer is gone for good (both servers went down
    /// and only this one came back). Writes the peer committed alone after
    /// this member last heard from it are lost; this is logged.
    ///
    /// # Errors
    /// As [`Node::take_over_as_sole_voter`], except [`TakeoverError::NotInSync`].
    pub fn force_take_over_as_sole_voter(&mut self) -> Result<(), TakeoverError> {
        self.take_over(true)
    }

    pub(super) fn take_over(&mut self, forced: bool) -> Result<(), TakeoverError> {
        if self.cfg.witness {
            return Err(TakeoverError::Witness);
        }
        // A sole voter's campaign makes it leader at once, which raft allows
        // only with its whole log persisted (it asserts so, and the member
        // would die). The driver handles a batch of requests before it
        // writes: an append stepped in the same batch as this takeover
        // (a herd keeping the node busy) is still unwritten. Write it first.
        if self.raw.raft.raft_log.persisted < self.raw.raft.raft_log.last_index() {
            self.process_ready().map_err(TakeoverError::Node)?;
        }
        let cs = self.conf_state();
        if !cs.voters_outgoing.is_empty() {
            return Err(TakeoverError::Joint);
        }
        if cs.voters == [self.cfg.id] {
            if self.raw.raft.state != StateRole::Leader {
                self.raw
                    .campaign()
                    .map_err(|e| TakeoverError::Node(NodeError::Raft(e.to_string())))?;
                self.derandomize();
                self.demote_if_needed();
            }
            return Ok(());
        }
        if cs.learners.contains(&self.cfg.id) || self.demoted_in_log() {
            return Err(TakeoverError::Learner);
        }
        let peers: Vec<u64> = cs.voters.iter().copied().filter(|&v| v != self.cfg.id).collect();
        let (true, [peer]) = (cs.voters.contains(&self.cfg.id), peers.as_slice()) else {
            return Err(TakeoverError::NotTwoVoters(cs.voters.clone()));
        };
        let peer = *peer;
        tracing::warn!(
            member = self.cfg.id,
            peer,
            "taking over as sole voter: peer {peer} becomes a learner until it returns and catches up"
        );
        if forced && !self.in_sync {
            tracing::error!(
                member = self.cfg.id,
                peer,
                "FORCED takeover without having synced with {peer} since start: writes {peer} \
                 committed alone after that are lost"
            );
        }
        // Forced, local: the peer cannot agree, it is gone. Everything we hold
        // is kept; whatever the peer committed, we hold too: it needed our
        // vote and our ack (two voters, and no demotion of us in our log).
        let cc = conf_change(&[(ConfChangeType::AddLearnerNode, peer)]);
        let new_cs = self
            .raw
            .apply_conf_change(&cc)
            .map_err(|e| TakeoverError::Node(NodeError::Raft(e.to_string())))?;
        let applied = self.applied_index();
        let store = self.raw.mut_store();
        store.set_conf(new_cs.clone(), applied);
        // A snapshot at the takeover point: a peer that comes back empty (or
        // yields) rebuilds from it rather than from entry 1.
        store
            .compact(applied, new_cs, self.sm.snapshot())
            .map_err(NodeError::from)?;
        store.flush().map_err(NodeError::from)?;
        self.promote.insert(peer);
        if self.raw.raft.state == StateRole::Leader {
            // A leader taking over starts a new term all the same: its
            // peer, in sync with this leader in this term, must learn that
            // the configuration changed outside the log, and a new term is
            // what makes it judge its sync again (see
            // [`Node::judged_by_current_leader`]). raft ignores a campaign
            // while leading.
            let term = self.raw.raft.term;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
        }
        self.raw
            .campaign()
            .map_err(|e| TakeoverError::Node(NodeError::Raft(e.to_string())))?;
        self.derandomize();
        // Put the change in the log too, so the returning peer learns it is
        // a learner from the entries it receives, before any command this
        // member commits alone.
        self.demotion = Some(peer);
        self.demote_if_needed();
        Ok(())
    }

    /// Whether the log holds, beyond the applied configuration, a change
    /// that makes this member a learner: its peer took over and led alone,
    /// and may have committed entries this member has not received.
    pub(crate) fn demoted_in_log(&self) -> bool {
        let (_, conf_index) = self.raw.store().conf();
        let mut demoted = false;
        for e in self
            .raw
            .store()
            .all_entries()
            .iter()
            .filter(|e| e.index > conf_index)
        {
            let cc = match e.get_entry_type() {
                EntryType::EntryConfChangeV2 => ConfChangeV2::parse_from_bytes(&e.data).ok(),
                EntryType::EntryConfChange => ConfChange::parse_from_bytes(&e.data)
                    .ok()
                    .map(raft_proto::ConfChangeI::into_v2),
                EntryType::EntryNormal => None,
            };
            for c in cc
                .iter()
                .flat_map(|cc| cc.get_changes())
                .filter(|c| c.node_id == self.cfg.id)
            {
                match c.get_change_type() {
                    ConfChangeType::AddLearnerNode => demoted = true,
                    ConfChangeType::AddNode => demoted = false,
                    ConfChangeType::RemoveNode => {}
                }
            }
        }
        demoted
    }
}
