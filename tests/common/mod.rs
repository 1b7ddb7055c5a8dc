//! A namespaced lab: hosts on one broadcast domain, built with `ip netns`,
//! veth pairs and a Linux bridge that lives in a "switch" namespace of its
//! own (never in the root namespace, whose firewall may drop bridged frames).
//!
//! Everything a [`Lab`] creates is removed when it is dropped, also when the
//! test panics. Names are unique per process and lab, so tests run in parallel.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod pair;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// Whether this environment can build labs. Without root or `ip`, a test
/// skips with a printed reason, except under `CI=true`, where it fails.
pub fn lab_available(test: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    let ip = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing = match (root, ip) {
        (true, true) => return true,
        (false, _) => "root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)",
        (true, false) => "the `ip` command (Debian package iproute2)",
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: CI=true but this run lacks {missing}");
    }
    eprintln!("SKIP {test}: needs {missing}");
    false
}

/// Whether `program` runs; skip rules as [`lab_available`].
pub fn tool_available(test: &str, program: &str, package: &str) -> bool {
    if Command::new(program).arg("--version").output().is_ok() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: CI=true but `{program}` (Debian package {package}) is missing");
    }
    eprintln!("SKIP {test}: needs `{program}` (Debian package {package})");
    false
}

/// Runs a command, panicking with its output on failure.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One host: a namespace with `eth0` on the lab's bridge.
#[derive(Debug, Clone)]
pub struct Host {
    /// Namespace name.
    pub ns: String,
    /// Its address on eth0 (/24).
    pub addr: Ipv4Addr,
    /// Bridge port name in the switch namespace.
    pub port: String,
}

impl Host {
    /// `ip netns exec NS args...` as a command to spawn.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, program]);
        cmd
    }

    /// Runs a command in the namespace and returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.ns];
        all.extend_from_slice(args);
        sh(&all)
    }

    /// Whether `addr` is configured on this host's eth0.
    pub fn has_addr(&self, addr: Ipv4Addr) -> bool {
        let out = sh(&["ip", "-n", &self.ns, "-4", "-o", "addr", "show", "dev", "eth0"]);
        out.split_whitespace()
            .any(|w| w.split('/').next() == Some(&addr.to_string()))
    }

    /// Whether `addr` is configured on any interface of this host.
    pub fn has_addr_anywhere(&self, addr: Ipv4Addr) -> bool {
        let out = sh(&["ip", "-n", &self.ns, "-4", "-o", "addr", "show"]);
        out.split_whitespace()
            .any(|w| w.split('/').next() == Some(&addr.to_string()))
    }

    /// eth0's MAC address.
    pub fn mac(&self) -> String {
        let out = sh(&["ip", "-n", &self.ns, "-o", "link", "show", "dev", "eth0"]);
        let mut words = out.split_whitespace();
        words.find(|w| *w == "link/ether");
        words.next().expect("eth0 has a MAC").to_string()
    }

    /// The MAC this host's neighbour table holds for `addr`, if any.
    pub fn neighbour_mac(&self, addr: Ipv4Addr) -> Option<String> {
        let out = sh(&["ip", "-n", &self.ns, "neigh", "show", &addr.to_string()]);
        let mut words = out.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_string)
    }
}

/// Watches a host for an address being added (`ip -4 monitor address`),
/// from the moment it is made: [`VipWatch::added`] gives the instant the
/// address was seen. Dropping the watch kills and reaps the monitor, so
/// none is left behind when a bench fails on the way.
#[derive(Debug)]
pub struct VipWatch {
    added: mpsc::Receiver<Instant>,
    monitor: Child,
}

impl VipWatch {
    /// Watches `host` for `addr`.
    pub fn new(host: &Host, addr: Ipv4Addr) -> VipWatch {
        let mut monitor = host
            .command("ip")
            .args(["-4", "monitor", "address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip monitor");
        let out = monitor.stdout.take().expect("piped");
        let (tx, added) = mpsc::channel();
        let needle = format!("inet {addr}/");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains(&needle) && !line.starts_with("Deleted") {
                    let _ = tx.send(Instant::now());
                    return;
                }
            }
        });
        // `ip monitor` says nothing once it has subscribed.
        std::thread::sleep(Duration::from_millis(50));
        VipWatch { added, monitor }
    }

    /// When the address was added, waiting up to `timeout` for it; the
    /// monitor is stopped either way.
    pub fn added(self, timeout: Duration) -> Option<Instant> {
        self.added.recv_timeout(timeout).ok()
    }
}

