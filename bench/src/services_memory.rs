//! Memory with 5,000 balanced Services: the stand-in API server
//! (testbed/src/kube_api.rs) holds 5,000 Services labelled
//! `rotor.dev/balance`, each with a slice of 3 endpoints, and 20,000
//! unlabelled Services with their slices, which the agent must not hold.
//! Measured against the same agent on an empty cluster, in the same run:
//! its resident memory (VmRSS), the time from its start to `ready`, and the
//! time from one Service's change to the agent applying it (the change is a
//! 4th endpoint in one slice; applied is the agent's `service configured`
//! log line for that Service).
//!
//! `cargo xtask bench --services-memory` runs this alone.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use rotor_testbed::agent::Agent;
use rotor_testbed::kube_api::{endpoint_slice, service, EndpointState, Kind, KubeApi};
use rotor_testbed::TestBed;

#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub labelled: usize,
    pub unlabelled: usize,
    pub endpoints: usize,
    /// Service changes timed per agent.
    pub changes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            labelled: 5_000,
            unlabelled: 20_000,
            endpoints: 3,
            changes: 10,
        }
    }
}

/// One agent's figures.
#[derive(Debug, Clone, Serialize)]
pub struct AgentFigures {
    pub services_balanced: usize,
    pub vm_rss_kib: u64,
    pub ready_s: f64,
    /// From a slice change to the agent's log line, each change.
    pub change_applied_ms: Vec<f64>,
}

