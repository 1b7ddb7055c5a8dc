//! The glue's part of a simulated server: what `node::Glue` does after
//! every wake-up (the member's ready loop, the speaker's events, the
//! rules' round and actions) and what it awaits (handback, graceful stop).

use std::net::Ipv4Addr;

use cluster::raft::StateRole;
use cluster::{Applied, Output};
use vrrp::proto::{Event as VrrpEvent, Reason, State};

use super::super::super::keys;
use super::super::super::rules::Action;
use super::{
    facts_of, server_name, vrrp_facts, Busy, Host, Out, Pending, ServerRun, DRAIN_MS, HAND_OVER_MS,
    LEAVE_ACK_MS, SETTINGS_RETRY_MS, VIP,
};
use crate::proto::ServerError;
use crate::table::{CommandError, Reply};

impl Host {
    pub(super) fn vrrp_events(srv: &mut ServerRun, addr: Ipv4Addr, t: u64, out: &mut Vec<Out>) -> bool {
        let mut any = false;
        while let Some(ev) = srv.vrrp.poll_event() {
            any = true;
            match ev {
                VrrpEvent::Transmit(repr) => {
                    let dst = Ipv4Addr::new(224, 0, 0, 18);
                    let payload = repr.to_bytes(vrrp::wire::Checksum::PseudoHeader { src: addr, dst });
                    out.push(Out::Advert(vrrp::wire::ipv4::build(addr, dst, 255, &payload)));
                }
                VrrpEvent::BecomeMaster(reason) => {
                    out.push(Out::Garp);
                    srv.garp_plan = [100, 200, 1000, 2000].iter().map(|d| t + d).collect();
                    out.push(Out::Note(format!("{addr} VRRP master ({reason:?})")));
                    srv.rules.handle_transition(State::Master, Some(reason));
                }
                VrrpEvent::BecomeBackup(reason) => {
                    srv.garp_plan.clear();
                    out.push(Out::Note(format!("{addr} VRRP backup ({reason:?})")));
                    srv.rules.handle_transition(State::Backup, Some(reason));
                }
                VrrpEvent::BecomeInitialize => {
                    srv.garp_plan.clear();
                    let reason = if srv.vrrp.in_fault() {
                        Reason::Fault
                    } else {
                        Reason::Shutdown
                    };
                    out.push(Out::Note(format!("{addr} VRRP initialize ({reason:?})")));
                    srv.rules.handle_transition(State::Initialize, Some(reason));
                }
            }
        }
        any
    }

    /// Runs everything until nothing changes: the member's ready loop and
    /// its outputs, the speaker's events, then the glue's round (the
    /// member's facts, the VRRP status, the peer's word, the rules'
    /// actions), as `Glue::run` does after every wake-up.
    pub(in crate::node::sim) fn settle(&mut self, t: u64, out: &mut Vec<Out>) {
        for _ in 0..64 {
            let Some(run) = &mut self.run else { return };
            if let Err(e) = run.node.process_ready() {
                self.storage_failures += 1;
                self.fail(t, &format!("storage: {e}"), out);
                return;
            }
            let outs = run.node.drain_outputs();
            let mut changed = !outs.is_empty();
            for o in outs {
                self.route(t, o, out);
            }
            changed |= self.feed(t, out);
            match &self.run {
                Some(run) if changed || run.node.has_ready() => {}
                _ => return,
            }
        }
    }

    fn route(&mut self, t: u64, o: Output<Result<Reply, CommandError>>, out: &mut Vec<Out>) {
        let Some(run) = &mut self.run else { return };
        match o {
            Output::Send(m) => out.push(Out::Raft(m)),
            Output::Proposed(token, r) => {
                let Some(srv) = &mut run.srv else { return };
                if srv.settings_token == Some(token) {
                    srv.settings_token = None;
                    if !matches!(r, Ok(Applied::Command(Ok(_)))) {
                        srv.settings_retry = Some(t + SETTINGS_RETRY_MS);
                    }
                }
                let Some(Pending::Switch { switch, conn, req }) = srv.pending.remove(&token) else {
                    return;
                };
                if srv.conns.get(&switch) != Some(&conn) {
                    // The connection closed meanwhile: nobody hears it.
                    return;
                }
                if matches!(r, Ok(Applied::Command(Ok(_)))) {
                    out.push(Out::Note(format!(
                        "{} acks sw{switch} req {req}: term {} applied {} voters {:?}",
                        self.id,
                        run.node.term(),
                        run.node.applied_index(),
                        run.node.conf_state().voters
                    )));
                }
                let answer = match r {
                    Ok(Applied::Command(Ok(reply))) => Ok(reply),
                    Ok(Applied::Command(Err(e))) => Err(ServerError::Refused(e)),
                    Ok(Applied::Conf(_)) => Err(ServerError::NotCommitted("a membership change".into())),
                    Err(e) => Err(crate::node::applier::server_error(e, Some(VIP.to_string()))),
                };
                out.push(Out::Answer {
                    switch,
                    conn,
                    req,
                    answer,
                });
            }
            Output::Read(..) => {}
            Output::Yielded { winner, .. } => {
                out.push(Out::Note(format!("{} yields to {winner}", self.id)));
            }
        }
    }

