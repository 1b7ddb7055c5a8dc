//! A signed license key ([`SignedKey`]): its one-line text form and the
//! checks that make it count.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};

use super::{KeyError, KeyStatement, ParseError, SeenSignatures, TrustedIssuers, MAX_LINE_LEN};
use crate::table::{Key, LicenseType, VerifiedKey};

/// What every key line starts with: the text form's version.
pub const PREFIX: &str = "vpk1.";

/// Signed before the statement bytes, so that a signature over a license
/// key can never be taken for a signature over anything else the same
/// issuer key might sign, and a v2 key never for a v1 key.
const DOMAIN: &[u8] = b"vipool license key v1\0";

/// The message an issuer signs for `statement_bytes`.
pub(super) fn signed_message(statement_bytes: &[u8]) -> Vec<u8> {
    [DOMAIN, statement_bytes].concat()
}

/// A license key: a [`KeyStatement`] and its issuer's Ed25519 signature
/// over the statement's canonical bytes.
///
/// Its text form (`Display` and `FromStr`) is one line,
/// `vpk1.<statement>.<signature>` in base64url without padding; parsing
/// gives back exactly the key that was printed. Parsing checks the form and
/// the statement's fields, not the signature: [`SignedKey::verify`] does.
///
/// The accessors read the statement *as it claims*: use them for what the
/// key says, and for counting only after `verify` succeeded.
///
/// Serialized (serde) as its text line, so that a protocol frame or a
/// table snapshot carries keys exactly as an operator sees them, and reading
/// one back goes through the same checks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SignedKey {
    statement: KeyStatement,
    // The bytes as signed: what the signature is checked over and what the
    // text form prints (the canonical encoding of `statement`).
    bytes: Vec<u8>,
    signature: [u8; 64],
}

impl SignedKey {
    /// Puts together a key the issuer just signed.
    pub(super) fn from_parts(statement: KeyStatement, bytes: Vec<u8>, signature: Signature) -> Self {
        Self {
            statement,
            bytes,
            signature: signature.to_bytes(),
        }
    }

    /// Checks that the key counts for the switch or server whose serial is
    /// `presenter_serial`, at `now_s` (Unix seconds): its issuer is trusted,
    /// the signature is that issuer's over this very statement
    /// (`verify_strict`: no malleable or weak-key signatures), it is bound
    /// to `presenter_serial`, and it is valid at `now_s`.
    ///
    /// Whether the key id was already counted (the same key from a second
    /// client) is the table's to check.
    ///
    /// # Errors
    /// The first check that fails, as a [`KeyError`] an operator can act on.
    pub fn verify(
        &self,
        trusted: &TrustedIssuers,
        presenter_serial: &str,
        now_s: u64,
    ) -> Result<&KeyStatement, KeyError> {
        self.verify_with(trusted, None, presenter_serial, now_s)
    }

    /// As [`SignedKey::verified`], skipping the signature arithmetic when
    /// `seen` remembers this very signature by this issuer's key over this
    /// very statement (and remembering it once it verified). The issuer is
    /// still looked up in `trusted`, the serial and validity still checked.
    ///
    /// # Errors
    /// As [`SignedKey::verify`].
    pub fn verified_seen(
        &self,
        trusted: &TrustedIssuers,
        seen: &SeenSignatures,
        presenter_serial: &str,
        now_s: u64,
    ) -> Result<VerifiedKey, KeyError> {
        Ok(self
            .verify_with(trusted, Some(seen), presenter_serial, now_s)?
            .verified_key())
    }

