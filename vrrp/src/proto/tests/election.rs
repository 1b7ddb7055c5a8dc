//! Election, failover and timers on the simulated link (RFC 9568 §6).

use std::time::{Duration, Instant};

use super::*;

// ---------------------------------------------------------------------------
// 1. Timers
// ---------------------------------------------------------------------------

/// RFC 9568 §6.1: "Skew_Time: Time to skew Master_Down_Interval in
/// centiseconds. Calculated as: (((256 - priority) * Master_Adver_Interval) /
/// 256)" and "Master_Down_Interval: ... Calculated as: (3 *
/// Master_Adver_Interval) + Skew_Time".
///
/// RFC 3768 §6.1: "Skew_Time ... in seconds. Calculated as: ( (256 -
/// Priority) / 256 )" and "Master_Down_Interval ... (3 *
/// Advertisement_Interval) + Skew_time".
#[test]
fn rfc_timer_table() {
    let t0 = Instant::now();
    let started = |config: Config| {
        let mut vr = Instance::new(config).unwrap();
        vr.startup(t0);
        vr
    };

    let vr = started(v3(100, 2));
    assert_eq!(vr.master_adver_interval(), secs(1));
    assert_eq!(vr.skew_time(), us(609_375));
    assert_eq!(vr.master_down_interval(), us(3_609_375));

    // 56 * 10 cs / 256 = 2.1875 cs: precision a centisecond formula would lose.
    let vr = started(Config {
        advert_interval_cs: 10,
        ..v3(200, 2)
    });
    assert_eq!(vr.master_adver_interval(), Duration::from_millis(100));
    assert_eq!(vr.skew_time(), us(21_875));
    assert_eq!(vr.master_down_interval(), us(321_875));

    let vr = started(v2(100, 2));
    assert_eq!(vr.skew_time(), Duration::from_nanos(156 * 1_000_000_000 / 256));
    assert_eq!(vr.skew_time(), us(609_375));
    assert_eq!(vr.master_down_interval(), us(3_609_375));

    // v2 skew does not scale with the interval; v3 skew does.
    let vr = started(Config {
        advert_interval_cs: 300,
        ..v2(200, 2)
    });
    assert_eq!(vr.skew_time(), us(218_750));
    assert_eq!(vr.master_down_interval(), us(9_218_750));
    let vr = started(Config {
        advert_interval_cs: 300,
        ..v3(200, 2)
    });
    assert_eq!(vr.skew_time(), us(656_250));
    assert_eq!(vr.master_down_interval(), us(9_656_250));

    // The owner: (256 - 255) / 256 of an interval.
    let vr = started(Config::v3(VRID, 255, VIP, vec![VIP]));
    assert_eq!(vr.skew_time(), us(3_906) + Duration::from_nanos(250));
}

/// RFC 9568 §6.4.1: "Set Master_Adver_Interval to Advertisement_Interval ...
/// Set the Master_Down_Timer to Master_Down_Interval ... Transition to the
/// {Backup state}", and §6.4.2: "If the Master_Down_Timer fires, then: Send
/// an ADVERTISEMENT ... Transition to the {Master state}".
#[test]
fn lone_backup_becomes_master_at_exactly_master_down_interval() {
    for (config, mdi) in [(v3(100, 2), us(3_609_375)), (v2(200, 2), us(3_218_750))] {
        let mut net = Network::started(vec![config]);
        assert_eq!(net.state(0), State::Backup);
        assert_eq!(net.backups(0), vec![(net.t0, Reason::Startup)]);
        assert_eq!(net.vr(0).poll_timeout(), Some(net.at(mdi)));
        assert_eq!(net.vr(0).master_address(), None);

        net.run_until(secs(10));
        assert_eq!(net.masterships(0), vec![(net.at(mdi), Reason::MasterDown)]);
        assert_eq!(net.vr(0).master_address(), Some(host(2)));
        // The advert goes out before the state change is reported.
        let log = &net.nodes[0].log;
        assert!(
            matches!(log[1], (t, Event::Transmit(ref r)) if t == net.at(mdi) && r.priority == net.vr(0).config().priority)
        );
        assert_eq!(log[2], (net.at(mdi), Event::BecomeMaster(Reason::MasterDown)));
        // Then one advert per interval: at mdi, mdi+1, ..., mdi+6 s.
        assert_eq!(net.vr(0).counters().adverts_sent, 7);
        // Its own looped-back adverts were neither counted nor dropped.
        assert_eq!(net.vr(0).counters().adverts_received, 0);
        assert_eq!(net.vr(0).counters().total_drops(), 0);
    }
}

