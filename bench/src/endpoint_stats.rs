//! What the kernel's per-endpoint counting costs per request: the stream
//! timestamps (`bpf_ktime_get_ns` at a request's HEADERS and at its first
//! response HEADERS), the time-to-first-byte histogram and the counters of
//! `endpoint_stats` (ebpf/lib/endpoint.h).
//!
//! The same load (h2load, 4 connections × 16 streams of `/100b` through the
//! VIP to 3 nghttpd) runs through an agent with the counting on and one
//! started with `--no-endpoint-stats`, alternating, in one run. With
//! `kernel.bpf_stats_enabled` the kernel times every run of every program;
//! the agent's programs' `run_time_ns` (from its fds' fdinfo) divided by
//! the requests served is the programs' time per request. The difference
//! between the two agents is the counting's cost; req/s is shown too, but
//! on 2 cores its noise is larger than that cost.
//!
//! `cargo xtask bench --endpoint-stats` runs this alone.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use rotor_testbed::agent::Agent;
use rotor_testbed::tools::h2load;
use rotor_testbed::TestBed;

#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub requests: u64,
    /// Runs per agent, alternating.
    pub repeat: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            requests: 100_000,
            repeat: 3,
        }
    }
}

/// One run through one agent.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub counting: bool,
    pub requests: u64,
    pub req_per_s: f64,
    /// Every program of the agent, in ns per request served.
    pub bpf_ns_per_request: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatsCost {
    pub options: Options,
    pub runs: Vec<Run>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

impl EndpointStatsCost {
    fn median_of(&self, counting: bool, f: fn(&Run) -> f64) -> f64 {
        median(
            (self.runs.iter())
                .filter(|r| r.counting == counting)
                .map(f)
                .collect(),
        )
    }

    /// (ns per request with, without, difference)
    pub fn bpf_ns(&self) -> (f64, f64, f64) {
        let on = self.median_of(true, |r| r.bpf_ns_per_request);
        let off = self.median_of(false, |r| r.bpf_ns_per_request);
        (on, off, on - off)
    }

    pub fn markdown(&self) -> String {
        let (on, off, cost) = self.bpf_ns();
        let rps_on = self.median_of(true, |r| r.req_per_s);
        let rps_off = self.median_of(false, |r| r.req_per_s);
        let mut m = String::new();
        let _ = writeln!(
            m,
            "### What per-endpoint counting costs\n\n\
             h2load -c 4 -m 16 -n {} of `/100b` through rotor to 3 nghttpd, {} runs per agent, \
             alternating; `kernel.bpf_stats_enabled=1`; medians.\n\n\
             | agent | BPF programs, ns per request | req/s |\n|---|--:|--:|\n\
             | counting on (default) | {on:.0} | {rps_on:.0} |\n\
             | `--no-endpoint-stats` | {off:.0} | {rps_off:.0} |\n\n\
             The counting and the stream timestamps cost {cost:.0} ns of program time per request \
             ({:.1} % of the programs' time); req/s with ÷ without: {:.3}.",
            self.options.requests,
            self.options.repeat,
            if on > 0.0 { cost / on * 100.0 } else { 0.0 },
            rps_on / rps_off,
        );
        m
    }
}

/// Restores `kernel.bpf_stats_enabled` as it was.
struct BpfStats {
    was: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<BpfStats> {
        let was = std::fs::read_to_string(BPF_STATS).context(BPF_STATS)?;
        std::fs::write(BPF_STATS, "1").context(BPF_STATS)?;
        Ok(BpfStats { was })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, self.was.trim());
    }
}

/// The summed `run_time_ns` of the BPF programs process `pid` holds.
fn program_time_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir).with_context(|| dir.clone())? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue; // closed meanwhile
        };
        // Only program fds have a prog_type and run_time_ns (links name
        // their program by id).
        if !text.contains("prog_type:") {
            continue;
        }
        let ns = (text.lines())
            .find_map(|l| l.strip_prefix("run_time_ns:"))
            .and_then(|v| v.trim().parse::<u64>().ok());
        total += ns.unwrap_or(0);
    }
    Ok(total)
}

fn one_run(bed: &mut TestBed, counting: bool, requests: u64) -> Result<Run> {
    let endpoints = bed.topo.backend_addrs();
    bed.agent = None; // the previous agent stops: its programs go with it
    let extra: &[&str] = if counting {
        &[]
    } else {
        &["--no-endpoint-stats"]
    };
    let agent = Agent::start_with_args(&bed.topo, &bed.cgroup, &endpoints, extra)?;
    let pid = agent.pid();
    bed.agent = Some(agent);
    let url = format!("http://{}/100b", bed.topo.vip());
    let n = requests.to_string();
    let before = program_time_ns(pid)?;
    let start = Instant::now();
    let (summary, _) = h2load(
        &bed.topo,
        Some(&bed.cgroup),
        &["-c", "4", "-m", "16", "-n", &n, &url],
    )?;
    let elapsed = start.elapsed().as_secs_f64();
    let after = program_time_ns(pid)?;
    if summary.succeeded != requests {
        bail!(
            "h2load: {} of {requests} succeeded: {:?}",
            summary.succeeded,
            summary.lines
        );
    }
    Ok(Run {
        counting,
        requests,
        req_per_s: requests as f64 / elapsed,
        bpf_ns_per_request: after.saturating_sub(before) as f64 / requests as f64,
    })
}

pub fn run(opts: &Options) -> Result<EndpointStatsCost> {
    let mut bed = TestBed::new(3)?;
    let _stats = BpfStats::enable()?;
    let mut runs = Vec::new();
    for rep in 0..opts.repeat {
        for counting in [rep % 2 == 0, rep % 2 != 0] {
            let r = one_run(&mut bed, counting, opts.requests)?;
            println!(
                "bench: endpoint stats {}: {:.0} ns of BPF per request, {:.0} req/s",
                if counting { "on " } else { "off" },
                r.bpf_ns_per_request,
                r.req_per_s
            );
            runs.push(r);
        }
    }
    Ok(EndpointStatsCost {
        options: opts.clone(),
        runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_the_difference_of_medians() {
        let run = |counting, ns| Run {
            counting,
            requests: 1,
            req_per_s: 1.0,
            bpf_ns_per_request: ns,
        };
        let c = EndpointStatsCost {
            options: Options::default(),
            runs: vec![
                run(true, 900.0),
                run(false, 700.0),
                run(true, 1000.0),
                run(false, 800.0),
                run(true, 5000.0),
                run(false, 750.0),
            ],
        };
        assert_eq!(c.bpf_ns(), (1000.0, 750.0, 250.0));
        assert!(c.markdown().contains("cost 250 ns"), "{}", c.markdown());
    }
}