    fn verify_with(
        &self,
        trusted: &TrustedIssuers,
        seen: Option<&SeenSignatures>,
        presenter_serial: &str,
        now_s: u64,
    ) -> Result<&KeyStatement, KeyError> {
        let s = &self.statement;
        let issuer = trusted.key(&s.issuer).ok_or_else(|| KeyError::UnknownIssuer {
            key_id: s.key_id.clone(),
            issuer: s.issuer.clone(),
        })?;
        // The signature first: what the later errors quote is then what
        // the issuer said, not what a forger wrote.
        // Built only when the curve arithmetic runs: a remembered
        // signature is found by its parts, without the copy.
        let check = || {
            issuer
                .verify_strict(
                    &signed_message(&self.bytes),
                    &Signature::from_bytes(&self.signature),
                )
                .map_err(|_| KeyError::BadSignature {
                    key_id: s.key_id.clone(),
                    issuer: s.issuer.clone(),
                })
        };
        match seen {
            Some(seen) => seen.check(issuer, &[DOMAIN, &self.bytes], &self.signature, check)?,
            None => check()?,
        }
        if s.serial != presenter_serial {
            return Err(KeyError::WrongSerial {
                key_id: s.key_id.clone(),
                bound: s.serial.clone(),
                presented: presenter_serial.to_owned(),
            });
        }
        if now_s < s.not_before {
            return Err(KeyError::NotYetValid {
                key_id: s.key_id.clone(),
                not_before: s.not_before,
                now: now_s,
            });
        }
        // As the table's `Key::is_expired`: the expiry instant is the first
        // at which it no longer counts.
        if let Some(expired) = s.expires.filter(|at| *at <= now_s) {
            return Err(KeyError::Expired {
                key_id: s.key_id.clone(),
                expired,
            });
        }
        Ok(s)
    }

    /// Verifies the key (see [`SignedKey::verify`]) and gives the table's
    /// view of it, for today's pool arithmetic.
    ///
    /// # Errors
    /// As [`SignedKey::verify`].
    pub fn verified_table_key(
        &self,
        trusted: &TrustedIssuers,
        presenter_serial: &str,
        now_s: u64,
    ) -> Result<Key, KeyError> {
        Ok(self.verify(trusted, presenter_serial, now_s)?.table_key())
    }

    /// Verifies the key (see [`SignedKey::verify`]) and gives what the
    /// table records of it: what a command carries once the proposer
    /// checked the key.
    ///
    /// # Errors
    /// As [`SignedKey::verify`].
    pub fn verified(
        &self,
        trusted: &TrustedIssuers,
        presenter_serial: &str,
        now_s: u64,
    ) -> Result<VerifiedKey, KeyError> {
        Ok(self.verify(trusted, presenter_serial, now_s)?.verified_key())
    }

    /// Verifies who signed the key and whom it is bound to, whatever the
    /// time: a trusted issuer's signature over this very statement, bound
    /// to `presenter_serial`. For a server's key files, read once and
    /// counted while each key is valid.
    ///
    /// # Errors
    /// As [`SignedKey::verify`], but never `NotYetValid` nor `Expired`.
    pub fn verify_issue(
        &self,
        trusted: &TrustedIssuers,
        presenter_serial: &str,
    ) -> Result<&KeyStatement, KeyError> {
        // At the instant the key starts, it is valid: a statement's expiry
        // is after its start (checked when it was parsed).
        self.verify(trusted, presenter_serial, self.statement.not_before)
    }

    /// The statement as the key claims it, not verified.
    pub fn statement(&self) -> &KeyStatement {
        &self.statement
    }

    /// The key's id (unverified claim).
    pub fn id(&self) -> &str {
        &self.statement.key_id
    }

    /// The license type (unverified claim).
    pub fn license_type(&self) -> &LicenseType {
        &self.statement.license_type
    }

    /// How many licenses (unverified claim).
    pub fn count(&self) -> u32 {
        self.statement.count
    }

    /// The serial the key is bound to (unverified claim).
    pub fn serial(&self) -> &str {
        &self.statement.serial
    }

    /// The issuer's name (unverified claim).
    pub fn issuer(&self) -> &str {
        &self.statement.issuer
    }

