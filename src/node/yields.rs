//! The files a split-brain yield leaves in the data dir,
//! `yielded-<unix-ms>-term<T>.json`: everything the member discarded, kept
//! by the cluster's `Disk` before it discarded anything. `vipool show
//! status` shows a warning for each until an operator has read it and
//! acknowledged it with `vipool ack-yield`, which renames it to
//! `<name>.acknowledged` (kept, never deleted).

use std::fs;
use std::path::{Path, PathBuf};

use cluster::DiscardedLog;

/// What an acknowledged file's name ends with.
pub const ACKNOWLEDGED: &str = ".acknowledged";

/// One yield file.
#[derive(Debug)]
pub struct YieldFile {
    /// Its name in the data dir.
    pub name: String,
    /// Its path.
    pub path: PathBuf,
    /// What it holds, or why it cannot be read.
    pub log: Result<DiscardedLog, String>,
}

/// Why a yield file was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    /// The name is not one a yield writes.
    #[error("{0:?} is not the name of a yield file (yielded-<unix-ms>-term<T>.json, no directory)")]
    NotAYieldFile(String),
    /// No such file waits for an acknowledgement.
    #[error("no unacknowledged yield file {name} in {}", dir.display())]
    NotFound {
        /// The name asked for.
        name: String,
        /// The data dir.
        dir: PathBuf,
    },
    /// The file could not be renamed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// To what.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn is_yield_name(name: &str) -> bool {
    name.starts_with("yielded-") && name.ends_with(".json") && !name.contains('/')
}

fn read(dir: &Path, name: &str) -> YieldFile {
    let path = dir.join(name);
    let log = fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice::<DiscardedLog>(&bytes).map_err(|e| e.to_string()));
    YieldFile {
        name: name.to_string(),
        path,
        log,
    }
}

/// The yield files in `dir` that no operator has acknowledged, oldest first
/// (none if `dir` does not exist).
///
/// # Errors
/// `dir` cannot be listed.
pub fn unacknowledged(dir: &Path) -> std::io::Result<Vec<YieldFile>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if is_yield_name(&name) {
            names.push(name);
        }
    }
    // The names start with the time of the yield; same width for centuries.
    names.sort();
    Ok(names.iter().map(|n| read(dir, n)).collect())
}

/// The status warnings for `dir`'s unacknowledged yield files.
pub fn warnings(dir: &Path, config_file: &Path) -> Vec<String> {
    match unacknowledged(dir) {
        Ok(files) => files.iter().map(|f| warning(f, config_file)).collect(),
        Err(e) => vec![format!(
            "cannot list {} for split-brain yield files: {e}",
            dir.display()
        )],
    }
}

fn warning(f: &YieldFile, config_file: &Path) -> String {
    let ack = format!("`vipool ack-yield --config {} {}`", config_file.display(), f.name);
    match &f.log {
        Ok(log) => format!(
            "SPLIT-BRAIN YIELD: this member yielded to member {} (its term {}, theirs {}) and discarded \
             its log, committed up to {} ({} committed entries after its snapshot at {}); what it \
             discarded is kept in {}: review it (those writes are not in the table), then {ack}",
            log.winner,
            log.term,
            log.winner_term,
            log.commit,
            log.committed_entries,
            log.snapshot.as_ref().map_or(0, |s| s.index),
            f.path.display()
        ),
        Err(e) => format!(
            "SPLIT-BRAIN YIELD: {} cannot be read ({e}); review it by hand, then {ack}",
            f.path.display()
        ),
    }
}

/// What a yield file holds, for an operator: a summary line and the first
/// `max` committed entries.
pub fn describe(f: &YieldFile, max: usize) -> String {
    match &f.log {
        Ok(log) => {
            let (shown, more) = log.committed_summary(max);
            let mut out = format!(
                "{}: member {} yielded to member {} (term {} against {}), discarded its log committed \
                 up to {}: snapshot at {}, {} committed entries after it",
                f.name,
                log.member,
                log.winner,
                log.term,
                log.winner_term,
                log.commit,
                log.snapshot.as_ref().map_or(0, |s| s.index),
                log.committed_entries
            );
            for line in shown {
                out.push_str("\n  ");
                out.push_str(&line);
            }
            if more > 0 {
                out.push_str(&format!("\n  ... and {more} more (see the file)"));
            }
            out
        }
        Err(e) => format!("{}: cannot be read ({e})", f.name),
    }
}

