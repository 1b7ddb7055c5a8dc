//! Tracking on a lab pair, as keepalived's `track_interface` and
//! `track_script`, checked through what a switch sees (a prober drawing
//! licenses through the VIP) and through `vipool show status`:
//!
//! - a tracked uplink of the primary (a veth whose other end is in the
//!   switch namespace) goes down: its weight lowers the primary below the
//!   backup, which preempts and serves; the uplink comes back and the
//!   primary preempts back;
//! - a check script without a weight fails: the primary goes to FAULT,
//!   gives up the VIP at once (priority 0), runs its FAULT notify script
//!   and stays out while the backup serves; the check passes again and
//!   the primary takes the VIP back.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::pair::{PairLab, PairOptions, Prober, Which, VIP};
use common::{lab_available, wait_for, Host};
use vipool::proto::NodeStatus;

/// The prober's wait for one answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Between two of its requests.
const PROBE_PACE: Duration = Duration::from_millis(20);

/// How long a move of the VIP may take here: the tracker's reaction, a
/// Master_Down_Interval (about three adverts), a raft leadership transfer,
/// and a lot of slack for a machine shared with compilers.
fn bound(opts: &PairOptions) -> Duration {
    opts.advert() * 10 + opts.election_timeout() * 4 + Duration::from_secs(5)
}

fn status(pair: &PairLab, from: &Host, which: Which) -> Option<NodeStatus> {
    pair.show(from, which).ok().map(|d| d.status)
}

/// The primary serves and holds the VIP; the backup is its VRRP backup.
fn primary_serves(pair: &PairLab, from: &Host) -> bool {
    let (p, b) = (
        status(pair, from, Which::Primary),
        status(pair, from, Which::Backup),
    );
    matches!((p, b), (Some(p), Some(b))
        if p.serving && p.vrrp_state == "Master" && !b.serving && b.vrrp_state == "Backup")
        && pair.primary.host.has_addr(VIP)
        && !pair.backup.host.has_addr(VIP)
}

/// The backup serves and holds the VIP; the primary is in `primary_state`.
fn backup_serves(pair: &PairLab, from: &Host, primary_state: &str) -> bool {
    let (p, b) = (
        status(pair, from, Which::Primary),
        status(pair, from, Which::Backup),
    );
    matches!((p, b), (Some(p), Some(b))
        if b.serving && b.vrrp_state == "Master" && !p.serving && p.vrrp_state == primary_state)
        && pair.backup.host.has_addr(VIP)
        && !pair.primary.host.has_addr(VIP)
}

