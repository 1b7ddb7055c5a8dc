//! Why a key line is not a key ([`ParseError`]) and why a key does not
//! count ([`KeyError`]). Every message names the key where it can and says
//! what the operator can do.

use super::statement::{format_utc, StatementError};
use super::MAX_LINE_LEN;

/// Why a text is not a license key.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Longer than any key line.
    #[error(
        "the text is {0} bytes long; a license key line is at most {MAX_LINE_LEN}: \
         pass one key line (`vpk1.…`), not a file or several keys"
    )]
    TooLong(usize),
    /// Not in the `vpk1.` form at all.
    #[error(
        "not a vipool license key: a key is one line that starts with \"vpk1.\"; copy the \
         whole line, without spaces or line breaks"
    )]
    NotAKey,
    /// A later text version of the key form.
    #[error(
        "license key text version {0:?} is not known to this vipool (it reads \"vpk1\"): \
         upgrade vipool, or ask the issuer for a vpk1 key"
    )]
    UnsupportedVersion(String),
    /// Not `vpk1.STATEMENT.SIGNATURE`.
    #[error(
        "a license key is vpk1.STATEMENT.SIGNATURE (two parts after \"vpk1.\"); this one has \
         {0}: copy the whole line again"
    )]
    Parts(usize),
    /// A part is not base64url text.
    #[error(
        "the key's {part} is not base64url text ({source}): copy the whole line again, \
         without spaces or line breaks"
    )]
    Base64 {
        /// "statement" or "signature".
        part: &'static str,
        /// Where the text breaks.
        source: base64::DecodeError,
    },
    /// The signature is not 64 bytes.
    #[error(
        "the key's signature is {0} bytes; an Ed25519 signature is 64: the line is cut short \
         or damaged, copy it again"
    )]
    SignatureLength(usize),
    /// No statement bytes.
    #[error("the key's statement is empty: the line is damaged, copy it again")]
    EmptyStatement,
    /// A statement layout this vipool does not know.
    #[error(
        "the key's statement has format {0}, which this vipool does not know (it reads \
         format 1): upgrade vipool, or ask the issuer for a format-1 key"
    )]
    UnsupportedFormat(u8),
    /// The statement's fields cannot be read.
    #[error("the key's statement is damaged ({0}): copy the line again from the issuer")]
    Malformed(#[source] bincode::error::DecodeError),
    /// Bytes follow the statement's last field.
    #[error(
        "the key's statement has {0} bytes after its last field: the line is damaged, copy it \
         again from the issuer"
    )]
    TrailingBytes(usize),
    /// A field breaks its rules.
    #[error("the key's statement is not valid: {0}")]
    Invalid(#[from] StatementError),
    /// Not the one encoding vipool writes for these fields.
    #[error(
        "the key's statement is not in canonical form (it was not written by vipool, or was \
         altered): copy the line again from the issuer"
    )]
    NotCanonical,
}

/// Why a license key does not count.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not a key.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Signed by an issuer this server does not trust.
    #[error(
        "license key {key_id} is signed by issuer {issuer:?}, which is not trusted here: add \
         the issuer's public key (its `vipool-issuer {issuer} …` line) to the trusted \
         issuers, or get a key from a trusted issuer"
    )]
    UnknownIssuer {
        /// The key's id.
        key_id: String,
        /// The issuer it names.
        issuer: String,
    },
    /// The signature does not match the statement.
    #[error(
        "license key {key_id} does not match its signature by issuer {issuer:?}: the key was \
         altered or damaged (or signed by another key of that name); copy it again from the \
         issuer"
    )]
    BadSignature {
        /// The key's id (as the damaged statement says).
        key_id: String,
        /// The issuer it names.
        issuer: String,
    },
    /// Bound to another switch or server.
    #[error(
        "license key {key_id} is bound to serial {bound:?} but was presented by serial \
         {presented:?}: a key counts only on the switch or server it was issued for; ask the \
         issuer for a key for {presented:?}"
    )]
    WrongSerial {
        /// The key's id.
        key_id: String,
        /// The serial the key is bound to.
        bound: String,
        /// The serial of who presented it.
        presented: String,
    },
    /// Before its validity starts.
    #[error(
        "license key {key_id} is not valid before {} (it is now {}): it counts from then; if \
         that is wrong, check this host's clock",
        format_utc(*not_before), format_utc(*now)
    )]
    NotYetValid {
        /// The key's id.
        key_id: String,
        /// When it becomes valid (Unix seconds).
        not_before: u64,
        /// The time it was checked at (Unix seconds).
        now: u64,
    },
    /// An evaluation key past its expiry.
    #[error(
        "evaluation license key {key_id} expired at {}: it no longer counts; install a new \
         key from the issuer",
        format_utc(*expired)
    )]
    Expired {
        /// The key's id.
        key_id: String,
        /// When it stopped counting (Unix seconds).
        expired: u64,
    },
}
