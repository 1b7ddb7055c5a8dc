//! A server's own keys: its key files (`[license] key_files`), each key
//! verified with the issuers it trusts (`[license] issuers`) against its
//! serial (`[node] serial`).
//!
//! Who signed a key and whom it is bound to does not change with time, so
//! it is verified once, when the files are read; whether the key counts
//! (its validity period) is asked again whenever the server compares its
//! keys in the table with its files ([`ServerKeyEntry::counts_at`]): an
//! evaluation key leaves the pool when it expires, a key valid from
//! tomorrow joins it tomorrow.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{parse_key_file, read_capped, KeyError, KeyFileError, TrustError, TrustedIssuers, MAX_KEY_FILE};
use crate::table::VerifiedKey;

/// Larger trust files are refused unread (as [`TrustedIssuers::load`] does).
const MAX_TRUST_FILE: u64 = 64 * 1024;

/// One key of a server's key files, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKeyEntry {
    /// The file it was read from.
    pub path: PathBuf,
    /// Its line, from 1.
    pub line: usize,
    /// What the table records of it.
    pub key: VerifiedKey,
    /// From when it counts, milliseconds since the Unix epoch.
    pub not_before_ms: u64,
}

impl ServerKeyEntry {
    /// Whether the key counts at `now_ms`: valid from `not_before_ms`, and
    /// an evaluation key only until it expires.
    pub fn counts_at(&self, now_ms: u64) -> bool {
        now_ms >= self.not_before_ms && !self.key.is_expired(now_ms)
    }
}

/// One reason a server's keys cannot be used, naming the file (and line).
#[derive(Debug, thiserror::Error)]
pub enum ServerKeysError {
    /// A trust file of `issuers` cannot be used.
    #[error("{source}")]
    Issuers {
        /// Its position in the list.
        index: usize,
        /// Why.
        source: TrustError,
    },
    /// A key file cannot be read, or a line of it is not a key.
    #[error("{source}")]
    File {
        /// Its position in the list.
        index: usize,
        /// Why.
        source: KeyFileError,
    },
    /// A key does not verify for this server.
    #[error("{}, line {line}: {source}", path.display())]
    Key {
        /// The file's position in the list.
        index: usize,
        /// The file.
        path: PathBuf,
        /// The key's line.
        line: usize,
        /// Why.
        source: KeyError,
    },
    /// A key id that another file already has.
    #[error(
        "{}, line {line}: key {key_id} is already in {}, line {first_line}: a key counts once, \
         remove one of the lines",
        path.display(), first_path.display()
    )]
    Duplicate {
        /// The file's position in the list.
        index: usize,
        /// The file.
        path: PathBuf,
        /// The line.
        line: usize,
        /// The key id.
        key_id: String,
        /// Where it was first.
        first_path: PathBuf,
        /// Its first line.
        first_line: usize,
    },
}

/// Loads the issuers a server trusts and its key files, and verifies each
/// key's issuer, signature and binding to `serial` (not its validity
/// period: see [`ServerKeyEntry::counts_at`]).
///
/// # Errors
/// Every problem found, each naming its file (and line).
pub fn load_server_keys(
    issuer_files: &[PathBuf],
    key_files: &[PathBuf],
    serial: &str,
) -> Result<(TrustedIssuers, Vec<ServerKeyEntry>), Vec<ServerKeysError>> {
    let mut problems = Vec::new();
    let mut trusted = TrustedIssuers::new();
    for (index, path) in issuer_files.iter().enumerate() {
        let added = read_capped(path, MAX_TRUST_FILE)
            .map_err(|source| TrustError::Read {
                path: path.clone(),
                source,
            })
            .and_then(|text| trusted.add_text(path, &text));
        if let Err(source) = added {
            problems.push(ServerKeysError::Issuers { index, source });
        }
    }
    let mut keys = Vec::new();
    let mut first: BTreeMap<String, (PathBuf, usize)> = BTreeMap::new();
    for (index, path) in key_files.iter().enumerate() {
        let lines = match read_key_file(path) {
            Ok(lines) => lines,
            Err(source) => {
                problems.push(ServerKeysError::File { index, source });
                continue;
            }
        };
        for (line, key) in lines {
            if let Some((first_path, first_line)) = first.get(key.id()) {
                problems.push(ServerKeysError::Duplicate {
                    index,
                    path: path.clone(),
                    line,
                    key_id: key.id().to_owned(),
                    first_path: first_path.clone(),
                    first_line: *first_line,
                });
                continue;
            }
            first.insert(key.id().to_owned(), (path.clone(), line));
            match key.verify_issue(&trusted, serial) {
                Ok(statement) => keys.push(ServerKeyEntry {
                    path: path.clone(),
                    line,
                    key: statement.verified_key(),
                    not_before_ms: statement.not_before_ms(),
                }),
                Err(source) => problems.push(ServerKeysError::Key {
                    index,
                    path: path.clone(),
                    line,
                    source,
                }),
            }
        }
    }
    if problems.is_empty() {
        Ok((trusted, keys))
    } else {
        Err(problems)
    }
}

