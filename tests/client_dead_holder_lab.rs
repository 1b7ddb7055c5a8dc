//! The client library against a VIP holder that loses power, in
//! namespaces (issue 12): bytes sent to a dead host are never acknowledged
//! by its TCP, while a live server's kernel acknowledges them at once, even
//! while the server holds the request. With `TCP_USER_TIMEOUT`
//! (`ConnectOptions::ack_timeout`) a client learns within that bound that
//! its request went to a dead host; a live server that holds a request
//! longer is still waited for.
//!
//! Lab: a server host and a switch host on the namespaced bridge; the
//! power loss cuts the server's bridge port with the connection up.
//!
//! A holder that froze after its kernel acknowledged everything the switch
//! sent (a registration, a ClientHello) leaves nothing unacknowledged for
//! the ack timeout to catch: the switch probes a server that stays silent
//! (`ConnectOptions::probe_after`), and the ack timeout ends the
//! connection when the probe goes unacknowledged. Those labs run the
//! servers as `vipool serve` processes (a frozen process, not a test
//! thread) and move the VIP to a second host, as a takeover would.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{in_netns, lab_available, runtime, Host, Lab};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vipool::client::{
    ClientError, ConnectOptions, Connection, DEFAULT_ACK_TIMEOUT, DEFAULT_ANSWER_TIMEOUT, DEFAULT_PROBE_AFTER,
};
use vipool::proto::{ServerError, SwitchReport};
use vipool::server::{LocalApplier, Server, ServerConfig, HOLD_FOR_SERVING};
use vipool::switch::{self, Event, SwitchConfig};
use vipool::table::{LicenseTable, TableConfig};

const PORT: u16 = 4333;
/// Process scheduling and the kernel's timer granularity.
const MARGIN: Duration = Duration::from_millis(500);
/// Past the ack timeout, for the kernel's timer and waking the test's
/// thread: well under TCP's minimum retransmission timeout (200 ms), by
/// which a user timeout counted from the first retransmission comes late.
const ACK_MARGIN: Duration = Duration::from_millis(150);
const START: Duration = Duration::from_secs(10);

/// A plain-TCP license server on `host`, serving (or, with `serving`
/// false, holding every request up to [`HOLD_FOR_SERVING`] as a new VIP
/// holder does while its leadership arrives) until `stop`.
fn server(host: &Host, serving: bool, stop: CancellationToken) -> std::thread::JoinHandle<()> {
    let addr = SocketAddr::from((host.addr, PORT));
    in_netns(host, move || {
        runtime().block_on(async move {
            let applier = Arc::new(LocalApplier::new(LicenseTable::new(TableConfig::default())));
            let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
            let (_serving_tx, serving) = watch::channel(serving);
            let (_soon_tx, soon) = watch::channel(true);
            // The host's own address stands for the VIP: a holder holds
            // only requests to the VIP.
            let config = ServerConfig {
                vip: Some(addr.ip()),
                ..ServerConfig::default()
            };
            let server = Server::new(applier, config, serving, stop).with_serving_soon(soon);
            server.run(listener).await.expect("server");
        })
    })
}

/// What one request on a registered connection came to, and how long it took.
type Outcome = (Result<(), ClientError>, Duration);

/// Connects from `host` to `to` with `options`, registers (unless the
/// server only holds requests), says so on `ready`, waits for `go`, then
/// sends one heartbeat and returns what came of it.
fn client(
    host: &Host,
    to: SocketAddr,
    options: ConnectOptions,
    register_first: bool,
    ready: mpsc::Sender<()>,
    go: mpsc::Receiver<()>,
) -> std::thread::JoinHandle<Outcome> {
    in_netns(host, move || {
        runtime().block_on(async move {
            let mut conn = Connection::connect_with(to, None, &options)
                .await
                .expect("connect");
            if register_first {
                conn.register("sw1", "SIM-sw1", "1", SwitchReport::default())
                    .await
                    .expect("register");
            }
            ready.send(()).unwrap();
            tokio::task::spawn_blocking(move || go.recv())
                .await
                .unwrap()
                .expect("go");
            let began = Instant::now();
            let result = conn.heartbeat("sw1", SwitchReport::default()).await.map(|_| ());
            (result, began.elapsed())
        })
    })
}

