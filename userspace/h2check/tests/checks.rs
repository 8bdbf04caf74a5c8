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
    for seed in 0..3_000u64 {
        let input = framing::generate(&mut Rng::new(seed));
        match framing::check(&input) {
            Ok(out) => count(&mut c, &input, &out.units),
            Err(e) => panic!("seed {seed}, input {}:\n{e}", show(&input)),
        }
    }
    assert!(
        c.frames > 8_000 && c.blocks > 3_000 && c.prefaces > 900 && c.raw > 1_000,
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
