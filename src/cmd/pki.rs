//! `vipool pki`: the pair's own certificate authority.
//!
//! ```text
//! vipool pki init   --dir pki --cluster-id 1      # ca.crt, ca.key
//! vipool pki member --dir pki --name primary      # primary.crt, primary.key
//! vipool pki member --dir pki --name backup
//! vipool pki member --dir pki --name witness --witness
//! vipool pki switch --dir pki --id sw-17 --serial SN0017 --out switches
//! vipool pki operator --dir pki --name alice
//! vipool pki show pki/backup.crt
//! ```
//!
//! Copy `ca.crt`, `NAME.crt` and `NAME.key` to each member (by default
//! into /etc/vipool/pki), each switch's files to the switch; keep `ca.key`
//! with the operator.

use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Args as ClapArgs, Subcommand};
use vipool::pki::{self, Ca, CertInfo};

/// Options of `vipool pki`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the pair's CA: DIR/ca.crt and DIR/ca.key (mode 0600, never overwritten).
    Init {
        /// Where the CA's files go (created 0700).
        #[arg(long, default_value = pki::DEFAULT_DIR)]
        dir: PathBuf,
        /// The pair's `node.cluster_id`, written into the CA's name.
        #[arg(long)]
        cluster_id: u64,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a member's certificate and key (a server or the witness):
    /// OUT/NAME.crt and OUT/NAME.key, the certificate naming NAME.
    Member {
        /// The CA's directory (holding ca.crt and ca.key).
        #[arg(long, default_value = pki::DEFAULT_DIR)]
        dir: PathBuf,
        /// The member's `node.name`.
        #[arg(long)]
        name: String,
        /// Where to write the files (default: the CA's directory).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// A witness: its certificate does not name the license server, so
        /// switches never take it for one.
        #[arg(long)]
        witness: bool,
    },
    /// Issue a switch's certificate binding its client id and serial:
    /// OUT/ID.crt and OUT/ID.key. Replacing a switch (same id, new serial)
    /// is a new certificate.
    Switch {
        /// The CA's directory (holding ca.crt and ca.key).
        #[arg(long, default_value = pki::DEFAULT_DIR)]
        dir: PathBuf,
        /// The switch's client id (printable, no spaces, at most 64 characters).
        #[arg(long)]
        id: String,
        /// The switch's serial number.
        #[arg(long)]
        serial: String,
        /// Where to write the files (default: the CA's directory).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// Issue an operator's certificate (for `vipool show` and the operator
    /// commands): OUT/NAME.crt and OUT/NAME.key.
    Operator {
        /// The CA's directory (holding ca.crt and ca.key).
        #[arg(long, default_value = pki::DEFAULT_DIR)]
        dir: PathBuf,
        /// The operator's name, logged with every change they make.
        #[arg(long)]
        name: String,
        /// Where to write the files (default: the CA's directory).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Print what a certificate file says: subject, names, issuer, validity.
    Show {
        /// A PEM certificate file.
        file: PathBuf,
    },
}

/// Runs the subcommand.
///
/// # Errors
/// Files cannot be read or written, or rcgen refused.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Init {
            dir,
            cluster_id,
            days,
        } => {
            Ca::create(&dir, cluster_id, days)?;
            println!(
                "created the CA of cluster {cluster_id}: {} and {} (keep ca.key with the operator, \
                 off the servers)",
                dir.join(pki::CA_CERT).display(),
                dir.join(pki::CA_KEY).display()
            );
        }
        Command::Member {
            dir,
            name,
            out,
            days,
            witness,
        } => {
            let ca = Ca::load(&dir)?;
            let out = out.unwrap_or_else(|| dir.clone());
            pki::create_private_dir(&out)?;
            let issued = if witness {
                ca.issue_witness(&name, days)?
            } else {
                ca.issue_member(&name, days)?
            };
            let (cert, key) = issued.write(&out, &name)?;
            println!(
                "issued member {name:?}: {} and {}; install them with {} on that member \
                 (default /etc/vipool/pki)",
                cert.display(),
                key.display(),
                dir.join(pki::CA_CERT).display()
            );
        }
        Command::Switch {
            dir,
            id,
            serial,
            out,
            days,
        } => {
            let ca = Ca::load(&dir)?;
            let out = out.unwrap_or_else(|| dir.clone());
            pki::create_private_dir(&out)?;
            let (cert, key) = ca
                .issue_switch(&id, &serial, days)?
                .write(&out, &pki::file_stem(&id))?;
            println!(
                "issued switch {id:?} (serial {serial}): {} and {}; install them with {} on the switch",
                cert.display(),
                key.display(),
                dir.join(pki::CA_CERT).display()
            );
        }
        Command::Operator { dir, name, out, days } => {
            let ca = Ca::load(&dir)?;
            let out = out.unwrap_or_else(|| dir.clone());
            pki::create_private_dir(&out)?;
            let (cert, key) = ca
                .issue_operator(&name, days)?
                .write(&out, &pki::file_stem(&name))?;
            println!(
                "issued operator {name:?}: {} and {}",
                cert.display(),
                key.display()
            );
        }
        Command::Show { file } => {
            let pem = std::fs::read(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let info = CertInfo::from_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            print!("{}", describe(&info));
        }
    }
    Ok(())
}

fn describe(info: &CertInfo) -> String {
    let date = |t: SystemTime| {
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
            .map(|d| format!("{} {:02}:{:02} UTC", d.date(), d.hour(), d.minute()))
            .unwrap_or_else(|_| "?".into())
    };
    let kind = if info.is_ca {
        "CA".to_owned()
    } else if !info.dns_names.is_empty() {
        format!("member, names {}", info.dns_names.join(", "))
    } else {
        match &info.client {
            Some(who) => who.to_string(),
            None => "neither a member's, a switch's nor an operator's".to_owned(),
        }
    };
    format!(
        "subject:   {}\nissuer:    {}\nkind:      {kind}\nvalid:     {} to {} ({} days left)\n",
        info.subject,
        info.issuer,
        date(info.not_before),
        date(info.not_after),
        info.remaining().as_secs() / 86_400
    )
}
