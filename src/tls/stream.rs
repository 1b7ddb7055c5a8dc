//! The server end of a client connection on rustls's unbuffered API,
//! holding no buffer while it waits.
//!
//! tokio-rustls (rustls's buffered API) keeps a 4 KB receive buffer per
//! connection once it has read, and the server keeps one connection per
//! switch: 40 MB for 10,000 switches that send a heartbeat every 30 s
//! (README, license_bench). Here rustls does all of TLS (the handshake,
//! the certificates, every record's crypto) and this stream only moves
//! bytes: incoming TLS bytes are read into a buffer of the thread
//! ([`with_scratch`]) and decrypted there; only what is left over is kept
//! per connection (part of a record, or plaintext the caller has not read
//! yet), and that buffer is freed once drained. Outgoing records are
//! written from the same scratch buffer; only what the socket does not take
//! at once is kept, until it does.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Room for one more read from the socket: a whole TLS 1.3 record (16 KB
/// of plaintext, 256 bytes of expansion, the header) and then some.
const READ_ROOM: usize = 32 * 1024;

/// At most this much plaintext is encrypted per `poll_write` (rustls cuts
/// it into records of 16 KB).
const WRITE_CHUNK: usize = 64 * 1024;

thread_local! {
    /// The buffer every stream of this thread reads and encrypts into, one
    /// stream at a time (a poll never waits while it holds it).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer, at least `len` bytes long.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            if scratch.len() < len {
                scratch.resize(len, 0);
            }
            f(&mut scratch[..len])
        }
        // Not reached (a stream never polls another while it holds the
        // buffer), but a buffer of its own is correct too.
        Err(_) => f(&mut vec![0; len]),
    })
}

fn closed_for_writing() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the TLS connection is closed for writing",
    )
}

fn failed_earlier() -> io::Error {
    io::Error::other("the TLS connection failed earlier")
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// A TLS 1.3 server connection over TCP (or any byte stream `S`), its
/// handshake complete (see [`ServerStream::handshake`]).
pub struct ServerStream<S = TcpStream> {
    io: S,
    conn: UnbufferedServerConnection,
    /// TLS bytes read but not processed yet: the start of a record.
    incoming: Vec<u8>,
    /// Plaintext decrypted and not read yet, from `plaintext_at` on.
    plaintext: Vec<u8>,
    plaintext_at: usize,
    /// TLS bytes to send, from `outgoing_at` on.
    outgoing: Vec<u8>,
    outgoing_at: usize,
    /// The peer sent its close_notify: the rest reads as end of stream.
    peer_closed: bool,
    /// The TCP stream ended without a close_notify.
    eof: bool,
    /// Our close_notify is queued.
    close_queued: bool,
    /// rustls failed: it is not called again (it would look for the bytes
    /// it was given last, which are gone).
    failed: bool,
}

impl<S> std::fmt::Debug for ServerStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerStream")
            .field("incoming", &self.incoming.len())
            .field("plaintext", &(self.plaintext.len() - self.plaintext_at))
            .field("outgoing", &(self.outgoing.len() - self.outgoing_at))
            .field("peer_closed", &self.peer_closed)
            .finish_non_exhaustive()
    }
}