// ---------------------------------------------------------------------------
// 2. Election and failover
// ---------------------------------------------------------------------------

/// RFC 9568 §6.4.2: "If an ADVERTISEMENT is received, then: ... If the
/// Priority in the ADVERTISEMENT is greater than or equal to the local
/// Priority, then: ... Reset the Master_Down_Timer to Master_Down_Interval".
/// A backup takes over Master_Down_Interval after the last advert it heard.
#[test]
fn higher_priority_wins_and_backup_takes_over_after_crash() {
    let mut net = Network::started(vec![v3(200, 1), v3(100, 2)]);
    net.run_until(secs(5));
    // 200's Master_Down_Interval is 3 + 56/256 s, shorter than 100's.
    assert_eq!(
        net.masterships(0),
        vec![(net.at(us(3_218_750)), Reason::MasterDown)]
    );
    assert_eq!(net.state(1), State::Backup);
    assert_eq!(net.vr(1).master_address(), Some(host(1)));
    assert_eq!(net.vr(0).master_address(), Some(host(1)));
    assert!(net.vr(0).accepts_vip_traffic());
    assert!(!net.vr(1).accepts_vip_traffic());

    net.run_until(secs(10));
    net.crash(0);
    // Adverts at 3.21875 + k s; the last before the crash at 9.21875 s.
    let last = net.nodes[1].last_rx.unwrap();
    assert_eq!(last, net.at(us(9_218_750)));
    net.run_until(secs(20));
    assert_eq!(
        net.masterships(1),
        vec![(last + us(3_609_375), Reason::MasterDown)]
    );
    assert_eq!(net.masterships(1)[0].0, net.at(us(12_828_125)));
    assert_eq!(net.masters(), vec![1]);
}

/// The same with VRRPv2 and simple-text authentication (RFC 3768 §6.4).
#[test]
fn v2_pair_elects_and_fails_over() {
    let mut net = Network::started(vec![v2(200, 1), v2(100, 2)]);
    net.run_until(secs(10));
    assert_eq!(net.masters(), vec![0]);
    assert_eq!(net.vr(1).counters().total_drops(), 0);
    net.crash(0);
    let last = net.nodes[1].last_rx.unwrap();
    net.run_until(secs(20));
    assert_eq!(
        net.masterships(1),
        vec![(last + us(3_609_375), Reason::MasterDown)]
    );
}

/// A partitioned backup takes over (split brain is the RFC's answer to a
/// partition); when the link heals the higher priority wins again.
#[test]
fn isolation_and_heal() {
    let mut net = Network::started(vec![v3(200, 1), v3(100, 2)]);
    net.run_until(secs(10));
    net.isolate(1, true);
    net.run_until(secs(20));
    assert_eq!(net.masters(), vec![0, 1]);
    net.isolate(1, false);
    net.run_until(secs(22));
    assert_eq!(net.masters(), vec![0]);
    assert_eq!(net.backups(1).last().unwrap().1, Reason::HigherPriority);
}

/// A one-way failure: the backup stops hearing the master and takes over;
/// the master hears the lower-priority advert and, per RFC 9568 §6.4.3,
/// discards it ("Else: Discard the ADVERTISEMENT"), so both are master until
/// the link is repaired.
#[test]
fn one_way_cut() {
    let mut net = Network::started(vec![v3(200, 1), v3(100, 2)]);
    net.run_until(secs(10));
    net.cut.insert((0, 1));
    net.run_until(secs(20));
    assert_eq!(net.masters(), vec![0, 1]);
    assert!(net.vr(0).counters().adverts_received > 0);
    net.cut.clear();
    net.run_until(secs(22));
    assert_eq!(net.masters(), vec![0]);
}

// ---------------------------------------------------------------------------
// 3. Preemption
// ---------------------------------------------------------------------------

