//! `vipool license`: make issuers, issue signed license keys, check them.
//!
//! ```text
//! vipool license keygen --name acme --out issuers          # acme.key (secret), acme.pub
//! vipool license issue --issuer issuers/acme.key --type AP --count 16 --serial CV0012345
//! vipool license issue --issuer issuers/acme.key --type PEFNG --count 8 --serial CV0012345 --days 90
//! vipool license verify vpk1.… --issuer issuers/acme.pub --serial CV0012345
//! vipool license verify @/etc/vipool/keys --issuer acme.pub --serial CV0012345
//! vipool license show vpk1.…
//! ```
//!
//! KEY is a key line itself, `-` for the key lines on standard input, or
//! `@FILE` for every key of a key file (one key per line, `#` comments).
//! `acme.key` stays with whoever issues keys; servers get `acme.pub`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{anyhow, bail};
use clap::{Args as ClapArgs, Subcommand};
use rand_core::RngCore;
use vipool::license::{self, format_utc, IssuerKey, KeyStatement, SignedKey, TrustedIssuers, MAX_KEY_FILE};
use vipool::table::LicenseType;

use super::license_args::parse_type;

/// Issued keys start counting this long before their issue time unless
/// told otherwise: for server clocks a few minutes behind the issuer's
/// (as `vipool pki` backdates certificates).
const CLOCK_SLACK_S: u64 = 600;

/// Options of `vipool license`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a new issuer: OUT/NAME.key (its secret key, keep it off the
    /// servers) and OUT/NAME.pub (what servers trust); both mode 0600,
    /// never overwritten.
    Keygen {
        /// The issuer's name: lowercase letters, digits and '-'.
        #[arg(long)]
        name: String,
        /// Where to write the files (created 0700 if missing).
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Issue a key and print its line on standard output.
    Issue {
        /// The issuer's secret key (NAME.key from `keygen`).
        #[arg(long)]
        issuer: PathBuf,
        /// The license type, e.g. AP, PEFNG.
        #[arg(long = "type", value_parser = parse_type)]
        license_type: LicenseType,
        /// How many licenses.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
        /// The serial of the switch or server the key is for.
        #[arg(long)]
        serial: String,
        /// The key's id (default: 16 random hex digits). Each key needs its own.
        #[arg(long)]
        key_id: Option<String>,
        /// The key counts from 00:00 UTC of this day (YYYY-MM-DD; default:
        /// now, less ten minutes for clocks behind).
        #[arg(long, value_parser = parse_date)]
        not_before: Option<u64>,
        /// An evaluation key that stops counting at 00:00 UTC of this day (YYYY-MM-DD).
        #[arg(long, value_parser = parse_date, conflicts_with = "days")]
        expires: Option<u64>,
        /// An evaluation key that stops counting N days after it starts (or after now).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        days: Option<u32>,
    },
    /// Check keys as a server would: signed by a trusted issuer, bound to
    /// SERIAL, valid now. Exits 0 if every key is valid, 1 otherwise.
    Verify {
        /// A key line, `-` (key lines on standard input) or `@FILE` (a key file).
        key: String,
        /// A trusted issuer's public key file (NAME.pub); repeat for several.
        #[arg(long = "issuer", required = true)]
        issuers: Vec<PathBuf>,
        /// The serial of the switch or server presenting the key (default:
        /// not checked).
        #[arg(long)]
        serial: Option<String>,
    },
    /// Print what keys say, WITHOUT checking their signatures.
    Show {
        /// A key line, `-` (key lines on standard input) or `@FILE` (a key file).
        key: String,
    },
}

/// Runs the subcommand. On failure it prints `Error: ` and the message
/// (which says what to do) on standard error and exits 1: an operator
/// reads one message, never a backtrace nor the same cause twice.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Err(e) = execute(args) {
        eprintln!("Error: {e}");
        std::process::exit(1);
    }
    Ok(())
}

fn execute(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Keygen { name, out } => {
            let issuer = IssuerKey::generate(&name)?;
            let (key, public) = issuer.write(&out)?;
            println!(
                "made issuer {name:?}: {} (secret: keep it with whoever issues keys, never on the \
                 servers) and {} (give it to the servers to trust)",
                key.display(),
                public.display()
            );
            Ok(())
        }
        Command::Issue {
            issuer,
            license_type,
            count,
            serial,
            key_id,
            not_before,
            expires,
            days,
        } => {
            let issuer = IssuerKey::load(&issuer)?;
            let now = now_s();
            let start = not_before.unwrap_or(now.saturating_sub(CLOCK_SLACK_S));
            let expires = match (expires, days) {
                (Some(at), _) => Some(at),
                (None, Some(days)) => {
                    Some(not_before.unwrap_or(now).saturating_add(u64::from(days) * 86_400))
                }
                (None, None) => None,
            };
            if let Some(at) = expires.filter(|at| *at <= now) {
                bail!(
                    "the key would have expired already ({}): give a later --expires, or more --days",
                    format_utc(at)
                );
            }
            let statement = KeyStatement {
                key_id: key_id.unwrap_or_else(random_key_id),
                license_type,
                count,
                serial,
                not_before: start,
                expires,
                issuer: issuer.name().to_owned(),
            };
            let key = issuer.sign(statement)?;
            println!("{key}");
            eprintln!("issued {}", summary(key.statement()));
            Ok(())
        }
        Command::Verify { key, issuers, serial } => verify(&key, &issuers, serial.as_deref()),
        Command::Show { key } => {
            let keys = read_keys(&key)?;
            for (n, key) in keys.iter().enumerate() {
                if n > 0 {
                    println!();
                }
                print!("{}", describe(key.statement()));
            }
            Ok(())
        }
    }
}

