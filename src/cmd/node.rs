//! `vipool node --config FILE`: one server of the pair in the foreground.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use tracing::info;
use vipool::config::Config;

use super::license_args::terminated;

/// Options of `vipool node`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The node's configuration file (TOML; `vipool check-config` explains it).
    #[arg(long)]
    config: PathBuf,
}

/// Runs the node until SIGTERM or SIGINT, then stops gracefully: the VIP
/// and raft leadership go to the peer before it exits.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config =
        Config::load(&args.config).with_context(|| format!("configuration {}", args.config.display()))?;
    let stop = async {
        match terminated().await {
            Ok(signal) => info!(signal, "stopping"),
            Err(e) => {
                tracing::error!(error = %e, "cannot wait for signals; stopping");
            }
        }
    };
    vipool::node::run(config, stop).await?;
    Ok(())
}
