//! `vipool vrrp` on a real namespaced network: election, crash and graceful
//! failover, gratuitous ARP, preemption, and bad packets from a third host.
//!
//! Bounds are the protocol's own timers plus a generous margin for a loaded
//! CI machine; the figures themselves are measured by the takeover benchmark.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{drops, inject, lab_available, wait_for, Lab};
use nix::sys::signal::Signal;
use vrrp::wire::{self, Auth, Checksum, Repr, Version};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VIP_ARG: &str = "192.0.2.100/24";
/// Allowance for process scheduling, netlink and the polling in `wait_for`.
const MARGIN: Duration = Duration::from_millis(1000);
const START: Duration = Duration::from_secs(10);

/// RFC 9568 §6.1: Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256.
fn skew(priority: u8, advert: Duration) -> Duration {
    advert * (256 - u32::from(priority)) / 256
}

/// Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time.
fn master_down(priority: u8, advert: Duration) -> Duration {
    advert * 3 + skew(priority, advert)
}

fn speaker_args<'a>(vrid: &'a str, priority: &'a str, advert_ms: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--vrid",
        vrid,
        "--priority",
        priority,
        "--vip",
        VIP_ARG,
        "--advert-interval-ms",
        advert_ms,
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn elects_higher_priority_and_survives_sigkill_with_garp() {
    if !lab_available("elects_higher_priority_and_survives_sigkill_with_garp") {
        return;
    }
    let mut lab = Lab::new(3);
    let (h0, h1, h2) = (lab.hosts[0].clone(), lab.hosts[1].clone(), lab.hosts[2].clone());
    let advert = Duration::from_secs(1);
    let a = lab.vipool_vrrp(&h0, &speaker_args("10", "200", "1000", &[]));
    let b = lab.vipool_vrrp(&h1, &speaker_args("10", "100", "1000", &[]));

    assert!(
        a.wait_state("Master", START),
        "priority 200 never became master: {:?}",
        a.states()
    );
    assert!(
        b.wait_state("Backup", START),
        "priority 100 is not backup: {:?}",
        b.states()
    );
    assert!(wait_for(START, || h0.has_addr(VIP)), "master has no VIP");
    assert!(!h1.has_addr(VIP), "backup holds the VIP too");

    // The observer learns the VIP's MAC the ordinary way.
    h2.run(&["ping", "-c", "1", "-W", "2", &VIP.to_string()]);
    assert_eq!(
        h2.neighbour_mac(VIP),
        Some(h0.mac()),
        "observer's ARP entry is not the master's MAC"
    );

    let killed = Instant::now();
    a.signal(Signal::SIGKILL);
    // The backup can only notice after Master_Down_Interval from the last
    // advert it heard, which was at most one interval before the kill.
    let bound = master_down(100, advert) + MARGIN;
    assert!(
        wait_for(bound, || h1.has_addr(VIP)),
        "backup did not take the VIP within {bound:?}"
    );
    let took = killed.elapsed();
    let earliest = master_down(100, advert) - advert;
    assert!(
        took >= earliest.saturating_sub(Duration::from_millis(100)),
        "took over after {took:?}, before Master_Down_Interval could expire"
    );
    eprintln!(
        "SIGKILL takeover after {took:?} (Master_Down_Interval {:?})",
        master_down(100, advert)
    );
    assert_eq!(b.state(), "Master");
    // Only the new master's gratuitous ARP can have moved the entry.
    assert!(
        wait_for(MARGIN, || h2.neighbour_mac(VIP) == Some(h1.mac())),
        "observer's ARP entry did not follow the new master: {:?}",
        h2.neighbour_mac(VIP)
    );
}

#[test]
fn sigterm_hands_over_within_skew_time() {
    if !lab_available("sigterm_hands_over_within_skew_time") {
        return;
    }
    let mut lab = Lab::new(2);
    let (h0, h1) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    let advert = Duration::from_secs(1);
    let a = lab.vipool_vrrp(&h0, &speaker_args("11", "200", "1000", &[]));
    let b = lab.vipool_vrrp(&h1, &speaker_args("11", "100", "1000", &[]));
    assert!(a.wait_state("Master", START) && b.wait_state("Backup", START));
    assert!(wait_for(START, || h0.has_addr(VIP)));

    let stopped = Instant::now();
    a.signal(Signal::SIGTERM);
    // RFC 9568 §6.4.2: on a priority-0 advert the backup sets its
    // Master_Down_Timer to Skew_Time, far below Master_Down_Interval.
    let bound = skew(100, advert) + MARGIN;
    assert!(
        bound < master_down(100, advert),
        "test would not tell the two paths apart"
    );
    assert!(
        wait_for(bound, || h1.has_addr(VIP)),
        "backup did not take over within {bound:?}"
    );
    eprintln!(
        "SIGTERM takeover after {:?} (Skew_Time {:?})",
        stopped.elapsed(),
        skew(100, advert)
    );
    assert_eq!(a.wait_exit(START), Some(0), "SIGTERM must exit 0");
    assert!(!h0.has_addr(VIP), "the leaving master kept the VIP");
    let counters = a.exit_counters().expect("exit event with counters");
    assert_eq!(counters["priority_zero_sent"], 1);
    assert_eq!(b.state(), "Master");
}

#[test]
fn returning_higher_priority_preempts_only_when_enabled() {
    if !lab_available("returning_higher_priority_preempts_only_when_enabled") {
        return;
    }
    let advert = Duration::from_millis(100);
    for preempt in [true, false] {
        let mut lab = Lab::new(2);
        let (h0, h1) = (lab.hosts[0].clone(), lab.hosts[1].clone());
        let low = lab.vipool_vrrp(&h1, &speaker_args("12", "100", "100", &[]));
        assert!(
            low.wait_state("Master", START),
            "lone speaker never became master"
        );
        let extra: &[&str] = if preempt { &[] } else { &["--no-preempt"] };
        let high = lab.vipool_vrrp(&h0, &speaker_args("12", "200", "100", extra));
        assert!(high.wait_state("Backup", START));
        if preempt {
            let bound = master_down(200, advert) + MARGIN;
            assert!(
                high.wait_state("Master", bound),
                "higher priority did not preempt"
            );
            assert!(low.wait_state("Backup", MARGIN), "lower priority did not yield");
            assert!(wait_for(MARGIN, || h0.has_addr(VIP) && !h1.has_addr(VIP)));
        } else {
            // Ten Master_Down_Intervals with no preemption.
            std::thread::sleep(master_down(200, advert) * 10);
            assert_eq!(
                high.state(),
                "Backup",
                "preempted with --no-preempt: {:?}",
                high.states()
            );
            assert!(
                !high.states().contains(&"Master".to_string()),
                "preempted with --no-preempt"
            );
            assert_eq!(low.state(), "Master");
            assert!(h1.has_addr(VIP) && !h0.has_addr(VIP));
        }
    }
}

/// A datagram as a peer at `src` would send it, then spoiled by `spoil`.
fn datagram(src: Ipv4Addr, repr: &Repr, ttl: u8, spoil: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut msg = repr.to_bytes(Checksum::PseudoHeader {
        src,
        dst: wire::MULTICAST_GROUP,
    });
    spoil(&mut msg);
    wire::ipv4::build(src, wire::MULTICAST_GROUP, ttl, &msg)
}

#[test]
fn bad_packets_are_dropped_counted_and_change_nothing() {
    if !lab_available("bad_packets_are_dropped_counted_and_change_nothing") {
        return;
    }
    let mut lab = Lab::new(3);
    let (h0, h1, h2) = (lab.hosts[0].clone(), lab.hosts[1].clone(), lab.hosts[2].clone());
    let a = lab.vipool_vrrp(&h0, &speaker_args("13", "200", "100", &[]));
    let b = lab.vipool_vrrp(&h1, &speaker_args("13", "100", "100", &[]));
    assert!(a.wait_state("Master", START) && b.wait_state("Backup", START));

    // Every forgery claims priority 254: accepted, it would unseat the master.
    let src = h2.addr;
    let good = Repr::advertisement(Version::V3, 13, 254, 10, vec![VIP]);
    let fix = |m: &mut Vec<u8>| {
        let mut p = wire::Packet::new_unchecked(&mut m[..]);
        p.fill_checksum(Checksum::PseudoHeader {
            src,
            dst: wire::MULTICAST_GROUP,
        });
    };
    let bad = vec![
        ("checksum", datagram(src, &good, 255, |m| m[6] ^= 0xff)),
        ("ttl", datagram(src, &good, 254, |_| {})),
        (
            "version",
            datagram(
                src,
                &Repr {
                    version: Version::V2,
                    ..good.clone()
                },
                255,
                |_| {},
            ),
        ),
        (
            "type",
            datagram(src, &good, 255, |m| {
                m[0] = 0x32;
                fix(m)
            }),
        ),
        ("length", datagram(src, &good, 255, |m| m.truncate(10))),
        (
            "length",
            datagram(src, &good, 255, |m| {
                m[3] = 2;
                fix(m)
            }),
        ),
        (
            "address_list",
            datagram(
                src,
                &Repr {
                    addresses: vec![Ipv4Addr::new(192, 0, 2, 99)],
                    ..good.clone()
                },
                255,
                |_| {},
            ),
        ),
        (
            "address_list",
            datagram(
                src,
                &Repr {
                    addresses: vec![VIP, Ipv4Addr::new(192, 0, 2, 99)],
                    ..good.clone()
                },
                255,
                |_| {},
            ),
        ),
        (
            "vrid",
            datagram(
                src,
                &Repr {
                    vrid: 14,
                    ..good.clone()
                },
                255,
                |_| {},
            ),
        ),
        (
            "malformed",
            datagram(src, &good, 255, |m| {
                m[3] = 0;
                m.truncate(8);
                fix(m)
            }),
        ),
    ];
    let mut expected = std::collections::BTreeMap::<&str, u64>::new();
    for (reason, _) in &bad {
        *expected.entry(reason).or_default() += 1;
    }
    let (states_a, states_b) = (a.states(), b.states());
    let before_a = a.status()["counters"].clone();
    let before_b = b.status()["counters"].clone();
    inject(
        &h2,
        wire::MULTICAST_GROUP,
        bad.into_iter().map(|(_, d)| d).collect(),
    );
    // Let several advert intervals pass: any state change would show by now.
    std::thread::sleep(Duration::from_millis(1000));
    for (who, sp, before) in [("master", &a, &before_a), ("backup", &b, &before_b)] {
        let after = sp.status()["counters"].clone();
        for (reason, n) in &expected {
            assert_eq!(
                drops(&after, reason) - drops(before, reason),
                *n,
                "{who}: drops for {reason}: before {before} after {after}"
            );
        }
    }
    assert_eq!(a.states(), states_a, "master changed state");
    assert_eq!(b.states(), states_b, "backup changed state");
    assert!(h0.has_addr(VIP) && !h1.has_addr(VIP));

    // Control: the same injection path with a valid advert does unseat the
    // master, so the drops above are the validation's doing.
    inject(
        &h2,
        wire::MULTICAST_GROUP,
        vec![datagram(src, &good, 255, |_| {})],
    );
    assert!(
        a.wait_state("Backup", Duration::from_secs(2)),
        "a valid priority-254 advert was ignored"
    );
}

