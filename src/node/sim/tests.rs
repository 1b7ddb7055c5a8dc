//! The seeds `cargo test` runs, the replay of one seed, and the seeds of
//! bugs the simulation found (kept as regressions).
//!
//! - `PAIR_SIM_SEEDS=N`: how many seeds (default 500, half with a
//!   witness, half without); `PAIR_SIM_FROM=B`: the first seed (default 0).
//! - `PAIR_SIM_SEED=S`: runs only seed S, printing its trace as it goes.
//! - `PAIR_SIM_KNOBS=a,b`: turns on these [`Knobs`] (by their field names)
//!   for the run, say `fail_while_rebuilding`.

use super::world::{run_seed, run_seed_with, Knobs};
use super::Outcome;

/// The knobs named in `PAIR_SIM_KNOBS` (none when unset); an unknown name
/// is refused rather than ignored.
fn env_knobs() -> Knobs {
    knobs_from(std::env::var("PAIR_SIM_KNOBS").ok().as_deref())
}

fn knobs_from(value: Option<&str>) -> Knobs {
    let mut k = Knobs::default();
    for name in value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        match name {
            "wrong_clock_at_restart" => k.wrong_clock_at_restart = true,
            "large_backward_jumps" => k.large_backward_jumps = true,
            "fail_while_rebuilding" => k.fail_while_rebuilding = true,
            "strict_time" => k.strict_time = true,
            other => panic!(
                "PAIR_SIM_KNOBS: no knob {other:?} (wrong_clock_at_restart, large_backward_jumps, \
                 fail_while_rebuilding, strict_time)"
            ),
        }
    }
    k
}

/// A setting read from the environment: a positive number, or the
/// default when unset. Zero or garbage is refused: a run of no seeds
/// would pass without testing anything.
fn env_count(name: &str, default: u64) -> u64 {
    count_from(name, std::env::var(name).ok().as_deref(), default)
}

fn count_from(name: &str, value: Option<&str>, default: u64) -> u64 {
    match value {
        None => default,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(0) => panic!("{name}=0: a run of no seeds tests nothing; give at least 1"),
            Ok(n) => n,
            Err(e) => panic!("{name}={v:?} is not a number: {e}"),
        },
    }
}

fn env_seed(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a seed: {e}"))
    })
}

/// The seeds of one half: `seeds` split between the two tests, each
/// running at least one (odd seeds have a witness).
fn half_of(from: u64, seeds: u64, witness: bool) -> Vec<u64> {
    let first = if (from % 2 == 1) == witness {
        from
    } else {
        from + 1
    };
    let n = if first == from {
        seeds.div_ceil(2)
    } else {
        (seeds / 2).max(1)
    };
    (0..n).map(|k| first + 2 * k).collect()
}

/// Runs `seed`; a panic inside the real code is reported with the seed.
fn run(seed: u64, trace: bool) -> Outcome {
    run_with(seed, trace, Knobs::default())
}

/// [`run`] with `knobs`.
fn run_with(seed: u64, trace: bool, knobs: Knobs) -> Outcome {
    match std::panic::catch_unwind(|| run_seed_with(seed, trace, knobs)) {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(failure)) => panic!("{failure}"),
        Err(_) => panic!(
            "pair simulation seed {seed} panicked (see above); replay: PAIR_SIM_SEED={seed} cargo test --lib node::sim -- --nocapture"
        ),
    }
}

/// The seeds of one half (`witness`: odd seeds) of the run.
fn half(witness: bool) {
    let knobs = env_knobs();
    if let Some(seed) = env_seed("PAIR_SIM_SEED") {
        if (seed % 2 == 1) == witness {
            let o = run_with(seed, true, knobs);
            eprintln!("seed {seed}: {o:?}");
        }
        return;
    }
    let seeds = env_count("PAIR_SIM_SEEDS", 500);
    let from = env_seed("PAIR_SIM_FROM").unwrap_or(0);
    let mine = half_of(from, seeds, witness);
    let mut total = Outcome::default();
    let mut slowest = 0;
    let mut wrong_time_seeds = Vec::new();
    for &seed in &mine {
        let o = run_with(seed, false, knobs);
        total.faults += o.faults;
        total.grants += o.grants;
        total.refusals += o.refusals;
        total.uncertain += o.uncertain;
        total.rearps += o.rearps;
        total.wrong_time += o.wrong_time;
        if o.wrong_time > 0 {
            wrong_time_seeds.push(seed);
        }
        total.takeovers_served += o.takeovers_served;
        total.storage_failures += o.storage_failures;
        slowest = slowest.max(o.recovered_ms);
    }
    eprintln!(
        "pair simulation, {} seeds {}: {} faults, {} grants, {} refused, {} uncertain, {} starts of serving, \
         {} storage failures, {} stale ARP entries; slowest recovery {} ms; \
         switches marked down by a wrong time (server::stamp's known gap): {} in seeds {:?}",
        mine.len(),
        if witness { "with a witness" } else { "without a witness" },
        total.faults,
        total.grants,
        total.refusals,
        total.uncertain,
        total.takeovers_served,
        total.storage_failures,
        total.rearps,
        slowest,
        total.wrong_time,
        &wrong_time_seeds[..wrong_time_seeds.len().min(20)]
    );
}

