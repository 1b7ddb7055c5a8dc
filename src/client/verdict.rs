//! What a client does about an error: try again, or stop and tell the
//! operator what to fix ([`Verdict`]).
//!
//! A refusal is permanent when the same request would be refused the same
//! way until someone changes a configuration, a certificate or a key: an
//! unknown license type, a certificate the other side does not accept, a
//! switch acting for an id its certificate does not name, a protocol
//! version the server does not speak. Everything a failover, a restart or
//! a busy server explains is transient: a connection refused, reset or
//! timed out, a node that is not serving yet or has just lost the VIP, a
//! change that could not be committed, a registration over the source's
//! rate.
//!
//! The classification lives with the client because it is the client's
//! decision; the variants it reads are the protocol's
//! ([`ServerError`], [`RequestError`], [`CommandError`]) and rustls's.

use std::io;

use rustls::{AlertDescription, CertificateError};

use super::ClientError;
use crate::proto::frame::FrameError;
use crate::proto::{RequestError, ServerError};
use crate::table::CommandError;

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It may work next time: the server is not there yet, not serving,
    /// or busy.
    Transient,
    /// The same request would be refused the same way: stop, and say what
    /// an operator has to change.
    Permanent {
        /// What to do about it, for the operator.
        remedy: &'static str,
    },
    /// The TLS handshake failed before the other end proved to be the
    /// pair: a certificate an operator has to fix, most likely, but a host
    /// that holds the VIP (Trust I) can cause exactly the same error, and
    /// a switch that stopped for good on it would be a switch that host
    /// switched off. Say so loudly, and keep trying, backing off.
    Unproven {
        /// What to do about it, for the operator.
        remedy: &'static str,
    },
}

impl Verdict {
    /// Whether it is [`Verdict::Permanent`].
    pub fn is_permanent(self) -> bool {
        matches!(self, Verdict::Permanent { .. })
    }
}

const fn permanent(remedy: &'static str) -> Verdict {
    Verdict::Permanent { remedy }
}

impl ClientError {
    /// Whether trying again can help, and if not, what to do.
    pub fn verdict(&self) -> Verdict {
        match self {
            // After the handshake the server has proved who it is: what it
            // says (an alert refusing our certificate) is the pair's word.
            ClientError::Io(e) => io_verdict(e),
            ClientError::Tls(e) => match io_verdict(e) {
                Verdict::Permanent { remedy } => Verdict::Unproven { remedy },
                other => other,
            },
            // The server went away (a failover, a restart): the VIP's next
            // holder answers.
            ClientError::Closed => Verdict::Transient,
            // A dead host (a power loss): the VIP's next holder answers.
            ClientError::NoAnswer { .. } => Verdict::Transient,
            ClientError::Frame(FrameError::VersionNotSupported { .. }) => permanent(
                "the server speaks another protocol version: run the same vipool release on the \
                 switches and the servers",
            ),
            ClientError::Frame(_) | ClientError::NotVipool { .. } | ClientError::Unexpected => permanent(
                "the server's answers do not read as this release's protocol: check that the \
                 address is the pair's VIP and client port, and that both run the same release",
            ),
            ClientError::SpeaksTls { .. } => permanent(
                "the server speaks TLS: give the pair's CA and a certificate instead of \
                 --insecure-plaintext",
            ),
            ClientError::Server(e) => e.verdict(),
        }
    }
}

/// An I/O error: a TLS error inside it decides (a handshake refused, or an
/// alert that arrives on the first read: in TLS 1.3 the server checks the
/// client's certificate after the client has finished its handshake); the
/// rest is the network's, and transient, except an address that does not
/// parse.
fn io_verdict(e: &io::Error) -> Verdict {
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return tls_verdict(tls);
    }
    match e.kind() {
        io::ErrorKind::InvalidInput => {
            permanent("--server must be ADDRESS:PORT (the VIP and the client port)")
        }
        _ => Verdict::Transient,
    }
}

const NOT_OUR_CA: &str = "the server's certificate is not of the pinned CA: check that --ca is the \
                          pair's CA certificate, and that the address is the pair's VIP (another \
                          host may be answering on it)";
const NOT_LICENSE_SERVER: &str = "the server's certificate does not name the license server: the \
                                  host answering is not a server of the pair (a witness, or \
                                  another host); check the address";
const SERVER_CERT_DATES: &str = "the server's certificate is outside its validity: renew it \
                                 (`vipool pki member`), or check the clocks of the switch and \
                                 the servers";
const OUR_CERT_REFUSED: &str = "the server refused this switch's certificate: issue one from the \
                                pair's CA (`vipool pki switch --id ID --serial SERIAL`), check \
                                that it has not expired, and point --cert at it";
const NO_COMMON_TLS: &str = "the server and this switch have no TLS version or cipher in common: \
                             run the same vipool release on both";
const NOT_TLS: &str = "the server does not speak TLS on this port: is it a `vipool serve \
                       --insecure-plaintext`, or another service? check the address";

