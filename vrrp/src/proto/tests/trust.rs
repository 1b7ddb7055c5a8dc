//! Who may move the VIP: the source filter, spoofs of our own addresses,
//! and the peer's authenticated claims.
//!
//! SPEC §8 S6: "no host without the pair's credentials can change ... who
//! serves: not through ... nor (beyond what an L2 attacker can always do by
//! ARP) through VRRP." SPEC §9: "VRRP is the fast signal of who holds the
//! VIP; the authenticated cluster link is the truth. An advert that the
//! peer's authenticated state contradicts does not take service away."

use super::*;

/// A router that has become master by Master_Down timeout, its events drained.
fn master(config: Config) -> (Instance, Instant) {
    let mut vr = Instance::new(config).unwrap();
    vr.startup(Instant::now());
    let now = vr.poll_timeout().unwrap();
    vr.handle_timeout(now);
    while vr.poll_event().is_some() {}
    assert_eq!(vr.state(), State::Master);
    (vr, now)
}

/// `config` trusting only `sources`.
fn trusting(config: Config, sources: &[Ipv4Addr]) -> Config {
    Config {
        trusted_sources: sources.to_vec(),
        ..config
    }
}

// ---------------------------------------------------------------------------
// The source filter
// ---------------------------------------------------------------------------

/// RFC 5798 §9: "Authentication of VRRP messages could have prevented a
/// hostile node from causing all properly functioning routers from going
/// into Backup state." VRRPv3 has no authentication; the pair knows its one
/// peer, so an advert from any other host is dropped, multicast too. The
/// same run without the filter is the control: the third host wins.
#[test]
fn third_host_cannot_unseat_a_filtered_pair() {
    for filtered in [true, false] {
        let (a, b) = if filtered {
            (trusting(v3(200, 1), &[host(2)]), trusting(v3(100, 2), &[host(1)]))
        } else {
            (v3(200, 1), v3(100, 2))
        };
        let mut net = Network::new(vec![a, b, v3(254, 9)]);
        net.start(0);
        net.start(1);
        net.run_until(secs(10));
        assert_eq!(net.masters(), vec![0]);
        net.start(2);
        net.run_until(secs(30));
        if filtered {
            assert_eq!(net.state(0), State::Master, "filtered: {:?}", net.backups(0));
            assert_eq!(net.backups(0).len(), 1, "only the startup Backup");
            assert_eq!(net.state(1), State::Backup);
            for i in [0, 1] {
                assert!(net.vr(i).counters().drops_for(DropReason::UnknownPeer) >= 10);
            }
        } else {
            assert_eq!(net.state(0), State::Backup, "control: the third host won");
            assert_eq!(net.state(1), State::Backup);
            assert_eq!(net.vr(0).counters().drops_for(DropReason::UnknownPeer), 0);
        }
    }
}

/// The filter looks only at the IP source, before any parsing: garbage
/// from an untrusted host is reported as untrusted, not as bad bytes.
#[test]
fn untrusted_source_dropped_before_parsing() {
    let (mut vr, now) = backup(trusting(v3(100, 2), &[host(1)]));
    let stranger = v3(254, 9);
    let good = datagram(&stranger, &advert(&stranger));
    assert_dropped(&mut vr, now, &good, DropReason::UnknownPeer);
    let payload = advert(&stranger).to_bytes(checksum_of(&stranger, host(9), GROUP));
    let ttl = ipv4::build(host(9), GROUP, 1, &payload);
    assert_dropped(&mut vr, now, &ttl, DropReason::UnknownPeer);

    let peer = v3(200, 1);
    assert_accepted(&mut vr, now, &datagram(&peer, &advert(&peer)));
    assert_eq!(vr.master_address(), Some(host(1)));
}

/// With unicast peers as well, an advert must come from an address on both lists.
#[test]
fn trusted_sources_and_unicast_peers_both_filter() {
    let (mut vr, now) = backup(Config {
        unicast_peers: vec![host(1), host(3)],
        ..trusting(v3(100, 2), &[host(1)])
    });
    let other_peer = v3(200, 3);
    assert_dropped(
        &mut vr,
        now,
        &datagram(&other_peer, &advert(&other_peer)),
        DropReason::UnknownPeer,
    );
    let peer = v3(200, 1);
    assert_accepted(&mut vr, now, &datagram(&peer, &advert(&peer)));
}