    /// When the key starts counting, milliseconds since the Unix epoch
    /// (unverified claim).
    pub fn not_before_ms(&self) -> u64 {
        self.statement.not_before_ms()
    }

    /// When an evaluation key stops counting, milliseconds since the Unix
    /// epoch; `None` for a permanent key (unverified claim).
    pub fn expires_at_ms(&self) -> Option<u64> {
        self.statement.expires_at_ms()
    }
}

impl fmt::Display for SignedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(&self.bytes),
            URL_SAFE_NO_PAD.encode(self.signature)
        )
    }
}

impl FromStr for SignedKey {
    type Err = ParseError;

    /// Reads one key line, exactly as [`Display`](fmt::Display) writes it
    /// (no surrounding spaces: a key file's reader trims its lines).
    fn from_str(line: &str) -> Result<Self, ParseError> {
        if line.len() > MAX_LINE_LEN {
            return Err(ParseError::TooLong(line.len()));
        }
        let rest = match line.strip_prefix(PREFIX) {
            Some(rest) => rest,
            None => return Err(unknown_version(line)),
        };
        let mut parts = rest.split('.');
        let (Some(statement), Some(signature), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ParseError::Parts(rest.split('.').count()));
        };
        // The default engine refuses non-zero trailing bits, so one key
        // has one text form.
        let bytes = URL_SAFE_NO_PAD
            .decode(statement)
            .map_err(|source| ParseError::Base64 {
                part: "statement",
                source,
            })?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|source| ParseError::Base64 {
                part: "signature",
                source,
            })?;
        let signature: [u8; 64] = signature
            .as_slice()
            .try_into()
            .map_err(|_| ParseError::SignatureLength(signature.len()))?;
        let statement = KeyStatement::from_bytes(&bytes)?;
        Ok(Self {
            statement,
            bytes,
            signature,
        })
    }
}

/// `vpk2.…` is a key of a later vipool; anything else is not a key.
fn unknown_version(line: &str) -> ParseError {
    let version = line
        .split_once('.')
        .map(|(v, _)| v)
        .filter(|v| v.len() <= 8)
        .and_then(|v| v.strip_prefix("vpk").filter(|n| !n.is_empty()).map(|_| v))
        .filter(|v| v[3..].bytes().all(|b| b.is_ascii_digit()));
    match version {
        Some(v) => ParseError::UnsupportedVersion(v.to_owned()),
        None => ParseError::NotAKey,
    }
}

impl TryFrom<String> for SignedKey {
    type Error = ParseError;

    fn try_from(line: String) -> Result<Self, ParseError> {
        line.parse()
    }
}

impl From<SignedKey> for String {
    fn from(key: SignedKey) -> Self {
        key.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::statement::tests::statement;
    use super::super::{IssuerKey, StatementError};
    use super::*;

    const NOW: u64 = 1_750_000_000;

    pub(crate) fn acme() -> IssuerKey {
        IssuerKey::from_secret_bytes("acme", &[7; 32]).unwrap()
    }

    fn trusted() -> TrustedIssuers {
        TrustedIssuers::from_iter([acme().trusted()])
    }

    #[test]
    fn a_signed_key_verifies_and_its_text_parses_back_exactly() {
        let key = acme().sign(statement()).unwrap();
        let line = key.to_string();
        assert!(line.starts_with("vpk1."), "{line}");
        assert!(line.bytes().all(|b| b.is_ascii_graphic()), "{line}");
        let parsed: SignedKey = line.parse().unwrap();
        assert_eq!(parsed, key);
        assert_eq!(parsed.to_string(), line);
        let ok = parsed.verify(&trusted(), "CV0012345", NOW).unwrap();
        assert_eq!(ok, &statement());
        assert_eq!(
            parsed.verified_table_key(&trusted(), "CV0012345", NOW).unwrap(),
            Key::permanent("AP", 16)
        );
        assert_eq!(
            (
                parsed.id(),
                parsed.license_type().as_str(),
                parsed.count(),
                parsed.serial()
            ),
            ("0123456789abcdef", "AP", 16, "CV0012345")
        );
        assert_eq!(
            (parsed.issuer(), parsed.not_before_ms(), parsed.expires_at_ms()),
            ("acme", 1_700_000_000_000, None)
        );
        // Through serde (bincode, as frames carry it) it is the same key.
        let bytes = bincode::serde::encode_to_vec(&key, bincode::config::standard()).unwrap();
        let (back, _): (SignedKey, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, key);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, format!("\"{line}\""));
        assert!(serde_json::from_str::<SignedKey>("\"vpk1.AAAA.AAAA\"").is_err());
    }

