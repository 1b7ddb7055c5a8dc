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

use crate::pki::{client_identity_at, ClientIdentity, IdentityError, LICENSE_SERVER_NAME};

mod stream;
pub use stream::ServerStream;

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
}

/// A completed handshake, and who its client certificate names: a switch
/// or an operator, or why it names neither (the server tells the peer
/// before it closes).
pub type Accepted = (ServerStream, Result<ClientIdentity, IdentityError>);

/// The server end: the node's certificate, client certificates required.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    handshakes: Arc<Handshakes>,
    pair_tickets: Option<Arc<PairTicketer>>,
}

/// Completed client handshakes, full and resumed.
#[derive(Debug, Default)]
struct Handshakes {
    full: std::sync::atomic::AtomicU64,
    resumed: std::sync::atomic::AtomicU64,
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
        // Sealed with a key that only this process holds (rotated every 6
        // hours): the standalone server and the witness have no peer to
        // share tickets with.
        Self::with_ticketer(identity, rustls::crypto::ring::Ticketer::new()?, None)
    }

    /// The node's identity, with session tickets that every member of the
    /// pair opens ([`PairTicketer`]): a switch that reconnects after a
    /// failover resumes its session on the survivor.
    ///
    /// # Errors
    /// rustls refused the material.
    pub fn with_pair_tickets(identity: &Identity, tickets: Arc<PairTicketer>) -> Result<ServerTls, TlsError> {
        Self::with_ticketer(identity, Arc::clone(&tickets) as _, Some(tickets))
    }

    fn with_ticketer(
        identity: &Identity,
        ticketer: Arc<dyn rustls::server::ProducesTickets>,
        pair_tickets: Option<Arc<PairTicketer>>,
    ) -> Result<ServerTls, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(identity.roots(), cluster::tls::provider())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(cluster::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(identity.chain().to_vec(), identity.key().clone_key())?;
        // A switch that reconnects (after a blip, a failover or a
        // handback) resumes instead of a full handshake, with a stateless
        // ticket carrying the client's certificate, so the server keeps
        // nothing per switch. A server-side cache kept every session of
        // every switch, two per handshake: 26 MB of RSS for 10,000
        // connected switches (license_bench, 197 -> 171 MB).
        cfg.ticketer = ticketer;
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        // One ticket per handshake: each resumption consumes one and the
        // resumed handshake brings the next.
        cfg.send_tls13_tickets = 1;
        Ok(ServerTls {
            config: Arc::new(cfg),
            handshakes: Arc::default(),
            pair_tickets,
        })
    }

    /// How many of the pair's session-ticket keys this server seals and
    /// opens with (0: none yet, or not a server of a pair).
    pub fn pair_ticket_keys(&self) -> usize {
        self.pair_tickets.as_ref().map_or(0, |t| t.key_ids().len())
    }

    /// Client handshakes completed since start: (full, resumed).
    pub fn handshakes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.handshakes.full.load(Relaxed),
            self.handshakes.resumed.load(Relaxed),
        )
    }

    /// Completes the handshake within `deadline` and reads who the client
    /// certificate names (a certificate of the pair's CA that names no
    /// switch and no operator, a member's say, still completes the
    /// handshake: the caller says why it refuses it).
    ///
    /// # Errors
    /// See [`AcceptError`].
    pub async fn accept(&self, tcp: TcpStream, deadline: Duration) -> Result<Accepted, AcceptError> {
        let stream = tokio::time::timeout(deadline, ServerStream::handshake(tcp, Arc::clone(&self.config)))
            .await
            .map_err(|_| AcceptError::Timeout(deadline))?
            .map_err(AcceptError::Handshake)?;
        let counter = match stream.connection().handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => &self.handshakes.resumed,
            _ => &self.handshakes.full,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Its validity too: a resumed session's certificate is not checked
        // again by rustls, and a ticket must not outlive it.
        let who = match stream.connection().peer_certificates().and_then(|c| c.first()) {
            Some(cert) => client_identity_at(cert, std::time::SystemTime::now()),
            // The verifier requires one: not reached.
            None => Err(IdentityError::Unusable("no client certificate".into())),
        };
        Ok((stream, who))
    }
}

