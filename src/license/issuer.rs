//! An issuer's secret key ([`IssuerKey`]): what signs license keys.
//!
//! Files (`vipool license keygen` writes both):
//!
//! - `NAME.key`: the Ed25519 secret key as PKCS#8 PEM (`openssl pkey`
//!   reads it), after a `# vipool-issuer NAME` comment line that names the
//!   issuer. Mode 0600, never written over an existing file. It stays
//!   with whoever issues keys, off the servers.
//! - `NAME.pub`: the public line servers trust (see [`TrustedIssuer`]).

use std::fmt;
use std::path::{Path, PathBuf};

// pkcs8's own der, re-exported through ed25519: the PEM line ending and the
// buffer that wipes the PEM text of a secret key when dropped.
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey};

use super::statement::valid_issuer_name;
use super::{read_capped, KeyStatement, SignedKey, StatementError, TrustedIssuer};
use crate::pki::{self, PkiError};

/// The comment that names the issuer in its secret key file.
const NAME_COMMENT: &str = "# vipool-issuer ";
/// Larger secret key files are refused unread.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Why an issuer's secret key or name cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// Not a DNS label.
    #[error(
        "issuer name {0:?} is not 1 to 63 lowercase letters, digits and '-' (not first or \
         last), e.g. \"acme-licensing\""
    )]
    Name(String),
    /// A file could not be written, or exists already.
    #[error(transparent)]
    Write(#[from] PkiError),
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The secret key may be read by others than its owner.
    #[error(
        "{}: the issuer's secret key may be read by others than its owner: run `chmod 600 {}`",
        .0.display(), .0.display()
    )]
    KeyReadable(PathBuf),
    /// The secret key file is not a PKCS#8 Ed25519 key.
    #[error(
        "{}: not an Ed25519 secret key in PKCS#8 PEM ({source}): pass the NAME.key that \
         `vipool license keygen` wrote",
        path.display()
    )]
    SecretKey {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ed25519_dalek::pkcs8::Error,
    },
    /// No PEM secret key in the file at all.
    #[error(
        "{}: not an issuer's secret key (no \"-----BEGIN PRIVATE KEY-----\"): pass the NAME.key \
         that `vipool license keygen` wrote (NAME.pub is its public half, for the servers)",
        .0.display()
    )]
    NotSecretKey(PathBuf),
    /// Neither a `# vipool-issuer NAME` line nor a usable file name.
    #[error(
        "{}: the file does not say whose key it is: add a first line `# vipool-issuer NAME`",
        .0.display()
    )]
    Unnamed(PathBuf),
}

/// Why [`IssuerKey::sign`] refused a statement.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A field breaks its rules.
    #[error(transparent)]
    Invalid(#[from] StatementError),
    /// The statement names another issuer.
    #[error("the statement names issuer {statement:?}, but this is the key of issuer {key:?}")]
    OtherIssuer {
        /// The issuer the statement names.
        statement: String,
        /// This key's issuer.
        key: String,
    },
}

/// An issuer's secret signing key and its name. Whoever holds it can issue
/// license keys: keep it with the issuing operator, never on the servers.
pub struct IssuerKey {
    name: String,
    key: SigningKey,
}

impl fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn check_name(name: &str) -> Result<(), IssuerError> {
    if valid_issuer_name(name) {
        Ok(())
    } else {
        Err(IssuerError::Name(name.to_owned()))
    }
}

