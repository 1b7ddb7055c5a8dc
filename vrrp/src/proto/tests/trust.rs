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
