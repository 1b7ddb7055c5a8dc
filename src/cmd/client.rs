//! `vipool client`: one simulated switch, or many in one process (load mode).
//!
//! Every grant, refusal, release and server up/down goes to the log; with
//! `--json` also to stdout, one JSON object per line, so scripts and tests
//! can count what the server acknowledged.
//!
//! It exits non-zero when a switch was refused for good (an unknown
//! license type, a certificate refused, ...: the switch stops at once,
//! and the process once every switch has), or when `--for-s` ends with
//! a switch that never reached the server.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args as ClapArgs;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;
use vipool::switch::{self, SwitchConfig};
use vipool::table::LicenseType;

use super::license_args::{parse_counts, terminated};
use super::tls_args::Creds;

/// Options of `vipool client`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The license server: VIP:PORT.
    #[arg(long)]
    server: String,
    /// Client id (with --count, the prefix of `ID-0001`, `ID-0002`, ...).
    #[arg(long)]
    id: String,
    /// Serial number (default SIM-ID; with --count, SERIAL-0001, ...).
    #[arg(long)]
    serial: Option<String>,
    /// License keys installed on the switch: a file of key lines (`vipool
    /// license issue` prints them). Each switch presents the keys bound to
    /// its serial; only keys of an issuer the server trusts count.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Built-in (factory) licenses, e.g. AP=16.
    #[arg(long, value_parser = parse_counts, default_value = "")]
    builtin: BTreeMap<LicenseType, u32>,
    /// Access points up on the switch (each needs an AP license).
    #[arg(long, default_value_t = 0)]
    aps: u32,
    /// Other licensed things up per type, e.g. PEFNG=20.
    #[arg(long = "use", value_parser = parse_counts, default_value = "")]
    in_use: BTreeMap<LicenseType, u32>,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    heartbeat_interval_ms: u64,
    /// Intervals without an answer after which the server is down.
    #[arg(long, default_value_t = 3)]
    missed: u32,
    /// How long to keep the last limits while the server is down, in seconds.
    #[arg(long, default_value_t = 30 * 24 * 3600)]
    retention_s: u64,
    /// Give a TCP connect up after this many milliseconds and try again:
    /// shorter than the pair's Master_Down_Interval, so that a SYN lost to
    /// a dead VIP holder costs at most this much after the takeover.
    #[arg(long, default_value_t = vipool::client::DEFAULT_CONNECT_TIMEOUT.as_millis() as u64)]
    connect_timeout_ms: u64,
    /// While a TCP connect is pending, start another after this many
    /// milliseconds (at most 4 at once; 0: one at a time): a SYN lost to
    /// the VIP's old holder as the VIP moves costs this, not a connect
    /// timeout.
    #[arg(long, default_value_t = vipool::client::DEFAULT_CONNECT_STAGGER.as_millis() as u64)]
    connect_stagger_ms: u64,
    /// Take the connection for dead when bytes sent go unacknowledged by
    /// the server's TCP this many milliseconds (TCP_USER_TIMEOUT, set 200 ms
    /// lower: Linux counts it from its first retransmission; at least 200
    /// plus the round trip; 0: the kernel's limit): a VIP holder that lost
    /// power acknowledges nothing, a live one at once, also while it holds
    /// a request.
    #[arg(long, default_value_t = vipool::client::DEFAULT_ACK_TIMEOUT.as_millis() as u64)]
    ack_timeout_ms: u64,
    /// Give the TLS handshake up after this many milliseconds.
    #[arg(long, default_value_t = vipool::client::DEFAULT_HANDSHAKE_TIMEOUT.as_millis() as u64)]
    handshake_timeout_ms: u64,
    /// Give a request up after this many milliseconds without its answer,
    /// take the connection for dead and reconnect at once (0: wait for
    /// ever, up to the heartbeat interval). Above the 1 s a new VIP holder
    /// may hold a request while its leadership arrives (README, "Standalone
    /// tools", says more).
    #[arg(long, default_value_t = vipool::client::DEFAULT_ANSWER_TIMEOUT.as_millis() as u64)]
    answer_timeout_ms: u64,
    /// While waiting for the server (a handshake, an answer), probe the
    /// connection after this many milliseconds of silence, then after
    /// twice as long each time (0: never): the server's TCP must
    /// acknowledge a probe within --ack-timeout-ms, so a VIP holder that
    /// lost power after acknowledging a request is left within this plus
    /// the ack timeout, while a busy live server is waited for.
    #[arg(long, default_value_t = vipool::client::DEFAULT_PROBE_AFTER.as_millis() as u64)]
    probe_after_ms: u64,
    /// Failures shorter than this many milliseconds are a failover: a
    /// timed-out connect is retried at once, and only longer failures back
    /// off (doubling) and make the server "unreachable". Set it to the
    /// pair's Master_Down_Interval plus a raft election.
    #[arg(long, default_value_t = 1000)]
    failover_window_ms: u64,
    /// Load mode: run this many switches in one process.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Stop after this many seconds (default: run until SIGINT or SIGTERM).
    #[arg(long)]
    for_s: Option<u64>,
    /// Print events as JSON lines on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    creds: Creds,
    /// Simulation: the pair's CA directory (ca.crt and ca.key); each
    /// simulated switch gets a certificate for its id and serial issued in
    /// memory, as an operator would issue it (`vipool pki switch`).
    #[arg(long)]
    pki: Option<std::path::PathBuf>,
}