#[test]
fn v2_auth_mismatch_is_dropped() {
    if !lab_available("v2_auth_mismatch_is_dropped") {
        return;
    }
    let mut lab = Lab::new(2);
    let (h0, h1) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    let a = lab.vipool_vrrp(
        &h0,
        &speaker_args("15", "200", "1000", &["--version", "2", "--auth-pass", "s3cret"]),
    );
    assert!(a.wait_state("Master", START));
    let states = a.states();
    let src = h1.addr;
    let v2 = |auth, interval_cs| Repr {
        version: Version::V2,
        vrid: 15,
        priority: 254,
        interval_cs,
        addresses: vec![VIP],
        auth,
    };
    let bad = vec![
        datagram(src, &v2(Auth::None, 100), 255, |_| {}),
        datagram(src, &v2(Auth::simple_text(b"wrong").unwrap(), 100), 255, |_| {}),
        datagram(src, &v2(Auth::simple_text(b"s3cret").unwrap(), 200), 255, |_| {}),
    ];
    inject(&h1, wire::MULTICAST_GROUP, bad);
    std::thread::sleep(Duration::from_millis(500));
    let counters = a.status()["counters"].clone();
    assert_eq!(drops(&counters, "auth"), 2, "{counters}");
    assert_eq!(drops(&counters, "interval"), 1, "{counters}");
    assert_eq!(a.states(), states, "state changed on bad adverts");
    inject(
        &h1,
        wire::MULTICAST_GROUP,
        vec![datagram(
            src,
            &v2(Auth::simple_text(b"s3cret").unwrap(), 100),
            255,
            |_| {},
        )],
    );
    assert!(
        a.wait_state("Backup", Duration::from_secs(2)),
        "a valid authenticated advert was ignored"
    );
}

#[test]
fn unicast_peers_elect_fail_over_and_ignore_strangers() {
    if !lab_available("unicast_peers_elect_fail_over_and_ignore_strangers") {
        return;
    }
    let mut lab = Lab::new(3);
    let (h0, h1, h2) = (lab.hosts[0].clone(), lab.hosts[1].clone(), lab.hosts[2].clone());
    let (p0, p1) = (h1.addr.to_string(), h0.addr.to_string());
    let a = lab.vipool_vrrp(&h0, &speaker_args("16", "200", "100", &["--unicast-peer", &p0]));
    let b = lab.vipool_vrrp(&h1, &speaker_args("16", "100", "100", &["--unicast-peer", &p1]));
    assert!(a.wait_state("Master", START) && b.wait_state("Backup", START));
    assert!(wait_for(START, || h0.has_addr(VIP) && !h1.has_addr(VIP)));

    // A valid, higher-priority advert from a host that is not a peer.
    let states = a.states();
    let src = h2.addr;
    let stranger = Repr::advertisement(Version::V3, 16, 254, 10, vec![VIP]);
    let msg = stranger.to_bytes(Checksum::PseudoHeader { src, dst: h0.addr });
    inject(&h2, h0.addr, vec![wire::ipv4::build(src, h0.addr, 255, &msg)]);
    assert!(wait_for(Duration::from_secs(2), || drops(
        &a.status()["counters"],
        "unknown_peer"
    ) == 1));
    assert_eq!(a.states(), states, "a stranger's advert changed the state");

    a.signal(Signal::SIGTERM);
    let bound = skew(100, Duration::from_millis(100)) + MARGIN;
    assert!(
        wait_for(bound, || h1.has_addr(VIP)),
        "unicast backup did not take over within {bound:?}"
    );
    assert_eq!(a.wait_exit(START), Some(0));
}

/// The virtual MAC with trusted sources, as every vipool pair runs: the
/// speaker then receives on the parent through two filtered sockets (the
/// peer's queue and everyone else's) and sends from the macvlan. The
/// backup hears the master there while a stranger floods it faster than
/// it reads (the stranger's queue overflows), stays backup, and takes the
/// VIP within Master_Down_Interval of the master's death. What it shows is
/// the virtual-MAC path through both filtered sockets; that the filter
/// keeps the master's adverts out of the overflow is
/// `a_long_flood_from_another_source_at_the_backup_does_not_move_the_vip`'s
/// to show, and on a quiet machine neither tells a filter that sends
/// everything to the stranger's queue from a working one (tried: the
/// speaker reads fast enough that only a few percent overflow, and the
/// master's 28 adverts got through either way).
#[test]
fn a_virtual_mac_pair_that_trusts_only_its_peer_hears_it_and_fails_over() {
    let test = "a_virtual_mac_pair_that_trusts_only_its_peer_hears_it_and_fails_over";
    if !lab_available(test) {
        return;
    }
    let mut lab = Lab::new(3);
    let (h0, h1, h2) = (lab.hosts[0].clone(), lab.hosts[1].clone(), lab.hosts[2].clone());
    let advert = Duration::from_millis(100);
    let (t0, t1) = (h1.addr.to_string(), h0.addr.to_string());
    let a = lab.vipool_vrrp(
        &h0,
        &speaker_args("29", "200", "100", &["--vmac", "--trusted-source", &t0]),
    );
    let b = lab.vipool_vrrp(
        &h1,
        &speaker_args("29", "100", "100", &["--vmac", "--trusted-source", &t1]),
    );
    assert!(a.wait_state("Master", START) && b.wait_state("Backup", START));
    assert!(wait_for(START, || h0.has_addr_anywhere(VIP)), "master has no VIP");

    flood_the_backup_from_a_stranger(test, &h1, &h2, &b, 29);
    assert_eq!(b.states(), ["Backup"], "the backup moved while the master lived");

    let killed = Instant::now();
    a.signal(Signal::SIGKILL);
    let bound = master_down(100, advert) + MARGIN;
    assert!(
        wait_for(bound, || h1.has_addr_anywhere(VIP)),
        "the backup did not take the VIP within {bound:?} of the master's death"
    );
    eprintln!("{test}: VIP on the backup {:?} after the kill", killed.elapsed());
}

