//! TLS of the client protocol (TLS 1.3, rustls).
//!
//! Both ends prove who they are with certificates of the pair's own CA
//! (see [`crate::pki`]):
//!
//! - a switch or an operator presents its certificate, which names a
//!   client id and serial, or an operator; the server reads who it is
//!   from it ([`crate::pki::client_identity_at`], which also checks its validity) and lets a connection act
//!   only for that identity;
//! - the server presents its member certificate, which names
//!   [`crate::pki::LICENSE_SERVER_NAME`]; a switch pins the pair's CA and
//!   checks that name, so a host that takes the VIP without the pair's
//!   key answers no switch (and a witness's certificate, which lacks the
//!   name, is refused too).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cluster::tls::{Identity, TlsError};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::pki::{client_identity_at, ClientIdentity, LICENSE_SERVER_NAME};

/// Why a client's handshake was refused.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The handshake failed (a certificate from another CA, an expired one,
    /// none at all, or not TLS).
    #[error("TLS handshake refused: {0}")]
    Handshake(std::io::Error),
    /// The handshake did not complete in time.
    #[error("no TLS handshake within {0:?}")]
    Timeout(Duration),
    /// A valid certificate of the CA, but neither a switch's nor an operator's.
    #[error("client certificate: {0}")]
    Identity(String),
}

/// The server end: the node's certificate, client certificates required.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// The node's identity serving switches and operators.
    ///
    /// # Errors
    /// rustls refused the material.
    pub fn new(identity: &Identity) -> Result<ServerTls, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(identity.roots(), cluster::tls::provider())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(cluster::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(identity.chain().to_vec(), identity.key().clone_key())?;
        // A switch that reconnects (after a blip, or to the same server
        // after a handback) resumes instead of a full handshake, with a
        // stateless ticket: sealed with a key that only this process holds
        // (rotated every 6 hours), carrying the client's certificate, so
        // the server keeps nothing per switch. A server-side cache kept
        // every session of every switch, two per handshake: 26 MB of RSS
        // for 10,000 connected switches (license_bench, 197 -> 171 MB).
        // The other member cannot open this member's
        // tickets: after a failover a switch makes one full handshake.
        cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        // One ticket per handshake: each resumption consumes one and the
        // resumed handshake brings the next.
        cfg.send_tls13_tickets = 1;
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
        })
    }

    /// Completes the handshake within `deadline` and reads who the client
    /// certificate names.
    ///
    /// # Errors
    /// See [`AcceptError`].
    pub async fn accept(
        &self,
        tcp: TcpStream,
        deadline: Duration,
    ) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, ClientIdentity), AcceptError> {
        let stream = tokio::time::timeout(deadline, self.acceptor.accept(tcp))
            .await
            .map_err(|_| AcceptError::Timeout(deadline))?
            .map_err(AcceptError::Handshake)?;
        let cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| AcceptError::Identity("none presented".into()))?;
        // Its validity too: a resumed session's certificate is not checked
        // again by rustls, and a ticket must not outlive it.
        let who = client_identity_at(cert, std::time::SystemTime::now()).map_err(AcceptError::Identity)?;
        Ok((stream, who))
    }
}

/// Verifies a server as webpki does (chain to the pinned CA, validity,
/// server use) for the name its own certificate carries: any member of the
/// pair passes, whoever it is.
#[derive(Debug)]
struct AnyMember(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for AnyMember {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let info = crate::pki::CertInfo::from_der(end_entity).map_err(rustls::Error::General)?;
        let name = info
            .dns_names
            .first()
            .and_then(|n| ServerName::try_from(n.clone()).ok())
            .ok_or_else(|| rustls::Error::General("the server's certificate names no member".into()))?;
        self.0
            .verify_server_cert(end_entity, intermediates, &name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The client end: the pair's CA pinned, this switch's or operator's
/// certificate presented.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// Loads the pair's CA certificate and this client's certificate and key.
    ///
    /// # Errors
    /// A file is missing or unusable; each error names the file.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<ClientTls, TlsError> {
        ClientTls::from_identity(&Identity::load(ca, cert, key)?)
    }

    /// From PEM text held in memory.
    ///
    /// # Errors
    /// As [`ClientTls::load`].
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<ClientTls, TlsError> {
        ClientTls::from_identity(&Identity::from_pem(ca, cert, key)?)
    }

    /// From an identity (the CA pinned, its certificate presented): a
    /// switch's end, which accepts only a server naming
    /// [`LICENSE_SERVER_NAME`].
    ///
    /// # Errors
    /// rustls refused the material.
    pub fn from_identity(identity: &Identity) -> Result<ClientTls, TlsError> {
        Ok(ClientTls {
            config: identity.client_config()?,
        })
    }

    /// An operator's end: it accepts any member of the pair (either
    /// server or the witness, each answering on its own operator port):
    /// a certificate of the pinned CA, valid now, for a server, naming a
    /// member.
    ///
    /// # Errors
    /// rustls refused the material.
    pub fn operator(identity: &Identity) -> Result<ClientTls, TlsError> {
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            identity.roots(),
            cluster::tls::provider(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        let cfg = rustls::ClientConfig::builder_with_provider(cluster::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyMember(inner)))
            .with_client_auth_cert(identity.chain().to_vec(), identity.key().clone_key())?;
        Ok(ClientTls {
            config: Arc::new(cfg),
        })
    }

    /// [`ClientTls::operator`] from files.
    ///
    /// # Errors
    /// As [`ClientTls::load`].
    pub fn load_operator(ca: &Path, cert: &Path, key: &Path) -> Result<ClientTls, TlsError> {
        ClientTls::operator(&Identity::load(ca, cert, key)?)
    }

    /// Runs the handshake on `tcp`, checking that the server is one of the
    /// pair (its certificate chains to the pinned CA and names
    /// [`LICENSE_SERVER_NAME`]).
    ///
    /// # Errors
    /// The handshake failed: the server is not the pair's, or refused us.
    pub async fn connect(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = ServerName::try_from(LICENSE_SERVER_NAME).expect("a DNS name");
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(name, tcp)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    /// A resumed session brings the certificate it was made with: outside
    /// its validity it is refused, whatever the ticket says.
    #[test]
    fn a_certificate_is_checked_for_its_validity_at_accept() {
        use rustls_pki_types::pem::PemObject;
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::pki::Ca::create(dir.path(), 7, 3650).unwrap();
        let issued = ca.issue_switch("sw-1", "SN-1", 30).unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let now = SystemTime::now();
        client_identity_at(&der, now).unwrap();
        let day = Duration::from_secs(86_400);
        let late = client_identity_at(&der, now + 31 * day).unwrap_err();
        assert!(late.contains("expired"), "{late}");
        let early = client_identity_at(&der, now - day).unwrap_err();
        assert!(early.contains("not valid yet"), "{early}");
    }
}
