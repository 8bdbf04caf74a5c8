//! HTTP/2 frame headers and the few frames the agent writes itself (RFC 9113 §4, §6).

use bytes::{BufMut, BytesMut};

use crate::ebpf::abi;

pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADER_LEN: usize = 9;
/// We never raise SETTINGS_MAX_FRAME_SIZE, so no peer may send more (the
/// kernel's parser holds every peer to it: rotor.h).
pub const MAX_FRAME: usize = abi::ROTOR_MAX_FRAME as usize;

pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
    /// The agent's private frame on its injector socket (see ebpf/injector_skb.c).
    pub const ROTOR_ROUTE: u8 = {
        let t = super::abi::ROTOR_ROUTE;
        assert!(t <= 0xff, "a frame type is one byte");
        t as u8
    };
}

pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
}

pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

pub mod error_code {
    pub const NO_ERROR: u32 = 0x0;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const INTERNAL_ERROR: u32 = 0x2;
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    pub const STREAM_CLOSED: u32 = 0x5;
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;
    pub const COMPRESSION_ERROR: u32 = 0x9;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// The HTTP/2 default for every window (RFC 9113 §6.9.2).
pub const DEFAULT_WINDOW: u32 = 65_535;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(b: &[u8]) -> Option<FrameHeader> {
        let b: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        Some(FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_slice(&self.len.to_be_bytes()[1..]);
        out.put_u8(self.kind);
        out.put_u8(self.flags);
        out.put_u32(self.stream & 0x7fff_ffff);
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

fn frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    FrameHeader {
        len: payload.len() as u32,
        kind,
        flags,
        stream,
    }
    .encode(out);
    out.put_slice(payload);
}

pub fn settings(out: &mut BytesMut, values: &[(u16, u32)]) {
    let mut p = BytesMut::with_capacity(values.len() * 6);
    for (id, v) in values {
        p.put_u16(*id);
        p.put_u32(*v);
    }
    frame(out, kind::SETTINGS, 0, 0, &p);
}

pub fn settings_ack(out: &mut BytesMut) {
    frame(out, kind::SETTINGS, flag::ACK, 0, &[]);
}

pub fn ping(out: &mut BytesMut, opaque: [u8; 8]) {
    frame(out, kind::PING, 0, 0, &opaque);
}

pub fn ping_ack(out: &mut BytesMut, opaque: &[u8]) {
    frame(out, kind::PING, flag::ACK, 0, opaque);
}

pub fn window_update(out: &mut BytesMut, stream: u32, increment: u32) {
    frame(
        out,
        kind::WINDOW_UPDATE,
        0,
        stream,
        &(increment & 0x7fff_ffff).to_be_bytes(),
    );
}

pub fn rst_stream(out: &mut BytesMut, stream: u32, code: u32) {
    frame(out, kind::RST_STREAM, 0, stream, &code.to_be_bytes());
}

/// A response of the agent's own that ends its stream: HEADERS with
/// `:status` alone and END_STREAM. The field is a literal naming `:status`
/// by its static-table index, not indexed (RFC 7541 §6.2.2), so it decodes
/// the same whatever dynamic table the client's decoder holds. A gRPC
/// client reads a 502 as UNAVAILABLE (gRPC's HTTP-to-status mapping).
pub fn status_response(out: &mut BytesMut, stream: u32, status: u16) {
    const STATUS_NAME: u8 = 8; // static table: `:status: 200`
    let digits = status.clamp(100, 999).to_string();
    let mut block = vec![STATUS_NAME, digits.len() as u8];
    block.extend_from_slice(digits.as_bytes());
    frame(
        out,
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        stream,
        &block,
    );
}

pub fn goaway(out: &mut BytesMut, last_stream: u32, code: u32) {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    p[4..].copy_from_slice(&code.to_be_bytes());
    frame(out, kind::GOAWAY, 0, 0, &p);
}

/// What to do with a frame on a stream that breaks RFC 9113.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCheck {
    ConnectionError(u32),
    /// Unknown frame types are ignored (§4.1, §5.5).
    Ignore,
}

/// Checks a frame on stream 0 from a client: None if it is acceptable.
pub fn connection_frame_error(h: &FrameHeader) -> Option<u32> {
    match h.kind {
        kind::SETTINGS if h.has(flag::ACK) && h.len != 0 => Some(error_code::FRAME_SIZE_ERROR),
        kind::SETTINGS if !h.len.is_multiple_of(6) => Some(error_code::FRAME_SIZE_ERROR),
        kind::PING if h.len != 8 => Some(error_code::FRAME_SIZE_ERROR),
        kind::WINDOW_UPDATE if h.len != 4 => Some(error_code::FRAME_SIZE_ERROR),
        kind::GOAWAY if h.len < 8 => Some(error_code::FRAME_SIZE_ERROR),
        kind::DATA
        | kind::HEADERS
        | kind::PRIORITY
        | kind::RST_STREAM
        | kind::CONTINUATION
        | kind::PUSH_PROMISE => Some(error_code::PROTOCOL_ERROR),
        _ => None,
    }
}

/// Checks a frame a client sent on a stream (id != 0).
pub fn stream_frame_error(h: &FrameHeader) -> Option<FrameCheck> {
    let conn = |code| Some(FrameCheck::ConnectionError(code));
    match h.kind {
        kind::SETTINGS | kind::PING | kind::GOAWAY | kind::PUSH_PROMISE | kind::CONTINUATION => {
            conn(error_code::PROTOCOL_ERROR)
        }
        kind::RST_STREAM | kind::WINDOW_UPDATE if h.len != 4 => conn(error_code::FRAME_SIZE_ERROR),
        kind::PRIORITY if h.len != 5 => conn(error_code::FRAME_SIZE_ERROR),
        kind::DATA | kind::HEADERS | kind::RST_STREAM | kind::WINDOW_UPDATE | kind::PRIORITY => {
            None
        }
        _ => Some(FrameCheck::Ignore),
    }
}

/// The settings of a SETTINGS payload, or None if its length is not a multiple of 6.
pub fn parse_settings(payload: &[u8]) -> Option<Vec<(u16, u32)>> {
    if !payload.len().is_multiple_of(6) {
        return None;
    }
    Some(
        payload
            .chunks_exact(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect(),
    )
}

/// The last value of one setting in a SETTINGS payload, if present (a
/// setting may repeat: the last one counts, RFC 9113 §6.5).
pub fn setting_in(payload: &[u8], setting: u16) -> Option<u32> {
    parse_settings(payload)?
        .into_iter()
        .rev()
        .find(|(id, _)| *id == setting)
        .map(|(_, v)| v)
}

/// The error a SETTINGS value breaks RFC 9113 §6.5.2 with, if any.
pub fn settings_value_error(values: &[(u16, u32)]) -> Option<u32> {
    values.iter().find_map(|(id, v)| match *id {
        setting::ENABLE_PUSH if *v > 1 => Some(error_code::PROTOCOL_ERROR),
        setting::INITIAL_WINDOW_SIZE if *v > MAX_WINDOW => Some(error_code::FLOW_CONTROL_ERROR),
        setting::MAX_FRAME_SIZE if !(MAX_FRAME as u32..=0xff_ffff).contains(v) => {
            Some(error_code::PROTOCOL_ERROR)
        }
        _ => None,
    })
}

/// The largest flow-control window (RFC 9113 §6.9.1).
pub const MAX_WINDOW: u32 = 0x7fff_ffff;

/// The DATA payload length of one frame's bytes (0 for other frames): what
/// it takes of a flow-control window.
pub fn data_len(bytes: &[u8]) -> u64 {
    match FrameHeader::parse(bytes) {
        Some(h) if h.kind == kind::DATA => h.len as u64,
        _ => 0,
    }
}

/// The increment of a WINDOW_UPDATE payload.
pub fn parse_window_update(payload: &[u8]) -> Option<u32> {
    let b: [u8; 4] = payload.try_into().ok()?;
    Some(u32::from_be_bytes(b) & 0x7fff_ffff)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_last_of_a_repeated_setting_counts() {
        let mut out = bytes::BytesMut::new();
        super::settings(&mut out, &[(4, 10), (3, 100), (4, 20)]);
        let payload = &out[super::HEADER_LEN..];
        assert_eq!(super::setting_in(payload, 4), Some(20));
        assert_eq!(super::setting_in(payload, 3), Some(100));
        assert_eq!(super::setting_in(payload, 5), None);
        assert_eq!(super::setting_in(&payload[..5], 4), None);
    }

    #[test]
    fn only_data_frames_have_a_data_length() {
        let mut out = bytes::BytesMut::new();
        super::window_update(&mut out, 1, 5);
        assert_eq!(super::data_len(&out), 0);
        let mut data = bytes::BytesMut::new();
        super::FrameHeader {
            len: 3,
            kind: super::kind::DATA,
            flags: 0,
            stream: 1,
        }
        .encode(&mut data);
        data.extend_from_slice(b"abc");
        assert_eq!(super::data_len(&data), 3);
        assert_eq!(super::data_len(&data[..4]), 0, "not a whole header");
    }

    use super::*;

    #[test]
    fn header_round_trip() {
        let h = FrameHeader {
            len: 0x12345,
            kind: kind::HEADERS,
            flags: 0x25,
            stream: 0x7fff_fff1,
        };
        let mut b = BytesMut::new();
        h.encode(&mut b);
        assert_eq!(b.len(), HEADER_LEN);
        assert_eq!(FrameHeader::parse(&b), Some(h));
    }

    #[test]
    fn reserved_bit_is_ignored() {
        let b = [0, 0, 4, 8, 0, 0x80, 0, 0, 3];
        assert_eq!(FrameHeader::parse(&b).map(|h| h.stream), Some(3));
    }

    #[test]
    fn frames_breaking_the_rfc_are_named() {
        let h = |kind, flags, stream, len| FrameHeader {
            len,
            kind,
            flags,
            stream,
        };
        assert_eq!(
            connection_frame_error(&h(kind::PING, 0, 0, 7)),
            Some(error_code::FRAME_SIZE_ERROR)
        );
        assert_eq!(
            connection_frame_error(&h(kind::DATA, 0, 0, 1)),
            Some(error_code::PROTOCOL_ERROR)
        );
        assert_eq!(
            connection_frame_error(&h(kind::SETTINGS, flag::ACK, 0, 6)),
            Some(error_code::FRAME_SIZE_ERROR)
        );
        assert_eq!(connection_frame_error(&h(0xbb, 0, 0, 3)), None);
        assert_eq!(
            stream_frame_error(&h(kind::SETTINGS, 0, 1, 0)),
            Some(FrameCheck::ConnectionError(error_code::PROTOCOL_ERROR))
        );
        assert_eq!(
            stream_frame_error(&h(kind::WINDOW_UPDATE, 0, 1, 5)),
            Some(FrameCheck::ConnectionError(error_code::FRAME_SIZE_ERROR))
        );
        assert_eq!(
            stream_frame_error(&h(0xbb, 0, 1, 3)),
            Some(FrameCheck::Ignore)
        );
        assert_eq!(stream_frame_error(&h(kind::DATA, 0, 1, 3)), None);
    }

    #[test]
    fn settings_values_outside_the_rfc_are_named() {
        use setting::*;
        assert_eq!(
            settings_value_error(&[(ENABLE_PUSH, 2)]),
            Some(error_code::PROTOCOL_ERROR)
        );
        assert_eq!(
            settings_value_error(&[(INITIAL_WINDOW_SIZE, 0x8000_0000)]),
            Some(error_code::FLOW_CONTROL_ERROR)
        );
        assert_eq!(
            settings_value_error(&[(MAX_FRAME_SIZE, 100)]),
            Some(error_code::PROTOCOL_ERROR)
        );
        assert_eq!(
            settings_value_error(&[(MAX_FRAME_SIZE, 1 << 24)]),
            Some(error_code::PROTOCOL_ERROR)
        );
        let fine = [
            (ENABLE_PUSH, 1),
            (INITIAL_WINDOW_SIZE, MAX_WINDOW),
            (MAX_FRAME_SIZE, 16384),
            (0x99, 7),
        ];
        assert_eq!(settings_value_error(&fine), None);
    }

    #[test]
    fn status_response_decodes_to_its_status_alone() {
        let mut b = BytesMut::new();
        status_response(&mut b, 7, 502);
        let h = FrameHeader::parse(&b).unwrap();
        assert_eq!(
            (h.kind, h.stream, h.len as usize),
            (kind::HEADERS, 7, b.len() - 9)
        );
        assert!(h.has(flag::END_STREAM) && h.has(flag::END_HEADERS));
        // A decoder whose table is full of other fields reads it the same.
        let mut d = crate::h2::hpack::Decoder::new(4096);
        let indexed = [0x40, 1, b'x', 1, b'y'];
        assert!(d.decode(&indexed, 1 << 16).is_ok());
        match d.decode(&b[9..], 1 << 16) {
            Ok(crate::h2::hpack::Decoded::Fields(l)) => {
                let fields: Vec<_> = l.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
                assert_eq!(fields, vec![(b":status".to_vec(), b"502".to_vec())]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(d.table_len(), 1, "the response adds nothing to the table");
    }

    #[test]
    fn settings_parse() {
        let mut b = BytesMut::new();
        settings(
            &mut b,
            &[
                (setting::HEADER_TABLE_SIZE, 0),
                (setting::INITIAL_WINDOW_SIZE, 1 << 20),
            ],
        );
        let h = FrameHeader::parse(&b).unwrap();
        assert_eq!((h.kind, h.len), (kind::SETTINGS, 12));
        assert_eq!(
            parse_settings(&b[9..]),
            Some(vec![
                (setting::HEADER_TABLE_SIZE, 0),
                (setting::INITIAL_WINDOW_SIZE, 1 << 20)
            ])
        );
        assert_eq!(parse_settings(&b[9..14]), None);
    }
}
