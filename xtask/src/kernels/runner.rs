//! Running the smoke subset on one kernel (on the host, or in a VM under
//! QEMU with virtme-ng), with its log, timeout and cached result.

use super::*;

/// `cargo test --no-run` for one target; returns the test executable.
pub(super) fn test_binary(args: &[&str]) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args(["test", "--release", "--no-run", "--message-format=json"])
        .args(args)
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("cargo test --no-run {} failed", args.join(" "));
    }
    let mut exe = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            let is_test = v.pointer("/profile/test").and_then(|t| t.as_bool()) == Some(true);
            if let Some(p) = v
                .get("executable")
                .and_then(|e| e.as_str())
                .filter(|_| is_test)
            {
                exe = Some(PathBuf::from(p));
            }
        }
    }
    exe.with_context(|| format!("no test executable from cargo test {}", args.join(" ")))
}

pub(super) fn stage(file: &Path, dir: &Path) -> Result<PathBuf> {
    let to = dir.join(file.file_name().context("file name")?);
    fs::copy(file, &to).with_context(|| format!("copying {}", file.display()))?;
    Ok(to)
}

pub(super) fn fingerprint(files: &[PathBuf]) -> Result<String> {
    let mut h = DefaultHasher::new();
    for f in files {
        let mut buf = Vec::new();
        fs::File::open(f)
            .with_context(|| f.display().to_string())?
            .read_to_end(&mut buf)?;
        buf.hash(&mut h);
    }
    Ok(format!("{:016x}", h.finish()))
}

/// One VM boot (or host run): smoke.sh with its columns, where its log and
/// result go, and the fingerprint its cached result is valid for.
pub(super) struct Run {
    /// `smoke` for the smoke subset, else the one target's name.
    pub tag: String,
    pub columns: Vec<String>,
    pub args: Vec<String>,
    pub fp: String,
    /// The commit the binaries were staged from, taken then: docs
    /// committed while a run goes on must not name it.
    pub commit: String,
    /// The sources of a whole-suite target (record.rs); empty for smoke.
    pub source: String,
    /// Relative to the kernel's directory: `result` or `full/<target>`.
    stem: String,
    log_name: String,
}

impl Run {
    /// The host's calibration the guest's is divided by (smoke.sh --host-ms).
    pub(super) fn set_host_ms(&mut self, ms: u64) {
        if let Some(i) = self.args.iter().position(|a| a == "--host-ms") {
            if let Some(v) = self.args.get_mut(i + 1) {
                *v = ms.to_string();
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        script: &Path,
        bin_dir: &Path,
        probe_bin: &Path,
        host_ms: u64,
        inner_timeout: u64,
        shared_fp: &str,
        columns: &[targets::Column],
        target: Option<&str>,
    ) -> Result<Run> {
        let mut args: Vec<String> = vec![
            script.display().to_string(),
            "--host-ms".into(),
            host_ms.to_string(),
            "--timeout".into(),
            inner_timeout.to_string(),
            "--python".into(),
            host_python(),
            bin_dir.display().to_string(),
            probe_bin.display().to_string(),
        ];
        let mut h = DefaultHasher::new();
        shared_fp.hash(&mut h);
        inner_timeout.hash(&mut h);
        for c in columns {
            let f = if c.filter.is_empty() {
                String::new()
            } else {
                format!(":{}", c.filter)
            };
            args.push(format!("{}={}{f}", c.name, c.bin.display()));
            fingerprint(std::slice::from_ref(&c.bin))?.hash(&mut h);
            c.filter.hash(&mut h);
            // the image the `image` column tests is built by this tool
            if c.name == "image" {
                fingerprint(&[bin_dir.join("xtask")])?.hash(&mut h);
            }
        }
        let (tag, stem, log_name) = match target {
            None => ("smoke".into(), "result".into(), "smoke.log".into()),
            Some(t) => (t.to_string(), format!("full/{t}"), format!("full/{t}.log")),
        };
        Ok(Run {
            tag,
            columns: columns.iter().map(|c| c.name.clone()).collect(),
            args,
            fp: format!("{:016x}", h.finish()),
            commit: commit(),
            source: String::new(),
            stem,
            log_name,
        })
    }

    fn paths(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let json = dir.join(format!("{}.json", self.stem));
        if let Some(parent) = json.parent() {
            fs::create_dir_all(parent)?;
        }
        Ok((json, dir.join(&self.log_name)))
    }
}

/// The Python the tests' peers run on: `ROTOR_PYTHON`, else what `python3`
/// is on the host (resolved, as a pyenv shim needs the host's environment).
fn host_python() -> String {
    if let Ok(p) = std::env::var("ROTOR_PYTHON") {
        return p;
    }
    output(Command::new("python3").args(["-c", "import sys; print(sys.executable)"]))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "python3".into())
}

/// smoke.sh's calibration on the host, best of three, in milliseconds: the
/// guest runs the same and the tests scale their time bounds by the ratio.
pub(super) fn calibrate(script: &Path) -> Result<u64> {
    let out = output(Command::new("bash").arg(script).arg("--calibrate"))?;
    out.trim()
        .parse()
        .with_context(|| format!("smoke.sh --calibrate printed {out:?}"))
}

pub(super) fn now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Runs `cmd` in its own process group with its output in `log`; kills the
/// whole group (QEMU and virtiofsd included) on timeout or Ctrl-C.
pub(super) fn run_logged(cmd: &mut Command, log: &Path, timeout: Duration) -> Result<Option<i32>> {
    let file = fs::File::create(log)?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let pgid = child.id() as i32;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            // anything the group left behind
            // SAFETY: signalling the process group we created.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            return Ok(status.code());
        }
        if start.elapsed() > timeout || INTERRUPTED.load(Ordering::SeqCst) {
            // SAFETY: as above.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            if INTERRUPTED.load(Ordering::SeqCst) {
                bail!("interrupted");
            }
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(super) fn parse_log(log: &str) -> (Option<String>, Vec<(String, String)>, bool) {
    let mut release = None;
    let mut results = Vec::new();
    let mut done = false;
    for line in log.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(r) = line.strip_prefix("ROTOR-KERNEL ") {
            release = Some(r.trim().to_string());
        } else if let Some(r) = line.strip_prefix("ROTOR-RESULT ") {
            let (col, v) = r.split_once(' ').unwrap_or((r, ""));
            results.push((col.to_string(), v.to_string()));
        } else if line == "ROTOR-DONE" {
            done = true;
        }
    }
    (release, results, done)
}

