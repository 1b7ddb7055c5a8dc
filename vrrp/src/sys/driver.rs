//! The tokio driver: runs one [`Instance`] against a real interface.
//!
//! One task owns the instance, the socket, the netlink handle and the ARP
//! sender. It sleeps until the earliest of the instance's timer and its own
//! gratuitous-ARP schedule, and wakes for datagrams, the peer's claims,
//! commands and shutdown.
//!
//! The peer's claims ([`PeerClaim`]) come from the glue that runs the
//! authenticated cluster link, through [`PeerClaims::set`]: synchronous, so
//! the glue needs no await, and read by the driver before every datagram,
//! so a claim set before a datagram is handled always applies to it.

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::arp::{virtual_mac, ArpSender};
use super::netlink::Netlink;
use super::socket::VrrpSocket;
use super::sysctl::Sysctls;
use crate::proto::{Config, Counters, DropReason, Event, Instance, PeerClaim, Reason, State, V3Checksum};
use crate::wire::{ipv4, Checksum, Version, MULTICAST_GROUP};

/// Gratuitous ARP on takeover: each announcement is a gratuitous ARP
/// request and a gratuitous ARP reply for every virtual address.
///
/// A host's cache entry that was updated less than its neighbour
/// `locktime` ago (Linux: 1 s) ignores a new address: right after a
/// failover, a host that heard the old master a moment earlier keeps
/// sending there. So besides the burst at the takeover the new master
/// announces again after `repeat_after` (default 1 s and 2 s), as
/// keepalived does after `garp_master_delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GarpConfig {
    /// Announcements per virtual address sent on becoming master (0 disables).
    pub count: u32,
    /// Delay between two announcements of one burst.
    pub interval: Duration,
    /// One more announcement this long after becoming master, for each
    /// entry (default 1 s and 2 s).
    pub repeat_after: Vec<Duration>,
    /// While master, send one more burst this often (None: never).
    pub refresh: Option<Duration>,
}

impl Default for GarpConfig {
    fn default() -> Self {
        GarpConfig {
            count: 3,
            interval: Duration::from_millis(100),
            repeat_after: vec![Duration::from_secs(1), Duration::from_secs(2)],
            refresh: None,
        }
    }
}

impl GarpConfig {
    /// When to announce after becoming master at `at`: the burst, then the
    /// repeats, in order.
    pub fn plan(&self, at: Instant) -> Vec<Instant> {
        if self.count == 0 {
            return Vec::new();
        }
        let mut plan: Vec<Instant> = (0..self.count).map(|n| at + self.interval * n).collect();
        plan.extend(self.repeat_after.iter().map(|d| at + *d));
        plan.sort();
        plan
    }
}

/// Everything needed to run one instance on one interface.
#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    /// Interface carrying the virtual router (its parent when `virtual_mac`).
    pub interface: String,
    /// The instance. An unspecified `primary_address` (0.0.0.0) is replaced by
    /// the interface's first IPv4 address that is not a virtual address.
    pub vrrp: Config,
    /// Prefix length the virtual addresses are installed with.
    pub prefix_len: u8,
    /// Gratuitous ARP behaviour.
    pub garp: GarpConfig,
    /// Use the RFC 5798 §7.3 virtual MAC (00:00:5e:00:01:VRID) on a macvlan
    /// named `vrrp.<vrid>` created on `interface`.
    pub virtual_mac: bool,
}

/// A state change, as broadcast to subscribers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Transition {
    /// Previous state.
    pub from: State,
    /// New state.
    pub to: State,
    /// Why.
    pub reason: Option<Reason>,
    /// Wall-clock time of the change.
    pub at: SystemTime,
}

/// A snapshot of the instance, published after every input.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// Current state.
    pub state: State,
    /// Current priority.
    pub priority: u8,
    /// Our primary address on the interface.
    pub primary_address: Ipv4Addr,
    /// The master as last seen.
    pub master: Option<Ipv4Addr>,
    /// Whether the virtual addresses are installed here.
    pub vip_installed: bool,
    /// Whether Accept_Mode lets services answer on the virtual addresses now.
    pub accepts_vip_traffic: bool,
    /// Counters.
    pub counters: Counters,
}

enum Command {
    SetPriority(u8),
    SetFault(bool),
}

/// The handle through which the glue of the authenticated cluster link
/// tells a running [`Speaker`] what the peer last said about itself.
///
/// Cheap to clone, usable from any task or thread, and never blocks: the
/// latest claim replaces the previous one. The driver applies it at once
/// (releasing or discarding a held advert) and, in any case, before it
/// handles the next datagram. See
/// [`Instance::set_peer_claim`](crate::proto::Instance::set_peer_claim)
/// for what a claim does.
#[derive(Debug, Clone)]
pub struct PeerClaims {
    tx: watch::Sender<Option<PeerClaim>>,
}

