//! `vipool check-config FILE`: load and validate a node or witness
//! configuration, then print it with every default filled in (like
//! `keepalived -t`). Exits 0 when the file is usable; otherwise prints every
//! problem, each naming its field, and exits non-zero.

use std::io::Write;
use std::path::PathBuf;

use clap::Args as ClapArgs;
use vipool::config::AnyConfig;

/// Options of `vipool check-config`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The configuration file (a server's or a witness's).
    file: PathBuf,
    /// Only check: print nothing when the file is usable.
    #[arg(long, short)]
    quiet: bool,
}

/// Checks the file and prints the effective configuration on stdout. A
/// refused file is reported on stderr, every problem on its own line, and
/// the process exits with status 1 (no backtrace, whatever RUST_BACKTRACE says).
///
/// # Errors
/// Writing to stdout failed.
pub fn run(args: Args) -> anyhow::Result<()> {
    let path = args.file.display();
    let config = match AnyConfig::load(&args.file) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{path}: configuration refused:\n{e}");
            std::process::exit(1);
        }
    };
    if !args.quiet {
        let node = config.node();
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "# {path}: configuration OK: {} {:?} (id {}), cluster {}; every default filled in",
            config.role(),
            node.name,
            node.id,
            node.cluster_id
        )?;
        out.write_all(config.to_toml().as_bytes())?;
        out.flush()?;
    }
    Ok(())
}
