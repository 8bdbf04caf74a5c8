//! The fuzz targets' checks (src/framing.rs, src/hpack.rs) over seeded
//! random inputs and the fuzz seed corpus (userspace/fuzz/seeds), so a
//! regression is caught by `cargo xtask test` without cargo-fuzz. A failure
//! names its seed or file; `cargo xtask fuzz` explores beyond these. Each
//! test also counts what the inputs exercised, so a generator or check that
//! stopped reaching the interesting cases fails too.

use std::path::PathBuf;

use rotor_h2check::framing::{self, Unit};
use rotor_h2check::hpack;
use rotor_h2check::rng::Rng;

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("seed dir entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect()
}

fn show(input: &[u8]) -> String {
    format!(
        "{} bytes {:02x?}",
        input.len(),
        &input[..input.len().min(400)]
    )
}

#[derive(Debug, Default)]
struct FramingCounts {
    frames: usize,
    blocks: usize,
    prefaces: usize,
    raw: usize,
    batches: usize,
}

fn count(c: &mut FramingCounts, input: &[u8], units: &[Unit]) {
    let stream = framing::Input::parse(input).stream;
    for u in units {
        match u {
            Unit::Preface => c.prefaces += 1,
            Unit::RawFrom(_) => c.raw += 1,
            Unit::Frame { off, len, .. } => {
                c.frames += 1;
                // longer than its first frame: a header block of several
                let b = &stream[*off..];
                let first = 9 + ((b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize);
                c.blocks += usize::from(*len > first);
            }
        }
    }
}

#[test]
fn kernel_framing_agrees_with_the_reader_on_generated_streams() {
    let mut c = FramingCounts::default();
    // batches (203 of these seeds): on upstreams, frames already received behind a stream frame
    // join its message (lib/h2.h batch_len); the reader reads them one by one
    for seed in 0..3_000u64 {
        let input = framing::generate(&mut Rng::new(seed));
        match framing::check(&input) {
            Ok(out) => {
                c.batches += out.batches;
                count(&mut c, &input, &out.units)
            }
            Err(e) => panic!("seed {seed}, input {}:\n{e}", show(&input)),
        }
    }
    assert!(
        c.frames > 8_000
            && c.blocks > 3_000
            && c.prefaces > 900
            && c.raw > 1_000
            && c.batches > 150,
        "the generated streams reach too little: {c:?}"
    );
}

#[test]
fn kernel_framing_agrees_with_the_reader_on_the_seed_corpus() {
    let mut c = FramingCounts::default();
    for (path, input) in seeds("kernel_framing") {
        match framing::check(&input) {
            Ok(out) => count(&mut c, &input, &out.units),
            Err(e) => panic!("{}:\n{e}", path.display()),
        }
    }
    assert!(
        c.frames > 20 && c.prefaces > 2,
        "the seed corpus reaches too little: {c:?}"
    );
}

#[test]
fn hpack_decoder_keeps_its_limits_and_agrees_with_fluke_hpack() {
    let mut total = hpack::Exercised::default();
    for seed in 0..4_000u64 {
        let input = hpack::generate(&mut Rng::new(seed));
        match hpack::check(&input) {
            Ok(e) => {
                total.accepted += e.accepted;
                total.compared += e.compared;
                total.over_limit += e.over_limit;
            }
            Err(e) => panic!("seed {seed}, input {}:\n{e}", show(&input)),
        }
    }
    assert!(
        total.compared > 5_000 && total.over_limit > 100,
        "the generated blocks reach too little: {total:?}"
    );
}

#[test]
fn hpack_decoder_on_the_seed_corpus() {
    let mut total = hpack::Exercised::default();
    for (path, input) in seeds("hpack_decode") {
        match hpack::check(&input) {
            Ok(e) => total.compared += e.compared,
            Err(e) => panic!("{}:\n{e}", path.display()),
        }
    }
    assert!(
        total.compared > 5,
        "the seed corpus reaches too little: {total:?}"
    );
}

/// The cases ebpf/README.md point 1 is about, named: sequence numbers that
/// wrap inside a header block, the stream arriving a byte per skb, skbs
/// revisited from an earlier start (coalescing), the preface in parts.
#[test]
fn kernel_framing_across_the_sequence_wrap_with_coalesced_one_byte_skbs() {
    let mut stream = rotor_h2check::h2::frame::PREFACE.to_vec();
    let frame = |s: &mut Vec<u8>, len: usize, kind: u8, flags: u8, id: u32| {
        s.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        s.extend_from_slice(&[kind, flags]);
        s.extend_from_slice(&id.to_be_bytes());
        s.extend(std::iter::repeat_n(0x41, len));
    };
    frame(&mut stream, 6, 0x4, 0, 0); // SETTINGS
    frame(&mut stream, 10, 0x1, 0, 1); // HEADERS without END_HEADERS
    frame(&mut stream, 7, 0x9, 0, 1); // CONTINUATION
    frame(&mut stream, 3, 0x9, 0x4, 1); // CONTINUATION, END_HEADERS
    frame(&mut stream, 5, 0x0, 0x1, 1); // DATA, END_STREAM
    for (mode, kernel_split) in [(0u8, 1u8), (2, 1), (2, 2), (0, 0)] {
        let mut input = vec![mode];
        // the wrap falls inside the header block
        input.extend_from_slice(&(u32::MAX - 40).to_le_bytes());
        input.extend_from_slice(&[kernel_split, 3]);
        input.extend_from_slice(&stream);
        let out = framing::check(&input)
            .unwrap_or_else(|e| panic!("mode {mode}, split {kernel_split}: {e}"));
        assert_eq!(
            out.units,
            vec![
                Unit::Preface,
                Unit::Frame {
                    off: 24,
                    len: 15,
                    kind: 0x4,
                    stream: 0,
                    flags: 0
                },
                Unit::Frame {
                    off: 39,
                    len: 9 * 3 + 20,
                    kind: 0x1,
                    stream: 1,
                    flags: 0
                },
                Unit::Frame {
                    off: 86,
                    len: 14,
                    kind: 0x0,
                    stream: 1,
                    flags: 1
                },
            ],
            "mode {mode}, split {kernel_split}"
        );
    }
}
