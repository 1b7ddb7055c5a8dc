//! `vipool witness --config FILE [--rejoin]`: the optional vote-only third
//! member.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use tracing::info;
use vipool::config::WitnessConfig;

use super::license_args::terminated;
use super::reload;

/// Options of `vipool witness`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The witness's configuration file (TOML: `[node]` and `[cluster]` only).
    #[arg(long)]
    config: PathBuf,
    /// Start as an empty member that rebuilds from the pair (see `vipool
    /// node --rejoin`).
    #[arg(long)]
    rejoin: bool,
}

/// Runs the witness until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = WitnessConfig::load(&args.config)
        .with_context(|| format!("configuration {}", args.config.display()))?;
    let running = reload::Running {
        path: args.config.clone(),
        config: vipool::config::AnyConfig::Witness(config.clone()),
        node: None,
        tls: reload::TlsFiles::read(&vipool::config::AnyConfig::Witness(config.clone())),
    };
    reload::apply_log_filter(&running.config);
    tokio::spawn(reload::on_hangup(running));
    let stop = async {
        match terminated().await {
            Ok(signal) => info!(signal, "stopping"),
            Err(e) => tracing::error!(error = %e, "cannot wait for signals; stopping"),
        }
    };
    let start = vipool::node::Start {
        config_file: args.config,
        rejoin: args.rejoin,
    };
    vipool::node::run_witness(config, start, stop).await?;
    Ok(())
}