#[test]
fn a_request_to_a_holder_that_lost_power_fails_within_the_ack_timeout() {
    if !lab_available("a_request_to_a_holder_that_lost_power_fails_within_the_ack_timeout") {
        return;
    }
    let lab = Lab::new(2);
    let (holder, switch_host) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    let stop = CancellationToken::new();
    let serve = server(&holder, true, stop.clone());
    let (ready_tx, ready) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let options = ConnectOptions {
        // Only the ack timeout can end the request this soon.
        answer_timeout: Some(Duration::from_secs(10)),
        ..ConnectOptions::default()
    };
    assert_eq!(options.ack_timeout, Some(DEFAULT_ACK_TIMEOUT));
    let to = SocketAddr::from((holder.addr, PORT));
    let switch = connect_when_up(&switch_host, to, options, true, ready_tx, go_rx);
    ready.recv_timeout(START).expect("registered");
    // The power goes: the link is cut with the connection up.
    lab.set_port(&holder, false);
    go.send(()).unwrap();
    let (result, took) = switch.join().unwrap();
    let e = result.expect_err("a heartbeat to a dead host cannot be answered");
    let ClientError::Io(io) = &e else {
        panic!("{e:?}: not the kernel's timeout")
    };
    assert_eq!(io.raw_os_error(), Some(libc::ETIMEDOUT), "{e}");
    // The kernel's timers end it; the margin is for waking this thread.
    // Linux counts TCP_USER_TIMEOUT from its first retransmission: set to
    // the ack timeout itself, this ended 518 ms after the heartbeat.
    assert!(
        took >= DEFAULT_ACK_TIMEOUT && took < DEFAULT_ACK_TIMEOUT + ACK_MARGIN,
        "given up after {took:?}, for an ack timeout of {DEFAULT_ACK_TIMEOUT:?}"
    );
    stop.cancel();
    lab.set_port(&holder, true);
    serve.join().unwrap();
}

#[test]
fn a_live_server_that_holds_a_request_is_waited_for() {
    if !lab_available("a_live_server_that_holds_a_request_is_waited_for") {
        return;
    }
    let lab = Lab::new(2);
    let (holder, switch_host) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    let stop = CancellationToken::new();
    // A new VIP holder whose leadership has not come: it holds the
    // request for a second, far beyond the ack timeout, then refuses it.
    let serve = server(&holder, false, stop.clone());
    let (ready_tx, ready) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let options = ConnectOptions::default();
    assert!(options.ack_timeout.is_some_and(|t| t < HOLD_FOR_SERVING));
    let to = SocketAddr::from((holder.addr, PORT));
    let switch = connect_when_up(&switch_host, to, options, false, ready_tx, go_rx);
    ready.recv_timeout(START).expect("connected");
    go.send(()).unwrap();
    let (result, took) = switch.join().unwrap();
    assert!(
        matches!(
            result,
            Err(ClientError::Server(ServerError::NotLicenseServer { .. }))
        ),
        "{result:?} after {took:?}: the connection must survive the hold"
    );
    assert!(took >= HOLD_FOR_SERVING, "{took:?}");
    stop.cancel();
    serve.join().unwrap();
}