#[test]
fn virtual_mac_stays_the_same_across_failover() {
    if !lab_available("virtual_mac_stays_the_same_across_failover") {
        return;
    }
    let mut lab = Lab::new(3);
    let (h0, h1, h2) = (lab.hosts[0].clone(), lab.hosts[1].clone(), lab.hosts[2].clone());
    let a = lab.vipool_vrrp(&h0, &speaker_args("17", "200", "100", &["--vmac"]));
    let b = lab.vipool_vrrp(&h1, &speaker_args("17", "100", "100", &["--vmac"]));
    assert!(a.wait_state("Master", START) && b.wait_state("Backup", START));
    assert!(wait_for(START, || h0.has_addr_anywhere(VIP)), "master has no VIP");
    assert!(
        !h0.has_addr(VIP),
        "with --vmac the VIP belongs on the macvlan, not eth0"
    );

    let vmac = "00:00:5e:00:01:11"; // RFC 5798 §7.3, VRID 17
    h2.run(&["ping", "-c", "1", "-W", "2", &VIP.to_string()]);
    assert_eq!(
        h2.neighbour_mac(VIP).as_deref(),
        Some(vmac),
        "the VIP must resolve to the virtual MAC"
    );
    // The virtual MAC answers ARP for the VIP only, never for a host's own
    // address (a macvlan's default arp_ignore=0 answers for every local
    // address: a neighbour that kept that reply sent the host's raft
    // traffic wherever the VIP went).
    if common::tool_available("virtual_mac_stays_the_same_across_failover", "tshark", "tshark") {
        let capture = h2
            .command("tshark")
            .args([
                "-i",
                "eth0",
                "-a",
                "duration:4",
                "-f",
                "arp",
                "-Y",
                "arp.opcode==2",
            ])
            .args(["-T", "fields", "-e", "eth.src", "-e", "arp.src.proto_ipv4"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tshark");
        std::thread::sleep(Duration::from_millis(1500));
        for _ in 0..3 {
            for h in [&h0, &h1] {
                h2.run(&["ip", "neigh", "flush", "all"]);
                h2.run(&["ping", "-c", "1", "-W", "2", &h.addr.to_string()]);
            }
        }
        let out = capture.wait_with_output().expect("tshark output");
        let replies = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(replies.lines().count() >= 6, "no ARP replies captured: {replies}");
        for line in replies.lines() {
            let (mac, addr) = line.split_once('\t').unwrap_or((line, ""));
            assert!(
                mac != vmac || addr == VIP.to_string(),
                "the virtual MAC answered ARP for {addr}: {replies}"
            );
        }
    }

    a.signal(Signal::SIGTERM);
    assert!(
        wait_for(START, || h1.has_addr_anywhere(VIP)),
        "backup did not take over"
    );
    assert_eq!(a.wait_exit(START), Some(0));
    let links = h0.run(&["ip", "-o", "link", "show"]);
    assert!(
        !links.contains("vrrp.17"),
        "the macvlan outlived the speaker: {links}"
    );
    // Same MAC, new holder: the observer reaches the VIP without relearning.
    h2.run(&["ping", "-c", "1", "-W", "2", &VIP.to_string()]);
    assert_eq!(h2.neighbour_mac(VIP).as_deref(), Some(vmac));
}

#[test]
fn gratuitous_arp_refresh_repeats_while_master() {
    if !lab_available("gratuitous_arp_refresh_repeats_while_master") {
        return;
    }
    let mut lab = Lab::new(2);
    let (h0, h1) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    // The observer accepts unsolicited ARP, so only a gratuitous ARP can
    // create its neighbour entry for the VIP.
    h1.run(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/eth0/arp_accept"]);
    let a = lab.vipool_vrrp(
        &h0,
        &speaker_args(
            "18",
            "200",
            "100",
            &["--garp-count", "1", "--garp-refresh-s", "1"],
        ),
    );
    assert!(a.wait_state("Master", START));
    assert!(
        wait_for(START, || h1.neighbour_mac(VIP) == Some(h0.mac())),
        "takeover GARP not seen"
    );
    for round in 0..2 {
        h1.run(&["ip", "neigh", "flush", "dev", "eth0"]);
        assert_eq!(h1.neighbour_mac(VIP), None);
        assert!(
            wait_for(Duration::from_secs(1) + MARGIN, || h1.neighbour_mac(VIP)
                == Some(h0.mac())),
            "refresh round {round}: no gratuitous ARP within the refresh period"
        );
    }
}

#[test]
fn pair_handoff_takes_over_well_before_skew_time() {
    if !lab_available("pair_handoff_takes_over_well_before_skew_time") {
        return;
    }
    let mut lab = Lab::new(2);
    let (h0, h1) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    // A long advert interval makes Skew_Time long (1.83 s), so the bound
    // below is generous and still tells the handoff from the RFC path.
    let advert = Duration::from_secs(3);
    let a = lab.vipool_vrrp(&h0, &speaker_args("19", "200", "3000", &["--pair-handoff"]));
    let b = lab.vipool_vrrp(&h1, &speaker_args("19", "100", "3000", &["--pair-handoff"]));
    assert!(a.wait_state("Master", START * 2) && b.wait_state("Backup", START));
    assert!(wait_for(START, || h0.has_addr(VIP)));
    let stopped = Instant::now();
    a.signal(Signal::SIGTERM);
    let bound = MARGIN;
    assert!(
        bound < skew(100, advert),
        "test would not tell handoff from Skew_Time"
    );
    assert!(
        wait_for(bound, || h1.has_addr(VIP)),
        "pair handoff took longer than {bound:?}"
    );
    eprintln!(
        "pair handoff after {:?} (Skew_Time {:?})",
        stopped.elapsed(),
        skew(100, advert)
    );
    assert_eq!(a.wait_exit(START), Some(0));
}

/// Trust I, item 5: a third host of the broadcast domain, holding no
/// credentials, sends valid priority-254 adverts from its own address and
/// with the source forged to the master's own address, for ten advert
/// intervals. Two speakers that each trust only the other: the master stays
/// master, the VIP does not move, every forgery is dropped and counted. The
/// pair still fails over on SIGKILL within the usual bound.
#[test]
fn third_host_cannot_take_the_vip_from_a_pair_that_trusts_only_itself() {
    if !lab_available("third_host_cannot_take_the_vip_from_a_pair_that_trusts_only_itself") {
        return;
    }
    let mut lab = Lab::new(3);
    let (h0, h1, h2) = (lab.hosts[0].clone(), lab.hosts[1].clone(), lab.hosts[2].clone());
    // Linux drops a datagram whose source is one of the receiver's own
    // addresses as a martian before any socket sees it, unless accept_local
    // is on. Turn it on at the master so that the speaker's own check, not
    // the kernel's, is what this test proves.
    h0.run(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/eth0/accept_local"]);
    let advert = Duration::from_millis(100);
    let (a, b) = trusting_pair(&mut lab, &h0, &h1, "20");

    let forged = |src: Ipv4Addr| {
        // The pair's own interval, so that a backup that did accept one
        // would learn nothing that changes its timers.
        let repr = Repr::advertisement(Version::V3, 20, 254, 10, vec![VIP]);
        datagram(src, &repr, 255, |_| {})
    };
    let (states_a, states_b) = (a.states(), b.states());
    let (before_a, before_b) = (a.status()["counters"].clone(), b.status()["counters"].clone());
    const ROUNDS: u64 = 10;
    for _ in 0..ROUNDS {
        inject(&h2, wire::MULTICAST_GROUP, vec![forged(h2.addr), forged(h0.addr)]);
        std::thread::sleep(advert);
    }
    // Let more advert intervals pass: any state change would show by now.
    std::thread::sleep(advert * 5);
    assert_eq!(a.states(), states_a, "the master changed state");
    assert_eq!(b.states(), states_b, "the backup changed state");
    assert!(h0.has_addr(VIP) && !h1.has_addr(VIP), "the VIP moved");
    let (after_a, after_b) = (a.status()["counters"].clone(), b.status()["counters"].clone());
    let delta = |after: &serde_json::Value, before: &serde_json::Value, reason: &str| {
        drops(after, reason) - drops(before, reason)
    };
    // The master: the stranger is untrusted, its own address is forged.
    assert_eq!(delta(&after_a, &before_a, "unknown_peer"), ROUNDS, "{after_a}");
    assert_eq!(delta(&after_a, &before_a, "own_address"), ROUNDS, "{after_a}");
    // The backup drops the stranger. The forgery in the master's name comes
    // from its trusted peer's address: without the peer's authenticated
    // claims (which `vipool vrrp` has not) it is an advert like any other,
    // and it only confirms the backup in following the master.
    assert_eq!(delta(&after_b, &before_b, "unknown_peer"), ROUNDS, "{after_b}");
    assert_eq!(delta(&after_b, &before_b, "own_address"), 0, "{after_b}");

    // The legitimate pair still fails over.
    let killed = Instant::now();
    a.signal(Signal::SIGKILL);
    let bound = master_down(100, advert) + MARGIN;
    assert!(
        wait_for(bound, || h1.has_addr(VIP)),
        "backup did not take the VIP within {bound:?}"
    );
    eprintln!("SIGKILL takeover after {:?}", killed.elapsed());
    // The state event may trail the VIP by a moment (another process's stdout).
    assert!(b.wait_state("Master", MARGIN), "{:?}", b.states());
}

/// The driver judges every datagram by the claim the glue set last, set
/// synchronously from another task: a forgery in the peer's name that the
/// claim contradicts is dropped; an advert that the claim does not yet
/// confirm is held, and the claim that confirms it, arriving with no
/// datagram, releases it at once. The speaker runs in this process, as
/// `vipool node` runs it.
#[test]
fn driver_judges_each_datagram_by_the_latest_claim() {
    if !lab_available("driver_judges_each_datagram_by_the_latest_claim") {
        return;
    }
    use vrrp::proto::{Config, PeerClaim};
    use vrrp::sys::{GarpConfig, Speaker, SpeakerConfig, Status};

    let lab = Lab::new(3);
    // h1 is the peer whose address is forged; it runs nothing.
    let (h0, peer, h2) = (lab.hosts[0].clone(), lab.hosts[1].addr, lab.hosts[2].clone());
    let run = common::in_netns(&h0, move || {
        common::runtime().block_on(async move {
            let mut vrrp = Config::v3(21, 100, Ipv4Addr::UNSPECIFIED, vec![VIP]);
            vrrp.trusted_sources = vec![peer];
            let speaker = Speaker::start(SpeakerConfig {
                interface: "eth0".into(),
                vrrp,
                prefix_len: 24,
                garp: GarpConfig {
                    count: 0,
                    ..GarpConfig::default()
                },
                virtual_mac: false,
            })
            .await
            .expect("speaker");
            let claims = speaker.peer_claims();
            let mut status = speaker.status();
            let contradicted = |s: &Status| s.counters.drops_for(vrrp::proto::DropReason::Contradicted);
            until(&mut status, "master", |s| s.state.to_string() == "Master").await;

            let forged = |priority| {
                let repr = Repr::advertisement(Version::V3, 21, priority, 100, vec![VIP]);
                datagram(peer, &repr, 255, |_| {})
            };
            let claim = |priority, master| PeerClaim {
                address: peer,
                priority,
                master,
                leaving: false,
                valid_until: Instant::now() + Duration::from_secs(60),
            };
            // The peer says it is backup at 50: a 254 in its name is a forgery.
            claims.set(Some(claim(50, false)));
            inject(
                &h2,
                wire::MULTICAST_GROUP,
                vec![forged(254), forged(254), forged(254)],
            );
            until(&mut status, "three contradicted", |s| contradicted(s) == 3).await;
            assert_eq!(status.borrow().state.to_string(), "Master");

            // The peer says 254 but not yet master: held, nothing changes.
            claims.set(Some(claim(254, false)));
            inject(&h2, wire::MULTICAST_GROUP, vec![forged(254)]);
            until(&mut status, "held", |s| s.counters.adverts_held == 1).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(status.borrow().state.to_string(), "Master", "a held advert acted");
            // Its claim lands: the held advert is released and the peer wins.
            claims.set(Some(claim(254, true)));
            until(&mut status, "released", |s| s.counters.held_released == 1).await;
            until(&mut status, "backup", |s| s.state.to_string() == "Backup").await;
            assert_eq!(contradicted(&status.borrow()), 3);
            speaker.shutdown().await.expect("shutdown")
        })
    });
    let counters = run.join().expect("speaker thread");
    assert_eq!(counters.adverts_held, 1);
    assert_eq!(counters.held_released, 1);
}

/// Waits up to [`START`] until `f` holds of the speaker's status.
async fn until(
    status: &mut tokio::sync::watch::Receiver<vrrp::sys::Status>,
    what: &str,
    f: impl FnMut(&vrrp::sys::Status) -> bool,
) {
    let ok = tokio::time::timeout(START, status.wait_for(f))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(ok, "{what}: {:?}", *status.borrow());
}

/// What the fault and the graceful hand-off share: the master of `vrid`
/// has just sent priority 0 and entered Initialize; it keeps the VIP while
/// no master is heard (on `host` too, if given), and gives it up at once
/// when the new master's advert (from `peer`, injected from `injector`)
/// arrives.
async fn vip_kept_until_the_new_master_is_heard(
    status: &mut tokio::sync::watch::Receiver<vrrp::sys::Status>,
    vrid: u8,
    peer: Ipv4Addr,
    injector: &common::Host,
    host: Option<&common::Host>,
) {
    until(status, "initialize", |s| s.state.to_string() == "Initialize").await;
    assert_eq!(status.borrow().counters.priority_zero_sent, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        status.borrow().vip_installed && host.is_none_or(|h| h.has_addr(VIP)),
        "the VIP went before a new master was heard"
    );
    let repr = Repr::advertisement(Version::V3, vrid, 200, 100, vec![VIP]);
    let heard = Instant::now();
    inject(
        injector,
        wire::MULTICAST_GROUP,
        vec![datagram(peer, &repr, 255, |_| {})],
    );
    until(status, "VIP removed", |s| !s.vip_installed).await;
    assert!(
        heard.elapsed() < Duration::from_millis(500),
        "the VIP stayed {:?} after the new master was heard",
        heard.elapsed()
    );
}

/// Issue 12, item 3: a handback (the master enters fault so that the
/// returning primary takes the VIP) costs switches no more than a graceful
/// stop. After its priority-0 advert the old master keeps the VIP until
/// the new master's first advert is heard (the new master announces itself
/// before it advertises): until hosts hear the new master they still send
/// to the old one, whose kernel then answers (a closed port resets the
/// connection at once) instead of losing their SYNs. With no new master,
/// the VIP goes after one advertisement interval.
#[test]
fn a_master_in_fault_keeps_the_vip_until_the_new_master_is_heard() {
    if !lab_available("a_master_in_fault_keeps_the_vip_until_the_new_master_is_heard") {
        return;
    }
    use vrrp::proto::Config;
    use vrrp::sys::{GarpConfig, Speaker, SpeakerConfig, Status};

    let lab = Lab::new(3);
    // h1 is the peer whose advert is injected; it runs nothing.
    let (h0, peer, h2) = (lab.hosts[0].clone(), lab.hosts[1].addr, lab.hosts[2].clone());
    let run = common::in_netns(&h0, move || {
        common::runtime().block_on(async move {
            // Adverts every 1 s: the hold's bound is well apart from the
            // advert that ends it early.
            let vrrp = Config::v3(22, 100, Ipv4Addr::UNSPECIFIED, vec![VIP]);
            let speaker = Speaker::start(SpeakerConfig {
                interface: "eth0".into(),
                vrrp,
                prefix_len: 24,
                garp: GarpConfig {
                    count: 0,
                    ..GarpConfig::default()
                },
                virtual_mac: false,
            })
            .await
            .expect("speaker");
            let mut status = speaker.status();
            let master = |s: &Status| s.state.to_string() == "Master" && s.vip_installed;
            until(&mut status, "master", master).await;

            // Fault: priority 0 goes out, the VIP stays while no master is
            // heard and goes at once on the new master's advert.
            speaker.set_fault(true).await;
            vip_kept_until_the_new_master_is_heard(&mut status, 22, peer, &h2, None).await;

            // Back as master, then fault again with no one to take over:
            // the VIP goes after one advertisement interval.
            speaker.set_fault(false).await;
            until(&mut status, "master again", master).await;
            let left = Instant::now();
            speaker.set_fault(true).await;
            until(&mut status, "VIP removed without a new master", |s| {
                !s.vip_installed
            })
            .await;
            assert!(
                left.elapsed() >= Duration::from_millis(900),
                "the VIP went after {:?}, before an advertisement interval",
                left.elapsed()
            );
            speaker.shutdown().await.expect("shutdown")
        })
    });
    run.join().expect("speaker thread");
}

/// Issue 12, graceful stop: a node that stops hands the VIP off as a
/// handback does ([`Speaker::shutdown_after`]). After its priority-0
/// advert it keeps the VIP until the new master's first advert is heard,
/// so that a switch's SYN sent meanwhile is reset by its kernel (the
/// switch tries again at once) instead of lost (one connect stagger,
/// 50 ms, in failover_bench timelines); with no new master the VIP goes
/// after one advertisement interval. A plain `shutdown` still leaves at
/// once (`sigterm_hands_over_within_skew_time`).
#[test]
fn a_master_handing_off_as_it_stops_keeps_the_vip_until_the_new_master_is_heard() {
    if !lab_available("a_master_handing_off_as_it_stops_keeps_the_vip_until_the_new_master_is_heard") {
        return;
    }
    use vrrp::proto::Config;
    use vrrp::sys::{GarpConfig, Speaker, SpeakerConfig, Status};

    let lab = Lab::new(3);
    // h1 is the peer whose advert is injected; it runs nothing.
    let (h0, peer, h2) = (lab.hosts[0].clone(), lab.hosts[1].addr, lab.hosts[2].clone());
    let host = h0.clone();
    let run = common::in_netns(&h0, move || {
        common::runtime().block_on(async move {
            async fn master(vrid: u8) -> (Speaker, tokio::sync::watch::Receiver<Status>) {
                // Adverts every 1 s: the hold's bound is well apart from
                // the advert that ends it early.
                let vrrp = Config::v3(vrid, 100, Ipv4Addr::UNSPECIFIED, vec![VIP]);
                let speaker = Speaker::start(SpeakerConfig {
                    interface: "eth0".into(),
                    vrrp,
                    prefix_len: 24,
                    garp: GarpConfig {
                        count: 0,
                        ..GarpConfig::default()
                    },
                    virtual_mac: false,
                })
                .await
                .expect("speaker");
                let mut status = speaker.status();
                until(&mut status, "master", |s| {
                    s.state.to_string() == "Master" && s.vip_installed
                })
                .await;
                (speaker, status)
            }

            // Priority 0 goes out; the VIP stays while no master is heard,
            // and goes at once on the new master's advert.
            let (speaker, mut status) = master(23).await;
            let counters = speaker
                .shutdown_after(async {
                    vip_kept_until_the_new_master_is_heard(&mut status, 23, peer, &h2, Some(&host)).await;
                })
                .await
                .expect("shutdown");
            assert_eq!(counters.priority_zero_sent, 1);
            assert!(!host.has_addr(VIP), "the VIP stayed after the stop");

            // No one takes over: the VIP goes after one advertisement
            // interval, and the stop ends then.
            let (speaker, mut status) = master(24).await;
            let left = Instant::now();
            speaker
                .shutdown_after(async {
                    until(&mut status, "VIP removed without a new master", |s| {
                        !s.vip_installed
                    })
                    .await;
                })
                .await
                .expect("shutdown");
            assert!(
                left.elapsed() >= Duration::from_millis(900),
                "the VIP went after {:?}, before an advertisement interval",
                left.elapsed()
            );
            assert!(!host.has_addr(VIP), "the VIP stayed after the stop");
        })
    });
    run.join().expect("speaker thread");
}

/// The hand-off's hold against a forger, replayed from a third namespace.
/// A master that stops gracefully keeps the VIP until its successor's
/// first advert: a forger who could end that hold early would have hosts'
/// packets lost again. The speaker runs as `vipool node` runs it: it
/// trusts only its peer and hears the peer's word over the authenticated
/// link (backup at 100). During the hold the forger sends an advert at 254
/// in the peer's name (a priority the peer's word contradicts), one at 0
/// (the peer is not leaving), one at the peer's own 100 (which neither the
/// source nor the word can tell from the peer's own: held, as the peer's
/// first advert as master is until its word that it is master arrives),
/// and one from its own address (untrusted). None ends the hold and each
/// is counted. The peer's advert ends it once the peer's word confirms
/// it. Then, with the forger at it and no new master, the hold lasts its
/// advertisement interval: no less, and not much more.
#[test]
fn a_forger_cannot_end_the_hand_off_hold_early() {
    if !lab_available("a_forger_cannot_end_the_hand_off_hold_early") {
        return;
    }
    use vrrp::proto::{Config, Counters, DropReason, PeerClaim};
    use vrrp::sys::{GarpConfig, Speaker, SpeakerConfig, Status};

    /// Adverts every 2 s: each step of the hold below takes milliseconds.
    const INTERVAL_CS: u16 = 200;
    let interval = Duration::from_millis(u64::from(INTERVAL_CS) * 10);
    let lab = Lab::new(3);
    // h1 is the peer: it runs nothing, its advert is sent from its own
    // namespace. h2 is the forger.
    let (h0, h1, forger) = (lab.hosts[0].clone(), lab.hosts[1].clone(), lab.hosts[2].clone());
    let peer = h1.addr;
    let host = h0.clone();
    let run = common::in_netns(&h0, move || {
        common::runtime().block_on(async move {
            let word = |master: bool| PeerClaim {
                address: peer,
                priority: 100,
                master,
                leaving: false,
                valid_until: Instant::now() + Duration::from_secs(60),
            };
            async fn master(vrid: u8, word: PeerClaim) -> (Speaker, tokio::sync::watch::Receiver<Status>) {
                let mut vrrp = Config::v3(vrid, 200, Ipv4Addr::UNSPECIFIED, vec![VIP]);
                vrrp.advert_interval_cs = INTERVAL_CS;
                vrrp.trusted_sources = vec![word.address];
                let speaker = Speaker::start(SpeakerConfig {
                    interface: "eth0".into(),
                    vrrp,
                    prefix_len: 24,
                    garp: GarpConfig {
                        count: 0,
                        ..GarpConfig::default()
                    },
                    virtual_mac: false,
                })
                .await
                .expect("speaker");
                speaker.peer_claims().set(Some(word));
                let mut status = speaker.status();
                until(&mut status, "master", |s| {
                    s.state.to_string() == "Master" && s.vip_installed
                })
                .await;
                (speaker, status)
            }
            let advert =
                |vrid, priority| Repr::advertisement(Version::V3, vrid, priority, INTERVAL_CS, vec![VIP]);
            // The one from the forger's own address last: once it is
            // counted, the others were handled.
            let forgeries = |vrid| {
                vec![
                    datagram(peer, &advert(vrid, 254), 255, |_| {}),
                    datagram(peer, &advert(vrid, 0), 255, |_| {}),
                    datagram(peer, &advert(vrid, 100), 255, |_| {}),
                    datagram(forger.addr, &advert(vrid, 254), 255, |_| {}),
                ]
            };
            let delta =
                |now: &Counters, before: &Counters, reason| now.drops_for(reason) - before.drops_for(reason);

            let (speaker, mut status) = master(25, word(false)).await;
            let claims = speaker.peer_claims();
            let counters = speaker
                .shutdown_after(async {
                    until(&mut status, "initialize", |s| s.state.to_string() == "Initialize").await;
                    let before = status.borrow().counters.clone();
                    inject(&forger, wire::MULTICAST_GROUP, forgeries(25));
                    until(&mut status, "the forgeries handled", |s| {
                        !s.vip_installed || delta(&s.counters, &before, DropReason::UnknownPeer) == 1
                    })
                    .await;
                    let now = status.borrow().clone();
                    assert!(
                        now.vip_installed && host.has_addr(VIP),
                        "a forgery ended the hold: {now:?}"
                    );
                    assert_eq!(
                        delta(&now.counters, &before, DropReason::Contradicted),
                        2,
                        "{now:?}"
                    );
                    assert_eq!(now.counters.adverts_held - before.adverts_held, 1, "{now:?}");
                    assert_eq!(now.counters.adverts_received, before.adverts_received, "{now:?}");

                    // The peer, master now, advertises before its word says
                    // so: its advert supersedes the forged one and is held.
                    inject(
                        &h1,
                        wire::MULTICAST_GROUP,
                        vec![datagram(peer, &advert(25, 100), 255, |_| {})],
                    );
                    until(&mut status, "the peer's advert held", |s| {
                        s.counters.adverts_held - before.adverts_held == 2
                    })
                    .await;
                    let now = status.borrow().clone();
                    assert!(now.vip_installed, "an unconfirmed advert ended the hold: {now:?}");
                    assert_eq!(
                        delta(&now.counters, &before, DropReason::Contradicted),
                        3,
                        "{now:?}"
                    );
                    // Its word arrives: the VIP goes at once.
                    let confirmed = Instant::now();
                    claims.set(Some(word(true)));
                    until(&mut status, "VIP removed", |s| !s.vip_installed).await;
                    assert!(
                        confirmed.elapsed() < Duration::from_millis(500),
                        "the VIP stayed {:?} after the peer's word confirmed its advert",
                        confirmed.elapsed()
                    );
                })
                .await
                .expect("shutdown");
            // Released by the word, not given up at the hold's end.
            assert_eq!(counters.held_released, 1, "{counters:?}");
            assert_eq!(counters.priority_zero_received, 0, "{counters:?}");
            assert!(!host.has_addr(VIP), "the VIP stayed after the stop");

            // The forger alone, at it through the hold: the VIP goes after
            // the advertisement interval, not before.
            let (speaker, mut status) = master(26, word(false)).await;
            let left = Instant::now();
            let counters = speaker
                .shutdown_after(async {
                    until(&mut status, "initialize", |s| s.state.to_string() == "Initialize").await;
                    loop {
                        let kept = status.borrow().vip_installed;
                        if !kept || left.elapsed() > START {
                            break;
                        }
                        inject(&forger, wire::MULTICAST_GROUP, forgeries(26));
                        tokio::time::sleep(interval / 10).await;
                    }
                })
                .await
                .expect("shutdown");
            let held = left.elapsed();
            assert!(
                held >= interval * 9 / 10 && held < interval + MARGIN,
                "the VIP went after {held:?}, the interval is {interval:?}"
            );
            assert!(counters.drops_for(DropReason::UnknownPeer) > 0, "{counters:?}");
            assert!(counters.drops_for(DropReason::Contradicted) > 0, "{counters:?}");
            assert_eq!(counters.held_released, 0, "{counters:?}");
            assert!(!host.has_addr(VIP), "the VIP stayed after the stop");
        })
    });
    run.join().expect("speaker thread");
}

/// Issue 12, item 2: a new master makes every host on the segment send to
/// it at once. Its gratuitous ARP goes as a request and as a reply (some
/// hosts heed only one form), in a burst at the takeover and again after
/// 1 s and 2 s: a host whose entry the old master refreshed less than its
/// neighbour locktime ago (Linux: 1 s; older stacks ignore even gratuitous
/// ARP then) takes the later ones. Checked on the wire from a third host.
#[test]
fn new_master_announces_by_request_and_reply_and_again_after_locktime() {
    let test = "new_master_announces_by_request_and_reply_and_again_after_locktime";
    if !lab_available(test) || !common::tool_available(test, "tshark", "tshark") {
        return;
    }
    let mut lab = Lab::new(3);
    let (h0, h1, h2) = (lab.hosts[0].clone(), lab.hosts[1].clone(), lab.hosts[2].clone());
    let a = lab.vipool_vrrp(&h0, &speaker_args("19", "200", "100", &[]));
    let b = lab.vipool_vrrp(&h1, &speaker_args("19", "100", "100", &[]));
    assert!(a.wait_state("Master", START) && b.wait_state("Backup", START));
    // Only the backup's frames: it has not announced anything yet.
    let filter = format!("arp and ether src {}", h1.mac());
    let capture = h2
        .command("tshark")
        .args(["-i", "eth0", "-a", "duration:6", "-f", &filter])
        .args([
            "-T",
            "fields",
            "-e",
            "frame.time_relative",
            "-e",
            "arp.opcode",
            "-e",
            "arp.src.proto_ipv4",
            "-e",
            "arp.dst.proto_ipv4",
            "-e",
            "arp.dst.hw_mac",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tshark");
    // tshark needs a moment to open the interface.
    std::thread::sleep(Duration::from_millis(1000));
    a.signal(Signal::SIGKILL);
    assert!(b.wait_state("Master", START), "backup did not take over");
    let out = capture.wait_with_output().expect("tshark output");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let vip = VIP.to_string();
    let mac = h1.mac();
    // (seconds, opcode) of every gratuitous frame for the VIP.
    let frames: Vec<(f64, u32)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let gratuitous = f.get(2) == Some(&vip.as_str()) && f.get(3) == Some(&vip.as_str());
            if !gratuitous {
                return None;
            }
            Some((f[0].parse().ok()?, f[1].parse().ok()?))
        })
        .collect();
    assert!(
        !frames.is_empty(),
        "no gratuitous ARP for the VIP from the new master:\n{text}"
    );
    // A reply names the sender's own MAC as its target, so hosts that check
    // (Linux does) take it as gratuitous.
    for l in text.lines().filter(|l| l.split('\t').nth(1) == Some("2")) {
        assert_eq!(l.split('\t').nth(4), Some(mac.as_str()), "reply target MAC: {l}");
    }
    let t0 = frames[0].0;
    let within = |from: f64, to: f64, op: u32| {
        frames
            .iter()
            .filter(|(t, o)| *o == op && (t - t0) >= from && (t - t0) <= to)
            .count()
    };
    println!(
        "{test}: {:?}",
        frames
            .iter()
            .map(|(t, o)| (((t - t0) * 1000.0).round(), *o))
            .collect::<Vec<_>>()
    );
    // The burst: three requests and three replies, 100 ms apart.
    assert_eq!(
        (within(0.0, 0.5, 1), within(0.0, 0.5, 2)),
        (3, 3),
        "the burst:\n{text}"
    );
    // Then one of each after about 1 s and after about 2 s.
    for (from, to) in [(0.8, 1.5), (1.8, 2.5)] {
        assert!(
            within(from, to, 1) >= 1 && within(from, to, 2) >= 1,
            "no announcement between {from} and {to} s after the first:\n{text}"
        );
    }
}

/// Every change of the bridge's forwarding entry for `mac`, as `bridge
/// monitor fdb` in the switch namespace reports it: the bridge port it was
/// learned on, in order.
struct FdbWatch {
    ports: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FdbWatch {
    fn start(lab: &mut Lab, mac: &'static str) -> FdbWatch {
        use std::io::BufRead;
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.switch, "bridge", "monitor", "fdb"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("bridge monitor fdb");
        let stdout = child.stdout.take().expect("piped");
        lab.adopt(child);
        let ports = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = ports.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut words = line.split_whitespace();
                if words.next() != Some(mac) || line.starts_with("Deleted") {
                    continue;
                }
                if let Some(port) = words.skip_while(|w| *w != "dev").nth(1) {
                    sink.lock().unwrap().push(port.to_string());
                }
            }
        });
        FdbWatch { ports }
    }

    fn ports(&self) -> Vec<String> {
        self.ports.lock().unwrap().clone()
    }
}

/// The bridge port holding `mac` now, per `bridge fdb show`.
fn fdb_port(lab: &Lab, mac: &str) -> Option<String> {
    let out = common::sh(&[
        "ip",
        "netns",
        "exec",
        &lab.switch,
        "bridge",
        "fdb",
        "show",
        "br",
        "br0",
    ]);
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(mac))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "dev").nth(1))
        .map(str::to_string)
}

