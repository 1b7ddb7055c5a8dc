//! Reassembling a raft message sent in chunks: the receiving half of
//! `frame.rs`'s chunks, sans IO.
//!
//! One [`Reassembly`] per inbound connection holds at most one message in
//! progress. The sender writes a message's chunks back to back, in order,
//! and nothing else between them (its writer task owns the connection and
//! writes one message whole before it takes the next), so anything else is
//! a broken or hostile peer: its connection is closed. What the peer
//! announces is never trusted for memory: the buffer grows with what
//! arrives and holds at most one chunk more than that.

use super::frame::ChunkHeader;

/// Why a peer's chunks were refused (its connection is closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChunkError {
    /// The message announced is larger than we reassemble.
    #[error("chunked message {message} announced as {total} bytes, limit {max} (max_message)")]
    TooLarge {
        /// The message's number.
        message: u64,
        /// Its announced length.
        total: u64,
        /// `max_message`.
        max: u64,
    },
    /// A chunk without bytes (a message never needs one).
    #[error("empty chunk of message {message}")]
    Empty {
        /// The message's number.
        message: u64,
    },
    /// A chunk that repeats or precedes bytes already received.
    #[error(
        "chunk of message {message} at offset {offset} is out of order: {expected} bytes already received"
    )]
    OutOfOrder {
        /// The message's number.
        message: u64,
        /// Where the chunk says it starts.
        offset: u64,
        /// Where the next chunk must start.
        expected: u64,
    },
    /// A chunk past the bytes received so far (a first chunk not at 0).
    #[error("chunk of message {message} at offset {offset} leaves a gap: {expected} bytes received so far")]
    Gap {
        /// The message's number.
        message: u64,
        /// Where the chunk says it starts.
        offset: u64,
        /// Where the next chunk must start.
        expected: u64,
    },
    /// A chunk that ends past the message's announced length.
    #[error("chunk of message {message} ends at byte {end}, past the {total} bytes announced")]
    Overrun {
        /// The message's number.
        message: u64,
        /// Where the chunk ends.
        end: u64,
        /// The announced length.
        total: u64,
    },
    /// A chunk announcing another length than the message's first did.
    #[error("chunk of message {message} announces {total} bytes, its first chunk {first}")]
    TotalChanged {
        /// The message's number.
        message: u64,
        /// What this chunk announces.
        total: u64,
        /// What the first announced.
        first: u64,
    },
    /// A chunk of another message while one is incomplete.
    #[error("chunk of message {got} while message {current} is incomplete")]
    Interleaved {
        /// The incomplete message.
        current: u64,
        /// The other one.
        got: u64,
    },
    /// A whole frame while a message is incomplete.
    #[error("whole frame while chunked message {current} is incomplete")]
    Interrupted {
        /// The incomplete message.
        current: u64,
    },
    /// A chunk naming another sender than the message's first chunk.
    #[error("chunk of message {message} from member {got}, begun by member {first}")]
    Sender {
        /// The message's number.
        message: u64,
        /// The sender of its first chunk.
        first: u64,
        /// The sender this chunk names.
        got: u64,
    },
}

impl ChunkError {
    /// The cause, for the rate limiter of log lines.
    pub(crate) fn cause(&self) -> &'static str {
        match self {
            ChunkError::TooLarge { .. } => "chunk too large",
            ChunkError::Empty { .. } => "chunk empty",
            ChunkError::OutOfOrder { .. } => "chunk out of order",
            ChunkError::Gap { .. } => "chunk gap",
            ChunkError::Overrun { .. } => "chunk overrun",
            ChunkError::TotalChanged { .. } => "chunk total",
            ChunkError::Interleaved { .. } => "chunk interleaved",
            ChunkError::Interrupted { .. } => "chunk interrupted",
            ChunkError::Sender { .. } => "chunk sender",
        }
    }
}

/// The message in progress on one connection.
#[derive(Debug)]
struct Partial {
    from: u64,
    message: u64,
    total: usize,
    buf: Vec<u8>,
}

/// Reassembles the chunked messages of one connection, one at a time.
#[derive(Debug)]
pub(crate) struct Reassembly {
    max_message: u64,
    partial: Option<Partial>,
}

