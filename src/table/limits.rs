//! The bounds on what a client may put in the table.
//!
//! Every number and string a switch sends is a claim an attacker may have
//! written: these bounds keep one request, one client and one source from
//! growing the table (and with it every snapshot, view and replication
//! message) without limit, and keep what an operator's terminal shows free
//! of control characters.
//!
//! Both the server (before it proposes, so the client gets a clear error)
//! and the table (when it applies, so that no entry, however it got into
//! the log, can break them) check them.
//!
//! | what | bound |
//! | --- | --- |
//! | client id | 1 to [`MAX_ID_LEN`] printable ASCII characters, no spaces |
//! | serial | 1 to [`MAX_SERIAL_LEN`] printable ASCII characters, no spaces |
//! | software version | 0 to [`MAX_VERSION_LEN`] printable ASCII characters (spaces allowed) |
//! | keys per client | [`MAX_KEYS_PER_CLIENT`] |
//! | license types in one report | [`MAX_TYPES_PER_REPORT`] per map (built-in, used) |
//! | a built-in or used count | at most [`MAX_COUNT`] per type |
//! | key id | 1 to [`MAX_KEY_ID_LEN`] printable ASCII characters, no spaces |
//! | issuer name | 1 to [`MAX_ISSUER_LEN`] printable ASCII characters, no spaces |
//! | server (node) name | 1 to [`MAX_SERVER_NAME_LEN`] printable ASCII characters, no spaces |
//! | operator name | 1 to [`MAX_ID_LEN`] printable ASCII characters, no spaces |
//! | client address (as the server saw it) | 1 to [`MAX_ADDRESS_LEN`] printable ASCII characters |
//! | keys per server | [`MAX_KEYS_PER_SERVER`] |
//! | a switch certificate's validity (`vipool pki switch --days`) | [`MAX_SWITCH_CERT_DAYS`] |
//!
//! How many clients one source address may hold in the table and how
//! often it may register are the serving node's own policy
//! (`[license] max_clients_per_source`, `registrations_per_s_per_source`),
//! checked before proposing only.

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
/// The largest built-in or used count a report may carry for one type: no
/// switch runs more than this many licensed things, and a claim beyond it
/// is an attack or a bug, not a need.
pub const MAX_COUNT: u32 = 100_000;
/// Longest key id, in bytes (as a signed key's statement allows).
pub const MAX_KEY_ID_LEN: usize = 64;
/// Longest issuer name, in bytes (a DNS label).
pub const MAX_ISSUER_LEN: usize = 63;
/// Longest server (node) name, in bytes (a DNS name of one label or more).
pub const MAX_SERVER_NAME_LEN: usize = 63;
/// Longest client address, in bytes: an IPv6 address with a zone and a
/// port fits.
pub const MAX_ADDRESS_LEN: usize = 64;
/// Most keys installed on one server (a key file of 1 MiB holds about 2,300;
/// a pair needs a handful).
pub const MAX_KEYS_PER_SERVER: usize = 1_000;
/// Most issuers a pair may trust.
pub const MAX_ISSUERS: usize = 64;
/// The longest validity `vipool pki switch` issues a switch certificate
/// for, in days. The table remembers the newest certificate each client id
/// registered with for this long after its issue: by then every older
/// certificate of that id the pair's CA issued has expired.
pub const MAX_SWITCH_CERT_DAYS: u32 = 3_650;

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

/// Checks a key id.
///
/// # Errors
/// See [`check_token`].
pub fn check_key_id(key_id: &str) -> Result<(), TokenError> {
    check_token("key id", key_id, MAX_KEY_ID_LEN)
}

/// Checks an issuer name.
///
/// # Errors
/// See [`check_token`].
pub fn check_issuer(issuer: &str) -> Result<(), TokenError> {
    check_token("issuer", issuer, MAX_ISSUER_LEN)
}

/// Checks a server (node) name.
///
/// # Errors
/// See [`check_token`].
pub fn check_server_name(server: &str) -> Result<(), TokenError> {
    check_token("server name", server, MAX_SERVER_NAME_LEN)
}

/// Checks an operator's name.
///
/// # Errors
/// See [`check_token`].
pub fn check_operator(name: &str) -> Result<(), TokenError> {
    check_token("operator name", name, MAX_ID_LEN)
}

/// Checks a client address as the server recorded it.
///
/// # Errors
/// See [`check_token`].
pub fn check_address(address: &str) -> Result<(), TokenError> {
    check_token("client address", address, MAX_ADDRESS_LEN)
}

/// Checks a software version: at most [`MAX_VERSION_LEN`] printable ASCII
/// characters; spaces are allowed (`6.5.3.0 build 12`), control
/// characters are not. It may be empty.
///
/// # Errors
/// Too long, or a character other than printable ASCII and space.
pub fn check_version(version: &str) -> Result<(), TokenError> {
    if version.len() > MAX_VERSION_LEN {
        return Err(TokenError::TooLong {
            what: "software version".into(),
            len: version.len(),
            max: MAX_VERSION_LEN,
        });
    }
    if !version.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(TokenError::NotPrintable {
            what: "software version".into(),
        });
    }
    Ok(())
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
        assert!(matches!(
            check_serial(&"S".repeat(65_536)),
            Err(TokenError::TooLong { len: 65_536, .. })
        ));
    }

    #[test]
    fn versions_may_hold_spaces_but_no_control_characters() {
        assert!(check_version("").is_ok());
        assert!(check_version("6.5.3.0 build 12").is_ok());
        assert!(matches!(
            check_version(&"1".repeat(MAX_VERSION_LEN + 1)),
            Err(TokenError::TooLong { .. })
        ));
        for bad in ["6.5\u{1b}[2J", "6.5\n", "6.5\t", "6.5é"] {
            assert!(
                matches!(check_version(bad), Err(TokenError::NotPrintable { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn every_named_check_has_its_bound() {
        assert!(check_key_id(&"k".repeat(MAX_KEY_ID_LEN)).is_ok());
        assert!(check_key_id(&"k".repeat(MAX_KEY_ID_LEN + 1)).is_err());
        assert!(check_issuer(&"i".repeat(MAX_ISSUER_LEN + 1)).is_err());
        assert!(check_server_name(&"s".repeat(MAX_SERVER_NAME_LEN + 1)).is_err());
        assert!(check_operator("alice").is_ok());
        assert!(check_operator("alice smith").is_err());
        assert!(check_address("[2001:db8::1%eth0]:4333").is_ok());
        assert!(check_address(&"9".repeat(MAX_ADDRESS_LEN + 1)).is_err());
    }
}
