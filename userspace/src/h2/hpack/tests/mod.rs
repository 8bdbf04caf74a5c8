//! Decoder tests: RFC 7541 Appendix C, the limits, and randomised round
//! trips and hostile input (a seeded generator: no nightly, no cargo-fuzz).

pub(crate) mod encoder;
mod limits;
mod random;
mod rfc;

use super::{Decoded, Decoder};

/// xorshift64*: deterministic, so a failing case is replayed by its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// 0..n (n > 0)
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Fewer than `n` random bytes.
    pub fn bytes_below(&mut self, n: u64) -> Vec<u8> {
        let len = self.below(n) as usize;
        self.bytes(len)
    }
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn fields(list: &[(&str, &str)]) -> Fields {
    list.iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// Decodes with no practical limit; the fields, or panics with the error.
fn decode_all(d: &mut Decoder, block: &[u8]) -> Fields {
    match d.decode(block, usize::MAX / 2) {
        Ok(Decoded::Fields(l)) => l.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect(),
        other => panic!("block {block:02x?}: {other:?}"),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}
