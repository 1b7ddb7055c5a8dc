//! Argument parsing shared by the license subcommands.

use std::collections::BTreeMap;

use tokio::signal::unix::{signal, SignalKind};
use vipool::table::LicenseType;

/// Parses `AP=16,PEFNG=16` (case-insensitive types) into counts per type.
pub fn parse_counts(s: &str) -> Result<BTreeMap<LicenseType, u32>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, count) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected TYPE=N"))?;
        let count: u32 = count.trim().parse().map_err(|e| format!("{part:?}: {e}"))?;
        if name.trim().is_empty() {
            return Err(format!("{part:?}: empty type"));
        }
        *out.entry(LicenseType::new(name)).or_default() += count;
    }
    Ok(out)
}

/// Parses one type name.
pub fn parse_type(s: &str) -> Result<LicenseType, String> {
    if s.trim().is_empty() {
        return Err("empty license type".into());
    }
    Ok(LicenseType::new(s))
}

/// Resolves on SIGINT or SIGTERM, with the signal's name.
pub async fn terminated() -> anyhow::Result<&'static str> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_and_refuse_garbage() {
        let counts = parse_counts("ap=16, PEFNG=2,AP=1").unwrap();
        assert_eq!(counts[&LicenseType::new("AP")], 17);
        assert_eq!(counts[&LicenseType::new("PEFNG")], 2);
        assert!(parse_counts("AP").is_err());
        assert!(parse_counts("AP=x").is_err());
        assert!(parse_counts("=3").is_err());
        assert!(parse_counts("").unwrap().is_empty());
    }
}
