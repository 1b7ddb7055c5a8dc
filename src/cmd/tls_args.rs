//! How the client-side commands (`vipool client`, `vipool show`) prove
//! who they are to a server and check that it is the pair's.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use vipool::client::{ClientError, Connection};
use vipool::proto::ServerError;
use vipool::tls::ClientTls;

/// A client's credentials: the pair's CA (pinned) and its own certificate.
#[derive(Debug, Clone, ClapArgs)]
pub struct Creds {
    /// The pair's CA certificate: the server must show a certificate of it.
    #[arg(long, default_value = "/etc/vipool/pki/ca.crt")]
    pub ca: PathBuf,
    /// This client's certificate (`vipool pki operator` for `show`,
    /// `vipool pki switch` for `client`). Default for `show`:
    /// /etc/vipool/pki/operator.crt.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Its private key (default: the certificate's name with `.key`).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Plain TCP without certificates: only a standalone
    /// `vipool serve --insecure-plaintext` answers (tests, development).
    #[arg(long)]
    pub insecure_plaintext: bool,
}

impl Creds {
    /// The certificate and key files, `default` when none is given.
    pub fn files(&self, default: &str) -> (PathBuf, PathBuf) {
        let cert = self.cert.clone().unwrap_or_else(|| PathBuf::from(default));
        let key = self.key.clone().unwrap_or_else(|| cert.with_extension("key"));
        (cert, key)
    }

    /// An operator's TLS, or `None` for plain TCP.
    ///
    /// # Errors
    /// The files cannot be used; the error names them and says what to do.
    pub fn operator(&self) -> anyhow::Result<Option<ClientTls>> {
        if self.insecure_plaintext {
            return Ok(None);
        }
        let (cert, key) = self.files("/etc/vipool/pki/operator.crt");
        let tls = ClientTls::load_operator(&self.ca, &cert, &key).with_context(|| {
            format!(
                "operator credentials (--ca {}, --cert {}): issue them with `vipool pki operator --name NAME` \
                 and point --cert at NAME.crt",
                self.ca.display(),
                cert.display()
            )
        })?;
        Ok(Some(tls))
    }
}

/// Connects to `server` with `tls`, or over plain TCP without.
///
/// # Errors
/// See [`Connection::connect`].
pub async fn connect(server: &str, tls: Option<&ClientTls>) -> Result<Connection, ClientError> {
    match tls {
        Some(tls) => Connection::connect(server, tls).await,
        None => Connection::connect_insecure(server).await,
    }
}

/// What an operator should do about `e`, met asking an operator endpoint
/// (`vipool show`, `vipool operator`), if anything can be said.
pub fn operator_hint(e: &ClientError) -> Option<&'static str> {
    use std::io::ErrorKind;
    use vipool::client::Verdict;
    // In TLS 1.3 the node checks our certificate after our side of the
    // handshake is done: its refusal comes on the first read, as I/O.
    let tls = match e {
        ClientError::Io(io) | ClientError::Tls(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    if let Some(rustls::Error::AlertReceived(_)) = tls {
        return Some(
            "the node refused this certificate: use an operator certificate of the pair's CA \
             (`vipool pki operator --name NAME`, then --cert NAME.crt)",
        );
    }
    if let (ClientError::Io(io), None) = (e, tls) {
        return match io.kind() {
            ErrorKind::ConnectionRefused => Some(
                "nothing listens there: check that the node runs (systemctl status vipool-node) and \
                 that --server is its license.operator_listen (by default 127.0.0.1:4334, the \
                 node's own loopback)",
            ),
            ErrorKind::TimedOut | ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => Some(
                "no answer: check the address, and that a firewall lets the operator port (4334) through",
            ),
            ErrorKind::InvalidInput => Some("--server must be ADDRESS:PORT, e.g. 192.0.2.11:4334"),
            _ => None,
        };
    }
    if let ClientError::Server(ServerError::MemberCertificate { .. }) = e {
        return Some("operators present an operator certificate (`vipool pki operator`), not a member's");
    }
    if let ClientError::Server(ServerError::Forbidden(_) | ServerError::WrongPort(_)) = e {
        return Some(
            "--server is a client port (4333, on the VIP): operators use a node's operator \
             endpoint, license.operator_listen (port 4334 by default)",
        );
    }
    if let ClientError::SpeaksTls { .. } = e {
        return None; // its message says what to do
    }
    if let ClientError::NotVipool { .. } = e {
        return Some(
            "another service answers on that port: --server is a node's operator endpoint \
             (license.operator_listen, port 4334 by default; switches use 4333)",
        );
    }
    match e.verdict() {
        Verdict::Permanent { remedy } | Verdict::Unproven { remedy } => Some(remedy),
        Verdict::Transient => None,
    }
}

/// `e` met asking `server`, with what to do on a line of its own.
pub fn operator_error(server: &str, e: ClientError) -> anyhow::Error {
    match operator_hint(&e) {
        Some(hint) => anyhow::anyhow!("asking {server}: {e}\n  what to do: {hint}"),
        None => anyhow::anyhow!("asking {server}: {e}"),
    }
}
