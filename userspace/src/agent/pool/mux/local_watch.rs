//! A local connection's socket, watched for the one answer the `h2` crate
//! gets wrong: a header block that does not decode is a connection error
//! COMPRESSION_ERROR (RFC 9113 §4.3), which h2 0.4 sends as
//! PROTOCOL_ERROR (`codec/framed_read.rs`, "failed HPACK decoding"). The
//! client gets the multiplexer's GOAWAY as its upstream's, so where
//! nghttpd and the agent's own path answer COMPRESSION_ERROR the
//! multiplexer did not (bad_input.rs with every stream shared: 305 of
//! 10,000 fuzz cases). Each header block coming in is decoded here too,
//! as the agent decodes a client's (header_block.rs); once one fails, the
//! code of a GOAWAY PROTOCOL_ERROR going out is rewritten as it passes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::cursor::{Cursor, Header, Piece};
use crate::h2::frame::{error_code, flag, kind};
use crate::h2::header_block::ClientHeaders;
use crate::h2::message::MAX_BLOCK;

/// Header blocks coming in, decoded as they complete.
struct Blocks {
    /// Bytes of the client's preface still to come (RFC 9113 §3.4): frames
    /// follow it.
    preface_left: usize,
    cursor: Cursor,
    /// The block coming in, its frames whole (as header_block.rs reads one).
    block: Vec<u8>,
    /// Past what a client may send: h2 refuses it, nothing to decode.
    too_long: bool,
    decoder: ClientHeaders,
    undecodable: bool,
}

fn is_block(h: &Header) -> bool {
    h.kind == kind::HEADERS || h.kind == kind::CONTINUATION
}

impl Default for Blocks {
    fn default() -> Self {
        Blocks {
            preface_left: 24,
            cursor: Cursor::default(),
            block: Vec::new(),
            too_long: false,
            decoder: ClientHeaders::default(),
            undecodable: false,
        }
    }
}

impl Blocks {
    fn take(&mut self, bytes: &[u8]) {
        let skip = self.preface_left.min(bytes.len());
        self.preface_left -= skip;
        let bytes = &bytes[skip..];
        let Blocks {
            preface_left: _,
            cursor,
            block,
            too_long,
            decoder,
            undecodable,
        } = self;
        cursor.walk(bytes, |piece| {
            let (frame, ended) = match piece {
                Piece::Header(h) if is_block(&h) => {
                    let len = (h.len as u32).to_be_bytes();
                    block.extend_from_slice(&[len[1], len[2], len[3], h.kind, h.flags]);
                    block.extend_from_slice(&h.stream.to_be_bytes());
                    (h, h.len == 0)
                }
                Piece::Payload {
                    frame,
                    offset,
                    range,
                } if is_block(&frame) => {
                    block.extend_from_slice(&bytes[range.clone()]);
                    (frame, offset + range.len() == frame.len)
                }
                _ => return,
            };
            if block.len() > MAX_BLOCK {
                *too_long = true;
                block.clear();
            }
            if ended && frame.flags & flag::END_HEADERS != 0 {
                if !*too_long && !*undecodable {
                    *undecodable = decoder.rewrite(block).is_err_and(|e| {
                        e.connection_error() == Some(error_code::COMPRESSION_ERROR)
                    });
                }
                block.clear();
                *too_long = false;
            }
        });
    }
}

/// GOAWAY frames going out, whose PROTOCOL_ERROR may be rewritten.
#[derive(Default, Clone)]
struct Goaways {
    cursor: Cursor,
}

impl Goaways {
    /// `bytes` as they should go out: a copy when a code was rewritten.
    fn pass(&mut self, bytes: &[u8], fix: bool) -> Option<Vec<u8>> {
        let mut fixed: Option<Vec<u8>> = None;
        self.cursor.walk(bytes, |piece| {
            let Piece::Payload {
                frame,
                offset,
                range,
            } = piece
            else {
                return;
            };
            if !fix || frame.kind != kind::GOAWAY || frame.stream != 0 {
                return;
            }
            // last stream id (4 bytes), then the code, whose last byte
            // tells PROTOCOL_ERROR (0x00000001) among h2's codes
            const CODE_LAST_BYTE: usize = 7;
            if (offset..offset + range.len()).contains(&CODE_LAST_BYTE) {
                let at = range.start + (CODE_LAST_BYTE - offset);
                if bytes[at] == error_code::PROTOCOL_ERROR as u8 {
                    fixed.get_or_insert_with(|| bytes.to_vec())[at] =
                        error_code::COMPRESSION_ERROR as u8;
                }
            }
        });
        fixed
    }
}

