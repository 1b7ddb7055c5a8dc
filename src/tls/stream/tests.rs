//! The lean server stream against the rustls client (tokio-rustls), as
//! switches run it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::ServerStream;
use crate::tls::{fixtures, AcceptError, ClientTls, ServerTls};

struct Pair {
    _dir: tempfile::TempDir,
    server: ServerTls,
    client: ClientTls,
    ca: crate::pki::Ca,
}

fn pair() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::pki::Ca::create(dir.path(), 7, 3650).unwrap();
    let identity = fixtures::member(&ca, "primary");
    let client = fixtures::switch(&ca, &ca, "sw-1", "SN-1");
    Pair {
        _dir: dir,
        server: ServerTls::new(&identity).unwrap(),
        client,
        ca,
    }
}

use crate::tls::fixtures::runtime;

/// A byte stream that reads and writes at most `max` bytes per call: TLS
/// records arrive (and leave) in pieces.
struct Trickle<S> {
    io: S,
    max: usize,
}

impl<S: AsyncRead + Unpin> AsyncRead for Trickle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut piece = vec![0; self.max.min(buf.remaining())];
        let mut small = ReadBuf::new(&mut piece);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut small))?;
        buf.put_slice(small.filled());
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Trickle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = self.max.min(data.len());
        Pin::new(&mut self.io).poll_write(cx, &data[..n])
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

type Client = tokio_rustls::client::TlsStream<DuplexStream>;

/// A handshake over an in-memory pipe of `pipe` bytes, the server reading
/// and writing at most `max` bytes at a time.
async fn connect(pair: &Pair, pipe: usize, max: usize) -> (ServerStream<Trickle<DuplexStream>>, Client) {
    let (near, far) = tokio::io::duplex(pipe);
    let config = Arc::clone(&pair.server.config);
    let server = tokio::spawn(ServerStream::handshake(Trickle { io: near, max }, config));
    let name = rustls_pki_types::ServerName::try_from(crate::pki::LICENSE_SERVER_NAME).unwrap();
    let client = tokio_rustls::TlsConnector::from(Arc::clone(&pair.client.config))
        .connect(name, far)
        .await
        .unwrap();
    (server.await.unwrap().unwrap(), client)
}

/// Through real TCP and [`ServerTls::accept`]: a full handshake, then the
/// same switch resumes with the ticket it got; both counted, both name the
/// switch, and each stream waits with no buffer.
#[test]
fn full_then_resumed_handshake() {
    let pair = pair();
    runtime().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = pair.server.clone();
        let accepting = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                let (mut stream, who) = server.accept(tcp, Duration::from_secs(5)).await.unwrap();
                let kind = stream.connection().handshake_kind();
                let mut ping = [0u8; 4];
                stream.read_exact(&mut ping).await.unwrap();
                assert_eq!(&ping, b"ping");
                stream.write_all(b"pong").await.unwrap();
                stream.flush().await.unwrap();
                assert_eq!(stream.buffered_capacity(), 0, "idle after an exchange");
                // The client closes.
                assert_eq!(stream.read(&mut ping).await.unwrap(), 0);
                seen.push((kind, who.unwrap().to_string(), server.handshakes()));
            }
            seen
        });
        for _ in 0..2 {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut client = pair.client.connect(tcp).await.unwrap();
            client.write_all(b"ping").await.unwrap();
            let mut pong = [0u8; 4];
            client.read_exact(&mut pong).await.unwrap();
            assert_eq!(&pong, b"pong");
            client.shutdown().await.unwrap();
        }
        let seen = accepting.await.unwrap();
        assert_eq!(seen[0].0, Some(rustls::HandshakeKind::Full));
        assert_eq!(seen[0].2, (1, 0));
        assert_eq!(
            seen[1].0,
            Some(rustls::HandshakeKind::Resumed),
            "the ticket of the first"
        );
        assert_eq!(seen[1].2, (1, 1));
        assert_eq!(seen[0].1, seen[1].1, "the same switch, from the ticket");
        assert!(seen[0].1.contains("sw-1"), "{}", seen[0].1);
    });
}

/// Every TLS byte read (and written) alone: records put together from
/// pieces, in both directions, the handshake too.
#[test]
fn records_split_byte_by_byte() {
    let pair = pair();
    runtime().block_on(async {
        let (mut server, mut client) = connect(&pair, 64 * 1024, 1).await;
        for i in 0..3u8 {
            let frame = vec![i; 300 + usize::from(i)];
            client.write_all(&frame).await.unwrap();
            client.flush().await.unwrap();
            let mut got = vec![0; frame.len()];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, frame);
            server.write_all(&frame).await.unwrap();
            server.flush().await.unwrap();
            let mut back = vec![0; frame.len()];
            client.read_exact(&mut back).await.unwrap();
            assert_eq!(back, frame);
            assert_eq!(server.buffered_capacity(), 0, "frame {i}: idle");
        }
    });
}