#[test]
fn seeds_without_a_witness_keep_s1_to_s5_and_recover() {
    half(false);
}

#[test]
fn seeds_with_a_witness_keep_s1_to_s5_and_recover() {
    half(true);
}

#[test]
fn same_seed_same_run() {
    let a = run_seed(7, false).expect("seed 7");
    let b = run_seed(7, false).expect("seed 7");
    assert_eq!(a.trace_hash, b.trace_hash, "seed 7 ran differently twice");
    assert!(a.faults > 0 && a.grants > 0, "{a:?}");
}

#[test]
fn a_seed_count_of_zero_or_garbage_is_refused() {
    assert_eq!(count_from("PAIR_SIM_SEEDS", None, 500), 500);
    assert_eq!(count_from("PAIR_SIM_SEEDS", Some("3"), 500), 3);
    assert!(std::panic::catch_unwind(|| count_from("PAIR_SIM_SEEDS", Some("0"), 500)).is_err());
    assert!(std::panic::catch_unwind(|| count_from("PAIR_SIM_SEEDS", Some("many"), 500)).is_err());
    // One seed runs one in each half; 500 run 250 in each.
    assert_eq!(half_of(0, 1, false), [0]);
    assert_eq!(half_of(0, 1, true), [1]);
    assert_eq!(half_of(7, 1, true), [7]);
    assert_eq!(half_of(7, 1, false), [8]);
    assert_eq!(half_of(0, 500, false).len(), 250);
    assert_eq!(half_of(0, 500, true).len(), 250);
    assert_eq!(half_of(3, 5, true), [3, 5, 7]);
    assert_eq!(half_of(3, 5, false), [4, 6]);
    assert!(!knobs_from(None).fail_while_rebuilding);
    let k = knobs_from(Some("fail_while_rebuilding, strict_time"));
    assert!(k.fail_while_rebuilding && k.strict_time && !k.large_backward_jumps);
    assert!(std::panic::catch_unwind(|| knobs_from(Some("fail_while_rebulding"))).is_err());
}

/// Found by the simulation, not fixed here (`server::stamp`): a server
/// that restarts with its wall clock minutes or days ahead (seeds 13 and
/// 119) and serves before it has anchored the pair's time stamps its own
/// clock; the next sweep marks every client down or removes it (S2). Run
/// with `cargo test --lib node::sim -- --ignored`.
#[test]
#[ignore = "a known gap of server::stamp, reported with these seeds"]
fn a_restart_with_a_wrong_wall_clock_purges_clients() {
    let knobs = super::world::Knobs {
        wrong_clock_at_restart: true,
        strict_time: true,
        ..Default::default()
    };
    for seed in [13, 119] {
        let failure = super::world::run_seed_with(seed, false, knobs).expect_err("the gap is still there");
        assert!(failure.contains("S2 (time)"), "{failure}");
    }
}

/// Found by the simulation, not fixed here (`server::stamp` follows a
/// step back of the serving node's wall clock; the table keeps a client's
/// last heard time from moving back): after a step back of minutes and a
/// failover to a server whose clock is right, every client heard during
/// the step is marked down and what it uses returns to the pool (S2).
#[test]
#[ignore = "a known gap of server::stamp, reported with this seed"]
fn a_step_back_of_the_leaders_clock_then_a_failover_marks_clients_down() {
    let knobs = super::world::Knobs {
        large_backward_jumps: true,
        strict_time: true,
        ..Default::default()
    };
    let failure = super::world::run_seed_with(47, false, knobs).expect_err("the gap is still there");
    assert!(failure.contains("S2 (time)"), "{failure}");
}

/// Found by the simulation (seed 256 with `fail_while_rebuilding`): a
/// server loses its disk, the other stops before it rebuilt; the empty one
/// came back first and held the VIP at the lowest priority, the one with
/// the log came back at the same priority (not in sync since its restart)
/// and lost the tie, never became master, and could not have taken over
/// anyway (not in sync), and the empty one had no vote to give: nobody
/// served (liveness). Fixed in `cluster` (commit "a server back with the
/// log is in sync when the only other voter holds none"): the empty member
/// answers a vote request saying it holds no log, and a server whose only
/// other voter says so is in sync; the pair's rules then give it its own
/// priority, it preempts and takes over, and the empty one rebuilds from
/// it. Scripted in `cluster/src/sim/rebuild.rs`. Since the merge of
/// 'reload' changed the runs, seed 256 no longer reaches that schedule
/// without the fix either: the scripted test is the one that fails
/// without it.
#[test]
fn a_server_back_with_its_log_while_the_peer_rebuilds_serves() {
    let knobs = Knobs {
        fail_while_rebuilding: true,
        ..Default::default()
    };
    run_with(256, false, knobs);
}