/// RFC 9568 §6.4.2: "Else (Preempt_Mode is True and the Priority in the
/// ADVERTISEMENT is less than the local Priority): Discard the
/// ADVERTISEMENT". The returning higher-priority router ignores the lower
/// master and takes over when its own Master_Down_Timer expires; it reports
/// a preemption (the master is alive), not a master that went down.
#[test]
fn preemption_returning_higher_priority_takes_over_at_its_mdi() {
    let mut net = Network::new(vec![v3(200, 1), v3(100, 2)]);
    net.start(1);
    net.run_until(secs(10));
    assert_eq!(net.masters(), vec![1]);

    net.start(0);
    net.run_until(secs(20));
    let takeover = net.at(secs(10) + us(3_218_750));
    assert_eq!(net.masterships(0), vec![(takeover, Reason::Preempt)]);
    assert_eq!(net.backups(1).last(), Some(&(takeover, Reason::HigherPriority)));
    assert_eq!(net.masters(), vec![0]);
}

/// RFC 9568 §6.1: "Preempt_Mode: Controls whether a (starting or
/// restarting) higher-priority Backup router preempts a lower-priority
/// Master router ... False to prohibit preemption".
#[test]
fn no_preemption_higher_priority_stays_backup() {
    let mut net = Network::new(vec![
        Config {
            preempt: false,
            ..v3(200, 1)
        },
        v3(100, 2),
    ]);
    net.start(1);
    net.run_until(secs(10));
    net.start(0);
    net.run_until(secs(60));
    assert_eq!(net.masters(), vec![1]);
    assert_eq!(net.state(0), State::Backup);
    assert_eq!(net.vr(0).master_address(), Some(host(2)));
    assert!(net.masterships(0).is_empty());
}

/// Not in the RFC: `preempt_delay` holds a preempting backup back; until the
/// delay passes it follows the lower master as if preemption were off.
#[test]
fn preempt_delay_defers_takeover() {
    let delay = Duration::from_millis(4_500);
    let mut net = Network::new(vec![
        Config {
            preempt_delay: delay,
            ..v3(200, 1)
        },
        v3(100, 2),
    ]);
    net.start(1);
    net.run_until(secs(10));
    net.start(0);
    // The lower master advertises at 3.609375 + k s: first heard at 10.609375 s.
    net.run_until(secs(11));
    let first = net.at(us(10_609_375));
    assert_eq!(net.vr(0).timer(Timer::Preempt), Some(first + delay));
    assert_eq!(net.vr(0).timer(Timer::MasterDown), Some(first + us(3_218_750)));

    net.run_until(secs(30));
    assert_eq!(net.masterships(0), vec![(first + delay, Reason::Preempt)]);
    assert_eq!(
        net.backups(1).last(),
        Some(&(first + delay, Reason::HigherPriority))
    );
    assert_eq!(net.masters(), vec![0]);
}

/// The pending preemption is cancelled when the master comes to outrank us.
#[test]
fn preempt_delay_cancelled_by_higher_advert() {
    let mut net = Network::new(vec![
        Config {
            preempt_delay: secs(5),
            ..v3(200, 1)
        },
        v3(100, 2),
    ]);
    net.start(1);
    net.run_until(secs(10));
    net.start(0);
    net.run_until(secs(11));
    assert!(net.vr(0).timer(Timer::Preempt).is_some());
    net.set_priority(1, 250);
    net.run_until(secs(12));
    assert_eq!(net.vr(0).timer(Timer::Preempt), None);
    net.run_until(secs(60));
    assert_eq!(net.masters(), vec![1]);
    assert!(net.masterships(0).is_empty());
}

// ---------------------------------------------------------------------------
// 4. Graceful shutdown
// ---------------------------------------------------------------------------

