//! What a whole-suite run leaves in the repository: each target's result on
//! each kernel in tests/kernels/results/<release>/<target>.json, keyed by
//! the sources its binaries were built from.
//!
//! Under emulation the whole suite takes about 3.5 h per kernel, and a
//! machine that runs it may not be the one that runs the rest: target/ is
//! gone on a fresh clone, and with it every cached result. A result kept
//! beside the sources, valid for as long as they are unchanged, lets a run
//! stopped on one machine go on on another, and lets anyone print the
//! table from a clone.
//!
//! Binaries differ between machines (paths, build ids), so the key is the
//! sources: every file git knows of but docs, this tool, CI's scripts, the
//! results themselves and the other integration targets, plus the rustc and
//! clang that build them. A change to one test file voids that target's
//! results only, as with the binaries' fingerprint.

use super::*;

/// tests/kernels/results, where whole-suite results are kept.
pub(super) fn results_dir() -> PathBuf {
    workspace_root().join("tests/kernels/results")
}

/// Where `target`'s result on `release` is kept.
pub(super) fn path(release: &str, target: &str) -> PathBuf {
    results_dir().join(release).join(format!("{target}.json"))
}

/// A kept result for these sources that passed; a red one runs again.
pub(super) fn reusable(path: &Path, source: &str) -> Option<KernelResult> {
    let r = read_result(path)?;
    (!source.is_empty() && r.source == source && r.green()).then_some(r)
}

/// Keeps a result, red or green, for the table and for the next machine.
pub(super) fn keep(path: &Path, r: &KernelResult) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, serde_json::to_string_pretty(r)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// Whether a file counts for every target's sources (`tests/tests/x.rs`
/// counts for target `x` only; `tests/tests/common/..` for all).
pub(super) fn shared_source(path: &str) -> bool {
    let own_target = path
        .strip_prefix("tests/tests/")
        .is_some_and(|rest| !rest.contains('/') && rest.ends_with(".rs"));
    !(path.ends_with(".md")
        || path.starts_with("xtask/")
        || path.starts_with(".ci/")
        || path.starts_with("tests/kernels/results/")
        || own_target)
}

/// The sources every target's binaries are built from, and the compilers.
pub(super) fn shared_fingerprint() -> Result<String> {
    let mut h = DefaultHasher::new();
    output(Command::new("rustc").arg("-vV"))?.hash(&mut h);
    let clang = std::env::var("ROTOR_CLANG").unwrap_or_else(|_| "clang-16".into());
    output(Command::new(&clang).arg("--version"))?
        .lines()
        .next()
        .hash(&mut h);
    hash_files(&mut h, shared_source)?;
    Ok(format!("{:016x}", h.finish()))
}

/// One target's key: the shared sources, its own file, its filter and
/// limit (the image target also counts this tool, which builds its image).
pub(super) fn target_fingerprint(
    shared: &str,
    target: &str,
    filter: &str,
    inner_timeout: u64,
) -> Result<String> {
    let mut h = DefaultHasher::new();
    shared.hash(&mut h);
    filter.hash(&mut h);
    inner_timeout.hash(&mut h);
    let own = format!("tests/tests/{target}.rs");
    hash_files(&mut h, |p| {
        p == own || (target == "image" && p.starts_with("xtask/"))
    })?;
    Ok(format!("{:016x}", h.finish()))
}

/// Path and contents of every file git tracks or would track (untracked
/// but not ignored: a new test file counts before it is added) that
/// `keep` takes, in path order.
fn hash_files(h: &mut DefaultHasher, keep: impl Fn(&str) -> bool) -> Result<()> {
    let root = workspace_root();
    let list = output(
        Command::new("git")
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ])
            .current_dir(&root),
    )?;
    let mut files: Vec<&str> = list
        .split('\0')
        .filter(|p| !p.is_empty() && keep(p))
        .collect();
    files.sort_unstable();
    files.dedup();
    for p in files {
        // a tracked file deleted in the work tree is not built
        let Ok(bytes) = fs::read(root.join(p)) else {
            continue;
        };
        p.hash(h);
        bytes.hash(h);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_tooling_results_and_other_targets_do_not_count_for_all() {
        for p in [
            "README.md",
            "ebpf/README.md",
            "xtask/src/main.rs",
            ".ci/run",
            "tests/kernels/results/6.1.0-50-amd64/churn.json",
            "tests/tests/churn.rs",
        ] {
            assert!(!shared_source(p), "{p}");
        }
        for p in [
            "ebpf/parser.c",
            "userspace/src/agent/budget.rs",
            "tests/kernels/smoke.sh",
            "tests/tests/common/mod.rs",
            "tests/src/lib.rs",
            "Cargo.lock",
        ] {
            assert!(shared_source(p), "{p}");
        }
    }

    #[test]
    fn a_kept_result_is_reused_only_green_and_for_the_same_sources() {
        let dir = std::env::temp_dir().join(format!("rotor-record-{}", std::process::id()));
        let p = dir.join("7.3.4/churn.json");
        let mut r = KernelResult {
            name: "newest".into(),
            suite: "trixie-backports".into(),
            release: "7.3.4".into(),
            package: String::new(),
            fingerprint: "bins".into(),
            boot: "ok".into(),
            results: vec![(
                "churn".into(),
                "ok test result: ok. 2 passed [318 s]".into(),
            )],
            seconds: 330,
            log: String::new(),
            date: String::new(),
            scale: Some(27.4),
            commit: "c803910".into(),
            source: "src1".into(),
        };
        keep(&p, &r).expect("keep");
        assert!(reusable(&p, "src1").is_some());
        assert!(reusable(&p, "src2").is_none());
        assert!(reusable(&p, "").is_none());
        r.results[0].1 = "fail rc=101 be4 got no stream [90 s]".into();
        keep(&p, &r).expect("keep");
        assert!(reusable(&p, "src1").is_none());
        let _ = fs::remove_dir_all(&dir);
    }
}
