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

use crate::workspace_root;

/// Kernel lines by name: (name, Debian suite). `host` runs without a VM.
pub const KERNELS: &[(&str, &str)] = &[
    ("5.10", "bullseye"),
    ("6.1", "bookworm"),
    ("6.12", "trixie"),
    ("newest", "trixie-backports"),
];

pub const DEFAULT: &[&str] = &["host", "5.10", "6.1", "6.12", "newest"];

/// Integration tests the smoke subset runs: (column, test target, filter).
const SMOKE: &[(&str, &str, &str)] = &[("balance", "balance", "one_connection_eight_streams_spread_evenly")];
/// `--full`: every integration test target, whole.
const FULL: &[&str] = &["balance", "bodies", "split_writes", "peers", "churn", "cleanup"];

/// Packages the VMs need on the host, and a command each provides.
const HOST_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("depmod", "kmod"),
    ("udevadm", "udev"),
];

/// Module trees the guest never needs (kept out of the unpacked kernels).
const SKIP_MODULES: &[&str] = &[
    "drivers/gpu", "drivers/media", "drivers/infiniband", "drivers/net/wireless", "drivers/net/ethernet",
    "drivers/staging", "drivers/scsi", "drivers/usb", "drivers/bluetooth", "drivers/iio", "drivers/input",
    "drivers/hid", "drivers/isdn", "drivers/mtd", "drivers/video", "drivers/platform", "sound",
];

pub struct Options {
    pub kernels: Vec<String>,
    pub force: bool,
    pub full: bool,
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
}

impl KernelResult {
    fn get(&self, col: &str) -> Option<&str> {
        self.results.iter().find(|(c, _)| c == col).map(|(_, v)| v.as_str())
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

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", "command -v \"$1\" >/dev/null 2>&1", "sh", cmd])
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.stdin(Stdio::null()).status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// QEMU, busybox, kmod, udev from apt; virtme-ng from PyPI.
fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = HOST_PACKAGES.iter().filter(|(c, _)| !have(c)).map(|(_, p)| *p).collect();
    if !missing.is_empty() {
        println!("xtask: installing {}", missing.join(" "));
        run(Command::new("apt-get").args(["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if !have("vng") {
        println!("xtask: pip install virtme-ng");
        run(Command::new("python3").args(["-m", "pip", "install", "-q", "virtme-ng"]))?;
        if !have("vng") {
            bail!("virtme-ng installed but `vng` is not on PATH");
        }
    }
    Ok(())
}

/// apt with its own sources, lists and cache under target/kernels/apt.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new() -> Result<Self> {
        let dir = kernels_dir().join("apt");
        for d in ["lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"] {
            fs::create_dir_all(dir.join(d))?;
        }
        let mut list = String::new();
        for (_, suite) in KERNELS {
            list.push_str(&format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian {suite} main\n"
            ));
        }
        fs::write(dir.join("sources.list"), list)?;
        Ok(Apt { dir })
    }

    fn opts(&self) -> Vec<String> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        vec![
            format!("-oDir::Etc::sourcelist={}", d("sources.list")),
            format!("-oDir::Etc::sourceparts={}", d("sources.list.d")),
            format!("-oDir::Etc::preferencesparts={}", d("preferences.d")),
            format!("-oDir::State::Lists={}", d("lists")),
            format!("-oDir::Cache={}", d("cache")),
            "-oAPT::Sandbox::User=root".into(),
            "-oAcquire::Languages=none".into(),
            "-q".into(),
        ]
    }

    fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.args(self.opts());
        c
    }

    /// `apt-get update` unless the lists are younger than six hours.
    fn update(&self) -> Result<()> {
        let stamp = self.dir.join("updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(6 * 3600));
        if !fresh {
            println!("xtask: apt-get update (Debian suites for kernels)");
            run(self.cmd("apt-get").arg("update"))?;
            fs::write(&stamp, "")?;
        }
        Ok(())
    }

    /// Version of `pkg` in `suite`.
    fn version_in(&self, pkg: &str, suite: &str) -> Result<String> {
        let out = output(self.cmd("apt-cache").args(["madison", pkg]))?;
        for line in out.lines() {
            let f: Vec<&str> = line.split('|').map(str::trim).collect();
            if f.len() >= 3 && f[2].split_whitespace().nth(1).is_some_and(|s| s.split('/').next() == Some(suite)) {
                return Ok(f[1].to_string());
            }
        }
        bail!("{pkg} not found in {suite}")
    }

    fn depends(&self, pkg: &str, version: &str) -> Result<Vec<String>> {
        let out = output(self.cmd("apt-cache").args(["show", &format!("{pkg}={version}")]))?;
        let line = out.lines().find(|l| l.starts_with("Depends:")).unwrap_or("Depends:");
        Ok(line["Depends:".len()..]
            .split(',')
            .flat_map(|alt| alt.split('|'))
            .filter_map(|d| d.split_whitespace().next())
            .map(str::to_string)
            .collect())
    }
}

