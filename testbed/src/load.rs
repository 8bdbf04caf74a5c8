//! Running the `rotor-load` client in the client namespace (and test cgroup).

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cgroup::TestCgroup;
use crate::loadgen::LoadReport;
use crate::process::{netns_command, Child, Stream};
use crate::topology::{Topology, VIP};
use crate::util::find_binary;

/// What to run; turns into `rotor-load` arguments.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub addr: SocketAddrV4,
    pub connections: usize,
    pub streams: usize,
    pub requests: Option<u64>,
    /// Seconds to keep issuing requests.
    pub duration: Option<f64>,
    /// Requests per second, over all connections (None: as fast as possible).
    pub rate: Option<f64>,
    pub path: Option<String>,
    pub upload_bytes: Option<usize>,
    /// Chunk size for the hand-written split-write client.
    pub split_writes: Option<usize>,
    pub chunk_delay_us: Option<u64>,
    /// Seconds before the client gives up (unfinished requests fail).
    pub timeout: f64,
}

impl Default for LoadSpec {
    fn default() -> LoadSpec {
        LoadSpec {
            addr: VIP,
            connections: 1,
            streams: 1,
            requests: Some(1),
            duration: None,
            rate: None,
            path: None,
            upload_bytes: None,
            split_writes: None,
            chunk_delay_us: None,
            timeout: 60.0,
        }
    }
}

impl LoadSpec {
    /// `connections` connections × `streams` streams, `requests` GETs of /whoami to the VIP.
    pub fn whoami(connections: usize, streams: usize, requests: u64) -> LoadSpec {
        LoadSpec {
            connections,
            streams,
            requests: Some(requests),
            ..LoadSpec::default()
        }
    }

    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--addr".to_string(),
            self.addr.to_string(),
            "--connections".into(),
            self.connections.to_string(),
            "--streams".into(),
            self.streams.to_string(),
            "--timeout".into(),
            crate::scaled_secs(self.timeout).to_string(),
        ];
        let mut opt = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(k.to_string());
                a.push(v);
            }
        };
        opt("--requests", self.requests.map(|v| v.to_string()));
        opt("--duration", self.duration.map(|v| v.to_string()));
        opt("--rate", self.rate.map(|v| v.to_string()));
        opt("--path", self.path.clone());
        opt("--upload-bytes", self.upload_bytes.map(|v| v.to_string()));
        opt("--split-writes", self.split_writes.map(|v| v.to_string()));
        opt(
            "--chunk-delay-us",
            self.chunk_delay_us.map(|v| v.to_string()),
        );
        a
    }
}

/// The `rotor-load` binary: `ROTOR_LOAD_BIN`, next to the running executable, or in target/release.
pub fn load_binary() -> Result<PathBuf> {
    find_binary("rotor-load", "ROTOR_LOAD_BIN")
}

/// A `rotor-load` run in progress.
#[derive(Debug)]
pub struct RunningLoad {
    child: Child,
    limit: Duration,
}

impl RunningLoad {
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Waits for the client and parses its JSON report.
    pub fn finish(mut self) -> Result<LoadReport> {
        let status = self.child.wait_timeout(self.limit)?;
        let out = self.child.output(Stream::Stdout);
        let line = out
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .with_context(|| {
                format!(
                    "rotor-load ({status}) printed no report; stderr:\n{}",
                    self.child.stderr_tail()
                )
            })?;
        serde_json::from_str(line).with_context(|| format!("parsing rotor-load report {line:?}"))
    }
}

/// Starts `rotor-load` in the client namespace, in `cgroup` when given.
pub fn spawn_load(
    topo: &Topology,
    cgroup: Option<&TestCgroup>,
    spec: &LoadSpec,
) -> Result<RunningLoad> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let bin = load_binary()?;
    let mut cmd = netns_command(topo.client_ns(), cgroup.map(|c| c.path()), &bin);
    cmd.args(spec.args());
    let name = format!("rotor-load-{}", RUNS.fetch_add(1, Ordering::Relaxed));
    let child = Child::spawn(&name, cmd, topo.dir())?;
    // The client enforces spec.timeout itself; allow it time to report.
    // (finish's wait scales the whole limit, the duration included: a slow
    // machine also issues its requests late.)
    let limit = Duration::from_secs_f64(spec.timeout + spec.duration.unwrap_or(0.0) + 15.0);
    Ok(RunningLoad { child, limit })
}

/// Runs `rotor-load` to completion and returns its report.
pub fn run_load(
    topo: &Topology,
    cgroup: Option<&TestCgroup>,
    spec: &LoadSpec,
) -> Result<LoadReport> {
    spawn_load(topo, cgroup, spec)?.finish()
}

/// Why `counts` (requests per backend, by name) is not `total` spread over
/// `backends` with each within `slack` of an even share, or `None` if it
/// is. A backend missing from `counts` got nothing; a name not in
/// `backends` (a response from elsewhere) is uneven too. This is the check
/// per-request balancing passes and per-connection balancing (kube-proxy's
/// DNAT: one connection, one backend) fails.
pub fn uneven_spread<'a>(
    counts: impl IntoIterator<Item = (&'a str, u64)>,
    backends: &[&str],
    total: u64,
    slack: u64,
) -> Option<String> {
    let counts: Vec<(&str, u64)> = counts.into_iter().collect();
    let share = total / backends.len() as u64;
    let mut wrong = Vec::new();
    for (name, n) in &counts {
        if !backends.contains(name) && *n > 0 {
            wrong.push(format!("{name}: {n}, not a backend"));
        }
    }
    for b in backends {
        let n = counts
            .iter()
            .filter(|(name, _)| name == b)
            .map(|(_, n)| n)
            .sum::<u64>();
        if n.abs_diff(share) > slack {
            wrong.push(format!("{b}: {n}, want {share}±{slack}"));
        }
    }
    (!wrong.is_empty()).then(|| format!("{} ({counts:?})", wrong.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::uneven_spread;

    const BE: [&str; 3] = ["be1", "be2", "be3"];

    #[test]
    fn an_even_spread_passes() {
        let c = [("be1", 1000), ("be2", 950), ("be3", 1050)];
        assert_eq!(uneven_spread(c, &BE, 3000, 100), None);
    }

    #[test]
    fn one_connection_on_one_backend_fails() {
        let e = uneven_spread([("be2", 3000)], &BE, 3000, 100).expect("uneven");
        assert!(e.contains("be1: 0, want 1000±100"), "{e}");
        assert!(e.contains("be2: 3000"), "{e}");
    }

    #[test]
    fn a_stranger_fails() {
        let c = [("be1", 4), ("be2", 4), ("be3", 4), ("other", 1)];
        assert!(uneven_spread(c, &BE, 12, 2).is_some());
    }
}