/// Several records in one read: all of them decrypted at once, and read
/// as one.
#[test]
fn coalesced_records_read_at_once() {
    let pair = pair();
    runtime().block_on(async {
        let (mut server, mut client) = connect(&pair, 64 * 1024, usize::MAX).await;
        let mut sent = Vec::new();
        for i in 0..3u8 {
            let frame = vec![i; 100];
            // A record each, all in the pipe before the server reads.
            client.write_all(&frame).await.unwrap();
            client.flush().await.unwrap();
            sent.extend_from_slice(&frame);
        }
        let mut got = vec![0; 4096];
        let n = server.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], &sent[..], "three records, one read");
        assert_eq!(server.buffered_capacity(), 0);
        // Less room than a record holds: the rest is kept, then freed.
        client.write_all(&[7; 1000]).await.unwrap();
        client.flush().await.unwrap();
        let mut small = [0u8; 10];
        server.read_exact(&mut small).await.unwrap();
        assert_ne!(server.buffered_capacity(), 0, "990 bytes not read yet");
        let mut rest = vec![0u8; 990];
        server.read_exact(&mut rest).await.unwrap();
        assert!(small.iter().chain(&rest).all(|&b| b == 7));
        assert_eq!(server.buffered_capacity(), 0);
    });
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect()
}

/// A megabyte each way at once, through a pipe far smaller: the socket
/// refuses writes, what it refused is kept and sent later, and nothing is
/// lost or reordered.
#[test]
fn a_megabyte_both_ways() {
    let pair = pair();
    runtime().block_on(async {
        for max in [usize::MAX, 1000] {
            let (server, client) = connect(&pair, 8 * 1024, max).await;
            let up = pattern(1 << 20, 1);
            let down = pattern(1 << 20, 2);
            let (mut server_read, mut server_write) = tokio::io::split(server);
            let (mut client_read, mut client_write) = tokio::io::split(client);
            let (up2, down2) = (up.clone(), down.clone());
            let (got_up, got_down, (), ()) = tokio::join!(
                async {
                    let mut got = vec![0; up2.len()];
                    server_read.read_exact(&mut got).await.unwrap();
                    got
                },
                async {
                    let mut got = vec![0; down2.len()];
                    client_read.read_exact(&mut got).await.unwrap();
                    got
                },
                async {
                    server_write.write_all(&down).await.unwrap();
                    server_write.flush().await.unwrap();
                },
                async {
                    client_write.write_all(&up).await.unwrap();
                    client_write.flush().await.unwrap();
                },
            );
            assert!(got_up == up2, "client to server, max {max}");
            assert!(got_down == down2, "server to client, max {max}");
            let server = server_read.unsplit(server_write);
            assert_eq!(server.buffered_capacity(), 0, "max {max}");
        }
    });
}

/// A close_notify either way reads as the end of the stream; a peer that
/// only closes its socket is an unexpected end.
#[test]
fn close_notify_and_peer_close() {
    let pair = pair();
    runtime().block_on(async {
        let (mut server, mut client) = connect(&pair, 64 * 1024, usize::MAX).await;
        client.write_all(b"bye").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        // Half closed: the server still answers, then closes.
        server.write_all(b"ok").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ok", "the client read the server's close_notify");
        assert!(
            server.write_all(b"more").await.is_err(),
            "nothing is sent after close_notify"
        );

        let (mut server, client) = connect(&pair, 64 * 1024, usize::MAX).await;
        drop(client);
        let err = server.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    });
}

/// A switch certificate of another CA: the handshake is refused, with an
/// alert the client reads.
#[test]
fn a_certificate_of_another_ca_is_refused() {
    let pair = pair();
    let dir = tempfile::tempdir().unwrap();
    let other = crate::pki::Ca::create(dir.path(), 8, 3650).unwrap();
    // The server's CA pinned (the client accepts the server); its own
    // certificate from the other CA.
    let stranger = fixtures::switch(&pair.ca, &other, "sw-1", "SN-1");
    runtime().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = pair.server.clone();
        let accepting = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            server.accept(tcp, Duration::from_secs(5)).await.map(|_| ())
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        // TLS 1.3: the client's handshake completes before the server
        // checked its certificate; it learns on its first read.
        let client = async {
            let mut client = stranger.connect(tcp).await?;
            client.read(&mut [0u8; 1]).await
        };
        let client = client.await.unwrap_err().to_string();
        assert!(
            client.contains("UnknownCA") || client.contains("unknown"),
            "{client}"
        );
        match accepting.await.unwrap() {
            Err(AcceptError::Handshake(e)) => {
                assert!(e.to_string().contains("UnknownIssuer"), "{e}");
            }
            other => panic!("accepted: {other:?}"),
        }
        assert_eq!(pair.server.handshakes(), (0, 0));
    });
}
