//! The invariants, checked after every step.

use std::collections::BTreeSet;

use super::super::host::{ELECTION_MS, HEARTBEAT_MS, TICK_MS};
use super::super::HEAL_GRACE_MS;
use super::World;
use crate::table::{ClientState, LicenseType};

impl World {
    /// Without a witness, both servers lead alone in their own
    /// configuration: after a partition each took over as sole voter (or
    /// one did, and the other after the first crashed), so each log holds
    /// writes the other lacks until one yields. Writes acknowledged in
    /// that state are the documented risk too, whether or not the link
    /// is still cut when they are made.
    pub(super) fn diverged(&self) -> bool {
        !self.witness && self.voters.get(&1) == Some(&vec![1]) && self.voters.get(&2) == Some(&vec![2])
    }

    /// Every invariant, after every step.
    pub(super) fn check(&mut self) -> Result<(), String> {
        for h in &self.hosts[..2] {
            if let Some(n) = h.node() {
                self.voters.insert(h.id, n.conf_state().voters);
            } else if h.rejoin {
                self.voters.remove(&h.id);
            }
        }
        self.check_s1()?;
        self.check_s2()?;
        self.check_s3()?;
        self.check_s4()
    }

    /// Whether one of `serving` is a deposed leader: another serving
    /// member leads in a later term that a majority has reached, so its
    /// appends are refused and it can commit nothing (it steps down at its
    /// next message from that term; a leadership transfer it started
    /// elected the other at once).
    fn one_is_deposed(&self, serving: &BTreeSet<u64>) -> bool {
        let term = |id: u64| self.hosts[(id - 1) as usize].node().map_or(0, |n| n.term());
        let members = self.hosts.len();
        serving.iter().any(|&x| {
            serving.iter().any(|&y| {
                let later = term(y);
                let reached = self
                    .hosts
                    .iter()
                    .filter(|h| h.node().is_some_and(|n| n.term() >= later))
                    .count();
                y != x && later > term(x) && reached > members / 2
            })
        })
    }

    /// With a witness, whether serving member `id` is the former leader
    /// that S1 tolerates beside another: cut off from the majority for at
    /// most two election timeouts (and a tick), or deposed by another
    /// serving member that leads in a later term a majority has reached.
    fn can_commit_nothing(&self, id: u64, serving: &BTreeSet<u64>) -> bool {
        let isolated = self
            .minority_since
            .get(&id)
            .is_some_and(|&since| self.t <= since + 2 * ELECTION_MS + 2 * TICK_MS);
        let term = |m: u64| self.hosts[(m - 1) as usize].node().map_or(0, |n| n.term());
        let members = self.hosts.len();
        let deposed = serving.iter().any(|&y| {
            let later = term(y);
            let reached = self
                .hosts
                .iter()
                .filter(|h| h.node().is_some_and(|n| n.term() >= later))
                .count();
            y != id && later > term(id) && reached > members / 2
        });
        isolated || deposed
    }

    /// Whether member `id` can exchange messages with no other member.
    fn in_minority(&self, id: u64) -> bool {
        (1..=self.hosts.len() as u64).filter(|&m| m != id).all(|m| {
            self.cut.contains(&(id, m)) || self.cut.contains(&(m, id)) || !self.hosts[(m - 1) as usize].up()
        })
    }

    fn check_s1(&mut self) -> Result<(), String> {
        if self.witness {
            for id in 1..=2 {
                if self.in_minority(id) {
                    let t = self.t;
                    self.minority_since.entry(id).or_insert(t);
                } else {
                    self.minority_since.remove(&id);
                }
            }
        }
        let serving: BTreeSet<u64> = self.hosts.iter().filter(|h| h.serving()).map(|h| h.id).collect();
        if serving != self.serving_before {
            let started = serving.difference(&self.serving_before).count() as u64;
            if !self.serving_before.is_empty() || self.t > 0 {
                self.outcome.takeovers_served += started;
            }
            self.serving_before = serving.clone();
        }
        if serving.len() < 2 {
            return Ok(());
        }
        if self.witness {
            // An isolated former leader serves until check-quorum steps it
            // down, at most two election timeouts (and a tick) after it lost
            // its majority; it can commit nothing meanwhile (`node`'s doc).
            let stale = serving.iter().any(|id| {
                self.minority_since
                    .get(id)
                    .is_some_and(|&since| self.t <= since + 2 * ELECTION_MS + 2 * TICK_MS)
            });
            if stale || self.one_is_deposed(&serving) {
                return Ok(());
            }
            return Err(self.fail(&format!("S1: with a witness, {serving:?} serve at once")));
        }
        if !self.servers_cut() && self.t >= self.healed_at + HEAL_GRACE_MS {
            return Err(self.fail(&format!(
                "S1: {serving:?} serve at once while the servers are not cut off from each other"
            )));
        }
        Ok(())
    }