#[test]
fn a_backup_never_teaches_the_switch_the_virtual_mac() {
    // RFC 5798 §7.3: the virtual MAC is the master's source address, and
    // the switch learns where it is from the frames it sends. A backup
    // with the same MAC on its macvlan that sends anything from it (an
    // IGMP report for 224.0.0.18 when it joins the group there, as the
    // speaker did until this test) moves the switch's entry to the
    // backup's port until the master's next advert: traffic to the VIP
    // went to the backup in the meantime (failover_bench: ~200 ms stalls,
    // one TCP retransmission, when the primary came back).
    if !lab_available("a_backup_never_teaches_the_switch_the_virtual_mac") {
        return;
    }
    let mut lab = Lab::new(2);
    let (h0, h1) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    let vmac = "00:00:5e:00:01:11"; // VRID 17
                                    // The kernel repeats a join's IGMP reports within this interval: a
                                    // backup watched this long (and a margin) would have sent them all.
    let interval_ms: u64 = h0
        .run(&[
            "cat",
            "/proc/sys/net/ipv4/conf/default/igmpv3_unsolicited_report_interval",
        ])
        .trim()
        .parse()
        .expect("igmpv3_unsolicited_report_interval");
    let watch_for = Duration::from_millis(interval_ms) + MARGIN;

    let fdb = FdbWatch::start(&mut lab, vmac);
    let first = lab.vipool_vrrp(&h1, &speaker_args("17", "100", "100", &["--vmac"]));
    assert!(first.wait_state("Master", START));
    // Also shows that the watch is live before the backup starts.
    assert!(wait_for(START, || !fdb.ports().is_empty()));
    assert_eq!(fdb.ports(), vec![h1.port.clone()]);

    // A backup that starts while the other holds the VIP (a returning
    // primary, here without preemption so that it stays backup).
    let second = lab.vipool_vrrp(
        &h0,
        &speaker_args("17", "200", "100", &["--vmac", "--no-preempt"]),
    );
    assert!(second.wait_state("Backup", START));
    std::thread::sleep(watch_for);
    assert_eq!(
        second.state(),
        "Backup",
        "it must still hear the master's adverts"
    );
    assert_eq!(
        fdb.ports(),
        vec![h1.port.clone()],
        "the switch learned the virtual MAC on the backup's port ({})",
        h0.port
    );

    // It becomes master: the switch follows it at once.
    first.signal(Signal::SIGTERM);
    assert!(second.wait_state("Master", START));
    assert_eq!(first.wait_exit(START), Some(0));
    assert!(
        wait_for(MARGIN, || fdb_port(&lab, vmac).as_deref() == Some(&h0.port)),
        "the switch still sends the virtual MAC to {:?}, not the new master's port {}",
        fdb_port(&lab, vmac),
        h0.port
    );

    // The old master returns as backup: the entry stays with the master.
    let third = lab.vipool_vrrp(&h1, &speaker_args("17", "100", "100", &["--vmac"]));
    assert!(third.wait_state("Backup", START));
    std::thread::sleep(watch_for);
    assert_eq!(third.state(), "Backup");
    assert_eq!(
        fdb.ports(),
        vec![h1.port.clone(), h0.port.clone()],
        "after the takeover the virtual MAC must move to the master's port once and stay there"
    );
    assert_eq!(fdb_port(&lab, vmac).as_deref(), Some(h0.port.as_str()));
}