impl PeerClaims {
    /// Replaces the peer's claim: `Some` each time the peer's state arrives
    /// over the authenticated link (with `valid_until` about three advert
    /// intervals ahead), `None` when the link is known to be down, after
    /// which VRRP alone decides. A claim that simply expires acts as `None`.
    pub fn set(&self, claim: Option<PeerClaim>) {
        // No receiver (the driver has stopped) is not an error: nothing
        // is left to judge adverts.
        self.tx.send_replace(claim);
    }

    /// The claim set last.
    pub fn get(&self) -> Option<PeerClaim> {
        *self.tx.borrow()
    }
}

/// A running speaker.
#[derive(Debug)]
pub struct Speaker {
    commands: mpsc::Sender<Command>,
    claims: PeerClaims,
    status: watch::Receiver<Status>,
    transitions: broadcast::Sender<Transition>,
    /// Subscribed before the driver ran: the first caller of
    /// [`Speaker::transitions`] gets it, with every change since the start
    /// (a driver on its own thread is Backup before its owner looks).
    first_transitions: std::sync::Mutex<Option<broadcast::Receiver<Transition>>>,
    cancel: CancellationToken,
    /// Lets the stopped driver delete its interface and restore sysctls.
    tidy: CancellationToken,
    /// Cancelled by [`Speaker::shutdown_after`] before `cancel`: the
    /// stopping master keeps its addresses until the new master is heard.
    hand_off: CancellationToken,
    task: Task,
}

/// What the driver ends with.
type Outcome = io::Result<Counters>;

/// Where the driver runs, and how its end is awaited.
#[derive(Debug)]
enum Task {
    /// A task on the runtime that started the speaker.
    Spawned(JoinHandle<Outcome>),
    /// Its own thread (see [`Speaker::start_on_own_thread`]).
    Thread(oneshot::Receiver<Outcome>),
}

impl Task {
    /// The driver's end; like a `JoinHandle`, not to be awaited again once
    /// it answered.
    async fn wait(&mut self) -> Outcome {
        match self {
            Task::Spawned(task) => task.await.map_err(io::Error::other)?,
            Task::Thread(done) => done
                .await
                .unwrap_or_else(|_| Err(io::Error::other("the VRRP thread ended without an outcome"))),
        }
    }
}

impl Speaker {
    /// Opens the socket, resolves addresses, and starts the instance.
    ///
    /// # Errors
    /// An unknown interface, an invalid configuration, no usable primary
    /// address, or an OS error (raw sockets and netlink need root or
    /// `CAP_NET_RAW` + `CAP_NET_ADMIN`).
    pub async fn start(config: SpeakerConfig) -> io::Result<Speaker> {
        let (speaker, driver) = Speaker::open(config).await?;
        Ok(speaker.with(Task::Spawned(tokio::spawn(driver))))
    }