/// A trusted source must be a unicast address that is not ours and, with
/// unicast peers, one of them (otherwise nothing would ever be heard and
/// both routers would be master).
#[test]
fn trusted_sources_validated() {
    for (bad, why) in [
        (Ipv4Addr::UNSPECIFIED, "must be a unicast"),
        (Ipv4Addr::new(224, 0, 0, 18), "must be a unicast"),
        (Ipv4Addr::BROADCAST, "must be a unicast"),
        (host(2), "own primary address"),
    ] {
        let err = trusting(v3(100, 2), &[bad]).validate().unwrap_err();
        assert!(
            matches!(err, ConfigError::TrustedSource(a, _) if a == bad),
            "{err:?}"
        );
        assert!(err.to_string().contains(why), "{err}");
    }
    let not_a_peer = Config {
        unicast_peers: vec![host(3)],
        ..trusting(v3(100, 2), &[host(1)])
    };
    let err = not_a_peer.validate().unwrap_err();
    assert!(err.to_string().contains("not a unicast peer"), "{err}");
    trusting(v3(100, 2), &[host(1)]).validate().unwrap();
}

// ---------------------------------------------------------------------------
// Spoofs of ourselves
// ---------------------------------------------------------------------------

/// An advert from our own primary address that is not an exact echo of
/// ours is a forgery: dropped and counted, filter or not, in either state.
#[test]
fn spoof_of_own_address_dropped_and_counted() {
    for sources in [vec![], vec![host(1)]] {
        let me = trusting(v3(100, 2), &sources);
        let (mut vr, now) = backup(me.clone());
        let forged = v3(254, 2);
        assert_dropped(
            &mut vr,
            now,
            &datagram(&forged, &advert(&forged)),
            DropReason::OwnAddress,
        );
        // Even garbage: we never send any.
        let payload = advert(&forged).to_bytes(checksum_of(&forged, host(2), GROUP));
        let ttl = ipv4::build(host(2), GROUP, 1, &payload);
        assert_dropped(&mut vr, now, &ttl, DropReason::OwnAddress);
        // The exact echo of our own advert is still no drop and no advert.
        let before = (vr.counters().clone(), vr.poll_timeout());
        vr.handle_datagram(now, &datagram(&me, &advert(&me)));
        assert_eq!((vr.counters().clone(), vr.poll_timeout()), before);
    }

    // A master keeps the VIP.
    let (mut vr, now) = master(v3(100, 2));
    let forged = v3(254, 2);
    assert_dropped(
        &mut vr,
        now,
        &datagram(&forged, &advert(&forged)),
        DropReason::OwnAddress,
    );
    assert_eq!(vr.state(), State::Master);
}

/// RFC 5798 §5.2.4: "The priority value for the VRRP router that owns the
/// IPvX address associated with the virtual router MUST be 255 (decimal)."
/// So an advert from a virtual address is the owner's, at 255, or a forgery
/// of whoever holds that address now.
#[test]
fn advert_from_a_vip_is_a_spoof_unless_the_owner_sends_it() {
    let (mut vr, now) = backup(v3(100, 2));
    let forged = Config::v3(VRID, 254, VIP, vec![VIP]);
    assert_dropped(
        &mut vr,
        now,
        &datagram(&forged, &advert(&forged)),
        DropReason::OwnAddress,
    );
    let owner = Config::v3(VRID, 255, VIP, vec![VIP]);
    assert_accepted(&mut vr, now, &datagram(&owner, &advert(&owner)));
    assert_eq!(vr.master_address(), Some(VIP));

    let (mut vr, now) = master(v3(100, 2));
    assert_dropped(
        &mut vr,
        now,
        &datagram(&forged, &advert(&forged)),
        DropReason::OwnAddress,
    );
    assert_eq!(vr.state(), State::Master);
}