    /// The glue's round; whether anything changed.
    fn feed(&mut self, t: u64, out: &mut Vec<Out>) -> bool {
        let now = self.mono(t);
        let wall = self.wall(t);
        let Some(run) = &mut self.run else { return false };
        let stamps = std::mem::take(&mut *run.stamps.lock().expect("stamps lock"));
        let Some(srv) = &mut run.srv else { return false };
        let limit = run.node.state_machine().table.config().heartbeat_interval_ms;
        for s in stamps {
            srv.stamper.observe(s, now.into(), limit);
        }
        let mut changed = Self::vrrp_events(srv, self.addr, t, out);
        if let Some(busy) = srv.busy {
            changed |= self.busy_step(t, busy, out);
            return changed;
        }
        if srv.stopping {
            return changed;
        }
        let facts = facts_of(&run.node);
        if srv.published.as_ref() != Some(&facts) {
            let was = srv.published.as_ref().map(|f| (f.role, f.term, f.leader));
            if was != Some((facts.role, facts.term, facts.leader)) {
                out.push(Out::Note(format!(
                    "{} raft {:?} term {} leader {:?} voters {:?}",
                    self.id, facts.role, facts.term, facts.leader, facts.voters
                )));
            }
            srv.published = Some(facts.clone());
            srv.rules.handle_raft(now, facts);
            changed = true;
        }
        let v = vrrp_facts(&srv.vrrp);
        if srv.last_vrrp.as_ref() != Some(&v) {
            srv.last_vrrp = Some(v.clone());
            changed = true;
        }
        srv.rules.handle_vrrp(now, v);
        let word = srv.beacons.peer_word(now);
        srv.rules.handle_peer_word(now, word);
        changed |= self.act(t, wall, out);
        changed
    }

    /// Carries out the rules' actions, in order (`Glue::act`).
    fn act(&mut self, t: u64, wall: u64, out: &mut Vec<Out>) -> bool {
        let now = self.mono(t);
        let mut any = false;
        loop {
            let Some(run) = &mut self.run else { return any };
            let Some(srv) = &mut run.srv else { return any };
            let Some(action) = srv.rules.poll_action() else {
                return any;
            };
            any = true;
            match action {
                Action::PreferLeader(id) => run.node.set_preferred_leader(id),
                Action::TakeOverAsSoleVoter => {
                    let result = run.node.take_over_as_sole_voter().map_err(|e| e.to_string());
                    out.push(Out::Note(format!(
                        "{} takeover as sole voter: {result:?}",
                        self.id
                    )));
                    let facts = facts_of(&run.node);
                    srv.published = Some(facts.clone());
                    srv.rules.takeover_result(now, result, facts);
                }
                Action::TookOver | Action::TakeoverRefused { .. } | Action::Notify { .. } => {}
                Action::PeerDemoted(demoted) => {
                    srv.beacons.peer_demoted(now, demoted, &mut srv.vrrp);
                }
                Action::SetPriority { priority, .. } => {
                    srv.vrrp.set_priority(now, priority);
                }
                Action::Beacon { master, priority } => srv.beacons.publish(master, priority, out),
                Action::HandBack => {
                    out.push(Out::Note(format!("{} hands the VIP back", self.id)));
                    srv.port_paused = true;
                    srv.busy = Some(Busy::HandBackDrain { until: t + DRAIN_MS });
                    // The glue awaits: nothing more until it is done.
                    return true;
                }
                Action::RejoinAsBackup => {
                    srv.vrrp.set_fault(now, false);
                    out.push(Out::Note(format!("{} rejoins as backup", self.id)));
                }
                Action::Serve { serve, .. } => Self::set_serving(srv, serve, out),
                Action::SoonServing(soon) => {
                    srv.soon = soon;
                    if !soon && !srv.serving {
                        // Held requests stop waiting and are refused
                        // (`Connection::await_serving`).
                        for (_, inc) in std::mem::take(&mut srv.held) {
                            out.push(Out::Answer {
                                switch: inc.switch,
                                conn: inc.conn,
                                req: inc.req,
                                answer: Err(ServerError::NotLicenseServer {
                                    vip: Some(VIP.to_string()),
                                }),
                            });
                        }
                    }
                }
                Action::Settings { leads, .. } => {
                    let table = &run.node.state_machine().table;
                    if !leads
                        || srv.settings_token.is_some()
                        || srv.settings_retry.is_some_and(|at| t < at)
                        || self.configured.differences(table).is_empty()
                    {
                        continue;
                    }
                    srv.settings_retry = None;
                    for command in self.configured.proposal(table, &server_name(self.id)) {
                        let token = run.next_token;
                        run.next_token += 1;
                        if run.node.propose(token, &command).is_ok() {
                            srv.settings_token = Some(token);
                            srv.pending.insert(token, Pending::Own);
                        } else {
                            srv.settings_retry = Some(t + SETTINGS_RETRY_MS);
                        }
                    }
                }
                Action::SyncKeys { serve, .. } => {
                    let limit = run.node.state_machine().table.config().heartbeat_interval_ms;
                    let stamp = srv.stamper.stamp(wall, now.into(), limit).ms;
                    let name = server_name(self.id);
                    let serial = format!("S{}", self.id);
                    let changes = keys::key_changes(
                        run.node.state_machine().table.state(),
                        &name,
                        &serial,
                        &self.keys,
                        stamp,
                    );
                    let sent = changes.len();
                    for command in changes {
                        if serve {
                            let token = run.next_token;
                            run.next_token += 1;
                            if run.node.propose(token, &command).is_ok() {
                                srv.pending.insert(token, Pending::Own);
                            }
                        } else {
                            let _ = run.node.submit(&command);
                        }
                    }
                    srv.rules.keys_done(now, Some(sent));
                }
            }
        }
    }