    /// As [`Speaker::start`], but the speaker runs on a thread of its own
    /// (a single-threaded runtime), not on the caller's runtime. Adverts,
    /// Master_Down_Interval and the peer's claims are then handled on time
    /// even while the caller's thread is held up: a caller that writes to
    /// a disk on its runtime (a raft log flush that a busy disk stretches
    /// past a second) would otherwise silence a master's adverts long
    /// enough for its backup to take over, or let a backup's
    /// Master_Down_Timer fire late. Every handle works from any thread and
    /// any runtime.
    ///
    /// # Errors
    /// As [`Speaker::start`]; or no thread or runtime could be made.
    pub async fn start_on_own_thread(config: SpeakerConfig) -> io::Result<Speaker> {
        let (started_tx, started) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("vrrp-{}", config.vrrp.vrid))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let (speaker, driver) = match Speaker::open(config).await {
                        Ok(opened) => opened,
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                            return;
                        }
                    };
                    let (cancel, tidy) = (speaker.cancel.clone(), speaker.tidy.clone());
                    if started_tx.send(Ok(speaker)).is_err() {
                        // Nobody took the speaker: leave at once, tidily.
                        cancel.cancel();
                        tidy.cancel();
                    }
                    // Nobody waiting for the outcome is no error.
                    let _ = done_tx.send(driver.await);
                });
            })?;
        let speaker = started
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the VRRP thread stopped while starting")))?;
        Ok(speaker.with(Task::Thread(done)))
    }

    /// Opens everything and makes the driver; the speaker lacks only the
    /// task that runs it.
    async fn open(
        mut config: SpeakerConfig,
    ) -> io::Result<(
        Partial,
        impl std::future::Future<Output = Outcome> + Send + 'static,
    )> {
        let netlink = Netlink::open()?;
        let parent = netlink.link_index(&config.interface).await?;
        if config.vrrp.primary_address.is_unspecified() {
            let vips = &config.vrrp.addresses;
            config.vrrp.primary_address = netlink
                .ipv4_addresses(parent)
                .await?
                .into_iter()
                .map(|(a, _)| a)
                .find(|a| !vips.contains(a))
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!(
                            "interface {} has no IPv4 address of its own: add one, or give the primary address",
                            config.interface
                        ),
                    )
                })?;
        }
        let instance =
            Instance::new(config.vrrp.clone()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;

        let mut sysctls = Sysctls::default();
        let (link_name, link_index, mac) = if config.virtual_mac {
            let name = format!("vrrp.{}", config.vrrp.vrid);
            let mac = virtual_mac(config.vrrp.vrid);
            let index = netlink.create_macvlan(parent, &name, mac).await?;
            // Before it comes up: no IPv6 frame ever leaves from the virtual MAC.
            sysctls.set("ipv6", &name, "disable_ipv6", "1")?;
            netlink.set_up(index).await?;
            // The macvlan itself must answer ARP only for the VIP: with the
            // default arp_ignore=0 it answers for the host's own address
            // too, with the virtual MAC, and a peer that learns that MAC
            // for our address sends our raft traffic wherever the VIP is
            // (failover_bench: the pair's raft link broke when the VIP
            // moved, 5 of 100 graceful failovers).
            sysctls.set("ipv4", &name, "arp_ignore", "1")?;
            sysctls.set("ipv4", &name, "arp_announce", "2")?;
            sysctls.set("ipv4", &config.interface, "arp_ignore", "1")?;
            sysctls.set("ipv4", &config.interface, "arp_filter", "1")?;
            sysctls.set("ipv4", &config.interface, "arp_announce", "2")?;
            (name, index, Some(mac))
        } else {
            (config.interface.clone(), parent, None)
        };
        let multicast = config.vrrp.unicast_peers.is_empty();
        let source = config.vrrp.primary_address;
        // In the kernel too, so that a flood from other sources cannot
        // crowd the peer's adverts out of the socket's queue.
        let allowed = allowed_sources(&config.vrrp);
        let allowed = allowed.as_deref();
        let socket = if config.virtual_mac {
            // Received and joined on the parent: see `socket`'s docs.
            VrrpSocket::open_virtual_mac(&config.interface, parent, &link_name, source, multicast, allowed)?
        } else {
            VrrpSocket::open(&link_name, link_index, source, multicast, allowed)?
        };
        let arp = if config.garp.count > 0 {
            Some(ArpSender::open(&link_name, mac)?)
        } else {
            None
        };

        let status = Status {
            state: State::Initialize,
            priority: config.vrrp.priority,
            primary_address: config.vrrp.primary_address,
            master: None,
            vip_installed: false,
            accepts_vip_traffic: false,
            counters: Counters::default(),
        };
        let (status_tx, status_rx) = watch::channel(status);
        let (transitions, first_transitions) = broadcast::channel(64);
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (claims_tx, claims_rx) = watch::channel(None);
        let cancel = CancellationToken::new();
        let tidy = CancellationToken::new();
        let hand_off = CancellationToken::new();
        let driver = Driver {
            instance,
            socket,
            netlink,
            arp,
            link_index,
            created_link: config.virtual_mac.then_some(link_index),
            sysctls,
            prefix_len: config.prefix_len,
            garp: config.garp.clone(),
            garp_plan: std::collections::VecDeque::new(),
            vip_installed: false,
            keep_vips_until: None,
            masters_heard: 0,
            hand_off: hand_off.clone(),
            status: status_tx,
            transitions: transitions.clone(),
            warned: WarnLimit::default(),
        };
        let run = driver.run(cmd_rx, claims_rx, cancel.clone(), tidy.clone());
        let partial = Partial {
            commands: cmd_tx,
            claims: PeerClaims { tx: claims_tx },
            status: status_rx,
            transitions,
            first_transitions,
            cancel,
            tidy,
            hand_off,
        };
        Ok((partial, run))
    }

    /// Changes the priority at run time (1..=254; the owner's 255 is fixed).
    pub async fn set_priority(&self, priority: u8) {
        // The driver only stops after `shutdown`, which consumes self.
        let _ = self.commands.send(Command::SetPriority(priority)).await;
    }

    /// Enters or leaves fault (see
    /// [`Instance::set_fault`](crate::proto::Instance::set_fault)): a master
    /// sends priority 0 once and removes the virtual addresses; in fault
    /// the speaker stays in Initialize, sends nothing and never contends;
    /// when the fault clears it starts again as backup.
    pub async fn set_fault(&self, fault: bool) {
        // The driver only stops after `shutdown`, which consumes self.
        let _ = self.commands.send(Command::SetFault(fault)).await;
    }

    /// The handle that feeds the peer's authenticated claims to this
    /// speaker (all clones feed the same one).
    pub fn peer_claims(&self) -> PeerClaims {
        self.claims.clone()
    }

    /// The latest status; `changed()` on the receiver waits for the next one.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Every state change from now on; the first call also gets those
    /// since the speaker started (up to 64), so that its owner does not
    /// miss the first state however soon the driver runs.
    pub fn transitions(&self) -> broadcast::Receiver<Transition> {
        self.first_transitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| self.transitions.subscribe())
    }

    /// Stops the instance: a master sends priority 0, the virtual addresses
    /// are removed, a virtual-MAC interface is deleted. Returns the counters.
    ///
    /// # Errors
    /// The error that stopped the driver, if any.
    pub async fn shutdown(mut self) -> io::Result<Counters> {
        self.cancel.cancel();
        self.tidy.cancel();
        self.task.wait().await
    }

    /// Stops the instance as a graceful hand-off: a master sends priority
    /// 0 but keeps its virtual addresses until it hears the new master's
    /// first advert, or one advertisement interval at most, as a master
    /// entering fault does (why: see `Driver::keep_vips_for_new_master`);
    /// and it tidies up (deletes the virtual-MAC interface, restores the
    /// sysctls) only once `first` is done. The status says `Initialize`
    /// once the advert is out, with `vip_installed` still set. The kernel
    /// deletes a link inside the netlink call and waits for RCU grace
    /// periods there: tens of milliseconds on a busy host during which a
    /// single-threaded caller runs nothing else. A caller with urgent work
    /// right after the advert (handing raft leadership to the new master)
    /// passes it as `first`.
    ///
    /// # Errors
    /// The error that stopped the driver, if any.
    pub async fn shutdown_after(
        mut self,
        first: impl std::future::Future<Output = ()>,
    ) -> io::Result<Counters> {
        self.hand_off.cancel();
        self.cancel.cancel();
        {
            // Dropped half-way, this future still lets the driver tidy up.
            let _tidy = self.tidy.clone().drop_guard();
            first.await;
        }
        self.task.wait().await
    }

    /// Waits until the driver stops by itself (an I/O error) and returns why.
    ///
    /// # Errors
    /// The error that stopped the driver.
    pub async fn stopped(&mut self) -> io::Result<Counters> {
        self.task.wait().await
    }
}

