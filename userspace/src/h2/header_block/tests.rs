use super::*;
use crate::h2::hpack::tests::encoder::{self, Kind};
use crate::h2::message::{Expect, Message, MessageReader};

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

/// The message's fields, decoded on their own (no table): what an endpoint sees.
fn decode(message: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (_, fragment) = split_message(message).unwrap();
    match Decoder::new(0).decode(&fragment, usize::MAX / 2).unwrap() {
        Decoded::Fields(l) => l.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect(),
        other => panic!("{other:?}"),
    }
}

/// One message as the kernel's parser (and the agent's reader) cuts it.
fn one_message(out: &[u8]) {
    let mut reader = MessageReader::new(Expect::Frames);
    reader.push(out);
    match reader.next_message() {
        Ok(Some(Message::Frame { bytes, .. })) => assert_eq!(bytes.len(), out.len()),
        other => panic!("not one message: {other:?}"),
    }
}

const GET: u8 = flag::END_HEADERS | flag::END_STREAM;

#[test]
fn blocks_that_share_the_dynamic_table_decode_on_their_own() {
    let mut b = vec![0x82];
    encoder::literal(
        &mut b,
        Kind::Incremental,
        Err(b"x-custom"),
        b"repeated-value",
        (true, false),
    );
    let first = headers_message(1, GET, &b);
    let second = headers_message(3, GET, &[0x82, 0xbe]);
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
    let big = vec![b'v'; 40_000];
    let mut block = Vec::new();
    encoder::literal(
        &mut block,
        Kind::Incremental,
        Err(b"big"),
        &big,
        (false, true),
    );
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
    one_message(&out);
    assert_eq!(decode(&out), vec![(b"big".to_vec(), big)]);
    assert_eq!(
        &out[HEADER_LEN..HEADER_LEN + 5],
        &[0, 0, 0, 0, 15],
        "priority kept"
    );
}

#[test]
fn undecodable_blocks_are_compression_errors() {
    // [0x3f] panicked the hpack crate (an integer that never ends)
    for block in [&[0x3f][..], &[0xff, 0xff, 0xff], &[0x82, 0xbf, 0x84]] {
        let e = ClientHeaders::default()
            .rewrite(&headers_message(1, flag::END_HEADERS, block))
            .unwrap_err();
        assert_eq!(
            e.connection_error(),
            Some(error_code::COMPRESSION_ERROR),
            "{block:02x?}: {e}"
        );
    }
}

#[test]
fn malformed_frames_name_their_error() {
    let frame_size = Some(error_code::FRAME_SIZE_ERROR);
    // PRIORITY flag, 1 byte of payload
    let e = split_message(&headers_message(
        1,
        PRIORITY_FLAG | flag::END_HEADERS,
        &[0x82],
    ))
    .unwrap_err();
    assert_eq!(e.connection_error(), frame_size);
    // PADDED with no pad length byte
    let e = split_message(&headers_message(1, flag::PADDED | flag::END_HEADERS, &[])).unwrap_err();
    assert_eq!(e.connection_error(), frame_size);
    // 5 bytes of padding in a 2-byte payload
    let e = split_message(&headers_message(
        1,
        flag::PADDED | flag::END_HEADERS,
        &[5, 0x82],
    ))
    .unwrap_err();
    assert_eq!(e.connection_error(), Some(error_code::PROTOCOL_ERROR));
    // a frame header that claims more than there is
    let e = split_message(&[0, 0, 5, 1, 0, 0, 0, 0, 1]).unwrap_err();
    assert_eq!(e.connection_error(), frame_size);
}

/// The reported case: 16,000 references to `accept-encoding: gzip, deflate`
/// (static 16) are 960 KB of header list, ~500 KB as literals; the block is
/// refused and nothing that size is built.
#[test]
fn sixteen_thousand_static_references_are_too_large() {
    let mut block = vec![0x82, 0x86, 0x84, 0x41, 0x01, b'x'];
    block.extend(std::iter::repeat_n(0x90, 16_000));
    let e = ClientHeaders::default()
        .rewrite(&headers_message(1, GET, &block))
        .unwrap_err();
    assert_eq!(e.connection_error(), None);
    assert!(
        matches!(e, HeaderBlockError::TooLarge { size } if size > 16_000 * 60),
        "{e}"
    );
}

