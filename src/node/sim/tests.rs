//! The seeds `cargo test` runs, the replay of one seed, and the seeds of
//! bugs the simulation found (kept as regressions).
//!
//! - `PAIR_SIM_SEEDS=N`: how many seeds (default 500, half with a
//!   witness, half without); `PAIR_SIM_FROM=B`: the first seed (default 0).
//! - `PAIR_SIM_SEED=S`: runs only seed S, printing its trace as it goes;
//!   with `RUST_LOG` (e.g. `cluster=debug,raft=info`) the members' own
//!   log lines too.
//! - `PAIR_SIM_KEEP_GOING=1`: a survey; every seed runs, and the failures
//!   are listed at the end (the run still fails if any seed did).
//! - `PAIR_SIM_KNOBS=a,b`: runs them with these `world::Knobs` on:
//!   `wrong_clock_at_restart`, `large_backward_jumps`,
//!   `fail_while_rebuilding`, and `lenient_time` (a switch marked down by
//!   a wrong time is counted, not a failure), e.g. to replay a seed of a
//!   test below that sets knobs.

use super::world::{run_seed, run_seed_with, Knobs};
use super::Outcome;

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

/// The knobs named in `value` (`PAIR_SIM_KNOBS`), on top of the defaults.
/// An unknown name is refused: a typo would test the defaults silently.
fn knobs_from(value: Option<&str>) -> Knobs {
    let mut knobs = Knobs::default();
    for name in value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        match name {
            "wrong_clock_at_restart" => knobs.wrong_clock_at_restart = true,
            "large_backward_jumps" => knobs.large_backward_jumps = true,
            "fail_while_rebuilding" => knobs.fail_while_rebuilding = true,
            "lenient_time" => knobs.strict_time = false,
            other => panic!(
                "PAIR_SIM_KNOBS: unknown knob {other:?}; known: wrong_clock_at_restart, \
                 large_backward_jumps, fail_while_rebuilding, lenient_time"
            ),
        }
    }
    knobs
}

fn env_knobs() -> Knobs {
    knobs_from(std::env::var("PAIR_SIM_KNOBS").ok().as_deref())
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

/// Runs `seed` with `knobs`; a panic inside the real code is reported
/// with the seed.
fn run(seed: u64, trace: bool, knobs: Knobs) -> Outcome {
    try_run(seed, trace, knobs).unwrap_or_else(|failure| panic!("{failure}"))
}

/// Runs `seed` with `knobs`: its outcome, or why it failed (an invariant
/// broken, or a panic inside the real code), with the command that
/// replays it.
fn try_run(seed: u64, trace: bool, knobs: Knobs) -> Result<Outcome, String> {
    match std::panic::catch_unwind(|| run_seed_with(seed, trace, knobs)) {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(failure)) => Err(failure),
        Err(_) => Err(format!(
            "pair simulation seed {seed} panicked (see above); replay: PAIR_SIM_SEED={seed} cargo test --lib node::sim -- --nocapture"
        )),
    }
}

