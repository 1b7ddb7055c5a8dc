//! Why the serving node refuses a request before proposing anything
//! ([`RequestError`]), as the client receives it.

use serde::{Deserialize, Serialize};

use crate::license::KeyError;

/// Why a license key a client presented does not count: a
/// [`KeyError`] as it travels to the client (its messages are the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyRefusal {
    /// Signed by an issuer the server does not trust.
    UnknownIssuer {
        /// The key's id.
        key_id: String,
        /// The issuer it names.
        issuer: String,
    },
    /// The signature does not match the statement (altered, damaged, forged).
    BadSignature {
        /// The key's id, as the statement says.
        key_id: String,
        /// The issuer it names.
        issuer: String,
    },
    /// Bound to another switch or server.
    WrongSerial {
        /// The key's id.
        key_id: String,
        /// The serial it is bound to.
        bound: String,
        /// The serial of who presented it.
        presented: String,
    },
    /// Before its validity starts.
    NotYetValid {
        /// The key's id.
        key_id: String,
        /// When it becomes valid (Unix seconds).
        not_before: u64,
        /// The server's clock (Unix seconds).
        now: u64,
    },
    /// An evaluation key past its expiry.
    Expired {
        /// The key's id.
        key_id: String,
        /// When it stopped counting (Unix seconds).
        expired: u64,
    },
    /// Not a key at all (never for a key that parsed).
    Unreadable(String),
}

impl KeyRefusal {
    /// The id of the refused key (empty for an unreadable one).
    pub fn key_id(&self) -> &str {
        match self {
            Self::UnknownIssuer { key_id, .. }
            | Self::BadSignature { key_id, .. }
            | Self::WrongSerial { key_id, .. }
            | Self::NotYetValid { key_id, .. }
            | Self::Expired { key_id, .. } => key_id,
            Self::Unreadable(_) => "",
        }
    }
}

impl From<KeyError> for KeyRefusal {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::UnknownIssuer { key_id, issuer } => Self::UnknownIssuer { key_id, issuer },
            KeyError::BadSignature { key_id, issuer } => Self::BadSignature { key_id, issuer },
            KeyError::WrongSerial {
                key_id,
                bound,
                presented,
            } => Self::WrongSerial {
                key_id,
                bound,
                presented,
            },
            KeyError::NotYetValid {
                key_id,
                not_before,
                now,
            } => Self::NotYetValid {
                key_id,
                not_before,
                now,
            },
            KeyError::Expired { key_id, expired } => Self::Expired { key_id, expired },
            KeyError::Parse(e) => Self::Unreadable(e.to_string()),
        }
    }
}

impl std::fmt::Display for KeyRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // One wording for a refused key, wherever it is shown: the license
        // module's.
        let e = match self.clone() {
            Self::UnknownIssuer { key_id, issuer } => KeyError::UnknownIssuer { key_id, issuer },
            Self::BadSignature { key_id, issuer } => KeyError::BadSignature { key_id, issuer },
            Self::WrongSerial {
                key_id,
                bound,
                presented,
            } => KeyError::WrongSerial {
                key_id,
                bound,
                presented,
            },
            Self::NotYetValid {
                key_id,
                not_before,
                now,
            } => KeyError::NotYetValid {
                key_id,
                not_before,
                now,
            },
            Self::Expired { key_id, expired } => KeyError::Expired { key_id, expired },
            Self::Unreadable(why) => return f.write_str(&why),
        };
        write!(f, "{e}")
    }
}

impl std::error::Error for KeyRefusal {}

/// Why the serving node refused a request before proposing it. Nothing
/// was proposed: the table is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RequestError {
    /// A key of the report does not count (SPEC S7).
    #[error(transparent)]
    Key(KeyRefusal),
    /// A switch asked for another client's id.
    #[error(
        "this connection's certificate names client {certified:?}: it may act only for that \
         id, not for {requested:?}"
    )]
    NotOwnId {
        /// The id the certificate names.
        certified: String,
        /// The id the request names.
        requested: String,
    },
    /// A switch registered with another serial than its certificate's.
    #[error(
        "this connection's certificate names serial {certified:?}, the registration \
         {requested:?}: a switch registers with its own serial"
    )]
    NotOwnSerial {
        /// The serial the certificate names.
        certified: String,
        /// The serial the request names.
        requested: String,
    },
    /// The client id is in the table under another serial than the
    /// certificate's: a replaced switch registers first.
    #[error(
        "client {id:?} is registered with serial {registered:?}, and this certificate names \
         {certified:?}: register first (a replacement switch takes over the id by registering)"
    )]
    SerialMismatch {
        /// The client id.
        id: String,
        /// The serial in the table.
        registered: String,
        /// The serial the certificate names.
        certified: String,
    },
    /// A request only a switch may make, from another kind of client.
    #[error("only a switch may {what}; this connection is {who}")]
    SwitchOnly {
        /// What was asked.
        what: String,
        /// Who the connection is.
        who: String,
    },
    /// A request only an operator may make, from another kind of client.
    #[error("only an operator may {what}; this connection is {who}")]
    OperatorOnly {
        /// What was asked.
        what: String,
        /// Who the connection is.
        who: String,
    },
    /// The source address holds as many clients as the server allows.
    #[error(
        "{source_address} already holds {max} clients, the most one address may \
         (license.max_clients_per_source)"
    )]
    TooManyClients {
        /// The address.
        source_address: String,
        /// The limit.
        max: u32,
    },
    /// The source address registers faster than the server allows.
    #[error(
        "{source_address} registers more than {per_s} times a second \
         (license.registrations_per_s_per_source): retry in {retry_after_ms} ms"
    )]
    RegistrationRate {
        /// The address.
        source_address: String,
        /// The allowed rate.
        per_s: u32,
        /// When the next registration would be accepted.
        retry_after_ms: u64,
    },
    /// A request that changes nothing (a view) where a change was expected.
    #[error("a view is not a change")]
    NotAChange,
}

impl RequestError {
    /// The cause as `vipool show status` counts it under `refused`.
    pub fn cause(&self) -> &'static str {
        match self {
            Self::Key(_) => "client_key_refused",
            Self::NotOwnId { .. } => "client_not_own_id",
            Self::NotOwnSerial { .. } => "client_not_own_serial",
            Self::SerialMismatch { .. } => "client_serial_mismatch",
            Self::SwitchOnly { .. } => "client_switch_only",
            Self::OperatorOnly { .. } => "client_operator_only",
            Self::TooManyClients { .. } => "client_too_many_per_source",
            Self::RegistrationRate { .. } => "client_registration_rate",
            Self::NotAChange => "client_not_a_change",
        }
    }
}

impl From<KeyError> for RequestError {
    fn from(e: KeyError) -> Self {
        Self::Key(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_key_reads_as_the_license_module_words_it() {
        let e = KeyError::WrongSerial {
            key_id: "k1".into(),
            bound: "A".into(),
            presented: "B".into(),
        };
        let words = e.to_string();
        let refusal = RequestError::from(e);
        assert_eq!(refusal.to_string(), words);
        assert_eq!(refusal.cause(), "client_key_refused");
        let bytes = bincode::serde::encode_to_vec(&refusal, bincode::config::standard()).unwrap();
        let (back, _): (RequestError, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, refusal);
        let RequestError::Key(k) = back else { panic!() };
        assert_eq!(k.key_id(), "k1");
    }
}
