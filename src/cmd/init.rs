//! `vipool init --config FILE`: creates the raft log of one member of a
//! brand-new pair, before its first start. Run it once on each member
//! (servers and witness), with their own configuration files.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use vipool::config::AnyConfig;

/// Options of `vipool init`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The member's configuration file (a server's or a witness's).
    #[arg(long)]
    config: PathBuf,
}

/// Creates `data_dir/raft.redb`, bootstrapped with every member of
/// `cluster.peers` as a voter. Refuses if a store is already there: a
/// member that has one either runs with it or rebuilds from its peer
/// (`--rejoin`), never starts over as a founder.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config =
        AnyConfig::load(&args.config).with_context(|| format!("configuration {}", args.config.display()))?;
    let path = vipool::node::init(&config)?;
    let node = config.node();
    let command = match config.role() {
        vipool::config::Role::Server => "node",
        vipool::config::Role::Witness => "witness",
    };
    println!(
        "created {}: the raft log of {} {:?} (id {}) in cluster {}, voters {:?}\n\
         start it with `vipool {command} --config {}`",
        path.display(),
        config.role(),
        node.name,
        node.id,
        node.cluster_id,
        config.cluster().initial_voters(),
        args.config.display()
    );
    Ok(())
}