#[test]
fn a_switch_whose_holder_lost_power_reconnects_within_the_ack_timeout() {
    if !lab_available("a_switch_whose_holder_lost_power_reconnects_within_the_ack_timeout") {
        return;
    }
    let lab = Lab::new(2);
    let (holder, switch_host) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    let stop = CancellationToken::new();
    let serve = server(&holder, true, stop.clone());
    let to = SocketAddr::from((holder.addr, PORT));
    let (events_tx, events) = mpsc::channel();
    let done = CancellationToken::new();
    let switch_done = done.clone();
    // Heartbeats every second, so that one is in flight soon after the
    // cut (and the switch's own per-request deadline, the heartbeat
    // interval, stays out of the way).
    let heartbeat = Duration::from_secs(1);
    let switch = in_netns(&switch_host, move || {
        runtime().block_on(async move {
            let mut config = SwitchConfig::new(to.to_string(), "sw1");
            config.heartbeat_interval = heartbeat;
            config.answer_timeout = Some(Duration::from_secs(10));
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let s = switch::spawn(config, Some(tx), switch_done.clone());
            while let Some(event) = tokio::select! {
                e = rx.recv() => e,
                () = switch_done.cancelled() => None,
            } {
                let _ = events_tx.send((Instant::now(), event));
            }
            s.task.await.unwrap();
        })
    });
    loop {
        let (_, event) = events.recv_timeout(START).expect("registered");
        if matches!(event, Event::Registered { .. }) {
            break;
        }
    }
    let cut = Instant::now();
    lab.set_port(&holder, false);
    // The next heartbeat goes to a dead host; the switch gives the
    // connection up once the kernel ends it.
    let bound = heartbeat + DEFAULT_ACK_TIMEOUT + MARGIN;
    let lost = loop {
        let (at, event) = events
            .recv_timeout(bound)
            .unwrap_or_else(|_| panic!("the switch did not give the connection up within {bound:?}"));
        if let Event::Disconnected { reason, .. } = event {
            break (at, reason);
        }
    };
    assert!(lost.0 - cut < bound, "{:?}: {}", lost.0 - cut, lost.1);
    assert!(lost.1.contains("timed out"), "{}", lost.1);
    // The host comes back (as the next holder would take the address):
    // the switch, trying again at once, registers within its first retry
    // delay (backoff_min) and a connect stagger.
    lab.set_port(&holder, true);
    let back = Instant::now();
    let config = SwitchConfig::new(to.to_string(), "sw1");
    let bound = config.backoff_min + config.connect_stagger.unwrap_or_default() + MARGIN;
    loop {
        let (at, event) = events
            .recv_timeout(bound)
            .unwrap_or_else(|_| panic!("the switch did not register again within {bound:?}"));
        if matches!(event, Event::Registered { .. }) {
            assert!(at - back < bound, "{:?}", at - back);
            break;
        }
    }
    done.cancel();
    stop.cancel();
    switch.join().unwrap();
    serve.join().unwrap();
}

/// [`client`], retried until the server listens (it starts in its own thread).
fn connect_when_up(
    host: &Host,
    to: SocketAddr,
    options: ConnectOptions,
    register_first: bool,
    ready: mpsc::Sender<()>,
    go: mpsc::Receiver<()>,
) -> std::thread::JoinHandle<Outcome> {
    let probe = host.clone();
    assert!(
        common::wait_for(START, || {
            in_netns(&probe, move || {
                std::net::TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_ok()
            })
            .join()
            .unwrap()
        }),
        "the server never listened on {to}"
    );
    client(host, to, options, register_first, ready, go)
}

/// The VIP of the freeze labs: beside the holder's own address, then the
/// address of the host that takes over.
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

/// A Master_Down_Interval with 100 ms adverts: when the takeover comes.
const TAKEOVER: Duration = Duration::from_millis(360);

/// `vipool serve` on `host`, listening on the VIP (over TLS with member
/// `name`'s certificate of the lab's CA, or plain TCP), adopted by the lab.
fn serve_process(lab: &mut Lab, host: &Host, name: &str, tls: bool) -> i32 {
    let listen = format!("{VIP}:{PORT}");
    let mut cmd = host.command(&common::vipool_bin());
    cmd.args([
        "serve",
        "--listen",
        &listen,
        "--operator-listen",
        "127.0.0.1:4334",
        "--node",
        name,
    ]);
    if tls {
        lab.tls_section(name);
        let pki = lab.dir().join("pki");
        cmd.arg("--ca").arg(pki.join(vipool::pki::CA_CERT));
        cmd.arg("--cert").arg(pki.join(format!("{name}.crt")));
    } else {
        cmd.arg("--insecure-plaintext");
    }
    let child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vipool serve");
    let pid = child.id() as i32;
    lab.adopt(child);
    // Checked from inside its own namespace: its port may be cut.
    let to = SocketAddr::from((VIP, PORT));
    let probe = host.clone();
    assert!(
        common::wait_for(START, || {
            in_netns(&probe, move || {
                std::net::TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_ok()
            })
            .join()
            .unwrap()
        }),
        "vipool serve never listened on {to}"
    );
    pid
}

