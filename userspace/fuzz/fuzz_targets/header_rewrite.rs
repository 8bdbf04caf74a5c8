//! `rotor::h2::header_block::ClientHeaders::rewrite`: the agent decodes a
//! client's header block (HPACK, with the client's dynamic table) and
//! re-encodes it with literals only.
//!
//! Input: a sequence of header block messages built from the fuzz bytes
//! (HEADERS + CONTINUATION frames with fuzzed flags, padding and priority, or
//! raw bytes), rewritten one after the other with one `ClientHeaders` (the
//! dynamic table carries over, as on a connection). Checks: no panic; an
//! accepted block comes out as one well-formed message (frames ≤ 16384 on the
//! same stream, END_HEADERS on the last, END_STREAM kept) that a fresh
//! decoder (empty dynamic table) decodes, and rewriting it again is a no-op.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rotor_h2check::h2::frame::{flag, kind, FrameHeader, HEADER_LEN, MAX_FRAME};
use rotor_h2check::h2::header_block::ClientHeaders;
use rotor_h2check::h2::message::{Expect, Message, MessageReader};

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// One message from the input: (control byte, length, block bytes).
fn build(ctl: u8, block: &[u8]) -> Vec<u8> {
    let stream = 1 + 2 * (ctl as u32 & 0x7);
    if ctl & 0x80 != 0 {
        return block.to_vec(); // raw bytes as the message
    }
    let pieces = 1 + (ctl >> 3 & 0x3) as usize;
    let size = block.len().div_ceil(pieces).max(1);
    let mut out = Vec::new();
    let chunks: Vec<&[u8]> = if block.is_empty() { vec![&[][..]] } else { block.chunks(size).collect() };
    for (i, c) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let eh = if last { flag::END_HEADERS } else { 0 };
        if i == 0 {
            let mut flags = eh | if ctl & 0x20 != 0 { flag::END_STREAM } else { 0 };
            let mut payload = Vec::new();
            if ctl & 0x40 != 0 {
                flags |= flag::PADDED;
                payload.push(3);
            }
            if ctl & 0x10 != 0 {
                flags |= 0x20; // PRIORITY
                payload.extend_from_slice(&[0, 0, 0, 0, 16]);
            }
            payload.extend_from_slice(c);
            if ctl & 0x40 != 0 {
                payload.extend_from_slice(&[0, 0, 0]);
            }
            frame(&mut out, kind::HEADERS, flags, stream, &payload);
        } else {
            frame(&mut out, kind::CONTINUATION, eh, stream, c);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut client = ClientHeaders::default();
    let mut rest = data;
    while rest.len() >= 3 {
        let ctl = rest[0];
        let len = u16::from_be_bytes([rest[1], rest[2]]) as usize;
        let body = &rest[3..];
        let block = &body[..len.min(body.len())];
        rest = &body[block.len()..];
        let message = build(ctl, block);
        let Ok(out) = client.rewrite(&message) else { continue };

        let first = FrameHeader::parse(&message).expect("accepted message has a header");
        let mut reader = MessageReader::new(Expect::Frames);
        reader.push(&out);
        let m = reader.next_message().expect("rewritten block is well-formed").expect("one whole message");
        let Message::Frame { header, bytes } = m else { panic!("not a frame") };
        assert_eq!(bytes.len(), out.len(), "rewritten output is more than one message");
        assert_eq!(header.kind, kind::HEADERS);
        assert_eq!(header.stream, first.stream, "stream id changed");
        assert_eq!(header.flags & flag::END_STREAM, first.flags & flag::END_STREAM, "END_STREAM changed");
        let mut off = 0;
        let mut fragment = Vec::new();
        while off < out.len() {
            let h = FrameHeader::parse(&out[off..]).expect("frame");
            assert!(h.len as usize <= MAX_FRAME);
            let mut p = &out[off + HEADER_LEN..off + HEADER_LEN + h.len as usize];
            if off == 0 && h.flags & 0x20 != 0 {
                p = &p[5..];
            }
            fragment.extend_from_slice(p);
            off += HEADER_LEN + h.len as usize;
        }
        hpack::Decoder::new().decode(&fragment).expect("rewritten block needs no dynamic table");
        let again = ClientHeaders::default().rewrite(&out).expect("rewritten block rewrites");
        assert_eq!(again, out, "rewriting a literal-only block changes it");
    }
});