    /// S2. A client the serving table holds as up has at least what was
    /// acknowledged to it. A client marked down (or removed) although it
    /// was heard within two heartbeat intervals is the table's time gone
    /// wrong (`server::stamp`, a known gap: counted, and a failure with
    /// [`Knobs::strict_time`]); one silent for longer lost its licenses
    /// as SPEC §4 says.
    fn check_s2(&mut self) -> Result<(), String> {
        let mut wrong_time = Vec::new();
        let serving: BTreeSet<u64> = self.hosts.iter().filter(|h| h.serving()).map(|h| h.id).collect();
        for h in &self.hosts {
            if !h.serving() {
                continue;
            }
            if self.witness && serving.len() > 1 && self.can_commit_nothing(h.id, &serving) {
                // The former leader S1 lets serve a moment longer: it can
                // acknowledge nothing, so it owes no switch what the new
                // leader acknowledged since (seed 8327).
                continue;
            }
            let node = h.node().expect("serving");
            if node.applied_index() != node.last_index() {
                continue;
            }
            let table = h.table().expect("serving");
            for s in &self.switches {
                let Some(last_ack) = s.last_ack else { continue };
                if s.outstanding.is_some() || (!self.witness && s.at_risk) {
                    continue;
                }
                let client = table.client(&s.id);
                let used = client.map_or(0, |c| c.used_of(&LicenseType::new("AP")));
                if used >= s.sure {
                    continue;
                }
                let up = client.is_some_and(|c| c.state == ClientState::Up);
                if !up {
                    if self.t.saturating_sub(last_ack) >= 2 * HEARTBEAT_MS {
                        continue;
                    }
                    wrong_time.push((s.id.clone(), h.id, last_ack, client.map(|c| c.last_heard_ms)));
                    continue;
                }
                return Err(self.fail(&format!(
                    "S2: {} was acknowledged {} AP (last ack at {last_ack} ms) but serving {} has {used}",
                    s.id, s.sure, h.id
                )));
            }
        }
        for (id, host, last_ack, heard) in wrong_time {
            let what = format!(
                "S2 (time): serving {host} marked {id} down or removed it although it was acknowledged at \
                 {last_ack} ms (last heard {heard:?})"
            );
            if self.knobs.strict_time {
                return Err(self.fail(&what));
            }
            if self.flagged.insert(id) {
                self.outcome.wrong_time += 1;
                self.note(what);
            }
        }
        Ok(())
    }

    fn check_s3(&self) -> Result<(), String> {
        for h in &self.hosts {
            let Some(table) = h.table() else { continue };
            for (ty, e) in table.pool() {
                if e.used > e.total {
                    return Err(self.fail(&format!(
                        "S3: on {} {ty} used {} > total {}",
                        h.id, e.used, e.total
                    )));
                }
            }
        }
        Ok(())
    }

    fn check_s4(&mut self) -> Result<(), String> {
        // Split logs (both lead alone, the documented risk without a
        // witness) may even share a term; they are compared again once
        // one has yielded.
        if self.diverged() {
            return Ok(());
        }
        let n = self.hosts.len();
        for i in 0..n {
            for j in i + 1..n {
                let (a, b) = (&self.hosts[i], &self.hosts[j]);
                let (Some(x), Some(y)) = (a.node(), b.node()) else {
                    continue;
                };
                let (ia, ib) = (x.applied_index(), y.applied_index());
                if ia != ib || ia == 0 || self.compared.get(&(a.id, b.id)) == Some(&(ia, ib)) {
                    continue;
                }
                let (ta, tb) = (x.term_at(ia), y.term_at(ib));
                if ta.is_none() || ta != tb {
                    continue;
                }
                let key = (a.id, b.id);
                let (sa, sb) = (
                    a.table().expect("up").snapshot(),
                    b.table().expect("up").snapshot(),
                );
                let settings_differ = a.table().expect("up").config() != b.table().expect("up").config();
                if sa != sb {
                    return Err(self.fail(&format!(
                        "S4: {} and {} differ at applied index {ia} (term {ta:?}){}",
                        a.id,
                        b.id,
                        if settings_differ {
                            ", settings included"
                        } else {
                            ""
                        }
                    )));
                }
                self.compared.insert(key, (ia, ib));
            }
        }
        Ok(())
    }
}
