//! Checks of the in-tree HPACK decoder (`h2::hpack`) on a connection's
//! worth of header blocks and SETTINGS_HEADER_TABLE_SIZE changes: no panic;
//! an accepted list within the limit it was given (and its size right); the
//! dynamic table never larger than the size in force; and, differential,
//! the same fields as fluke-hpack (an independent decoder) on every block
//! both accept while their tables are in step.
//!
//! Input bytes: byte 0 picks the initial allowed table size (4096, 256, 64,
//! 0); then operations, each an opcode byte `op`:
//! * `op >> 6 == 3`: the peer acknowledged a new table size, the next two
//!   bytes (big-endian);
//! * otherwise a header block: its length in the next two bytes (cut to
//!   what is left), decoded with the agent's header-list limit
//!   (60 KiB, `header_block::MAX_HEADER_LIST_SIZE`) if `op & 0x20 == 0`,
//!   else with a limit of `(op & 0x1f) * 64` bytes.

use crate::h2::header_block::MAX_HEADER_LIST_SIZE;
use crate::h2::hpack::{Decoded, Decoder, ENTRY_OVERHEAD};
use crate::rng::Rng;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

pub const INITIAL: [usize; 4] = [4096, 256, 64, 0];

fn size_of(fields: &Fields) -> u64 {
    fields
        .iter()
        .map(|(n, v)| (n.len() + v.len() + ENTRY_OVERHEAD) as u64)
        .sum()
}

/// What a passing input exercised.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Exercised {
    /// blocks ours accepted
    pub accepted: usize,
    /// of those, compared with fluke-hpack's result
    pub compared: usize,
    /// of those, over the limit
    pub over_limit: usize,
}

pub fn check(data: &[u8]) -> Result<Exercised, String> {
    let mut seen = Exercised::default();
    let (&first, mut rest) = data.split_first().unwrap_or((&0, &[]));
    let mut allowed = INITIAL[usize::from(first & 3)];
    let mut ours = Decoder::new(allowed);
    let mut reference = fluke_hpack::Decoder::new();
    reference.set_max_allowed_table_size(allowed);
    if allowed < 4096 {
        // the same starting point: fluke's table starts at 4,096
        reference.set_max_table_size(allowed);
    }
    // the reference stays comparable until a block only one accepts
    let mut in_step = true;
    let mut block_no = 0;
    while let Some((&op, tail)) = rest.split_first() {
        let arg = tail
            .get(..2)
            .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        rest = tail.get(2..).unwrap_or(&[]);
        if op >> 6 == 3 {
            allowed = arg;
            ours.set_max_allowed(allowed);
            reference.set_max_allowed_table_size(allowed);
        } else {
            let block = &rest[..arg.min(rest.len())];
            rest = &rest[block.len()..];
            let limit = if op & 0x20 == 0 {
                MAX_HEADER_LIST_SIZE as usize
            } else {
                usize::from(op & 0x1f) * 64
            };
            block_no += 1;
            let got = ours.decode(block, limit);
            let what = || {
                format!(
                    "block {block_no} ({block:02x?}, limit {limit}, table size allowed {allowed})"
                )
            };
            match &got {
                Ok(Decoded::Fields(list)) => {
                    let size: usize = list
                        .iter()
                        .map(|(n, v)| n.len() + v.len() + ENTRY_OVERHEAD)
                        .sum();
                    if list.size() != size {
                        return Err(format!(
                            "{}: list size {} but its fields add up to {size}",
                            what(),
                            list.size()
                        ));
                    }
                    if size > limit {
                        return Err(format!("{}: accepted a list of {size} bytes", what()));
                    }
                }
                Ok(Decoded::OverLimit { size }) => {
                    if *size <= limit as u64 {
                        return Err(format!("{}: over the limit with {size} bytes", what()));
                    }
                }
                Err(_) => {}
            }
            if ours.table_size() > allowed {
                return Err(format!(
                    "{}: dynamic table of {} bytes",
                    what(),
                    ours.table_size()
                ));
            }
            if got.is_ok() {
                seen.accepted += 1;
            }
            if in_step && got.is_ok() {
                seen.compared += 1;
                seen.over_limit += usize::from(matches!(got, Ok(Decoded::OverLimit { .. })));
                // only on what ours accepted: fluke-hpack panics on some
                // malformed size updates that ours refuses
                match reference.decode(block) {
                    Ok(fields) => {
                        let size = size_of(&fields);
                        let same = match &got {
                            Ok(Decoded::Fields(list)) => {
                                size <= limit as u64
                                    && list
                                        .iter()
                                        .map(|(n, v)| (n.to_vec(), v.to_vec()))
                                        .collect::<Fields>()
                                        == fields
                            }
                            Ok(Decoded::OverLimit { size: s }) => size > limit as u64 && *s == size,
                            Err(_) => false,
                        };
                        if !same {
                            return Err(format!(
                                "{}: ours {got:?}, fluke-hpack {fields:?} ({size} bytes)",
                                what()
                            ));
                        }
                    }
                    // fluke-hpack refuses a block that ends with a size
                    // update (nothing in RFC 7541 does)
                    Err(fluke_hpack::decoder::DecoderError::SizeUpdateAtEnd) => in_step = false,
                    Err(e) => {
                        return Err(format!(
                            "{}: ours accepted ({got:?}), fluke-hpack refused: {e:?}",
                            what()
                        ));
                    }
                }
            }
            if got.is_err() {
                // a decoding error ends the connection (COMPRESSION_ERROR)
                break;
            }
        }
        if ours.table_size() > allowed {
            return Err(format!(
                "dynamic table of {} bytes, {allowed} allowed",
                ours.table_size()
            ));
        }
    }
    Ok(seen)
}