fn track_warnings(pair: &PairLab, from: &Host) -> Vec<String> {
    status(pair, from, Which::Primary)
        .map(|s| {
            s.warnings
                .into_iter()
                .filter(|w| w.starts_with("track:"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_tracked_uplink_down_lowers_the_primary_and_the_backup_takes_over() {
    let test = "a_tracked_uplink_down_lowers_the_primary_and_the_backup_takes_over";
    if !lab_available(test) {
        return;
    }
    let opts = PairOptions {
        uplink: true,
        // 200 - 150 = 50, below the backup's 100.
        node_extra: [
            "[[track.interface]]\nname = \"uplink0\"\nweight = -150\n".into(),
            String::new(),
        ],
        ..PairOptions::default()
    };
    let bound = bound(&opts);
    let pair = PairLab::start(opts);
    let client = pair.host(2);
    pair.wait_settled(&client);
    assert_eq!(track_warnings(&pair, &client), Vec::<String>::new());
    let prober = Prober::start(&client, "prober", PROBE_TIMEOUT, PROBE_PACE);
    assert!(prober.wait_acks(5), "no license through the VIP before the test");

    // The uplink's far end goes down: no carrier on the primary's uplink0.
    pair.set_uplink(false);
    let cut = Instant::now();
    let moved = wait_for(bound, || backup_serves(&pair, &client, "Backup"));
    assert!(
        moved,
        "the backup did not take over within {bound:?} of the uplink going down\n{}",
        pair.log_tails(40)
    );
    eprintln!("uplink down: the backup served after {:?}", cut.elapsed());
    let warnings = track_warnings(&pair, &client);
    assert!(
        warnings.len() == 1
            && warnings[0].contains("interface uplink0 is down")
            && warnings[0].contains("priority lowered by 150"),
        "{warnings:?}"
    );
    assert!(
        pair.primary
            .log_lines("tracking: advertising a changed VRRP priority")
            .iter()
            .any(|l| l.contains("priority=50")),
        "{}",
        pair.log_tails(40)
    );
    // A switch is served through the VIP, now by the backup.
    assert!(prober.wait_acks(5), "no license through the VIP from the backup");
    assert!(backup_serves(&pair, &client, "Backup"));

    // The uplink is back: the primary, at 200 again, preempts.
    pair.set_uplink(true);
    let healed = Instant::now();
    let back = wait_for(bound, || primary_serves(&pair, &client));
    assert!(
        back,
        "the primary did not take the VIP back within {bound:?} of its uplink coming back\n{}",
        pair.log_tails(40)
    );
    eprintln!("uplink up: the primary served again after {:?}", healed.elapsed());
    assert_eq!(track_warnings(&pair, &client), Vec::<String>::new());
    assert!(
        prober.wait_acks(5),
        "no license through the VIP after the primary came back"
    );
    let probe = prober.finish();
    assert!(probe.acked >= 15, "{probe:?}");
    drop(pair);
}

/// A file the check tests for; removed when dropped.
struct Flag(PathBuf);

impl Drop for Flag {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_failing_track_script_without_weight_puts_the_primary_in_fault() {
    let test = "a_failing_track_script_without_weight_puts_the_primary_in_fault";
    if !lab_available(test) {
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let flag = Flag(std::env::temp_dir().join(format!("vipool-track-{}-{nanos}", std::process::id())));
    std::fs::write(&flag.0, "").unwrap();
    let opts = PairOptions {
        notify: true,
        node_extra: [
            format!(
                "[[track.script]]\nname = \"health\"\ncommand = [\"/usr/bin/test\", \"-e\", \"{}\"]\n\
                 interval_ms = 200\ntimeout_ms = 1000\nfall = 2\nrise = 2\n",
                flag.0.display()
            ),
            String::new(),
        ],
        ..PairOptions::default()
    };
    let bound = bound(&opts);
    let advert = opts.advert();
    let pair = PairLab::start(opts);
    let client = pair.host(2);
    pair.wait_settled(&client);
    assert_eq!(track_warnings(&pair, &client), Vec::<String>::new());
    let prober = Prober::start(&client, "prober", PROBE_TIMEOUT, PROBE_PACE);
    assert!(prober.wait_acks(5), "no license through the VIP before the test");

    // The check fails: two failures 200 ms apart, then FAULT.
    std::fs::remove_file(&flag.0).unwrap();
    let failed = Instant::now();
    let moved = wait_for(bound, || backup_serves(&pair, &client, "Fault"));
    assert!(
        moved,
        "the primary did not give the VIP up within {bound:?} of its check failing\n{}",
        pair.log_tails(40)
    );
    eprintln!("check failed: the backup served after {:?}", failed.elapsed());
    let warnings = track_warnings(&pair, &client);
    assert!(
        warnings.len() == 1 && warnings[0].contains("script health is down") && warnings[0].contains("FAULT"),
        "{warnings:?}"
    );
    // The backup took over on the priority-0 advert, not after silence.
    assert!(
        !pair.backup.log_lines("MasterLeft").is_empty(),
        "{}",
        pair.log_tails(40)
    );
    let fault_hook = "4 vipool FAULT primary 192.0.2.100|FAULT|primary|192.0.2.100|200|script health down";
    assert!(
        wait_for(Duration::from_secs(10), || pair
            .primary
            .notified()
            .iter()
            .any(|l| l.starts_with(fault_hook))),
        "{:#?}",
        pair.primary.notified()
    );
    assert!(prober.wait_acks(5), "no license through the VIP from the backup");
    // In fault the primary does not contend: many Master_Down_Intervals
    // later the backup still serves.
    std::thread::sleep(advert * 10);
    assert!(backup_serves(&pair, &client, "Fault"), "{}", pair.log_tails(40));

    // The check passes again (twice): the primary contends and takes the VIP back.
    std::fs::write(&flag.0, "").unwrap();
    let healed = Instant::now();
    let back = wait_for(bound * 2, || primary_serves(&pair, &client));
    assert!(
        back,
        "the primary did not take the VIP back within {:?} of its check passing\n{}",
        bound * 2,
        pair.log_tails(60)
    );
    eprintln!(
        "check passed: the primary served again after {:?}",
        healed.elapsed()
    );
    assert_eq!(track_warnings(&pair, &client), Vec::<String>::new());
    assert!(
        prober.wait_acks(5),
        "no license through the VIP after the primary came back"
    );
    let probe = prober.finish();
    assert!(probe.acked >= 15, "{probe:?}");
    drop(pair);
}
