//! `vipool witness --config FILE`: the optional vote-only third member.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use tracing::info;
use vipool::config::WitnessConfig;

use super::license_args::terminated;

/// Options of `vipool witness`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The witness's configuration file (TOML: `[node]` and `[cluster]` only).
    #[arg(long)]
    config: PathBuf,
}

/// Runs the witness until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = WitnessConfig::load(&args.config)
        .with_context(|| format!("configuration {}", args.config.display()))?;
    let stop = async {
        match terminated().await {
            Ok(signal) => info!(signal, "stopping"),
            Err(e) => tracing::error!(error = %e, "cannot wait for signals; stopping"),
        }
    };
    vipool::node::run_witness(config, stop).await?;
    Ok(())
}
