//! How a switch connects, fails and gives up (issue 12, client side):
//! `vipool client` as a process against `vipool serve` (mutual TLS, a
//! CA made with `vipool pki`), and the client library in-process against
//! listeners that never answer.
//!
//! - an idle connected client costs (almost) no CPU;
//! - a refusal no retry can change stops the client at once, non-zero,
//!   saying what to do; a node that does not serve yet is waited for;
//!   an unreachable server is said, and is an error when `--for-s` ends
//!   without it;
//! - a connect is given up after the connect timeout (a SYN lost to a
//!   dead VIP holder), a TLS handshake after the handshake timeout, and a
//!   server that appears during a failover is reached within one connect
//!   timeout, not after the kernel's SYN retransmission (1 s, then 3 s);
//!   a listener that appears while an attempt is pending is reached within
//!   one connect stagger;
//! - a request the dead VIP holder never answers (its kernel acknowledged
//!   it, then the power went) is given up after the answer deadline, and
//!   the switch registers with the next holder at once; an idle
//!   connection is never given up; a request a new holder holds while
//!   its leadership arrives is not cut short by the default deadline.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use vipool::client::{ClientError, ConnectOptions, Connection, Verdict};
use vipool::server::{LocalApplier, Server, ServerConfig};
use vipool::switch::{self, Change, Event, SwitchConfig};
use vipool::table::{LicenseTable, TableConfig};

const BIN: &str = env!("CARGO_BIN_EXE_vipool");

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn vipool(args: &[&str]) -> Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The pair's CA with a server's certificate, and another CA (a stranger's),
/// made with `vipool pki` as an operator would.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki { dir };
        let (ours, other) = (pki.path("pki"), pki.path("other"));
        vipool(&["pki", "init", "--dir", &ours, "--cluster-id", "1"]);
        vipool(&["pki", "member", "--dir", &ours, "--name", "primary"]);
        vipool(&["pki", "init", "--dir", &other, "--cluster-id", "2"]);
        pki
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// A switch certificate for `id` issued by the CA in `ca_dir`: its path.
    fn switch_cert(&self, ca_dir: &str, id: &str) -> String {
        let out = self.path(&format!("certs-{id}-{}", ca_dir.len()));
        vipool(&[
            "pki",
            "switch",
            "--dir",
            ca_dir,
            "--id",
            id,
            "--serial",
            &format!("SIM-{id}"),
            "--out",
            &out,
        ]);
        format!("{out}/{id}.crt")
    }
}

/// `vipool serve` on 127.0.0.1 with the pair's certificate: its client port.
fn serve(pki: &Pki) -> (Running, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let operator = format!("127.0.0.1:{}", free_port());
    let child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &addr,
            "--operator-listen",
            &operator,
            "--node",
            "primary",
        ])
        .args([
            "--ca",
            &pki.path("pki/ca.crt"),
            "--cert",
            &pki.path("pki/primary.crt"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while StdStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "server never listened on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    (running, addr)
}

/// `vipool client ARGS` until it exits (killed after `limit`): its output
/// and how long it ran.
fn client_until_exit(args: &[&str], limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let child = Command::new(BIN)
        .args(["client"])
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            if std::fs::metadata(format!("/proc/{pid}")).is_err() {
                return;
            }
        }
        // Still running: it would have retried forever.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
    });
    let out = child.wait_with_output().unwrap();
    let took = start.elapsed();
    let _ = watchdog.join();
    (out, took)
}

/// utime + stime of process `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces), from state on.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (u64, u64) = (fields[11].parse().unwrap(), fields[12].parse().unwrap());
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (utime + stime) as f64 / ticks
}

#[test]
fn an_idle_connected_client_uses_under_one_percent_of_a_core() {
    let pki = Pki::new();
    let (_server, addr) = serve(&pki);
    let mut child = Running(
        Command::new(BIN)
            .args(["client", "--server", &addr, "--id", "idle", "--json"])
            // Idle but alive: a heartbeat every 2 s, so the window holds
            // five of them and the waits between.
            .args(["--heartbeat-interval-ms", "2000"])
            .args(["--pki", &pki.path("pki")])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let first = lines.next().expect("an event").unwrap();
    assert!(first.contains("\"registered\""), "{first}");
    // Registered: from here on it only heartbeats and waits.
    let before = cpu_seconds(pid);
    let window = Duration::from_secs(10);
    std::thread::sleep(window);
    let used = cpu_seconds(pid) - before;
    let share = used / window.as_secs_f64();
    eprintln!(
        "idle connected vipool client: {:.3} s of CPU in {} s = {:.2}% of a core",
        used,
        window.as_secs(),
        share * 100.0
    );
    assert!(
        share < 0.01,
        "an idle client used {:.1}% of a core",
        share * 100.0
    );
    // Still connected: it idled, it did not give up.
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_ok(),
        "the client exited"
    );
}

