//! What a server trusts: issuers' public keys ([`TrustedIssuer`]), as
//! lines of trust files, gathered in [`TrustedIssuers`].
//!
//! A trust file (`NAME.pub`, as `vipool license keygen` writes it) holds
//! lines `vipool-issuer NAME PUBLIC-KEY` (the 32-byte Ed25519 public key in
//! base64url without padding), `#` comments and blank lines; several
//! issuers may share one file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;

use super::read_capped;
use super::statement::valid_issuer_name;

/// The first word of a public issuer line.
pub const PUBLIC_TAG: &str = "vipool-issuer";
/// Larger trust files are refused unread.
const MAX_TRUST_FILE: u64 = 64 * 1024;

/// Why a trust file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of a trust file is not a public issuer line.
    #[error("{}, line {line}: {source}", path.display())]
    PublicLine {
        /// The file.
        path: PathBuf,
        /// Its line, from 1.
        line: usize,
        /// Why.
        source: PublicLineError,
    },
    /// A trust file with no issuer in it.
    #[error(
        "{}: no `vipool-issuer NAME KEY` line: pass the NAME.pub that `vipool license keygen` \
         wrote",
        .0.display()
    )]
    NoIssuer(PathBuf),
    /// Two public keys under one name: which one signs is ambiguous.
    #[error(
        "issuer {0:?} is trusted with two different public keys: keep one (a new issuer key \
         gets a new name, e.g. \"acme-2027\")"
    )]
    Conflict(String),
}

/// Why a text line is not a public issuer line.
#[derive(Debug, thiserror::Error)]
pub enum PublicLineError {
    /// Not `vipool-issuer NAME KEY`.
    #[error("expected `vipool-issuer NAME PUBLIC-KEY` (three words on one line)")]
    Form,
    /// A secret key where a public line belongs.
    #[error(
        "this is an issuer's secret key (PEM), not its public line: servers trust NAME.pub, \
         and the secret NAME.key belongs with whoever issues keys, never on a server"
    )]
    SecretKey,
    /// The name is not a DNS label.
    #[error("issuer name {0:?} is not 1 to 63 lowercase letters, digits and '-' (not first or last)")]
    Name(String),
    /// The key is not base64url.
    #[error("the public key is not base64url text ({0}): copy the line again")]
    Base64(base64::DecodeError),
    /// Not 32 bytes.
    #[error("the public key is {0} bytes, an Ed25519 public key is 32: copy the line again")]
    Length(usize),
    /// Not a point of the curve, or one of small order that anything verifies under.
    #[error("not a usable Ed25519 public key (invalid or weak): copy the line again from the issuer")]
    Weak,
}

/// An issuer as servers trust it: its name and Ed25519 public key.
///
/// Text form (`Display`, `FromStr`): `vipool-issuer NAME PUBLIC-KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedIssuer {
    name: String,
    key: VerifyingKey,
}

impl TrustedIssuer {
    /// For an issuer key's own public half, whose name was checked.
    pub(super) fn new_unchecked(name: String, key: VerifyingKey) -> Self {
        Self { name, key }
    }

    /// The issuer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The issuer's public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }
}

impl TrustedIssuer {
    /// An issuer from its name and public key (URL-safe base64), as the
    /// table records the pair's ([`TrustedIssuers::by_name_text`]).
    ///
    /// # Errors
    /// As a trust file's line would be refused.
    pub fn from_parts(name: &str, key: &str) -> Result<Self, PublicLineError> {
        format!("{PUBLIC_TAG} {name} {key}").parse()
    }
}

impl fmt::Display for TrustedIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PUBLIC_TAG} {} {}",
            self.name,
            URL_SAFE_NO_PAD.encode(self.key.as_bytes())
        )
    }
}

impl FromStr for TrustedIssuer {
    type Err = PublicLineError;

    fn from_str(line: &str) -> Result<Self, PublicLineError> {
        if line.starts_with("-----BEGIN") {
            return Err(PublicLineError::SecretKey);
        }
        let mut words = line.split_ascii_whitespace();
        let (Some(PUBLIC_TAG), Some(name), Some(key), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(PublicLineError::Form);
        };
        if !valid_issuer_name(name) {
            return Err(PublicLineError::Name(name.to_owned()));
        }
        let bytes = URL_SAFE_NO_PAD.decode(key).map_err(PublicLineError::Base64)?;
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| PublicLineError::Length(bytes.len()))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| PublicLineError::Weak)?;
        // `verify_strict` would refuse every signature under a small-order
        // key anyway; say so when the key is loaded, not key by key.
        if key.is_weak() {
            return Err(PublicLineError::Weak);
        }
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }
}

/// The issuers a server trusts, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedIssuers {
    by_name: BTreeMap<String, VerifyingKey>,
}

impl TrustedIssuers {
    /// Trusts no one.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts `issuer` too; the same issuer twice is one.
    ///
    /// # Errors
    /// Another public key is trusted under the same name.
    pub fn insert(&mut self, issuer: TrustedIssuer) -> Result<(), TrustError> {
        match self.by_name.get(&issuer.name) {
            Some(key) if *key != issuer.key => Err(TrustError::Conflict(issuer.name)),
            _ => {
                self.by_name.insert(issuer.name, issuer.key);
                Ok(())
            }
        }
    }

