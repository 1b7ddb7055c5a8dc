//! `vipool serve`: a standalone license server on one node.
//!
//! One in-process table, no replication and no VRRP: the node always
//! serves, on the client port (switches) and the operator endpoint
//! (views). For development and tests; a pair runs `vipool node`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args as ClapArgs;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;
use vipool::server::request::RequestLimits;
use vipool::server::{Applier, LocalApplier, Port, Server, ServerConfig};
use vipool::table::{Actor, Command, LicenseTable, LicenseType, TableConfig, TypeKind};

use super::license_args::{parse_type, terminated};

/// Options of `vipool serve`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Address and port switches connect to.
    #[arg(long, default_value = "0.0.0.0:4333")]
    listen: SocketAddr,
    /// Address and port of the operator endpoint (views, status).
    #[arg(long, default_value = "127.0.0.1:4334")]
    operator_listen: SocketAddr,
    /// The pair's CA certificate (switches' and operators' certificates
    /// must be of it).
    #[arg(long, default_value = "/etc/vipool/pki/ca.crt")]
    ca: PathBuf,
    /// This server's certificate (`vipool pki member`: it names the license server).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Its private key (default: the certificate's name with `.key`).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Plain TCP, no certificates: anyone may claim any switch's identity.
    /// For tests and development only; logged at error level.
    #[arg(long)]
    insecure_plaintext: bool,
    /// Answer license requests only on this local address (the VIP).
    #[arg(long)]
    vip: Option<IpAddr>,
    /// This node's name.
    #[arg(long, default_value = "vipool")]
    node: String,
    /// This server's serial: its keys must be bound to it (required with --key-file).
    #[arg(long)]
    serial: Option<String>,
    /// A trust file of issuers whose keys count (NAME.pub); repeat it for several.
    #[arg(long = "issuer")]
    issuers: Vec<PathBuf>,
    /// A file of this server's key lines, installed at start if they
    /// verify and are valid; repeat it for several.
    #[arg(long = "key-file")]
    key_files: Vec<PathBuf>,
    /// Most clients one source address may hold in the table.
    #[arg(long, default_value_t = RequestLimits::default().max_clients_per_source)]
    max_clients_per_source: u32,
    /// Registrations per second one source address may make (beyond a
    /// burst of --max-clients-per-source).
    #[arg(long, default_value_t = RequestLimits::default().registrations_per_s_per_source)]
    registrations_per_s_per_source: u32,
    /// License requests per second one client may send (beyond a burst of
    /// --request-burst-per-client); faster clients are paced.
    #[arg(long, default_value_t = RequestLimits::default().requests_per_s_per_client)]
    requests_per_s_per_client: u32,
    /// The burst of requests one client may send at once.
    #[arg(long, default_value_t = RequestLimits::default().request_burst_per_client)]
    request_burst_per_client: u32,
    /// Connections served at once; more wait in the client port's accept
    /// queue, which is as long (capped by net.core.somaxconn).
    #[arg(long, default_value_t = ServerConfig::default().max_connections)]
    max_connections: usize,
    /// Connections served at once from one source address.
    #[arg(long, default_value_t = ServerConfig::default().max_connections_per_address)]
    max_connections_per_address: usize,
    /// Poolable license types.
    #[arg(long, value_delimiter = ',', value_parser = parse_type, default_value = "AP,PEFNG,RFPROTECT,XSEC,ACR")]
    poolable: Vec<LicenseType>,
    /// Switch-specific (never pooled) license types.
    #[arg(long, value_delimiter = ',', value_parser = parse_type, default_value = "PEFV,WEBCC")]
    switch_specific: Vec<LicenseType>,
    /// Heartbeat interval clients use, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    heartbeat_interval_ms: u64,
    /// Heartbeats missed in a row after which a client is down.
    #[arg(long, default_value_t = 3)]
    missed_heartbeats: u32,
    /// Silence after which a client's contributions are removed, in seconds.
    #[arg(long, default_value_t = 30 * 24 * 3600)]
    silence_remove_s: u64,
    /// How often the table is swept, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    sweep_interval_ms: u64,
    /// Warn (log and status) about evaluation keys that stop counting within this many seconds.
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    expiry_warning_s: u64,
    /// Largest request frame accepted, in bytes.
    #[arg(long, default_value_t = vipool::proto::frame::DEFAULT_MAX_REQUEST)]
    max_frame: u32,
    /// Write the usage log for license audits to this file (JSON lines,
    /// 0600; see README "Usage log"). Default: none.
    #[arg(long)]
    usage_log: Option<PathBuf>,
    /// Rotate the usage log when it would grow beyond this many bytes.
    #[arg(long, default_value_t = vipool::usage::DEFAULT_MAX_BYTES)]
    usage_log_max_bytes: u64,
    /// Rotated usage logs kept (FILE.1 ... FILE.N).
    #[arg(long, default_value_t = vipool::usage::DEFAULT_KEEP)]
    usage_log_keep: u32,
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut types = BTreeMap::new();
    for t in args.poolable {
        types.insert(t, TypeKind::Poolable);
    }
    for t in args.switch_specific {
        if types.insert(t.clone(), TypeKind::SwitchSpecific).is_some() {
            anyhow::bail!("{t} is listed as both poolable and switch-specific");
        }
    }
    let table_config = TableConfig {
        types,
        heartbeat_interval_ms: args.heartbeat_interval_ms,
        missed_heartbeats_down: args.missed_heartbeats,
        silence_remove_ms: args.silence_remove_s.saturating_mul(1000),
    };
    anyhow::ensure!(
        args.key_files.is_empty() || args.serial.is_some(),
        "--key-file needs --serial: keys are bound to the server's serial"
    );
    let serial = args.serial.clone().unwrap_or_default();
    let (trusted, keys) = vipool::license::load_server_keys(&args.issuers, &args.key_files, &serial)
        .map_err(|problems| {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("license keys refused:\n{}", lines.join("\n"))
        })?;
    let table = LicenseTable::new(table_config);
    let applier = Arc::new(match &args.usage_log {
        Some(path) => {
            let config = vipool::usage::UsageConfig {
                path: path.clone(),
                max_bytes: args.usage_log_max_bytes,
                keep: args.usage_log_keep,
            };
            let usage = vipool::usage::UsageLog::open(&config, &args.node)
                .with_context(|| format!("opening the usage log {} (--usage-log)", path.display()))?;
            LocalApplier::with_usage(table, usage)
        }
        None => LocalApplier::new(table),
    });
    if let Some(serial) = &args.serial {
        let announce = Command::ServerSerial {
            server: args.node.clone(),
            serial: serial.clone(),
        };
        applier.propose(announce).await?.context("announcing --serial")?;
    }
    // The table counts keys of the issuers it recorded only (as a pair's
    // VIP holder proposes its own before its keys).
    let issuers = Command::Issuers {
        issuers: trusted.by_name_text(),
        by: Actor::Server(args.node.clone()),
    };
    applier
        .propose(issuers)
        .await?
        .context("recording the trusted issuers")?;
    let now = applier.stamp();
    for entry in keys {
        if !entry.counts_at(now) {
            tracing::warn!(key_id = %entry.key.key_id, "key not installed: expired, or not valid yet");
            continue;
        }
        let key_id = entry.key.key_id.clone();
        let command = Command::InstallServerKey {
            now_ms: now,
            server: args.node.clone(),
            key: entry.key,
            by: Actor::Server(args.node.clone()),
        };
        applier
            .propose(command)
            .await?
            .with_context(|| format!("installing key {key_id}"))?;
    }
    let tls = if args.insecure_plaintext {
        None
    } else {
        let cert = args.cert.clone().context(
            "--cert (this server's certificate, `vipool pki member`) or --insecure-plaintext is required",
        )?;
        let key = args.key.clone().unwrap_or_else(|| cert.with_extension("key"));
        let identity = cluster::tls::Identity::load(&args.ca, &cert, &key).with_context(|| {
            format!(
                "this server's TLS files (--ca {}, --cert {}, --key {}): make them with \
                 `vipool pki init --dir DIR` and `vipool pki member --dir DIR --name NAME`",
                args.ca.display(),
                cert.display(),
                key.display()
            )
        })?;
        Some(vipool::tls::ServerTls::new(&identity)?)
    };
    let config = ServerConfig {
        node: args.node,
        vip: args.vip,
        max_frame: args.max_frame,
        max_connections: args.max_connections.max(1),
        sweep_interval: Duration::from_millis(args.sweep_interval_ms.max(1)),
        expiry_warning: Duration::from_secs(args.expiry_warning_s),
        tls,
        max_connections_per_address: args.max_connections_per_address.max(1),
        trusted,
        limits: RequestLimits {
            max_clients_per_source: args.max_clients_per_source.max(1),
            registrations_per_s_per_source: args.registrations_per_s_per_source.max(1),
            requests_per_s_per_client: args.requests_per_s_per_client.max(1),
            request_burst_per_client: args.request_burst_per_client.max(1),
        },
        ..ServerConfig::default()
    };
    let listener =
        vipool::server::listen_for_clients(args.listen, config.max_connections, "--max-connections")
            .with_context(|| format!("listening on {}", args.listen))?;
    let operator = TcpListener::bind(args.operator_listen)
        .await
        .with_context(|| format!("listening on {}", args.operator_listen))?;
    info!(
        listen = %listener.local_addr()?, operator = %operator.local_addr()?, node = %config.node,
        tls = config.tls.is_some(), "license server up (standalone)"
    );
    let (_serving_tx, serving) = watch::channel(true);
    let shutdown = CancellationToken::new();
    let server = Server::new(applier, config, serving, shutdown.clone());
    let stop = shutdown.clone();
    let signals = tokio::spawn(async move {
        let reason = terminated().await;
        info!(?reason, "stopping");
        stop.cancel();
    });
    let result = server
        .run_on(vec![(listener, Port::Client), (operator, Port::Operator)])
        .await;
    signals.abort();
    result.context("serving")
}
