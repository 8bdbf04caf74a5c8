//! Where a byte stream of HTTP/2 frames is, for the readers and writers
//! that watch what the `h2` crate keeps to itself (frame_watch.rs,
//! local_watch.rs): each header as it completes, and each run of payload
//! bytes with its frame and offset.

/// A frame's 9-byte header (RFC 9113 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) len: usize,
    pub(super) kind: u8,
    pub(super) flags: u8,
    pub(super) stream: u32,
}

impl Header {
    fn parse(h: &[u8; 9]) -> Header {
        Header {
            len: u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize,
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        }
    }
}

/// What `Cursor::walk` found in a run of bytes.
pub(super) enum Piece {
    /// A header completed with the bytes just walked.
    Header(Header),
    /// `range` of the bytes walked is payload of `frame` from `offset` on.
    Payload {
        frame: Header,
        offset: usize,
        range: std::ops::Range<usize>,
    },
}

#[derive(Debug, Default, Clone)]
pub(super) struct Cursor {
    header: [u8; 9],
    header_read: usize,
    frame: Option<Header>,
    /// Payload bytes of `frame` walked so far.
    payload_read: usize,
    frames: u64,
}

impl Cursor {
    /// Walks `bytes`, the next ones of the stream, telling `on` each piece.
    pub(super) fn walk(&mut self, bytes: &[u8], mut on: impl FnMut(Piece)) {
        let mut at = 0;
        while at < bytes.len() {
            match self.frame {
                Some(frame) if self.payload_read < frame.len => {
                    let n = (frame.len - self.payload_read).min(bytes.len() - at);
                    on(Piece::Payload {
                        frame,
                        offset: self.payload_read,
                        range: at..at + n,
                    });
                    self.payload_read += n;
                    at += n;
                }
                _ => {
                    let n = (9 - self.header_read).min(bytes.len() - at);
                    self.header[self.header_read..self.header_read + n]
                        .copy_from_slice(&bytes[at..at + n]);
                    self.header_read += n;
                    at += n;
                    if self.header_read == 9 {
                        let h = Header::parse(&self.header);
                        self.header_read = 0;
                        self.frame = Some(h);
                        self.payload_read = 0;
                        self.frames += 1;
                        on(Piece::Header(h));
                    }
                }
            }
        }
    }

    /// Frames whose header is whole so far.
    pub(super) fn frames(&self) -> u64 {
        self.frames
    }

    /// The current frame's payload is all walked.
    pub(super) fn frame_done(&self) -> bool {
        self.frame.is_some_and(|f| self.payload_read == f.len)
    }
}
