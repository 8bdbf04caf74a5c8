//! `TestCgroup`: a cgroup v2 directory for one test, removed on drop.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::util::owned_id;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Whether `path` is the mount point of a cgroup v2 file system.
fn is_cgroup2(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC
    }
}

/// The cgroup v2 mount: `ROTOR_CGROUP_ROOT` if set, else `/sys/fs/cgroup/unified`
/// when that is a cgroup2 mount (hybrid hierarchy), else `/sys/fs/cgroup`.
pub fn cgroup2_root() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ROTOR_CGROUP_ROOT") {
        let p = PathBuf::from(p);
        if !is_cgroup2(&p) {
            bail!("ROTOR_CGROUP_ROOT={} is not a cgroup2 mount", p.display());
        }
        return Ok(p);
    }
    for p in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        if is_cgroup2(Path::new(p)) {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("no cgroup2 mount at /sys/fs/cgroup/unified or /sys/fs/cgroup")
}

/// A cgroup `rotor-test-<suffix>` under the cgroup2 root. On drop its member
/// processes are moved back to the parent and the directory is removed.
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
    parent: PathBuf,
}

impl TestCgroup {
    /// Creates a cgroup under the detected cgroup2 root.
    pub fn create() -> Result<TestCgroup> {
        TestCgroup::create_in(&cgroup2_root()?)
    }

    /// Creates a cgroup under `root` (a cgroup2 directory).
    pub fn create_in(root: &Path) -> Result<TestCgroup> {
        if !is_cgroup2(root) {
            bail!("{} is not on a cgroup2 file system", root.display());
        }
        let path = root.join(format!("rotor-test-{}", owned_id()));
        fs::create_dir(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
        Ok(TestCgroup {
            path,
            parent: root.to_path_buf(),
        })
    }

    /// The cgroup directory (what the agent's `--cgroup` takes).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path of the `cgroup.procs` file (for shell wrappers).
    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    /// Moves process `pid` into this cgroup.
    pub fn add_pid(&self, pid: u32) -> Result<()> {
        fs::write(self.procs_file(), pid.to_string())
            .with_context(|| format!("adding pid {pid} to {}", self.path.display()))
    }

    /// The pids currently in this cgroup.
    pub fn pids(&self) -> Result<Vec<u32>> {
        let text = fs::read_to_string(self.procs_file())
            .with_context(|| format!("reading {}", self.procs_file().display()))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    fn remove(&self) -> Result<()> {
        // Members exit or move one by one; retry a few times for ones that were forking.
        let parent_procs = self.parent.join("cgroup.procs");
        for _ in 0..50 {
            let pids = self.pids().unwrap_or_default();
            for pid in &pids {
                // A pid that already exited fails with ESRCH: fine.
                let _ = fs::write(&parent_procs, pid.to_string());
            }
            match fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        fs::remove_dir(&self.path)
            .with_context(|| format!("removing cgroup {}", self.path.display()))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("rotor-testbed: {e:#}");
        }
    }
}