/// Session tickets that every member of the pair seals and opens alike,
/// with the ticket keys the pair's log holds (`table::tickets`): a switch
/// that reconnects to the survivor of a failover, or to the primary after
/// a handback, resumes its TLS session instead of a full handshake (no
/// certificate signed or verified, about a third of a full handshake's
/// CPU; see README, herd_bench).
///
/// The sealing is ChaCha20-Poly1305 from ring, as rustls's own ticketer
/// does it, with a random nonce per ticket; a ticket is `VPT1`, the key id
/// (big-endian u32, authenticated with the magic as associated data), the
/// nonce and the sealed session. Until the log holds a key (a pair that
/// has not committed one yet) tickets are sealed with a key of this
/// process only, as a standalone server does.
pub struct PairTicketer {
    /// Oldest first: the last one seals.
    keys: std::sync::RwLock<Vec<(u32, ring::aead::LessSafeKey)>>,
    local: Arc<dyn rustls::server::ProducesTickets>,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for PairTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairTicketer")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

const TICKET_MAGIC: &[u8; 4] = b"VPT1";
const TICKET_HEADER: usize = TICKET_MAGIC.len() + 4;
const TICKET_NONCE: usize = 12;

/// What a pair ticket's lifetime hint says: TLS 1.3's longest (RFC 8446
/// §4.6.1), and the rotation period of the pair's keys (`node::tickets`),
/// so a key opens the tickets it sealed for one to two periods.
pub const PAIR_TICKET_LIFETIME_S: u32 = 7 * 24 * 3600;

impl PairTicketer {
    /// A ticketer with no pair key yet.
    ///
    /// # Errors
    /// rustls could not make its local ticketer.
    pub fn new() -> Result<Arc<PairTicketer>, TlsError> {
        Ok(Arc::new(PairTicketer {
            keys: std::sync::RwLock::new(Vec::new()),
            local: rustls::crypto::ring::Ticketer::new()?,
            rng: ring::rand::SystemRandom::new(),
        }))
    }

    /// Seals and opens with `keys` from now on (the table's, oldest first;
    /// the last one seals). A no-op when they are the ones in use.
    pub fn set_keys(&self, keys: &[crate::table::TicketKey]) {
        if self.key_ids() == keys.iter().map(|k| k.id).collect::<Vec<_>>() {
            return;
        }
        let keys = keys
            .iter()
            .filter_map(|k| {
                let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &k.secret).ok()?;
                Some((k.id, ring::aead::LessSafeKey::new(key)))
            })
            .collect();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    /// The ids of the pair keys in use, oldest first.
    pub fn key_ids(&self) -> Vec<u32> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, _)| *id)
            .collect()
    }
}

impl rustls::server::ProducesTickets for PairTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        if self.keys.read().unwrap_or_else(|p| p.into_inner()).is_empty() {
            self.local.lifetime()
        } else {
            PAIR_TICKET_LIFETIME_S
        }
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        use ring::rand::SecureRandom;
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let Some((id, key)) = keys.last() else {
            return self.local.encrypt(plain);
        };
        let mut nonce = [0u8; TICKET_NONCE];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(TICKET_HEADER + TICKET_NONCE + plain.len() + 16);
        out.extend_from_slice(TICKET_MAGIC);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        key.seal_in_place_append_tag(
            ring::aead::Nonce::assume_unique_for_key(nonce),
            ring::aead::Aad::from(&out[..TICKET_HEADER]),
            &mut sealed,
        )
        .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if !cipher.starts_with(TICKET_MAGIC) {
            return self.local.decrypt(cipher);
        }
        let (header, rest) = cipher.split_at_checked(TICKET_HEADER)?;
        let (nonce, sealed) = rest.split_at_checked(TICKET_NONCE)?;
        let id = u32::from_be_bytes(header[TICKET_MAGIC.len()..].try_into().ok()?);
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let (_, key) = keys.iter().find(|(k, _)| *k == id)?;
        let mut buf = sealed.to_vec();
        let plain = key
            .open_in_place(
                ring::aead::Nonce::try_assume_unique_for_key(nonce).ok()?,
                ring::aead::Aad::from(header),
                &mut buf,
            )
            .ok()?;
        let n = plain.len();
        buf.truncate(n);
        Some(buf)
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
    pub async fn connect<IO>(&self, tcp: IO) -> std::io::Result<tokio_rustls::client::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let name = ServerName::try_from(LICENSE_SERVER_NAME).expect("a DNS name");
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(name, tcp)
            .await
    }
}

