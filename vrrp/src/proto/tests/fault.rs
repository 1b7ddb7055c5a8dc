//! Fault: a router that must not hold the virtual addresses while
//! something it depends on is down (keepalived's FAULT state, entered when
//! a tracked interface or script without a weight fails). Not in the RFC;
//! built from its shutdown (RFC 9568 §6.4.3) and startup (§6.4.1) events.

use super::*;

/// The events node `i` output at or after `from`.
fn events_since(net: &Network, i: usize, from: Instant) -> Vec<Event> {
    net.nodes[i]
        .log
        .iter()
        .filter(|(t, _)| *t >= from)
        .map(|(_, e)| e.clone())
        .collect()
}

/// A master in fault leaves as at shutdown: "Send an ADVERTISEMENT with
/// Priority = 0, Transition to the {Initialize state}" (§6.4.3); the backup
/// takes over after Skew_Time. In fault it stays silent whatever it hears;
/// when the fault clears it starts as at startup and, preempting, takes
/// the virtual router back at its Master_Down_Interval.
#[test]
fn a_master_in_fault_hands_over_stays_out_and_preempts_back_when_it_clears() {
    let mut net = Network::started(vec![v3(200, 1), v3(100, 2)]);
    net.run_until(secs(10));
    assert_eq!(net.masters(), vec![0]);
    let faulted = net.now;
    net.set_fault(0, true);
    assert!(net.vr(0).in_fault());
    assert_eq!(net.state(0), State::Initialize);
    assert_eq!(net.vr(0).poll_timeout(), None);
    let out = events_since(&net, 0, faulted);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(matches!(&out[0], Event::Transmit(r) if r.priority == 0));
    assert_eq!(out[1], Event::BecomeInitialize);
    // 100: Skew_Time = (256 - 100) / 256 s = 609.375 ms.
    assert_eq!(
        net.vr(1).timer(Timer::MasterDown),
        Some(net.at(secs(10) + us(609_375)))
    );

    // Ten seconds of the backup's adverts: the faulted router says nothing,
    // and a second fault changes nothing.
    net.run_until(secs(20));
    net.set_fault(0, true);
    assert_eq!(net.masters(), vec![1]);
    assert_eq!(
        net.masterships(1),
        vec![(net.at(us(10_609_375)), Reason::MasterLeft)]
    );
    assert_eq!(events_since(&net, 0, faulted).len(), 2);
    assert!(net.vr(0).counters().adverts_received > 0);

    // Cleared at 20 s: Backup at once (Startup); it outranks the master, so
    // it discards its adverts and preempts at its Master_Down_Interval:
    // 3 s + (256 - 200) / 256 s = 3.21875 s.
    net.set_fault(0, false);
    assert!(!net.vr(0).in_fault());
    assert_eq!(net.backups(0).last(), Some(&(net.at(secs(20)), Reason::Startup)));
    net.run_until(secs(30));
    assert_eq!(net.masters(), vec![0]);
    assert_eq!(
        net.masterships(0).last(),
        Some(&(net.at(us(23_218_750)), Reason::Preempt))
    );
    assert_eq!(net.vr(0).counters().priority_zero_sent, 1);
}

/// A pair that exchanges claims: the faulted master says `leaving` first,
/// so its priority-0 advert is believed and the pair-handoff backup takes
/// over at once, as on a graceful stop.
#[test]
fn a_pair_backup_takes_over_from_a_faulted_master_at_once() {
    let pair = |priority, n| Config {
        pair_handoff: true,
        ..v3(priority, n)
    };
    let mut net = Network::with_claims(vec![pair(200, 1), pair(100, 2)]);
    net.start(0);
    net.start(1);
    net.run_until(secs(10));
    assert_eq!(net.masters(), vec![0]);
    net.set_fault(0, true);
    assert_eq!(net.masters(), vec![1]);
    assert_eq!(net.masterships(1), vec![(net.at(secs(10)), Reason::MasterLeft)]);
    assert_eq!(net.vr(1).counters().drops_for(DropReason::Contradicted), 0);
    net.run_until(secs(20));
    assert_eq!(net.masters(), vec![1]);
    net.set_fault(0, false);
    net.run_until(secs(30));
    assert_eq!(net.masters(), vec![0]);
}

/// A backup in fault never contends: with the master gone it stays in
/// Initialize and runs no timer, however long; nobody holds the addresses.
#[test]
fn a_backup_in_fault_never_takes_over() {
    let mut net = Network::started(vec![v3(200, 1), v3(100, 2)]);
    net.run_until(secs(10));
    let faulted = net.now;
    net.set_fault(1, true);
    // A backup sends nothing as it leaves.
    assert_eq!(events_since(&net, 1, faulted), vec![Event::BecomeInitialize]);
    assert_eq!(net.vr(1).counters().priority_zero_sent, 0);
    net.crash(0);
    net.run_until(secs(60));
    assert_eq!(net.masters(), Vec::<usize>::new());
    assert_eq!(net.state(1), State::Initialize);
    assert_eq!(net.vr(1).poll_timeout(), None);
    // Cleared: Backup, then master at Master_Down_Interval (no master left):
    // 3 s + 156/256 s.
    net.set_fault(1, false);
    net.run_until(secs(70));
    assert_eq!(
        net.masterships(1),
        vec![(net.at(us(63_609_375)), Reason::MasterDown)]
    );
}

/// The fault and the driver's start and stop are independent: started in
/// fault, it waits for the fault to clear; shut down in fault, clearing
/// the fault does not start it; the owner (255) enters fault too.
#[test]
fn fault_startup_and_shutdown_compose() {
    let mut vr = Instance::new(v3(100, 1)).unwrap();
    let t0 = Instant::now();
    vr.set_fault(t0, true);
    vr.startup(t0);
    assert_eq!(vr.state(), State::Initialize);
    assert_eq!(vr.poll_event(), None);
    assert_eq!(vr.poll_timeout(), None);
    vr.set_fault(t0 + secs(1), false);
    assert_eq!(vr.poll_event(), Some(Event::BecomeBackup(Reason::Startup)));
    assert_eq!(vr.state(), State::Backup);

    vr.set_fault(t0 + secs(2), true);
    assert_eq!(vr.poll_event(), Some(Event::BecomeInitialize));
    vr.shutdown(t0 + secs(3));
    assert_eq!(vr.poll_event(), None);
    vr.set_fault(t0 + secs(4), false);
    assert_eq!(vr.state(), State::Initialize);
    assert_eq!(vr.poll_event(), None);
    // Never started: clearing a fault does not start it either.
    let mut idle = Instance::new(v3(100, 2)).unwrap();
    idle.set_fault(t0, true);
    idle.set_fault(t0, false);
    assert_eq!(idle.state(), State::Initialize);
    assert_eq!(idle.poll_event(), None);

    // The owner: master at startup, priority 0 in fault, master again after.
    let mut owner = Instance::new(Config::v3(VRID, 255, VIP, vec![VIP])).unwrap();
    owner.startup(t0);
    while owner.poll_event().is_some() {}
    owner.set_fault(t0 + secs(1), true);
    assert!(matches!(owner.poll_event(), Some(Event::Transmit(r)) if r.priority == 0));
    assert_eq!(owner.poll_event(), Some(Event::BecomeInitialize));
    owner.set_fault(t0 + secs(2), false);
    assert!(matches!(owner.poll_event(), Some(Event::Transmit(r)) if r.priority == 255));
    assert_eq!(owner.poll_event(), Some(Event::BecomeMaster(Reason::Owner)));
}