    /// Flips one bit of the statement bytes or of the signature and
    /// re-encodes the line: what a damaged or doctored key looks like
    /// once it parses.
    fn flipped(key: &SignedKey, in_signature: bool, bit: usize) -> SignedKey {
        let mut k = key.clone();
        let target: &mut [u8] = if in_signature {
            &mut k.signature
        } else {
            &mut k.bytes
        };
        target[bit / 8] ^= 1 << (bit % 8);
        k
    }

    #[test]
    fn a_remembered_signature_skips_only_the_arithmetic() {
        let seen = SeenSignatures::with_capacity(2);
        let key = acme().sign(statement()).unwrap();
        let first = key.verified_seen(&trusted(), &seen, "CV0012345", NOW).unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            key.verified_seen(&trusted(), &seen, "CV0012345", NOW).unwrap(),
            first
        );
        assert_eq!(seen.len(), 1);
        // Remembered or not, the serial, the validity and the issuer's
        // trust are checked again.
        let err = key
            .verified_seen(&trusted(), &seen, "CV0099999", NOW)
            .unwrap_err();
        assert!(matches!(err, KeyError::WrongSerial { .. }), "{err}");
        let err = key.verified_seen(&trusted(), &seen, "CV0012345", 1).unwrap_err();
        assert!(matches!(err, KeyError::NotYetValid { .. }), "{err}");
        let err = key
            .verified_seen(&TrustedIssuers::new(), &seen, "CV0012345", NOW)
            .unwrap_err();
        assert!(matches!(err, KeyError::UnknownIssuer { .. }), "{err}");
        // The same signature over another statement (count 16 -> 17), or
        // another signature over the same statement, is checked and
        // refused, and not remembered.
        let at = key.bytes.windows(2).position(|w| w == [16, 9]).unwrap();
        let more: SignedKey = flipped(&key, false, at * 8).to_string().parse().unwrap();
        assert_eq!(more.count(), 17);
        let err = more
            .verified_seen(&trusted(), &seen, "CV0012345", NOW)
            .unwrap_err();
        assert!(matches!(err, KeyError::BadSignature { .. }), "{err}");
        let err = flipped(&key, true, 9)
            .verified_seen(&trusted(), &seen, "CV0012345", NOW)
            .unwrap_err();
        assert!(matches!(err, KeyError::BadSignature { .. }), "{err}");
        assert_eq!(seen.len(), 1);
        // The same statement and signature under another issuer's key of
        // the same name: not the signature that was remembered.
        let mallory = IssuerKey::from_secret_bytes("acme", &[8; 32]).unwrap();
        let err = key
            .verified_seen(
                &TrustedIssuers::from_iter([mallory.trusted()]),
                &seen,
                "CV0012345",
                NOW,
            )
            .unwrap_err();
        assert!(matches!(err, KeyError::BadSignature { .. }), "{err}");
        // Full: it starts again, and what it forgot is checked again.
        let mut other = statement();
        other.key_id = "fedcba9876543210".into();
        let other = acme().sign(other).unwrap();
        other.verified_seen(&trusted(), &seen, "CV0012345", NOW).unwrap();
        assert_eq!(seen.len(), 2);
        let mut third = statement();
        third.key_id = "00000000000000ff".into();
        acme()
            .sign(third)
            .unwrap()
            .verified_seen(&trusted(), &seen, "CV0012345", NOW)
            .unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen.capacity(), 2);
    }

    #[test]
    fn a_tampered_key_is_refused() {
        let key = acme().sign(statement()).unwrap();
        // A bit of every byte of the signature (another bit in each byte:
        // every byte and every bit position is hit; all 512 is slow in a
        // debug build and finds nothing more).
        for bit in (0..64).map(|byte| byte * 8 + byte % 8) {
            let bad = flipped(&key, true, bit);
            let err = bad.verify(&trusted(), "CV0012345", NOW).unwrap_err();
            assert!(matches!(err, KeyError::BadSignature { .. }), "bit {bit}: {err}");
        }
        // The count (16 -> 17): the statement still reads, the signature fails.
        let at = key.bytes.windows(2).position(|w| w == [16, 9]).unwrap();
        let more = flipped(&key, false, at * 8);
        assert_eq!(more.to_string().parse::<SignedKey>().unwrap().count(), 17);
        let err = more.verify(&trusted(), "CV0012345", NOW).unwrap_err();
        assert!(err.to_string().contains("does not match its signature"), "{err}");
        assert!(err.to_string().contains("copy it again"), "{err}");
        // A bit of every byte of the statement: refused when read, or by
        // the signature.
        for bit in (0..key.bytes.len()).map(|byte| byte * 8 + byte % 8) {
            let line = flipped(&key, false, bit).to_string();
            if let Ok(k) = line.parse::<SignedKey>() {
                assert!(k.verify(&trusted(), k.serial(), NOW).is_err(), "bit {bit}");
            }
        }
    }

    #[test]
    fn a_key_for_another_serial_is_refused_and_says_whose_it_is() {
        let key = acme().sign(statement()).unwrap();
        let err = key.verify(&trusted(), "CV0099999", NOW).unwrap_err();
        assert!(matches!(&err, KeyError::WrongSerial { bound, presented, .. }
            if bound == "CV0012345" && presented == "CV0099999"));
        let msg = err.to_string();
        assert!(msg.contains("bound to serial \"CV0012345\""), "{msg}");
        assert!(msg.contains("presented by serial \"CV0099999\""), "{msg}");
    }

    #[test]
    fn an_evaluation_key_counts_until_it_expires() {
        let mut s = statement();
        s.expires = Some(NOW + 60);
        let key = acme().sign(s).unwrap();
        assert_eq!(
            key.verified_table_key(&trusted(), "CV0012345", NOW)
                .unwrap()
                .expires_at_ms,
            Some((NOW + 60) * 1000)
        );
        key.verify(&trusted(), "CV0012345", NOW + 59).unwrap();
        let err = key.verify(&trusted(), "CV0012345", NOW + 60).unwrap_err();
        assert!(matches!(err, KeyError::Expired { expired, .. } if expired == NOW + 60));
        assert!(
            err.to_string().contains("expired at 2025-06-15 15:07:40 UTC"),
            "{err}"
        );
    }

    #[test]
    fn a_key_is_refused_before_it_is_valid() {
        let mut s = statement();
        s.not_before = NOW + 1;
        let key = acme().sign(s).unwrap();
        let err = key.verify(&trusted(), "CV0012345", NOW).unwrap_err();
        assert!(matches!(err, KeyError::NotYetValid { not_before, .. } if not_before == NOW + 1));
        assert!(
            err.to_string()
                .contains("not valid before 2025-06-15 15:06:41 UTC"),
            "{err}"
        );
        key.verify(&trusted(), "CV0012345", NOW + 1).unwrap();
    }

    #[test]
    fn a_key_of_an_unknown_issuer_is_refused_by_name() {
        let other = IssuerKey::from_secret_bytes("globex", &[9; 32]).unwrap();
        let mut s = statement();
        s.issuer = "globex".into();
        let key = other.sign(s).unwrap();
        let err = key.verify(&trusted(), "CV0012345", NOW).unwrap_err();
        assert!(matches!(&err, KeyError::UnknownIssuer { issuer, .. } if issuer == "globex"));
        assert!(
            err.to_string()
                .contains("issuer \"globex\", which is not trusted"),
            "{err}"
        );
        // Another key under a trusted name: a bad signature, not a pass.
        let impostor = IssuerKey::from_secret_bytes("acme", &[9; 32]).unwrap();
        let key = impostor.sign(statement()).unwrap();
        let err = key.verify(&trusted(), "CV0012345", NOW).unwrap_err();
        assert!(matches!(err, KeyError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn malformed_lines_are_refused_with_their_cause() {
        let good = acme().sign(statement()).unwrap().to_string();
        let (head, sig) = good.rsplit_once('.').unwrap();
        let parse = |s: &str| s.parse::<SignedKey>().unwrap_err();
        assert!(matches!(parse(""), ParseError::NotAKey));
        assert!(matches!(parse("hello"), ParseError::NotAKey));
        assert!(matches!(parse(&format!(" {good}")), ParseError::NotAKey));
        assert!(matches!(parse("vpk.x.y"), ParseError::NotAKey));
        assert!(matches!(parse(&good.replace("vpk1.", "vpk2.")),
            ParseError::UnsupportedVersion(v) if v == "vpk2"));
        assert!(matches!(
            parse(&"x".repeat(MAX_LINE_LEN + 1)),
            ParseError::TooLong(_)
        ));
        assert!(matches!(parse("vpk1."), ParseError::Parts(1)));
        assert!(matches!(parse(head), ParseError::Parts(1)));
        assert!(matches!(parse(&format!("{good}.AA")), ParseError::Parts(3)));
        assert!(matches!(
            parse(&format!("{good} ")),
            ParseError::Base64 {
                part: "signature",
                ..
            }
        ));
        assert!(matches!(
            parse(&good.replacen('.', ".=", 1)),
            ParseError::Base64 {
                part: "statement",
                ..
            }
        ));
        assert!(matches!(
            parse(&format!("{head}.{}", &sig[..80])),
            ParseError::SignatureLength(60)
        ));
        assert!(matches!(
            parse(&format!("{head}.{sig}AAAA")),
            ParseError::SignatureLength(67)
        ));
        assert!(matches!(
            parse(&format!("vpk1..{sig}")),
            ParseError::EmptyStatement
        ));
        // Truncated anywhere: refused.
        for end in 0..good.len() {
            assert!(good[..end].parse::<SignedKey>().is_err(), "{}", &good[..end]);
        }
        // The last character of the signature carries 2 bits and 4 unused
        // ones, which must be zero: setting one is another spelling of the
        // same bytes, refused.
        const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = ALPHABET.find(sig.chars().last().unwrap()).unwrap();
        assert_eq!(last & 0b1111, 0);
        let twin = format!("{}{}", &good[..good.len() - 1], &ALPHABET[last | 1..=last | 1]);
        assert!(matches!(
            parse(&twin),
            ParseError::Base64 {
                part: "signature",
                ..
            }
        ));
        // A well-formed line of an invalid statement: signed by nobody
        // since `sign` refuses it, but a forger could write it.
        let mut s = statement();
        s.count = 0;
        let forged = format!("vpk1.{}.{sig}", URL_SAFE_NO_PAD.encode(s.to_bytes()));
        assert!(matches!(
            parse(&forged),
            ParseError::Invalid(StatementError::ZeroCount)
        ));
        for e in [parse(""), parse(&forged), parse(&format!("vpk1..{sig}"))] {
            assert!(
                e.to_string().contains("copy") || e.to_string().contains("not valid"),
                "{e}"
            );
        }
    }
}
