//! `deploy/lab.sh`, the lab demo a newcomer runs first: it must pass on
//! its own (both failover rounds, no acknowledged grant lost) and leave no
//! namespace behind. It runs the binary cargo built for the tests, so no
//! release build is needed.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::lab_available;

/// The whole demo takes about 15 s; the machine may be busy compiling.
const LIMIT: Duration = Duration::from_secs(180);

#[test]
fn lab_script_passes_both_failover_rounds_and_cleans_up() {
    let test = "lab_script_passes_both_failover_rounds_and_cleans_up";
    if !lab_available(test) {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/lab.sh");
    let mut child = Command::new("bash")
        .args([script, "--switches", "5"])
        .env("VIPOOL_BIN", env!("CARGO_BIN_EXE_vipool"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bash deploy/lab.sh");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            // SIGTERM: the script's trap removes what it made.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    println!("{out}");
    eprintln!("{err}");
    println!("{test}: lab.sh ran {:?}", started.elapsed());
    let status = status.unwrap_or_else(|| panic!("lab.sh still running after {LIMIT:?}"));
    assert!(status.success(), "lab.sh exited with {status}");
    assert!(
        out.lines().any(|l| l.starts_with("PASS")),
        "no PASS line in the output"
    );
    // SPEC's example, checked by lab.sh against the pool it shows.
    assert!(
        out.contains("16 PEFNG + 16 XSEC keys signed for each server give a pool of 32 of each"),
        "no seed example line"
    );
    for round in ["round 1 (stop): VIP", "round 2 (kill): VIP"] {
        assert!(out.contains(round), "no {round:?} summary line");
    }
    // bash's job notices for the processes the script kills on purpose
    // ("line 512: 4242 Killed  ip netns exec ...") are noise.
    assert!(
        !out.contains("Killed") && !err.contains("Killed"),
        "job-control noise in the output"
    );
    // Nothing left behind: no namespace of this run's prefix.
    let prefix = out
        .lines()
        .find_map(|l| l.split("] lab ").nth(1))
        .and_then(|rest| rest.split(':').next())
        .expect("the lab's name prefix is printed")
        .to_string();
    let left = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.lines().any(|l| l.starts_with(&prefix)),
        "namespaces left behind:\n{left}"
    );
}
