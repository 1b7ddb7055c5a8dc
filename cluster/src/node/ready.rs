//! Raft's `Ready`: persisting, sending, applying committed entries and
//! membership changes, snapshots, and answering reads.

use super::*;

impl<S: StateMachine> Node<S> {
    /// Handles everything raft has ready, in the documented order.
    ///
    /// # Errors
    /// Storage failed or the log holds something this build cannot apply;
    /// the member must stop.
    pub fn process_ready(&mut self) -> Result<(), NodeError> {
        self.derandomize();
        if !self.raw.has_ready() {
            self.after_ready();
            return Ok(());
        }
        let mut rd = self.raw.ready();
        // 1. Messages that do not depend on what we are about to persist.
        for m in rd.take_messages() {
            self.send(m);
        }
        // 2. A snapshot from the leader replaces the state machine.
        let installed_snapshot = !rd.snapshot().is_empty();
        if installed_snapshot {
            let snap = rd.snapshot().clone();
            self.install_snapshot(snap)?;
        }
        // 3. Committed entries (already durable here and on a quorum).
        self.apply_entries(rd.take_committed_entries())?;
        // 4-5. New entries and hard state, then one fsync. A change of the
        // commit index alone needs none (raft-rs `must_sync`, etcd's
        // `MustSync`): it rides with the next durable write, and a lower
        // commit after a crash is safe.
        let must_sync = rd.must_sync() || installed_snapshot;
        self.raw.mut_store().append(rd.entries())?;
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().set_hard_state(hs.clone());
        }
        if must_sync {
            self.raw.mut_store().flush()?;
        }
        for rs in rd.take_read_states() {
            self.read_state(rs.index, &rs.request_ctx);
        }
        // 6. Messages that promise what we just persisted (votes, append acks).
        for m in rd.take_persisted_messages() {
            self.send(m);
        }
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            // Not fsynced on its own: a lower commit after a crash is safe,
            // raft learns it again. It rides with the next durable write.
            self.raw.mut_store().set_commit(commit);
        }
        for m in light.take_messages() {
            self.send(m);
        }
        self.apply_entries(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.maybe_snapshot()?;
        self.after_ready();
        Ok(())
    }

    /// Hands a message raft wants sent to the driver; to a learner that
    /// may not know it is one ([`Node::holds_back`]), no commit index: an
    /// append goes as a heartbeat with commit 0, which tells it the term
    /// (a former leader steps down at once) and whose answer makes raft
    /// send the append again, by then with a commit index the learner
    /// reaches only by holding its demotion; an answer to its probe is
    /// dropped (it asks again).
    fn send(&mut self, m: Message) {
        if !self.holds_back(&m) {
            self.out.push(Output::Send(m));
            return;
        }
        tracing::debug!(
            member = self.cfg.id,
            to = m.to,
            kind = ?m.get_msg_type(),
            "the learner's demotion is not committed yet: sent without a commit index"
        );
        match m.get_msg_type() {
            MessageType::MsgAppend => {
                let mut hb = Message::default();
                hb.set_msg_type(MessageType::MsgHeartbeat);
                hb.from = m.from;
                hb.to = m.to;
                hb.term = m.term;
                self.out.push(Output::Send(hb));
            }
            MessageType::MsgReadIndexResp => {}
            _ => self.out.push(Output::Send(m)),
        }
    }

    pub(super) fn after_ready(&mut self) {
        self.judged_by_current_leader();
        if self.raw.raft.state == StateRole::Leader
            || self.sync_target.is_some_and(|t| self.commit_index() >= t)
        {
            // A leader holds every committed entry.
            self.set_in_sync();
        }
        // What kept a demotion out of the log may have been applied just now.
        self.demote_if_needed();
        let term = self.raw.raft.term;
        if term != self.last_term {
            self.last_term = term;
            // A read asked in an older term may never be answered.
            let stale: Vec<Token> = self
                .reads_asked
                .iter()
                .filter(|(_, &t)| t < term)
                .map(|(&tok, _)| tok)
                .collect();
            for tok in stale {
                self.reads_asked.remove(&tok);
                self.out.push(Output::Read(tok, Err(ProposeError::Dropped)));
            }
        }
        if !self.reads_deferred.is_empty() {
            if self.raw.raft.state != StateRole::Leader {
                for tok in std::mem::take(&mut self.reads_deferred) {
                    self.out.push(Output::Read(
                        tok,
                        Err(ProposeError::NotLeader {
                            leader: self.leader(),
                        }),
                    ));
                }
            } else if self.raw.raft.commit_to_current_term() {
                for tok in std::mem::take(&mut self.reads_deferred) {
                    self.reads_asked.insert(tok, term);
                    self.raw.read_index(tok.to_be_bytes().to_vec());
                }
            }
        }
        let applied = self.applied_index();
        let mut i = 0;
        while i < self.reads_ready.len() {
            if self.reads_ready[i].0 <= applied {
                let (_, tok) = self.reads_ready.swap_remove(i);
                self.out.push(Output::Read(tok, Ok(())));
            } else {
                i += 1;
            }
        }
    }

    pub(super) fn read_state(&mut self, index: u64, ctx: &[u8]) {
        if ctx == SYNC_PROBE {
            self.judged_by_current_leader();
            self.sync_target = Some(self.sync_target.map_or(index, |t| t.max(index)));
            return;
        }
        let Ok(bytes) = <[u8; 8]>::try_from(ctx) else {
            return;
        };
        let tok = Token::from_be_bytes(bytes);
        if self.reads_asked.remove(&tok).is_some() {
            self.reads_ready.push((index, tok));
        }
    }

    pub(super) fn fail_reads(&mut self, err: ProposeError) {
        let toks: Vec<Token> = std::mem::take(&mut self.reads_asked).into_keys().collect();
        let toks = toks
            .into_iter()
            .chain(std::mem::take(&mut self.reads_deferred))
            .chain(std::mem::take(&mut self.reads_ready).into_iter().map(|(_, t)| t));
        for tok in toks.collect::<Vec<_>>() {
            self.out.push(Output::Read(tok, Err(err.clone())));
        }
    }

    pub(super) fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), NodeError> {
        let index = snap.get_metadata().index;
        tracing::info!(member = self.cfg.id, index, "installing snapshot from the leader");
        self.sm.restore(snap.get_data())?;
        self.raw.mut_store().install_snapshot(snap)?;
        let covered: Vec<u64> = self.proposals.range(..=index).map(|(&i, _)| i).collect();
        for i in covered {
            if let Some((_, tok)) = self.proposals.remove(&i) {
                self.out.push(Output::Proposed(tok, Err(ProposeError::Unknown)));
            }
        }
        Ok(())
    }

    pub(super) fn complete(&mut self, entry: &Entry, result: Applied<S::Response>) {
        if let Some((term, tok)) = self.proposals.remove(&entry.index) {
            let r = if term == entry.term {
                Ok(result)
            } else {
                Err(ProposeError::Dropped)
            };
            self.out.push(Output::Proposed(tok, r));
        }
    }

    pub(super) fn complete_err(&mut self, entry: &Entry, err: ProposeError) {
        if let Some((term, tok)) = self.proposals.remove(&entry.index) {
            let r = if term == entry.term {
                Err(err)
            } else {
                Err(ProposeError::Dropped)
            };
            self.out.push(Output::Proposed(tok, r));
        }
    }

    pub(super) fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        for e in entries {
            match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => {
                    // The new leader's empty entry: a proposal waiting at
                    // this index was overwritten.
                    if let Some((_, tok)) = self.proposals.remove(&e.index) {
                        self.out.push(Output::Proposed(tok, Err(ProposeError::Dropped)));
                    }
                }
                EntryType::EntryNormal => {
                    let cmd: S::Command = bincode::serde::decode_from_slice(&e.data, bincode_config())
                        .map(|(c, _)| c)
                        .map_err(|err| NodeError::Undecodable {
                            index: e.index,
                            reason: err.to_string(),
                        })?;
                    let resp = self.sm.apply(e.index, cmd);
                    self.complete(&e, Applied::Command(resp));
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&e.data).map_err(|err| NodeError::Undecodable {
                        index: e.index,
                        reason: err.to_string(),
                    })?;
                    self.apply_conf(&e, raft_proto::ConfChangeI::into_v2(cc))?;
                }
                EntryType::EntryConfChangeV2 => {
                    let cc =
                        ConfChangeV2::parse_from_bytes(&e.data).map_err(|err| NodeError::Undecodable {
                            index: e.index,
                            reason: err.to_string(),
                        })?;
                    self.apply_conf(&e, cc)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn apply_conf(&mut self, e: &Entry, cc: ConfChangeV2) -> Result<(), NodeError> {
        let (cs, conf_index) = {
            let (cs, i) = self.raw.store().conf();
            (cs.clone(), i)
        };
        if e.index <= conf_index {
            // Already reflected in the stored configuration (replay after restart).
            self.complete(e, Applied::Conf(cs));
            return Ok(());
        }
        match self.raw.apply_conf_change(&cc) {
            Ok(cs) => {
                tracing::info!(member = self.cfg.id, index = e.index, voters = ?cs.voters,
                    learners = ?cs.learners, "membership changed");
                // Durable now, with a commit index that covers it: a member
                // restarting on an older configuration could, in a pair,
                // believe itself the sole voter again and lead alone.
                let store = self.raw.mut_store();
                store.set_conf(cs.clone(), e.index);
                if store.hard_state().commit < e.index {
                    store.set_commit(e.index);
                }
                store.flush()?;
                self.complete(e, Applied::Conf(cs));
            }
            Err(err) => {
                // Every member refuses the same change the same way.
                tracing::warn!(
                    member = self.cfg.id,
                    index = e.index,
                    "membership change refused: {err}"
                );
                self.complete_err(e, ProposeError::InvalidConfChange(err.to_string()));
            }
        }
        Ok(())
    }

    pub(super) fn maybe_snapshot(&mut self) -> Result<(), NodeError> {
        let applied = self.applied_index();
        let snap_index = self.raw.store().snapshot_ref().get_metadata().index;
        let (_, conf_index) = self.raw.store().conf();
        if conf_index > applied {
            // After a restart the stored configuration can be ahead of what
            // is re-applied so far: a snapshot at `applied` must carry the
            // configuration as of `applied`. Wait until apply passes it.
            return Ok(());
        }
        // Raft asked for a snapshot the stored one cannot serve: older than
        // it needs, or from before the last membership change (then one at
        // the same index is remade with the configuration now applied).
        let wanted = self.raw.store().take_snapshot_wanted();
        let stale_conf = wanted && !self.raw.store().snapshot_is_current();
        if applied < snap_index
            || (applied == snap_index && !stale_conf)
            || (!wanted && applied < snap_index + self.cfg.snapshot_interval)
        {
            return Ok(());
        }
        let data = self.sm.snapshot();
        let cs = self.conf_state();
        tracing::debug!(member = self.cfg.id, applied, "snapshot and compaction");
        self.raw.mut_store().compact(applied, cs, data)?;
        Ok(())
    }

    /// Writes anything still buffered (before a clean stop).
    ///
    /// # Errors
    /// The store cannot be written.
    pub fn flush(&mut self) -> Result<(), NodeError> {
        self.raw.mut_store().flush()?;
        Ok(())
    }
}
