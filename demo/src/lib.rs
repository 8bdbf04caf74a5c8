//! The demo behind `cargo xtask demo`: the same h2load run over one connection,
//! first through kube-proxy-style DNAT only, then with rotor-agent, with
//! per-backend request counts side by side.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use rotor_testbed::agent::Agent;
use rotor_testbed::cgroup::TestCgroup;
use rotor_testbed::tools::{h2load, H2loadSummary};
use rotor_testbed::topology::Topology;

/// Parameters of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub backends: usize,
    pub connections: u32,
    pub streams: u32,
    pub requests: u64,
}

impl Default for DemoOptions {
    fn default() -> DemoOptions {
        DemoOptions {
            backends: 3,
            connections: 1,
            streams: 8,
            requests: 3000,
        }
    }
}

/// One h2load run: per-backend counts and h2load's summary.
#[derive(Debug, Clone)]
pub struct DemoRun {
    pub counts: Vec<(String, u64)>,
    pub summary: H2loadSummary,
}

/// Both runs; `with_rotor` holds the error if the agent could not be run.
#[derive(Debug)]
pub struct DemoResult {
    pub without_rotor: DemoRun,
    pub with_rotor: Result<DemoRun>,
}

/// Builds the topology, runs both phases, prints the table, cleans up.
pub fn run_demo(opts: &DemoOptions) -> Result<DemoResult> {
    let mut topo = Topology::new(opts.backends).context("building the demo topology")?;
    let cgroup = TestCgroup::create().context("creating the demo cgroup")?;
    topo.kube_proxy_dnat()?;
    println!(
        "rotor demo: {} backends behind Service {}; client: h2load -c {} -m {} -n {}",
        opts.backends,
        topo.vip(),
        opts.connections,
        opts.streams,
        opts.requests
    );

    println!("\n[1/2] without rotor (kube-proxy-style DNAT picks one backend per connection)");
    let without_rotor = run_h2load(&topo, &cgroup, opts)?;
    print_summary(&without_rotor.summary);

    println!("\n[2/2] with rotor-agent (per-request balancing in the kernel)");
    let with_rotor = Agent::start(&topo, &cgroup, &topo.backend_addrs()).and_then(|mut agent| {
        let run = run_h2load(&topo, &cgroup, opts);
        agent.check_alive()?;
        run
    });
    match &with_rotor {
        Ok(run) => print_summary(&run.summary),
        Err(e) => println!("  failed: {e:#}"),
    }

    println!("\n{}", table(&without_rotor, with_rotor.as_ref().ok()));
    Ok(DemoResult {
        without_rotor,
        with_rotor,
    })
}

/// Runs h2load against the VIP and returns how many requests each backend got.
fn run_h2load(topo: &Topology, cgroup: &TestCgroup, opts: &DemoOptions) -> Result<DemoRun> {
    let before = topo.request_counts()?;
    let url = format!("http://{}/whoami", topo.vip());
    let (c, m, n) = (
        opts.connections.to_string(),
        opts.streams.to_string(),
        opts.requests.to_string(),
    );
    let (summary, _) = h2load(topo, Some(cgroup), &["-c", &c, "-m", &m, "-n", &n, &url])?;
    // nghttpd logs a request when its HEADERS arrive, before answering, so the
    // counts are complete once h2load is done; allow a moment anyway.
    let deadline = Instant::now() + Duration::from_secs(2);
    let counts = loop {
        let after = topo.request_counts()?;
        let counts: Vec<(String, u64)> = after
            .iter()
            .zip(&before)
            .map(|((name, a), (_, b))| (name.clone(), a - b))
            .collect();
        let sum: u64 = counts.iter().map(|(_, n)| n).sum();
        if sum >= summary.done || Instant::now() >= deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(DemoRun { counts, summary })
}

fn print_summary(s: &H2loadSummary) {
    for line in &s.lines {
        println!("  h2load: {line}");
    }
}

/// The side-by-side table of requests per backend.
pub fn table(without: &DemoRun, with: Option<&DemoRun>) -> String {
    let mut out = format!(
        "{:<10} | {:>14} | {:>11}\n",
        "backend", "without rotor", "with rotor"
    );
    out.push_str(&format!("{:-<10}-+-{:->14}-+-{:->11}\n", "", "", ""));
    for (i, (name, n)) in without.counts.iter().enumerate() {
        let w = with
            .and_then(|r| r.counts.get(i))
            .map_or("-".to_string(), |(_, n)| n.to_string());
        out.push_str(&format!("{name:<10} | {n:>14} | {w:>11}\n"));
    }
    let total: u64 = without.counts.iter().map(|(_, n)| n).sum();
    let wtotal = with.map_or("-".to_string(), |r| {
        r.counts.iter().map(|(_, n)| n).sum::<u64>().to_string()
    });
    out.push_str(&format!("{:<10} | {total:>14} | {wtotal:>11}\n", "total"));
    let ok = |s: &H2loadSummary| format!("{}/{}", s.succeeded, s.total);
    out.push_str(&format!(
        "{:<10} | {:>14} | {:>11}\n",
        "succeeded",
        ok(&without.summary),
        with.map_or("-".to_string(), |r| ok(&r.summary))
    ));
    out
}
