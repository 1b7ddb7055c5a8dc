//! The raft log's commands as an operator runs them, as real processes on
//! 127.0.0.1 (no namespaces, no root): `vipool init`, a witness refusing to
//! start without a sound log and with `--rejoin`, and `vipool ack-yield`.
//! The witness is used because it needs no VRRP; `vipool node` opens its
//! log the same way (tests/pair_e2e.rs runs it on a lab).

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vipool");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A witness's configuration in `dir`, its data dir `dir/data`, its
/// certificates from a CA made in `dir/pki`.
fn witness_config(dir: &Path) -> PathBuf {
    let pki = dir.join("pki");
    let ca = vipool::pki::Ca::create(&pki, 7, 30).unwrap();
    ca.issue_witness("witness", 30)
        .unwrap()
        .write(&pki, "witness")
        .unwrap();
    let text = format!(
        r#"
[node]
name = "witness"
id = 3
cluster_id = 7
data_dir = "{data}"

[cluster]
peers = [
    {{ id = 1, name = "primary", address = "127.0.0.1:{p1}" }},
    {{ id = 2, name = "backup", address = "127.0.0.1:{p2}" }},
    {{ id = 3, name = "witness", address = "127.0.0.1:{p3}", role = "witness" }},
]

[witness]
operator_listen = "127.0.0.1:{op}"

[tls]
ca = "{pki}/ca.crt"
cert = "{pki}/witness.crt"
key = "{pki}/witness.key"
"#,
        pki = pki.display(),
        data = dir.join("data").display(),
        p1 = free_port(),
        p2 = free_port(),
        p3 = free_port(),
        op = free_port(),
    );
    let path = dir.join("witness.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn vipool(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs the witness until its log says `until`, then stops it (SIGTERM).
fn run_until(config: &str, extra: &[&str], until: &str) -> String {
    let log = Path::new(config).with_extension("log");
    let mut child = Command::new(BIN)
        .args(["witness", "--config", config])
        .args(extra)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    while !read().contains(until) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the witness exited ({status}) before {until:?}:\n{}", read());
        }
        assert!(Instant::now() < deadline, "no {until:?} in:\n{}", read());
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
    read()
}

#[test]
fn init_once_then_the_member_starts_and_a_second_init_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = witness_config(dir.path());
    let config = config.to_str().unwrap();
    let store = dir.path().join("data").join("raft.redb");

    // No log: refused, naming the file and both ways out.
    let out = vipool(&["witness", "--config", config]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains(&format!("{} does not exist", store.display())), "{t}");
    assert!(t.contains(&format!("`vipool init --config {config}`")), "{t}");
    assert!(
        t.contains(&format!("`vipool witness --config {config} --rejoin`")),
        "{t}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "a refused start creates nothing"
    );

    let out = vipool(&["init", "--config", config]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("created {}", store.display())),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("voters [1, 2, 3]"), "{}", text(&out));
    assert_eq!(mode(&dir.path().join("data")), 0o700);
    assert_eq!(mode(&store), 0o600);

    let out = vipool(&["init", "--config", config]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("already exists"), "{}", text(&out));

    let log = run_until(config, &[], "witness up");
    assert!(log.contains("raft log open"), "{log}");
}

#[test]
fn a_zero_length_log_is_refused_and_rejoin_starts_empty_keeping_it_aside() {
    let dir = tempfile::tempdir().unwrap();
    let config = witness_config(dir.path());
    let config = config.to_str().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // A data dir others can read, as outside systemd with umask 022.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("raft.redb"), b"").unwrap();

    let out = vipool(&["witness", "--config", config]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("is empty (zero length)"), "{}", text(&out));
    assert!(
        text(&out).contains("can be read by other users (mode 755)"),
        "{}",
        text(&out)
    );

    let log = run_until(config, &["--rejoin"], "witness up");
    assert!(log.contains("REJOIN"), "{log}");
    assert!(log.contains("waits for the leader's snapshot"), "{log}");
    let aside: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("raft.redb.aside-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::metadata(&aside[0]).unwrap().len(),
        0,
        "the old file, kept"
    );
    assert_eq!(mode(&data.join("raft.redb")), 0o600);

    // Restarted before any leader sent a snapshot: it keeps waiting.
    let log = run_until(config, &[], "witness up");
    assert!(log.contains("waits for the leader's snapshot"), "{log}");
}

