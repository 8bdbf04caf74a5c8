//! Randomised: valid blocks from an encoder that picks every
//! representation at random round-trip (also through the limit), and
//! random or mutated bytes never panic and never yield a list over the
//! limit. Seeded: a failure names its seed.

use super::encoder::Encoder;
use super::{Fields, Rng};
use crate::h2::hpack::table::STATIC;
use crate::h2::hpack::{Decoded, Decoder, ENTRY_OVERHEAD};

fn random_fields(rng: &mut Rng) -> Fields {
    let n = rng.below(12) as usize;
    (0..n)
        .map(|_| {
            let name = match rng.below(4) {
                0 => STATIC[rng.below(61) as usize].0.to_vec(),
                1 => format!("x-h{}", rng.below(6)).into_bytes(),
                _ => rng.bytes_below(20),
            };
            let value = match rng.below(6) {
                0 if !name.is_empty() => STATIC[rng.below(61) as usize].1.to_vec(),
                1 => rng.bytes_below(600),
                2 => format!("v{}", rng.below(4)).into_bytes(),
                _ => rng.bytes_below(40),
            };
            (name, value)
        })
        .collect()
}

fn size_of(fields: &Fields) -> u64 {
    fields
        .iter()
        .map(|(n, v)| (n.len() + v.len() + ENTRY_OVERHEAD) as u64)
        .sum()
}

#[test]
fn random_valid_blocks_round_trip_and_keep_the_tables_in_step() {
    let mut blocks = 0;
    for seed in 0..2_000u64 {
        let mut rng = Rng::new(seed);
        let max = [4096, 256, 64, 0][rng.below(4) as usize];
        let mut enc = Encoder::new(max);
        let mut dec = Decoder::new(max);
        for _ in 0..1 + rng.below(6) {
            let fields = random_fields(&mut rng);
            let block = enc.encode(&fields, &mut rng);
            let size = size_of(&fields);
            let limit = if rng.below(3) == 0 {
                rng.below(size + 2) as usize
            } else {
                usize::MAX / 2
            };
            let got = dec
                .decode(&block, limit)
                .unwrap_or_else(|e| panic!("seed {seed}: {e} in {block:02x?}"));
            if size > limit as u64 {
                assert_eq!(got, Decoded::OverLimit { size }, "seed {seed}");
            } else {
                let Decoded::Fields(list) = got else {
                    panic!("seed {seed}: {got:?} for a list of {size} within {limit}")
                };
                let list: Fields = list.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
                assert_eq!(list, fields, "seed {seed}");
            }
            assert_eq!(
                (dec.table_len(), dec.table_size()),
                (enc.table.len(), enc.table.size()),
                "seed {seed}: tables out of step"
            );
            blocks += 1;
        }
    }
    assert!(blocks > 5_000);
}

/// A decoder with a few entries, as a client's would be.
fn warm(rng: &mut Rng) -> Decoder {
    let mut enc = Encoder::new(4096);
    let mut dec = Decoder::default();
    let fields = random_fields(rng);
    let block = enc.encode(&fields, rng);
    dec.decode(&block, usize::MAX / 2).expect("valid block");
    dec
}

fn check(dec: &mut Decoder, block: &[u8], limit: usize, seed: u64) {
    match dec.decode(block, limit) {
        Ok(Decoded::Fields(l)) => {
            assert!(l.size() <= limit, "seed {seed}: {} over {limit}", l.size());
            let packed: usize = l.iter().map(|(n, v)| n.len() + v.len()).sum();
            assert!(packed <= limit, "seed {seed}");
        }
        Ok(Decoded::OverLimit { size }) => assert!(size > limit as u64, "seed {seed}"),
        Err(_) => {}
    }
    assert!(dec.table_size() <= 4096, "seed {seed}");
}

#[test]
fn random_bytes_never_panic_and_never_exceed_the_limit() {
    for seed in 0..20_000u64 {
        let mut rng = Rng::new(seed);
        let mut dec = warm(&mut rng);
        let mut block = rng.bytes_below(48);
        if let Some(first) = block.first_mut() {
            // every representation class
            *first = [
                *first,
                0x80 | *first,
                0x40 | (*first & 0x3f),
                0x20 | (*first & 0x1f),
                *first & 0x1f,
            ][rng.below(5) as usize];
        }
        let limit = rng.below(2_000) as usize;
        check(&mut dec, &block, limit, seed);
    }
}

#[test]
fn mutated_valid_blocks_never_panic_and_never_exceed_the_limit() {
    for seed in 0..10_000u64 {
        let mut rng = Rng::new(seed);
        let mut enc = Encoder::new(4096);
        let mut dec = Decoder::default();
        let fields = random_fields(&mut rng);
        let mut block = enc.encode(&fields, &mut rng);
        for _ in 0..1 + rng.below(3) {
            if block.is_empty() {
                break;
            }
            let at = rng.below(block.len() as u64) as usize;
            match rng.below(4) {
                0 => block[at] ^= 1 << rng.below(8),
                1 => block[at] = rng.next() as u8,
                2 => block.truncate(at),
                _ => block.insert(at, rng.next() as u8),
            }
        }
        let limit = rng.below(size_of(&fields) + 100) as usize;
        check(&mut dec, &block, limit, seed);
    }
}