impl AgentFigures {
    fn change_median_ms(&self) -> f64 {
        crate::stats::Summary::of(&self.change_applied_ms).median
    }
    fn change_max_ms(&self) -> f64 {
        crate::stats::Summary::of(&self.change_applied_ms).max
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServicesMemory {
    pub options: Options,
    /// The agent on an empty cluster (one Service is added for the change timing).
    pub baseline: AgentFigures,
    pub loaded: AgentFigures,
}

impl ServicesMemory {
    pub fn markdown(&self) -> String {
        let o = &self.options;
        let (b, l) = (&self.baseline, &self.loaded);
        let mut m = String::new();
        let _ = writeln!(
            m,
            "### Memory with {} balanced Services\n\n\
             The stand-in API server holds {} Services labelled `rotor.dev/balance` ({} endpoints each) \
             and {} unlabelled Services with their slices; the baseline is the same agent on an empty \
             cluster, measured in the same run. Applied: from the slice change to the agent's \
             `service configured` line ({} changes).\n",
            o.labelled, o.labelled, o.endpoints, o.unlabelled, o.changes
        );
        let _ = writeln!(
            m,
            "| agent | Services balanced | VmRSS | ready after | change applied (median / max) |"
        );
        let _ = writeln!(m, "|---|---:|---:|---:|---:|");
        for (name, f) in [("empty cluster", b), ("loaded", l)] {
            let _ = writeln!(
                m,
                "| {name} | {} | {:.1} MiB | {:.2} s | {:.1} / {:.1} ms |",
                f.services_balanced,
                f.vm_rss_kib as f64 / 1024.0,
                f.ready_s,
                f.change_median_ms(),
                f.change_max_ms()
            );
        }
        let extra = l.vm_rss_kib.saturating_sub(b.vm_rss_kib) as f64;
        let _ = writeln!(
            m,
            "\n{:.1} MiB more than the empty cluster: {:.2} MiB per 1,000 balanced Services.",
            extra / 1024.0,
            extra / 1024.0 / (o.labelled as f64 / 1000.0)
        );
        m
    }
}

fn vip(k: usize) -> SocketAddrV4 {
    // 10.100.0.1 onwards, past the test VIPs.
    let n = 0x0a64_0001u32 + k as u32;
    SocketAddrV4::new(Ipv4Addr::from(n), 8080)
}

fn endpoint(k: usize, e: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a80_0000u32 + (k as u32) * 8 + e as u32)
}

fn slice_of(name: &str, k: usize, n: usize) -> serde_json::Value {
    let eps: Vec<_> = (0..n)
        .map(|e| (endpoint(k, e), EndpointState::Ready))
        .collect();
    endpoint_slice("bench", &format!("{name}-abcde"), name, "h2c", 9090, &eps)
}

/// Fills the stand-in: `labelled` balanced Services and `unlabelled` others,
/// each with one slice of `endpoints` endpoints.
fn fill(api: &KubeApi, o: &Options, labelled: usize, unlabelled: usize) -> Result<()> {
    for k in 0..labelled + unlabelled {
        let balanced = k < labelled;
        let name = if balanced {
            format!("svc-{k}")
        } else {
            format!("other-{k}")
        };
        let labels: &[(&str, &str)] = if balanced {
            &[("rotor.dev/balance", "round-robin"), ("app", "bench")]
        } else {
            &[("app", "bench")]
        };
        api.apply(
            Kind::Service,
            service("bench", &name, labels, vip(k), "h2c"),
        )?;
        api.apply(Kind::EndpointSlice, slice_of(&name, k, o.endpoints))?;
    }
    Ok(())
}

fn vm_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// Times `changes` slice changes of Service `svc-k` (k = 0): each adds or
/// removes a 4th endpoint; applied when the agent logs the Service.
fn time_changes(api: &KubeApi, agent: &Agent, o: &Options) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for c in 0..o.changes {
        let n = if c % 2 == 0 {
            o.endpoints + 1
        } else {
            o.endpoints
        };
        let want = format!("service=bench/svc-0:8080 vip={} endpoints={n}", vip(0));
        let seen = count(&agent.stderr_plain(), &want);
        let start = Instant::now();
        api.apply(Kind::EndpointSlice, slice_of("svc-0", 0, n))?;
        loop {
            if count(&agent.stderr_plain(), &want) > seen {
                out.push(start.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("the agent did not log `{want}` within 10 s of the change");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(out)
}

fn count(text: &str, what: &str) -> usize {
    text.matches(what).count()
}

/// One agent against a stand-in holding `labelled` + `unlabelled` Services.
fn measure(o: &Options, labelled: usize, unlabelled: usize) -> Result<AgentFigures> {
    let mut bed = TestBed::new(1)?;
    let api = KubeApi::start_in_netns(bed.topo.node_ns())?;
    let filled = Instant::now();
    fill(&api, o, labelled, unlabelled)?;
    println!(
        "bench: services-memory: stand-in filled with {labelled} + {unlabelled} Services in {:.1} s",
        filled.elapsed().as_secs_f64()
    );
    let kubeconfig = bed.topo.dir().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig)?;
    let start = Instant::now();
    let mut agent = Agent::launch_kubernetes(&bed.topo, &bed.cgroup, &kubeconfig, &[])?;
    agent.wait_ready(Duration::from_secs(120))?;
    let ready_s = start.elapsed().as_secs_f64();
    // The allocator settles after the first lists.
    std::thread::sleep(Duration::from_secs(2));
    let vm_rss = vm_rss_kib(agent.pid())?;
    let status = agent.status()?;
    let services_balanced = status["services"].as_array().map_or(0, Vec::len);
    if labelled == 0 {
        // The baseline's change: one Service on the empty cluster.
        fill(&api, o, 1, 0)?;
        std::thread::sleep(Duration::from_millis(500));
    }
    let change_applied_ms = time_changes(&api, &agent, o)?;
    bed.agent = Some(agent);
    Ok(AgentFigures {
        services_balanced,
        vm_rss_kib: vm_rss,
        ready_s,
        change_applied_ms,
    })
}

/// This section of `cargo xtask bench`, unless `--only` leaves it out
/// (a failure is reported and the rest of the bench stands).
pub fn in_bench(only: &[String]) -> Option<ServicesMemory> {
    let wanted = only.is_empty() || only.iter().any(|o| "services-memory".contains(o.as_str()));
    if !wanted {
        return None;
    }
    run(&Options::default())
        .map_err(|e| eprintln!("bench: services-memory: {e:#}"))
        .ok()
}

/// The empty-cluster agent, then the loaded one.
pub fn run(o: &Options) -> Result<ServicesMemory> {
    let baseline = measure(o, 0, 0).context("the agent on an empty cluster")?;
    println!("bench: services-memory: empty cluster {baseline:?}");
    let loaded = measure(o, o.labelled, o.unlabelled).context("the agent with the Services")?;
    println!("bench: services-memory: loaded {loaded:?}");
    if loaded.services_balanced != o.labelled {
        bail!(
            "the loaded agent balances {} Services, not {}",
            loaded.services_balanced,
            o.labelled
        );
    }
    Ok(ServicesMemory {
        options: o.clone(),
        baseline,
        loaded,
    })
}