// ---------------------------------------------------------------------------
// The peer's claims
// ---------------------------------------------------------------------------

/// What router `10.0.0.<n>` says over the authenticated link, valid until `until`.
fn claim(n: u8, priority: u8, master: bool, until: Instant) -> PeerClaim {
    PeerClaim {
        address: host(n),
        priority,
        master,
        leaving: false,
        valid_until: until,
    }
}

/// An advert from `10.0.0.<n>` at `priority` (a v3 router's defaults otherwise).
fn advert_from(n: u8, priority: u8) -> Vec<u8> {
    let sender = v3(priority, n);
    datagram(&sender, &advert(&sender))
}

/// The pair's backup (10.0.0.2, priority 100, pair handoff) following the
/// master 10.0.0.1 at 200, whose claim says so for the next 3 s.
fn following_backup() -> (Instance, Instant) {
    let (mut vr, now) = backup(Config {
        pair_handoff: true,
        ..trusting(v3(100, 2), &[host(1)])
    });
    vr.set_peer_claim(now, Some(claim(1, 200, true, now + secs(3))));
    assert_accepted(&mut vr, now, &advert_from(1, 200));
    assert_eq!(vr.poll_event(), None);
    (vr, now)
}

/// RFC 9568 §6.4.2: "If the Priority in the ADVERTISEMENT is zero, then:
/// Set the Master_Down_Timer to Skew_Time" (and with pair handoff we take
/// over at once). But a master sends priority 0 only as it leaves, and the
/// authenticated link says it is not leaving: a forgery in its name, which
/// must not make the backup take the VIP from a live master (SPEC §9).
#[test]
fn priority_zero_without_leaving_is_contradicted_and_the_backup_stays() {
    let (mut vr, now) = following_backup();
    let down = vr.timer(Timer::MasterDown);
    assert_dropped(&mut vr, now, &advert_from(1, 0), DropReason::Contradicted);
    assert_eq!(vr.counters().priority_zero_received, 0);
    assert_eq!(vr.state(), State::Backup);
    assert_eq!(vr.timer(Timer::MasterDown), down, "Skew_Time not armed");
}

/// The same advert with a claim that says `leaving` is the graceful stop:
/// the pair handoff happens at once, as without claims.
#[test]
fn priority_zero_with_leaving_hands_over_at_once() {
    let (mut vr, now) = following_backup();
    let leaving = PeerClaim {
        leaving: true,
        ..claim(1, 200, true, now + secs(3))
    };
    let later = now + us(300);
    vr.set_peer_claim(later, Some(leaving));
    assert_accepted(&mut vr, later, &advert_from(1, 0));
    assert!(matches!(vr.poll_event(), Some(Event::Transmit(r)) if r.priority == 100));
    assert_eq!(vr.poll_event(), Some(Event::BecomeMaster(Reason::MasterLeft)));
    assert_eq!(vr.counters().priority_zero_received, 1);
}

/// While the claim is valid an advert at another priority than the peer
/// says it advertises is a forgery; once the claim has expired (the link
/// is down) VRRP alone decides again and the same advert counts.
#[test]
fn priority_mismatch_dropped_while_the_claim_is_valid_processed_after() {
    let (mut vr, now) = following_backup();
    let valid_until = now + secs(3);
    assert_dropped(&mut vr, now, &advert_from(1, 254), DropReason::Contradicted);
    let just_before = valid_until - us(1);
    assert_dropped(
        &mut vr,
        just_before,
        &advert_from(1, 150),
        DropReason::Contradicted,
    );
    // "now < valid_until": at valid_until it no longer counts.
    assert_accepted(&mut vr, valid_until, &advert_from(1, 254));
    assert_eq!(
        vr.timer(Timer::MasterDown),
        Some(valid_until + vr.master_down_interval())
    );
    // A claim for another address says nothing about this one.
    vr.set_peer_claim(valid_until, Some(claim(3, 200, true, valid_until + secs(3))));
    assert_accepted(&mut vr, valid_until, &advert_from(1, 254));
}

