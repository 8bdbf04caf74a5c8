//! Frame and HPACK encoders of our own: this sender must not share the code
//! it tests.

use super::*;

pub(super) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = Vec::with_capacity(9 + len);
    f.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A frame header claiming `len` bytes, followed by `send` bytes of payload.
pub(super) fn frame_claiming(kind: u8, flags: u8, stream: u32, len: usize, send: usize) -> Vec<u8> {
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend(std::iter::repeat_n(0u8, send));
    f
}

pub(super) fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in values {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(kind::SETTINGS, 0, 0, &p)
}

pub(super) fn u32be(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

pub(super) fn hpack_int(out: &mut Vec<u8>, mut n: usize, prefix: u8, first: u8) {
    let max = (1usize << prefix) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// Literal header fields without indexing (no dynamic table, no Huffman).
pub(super) fn hpack_block(fields: &[(&str, String)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in fields {
        b.push(0);
        hpack_int(&mut b, n.len(), 7, 0);
        b.extend_from_slice(n.as_bytes());
        hpack_int(&mut b, v.len(), 7, 0);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

pub(super) fn request_fields(method: &str, path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", method.to_string()),
        (":scheme", "http".to_string()),
        (":path", path.to_string()),
        (":authority", "10.96.0.10:8080".to_string()),
    ]
}

/// A GET (END_STREAM) or the HEADERS of a POST, as HEADERS + CONTINUATIONs as needed.
pub(super) fn request(stream: u32, path: &str, end_stream: bool) -> Vec<u8> {
    let method = if end_stream { "GET" } else { "POST" };
    headers_frames(
        stream,
        &hpack_block(&request_fields(method, path)),
        end_stream,
    )
}

pub(super) fn headers_frames(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunks = block.chunks(MAX_FRAME).peekable();
    let first = chunks.next().unwrap_or(&[]);
    let es = if end_stream { END_STREAM } else { 0 };
    let eh = if chunks.peek().is_none() {
        END_HEADERS
    } else {
        0
    };
    out.extend(frame(kind::HEADERS, es | eh, stream, first));
    while let Some(c) = chunks.next() {
        let eh = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        out.extend(frame(kind::CONTINUATION, eh, stream, c));
    }
    out
}