/// A node runs everything else on one thread: its raft log flushes (an
/// fsync, which a busy disk stretches), the cluster link, the glue. When
/// its VRRP speaker ran there too, a master whose thread was held up for
/// Master_Down_Interval sent no advert meanwhile, and its backup took over
/// although nothing had failed (trust_attacks a2 flaked so under CI load).
/// A speaker started on its own thread keeps advertising while its owner's
/// thread is held up for twice Master_Down_Interval (modelled by a
/// blocking sleep on the owner's single-threaded runtime), and its backup
/// stays backup.
#[test]
fn a_master_keeps_advertising_while_its_owners_thread_is_held_up() {
    let test = "a_master_keeps_advertising_while_its_owners_thread_is_held_up";
    if !lab_available(test) {
        return;
    }
    use vrrp::proto::State;

    let mut lab = Lab::new(2);
    let (h0, h1) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    let advert = Duration::from_millis(100);
    let held_up = master_down(100, advert) * 2;
    let (go_tx, go) = std::sync::mpsc::channel::<()>();
    let (master_tx, master) = std::sync::mpsc::channel::<()>();
    let run = common::in_netns(&h0, move || {
        common::runtime().block_on(async move {
            let speaker = in_process_speaker(23, &[]).await;
            let mut status = speaker.status();
            let became = tokio::time::timeout(START, status.wait_for(|s| s.state == State::Master)).await;
            assert!(
                became.is_ok_and(|r| r.is_ok()),
                "never master: {:?}",
                *status.borrow()
            );
            master_tx.send(()).expect("the test waits");
            go.recv().expect("the test says go");
            // The owner's thread held up, as by a slow flush: nothing on
            // this runtime runs meanwhile.
            let sent = status.borrow().counters.adverts_sent;
            std::thread::sleep(held_up);
            let during = status.borrow().counters.adverts_sent - sent;
            let state = status.borrow().state;
            speaker.shutdown().await.expect("shutdown");
            (during, state)
        })
    });
    master
        .recv_timeout(START)
        .expect("the in-process speaker became master");
    let b = lab.vipool_vrrp(&h1, &speaker_args("23", "100", "100", &[]));
    assert!(
        b.wait_state("Backup", START),
        "priority 100 is not backup: {:?}",
        b.states()
    );
    go_tx.send(()).expect("the speaker's owner waits");
    let (during, state) = run.join().expect("the owner's thread");
    eprintln!("{test}: {during} adverts sent while the owner's thread was held up for {held_up:?}");
    // One every 100 ms: 2 * 0.36 s holds 7; half of that on a loaded machine.
    assert!(
        u128::from(during) >= held_up.as_millis() / advert.as_millis() / 2,
        "only {during} adverts in {held_up:?}"
    );
    assert_eq!(state, State::Master);
    assert_eq!(
        b.states(),
        ["Backup"],
        "the backup took over while the master's owner was held up"
    );
}

