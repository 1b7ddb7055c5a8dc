//! The bounds on what a client may put in the table.
//!
//! Every number and string a switch sends is a claim an attacker may have
//! written: these bounds keep one request, one client and one source from
//! growing the table (and with it every snapshot, view and replication
//! message) without limit, and keep what an operator's terminal shows free
//! of control characters.
//!
//! | what | bound |
//! | --- | --- |
//! | client id | 1 to [`MAX_ID_LEN`] printable ASCII characters, no spaces |
//! | serial | 1 to [`MAX_SERIAL_LEN`] printable ASCII characters, no spaces |
//! | software version | 0 to [`MAX_VERSION_LEN`] printable ASCII characters |
//! | keys per client | [`MAX_KEYS_PER_CLIENT`] |
//! | license types in one report | [`MAX_TYPES_PER_REPORT`] per map |

/// Longest client id, in bytes.
pub const MAX_ID_LEN: usize = 64;
/// Longest serial number, in bytes.
pub const MAX_SERIAL_LEN: usize = 64;
/// Longest software version string, in bytes.
pub const MAX_VERSION_LEN: usize = 64;
/// Most keys one client may present.
pub const MAX_KEYS_PER_CLIENT: usize = 64;
/// Most license types in one of a report's maps (built-in, used).
pub const MAX_TYPES_PER_REPORT: usize = 32;

/// Why a string is refused (see [`check_token`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum TokenError {
    /// Empty.
    #[error("{what} must not be empty")]
    Empty {
        /// What it is ("client id", "serial").
        what: String,
    },
    /// Too long.
    #[error("{what} of {len} bytes: at most {max}")]
    TooLong {
        /// What it is.
        what: String,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A control character, a space or anything beyond printable ASCII.
    #[error("{what} may hold printable ASCII characters only (no spaces or control characters)")]
    NotPrintable {
        /// What it is.
        what: String,
    },
}

/// Checks an id-like string: 1 to `max` printable ASCII characters, no
/// spaces (so it prints as one word and no escape sequence reaches an
/// operator's terminal).
///
/// # Errors
/// What is wrong with it.
pub fn check_token(what: &str, s: &str, max: usize) -> Result<(), TokenError> {
    if s.is_empty() {
        return Err(TokenError::Empty { what: what.into() });
    }
    if s.len() > max {
        return Err(TokenError::TooLong {
            what: what.into(),
            len: s.len(),
            max,
        });
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::NotPrintable { what: what.into() });
    }
    Ok(())
}

/// Checks a client id.
///
/// # Errors
/// See [`check_token`].
pub fn check_client_id(id: &str) -> Result<(), TokenError> {
    check_token("client id", id, MAX_ID_LEN)
}

/// Checks a serial number.
///
/// # Errors
/// See [`check_token`].
pub fn check_serial(serial: &str) -> Result<(), TokenError> {
    check_token("serial", serial, MAX_SERIAL_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_printable_words_of_bounded_length() {
        assert!(check_client_id("sw-17.lab:a").is_ok());
        assert!(matches!(check_client_id(""), Err(TokenError::Empty { .. })));
        assert!(matches!(
            check_client_id(&"a".repeat(65)),
            Err(TokenError::TooLong { .. })
        ));
        for bad in ["sw 1", "sw\u{1b}[31m", "sw\n", "sw\t", "swé", "\u{7f}"] {
            assert!(
                matches!(check_client_id(bad), Err(TokenError::NotPrintable { .. })),
                "{bad:?}"
            );
        }
        assert!(check_serial(&"S".repeat(64)).is_ok());
    }
}
