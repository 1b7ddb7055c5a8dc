//! Who leads: promoting a caught-up learner, handing leadership over,
//! judging whether this member is in sync, and the split-brain yield.

use super::*;

impl<S: StateMachine> Node<S> {
    /// A witness leads only to repair a server's log: as soon as a voter
    /// holds everything it has, leadership goes there.
    ///
    /// Only to a voter heard from lately (raft's `recent_active`) whose
    /// match was proven in this term (raft resets it when a member starts
    /// to lead, and [`Node::forget_lost_progress`] when the member shows it
    /// lost its log). A transfer that raft gave up on (the voter never
    /// campaigned within an election timeout) is tried next with another
    /// voter so matched, if there is one: never the same one every time.
    pub(super) fn witness_hand_over(&mut self) {
        if self.raw.raft.lead_transferee.is_some() {
            return;
        }
        let last = self.raw.raft.raft_log.last_index();
        let me = self.cfg.id;
        let ready: Vec<u64> = self
            .conf_state()
            .voters
            .iter()
            .copied()
            .filter(|&id| {
                id != me
                    && self
                        .raw
                        .raft
                        .prs()
                        .get(id)
                        .is_some_and(|p| p.matched == last && p.recent_active)
            })
            .collect();
        // Rotate: the first ready voter after the one tried last.
        let target = match self.handed_to {
            Some(tried) => ready
                .iter()
                .copied()
                .find(|&id| id > tried)
                .or(ready.first().copied()),
            None => ready.first().copied(),
        };
        if let Some(to) = target {
            tracing::info!(member = me, to, "witness hands leadership to a caught-up server");
            self.handed_to = Some(to);
            self.raw.transfer_leader(to);
        }
    }

    /// As leader: a member that answers a heartbeat with commit index 0
    /// holds no log (it lost its disk, or yielded, since it acknowledged
    /// entries). Its progress still says matched where it was, so raft
    /// would send it only heartbeats (an empty member does not reject
    /// those) and a witness would hand leadership to it. Probe it again from
    /// there: it rejects, and raft sends it a snapshot. Every member that
    /// holds a log has a commit index of at least 1 (its founding
    /// snapshot), so an old answer delivered late cannot look like this.
    pub(super) fn forget_lost_progress(&mut self, msg: &Message) {
        if msg.get_msg_type() != MessageType::MsgHeartbeatResponse
            || self.raw.raft.state != StateRole::Leader
            || msg.commit != 0
            || msg.term != self.raw.raft.term
        {
            return;
        }
        let Some(pr) = self.raw.raft.mut_prs().get_mut(msg.from) else {
            return;
        };
        if pr.matched == 0 {
            return;
        }
        let was = pr.matched;
        pr.matched = 0;
        pr.become_probe();
        // Probe where it was: it rejects, and its hint (its last index, 0)
        // takes raft down to the snapshot.
        pr.next_idx = was + 1;
        crate::warn_limited!(
            self.log,
            "lost progress",
            member = self.cfg.id,
            from = msg.from,
            matched = was,
            "member {} answers with no log although it had acknowledged entries up to {was}: \
             it lost its store; probing it again (it gets a snapshot)",
            msg.from
        );
    }

    pub(super) fn maybe_promote(&mut self) {
        let cs = self.conf_state();
        self.promote.retain(|id| !cs.voters.contains(id));
        // A sole voter (after a takeover, possibly restarted since) always
        // wants its learner back as a voter: it has no redundancy without.
        let sole = cs.voters == [self.cfg.id];
        let Some(&id) = cs.learners.iter().find(|id| sole || self.promote.contains(id)) else {
            return;
        };
        // Caught up is not enough: a member that is stopping (its graceful
        // stop hands leadership here, then exits) is caught up for the few
        // milliseconds it still answers, and promoting it then leaves this
        // member with a dead voter it needs for every commit. Promote a
        // learner that has answered every heartbeat for an election timeout
        // and by then holds everything committed when that window began: it
        // keeps up. (Caught up to the last commit flickers under load, with
        // entries always in flight, so it is not asked for.)
        let hb = self.cfg.heartbeat_tick.max(1) as u64;
        let heard = self
            .heard
            .get(&id)
            .is_some_and(|&at| self.ticks.saturating_sub(at) <= hb + 1);
        if !heard {
            self.steady_since.remove(&id);
            return;
        }
        let committed = self.raw.raft.raft_log.committed;
        let (since, mark) = *self.steady_since.entry(id).or_insert((self.ticks, committed));
        if self.ticks - since < self.cfg.election_tick as u64 {
            return;
        }
        let matched = self.raw.raft.prs().get(id).map_or(0, |p| p.matched);
        if matched < mark {
            // Not keeping up yet: judge the next window.
            self.steady_since.insert(id, (self.ticks, committed));
            return;
        }
        if self.demotion.is_some() || self.raw.raft.pending_conf_index > self.applied_index() {
            return;
        }
        self.steady_since.remove(&id);
        tracing::info!(
            member = self.cfg.id,
            learner = id,
            "learner caught up: promoting to voter"
        );
        let cc = conf_change(&[(ConfChangeType::AddNode, id)]);
        if let Err(e) = self.raw.propose_conf_change(vec![], cc) {
            tracing::debug!(member = self.cfg.id, "promotion of {id} not proposed: {e}");
        }
    }

