//! What a license key says ([`KeyStatement`]), the rules its fields obey,
//! and its canonical bytes: the bytes an issuer signs.

use serde::{Deserialize, Serialize};

use super::ParseError;
use crate::table::{Key, LicenseType, VerifiedKey};

/// The longest key id, serial or issuer name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// The longest issuer name: a DNS label.
pub const MAX_ISSUER_LEN: usize = 63;
/// The longest license type name.
pub const MAX_TYPE_LEN: usize = 32;
/// The latest instant a key may name: 9999-12-31 23:59:59 UTC. Beyond it a
/// date could not be printed, nor be turned into milliseconds safely.
pub const MAX_TIME_S: u64 = 253_402_300_799;

/// The first byte of the statement bytes: their layout. A new layout gets a
/// new byte, so an old vipool refuses a newer key by name instead of
/// misreading it.
pub const FORMAT_V1: u8 = 1;

/// What a license key says: `count` licenses of `license_type`, for the
/// switch or server whose serial is `serial`, valid from `not_before`
/// until `expires` (evaluation keys; `None` for permanent keys), issued by
/// `issuer`.
///
/// A statement means nothing on its own: it counts once an issuer signed it
/// ([`IssuerKey::sign`](super::IssuerKey::sign)) and the signature verifies
/// ([`SignedKey::verify`](super::SignedKey::verify)).
///
/// Times are Unix seconds (UTC).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
// The field order is the v1 wire layout (bincode writes fields in order):
// reorder or add nothing without a new FORMAT byte. `a_v1_statement_has_these_bytes`
// holds it in place.
pub struct KeyStatement {
    /// Unique per issued key: the table counts a key id once, whoever presents it.
    /// 1–64 printable ASCII characters without spaces.
    pub key_id: String,
    /// What the key licenses.
    pub license_type: LicenseType,
    /// How many licenses (at least 1).
    pub count: u32,
    /// The serial of the switch or server the key is bound to.
    /// 1–64 printable ASCII characters without spaces.
    pub serial: String,
    /// The key counts from this instant on (Unix seconds).
    pub not_before: u64,
    /// Evaluation keys: the key stops counting at this instant (Unix
    /// seconds). `None` for a permanent key.
    pub expires: Option<u64>,
    /// The issuer's name, as its public key is trusted under: a DNS label
    /// (lowercase letters, digits and '-').
    pub issuer: String,
}

/// A field of a statement that breaks its rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// The key id is empty, too long, or has spaces or other than printable ASCII.
    #[error("key id {0:?} is not 1 to 64 printable ASCII characters without spaces")]
    KeyId(String),
    /// The serial is empty, too long, or has spaces or other than printable ASCII.
    #[error("serial {0:?} is not 1 to 64 printable ASCII characters without spaces")]
    Serial(String),
    /// The issuer name is not a DNS label.
    #[error(
        "issuer name {0:?} is not 1 to 63 lowercase letters, digits and '-' (not first or \
         last), e.g. \"acme-licensing\""
    )]
    Issuer(String),
    /// The license type is not a name of letters, digits, '_' and '-'.
    #[error("license type {0:?} is not 1 to 32 letters, digits, '_' and '-' (upper case), e.g. \"AP\"")]
    LicenseType(String),
    /// A key of zero licenses.
    #[error("a key carries at least 1 license, not 0")]
    ZeroCount,
    /// The key would stop counting before (or when) it starts.
    #[error("the key expires ({expires}) no later than it becomes valid ({not_before})")]
    ExpiresBeforeStart {
        /// When it becomes valid.
        not_before: String,
        /// When it expires.
        expires: String,
    },
    /// A time past year 9999.
    #[error("{0} is past the year 9999")]
    TimeOutOfRange(u64),
}