/// A [`Speaker`] but for its task: given that, it is one.
struct Partial {
    commands: mpsc::Sender<Command>,
    claims: PeerClaims,
    status: watch::Receiver<Status>,
    transitions: broadcast::Sender<Transition>,
    first_transitions: broadcast::Receiver<Transition>,
    cancel: CancellationToken,
    tidy: CancellationToken,
    hand_off: CancellationToken,
}

impl Partial {
    fn with(self, task: Task) -> Speaker {
        Speaker {
            commands: self.commands,
            claims: self.claims,
            status: self.status,
            transitions: self.transitions,
            first_transitions: std::sync::Mutex::new(Some(self.first_transitions)),
            cancel: self.cancel,
            tidy: self.tidy,
            hand_off: self.hand_off,
            task,
        }
    }
}

struct Driver {
    instance: Instance,
    socket: VrrpSocket,
    netlink: Netlink,
    arp: Option<ArpSender>,
    link_index: u32,
    created_link: Option<u32>,
    sysctls: Sysctls,
    prefix_len: u8,
    garp: GarpConfig,
    /// The announcements still to send, soonest first.
    garp_plan: std::collections::VecDeque<Instant>,
    vip_installed: bool,
    /// A master that entered fault sent priority 0 and keeps its virtual
    /// addresses until a new master is heard, or until then at the latest
    /// (see [`Driver::keep_vips_for_new_master`]).
    keep_vips_until: Option<Instant>,
    /// Adverts of a priority other than 0 accepted, as counted when the
    /// addresses began to be kept: one more is the new master.
    masters_heard: u64,
    /// A graceful hand-off ([`Speaker::shutdown_after`]): a master that
    /// shuts down keeps its addresses as one entering fault does.
    hand_off: CancellationToken,
    status: watch::Sender<Status>,
    transitions: broadcast::Sender<Transition>,
    /// When a dropped forgery was last logged at warn level.
    /// Warnings a peer, a forger or a flapping link can repeat.
    warned: WarnLimit,
}

/// The drops that say someone sends adverts it should not.
const TRUST_DROPS: [DropReason; 3] = [
    DropReason::UnknownPeer,
    DropReason::OwnAddress,
    DropReason::Contradicted,
];

/// The sources whose adverts the instance may accept, as it judges them
/// (`Instance::source_trusted`: listed in every non-empty list of
/// `trusted_sources` and `unicast_peers`), or `None` without a filter.
fn allowed_sources(config: &Config) -> Option<Vec<Ipv4Addr>> {
    let (trusted, peers) = (&config.trusted_sources, &config.unicast_peers);
    if trusted.is_empty() && peers.is_empty() {
        return None;
    }
    let listed = |list: &[Ipv4Addr], a: &Ipv4Addr| list.is_empty() || list.contains(a);
    let mut allowed: Vec<Ipv4Addr> = trusted
        .iter()
        .chain(peers)
        .filter(|a| listed(trusted, a) && listed(peers, a))
        .copied()
        .collect();
    allowed.sort_unstable();
    allowed.dedup();
    Some(allowed)
}