    /// Adds the issuers of a trust file (`vipool-issuer` lines, `#`
    /// comments, blank lines); `path` names the file in errors.
    ///
    /// # Errors
    /// A line is not a public issuer line, the file has none, or it
    /// conflicts with an issuer already trusted.
    pub fn add_text(&mut self, path: &Path, text: &str) -> Result<(), TrustError> {
        let mut found = false;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let issuer = line.parse().map_err(|source| TrustError::PublicLine {
                path: path.to_owned(),
                line: n + 1,
                source,
            })?;
            self.insert(issuer)?;
            found = true;
        }
        if found {
            Ok(())
        } else {
            Err(TrustError::NoIssuer(path.to_owned()))
        }
    }

    /// Loads the issuers of every file of `paths` (see
    /// [`TrustedIssuers::add_text`]).
    ///
    /// # Errors
    /// A file cannot be read, or as [`TrustedIssuers::add_text`].
    pub fn load<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Result<Self, TrustError> {
        let mut trusted = Self::new();
        for path in paths {
            let path = path.as_ref();
            let text = read_capped(path, MAX_TRUST_FILE).map_err(|source| TrustError::Read {
                path: path.to_owned(),
                source,
            })?;
            trusted.add_text(path, &text)?;
        }
        Ok(trusted)
    }

    /// The public key trusted under `name`.
    pub fn key(&self, name: &str) -> Option<&VerifyingKey> {
        self.by_name.get(name)
    }

    /// The trusted issuers' names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Each trusted issuer's name and public key (URL-safe base64), as the
    /// table records the pair's.
    pub fn by_name_text(&self) -> BTreeMap<String, String> {
        self.by_name
            .iter()
            .map(|(name, key)| (name.clone(), URL_SAFE_NO_PAD.encode(key.as_bytes())))
            .collect()
    }

    /// How many issuers are trusted.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no issuer is trusted (then no key counts).
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl FromIterator<TrustedIssuer> for TrustedIssuers {
    /// Later entries under a name already seen replace it; use
    /// [`TrustedIssuers::insert`] to refuse conflicts.
    fn from_iter<I: IntoIterator<Item = TrustedIssuer>>(iter: I) -> Self {
        Self {
            by_name: iter.into_iter().map(|i| (i.name, i.key)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::IssuerKey;
    use super::*;

    #[test]
    fn public_lines_parse_back_and_bad_ones_are_refused() {
        let acme = IssuerKey::from_secret_bytes("acme", &[7; 32]).unwrap().trusted();
        let line = acme.to_string();
        assert!(line.starts_with("vipool-issuer acme "), "{line}");
        assert_eq!(line.parse::<TrustedIssuer>().unwrap(), acme);
        let key = line.rsplit(' ').next().unwrap();
        let parse = |s: &str| s.parse::<TrustedIssuer>().unwrap_err();
        assert!(matches!(parse(""), PublicLineError::Form));
        assert!(matches!(
            parse("-----BEGIN PRIVATE KEY-----"),
            PublicLineError::SecretKey
        ));
        assert!(matches!(parse("vipool-issuer acme"), PublicLineError::Form));
        assert!(matches!(parse(&format!("{line} extra")), PublicLineError::Form));
        assert!(matches!(
            parse(&format!("ssh-ed25519 acme {key}")),
            PublicLineError::Form
        ));
        assert!(matches!(
            parse(&format!("vipool-issuer ACME {key}")),
            PublicLineError::Name(_)
        ));
        assert!(matches!(
            parse("vipool-issuer acme a+b/"),
            PublicLineError::Base64(_)
        ));
        assert!(matches!(
            parse("vipool-issuer acme AAAA"),
            PublicLineError::Length(3)
        ));
        // The identity point: small order, every signature would "verify".
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = format!("vipool-issuer acme {}", URL_SAFE_NO_PAD.encode(identity));
        assert!(matches!(parse(&weak), PublicLineError::Weak));
    }

    #[test]
    fn trust_files_hold_lines_and_comments_and_refuse_conflicts() {
        let acme = IssuerKey::from_secret_bytes("acme", &[7; 32]).unwrap().trusted();
        let globex = IssuerKey::from_secret_bytes("globex", &[8; 32])
            .unwrap()
            .trusted();
        let impostor = IssuerKey::from_secret_bytes("acme", &[9; 32]).unwrap().trusted();
        let mut t = TrustedIssuers::new();
        let path = Path::new("trusted.pub");
        t.add_text(path, &format!("# our issuers\n\n  {acme}  \n{globex}\n{acme}\n"))
            .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.key("acme"), Some(acme.public_key()));
        let err = t.add_text(path, &format!("# rotated\n{impostor}\n")).unwrap_err();
        assert!(matches!(&err, TrustError::Conflict(n) if n == "acme"), "{err}");
        let err = t.add_text(path, "# nothing\n").unwrap_err();
        assert!(matches!(err, TrustError::NoIssuer(_)));
        let err = t.add_text(path, "# one\n\nvipool-issuer acme\n").unwrap_err();
        assert!(
            err.to_string().starts_with("trusted.pub, line 3: expected"),
            "{err}"
        );
        assert!(TrustedIssuers::new().is_empty());
    }
}