/// An input for [`check`]: blocks from an encoder that uses the dynamic
/// table (fluke-hpack's), with table size changes, size updates put in
/// front, truncations, flipped bits and random bytes.
pub fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut out = vec![0u8]; // 4,096: the encoder's table
    let mut enc = fluke_hpack::Encoder::new();
    for _ in 0..1 + rng.below(6) {
        let op = match rng.below(8) {
            0 => {
                let size = [0u16, 64, 256, 4096, 8192][rng.below(5) as usize];
                out.extend_from_slice(&[0xc0]);
                out.extend_from_slice(&size.to_be_bytes());
                continue;
            }
            1 | 2 => 0x20 | rng.below(32) as u8,
            _ => 0,
        };
        let n = rng.below(8) as usize;
        let fields: Fields = (0..n)
            .map(|_| {
                let name = match rng.below(3) {
                    0 => b":path".to_vec(),
                    1 => format!("x-h{}", rng.below(4)).into_bytes(),
                    _ => rng.bytes_below(12),
                };
                let value = match rng.below(3) {
                    0 => rng.bytes_below(300),
                    _ => format!("v{}", rng.below(3)).into_bytes(),
                };
                (name, value)
            })
            .collect();
        let mut block = Vec::new();
        if rng.below(4) == 0 {
            // size updates first: to 0 and back, or to a size
            block.extend_from_slice(
                &[0x20, 0x3f, 0xe1, 0x1f][..if rng.below(2) == 0 { 1 } else { 4 }],
            );
        }
        block.extend(enc.encode(fields.iter().map(|(n, v)| (&n[..], &v[..]))));
        for _ in 0..rng.below(3) {
            // a static table entry by index: the encoder above uses only
            // those it finds by name
            block.push(0x80 | (1 + rng.below(61) as u8));
        }
        match rng.below(8) {
            0 if !block.is_empty() => {
                let i = rng.below(block.len() as u64) as usize;
                block[i] ^= 1 << rng.below(8);
            }
            1 => block.truncate(rng.below(block.len() as u64 + 1) as usize),
            2 => block = rng.bytes_below(40),
            _ => {}
        }
        out.push(op);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend(block);
    }
    out
}