/// What processing the bytes at hand ended on.
enum Processed {
    /// Every complete record is processed; `usize` bytes of them.
    NeedMore(usize),
    /// Both ends sent their close_notify: the rest is ignored.
    Closed,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ServerStream<S> {
    /// Runs rustls's server handshake on `tcp` (no deadline: the caller
    /// gives one).
    ///
    /// # Errors
    /// rustls refused the handshake (its error, as `InvalidData`), or the
    /// socket failed or closed first.
    pub async fn handshake(
        io: S,
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> io::Result<ServerStream<S>> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = ServerStream {
            io,
            conn,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            plaintext_at: 0,
            outgoing: Vec::new(),
            outgoing_at: 0,
            peer_closed: false,
            eof: false,
            close_queued: false,
            failed: false,
        };
        std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }

    /// The connection's TLS state (the peer's certificates, the kind of
    /// handshake).
    pub fn connection(&self) -> &rustls::CommonState {
        &self.conn
    }

    /// The capacity of the buffers this stream holds, in bytes: 0 while it
    /// waits with nothing left to read or to send.
    pub fn buffered_capacity(&self) -> usize {
        self.incoming.capacity() + self.plaintext.capacity() + self.outgoing.capacity()
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_send(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if self.eof || self.peer_closed {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection during the TLS handshake",
                )));
            }
            ready!(self.poll_receive(cx))?;
        }
    }

    /// Reads what the socket has, then processes it with what was kept:
    /// records decrypted into `plaintext`, answers (handshake, key update,
    /// alerts) queued in `outgoing`, a partial record kept in `incoming`.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let kept = self.incoming.len();
        with_scratch(kept + READ_ROOM, |scratch| {
            scratch[..kept].copy_from_slice(&self.incoming);
            let mut read = ReadBuf::new(&mut scratch[kept..]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                self.eof = true;
                return Poll::Ready(Ok(()));
            }
            let filled = kept + n;
            let consumed = match self.process(&mut scratch[..filled]) {
                Ok(Processed::NeedMore(c)) => c,
                Ok(Processed::Closed) => filled,
                Err(e) => {
                    self.incoming = Vec::new();
                    // The alert rustls has for the peer, if the socket
                    // takes it at once.
                    let _ = self.poll_send(cx);
                    self.outgoing = Vec::new();
                    self.outgoing_at = 0;
                    return Poll::Ready(Err(e));
                }
            };
            let rest = &scratch[consumed..filled];
            if rest.is_empty() {
                self.incoming = Vec::new();
            } else {
                self.incoming.clear();
                self.incoming.extend_from_slice(rest);
                self.incoming.shrink_to_fit();
            }
            Poll::Ready(Ok(()))
        })
    }

    /// Hands `input` to rustls until it needs more; returns how much of it
    /// rustls is done with (the rest is the start of a record).
    fn process(&mut self, input: &mut [u8]) -> io::Result<Processed> {
        if self.failed {
            return Err(failed_earlier());
        }
        let mut at = 0;
        loop {
            let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut input[at..]);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    self.failed = true;
                    self.queue_alerts(&mut input[at + discard..]);
                    return Err(tls_error(e));
                }
            };
            let mut need_more = false;
            let mut closed = false;
            let mut discard = discard;
            match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(|e| {
                            self.failed = true;
                            tls_error(e)
                        })?;
                        discard += record.discard;
                        self.plaintext.extend_from_slice(record.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    encode(&mut self.outgoing, |out| data.encode(out))?
                }
                // Queued in `outgoing`, which goes out before anything
                // written later.
                ConnectionState::TransmitTlsData(data) => data.done(),
                ConnectionState::PeerClosed => self.peer_closed = true,
                ConnectionState::Closed => closed = true,
                ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => need_more = true,
                // The server config allows no early data.
                ConnectionState::ReadEarlyData(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected TLS early data",
                    ))
                }
                _ => return Err(io::Error::other("a TLS state this stream does not know")),
            }
            at += discard;
            if closed {
                return Ok(Processed::Closed);
            }
            if need_more {
                return Ok(Processed::NeedMore(at));
            }
        }
    }

    /// After rustls failed, queues the alert it has for the peer. `input`
    /// is what rustls has not discarded yet: it must see the same bytes
    /// again (a handshake message split in records points into them).
    ///
    /// One call only: rustls hands out what it queued (the alert, one
    /// record) before it reads anything, and a second call would read the
    /// peer's next record (the Finished after an empty Certificate, say)
    /// with the handshake already failed, and fail again by sending a
    /// second fatal alert (a debug assertion inside rustls: found by
    /// `trust2_attacks b3`, a switch with no certificate).
    fn queue_alerts(&mut self, input: &mut [u8]) {
        let UnbufferedStatus { state, .. } = self.conn.process_tls_records(input);
        if let Ok(ConnectionState::EncodeTlsData(mut data)) = state {
            let _ = encode(&mut self.outgoing, |out| data.encode(out));
        }
    }

    /// Writes `outgoing` to the socket; ready once all of it is written.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.outgoing_at < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.outgoing_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing_at += n;
        }
        self.outgoing = Vec::new();
        self.outgoing_at = 0;
        Poll::Ready(Ok(()))
    }

    /// Gives rustls's state for sending application data (after queueing
    /// whatever it has to send first), or `None` once it sent its
    /// close_notify.
    fn with_write_traffic<R>(
        &mut self,
        f: impl FnOnce(
            &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
            &mut Vec<u8>,
            &mut S,
        ) -> R,
    ) -> io::Result<Option<R>> {
        if self.failed {
            return Err(failed_earlier());
        }
        // Only a partial record is ever kept: rustls finds nothing to
        // process in it and says what it can do.
        let mut incoming = std::mem::take(&mut self.incoming);
        let result = loop {
            let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut incoming[..]);
            debug_assert_eq!(discard, 0, "a complete record left unprocessed");
            match state.map_err(tls_error) {
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    break Ok(Some(f(&mut traffic, &mut self.outgoing, &mut self.io)))
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    if let Err(e) = encode(&mut self.outgoing, |out| data.encode(out)) {
                        break Err(e);
                    }
                }
                Ok(ConnectionState::TransmitTlsData(data)) => data.done(),
                Ok(ConnectionState::PeerClosed) => self.peer_closed = true,
                Ok(ConnectionState::Closed) => break Ok(None),
                Ok(ConnectionState::ReadTraffic(_)) => {
                    // Not reached: `process` takes every record.
                    break Err(io::Error::other("TLS plaintext left unread"));
                }
                Ok(_) => break Err(io::Error::other("the TLS connection cannot send now")),
                Err(e) => {
                    self.failed = true;
                    break Err(e);
                }
            }
        };
        self.incoming = incoming;
        result
    }
}

