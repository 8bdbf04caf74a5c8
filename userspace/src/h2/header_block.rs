//! Header blocks the agent re-encodes without the dynamic table.
//!
//! A client may send requests before it has applied our
//! HEADER_TABLE_SIZE=0 (RFC 7541 §4.2: only after its SETTINGS ACK), so
//! those header blocks can refer to each other's dynamic-table entries.
//! The agent carries every such block (the fast path opens after the ACK),
//! decodes it with the client's table and re-encodes it with literals only,
//! so each request can go to any endpoint from the first one on.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::frame::{flag, kind, FrameHeader, HEADER_LEN, MAX_FRAME};

const PRIORITY_FLAG: u8 = 0x20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeaderBlockError {
    #[error("malformed HEADERS frame")]
    Malformed,
    #[error("header block does not decode (HPACK): {0}")]
    Decode(String),
}

/// The client's HPACK state, as seen by the agent.
pub struct ClientHeaders {
    decoder: hpack::Decoder<'static>,
}

impl Default for ClientHeaders {
    fn default() -> Self {
        ClientHeaders {
            decoder: hpack::Decoder::new(),
        }
    }
}

impl ClientHeaders {
    /// Rewrites a header block message (HEADERS + CONTINUATION frames, as
    /// the kernel delimits it) so that it uses no dynamic-table entry.
    pub fn rewrite(&mut self, message: &[u8]) -> Result<Bytes, HeaderBlockError> {
        let first = FrameHeader::parse(message).ok_or(HeaderBlockError::Malformed)?;
        let (priority, fragment) = split_message(message)?;
        // The hpack crate panics on some malformed input (an index past its
        // tables): that is a decoding error like any other here.
        let decoder = &mut self.decoder;
        let fields =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decoder.decode(&fragment)))
                .map_err(|_| HeaderBlockError::Decode("malformed block".into()))?
                .map_err(|e| HeaderBlockError::Decode(format!("{e:?}")))?;
        let mut block = BytesMut::new();
        for (name, value) in &fields {
            encode_literal(&mut block, name, value);
        }
        Ok(frame_block(
            first.stream,
            first.flags & flag::END_STREAM,
            priority,
            &block,
        ))
    }
}

/// The priority fields (if any) and the concatenated header block fragment.
fn split_message(message: &[u8]) -> Result<(Option<[u8; 5]>, Vec<u8>), HeaderBlockError> {
    let mut rest = message;
    let mut fragment = Vec::with_capacity(message.len());
    let mut priority = None;
    let mut first = true;
    while let Some(h) = FrameHeader::parse(rest) {
        let end = HEADER_LEN + h.len as usize;
        let mut payload = rest
            .get(HEADER_LEN..end)
            .ok_or(HeaderBlockError::Malformed)?;
        if first {
            let pad = if h.has(flag::PADDED) {
                let (&n, tail) = payload.split_first().ok_or(HeaderBlockError::Malformed)?;
                payload = tail;
                n as usize
            } else {
                0
            };
            if h.flags & PRIORITY_FLAG != 0 {
                let p: [u8; 5] = payload
                    .get(..5)
                    .and_then(|p| p.try_into().ok())
                    .ok_or(HeaderBlockError::Malformed)?;
                priority = Some(p);
                payload = &payload[5..];
            }
            payload = payload
                .get(
                    ..payload
                        .len()
                        .checked_sub(pad)
                        .ok_or(HeaderBlockError::Malformed)?,
                )
                .ok_or(HeaderBlockError::Malformed)?;
            first = false;
        }
        fragment.extend_from_slice(payload);
        rest = &rest[end..];
    }
    if first || !rest.is_empty() {
        return Err(HeaderBlockError::Malformed);
    }
    Ok((priority, fragment))
}

/// RFC 7541 §6.2.2: literal header field without indexing, new name, no Huffman.
fn encode_literal(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_u8(0);
    encode_string(out, name);
    encode_string(out, value);
}

fn encode_string(out: &mut BytesMut, s: &[u8]) {
    encode_int(out, s.len(), 7, 0);
    out.put_slice(s);
}

