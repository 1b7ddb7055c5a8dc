//! Mutual TLS 1.3 between the members of a pair.
//!
//! Every member holds a certificate issued by the pair's own CA whose DNS
//! subject-alternative name is the member's configured name (`primary`,
//! `backup`, `witness`). A member connecting to a peer verifies the peer's
//! certificate for the peer's name; a member accepting a connection
//! verifies the client certificate against the CA and then asks which
//! configured peer it names ([`Identity::member_named_by`]). Certificates
//! that the same CA issues to switches and operators carry no DNS name, so
//! they can never pass as a member.
//!
//! Only TLS 1.3 is offered, with rustls' `ring` provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// Why TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file (empty for material given in memory).
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The certificate does not chain to the pair's CA, has expired, or
    /// does not name the member it should.
    #[error("certificate {}: {what}", path.display())]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rustls refused the material (for example a key that does not
    /// belong to the certificate).
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider every TLS endpoint of vipool uses: ring's, with
/// TLS_AES_128_GCM_SHA256 first.
///
/// ring's own order puts TLS_AES_256_GCM_SHA384 first, whose key schedule
/// hashes with SHA-384: no CPU has instructions for it, and in a herd of
/// switches resuming their sessions after a failover SHA-512's block
/// function was the largest single item of the new holder's CPU (7.6%,
/// perf, herd_bench at 10,000 switches), where SHA-256 runs on the SHA
/// extensions of current x86 and ARM CPUs. AES-128-GCM is TLS 1.3's
/// mandatory suite. The others stay, after it, for peers that offer only
/// them. Each side follows the client's order: a session whose ticket was
/// made with the older first choice resumes only with it, so a client
/// built before this makes one full handshake after it is upgraded.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    // Stable: the rest keep ring's order.
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// A member's TLS identity: the pair's CA, its own certificate chain and
/// private key.
#[derive(Debug)]
pub struct Identity {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// Where the certificate came from, for error messages.
    cert_path: PathBuf,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            roots: Arc::clone(&self.roots),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            cert_path: self.cert_path.clone(),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, what: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        what: what.to_string(),
    }
}

/// Every certificate in a PEM file (none is an error).
pub fn certificates_from_pem(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(path, "holds no certificate (BEGIN CERTIFICATE)"));
    }
    Ok(certs)
}

/// The pair's CA certificates as a root store.
pub fn roots_from_pem(pem: &[u8], path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates_from_pem(pem, path)? {
        roots
            .add(cert)
            .map_err(|e| pem_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

impl Identity {
    /// Loads the CA, certificate and key files of a member.
    ///
    /// # Errors
    /// A file is missing or unreadable, holds no PEM item of its kind, or
    /// the key does not belong to the certificate. Each error names the file.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        Identity::from_pem_files(&read(ca)?, ca, &read(cert)?, cert, &read(key)?, key)
    }

    /// Builds an identity from PEM text held in memory (tests, tools).
    ///
    /// # Errors
    /// As [`Identity::load`].
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Identity, TlsError> {
        let none = Path::new("");
        Identity::from_pem_files(ca, none, cert, none, key, none)
    }

    fn from_pem_files(
        ca: &[u8],
        ca_path: &Path,
        cert: &[u8],
        cert_path: &Path,
        key: &[u8],
        key_path: &Path,
    ) -> Result<Identity, TlsError> {
        let roots = roots_from_pem(ca, ca_path)?;
        let chain = certificates_from_pem(cert, cert_path)?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| pem_error(key_path, format!("no private key (BEGIN PRIVATE KEY): {e}")))?;
        let identity = Identity {
            roots: Arc::new(roots),
            chain,
            key,
            cert_path: cert_path.to_owned(),
        };
        // rustls checks that the key belongs to the certificate.
        identity.client_config()?;
        Ok(identity)
    }

    /// This member's own certificate (the first of its chain).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// This member's certificate chain (its own first).
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// This member's private key.
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// The pair's CA as a root store.
    pub fn roots(&self) -> Arc<RootCertStore> {
        Arc::clone(&self.roots)
    }

    /// Checks that this member's certificate chains to the CA, is valid
    /// now for both ends of a connection, and names `name`: what a peer
    /// will check when it connects or accepts.
    ///
    /// # Errors
    /// [`TlsError::Certificate`] saying what does not hold.
    pub fn verify_own_name(&self, name: &str) -> Result<(), TlsError> {
        let bad = |what: String| TlsError::Certificate {
            path: self.cert_path.clone(),
            what,
        };
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|e| bad(format!("{name:?} is not a DNS name: {e}")))?;
        let now = UnixTime::now();
        let verifier = WebPkiServerVerifier::builder_with_provider(self.roots(), provider())
            .build()
            .map_err(|e| bad(e.to_string()))?;
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            self.certificate(),
            &self.chain[1..],
            &server_name,
            &[],
            now,
        )
        .map_err(|e| bad(format!("not valid as member {name:?} of this pair's CA: {e}")))?;
        let client = WebPkiClientVerifier::builder_with_provider(self.roots(), provider())
            .build()
            .map_err(|e| bad(e.to_string()))?;
        rustls::server::danger::ClientCertVerifier::verify_client_cert(
            client.as_ref(),
            self.certificate(),
            &self.chain[1..],
            now,
        )
        .map_err(|e| {
            bad(format!(
                "not valid as a client certificate of this pair's CA: {e}"
            ))
        })?;
        Ok(())
    }

    /// The server side of the peer transport: TLS 1.3, a client
    /// certificate from the pair's CA required.
    ///
    /// # Errors
    /// rustls refused the material.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots(), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let cfg = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        Ok(Arc::new(cfg))
    }

    /// The client side of the peer transport: TLS 1.3, the peer verified
    /// against the pair's CA for the name it is dialled by, our own
    /// certificate presented.
    ///
    /// # Errors
    /// rustls refused the material (a key that is not the certificate's).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        Ok(Arc::new(cfg))
    }
}