#[test]
fn ack_yield_lists_then_acknowledges_by_name_or_all() {
    let dir = tempfile::tempdir().unwrap();
    let config = witness_config(dir.path());
    let config = config.to_str().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();

    let out = vipool(&["ack-yield", "--config", config]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("no unacknowledged split-brain yield files"),
        "{}",
        text(&out)
    );

    let log = |term: u64| {
        serde_json::json!({
            "format": "vipool-yield-1", "member": 3, "winner": 1, "term": term,
            "winner_term": term + 1, "yielded_at_unix_ms": 1, "commit": 9, "voters": [3],
            "learners": [], "conf_index": 2, "committed_entries": 1, "snapshot": null,
            "entries": [{ "index": 9, "term": term, "entry_type": "EntryNormal", "committed": true,
                          "decoded": "client \"sw1\" acquires 3 AP at 1", "data_hex": "00" }]
        })
        .to_string()
    };
    std::fs::write(data.join("yielded-100-term4.json"), log(4)).unwrap();
    std::fs::write(data.join("yielded-200-term6.json"), log(6)).unwrap();

    let out = vipool(&["ack-yield", "--config", config]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("2 unacknowledged split-brain yield file(s)"), "{t}");
    assert!(t.contains("#9 (term 4) client \"sw1\" acquires 3 AP at 1"), "{t}");
    assert!(
        data.join("yielded-100-term4.json").exists(),
        "listing changes nothing"
    );

    let out = vipool(&["ack-yield", "--config", config, "yielded-100-term4.json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("acknowledged yielded-100-term4.json"),
        "{}",
        text(&out)
    );
    assert!(data.join("yielded-100-term4.json.acknowledged").exists());

    let out = vipool(&["ack-yield", "--config", config, "raft.redb"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("is not the name of a yield file"),
        "{}",
        text(&out)
    );

    let out = vipool(&["ack-yield", "--config", config, "--all"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("acknowledged yielded-200-term6.json"),
        "{}",
        text(&out)
    );
    let left: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Issue 11, item 5: SIGHUP reloads what may change at run time (the log
/// filter), says what else changed and needs a restart, refuses a broken
/// file without changing anything, and never stops the daemon (its default
/// action would kill it without a word).
#[test]
fn sighup_reloads_the_log_filter_names_what_needs_a_restart_and_never_stops() {
    let dir = tempfile::tempdir().unwrap();
    let config = witness_config(dir.path());
    let c = config.to_str().unwrap();
    assert!(vipool(&["init", "--config", c]).status.success());
    let log = config.with_extension("log");
    let child = Command::new(BIN)
        .args(["--log", "info", "witness", "--config", c])
        .env_remove("RUST_LOG")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Killed when the test ends, also when it fails.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(child);
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait_for_line = |what: &str, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while read().matches(what).count() < n {
            assert!(Instant::now() < deadline, "no {what:?} in:\n{}", read());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for_line("witness up", 1);
    let hup = || nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();

    hup();
    wait_for_line("SIGHUP: configuration reloaded, nothing changed", 1);

    // The log filter changes at once; another change waits for a restart.
    let text = std::fs::read_to_string(&config).unwrap();
    let changed = text
        .replace("[node]\n", "[node]\nlog = \"debug\"\n")
        .replace("[cluster]\n", "[cluster]\nrequest_timeout_ms = 7000\n");
    assert_ne!(changed, text);
    std::fs::write(&config, changed).unwrap();
    hup();
    wait_for_line("these changes take effect only at the next start", 1);
    let t = read();
    assert!(t.contains("log filter set filter=\"debug\""), "{t}");
    assert!(
        t.contains("needs_restart=[\"cluster.request_timeout_ms\"]"),
        "{t}"
    );
    // Debug lines now appear: the next SIGHUP logs one.
    assert!(!t.contains("DEBUG vipool::cmd::reload"), "{t}");
    hup();
    wait_for_line(
        "DEBUG vipool::cmd::reload: SIGHUP: reading the configuration again",
        1,
    );

    // A broken file changes nothing and the daemon goes on.
    std::fs::write(&config, "not toml at all [").unwrap();
    hup();
    wait_for_line("SIGHUP: configuration refused, nothing changed", 1);
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the witness stopped:\n{}",
        read()
    );

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.0.wait().unwrap().success(), "{}", read());
}
