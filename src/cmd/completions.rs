//! `vipool completions SHELL` and `vipool manpages --out DIR`: generated
//! from the command-line definitions, so they always match `--help`. The
//! Debian package installs both.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args as ClapArgs, CommandFactory};

/// Options of `vipool completions`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Options of `vipool manpages`.
#[derive(Debug, ClapArgs)]
pub struct ManArgs {
    /// Where to write vipool.1 and one page per subcommand (vipool-node.1, ...).
    #[arg(long)]
    out: PathBuf,
}

/// Prints the completion script for a shell on stdout.
///
/// # Errors
/// Writing to stdout failed.
pub fn completions<C: CommandFactory>(args: Args) -> anyhow::Result<()> {
    let mut cmd = C::command();
    clap_complete::generate(args.shell, &mut cmd, "vipool", &mut std::io::stdout());
    Ok(())
}

/// Writes the man pages: vipool(1) and one per subcommand.
///
/// # Errors
/// The directory cannot be written.
pub fn manpages<C: CommandFactory>(args: ManArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    clap_mangen::generate_to(C::command(), &args.out)
        .with_context(|| format!("writing man pages into {}", args.out.display()))?;
    Ok(())
}
