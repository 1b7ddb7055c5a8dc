//! Receive validation: every drop reason, and arbitrary bytes (RFC 9568 §7.1,
//! RFC 3768 §7.1).

use proptest::prelude::*;

use super::*;

// ---------------------------------------------------------------------------
// 8. Receive validation
// ---------------------------------------------------------------------------

/// RFC 9568 §7.1: "The receiver MUST perform the following checks and
/// discard the packet if any check fails: MUST verify that the IP TTL is
/// 255; MUST verify that the VRRP version is 3; MUST verify that the received
/// packet contains the complete VRRP packet (including fixed fields, and
/// IPvX address(es)); MUST verify the VRRP checksum; MUST verify that the
/// VRID is configured on the receiving interface ... MAY verify that "Count
/// IPvX Addr" and the list of IPvX address(es) match the IPvX Address(es)
/// configured for the VRID". (We always verify the list, even an owner's.)
#[test]
fn v3_every_drop_reason() {
    let peer = v3(200, 1);
    let (mut vr, now) = backup(v3(100, 2));
    let good = datagram(&peer, &advert(&peer));
    let payload = advert(&peer).to_bytes(checksum_of(&peer, host(1), GROUP));

    // Ip: not IPv4, too short, another protocol, a lying total length.
    assert_dropped(&mut vr, now, &[], DropReason::Ip);
    assert_dropped(&mut vr, now, &good[..19], DropReason::Ip);
    let mut v6 = good.clone();
    v6[0] = 0x60;
    assert_dropped(&mut vr, now, &v6, DropReason::Ip);
    assert_dropped(
        &mut vr,
        now,
        b"\x45garbage that is not a datagram",
        DropReason::Ip,
    );
    let udp = ipv4::build_with_protocol(host(1), GROUP, 255, 17, &payload);
    assert_dropped(&mut vr, now, &udp, DropReason::Ip);
    let mut long = good.clone();
    long[3] += 1; // total length one past the bytes received
    assert_dropped(&mut vr, now, &long, DropReason::Ip);

    // Ttl: the sender is not on this link.
    let ttl = ipv4::build(host(1), GROUP, 254, &payload);
    assert_dropped(&mut vr, now, &ttl, DropReason::Ttl);

    // Length: truncated, trailing bytes, shorter than the fixed header.
    let short = ipv4::build(host(1), GROUP, 255, &payload[..payload.len() - 1]);
    assert_dropped(&mut vr, now, &short, DropReason::Length);
    let mut longer = payload.clone();
    longer.push(0);
    let longer = ipv4::build(host(1), GROUP, 255, &longer);
    assert_dropped(&mut vr, now, &longer, DropReason::Length);
    let stub = ipv4::build(host(1), GROUP, 255, &payload[..4]);
    assert_dropped(&mut vr, now, &stub, DropReason::Length);
    let empty = ipv4::build(host(1), GROUP, 255, &[]);
    assert_dropped(&mut vr, now, &empty, DropReason::Length);

    // Version: a well-formed v2 advert, and an unknown version nibble.
    let v2_peer = v2(200, 1);
    assert_dropped(
        &mut vr,
        now,
        &datagram(&v2_peer, &advert(&v2_peer)),
        DropReason::Version,
    );
    let v4 = tampered(&peer, |p| p[0] = 0x41);
    assert_dropped(&mut vr, now, &v4, DropReason::Version);

    // Type.
    let kind = tampered(&peer, |p| p[0] = 0x32);
    assert_dropped(&mut vr, now, &kind, DropReason::Type);

    // Checksum: a flipped bit, and the message-only form where the
    // pseudo-header form is configured.
    let mut bad = good.clone();
    bad[20 + 6] ^= 0x01;
    assert_dropped(&mut vr, now, &bad, DropReason::Checksum);
    let message_only = Config {
        v3_checksum: V3Checksum::MessageOnly,
        ..peer.clone()
    };
    assert_dropped(
        &mut vr,
        now,
        &datagram(&message_only, &advert(&message_only)),
        DropReason::Checksum,
    );
    // Checksummed for another destination than the one it arrived on.
    let other_dst = ipv4::build(host(1), host(2), 255, &payload);
    assert_dropped(&mut vr, now, &other_dst, DropReason::Checksum);

    // Vrid: another router's, and the reserved 0.
    let other = Config {
        vrid: 8,
        ..peer.clone()
    };
    assert_dropped(&mut vr, now, &datagram(&other, &advert(&other)), DropReason::Vrid);
    let zero = tampered(&peer, |p| p[1] = 0);
    assert_dropped(&mut vr, now, &zero, DropReason::Vrid);

    // Malformed: no addresses at all.
    let none = tampered(&peer, |p| {
        p[3] = 0;
        p.truncate(8);
    });
    assert_dropped(&mut vr, now, &none, DropReason::Malformed);

    // Interval: a v3 Max Adver Int of 0.
    let interval = tampered(&peer, |p| {
        p[4] = 0;
        p[5] = 0;
    });
    assert_dropped(&mut vr, now, &interval, DropReason::Interval);

    // AddressList: another address, an extra one, and from an owner.
    let moved = Config {
        addresses: vec![Ipv4Addr::new(192, 0, 2, 8)],
        ..peer.clone()
    };
    assert_dropped(
        &mut vr,
        now,
        &datagram(&moved, &advert(&moved)),
        DropReason::AddressList,
    );
    let more = Config {
        addresses: vec![VIP, Ipv4Addr::new(192, 0, 2, 8)],
        ..peer.clone()
    };
    assert_dropped(
        &mut vr,
        now,
        &datagram(&more, &advert(&more)),
        DropReason::AddressList,
    );
    let owner = Config::v3(
        VRID,
        255,
        Ipv4Addr::new(192, 0, 2, 8),
        vec![Ipv4Addr::new(192, 0, 2, 8)],
    );
    assert_dropped(
        &mut vr,
        now,
        &datagram(&owner, &advert(&owner)),
        DropReason::AddressList,
    );

    // Every reason but the v2-only Auth and those about who sent it
    // (UnknownPeer, OwnAddress, Contradicted: the `trust` tests) seen.
    let seen: BTreeSet<_> = vr.counters().drops.keys().copied().collect();
    let expected: BTreeSet<_> = DropReason::ALL
        .into_iter()
        .filter(|r| {
            !matches!(
                r,
                DropReason::Auth
                    | DropReason::UnknownPeer
                    | DropReason::OwnAddress
                    | DropReason::Contradicted
            )
        })
        .collect();
    assert_eq!(seen, expected);

    // The untouched advert is accepted and acted on.
    assert_accepted(&mut vr, now, &good);
    assert_eq!(vr.timer(Timer::MasterDown), Some(now + us(3_609_375)));
    assert_eq!(vr.master_address(), Some(host(1)));
}

