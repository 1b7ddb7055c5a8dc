//! `vipool serve`, `vipool client` and `vipool show` as real processes on 127.0.0.1.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_vipool");

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        // Only on a failed test: the happy path waits for a clean exit.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The pair's CA and the certificates the processes of a test use, made
/// with `vipool pki` as an operator would.
struct Pki {
    _dir: tempfile::TempDir,
    path: String,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pki").to_string_lossy().into_owned();
        for args in [
            vec!["pki", "init", "--dir", &path, "--cluster-id", "1"],
            vec!["pki", "member", "--dir", &path, "--name", "primary"],
            vec!["pki", "operator", "--dir", &path, "--name", "op"],
        ] {
            let out = Command::new(BIN).args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Pki { _dir: dir, path }
    }

    fn file(&self, name: &str) -> String {
        format!("{}/{name}", self.path)
    }

    /// `vipool show` arguments: the operator's certificate.
    fn operator(&self) -> [String; 4] {
        [
            "--ca".into(),
            self.file("ca.crt"),
            "--cert".into(),
            self.file("op.crt"),
        ]
    }
}

fn show(pki: &Pki, addr: &str, view: &str) -> Value {
    let out = Command::new(BIN)
        .args(["show", view, "--json", "--server", addr])
        .args(pki.operator())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "show {view}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn wait_for_listener(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "server never listened on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `vipool license ARGS`, its standard output.
fn license(args: &[&str]) -> String {
    let out = Command::new(BIN).arg("license").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "license {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Issues a key with `vipool license issue` and returns its line.
fn issue(issuer: &std::path::Path, key_id: &str, ty: &str, count: u32, serial: &str) -> String {
    let count = count.to_string();
    let line = license(&[
        "issue",
        "--issuer",
        issuer.to_str().unwrap(),
        "--type",
        ty,
        "--count",
        &count,
        "--serial",
        serial,
        "--key-id",
        key_id,
    ]);
    line.trim().to_owned()
}

#[test]
fn serve_client_and_show_as_processes() {
    let pki = Pki::new();
    // An issuer, the server's keys for its serial, and the switches' keys
    // for theirs, as an operator makes them.
    let dir = tempfile::tempdir().unwrap();
    license(&["keygen", "--name", "lab", "--out", dir.path().to_str().unwrap()]);
    let (secret, public) = (dir.path().join("lab.key"), dir.path().join("lab.pub"));
    let server_keys: Vec<String> = ["AP", "PEFNG", "XSEC"]
        .iter()
        .map(|ty| issue(&secret, &format!("primary-{ty}"), ty, 16, "PRIMARY-SN"))
        .collect();
    let server_file = dir.path().join("primary.keys");
    std::fs::write(&server_file, server_keys.join("\n")).unwrap();
    let mut switch_keys = Vec::new();
    for n in 1..=3 {
        let serial = format!("SIM-sw-000{n}");
        switch_keys.push(issue(&secret, &format!("sw{n}-ap"), "AP", 4, &serial));
        switch_keys.push(issue(&secret, &format!("sw{n}-pefv"), "PEFV", 1, &serial));
    }
    // A key for nobody here: no switch presents it.
    switch_keys.push(issue(&secret, "stray", "AP", 100, "OTHER"));
    let switch_file = dir.path().join("switches.keys");
    std::fs::write(&switch_file, switch_keys.join("\n")).unwrap();

    let addr = format!("127.0.0.1:{}", free_port());
    let operator = format!("127.0.0.1:{}", free_port());
    let server = Command::new(BIN)
        .args([
            "serve",
            "--ca",
            &pki.file("ca.crt"),
            "--cert",
            &pki.file("primary.crt"),
            "--operator-listen",
            &operator,
            "--listen",
            &addr,
            "--node",
            "primary",
            "--serial",
            "PRIMARY-SN",
        ])
        .arg("--issuer")
        .arg(&public)
        .arg("--key-file")
        .arg(&server_file)
        .args(["--sweep-interval-ms", "100", "--heartbeat-interval-ms", "200"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Running(server);
    wait_for_listener(&addr);

    let client: Output = Command::new(BIN)
        .args([
            "client", "--server", &addr, "--id", "sw", "--count", "3", "--json", "--for-s", "1",
        ])
        .args(["--pki", &pki.path])
        .arg("--keys")
        .arg(&switch_file)
        .args([
            "--builtin",
            "AP=16",
            "--aps",
            "20",
            "--heartbeat-interval-ms",
            "200",
        ])
        .output()
        .unwrap();
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    let events: Vec<Value> = String::from_utf8(client.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let granted: Vec<&Value> = events.iter().filter(|e| e["event"] == "granted").collect();
    assert_eq!(granted.len(), 3, "{events:?}");
    assert!(granted
        .iter()
        .all(|e| e["license_type"] == "AP" && e["count"] == 4));

    // The clients are gone but not yet silent for long: their rows stay.
    let table = show(&pki, &operator, "server-table");
    let ap = table
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["license_type"] == "AP")
        .unwrap();
    assert_eq!((ap["total"].as_u64(), ap["used"].as_u64()), (Some(28), Some(12)));
    assert_eq!(ap["contributed_by"]["server:primary"], 16);
    assert!(!table
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["license_type"] == "PEFV"));
    let clients = show(&pki, &operator, "client-table");
    assert_eq!(clients.as_array().unwrap().len(), 3);
    assert_eq!(clients[0]["installed"]["PEFV"], 1);
    let usage = show(&pki, &operator, "license-usage");
    assert!(usage
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["client"] == "sw-0001" && r["builtin"] == 16));
    let keys = show(&pki, &operator, "keys");
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 9, "{keys:?}");
    assert_eq!(keys[0]["key_id"], "primary-AP");
    assert_eq!(keys[0]["counted_for"], "server:primary");
    assert_eq!(keys[0]["installed_by"], "server \"primary\"");
    assert_eq!(keys[0]["issuer"], "lab");
    assert!(keys.iter().any(|k| k["key_id"] == "sw2-ap"
        && k["counted_for"] == "client:sw-0002"
        && k["serial"] == "SIM-sw-0002"));
    let heartbeat = show(&pki, &operator, "heartbeat");
    assert!(heartbeat[0]["requests"].as_u64().unwrap() >= 1);
    let summary = show(&pki, &operator, "summary");
    assert_eq!(
        summary["clients_up"].as_u64().unwrap() + summary["clients_down"].as_u64().unwrap(),
        3
    );
    let status = show(&pki, &operator, "status");
    assert_eq!(status["node"], "primary");
    assert_eq!(status["raft_role"], "standalone");

    let text = Command::new(BIN)
        .args(["show", "server-table", "--server", &operator])
        .args(pki.operator())
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.starts_with("type "), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("AP ") && l.contains("28")),
        "{text}"
    );

    // Status of every node asked, even one that is down.
    let dead = format!("127.0.0.1:{}", free_port());
    let both = Command::new(BIN)
        .args(["show", "status", "--server", &operator, "--server", &dead])
        .args(pki.operator())
        .output()
        .unwrap();
    assert!(both.status.success());
    let both = String::from_utf8(both.stdout).unwrap();
    assert!(
        both.lines()
            .any(|l| l.starts_with("primary ") && l.contains("standalone")),
        "{both}"
    );
    assert!(
        both.lines()
            .any(|l| l.starts_with(&dead) && l.contains("unreachable")),
        "{both}"
    );
    // Other views fall back to the next server.
    let fallback = Command::new(BIN)
        .args(["show", "summary", "--server", &dead, "--server", &operator])
        .args(pki.operator())
        .output()
        .unwrap();
    assert!(
        fallback.status.success(),
        "{}",
        String::from_utf8_lossy(&fallback.stderr)
    );

    // The operator's changes, on the operator endpoint, with the
    // operator's certificate: logged with its name.
    let op = |args: &[&str]| -> Output {
        Command::new(BIN)
            .args(["operator", "--server", &operator])
            .args(pki.operator())
            .args(args)
            .output()
            .unwrap()
    };
    let extra = dir.path().join("extra.keys");
    std::fs::write(&extra, issue(&secret, "primary-extra", "AP", 10, "PRIMARY-SN")).unwrap();
    let out = op(&["install-key", "primary", &format!("@{}", extra.display())]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("installed key primary-extra") && stdout.contains("AP: total 38"),
        "{stdout}"
    );
    // A key for another serial is refused, and says why.
    let wrong = issue(&secret, "wrong", "AP", 10, "OTHER-SN");
    let out = op(&["install-key", "primary", &wrong]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bound to serial \"OTHER-SN\""), "{err}");
    let keys = show(&pki, &operator, "keys");
    let extra = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == "primary-extra")
        .unwrap()
        .clone();
    assert_eq!(extra["installed_by"], "operator \"op\"", "{extra}");
    assert!(op(&["remove-key", "primary-extra"]).status.success());
    let out = op(&["remove-client", "sw-0001"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(show(&pki, &operator, "client-table").as_array().unwrap().len(), 2);
    // A switch's certificate is refused on the operator endpoint.
    let denied = Command::new(BIN)
        .args(["operator", "--server", &operator, "--ca", &pki.file("ca.crt")])
        .args(["--cert", &pki.file("primary.crt"), "remove-client", "sw-0002"])
        .output()
        .unwrap();
    assert!(!denied.status.success());

    kill(Pid::from_raw(server.0.id() as i32), Signal::SIGTERM).unwrap();
    let status = server.0.wait().unwrap();
    let mut log = String::new();
    server.0.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(status.success(), "{log}");
    // The VIP holder logged who made each change.
    assert!(
        log.lines()
            .any(|l| l.contains("operator change committed") && l.contains("removes client \\\"sw-0001\\\"")),
        "{log}"
    );
}

/// `vipool serve` queues as many connects as it serves
/// (`--max-connections`), and, as `vipool node` does, says so at start
/// when the kernel caps the client port's accept queue below that.
#[test]
fn serve_says_when_the_kernel_caps_its_accept_queue() {
    let somaxconn: u64 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("net.core.somaxconn")
        .trim()
        .parse()
        .expect("a number");
    let wanted = (somaxconn + 1).to_string();
    let addr = format!("127.0.0.1:{}", free_port());
    let operator = format!("127.0.0.1:{}", free_port());
    let server = Command::new(BIN)
        .args(["serve", "--insecure-plaintext", "--listen", &addr])
        .args(["--operator-listen", &operator, "--max-connections", &wanted])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Running(server);
    // The operator endpoint is bound after the note is logged.
    wait_for_listener(&operator);
    let _ = server.0.kill();
    let _ = server.0.wait();
    let mut log = String::new();
    server.0.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(
        log.contains(&format!("net.core.somaxconn is {somaxconn}"))
            && log.contains(&format!("not the {wanted} of --max-connections")),
        "{log}"
    );
}
