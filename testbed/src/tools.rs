//! Real HTTP/2 peers run as clients in the client namespace: curl, nghttp, h2load.

use std::process::Output;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cgroup::TestCgroup;
use crate::process::netns_command;
use crate::topology::Topology;
use crate::util::run_with_timeout;

/// Runs `program args...` in the client namespace (and `cgroup`), with a time limit.
/// Returns the output whatever the exit status.
pub fn client_tool(
    topo: &Topology,
    cgroup: Option<&TestCgroup>,
    program: &str,
    args: &[&str],
    limit: Duration,
) -> Result<Output> {
    let mut cmd = netns_command(topo.client_ns(), cgroup.map(|c| c.path()), program);
    cmd.args(args);
    run_with_timeout(&mut cmd, limit)
}

fn check(program: &str, out: Output) -> Result<Output> {
    if !out.status.success() {
        bail!(
            "{program} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// `curl --http2-prior-knowledge URL`: the response body. One URL per curl
/// (curl 7.88 sends only the first of several URLs on one prior-knowledge connection).
pub fn curl_h2(topo: &Topology, cgroup: Option<&TestCgroup>, url: &str) -> Result<Vec<u8>> {
    let max_time = crate::scaled_secs(10.0).to_string();
    let args = [
        "-sS",
        "--fail",
        "--http2-prior-knowledge",
        "--max-time",
        &max_time,
        url,
    ];
    let out = check(
        "curl",
        client_tool(topo, cgroup, "curl", &args, Duration::from_secs(15))?,
    )?;
    Ok(out.stdout)
}

/// `nghttp args...` (fails on a non-zero exit); stdout holds response bodies unless `-n`.
pub fn nghttp(topo: &Topology, cgroup: Option<&TestCgroup>, args: &[&str]) -> Result<Output> {
    check(
        "nghttp",
        client_tool(topo, cgroup, "nghttp", args, Duration::from_secs(30))?,
    )
}

/// The counters of h2load's `requests:` line, and its summary lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct H2loadSummary {
    pub total: u64,
    pub started: u64,
    pub done: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    /// The `finished in …`, `requests: …` and `status codes: …` lines, verbatim.
    pub lines: Vec<String>,
}

/// Parses h2load's stdout, e.g.
/// `requests: 3000 total, 3000 started, 3000 done, 3000 succeeded, 0 failed, 0 errored, 0 timeout`.
pub fn parse_h2load(stdout: &str) -> Result<H2loadSummary> {
    let mut s = H2loadSummary::default();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("requests:"))
        .with_context(|| format!("no `requests:` line in h2load output:\n{stdout}"))?;
    for part in line.trim_start_matches("requests:").split(',') {
        let mut it = part.split_whitespace();
        let (Some(n), Some(key)) = (it.next(), it.next()) else {
            continue;
        };
        let n: u64 = n
            .parse()
            .with_context(|| format!("bad number in {line:?}"))?;
        match key {
            "total" => s.total = n,
            "started" => s.started = n,
            "done" => s.done = n,
            "succeeded" => s.succeeded = n,
            "failed" => s.failed = n,
            "errored" => s.errored = n,
            "timeout" => s.timeout = n,
            _ => {}
        }
    }
    s.lines = stdout
        .lines()
        .filter(|l| {
            l.starts_with("finished in")
                || l.starts_with("requests:")
                || l.starts_with("status codes:")
        })
        .map(str::to_string)
        .collect();
    Ok(s)
}

/// Runs `h2load args...` and parses its summary.
pub fn h2load(
    topo: &Topology,
    cgroup: Option<&TestCgroup>,
    args: &[&str],
) -> Result<(H2loadSummary, Output)> {
    let out = client_tool(topo, cgroup, "h2load", args, Duration::from_secs(120))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary = parse_h2load(&stdout)
        .with_context(|| format!("h2load stderr: {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok((summary, out))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_requests_line() {
        let out = "finished in 2.19ms, 45620.44 req/s, 1.35MB/s\n\
requests: 100 total, 100 started, 100 done, 98 succeeded, 2 failed, 1 errored, 0 timeout\n\
status codes: 98 2xx, 0 3xx, 0 4xx, 0 5xx\n";
        let s = super::parse_h2load(out).unwrap();
        assert_eq!(
            (s.total, s.done, s.succeeded, s.failed, s.errored),
            (100, 100, 98, 2, 1)
        );
        assert_eq!(s.lines.len(), 3);
    }
}