/// The attack of Trust I, item 5: an advert spoofed to the peer's address
/// at a priority above ours, while the peer says over the authenticated
/// link that it is backup at 50. Without the claim the master yields
/// (RFC 9568 §6.4.3: "If the Priority in the ADVERTISEMENT is greater than
/// the local Priority ... Transition to the {Backup state}"), the control;
/// with it the master keeps the VIP.
#[test]
fn master_keeps_the_vip_against_a_contradicted_higher_priority_advert() {
    for with_claim in [true, false] {
        let (mut vr, now) = master(trusting(v3(100, 2), &[host(1)]));
        if with_claim {
            vr.set_peer_claim(now, Some(claim(1, 50, false, now + secs(3))));
            for _ in 0..10 {
                assert_dropped(&mut vr, now, &advert_from(1, 254), DropReason::Contradicted);
            }
            assert_eq!(vr.state(), State::Master);
            assert_eq!(vr.counters().adverts_held, 0);
        } else {
            assert_accepted(&mut vr, now, &advert_from(1, 254));
            assert_eq!(vr.poll_event(), Some(Event::BecomeBackup(Reason::HigherPriority)));
        }
    }
}

/// The race: the peer has just become master and sent its first advert;
/// its new claim, over TCP, lands a moment later. The advert is held, not
/// acted on and not dropped, and the claim that confirms it releases it.
#[test]
fn held_advert_released_by_the_claim_that_confirms_it() {
    // A master (100) yields to the peer that became master at 200.
    let (mut vr, now) = master(trusting(v3(100, 2), &[host(1)]));
    vr.set_peer_claim(now, Some(claim(1, 200, false, now + secs(3))));
    let adver = vr.timer(Timer::Adver);
    vr.handle_datagram(now, &advert_from(1, 200));
    assert!(vr.holds_advert());
    assert_eq!(vr.counters().adverts_held, 1);
    assert_eq!(
        (vr.counters().adverts_received, vr.counters().total_drops()),
        (0, 0)
    );
    assert_eq!(vr.poll_event(), None, "a held advert changes nothing by itself");
    assert_eq!(vr.state(), State::Master);
    assert_eq!(vr.timer(Timer::Adver), adver);
    assert_eq!(vr.timer(Timer::Hold), Some(now + secs(1)));

    let later = now + us(400);
    vr.set_peer_claim(later, Some(claim(1, 200, true, later + secs(3))));
    assert!(!vr.holds_advert());
    assert_eq!(vr.poll_event(), Some(Event::BecomeBackup(Reason::HigherPriority)));
    assert_eq!(vr.counters().held_released, 1);
    assert_eq!(vr.counters().adverts_received, 1);
    assert_eq!(vr.master_address(), Some(host(1)));
    // Acted on at the claim's time, not the advert's.
    assert_eq!(
        vr.timer(Timer::MasterDown),
        Some(later + vr.master_down_interval())
    );
    assert_eq!(vr.timer(Timer::Hold), None);

    // A backup that had heard no master yet follows it the same way.
    let (mut vr, now) = backup(trusting(v3(100, 2), &[host(1)]));
    vr.set_peer_claim(now, Some(claim(1, 200, false, now + secs(3))));
    let down = vr.timer(Timer::MasterDown);
    vr.handle_datagram(now, &advert_from(1, 200));
    assert_eq!(vr.timer(Timer::MasterDown), down);
    assert_eq!(vr.master_address(), None);
    let later = now + us(999_999);
    vr.set_peer_claim(later, Some(claim(1, 200, true, later + secs(3))));
    assert_eq!(vr.master_address(), Some(host(1)));
    assert_eq!(vr.timer(Timer::MasterDown), Some(later + us(3_609_375)));
}