/// Which of `names` (id, member name) the end-entity certificate `cert`
/// is valid for, if exactly one. The chain itself was verified by the
/// handshake; this only reads the names.
pub fn member_named_by<'a>(
    cert: &CertificateDer<'_>,
    names: impl IntoIterator<Item = (u64, &'a str)>,
) -> Option<u64> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    let mut found = None;
    for (id, name) in names {
        let Ok(server_name) = ServerName::try_from(name) else {
            continue;
        };
        if ee.verify_is_valid_for_subject_name(&server_name).is_ok() {
            if found.is_some() {
                // One certificate naming two members is not a member's.
                return None;
            }
            found = Some(id);
        }
    }
    found
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A throwaway CA for tests.
    pub(crate) struct TestCa {
        pub(crate) pem: String,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    /// A member certificate and key as PEM text.
    pub(crate) struct TestMember {
        pub(crate) cert_pem: String,
        pub(crate) key_pem: String,
    }

    impl TestCa {
        pub(crate) fn new() -> TestCa {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
            params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
            // Each CA its own name: webpki matches issuers by name first.
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, format!("test pair CA {n}"));
            let cert = params.self_signed(&key).unwrap();
            TestCa {
                pem: cert.pem(),
                issuer: rcgen::Issuer::new(params, key),
            }
        }

        /// Certificate and key naming `names` (DNS SANs), as PEM.
        pub(crate) fn member_pem(&self, names: &[&str]) -> TestMember {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params =
                rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                    .unwrap();
            params.extended_key_usages = vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            TestMember {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }
        }

        /// A member identity naming `names`.
        pub(crate) fn member(&self, names: &[&str]) -> Identity {
            let m = self.member_pem(names);
            Identity::from_pem(self.pem.as_bytes(), m.cert_pem.as_bytes(), m.key_pem.as_bytes()).unwrap()
        }
    }

    #[test]
    fn a_member_certificate_names_exactly_its_member() {
        let ca = TestCa::new();
        let backup = ca.member(&["backup"]);
        backup.verify_own_name("backup").unwrap();
        let err = backup.verify_own_name("primary").unwrap_err();
        assert!(
            err.to_string().contains("not valid as member \"primary\""),
            "{err}"
        );
        let names = [(1, "primary"), (2, "backup"), (3, "witness")];
        assert_eq!(member_named_by(backup.certificate(), names), Some(2));
        // A certificate naming two members is nobody's.
        let both = ca.member(&["primary", "backup"]);
        assert_eq!(member_named_by(both.certificate(), names), None);
        // Another CA's certificate does not verify against ours.
        let other = TestCa::new().member_pem(&["backup"]);
        let foreign = Identity::from_pem(
            ca.pem.as_bytes(),
            other.cert_pem.as_bytes(),
            other.key_pem.as_bytes(),
        )
        .unwrap();
        let err = foreign.verify_own_name("backup").unwrap_err();
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let ca = TestCa::new();
        let a = ca.member_pem(&["primary"]);
        let b = ca.member_pem(&["backup"]);
        let err =
            Identity::from_pem(ca.pem.as_bytes(), a.cert_pem.as_bytes(), b.key_pem.as_bytes()).unwrap_err();
        assert!(err.to_string().to_lowercase().contains("key"), "{err}");
    }

    #[test]
    fn missing_and_malformed_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        let err = Identity::load(&ca, &ca, &ca).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read {}", ca.display())),
            "{err}"
        );
        std::fs::write(&ca, "not pem").unwrap();
        let err = Identity::load(&ca, &ca, &ca).unwrap_err();
        assert!(err.to_string().contains("holds no certificate"), "{err}");
    }
}
