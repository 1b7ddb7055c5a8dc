//! How the client-side commands (`vipool client`, `vipool show`) prove
//! who they are to a server and check that it is the pair's.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use vipool::client::{ClientError, Connection};
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