/// Datagrams sent to `dst` as fast as a thread inside `host`'s namespace
/// can send them, until stopped (or dropped). It runs at nice -10, so that
/// whatever else the machine runs does not pause it.
struct Flood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Flood {
    fn start(host: &common::Host, dst: Ipv4Addr, datagrams: Vec<Vec<u8>>) -> Flood {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = common::in_netns(host, move || {
            use socket2::{Domain, Protocol, SockAddr, Socket, Type};
            // SAFETY: setpriority has no memory-safety preconditions; `0`
            // is the calling thread (Linux keeps a nice value per thread).
            let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) };
            assert_eq!(niced, 0, "nice -10: {}", std::io::Error::last_os_error());
            let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112))).expect("raw socket");
            socket.set_header_included_v4(true).expect("IP_HDRINCL");
            socket.bind_device(Some(b"eth0")).expect("SO_BINDTODEVICE");
            let addr = SockAddr::from(std::net::SocketAddrV4::new(dst, 0));
            let mut sent = 0;
            while !flag.load(Ordering::Relaxed) {
                for d in &datagrams {
                    // A full queue (ENOBUFS) only means the flood is as fast
                    // as the link: carry on.
                    sent += u64::from(socket.send_to(d, &addr).is_ok());
                }
            }
            sent
        });
        Flood {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the flood and returns how many datagrams were sent.
    fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let thread = self.thread.take().expect("running");
        thread.join().expect("flood thread")
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Two speakers for VRID `vrid` that trust only each other's address:
/// `h0`'s at priority 200, master and holding the VIP, `h1`'s at 100,
/// backup; adverts every 100 ms.
fn trusting_pair(
    lab: &mut Lab,
    h0: &common::Host,
    h1: &common::Host,
    vrid: &str,
) -> (common::Speaker, common::Speaker) {
    let (t0, t1) = (h1.addr.to_string(), h0.addr.to_string());
    let a = lab.vipool_vrrp(h0, &speaker_args(vrid, "200", "100", &["--trusted-source", &t0]));
    let b = lab.vipool_vrrp(h1, &speaker_args(vrid, "100", "100", &["--trusted-source", &t1]));
    assert!(a.wait_state("Master", START) && b.wait_state("Backup", START));
    assert!(wait_for(START, || h0.has_addr(VIP) && !h1.has_addr(VIP)));
    (a, b)
}

/// A speaker in this process, on eth0 of the namespace the caller runs in,
/// on a thread of its own: VRID `vrid`, priority 200, VIP [`VIP`], adverts
/// every 100 ms, no gratuitous ARP, trusting `trusted` (none: anyone).
async fn in_process_speaker(vrid: u8, trusted: &[Ipv4Addr]) -> vrrp::sys::Speaker {
    use vrrp::sys::{GarpConfig, Speaker, SpeakerConfig};
    let mut config = vrrp::proto::Config::v3(vrid, 200, Ipv4Addr::UNSPECIFIED, vec![VIP]);
    config.advert_interval_cs = 10;
    config.trusted_sources = trusted.to_vec();
    Speaker::start_on_own_thread(SpeakerConfig {
        interface: "eth0".into(),
        vrrp: config,
        prefix_len: 24,
        garp: GarpConfig {
            count: 0,
            ..GarpConfig::default()
        },
        virtual_mac: false,
    })
    .await
    .expect("speaker")
}

/// What a host flooding `dst` sends, addressed to `dst` itself so that
/// only it is flooded: adverts of priority 254 in the flooder's own name
/// (untrusted: dropped as `unknown_peer`), and garbage in the name of
/// `trusted`, the speaker's peer (a wrong checksum: dropped as `checksum`).
/// With a source filter the two go into separate queues, the garbage into
/// the one the kernel keeps for the trusted peer.
///
/// The garbage is as long as an advert can be (255 addresses), so that the
/// speaker spends longer checking its checksum than the kernel spends
/// delivering it. With short datagrams only, a speaker with a CPU of its
/// own reads about as fast as one thread sends, its socket runs dry now
/// and then, and a loop that waits for that to run its timers gets away
/// with it on a quiet machine (measured, loaded machine: a master starved
/// to 0 to 3 adverts in 2.9 s with these datagrams, 6 to 26 of 29 with
/// short ones). A host on the segment sending at line rate outpaces the
/// speaker whatever it sends.
fn flood_datagrams(vrid: u8, flooder: Ipv4Addr, trusted: Ipv4Addr, dst: Ipv4Addr) -> Vec<Vec<u8>> {
    vec![
        untrusted_datagram(vrid, flooder, dst),
        garbage_datagram(vrid, trusted, dst),
    ]
}

/// A flood all in the flooder's own name: its adverts, and garbage as long
/// as an advert can be (the longest datagrams fill a queue soonest).
fn own_flood_datagrams(vrid: u8, flooder: Ipv4Addr, dst: Ipv4Addr) -> Vec<Vec<u8>> {
    vec![
        untrusted_datagram(vrid, flooder, dst),
        garbage_datagram(vrid, flooder, dst),
    ]
}

/// A valid advert of priority 254 from `src`.
fn untrusted_datagram(vrid: u8, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let advert = Repr::advertisement(Version::V3, vrid, 254, 10, vec![VIP]);
    wire::ipv4::build(
        src,
        dst,
        255,
        &advert.to_bytes(Checksum::PseudoHeader { src, dst }),
    )
}

/// An advert with 255 addresses and a wrong checksum, from `src`.
fn garbage_datagram(vrid: u8, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let longest: Vec<Ipv4Addr> = (0..=254).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect();
    let garbage = Repr::advertisement(Version::V3, vrid, 254, 10, longest);
    let mut msg = garbage.to_bytes(Checksum::PseudoHeader { src, dst });
    msg[6] ^= 0xff;
    wire::ipv4::build(src, dst, 255, &msg)
}

/// A host on the segment floods the master's VRRP socket with adverts from
/// an untrusted source and garbage, thousands a second, for several
/// Master_Down_Intervals. The master must keep advertising on time (its
/// timers run however many datagrams wait), so its backup stays backup and
/// the VIP stays put; the flood is dropped and counted, and the warning
/// about it is logged once, not once per datagram.
#[test]
fn a_flood_at_the_master_neither_silences_it_nor_moves_the_vip() {
    let test = "a_flood_at_the_master_neither_silences_it_nor_moves_the_vip";
    if !lab_available(test) {
        return;
    }
    let mut lab = Lab::new(3);
    let (h0, h1, h2) = (lab.hosts[0].clone(), lab.hosts[1].clone(), lab.hosts[2].clone());
    let advert = Duration::from_millis(100);
    let (t0, t1) = (h1.addr.to_string(), h0.addr.to_string());
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("master.log");
    let mut args = vec!["vrrp", "--json", "--interface", "eth0"];
    args.extend(speaker_args("24", "200", "100", &["--trusted-source", &t0]));
    let a = lab.vipool_logged(&h0, &args, &log);
    let b = lab.vipool_vrrp(&h1, &speaker_args("24", "100", "100", &["--trusted-source", &t1]));
    assert!(a.wait_state("Master", START) && b.wait_state("Backup", START));
    assert!(wait_for(START, || h0.has_addr(VIP) && !h1.has_addr(VIP)));

    let (states_a, states_b) = (a.states(), b.states());
    let (before_a, before_b) = (a.status()["counters"].clone(), b.status()["counters"].clone());
    let flooding = master_down(100, advert) * 8;
    let flood = Flood::start(&h2, h0.addr, flood_datagrams(24, h2.addr, h1.addr, h0.addr));
    let began = Instant::now();
    std::thread::sleep(flooding);
    // Asked during the flood: the tasks that share the speaker's runtime
    // (here the one that answers SIGUSR1) still get their turn.
    let asked = Instant::now();
    let during_a = a.status()["counters"].clone();
    let answered = asked.elapsed();
    let during_b = b.status()["counters"].clone();
    let flooded = began.elapsed();
    let sent = flood.stop();
    // Any state change would show within another few intervals.
    std::thread::sleep(master_down(100, advert));

    let count = |after: &serde_json::Value, before: &serde_json::Value, field: &str| {
        after[field].as_u64().unwrap_or(0) - before[field].as_u64().unwrap_or(0)
    };
    let delta = |after: &serde_json::Value, before: &serde_json::Value, reason: &str| {
        drops(after, reason) - drops(before, reason)
    };
    let heard = count(&during_b, &before_b, "adverts_received");
    let advertised = count(&during_a, &before_a, "adverts_sent");
    let (untrusted, garbage) = (
        delta(&during_a, &before_a, "unknown_peer"),
        delta(&during_a, &before_a, "checksum"),
    );
    let log_text = std::fs::read_to_string(&log).expect("master log");
    let warned = log_text
        .lines()
        // At warn level: per-datagram debug lines (VIPOOL_LAB_LOG=debug) say it too.
        .filter(|l| l.contains(" WARN ") && l.contains("VRRP advert dropped"))
        .count();
    eprintln!(
        "{test} (loaded machine): {sent} datagrams sent in {flooded:?}; the master dropped {untrusted} as \
         unknown_peer and {garbage} as checksum, sent {advertised} adverts; the backup heard {heard}; \
         {warned} warning line(s); a status request answered in {answered:?}"
    );
    assert_eq!(b.states(), states_b, "the backup changed state under the flood");
    assert_eq!(a.states(), states_a, "the master changed state under the flood");
    assert!(h0.has_addr(VIP) && !h1.has_addr(VIP), "the VIP moved");
    // One advert every 100 ms; half of them on a loaded machine.
    let expected = flooded.as_millis() as u64 / advert.as_millis() as u64;
    assert!(
        heard >= expected / 2,
        "the backup heard only {heard} adverts in {flooded:?} (expected about {expected})"
    );
    // Thousands a second were sent: far more than one per advert interval
    // reached the speaker and were counted, never accepted.
    assert!(
        untrusted >= expected * 10 && garbage >= expected * 10,
        "the flood was not counted: {during_a}"
    );
    assert_eq!(count(&during_a, &before_a, "adverts_received"), 0, "{during_a}");
    assert_eq!(warned, 1, "warnings not limited:\n{log_text}");
}

/// The other side: the backup's socket is flooded as the master is
/// killed. Its Master_Down_Timer must still fire however many datagrams
/// wait, and it takes the VIP within the usual bound.
#[test]
fn a_flood_at_the_backup_does_not_stop_it_taking_over() {
    let test = "a_flood_at_the_backup_does_not_stop_it_taking_over";
    if !lab_available(test) {
        return;
    }
    let mut lab = Lab::new(3);
    let (h0, h1, h2) = (lab.hosts[0].clone(), lab.hosts[1].clone(), lab.hosts[2].clone());
    let advert = Duration::from_millis(100);
    let (a, b) = trusting_pair(&mut lab, &h0, &h1, "25");

    let before = b.status()["counters"].clone();
    let flood = Flood::start(&h2, h1.addr, flood_datagrams(25, h2.addr, h0.addr, h1.addr));
    // Well inside a Master_Down_Interval: the backup still follows the
    // master (what a longer flood does before the kill is another matter,
    // see `a_long_flood_from_another_source_at_the_backup_does_not_move_the_vip`
    // and `a_long_flood_in_the_masters_name_at_the_backup_does_not_move_the_vip`).
    std::thread::sleep(advert);
    assert_eq!(b.states(), ["Backup"], "the backup moved before the kill");
    let killed = Instant::now();
    a.signal(Signal::SIGKILL);
    let bound = master_down(100, advert) + MARGIN;
    let took = wait_for(bound, || h1.has_addr(VIP)).then(|| killed.elapsed());
    let sent = flood.stop();
    let during = b.status()["counters"].clone();
    let untrusted = drops(&during, "unknown_peer") - drops(&before, "unknown_peer");
    eprintln!(
        "{test} (loaded machine): {sent} datagrams sent; the backup dropped {untrusted} as unknown_peer; \
         took the VIP after {took:?} (Master_Down_Interval {:?})",
        master_down(100, advert)
    );
    assert!(
        took.is_some(),
        "the flooded backup did not take the VIP within {bound:?}"
    );
    assert!(b.wait_state("Master", MARGIN), "{:?}", b.states());
    // Flooded all along: thousands a second, far more than one per interval.
    let expected = (bound.as_millis() / advert.as_millis()) as u64;
    assert!(
        untrusted >= expected * 10,
        "the flood did not reach the backup: {during}"
    );
}

/// A host of the segment floods the backup from its own address, faster
/// than the backup reads, for eight Master_Down_Intervals. In one shared
/// queue the kernel would drop the master's adverts with the flood once
/// the queue is full, and the backup would take the VIP from a live master
/// (loaded machine, with the speaker's source filter taken out: 5 runs of
/// 6 failed so). The filter gives the trusted peer a queue of its own,
/// which the flood cannot fill: the backup stays backup, and hears every
/// advert.
#[test]
fn a_long_flood_from_another_source_at_the_backup_does_not_move_the_vip() {
    let test = "a_long_flood_from_another_source_at_the_backup_does_not_move_the_vip";
    if !lab_available(test) {
        return;
    }
    let mut lab = Lab::new(3);
    let (h0, h1, h2) = (lab.hosts[0].clone(), lab.hosts[1].clone(), lab.hosts[2].clone());
    let (_master, b) = trusting_pair(&mut lab, &h0, &h1, "26");

    flood_the_backup_from_a_stranger(test, &h1, &h2, &b, 26);
    assert_eq!(b.states(), ["Backup"], "the flood moved the backup");
    assert!(h0.has_addr(VIP) && !h1.has_addr(VIP), "the flood moved the VIP");
}

/// `h2` floods the backup `b` on `h1` (VRID `vrid`, adverts every 100 ms)
/// from its own address for eight Master_Down_Intervals, faster than the
/// backup reads. Asserts that the flood outpaced the backup (its kernel
/// dropped what a full queue could not take: what makes these tests), that
/// the backup still heard at least half the master's adverts (a loaded
/// machine), and that the flood reached the speaker and was counted, from
/// the other queue, whenever the master's was empty.
fn flood_the_backup_from_a_stranger(
    test: &str,
    h1: &common::Host,
    h2: &common::Host,
    b: &common::Speaker,
    vrid: u8,
) {
    let advert = Duration::from_millis(100);
    let before = b.status()["counters"].clone();
    let overflowed_before = raw_socket_drops(h1);
    let flood = Flood::start(h2, h1.addr, own_flood_datagrams(vrid, h2.addr, h1.addr));
    let began = Instant::now();
    std::thread::sleep(master_down(100, advert) * 8);
    let after = b.status()["counters"].clone();
    let flooded = began.elapsed();
    let sent = flood.stop();
    let overflowed = raw_socket_drops(h1) - overflowed_before;
    let heard =
        after["adverts_received"].as_u64().unwrap_or(0) - before["adverts_received"].as_u64().unwrap_or(0);
    let untrusted = drops(&after, "unknown_peer") - drops(&before, "unknown_peer");
    eprintln!(
        "{test}: {sent} datagrams sent in {flooded:?}; the backup heard {heard} adverts, dropped {untrusted} \
         as unknown_peer, its kernel {overflowed} on full queues; states {:?}",
        b.states()
    );
    assert!(overflowed > 0, "the flood never filled the backup's queue");
    let expected = flooded.as_millis() as u64 / advert.as_millis() as u64;
    assert!(
        heard >= expected / 2,
        "the backup heard only {heard} adverts in {flooded:?} (expected about {expected}): {after}"
    );
    assert!(untrusted > 0, "the flood was not counted: {after}");
}

/// Datagrams the kernel dropped because a VRRP socket's queue was full,
/// summed over the raw protocol-112 sockets in `host`'s namespace (the
/// `drops` column of `/proc/net/raw`; a socket filter's drops are not in it).
fn raw_socket_drops(host: &common::Host) -> u64 {
    let table = common::in_netns(host, || {
        std::fs::read_to_string("/proc/thread-self/net/raw").expect("/proc/net/raw")
    })
    .join()
    .expect("reader thread");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            line.split_whitespace()
                .nth(1)
                .is_some_and(|local| local.ends_with(":0070"))
        })
        .map(|line| {
            line.split_whitespace()
                .last()
                .and_then(|d| d.parse::<u64>().ok())
                .expect("drops column")
        })
        .sum()
}

