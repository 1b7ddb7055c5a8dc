//! Framing over a byte stream, for the server and the client alike: TCP,
//! or TLS over TCP, is only a change of the stream type.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frame::{self, Decoded, FrameError};
use super::{OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// Why no message could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream failed. (Its cause is in the message, so not also the
    /// error's source: a report would print it twice.)
    #[error("connection: {0}")]
    Io(std::io::Error),
    /// The other side closed the connection in the middle of a frame.
    #[error("the connection closed in the middle of a frame")]
    Truncated,
    /// The bytes are not a frame this side can read.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// A stream with a frame buffer: whole messages in and out.
///
/// It reads frames of every protocol version this build reads, and drops
/// probes ([`frame::PROBE`]). It writes [`PROTOCOL_VERSION`], or, made
/// with [`Framed::answering`], the version of the last message it read.
#[derive(Debug)]
pub struct Framed<S> {
    stream: S,
    buf: Vec<u8>,
    max_in: u32,
    /// The version written.
    version: u16,
    /// Whether the version written follows the last message read.
    answering: bool,
}

/// Room made for a read when no frame has begun: a heartbeat's size.
const SMALL_READ: usize = 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    /// Frames `stream`, accepting incoming frames of at most `max_in` bytes.
    pub fn new(stream: S, max_in: u32) -> Self {
        Framed {
            stream,
            buf: Vec::new(),
            max_in,
            version: PROTOCOL_VERSION,
            answering: false,
        }
    }

    /// Frames `stream` for the side that answers (a server): it writes in
    /// the version of the last message it read, and before any in
    /// [`OLDEST_PROTOCOL_VERSION`], which every client it serves reads.
    pub fn answering(stream: S, max_in: u32) -> Self {
        Framed {
            version: OLDEST_PROTOCOL_VERSION,
            answering: true,
            ..Framed::new(stream, max_in)
        }
    }

    /// The protocol version this side writes now.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Whether part of a frame has arrived and waits for the rest.
    pub fn in_frame(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Decodes a whole frame already buffered, if there is one. Probes
    /// are dropped on the way.
    ///
    /// # Errors
    /// The buffered bytes are not a frame this side reads.
    pub fn try_buffered<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        loop {
            let Some((decoded, used)) = frame::decode_frame::<T>(&self.buf, self.max_in)? else {
                return Ok(None);
            };
            self.buf.drain(..used);
            if self.buf.is_empty() {
                // The wait for the next frame needs no buffer (`read_more`).
                self.buf = Vec::new();
            }
            match decoded {
                Decoded::Message { message, version } => {
                    if self.answering {
                        self.version = version;
                    }
                    return Ok(Some(message));
                }
                Decoded::Probe => {}
            }
        }
    }

    /// Reads once into the frame buffer's spare room, making room for the
    /// rest of the frame that has begun (bounded by the frame limit, which
    /// `try_buffered` enforces before the body is read), or for a small
    /// frame. No buffer lives in the future itself: a connection waiting
    /// for its next frame costs a few bytes, not a read buffer.
    async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            // Between frames, the wait holds no buffer at all: the first
            // bytes of the next frame are read into the stack of the poll
            // that finds them, then kept.
            return std::future::poll_fn(|cx| self.poll_first(cx)).await;
        }
        let want = match frame::peek_len(&self.buf, self.max_in) {
            Ok(Some(len)) => (frame::LENGTH_BYTES + len as usize).saturating_sub(self.buf.len()),
            _ => SMALL_READ,
        };
        self.buf.reserve(want.clamp(1, 64 * 1024));
        self.stream.read_buf(&mut self.buf).await
    }

    /// Reads what the stream has into a buffer of this poll's own, and
    /// keeps it (`buf` is empty: no frame has begun).
    fn poll_first(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<usize>> {
        let mut room = [0u8; SMALL_READ];
        let mut read = tokio::io::ReadBuf::new(&mut room);
        std::task::ready!(std::pin::Pin::new(&mut self.stream).poll_read(cx, &mut read))?;
        self.buf.extend_from_slice(read.filled());
        std::task::Poll::Ready(Ok(read.filled().len()))
    }

    /// Reads one message; `None` when the other side closed the connection
    /// between frames. Cancel-safe: bytes read are kept for the next call.
    ///
    /// # Errors
    /// The stream failed, closed in the middle of a frame, or sent bytes
    /// that are not a frame (too long, another version, undecodable).
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ReadError> {
        loop {
            if let Some(message) = self.try_buffered()? {
                return Ok(Some(message));
            }
            if self.read_more().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }

    /// Reads what the stream has now (at least one byte, or 0 at its end)
    /// into the frame buffer. Cancel-safe: nothing read is lost.
    ///
    /// # Errors
    /// The stream failed.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        self.read_more().await
    }

    /// Reads whatever arrives within `wait`, without waiting for a whole
    /// frame (a connection that is being closed answers what it already
    /// received). Returns whether anything arrived.
    pub async fn read_pending(&mut self, wait: Duration) -> bool {
        let mut any = false;
        while let Ok(Ok(n)) = tokio::time::timeout(wait, self.read_more()).await {
            if n == 0 {
                break;
            }
            any = true;
        }
        any
    }

    /// Writes `message` as one frame (of at most `max_out` bytes) and flushes.
    ///
    /// # Errors
    /// The message does not fit in `max_out`, or the stream failed.
    pub async fn write<T: Serialize>(&mut self, message: &T, max_out: u32) -> Result<(), WriteError> {
        let bytes = frame::encode_as(message, self.version, max_out)?;
        self.stream.write_all(&bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Writes a probe ([`frame::PROBE`]) and flushes.
    ///
    /// # Errors
    /// The stream failed.
    pub async fn write_probe(&mut self) -> Result<(), WriteError> {
        self.stream.write_all(&frame::PROBE).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Closes the sending side (TLS: close_notify).
    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}

/// Why a message could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// It does not fit in a frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream failed (its cause in the message, not the source).
    #[error("connection: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        WriteError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10 (server RSS at 10,000 switches): a connection waiting for
    /// its next frame held the 1 KB it had reserved for it (heaptrack:
    /// 10.24 MB in `Framed::fill` at 10,000 switches). Waiting holds
    /// nothing; a frame that arrives in pieces is still read whole.
    #[tokio::test]
    async fn a_connection_waiting_between_frames_holds_no_buffer() {
        let (mut a, b) = tokio::io::duplex(4096);
        let mut b = Framed::new(b, 64 * 1024);
        let waiting = tokio::time::timeout(Duration::from_millis(20), b.read::<(String, u32)>()).await;
        assert!(waiting.is_err(), "nothing was sent");
        assert_eq!(b.buf.capacity(), 0, "no buffer while waiting");
        let big = "x".repeat(3000);
        let bytes = frame::encode(&(big.clone(), 9u32), 64 * 1024).unwrap();
        let (head, tail) = bytes.split_at(5);
        a.write_all(head).await.unwrap();
        let partial = tokio::time::timeout(Duration::from_millis(20), b.read::<(String, u32)>()).await;
        assert!(partial.is_err(), "only the frame's start arrived");
        assert!(b.in_frame(), "the start is kept");
        a.write_all(tail).await.unwrap();
        assert_eq!(b.read::<(String, u32)>().await.unwrap(), Some((big, 9)));
        assert!(!b.in_frame());
        let waiting = tokio::time::timeout(Duration::from_millis(20), b.read::<(String, u32)>()).await;
        assert!(waiting.is_err());
        assert_eq!(
            b.buf.capacity(),
            0,
            "the buffer is given back once the frame is read"
        );
        // Two frames in one read: both are read, the second from what is kept.
        let mut two = frame::encode(&("one".to_owned(), 1u32), 1024).unwrap();
        two.extend(frame::encode(&("two".to_owned(), 2u32), 1024).unwrap());
        a.write_all(&two).await.unwrap();
        assert_eq!(b.read::<(String, u32)>().await.unwrap(), Some(("one".into(), 1)));
        assert_eq!(b.read::<(String, u32)>().await.unwrap(), Some(("two".into(), 2)));
    }

    #[tokio::test]
    async fn messages_cross_a_stream_whole_and_a_close_mid_frame_is_an_error() {
        let (a, b) = tokio::io::duplex(64);
        let (mut a, mut b) = (Framed::new(a, 1024), Framed::new(b, 1024));
        a.write(&("hello".to_owned(), 7u32), 1024).await.unwrap();
        a.write(&("again".to_owned(), 8u32), 1024).await.unwrap();
        assert_eq!(
            b.read::<(String, u32)>().await.unwrap(),
            Some(("hello".into(), 7))
        );
        assert_eq!(
            b.read::<(String, u32)>().await.unwrap(),
            Some(("again".into(), 8))
        );
        drop(a);
        assert!(b.read::<(String, u32)>().await.unwrap().is_none());

        let (a, b) = tokio::io::duplex(64);
        let mut b = Framed::new(b, 1024);
        let bytes = frame::encode(&("cut".to_owned(), 1u32), 1024).unwrap();
        let mut a = a;
        a.write_all(&bytes[..bytes.len() - 1]).await.unwrap();
        drop(a);
        assert!(matches!(
            b.read::<(String, u32)>().await,
            Err(ReadError::Truncated)
        ));
    }

    /// An answering side drops probes, reads an older client's frames and
    /// answers each in the version it was asked in; before anything was
    /// read it writes the oldest version.
    #[tokio::test]
    async fn an_answering_side_answers_in_the_version_asked_and_drops_probes() {
        let (a, b) = tokio::io::duplex(256);
        let (mut client, mut server) = (a, Framed::answering(b, 1024));
        assert_eq!(server.version(), OLDEST_PROTOCOL_VERSION);
        let mut bytes = frame::PROBE.to_vec();
        bytes.extend(frame::encode_as(&1u32, 2, 1024).unwrap());
        bytes.extend(frame::PROBE);
        bytes.extend(frame::encode(&2u32, 1024).unwrap());
        client.write_all(&bytes).await.unwrap();
        assert_eq!(server.read::<u32>().await.unwrap(), Some(1));
        assert_eq!(server.version(), 2);
        server.write(&10u32, 1024).await.unwrap();
        assert_eq!(server.read::<u32>().await.unwrap(), Some(2));
        assert_eq!(server.version(), PROTOCOL_VERSION);
        server.write(&20u32, 1024).await.unwrap();
        let mut got = vec![0u8; 2 * (frame::LENGTH_BYTES + frame::VERSION_BYTES + 1)];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got[..7], frame::encode_as(&10u32, 2, 1024).unwrap()[..]);
        assert_eq!(got[7..], frame::encode(&20u32, 1024).unwrap()[..]);
        // A client side writes its own version whatever it reads.
        let (a, b) = tokio::io::duplex(256);
        let (mut raw, mut client) = (a, Framed::new(b, 1024));
        raw.write_all(&frame::encode_as(&3u32, 2, 1024).unwrap())
            .await
            .unwrap();
        assert_eq!(client.read::<u32>().await.unwrap(), Some(3));
        assert_eq!(client.version(), PROTOCOL_VERSION);
        client.write_probe().await.unwrap();
        let mut probe = [0u8; 6];
        raw.read_exact(&mut probe).await.unwrap();
        assert_eq!(probe, frame::PROBE);
    }
}