/// Runs `vipool client` against the server with `args` and checks that it
/// stops at once, non-zero, with an error that says `says` and what to do.
fn assert_stops_at_once(addr: &str, args: &[&str], says: &str) {
    let mut all = vec!["--server", addr];
    all.extend_from_slice(args);
    let (out, took) = client_until_exit(&all, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?}: exit 0\n{stderr}");
    assert!(
        took < Duration::from_secs(5),
        "{args:?}: took {took:?} (killed at 20 s: it kept retrying)\n{stderr}"
    );
    let error = stderr
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("switch stopped"))
        .unwrap_or_else(|| panic!("{args:?}: no error line\n{stderr}"));
    assert!(error.contains(says), "{args:?}: {error}");
    assert!(error.contains("What to do:"), "{error}");
    // One try, one error: it did not go round.
    assert_eq!(stderr.matches("switch stopped").count(), 1, "{stderr}");
    assert!(stderr.contains("Error: 1 of 1 switches stopped"), "{stderr}");
}

/// Runs `vipool client --for-s 3` against the server with `args`, whose
/// handshake fails before the server proves to be the pair: it keeps
/// trying until --for-s ends, says why once at error level with what to
/// do, never stops for good, and ends non-zero (never registered).
fn assert_keeps_trying_unproven(addr: &str, args: &[&str], says: &str) {
    let mut all = vec!["--server", addr, "--for-s", "3"];
    all.extend_from_slice(args);
    let (out, took) = client_until_exit(&all, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?}: exit 0\n{stderr}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(15),
        "{args:?}: took {took:?}: it should try until --for-s ends\n{stderr}"
    );
    assert!(
        !stderr.contains("switch stopped"),
        "{args:?}: stopped for good\n{stderr}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("not proven to be the pair"))
        .collect();
    assert_eq!(errors.len(), 1, "{args:?}: one line a minute\n{stderr}");
    assert!(errors[0].contains(says), "{}", errors[0]);
    assert!(errors[0].contains("What to do:"), "{}", errors[0]);
    assert!(stderr.contains("never reached"), "{stderr}");
}

#[test]
fn a_refusal_no_retry_can_change_stops_the_client_at_once_saying_what_to_do() {
    let pki = Pki::new();
    let (_server, addr) = serve(&pki);
    let (ours, other) = (pki.path("pki"), pki.path("other"));
    // The servers know no such license type.
    assert_stops_at_once(
        &addr,
        &["--id", "sw1", "--pki", &ours, "--builtin", "FOO=1"],
        "unknown license type FOO",
    );
    // The switch pins another CA than the server's: the server's
    // certificate is refused by the switch. That is an operator's mistake
    // here, but a host holding the VIP would cause the same: the switch
    // says so at error level and keeps trying (see the next test).
    assert_keeps_trying_unproven(&addr, &["--id", "sw1", "--pki", &other], "pinned CA");
    // The switch's certificate is of another CA: the server refuses it.
    let stranger = pki.switch_cert(&other, "sw1");
    assert_stops_at_once(
        &addr,
        &[
            "--id",
            "sw1",
            "--ca",
            &pki.path("pki/ca.crt"),
            "--cert",
            &stranger,
        ],
        "refused this switch's certificate",
    );
    // The certificate names sw1; the switch says it is sw2.
    let sw1 = pki.switch_cert(&ours, "sw1");
    assert_stops_at_once(
        &addr,
        &["--id", "sw2", "--ca", &pki.path("pki/ca.crt"), "--cert", &sw1],
        "it may act only for that id",
    );
}