/// Found by the simulation, not fixed here (`server::stamp`): with clocks
/// in sync, a server that restarts and catches up from its peer anchors
/// the pair's time on stale stamps (two entries applied late whose stamps
/// are as far apart as the time between their applies), stamps seconds
/// in the past while it serves, and the next holder marks the clients it
/// heard down (S2).
#[test]
#[ignore = "a known gap of server::stamp, reported with this seed"]
fn a_member_that_caught_up_late_anchors_the_pairs_time_in_the_past() {
    let knobs = super::world::Knobs {
        strict_time: true,
        ..Default::default()
    };
    let failure = super::world::run_seed_with(436, false, knobs).expect_err("the gap is still there");
    assert!(failure.contains("S2 (time)"), "{failure}");
}

/// Found by the survey of seeds 0 to 20,000 (issue 11), not fixed here
/// (`node::rules`). Without a witness, the cluster link up but lossy and
/// slow (up to 30 ms), raft stayed leaderless for two election timeouts
/// while both servers campaigned, and a VRRP master in sync took over as
/// sole voter although its peer was alive on that link. Seed 1512 (the
/// segment cut one way, both masters): both took over 9 ms apart and
/// served at once (S1). Seed 2610: one
/// took over, acknowledged writes and crashed before they reached the
/// peer, which, still in sync (it had not been shown behind), took over
/// in turn without them (S2). The takeover on "no leader for two election
/// timeouts" does not ask whether the peer is alive on the cluster link.
/// Both fail the same way on `main` (490f476): not brought by issue 11's
/// fixes. Found next, not replayed on `main`: seed 4538, 1 preempts the
/// VIP while a leadership change is slow; both masters for a moment, both
/// leaderless for two election timeouts, both take over 2 ms apart (S1);
/// seed 11746, as 2610 with a partition after the first takeover (S2).
#[test]
#[ignore = "a known gap of node::rules, reported with these seeds"]
fn a_takeover_while_the_peer_is_alive_on_a_slow_link() {
    for (seed, invariant) in [(1512, "S1"), (2610, "S2"), (4538, "S1"), (11746, "S2")] {
        let failure = run_seed(seed, false).expect_err("the gap is still there");
        assert!(failure.contains(invariant), "{failure}");
    }
}

/// Seeds that failed while the simulation was built, each for a reason
/// now handled, kept as regressions: two partitions in a row healed the
/// servers' link without the heal being noted (72); a split brain whose
/// logs share a term (122, S4 while both lead alone); a disk lost while
/// the other server was a learner or not in sync (160, 484); a switch that
/// gave up on a registration a host had accepted and held (211); an
/// isolated former leader with a witness (309); stamps from clocks skewed
/// by seconds (855); a request held through a handback applied after its
/// connection closed (1989); a graceful stop while the peer rebuilds
/// (256, now not a default fault); a deposed leader with a witness that
/// served for a few milliseconds after its successor was elected (9997);
/// a server that failed while its peer, down, still had to rebuild (6828).
///
/// And three liveness gaps of `cluster`, fixed there, each scripted in
/// `cluster/src/sim/rebuild.rs` (those fail without the fix; since the
/// merge of 'reload' changed the runs, these seeds no longer reach their
/// schedules without it either):
/// - 2584, 20068: without a witness, the leader's snapshot predated its
///   promotion back to voter (the peer sole voter, the leader a learner);
///   the peer, empty after a yield, installed it, took the next append for
///   a split brain and yielded again, for ever. Fixed: a snapshot from
///   before the last membership change is remade before it is sent, and a
///   configuration from the sender's own snapshot is never a split brain.
/// - 27157: a witness leading to repair kept handing leadership to a
///   server that had lost its disk after acknowledging its log (stale
///   progress), never to the one with the log. Fixed: a heartbeat answer
///   with commit 0 resets that progress (it gets a snapshot), and the
///   witness hands over to a voter heard from lately, rotating after a
///   transfer raft gave up on.
/// - 20760 (found by the survey while the fix of seed 256 was built): raft
///   refuses a pre-vote from a lower term with commit 0, which the first
///   version took for an empty peer: the server back with an old log took
///   over and lost what its peer had committed alone (S2).
///
/// And one of the model (survey of issue 11): a server that restarted
/// after a yield, before the winner's snapshot arrived, was founded again
/// with the founding voters, which `node::run` never does, and a write
/// fault armed on its disk failed `Node::new` (9128, a panic). And of the
/// checker: S2 asked a former leader that S1 lets serve beside the new
/// one, with a witness, for what the new one acknowledged (8327).
#[test]
fn past_failures_stay_fixed() {
    for seed in [
        72, 122, 160, 211, 256, 309, 484, 855, 1989, 2584, 6828, 8327, 9128, 9997, 20068, 20760, 27157,
    ] {
        run(seed, false);
    }
}
