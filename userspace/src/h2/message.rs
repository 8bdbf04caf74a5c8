//! Splits a byte stream into the messages the kernel's stream parser makes
//! (ebpf/lib/h2.h): the client preface, one frame, or one whole header block
//! (HEADERS or PUSH_PROMISE up to END_HEADERS). The agent counts messages
//! the same way the kernel does: that count is what opens the fast path.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use super::frame::{flag, kind, FrameHeader, HEADER_LEN, MAX_FRAME, PREFACE};
use crate::ebpf::abi;

/// Header blocks larger than this are refused (the kernel's parser too).
pub const MAX_BLOCK: usize = abi::ROTOR_MAX_BLOCK as usize;
/// CONTINUATION frames a header block may have (kernel:
/// ROTOR_MAX_CONTINUATIONS). The kernel's parser puts a socket whose block
/// has more into raw mode; the agent reads such a socket's bytes itself,
/// and a block it accepted and sent on through the injector then put the
/// injector's parser into raw mode too, which drops every agent frame for
/// every connection from then on. So the agent refuses what the kernel
/// refuses.
pub const MAX_CONTINUATIONS: usize = abi::ROTOR_MAX_CONTINUATIONS as usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Preface,
    /// A frame, or a header block: `header` is the first frame's header,
    /// `bytes` the whole message as it arrived (headers included).
    Frame {
        header: FrameHeader,
        bytes: Bytes,
    },
    /// Not HTTP/2: bytes as they come.
    Raw(Bytes),
}

impl Message {
    /// The frame's payload, for a single frame.
    pub fn payload(&self) -> &[u8] {
        match self {
            Message::Frame { bytes, .. } => bytes.get(HEADER_LEN..).unwrap_or(&[]),
            _ => &[],
        }
    }
}