fn verify(key: &str, issuers: &[PathBuf], serial: Option<&str>) -> anyhow::Result<()> {
    let trusted = TrustedIssuers::load(issuers)?;
    let keys = read_keys(key)?;
    let now = now_s();
    let mut refused = Vec::new();
    for key in &keys {
        match key.verify(&trusted, serial.unwrap_or(key.serial()), now) {
            Ok(statement) => {
                let unchecked = if serial.is_none() {
                    " (serial not checked: pass --serial)"
                } else {
                    ""
                };
                println!("valid: {}{unchecked}", summary(statement));
            }
            Err(e) => refused.push(e),
        }
    }
    match refused.len() {
        0 => Ok(()),
        1 if keys.len() == 1 => Err(anyhow!("refused: {}", refused.remove(0))),
        n => {
            for e in &refused {
                eprintln!("refused: {e}");
            }
            bail!("{n} of {} keys refused", keys.len())
        }
    }
}

/// The keys KEY names: one line, `-` for standard input, `@FILE`.
pub fn read_keys(arg: &str) -> anyhow::Result<Vec<SignedKey>> {
    let keys = if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .take(MAX_KEY_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| anyhow!("reading key lines from standard input: {e}"))?;
        if text.len() as u64 > MAX_KEY_FILE {
            bail!("standard input is larger than {MAX_KEY_FILE} bytes: pass key lines");
        }
        license::parse_key_file(Path::new("standard input"), &text)?
            .into_iter()
            .map(|(_, key)| key)
            .collect()
    } else if let Some(file) = arg.strip_prefix('@') {
        license::load_key_file(Path::new(file))?
    } else {
        vec![arg.trim().parse::<SignedKey>()?]
    };
    if keys.is_empty() {
        let source = if arg == "-" {
            "standard input"
        } else {
            arg.trim_start_matches('@')
        };
        bail!("no key in {source}: a key line starts with \"vpk1.\"");
    }
    Ok(keys)
}

/// One line: what the key is worth, for whom, by whom, how long.
fn summary(s: &KeyStatement) -> String {
    let until = match s.expires {
        Some(at) => format!("evaluation key until {}", format_utc(at)),
        None => "permanent".to_owned(),
    };
    format!(
        "key {}: {} {} for serial {}, issued by {}, from {}, {until}",
        s.key_id,
        s.count,
        s.license_type,
        s.serial,
        s.issuer,
        format_utc(s.not_before)
    )
}

fn describe(s: &KeyStatement) -> String {
    let expires = match s.expires {
        Some(at) => format!("{} (evaluation key)", format_utc(at)),
        None => "never (permanent key)".to_owned(),
    };
    format!(
        "key id:     {}\ntype:       {}\ncount:      {}\nserial:     {}\nissuer:     {}\n\
         valid from: {}\nexpires:    {expires}\nsignature:  NOT CHECKED (show only decodes): check it with \
         `vipool license verify KEY --issuer {}.pub --serial {}`\n",
        s.key_id,
        s.license_type,
        s.count,
        s.serial,
        s.issuer,
        format_utc(s.not_before),
        s.issuer,
        s.serial
    )
}

fn random_key_id() -> String {
    format!("{:016x}", rand_core::OsRng.next_u64())
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `YYYY-MM-DD` as the Unix second at which that day starts (UTC).
fn parse_date(s: &str) -> Result<u64, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date =
        time::Date::parse(s.trim(), format).map_err(|e| format!("{s:?} is not a date YYYY-MM-DD ({e})"))?;
    u64::try_from(date.midnight().assume_utc().unix_timestamp()).map_err(|_| format!("{s:?} is before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_days() {
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        assert_eq!(parse_date("2027-01-31"), Ok(1_801_353_600));
        assert_eq!(parse_date("9999-12-31"), Ok(license::MAX_TIME_S - 86_399));
        for bad in [
            "2027-02-30",
            "27-01-31",
            "2027/01/31",
            "1969-12-31",
            "",
            "tomorrow",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_key_ids_are_16_hex_digits_and_differ() {
        let (a, b) = (random_key_id(), random_key_id());
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }
}