    pub(super) fn maybe_hand_over(&mut self) {
        let Some(p) = self.preferred_leader else { return };
        if p == self.cfg.id || self.raw.raft.lead_transferee.is_some() {
            return;
        }
        if self.conf_state().voters.contains(&p)
            && self
                .raw
                .raft
                .prs()
                .get(p)
                .is_some_and(|pr| pr.matched == self.raw.raft.raft_log.last_index())
        {
            tracing::info!(
                member = self.cfg.id,
                to = p,
                "handing leadership to the preferred member"
            );
            self.raw.transfer_leader(p);
        }
    }

    /// What a leader's append or snapshot can tell about our log, noted
    /// before raft handles it.
    pub(super) fn leader_report(&self, msg: &Message) -> Option<LeaderReport> {
        let log = &self.raw.raft.raft_log;
        let kind = match msg.get_msg_type() {
            // raft appends only if our log holds the entry the new ones
            // follow; below our commit it answers without looking.
            MessageType::MsgAppend => ReportKind::Append {
                accepted: msg.index >= log.committed && log.match_term(msg.index, msg.log_term),
            },
            MessageType::MsgSnapshot => {
                // raft restores it only if our log lacks its last entry
                // (otherwise it just moves our commit there).
                let meta = msg.get_snapshot().get_metadata();
                ReportKind::Snapshot {
                    restores: meta.index > log.committed && !log.match_term(meta.index, meta.term),
                    index: meta.index,
                }
            }
            _ => return None,
        };
        Some(LeaderReport {
            from: msg.from,
            term: msg.term,
            commit: msg.commit,
            kind,
        })
    }

    /// Applies the in-sync rule (see [`Node::in_sync`]) to a message raft
    /// has just handled.
    pub(super) fn judge_sync(&mut self, r: LeaderReport) {
        self.judged_by_current_leader();
        let raft = &self.raw.raft;
        if raft.state == StateRole::Leader || raft.leader_id != r.from || raft.term != r.term {
            // Not from the leader we follow (stale term, or ignored).
            return;
        }
        let (commit, last) = (raft.raft_log.committed, raft.raft_log.last_index());
        match r.kind {
            ReportKind::Append { accepted } => {
                if commit >= r.commit {
                    // Our commit reached the leader's (capped by what it
                    // sent): we hold all it had committed.
                    self.set_in_sync();
                } else if accepted || last < r.commit {
                    self.fall_behind(Some(r.commit), last);
                }
            }
            // We lacked entries the leader had compacted away. The snapshot
            // may be far behind the leader's commit, which it does not
            // carry: the next append or a probe tells when we are back.
            ReportKind::Snapshot { restores: true, .. } => self.fall_behind(None, last),
            ReportKind::Snapshot { restores: false, .. } => {}
        }
    }

    /// A refusal of our (pre-)vote request from a member that holds no log
    /// (`no_log_answer`). When that member is the only other voter (a pair
    /// without a witness) and we hold a log, nothing committed that we
    /// lack survives anywhere: whatever the peer committed alone, if it
    /// ever did, went with its log. Our log is then as complete as any
    /// there is: in sync. Without this a server back with the log after
    /// its peer lost its disk, and not in sync since its own restart,
    /// could neither take over (refused: not in sync) nor be elected (the
    /// empty peer has no vote to give), and advertised the lowest VRRP
    /// priority, as the empty peer does: nobody served.
    pub(super) fn peer_holds_no_log(&mut self, msg: &Message) -> bool {
        if !matches!(
            msg.get_msg_type(),
            MessageType::MsgRequestVoteResponse | MessageType::MsgRequestPreVoteResponse
        ) || !msg.reject
            || msg.commit != 0
            || msg.context.as_ref() != NO_LOG
        {
            return false;
        }
        let me = self.cfg.id;
        let cs = self.conf_state();
        let mut voters = cs.voters.clone();
        voters.sort_unstable();
        let mut pair = vec![me, msg.from];
        pair.sort_unstable();
        let alone_with_it = voters == pair && cs.voters_outgoing.is_empty() && msg.from != me;
        if alone_with_it && !self.in_sync && self.commit_index() > 0 {
            tracing::warn!(
                member = me,
                peer = msg.from,
                commit = self.commit_index(),
                "the only other voter holds no log (lost its disk, or yielded): this member's log \
                 is the most complete there is; in sync"
            );
            self.set_in_sync();
        }
        true
    }