/// The seeds of one half (`witness`: odd seeds) of the run.
fn half(witness: bool) {
    let knobs = env_knobs();
    if let Some(seed) = env_seed("PAIR_SIM_SEED") {
        if (seed % 2 == 1) == witness {
            // The members' own log lines (`RUST_LOG=cluster=debug,raft=info`)
            // interleaved with the trace.
            if std::env::var_os("RUST_LOG").is_some() {
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                    .without_time()
                    .with_writer(std::io::stderr)
                    .try_init();
            }
            let o = run(seed, true, knobs);
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
    // A survey (`PAIR_SIM_KEEP_GOING=1`) runs every seed and lists the
    // failures at the end; otherwise the first failure stops the run.
    let keep_going = std::env::var_os("PAIR_SIM_KEEP_GOING").is_some();
    let mut failures: Vec<(u64, String)> = Vec::new();
    for &seed in &mine {
        let o = match try_run(seed, false, knobs) {
            Ok(o) => o,
            Err(failure) if keep_going => {
                let first = failure.lines().next().unwrap_or_default().to_owned();
                eprintln!("seed {seed} FAILED: {first}");
                failures.push((seed, first));
                continue;
            }
            Err(failure) => panic!("{failure}"),
        };
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
    let time = if knobs.strict_time {
        "no switch marked down by a wrong time (checked strictly)".to_string()
    } else {
        format!(
            "switches marked down by a wrong time (lenient_time): {} in seeds {:?}",
            total.wrong_time,
            &wrong_time_seeds[..wrong_time_seeds.len().min(20)]
        )
    };
    eprintln!(
        "pair simulation, {} seeds {}{}: {} faults, {} grants, {} refused, {} uncertain, {} starts of serving, \
         {} storage failures, {} stale ARP entries; slowest recovery {} ms; {time}",
        mine.len(),
        if witness { "with a witness" } else { "without a witness" },
        match std::env::var("PAIR_SIM_KNOBS") {
            Ok(k) if !k.trim().is_empty() => format!(" (knobs {})", k.trim()),
            _ => String::new(),
        },
        total.faults,
        total.grants,
        total.refusals,
        total.uncertain,
        total.takeovers_served,
        total.storage_failures,
        total.rearps,
        slowest,
    );
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed:\n{}",
        failures.len(),
        mine.len(),
        failures
            .iter()
            .map(|(seed, why)| format!("  seed {seed}: {why}"))
            .collect::<Vec<_>>()
            .join("\n")
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
    let k = knobs_from(Some("fail_while_rebuilding, lenient_time"));
    assert!(k.fail_while_rebuilding && !k.strict_time && !k.large_backward_jumps);
    assert!(std::panic::catch_unwind(|| knobs_from(Some("fail_while_rebulding"))).is_err());
}

#[test]
fn knobs_are_named_and_a_typo_is_refused() {
    let default = knobs_from(None);
    assert!(default.strict_time && !default.wrong_clock_at_restart && !default.large_backward_jumps);
    let k = knobs_from(Some(" wrong_clock_at_restart, lenient_time ,"));
    assert!(k.wrong_clock_at_restart && !k.strict_time && !k.large_backward_jumps);
    assert!(knobs_from(Some("large_backward_jumps")).large_backward_jumps);
    assert!(std::panic::catch_unwind(|| knobs_from(Some("wrong_clock"))).is_err());
}

/// Found by the simulation (seeds 13 and 119 with this knob, on the tree
/// of the time): a server that restarted with its wall clock minutes or
/// days ahead and served before it had anchored the pair's time stamped
/// its own clock; the next sweep marked every client down or removed it
/// (S2). Fixed by `server::stamp`'s pair time: a member goes on from the
/// table's newest time and the log it replays, never from its own wall
/// clock. The seeds no longer reach that state on today's tree, so seeds
/// that did just before the fix are kept too (`RESTART_SEEDS`).
#[test]
fn a_restart_with_a_wrong_wall_clock_purges_nobody() {
    let knobs = Knobs {
        wrong_clock_at_restart: true,
        ..Knobs::default()
    };
    for seed in [13, 119].into_iter().chain(RESTART_SEEDS) {
        run(seed, false, knobs);
    }
}

/// Found by the simulation (seed 47 with this knob, on the tree of the
/// time): the serving node followed a step back of its wall clock by
/// minutes while the table keeps a client's last heard time from moving
/// back; a failover to a server whose clock was right marked every client
/// heard during the step down (S2). Fixed by `server::stamp`: the pair's
/// time never goes back (a wall clock behind it slows it to 7/8) and the
/// next holder goes on from it.
#[test]
fn a_step_back_of_the_leaders_clock_then_a_failover_marks_nobody_down() {
    let knobs = Knobs {
        large_backward_jumps: true,
        ..Knobs::default()
    };
    for seed in [47].into_iter().chain(STEP_BACK_SEEDS) {
        run(seed, false, knobs);
    }
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
    run(256, false, knobs);
}

/// Found by the simulation (seed 436, on the tree of the time): with
/// clocks in sync, a server that restarted and caught up from its peer
/// anchored the pair's time on stale stamps (two entries applied late
/// whose stamps were as far apart as the time between their applies),
/// stamped seconds in the past while it served, and the next holder,
/// following its own wall clock, marked the clients it heard down (S2).
/// Fixed by `server::stamp`: every member continues from the newest
/// stamp it sees commit, and a new holder from the pair's time, pulled
/// towards its wall clock a bounded step at a time.
#[test]
fn a_member_that_caught_up_late_goes_on_from_the_pairs_time() {
    for seed in [436].into_iter().chain(LATE_SEEDS) {
        run(seed, false, Knobs::default());
    }
}

/// Seeds that marked switches down by a wrong time (S2) on the tree just
/// before the pair's time was rebuilt (490f476, each under the knobs of
/// its test above; a search of seeds 0 to 1499 found 23 with
/// `wrong_clock_at_restart`, 5 with `large_backward_jumps`, 2 with the
/// default clocks): the seeds found earlier no longer reach that state.
/// With the default clocks, 1079 is 436's shape (a restarted member
/// served seconds in the past, the next holder jumped to its own clock)
/// and 551 the restart's (a member back from a lost disk, whose clock
/// jumped 8 minutes before it had anchored, served on its own clock).
const RESTART_SEEDS: [u64; 5] = [88, 163, 186, 191, 226];
const STEP_BACK_SEEDS: [u64; 2] = [222, 1313];
const LATE_SEEDS: [u64; 2] = [551, 1079];

/// Found by the survey of seeds 0 to 20,000 (issue 11) and by the first
/// 100,000-seed survey (12 seeds on S1, 4 on S2), fixed in `node::rules`. Without a witness, the cluster link up but lossy and
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
/// Fixed: the "silent" and "leaderless" takeovers wait for the peer's
/// word over the cluster link to lapse, and a new word from a peer that
/// is not leaving makes "it left" stale (32338: the peer back after a
/// storage failure led alone, and this node took over on the old "it
/// left"). Scripted in `node::rules`'s tests.
#[test]
fn no_takeover_while_the_peer_is_alive_on_a_slow_link() {
    for seed in [1512, 2610, 4538, 11746, 32338] {
        run(seed, false, Knobs::default());
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
/// a server that failed while its peer, down, still had to rebuild (6828);
/// S2 asked of a former leader that S1 lets serve beside its successor
/// (cut off, or deposed): it can commit nothing, so its table lacks what
/// the successor acknowledged (8327, 19707; 18 seeds of the first
/// 100,000-seed survey); a write fault armed on a host that crashed before
/// writing again struck its next start, which the simulation took for a
/// bug and panicked on (9128, 48494: now the start fails, is counted as a
/// storage failure, and systemd's restart is modelled); a disk lost while
/// the other server's disk had a write fault still to strike, which then
/// failed it while the first rebuilt (2904, 15174: a double fault the
/// model excludes, as it excludes any failure of a server while its peer
/// rebuilds).
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
/// And one more of the model (survey of issue 11): a server that
/// restarted after a yield, before the winner's snapshot arrived, was
/// founded again with the founding voters, which `node::run` never does
/// (9128 too).
#[test]
fn past_failures_stay_fixed() {
    for seed in [
        72, 122, 160, 211, 256, 309, 484, 855, 1989, 2584, 2904, 6828, 8327, 9128, 9997, 15174, 19707, 20068,
        20760, 27157, 48494,
    ] {
        run(seed, false, Knobs::default());
    }
}

/// Found by the 100,000-seed survey of this tree (issue 11): a switch
/// heard within two heartbeat intervals was marked down by the serving
/// member's sweep (S2 (time), checked strictly). The two members' views
/// of the pair's time had parted: one ran its view on while the pair
/// committed nothing (partitions, crashes), the other, restarted, went on
/// from the last commit and served seconds behind. `server::stamp` kept a
/// floor: no stamp below one the member made or saw commit.
/// - 24551 (and 24861, 31341, 38848, 63809, 82853, 89089): the member
///   ahead stamped a key it submitted (never the pair's time) during the
///   quiet spell, followed the lagging member's stamps once it served, and
///   at its takeover jumped back up to its own key's stamp: 2.3 s at once.
/// - 56380 (and 65654, 71362, without a witness): the member ahead had
///   committed its stamps alone (both led alone), yielded, applied the
///   winner's lagging log, and jumped back up to its own sweeps at its
///   takeover.
/// - 73759: a member that replayed an old log led at once and stamped
///   requests before it applied its predecessor's last sweep, seconds
///   ahead; it followed that sweep, and its own stamps, committing after
///   it and behind it, were skipped as its own: its next sweep was 3.9 s
///   past what it had stamped the switches with.
///
/// Fixed in `server::stamp`: no floor; a member follows the stamps that
/// commit, behind it too, and its own stamps that commit after a later
/// one of another are followed as another's (the table keeps a client's
/// last heard time from moving back, so going back only makes clients
/// look heard more recently). Scripted in `server::stamp`'s tests.
#[test]
fn a_member_ahead_of_the_pairs_time_takes_over_without_a_jump() {
    for seed in [
        24551, 24861, 31341, 38848, 56380, 63809, 65654, 71362, 73759, 82853, 89089,
    ] {
        run(seed, false, Knobs::default());
    }
}

/// Found by the 100,000-seed survey (issue 11, without a witness), fixed
/// in `cluster`. Seed 25998: 2 took over as sole voter (1, just restarted,
/// was behind) and acknowledged grants alone; 1 got the first append of
/// 2's new term, which carried 2's commit index of the takeover, reached
/// it, and counted itself in sync, its configuration still saying both
/// were voters; cut off a moment later, it took over in turn without the
/// grants (S2). Seed 21034: 1 took over while 2, alive, was in sync with
/// the leader of the term before; 2 got 1's stale append the same way.
/// Fixed: a sole voter sends nothing to its learner until the demotion is
/// committed (every message then carries a commit the learner reaches
/// only by holding the demotion), a member following a new leader (or the
/// same one in a new term) is not in sync until that leader's append says
/// so, and a leader that takes over starts a new term. Scripted in
/// `cluster/src/sim/stale_commit.rs` (those fail without the fix).
#[test]
fn no_member_is_in_sync_from_a_commit_the_sole_voter_left_behind() {
    for seed in [21034, 25998] {
        run(seed, false, Knobs::default());
    }
}

/// Found by the 100,000-seed survey after the in-sync fix (which changed
/// its run; without a witness): seed 59006. The segment cut one way
/// (1 -> 2), both VRRP masters; raft leaderless for two election
/// timeouts; 2 votes for 1 at 6377 ms, 1 is elected at 6396 ms and
/// serves, and 2, in sync since it led, takes over as sole voter at
/// 6412 ms (S1: both serve while the cluster link is up), 16 ms after
/// its vote: the rules decided on raft being leaderless, and the vote
/// that ended it came first. A member that has just voted for its peer
/// now refuses to take over until it hears the leader or the vote's
/// election timeout runs out (`cluster`: `TakeoverError::VotedForPeer`,
/// scripted in `cluster/src/sim/vote.rs`, which fails without it). The
/// seed's run had already changed again with the time fix and passed
/// before this one; it is kept all the same.
#[test]
fn a_member_that_just_voted_for_its_peer_does_not_take_over() {
    run(59006, false, Knobs::default());
}
