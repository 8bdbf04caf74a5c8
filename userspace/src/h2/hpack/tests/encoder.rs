//! A test-only HPACK encoder: every representation of RFC 7541 §6, for
//! hand-made blocks, and a randomised encoder that keeps its own copy of
//! the dynamic table, for round trips.

use super::super::huffman;
use super::super::table::{DynamicTable, STATIC};
use super::Rng;

/// §5.1: `value` with an N-bit prefix; `first` holds the representation's bits.
pub fn int(out: &mut Vec<u8>, mut value: usize, prefix: u8, first: u8) {
    let max = (1usize << prefix) - 1;
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

/// §5.2
pub fn string(out: &mut Vec<u8>, s: &[u8], huff: bool) {
    if huff {
        int(out, huffman::encoded_len(s), 7, 0x80);
        huffman::encode(s, out);
    } else {
        int(out, s.len(), 7, 0);
        out.extend_from_slice(s);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 01: the entry is added to the table
    Incremental,
    /// 0000
    Without,
    /// 0001
    Never,
}

/// A literal field: a name by index (`Ok`) or as a string (`Err`).
pub fn literal(
    out: &mut Vec<u8>,
    kind: Kind,
    name: Result<usize, &[u8]>,
    value: &[u8],
    huff: (bool, bool),
) {
    let (prefix, first) = match kind {
        Kind::Incremental => (6, 0x40),
        Kind::Without => (4, 0x00),
        Kind::Never => (4, 0x10),
    };
    match name {
        Ok(index) => int(out, index, prefix, first),
        Err(name) => {
            out.push(first);
            string(out, name, huff.0);
        }
    }
    string(out, value, huff.1);
}

pub fn indexed(out: &mut Vec<u8>, index: usize) {
    int(out, index, 7, 0x80);
}

pub fn size_update(out: &mut Vec<u8>, size: usize) {
    int(out, size, 5, 0x20);
}

/// Encodes like a peer would, choosing each representation at random,
/// with a table in step with the decoder's.
pub struct Encoder {
    pub table: DynamicTable,
    pub max_allowed: usize,
}

impl Encoder {
    pub fn new(max_allowed: usize) -> Self {
        Encoder {
            table: DynamicTable::new(max_allowed),
            max_allowed,
        }
    }

    fn find(&self, name: &[u8], value: &[u8]) -> (Option<usize>, Option<usize>) {
        let mut exact = None;
        let mut by_name = None;
        let dynamic = (1..=self.table.len()).filter_map(|i| Some((61 + i, self.table.get(i)?)));
        for (index, (n, v)) in STATIC
            .iter()
            .enumerate()
            .map(|(i, e)| (i + 1, *e))
            .chain(dynamic)
        {
            if n == name {
                by_name.get_or_insert(index);
                if v == value {
                    exact.get_or_insert(index);
                }
            }
        }
        (exact, by_name)
    }

    pub fn encode(&mut self, fields: &[(Vec<u8>, Vec<u8>)], rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::new();
        if rng.below(8) == 0 {
            for _ in 0..=rng.below(2) {
                let size = rng.below(self.max_allowed as u64 + 1) as usize;
                size_update(&mut out, size);
                self.table.set_max_size(size);
            }
        }
        for (name, value) in fields {
            let (exact, by_name) = self.find(name, value);
            if let Some(index) = exact.filter(|_| rng.below(4) != 0) {
                indexed(&mut out, index);
                continue;
            }
            let kind = match rng.below(3) {
                0 => Kind::Incremental,
                1 => Kind::Without,
                _ => Kind::Never,
            };
            let name_ref = match by_name.filter(|_| rng.below(2) == 0) {
                Some(i) => Ok(i),
                None => Err(&name[..]),
            };
            let huff = (rng.below(2) == 0, rng.below(2) == 0);
            literal(&mut out, kind, name_ref, value, huff);
            if kind == Kind::Incremental {
                self.table.insert(name, value);
            }
        }
        out
    }
}