    /// Makes `in_sync` and `sync_target` about the leader this member now
    /// follows. A follower that was in sync with one leader (or with
    /// itself, leading) and now follows another, or the same in a later
    /// term, knows nothing yet of what that one committed: that leader may
    /// have taken over as sole voter and committed alone. Not in sync until
    /// its append or its answer to a probe says so. (A member that follows
    /// nobody keeps what it knew: it cannot see what it has not been told.)
    pub(super) fn judged_by_current_leader(&mut self) {
        let r = &self.raw.raft;
        let now = (r.term, r.leader_id);
        if r.state != StateRole::Follower || r.leader_id == raft::INVALID_ID || now == self.judged_by {
            return;
        }
        if self.in_sync {
            tracing::info!(
                member = self.cfg.id,
                leader = r.leader_id,
                term = r.term,
                "following a new leader: not in sync until it shows this member holds what it committed"
            );
        }
        self.judged_by = now;
        self.in_sync = false;
        self.sync_target = None;
    }

    pub(super) fn set_in_sync(&mut self) {
        self.judged_by = (self.raw.raft.term, self.raw.raft.leader_id);
        if !self.in_sync {
            tracing::info!(
                member = self.cfg.id,
                commit = self.commit_index(),
                "in sync: this member holds every entry its leader committed"
            );
        }
        self.in_sync = true;
        self.sync_target = None;
    }

    /// The leader showed us it committed entries we lack: not in sync until
    /// our commit reaches `target` (or, without one, until an append or a
    /// probe tells us the leader's commit and we reach it).
    pub(super) fn fall_behind(&mut self, target: Option<u64>, last: u64) {
        if self.in_sync {
            tracing::info!(
                member = self.cfg.id,
                leader = self.raw.raft.leader_id,
                commit = self.commit_index(),
                last,
                leader_commit = ?target,
                "behind the leader: it is repairing our log; not in sync until caught up"
            );
        }
        self.in_sync = false;
        self.sync_target = target.map(|t| self.sync_target.map_or(t, |s| s.max(t)));
    }

    /// A witness that has not heard from a leader for an election timeout
    /// gets a (pre-)vote request from a voter whose log is behind its own.
    pub(super) fn witness_must_repair(&self, msg: &Message) -> bool {
        if !self.cfg.witness
            || !matches!(
                msg.get_msg_type(),
                MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
            )
        {
            return false;
        }
        let r = &self.raw.raft;
        let voter =
            self.conf_state().voters.contains(&msg.from) && self.conf_state().voters.contains(&self.cfg.id);
        // A witness still (pre-)campaigning from an earlier request tries
        // again: its tick never restarts an election by itself.
        let leaderless = match r.state {
            StateRole::Follower => r.election_elapsed >= r.election_timeout(),
            StateRole::PreCandidate | StateRole::Candidate => true,
            StateRole::Leader => false,
        };
        let ours = (r.raft_log.last_term(), r.raft_log.last_index());
        voter && leaderless && (msg.log_term, msg.index) < ours
    }

    /// A leader's message from a member that our configuration says is not
    /// a voter, while we are one: both sides took over during a partition.
    pub(super) fn split_brain(&self, msg: &Message) -> bool {
        use MessageType::*;
        if !matches!(msg.get_msg_type(), MsgAppend | MsgHeartbeat | MsgSnapshot) {
            return false;
        }
        let (cs, conf_index) = self.raw.store().conf();
        // Only a takeover makes a member the sole voter with its peer as a
        // learner. Any other configuration that lists the sender as a
        // learner is merely stale (say, restored from an old snapshot after
        // a lost disk): raft brings it up to date if we listen.
        let sole = cs.voters == [self.cfg.id] && cs.voters_outgoing.is_empty();
        sole && cs.learners.contains(&msg.from) && !self.conf_is_senders_snapshot(msg, conf_index)
    }