/// Appends what `write` encodes to `out`, with the room it says it needs.
fn encode(
    out: &mut Vec<u8>,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> io::Result<()> {
    let start = out.len();
    let mut room = 4096;
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(e)) if e.required_size > room => room = e.required_size,
            Err(e) => {
                out.truncate(start);
                return Err(io::Error::other(e.to_string()));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ServerStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let left = &this.plaintext[this.plaintext_at..];
            if !left.is_empty() {
                let n = left.len().min(buf.remaining());
                buf.put_slice(&left[..n]);
                this.plaintext_at += n;
                if this.plaintext_at == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.plaintext_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed connection without sending TLS close_notify",
                )));
            }
            // Answers to what was read (a key update) go out as soon as
            // the socket takes them; a full socket does not stop reading.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            ready!(this.poll_receive(cx))?;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ServerStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.close_queued {
            return Poll::Ready(Err(closed_for_writing()));
        }
        let data = &data[..data.len().min(WRITE_CHUNK)];
        let sent = this.with_write_traffic(|traffic, outgoing, tcp| {
            // Room for every record's header, tag and content type.
            let room = data.len() + (data.len() / (16 * 1024) + 1) * 64;
            with_scratch(room, |scratch| {
                let len = match traffic.encrypt(data, scratch) {
                    Ok(len) => len,
                    Err(EncryptError::InsufficientSize(e)) => {
                        return Err(io::Error::other(format!(
                            "TLS records need {} bytes",
                            e.required_size
                        )))
                    }
                    Err(e) => return Err(io::Error::other(e.to_string())),
                };
                let mut at = 0;
                while at < len {
                    match Pin::new(&mut *tcp).poll_write(cx, &scratch[at..len]) {
                        Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                        Poll::Ready(Ok(n)) => at += n,
                        Poll::Ready(Err(e)) => return Err(e),
                        Poll::Pending => break,
                    }
                }
                // Encrypted: it must go out, once the socket takes it.
                outgoing.extend_from_slice(&scratch[at..len]);
                Ok(())
            })
        })?;
        match sent {
            Some(Ok(())) => Poll::Ready(Ok(data.len())),
            Some(Err(e)) => Poll::Ready(Err(e)),
            None => Poll::Ready(Err(closed_for_writing())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_queued {
            this.close_queued = true;
            this.with_write_traffic(|traffic, outgoing, _| {
                encode(outgoing, |out| {
                    traffic.queue_close_notify(out).map_err(|e| match e {
                        EncryptError::InsufficientSize(e) => EncodeError::InsufficientSize(e),
                        EncryptError::EncryptExhausted => EncodeError::AlreadyEncoded,
                    })
                })
            })?
            .transpose()?;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
