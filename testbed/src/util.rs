//! Small helpers shared by the test bed: unique names, temp dirs, running commands.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A short suffix unique to this process and call: 6 random hex digits.
/// Names built from it (`rotor-<suffix>-client`) let tests run in parallel.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut bytes = [0u8; 3];
    let random = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        // Fall back to pid, time and a counter: still unique within this machine.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mix =
            std::process::id() ^ nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(16);
        bytes.copy_from_slice(&mix.to_le_bytes()[..3]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An id naming this process as the owner: `<pid in hex>-<4 random hex digits>`.
/// Namespaces and cgroups carry it, so [`crate::sweep`] can tell leftovers of a
/// killed test run (owner gone) from resources of a run still going on.
pub fn owned_id() -> String {
    format!("{:x}-{}", std::process::id(), &unique_suffix()[..4])
}

/// The owner pid of an id made by [`owned_id`] (the text before the first `-`).
pub fn owner_of(id: &str) -> Option<u32> {
    let (pid, rest) = id.split_once('-')?;
    if rest.is_empty() {
        return None;
    }
    u32::from_str_radix(pid, 16).ok()
}

/// Makes a command's process get SIGKILL when the thread that spawned it dies
/// (PR_SET_PDEATHSIG), so a test run killed outright leaves no servers behind.
/// It survives `exec` (of non-setuid binaries such as sh, ip, nghttpd). Spawn
/// from a thread that outlives the child: a test's own thread does.
pub fn kill_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; the closure touches no other state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A directory removed (recursively) on drop, unless `ROTOR_KEEP_LOGS` is set.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/<prefix>-<suffix>` (`/tmp` when TMPDIR is unset).
    pub fn new(prefix: &str) -> Result<TempDir> {
        let base = std::env::var_os("TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/tmp".into());
        for _ in 0..16 {
            let path = base.join(format!("{prefix}-{}", unique_suffix()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        bail!(
            "could not create a unique temp dir under {}",
            base.display()
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("ROTOR_KEEP_LOGS").is_some() {
            eprintln!("rotor-testbed: keeping {}", self.path.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Runs a command to completion; fails with its stderr if it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let desc = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning `{desc}`"))?;
    if !out.status.success() {
        bail!(
            "`{desc}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Runs a command with a time limit, killing it (by its pid) when the limit passes.
/// Returns its output whatever its exit status.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let desc = describe(cmd);
    kill_with_parent(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning `{desc}`"))?;
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().context("no stdout pipe")?;
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let limit = crate::scaled(limit);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for child")? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_t.join().unwrap_or_default();
            bail!(
                "`{desc}` timed out after {limit:?}: {}",
                String::from_utf8_lossy(&stderr).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// `program arg arg ...` for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The first and last `n` lines of a file, for error messages (empty if unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= 2 * n {
        return lines.join("\n");
    }
    // First and last lines: an error printed before a long backtrace stays visible.
    format!(
        "{}\n… ({} lines) …\n{}",
        lines[..n].join("\n"),
        lines.len() - 2 * n,
        lines[lines.len() - n..].join("\n")
    )
}

/// The cargo target directory of this workspace: `CARGO_TARGET_DIR`, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
}

/// Finds a binary built by this workspace: env `env_var`, then `CARGO_BIN_EXE_<name>`, then next to the running
/// executable (or its parent, for test binaries in `deps/`), then `target/release`.
pub fn find_binary(name: &str, env_var: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(name));
            if let Some(up) = dir.parent() {
                candidates.push(up.join(name));
            }
        }
    }
    candidates.push(target_dir().join("release").join(name));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!("binary `{name}` not found (set {env_var}); looked in {candidates:?}")
        })
}