    /// Whether our configuration is the one in the snapshot `msg`'s sender
    /// handed us in this term, unchanged since: its own history (it was a
    /// learner then, and promoted since, in the entries that follow), not
    /// a takeover of ours. Yielding to it would discard what it just sent
    /// and ask for it again, for ever (a leader that had not taken a fresh
    /// snapshot since its promotion; see `LogStore::snapshot_is_current`).
    fn conf_is_senders_snapshot(&self, msg: &Message, conf_index: u64) -> bool {
        let Some((from, term, index)) = self.snapshot_from else {
            return false;
        };
        let snap = self.raw.store().snapshot_ref().get_metadata();
        from == msg.from
            && term == msg.term
            && term == self.raw.raft.term
            && conf_index == index
            && snap.index == index
            && snap.get_conf_state() == self.raw.store().conf().0
    }

    /// Discards this member's log (it lost a split brain) and waits for the
    /// winner's snapshot. What it discards is kept first, durably: if that
    /// fails, nothing is discarded and the error stops the member.
    pub(super) fn yield_to(&mut self, winner: u64, winner_term: u64) -> Result<(), NodeError> {
        let term = self.raw.raft.term;
        let commit = self.commit_index();
        let discarded = self.discarded_log(winner, winner_term);
        let kept = self.raw.store().disk().keep_discarded(&discarded)?;
        let (shown, more) = discarded.committed_summary(YIELD_LOG_LIST);
        let mut list = if shown.is_empty() {
            "none".to_string()
        } else {
            shown.join("; ")
        };
        if more > 0 {
            list.push_str(&format!("; and {more} more, see {kept}"));
        }
        let snap_index = discarded.snapshot.as_ref().map_or(0, |s| s.index);
        tracing::error!(
            member = self.cfg.id,
            winner,
            discarded_committed = commit,
            term,
            kept = %kept,
            "SPLIT BRAIN HEALED: both members took over during a partition; this member yields to \
             member {winner}, discards its log (committed up to {commit}) and rebuilds from \
             {winner}'s snapshot. What it discarded is kept in {kept}: its snapshot at {snap_index} \
             and {} committed entries after it: {list}",
            discarded.committed_entries
        );
        for (_, (_, token)) in std::mem::take(&mut self.proposals) {
            self.out.push(Output::Proposed(token, Err(ProposeError::Unknown)));
        }
        self.fail_reads(ProposeError::Dropped);
        self.sm.restore(&self.initial_state)?;
        let store = self.raw.mut_store();
        store.clear();
        store.mark_rebuilding(format!(
            "yielded to member {winner} after a split brain (term {term}); what it discarded is kept in {kept}"
        ));
        store.flush()?;
        let times = store.flush_times();
        let mut fresh = LogStore::open(store.disk())?;
        fresh.keep_flush_times(times);
        self.raw = Self::raw_node(&self.cfg, fresh, 0)?;
        self.last_term = 0;
        self.timeout_key = (u64::MAX, StateRole::Follower, 0);
        self.derandomize();
        self.promote.clear();
        self.demotion = None;
        self.lead_term = 0;
        self.demotion_at = None;
        self.in_sync = false;
        self.sync_target = None;
        self.snapshot_from = None;
        self.out.push(Output::Yielded {
            winner,
            discarded_committed: commit,
            kept,
        });
        Ok(())
    }

    /// Everything this member holds, decoded, as a yield keeps it.
    pub(super) fn discarded_log(&self, winner: u64, winner_term: u64) -> DiscardedLog {
        let store = self.raw.store();
        let commit = self.commit_index();
        let (cs, conf_index) = store.conf();
        let snap = store.snapshot_ref();
        let entries: Vec<DiscardedEntry> = store
            .all_entries()
            .iter()
            .map(|e| DiscardedEntry {
                index: e.index,
                term: e.term,
                entry_type: format!("{:?}", e.get_entry_type()),
                committed: e.index <= commit,
                decoded: describe_entry::<S>(e),
                data_hex: hex(&e.data),
            })
            .collect();
        DiscardedLog {
            format: DISCARDED_FORMAT.into(),
            member: self.cfg.id,
            winner,
            term: self.raw.raft.term,
            winner_term,
            yielded_at_unix_ms: 0,
            commit,
            voters: cs.voters.clone(),
            learners: cs.learners.clone(),
            conf_index,
            committed_entries: entries.iter().filter(|e| e.committed).count() as u64,
            snapshot: (snap.get_metadata().index > 0).then(|| DiscardedSnapshot {
                index: snap.get_metadata().index,
                term: snap.get_metadata().term,
                data_hex: hex(snap.get_data()),
            }),
            entries,
        }
    }
}