    pub(super) fn set_serving(srv: &mut ServerRun, serve: bool, out: &mut Vec<Out>) {
        if srv.serving == serve {
            return;
        }
        srv.serving = serve;
        out.push(Out::Note(format!(
            "{} {}",
            srv.vrrp.config().primary_address,
            if serve { "SERVES" } else { "stops serving" }
        )));
        if serve {
            // Held requests are answered now.
            srv.soon = false;
            return;
        }
        // Serving ends: client connections close (so that switches
        // reconnect to the new holder).
        for (switch, conn) in std::mem::take(&mut srv.conns) {
            out.push(Out::Close { switch, conn });
        }
        srv.held.clear();
    }

    /// One step of what the glue awaits; whether anything changed.
    fn busy_step(&mut self, t: u64, busy: Busy, out: &mut Vec<Out>) -> bool {
        let now = self.mono(t);
        let me = self.id;
        let peer = self.peer;
        let Some(run) = &mut self.run else { return false };
        let Some(srv) = &mut run.srv else { return false };
        let in_flight = srv.pending.values().any(|p| matches!(p, Pending::Switch { .. }));
        match busy {
            Busy::HandBackDrain { until } | Busy::StopDrain { until } => {
                if in_flight && !srv.conns.is_empty() && t < until {
                    return false;
                }
                for (switch, conn) in std::mem::take(&mut srv.conns) {
                    out.push(Out::Close { switch, conn });
                }
                let hand_back = matches!(busy, Busy::HandBackDrain { .. });
                if !hand_back {
                    run.node.set_preferred_leader(Some(peer));
                }
                let seq = srv
                    .beacons
                    .announce_leaving(if hand_back { Some(false) } else { None }, out);
                let until = t + LEAVE_ACK_MS;
                srv.busy = Some(if hand_back {
                    Busy::HandBackAck { seq, until }
                } else {
                    Busy::StopAck { seq, until }
                });
                true
            }
            Busy::HandBackAck { seq, until } => {
                if srv.beacons.acked < seq && t < until {
                    return false;
                }
                srv.vrrp.set_fault(now, true);
                Self::vrrp_events(srv, self.addr, t, out);
                srv.port_paused = false;
                srv.busy = None;
                srv.rules.handback_resigned(now);
                true
            }
            Busy::StopAck { seq, until } => {
                if srv.beacons.acked < seq && t < until {
                    return false;
                }
                srv.vrrp.shutdown(now);
                Self::vrrp_events(srv, self.addr, t, out);
                srv.busy = Some(Busy::StopHandOver {
                    until: t + HAND_OVER_MS,
                });
                true
            }
            Busy::StopHandOver { until } => {
                let node = &mut run.node;
                let done = node.leader() == Some(peer) || !node.conf_state().voters.contains(&me);
                if !done && node.role() == StateRole::Leader {
                    node.transfer_leader(peer);
                }
                if done || t >= until {
                    node.shutdown();
                    let _ = node.drain_outputs();
                    out.push(Out::Note(format!("{me} stopped (graceful)")));
                    self.run = None;
                    return true;
                }
                false
            }
        }
    }
}
