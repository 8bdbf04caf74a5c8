//! Where the agent's own sockets live, as cgroups go.
//!
//! sockops runs for a socket in the cgroup of the process that created it;
//! an accepted socket inherits its listener's. The agent's accepted sockets
//! must join the socket hash at ESTABLISHED, before the client's first bytes
//! are queued (bytes queued before a socket joins are not parsed), so
//! sockops must also run in the agent's own cgroup. On a node that is
//! `--cgroup /sys/fs/cgroup`, which holds every pod. An agent started from a
//! shell with `--cgroup` naming the clients' cgroup alone is not inside it:
//! every connection then ran through the agent and stalled at the client's
//! initial window (h2load stopped after 21,845 responses of 3 bytes).

use std::path::{Path, PathBuf};

/// The cgroup v2 directory of this process, if it can be found: the
/// `0::PATH` line of /proc/self/cgroup under the cgroup2 mount that holds
/// `near` (the `--cgroup` directory).
pub fn own_cgroup(near: &Path) -> Option<PathBuf> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let near = near.canonicalize().ok()?;
    let mount = cgroup2_mount_holding(&mountinfo, &near)?;
    let own = unified_path(&cgroup)?;
    Some(mount.join(own.trim_start_matches('/')))
}

/// Whether `dir` is `root` or below it (both canonical or both as given).
pub fn is_within(dir: &Path, root: &Path) -> bool {
    dir.starts_with(root)
}

/// The path of the `0::` (cgroup v2) line of a /proc/PID/cgroup text.
fn unified_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The longest cgroup2 mount point that `dir` is under (mountinfo field 5
/// is the mount point; the file system type follows the " - " separator).
fn cgroup2_mount_holding(mountinfo: &str, dir: &Path) -> Option<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fstype = after.split_whitespace().next()?;
            let mount_point = before.split_whitespace().nth(4)?;
            (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .filter(|m| dir.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,name=systemd
";

    #[test]
    fn finds_the_cgroup2_mount_of_a_hybrid_hierarchy() {
        let m = cgroup2_mount_holding(MOUNTINFO, Path::new("/sys/fs/cgroup/unified/rotor-test-1"));
        assert_eq!(m.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(
            cgroup2_mount_holding(MOUNTINFO, Path::new("/sys/fs/cgroup/systemd/x")),
            None
        );
    }

    #[test]
    fn reads_the_unified_line() {
        let text = "9:name=systemd:/\n4:memory:/a/b\n0::/kubepods/pod1/agent\n";
        assert_eq!(unified_path(text), Some("/kubepods/pod1/agent"));
        assert_eq!(unified_path("4:memory:/a\n"), None);
    }

    #[test]
    fn within_means_the_same_directory_or_below() {
        let root = Path::new("/sys/fs/cgroup/unified/clients");
        assert!(is_within(Path::new("/sys/fs/cgroup/unified/clients"), root));
        assert!(is_within(
            Path::new("/sys/fs/cgroup/unified/clients/pod"),
            root
        ));
        assert!(!is_within(
            Path::new("/sys/fs/cgroup/unified/clients2"),
            root
        ));
        assert!(!is_within(Path::new("/sys/fs/cgroup/unified"), root));
    }
}