/// A kernel line resolved to Debian packages.
struct Resolved {
    release: String,
    version: String,
    packages: Vec<String>,
}

fn resolve(apt: &Apt, suite: &str) -> Result<Resolved> {
    let meta = "linux-image-amd64";
    let version = apt.version_in(meta, suite)?;
    let image = apt
        .depends(meta, &version)?
        .into_iter()
        .find(|d| d.starts_with("linux-image-") && d != meta)
        .with_context(|| format!("{meta} {version} depends on no linux-image-*"))?;
    let release = image["linux-image-".len()..].to_string();
    let mut packages = vec![image.clone()];
    // 6.16+ split the image: vmlinuz in linux-binary-*, modules in linux-modules-*.
    for d in apt.depends(&image, &version)? {
        if d == format!("linux-binary-{release}") || d == format!("linux-modules-{release}") {
            packages.push(d);
        }
    }
    Ok(Resolved { release, version, packages })
}

/// Downloads and unpacks a kernel once; returns its vmlinuz.
fn fetch(apt: &Apt, r: &Resolved) -> Result<PathBuf> {
    let dir = kernels_dir().join(&r.release);
    let root = dir.join("root");
    let vmlinuz = root.join(format!("boot/vmlinuz-{}", r.release));
    let modules = root.join(format!("lib/modules/{}", r.release));
    if vmlinuz.exists() && modules.join("modules.dep").exists() {
        return Ok(vmlinuz);
    }
    let _ = fs::remove_dir_all(&root);
    let debs = dir.join("debs");
    fs::create_dir_all(&debs)?;
    fs::create_dir_all(&root)?;
    println!("xtask: downloading {} ({})", r.packages.join(" "), r.version);
    let specs: Vec<String> = r.packages.iter().map(|p| format!("{p}={}", r.version)).collect();
    run(apt.cmd("apt-get").arg("download").args(&specs).current_dir(&debs))?;
    for entry in fs::read_dir(&debs)? {
        let deb = entry?.path();
        if deb.extension().is_none_or(|e| e != "deb") {
            continue;
        }
        let excludes: Vec<String> = SKIP_MODULES.iter().map(|m| format!("--exclude=*/kernel/{m}")).collect();
        let script = format!(
            "dpkg-deb --fsys-tarfile \"$1\" | tar -x -C \"$2\" {}",
            excludes.iter().map(|e| format!("'{e}'")).collect::<Vec<_>>().join(" ")
        );
        run(Command::new("sh").args(["-c", &script, "sh"]).arg(&deb).arg(&root))?;
    }
    // One layout for all: boot/vmlinuz-R and lib/modules/R.
    let usr_modules = root.join(format!("usr/lib/modules/{}", r.release));
    if usr_modules.exists() && !modules.exists() {
        fs::create_dir_all(root.join("lib/modules"))?;
        fs::rename(&usr_modules, &modules)?;
    }
    let in_modules = modules.join("vmlinuz");
    if !vmlinuz.exists() && in_modules.exists() {
        fs::create_dir_all(root.join("boot"))?;
        fs::rename(&in_modules, &vmlinuz)?;
    }
    if !vmlinuz.exists() {
        bail!("{}: no vmlinuz in {}", r.release, r.packages.join(" "));
    }
    run(Command::new("depmod").arg("-b").arg(&root).arg(&r.release))?;
    fs::remove_dir_all(&debs)?;
    Ok(vmlinuz)
}

/// `cargo test --no-run` for one target; returns the test executable.
fn test_binary(args: &[&str]) -> Result<PathBuf> {
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
            if let Some(p) = v.get("executable").and_then(|e| e.as_str()).filter(|_| is_test) {
                exe = Some(PathBuf::from(p));
            }
        }
    }
    exe.with_context(|| format!("no test executable from cargo test {}", args.join(" ")))
}

fn stage(file: &Path, dir: &Path) -> Result<PathBuf> {
    let to = dir.join(file.file_name().context("file name")?);
    fs::copy(file, &to).with_context(|| format!("copying {}", file.display()))?;
    Ok(to)
}

fn fingerprint(files: &[PathBuf]) -> Result<String> {
    let mut h = DefaultHasher::new();
    for f in files {
        let mut buf = Vec::new();
        fs::File::open(f).with_context(|| f.display().to_string())?.read_to_end(&mut buf)?;
        buf.hash(&mut h);
    }
    Ok(format!("{:016x}", h.finish()))
}