/// Bytes the kernel of `host` acknowledged on connections to the VIP's
/// client port that no process has read (the receive queues).
fn unread_bytes(host: &Host) -> u64 {
    let sport = format!("( sport = :{PORT} )");
    host.run(&["ss", "-Htn", "state", "established", &sport])
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A switch starts while the VIP holder is frozen (its process stopped,
/// its kernel still up): the kernel accepts the connection and
/// acknowledges what the switch sends first (over TLS its ClientHello,
/// over plain TCP its registration), which nobody will answer. Then the
/// holder's link goes (the power loss), and a Master_Down_Interval later
/// another host takes the VIP. The switch must register there well before
/// the answer deadline (1.5 s) and the handshake deadline (5 s): within a
/// probe interval, the ack timeout and the takeover.
fn a_fresh_switch_leaves_a_frozen_holder(test: &str, tls: bool) {
    if !lab_available(test) {
        return;
    }
    let mut lab = Lab::new(2);
    let (holder, switch_host) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    holder.run(&["ip", "addr", "add", &format!("{VIP}/24"), "dev", "eth0"]);
    let frozen = serve_process(&mut lab, &holder, "primary", tls);
    // The next holder, off the link until it takes the VIP.
    let next = lab.add_host(VIP);
    lab.set_port(&next, false);
    serve_process(&mut lab, &next, "backup", tls);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(frozen), nix::sys::signal::SIGSTOP).expect("SIGSTOP");

    let (events_tx, events) = mpsc::channel();
    let done = CancellationToken::new();
    let switch_done = done.clone();
    let tls_config = tls.then(|| common::switch_tls(&switch_host, "sw1", "SIM-sw1"));
    let switch = in_netns(&switch_host, move || {
        runtime().block_on(async move {
            let mut config = SwitchConfig::new(format!("{VIP}:{PORT}"), "sw1");
            config.tls = tls_config;
            assert_eq!(config.probe_after, Some(DEFAULT_PROBE_AFTER));
            assert_eq!(config.answer_timeout, Some(DEFAULT_ANSWER_TIMEOUT));
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let s = switch::spawn(config, Some(tx), switch_done.clone());
            while let Some(event) = tokio::select! {
                e = rx.recv() => e,
                () = switch_done.cancelled() => None,
            } {
                let _ = events_tx.send((Instant::now(), event));
            }
            s.task.await.unwrap();
        })
    });
    assert!(
        common::wait_for(START, || unread_bytes(&holder) > 0),
        "the frozen holder's kernel never acknowledged the switch's first bytes"
    );
    let cut = Instant::now();
    lab.set_port(&holder, false);
    std::thread::sleep(TAKEOVER.saturating_sub(cut.elapsed()));
    // The takeover: the next holder's link, and its gratuitous ARP.
    lab.set_port(&next, true);
    gratuitous_arp(&switch_host, &next);
    // The probe goes at DEFAULT_PROBE_AFTER and the kernel ends the
    // connection an ack timeout later; the takeover came before that. With
    // TCP_USER_TIMEOUT counted from the first retransmission (the ack
    // timeout itself set as the user timeout) this took over 600 ms.
    let bound = TAKEOVER.max(DEFAULT_PROBE_AFTER + DEFAULT_ACK_TIMEOUT) + ACK_MARGIN;
    assert!(bound < DEFAULT_ANSWER_TIMEOUT);
    let registered = loop {
        let (at, event) = events
            .recv_timeout(START)
            .expect("the switch never registered with the next holder");
        if matches!(event, Event::Registered { .. }) {
            break at;
        }
    };
    let took = registered - cut;
    eprintln!("registered with the next holder {took:?} after the power loss");
    assert!(
        took < bound,
        "registered with the next holder {took:?} after the power loss (probe {DEFAULT_PROBE_AFTER:?}, \
         ack timeout {DEFAULT_ACK_TIMEOUT:?}, takeover after {TAKEOVER:?})"
    );
    done.cancel();
    switch.join().unwrap();
}

/// What the next holder's gratuitous ARP does on the switch's host: its
/// neighbour entry for the VIP names the next holder's MAC.
fn gratuitous_arp(switch_host: &Host, next: &Host) {
    let mac = next.mac();
    switch_host.run(&[
        "ip",
        "neigh",
        "replace",
        &VIP.to_string(),
        "lladdr",
        &mac,
        "dev",
        "eth0",
        "nud",
        "reachable",
    ]);
}

#[test]
fn a_fresh_switch_whose_registration_a_frozen_holder_acknowledged_registers_with_the_next() {
    a_fresh_switch_leaves_a_frozen_holder(
        "a_fresh_switch_whose_registration_a_frozen_holder_acknowledged_registers_with_the_next",
        false,
    );
}

#[test]
fn a_fresh_switch_whose_client_hello_a_frozen_holder_acknowledged_registers_with_the_next() {
    a_fresh_switch_leaves_a_frozen_holder(
        "a_fresh_switch_whose_client_hello_a_frozen_holder_acknowledged_registers_with_the_next",
        true,
    );
}
