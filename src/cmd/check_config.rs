//! `vipool check-config FILE`: load and validate a node or witness
//! configuration and the files it names (the TLS files; on a server the
//! `[notify]` scripts, the `[[track.script]]` programs (a tracked
//! interface missing on this host is a warning), and the trusted issuers and its key files, every
//! key verified: issuer trusted, signature, bound to `node.serial`, not
//! expired), then print it with
//! every default filled in (like `keepalived -t`). Exits 0 when the node
//! could start with it; otherwise prints every problem, each naming its
//! field or file (and line), and exits non-zero.

use std::io::Write;
use std::path::PathBuf;

use clap::Args as ClapArgs;
use vipool::config::{AnyConfig, Config};
use vipool::license::format_utc;

/// Options of `vipool check-config`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The configuration file (a server's or a witness's).
    file: PathBuf,
    /// Only check: print nothing when the file is usable.
    #[arg(long, short)]
    quiet: bool,
    /// Check the file alone, not the certificate, key, issuers and key
    /// files it names (for example configurations checked away from their
    /// hosts).
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
        if let AnyConfig::Server(server) = &config {
            if let Err(problems) = server.notify.check_files() {
                let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                eprintln!("{path}: configuration refused:\n{}", lines.join("\n"));
                std::process::exit(1);
            }
            match server.track.check_files() {
                Ok(notes) => warnings.extend(notes.into_iter().map(|n| format!("# warning: {n}"))),
                Err(problems) => {
                    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                    eprintln!("{path}: configuration refused:\n{}", lines.join("\n"));
                    std::process::exit(1);
                }
            }
            match license_keys(server) {
                Ok(mut notes) => warnings.append(&mut notes),
                Err(problems) => {
                    eprintln!("{path}: configuration refused:\n{}", problems.join("\n"));
                    std::process::exit(1);
                }
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

/// Loads the trusted issuers and the key files and verifies every key as
/// the node will: problems (an untrusted issuer, a bad signature, another
/// serial, an expired key) refuse the file; a key valid only from a later
/// date is a warning.
fn license_keys(config: &Config) -> Result<Vec<String>, Vec<String>> {
    let (_, keys) = config
        .load_server_keys()
        .map_err(|e| e.problems().iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let now_ms = vipool::clock::now_ms();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    for entry in &keys {
        let at = format!(
            "{}, line {}: license key {}",
            entry.path.display(),
            entry.line,
            entry.key.key_id
        );
        if entry.key.is_expired(now_ms) {
            let expired = entry.key.key.expires_at_ms.unwrap_or_default() / 1000;
            problems.push(format!(
                "license.key_files: {at} expired at {}: it no longer counts; remove the line",
                format_utc(expired)
            ));
        } else if now_ms < entry.not_before_ms {
            warnings.push(format!(
                "# warning: {at} counts only from {}",
                format_utc(entry.not_before_ms / 1000)
            ));
        }
    }
    if problems.is_empty() {
        if keys.is_empty() {
            warnings.push("# warning: no license keys: this server adds nothing to the pool".into());
        }
        Ok(warnings)
    } else {
        Err(problems)
    }
}