fn printable_no_space(s: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether `name` may name an issuer: a DNS label in lower case, so that
/// one issuer has one spelling (`Acme` and `acme` would otherwise be two
/// trust entries that look alike).
pub fn valid_issuer_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=MAX_ISSUER_LEN).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `name` is a license type as it is written in a key: what the
/// configuration accepts for `license.poolable` (letters, digits, '_', '-'),
/// already normalized by [`LicenseType::new`].
fn valid_type_name(name: &str) -> bool {
    (1..=MAX_TYPE_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// `secs` as an operator reads it: `2027-01-31 00:00:00 UTC`.
pub fn format_utc(secs: u64) -> String {
    let parsed = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok());
    match parsed {
        Some(t) => format!(
            "{} {:02}:{:02}:{:02} UTC",
            t.date(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        None => format!("Unix second {secs}"),
    }
}

impl KeyStatement {
    /// Checks every field against its rules.
    ///
    /// # Errors
    /// The first field that breaks them.
    pub fn validate(&self) -> Result<(), StatementError> {
        if !printable_no_space(&self.key_id) {
            return Err(StatementError::KeyId(self.key_id.clone()));
        }
        if !valid_type_name(self.license_type.as_str()) {
            return Err(StatementError::LicenseType(self.license_type.to_string()));
        }
        if self.count == 0 {
            return Err(StatementError::ZeroCount);
        }
        if !printable_no_space(&self.serial) {
            return Err(StatementError::Serial(self.serial.clone()));
        }
        for t in std::iter::once(self.not_before).chain(self.expires) {
            if t > MAX_TIME_S {
                return Err(StatementError::TimeOutOfRange(t));
            }
        }
        if let Some(expires) = self.expires {
            if expires <= self.not_before {
                return Err(StatementError::ExpiresBeforeStart {
                    not_before: format_utc(self.not_before),
                    expires: format_utc(expires),
                });
            }
        }
        if !valid_issuer_name(&self.issuer) {
            return Err(StatementError::Issuer(self.issuer.clone()));
        }
        Ok(())
    }

    /// Whether this is an evaluation key (one that expires).
    pub fn is_evaluation(&self) -> bool {
        self.expires.is_some()
    }

    /// When the key starts counting, in milliseconds since the Unix epoch
    /// (the table's unit).
    pub fn not_before_ms(&self) -> u64 {
        self.not_before.saturating_mul(1000)
    }

    /// When an evaluation key stops counting, in milliseconds since the Unix
    /// epoch (the table's unit); `None` for a permanent key.
    pub fn expires_at_ms(&self) -> Option<u64> {
        self.expires.map(|s| s.saturating_mul(1000))
    }

    /// The table's view of this key: type, count and expiry, for today's
    /// pool arithmetic. Call it only on a statement that
    /// [`SignedKey::verify`](super::SignedKey::verify) returned: the table
    /// trusts what it is given.
    pub fn table_key(&self) -> Key {
        Key {
            license_type: self.license_type.clone(),
            count: self.count,
            expires_at_ms: self.expires_at_ms(),
        }
    }

    /// What the table records of this key: its id, issuer and serial with
    /// [`KeyStatement::table_key`]. As that one, only for a statement
    /// [`SignedKey::verify`](super::SignedKey::verify) returned.
    pub fn verified_key(&self) -> VerifiedKey {
        VerifiedKey {
            key_id: self.key_id.clone(),
            issuer: self.issuer.clone(),
            serial: self.serial.clone(),
            key: self.table_key(),
        }
    }

    /// The canonical bytes of a valid statement: [`FORMAT_V1`], then the
    /// fields with bincode's standard configuration (what the rest of
    /// vipool speaks). Deterministic: one statement, one encoding.
    pub(super) fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![FORMAT_V1];
        // Encoding strings and integers into a Vec cannot fail.
        let body = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .expect("a statement always encodes");
        bytes.extend_from_slice(&body);
        bytes
    }

    /// Reads statement bytes, accepting only the canonical encoding of a
    /// valid statement.
    pub(super) fn from_bytes(bytes: &[u8]) -> Result<Self, ParseError> {
        let (&format, body) = bytes.split_first().ok_or(ParseError::EmptyStatement)?;
        if format != FORMAT_V1 {
            return Err(ParseError::UnsupportedFormat(format));
        }
        // The limit makes bincode refuse a string length beyond the input
        // before it allocates for it.
        let config = bincode::config::standard().with_limit::<{ super::MAX_LINE_LEN }>();
        let (statement, used): (KeyStatement, usize) =
            bincode::serde::decode_from_slice(body, config).map_err(ParseError::Malformed)?;
        if used != body.len() {
            return Err(ParseError::TrailingBytes(body.len() - used));
        }
        statement.validate()?;
        // Decoding normalizes (license types are upper-cased) and bincode
        // accepts over-long integers: a second spelling of the same
        // statement would be a second key line for one key. Only the
        // canonical bytes are a key.
        if statement.to_bytes() != bytes {
            return Err(ParseError::NotCanonical);
        }
        Ok(statement)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A valid permanent statement for the tests.
    pub(crate) fn statement() -> KeyStatement {
        KeyStatement {
            key_id: "0123456789abcdef".into(),
            license_type: LicenseType::new("AP"),
            count: 16,
            serial: "CV0012345".into(),
            not_before: 1_700_000_000,
            expires: None,
            issuer: "acme".into(),
        }
    }

    #[test]
    fn a_v1_statement_has_these_bytes() {
        let mut s = statement();
        s.expires = Some(1_800_000_000);
        let mut expected = vec![FORMAT_V1, 16];
        expected.extend_from_slice(b"0123456789abcdef");
        expected.extend_from_slice(&[2, b'A', b'P', 16, 9]);
        expected.extend_from_slice(b"CV0012345");
        // Varints: 252 then a u32, little-endian.
        expected.extend_from_slice(&[252, 0x00, 0xf1, 0x53, 0x65]);
        expected.extend_from_slice(&[1, 252, 0x00, 0xd2, 0x49, 0x6b]);
        expected.extend_from_slice(&[4, b'a', b'c', b'm', b'e']);
        assert_eq!(s.to_bytes(), expected);
        assert_eq!(KeyStatement::from_bytes(&expected).unwrap(), s);
    }

    #[test]
    fn fields_are_checked() {
        let bad = |edit: fn(&mut KeyStatement)| {
            let mut s = statement();
            edit(&mut s);
            s.validate().unwrap_err()
        };
        assert!(matches!(bad(|s| s.key_id.clear()), StatementError::KeyId(_)));
        assert!(matches!(
            bad(|s| s.key_id = "a b".into()),
            StatementError::KeyId(_)
        ));
        assert!(matches!(
            bad(|s| s.key_id = "k".repeat(65)),
            StatementError::KeyId(_)
        ));
        assert!(matches!(
            bad(|s| s.key_id = "clé".into()),
            StatementError::KeyId(_)
        ));
        assert!(matches!(
            bad(|s| s.serial = "\t".into()),
            StatementError::Serial(_)
        ));
        assert!(matches!(
            bad(|s| s.serial = "S".repeat(65)),
            StatementError::Serial(_)
        ));
        assert!(matches!(
            bad(|s| s.issuer = "Acme".into()),
            StatementError::Issuer(_)
        ));
        assert!(matches!(
            bad(|s| s.issuer = "-acme".into()),
            StatementError::Issuer(_)
        ));
        assert!(matches!(
            bad(|s| s.issuer = "acme-".into()),
            StatementError::Issuer(_)
        ));
        assert!(matches!(
            bad(|s| s.issuer = "a.b".into()),
            StatementError::Issuer(_)
        ));
        assert!(matches!(
            bad(|s| s.issuer = "a".repeat(64)),
            StatementError::Issuer(_)
        ));
        assert!(matches!(
            bad(|s| s.license_type = LicenseType::new("A P")),
            StatementError::LicenseType(_)
        ));
        assert!(matches!(
            bad(|s| s.license_type = LicenseType::new("")),
            StatementError::LicenseType(_)
        ));
        assert!(matches!(bad(|s| s.count = 0), StatementError::ZeroCount));
        assert!(matches!(
            bad(|s| s.expires = Some(s.not_before)),
            StatementError::ExpiresBeforeStart { .. }
        ));
        assert!(matches!(
            bad(|s| s.not_before = MAX_TIME_S + 1),
            StatementError::TimeOutOfRange(_)
        ));
        let mut fine = statement();
        fine.key_id = "k".repeat(64);
        fine.serial = "~!SN-1/2".into();
        fine.issuer = "a".repeat(63);
        fine.license_type = LicenseType::new("rf_protect-2");
        fine.expires = Some(MAX_TIME_S);
        fine.validate().unwrap();
    }

    #[test]
    fn only_the_canonical_bytes_of_a_valid_statement_decode() {
        let good = statement().to_bytes();
        assert!(matches!(
            KeyStatement::from_bytes(&[]),
            Err(ParseError::EmptyStatement)
        ));
        let mut other_format = good.clone();
        other_format[0] = 2;
        assert!(matches!(
            KeyStatement::from_bytes(&other_format),
            Err(ParseError::UnsupportedFormat(2))
        ));
        assert!(matches!(
            KeyStatement::from_bytes(&good[..good.len() - 1]),
            Err(ParseError::Malformed(_))
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            KeyStatement::from_bytes(&trailing),
            Err(ParseError::TrailingBytes(1))
        ));
        // "ap" decodes to the type "AP": a second spelling, refused.
        let lower = good
            .windows(3)
            .position(|w| w == [2, b'A', b'P'])
            .map(|at| {
                let mut b = good.clone();
                b[at + 1..at + 3].copy_from_slice(b"ap");
                b
            })
            .unwrap();
        assert!(matches!(
            KeyStatement::from_bytes(&lower),
            Err(ParseError::NotCanonical)
        ));
        // The count 16 written as a varint u16 (251, 16, 0): same value, refused.
        let at = good.windows(2).position(|w| w == [16, 9]).unwrap();
        let mut long = good[..at].to_vec();
        long.extend_from_slice(&[251, 16, 0]);
        long.extend_from_slice(&good[at + 1..]);
        assert!(matches!(
            KeyStatement::from_bytes(&long),
            Err(ParseError::NotCanonical)
        ));
        let mut invalid = statement();
        invalid.count = 0;
        let bytes = invalid.to_bytes();
        assert!(matches!(
            KeyStatement::from_bytes(&bytes),
            Err(ParseError::Invalid(StatementError::ZeroCount))
        ));
    }

    #[test]
    fn a_claimed_length_is_not_allocated() {
        // A key id claiming u64::MAX / 2 bytes (varint tag 253: a u64
        // follows) and another claiming 2000: both refused by the byte
        // limit before anything is allocated or read.
        for claim in [u64::MAX / 2, 2000] {
            let mut bytes = vec![FORMAT_V1, 253];
            bytes.extend_from_slice(&claim.to_le_bytes());
            bytes.extend_from_slice(&[b'k'; 100]);
            assert!(
                matches!(
                    KeyStatement::from_bytes(&bytes),
                    Err(ParseError::Malformed(bincode::error::DecodeError::LimitExceeded))
                ),
                "{claim}: {:?}",
                KeyStatement::from_bytes(&bytes)
            );
        }
    }

    #[test]
    fn times_convert_to_the_tables_milliseconds() {
        let mut s = statement();
        s.expires = Some(1_800_000_000);
        assert_eq!(s.not_before_ms(), 1_700_000_000_000);
        assert_eq!(
            s.table_key(),
            Key {
                license_type: LicenseType::new("AP"),
                count: 16,
                expires_at_ms: Some(1_800_000_000_000)
            }
        );
        assert!(s.is_evaluation());
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(MAX_TIME_S), "9999-12-31 23:59:59 UTC");
        assert_eq!(format_utc(u64::MAX), format!("Unix second {}", u64::MAX));
    }
}
