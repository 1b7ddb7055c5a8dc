//! Signed license keys (SPEC §9, S7).
//!
//! A license key is a small statement from an issuer — key id, license
//! type, count, the serial of the switch or server it is bound to,
//! validity, issuer — signed with the issuer's Ed25519 key. A key counts
//! only if its signature verifies under a trusted issuer's public key, it
//! is bound to the serial of whoever presents it, and it is valid now.
//! That the same key id counts once, whoever presents it, is the table's
//! rule: [`SignedKey::id`] is what it keys on.
//!
//! - [`KeyStatement`]: what a key says; [`SignedKey`]: a statement and its
//!   signature, with its one-line text form and [`SignedKey::verify`].
//! - [`IssuerKey`]: an issuer's secret key (`NAME.key`, PKCS#8 PEM);
//!   [`TrustedIssuer`] / [`TrustedIssuers`]: the public keys a server
//!   trusts (`NAME.pub`, `vipool-issuer NAME KEY` lines).
//! - [`load_key_file`]: the keys installed on a server, one key line per
//!   line; [`load_server_keys`]: a server's key files and trusted issuers,
//!   every key verified against its serial.
//!
//! # The text form
//!
//! One copy-pastable line, as switch vendors' keys are:
//!
//! ```text
//! vpk1.<statement>.<signature>
//! ```
//!
//! both parts base64url without padding. `<statement>` is the format byte
//! `1`, then the statement's fields in bincode's standard configuration
//! (key id, type, count, serial, not-before, expiry, issuer); `<signature>`
//! is the issuer's 64-byte Ed25519 signature over
//! `b"vipool license key v1\0"` followed by those bytes. A line is at most
//! [`MAX_LINE_LEN`] bytes; each key has exactly one text form.
//!
//! # A tour
//!
//! ```
//! use vipool::license::{IssuerKey, KeyError, KeyStatement, SignedKey, TrustedIssuers};
//! use vipool::table::{Key, LicenseType};
//!
//! // The issuer (`vipool license keygen` writes it to acme.key and acme.pub).
//! let acme = IssuerKey::generate("acme")?;
//! // A server trusts acme's public key (`[license]` will list acme.pub).
//! let trusted = TrustedIssuers::from_iter([acme.trusted()]);
//!
//! // `vipool license issue`: 16 AP for the switch of serial CV0012345.
//! let now = 1_750_000_000;
//! let key = acme.sign(KeyStatement {
//!     key_id: "4f1c9a07d2e8b3a6".into(),
//!     license_type: LicenseType::new("AP"),
//!     count: 16,
//!     serial: "CV0012345".into(),
//!     not_before: now,
//!     expires: None,
//!     issuer: "acme".into(),
//! })?;
//! let line = key.to_string(); // what the operator pastes
//! assert!(line.starts_with("vpk1."));
//!
//! // The server reads the line and checks it for the switch presenting it.
//! let key: SignedKey = line.parse()?;
//! let statement = key.verify(&trusted, "CV0012345", now)?;
//! assert_eq!(statement.table_key(), Key::permanent("AP", 16));
//!
//! // Another switch presenting it: refused.
//! let err = key.verify(&trusted, "CV0099999", now).unwrap_err();
//! assert!(matches!(err, KeyError::WrongSerial { .. }));
//!
//! // A character of the line changed: refused.
//! let mut tampered: Vec<char> = line.chars().collect();
//! let at = tampered.len() - 10; // inside the signature
//! tampered[at] = if tampered[at] == 'A' { 'B' } else { 'A' };
//! let tampered: SignedKey = tampered.into_iter().collect::<String>().parse()?;
//! let err = tampered.verify(&trusted, "CV0012345", now).unwrap_err();
//! assert!(matches!(err, KeyError::BadSignature { .. }));
//!
//! // 16 AP made into 99 AP and signed by someone else calling itself acme.
//! let mut forged = key.statement().clone();
//! forged.count = 99;
//! let forged = IssuerKey::generate("acme")?.sign(forged)?;
//! let err = forged.verify(&trusted, "CV0012345", now).unwrap_err();
//! assert!(matches!(err, KeyError::BadSignature { .. }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # For the table and the protocol
//!
//! - A [`SignedKey`] serializes (serde) as its text line, so a switch's
//!   report (`proto::SwitchReport`) carries keys exactly as an operator
//!   sees them; deserializing parses the line again (bounds, canonical
//!   form), never verifies.
//! - The serving node verifies before it proposes (`server::request`):
//!   [`SignedKey::verified`] with the presenter's authenticated serial and
//!   its clock gives the table's [`VerifiedKey`](crate::table::VerifiedKey)
//!   (key id, issuer, serial, type, count, expiry), which the command
//!   carries. The table counts a key id once, checks the binding to the
//!   presenter's serial and the expiry against the entry's `now_ms` again,
//!   and its sweep drops evaluation keys when they expire.
//! - Verify where the proposal is made, not in `apply`: the trusted
//!   issuers are each server's local configuration, and two replicas that
//!   trust different sets would apply the same entry differently.
//! - A server's own keys: [`load_server_keys`] reads its trusted issuers
//!   and key files and verifies each key against its serial once; the
//!   server keeps its keys in the table equal to the ones that count now
//!   ([`ServerKeyEntry::counts_at`]).

mod error;
mod file;
mod issuer;
mod key;
mod seen;
mod server_keys;
mod statement;
mod trust;

#[cfg(test)]
mod proptests;

use std::io::Read;
use std::path::Path;

pub use error::{KeyError, ParseError};
pub use file::{load_key_file, parse_key_file, KeyFileError, MAX_KEY_FILE};
pub use issuer::{IssuerError, IssuerKey, SignError};
pub use key::{SignedKey, PREFIX};
pub use seen::SeenSignatures;
pub use server_keys::{load_server_keys, ServerKeyEntry, ServerKeysError};
pub use statement::{
    format_utc, valid_issuer_name, KeyStatement, StatementError, FORMAT_V1, MAX_ISSUER_LEN, MAX_NAME_LEN,
    MAX_TIME_S, MAX_TYPE_LEN,
};
pub use trust::{PublicLineError, TrustError, TrustedIssuer, TrustedIssuers, PUBLIC_TAG};

/// The longest key line, in bytes. Real keys are under 450.
pub const MAX_LINE_LEN: usize = 1024;

/// Reads a UTF-8 text file of at most `max` bytes, without reading more
/// than `max + 1` of a larger one.
fn read_capped(path: &Path, max: u64) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the file is larger than {max} bytes: is it the right file?"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is not UTF-8 text: is it the right file?",
        )
    })
}
