//! The seeded faults, and the shapes they keep to.

use cluster::WriteFault;

use super::super::host::{Incoming, ADVERT_MS, HEARTBEAT_MS, VIP};
use super::{Packet, World, INTRUDER, SWITCHES};
use crate::proto::Request;
use crate::table::LicenseType;

impl World {
    /// Whether server `id` may fail now: not while the other one rebuilds
    /// from it (see [`Knobs::fail_while_rebuilding`]).
    fn may_fail(&self, id: u64) -> bool {
        if id == 3 || self.knobs.fail_while_rebuilding {
            return true;
        }
        // Down or up, a server whose last configuration is empty (its
        // disk was lost, it has not installed the leader's snapshot yet)
        // still rebuilds.
        let other = 3 - id;
        let rebuilding =
            self.hosts[(other - 1) as usize].rejoin || self.voters.get(&other).is_none_or(|v| v.is_empty());
        !rebuilding
    }

    /// The seeded faults, while they last.
    pub(super) fn faults(&mut self) -> Result<(), String> {
        if self.t < self.next_fault {
            return Ok(());
        }
        self.next_fault = self.t + self.rng.range(50, 500);
        self.outcome.faults += 1;
        let n = self.hosts.len() as u64;
        let roll = self.rng.below(100);
        match roll {
            0..=11 => {
                let id = 1 + self.rng.below(n);
                if self.hosts[(id - 1) as usize].up() && self.may_fail(id) {
                    self.with_host(id, |h, _, o| h.crash(o));
                    let at = self.t + self.rng.range(200, 3000);
                    self.restart_at.insert(id, at);
                }
            }
            12..=17 => {
                let id = 1 + self.rng.below(2);
                if self.hosts[(id - 1) as usize].up() && self.may_fail(id) {
                    self.with_host(id, |h, t, o| h.graceful_stop(t, o));
                    let at = self.t + self.rng.range(500, 3000);
                    self.restart_at.insert(id, at);
                }
            }
            18..=20 => self.lose_disk(),
            21..=26 => {
                let id = 1 + self.rng.below(n);
                let fault = match self.rng.below(3) {
                    0 => WriteFault::Fail,
                    1 => WriteFault::TornLost,
                    _ => WriteFault::TornLanded,
                };
                if self.hosts[(id - 1) as usize].up() && self.may_fail(id) {
                    self.note(format!("write fault {fault:?} on {id}'s disk"));
                    self.hosts[(id - 1) as usize].inject(fault);
                    let at = self.t + self.rng.range(300, 3000);
                    self.restart_at.insert(id, at);
                }
            }
            27..=42 => self.partition(),
            43..=46 => {
                if self.heal_at.is_some() {
                    self.heal();
                }
            }
            47..=54 => {
                self.loss = [0, 0, 2, 5, 10, 20][self.rng.below(6) as usize];
                self.dup = [0, 0, 2, 5, 10][self.rng.below(5) as usize];
                self.max_delay = [0, 2, 5, 10, 30][self.rng.below(5) as usize];
                self.note(format!(
                    "network: loss {}%, duplicates {}%, delay up to {} ms",
                    self.loss, self.dup, self.max_delay
                ));
            }
            55..=62 => {
                let id = 1 + self.rng.below(n);
                const DAY: i64 = 86_400_000;
                let large_back = self.knobs.large_backward_jumps;
                let jump = match self.rng.below(6) {
                    0 => 31 * DAY,
                    1 => 40 * DAY,
                    2 if large_back => -DAY,
                    3 => self.rng.range(1, 600_000) as i64,
                    4 if large_back => -(self.rng.range(1, 600_000) as i64),
                    _ => self.rng.range(0, (HEARTBEAT_MS / 2) * 2) as i64 - (HEARTBEAT_MS / 2) as i64,
                };
                let h = self.host(id);
                let mut off = h.wall_off + jump;
                if !large_back && jump < 0 {
                    // Steps back add up: the clock stays within half an
                    // interval behind the true time (see `Knobs`).
                    off = off.max(h.boot_wall_off.min(0) - (HEARTBEAT_MS / 2) as i64);
                }
                let jump = off - h.wall_off;
                h.wall_off = off;
                self.note(format!("wall clock of {id} jumps {jump} ms"));
            }
            63..=68 => self.garbage()?,
            _ => {
                let i = self.rng.below(SWITCHES as u64) as usize;
                let want = self.rng.below(13) as u32;
                self.switches[i].want = want;
            }
        }
        Ok(())
    }

    /// A server loses its disk, when the other members hold everything it
    /// has committed (losing the only copy is two faults at once, which no
    /// pair survives) and nothing is rebuilding already.
    fn lose_disk(&mut self) {
        // A host that is stopping counts as down already.
        if self.hosts.iter().any(|h| !h.up() || h.rejoin || h.stopping()) {
            return;
        }
        let id = 1 + self.rng.below(2);
        let commit = self.hosts[(id - 1) as usize]
            .node()
            .map_or(0, |n| n.commit_index());
        let others_have = self
            .hosts
            .iter()
            .filter(|h| h.id != id)
            .all(|h| h.node().is_some_and(|n| n.applied_index() >= commit));
        // Both servers are voters and in sync (the pair is whole): losing
        // the disk of a sole voter whose peer is a learner, or of a server
        // whose peer cannot show its log complete, leaves no one who may
        // lead (an operator forces a takeover then; not modelled).
        let whole = self.hosts[..2].iter().all(|h| {
            h.node()
                .is_some_and(|n| n.conf_state().voters.len() >= 2 && n.in_sync())
        });
        // Nor while the other server has a write fault still to strike:
        // it would fail while this one rebuilds (see `may_fail`).
        let other_armed = self.hosts[..2].iter().any(|h| h.id != id && h.fault_armed());
        if !others_have || !whole || other_armed {
            return;
        }
        self.with_host(id, |h, _, o| h.lose_disk(o));
        let at = self.t + self.rng.range(300, 2500);
        self.restart_at.insert(id, at);
    }

