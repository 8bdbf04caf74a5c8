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

use super::cursor::{Cursor, Header, Piece};
use super::watched::{Watch, Watched};
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
                    *undecodable = decoder.check(block).is_err_and(|e| {
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

/// A local connection's frames, watched both ways (a `Watched` socket's).
#[derive(Default)]
pub(super) struct LocalWatch {
    blocks: Blocks,
    goaways: Goaways,
}

impl LocalWatch {
    pub(super) fn wrap<T>(io: T) -> Watched<T, LocalWatch> {
        Watched::new(io, LocalWatch::default())
    }
}

impl Watch for LocalWatch {
    fn read(&mut self, bytes: &[u8]) {
        self.blocks.take(bytes);
    }

    fn write(&mut self, bytes: &[u8], commit: bool) -> Option<Vec<u8>> {
        let fix = self.blocks.undecodable;
        if commit {
            self.goaways.pass(bytes, fix)
        } else {
            self.goaways.clone().pass(bytes, fix)
        }
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