/// A held advert that no claim confirms within one advert interval is
/// discarded as contradicted, by the Hold timer or by a claim that comes
/// too late; a refresh that still says "not master" or the loss of the
/// claim does not release it.
#[test]
fn held_advert_expires_unconfirmed() {
    let (mut vr, now) = master(trusting(v3(100, 2), &[host(1)]));
    vr.set_peer_claim(now, Some(claim(1, 200, false, now + secs(3))));
    vr.handle_datagram(now, &advert_from(1, 200));
    let deadline = now + secs(1);
    // Still not master, then no claim at all (the link went down): held.
    vr.set_peer_claim(now + us(500_000), Some(claim(1, 200, false, now + secs(3))));
    vr.set_peer_claim(now + us(600_000), None);
    assert!(vr.holds_advert());
    assert_eq!(vr.timer(Timer::Hold), Some(deadline));
    assert_eq!(
        vr.poll_timeout(),
        Some(deadline),
        "the Hold timer is due before the next advert"
    );
    vr.handle_timeout(deadline);
    assert!(!vr.holds_advert());
    assert_eq!(vr.counters().drops_for(DropReason::Contradicted), 1);
    assert_eq!(vr.counters().held_released, 0);
    // The Adver_Timer, due at the same instant, still fired: only that.
    assert!(matches!(vr.poll_event(), Some(Event::Transmit(r)) if r.priority == 100));
    assert_eq!(vr.poll_event(), None);
    assert_eq!(vr.state(), State::Master);

    // A confirming claim that arrives at the deadline, before the timeout
    // was handled, is too late.
    vr.set_peer_claim(deadline, Some(claim(1, 200, false, deadline + secs(3))));
    vr.handle_datagram(deadline, &advert_from(1, 200));
    let late = deadline + secs(1);
    vr.set_peer_claim(late, Some(claim(1, 200, true, late + secs(3))));
    assert_eq!(vr.counters().drops_for(DropReason::Contradicted), 2);
    assert_eq!(vr.counters().adverts_held, 2);
    assert_eq!(vr.state(), State::Master);
    assert_eq!(vr.poll_event(), None);
}

/// A claim that contradicts the held advert discards it at once; a newer
/// advert from the same source supersedes it; a shutdown abandons it.
/// Every held advert ends released or counted.
#[test]
fn held_advert_discarded_by_contradiction_supersession_or_shutdown() {
    let (mut vr, now) = master(trusting(v3(100, 2), &[host(1)]));
    vr.set_peer_claim(now, Some(claim(1, 200, false, now + secs(3))));
    vr.handle_datagram(now, &advert_from(1, 200));
    vr.set_peer_claim(now, Some(claim(1, 150, true, now + secs(3))));
    assert!(!vr.holds_advert());
    assert_eq!(vr.timer(Timer::Hold), None);
    assert_eq!(vr.counters().drops_for(DropReason::Contradicted), 1);

    vr.set_peer_claim(now, Some(claim(1, 200, false, now + secs(3))));
    vr.handle_datagram(now, &advert_from(1, 200));
    let later = now + us(100_000);
    vr.handle_datagram(later, &advert_from(1, 200));
    assert_eq!(vr.counters().drops_for(DropReason::Contradicted), 2);
    assert_eq!(vr.timer(Timer::Hold), Some(later + secs(1)), "the newest is kept");

    vr.shutdown(later);
    assert!(!vr.holds_advert());
    let c = vr.counters();
    assert_eq!(c.drops_for(DropReason::Contradicted), 3);
    assert_eq!(c.adverts_held, 3);
    assert_eq!(
        c.adverts_held,
        c.held_released + c.drops_for(DropReason::Contradicted)
    );
}

/// A held advert survives state changes: the RFC's timers are reset on
/// every transition, its own deadline is not.
#[test]
fn hold_survives_a_state_change() {
    let (mut vr, _) = backup(trusting(v3(100, 2), &[host(1)]));
    let down = vr.timer(Timer::MasterDown).unwrap();
    let at = down - us(500_000);
    vr.set_peer_claim(at, Some(claim(1, 200, false, at + secs(3))));
    vr.handle_datagram(at, &advert_from(1, 200));
    vr.handle_timeout(down);
    assert_eq!(vr.state(), State::Master);
    assert_eq!(vr.timer(Timer::Hold), Some(at + secs(1)));
    let confirmed = down + us(1_000);
    vr.set_peer_claim(confirmed, Some(claim(1, 200, true, confirmed + secs(3))));
    assert_eq!(vr.state(), State::Backup);
    assert_eq!(vr.counters().held_released, 1);
}

