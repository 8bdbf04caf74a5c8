//! `cargo xtask kernels`: the smoke subset on Debian's kernels, each booted
//! under QEMU (software emulation) with virtme-ng sharing the host's root
//! read-only, and a table kernel × test.
//!
//! Kernels come from Debian's archive through apt with a private state
//! directory (target/kernels/apt): the `linux-image-amd64` of a suite, its
//! image package and, from 6.16 on, the split `linux-binary-*` and
//! `linux-modules-*`. They are unpacked to target/kernels/<release>/root
//! (vmlinuz in boot/, modules in lib/modules/, where virtme-ng finds them and
//! links them into the guest). Test binaries are built on the host; the guest
//! runs tests/kernels/smoke.sh on them. Each kernel's result is cached in
//! target/kernels/<release>/result.json, keyed by the binaries it ran.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::{target_dir, workspace_root};

mod debian;
mod record;
mod runner;
mod table;
mod targets;

pub use table::print_full_table;

use debian::*;
use runner::*;
use table::*;

/// Kernel lines by name: (name, Debian suite). `host` runs without a VM.
pub const KERNELS: &[(&str, &str)] = &[
    ("5.10", "bullseye"),
    ("6.1", "bookworm"),
    ("6.12", "trixie"),
    ("newest", "trixie-backports"),
];

pub const DEFAULT: &[&str] = &["host", "5.10", "6.1", "6.12", "newest"];

/// Integration tests the smoke subset runs: (column, test target, filter).
const SMOKE: &[(&str, &str, &str)] = &[(
    "balance",
    "balance",
    "one_connection_eight_streams_spread_evenly",
)];

/// Packages the VMs need on the host, and a command each provides.
const HOST_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("depmod", "kmod"),
    ("udevadm", "udev"),
];

/// Module trees the guest never needs (kept out of the unpacked kernels).
const SKIP_MODULES: &[&str] = &[
    "drivers/gpu",
    "drivers/media",
    "drivers/infiniband",
    "drivers/net/wireless",
    "drivers/net/ethernet",
    "drivers/staging",
    "drivers/scsi",
    "drivers/usb",
    "drivers/bluetooth",
    "drivers/iio",
    "drivers/input",
    "drivers/hid",
    "drivers/isdn",
    "drivers/mtd",
    "drivers/video",
    "drivers/platform",
    "sound",
];

pub struct Options {
    pub kernels: Vec<String>,
    pub force: bool,
    pub full: bool,
    /// `NAME[:FILTER]`: only these integration test targets.
    pub tests: Vec<String>,
    pub no_build: bool,
    pub memory: String,
    pub timeout: Duration,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct KernelResult {
    pub name: String,
    pub suite: String,
    pub release: String,
    pub package: String,
    /// The binaries and script the result is for.
    pub fingerprint: String,
    /// ok, or why the VM did not report.
    pub boot: String,
    /// (column, "ok|refused|fail|absent detail")
    pub results: Vec<(String, String)>,
    pub seconds: u64,
    pub log: String,
    pub date: String,
    /// The guest's `ROTOR_TIME_SCALE` (none on the host, and in results
    /// from before it was recorded: the log says).
    #[serde(default)]
    pub scale: Option<f64>,
    /// The commit the binaries were built from (`-dirty`: with changes).
    #[serde(default)]
    pub commit: String,
    /// The sources the binaries were built from (record.rs): what a kept
    /// result is reused for on another machine. Empty for the smoke subset.
    #[serde(default)]
    pub source: String,
}

impl KernelResult {
    fn get(&self, col: &str) -> Option<&str> {
        self.results
            .iter()
            .find(|(c, _)| c == col)
            .map(|(_, v)| v.as_str())
    }

    /// One kernel's row from its runs (one per target with `--full`): the
    /// probe of the first run, every run's tests, the times summed.
    fn merge(parts: Vec<KernelResult>) -> Option<KernelResult> {
        let mut it = parts.into_iter();
        let mut row = it.next()?;
        for p in it {
            for (col, v) in p.results {
                if col != "probe" && !row.results.iter().any(|(c, _)| *c == col) {
                    row.results.push((col, v));
                }
            }
            if row.boot == "ok" && p.boot != "ok" {
                row.boot = p.boot;
            }
            row.seconds += p.seconds;
            row.date = p.date;
        }
        Some(row)
    }

