//! Key files: the license keys installed on a server, one key line per
//! line.
//!
//! ```text
//! # primary (serial CV0012345): keys from Acme, order 4711
//! vpk1.AQ5…….Hk2…   # 16 AP
//! vpk1.AQ5…….p0Q…   # 16 PEFNG, evaluation until 2027-03-01
//! ```
//!
//! Blank lines and `#` comments (whole lines, or after a key) are skipped;
//! spaces around a key are trimmed. A key line never contains `#`.

use std::path::{Path, PathBuf};

use super::{read_capped, ParseError, SignedKey};

/// Larger key files are refused unread (a thousand keys fit in 1 MiB).
pub const MAX_KEY_FILE: u64 = 1024 * 1024;

/// Why a key file cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a key.
    #[error("{}, line {line}: {source}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// Its line, from 1.
        line: usize,
        /// Why.
        source: ParseError,
    },
    /// The same key id twice.
    #[error(
        "{}, line {line}: key {key_id} is already on line {first}: a key counts once, remove \
         one of the lines",
        path.display()
    )]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The second line with the key id.
        line: usize,
        /// The first one.
        first: usize,
        /// The key id.
        key_id: String,
    },
}

/// The keys of a key file's text, each with its line number (from 1);
/// `path` names the file in errors. Keys are parsed, not verified.
///
/// # Errors
/// The first line that is not a key, or that repeats a key id.
pub fn parse_key_file(path: &Path, text: &str) -> Result<Vec<(usize, SignedKey)>, KeyFileError> {
    let mut keys: Vec<(usize, SignedKey)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let key = match line.split_once('#').map_or(line, |(key, _)| key).trim() {
            "" => continue,
            key => key,
        };
        let key: SignedKey = key.parse().map_err(|source| KeyFileError::Line {
            path: path.to_owned(),
            line: line_no,
            source,
        })?;
        if let Some((first, _)) = keys.iter().find(|(_, k)| k.id() == key.id()) {
            return Err(KeyFileError::Duplicate {
                path: path.to_owned(),
                line: line_no,
                first: *first,
                key_id: key.id().to_owned(),
            });
        }
        keys.push((line_no, key));
    }
    Ok(keys)
}

/// The keys of the key file at `path`, in file order, parsed but not
/// verified: verify each with [`SignedKey::verify`] against the server's
/// serial and trusted issuers before it counts.
///
/// # Errors
/// The file cannot be read or is larger than [`MAX_KEY_FILE`]; a line is
/// not a key or repeats a key id (the error names the file and line).
pub fn load_key_file(path: &Path) -> Result<Vec<SignedKey>, KeyFileError> {
    let text = read_capped(path, MAX_KEY_FILE).map_err(|source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(parse_key_file(path, &text)?
        .into_iter()
        .map(|(_, key)| key)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::statement::tests::statement;
    use super::super::IssuerKey;
    use super::*;

    fn keys() -> (SignedKey, SignedKey) {
        let acme = IssuerKey::from_secret_bytes("acme", &[7; 32]).unwrap();
        let mut pefng = statement();
        pefng.key_id = "pefng-1".into();
        pefng.license_type = "PEFNG".into();
        (acme.sign(statement()).unwrap(), acme.sign(pefng).unwrap())
    }

    #[test]
    fn a_key_file_has_keys_comments_and_blank_lines() {
        let (ap, pefng) = keys();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(
            &path,
            format!("# primary\n\n  {ap}  # 16 AP\n{pefng}\n   \n# end\n"),
        )
        .unwrap();
        assert_eq!(load_key_file(&path).unwrap(), [ap.clone(), pefng]);
        assert_eq!(parse_key_file(&path, &format!("\n\n{ap}")).unwrap()[0].0, 3);
        assert!(load_key_file(&dir.path().join("empty")).is_err());
        std::fs::write(&path, "# no keys yet\n").unwrap();
        assert!(load_key_file(&path).unwrap().is_empty());
    }

    #[test]
    fn a_bad_line_is_named_by_file_and_line() {
        let (ap, _) = keys();
        let line = ap.to_string();
        let path = Path::new("/etc/vipool/keys");
        let cut = &line[..line.len() - 3];
        for (text, at) in [
            (format!("{line}\n{cut}\n"), 2),
            (format!("# x\n\nAP=16\n{line}"), 3),
            (format!("{line} {line}\n"), 1),
            (format!("{}\n", line.replace("vpk1", "vpk9")), 1),
        ] {
            let err = parse_key_file(path, &text).unwrap_err();
            assert!(
                matches!(&err, KeyFileError::Line { line, .. } if *line == at),
                "{err}"
            );
            assert!(
                err.to_string()
                    .starts_with(&format!("/etc/vipool/keys, line {at}: ")),
                "{err}"
            );
        }
        let err = parse_key_file(path, &format!("{line}\n#\n{line}\n")).unwrap_err();
        assert!(
            matches!(
                err,
                KeyFileError::Duplicate {
                    first: 1,
                    line: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("remove one of the lines"), "{err}");
    }

    #[test]
    fn an_oversized_file_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, vec![b'#'; MAX_KEY_FILE as usize + 1]).unwrap();
        let err = load_key_file(&path).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }
}
