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
            self.timeout.to_string(),
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