/// RFC 3768 §7.1: "MUST perform authentication specified by Auth Type ...
/// MUST verify that the Adver Interval in the VRRP packet is the same as the
/// locally configured for this virtual router".
#[test]
fn v2_every_drop_reason() {
    let peer = v2(200, 1);
    let (mut vr, now) = backup(v2(100, 2));

    let wrong = Config {
        auth: Auth::simple_text(b"wrong").unwrap(),
        ..peer.clone()
    };
    assert_dropped(&mut vr, now, &datagram(&wrong, &advert(&wrong)), DropReason::Auth);
    let none = Config {
        auth: Auth::None,
        ..peer.clone()
    };
    assert_dropped(&mut vr, now, &datagram(&none, &advert(&none)), DropReason::Auth);
    let ip_ah = tampered(&peer, |p| p[4] = 2);
    assert_dropped(&mut vr, now, &ip_ah, DropReason::Auth);

    let slow = Config {
        advert_interval_cs: 200,
        ..peer.clone()
    };
    assert_dropped(
        &mut vr,
        now,
        &datagram(&slow, &advert(&slow)),
        DropReason::Interval,
    );
    let zero = tampered(&peer, |p| p[5] = 0);
    assert_dropped(&mut vr, now, &zero, DropReason::Interval);

    let mut bad = datagram(&peer, &advert(&peer));
    bad[20 + 7] ^= 0x80;
    assert_dropped(&mut vr, now, &bad, DropReason::Checksum);

    let v3_peer = v3(200, 1);
    assert_dropped(
        &mut vr,
        now,
        &datagram(&v3_peer, &advert(&v3_peer)),
        DropReason::Version,
    );

    // A v2 message without its authentication trailer.
    let mut payload = advert(&peer).to_bytes(Checksum::MessageOnly);
    payload.truncate(payload.len() - 8);
    let short = ipv4::build(host(1), GROUP, 255, &payload);
    assert_dropped(&mut vr, now, &short, DropReason::Length);

    assert_accepted(&mut vr, now, &datagram(&peer, &advert(&peer)));
}

