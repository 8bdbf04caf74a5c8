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

use super::frame::{error_code, flag, kind, FrameHeader, HEADER_LEN, MAX_FRAME};
use super::hpack::{DecodeError, Decoded, Decoder, HeaderList};
use super::message::MAX_BLOCK;

const PRIORITY_FLAG: u8 = 0x20;

/// SETTINGS_MAX_HEADER_LIST_SIZE we advertise to clients (RFC 9113
/// §6.5.2), and the largest list the agent re-encodes. Every re-encoded
/// block must fit one message of the kernel's parser (ROTOR_MAX_BLOCK,
/// 64 KiB with frame headers) on the injector: a larger one put the
/// injector's parser into raw mode and every agent frame of every
/// connection after it was dropped. A literal costs a field at most 9
/// bytes besides its name and value (a zero byte and two length prefixes
/// of at most 4 bytes each for strings under 2 MiB) against the 32 the
/// list size counts, so a list of 60 KiB re-encodes to less than 60 KiB of
/// block, plus at most 5 + 4 × 9 bytes of priority and frame headers:
/// 61,481 bytes at most, under the 65,536 (and the 16 CONTINUATIONs,
/// `message::MAX_CONTINUATIONS`) the kernel takes. 60 KiB is also Envoy's
/// default.
pub const MAX_HEADER_LIST_SIZE: u32 = 60 * 1024;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum HeaderBlockError {
    /// Padding or priority fields that do not fit the frame: `code` is the
    /// RFC 9113 connection error (FRAME_SIZE_ERROR or PROTOCOL_ERROR).
    #[error("malformed HEADERS frame")]
    Malformed { code: u32 },
    /// A connection error COMPRESSION_ERROR (RFC 9113 §4.3).
    #[error("header block does not decode (HPACK): {0}")]
    Decode(#[from] DecodeError),
    /// The list (or its re-encoding) is over what we carry: the stream is
    /// refused, the connection and the client's table carry on.
    #[error("header list of {size} bytes over the {MAX_HEADER_LIST_SIZE} we carry")]
    TooLarge { size: u64 },
}

impl HeaderBlockError {
    /// The RFC 9113 error code of a connection error; None for a stream's.
    pub fn connection_error(&self) -> Option<u32> {
        match self {
            HeaderBlockError::Malformed { code } => Some(*code),
            HeaderBlockError::Decode(_) => Some(error_code::COMPRESSION_ERROR),
            HeaderBlockError::TooLarge { .. } => None,
        }
    }
}

/// The client's HPACK state, as seen by the agent.
#[derive(Default)]
pub struct ClientHeaders {
    decoder: Decoder,
}

impl ClientHeaders {
    /// Rewrites a header block message (HEADERS + CONTINUATION frames, as
    /// the kernel delimits it) so that it uses no dynamic-table entry. The
    /// result is one message the kernel's parser accepts (checked).
    pub fn rewrite(&mut self, message: &[u8]) -> Result<Bytes, HeaderBlockError> {
        let first = FrameHeader::parse(message).ok_or(HeaderBlockError::Malformed {
            code: error_code::FRAME_SIZE_ERROR,
        })?;
        let (priority, fragment) = split_message(message)?;
        let fields = match self
            .decoder
            .decode(&fragment, MAX_HEADER_LIST_SIZE as usize)?
        {
            Decoded::Fields(fields) => fields,
            Decoded::OverLimit { size } => return Err(HeaderBlockError::TooLarge { size }),
        };
        let block = encode_literals(&fields);
        let out = frame_block(
            first.stream,
            first.flags & flag::END_STREAM,
            priority,
            &block,
        );
        if out.len() > MAX_BLOCK {
            return Err(HeaderBlockError::TooLarge {
                size: fields.size() as u64,
            });
        }
        Ok(out)
    }

    /// Decodes a header block message (as [`ClientHeaders::rewrite`] takes
    /// one) into the table and nothing else: whether it decodes.
    pub fn check(&mut self, message: &[u8]) -> Result<(), HeaderBlockError> {
        let (_, fragment) = split_message(message)?;
        match self
            .decoder
            .decode(&fragment, MAX_HEADER_LIST_SIZE as usize)?
        {
            Decoded::Fields(_) => Ok(()),
            Decoded::OverLimit { size } => Err(HeaderBlockError::TooLarge { size }),
        }
    }
}

/// What a client gets for a request whose header list is over
/// [`MAX_HEADER_LIST_SIZE`], as Go's HTTP/2 server answers it: a complete
/// `431 Request Header Fields Too Large` response (RFC 9113 §10.5.1) and,
/// if the request is still open, RST_STREAM(NO_ERROR), which asks the
/// client to stop sending it without an error (§8.1). A stream ended on
/// both sides takes no RST_STREAM (§5.1). The block uses no table, so it
/// stands whatever the client's decoder holds.
pub fn header_list_too_large(out: &mut BytesMut, stream: u32, request_open: bool) {
    // literal without indexing, name :status (static 8), value "431"
    const STATUS_431: [u8; 5] = [0x08, 0x03, b'4', b'3', b'1'];
    FrameHeader {
        len: STATUS_431.len() as u32,
        kind: kind::HEADERS,
        flags: flag::END_HEADERS | flag::END_STREAM,
        stream,
    }
    .encode(out);
    out.put_slice(&STATUS_431);
    if request_open {
        super::frame::rst_stream(out, stream, error_code::NO_ERROR);
    }
}

/// The priority fields (if any) and the concatenated header block fragment.
fn split_message(message: &[u8]) -> Result<(Option<[u8; 5]>, Vec<u8>), HeaderBlockError> {
    // too short for its padding length or priority fields (RFC 9113 §4.2)
    let short = || HeaderBlockError::Malformed {
        code: error_code::FRAME_SIZE_ERROR,
    };
    // padding longer than what is left of the payload (§6.2)
    let padding = || HeaderBlockError::Malformed {
        code: error_code::PROTOCOL_ERROR,
    };
    let mut rest = message;
    let mut fragment = Vec::with_capacity(message.len());
    let mut priority = None;
    let mut first = true;
    while let Some(h) = FrameHeader::parse(rest) {
        let end = HEADER_LEN + h.len as usize;
        let mut payload = rest.get(HEADER_LEN..end).ok_or_else(short)?;
        if first {
            let pad = if h.has(flag::PADDED) {
                let (&n, tail) = payload.split_first().ok_or_else(short)?;
                payload = tail;
                n as usize
            } else {
                0
            };
            if h.flags & PRIORITY_FLAG != 0 {
                let p: [u8; 5] = payload
                    .get(..5)
                    .and_then(|p| p.try_into().ok())
                    .ok_or_else(short)?;
                priority = Some(p);
                payload = &payload[5..];
            }
            let keep = payload.len().checked_sub(pad).ok_or_else(padding)?;
            payload = &payload[..keep];
            first = false;
        }
        fragment.extend_from_slice(payload);
        rest = &rest[end..];
    }
    if first || !rest.is_empty() {
        return Err(short());
    }
    Ok((priority, fragment))
}

/// The list as literals without indexing (RFC 7541 §6.2.2), new names, no Huffman.
fn encode_literals(fields: &HeaderList) -> BytesMut {
    let mut block = BytesMut::with_capacity(fields.size());
    for (name, value) in fields.iter() {
        encode_literal(&mut block, name, value);
    }
    block
}

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
mod tests;