/// RFC 9568 §6.4.3: "If a Shutdown event is received, then: Cancel the
/// Adver_Timer; Send an ADVERTISEMENT with Priority = 0; Transition to the
/// {Initialize state}", and §6.4.2: "If the Priority in the ADVERTISEMENT is
/// zero, then: Set the Master_Down_Timer to Skew_Time".
#[test]
fn graceful_shutdown_hands_over_after_skew_time() {
    let mut net = Network::started(vec![v3(200, 1), v3(100, 2)]);
    net.run_until(secs(10));
    net.shutdown(0);
    assert_eq!(net.state(0), State::Initialize);
    assert_eq!(net.vr(0).poll_timeout(), None);
    assert_eq!(net.vr(0).master_address(), None);
    let tail: Vec<_> = net.nodes[0]
        .log
        .iter()
        .rev()
        .take(2)
        .map(|(_, e)| e.clone())
        .collect();
    assert!(matches!(&tail[1], Event::Transmit(r) if r.priority == 0));
    assert_eq!(tail[0], Event::BecomeInitialize);
    assert_eq!(net.vr(0).counters().priority_zero_sent, 1);
    assert_eq!(net.vr(0).counters().became_initialize, 1);
    assert_eq!(net.vr(1).counters().priority_zero_received, 1);
    assert_eq!(
        net.vr(1).timer(Timer::MasterDown),
        Some(net.at(secs(10) + us(609_375)))
    );

    net.run_until(secs(20));
    assert_eq!(
        net.masterships(1),
        vec![(net.at(us(10_609_375)), Reason::MasterLeft)]
    );

    // Shutting down again, or a backup, sends nothing more.
    net.shutdown(0);
    assert_eq!(net.vr(0).counters().adverts_sent, 8);
    net.restart(0, v3(200, 1));
    net.run_until(secs(40));
    assert_eq!(net.masters(), vec![0]);
    net.shutdown(1);
    assert_eq!(net.vr(1).counters().priority_zero_sent, 0);
    assert_eq!(net.state(1), State::Initialize);
}

/// The pair-handoff extension: the only backup of a pair has no higher
/// backup to give precedence to, so it takes over the moment the master's
/// priority-0 advert arrives instead of after Skew_Time.
#[test]
fn pair_handoff_takes_over_on_priority_zero_at_once() {
    let pair = |priority, n| Config {
        pair_handoff: true,
        ..v3(priority, n)
    };
    let mut net = Network::started(vec![pair(200, 1), pair(100, 2)]);
    net.run_until(secs(10));
    assert_eq!(net.masters(), vec![0]);
    net.shutdown(0);
    assert_eq!(net.state(1), State::Master);
    assert_eq!(net.masterships(1), vec![(net.at(secs(10)), Reason::MasterLeft)]);
    // A crash still waits the full Master_Down_Interval: only an explicit
    // leave is a handoff.
    let mut net = Network::started(vec![pair(200, 1), pair(100, 2)]);
    net.run_until(secs(10));
    let last_advert = net.vr(1).timer(Timer::MasterDown).unwrap() - us(3_609_375);
    net.crash(0);
    net.run_until(secs(20));
    assert_eq!(
        net.masterships(1),
        vec![(last_advert + us(3_609_375), Reason::MasterDown)]
    );
}

// ---------------------------------------------------------------------------
// 5. Ties
// ---------------------------------------------------------------------------

/// RFC 9568 §6.4.3: "If the Priority in the ADVERTISEMENT is greater than the
/// local Priority or the Priority in the ADVERTISEMENT is equal to the local
/// Priority and the primary IPvX address of the sender is greater than the
/// local primary IPvX address, then: ... Transition to the {Backup state}".
#[test]
fn equal_priority_tie_broken_by_higher_address() {
    // Started together, both time out at once and both become master.
    let mut net = Network::started(vec![v3(100, 1), v3(100, 2)]);
    net.run_until(secs(10));
    let mdi = net.at(us(3_609_375));
    assert_eq!(net.masterships(0), vec![(mdi, Reason::MasterDown)]);
    assert_eq!(net.masterships(1), vec![(mdi, Reason::MasterDown)]);
    assert_eq!(net.backups(0).last(), Some(&(mdi, Reason::HigherPriority)));
    assert_eq!(net.masters(), vec![1]);

    // An equal-priority router arriving later does not preempt: "greater
    // than or equal to the local Priority" means follow.
    let mut net = Network::new(vec![v3(100, 1), v3(100, 2)]);
    net.start(0);
    net.run_until(secs(10));
    net.start(1);
    net.run_until(secs(30));
    assert_eq!(net.masters(), vec![0]);
}

// ---------------------------------------------------------------------------
// 6. Learning the interval
// ---------------------------------------------------------------------------