/// Each switch's TLS: the one certificate given, or one issued per switch
/// by the CA in `--pki`, or none with `--insecure-plaintext`.
struct SwitchTls {
    ca: Option<(vipool::pki::Ca, Vec<u8>)>,
    given: Option<vipool::tls::ClientTls>,
}

impl SwitchTls {
    fn new(args: &Args) -> anyhow::Result<SwitchTls> {
        use anyhow::Context;
        if args.creds.insecure_plaintext {
            return Ok(SwitchTls {
                ca: None,
                given: None,
            });
        }
        if let Some(dir) = &args.pki {
            let ca = vipool::pki::Ca::load(dir)?;
            let pem = ca.cert_pem().as_bytes().to_vec();
            return Ok(SwitchTls {
                ca: Some((ca, pem)),
                given: None,
            });
        }
        anyhow::ensure!(
            args.count == 1,
            "--count N needs --pki DIR (certificates per simulated switch) or --insecure-plaintext"
        );
        let cert = args
            .creds
            .cert
            .clone()
            .context("--cert (this switch's certificate, `vipool pki switch`) is required")?;
        let (cert, key) = args.creds.files(&cert.to_string_lossy());
        let tls = vipool::tls::ClientTls::load(&args.creds.ca, &cert, &key).with_context(|| {
            format!(
                "switch credentials (--ca {}, --cert {})",
                args.creds.ca.display(),
                cert.display()
            )
        })?;
        Ok(SwitchTls {
            ca: None,
            given: Some(tls),
        })
    }

    fn for_switch(&self, id: &str, serial: &str) -> anyhow::Result<Option<vipool::tls::ClientTls>> {
        match (&self.given, &self.ca) {
            (Some(tls), _) => Ok(Some(tls.clone())),
            (None, Some((ca, pem))) => {
                let issued = ca.issue_switch(id, serial, 30)?;
                Ok(Some(vipool::tls::ClientTls::from_pem(
                    pem,
                    issued.cert_pem.as_bytes(),
                    issued.key_pem.as_bytes(),
                )?))
            }
            (None, None) => Ok(None),
        }
    }
}