impl Reassembly {
    /// Reassembles messages of at most `max_message` bytes.
    pub(crate) fn new(max_message: u64) -> Reassembly {
        Reassembly {
            max_message,
            partial: None,
        }
    }

    /// Bytes held for the message in progress (its buffer's capacity).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.buf.capacity())
    }

    /// Takes chunk `data` at `header` from member `from`: the whole
    /// encoded message once its last chunk arrived.
    ///
    /// # Errors
    /// The chunk does not continue the message in progress (or start one)
    /// as the sender's chunks always do; what was held is dropped.
    pub(crate) fn push(
        &mut self,
        from: u64,
        header: ChunkHeader,
        data: &[u8],
    ) -> Result<Option<Vec<u8>>, ChunkError> {
        let r = self.take(from, header, data);
        if r.is_err() {
            self.partial = None;
        }
        r
    }

    /// A whole frame arrived: fine between messages, refused inside one.
    ///
    /// # Errors
    /// A chunked message is incomplete; what was held is dropped.
    pub(crate) fn whole_frame(&mut self) -> Result<(), ChunkError> {
        match self.partial.take() {
            Some(p) => Err(ChunkError::Interrupted { current: p.message }),
            None => Ok(()),
        }
    }

    fn take(&mut self, from: u64, h: ChunkHeader, data: &[u8]) -> Result<Option<Vec<u8>>, ChunkError> {
        let message = h.message;
        if data.is_empty() {
            return Err(ChunkError::Empty { message });
        }
        let p = match &mut self.partial {
            Some(p) => {
                if p.message != message {
                    return Err(ChunkError::Interleaved {
                        current: p.message,
                        got: message,
                    });
                }
                if p.from != from {
                    return Err(ChunkError::Sender {
                        message,
                        first: p.from,
                        got: from,
                    });
                }
                if h.total != p.total as u64 {
                    return Err(ChunkError::TotalChanged {
                        message,
                        total: h.total,
                        first: p.total as u64,
                    });
                }
                p
            }
            None => {
                let total = usize::try_from(h.total)
                    .ok()
                    .filter(|_| h.total <= self.max_message)
                    .ok_or(ChunkError::TooLarge {
                        message,
                        total: h.total,
                        max: self.max_message,
                    })?;
                self.partial.insert(Partial {
                    from,
                    message,
                    total,
                    buf: Vec::new(),
                })
            }
        };
        let expected = p.buf.len() as u64;
        if h.offset < expected {
            return Err(ChunkError::OutOfOrder {
                message,
                offset: h.offset,
                expected,
            });
        }
        if h.offset > expected {
            return Err(ChunkError::Gap {
                message,
                offset: h.offset,
                expected,
            });
        }
        let end = h.offset + data.len() as u64;
        if end > p.total as u64 {
            return Err(ChunkError::Overrun {
                message,
                end,
                total: p.total as u64,
            });
        }
        if p.buf.capacity() - p.buf.len() < data.len() {
            // Room for this chunk and one more like it, never past the
            // announced total: however much the peer announces, the
            // buffer holds at most one chunk beyond what arrived.
            let room = (2 * data.len()).min(p.total - p.buf.len());
            p.buf.reserve_exact(room);
        }
        p.buf.extend_from_slice(data);
        if p.buf.len() < p.total {
            return Ok(None);
        }
        Ok(self.partial.take().map(|p| p.buf))
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::{
        chunk_overhead, decode_payload, encode_chunk_frame, encode_chunk_head, Frame, FrameError,
        MAX_RELEASE_LEN, RELEASE,
    };
    use super::*;

    fn h(message: u64, total: usize, offset: usize) -> ChunkHeader {
        ChunkHeader {
            message,
            total: total as u64,
            offset: offset as u64,
        }
    }

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn chunk_frames_roundtrip() {
        let data = bytes(1000);
        let header = h(7, 5000, 3000);
        let f = encode_chunk_frame(RELEASE, 42, 1, 2, header, &data);
        assert_eq!(
            u32::from_be_bytes(f[..4].try_into().unwrap()) as usize,
            f.len() - 4
        );
        assert_eq!(
            decode_payload(&f[4..], 42, 2),
            Ok(Frame::Chunk {
                from: 1,
                header,
                data: &data
            })
        );
        // The head alone, then the bytes: the same frame.
        let mut head = encode_chunk_head(RELEASE, 42, 1, 2, header, data.len());
        head.extend_from_slice(&data);
        assert_eq!(head, f);
        // The envelope is checked as for any frame.
        assert_eq!(
            decode_payload(&f[4..], 43, 2),
            Err(FrameError::Cluster { got: 42, want: 43 })
        );
        assert_eq!(decode_payload(&f[4..], 42, 3), Err(FrameError::Misaddressed(2)));
        // A chunk of no bytes decodes (and is refused by the reassembly).
        let empty = encode_chunk_frame(RELEASE, 42, 1, 2, header, &[]);
        assert!(matches!(
            decode_payload(&empty[4..], 42, 2),
            Ok(Frame::Chunk { data: [], .. })
        ));
    }

    #[test]
    fn chunk_heads_stay_within_the_overhead_bound() {
        let release = "9".repeat(MAX_RELEASE_LEN);
        let bound = chunk_overhead(&release, u64::MAX, u64::MAX, u64::MAX);
        let worst = ChunkHeader {
            message: u64::MAX,
            total: u64::MAX,
            offset: u64::MAX,
        };
        let head = encode_chunk_head(&release, u64::MAX, u64::MAX, u64::MAX, worst, 0);
        assert_eq!(head.len() - 4, bound);
        assert!(bound < 160, "{bound}");
        let small = encode_chunk_head(RELEASE, 1, 1, 2, h(1, 10, 0), 0);
        assert!(small.len() - 4 <= chunk_overhead(RELEASE, 1, 1, 2));
    }

    /// Splits `msg` into chunks of `step` bytes and feeds them in order.
    fn feed(r: &mut Reassembly, message: u64, msg: &[u8], step: usize) -> Option<Vec<u8>> {
        let mut out = None;
        for (i, c) in msg.chunks(step).enumerate() {
            assert!(out.is_none(), "complete before its last chunk");
            out = r.push(1, h(message, msg.len(), i * step), c).unwrap();
            if out.is_none() {
                // What is held is what arrived plus at most one chunk.
                assert!(r.held() <= i * step + 2 * c.len(), "held {}", r.held());
            }
        }
        out
    }

    #[test]
    fn chunks_in_order_reassemble_the_message_and_the_next_starts_clean() {
        let mut r = Reassembly::new(1 << 20);
        let msg = bytes(10_000);
        for step in [1, 7, 4096, 9_999, 10_000] {
            assert_eq!(
                feed(&mut r, 3, &msg, step).as_deref(),
                Some(&msg[..]),
                "step {step}"
            );
            assert_eq!(r.held(), 0);
            assert_eq!(r.whole_frame(), Ok(()), "nothing in progress");
        }
        // A message of exactly max_message bytes is fine.
        let mut r = Reassembly::new(10_000);
        assert_eq!(feed(&mut r, 4, &msg, 3000).as_deref(), Some(&msg[..]));
    }

    #[test]
    fn an_announced_total_is_never_allocated_ahead_of_the_bytes() {
        let mut r = Reassembly::new(1 << 30);
        // 1 GiB announced, 10 bytes sent.
        assert_eq!(r.push(1, h(1, 1 << 30, 0), &bytes(10)), Ok(None));
        assert!(r.held() <= 20, "held {}", r.held());
        assert_eq!(r.push(1, h(1, 1 << 30, 10), &bytes(10)), Ok(None));
        assert!(r.held() <= 30, "held {}", r.held());
    }

    #[test]
    fn a_total_above_max_message_is_refused_before_anything_is_held() {
        let mut r = Reassembly::new(1000);
        assert_eq!(
            r.push(1, h(5, 1001, 0), &bytes(10)),
            Err(ChunkError::TooLarge {
                message: 5,
                total: 1001,
                max: 1000
            })
        );
        assert_eq!(r.held(), 0);
        let mut r = Reassembly::new(u64::MAX);
        let e = r.push(
            1,
            ChunkHeader {
                message: 5,
                total: u64::MAX,
                offset: 0,
            },
            &bytes(10),
        );
        assert!(
            usize::BITS == 64 || matches!(e, Err(ChunkError::TooLarge { .. })),
            "{e:?}"
        );
    }

    /// A reassembly with the first `n` bytes of message 9 (100 bytes) from member 1.
    fn started(n: usize) -> Reassembly {
        let mut r = Reassembly::new(1 << 20);
        assert_eq!(r.push(1, h(9, 100, 0), &bytes(n)), Ok(None));
        r
    }

    #[test]
    fn each_broken_sequence_is_refused_and_drops_what_was_held() {
        let cases: Vec<(&str, Reassembly, u64, ChunkHeader, usize, ChunkError)> = vec![
            (
                "a repeated chunk",
                started(40),
                1,
                h(9, 100, 0),
                40,
                ChunkError::OutOfOrder {
                    message: 9,
                    offset: 0,
                    expected: 40,
                },
            ),
            (
                "an earlier offset",
                started(40),
                1,
                h(9, 100, 20),
                20,
                ChunkError::OutOfOrder {
                    message: 9,
                    offset: 20,
                    expected: 40,
                },
            ),
            (
                "a gap",
                started(40),
                1,
                h(9, 100, 41),
                10,
                ChunkError::Gap {
                    message: 9,
                    offset: 41,
                    expected: 40,
                },
            ),
            (
                "a first chunk not at 0",
                Reassembly::new(1 << 20),
                1,
                h(9, 100, 40),
                10,
                ChunkError::Gap {
                    message: 9,
                    offset: 40,
                    expected: 0,
                },
            ),
            (
                "more bytes than announced",
                started(40),
                1,
                h(9, 100, 40),
                61,
                ChunkError::Overrun {
                    message: 9,
                    end: 101,
                    total: 100,
                },
            ),
            (
                "a first chunk longer than its message",
                Reassembly::new(1 << 20),
                1,
                h(9, 10, 0),
                11,
                ChunkError::Overrun {
                    message: 9,
                    end: 11,
                    total: 10,
                },
            ),
            (
                "another total",
                started(40),
                1,
                h(9, 200, 40),
                10,
                ChunkError::TotalChanged {
                    message: 9,
                    total: 200,
                    first: 100,
                },
            ),
            (
                "another message's chunk",
                started(40),
                1,
                h(10, 100, 0),
                10,
                ChunkError::Interleaved { current: 9, got: 10 },
            ),
            (
                "a chunk claiming another sender",
                started(40),
                3,
                h(9, 100, 40),
                10,
                ChunkError::Sender {
                    message: 9,
                    first: 1,
                    got: 3,
                },
            ),
            (
                "an empty chunk",
                started(40),
                1,
                h(9, 100, 40),
                0,
                ChunkError::Empty { message: 9 },
            ),
        ];
        for (what, mut r, from, header, len, want) in cases {
            assert_eq!(r.push(from, header, &bytes(len)), Err(want), "{what}");
            assert_eq!(r.held(), 0, "{what}: nothing held after a refusal");
        }
        let mut r = started(40);
        assert_eq!(r.whole_frame(), Err(ChunkError::Interrupted { current: 9 }));
        assert_eq!(r.held(), 0);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_chunk_sequences_never_panic_nor_overallocate(
            chunks in proptest::collection::vec(
                (0u64..3, 0u64..300, 0u64..300, 0usize..64, 1u64..3),
                0..40,
            )
        ) {
            let mut r = Reassembly::new(256);
            let mut arrived = 0usize;
            for (message, total, offset, len, from) in chunks {
                let header = ChunkHeader { message, total, offset };
                match r.push(from, header, &bytes(len)) {
                    Ok(Some(m)) => {
                        proptest::prop_assert_eq!(m.len() as u64, total);
                        arrived = 0;
                    }
                    Ok(None) => arrived += len,
                    Err(_) => arrived = 0,
                }
                proptest::prop_assert!(r.held() <= arrived + len);
            }
        }
    }
}