/// Known limitation, kept as a reproduction: a flood forged in the
/// master's own source address goes into the queue the kernel keeps for
/// the trusted peer, fills it faster than the backup reads, and the kernel
/// then drops the master's real adverts with it. After a Master_Down_Interval
/// without one the backup takes over while the master lives. Nothing in an
/// advert tells a forgery from the master (VRRP has no authentication), so
/// no filter at this layer can help; in a pair the peer's authenticated
/// claims over the cluster link are the defence (SPEC §9: an advert the
/// peer's authenticated state contradicts does not take service away), and
/// `vipool vrrp` run here has none.
#[test]
#[ignore = "known limitation: a flood in the trusted peer's source address crowds out its adverts in the kernel"]
fn a_long_flood_in_the_masters_name_at_the_backup_does_not_move_the_vip() {
    let test = "a_long_flood_in_the_masters_name_at_the_backup_does_not_move_the_vip";
    if !lab_available(test) {
        return;
    }
    let mut lab = Lab::new(3);
    let (h0, h1, h2) = (lab.hosts[0].clone(), lab.hosts[1].clone(), lab.hosts[2].clone());
    let advert = Duration::from_millis(100);
    let (_master, b) = trusting_pair(&mut lab, &h0, &h1, "28");

    let flood = Flood::start(&h2, h1.addr, vec![garbage_datagram(28, h0.addr, h1.addr)]);
    std::thread::sleep(master_down(100, advert) * 8);
    let sent = flood.stop();
    eprintln!(
        "{test} (loaded machine): {sent} datagrams sent; backup states {:?}",
        b.states()
    );
    assert_eq!(b.states(), ["Backup"], "the flood moved the backup");
    assert!(h0.has_addr(VIP) && !h1.has_addr(VIP), "the flood moved the VIP");
}

