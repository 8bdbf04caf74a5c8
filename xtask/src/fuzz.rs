//! `cargo xtask fuzz`: the cargo-fuzz targets of userspace/fuzz, each for a
//! fixed time, on the stable toolchain.
//!
//! Stable has no sanitizers, so the targets build with `--sanitizer none`:
//! libFuzzer still gets rustc's coverage instrumentation (and clang's for
//! the kernel parser compiled by rotor-h2check), and the build keeps debug
//! assertions and overflow checks, so a panic, an abort or an arithmetic
//! overflow is a crash. What ASan would add (memory errors in unsafe code)
//! is limited here to the C parser, whose loads go through the bounds-
//! checked bpf_skb_load_bytes stand-in.
//!
//! Each target starts from its checked-in seeds (userspace/fuzz/seeds) plus
//! what earlier runs on this machine found (userspace/fuzz/corpus, not in
//! git). A crash fails the run and names the reproducer.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

pub const TARGETS: &[&str] = &[
    "message_reader",
    "header_rewrite",
    "hpack_decode",
    "kernel_framing",
];

/// Installed when `cargo fuzz` is missing; a version already installed is
/// used as it is.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new(cargo())
        .args(["fuzz", "--version"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    println!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    let status = Command::new(cargo())
        .args([
            "install",
            "--locked",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
        ])
        .status()
        .context("running cargo install")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed ({status})");
    }
    Ok(())
}

struct Run {
    target: String,
    runs: Option<u64>,
    seconds: f64,
    /// crash, leak, timeout or oom inputs libFuzzer wrote
    artifacts: Vec<PathBuf>,
    ok: bool,
}

/// libFuzzer's progress lines: one per new input, too many for a CI log
/// (`#123\tNEW    cov: ...`, `\tNEW_FUNC[1/5]: ...`).
fn noisy(line: &str) -> bool {
    let event = line.split_whitespace().nth(1).unwrap_or("");
    (line.starts_with('#') && (event == "NEW" || event == "REDUCE"))
        || line.trim_start().starts_with("NEW_FUNC")
}

fn run_target(dir: &Path, target: &str, seconds: u64) -> Result<Run> {
    let corpus = dir.join("corpus").join(target);
    let seeds = dir.join("seeds").join(target);
    let artifacts = dir.join("artifacts").join(target);
    for d in [&corpus, &artifacts] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let before = list(&artifacts);
    println!("xtask: fuzz {target} for {seconds} s");
    let started = Instant::now();
    let mut child = Command::new(cargo())
        .current_dir(dir)
        .args(["fuzz", "run", "--sanitizer", "none", target])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // one input taking this long is a hang, reported like a crash
        .arg("-timeout=10")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo fuzz")?;
    let mut runs = None;
    let stderr = child.stderr.take().context("cargo fuzz stderr")?;
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading cargo fuzz output")?;
        if let Some(n) = line
            .strip_prefix("stat::number_of_executed_units:")
            .and_then(|n| n.trim().parse().ok())
        {
            runs = Some(n);
        }
        if !noisy(&line) {
            eprintln!("{line}");
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    let found: Vec<PathBuf> = list(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    Ok(Run {
        target: target.to_string(),
        runs,
        seconds: started.elapsed().as_secs_f64(),
        ok: status.success() && found.is_empty(),
        artifacts: found,
    })
}

fn list(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs the targets (all if `targets` is empty); Ok(false) if one crashed.
pub fn run(seconds: u64, targets: &[String]) -> Result<bool> {
    for t in targets {
        if !TARGETS.contains(&t.as_str()) {
            bail!("no fuzz target {t} (targets: {})", TARGETS.join(", "));
        }
    }
    let targets: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        targets.iter().map(String::as_str).collect()
    };
    ensure_cargo_fuzz()?;
    let dir = crate::workspace_root().join("userspace/fuzz");
    // printed in reproducer paths: without the xtask/.. detour
    let dir = dir.canonicalize().unwrap_or(dir);
    // Every target built at once (they share all but their main); `cargo
    // fuzz run` then finds them current.
    let started = Instant::now();
    let status = Command::new(cargo())
        .current_dir(&dir)
        .args(["fuzz", "build", "--sanitizer", "none"])
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status})");
    }
    println!(
        "xtask: fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let mut runs = Vec::new();
    for t in &targets {
        runs.push(run_target(&dir, t, seconds)?);
    }
    println!("\nxtask: fuzz results ({seconds} s per target)");
    for r in &runs {
        let execs = r.runs.map_or("?".to_string(), |n| n.to_string());
        println!(
            "  {:<16} {:>4} {:>10} runs in {:>3.0} s",
            r.target,
            if r.ok { "ok" } else { "FAIL" },
            execs,
            r.seconds
        );
        for a in &r.artifacts {
            println!("    reproducer: {}", a.display());
            println!(
                "    replay: cd userspace/fuzz && cargo fuzz run --sanitizer none {} {}",
                r.target,
                a.display()
            );
        }
    }
    Ok(runs.iter().all(|r| r.ok))
}
