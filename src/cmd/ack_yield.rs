//! `vipool ack-yield --config FILE [NAME | --all]`: acknowledges the files a
//! split-brain yield left in the data dir (`yielded-*.json`), so that
//! `vipool show status` stops warning about them. Without NAME or `--all`
//! it lists them and changes nothing.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use vipool::config::AnyConfig;
use vipool::node::yields;

/// Options of `vipool ack-yield`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The member's configuration file (a server's or a witness's): its data_dir holds the files.
    #[arg(long)]
    config: PathBuf,
    /// The file to acknowledge (its name in the data dir, as `show status` gives it).
    #[arg(conflicts_with = "all")]
    name: Option<String>,
    /// Acknowledge every unacknowledged yield file.
    #[arg(long)]
    all: bool,
}

/// How many discarded entries are printed per file.
const SHOWN: usize = 20;

/// Lists, or acknowledges (renames to `NAME.acknowledged`, never deletes)
/// and prints what was acknowledged.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config =
        AnyConfig::load(&args.config).with_context(|| format!("configuration {}", args.config.display()))?;
    let dir = &config.node().data_dir;
    let pending = yields::unacknowledged(dir).with_context(|| format!("listing {}", dir.display()))?;
    let names: Vec<String> = match (&args.name, args.all) {
        (Some(name), _) => vec![name.clone()],
        (None, true) => pending.iter().map(|f| f.name.clone()).collect(),
        (None, false) => {
            if pending.is_empty() {
                println!("no unacknowledged split-brain yield files in {}", dir.display());
            } else {
                println!(
                    "{} unacknowledged split-brain yield file(s) in {}:",
                    pending.len(),
                    dir.display()
                );
                for f in &pending {
                    println!("{}", yields::describe(f, SHOWN));
                }
                println!(
                    "acknowledge one with `vipool ack-yield --config {} NAME`, or all with --all",
                    args.config.display()
                );
            }
            return Ok(());
        }
    };
    if names.is_empty() {
        println!("no unacknowledged split-brain yield files in {}", dir.display());
    }
    for name in names {
        let f = yields::acknowledge(dir, &name)?;
        println!("acknowledged {}", yields::describe(&f, SHOWN));
        println!(
            "  (renamed to {}{}; the writes listed are not in the table)",
            f.path.display(),
            yields::ACKNOWLEDGED
        );
    }
    Ok(())
}