/// What TLS tests need again and again: a member's identity and a
/// switch's client TLS issued by a test CA, and a runtime to drive them.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{ClientTls, Identity};

    /// A member certificate for `name`, issued by `ca`.
    pub(crate) fn member(ca: &crate::pki::Ca, name: &str) -> Identity {
        let issued = ca.issue_member(name, 30).unwrap();
        Identity::from_pem(
            ca.cert_pem().as_bytes(),
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
        )
        .unwrap()
    }

    /// A switch `id` of serial `serial`, its certificate issued by
    /// `issuer`, pinning `pinned`'s CA.
    pub(crate) fn switch(
        pinned: &crate::pki::Ca,
        issuer: &crate::pki::Ca,
        id: &str,
        serial: &str,
    ) -> ClientTls {
        let issued = issuer.issue_switch(id, serial, 30).unwrap();
        ClientTls::from_pem(
            pinned.cert_pem().as_bytes(),
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
        )
        .unwrap()
    }

    /// A current-thread runtime with its timers and I/O.
    pub(crate) fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
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
        let late = client_identity_at(&der, now + 31 * day).unwrap_err().to_string();
        assert!(late.contains("expired"), "{late}");
        let early = client_identity_at(&der, now - day).unwrap_err().to_string();
        assert!(early.contains("not valid yet"), "{early}");
    }

    fn ticket_key(id: u32, created_ms: u64, byte: u8) -> crate::table::TicketKey {
        crate::table::TicketKey {
            id,
            created_ms,
            secret: [byte; 32],
        }
    }

    /// A ticket sealed by one member opens on the other with the same keys,
    /// and after one rotation; not after two, not with another key, and
    /// not once any byte of it changed.
    #[test]
    fn pair_tickets_open_on_every_member_and_nowhere_else() {
        use rustls::server::ProducesTickets;
        let a = PairTicketer::new().unwrap();
        let b = PairTicketer::new().unwrap();
        let k1 = ticket_key(1, 10, 0x11);
        let k2 = ticket_key(2, 20, 0x22);
        let k3 = ticket_key(3, 30, 0x33);
        a.set_keys(std::slice::from_ref(&k1));
        b.set_keys(std::slice::from_ref(&k1));
        assert_eq!(a.lifetime(), PAIR_TICKET_LIFETIME_S);
        let session = b"a resumable session".to_vec();
        let ticket = a.encrypt(&session).unwrap();
        assert!(ticket.starts_with(TICKET_MAGIC));
        assert_eq!(b.decrypt(&ticket).as_deref(), Some(&session[..]));
        // Random nonces: the same session seals differently each time.
        assert_ne!(a.encrypt(&session).unwrap(), ticket);

        for at in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[at] ^= 0x01;
            assert_eq!(b.decrypt(&bad), None, "byte {at} changed");
        }
        assert_eq!(b.decrypt(&ticket[..ticket.len() - 1]), None);
        assert_eq!(b.decrypt(&ticket[..TICKET_HEADER]), None);
        assert_eq!(b.decrypt(b""), None);

        let other = PairTicketer::new().unwrap();
        other.set_keys(&[ticket_key(1, 10, 0x12)]);
        assert_eq!(other.decrypt(&ticket), None, "same id, another secret");

        b.set_keys(&[k1.clone(), k2.clone()]);
        assert_eq!(b.decrypt(&ticket).as_deref(), Some(&session[..]), "one rotation");
        let newer = b.encrypt(&session).unwrap();
        assert_eq!(&newer[4..8], &2u32.to_be_bytes(), "the newest key seals");
        b.set_keys(&[k2, k3]);
        assert_eq!(b.decrypt(&ticket), None, "two rotations");
        assert_eq!(b.decrypt(&newer).as_deref(), Some(&session[..]));
    }

    /// Before the pair has a key, tickets are this process's own: they
    /// open here only.
    #[test]
    fn without_a_pair_key_tickets_are_local() {
        use rustls::server::ProducesTickets;
        let a = PairTicketer::new().unwrap();
        let b = PairTicketer::new().unwrap();
        let ticket = a.encrypt(b"session").unwrap();
        assert!(!ticket.starts_with(TICKET_MAGIC));
        assert_eq!(a.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
        assert_eq!(b.decrypt(&ticket), None);
        // A pair key arriving later does not break the local tickets.
        a.set_keys(&[ticket_key(5, 1, 0x55)]);
        assert_eq!(a.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
    }

    /// Through rustls: a switch that made a full handshake with one member
    /// resumes with the other when both hold the pair's keys, and makes a
    /// full handshake with a member holding other keys.
    #[test]
    fn a_switch_resumes_its_session_on_the_other_member() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::pki::Ca::create(dir.path(), 7, 3650).unwrap();
        let member = |name: &str| fixtures::member(&ca, name);
        let keys = [ticket_key(1, 10, 0x11)];
        let server = |name: &str, keys: &[crate::table::TicketKey]| {
            let tickets = PairTicketer::new().unwrap();
            tickets.set_keys(keys);
            ServerTls::with_pair_tickets(&member(name), tickets).unwrap()
        };
        let primary = server("primary", &keys);
        let backup = server("backup", &keys);
        let stranger = server("other", &[ticket_key(1, 10, 0x99)]);
        let switch = fixtures::switch(&ca, &ca, "sw-1", "SN-1");
        let rt = fixtures::runtime();
        rt.block_on(async {
            let session = |server: ServerTls| {
                let switch = switch.clone();
                async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    let addr = listener.local_addr().unwrap();
                    let accept = tokio::spawn(async move {
                        let (tcp, _) = listener.accept().await.unwrap();
                        let (mut stream, who) = server.accept(tcp, Duration::from_secs(5)).await.unwrap();
                        // Data after the ticket: the client has read the ticket once it reads this.
                        stream.write_all(b"x").await.unwrap();
                        stream.flush().await.unwrap();
                        (who, server)
                    });
                    let tcp = TcpStream::connect(addr).await.unwrap();
                    let mut stream = switch.connect(tcp).await.unwrap();
                    let mut byte = [0u8; 1];
                    stream.read_exact(&mut byte).await.unwrap();
                    let kind = stream.get_ref().1.handshake_kind();
                    let suite = stream.get_ref().1.negotiated_cipher_suite().map(|s| s.suite());
                    // The cheaper key schedule (cluster::tls::provider),
                    // full or resumed.
                    assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
                    let (who, server) = accept.await.unwrap();
                    (kind, who, server.handshakes())
                }
            };
            let (kind, who, counts) = session(primary).await;
            assert_eq!(kind, Some(rustls::HandshakeKind::Full));
            assert_eq!(counts, (1, 0));
            let (kind, resumed_who, counts) = session(backup).await;
            assert_eq!(
                kind,
                Some(rustls::HandshakeKind::Resumed),
                "the backup opened the primary's ticket"
            );
            assert_eq!(counts, (0, 1));
            assert_eq!(
                resumed_who.unwrap().to_string(),
                who.unwrap().to_string(),
                "the same switch, from the ticket"
            );
            let (kind, _, counts) = session(stranger).await;
            assert_eq!(
                kind,
                Some(rustls::HandshakeKind::Full),
                "other keys: a full handshake"
            );
            assert_eq!(counts, (1, 0));
        });
    }
}