/// Adverts of a priority other than 0 accepted: masters heard.
fn masters_heard(c: &Counters) -> u64 {
    c.adverts_received.saturating_sub(c.priority_zero_received)
}

/// At most one warning per this period about such drops; the rest go to debug.
/// One warning line per cause per minute (the daemon's rule: a host
/// flooding forgeries, or a link down for hours, must not fill the disk);
/// the line says how many like it were left out.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// When each cause was last logged and how many were left out since.
#[derive(Debug, Default)]
struct WarnLimit(std::collections::BTreeMap<&'static str, (Instant, u64)>);

impl WarnLimit {
    /// `Some(left out since the last line)` when `cause` may be logged now.
    fn allow(&mut self, cause: &'static str, now: Instant) -> Option<u64> {
        match self.0.get_mut(cause) {
            Some((at, n)) if now.duration_since(*at) < WARN_EVERY => {
                *n += 1;
                None
            }
            Some((at, n)) => {
                *at = now;
                Some(std::mem::take(n))
            }
            None => {
                self.0.insert(cause, (now, 0));
                Some(0)
            }
        }
    }
}

impl Driver {
    async fn run(
        mut self,
        commands: mpsc::Receiver<Command>,
        mut claims: watch::Receiver<Option<PeerClaim>>,
        cancel: CancellationToken,
        tidy: CancellationToken,
    ) -> io::Result<Counters> {
        let result = self.serve(commands, &mut claims, cancel).await;
        if let Err(e) = &result {
            warn!(error = %e, "VRRP driver failed; leaving the virtual router");
        }
        // Whatever stopped us, leave as a good neighbour: priority 0 if we
        // were master, VIPs removed, the link and sysctls as we found them.
        self.instance.shutdown(Instant::now());
        let mut left = self.drain().await;
        if result.is_ok() && left.is_ok() && self.hand_off.is_cancelled() && self.keep_vips_until.is_some() {
            // A hand-off: the addresses go once the new master is heard.
            left = self.linger(&mut claims).await;
        }
        if self.keep_vips_until.is_some() {
            left = left.and(self.remove_vips().await);
        }
        if result.is_ok() {
            // Stopped by `shutdown`: the owner may want the thread first
            // (see `Speaker::shutdown_after`). After a failure nobody waits.
            tidy.cancelled().await;
        }
        let began = Instant::now();
        if let Some(index) = self.created_link {
            if let Err(e) = self.netlink.delete_link(index).await {
                warn!(error = %e, "virtual MAC interface not deleted");
            }
        }
        self.sysctls.restore();
        debug!(
            ms = began.elapsed().as_secs_f64() * 1e3,
            "left: interface deleted, sysctls restored"
        );
        result.and(left).map(|()| self.instance.counters().clone())
    }

    async fn serve(
        &mut self,
        mut commands: mpsc::Receiver<Command>,
        claims: &mut watch::Receiver<Option<PeerClaim>>,
        cancel: CancellationToken,
    ) -> io::Result<()> {
        // Closed once every sender is gone (the Speaker was dropped without
        // a shutdown); the last claim then simply runs out.
        let mut claims_open = true;
        // A VIP left behind by a crash must not stay on a node that starts as backup.
        self.remove_vips().await?;
        self.instance.startup(Instant::now());
        self.drain().await?;
        let mut buf = vec![0u8; 4096];
        loop {
            let deadline = self.deadline();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            // A host flooding the socket keeps `recv` always ready: the
            // branches before it still run at once, and so do the timers,
            // after each datagram (see there).
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                // Without a datagram, a new claim still applies at once: it
                // may release or discard a held advert. (`changed` has
                // marked it seen already: apply it unconditionally.)
                changed = claims.changed(), if claims_open => match changed {
                    Ok(()) => self.take_claim(Instant::now(), claims).await?,
                    Err(_closed) => claims_open = false,
                },
                Some(cmd) = commands.recv() => match cmd {
                    Command::SetPriority(p) => {
                        info!(priority = p, "priority changed");
                        self.instance.set_priority(Instant::now(), p);
                    }
                    Command::SetFault(fault) => {
                        if fault != self.instance.in_fault() {
                            info!(fault, "VRRP fault {}", if fault { "entered: leaving the virtual router" } else { "cleared: contending again" });
                        }
                        self.instance.set_fault(Instant::now(), fault);
                    }
                },
                received = self.socket.recv(&mut buf) => {
                    let len = received?;
                    self.take_datagram(Instant::now(), &buf[..len], claims).await?;
                    // With datagrams always waiting (a flood) the sleep
                    // below never wins: a master would fall silent and a
                    // backup's Master_Down_Timer never fire. So timers due
                    // by now run here, after the datagram (an advert that
                    // arrived before the deadline still counts first).
                    let now = Instant::now();
                    if self.deadline().is_some_and(|at| at <= now) {
                        // Its events first, in the order they came.
                        self.drain().await?;
                        self.take_timeout(now).await?;
                    }
                }
                () = sleep => self.take_timeout(Instant::now()).await?,
            }
            self.drain().await?;
        }
    }

    /// The earliest timer: the instance's, the next gratuitous ARP, or the
    /// end of the hold on kept addresses.
    fn deadline(&self) -> Option<Instant> {
        [
            self.instance.poll_timeout(),
            self.garp_plan.front().copied(),
            self.keep_vips_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers due at `now` (a timer not yet due is left alone).
    async fn take_timeout(&mut self, now: Instant) -> io::Result<()> {
        self.give_up_kept_vips(now).await?;
        self.instance.handle_timeout(now);
        if self.garp_plan.front().is_some_and(|&at| at <= now) {
            self.send_garp(now);
        }
        Ok(())
    }

    /// Hands the latest claim to the instance; kept addresses are given up
    /// if it releases the new master's held advert.
    async fn take_claim(
        &mut self,
        now: Instant,
        claims: &mut watch::Receiver<Option<PeerClaim>>,
    ) -> io::Result<()> {
        self.apply_claim(claims, now);
        self.give_up_kept_vips_once_heard().await
    }

    /// Hands the latest claim to the instance.
    fn apply_claim(&mut self, claims: &mut watch::Receiver<Option<PeerClaim>>, now: Instant) {
        let claim = *claims.borrow_and_update();
        let held = self.instance.holds_advert();
        self.instance.set_peer_claim(now, claim);
        if held && !self.instance.holds_advert() {
            debug!(
                ?claim,
                released = self.instance.counters().held_released,
                "held advert decided"
            );
        }
    }

    /// Says so when `datagram` was dropped as a forgery or held: one line
    /// per reason per [`WARN_EVERY`] at warn level (a host flooding
    /// forgeries must not flood the log), the rest at debug.
    fn log_trust(&mut self, before: &Counters, datagram: &[u8], now: Instant) {
        let after = self.instance.counters();
        let src = ipv4::parse(datagram).map(|ip| ip.src).ok();
        if after.adverts_held > before.adverts_held {
            debug!(?src, "advert held until the peer's claim confirms it");
        }
        let Some(reason) = TRUST_DROPS
            .into_iter()
            .find(|&r| after.drops_for(r) > before.drops_for(r))
        else {
            return;
        };
        let total = after.drops_for(reason);
        let why = match reason {
            DropReason::UnknownPeer => "its source is not trusted (if it is the peer, check its address in vrrp.peer_address / --trusted-source)",
            DropReason::OwnAddress => "it forges one of our own addresses",
            _ => "the peer's authenticated state contradicts it",
        };
        let cause = match reason {
            DropReason::UnknownPeer => "untrusted source",
            DropReason::OwnAddress => "own address",
            _ => "contradicted",
        };
        if let Some(suppressed) = self.warned.allow(cause, now) {
            warn!(?src, ?reason, total, suppressed, "VRRP advert dropped: {why}");
        } else {
            debug!(?src, ?reason, total, "VRRP advert dropped: {why}");
        }
    }

    /// Carries out every pending event, then publishes the status.
    async fn drain(&mut self) -> io::Result<()> {
        loop {
            let mut events: Vec<Event> = std::iter::from_fn(|| self.instance.poll_event()).collect();
            if events.is_empty() {
                break;
            }
            // A new master installs its addresses and announces them
            // (gratuitous ARP) before its first advert goes out: a master
            // that left in fault keeps the addresses until it hears that
            // advert (see `keep_vips_for_new_master`), so that hosts on the segment
            // always reach one of the two.
            if let Some(at) = events.iter().position(|e| matches!(e, Event::BecomeMaster(_))) {
                let become_master = events.remove(at);
                events.insert(0, become_master);
            }
            for event in events {
                self.handle_event(event).await?;
            }
        }
        self.publish_status();
        Ok(())
    }

    async fn handle_event(&mut self, event: Event) -> io::Result<()> {
        match event {
            Event::Transmit(repr) => {
                let checksum = match (repr.version, self.instance.config().v3_checksum) {
                    (Version::V3, V3Checksum::PseudoHeader) => None,
                    _ => Some(Checksum::MessageOnly),
                };
                let peers = &self.instance.config().unicast_peers;
                let dsts: Vec<Ipv4Addr> = if peers.is_empty() {
                    vec![MULTICAST_GROUP]
                } else {
                    peers.clone()
                };
                for dst in dsts {
                    let mode = checksum.unwrap_or(Checksum::PseudoHeader {
                        src: self.socket.source(),
                        dst,
                    });
                    let bytes = repr.to_bytes(mode);
                    if let Err(e) = self.socket.send(dst, &bytes).await {
                        // A full queue or a link flap must not stop the
                        // instance: the next advert retries.
                        if let Some(suppressed) = self.warned.allow("send", Instant::now()) {
                            warn!(%dst, error = %e, suppressed, "advertisement not sent");
                        }
                    }
                }
            }
            Event::BecomeMaster(reason) => {
                self.transition(State::Master, Some(reason));
                self.install_vips().await?;
                let now = Instant::now();
                self.garp_plan = self.garp.plan(now).into();
                if self.garp_plan.front().is_some_and(|&at| at <= now) {
                    self.send_garp(now);
                }
            }
            Event::BecomeBackup(reason) => {
                self.transition(State::Backup, Some(reason));
                self.garp_plan.clear();
                self.remove_vips().await?;
            }
            Event::BecomeInitialize => {
                let reason = if self.instance.in_fault() {
                    Reason::Fault
                } else {
                    Reason::Shutdown
                };
                self.transition(State::Initialize, Some(reason));
                self.garp_plan.clear();
                let hands_off = reason == Reason::Fault || self.hand_off.is_cancelled();
                if hands_off && self.vip_installed {
                    self.keep_vips_for_new_master();
                } else {
                    self.remove_vips().await?;
                }
            }
        }
        Ok(())
    }

    fn publish_status(&mut self) {
        let status = Status {
            state: self.instance.state(),
            priority: self.instance.config().priority,
            primary_address: self.instance.config().primary_address,
            master: self.instance.master_address(),
            vip_installed: self.vip_installed,
            accepts_vip_traffic: self.instance.accepts_vip_traffic(),
            counters: self.instance.counters().clone(),
        };
        self.status.send_if_modified(|old| {
            let changed = *old != status;
            *old = status;
            changed
        });
    }

    fn transition(&mut self, to: State, reason: Option<Reason>) {
        let from = self.status.borrow().state;
        let at = SystemTime::now();
        info!(vrid = self.instance.config().vrid, %from, %to, ?reason, "VRRP state change");
        // No subscriber is not an error.
        let _ = self.transitions.send(Transition { from, to, reason, at });
        self.status.send_modify(|s| s.state = to);
    }

    async fn install_vips(&mut self) -> io::Result<()> {
        for addr in self.instance.config().addresses.clone() {
            self.netlink
                .add_address(self.link_index, addr, self.prefix_len)
                .await?;
        }
        self.vip_installed = true;
        debug!("virtual addresses installed");
        Ok(())
    }

    /// A master entering fault (its owner hands the VIP back, or a tracker
    /// is down) or handing off as it stops ([`Speaker::shutdown_after`])
    /// has sent priority 0; the peer becomes master at once (with
    /// pair handoff) and announces itself. Until hosts on the segment hear
    /// that announcement they still send to this node: with the addresses
    /// gone their packets would be lost (a switch's SYN, costing it a
    /// retransmission: tens or hundreds of milliseconds), while with them
    /// this node's kernel answers (a closed port resets the connection and
    /// the switch tries again at once, reaching the new master once it is
    /// announced). So the addresses stay until the new master's first
    /// advert is heard here (sent with its gratuitous ARPs), or one
    /// advertisement interval at most. Only an advert the instance accepts
    /// counts (see [`Driver::give_up_kept_vips_once_heard`]): a forger
    /// cannot end the hold early, and nothing stretches it. The instance is
    /// in Initialize meanwhile: it sends nothing and contends for nothing.
    fn keep_vips_for_new_master(&mut self) {
        let now = Instant::now();
        self.keep_vips_until = Some(now + self.instance.master_adver_interval());
        self.masters_heard = masters_heard(self.instance.counters());
        debug!("priority 0 sent: keeping the virtual addresses until the new master is heard");
    }

    /// A datagram received at `now`: judged by the latest claim, handled by
    /// the instance, its trust drops logged, and kept addresses given up
    /// once it is the new master's advert.
    async fn take_datagram(
        &mut self,
        now: Instant,
        datagram: &[u8],
        claims: &mut watch::Receiver<Option<PeerClaim>>,
    ) -> io::Result<()> {
        // Waiting for the socket takes none of the task's budget (tokio's
        // `AsyncFd`), so under a flood this task would never yield: each
        // datagram takes a unit, and the other tasks of the runtime (those
        // of a `vipool vrrp` that answer signals) still get their turn.
        tokio::task::coop::consume_budget().await;
        // A claim set before this datagram must judge it, also when the
        // datagram wins the race with the claim's own branch.
        if claims.has_changed().unwrap_or(false) {
            self.apply_claim(claims, now);
        }
        let before = self.instance.counters().clone();
        self.instance.handle_datagram(now, datagram);
        self.log_trust(&before, datagram, now);
        self.give_up_kept_vips_once_heard().await?;
        // Checked here too, not only when the timer wakes us: datagrams
        // that keep coming (a forger's flood) must not stretch the hold.
        self.give_up_kept_vips(now).await
    }

    /// Gives up kept addresses once the new master is heard: an advert of
    /// a priority other than 0 that the instance accepted, so one that
    /// passed every check it makes (trusted sources, unicast peers, our own
    /// and the virtual addresses, and, in a pair, the peer's claim: a
    /// forgery in the peer's name is dropped or held like any other, and a
    /// held advert counts only once the claim releases it).
    async fn give_up_kept_vips_once_heard(&mut self) -> io::Result<()> {
        if self.keep_vips_until.is_some() && masters_heard(self.instance.counters()) > self.masters_heard {
            debug!("the new master is heard: giving up the virtual addresses");
            self.remove_vips().await?;
        }
        Ok(())
    }

    /// Gives up kept addresses whose time is up at `now` (no new master
    /// heard within an advertisement interval).
    async fn give_up_kept_vips(&mut self, now: Instant) -> io::Result<()> {
        if self.keep_vips_until.is_some_and(|at| at <= now) {
            debug!("no new master heard within an advertisement interval: giving up the virtual addresses");
            self.remove_vips().await?;
        }
        Ok(())
    }

    /// After the stop of a master that hands off: reads adverts and the
    /// peer's claims (the instance is in Initialize: they change nothing,
    /// they are only judged and counted, as in the run loop) until the new
    /// master's advert is heard or the addresses' time is up, then removes
    /// the addresses. The status follows every input, counters included.
    async fn linger(&mut self, claims: &mut watch::Receiver<Option<PeerClaim>>) -> io::Result<()> {
        let mut buf = vec![0u8; 4096];
        let mut claims_open = true;
        while let Some(until) = self.keep_vips_until {
            // A held advert unconfirmed by its deadline (the Hold timer)
            // is counted as contradicted then, as in the run loop.
            let wake = self.instance.poll_timeout().map_or(until, |at| at.min(until));
            // Not biased: with datagrams always waiting (a flood) the sleep
            // still wins its share of turns, and the end of the hold is
            // checked after every datagram too.
            tokio::select! {
                received = self.socket.recv(&mut buf) => {
                    let len = received?;
                    self.take_datagram(Instant::now(), &buf[..len], claims).await?;
                }
                // As in the run loop: a claim may release a held advert.
                changed = claims.changed(), if claims_open => match changed {
                    Ok(()) => self.take_claim(Instant::now(), claims).await?,
                    Err(_closed) => claims_open = false,
                },
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    self.instance.handle_timeout(now);
                    self.give_up_kept_vips(now).await?;
                }
            }
            self.publish_status();
        }
        self.publish_status();
        Ok(())
    }

    async fn remove_vips(&mut self) -> io::Result<()> {
        self.keep_vips_until = None;
        for addr in self.instance.config().addresses.clone() {
            // The owner's own address is its real address: never remove it.
            if addr == self.instance.config().primary_address {
                continue;
            }
            self.netlink
                .del_address(self.link_index, addr, self.prefix_len)
                .await?;
        }
        if self.vip_installed {
            debug!("virtual addresses removed");
        }
        self.vip_installed = false;
        Ok(())
    }

    /// Sends one announcement (request and reply) per virtual address for
    /// every planned one that is due, and plans the refresh after the last.
    fn send_garp(&mut self, now: Instant) {
        let Some(arp) = self.arp.as_mut() else { return };
        if self.instance.state() != State::Master {
            self.garp_plan.clear();
            return;
        }
        // Several due at once (a late wake-up) make one announcement.
        while self.garp_plan.front().is_some_and(|&at| at <= now) {
            self.garp_plan.pop_front();
        }
        for addr in &self.instance.config().addresses {
            if let Err(e) = arp.announce(*addr) {
                if let Some(suppressed) = self.warned.allow("garp", now) {
                    warn!(%addr, error = %e, suppressed, "gratuitous ARP not sent");
                }
            }
        }
        if self.garp_plan.is_empty() {
            if let Some(refresh) = self.garp.refresh {
                let next = now + refresh;
                self.garp_plan = (0..self.garp.count.max(1))
                    .map(|n| next + self.garp.interval * n)
                    .collect();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, i)
    }

    fn config(trusted: &[u8], peers: &[u8]) -> Config {
        let mut c = Config::v3(1, 100, host(1), vec![host(100)]);
        c.trusted_sources = trusted.iter().map(|&i| host(i)).collect();
        c.unicast_peers = peers.iter().map(|&i| host(i)).collect();
        c
    }

    /// The kernel's filter lets in what `Instance::source_trusted` accepts:
    /// every non-empty list must name the source.
    #[test]
    fn allowed_sources_are_those_on_every_non_empty_list() {
        assert_eq!(allowed_sources(&config(&[], &[])), None);
        assert_eq!(allowed_sources(&config(&[2], &[])), Some(vec![host(2)]));
        assert_eq!(
            allowed_sources(&config(&[], &[3, 2, 3])),
            Some(vec![host(2), host(3)])
        );
        assert_eq!(allowed_sources(&config(&[3], &[2, 3])), Some(vec![host(3)]));
        // No source on both lists: nothing can be accepted, in user space
        // or in the kernel (`Config::validate` refuses this one).
        assert_eq!(allowed_sources(&config(&[4], &[2, 3])), Some(vec![]));
    }
}