fn read_key_file(path: &Path) -> Result<Vec<(usize, super::SignedKey)>, KeyFileError> {
    let text = read_capped(path, MAX_KEY_FILE).map_err(|source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_key_file(path, &text)
}

#[cfg(test)]
mod tests {
    use super::super::statement::tests::statement;
    use super::super::IssuerKey;
    use super::*;

    fn acme() -> IssuerKey {
        IssuerKey::from_secret_bytes("acme", &[7; 32]).unwrap()
    }

    /// A directory with acme.pub and a key file of `lines`.
    fn files(lines: &[String]) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let issuers = dir.path().join("acme.pub");
        std::fs::write(&issuers, format!("{}\n", acme().trusted())).unwrap();
        let keys = dir.path().join("primary.keys");
        std::fs::write(&keys, lines.join("\n")).unwrap();
        (dir, issuers, keys)
    }

    fn signed(key_id: &str, serial: &str, expires: Option<u64>) -> String {
        let mut s = statement();
        s.key_id = key_id.into();
        s.serial = serial.into();
        s.expires = expires;
        acme().sign(s).unwrap().to_string()
    }

    #[test]
    fn keys_that_verify_are_loaded_with_their_place() {
        let (_dir, issuers, keys) = files(&[
            "# primary".into(),
            signed("p-ap", "CV1", None),
            signed("p-eval", "CV1", Some(1_800_000_000)),
        ]);
        let (trusted, loaded) = load_server_keys(&[issuers], std::slice::from_ref(&keys), "CV1").unwrap();
        assert_eq!(trusted.len(), 1);
        assert_eq!(loaded.len(), 2);
        assert_eq!((loaded[0].path.clone(), loaded[0].line), (keys, 2));
        assert_eq!(loaded[0].key.key_id, "p-ap");
        assert_eq!(loaded[0].key.serial, "CV1");
        assert_eq!(loaded[0].key.issuer, "acme");
        assert_eq!(loaded[0].not_before_ms, 1_700_000_000_000);
        // Validity is asked at each comparison, not at loading.
        let eval = &loaded[1];
        assert!(!eval.counts_at(1_700_000_000_000 - 1));
        assert!(eval.counts_at(1_700_000_000_000));
        assert!(!eval.counts_at(1_800_000_000_000));
    }

    #[test]
    fn every_problem_names_its_file_and_line() {
        let other = IssuerKey::from_secret_bytes("globex", &[8; 32]).unwrap();
        let mut s = statement();
        s.issuer = "globex".into();
        s.serial = "CV1".into();
        s.key_id = "g".into();
        let untrusted = other.sign(s).unwrap().to_string();
        let (dir, issuers, keys) = files(&[signed("a", "CV1", None), signed("b", "CV9", None), untrusted]);
        let more = dir.path().join("more.keys");
        std::fs::write(&more, format!("{}\nnot a key\n", signed("b2", "CV1", None))).unwrap();
        let dup = dir.path().join("dup.keys");
        std::fs::write(&dup, format!("# again\n{}\n", signed("a", "CV1", None))).unwrap();
        let missing = dir.path().join("missing.pub");
        let errs = load_server_keys(&[issuers, missing], &[keys.clone(), more, dup], "CV1").unwrap_err();
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 5, "{msgs:#?}");
        assert!(
            matches!(errs[0], ServerKeysError::Issuers { index: 1, .. }),
            "{msgs:#?}"
        );
        assert!(msgs[0].contains("missing.pub"), "{msgs:#?}");
        let k = keys.display().to_string();
        assert!(
            matches!(
                errs[1],
                ServerKeysError::Key {
                    index: 0,
                    line: 2,
                    ..
                }
            ),
            "{msgs:#?}"
        );
        assert!(msgs[1].starts_with(&format!("{k}, line 2: ")), "{msgs:#?}");
        assert!(msgs[1].contains("bound to serial \"CV9\""), "{msgs:#?}");
        assert!(msgs[2].starts_with(&format!("{k}, line 3: ")), "{msgs:#?}");
        assert!(msgs[2].contains("\"globex\", which is not trusted"), "{msgs:#?}");
        // A line that is not a key refuses its whole file, naming the line.
        assert!(
            matches!(errs[3], ServerKeysError::File { index: 1, .. }),
            "{msgs:#?}"
        );
        assert!(msgs[3].contains("more.keys, line 2: "), "{msgs:#?}");
        assert!(
            matches!(
                errs[4],
                ServerKeysError::Duplicate {
                    index: 2,
                    line: 2,
                    first_line: 1,
                    ..
                }
            ),
            "{msgs:#?}"
        );
        assert!(
            msgs[4].contains("dup.keys, line 2: key a is already in")
                && msgs[4].contains("primary.keys, line 1"),
            "{msgs:#?}"
        );
    }
}
