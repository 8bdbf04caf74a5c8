//! Leftovers of test runs that were killed before their guards could drop:
//! namespaces `rotor-<owner>-…` and cgroups `rotor-test-<owner>` whose owner
//! process is gone. Resources of runs still alive are never touched.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::cgroup::cgroup2_root;
use crate::netns;
use crate::util::{owner_of, run};

/// What [`find`] found or [`sweep`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stale {
    pub netns: Vec<String>,
    pub cgroups: Vec<PathBuf>,
}

fn owner_dead(id: &str) -> bool {
    owner_of(id).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

fn is_hex(s: &str, len: Option<usize>) -> bool {
    !s.is_empty() && len.is_none_or(|l| s.len() == l) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `<pid hex>-<4 hex>` exactly, as [`crate::util::owned_id`] makes them.
fn is_owned_id(id: &str) -> bool {
    matches!(id.split_once('-'), Some((pid, rand)) if is_hex(pid, None) && pid.len() <= 8 && is_hex(rand, Some(4)))
}

/// A namespace name of a [`crate::Topology`]: `rotor-<id>-client|node|be<k>`.
fn stale_netns(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("rotor-") else {
        return false;
    };
    let Some((id, role)) = rest.rsplit_once('-') else {
        return false;
    };
    let role_ok = role == "client"
        || role == "node"
        || role
            .strip_prefix("be")
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()));
    role_ok && is_owned_id(id) && owner_dead(id)
}

/// A cgroup name of a [`crate::TestCgroup`]: `rotor-test-<id>`.
fn stale_cgroup(name: &str) -> bool {
    name.strip_prefix("rotor-test-")
        .is_some_and(|id| is_owned_id(id) && owner_dead(id))
}

/// Leftovers whose owner process no longer exists.
pub fn find() -> Result<Stale> {
    let netns = netns::list()?
        .into_iter()
        .filter(|n| stale_netns(n))
        .collect();
    let root = cgroup2_root()?;
    let mut cgroups = Vec::new();
    for entry in fs::read_dir(&root).with_context(|| format!("listing {}", root.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if stale_cgroup(&name) && entry.path().is_dir() {
            cgroups.push(entry.path());
        }
    }
    Ok(Stale { netns, cgroups })
}

/// Removes the leftovers: `ip netns del` for namespaces (their veths and
/// iptables rules go with them); cgroups get their members moved to the parent,
/// then rmdir. Processes are not killed (test children die with their parent).
pub fn sweep() -> Result<Stale> {
    let stale = find()?;
    for n in &stale.netns {
        run(Command::new("ip").args(["netns", "del", n]))?;
    }
    for cg in &stale.cgroups {
        let parent = cg.parent().context("cgroup without parent")?;
        let procs = fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines() {
            let _ = fs::write(parent.join("cgroup.procs"), pid.trim());
        }
        fs::remove_dir(cg).with_context(|| format!("removing cgroup {}", cg.display()))?;
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use crate::util::owner_of;

    #[test]
    fn owner_parsing() {
        assert_eq!(owner_of("1a2b-9f3c-client"), Some(0x1a2b));
        assert_eq!(owner_of("1a2b-9f3c"), Some(0x1a2b));
        assert_eq!(owner_of("exp1"), None);
        assert_eq!(owner_of("zz-1"), None);
    }

    #[test]
    fn only_our_names() {
        // pid 0x7fffffff cannot exist (pid_max is at most 2^22).
        assert!(super::stale_netns("rotor-7fffffff-9f3c-client"));
        assert!(super::stale_netns("rotor-7fffffff-9f3c-be12"));
        assert!(super::stale_cgroup("rotor-test-7fffffff-00ff"));
        assert!(!super::stale_netns("rotor-7fffffff-9f3c-other"));
        assert!(!super::stale_netns("rotor-7fffffff-9f3-node"));
        assert!(!super::stale_netns("rotor-exp1"));
        assert!(!super::stale_cgroup("rotor-test-7fffffff"));
        let me = format!("rotor-{:x}-abcd-node", std::process::id());
        assert!(!super::stale_netns(&me), "owner alive");
    }
}
