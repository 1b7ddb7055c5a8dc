//! Issue 10 leftover: a member certificate of the pair (a server's or the
//! witness's) presented to the license server as a client's. It chains to
//! the pair's CA and may act as a TLS client (the cluster link dials with
//! it), so the handshake completes; before, the server then closed the
//! connection without a word. Now the peer is told, with a typed refusal,
//! that a member certificate is not a switch certificate; the node counts
//! it (`client_member_certificate` in `show status`) and logs it, once a
//! minute whatever the number of attempts. A switch's certificate is
//! served on the same server.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vipool::client::{ClientError, Connection};
use vipool::pki::Ca;
use vipool::proto::{ServerError, SwitchReport};
use vipool::server::{LocalApplier, Port, Server, ServerConfig};
use vipool::table::{LicenseTable, TableConfig};
use vipool::tls::{ClientTls, ServerTls};

/// What the process logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn lines(&self, what: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(what))
            .map(str::to_owned)
            .collect()
    }
}

fn client_tls(ca: &Ca, issued: &vipool::pki::Issued) -> ClientTls {
    ClientTls::from_pem(
        ca.cert_pem().as_bytes(),
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .expect("client TLS")
}

async fn register(addr: SocketAddr, tls: &ClientTls, id: &str) -> Result<(), ClientError> {
    let mut conn = Connection::connect(addr, tls).await?;
    conn.register(id, "SN-1", "8.10", SwitchReport::default())
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_member_certificate_is_told_it_is_not_a_switch_certificate() {
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::create(dir.path(), 7, 365).unwrap();
    let primary = ca.issue_member("primary", 30).unwrap();
    let identity = cluster::tls::Identity::from_pem(
        ca.cert_pem().as_bytes(),
        primary.cert_pem.as_bytes(),
        primary.key_pem.as_bytes(),
    )
    .unwrap();
    let config = ServerConfig {
        tls: Some(ServerTls::new(&identity).unwrap()),
        ..ServerConfig::default()
    };
    let applier = Arc::new(LocalApplier::new(LicenseTable::new(TableConfig::default())));
    let (_serving_tx, serving) = watch::channel(true);
    let shutdown = CancellationToken::new();
    let server = Arc::new(Server::new(applier, config, serving, shutdown.clone()));
    let client = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let operator = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let (client_addr, operator_addr) = (client.local_addr().unwrap(), operator.local_addr().unwrap());
    let running = Arc::clone(&server);
    let task = tokio::spawn(async move {
        running
            .run_on(vec![(client, Port::Client), (operator, Port::Operator)])
            .await
    });

    // The backup's and the witness's certificates, on both ports, several
    // times: each attempt is told why.
    let backup = client_tls(&ca, &ca.issue_member("backup", 30).unwrap());
    let witness = client_tls(&ca, &ca.issue_witness("witness", 30).unwrap());
    let mut attempts = 0u64;
    for (tls, member) in [(&backup, "backup"), (&witness, "witness")] {
        for addr in [client_addr, client_addr, operator_addr] {
            let refused = register(addr, tls, "sw-1").await;
            attempts += 1;
            match &refused {
                Err(ClientError::Server(e @ ServerError::MemberCertificate { member: m })) => {
                    assert_eq!(m, member);
                    assert!(e.to_string().contains("is not a switch certificate"), "{e}");
                    assert!(e.verdict().is_permanent(), "{e}");
                }
                other => panic!("{member} at {addr}: {other:?}"),
            }
        }
    }
    let refused = server.status().refused;
    assert_eq!(
        refused.get("client_member_certificate"),
        Some(&attempts),
        "{refused:?}"
    );
    let warned = log.lines("a member certificate of the pair is not a switch certificate");
    assert_eq!(warned.len(), 1, "rate-limited: {warned:?}");
    assert!(warned[0].contains("member=backup"), "{}", warned[0]);

    // The control: a switch's certificate is served.
    let switch = client_tls(&ca, &ca.issue_switch("sw-1", "SN-1", 30).unwrap());
    register(client_addr, &switch, "sw-1")
        .await
        .expect("a switch's certificate is served");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