/// RFC 7541 §5.1 integer with an N-bit prefix.
fn encode_int(out: &mut BytesMut, mut n: usize, prefix: u8, first_bits: u8) {
    let max = (1usize << prefix) - 1;
    if n < max {
        out.put_u8(first_bits | n as u8);
        return;
    }
    out.put_u8(first_bits | max as u8);
    n -= max;
    while n >= 128 {
        out.put_u8((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.put_u8(n as u8);
}

fn frame_block(stream: u32, end_stream: u8, priority: Option<[u8; 5]>, block: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(block.len() + 32);
    let room = MAX_FRAME - if priority.is_some() { 5 } else { 0 };
    let (head, mut rest) = block.split_at(block.len().min(room));
    let mut flags = end_stream
        | if rest.is_empty() {
            flag::END_HEADERS
        } else {
            0
        };
    if priority.is_some() {
        flags |= PRIORITY_FLAG;
    }
    let len = head.len() + if priority.is_some() { 5 } else { 0 };
    FrameHeader {
        len: len as u32,
        kind: kind::HEADERS,
        flags,
        stream,
    }
    .encode(&mut out);
    if let Some(p) = priority {
        out.put_slice(&p);
    }
    out.put_slice(head);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        let flags = if tail.is_empty() {
            flag::END_HEADERS
        } else {
            0
        };
        FrameHeader {
            len: chunk.len() as u32,
            kind: kind::CONTINUATION,
            flags,
            stream,
        }
        .encode(&mut out);
        out.put_slice(chunk);
        rest = tail;
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_message(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        FrameHeader {
            len: block.len() as u32,
            kind: kind::HEADERS,
            flags,
            stream,
        }
        .encode(&mut b);
        b.put_slice(block);
        b.to_vec()
    }

    fn decode(message: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let (_, fragment) = split_message(message).unwrap();
        hpack::Decoder::new().decode(&fragment).unwrap()
    }

    #[test]
    fn blocks_that_share_the_dynamic_table_decode_on_their_own() {
        let mut enc = hpack::Encoder::new();
        let fields: Vec<(&[u8], &[u8])> =
            vec![(b":method", b"GET"), (b"x-custom", b"repeated-value")];
        let first = headers_message(
            1,
            flag::END_HEADERS | flag::END_STREAM,
            &enc.encode(fields.clone()),
        );
        let second = headers_message(
            3,
            flag::END_HEADERS | flag::END_STREAM,
            &enc.encode(fields.clone()),
        );
        // the second block alone refers to an entry the first one inserted
        assert!(hpack::Decoder::new().decode(&second[9..]).is_err());
        let mut client = ClientHeaders::default();
        let _ = client.rewrite(&first).unwrap();
        let rewritten = client.rewrite(&second).unwrap();
        let h = FrameHeader::parse(&rewritten).unwrap();
        assert_eq!(
            (h.stream, h.flags & flag::END_STREAM),
            (3, flag::END_STREAM)
        );
        let got = decode(&rewritten);
        assert_eq!(got[1], (b"x-custom".to_vec(), b"repeated-value".to_vec()));
    }

    #[test]
    fn padding_priority_and_continuation() {
        let mut enc = hpack::Encoder::new();
        let big = vec![b'v'; 40_000];
        let block = enc.encode(vec![(&b"big"[..], &big[..])]);
        let (a, b) = block.split_at(100);
        let mut m = BytesMut::new();
        let mut payload = vec![3u8]; // pad length
        payload.extend_from_slice(&[0, 0, 0, 0, 15]); // priority
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0, 0]);
        FrameHeader {
            len: payload.len() as u32,
            kind: kind::HEADERS,
            flags: flag::PADDED | PRIORITY_FLAG,
            stream: 5,
        }
        .encode(&mut m);
        m.put_slice(&payload);
        FrameHeader {
            len: b.len() as u32,
            kind: kind::CONTINUATION,
            flags: flag::END_HEADERS,
            stream: 5,
        }
        .encode(&mut m);
        m.put_slice(b);
        let out = ClientHeaders::default().rewrite(&m).unwrap();
        let mut reader = crate::h2::message::MessageReader::new(crate::h2::message::Expect::Frames);
        reader.push(&out);
        assert!(
            matches!(reader.next_message(), Ok(Some(_))),
            "one well-formed message"
        );
        assert_eq!(decode(&out), vec![(b"big".to_vec(), big)]);
    }

    #[test]
    fn a_block_that_panics_the_decoder_is_an_error() {
        // found by the header_rewrite fuzz target (userspace/fuzz)
        let m = headers_message(1, flag::END_HEADERS, &[0x3f]);
        assert!(ClientHeaders::default().rewrite(&m).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        let m = headers_message(1, flag::END_HEADERS, &[0xff, 0xff, 0xff]);
        assert!(ClientHeaders::default().rewrite(&m).is_err());
        assert_eq!(
            split_message(&[0, 0, 5, 1, 0, 0, 0, 0, 1]),
            Err(HeaderBlockError::Malformed)
        );
    }
}