#[test]
fn an_unreachable_server_is_said_once_and_is_an_error_when_for_s_ends() {
    let pki = Pki::new();
    // Nobody listens there: every connect is refused at once.
    let addr = format!("127.0.0.1:{}", free_port());
    let (out, took) = client_until_exit(
        &[
            "--server",
            &addr,
            "--id",
            "sw1",
            "--pki",
            &pki.path("pki"),
            "--for-s",
            "3",
        ],
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit 0\n{stderr}");
    assert!(took < Duration::from_secs(10), "{took:?}\n{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("server unreachable"))
        .collect();
    // The warning (once: rate-limited), and the final error.
    assert!(warnings[0].contains("WARN"), "{stderr}");
    assert!(warnings[0].contains("Connection refused"), "{stderr}");
    assert_eq!(
        warnings.iter().filter(|l| l.contains("WARN")).count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "Error: server unreachable: 1 of 1 switches never reached {addr} in 3 s"
        )),
        "{stderr}"
    );
    // Attempts are not logged one by one at the default level.
    assert!(stderr.lines().count() < 10, "{stderr}");
}

#[test]
fn a_connect_in_a_namespace_with_a_blackholed_vip_times_out_as_configured() {
    if !common::lab_available("a_connect_in_a_namespace_with_a_blackholed_vip_times_out_as_configured") {
        return;
    }
    // A namespace of our own where 198.51.100.2 is a dead host on the
    // link whose MAC address is still cached: every SYN to it goes out on
    // a veth whose other end drops it (another MAC), and vanishes, as one
    // to a dead VIP holder does until the new holder's gratuitous ARP.
    let ns = format!("vpc12x{}", std::process::id());
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    common::sh(&["ip", "netns", "add", &ns]);
    let _ns = Ns(ns.clone());
    common::sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    common::sh(&[
        "ip", "-n", &ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
    ]);
    common::sh(&["ip", "-n", &ns, "addr", "add", "198.51.100.1/24", "dev", "v0"]);
    common::sh(&["ip", "-n", &ns, "link", "set", "v0", "up"]);
    common::sh(&["ip", "-n", &ns, "link", "set", "v1", "up"]);
    common::sh(&[
        "ip",
        "-n",
        &ns,
        "neigh",
        "replace",
        "198.51.100.2",
        "lladdr",
        "02:00:5e:00:c1:02",
        "dev",
        "v0",
        "nud",
        "permanent",
    ]);
    let pki = Pki::new();
    let start = Instant::now();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            BIN,
            "client",
            "--server",
            "198.51.100.2:4333",
        ])
        .args(["--id", "sw1", "--pki", &pki.path("pki"), "--for-s", "2"])
        .args(["--connect-timeout-ms", "250"])
        .env("RUST_LOG", "vipool=debug")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(10), "{took:?}\n{stderr}");
    // Within the 1 s failover window, connects at 0, 250, 500 and 750 ms,
    // each given up after 250 ms and retried at once; then backing off.
    let timeouts = stderr
        .matches("no TCP connection to 198.51.100.2:4333 within 250 ms")
        .count();
    assert!(timeouts >= 4, "{timeouts} timeouts\n{stderr}");
    assert!(stderr.contains("server unreachable"), "{stderr}");
    assert!(
        stderr.contains("never reached 198.51.100.2:4333 in 2 s"),
        "{stderr}"
    );
}

/// A listener whose accept queue is full: the kernel drops every further
/// SYN to it, so a connect to it hangs as one to a dead host does. Keep
/// the returned streams and listener alive for as long as it must stay so.
fn full_listener() -> (Socket, Vec<StdStream>) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut held = Vec::new();
    loop {
        match StdStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(e)
                if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock =>
            {
                return (socket, held)
            }
            Err(e) => panic!("filling the accept queue: {e}"),
        }
        assert!(held.len() < 64, "the accept queue never filled");
    }
}

#[tokio::test]
async fn a_connect_is_given_up_after_the_connect_timeout_and_is_transient() {
    let (listener, _held) = full_listener();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let options = ConnectOptions {
        connect_timeout: Duration::from_millis(200),
        ..ConnectOptions::default()
    };
    let start = Instant::now();
    let e = Connection::connect_with(addr, None, &options).await.unwrap_err();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(900),
        "{took:?}: {e}"
    );
    let ClientError::Io(io) = &e else { panic!("{e:?}") };
    assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
    assert!(e.to_string().contains("within 200 ms"), "{e}");
    assert_eq!(e.verdict(), Verdict::Transient);
}