    /// Green: everything passed, or the probe refused the kernel and so did every test.
    pub fn green(&self) -> bool {
        if self.boot != "ok" || self.results.is_empty() {
            return false;
        }
        let status = |v: &str| v.split_whitespace().next().unwrap_or("").to_string();
        let all = |s: &str| self.results.iter().all(|(_, v)| status(v) == s);
        all("ok") || (self.get("probe").map(status).as_deref() == Some("refused") && all("refused"))
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn kernels_dir() -> PathBuf {
    let root = workspace_root();
    root.canonicalize().unwrap_or(root).join("target/kernels")
}

pub fn run_kernels(opts: &Options) -> Result<bool> {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    crate::deps::ensure()?;
    ensure_tools()?;
    let root = workspace_root().canonicalize()?;
    let script = root.join("tests/kernels/smoke.sh");

    if !opts.no_build {
        let code = crate::cargo(&crate::strings(&[
            "build",
            "--release",
            "--workspace",
            "--bins",
        ]))?;
        if code != 0 {
            bail!("cargo build failed");
        }
    }
    let probe_bin = test_binary(&["-p", "rotor", "--lib"])?;
    let mut columns = targets::columns(opts)?;
    // One VM per target when running more than the smoke subset: each gets
    // the whole time limit, its own log and cached result, and a target that
    // hangs costs only itself.
    let per_target = opts.full || !opts.tests.is_empty();
    // Copies, so a concurrent build in the shared target dir cannot swap
    // binaries under a running VM; the tests find their helpers beside them.
    let bin_dir = kernels_dir().join("bin");
    let _ = fs::remove_dir_all(&bin_dir);
    fs::create_dir_all(&bin_dir)?;
    let mut shared: Vec<PathBuf> = vec![script.clone()];
    for entry in fs::read_dir(target_dir().join("release"))? {
        let p = entry?.path();
        let is_exe =
            fs::metadata(&p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if is_exe && p.extension().is_none() {
            let staged = stage(&p, &bin_dir)?;
            // This tool builds the agent's image and nothing else the guest
            // runs: it counts for the `image` column only (Run::new), so
            // that a change to the runner does not void hours of results.
            if p.file_name().is_some_and(|n| n != "xtask") {
                shared.push(staged);
            }
        }
    }
    let probe_bin = stage(&probe_bin, &bin_dir)?;
    shared.push(probe_bin.clone());
    for c in &mut columns {
        c.bin = stage(&c.bin, &bin_dir)?;
    }
    let shared_fp = fingerprint(&shared)?;
    // image.rs builds the agent's image under target/, which the guest sees
    // read-only ("removing target/image/rootfs: Read-only file system" on
    // 6.1): the host builds it from the staged agent and the guest is given
    // the archive (ROTOR_IMAGE). The agent is in the fingerprint already.
    let image = if columns.iter().any(|c| c.name == "image") {
        crate::deps::ensure_image_tools()?;
        let built =
            crate::image::build(&bin_dir.join("rotor-agent"), &kernels_dir().join("image"))?;
        Some(built.archive)
    } else {
        None
    };
    let mut host_ms = calibrate(&script)?;
    println!("xtask: calibration on the host: {host_ms} ms (tests scale their time bounds by guest/host)");
    let inner_timeout = opts.timeout.as_secs().saturating_sub(120).max(60);
    let mut runs: Vec<Run> = if per_target {
        let shared_source = record::shared_fingerprint()?;
        columns
            .iter()
            .map(|c| {
                let mut run = Run::new(
                    &script,
                    &bin_dir,
                    &probe_bin,
                    host_ms,
                    inner_timeout,
                    &shared_fp,
                    std::slice::from_ref(c),
                    Some(&c.name),
                )?;
                // a filtered run is not the target's result: not kept
                if c.filter.is_empty() {
                    run.source =
                        record::target_fingerprint(&shared_source, &c.name, "", inner_timeout)?;
                }
                Ok(run)
            })
            .collect::<Result<_>>()?
    } else {
        vec![Run::new(
            &script,
            &bin_dir,
            &probe_bin,
            host_ms,
            inner_timeout,
            &shared_fp,
            &columns,
            None,
        )?]
    };
    if let Some(archive) = &image {
        for run in runs
            .iter_mut()
            .filter(|r| r.columns.iter().any(|c| c == "image"))
        {
            run.args
                .splice(1..1, ["--image".to_string(), archive.display().to_string()]);
        }
    }

    let apt = Apt::new()?;
    let mut rows: Vec<KernelResult> = Vec::new();
    for name in &opts.kernels {
        let mut parts = Vec::new();
        for run in runs.iter_mut() {
            if INTERRUPTED.load(Ordering::SeqCst) {
                bail!("interrupted");
            }
            // Again before each VM, and the quickest so far counts: other
            // work on the host only slows the calibration, and one build
            // beside the first measurement (96 ms against 37 quiet) had
            // given a whole run of targets a third of their scale.
            if name != "host" {
                let now = calibrate(&script)?;
                if now < host_ms {
                    println!("xtask: calibration on the host: {now} ms, quicker than the {host_ms} ms so far: it counts from here");
                    host_ms = now;
                }
                run.set_host_ms(host_ms);
            }
            let part = if name == "host" {
                run_host(run, opts)?
            } else {
                let suite = KERNELS
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, s)| *s)
                    .with_context(|| {
                        format!("unknown kernel {name}: one of host, 5.10, 6.1, 6.12, newest")
                    })?;
                apt.update()?;
                let resolved = resolve(&apt, suite)?;
                run_vm(&apt, name, suite, &resolved, run, opts, &root)?
            };
            if per_target {
                println!(
                    "xtask: {} ({}) {}: {} in {} s",
                    part.release,
                    part.name,
                    run.tag,
                    cell(part.get(&run.tag)),
                    part.seconds
                );
            }
            parts.push(part);
        }
        let row = KernelResult::merge(parts).context("no runs")?;
        println!(
            "xtask: {} ({}): {} in {} s",
            row.release,
            row.name,
            if row.green() { "green" } else { "RED" },
            row.seconds
        );
        rows.push(row);
    }
    let cols: Vec<String> = std::iter::once("probe".to_string())
        .chain(columns.iter().map(|c| c.name.clone()))
        .collect();
    print_table(&rows, &cols);
    Ok(rows.iter().all(KernelResult::green))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_become_results() {
        let log = "boot noise\nROTOR-KERNEL 6.1.0-50-amd64\r\nprobe| x\nROTOR-RESULT probe ok kernel=6.1 features=40 [1 s]\n\
                   ROTOR-RESULT balance ok test result: ok. 1 passed [30 s]\nROTOR-DONE\n";
        let (rel, res, done) = parse_log(log);
        assert_eq!(rel.as_deref(), Some("6.1.0-50-amd64"));
        assert!(done);
        assert_eq!(res.len(), 2);
        assert_eq!(cell(Some(&res[0].1)), "ok");
    }

    #[test]
    fn refusal_is_green_only_when_every_column_refuses() {
        let probe = "refused kernel 5.10 lacks 4 features rotor needs: 32-bit atomic fetch-and-add (BPF_ATOMIC) (used for x)";
        let mut r = KernelResult {
            name: "5.10".into(),
            suite: "bullseye".into(),
            release: "5.10.0-32-amd64".into(),
            package: String::new(),
            fingerprint: String::new(),
            boot: "ok".into(),
            results: vec![
                ("probe".into(), probe.into()),
                ("balance".into(), "refused lacks x".into()),
            ],
            seconds: 1,
            log: String::new(),
            date: String::new(),
            scale: None,
            commit: String::new(),
            source: String::new(),
        };
        assert!(r.green());
        assert_eq!(cell(r.get("probe")), "refused: 32-bit atomic fetch-and-add");
        r.results[1].1 = "fail rc=101 boom".into();
        assert!(!r.green());
        r.results = vec![
            ("probe".into(), "ok".into()),
            ("balance".into(), "ok".into()),
        ];
        assert!(r.green());
        r.boot = "timed out".into();
        assert!(!r.green());
    }

    /// A red result runs again (the README promises "only what changed or
    /// failed"), and its log is kept aside first; a green one is reused.
    #[test]
    fn only_green_results_are_reused_and_red_logs_are_kept() {
        let dir = std::env::temp_dir().join(format!("rotor-xtask-cache-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (json, log) = (dir.join("bodies.json"), dir.join("bodies.log"));
        let mut r = KernelResult {
            name: "newest".into(),
            suite: "trixie-backports".into(),
            release: "7.3.4+deb13-amd64".into(),
            package: String::new(),
            fingerprint: "fp".into(),
            boot: "ok".into(),
            results: vec![("bodies".into(), "fail rc=101 stalled".into())],
            seconds: 1,
            log: String::new(),
            date: "2026-12-04T22:51:00Z".into(),
            scale: None,
            commit: String::new(),
            source: String::new(),
        };
        // a run writes its log, then its result
        let at = |path: &std::path::Path, secs: u64| {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000 + secs);
            fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(t)
                .unwrap();
        };
        let kept_logs = || -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(&dir)
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("bodies.red-"))
                .collect();
            v.sort();
            v
        };
        fs::write(&log, "the red run").unwrap();
        at(&log, 0);
        fs::write(&json, serde_json::to_string(&r).unwrap()).unwrap();
        at(&json, 1);
        assert!(
            runner::cached(&json, "fp", false).is_none(),
            "red: runs again"
        );
        runner::keep_red_log(&json, &log);
        assert_eq!(kept_logs().len(), 1);
        let kept = dir.join(&kept_logs()[0]);
        assert_eq!(fs::read_to_string(&kept).unwrap(), "the red run");
        assert!(!log.exists());
        r.results[0].1 = "ok test result: ok. 2 passed [42 s]".into();
        fs::write(&log, "the green run").unwrap();
        at(&log, 10);
        fs::write(&json, serde_json::to_string(&r).unwrap()).unwrap();
        at(&json, 11);
        assert!(runner::cached(&json, "fp", false).is_some());
        assert!(runner::cached(&json, "other binaries", false).is_none());
        assert!(runner::cached(&json, "fp", true).is_none(), "--force");
        runner::keep_red_log(&json, &log);
        assert!(log.exists(), "a green run's log stays");
        // a run stopped before it wrote a result (a stall, Ctrl-C) left a
        // log newer than the last result: kept, under its own time
        fs::write(&log, "the stopped run").unwrap();
        at(&log, 20);
        runner::keep_red_log(&json, &log);
        assert!(!log.exists());
        assert_eq!(kept_logs().len(), 2, "no red log overwrites another");
        fs::remove_dir_all(&dir).unwrap();
    }
}