/// A green result of the same binaries and arguments; a red one runs again
/// (its log is kept: `keep_red_log`).
pub(super) fn cached(path: &Path, fp: &str, force: bool) -> Option<KernelResult> {
    if force {
        return None;
    }
    read_result(path).filter(|r| r.fingerprint == fp && r.green())
}

pub(super) fn read_result(path: &Path) -> Option<KernelResult> {
    serde_json::from_str(&fs::read_to_string(path).ok()?).ok()
}

/// Before a run overwrites it, the log of a red result moves to
/// `<name>.red-<time>.log` beside it: a failure seen once (on a busy host,
/// say) is still there to read after a green rerun. A log newer than its
/// result is a run stopped before it wrote one (a stall, Ctrl-C), kept too.
/// The time is the log's own, so no two runs' logs take the same name.
pub(super) fn keep_red_log(json: &Path, log: &Path) {
    let Ok(log_time) = fs::metadata(log).and_then(|m| m.modified()) else {
        return;
    };
    let result_time = fs::metadata(json).and_then(|m| m.modified()).ok();
    let green = read_result(json).is_some_and(|r| r.green());
    if green && result_time.is_some_and(|t| t >= log_time) {
        return;
    }
    let stamp = output(
        Command::new("date")
            .args(["-u", "+%Y%m%dT%H%M%SZ", "-r"])
            .arg(log),
    )
    .map(|s| s.trim().to_string())
    .unwrap_or_default();
    let kept = log.with_extension(format!("red-{stamp}.log"));
    match fs::rename(log, &kept) {
        Ok(()) => println!("xtask: the red run's log is kept as {}", kept.display()),
        Err(e) => println!("xtask: keeping {}: {e}", log.display()),
    }
}

pub(super) fn run_host(run: &Run, opts: &Options) -> Result<KernelResult> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_string();
    let dir = kernels_dir().join(format!("host-{release}"));
    let (json, log) = run.paths(&dir)?;
    if let Some(r) = cached(&json, &run.fp, opts.force) {
        println!(
            "xtask: host {release} {}: cached ({})",
            run.tag,
            json.display()
        );
        return Ok(r);
    }
    keep_red_log(&json, &log);
    println!("xtask: host {release}: running {} (no VM)", run.tag);
    let start = Instant::now();
    let rc = run_logged(
        Command::new("bash")
            .args(&run.args)
            .current_dir(workspace_root()),
        &log,
        opts.timeout,
    )?;
    finish(
        "host",
        "-",
        &release,
        "(running)",
        run,
        rc,
        &log,
        start,
        &json,
    )
}