/// Runs the simulated switches until a signal or `--for-s`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.count >= 1, "--count must be at least 1");
    let mut in_use = args.in_use.clone();
    if args.aps > 0 {
        in_use.insert(LicenseType::new("AP"), args.aps);
    }
    let tls = SwitchTls::new(&args)?;
    let keys = match &args.keys {
        Some(path) => {
            vipool::license::load_key_file(path).with_context(|| format!("--keys {}", path.display()))?
        }
        None => Vec::new(),
    };
    let shutdown = CancellationToken::new();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut switches = Vec::with_capacity(args.count);
    for n in 0..args.count {
        let id = if args.count == 1 {
            args.id.clone()
        } else {
            format!("{}-{:04}", args.id, n + 1)
        };
        let mut config = SwitchConfig::new(args.server.clone(), id);
        if let Some(serial) = &args.serial {
            config.serial = if args.count == 1 {
                serial.clone()
            } else {
                format!("{serial}-{:04}", n + 1)
            };
        }
        config.keys = keys
            .iter()
            .filter(|k| k.serial() == config.serial)
            .cloned()
            .collect();
        config.builtin = args.builtin.clone();
        config.in_use = in_use.clone();
        config.heartbeat_interval = Duration::from_millis(args.heartbeat_interval_ms.max(1));
        config.missed_limit = args.missed.max(1);
        config.retention = Duration::from_secs(args.retention_s);
        config.connect_timeout = Duration::from_millis(args.connect_timeout_ms.max(1));
        config.connect_stagger =
            (args.connect_stagger_ms > 0).then(|| Duration::from_millis(args.connect_stagger_ms));
        config.ack_timeout = (args.ack_timeout_ms > 0).then(|| Duration::from_millis(args.ack_timeout_ms));
        config.handshake_timeout = Duration::from_millis(args.handshake_timeout_ms.max(1));
        config.answer_timeout =
            (args.answer_timeout_ms > 0).then(|| Duration::from_millis(args.answer_timeout_ms));
        config.probe_after = (args.probe_after_ms > 0).then(|| Duration::from_millis(args.probe_after_ms));
        config.failover_window = Duration::from_millis(args.failover_window_ms);
        config.tls = tls.for_switch(&config.id, &config.serial)?;
        // Nothing changes on a simulated switch once it runs: its changes
        // sender is dropped here (the switch stops listening for changes).
        let switch::SwitchHandle { view, task, .. } =
            switch::spawn(config, Some(events_tx.clone()), shutdown.clone());
        switches.push((view, task));
    }
    drop(events_tx);
    let stop = shutdown.clone();
    let limit = args.for_s;
    let timed_out = Arc::new(AtomicBool::new(false));
    let elapsed = timed_out.clone();
    tokio::spawn(async move {
        let reason = match limit {
            Some(s) => tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(s)) => {
                    elapsed.store(true, Ordering::Relaxed);
                    Ok("--for-s elapsed")
                }
                r = terminated() => r,
            },
            None => terminated().await,
        };
        info!(?reason, "stopping");
        stop.cancel();
    });
    // Every switch holds a sender: this ends when all have stopped (on the
    // signal, at --for-s, or each on a permanent refusal).
    while let Some(event) = events.recv().await {
        if args.json {
            println!("{}", serde_json::to_string(&event)?);
        }
    }
    let mut stopped = Vec::new();
    let mut never_reached = Vec::new();
    for (view, task) in switches {
        task.await?;
        let view = view.borrow();
        if let Some(reason) = &view.stopped {
            stopped.push(reason.clone());
        } else if !view.reached {
            never_reached.push(view.last_error.clone());
        }
    }
    if let Some(first) = stopped.first() {
        anyhow::bail!(
            "{} of {} switches stopped on an error no retry can fix, with {}: {first} (the error \
             above says what to do)",
            stopped.len(),
            args.count,
            args.server
        );
    }
    if timed_out.load(Ordering::Relaxed) && !never_reached.is_empty() {
        let last = never_reached
            .iter()
            .flatten()
            .next()
            .map_or_else(|| "none".to_owned(), Clone::clone);
        anyhow::bail!(
            "server unreachable: {} of {} switches never reached {} in {} s (last error: {last})",
            never_reached.len(),
            args.count,
            args.server,
            args.for_s.unwrap_or_default()
        );
    }
    Ok(())
}
