//! `vipool client`: one simulated switch, or many in one process (load mode).
//!
//! Every grant, refusal, release and server up/down goes to the log; with
//! `--json` also to stdout, one JSON object per line, so scripts and tests
//! can count what the server acknowledged.

use std::collections::BTreeMap;
use std::path::PathBuf;
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
    let mut tasks = Vec::with_capacity(args.count);
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
        config.tls = tls.for_switch(&config.id, &config.serial)?;
        tasks.push(switch::spawn(config, Some(events_tx.clone()), shutdown.clone()).task);
    }
    drop(events_tx);
    let stop = shutdown.clone();
    let limit = args.for_s;
    tokio::spawn(async move {
        let reason = match limit {
            Some(s) => tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(s)) => Ok("--for-s elapsed"),
                r = terminated() => r,
            },
            None => terminated().await,
        };
        info!(?reason, "stopping");
        stop.cancel();
    });
    while let Some(event) = events.recv().await {
        if args.json {
            println!("{}", serde_json::to_string(&event)?);
        }
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}