#[tokio::test]
async fn a_listener_that_appears_is_reached_within_one_stagger() {
    // As the VIP moves, SYNs sent to it are lost (here the kernel drops
    // them: the accept queue is full) until the new holder listens (here:
    // a slot frees). The connect timeout is long, so only a new attempt
    // can get through soon: the kernel sends a lost SYN again only 1 s
    // after the first, 800 ms after the listener appears.
    let (listener, _held) = full_listener();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let options = ConnectOptions {
        connect_timeout: Duration::from_secs(3),
        ..ConnectOptions::default()
    };
    let stagger = options.connect_stagger.expect("staggered by default");
    let appear_after = Duration::from_millis(200);
    let appears = std::thread::spawn(move || {
        std::thread::sleep(appear_after);
        let accepted = listener.accept().unwrap();
        (Instant::now(), listener, accepted)
    });
    let conn = Connection::connect_with(addr, None, &options).await.unwrap();
    let connected = Instant::now();
    let (appeared, _listener, _accepted) = appears.join().unwrap();
    let after = connected.saturating_duration_since(appeared);
    assert!(
        after < stagger + Duration::from_millis(400),
        "connected {after:?} after the listener appeared (stagger {stagger:?})"
    );
    drop(conn);
}

#[tokio::test]
async fn a_server_that_never_completes_the_handshake_hits_the_handshake_deadline() {
    // Accepts TCP and says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = vipool::pki::Ca::create(&dir.path().join("pki"), 1, 1).unwrap();
    let issued = ca.issue_switch("sw1", "SIM-sw1", 1).unwrap();
    let tls = vipool::tls::ClientTls::from_pem(
        ca.cert_pem().as_bytes(),
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .unwrap();
    let options = ConnectOptions {
        handshake_timeout: Duration::from_millis(300),
        ..ConnectOptions::default()
    };
    let start = Instant::now();
    let e = Connection::connect_with(addr, Some(&tls), &options)
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(1),
        "{took:?}: {e}"
    );
    assert!(
        matches!(&e, ClientError::Tls(io) if io.kind() == std::io::ErrorKind::TimedOut),
        "{e:?}"
    );
    assert!(e.to_string().contains("no TLS handshake"), "{e}");
    assert_eq!(e.verdict(), Verdict::Transient);
    hold.abort();
}