/// Unicast mode accepts adverts only from the configured peers.
#[test]
fn unknown_peer_dropped() {
    let (mut vr, now) = backup(Config {
        unicast_peers: vec![host(1)],
        ..v3(100, 2)
    });
    let stranger = v3(200, 9);
    assert_dropped(
        &mut vr,
        now,
        &datagram(&stranger, &advert(&stranger)),
        DropReason::UnknownPeer,
    );
    let peer = v3(200, 1);
    assert_accepted(&mut vr, now, &datagram(&peer, &advert(&peer)));
}

/// Our own adverts loop back on a multicast socket: not a drop, not an advert.
#[test]
fn own_looped_advert_ignored_uncounted() {
    let me = v3(100, 2);
    let (mut vr, now) = backup(me.clone());
    let before = (vr.counters().clone(), vr.poll_timeout());
    vr.handle_datagram(now, &datagram(&me, &advert(&me)));
    assert_eq!((vr.counters().clone(), vr.poll_timeout()), before);
}

/// "Compare as sets": the order of the address list does not matter.
#[test]
fn address_list_order_does_not_matter() {
    let second = Ipv4Addr::new(192, 0, 2, 8);
    let (mut vr, now) = backup(Config {
        addresses: vec![VIP, second],
        ..v3(100, 2)
    });
    let peer = Config {
        addresses: vec![second, VIP],
        ..v3(200, 1)
    };
    assert_accepted(&mut vr, now, &datagram(&peer, &advert(&peer)));
}

/// A v3 pair in the message-only checksum mode interoperates.
#[test]
fn v3_message_only_checksum_pair() {
    let message_only = |priority, n| Config {
        v3_checksum: V3Checksum::MessageOnly,
        ..v3(priority, n)
    };
    let mut net = Network::started(vec![message_only(200, 1), message_only(100, 2)]);
    net.run_until(secs(10));
    assert_eq!(net.masters(), vec![0]);
    assert_eq!(net.vr(1).counters().total_drops(), 0);
    assert!(net.vr(1).counters().adverts_received > 0);
}

/// RFC 9568 §6.4.1: in Initialize nothing happens until Startup. Valid
/// adverts are still counted.
#[test]
fn initialize_counts_and_ignores_adverts() {
    let peer = v3(200, 1);
    let mut vr = Instance::new(v3(100, 2)).unwrap();
    let now = Instant::now();
    assert_accepted(&mut vr, now, &datagram(&peer, &advert(&peer)));
    assert_eq!(vr.state(), State::Initialize);
    assert_eq!(vr.poll_timeout(), None);
    assert_eq!(vr.poll_event(), None);
    assert_eq!(vr.master_address(), None);
    vr.shutdown(now);
    assert_eq!(vr.poll_event(), None);
    assert_eq!(vr.counters().became_initialize, 0);
}