/// The speaker's owner is heard under a flood: a command (here entering
/// fault, as a node handing the VIP back does) takes effect at once, not
/// once the flood stops. The speaker runs in this process, on a thread of
/// its own, as `vipool node` runs it.
#[test]
fn a_flood_does_not_hold_up_the_owners_commands() {
    let test = "a_flood_does_not_hold_up_the_owners_commands";
    if !lab_available(test) {
        return;
    }
    use vrrp::proto::State;

    let lab = Lab::new(3);
    // h1 is the trusted peer, in whose name garbage comes; it runs nothing.
    let (h0, peer, h2) = (lab.hosts[0].clone(), lab.hosts[1].addr, lab.hosts[2].clone());
    let advert = Duration::from_millis(100);
    let (master_tx, master) = std::sync::mpsc::channel::<()>();
    let (go_tx, go) = std::sync::mpsc::channel::<()>();
    let run = common::in_netns(&h0, move || {
        common::runtime().block_on(async move {
            let speaker = in_process_speaker(27, &[peer]).await;
            let mut status = speaker.status();
            until(&mut status, "master", |s| s.state == State::Master).await;
            master_tx.send(()).expect("the test waits");
            // The speaker runs on its own thread: blocking here holds up nothing.
            go.recv().expect("the test says go");
            let asked = Instant::now();
            speaker.set_fault(true).await;
            let left = tokio::time::timeout(MARGIN, status.wait_for(|s| s.state == State::Initialize))
                .await
                .is_ok();
            let took = asked.elapsed();
            let dropped = status.borrow().counters.total_drops();
            speaker.shutdown().await.expect("shutdown");
            (left, took, dropped)
        })
    });
    master.recv_timeout(START).expect("the speaker became master");
    let flood = Flood::start(&h2, h0.addr, flood_datagrams(27, h2.addr, peer, h0.addr));
    // Flooded for a while before the command.
    std::thread::sleep(master_down(200, advert));
    go_tx.send(()).expect("the speaker's owner waits");
    let (left, took, dropped) = run.join().expect("the owner's thread");
    let sent = flood.stop();
    eprintln!(
        "{test} (loaded machine): {sent} datagrams sent, {dropped} dropped; fault entered {took:?} after the command"
    );
    assert!(left, "no fault within {MARGIN:?} of the command under the flood");
    assert!(dropped > 0, "the flood did not reach the speaker");
}