#[tokio::test]
async fn a_server_that_appears_during_a_failover_is_reached_within_one_connect_timeout() {
    // The VIP's holder is dead (SYNs to it vanish) for 2.1 s, then the new
    // holder answers on the same address. With 1 s adverts the failover
    // takes about 3.6 s: the window is set to that. 2.1 s is just after
    // a kernel retransmission of the SYN (at 1 and 3 s, or every second
    // with tcp_syn_linear_timeouts): a switch that left the connect to the
    // kernel would wait about 0.9 s more.
    let (dead, held) = full_listener();
    let addr = dead.local_addr().unwrap().as_socket().unwrap();
    let mut config = SwitchConfig::new(addr.to_string(), "sw1");
    config.connect_timeout = Duration::from_millis(300);
    config.failover_window = Duration::from_secs(4);
    let shutdown = CancellationToken::new();
    let s = switch::spawn(config, None, shutdown.clone());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(!s.view.borrow().reached);
    // The takeover: the new holder serves on the same address. The same
    // listening socket, now accepted from, rather than a new one bound
    // after it closes: with tests running in parallel, its port (an
    // ephemeral one) may be taken by another test's connection meanwhile.
    drop(held);
    dead.set_nonblocking(true).unwrap();
    let applier = Arc::new(LocalApplier::new(LicenseTable::new(TableConfig::default())));
    let listener = tokio::net::TcpListener::from_std(std::net::TcpListener::from(dead)).unwrap();
    let up = Instant::now();
    let (_serving_tx, serving) = watch::channel(true);
    let server = Server::new(applier, ServerConfig::default(), serving, shutdown.clone());
    let task = tokio::spawn(async move { server.run(listener).await });
    let mut view = s.view.clone();
    tokio::time::timeout(Duration::from_secs(10), view.wait_for(|v| v.reached))
        .await
        .expect("never registered")
        .unwrap();
    let after = up.elapsed();
    eprintln!("registered {after:?} after the new holder listened");
    // At most one connect timeout (and a little work) after the takeover.
    assert!(after < Duration::from_millis(700), "{after:?}");
    shutdown.cancel();
    s.task.await.unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_node_that_does_not_serve_yet_is_waited_for_not_given_up() {
    // The new VIP holder before its raft leader is up: it answers "not
    // the license server" until it serves.
    let applier = Arc::new(LocalApplier::new(LicenseTable::new(TableConfig::default())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (serving_tx, serving) = watch::channel(false);
    let shutdown = CancellationToken::new();
    let server = Server::new(applier, ServerConfig::default(), serving, shutdown.clone());
    let task = tokio::spawn(async move { server.run(listener).await });
    let s = switch::spawn(SwitchConfig::new(addr.to_string(), "sw1"), None, shutdown.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    {
        let view = s.view.borrow();
        assert!(!view.reached && view.stopped.is_none(), "{view:?}");
        let last = view.last_error.as_deref().unwrap_or_default();
        assert!(last.contains("not the license server"), "{last}");
    }
    serving_tx.send(true).unwrap();
    let mut view = s.view.clone();
    tokio::time::timeout(Duration::from_secs(10), view.wait_for(|v| v.reached))
        .await
        .expect("never registered")
        .unwrap();
    shutdown.cancel();
    s.task.await.unwrap();
    task.await.unwrap().unwrap();
}

/// The VIP as the switches see it: a relay in front of `server`. The
/// first `dead` connections it accepted forward nothing any more, either
/// way: what the switch sends is read and dropped (the dead holder's
/// kernel acknowledged it before the power went), nothing comes back, and
/// nothing resets the connection. Later connections reach the server (the
/// next holder).
struct Relay {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    dead: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(server: SocketAddr, dead: usize) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let dead = Arc::new(AtomicUsize::new(dead));
        let (count, cut) = (accepted.clone(), dead.clone());
        let task = tokio::spawn(async move {
            while let Ok((switch, _)) = listener.accept().await {
                let index = count.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = tokio::net::TcpStream::connect(server).await else {
                    return;
                };
                let (from_switch, to_switch) = switch.into_split();
                let (from_server, to_server) = server.into_split();
                tokio::spawn(pump(from_switch, to_server, index, cut.clone()));
                tokio::spawn(pump(from_server, to_switch, index, cut.clone()));
            }
        });
        Relay {
            addr,
            accepted,
            dead,
            task,
        }
    }

    /// The holder loses power: every connection made so far goes dead.
    fn power_loss(&self) {
        self.dead
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    index: usize,
    dead: Arc<AtomicUsize>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if index < dead.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// An in-process standalone server that serves: its address and task.
async fn in_process_server(
    config: ServerConfig,
    serving: bool,
    shutdown: &CancellationToken,
) -> (
    SocketAddr,
    watch::Sender<bool>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let applier = Arc::new(LocalApplier::new(LicenseTable::new(TableConfig::default())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (serving_tx, serving) = watch::channel(serving);
    let server = Server::new(applier, config, serving, shutdown.clone());
    let task = tokio::spawn(async move { server.run(listener).await });
    (addr, serving_tx, task)
}

/// The next event that `pick` takes, within `limit`; the ones before it
/// are returned too.
async fn next_event(
    events: &mut mpsc::UnboundedReceiver<Event>,
    limit: Duration,
    pick: impl Fn(&Event) -> bool,
) -> (Event, Vec<Event>) {
    let mut before = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no such event within {limit:?}; saw {before:?}"))
            .expect("the switch is gone");
        if pick(&event) {
            return (event, before);
        }
        before.push(event);
    }
}

fn registered(e: &Event) -> bool {
    matches!(e, Event::Registered { .. })
}

const ANSWER_TIMEOUT: Duration = Duration::from_millis(500);

#[tokio::test]
async fn a_request_the_dead_holder_never_answers_is_sent_again_to_the_next_within_the_deadline() {
    let shutdown = CancellationToken::new();
    let (server, _serving, task) = in_process_server(ServerConfig::default(), true, &shutdown).await;
    let relay = Relay::start(server, 0).await;
    let mut config = SwitchConfig::new(relay.addr.to_string(), "sw1");
    // The heartbeat interval stays 30 s: without the deadline, that is
    // how long the switch would wait.
    config.answer_timeout = Some(ANSWER_TIMEOUT);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let s = switch::spawn(config, Some(events_tx), shutdown.clone());
    next_event(&mut events, Duration::from_secs(10), registered).await;
    // A session that worked (longer than the failover window), then the
    // holder loses power, and the switch sends an update.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    relay.power_loss();
    let sent = Instant::now();
    s.changes
        .send(Change::SetInUse(vipool::table::LicenseType::new("AP"), 4))
        .unwrap();
    let (_, before) = next_event(&mut events, Duration::from_secs(10), registered).await;
    let took = sent.elapsed();
    eprintln!("registered again {took:?} after the update was sent; {before:?}");
    assert!(
        matches!(&before[..], [Event::Disconnected { reason, .. }] if reason.contains("no answer")),
        "{before:?}"
    );
    // Given up after the deadline, not sooner; reconnected at once.
    assert!(took >= ANSWER_TIMEOUT, "{took:?}");
    assert!(took < ANSWER_TIMEOUT + Duration::from_millis(1500), "{took:?}");
    assert_eq!(relay.accepted(), 2);
    // The new connection answers: another update goes through at once,
    // and nothing drops it.
    let again = Instant::now();
    s.changes
        .send(Change::SetInUse(vipool::table::LicenseType::new("AP"), 5))
        .unwrap();
    tokio::time::sleep(ANSWER_TIMEOUT * 3).await;
    let view = s.view.borrow().clone();
    assert!(
        view.connected && view.server_up && view.last_error.is_none(),
        "{view:?}"
    );
    // The pool holds no AP licenses: each need is asked for and refused,
    // answers from the server on the new connection, and nothing else.
    let more: Vec<Event> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert!(
        matches!(
            &more[..],
            [Event::Refused { count: 4, .. }, Event::Refused { count: 5, .. }]
        ),
        "{more:?}"
    );
    assert_eq!(relay.accepted(), 2, "answered on the second connection");
    eprintln!("second update sent {:?} ago", again.elapsed());
    shutdown.cancel();
    s.task.await.unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_registration_a_server_reads_and_never_answers_moves_to_the_next_within_the_deadline() {
    let shutdown = CancellationToken::new();
    let (server, _serving, task) = in_process_server(ServerConfig::default(), true, &shutdown).await;
    // The first connection reaches a host that accepts and reads, and
    // never answers.
    let relay = Relay::start(server, 1).await;
    let mut config = SwitchConfig::new(relay.addr.to_string(), "sw1");
    config.answer_timeout = Some(ANSWER_TIMEOUT);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let start = Instant::now();
    let s = switch::spawn(config, Some(events_tx), shutdown.clone());
    let (_, before) = next_event(&mut events, Duration::from_secs(10), registered).await;
    let took = start.elapsed();
    eprintln!("registered {took:?} after starting; {before:?}");
    assert!(before.is_empty(), "{before:?}");
    assert!(took >= ANSWER_TIMEOUT, "{took:?}");
    assert!(took < ANSWER_TIMEOUT + Duration::from_millis(1500), "{took:?}");
    assert_eq!(relay.accepted(), 2);
    shutdown.cancel();
    s.task.await.unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_idle_connection_is_not_given_up_by_the_answer_deadline() {
    let shutdown = CancellationToken::new();
    let (server, _serving, task) = in_process_server(ServerConfig::default(), true, &shutdown).await;
    let relay = Relay::start(server, 0).await;
    let mut config = SwitchConfig::new(relay.addr.to_string(), "sw1");
    config.answer_timeout = Some(Duration::from_millis(200));
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let s = switch::spawn(config, Some(events_tx), shutdown.clone());
    next_event(&mut events, Duration::from_secs(10), registered).await;
    // Ten deadlines without a request (heartbeats every 30 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(events.try_recv().is_err(), "the idle connection was dropped");
    assert!(s.view.borrow().connected);
    assert_eq!(relay.accepted(), 1);
    shutdown.cancel();
    s.task.await.unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_request_held_while_leadership_arrives_is_not_cut_short_by_the_default_deadline() {
    // A node that holds the VIP (127.0.0.1 here) and expects to serve
    // soon holds license requests for up to HOLD_FOR_SERVING, then says
    // it is not the license server: the client must hear that answer.
    let shutdown = CancellationToken::new();
    let config = ServerConfig {
        vip: Some("127.0.0.1".parse().unwrap()),
        ..ServerConfig::default()
    };
    let applier = Arc::new(LocalApplier::new(LicenseTable::new(TableConfig::default())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_serving_tx, serving) = watch::channel(false);
    let (_soon_tx, soon) = watch::channel(true);
    let server = Server::new(applier, config, serving, shutdown.clone()).with_serving_soon(soon);
    let task = tokio::spawn(async move { server.run(listener).await });
    assert!(vipool::client::DEFAULT_ANSWER_TIMEOUT > vipool::server::HOLD_FOR_SERVING);
    let mut conn = Connection::connect_with(addr, None, &ConnectOptions::default())
        .await
        .unwrap();
    let start = Instant::now();
    let report = vipool::proto::SwitchReport::default();
    let e = conn.register("sw1", "SIM-sw1", "1", report).await.unwrap_err();
    let took = start.elapsed();
    assert!(took >= vipool::server::HOLD_FOR_SERVING, "{took:?}");
    assert!(
        matches!(
            e,
            ClientError::Server(vipool::proto::ServerError::NotLicenseServer { .. })
        ),
        "{e:?}"
    );
    drop(conn);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// A pair's PKI in memory: a server identity (member certificate) and a
/// switch's client end.
fn tls_pair() -> (tempfile::TempDir, vipool::tls::ServerTls, vipool::tls::ClientTls) {
    let dir = tempfile::tempdir().unwrap();
    let ca = vipool::pki::Ca::create(&dir.path().join("pki"), 1, 1).unwrap();
    let member = ca.issue_member("primary", 1).unwrap();
    let identity = cluster::tls::Identity::from_pem(
        ca.cert_pem().as_bytes(),
        member.cert_pem.as_bytes(),
        member.key_pem.as_bytes(),
    )
    .unwrap();
    let server = vipool::tls::ServerTls::new(&identity).unwrap();
    let switch = ca.issue_switch("sw1", "SIM-sw1", 1).unwrap();
    let client = vipool::tls::ClientTls::from_pem(
        ca.cert_pem().as_bytes(),
        switch.cert_pem.as_bytes(),
        switch.key_pem.as_bytes(),
    )
    .unwrap();
    (dir, server, client)
}

/// The holder's kernel took the connection and the ClientHello, and the
/// holder died (every byte on that connection vanishes from then on): a
/// second connection and handshake start after the hedge and win, long
/// before the handshake deadline. Without the hedge the same connect waits
/// out the whole deadline.
#[tokio::test]
async fn a_handshake_a_dead_holder_took_is_made_again_beside_it_after_the_hedge() {
    let (_dir, server_tls, tls) = tls_pair();
    let shutdown = CancellationToken::new();
    let config = ServerConfig {
        tls: Some(server_tls),
        ..ServerConfig::default()
    };
    let (server, _serving, task) = in_process_server(config, true, &shutdown).await;
    let hedge = Duration::from_millis(300);
    let deadline = Duration::from_secs(4);
    for hedged in [true, false] {
        // The first connection through the relay is dead from the start.
        let relay = Relay::start(server, 1).await;
        let options = ConnectOptions {
            handshake_timeout: deadline,
            handshake_hedge: hedged.then_some(hedge),
            ..ConnectOptions::default()
        };
        let start = Instant::now();
        let result = Connection::connect_with(relay.addr, Some(&tls), &options).await;
        let took = start.elapsed();
        if hedged {
            let mut conn = result.unwrap_or_else(|e| panic!("{e} after {took:?}"));
            assert!(took >= hedge && took < hedge + Duration::from_secs(1), "{took:?}");
            assert_eq!(relay.accepted(), 2, "one hedge, no more");
            // The winner is a working connection to the server: it answers
            // (a status is for the operator port).
            let e = conn.request(vipool::proto::Request::Status).await.unwrap_err();
            assert!(
                matches!(e, ClientError::Server(vipool::proto::ServerError::WrongPort(_))),
                "{e:?}"
            );
        } else {
            let e = result.unwrap_err();
            assert!(took >= deadline, "{took:?}: {e}");
            assert!(e.to_string().contains("no TLS handshake"), "{e}");
            assert_eq!(relay.accepted(), 1);
        }
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