impl IssuerKey {
    /// A new issuer key from the operating system's random number generator.
    ///
    /// # Errors
    /// The name is not a DNS label.
    pub fn generate(name: &str) -> Result<Self, IssuerError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::generate(&mut rand_core::OsRng),
        })
    }

    /// The issuer key of a known 32-byte secret (tests, or a key kept in a
    /// secrets store).
    ///
    /// # Errors
    /// The name is not a DNS label.
    pub fn from_secret_bytes(name: &str, secret: &[u8; 32]) -> Result<Self, IssuerError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::from_bytes(secret),
        })
    }

    /// The issuer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What servers trust to verify this issuer's keys.
    pub fn trusted(&self) -> TrustedIssuer {
        TrustedIssuer::new_unchecked(self.name.clone(), self.key.verifying_key())
    }

    /// Signs `statement`, which must name this issuer.
    ///
    /// # Errors
    /// A field breaks its rules, or the statement names another issuer.
    pub fn sign(&self, statement: KeyStatement) -> Result<SignedKey, SignError> {
        statement.validate()?;
        if statement.issuer != self.name {
            return Err(SignError::OtherIssuer {
                statement: statement.issuer,
                key: self.name.clone(),
            });
        }
        let bytes = statement.to_bytes();
        let signature = self.key.sign(&super::key::signed_message(&bytes));
        Ok(SignedKey::from_parts(statement, bytes, signature))
    }

    /// The secret key file's contents: the naming comment, then PKCS#8 PEM.
    pub fn to_pem(&self) -> Zeroizing<String> {
        // Encoding a valid Ed25519 key into PKCS#8 cannot fail.
        let pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("an Ed25519 key always encodes");
        Zeroizing::new(format!(
            "{NAME_COMMENT}{}\n# The Ed25519 secret key of license issuer {:?} (PKCS#8). Whoever \
             holds it can issue license keys:\n# keep it with the issuing operator, mode 0600, \
             never on the servers.\n{}",
            self.name,
            self.name,
            pem.as_str()
        ))
    }

    /// Writes `DIR/NAME.key` (the secret key) and `DIR/NAME.pub` (the
    /// public line), both mode 0600, never over existing files; creates
    /// `DIR` (0700) if needed. Returns their paths.
    ///
    /// # Errors
    /// Either file exists, or a file cannot be written.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), IssuerError> {
        pki::create_private_dir(dir)?;
        let key = dir.join(format!("{}.key", self.name));
        let public = dir.join(format!("{}.pub", self.name));
        // Check both first: never leave a new secret without its public half.
        for p in [&key, &public] {
            if p.exists() {
                return Err(PkiError::Exists(p.clone()).into());
            }
        }
        pki::write_private(&key, self.to_pem().as_bytes())?;
        pki::write_private(&public, format!("{}\n", self.trusted()).as_bytes())?;
        Ok((key, public))
    }

    /// Reads a secret key file that [`IssuerKey::write`] wrote. The issuer's
    /// name is that of its `# vipool-issuer NAME` line, or else the file
    /// name without `.key`.
    ///
    /// # Errors
    /// The file cannot be read, may be read by others than its owner, or
    /// is not a named PKCS#8 Ed25519 key.
    pub fn load(path: &Path) -> Result<Self, IssuerError> {
        let read = |source| IssuerError::Read {
            path: path.to_owned(),
            source,
        };
        let text = Zeroizing::new(read_capped(path, MAX_SECRET_FILE).map_err(read)?);
        if pki::readable_by_others(path).map_err(read)? {
            return Err(IssuerError::KeyReadable(path.to_owned()));
        }
        // The PEM decoder wants the armour first; the name is in the comments before it.
        let at = text
            .find("-----BEGIN")
            .ok_or_else(|| IssuerError::NotSecretKey(path.to_owned()))?;
        let (comments, pem) = text.split_at(at);
        let named = comments
            .lines()
            .find_map(|l| l.strip_prefix(NAME_COMMENT))
            .map(str::trim);
        let stem = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".key"));
        let name = named
            .or(stem)
            .ok_or_else(|| IssuerError::Unnamed(path.to_owned()))?;
        check_name(name)?;
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|source| IssuerError::SecretKey {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::statement::tests::statement;
    use super::super::TrustedIssuers;
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn keygen_files_are_private_named_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("issuers");
        let issuer = IssuerKey::generate("acme").unwrap();
        let (key, public) = issuer.write(&out).unwrap();
        assert_eq!(
            (key.file_name().unwrap(), public.file_name().unwrap()),
            ("acme.key".as_ref(), "acme.pub".as_ref())
        );
        assert_eq!((mode(&key), mode(&public), mode(&out)), (0o600, 0o600, 0o700));
        let pem = std::fs::read_to_string(&key).unwrap();
        assert!(pem.starts_with("# vipool-issuer acme\n"), "{pem}");
        assert!(pem.contains("-----BEGIN PRIVATE KEY-----"), "{pem}");
        // A renamed file keeps its issuer: the name is inside.
        let renamed = dir.path().join("old.key");
        std::fs::copy(&key, &renamed).unwrap();
        let loaded = IssuerKey::load(&renamed).unwrap();
        assert_eq!(loaded.name(), "acme");
        assert_eq!(loaded.trusted(), issuer.trusted());
        let trusted = TrustedIssuers::load([&public]).unwrap();
        assert_eq!(trusted.names().collect::<Vec<_>>(), ["acme"]);
        let signed = loaded.sign(statement()).unwrap();
        signed.verify(&trusted, "CV0012345", 1_750_000_000).unwrap();
        // Never over an existing file, and nothing half-written.
        let again = IssuerKey::generate("acme").unwrap();
        let err = again.write(&out).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        std::fs::remove_file(&key).unwrap();
        assert!(again.write(&out).is_err());
        assert!(!key.exists());
    }

    #[test]
    fn a_secret_key_others_can_read_or_that_is_no_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = IssuerKey::generate("acme").unwrap().write(dir.path()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = IssuerKey::load(&key).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        let junk = dir.path().join("junk.key");
        pki::write_private(
            &junk,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(matches!(
            IssuerKey::load(&junk),
            Err(IssuerError::SecretKey { .. })
        ));
        let unnamed = dir.path().join("unnamed.pem");
        pki::write_private(&unnamed, b"-----BEGIN PRIVATE KEY-----\n").unwrap();
        assert!(matches!(IssuerKey::load(&unnamed), Err(IssuerError::Unnamed(_))));
        let public = dir.path().join("acme.pub");
        let err = IssuerKey::load(&public).unwrap_err();
        assert!(matches!(err, IssuerError::NotSecretKey(_)), "{err}");
        assert!(matches!(IssuerKey::generate("Acme"), Err(IssuerError::Name(_))));
        let missing = IssuerKey::load(&dir.path().join("nope.key")).unwrap_err();
        assert!(missing.to_string().contains("nope.key"), "{missing}");
    }

    #[test]
    fn sign_refuses_an_invalid_statement_or_another_issuers_name() {
        let acme = IssuerKey::from_secret_bytes("acme", &[7; 32]).unwrap();
        let mut s = statement();
        s.issuer = "globex".into();
        assert!(matches!(acme.sign(s), Err(SignError::OtherIssuer { .. })));
        let mut s = statement();
        s.count = 0;
        assert!(matches!(
            acme.sign(s),
            Err(SignError::Invalid(StatementError::ZeroCount))
        ));
    }
}