/// RFC 9568 §6.4.3: "If the Priority in the ADVERTISEMENT is zero, then:
/// Send an ADVERTISEMENT; Reset the Adver_Timer to Advertisement_Interval".
/// Lower adverts are discarded.
#[test]
fn master_answers_priority_zero_and_ignores_lower() {
    let mut vr = Instance::new(v3(150, 1)).unwrap();
    vr.startup(Instant::now());
    let now = vr.poll_timeout().unwrap();
    vr.handle_timeout(now);
    while vr.poll_event().is_some() {}
    assert_eq!(vr.state(), State::Master);
    let lower = v3(100, 3);
    assert_accepted(&mut vr, now, &datagram(&lower, &advert(&lower)));
    assert_eq!(vr.poll_event(), None);
    assert_eq!(vr.state(), State::Master);

    let leaving = Repr {
        priority: 0,
        ..advert(&lower)
    };
    assert_accepted(&mut vr, now, &datagram(&lower, &leaving));
    assert_eq!(vr.counters().priority_zero_received, 1);
    assert!(matches!(vr.poll_event(), Some(Event::Transmit(r)) if r.priority == 150));
    assert_eq!(vr.poll_event(), None);
    assert_eq!(vr.timer(Timer::Adver), Some(now + secs(1)));

    // Equal priority, lower address: discarded. Higher address: yield.
    let equal_lower = v3(150, 0);
    assert_accepted(&mut vr, now, &datagram(&equal_lower, &advert(&equal_lower)));
    assert_eq!(vr.state(), State::Master);
    let equal_higher = v3(150, 3);
    assert_accepted(&mut vr, now, &datagram(&equal_higher, &advert(&equal_higher)));
    assert_eq!(vr.poll_event(), Some(Event::BecomeBackup(Reason::HigherPriority)));
    assert_eq!(vr.master_address(), Some(host(3)));
    assert_eq!(vr.timer(Timer::Adver), None);
    assert_eq!(vr.timer(Timer::MasterDown), Some(now + vr.master_down_interval()));
}

/// Arbitrary bytes never panic and never change anything but a drop counter.
fn assert_inert(vr: &mut Instance, now: Instant, bytes: &[u8]) -> Result<(), TestCaseError> {
    let (state, timeout, before) = (vr.state(), vr.poll_timeout(), vr.counters().clone());
    vr.handle_datagram(now, bytes);
    let after = vr.counters().clone();
    if after.adverts_received == before.adverts_received {
        prop_assert_eq!(vr.state(), state);
        prop_assert_eq!(vr.poll_timeout(), timeout);
        prop_assert_eq!(vr.poll_event(), None);
        prop_assert!(after.total_drops() <= before.total_drops() + 1);
    } else {
        prop_assert_eq!(after.total_drops(), before.total_drops());
    }
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_datagrams_never_panic_or_change_state(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
        let (mut vr, now) = backup(v3(100, 2));
        let state = vr.state();
        let timeout = vr.poll_timeout();
        vr.handle_datagram(now, &bytes);
        prop_assert_eq!(vr.state(), state);
        prop_assert_eq!(vr.poll_timeout(), timeout);
        prop_assert_eq!(vr.poll_event(), None);
        prop_assert_eq!(vr.counters().adverts_received, 0);
    }

    #[test]
    fn arbitrary_payloads_behind_a_valid_ip_header(
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        v2_mode in any::<bool>(),
    ) {
        let config = if v2_mode { v2(100, 2) } else { v3(100, 2) };
        let (mut vr, now) = backup(config);
        let datagram = ipv4::build(host(1), GROUP, 255, &payload);
        assert_inert(&mut vr, now, &datagram)?;
    }

    #[test]
    fn mutated_adverts_never_panic(at in 0usize..48, value in any::<u8>(), v2_mode in any::<bool>()) {
        let (config, peer) = if v2_mode { (v2(100, 2), v2(200, 1)) } else { (v3(100, 2), v3(200, 1)) };
        let (mut vr, now) = backup(config);
        let mut datagram = datagram(&peer, &advert(&peer));
        let at = at % datagram.len();
        datagram[at] = value;
        assert_inert(&mut vr, now, &datagram)?;
    }
}