fn tls_verdict(e: &rustls::Error) -> Verdict {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(cert) => permanent(match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => NOT_OUR_CA,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                NOT_LICENSE_SERVER
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => SERVER_CERT_DATES,
            _ => NOT_OUR_CA,
        }),
        E::NoCertificatesPresented | E::UnsupportedNameType => permanent(NOT_LICENSE_SERVER),
        E::PeerIncompatible(_) => permanent(NO_COMMON_TLS),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => permanent(NOT_TLS),
        E::AlertReceived(alert) => match alert {
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired
            | AlertDescription::NoCertificate => permanent(OUR_CERT_REFUSED),
            AlertDescription::HandshakeFailure
            | AlertDescription::ProtocolVersion
            | AlertDescription::InsufficientSecurity => permanent(NO_COMMON_TLS),
            // A server shutting down, or failing inside: its successor may answer.
            _ => Verdict::Transient,
        },
        // A broken connection, a server that failed mid-handshake.
        _ => Verdict::Transient,
    }
}

// Here rather than in `proto`: it is what a client does about a refusal.
impl ServerError {
    /// Whether a client that asks again can get another answer, and if
    /// not, what to do.
    pub fn verdict(&self) -> Verdict {
        match self {
            // A node that does not hold the VIP, or holds it but is not
            // serving yet (no raft leader, table catching up), or has just
            // lost it: the holder answers soon.
            ServerError::NotLicenseServer { .. } | ServerError::NotCommitted(_) => Verdict::Transient,
            // The change committed, its answer was lost to a fault of the
            // server: a report sent again is answered (it is idempotent).
            ServerError::UnexpectedReply { .. } => Verdict::Transient,
            ServerError::VersionNotSupported { .. } => permanent(
                "the server speaks another protocol version: run the same vipool release on the \
                 switches and the servers",
            ),
            ServerError::FrameTooLarge { .. } => permanent(
                "this switch's report is larger than the server accepts: present fewer keys, or \
                 raise the servers' max_frame",
            ),
            ServerError::MalformedFrame(_) => permanent(
                "the server cannot read this switch's requests: run the same vipool release on \
                 the switches and the servers",
            ),
            ServerError::WrongPort(_) => permanent(
                "--server points at the operator port: use the VIP and the client port \
                 (license.client_port)",
            ),
            ServerError::Forbidden(_) => permanent(
                "this certificate may not make license requests: use a switch certificate \
                 (`vipool pki switch`)",
            ),
            ServerError::MemberCertificate { .. } => permanent(
                "this is a member certificate of the pair (a server's or the witness's): a switch \
                 presents its own, from `vipool pki switch`",
            ),
            ServerError::Refused(e) => command_verdict(e),
            ServerError::Denied(e) => request_verdict(e),
        }
    }
}

fn command_verdict(e: &CommandError) -> Verdict {
    use CommandError as C;
    match e {
        // The table forgot the client (register again), the pool is short
        // now (it may grow), or the client's state and the table's
        // differ (a new registration sets them straight).
        C::UnknownClient(_)
        | C::OverSubscribed { .. }
        | C::NotEnoughLicenses { .. }
        | C::ClaimExceedsAvailable { .. }
        | C::ReleaseExceedsUsed { .. }
        // A server that has not announced its serial yet does once the
        // pair has a leader.
        | C::UnknownServer(_)
        // Settings are the servers' own business; a switch never sends
        // them, so this answers another request than its own: retry.
        | C::Settings(_)
        | C::Issuers(_)
        | C::TicketKey(_) => Verdict::Transient,
        C::UnknownType(_) | C::NotPoolable(_) => permanent(
            "the servers do not pool this license type: remove it from the switch's licenses \
             (--builtin, --use), or add it to the servers' [license] types",
        ),
        C::Bound(_) | C::TooManyKeys { .. } | C::TooManyTypes { .. } | C::CountTooLarge { .. } => permanent(
            "this switch's id, serial, version or report is out of the bounds every server \
             enforces: fix the switch's configuration",
        ),
        C::ZeroCount | C::CountOverflow => permanent("fix the counts in the switch's configuration"),
        C::SupersededCertificate { .. } => permanent(
            "a newer certificate for this id has registered (the switch was replaced): give this \
             switch its own id and certificate (`vipool pki switch`)",
        ),
        // Never a switch's own doing: the server sent what it must not.
        C::NotCertifiable => Verdict::Transient,
        C::DuplicateKey(_)
        | C::KeyCounted { .. }
        | C::KeyNotBound { .. }
        | C::KeyExpired(_)
        | C::KeyExists(_)
        | C::UnknownKey(_)
        | C::KeyOfClient { .. }
        | C::IssuerNotTrusted { .. } => permanent(
            "remove the refused key from the switch (or, for a key counted elsewhere, from the \
             other switch), or issue a key bound to this switch's serial",
        ),
    }
}