/// RFC 9568 §6.4.2: "Set Master_Adver_Interval to Adver Interval contained
/// in the ADVERTISEMENT; Recompute the Skew_Time; Recompute the
/// Master_Down_Interval".
#[test]
fn v3_backup_learns_the_masters_interval() {
    let mut net = Network::started(vec![
        Config {
            advert_interval_cs: 50,
            ..v3(200, 1)
        },
        v3(100, 2),
    ]);
    net.run_until(secs(5));
    assert_eq!(net.masters(), vec![0]);
    let backup = net.vr(1);
    assert_eq!(backup.master_adver_interval(), Duration::from_millis(500));
    // 3 * 0.5 s + 156 * 0.5 s / 256.
    assert_eq!(backup.skew_time(), us(304_687) + Duration::from_nanos(500));
    assert_eq!(
        backup.master_down_interval(),
        us(1_804_687) + Duration::from_nanos(500)
    );
    let last = net.nodes[1].last_rx.unwrap();
    assert_eq!(
        backup.timer(Timer::MasterDown),
        Some(last + backup.master_down_interval())
    );

    net.crash(0);
    net.run_until(secs(10));
    assert_eq!(
        net.masterships(1),
        vec![(
            last + us(1_804_687) + Duration::from_nanos(500),
            Reason::MasterDown
        )]
    );
    // As master it runs on, and advertises, its own interval.
    assert_eq!(net.vr(1).master_adver_interval(), secs(1));
}

/// RFC 3768 has no learning: every router must be configured alike.
#[test]
fn v2_does_not_learn() {
    let mut net = Network::started(vec![v2(200, 1), v2(100, 2)]);
    net.run_until(secs(5));
    assert_eq!(net.vr(1).master_adver_interval(), secs(1));
    assert_eq!(net.vr(1).counters().adverts_received, 2);
}

// ---------------------------------------------------------------------------
// 7. The owner
// ---------------------------------------------------------------------------

/// RFC 9568 §6.4.1: "If the Priority = 255 (i.e., the router owns the IPvX
/// address associated with the virtual router), then: Send an
/// ADVERTISEMENT ... Set the Adver_Timer to Advertisement_Interval;
/// Transition to the {Master state}". §6.1: "the router that owns the IPvX
/// address associated with the virtual router always preempts".
#[test]
fn owner_becomes_master_at_startup() {
    let owner = Config {
        accept_mode: false,
        ..Config::v3(VRID, 255, VIP, vec![VIP])
    };
    let mut net = Network::new(vec![
        owner.clone(),
        Config {
            accept_mode: false,
            ..v3(100, 2)
        },
    ]);
    net.start(0);
    assert_eq!(net.state(0), State::Master);
    assert_eq!(net.masterships(0), vec![(net.t0, Reason::Owner)]);
    assert!(matches!(&net.nodes[0].log[0], (_, Event::Transmit(r)) if r.priority == 255));
    assert_eq!(net.vr(0).poll_timeout(), Some(net.at(secs(1))));
    assert_eq!(net.vr(0).timer(Timer::Adver), Some(net.at(secs(1))));
    // The owner always accepts traffic for its own addresses.
    assert!(net.vr(0).accepts_vip_traffic());

    // Restarted while another router is master, it takes over at once.
    net.start(1);
    net.crash(0);
    net.run_until(secs(10));
    assert_eq!(net.masters(), vec![1]);
    assert!(!net.vr(1).accepts_vip_traffic(), "Accept_Mode off");
    net.restart(0, owner);
    assert_eq!(
        net.masterships(0).last(),
        Some(&(net.at(secs(10)), Reason::Owner))
    );
    assert_eq!(
        net.backups(1).last(),
        Some(&(net.at(secs(10)), Reason::HigherPriority))
    );
    assert_eq!(net.masters(), vec![0]);
}

// ---------------------------------------------------------------------------
// 9. Priority changes and timeouts
// ---------------------------------------------------------------------------