fn now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Runs `cmd` in its own process group with its output in `log`; kills the
/// whole group (QEMU and virtiofsd included) on timeout or Ctrl-C.
fn run_logged(cmd: &mut Command, log: &Path, timeout: Duration) -> Result<Option<i32>> {
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

fn parse_log(log: &str) -> (Option<String>, Vec<(String, String)>, bool) {
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
        let code = crate::cargo(&crate::strings(&["build", "--release", "--workspace", "--bins"]))?;
        if code != 0 {
            bail!("cargo build failed");
        }
    }
    let probe_bin = test_binary(&["-p", "rotor", "--lib"])?;
    let mut columns: Vec<(String, PathBuf, String)> = Vec::new();
    if opts.full {
        for t in FULL {
            columns.push((t.to_string(), test_binary(&["-p", "rotor-tests", "--test", t])?, String::new()));
        }
    } else {
        for (col, t, filter) in SMOKE {
            columns.push((col.to_string(), test_binary(&["-p", "rotor-tests", "--test", t])?, filter.to_string()));
        }
    }
    // Copies, so a concurrent build in the shared target dir cannot swap
    // binaries under a running VM; the tests find their helpers beside them.
    let bin_dir = kernels_dir().join("bin");
    let _ = fs::remove_dir_all(&bin_dir);
    fs::create_dir_all(&bin_dir)?;
    let mut files: Vec<PathBuf> = vec![script.clone()];
    for entry in fs::read_dir(root.join("target/release"))? {
        let p = entry?.path();
        let is_exe = fs::metadata(&p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if is_exe && p.extension().is_none() {
            files.push(stage(&p, &bin_dir)?);
        }
    }
    let probe_bin = stage(&probe_bin, &bin_dir)?;
    files.push(probe_bin.clone());
    for c in &mut columns {
        c.1 = stage(&c.1, &bin_dir)?;
        files.push(c.1.clone());
    }
    let fp = fingerprint(&files)?;
    let mut smoke_args: Vec<String> =
        vec![script.display().to_string(), bin_dir.display().to_string(), probe_bin.display().to_string()];
    for (col, bin, filter) in &columns {
        let f = if filter.is_empty() { String::new() } else { format!(":{filter}") };
        smoke_args.push(format!("{col}={}{f}", bin.display()));
    }

    let apt = Apt::new()?;
    let mut rows: Vec<KernelResult> = Vec::new();
    for name in &opts.kernels {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        let row = if name == "host" {
            run_host(&smoke_args, &fp, opts)?
        } else {
            let suite = KERNELS
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| *s)
                .with_context(|| format!("unknown kernel {name}: one of host, 5.10, 6.1, 6.12, newest"))?;
            apt.update()?;
            let resolved = resolve(&apt, suite)?;
            run_vm(&apt, name, suite, &resolved, &smoke_args, &fp, opts, &root)?
        };
        println!(
            "xtask: {} ({}): {} in {} s",
            row.release,
            row.name,
            if row.green() { "green" } else { "RED" },
            row.seconds
        );
        rows.push(row);
    }
    let cols: Vec<String> = std::iter::once("probe".to_string()).chain(columns.iter().map(|c| c.0.clone())).collect();
    print_table(&rows, &cols);
    Ok(rows.iter().all(KernelResult::green))
}

fn cached(path: &Path, fp: &str, force: bool) -> Option<KernelResult> {
    if force {
        return None;
    }
    let r: KernelResult = serde_json::from_str(&fs::read_to_string(path).ok()?).ok()?;
    (r.fingerprint == fp && r.boot == "ok").then_some(r)
}

fn run_host(smoke_args: &[String], fp: &str, opts: &Options) -> Result<KernelResult> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")?.trim().to_string();
    let dir = kernels_dir().join(format!("host-{release}"));
    fs::create_dir_all(&dir)?;
    let json = dir.join("result.json");
    if let Some(r) = cached(&json, fp, opts.force) {
        println!("xtask: host {release}: cached ({})", json.display());
        return Ok(r);
    }
    println!("xtask: host {release}: running the smoke subset (no VM)");
    let log = dir.join("smoke.log");
    let start = Instant::now();
    let rc = run_logged(Command::new("bash").args(smoke_args).current_dir(workspace_root()), &log, opts.timeout)?;
    finish("host", "-", &release, "(running)", fp, rc, &log, start, &json)
}