/// Marks the yield file `name` in `dir` as acknowledged: renames it to
/// `<name>.acknowledged` (the directory fsynced), and returns what it held.
///
/// # Errors
/// `name` is not a yield file's name, there is no such unacknowledged file,
/// or it cannot be renamed.
pub fn acknowledge(dir: &Path, name: &str) -> Result<YieldFile, AckError> {
    if !is_yield_name(name) {
        return Err(AckError::NotAYieldFile(name.to_string()));
    }
    let file = read(dir, name);
    if !file.path.is_file() {
        return Err(AckError::NotFound {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        });
    }
    let target = dir.join(format!("{name}{ACKNOWLEDGED}"));
    if target.exists() {
        return Err(AckError::Io {
            what: "acknowledging (the acknowledged name is taken)",
            path: target,
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        });
    }
    fs::rename(&file.path, &target).map_err(|source| AckError::Io {
        what: "renaming",
        path: file.path.clone(),
        source,
    })?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| AckError::Io {
            what: "syncing",
            path: dir.to_path_buf(),
            source,
        })?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::{DiscardedEntry, DISCARDED_FORMAT};

    fn log(term: u64) -> DiscardedLog {
        DiscardedLog {
            format: DISCARDED_FORMAT.into(),
            member: 2,
            winner: 1,
            term,
            winner_term: term + 1,
            yielded_at_unix_ms: 1_700_000_000_000,
            commit: 40,
            voters: vec![2],
            learners: vec![1],
            conf_index: 30,
            committed_entries: 2,
            snapshot: None,
            entries: (39..=41)
                .map(|index| DiscardedEntry {
                    index,
                    term,
                    entry_type: "EntryNormal".into(),
                    committed: index <= 40,
                    decoded: format!("acquire sw{index} 1 AP"),
                    data_hex: "00".into(),
                })
                .collect(),
        }
    }

    fn write(dir: &Path, name: &str, log: &DiscardedLog) {
        fs::write(dir.join(name), serde_json::to_vec(log).unwrap()).unwrap();
    }

    #[test]
    fn each_unacknowledged_yield_is_a_warning_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Path::new("/etc/vipool/node.toml");
        assert!(warnings(dir.path(), cfg).is_empty());
        write(dir.path(), "yielded-1700000000000-term5.json", &log(5));
        write(dir.path(), "yielded-1700000000500-term7.json", &log(7));
        fs::write(
            dir.path().join("yielded-1600000000000-term2.json.acknowledged"),
            b"{}",
        )
        .unwrap();
        fs::write(dir.path().join("raft.redb"), b"").unwrap();

        let w = warnings(dir.path(), cfg);
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(
            w[0].contains("yielded to member 1 (its term 5, theirs 6)"),
            "{}",
            w[0]
        );
        assert!(
            w[0].contains("committed up to 40 (2 committed entries after its snapshot at 0)"),
            "{}",
            w[0]
        );
        assert!(
            w[0].ends_with(
                "then `vipool ack-yield --config /etc/vipool/node.toml yielded-1700000000000-term5.json`"
            ),
            "{}",
            w[0]
        );

        let acked = acknowledge(dir.path(), "yielded-1700000000000-term5.json").unwrap();
        assert_eq!(acked.log.unwrap(), log(5));
        assert!(dir
            .path()
            .join("yielded-1700000000000-term5.json.acknowledged")
            .is_file());
        let w = warnings(dir.path(), cfg);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("term7"), "{}", w[0]);

        let err = acknowledge(dir.path(), "yielded-1700000000000-term5.json").expect_err("twice");
        assert!(matches!(err, AckError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn only_yield_files_can_be_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("raft.redb"), b"x").unwrap();
        for name in [
            "raft.redb",
            "../yielded-1-term1.json",
            "yielded-1-term1.json.acknowledged",
        ] {
            let err = acknowledge(dir.path(), name).expect_err(name);
            assert!(matches!(err, AckError::NotAYieldFile(_)), "{name}: {err:?}");
        }
        assert!(dir.path().join("raft.redb").is_file());
    }

    #[test]
    fn an_unreadable_yield_file_is_still_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("yielded-5-term1.json"), b"{ truncated").unwrap();
        let w = warnings(dir.path(), Path::new("w.toml"));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("cannot be read"), "{}", w[0]);
        assert!(
            w[0].contains("`vipool ack-yield --config w.toml yielded-5-term1.json`"),
            "{}",
            w[0]
        );
    }

    #[test]
    fn describe_lists_committed_entries() {
        let f = YieldFile {
            name: "yielded-1-term5.json".into(),
            path: "/d/yielded-1-term5.json".into(),
            log: Ok(log(5)),
        };
        let text = describe(&f, 1);
        assert!(
            text.starts_with("yielded-1-term5.json: member 2 yielded to member 1"),
            "{text}"
        );
        assert!(text.contains("\n  #39 (term 5) acquire sw39 1 AP"), "{text}");
        assert!(text.ends_with("... and 1 more (see the file)"), "{text}");
    }
}