/// A master that has just left (priority 0 sent, now in Initialize) keeps
/// its addresses until its successor's advert is accepted: the driver
/// watches `adverts_received` (priority 0 aside). So adverts are judged in
/// Initialize as in every other state: a forgery in the peer's name that
/// its claim contradicts is dropped and counted, the stranger is untrusted,
/// and the peer's first advert as master, which races its claim, counts
/// only once the claim releases it. None of it changes the state. Without
/// a claim (the control) the forgery is accepted: the source filter alone
/// cannot tell it from the peer.
#[test]
fn a_master_that_left_accepts_no_forgery_as_its_successor() {
    for with_claim in [true, false] {
        let (mut vr, now) = master(trusting(v3(100, 2), &[host(1)]));
        if with_claim {
            vr.set_peer_claim(now, Some(claim(1, 200, false, now + secs(3))));
        }
        vr.shutdown(now);
        while vr.poll_event().is_some() {}
        assert_eq!(vr.state(), State::Initialize);
        if !with_claim {
            assert_accepted(&mut vr, now, &advert_from(1, 254));
            continue;
        }
        assert_dropped(&mut vr, now, &advert_from(1, 254), DropReason::Contradicted);
        assert_dropped(&mut vr, now, &advert_from(1, 0), DropReason::Contradicted);
        assert_dropped(&mut vr, now, &advert_from(3, 200), DropReason::UnknownPeer);
        assert_eq!(vr.counters().priority_zero_received, 0);

        vr.handle_datagram(now, &advert_from(1, 200));
        assert!(vr.holds_advert());
        assert_eq!(vr.counters().adverts_received, 0);
        let later = now + us(400);
        vr.set_peer_claim(later, Some(claim(1, 200, true, later + secs(3))));
        assert_eq!(vr.counters().held_released, 1);
        assert_eq!(vr.counters().adverts_received, 1);
        assert_eq!(vr.state(), State::Initialize);
        assert_eq!(vr.poll_event(), None);
        assert_eq!(vr.poll_timeout(), None);
    }
}

/// Truthful claims change nothing in a pair's life: election, crash,
/// return with preemption, graceful stop with pair handoff all happen at
/// the same instants with the same events as without claims, even though
/// every claim lands just after the adverts of its instant. The holds that
/// race caused were all released.
#[test]
fn truthful_claims_change_nothing_in_a_pair() {
    let pair = || {
        vec![
            Config {
                pair_handoff: true,
                ..trusting(v3(200, 1), &[host(2)])
            },
            Config {
                pair_handoff: true,
                ..trusting(v3(100, 2), &[host(1)])
            },
        ]
    };
    let run = |mut net: Network| {
        net.start(0);
        net.start(1);
        net.run_until(secs(10));
        net.crash(0);
        net.run_until(secs(20));
        net.restart(0, pair()[0].clone());
        net.run_until(secs(30));
        net.shutdown(0);
        net.run_until(secs(40));
        net
    };
    let plain = run(Network::new(pair()));
    let claimed = run(Network::with_claims(pair()));
    for i in 0..2 {
        let events = |net: &Network| {
            net.nodes[i]
                .log
                .iter()
                .map(|(t, e)| (*t - net.t0, e.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(events(&claimed), events(&plain), "node {i}");
    }
    assert_eq!(
        plain.masterships(0).iter().map(|m| m.1).collect::<Vec<_>>(),
        [Reason::MasterDown, Reason::Preempt]
    );
    assert_eq!(
        plain.masterships(1).iter().map(|m| m.1).collect::<Vec<_>>(),
        [Reason::MasterDown, Reason::MasterLeft]
    );
    let held: u64 = (0..2).map(|i| claimed.vr(i).counters().adverts_held).sum();
    let released: u64 = (0..2).map(|i| claimed.vr(i).counters().held_released).sum();
    assert!(held >= 2, "the race never happened: {held}");
    assert_eq!(released, held);
    for i in 0..2 {
        assert_eq!(claimed.vr(i).counters().total_drops(), 0, "node {i}");
    }
}