/// The local connection's socket, watched both ways.
pub(super) struct LocalWatch<T> {
    io: T,
    blocks: Blocks,
    goaways: Goaways,
}

impl<T> LocalWatch<T> {
    pub(super) fn new(io: T) -> Self {
        LocalWatch {
            io,
            blocks: Blocks::default(),
            goaways: Goaways::default(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for LocalWatch<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.blocks.take(&buf.filled()[before..]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LocalWatch<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Walked on a copy before the write; a write taken in part is
        // walked again from where the stream was, up to what went out.
        let fix = self.blocks.undecodable;
        let mut ahead = self.goaways.clone();
        let fixed = ahead.pass(buf, fix);
        let r = Pin::new(&mut self.io).poll_write(cx, fixed.as_deref().unwrap_or(buf));
        match r {
            Poll::Ready(Ok(n)) if n == buf.len() => self.goaways = ahead,
            Poll::Ready(Ok(n)) => {
                let _ = self.goaways.pass(&buf[..n], fix);
            }
            _ => {}
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goaway(code: u32) -> Vec<u8> {
        let mut f = vec![0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 5];
        f.extend_from_slice(&code.to_be_bytes());
        f
    }

    #[test]
    fn an_undecodable_block_turns_a_goaway_protocol_error_into_compression_error() {
        // HEADERS on stream 1 that indexes entry 0 (RFC 7541 §6.1), split
        // across two reads, with a PING before it in the first
        let mut inbound = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        inbound.extend_from_slice(&[0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        inbound.extend_from_slice(&[0, 0, 1, 1, 5, 0, 0, 0, 1, 0x80]);
        let mut blocks = Blocks::default();
        blocks.take(&inbound[..10]);
        blocks.take(&inbound[10..44]);
        assert!(!blocks.undecodable, "decided before the block was whole");
        blocks.take(&inbound[44..]);
        assert!(blocks.undecodable);

        let mut out = vec![0, 0, 0, 4, 1, 0, 0, 0, 0]; // SETTINGS ACK first
        out.extend_from_slice(&goaway(error_code::PROTOCOL_ERROR));
        for split in 0..out.len() {
            let mut g = Goaways::default();
            let mut got = g.pass(&out[..split], true).unwrap_or(out[..split].to_vec());
            got.extend(g.pass(&out[split..], true).unwrap_or(out[split..].to_vec()));
            assert_eq!(&got[..9], &out[..9]);
            assert_eq!(
                got[9..],
                goaway(error_code::COMPRESSION_ERROR),
                "split {split}"
            );
        }
    }

    #[test]
    fn decodable_blocks_and_other_codes_pass_as_they_are() {
        // :method GET (static 2), with END_HEADERS, then a CONTINUATION-
        // split block: HEADERS without END_HEADERS and its CONTINUATION
        let mut inbound = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        inbound.extend_from_slice(&[0, 0, 1, 1, 5, 0, 0, 0, 1, 0x82]);
        inbound.extend_from_slice(&[0, 0, 1, 1, 1, 0, 0, 0, 3, 0x82]);
        inbound.extend_from_slice(&[0, 0, 1, 9, 4, 0, 0, 0, 3, 0x84]);
        let mut blocks = Blocks::default();
        for b in inbound.chunks(3) {
            blocks.take(b);
        }
        assert!(!blocks.undecodable);
        let mut g = Goaways::default();
        assert!(g.pass(&goaway(error_code::PROTOCOL_ERROR), false).is_none());
        assert!(g
            .pass(&goaway(error_code::FLOW_CONTROL_ERROR), true)
            .is_none());
    }
}