/// A master lowered below a preempting backup keeps advertising with its new
/// priority; RFC 9568 §6.4.2 has the backup discard those adverts, so its
/// Master_Down_Timer (last reset by the old priority) expires and it takes
/// over; RFC 9568 §6.4.3 then sends the old master to Backup.
#[test]
fn lowered_master_loses_to_preempting_backup() {
    let mut net = Network::started(vec![v3(200, 1), v3(150, 2)]);
    net.run_until(secs(10));
    assert_eq!(net.masters(), vec![0]);
    net.set_priority(0, 100);
    assert_eq!(net.vr(0).config().priority, 100);
    assert_eq!(net.state(0), State::Master);
    net.run_until(secs(11));
    let sent = net.nodes[0].log.iter().rev().find_map(|(_, e)| match e {
        Event::Transmit(r) => Some(r.priority),
        _ => None,
    });
    assert_eq!(sent, Some(100));

    net.run_until(secs(20));
    // Last priority-200 advert at 9.21875 s; 150's MDI is 3 + 106/256 s.
    let takeover = net.at(us(9_218_750) + us(3_414_062) + Duration::from_nanos(500));
    assert_eq!(net.masterships(1), vec![(takeover, Reason::Preempt)]);
    assert_eq!(net.backups(0).last(), Some(&(takeover, Reason::HigherPriority)));
    assert_eq!(net.masters(), vec![1]);
}

/// Out-of-range priorities and the owner's priority are not changed; a
/// backup's running Master_Down_Timer is kept.
#[test]
fn set_priority_bounds_and_backup_keeps_its_timer() {
    let (mut vr, now) = backup(v3(100, 2));
    let armed = vr.timer(Timer::MasterDown);
    for p in [0, 255] {
        vr.set_priority(now, p);
        assert_eq!(vr.config().priority, 100);
    }
    vr.set_priority(now, 254);
    assert_eq!(vr.config().priority, 254);
    assert_eq!(vr.timer(Timer::MasterDown), armed);
    assert_eq!(vr.skew_time(), us(7_812) + Duration::from_nanos(500));
    assert_eq!(vr.poll_event(), None);

    let mut owner = Instance::new(Config::v3(VRID, 255, VIP, vec![VIP])).unwrap();
    owner.set_priority(now, 100);
    assert_eq!(owner.config().priority, 255);
}

/// A spurious wakeup changes nothing; a late one fires each due timer once.
#[test]
fn spurious_and_late_timeouts() {
    let t0 = Instant::now();
    let mut vr = Instance::new(Config::v3(VRID, 255, VIP, vec![VIP])).unwrap();
    vr.handle_timeout(t0);
    assert_eq!((vr.poll_event(), vr.poll_timeout()), (None, None));
    vr.startup(t0);
    while vr.poll_event().is_some() {}
    let before = vr.counters().clone();
    vr.handle_timeout(t0);
    vr.handle_timeout(t0 + Duration::from_millis(999));
    assert_eq!(vr.poll_event(), None);
    assert_eq!(vr.poll_timeout(), Some(t0 + secs(1)));
    assert_eq!(vr.counters(), &before);
    // Startup twice is a no-op too.
    vr.startup(t0);
    assert_eq!(vr.poll_event(), None);

    // Late by 2.5 intervals: one advert, rearmed from now.
    let late = t0 + us(3_500_000);
    vr.handle_timeout(late);
    assert!(matches!(vr.poll_event(), Some(Event::Transmit(_))));
    assert_eq!(vr.poll_event(), None);
    assert_eq!(vr.poll_timeout(), Some(late + secs(1)));
}

/// Every expired timer fires in deadline order; one cancelled by an earlier
/// one (the Preempt timer, by becoming master) does not.
#[test]
fn expired_timers_fire_earliest_first() {
    let (mut vr, now) = backup(Config {
        preempt_delay: secs(5),
        ..v3(200, 2)
    });
    let lower = v3(100, 1);
    assert_accepted(&mut vr, now, &datagram(&lower, &advert(&lower)));
    assert_eq!(vr.timer(Timer::Preempt), Some(now + secs(5)));
    assert_eq!(vr.timer(Timer::MasterDown), Some(now + us(3_218_750)));

    let late = now + secs(10);
    vr.handle_timeout(late);
    assert!(matches!(vr.poll_event(), Some(Event::Transmit(_))));
    assert_eq!(vr.poll_event(), Some(Event::BecomeMaster(Reason::MasterDown)));
    assert_eq!(vr.poll_event(), None);
    assert_eq!(vr.counters().became_master, 1);
    assert_eq!(vr.timer(Timer::Preempt), None);
    assert_eq!(vr.poll_timeout(), Some(late + secs(1)));
}
