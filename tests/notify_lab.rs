//! `[notify]` scripts on a lab pair, as keepalived's notify hooks: the
//! settled pair has run the primary's `master` and `serving` scripts and
//! the backup's `backup` script; stopping the primary (SIGTERM) runs its
//! `stopped` script, and the backup's `master` and `serving` scripts with
//! the arguments `vipool STATE NODE VIP` and the environment VIPOOL_*.
//! Each script runs in its own queue: the order between different
//! scripts' lines is not fixed, only within one script's.

mod common;

use common::pair::{PairLab, PairOptions, VIP, WAIT};
use common::{lab_available, wait_for};

/// The recorder's line for a run (see `common::pair::NOTIFY_RECORDER`).
fn line(state: &str, node: &str, priority: &str, reason: &str) -> String {
    format!("4 vipool {state} {node} {VIP}|{state}|{node}|{VIP}|{priority}|{reason}")
}

#[test]
fn notify_scripts_run_on_each_transition_with_the_state() {
    let test = "notify_scripts_run_on_each_transition_with_the_state";
    if !lab_available(test) {
        return;
    }
    let opts = PairOptions {
        notify: true,
        ..PairOptions::default()
    };
    let pair = PairLab::start(opts);
    let client = pair.host(2);
    pair.wait_settled(&client);

    // Settled: the primary became master and serves; the backup is backup.
    let has = |lines: &[String], want: &str| lines.iter().any(|l| l == want);
    let primary_up = wait_for(WAIT, || {
        let p = pair.primary.notified();
        // Its reason depends on who timed out first (MasterDown, or Preempt).
        p.iter()
            .any(|l| l.starts_with(&line("MASTER", "primary", "200", "")))
            && has(&p, &line("SERVING", "primary", "200", ""))
    });
    assert!(
        primary_up,
        "primary's hooks: {:#?}\n{}",
        pair.primary.notified(),
        pair.primary.log()
    );
    let backup_up = wait_for(WAIT, || {
        pair.backup
            .notified()
            .iter()
            .any(|l| l.starts_with("4 vipool BACKUP backup "))
    });
    assert!(
        backup_up,
        "backup's hooks: {:#?}\n{}",
        pair.backup.notified(),
        pair.backup.log()
    );
    assert!(
        !pair.backup.notified().iter().any(|l| l.contains("SERVING")),
        "the backup never served: {:#?}",
        pair.backup.notified()
    );
    let before = pair.backup.notified().len();

    // A graceful stop: the primary's STOPPED script runs before it exits,
    // the backup takes over on the priority-0 advert and serves.
    pair.primary.signal(nix::sys::signal::Signal::SIGTERM);
    let took_over = wait_for(2 * WAIT, || {
        let b = pair.backup.notified();
        let new = &b[before.min(b.len())..];
        has(new, &line("MASTER", "backup", "100", "MasterLeft"))
            && has(
                new,
                &line("SERVING", "backup", "100", "the peer left (priority 0)"),
            )
    });
    assert!(
        took_over,
        "backup's hooks after the primary stopped: {:#?}\n{}",
        pair.backup.notified(),
        pair.backup.log()
    );
    let stopped = wait_for(WAIT, || {
        has(
            &pair.primary.notified(),
            &line("STOPPED", "primary", "", "graceful stop"),
        )
    });
    assert!(
        stopped,
        "primary's hooks: {:#?}\n{}",
        pair.primary.notified(),
        pair.primary.log()
    );
    assert!(
        !pair
            .primary
            .notified()
            .iter()
            .chain(&pair.backup.notified())
            .any(|l| l.contains("FAULT")),
        "no failure: {:#?} {:#?}",
        pair.primary.notified(),
        pair.backup.notified()
    );
    drop(pair);
}