    fn partition(&mut self) {
        let was_cut = self.servers_cut();
        self.cut.clear();
        self.segment_cut.clear();
        let kind = self.rng.below(if self.witness { 6 } else { 4 });
        let (a, b) = if self.rng.chance(50) { (1, 2) } else { (2, 1) };
        let what = match kind {
            0 => {
                self.cut.extend([(a, b), (b, a)]);
                "servers' cluster link, both ways"
            }
            1 => {
                self.cut.extend([(a, b), (b, a)]);
                self.segment_cut.extend([(a, b), (b, a)]);
                "servers' cluster link and segment, both ways"
            }
            2 => {
                self.cut.insert((a, b));
                "servers' cluster link one way"
            }
            3 => {
                self.segment_cut.insert((a, b));
                "segment one way"
            }
            4 => {
                for o in [b, 3] {
                    self.cut.extend([(a, o), (o, a)]);
                }
                self.segment_cut.extend([(a, b), (b, a)]);
                "a server from everyone"
            }
            _ => {
                self.cut.extend([(a, 3), (3, a)]);
                "a server from the witness"
            }
        };
        if was_cut && !self.servers_cut() {
            self.healed_at = self.t;
        }
        let until = self.t + self.rng.range(200, 2500);
        self.heal_at = Some(until);
        self.note(format!("partition: {what} ({a} -> {b}), until {until}"));
    }

    /// S5: garbage on the segment and the cluster link, a forged advert,
    /// and a request for another switch's id; each must be dropped.
    fn garbage(&mut self) -> Result<(), String> {
        let id = 1 + self.rng.below(2);
        let Some(before) = self.hosts[(id - 1) as usize].vrrp_state() else {
            return Ok(());
        };
        let mut bytes: Vec<u8> = (0..self.rng.range(0, 80))
            .map(|_| self.rng.below(256) as u8)
            .collect();
        match self.rng.below(4) {
            0 => {
                let drops = self.drops(id);
                self.with_host(id, |h, t, o| h.datagram(t, &bytes, o));
                self.note(format!("garbage datagram ({} bytes) to {id}", bytes.len()));
                if self.drops(id) <= drops && self.hosts[(id - 1) as usize].vrrp_state() == Some(before) {
                    // Dropped without a count only if it was not a datagram at all.
                    if bytes.len() >= 20 && bytes[0] >> 4 == 4 && bytes[9] == 112 {
                        return Err(self.fail("S5: a garbage VRRP datagram was neither dropped nor counted"));
                    }
                }
            }
            1 => {
                // A well-formed advert from a host that is not the peer.
                let intruder = std::net::Ipv4Addr::new(10, 0, 0, 66);
                let dst = std::net::Ipv4Addr::new(224, 0, 0, 18);
                let repr = vrrp::wire::Repr::advertisement(
                    vrrp::wire::Version::V3,
                    1,
                    254,
                    (ADVERT_MS / 10) as u16,
                    vec![VIP],
                );
                let payload = repr.to_bytes(vrrp::wire::Checksum::PseudoHeader { src: intruder, dst });
                bytes = vrrp::wire::ipv4::build(intruder, dst, 255, &payload);
                let drops = self.drops(id);
                self.with_host(id, |h, t, o| h.datagram(t, &bytes, o));
                self.note(format!("forged advert from {intruder} to {id}"));
                if self.hosts[(id - 1) as usize].vrrp_state().is_some() && self.drops(id) != drops + 1 {
                    return Err(self.fail("S5: an advert from a stranger was not dropped and counted"));
                }
            }
            2 => {
                let garbage = self.hosts[(id - 1) as usize].beacon_garbage();
                bytes.insert(0, 9);
                self.with_host(id, |h, t, o| h.beacon(t, &bytes, o));
                self.note(format!("garbage beacon to {id}"));
                if self.hosts[(id - 1) as usize].up()
                    && self.hosts[(id - 1) as usize].beacon_garbage() != garbage + 1
                {
                    return Err(self.fail("S5: a garbage beacon was not refused"));
                }
            }
            _ => {
                let victim = self.rng.below(SWITCHES as u64) as usize;
                let inc = Incoming {
                    switch: INTRUDER,
                    conn: self.rng.next(),
                    req: 1,
                    id: "intruder".into(),
                    serial: "INTRUDER".into(),
                    request: Request::Release {
                        id: format!("sw{victim}"),
                        license_type: LicenseType::new("AP"),
                        count: 1,
                    },
                };
                self.note(format!("an intruder releases sw{victim}'s licenses"));
                let at = self.t + 1;
                let to = self.switches[0].arp;
                self.enqueue(at, Packet::ToVip { to, inc });
            }
        }
        Ok(())
    }

    fn drops(&self, id: u64) -> u64 {
        self.hosts[(id - 1) as usize]
            .run
            .as_ref()
            .and_then(|r| r.srv.as_ref())
            .map_or(0, |s| s.vrrp.counters().total_drops())
    }
}