impl MessageError {
    /// The RFC 9113 error code a peer gets for it (GOAWAY).
    pub fn code(&self) -> u32 {
        use super::frame::error_code;
        match self {
            MessageError::FrameTooLarge(_) => error_code::FRAME_SIZE_ERROR,
            MessageError::BlockTooLarge => error_code::ENHANCE_YOUR_CALM,
            MessageError::StrayContinuation | MessageError::InterruptedBlock(_) => {
                error_code::PROTOCOL_ERROR
            }
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("frame of {0} bytes exceeds the maximum frame size {MAX_FRAME}")]
    FrameTooLarge(u32),
    #[error("header block exceeds {MAX_BLOCK} bytes or {MAX_CONTINUATIONS} CONTINUATION frames")]
    BlockTooLarge,
    #[error("CONTINUATION frame outside a header block")]
    StrayContinuation,
    #[error("header block interrupted by a frame of type {0:#x}")]
    InterruptedBlock(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The client side: the 24-byte preface first.
    Preface,
    Frames,
}

#[derive(Debug, Clone)]
pub struct MessageReader {
    buf: BytesMut,
    expect_preface: bool,
    raw: bool,
}

impl MessageReader {
    pub fn new(expect: Expect) -> Self {
        MessageReader {
            buf: BytesMut::new(),
            expect_preface: expect == Expect::Preface,
            raw: false,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The bytes not yet part of a message, handed over (for a splice).
    /// The whole messages in what is buffered, none taken.
    pub fn whole_messages(&self) -> u32 {
        let mut scratch = self.clone();
        let mut n = 0;
        while let Ok(Some(_)) = scratch.next_message() {
            n += 1;
        }
        n
    }

    pub fn take_buffered(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// The next complete message, Ok(None) if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, MessageError> {
        if self.raw {
            return Ok((!self.buf.is_empty()).then(|| Message::Raw(self.buf.split().freeze())));
        }
        if self.expect_preface {
            let n = self.buf.len().min(PREFACE.len());
            if self.buf[..n] != PREFACE[..n] {
                self.raw = true;
                return self.next_message();
            }
            if n < PREFACE.len() {
                return Ok(None);
            }
            self.buf.advance(PREFACE.len());
            self.expect_preface = false;
            return Ok(Some(Message::Preface));
        }
        let Some(first) = FrameHeader::parse(&self.buf) else {
            return Ok(None);
        };
        if first.len as usize > MAX_FRAME {
            return Err(MessageError::FrameTooLarge(first.len));
        }
        if first.kind == kind::CONTINUATION {
            return Err(MessageError::StrayContinuation);
        }
        let Some(total) = self.message_len(&first)? else {
            return Ok(None);
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        Ok(Some(Message::Frame {
            header: first,
            bytes: self.buf.split_to(total).freeze(),
        }))
    }

    fn message_len(&self, first: &FrameHeader) -> Result<Option<usize>, MessageError> {
        let mut total = HEADER_LEN + first.len as usize;
        let opens_block = first.kind == kind::HEADERS || first.kind == kind::PUSH_PROMISE;
        if !opens_block || first.has(flag::END_HEADERS) {
            return Ok(Some(total));
        }
        for _ in 0..MAX_CONTINUATIONS {
            let Some(next) = self.buf.get(total..).and_then(FrameHeader::parse) else {
                return Ok(None);
            };
            if next.kind != kind::CONTINUATION || next.stream != first.stream {
                return Err(MessageError::InterruptedBlock(next.kind));
            }
            if next.len as usize > MAX_FRAME {
                return Err(MessageError::FrameTooLarge(next.len));
            }
            total += HEADER_LEN + next.len as usize;
            if total > MAX_BLOCK {
                return Err(MessageError::BlockTooLarge);
            }
            if next.has(flag::END_HEADERS) {
                return Ok(Some(total));
            }
        }
        Err(MessageError::BlockTooLarge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::frame;

    fn header(len: u32, kind: u8, flags: u8, stream: u32) -> BytesMut {
        let mut b = BytesMut::new();
        FrameHeader {
            len,
            kind,
            flags,
            stream,
        }
        .encode(&mut b);
        b.extend_from_slice(&vec![0u8; len as usize]);
        b
    }

    #[test]
    fn preface_then_frames_split_at_every_byte() {
        let mut wire = PREFACE.to_vec();
        let mut s = BytesMut::new();
        frame::settings(&mut s, &[(1, 0)]);
        wire.extend_from_slice(&s);
        wire.extend_from_slice(&header(3, kind::HEADERS, flag::END_HEADERS, 1));
        let mut r = MessageReader::new(Expect::Preface);
        let mut got = vec![];
        for b in &wire {
            r.push(&[*b]);
            while let Some(m) = r.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Message::Preface);
        assert!(matches!(&got[2], Message::Frame { header, .. } if header.stream == 1));
    }

    #[test]
    fn whole_messages_counts_as_the_kernel_does_and_takes_none() {
        // a header block in two frames is one message, as for the parser
        let mut r = MessageReader::new(Expect::Frames);
        r.push(&header(4, kind::HEADERS, 0, 3));
        r.push(&header(2, kind::CONTINUATION, flag::END_HEADERS, 3));
        r.push(&header(0, kind::DATA, flag::END_STREAM, 3));
        let partial = header(8, kind::PING, 0, 0);
        r.push(&partial[..12]);
        let before = r.buffered();
        assert_eq!(r.whole_messages(), 2);
        assert_eq!(r.buffered(), before, "counting takes nothing");
        r.push(&partial[12..]);
        assert_eq!(r.whole_messages(), 3);
    }

    #[test]
    fn header_block_is_one_message() {
        let mut r = MessageReader::new(Expect::Frames);
        r.push(&header(4, kind::HEADERS, 0, 3));
        r.push(&header(2, kind::CONTINUATION, 0, 3));
        assert_eq!(r.next_message(), Ok(None));
        r.push(&header(1, kind::CONTINUATION, flag::END_HEADERS, 3));
        r.push(&header(0, kind::DATA, flag::END_STREAM, 3));
        let Some(Message::Frame { header, bytes }) = r.next_message().unwrap() else {
            panic!()
        };
        assert_eq!((header.kind, bytes.len()), (kind::HEADERS, 9 * 3 + 7));
        assert!(
            matches!(r.next_message(), Ok(Some(Message::Frame { header, .. })) if header.kind == kind::DATA)
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut r = MessageReader::new(Expect::Frames);
        r.push(&header(1, kind::CONTINUATION, 0, 1));
        assert_eq!(r.next_message(), Err(MessageError::StrayContinuation));
        let mut r = MessageReader::new(Expect::Frames);
        r.push(&[0x01, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(r.next_message(), Err(MessageError::FrameTooLarge(65536)));
        let mut r = MessageReader::new(Expect::Frames);
        r.push(&header(1, kind::HEADERS, 0, 1));
        r.push(&header(0, kind::DATA, 0, 1));
        assert_eq!(
            r.next_message(),
            Err(MessageError::InterruptedBlock(kind::DATA))
        );
    }

    #[test]
    fn blocks_over_the_kernels_continuation_count_are_refused() {
        let mut r = MessageReader::new(Expect::Frames);
        r.push(&header(1, kind::HEADERS, 0, 1));
        for _ in 0..MAX_CONTINUATIONS - 1 {
            r.push(&header(1, kind::CONTINUATION, 0, 1));
        }
        r.push(&header(1, kind::CONTINUATION, flag::END_HEADERS, 1));
        assert!(matches!(r.next_message(), Ok(Some(Message::Frame { .. }))));
        let mut r = MessageReader::new(Expect::Frames);
        r.push(&header(1, kind::HEADERS, 0, 1));
        for _ in 0..MAX_CONTINUATIONS {
            r.push(&header(1, kind::CONTINUATION, 0, 1));
        }
        r.push(&header(1, kind::CONTINUATION, flag::END_HEADERS, 1));
        assert_eq!(r.next_message(), Err(MessageError::BlockTooLarge));
    }

    #[test]
    fn not_http2_is_raw() {
        let mut r = MessageReader::new(Expect::Preface);
        r.push(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            r.next_message(),
            Ok(Some(Message::Raw(Bytes::from_static(
                b"GET / HTTP/1.1\r\n"
            ))))
        );
        r.push(b"Host: x\r\n\r\n");
        assert!(matches!(r.next_message(), Ok(Some(Message::Raw(_)))));
    }
}
