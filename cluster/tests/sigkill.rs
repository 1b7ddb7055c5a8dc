//! Real processes over loopback TCP with on-disk stores: SIGKILL the leader
//! in the middle of its write loop, restart it, and check that every write
//! any process acknowledged is in every member's store.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `cargo test` builds the examples next to the test binaries.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join("examples").join("kv_member");
    assert!(
        path.exists(),
        "{} missing: run through `cargo test`, which builds examples",
        path.display()
    );
    path
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[derive(Default)]
struct Seen {
    /// value -> index, for every ACK line.
    acks: BTreeMap<String, u64>,
    /// (commit, applied) from the last STATUS line.
    status: Option<(String, u64, u64)>,
    stopped: bool,
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    seen: Arc<Mutex<Seen>>,
}

fn spawn(id: u64, dir: &Path, addrs: &BTreeMap<u64, SocketAddr>) -> Proc {
    let mut cmd = Command::new(example());
    cmd.arg("--id")
        .arg(id.to_string())
        .arg("--dir")
        .arg(dir)
        .arg("--listen")
        .arg(addrs[&id].to_string());
    for (&p, a) in addrs {
        if p != id {
            cmd.arg("--peer").arg(format!("{p}={a}"));
        }
    }
    cmd.args(["--voters", "1,2,3", "--write-loop"]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let out = child.stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            let w: Vec<&str> = line.split_whitespace().collect();
            let mut s = s.lock().unwrap();
            match w.as_slice() {
                ["ACK", v, i] => {
                    s.acks.insert(v.to_string(), i.parse().unwrap());
                }
                ["STATUS", role, _term, commit, applied] => {
                    s.status = Some((
                        role.to_string(),
                        commit.parse().unwrap(),
                        applied.parse().unwrap(),
                    ));
                }
                ["STOPPED"] => s.stopped = true,
                _ => {}
            }
        }
    });
    Proc { child, stdin, seen }
}

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn dump(id: u64, dir: &Path) -> BTreeMap<u64, String> {
    let out = Command::new(example())
        .args(["--id", &id.to_string(), "--dump", "--dir"])
        .arg(dir)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "dump of {id} failed");
    let mut have = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        if let ["HAVE", v, i] = line.split_whitespace().collect::<Vec<_>>().as_slice() {
            have.insert(i.parse().unwrap(), v.to_string());
        }
    }
    have
}

#[test]
fn sigkill_leader_mid_write_loop_then_restart_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let addrs: BTreeMap<u64, SocketAddr> = (1..=3).map(|id| (id, free_port())).collect();
    let dirs: BTreeMap<u64, PathBuf> = (1..=3)
        .map(|id| (id, tmp.path().join(format!("m{id}"))))
        .collect();
    let mut procs: BTreeMap<u64, Proc> = (1..=3).map(|id| (id, spawn(id, &dirs[&id], &addrs))).collect();
    let mut all_acks: BTreeMap<String, u64> = BTreeMap::new();

    // Let a leader write for a while, then kill it while it is writing.
    let mut victim = 0;
    wait("a leader acknowledging writes", 60, || {
        for (&id, p) in &procs {
            if p.seen.lock().unwrap().acks.len() >= 40 {
                victim = id;
                return true;
            }
        }
        false
    });
    let killed = procs.remove(&victim).unwrap();
    let mut child = killed.child;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    all_acks.extend(killed.seen.lock().unwrap().acks.clone());

    // Another leader takes over and keeps writing.
    let base: usize = procs.values().map(|p| p.seen.lock().unwrap().acks.len()).sum();
    wait("writes after the kill", 60, || {
        procs
            .values()
            .map(|p| p.seen.lock().unwrap().acks.len())
            .sum::<usize>()
            >= base + 40
    });

    // Restart the killed member on its own store.
    procs.insert(victim, spawn(victim, &dirs[&victim], &addrs));
    wait("more writes with the member back", 60, || {
        procs
            .values()
            .map(|p| p.seen.lock().unwrap().acks.len())
            .sum::<usize>()
            >= base + 80
    });
    for p in procs.values_mut() {
        writeln!(p.stdin, "stop").unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    for p in procs.values() {
        all_acks.extend(p.seen.lock().unwrap().acks.clone());
    }
    let top = *all_acks.values().max().unwrap();
    wait("every member applied every acknowledged write", 60, || {
        procs
            .values()
            .all(|p| p.seen.lock().unwrap().status.as_ref().is_some_and(|s| s.2 >= top))
    });

    for p in procs.values() {
        // SIGTERM: a clean stop flushes the commit index.
        unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    }
    for (id, mut p) in procs {
        let st = p.child.wait().unwrap();
        assert!(st.success(), "member {id} exited with {st}");
        assert!(p.seen.lock().unwrap().stopped);
    }

    assert!(all_acks.len() >= 120, "enough writes: {}", all_acks.len());
    for id in 1..=3 {
        let have = dump(id, &dirs[&id]);
        let values: BTreeSet<&String> = have.values().collect();
        assert_eq!(values.len(), have.len(), "member {id}: a value applied twice");
        for (v, i) in &all_acks {
            assert_eq!(
                have.get(i),
                Some(v),
                "member {id} lost acknowledged write {v} at {i}"
            );
        }
    }
}