/// An HPACK bomb: the table keeps its entry and later blocks still rewrite.
#[test]
fn a_bomb_is_refused_and_the_client_table_carries_on() {
    let mut client = ClientHeaders::default();
    let value = vec![b'b'; 4096 - 32 - 6];
    let mut b = vec![0x82, 0x84];
    encoder::literal(
        &mut b,
        Kind::Incremental,
        Err(b"x-bomb"),
        &value,
        (false, false),
    );
    client.rewrite(&headers_message(1, GET, &b)).unwrap();
    let mut bomb = vec![0x82, 0x84];
    bomb.extend(std::iter::repeat_n(0xbe, 16_000));
    for stream in (3..83).step_by(2) {
        let e = client
            .rewrite(&headers_message(stream, GET, &bomb))
            .unwrap_err();
        assert_eq!(
            e,
            HeaderBlockError::TooLarge {
                size: 42 + 38 + 16_000 * 4096
            }
        );
    }
    let out = client
        .rewrite(&headers_message(83, GET, &[0x82, 0x84, 0xbe]))
        .unwrap();
    assert_eq!(decode(&out)[2], (b"x-bomb".to_vec(), value));
}

/// Lists right at the limit, in shapes whose literal overhead is largest
/// (many empty fields; lengths whose prefixes take 2 and 4 bytes) and
/// smallest (one field), with the priority flag: each re-encodes into one message
/// the kernel's parser accepts. One byte more is refused.
#[test]
fn every_list_at_the_limit_fits_one_kernel_message() {
    let limit = MAX_HEADER_LIST_SIZE as usize;
    let shapes: Vec<Vec<(usize, usize)>> = vec![
        vec![(1, limit - 32 - 1)],
        vec![(limit - 32 - 1, 1)],
        vec![(0, 0); limit / 32],
        vec![(127, 127); limit / (127 + 127 + 32)],
        vec![(16_511, 16_511), (limit - 2 * 16_511 - 64, 0)],
    ];
    for (k, shape) in shapes.iter().enumerate() {
        let mut block = Vec::new();
        let mut size = 0;
        for (i, &(n, v)) in shape.iter().enumerate() {
            let name = vec![b'a' + (i % 26) as u8; n];
            encoder::literal(
                &mut block,
                Kind::Without,
                Err(&name),
                &vec![b'v'; v],
                (true, true),
            );
            size += n + v + 32;
        }
        // up to the limit with one more field, when 33 bytes or more are left
        let rest = limit - size;
        if rest >= 33 {
            encoder::literal(
                &mut block,
                Kind::Without,
                Err(b"f"),
                &vec![b'z'; rest - 33],
                (true, true),
            );
            size += rest;
        }
        // as HEADERS + CONTINUATIONs with the priority flag
        let mut m = BytesMut::new();
        let mut chunks = block.chunks(MAX_FRAME - 5).peekable();
        let first = chunks.next().unwrap_or(&[]);
        let mut p = vec![0, 0, 0, 0, 7];
        p.extend_from_slice(first);
        let eh = if chunks.peek().is_none() {
            flag::END_HEADERS
        } else {
            0
        };
        m.put_slice(&headers_message(1, PRIORITY_FLAG | eh, &p));
        while let Some(c) = chunks.next() {
            let eh = if chunks.peek().is_none() {
                flag::END_HEADERS
            } else {
                0
            };
            FrameHeader {
                len: c.len() as u32,
                kind: kind::CONTINUATION,
                flags: eh,
                stream: 1,
            }
            .encode(&mut m);
            m.put_slice(c);
        }
        let out = ClientHeaders::default()
            .rewrite(&m)
            .unwrap_or_else(|e| panic!("shape {k} ({size} bytes): {e}"));
        assert!(size <= limit && limit - size < 33, "shape {k}: {size}");
        assert!(out.len() <= MAX_BLOCK, "shape {k}: {} bytes", out.len());
        one_message(&out);
    }
    // one byte over
    let mut block = Vec::new();
    encoder::literal(
        &mut block,
        Kind::Without,
        Err(b"a"),
        &vec![b'v'; limit - 32],
        (true, true),
    );
    let e = ClientHeaders::default()
        .rewrite(&headers_message(1, GET, &block))
        .unwrap_err();
    assert_eq!(
        e,
        HeaderBlockError::TooLarge {
            size: limit as u64 + 1
        }
    );
}

#[test]
fn the_431_response_stands_on_its_own() {
    let mut out = BytesMut::new();
    header_list_too_large(&mut out, 7, false);
    let h = FrameHeader::parse(&out).unwrap();
    assert_eq!((h.kind, h.flags, h.stream), (kind::HEADERS, GET, 7));
    assert_eq!(decode(&out), vec![(b":status".to_vec(), b"431".to_vec())]);
    assert_eq!(out.len(), HEADER_LEN + h.len as usize, "nothing after it");
    let mut out = BytesMut::new();
    header_list_too_large(&mut out, 7, true);
    let rst = &out[HEADER_LEN + h.len as usize..];
    assert_eq!(
        FrameHeader::parse(rst),
        Some(FrameHeader {
            len: 4,
            kind: kind::RST_STREAM,
            flags: 0,
            stream: 7
        })
    );
    assert_eq!(&rst[HEADER_LEN..], &error_code::NO_ERROR.to_be_bytes());
}
