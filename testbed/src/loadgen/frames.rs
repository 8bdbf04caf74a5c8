//! Minimal HTTP/2 framing (RFC 9113) and HPACK encoding (RFC 7541) for the
//! hand-written split-write client.

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_ACK: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

/// A parsed 9-byte frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(b: &[u8; 9]) -> FrameHeader {
        FrameHeader {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

/// One whole frame: header + payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = Vec::with_capacity(9 + len);
    f.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in values {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &p)
}

pub fn settings_ack() -> Vec<u8> {
    frame(SETTINGS, FLAG_ACK, 0, &[])
}

pub fn ping_ack(opaque: &[u8]) -> Vec<u8> {
    frame(PING, FLAG_ACK, 0, opaque)
}

pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(
        WINDOW_UPDATE,
        0,
        stream,
        &(increment & 0x7fff_ffff).to_be_bytes(),
    )
}

/// A GET request: HEADERS with END_STREAM | END_HEADERS, every field a
/// "literal without indexing, indexed name" (no dynamic-table state at all).
pub fn get_request(stream: u32, path: &str, authority: &str) -> Vec<u8> {
    let mut block = Vec::new();
    // Static table indices: 1 :authority, 2 :method, 4 :path, 6 :scheme.
    for (index, value) in [(2, "GET"), (6, "http"), (4, path), (1, authority)] {
        encode_int(&mut block, 0x00, 4, index);
        encode_int(&mut block, 0x00, 7, value.len()); // H bit 0: not Huffman-coded
        block.extend_from_slice(value.as_bytes());
    }
    frame(HEADERS, FLAG_END_STREAM | FLAG_END_HEADERS, stream, &block)
}

/// HPACK integer with an N-bit prefix (RFC 7541 §5.1); `first` holds the bits above the prefix.
pub fn encode_int(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// The payload of a DATA or HEADERS frame without padding (and priority fields).
pub fn strip_padding(kind: u8, flags: u8, payload: &[u8]) -> Result<&[u8], String> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & FLAG_PADDED != 0 {
        let (&n, rest) = p.split_first().ok_or("PADDED frame without pad length")?;
        pad = usize::from(n);
        p = rest;
    }
    if kind == HEADERS && flags & FLAG_PRIORITY != 0 {
        p = p.get(5..).ok_or("HEADERS too short for priority")?;
    }
    p.get(
        ..p.len()
            .checked_sub(pad)
            .ok_or("padding longer than payload")?,
    )
    .ok_or_else(|| "bad padding".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_decodes_with_hpack() {
        let f = get_request(1, "/whoami", "10.96.0.10:8080");
        let h = FrameHeader::parse(f[..9].try_into().unwrap());
        assert_eq!(
            h,
            FrameHeader {
                len: f.len() - 9,
                kind: HEADERS,
                flags: 5,
                stream: 1
            }
        );
        let fields = hpack::Decoder::new().decode(&f[9..]).unwrap();
        let fields: Vec<(String, String)> = fields
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(fields[0], (":method".into(), "GET".into()));
        assert_eq!(fields[1], (":scheme".into(), "http".into()));
        assert_eq!(fields[2], (":path".into(), "/whoami".into()));
        assert_eq!(fields[3], (":authority".into(), "10.96.0.10:8080".into()));
    }

    #[test]
    fn integers() {
        let mut v = Vec::new();
        encode_int(&mut v, 0, 5, 1337);
        assert_eq!(v, [31, 154, 10]);
    }

    #[test]
    fn padding() {
        assert_eq!(
            strip_padding(DATA, FLAG_PADDED, &[2, b'a', b'b', 0, 0]).unwrap(),
            b"ab"
        );
        assert!(strip_padding(DATA, FLAG_PADDED, &[5, b'a']).is_err());
    }
}