fn request_verdict(e: &RequestError) -> Verdict {
    use RequestError as R;
    match e {
        // Allowed again in `retry_after_ms`.
        R::RegistrationRate { .. } => Verdict::Transient,
        R::Key(_) => permanent(
            "remove the refused key from the switch, or issue a key bound to its serial by an \
             issuer the servers trust",
        ),
        R::NotOwnId { .. } | R::NotOwnSerial { .. } => permanent(
            "run the switch with the id and serial its certificate names (--id, --serial), or \
             issue it a certificate for them (`vipool pki switch --id ID --serial SERIAL`)",
        ),
        R::SerialMismatch { .. } => permanent(
            "another switch has registered under this id with its own serial (it replaced this \
             one): give this switch its own id and certificate",
        ),
        R::SwitchOnly { .. } | R::OperatorOnly { .. } | R::NotAChange => permanent(
            "this certificate is of the wrong kind for the request: a switch uses a switch \
             certificate (`vipool pki switch`)",
        ),
        R::TooManyClients { .. } => permanent(
            "this source address holds as many clients as the servers allow: remove stale \
             clients (`vipool operator remove-client`) or raise license.max_clients_per_source",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::LicenseType;

    fn tls_io(e: rustls::Error) -> io::Error {
        // As tokio-rustls hands a rustls error over.
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn the_network_and_a_failover_are_transient() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::TimedOut,
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::BrokenPipe,
        ] {
            assert_eq!(
                ClientError::Io(kind.into()).verdict(),
                Verdict::Transient,
                "{kind:?}"
            );
            assert_eq!(
                ClientError::Tls(kind.into()).verdict(),
                Verdict::Transient,
                "{kind:?}"
            );
        }
        assert_eq!(ClientError::Closed.verdict(), Verdict::Transient);
        for e in [
            ServerError::NotLicenseServer { vip: None },
            ServerError::NotCommitted("leader changed".into()),
            ServerError::UnexpectedReply {
                command: "register sw".into(),
                reply: "swept".into(),
            },
            ServerError::Refused(CommandError::UnknownClient("sw".into())),
            ServerError::Refused(CommandError::NotEnoughLicenses {
                license_type: LicenseType::new("AP"),
                requested: 2,
                available: 1,
            }),
            ServerError::Denied(RequestError::RegistrationRate {
                source_address: "192.0.2.1".into(),
                per_s: 1,
                retry_after_ms: 10,
            }),
        ] {
            assert_eq!(
                ClientError::Server(e.clone()).verdict(),
                Verdict::Transient,
                "{e}"
            );
        }
        // A server failing inside is not the switch's fault.
        let internal = tls_io(rustls::Error::AlertReceived(AlertDescription::InternalError));
        assert_eq!(ClientError::Io(internal).verdict(), Verdict::Transient);
    }

    #[test]
    fn what_only_an_operator_can_fix_is_permanent() {
        let unknown_type = ServerError::Refused(CommandError::UnknownType(LicenseType::new("FOO")));
        assert!(ClientError::Server(unknown_type).verdict().is_permanent());
        let not_own = ServerError::Denied(RequestError::NotOwnId {
            certified: "a".into(),
            requested: "b".into(),
        });
        assert!(ClientError::Server(not_own).verdict().is_permanent());
        assert!(ClientError::Server(ServerError::WrongPort("operator".into()))
            .verdict()
            .is_permanent());
        // A server certificate of another CA, or not naming the license
        // server: refused by this end's handshake, before the other end
        // proved anything. Not permanent: a host holding the VIP could
        // send it to stop every switch.
        for (e, says) in [
            (CertificateError::UnknownIssuer, "pinned CA"),
            (CertificateError::NotValidForName, "license server"),
            (CertificateError::Expired, "validity"),
        ] {
            let v = ClientError::Tls(tls_io(rustls::Error::InvalidCertificate(e))).verdict();
            let Verdict::Unproven { remedy } = v else {
                panic!("{v:?}")
            };
            assert!(!v.is_permanent());
            assert!(remedy.contains(says), "{remedy}");
        }
        // Whatever the unproven end says in the handshake, alerts too.
        let v = ClientError::Tls(tls_io(rustls::Error::AlertReceived(AlertDescription::UnknownCA))).verdict();
        assert!(matches!(v, Verdict::Unproven { .. }), "{v:?}");
        // This switch's certificate refused by the server: an alert, seen
        // on the first read after the handshake.
        let alert = tls_io(rustls::Error::AlertReceived(AlertDescription::UnknownCA));
        let Verdict::Permanent { remedy } = ClientError::Io(alert).verdict() else {
            panic!()
        };
        assert!(remedy.contains("vipool pki switch"), "{remedy}");
        let bad_address = io::Error::new(io::ErrorKind::InvalidInput, "invalid socket address");
        assert!(ClientError::Io(bad_address).verdict().is_permanent());
    }
}
