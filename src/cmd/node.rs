//! `vipool node --config FILE [--rejoin]`: one server of the pair in the
//! foreground.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use tracing::info;
use vipool::config::Config;

use super::license_args::terminated;
use super::reload;

/// Options of `vipool node`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The node's configuration file (TOML; `vipool check-config` explains it).
    #[arg(long)]
    config: PathBuf,
    /// Start as an empty member that rebuilds from its peer: the raft log
    /// (data_dir/raft.redb) is moved aside (renamed, never deleted) and an
    /// empty one waits for the leader's snapshot. For a member whose store
    /// was lost or damaged.
    #[arg(long)]
    rejoin: bool,
}

/// Runs the node until SIGTERM or SIGINT, then stops gracefully: the VIP
/// and raft leadership go to the peer before it exits. SIGHUP reloads the
/// log filter, the issuers, the key files and the table settings, and
/// names what else changed and needs a restart (see `reload`).
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config =
        Config::load(&args.config).with_context(|| format!("configuration {}", args.config.display()))?;
    let (reloader, reloads) = vipool::node::reload_channel();
    let running = reload::Running {
        path: args.config.clone(),
        config: vipool::config::AnyConfig::Server(config.clone()),
        node: Some(reloader),
        tls: reload::TlsFiles::read(&vipool::config::AnyConfig::Server(config.clone())),
    };
    reload::apply_log_filter(&running.config);
    tokio::spawn(reload::on_hangup(running));
    let stop = async {
        match terminated().await {
            Ok(signal) => info!(signal, "stopping"),
            Err(e) => {
                tracing::error!(error = %e, "cannot wait for signals; stopping");
            }
        }
    };
    let start = vipool::node::Start {
        config_file: args.config,
        rejoin: args.rejoin,
    };
    vipool::node::run(config, start, stop, reloads).await?;
    Ok(())
}
