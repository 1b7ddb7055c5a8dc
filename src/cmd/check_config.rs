//! `vipool check-config FILE`: load and validate a node or witness
//! configuration and the TLS files it names, then print it with every
//! default filled in (like `keepalived -t`). Exits 0 when the node could
//! start with it; otherwise prints every problem, each naming its field or
//! file, and exits non-zero.

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
    /// Check the file alone, not the certificate and key it names (for
    /// example configurations checked away from their hosts).
    #[arg(long)]
    syntax_only: bool,
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
    let node = config.node();
    let mut warnings = Vec::new();
    if !args.syntax_only {
        let (ca, cert, key) = config.tls().files(&node.name);
        match vipool::pki::member_identity(&ca, &cert, &key, &node.name) {
            Ok(member) => {
                let left = member.info.remaining();
                if left < vipool::pki::EXPIRY_WARNING {
                    warnings.push(format!(
                        "# warning: {} expires in {} days: issue a new one with `vipool pki member`",
                        cert.display(),
                        left.as_secs() / 86_400
                    ));
                }
            }
            Err(e) => {
                eprintln!("{path}: configuration refused:\ntls: {e}");
                std::process::exit(1);
            }
        }
    }
    if !args.quiet {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "# {path}: configuration OK: {} {:?} (id {}), cluster {}; every default filled in",
            config.role(),
            node.name,
            node.id,
            node.cluster_id
        )?;
        for w in &warnings {
            writeln!(out, "{w}")?;
        }
        out.write_all(config.to_toml().as_bytes())?;
        out.flush()?;
    }
    Ok(())
}