#[allow(clippy::too_many_arguments)]
fn run_vm(
    apt: &Apt,
    name: &str,
    suite: &str,
    r: &Resolved,
    smoke_args: &[String],
    fp: &str,
    opts: &Options,
    root: &Path,
) -> Result<KernelResult> {
    let dir = kernels_dir().join(&r.release);
    fs::create_dir_all(&dir)?;
    let json = dir.join("result.json");
    if let Some(cached) = cached(&json, fp, opts.force) {
        println!("xtask: {} ({name}): cached ({})", r.release, json.display());
        return Ok(cached);
    }
    let vmlinuz = fetch(apt, r)?;
    let log = dir.join("smoke.log");
    println!("xtask: {} ({name}, {suite}): booting under QEMU (TCG), log {}", r.release, log.display());
    let exec = smoke_args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ");
    let start = Instant::now();
    let rc = run_logged(
        Command::new("vng")
            .arg("--run")
            .arg(&vmlinuz)
            .args(["--disable-kvm", "--cpus", "2", "--memory", &opts.memory, "--name", "rotor-kernels"])
            .arg("--cwd")
            .arg(root)
            .arg("--exec")
            .arg(format!("bash {exec}"))
            .current_dir(root),
        &log,
        opts.timeout,
    )?;
    let package = format!("{} {}", r.packages[0], r.version);
    finish(name, suite, &r.release, &package, fp, rc, &log, start, &json)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    name: &str,
    suite: &str,
    release: &str,
    package: &str,
    fp: &str,
    rc: Option<i32>,
    log: &Path,
    start: Instant,
    json: &Path,
) -> Result<KernelResult> {
    let text = String::from_utf8_lossy(&fs::read(log).unwrap_or_default()).into_owned();
    let (seen, results, done) = parse_log(&text);
    let boot = match (&seen, done, rc) {
        (Some(_), true, _) => "ok".to_string(),
        (_, _, None) => "timed out".to_string(),
        (None, _, Some(c)) => format!("no boot (exit {c})"),
        (Some(_), false, Some(c)) => format!("smoke script died (exit {c})"),
    };
    let result = KernelResult {
        name: name.into(),
        suite: suite.into(),
        release: seen.unwrap_or_else(|| release.to_string()),
        package: package.into(),
        fingerprint: fp.into(),
        boot,
        results,
        seconds: start.elapsed().as_secs(),
        log: log.display().to_string(),
        date: now(),
    };
    fs::write(json, serde_json::to_string_pretty(&result)?)?;
    Ok(result)
}

fn shell_quote(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-=:+,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `ok 40 features [3 s]` → `ok`; `refused kernel X lacks 4 features ...: A (…` → `refused: A`.
fn cell(v: Option<&str>) -> String {
    let Some(v) = v else { return "-".into() };
    let v = v.split(" [").next().unwrap_or(v);
    let (status, rest) = v.split_once(' ').unwrap_or((v, ""));
    let short = |s: &str, n: usize| if s.chars().count() > n { format!("{}…", s.chars().take(n).collect::<String>()) } else { s.to_string() };
    match status {
        "ok" => "ok".into(),
        "refused" => {
            // the first missing feature's name: after "needs: " (probe) or "lacks ..." text
            let what = rest.split_once("needs: ").map(|x| x.1).unwrap_or(rest);
            let what = what.split(" (").next().unwrap_or(what);
            format!("refused: {}", short(what, 48))
        }
        other => format!("{other}: {}", short(rest, 48)),
    }
}

fn print_table(rows: &[KernelResult], cols: &[String]) {
    let mut table: Vec<Vec<String>> = vec![{
        let mut h = vec!["kernel".to_string(), "debian".into(), "boot".into()];
        h.extend(cols.iter().cloned());
        h.extend(["time".into(), "".into()]);
        h
    }];
    for r in rows {
        let mut line = vec![r.release.clone(), r.suite.clone(), r.boot.clone()];
        line.extend(cols.iter().map(|c| cell(r.get(c))));
        line.push(format!("{} s", r.seconds));
        line.push(if r.green() { "green".into() } else { "RED".into() });
        table.push(line);
    }
    let widths: Vec<usize> =
        (0..table[0].len()).map(|i| table.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
    println!();
    for (n, line) in table.iter().enumerate() {
        let cells: Vec<String> = line.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("| {} |", cells.join(" | "));
        if n == 0 {
            println!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
        }
    }
    println!();
    println!("Logs and results: {}/<kernel>/smoke.log, result.json", kernels_dir().display());
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
            results: vec![("probe".into(), probe.into()), ("balance".into(), "refused lacks x".into())],
            seconds: 1,
            log: String::new(),
            date: String::new(),
        };
        assert!(r.green());
        assert_eq!(cell(r.get("probe")), "refused: 32-bit atomic fetch-and-add");
        r.results[1].1 = "fail rc=101 boom".into();
        assert!(!r.green());
        r.results = vec![("probe".into(), "ok".into()), ("balance".into(), "ok".into())];
        assert!(r.green());
        r.boot = "timed out".into();
        assert!(!r.green());
    }
}