#[allow(clippy::too_many_arguments)]
pub(super) fn run_vm(
    apt: &Apt,
    name: &str,
    suite: &str,
    r: &Resolved,
    run: &Run,
    opts: &Options,
    root: &Path,
) -> Result<KernelResult> {
    let dir = kernels_dir().join(&r.release);
    let (json, log) = run.paths(&dir)?;
    let kept = record::path(&r.release, &run.tag);
    if let Some(earlier) = record::reusable(&kept, &run.source).filter(|_| !opts.force) {
        println!(
            "xtask: {} ({name}) {}: kept for these sources ({})",
            earlier.release,
            run.tag,
            kept.display()
        );
        return Ok(earlier);
    }
    if let Some(cached) = cached(&json, &run.fp, opts.force) {
        println!(
            "xtask: {} ({name}) {}: cached ({})",
            r.release,
            run.tag,
            json.display()
        );
        return Ok(cached);
    }
    keep_red_log(&json, &log);
    let vmlinuz = fetch(apt, r)?;
    println!(
        "xtask: {} ({name}, {suite}) {}: booting under QEMU (TCG), log {}",
        r.release,
        run.tag,
        log.display()
    );
    let exec = run
        .args
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let start = Instant::now();
    let vng = || {
        run_logged(
            Command::new("vng")
                .arg("--run")
                .arg(&vmlinuz)
                .args([
                    "--disable-kvm",
                    "--cpus",
                    "2",
                    "--memory",
                    &opts.memory,
                    "--name",
                    "rotor-kernels",
                ])
                .arg("--cwd")
                .arg(root)
                .arg("--exec")
                .arg(format!("bash {exec}"))
                .current_dir(root),
            &log,
            opts.timeout,
        )
    };
    let mut rc = vng()?;
    // vng once exited 255 within seconds without a line of output, right
    // after the previous kernel's VM (a clean-clone CI run; the same kernel
    // booted at once when run again): QEMU never started, so the kernel
    // was not tried. Such a start is tried once more; a kernel that prints
    // anything and fails is not.
    if matches!(rc, Some(c) if c != 0) && fs::metadata(&log).is_ok_and(|m| m.len() == 0) {
        println!("xtask: {} ({name}): vng exited ({rc:?}) before printing anything; starting it once more", r.release);
        std::thread::sleep(std::time::Duration::from_secs(2));
        rc = vng()?;
    }
    let package = format!("{} {}", r.packages[0], r.version);
    let result = finish(
        name, suite, &r.release, &package, run, rc, &log, start, &json,
    )?;
    if !run.source.is_empty() {
        record::keep(&kept, &result)?;
    }
    Ok(result)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn finish(
    name: &str,
    suite: &str,
    release: &str,
    package: &str,
    run: &Run,
    rc: Option<i32>,
    log: &Path,
    start: Instant,
    json: &Path,
) -> Result<KernelResult> {
    let text = String::from_utf8_lossy(&fs::read(log).unwrap_or_default()).into_owned();
    let (seen, mut results, done) = parse_log(&text);
    let boot = match (&seen, done, rc) {
        (Some(_), true, _) => "ok".to_string(),
        (_, _, None) => "timed out".to_string(),
        (None, _, Some(c)) => format!("no boot (exit {c})"),
        (Some(_), false, Some(c)) => format!("smoke script died (exit {c})"),
    };
    // a target the run never finished is a failure of that target, in its column
    for col in &run.columns {
        if !results.iter().any(|(c, _)| c == col) {
            let why = format!("fail {boot} after {} s", start.elapsed().as_secs());
            results.push((col.clone(), why));
        }
    }
    let result = KernelResult {
        name: name.into(),
        suite: suite.into(),
        release: seen.unwrap_or_else(|| release.to_string()),
        package: package.into(),
        fingerprint: run.fp.clone(),
        boot,
        results,
        seconds: start.elapsed().as_secs(),
        log: log.display().to_string(),
        date: now(),
        scale: scale_in(&text),
        commit: run.commit.clone(),
        source: run.source.clone(),
    };
    fs::write(json, serde_json::to_string_pretty(&result)?)?;
    Ok(result)
}

/// The `ROTOR-SCALE` smoke.sh printed in a log.
pub(super) fn scale_in(log: &str) -> Option<f64> {
    log.lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("ROTOR-SCALE "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// HEAD's short hash, `-dirty` when tracked files differ from it: once
/// per invocation, when the binaries are staged.
fn commit() -> String {
    static COMMIT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COMMIT.get_or_init(head_commit).clone()
}

fn head_commit() -> String {
    let git = |args: &[&str]| output(Command::new("git").args(args).current_dir(workspace_root()));
    let Ok(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return String::new();
    };
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_ok_and(|s| !s.trim().is_empty());
    format!("{}{}", head.trim(), if dirty { "-dirty" } else { "" })
}

pub(super) fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-=:+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quicker host calibration replaces the one a run was made with, and
    /// nothing else of its command line.
    #[test]
    fn a_later_calibration_replaces_the_host_ms_only() {
        let p = Path::new("/nonexistent");
        let mut run = Run::new(p, p, p, 96, 600, "fp", &[], None).expect("run");
        let before = run.args.clone();
        run.set_host_ms(37);
        let i = run
            .args
            .iter()
            .position(|a| a == "--host-ms")
            .expect("--host-ms");
        assert_eq!(run.args[i + 1], "37");
        assert_eq!(before[i + 1], "96");
        let changed = (before.iter().zip(&run.args))
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!((changed, before.len()), (1, run.args.len()));
    }
}
