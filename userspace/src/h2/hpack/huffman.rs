//! The Huffman code of RFC 7541 Appendix B and its decoding rules (§5.2).
//!
//! The code is canonical (codes of one length are consecutive, in symbol
//! order, and shorter codes come first), so the code lengths define it;
//! the codes are derived from them once and checked against Appendix B's
//! examples in the tests.

use std::sync::OnceLock;

use thiserror::Error;

#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
pub enum HuffmanError {
    #[error("EOS symbol inside a Huffman-coded string")]
    Eos,
    #[error("Huffman padding longer than 7 bits")]
    PaddingTooLong,
    #[error("Huffman padding that is not a prefix of EOS")]
    BadPadding,
}

/// Code length of each symbol: bytes 0..=255, then EOS (256).
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];

const EOS: u32 = 256;
/// A child that is a symbol, not another node.
const LEAF: u32 = 1 << 31;

/// Each symbol's code, right-aligned.
fn codes() -> &'static [u32; 257] {
    static CODES: OnceLock<[u32; 257]> = OnceLock::new();
    CODES.get_or_init(|| {
        let mut order: Vec<usize> = (0..257).collect();
        order.sort_by_key(|&s| (LENGTHS[s], s));
        let mut codes = [0u32; 257];
        let (mut code, mut len) = (0u32, LENGTHS[order[0]]);
        for (i, &s) in order.iter().enumerate() {
            if i > 0 {
                code = (code + 1) << (LENGTHS[s] - len);
                len = LENGTHS[s];
            }
            codes[s] = code;
        }
        codes
    })
}

/// The decoding tree: node 0 is the root; each child is a node index or
/// `LEAF | symbol`. The code is complete, so every node has both children.
fn tree() -> &'static [[u32; 2]] {
    static TREE: OnceLock<Vec<[u32; 2]>> = OnceLock::new();
    TREE.get_or_init(|| {
        let codes = codes();
        let mut nodes = vec![[0u32; 2]];
        for sym in 0..257u32 {
            let (code, len) = (codes[sym as usize], LENGTHS[sym as usize]);
            let mut node = 0usize;
            for i in (0..len).rev() {
                let bit = ((code >> i) & 1) as usize;
                if i == 0 {
                    nodes[node][bit] = LEAF | sym;
                } else {
                    if nodes[node][bit] == 0 {
                        nodes.push([0, 0]);
                        nodes[node][bit] = (nodes.len() - 1) as u32;
                    }
                    node = nodes[node][bit] as usize;
                }
            }
        }
        nodes
    })
}

/// Appends the decoding of `src` to `out`. At most 8/5 bytes per input
/// byte (the shortest code is 5 bits), so `out` is bounded by the input.
pub fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let tree = tree();
    let (mut node, mut depth, mut ones) = (0usize, 0u32, true);
    for &byte in src {
        for shift in (0..8).rev() {
            let bit = (byte >> shift) & 1;
            let next = tree[node][bit as usize];
            depth += 1;
            ones &= bit == 1;
            if next & LEAF == 0 {
                node = next as usize;
                continue;
            }
            let sym = next & !LEAF;
            if sym == EOS {
                return Err(HuffmanError::Eos);
            }
            out.push(sym as u8);
            (node, depth, ones) = (0, 0, true);
        }
    }
    // §5.2: what is left is padding: up to 7 bits, the start of EOS (all ones).
    if depth > 7 {
        Err(HuffmanError::PaddingTooLong)
    } else if !ones {
        Err(HuffmanError::BadPadding)
    } else {
        Ok(())
    }
}

/// Appends the Huffman coding of `src` to `out`, padded with ones.
#[cfg(test)]
pub fn encode(src: &[u8], out: &mut Vec<u8>) {
    let codes = codes();
    let (mut acc, mut bits) = (0u64, 0u32);
    for &b in src {
        let len = LENGTHS[b as usize] as u32;
        acc = (acc << len) | codes[b as usize] as u64;
        bits += len;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        out.push(((acc << (8 - bits)) | (0xff >> bits)) as u8);
    }
}

/// Length of the Huffman coding of `src`, in bytes.
#[cfg(test)]
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src.iter().map(|&b| LENGTHS[b as usize] as usize).sum();
    bits.div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_is_complete_and_matches_appendix_b() {
        let kraft: f64 = LENGTHS.iter().map(|&l| 0.5f64.powi(l as i32)).sum();
        assert_eq!(kraft, 1.0);
        let c = codes();
        // a few rows of Appendix B
        assert_eq!((c[b'0' as usize], LENGTHS[b'0' as usize]), (0x0, 5));
        assert_eq!((c[b' ' as usize], LENGTHS[b' ' as usize]), (0x14, 6));
        assert_eq!((c[b'a' as usize], LENGTHS[b'a' as usize]), (0x3, 5));
        assert_eq!((c[0], LENGTHS[0]), (0x1ff8, 13));
        assert_eq!((c[255], LENGTHS[255]), (0x3ffffee, 26));
        assert_eq!((c[256], LENGTHS[256]), (0x3fffffff, 30));
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut enc = Vec::new();
        encode(&all, &mut enc);
        assert_eq!(enc.len(), encoded_len(&all));
        let mut dec = Vec::new();
        decode(&enc, &mut dec).unwrap();
        assert_eq!(dec, all);
    }

    #[test]
    fn padding_and_eos_rules() {
        let mut out = Vec::new();
        // "www.example.com" from RFC 7541 C.4.1
        let www = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        decode(&www, &mut out).unwrap();
        assert_eq!(out, b"www.example.com");
        // one more all-ones byte: 8+ bits of padding
        let mut long = www.to_vec();
        long.push(0xff);
        assert_eq!(
            decode(&long, &mut Vec::new()),
            Err(HuffmanError::PaddingTooLong)
        );
        // '0' is 00000 (5 bits): padding of zeros is not EOS's prefix
        assert_eq!(
            decode(&[0x00], &mut Vec::new()),
            Err(HuffmanError::BadPadding)
        );
        // EOS itself (30 ones), then 2 bits of padding
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut Vec::new()),
            Err(HuffmanError::Eos)
        );
        assert_eq!(decode(&[], &mut Vec::new()), Ok(()));
    }
}