impl Drop for VipWatch {
    fn drop(&mut self) {
        let _ = self.monitor.kill();
        let _ = self.monitor.wait();
    }
}

/// A broadcast domain of hosts. Dropping it removes every namespace.
#[derive(Debug)]
pub struct Lab {
    /// Prefix of every name this lab made.
    pub prefix: String,
    /// The switch namespace holding bridge `br0`.
    pub switch: String,
    /// Hosts, in creation order; host `i` has address 192.0.2.(i+1).
    pub hosts: Vec<Host>,
    children: Vec<Arc<Mutex<Child>>>,
}

impl Lab {
    /// Builds a bridge and `n` hosts with 192.0.2.1, .2, ... on eth0.
    pub fn new(n: usize) -> Lab {
        let seq = LAB_SEQ.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("vp{}x{}", std::process::id() % 1_000_000, seq);
        let switch = format!("{prefix}sw");
        let mut lab = Lab {
            prefix: prefix.clone(),
            switch: switch.clone(),
            hosts: Vec::new(),
            children: Vec::new(),
        };
        sh(&["ip", "netns", "add", &switch]);
        sh(&["ip", "-n", &switch, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            &switch,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        sh(&["ip", "-n", &switch, "link", "set", "br0", "up"]);
        for i in 0..n {
            lab.add_host(Ipv4Addr::new(192, 0, 2, (i + 1) as u8));
        }
        lab
    }

    /// Adds one more host with `addr`/24 on eth0.
    pub fn add_host(&mut self, addr: Ipv4Addr) -> Host {
        let i = self.hosts.len();
        let ns = format!("{}h{i}", self.prefix);
        let port = format!("p{i}");
        sh(&["ip", "netns", "add", &ns]);
        // Both ends are created inside our namespaces: nothing touches the
        // root namespace, not even briefly.
        sh(&[
            "ip",
            "-n",
            &self.switch,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns,
        ]);
        sh(&[
            "ip",
            "-n",
            &self.switch,
            "link",
            "set",
            &port,
            "master",
            "br0",
            "up",
        ]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        let host = Host { ns, addr, port };
        self.hosts.push(host.clone());
        host
    }

    /// Takes the host's bridge port down (cuts it off the link) or up.
    pub fn set_port(&self, host: &Host, up: bool) {
        sh(&[
            "ip",
            "-n",
            &self.switch,
            "link",
            "set",
            &host.port,
            if up { "up" } else { "down" },
        ]);
    }

    /// A power loss of `host`: its link is cut first (at a power loss its
    /// kernel dies with its processes: from that instant nothing is
    /// acknowledged, and nothing it sends leaves), then every process in
    /// its namespace but ours is frozen (so that none leaves gracefully)
    /// and killed. Returns the instant of the failure, taken before the
    /// cut.
    ///
    /// The cut comes first since the `ip` call that makes it takes a few
    /// milliseconds: when the processes were frozen first, the host's
    /// kernel, still on the segment meanwhile, acknowledged a switch's
    /// request sent in those milliseconds, so the switch's unacknowledged
    /// bytes timeout (`TCP_USER_TIMEOUT`) could not tell it the holder was
    /// gone, and it waited for its probe as well (100 ms more): a
    /// failure no real power loss makes. Frozen processes behind a cut
    /// link see no one leave either; a few milliseconds of running behind
    /// it send nothing anyone receives.
    pub fn power_loss(&self, host: &Host) -> Instant {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let me = std::process::id().to_string();
        let victims: Vec<i32> = sh(&["ip", "netns", "pids", &host.ns])
            .split_whitespace()
            .filter(|p| *p != me)
            .filter_map(|p| p.parse().ok())
            .collect();
        let t0 = Instant::now();
        self.set_port(host, false);
        for pid in &victims {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGSTOP);
        }
        for pid in &victims {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        t0
    }

    /// After [`Lab::power_loss`]: the virtual-MAC link of VRID `vrid` the
    /// dead node left is removed, and the host's link is up again.
    pub fn power_back(&self, host: &Host, vrid: u8) {
        let link = format!("vrrp.{vrid}");
        let _ = Command::new("ip")
            .args(["-n", &host.ns, "link", "del", &link])
            .stderr(Stdio::null())
            .status();
        self.set_port(host, true);
    }

    /// Copies the lab's logs and configurations (which go with its
    /// directory) to `<tmp>/<bench>-logs-<prefix>` for a post-mortem;
    /// returns where.
    pub fn keep_logs(&self, bench: &str) -> String {
        let to = std::env::temp_dir().join(format!("{bench}-logs-{}", self.prefix));
        let _ = std::fs::create_dir_all(&to);
        if let Ok(dir) = std::fs::read_dir(self.dir()) {
            for entry in dir.flatten() {
                let name = entry.file_name();
                let name_str = name.to_string_lossy();
                if name_str.ends_with(".log") || name_str.ends_with(".toml") {
                    let _ = std::fs::copy(entry.path(), to.join(&name));
                }
            }
        }
        to.display().to_string()
    }

    /// Keeps a spawned child so that it is killed when the lab is dropped.
    pub fn adopt(&mut self, child: Child) -> Arc<Mutex<Child>> {
        let child = Arc::new(Mutex::new(child));
        self.children.push(child.clone());
        child
    }

    /// A scratch directory for this lab, removed with it.
    pub fn dir(&self) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(&self.prefix);
        std::fs::create_dir_all(&dir).expect("lab scratch dir");
        dir
    }

    /// The lab's PKI directory (its CA made on first use): what simulated
    /// switches get their certificates from (`vipool client --pki DIR`).
    pub fn pki_dir(&self) -> String {
        let pki = self.dir().join("pki");
        lab_ca(&pki);
        pki.to_string_lossy().into_owned()
    }

    /// The `[tls]` section of member `name`: the lab's own CA (made on
    /// first use in the lab's directory) and a certificate naming `name`,
    /// made as `vipool pki` makes them.
    pub fn tls_section(&self, name: &str) -> String {
        let pki = self.dir().join("pki");
        let ca = lab_ca(&pki);
        let (cert, key) = (pki.join(format!("{name}.crt")), pki.join(format!("{name}.key")));
        if !cert.exists() {
            let issued = if name == "witness" {
                ca.issue_witness(name, 365)
            } else {
                ca.issue_member(name, 365)
            };
            issued
                .expect("issue member")
                .write(&pki, name)
                .expect("write member files");
        }
        format!(
            "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            pki.join(vipool::pki::CA_CERT).display(),
            cert.display(),
            key.display()
        )
    }

    /// What server `name` needs of the lab's licensing: the `serial` line
    /// of its `[node]` section, and the `[license]` lines that trust the
    /// lab's issuer ([`lab_issuer`]) and install a key file of `ap` AP
    /// licenses bound to that serial (key id `NAME-AP`), with per-source
    /// limits raised for the many switches a lab runs from one host.
    pub fn server_license(&self, name: &str, ap: u32) -> ServerLicense {
        self.server_license_with(name, ap, (20_000, 20_000))
    }

    /// As [`Lab::server_license`], with `license.max_clients_per_source`
    /// and `license.registrations_per_s_per_source` set to `limits`; the
    /// per-client request rate is raised with the latter when that is above
    /// the default (benchmarks' switches send as fast as they are answered).
    pub fn server_license_with(&self, name: &str, ap: u32, limits: (u32, u32)) -> ServerLicense {
        let dir = self.dir().join("license");
        std::fs::create_dir_all(&dir).expect("lab license dir");
        let issuer = lab_issuer();
        let issuers = dir.join("lab.pub");
        std::fs::write(&issuers, format!("{}\n", issuer.trusted())).expect("write lab.pub");
        let serial = format!("SN-{name}");
        let keys = dir.join(format!("{name}.keys"));
        let key = lab_key(&format!("{name}-AP"), &serial, "AP", ap);
        std::fs::write(&keys, format!("# {name}\n{key}\n")).expect("write key file");
        ServerLicense {
            serial: format!("serial = \"{serial}\""),
            lines: format!(
                "issuers = [\"{}\"]\nkey_files = [\"{}\"]\nmax_clients_per_source = {}\n\
                 registrations_per_s_per_source = {}\nrequests_per_s_per_client = {}",
                issuers.display(),
                keys.display(),
                limits.0,
                limits.1,
                limits
                    .1
                    .max(vipool::server::request::DEFAULT_REQUESTS_PER_S_PER_CLIENT)
            ),
        }
    }

    /// Starts keepalived (VRRP only, foreground, logging to stderr) on
    /// `host` with the configuration text `conf`.
    pub fn keepalived(&mut self, host: &Host, name: &str, conf: &str) -> Arc<Mutex<Child>> {
        let dir = self.dir();
        let path = |ext: &str| dir.join(format!("{name}.{ext}")).to_string_lossy().into_owned();
        std::fs::write(path("conf"), conf).expect("write keepalived.conf");
        let child = host
            .command("keepalived")
            .args([
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--no-syslog",
                "--vrrp",
            ])
            .args(["-f", &path("conf"), "-p", &path("pid"), "-r", &path("vrrp.pid")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn keepalived");
        self.adopt(child)
    }

    /// Starts `vipool vrrp --json ...args` on `host`, with `--interface eth0`.
    pub fn vipool_vrrp(&mut self, host: &Host, args: &[&str]) -> Speaker {
        let mut cmd = host.command(&vipool_bin());
        cmd.args(["vrrp", "--json", "--interface", "eth0"]).args(args);
        cmd.env("RUST_LOG", "info");
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn vipool vrrp");
        Speaker::new(self.adopt(child), host.clone())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &self.children {
            if let Ok(mut c) = child.lock() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for host in &self.hosts {
            // Anything still running in the namespace (a daemon's forked
            // children, say) would outlive it: end it first.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &host.ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &host.ns]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.switch]).status();
        let _ = std::fs::remove_dir_all(self.dir());
    }
}

/// One JSON event line and when the test read it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The parsed line.
    pub value: Value,
    /// When the reader thread got it.
    pub at: Instant,
}

/// A `vipool vrrp --json` process and the events it printed.
#[derive(Debug, Clone)]
pub struct Speaker {
    child: Arc<Mutex<Child>>,
    /// The host it runs on.
    pub host: Host,
    events: Arc<Mutex<Vec<Seen>>>,
    pid: i32,
}

impl Speaker {
    fn new(child: Arc<Mutex<Child>>, host: Host) -> Speaker {
        let (stdout, pid) = {
            let mut c = child.lock().unwrap();
            (c.stdout.take().expect("stdout piped"), c.id() as i32)
        };
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
                sink.lock().unwrap().push(Seen {
                    value,
                    at: Instant::now(),
                });
            }
        });
        Speaker {
            child,
            host,
            events,
            pid,
        }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Seen> {
        self.events.lock().unwrap().clone()
    }

    /// The `to` states of every state event so far.
    pub fn states(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| e.value["event"] == "state")
            .map(|e| e.value["to"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The latest state reported, "Initialize" before any.
    pub fn state(&self) -> String {
        self.states().pop().unwrap_or_else(|| "Initialize".into())
    }

    /// Waits until the latest state is `state`.
    pub fn wait_state(&self, state: &str, timeout: Duration) -> bool {
        wait_for(timeout, || self.state() == state)
    }

    /// Sends a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), sig).expect("signal");
    }

    /// Asks for a status event (SIGUSR1) and returns it.
    pub fn status(&self) -> Value {
        let before = self.events().len();
        self.signal(nix::sys::signal::Signal::SIGUSR1);
        let mut found = None;
        wait_for(Duration::from_secs(5), || {
            found = self.events()[before..]
                .iter()
                .find(|e| e.value["event"] == "status")
                .map(|e| e.value["status"].clone());
            found.is_some()
        });
        found.expect("status event after SIGUSR1")
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.lock().unwrap().try_wait().expect("try_wait") {
                // Let the reader thread catch the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The counters of the `exit` event.
    pub fn exit_counters(&self) -> Option<Value> {
        self.events()
            .iter()
            .find(|e| e.value["event"] == "exit")
            .map(|e| e.value["counters"].clone())
    }
}

/// The `vipool` binary: cargo tells integration tests where it is; an
/// example (the benchmarks) finds it beside its own directory.
pub fn vipool_bin() -> String {
    if let Some(path) = option_env!("CARGO_BIN_EXE_vipool") {
        return path.to_string();
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("vipool");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release` first",
        bin.display()
    );
    bin.to_string_lossy().into_owned()
}

/// `vipool init --config FILE`: creates a member's raft log (bootstrapped
/// with every configured member as a voter) before its first start, as an
/// operator does once for a brand-new pair.
pub fn init_member(config: &str) {
    sh(&[&vipool_bin(), "--log", "warn", "init", "--config", config]);
}

/// Polls `cond` every 5 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A drop counter out of a status or exit `counters` object.
pub fn drops(counters: &Value, reason: &str) -> u64 {
    counters["drops"][reason].as_u64().unwrap_or(0)
}

/// Sends complete IPv4 datagrams (header included, so TTL and source are
/// ours to choose) out of `host`'s eth0 to `dst`, from a thread that joins
/// the host's network namespace.
pub fn inject(host: &Host, dst: Ipv4Addr, datagrams: Vec<Vec<u8>>) {
    let ns = host.ns.clone();
    std::thread::spawn(move || {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let file = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("open netns");
        // A thread's network namespace is its own: this does not move the
        // rest of the test process.
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112))).expect("raw socket");
        socket.set_header_included_v4(true).expect("IP_HDRINCL");
        socket.bind_device(Some(b"eth0")).expect("SO_BINDTODEVICE");
        let addr = SockAddr::from(std::net::SocketAddrV4::new(dst, 0));
        for d in datagrams {
            socket.send_to(&d, &addr).expect("send injected datagram");
        }
    })
    .join()
    .expect("injector thread");
}

impl Lab {
    /// Starts `vipool ARGS...` on `host` with stdout piped (JSON lines, if
    /// the command prints any) and stderr inherited, adopted by the lab.
    pub fn vipool(&mut self, host: &Host, args: &[&str]) -> Speaker {
        let mut cmd = host.command(&vipool_bin());
        cmd.args(args);
        cmd.env("RUST_LOG", node_log_filter());
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn vipool");
        Speaker::new(self.adopt(child), host.clone())
    }
}

/// The log filter of the `vipool` processes a lab starts:
/// `VIPOOL_LAB_LOG` when set (to debug a test), else state changes and
/// refusals (info for vipool and cluster, warnings for the rest).
pub fn node_log_filter() -> String {
    std::env::var("VIPOOL_LAB_LOG").unwrap_or_else(|_| "warn,vipool=info,cluster=info".into())
}

/// Runs `f` on a new thread inside `host`'s network namespace (only that
/// thread moves) and returns its handle.
pub fn in_netns<T: Send + 'static>(
    host: &Host,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = host.ns.clone();
    std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

impl Lab {
    /// As [`Lab::vipool`], with stderr (the log) written to `log` instead.
    pub fn vipool_logged(&mut self, host: &Host, args: &[&str], log: &std::path::Path) -> Speaker {
        let file = std::fs::File::create(log).expect("create log file");
        let mut cmd = host.command(&vipool_bin());
        cmd.args(args);
        cmd.env("RUST_LOG", node_log_filter());
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn vipool");
        Speaker::new(self.adopt(child), host.clone())
    }
}

/// A current-thread tokio runtime for a test thread.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The lab's CA in `pki` (made on first use, as `vipool pki init` makes it).
pub fn lab_ca(pki: &std::path::Path) -> vipool::pki::Ca {
    static MADE: Mutex<()> = Mutex::new(());
    let _one = MADE.lock().unwrap_or_else(|p| p.into_inner());
    if pki.join(vipool::pki::CA_KEY).exists() {
        vipool::pki::Ca::load(pki)
    } else {
        vipool::pki::Ca::create(pki, 7, 365)
    }
    .expect("lab CA")
}

impl Host {
    /// The scratch directory of the lab this host belongs to (see
    /// [`Lab::dir`]): where its PKI is.
    pub fn lab_pki(&self) -> std::path::PathBuf {
        let prefix = &self.ns[..self.ns.rfind('h').expect("a lab host's namespace")];
        std::env::temp_dir().join(prefix).join("pki")
    }
}

/// An operator's TLS in the lab of `host` (its certificate issued by the
/// lab's CA on first use), as `vipool pki operator` makes it.
pub fn operator_tls(host: &Host) -> vipool::tls::ClientTls {
    let pki = host.lab_pki();
    let ca = lab_ca(&pki);
    let issued = ca
        .issue_operator("lab-operator", 365)
        .expect("operator certificate");
    vipool::tls::ClientTls::operator(
        &cluster::tls::Identity::from_pem(
            ca.cert_pem().as_bytes(),
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
        )
        .expect("operator identity"),
    )
    .expect("operator TLS")
}

/// `vipool show` arguments for the lab's operator in the lab of `host`:
/// `--ca`, `--cert` and `--key` of an operator certificate (written on
/// first use, as `vipool pki operator` writes it).
pub fn operator_args(host: &Host) -> Vec<String> {
    let pki = host.lab_pki();
    let ca = lab_ca(&pki);
    let cert = pki.join("lab-operator.crt");
    if !cert.exists() {
        // Another test thread of the same lab may have written it meanwhile.
        let _ = ca
            .issue_operator("lab-operator", 365)
            .expect("operator certificate")
            .write(&pki, "lab-operator");
    }
    [
        "--ca".into(),
        pki.join(vipool::pki::CA_CERT).to_string_lossy().into_owned(),
        "--cert".into(),
        cert.to_string_lossy().into_owned(),
    ]
    .into()
}

/// A switch's TLS in the lab of `host`: a certificate for client id `id`
/// and serial `serial`, issued by the lab's CA as `vipool pki switch` does.
pub fn switch_tls(host: &Host, id: &str, serial: &str) -> vipool::tls::ClientTls {
    let pki = host.lab_pki();
    let ca = lab_ca(&pki);
    let issued = ca.issue_switch(id, serial, 365).expect("switch certificate");
    vipool::tls::ClientTls::from_pem(
        ca.cert_pem().as_bytes(),
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .expect("switch TLS")
}

/// The status and table of the node at `node:port` (its operator endpoint),
/// asked from inside `from`'s namespace as the lab's operator, with 2 s
/// limits on connect and answer.
pub fn operator_show(from: &Host, node: Ipv4Addr, port: u16) -> Result<vipool::proto::TableDump, String> {
    let tls = operator_tls(from);
    in_netns(from, move || {
        runtime().block_on(async move {
            let connect = vipool::client::Connection::connect((node, port), &tls);
            let mut conn = tokio::time::timeout(Duration::from_secs(2), connect)
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| e.to_string())?;
            tokio::time::timeout(Duration::from_secs(2), conn.show())
                .await
                .map_err(|_| "show timed out".to_string())?
                .map_err(|e| e.to_string())
        })
    })
    .join()
    .expect("show thread")
}

/// The keepalived side of the takeover and failover benchmarks: VRRPv3,
/// VRID 50, no gratuitous-ARP delay, `vip`/24 on eth0, starting as backup.
pub fn bench_keepalived_conf(vip: Ipv4Addr, priority: u8, advert_ms: u32) -> String {
    let advert = if advert_ms.is_multiple_of(1000) {
        format!("{}", advert_ms / 1000)
    } else {
        format!("{:.2}", f64::from(advert_ms) / 1000.0)
    };
    format!(
        "global_defs {{\n    router_id bench\n    vrrp_version 3\n    vrrp_garp_master_delay 0\n}}\n\
         vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 50\n    \
         priority {priority}\n    advert_int {advert}\n    virtual_ipaddress {{\n        {vip}/24 dev eth0\n    }}\n}}\n"
    )
}

/// The lab's license issuer: a fixed key, so that every server and switch
/// of a lab (and every lab) agrees on it.
pub fn lab_issuer() -> vipool::license::IssuerKey {
    vipool::license::IssuerKey::from_secret_bytes("lab", &[42; 32]).expect("lab issuer")
}

/// A key of `count` licenses of `license_type` for `serial`, signed by the
/// lab's issuer, valid from a day ago.
pub fn lab_key(key_id: &str, serial: &str, license_type: &str, count: u32) -> vipool::license::SignedKey {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    lab_issuer()
        .sign(vipool::license::KeyStatement {
            key_id: key_id.into(),
            license_type: license_type.into(),
            count,
            serial: serial.into(),
            not_before: now - 86_400,
            expires: None,
            issuer: "lab".into(),
        })
        .expect("sign a lab key")
}

/// The resident memory of process `pid` (VmRSS of /proc/PID/status), in
/// KiB; `None` once it has exited.
pub fn rss_kb(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A server's licensing in a lab (see [`Lab::server_license`]).
#[derive(Debug, Clone)]
pub struct ServerLicense {
    /// `serial = "SN-NAME"`, for `[node]`.
    pub serial: String,
    /// The `[license]` lines.
    pub lines: String,
}

/// Believes any server certificate: the attacker wants to reach the
/// node's check of *its* certificate, not to check the node's (the
/// attack suites' clients).
#[derive(Debug)]
pub struct BelieveAnyServer(pub std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for BelieveAnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
