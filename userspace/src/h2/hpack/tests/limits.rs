//! The bounds: header-list limit (and the table staying in step past it),
//! table size updates, and malformed representations.

use super::encoder::{indexed, literal, size_update, Kind};
use super::{decode_all, fields};
use crate::h2::hpack::{DecodeError, Decoded, Decoder, HuffmanError};

/// A 4 KB entry: with its 32 bytes of overhead it just fits a 4,096-byte table.
fn big_entry() -> (Vec<u8>, Vec<u8>) {
    (b"x-bomb".to_vec(), vec![b'b'; 4096 - 32 - 6])
}

#[test]
fn an_hpack_bomb_is_counted_not_materialised_and_the_table_stays_in_step() {
    let mut d = Decoder::default();
    let (name, value) = big_entry();
    let mut first = vec![0x82];
    literal(
        &mut first,
        Kind::Incremental,
        Err(&name),
        &value,
        (false, false),
    );
    assert_eq!(decode_all(&mut d, &first).len(), 2);
    assert_eq!(d.table_size(), 4096);
    // 16,000 one-byte references to it: 64 MB of header list from 16 KB
    let bomb = vec![0xbe; 16_000];
    let t = std::time::Instant::now();
    let got = d.decode(&bomb, 60 * 1024).unwrap();
    assert_eq!(
        got,
        Decoded::OverLimit {
            size: 16_000 * 4096
        }
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
    // the table is untouched and later blocks still refer to it
    assert_eq!(decode_all(&mut d, &[0xbe]), vec![(name, value)]);
}

#[test]
fn inserts_past_the_limit_still_reach_the_table() {
    let mut d = Decoder::default();
    let mut b = Vec::new();
    literal(
        &mut b,
        Kind::Without,
        Err(b"filler"),
        &[b'f'; 200],
        (false, false),
    );
    literal(
        &mut b,
        Kind::Incremental,
        Err(b"kept"),
        b"in-the-table",
        (true, true),
    );
    let got = d.decode(&b, 100).unwrap();
    assert_eq!(
        got,
        Decoded::OverLimit {
            size: (6 + 200 + 32) + (4 + 12 + 32)
        }
    );
    assert_eq!(
        decode_all(&mut d, &[0xbe]),
        fields(&[("kept", "in-the-table")])
    );
}

#[test]
fn the_limit_is_the_rfc_9113_size() {
    // :method GET = 7 + 3 + 32 = 42; :path / = 5 + 1 + 32 = 38
    let block = [0x82, 0x84];
    let mut d = Decoder::default();
    match d.decode(&block, 80).unwrap() {
        Decoded::Fields(l) => assert_eq!((l.len(), l.size()), (2, 80)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        d.decode(&block, 79).unwrap(),
        Decoded::OverLimit { size: 80 }
    );
    assert!(matches!(d.decode(&[], 0), Ok(Decoded::Fields(l)) if l.is_empty()));
}

#[test]
fn table_size_updates() {
    let mut d = Decoder::default();
    // above the 4,096 the peer may use
    let mut b = Vec::new();
    size_update(&mut b, 4097);
    assert_eq!(
        d.decode(&b, 1 << 20),
        Err(DecodeError::SizeUpdateTooLarge {
            size: 4097,
            max: 4096
        })
    );
    // after a field
    let mut d = Decoder::default();
    let mut b = vec![0x82];
    size_update(&mut b, 0);
    assert_eq!(d.decode(&b, 1 << 20), Err(DecodeError::LateSizeUpdate));
    // at the start, twice (RFC 7541 §4.2: the smallest, then the final size)
    let mut d = Decoder::default();
    let mut b = Vec::new();
    size_update(&mut b, 0);
    size_update(&mut b, 100);
    literal(&mut b, Kind::Incremental, Err(b"a"), b"b", (false, false));
    assert_eq!(decode_all(&mut d, &b), fields(&[("a", "b")]));
    assert_eq!(d.table_size(), 34);
    // an update that empties the table
    let mut b = Vec::new();
    size_update(&mut b, 0);
    b.push(0xbe);
    assert_eq!(d.decode(&b, 1 << 20), Err(DecodeError::BadIndex(62)));
}

#[test]
fn a_smaller_allowed_size_empties_the_table_and_wants_an_update() {
    let mut d = Decoder::default();
    let mut b = Vec::new();
    literal(&mut b, Kind::Incremental, Err(b"a"), b"b", (false, false));
    decode_all(&mut d, &b);
    // our HEADER_TABLE_SIZE=0 was acknowledged
    d.set_max_allowed(0);
    assert_eq!(d.table_size(), 0);
    assert_eq!(
        d.decode(&[0x82], 1 << 20),
        Err(DecodeError::SizeUpdateMissing { max: 0 })
    );
    let mut d = Decoder::default();
    d.set_max_allowed(0);
    assert_eq!(
        decode_all(&mut d, &[0x20, 0x82]),
        fields(&[(":method", "GET")])
    );
    // from now on nothing enters the table
    let mut b = Vec::new();
    literal(&mut b, Kind::Incremental, Err(b"a"), b"b", (false, false));
    b.push(0xbe);
    assert_eq!(d.decode(&b, 1 << 20), Err(DecodeError::BadIndex(62)));
    let mut b = Vec::new();
    size_update(&mut b, 1);
    assert_eq!(
        d.decode(&b, 1 << 20),
        Err(DecodeError::SizeUpdateTooLarge { size: 1, max: 0 })
    );
}

#[test]
fn malformed_representations() {
    let cases: Vec<(Vec<u8>, DecodeError)> = vec![
        (vec![0x80], DecodeError::ZeroIndex),
        (vec![0xbe], DecodeError::BadIndex(62)),
        (vec![0xff, 0x80, 0x01], DecodeError::BadIndex(127 + 128)),
        (vec![0x40 | 62], DecodeError::BadIndex(62)),
        // the block that panicked the hpack crate: an integer that never ends
        (vec![0x3f], DecodeError::Truncated),
        (vec![0x3f, 0xe1], DecodeError::Truncated),
        (
            vec![0x1f, 0xff, 0xff, 0xff, 0xff, 0x0f],
            DecodeError::IntegerOverflow,
        ),
        (
            vec![0xff, 0x80, 0x80, 0x80, 0x80, 0x00],
            DecodeError::IntegerOverflow,
        ),
        (vec![0x00, 0x05, b'a'], DecodeError::Truncated),
        (
            vec![0x00, 0x01, b'a', 0x7f, 0xff, 0xff, 0xff, 0x0f],
            DecodeError::Truncated,
        ),
        (vec![0x40], DecodeError::Truncated),
        (
            vec![0x00, 0x81, 0x00, 0x00],
            DecodeError::Huffman(HuffmanError::BadPadding),
        ),
        (
            vec![0x00, 0x84, 0xff, 0xff, 0xff, 0xff, 0x00],
            DecodeError::Huffman(HuffmanError::Eos),
        ),
    ];
    for (block, want) in cases {
        assert_eq!(
            Decoder::default().decode(&block, 1 << 20),
            Err(want),
            "{block:02x?}"
        );
    }
}

#[test]
fn multi_byte_integers_decode() {
    // a name index past a 4-bit prefix (15 + 46), a 200-byte string (127 + 73)
    let mut b = Vec::new();
    literal(&mut b, Kind::Without, Ok(61), &[b'v'; 200], (false, false));
    assert_eq!(&b[..4], &[0x0f, 0x2e, 0x7f, 0x49]);
    // index 2 written with a redundant zero continuation byte: 127 + 0 is
    // not 2, so this is index 127 (an empty dynamic table: an error)
    let mut d = Decoder::default();
    assert_eq!(
        d.decode(&[0xff, 0x00], 1 << 20),
        Err(DecodeError::BadIndex(127))
    );
    indexed(&mut b, 2);
    let got = decode_all(&mut Decoder::default(), &b);
    assert_eq!(
        got,
        vec![
            (b"www-authenticate".to_vec(), vec![b'v'; 200]),
            (b":method".to_vec(), b"GET".to_vec())
        ]
    );
}
