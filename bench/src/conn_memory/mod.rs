//! `cargo xtask bench --conn-memory`: what the agent costs per client
//! connection. Through rotor to a Service of three endpoints
//! (rotor-h2-backend), a fresh agent per measurement holds 0 connections
//! (its baseline), then N client connections opened by `rotor-bench-conns`
//! (one request each, then idle; or busy for a while), and each time we
//! read what the connections cost against that baseline: the agent's
//! VmRSS / VmHWM, its memory cgroup (what a container limit counts: user
//! memory, kernel memory, TCP buffers), its BPF maps (memlock), the TCP
//! socket memory of its client-side and upstream sockets (`ss -tm` in the
//! node namespace), its open files, and the upstream connections per endpoint.
//!
//! The agent runs as the DaemonSet runs it: default `--max-conns`, and its
//! open-file limit raised (by itself) to the hard limit it inherits, which
//! the report states beside the fds each connection takes: a host whose
//! hard limit is below what the connections need shows what happens then.

pub mod client;
pub mod measure;
mod report;

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use measure::{MemCg, Snapshot};
use rotor_testbed::agent::{agent_binary, Agent};
use rotor_testbed::cgroup::TestCgroup;
use rotor_testbed::process::{netns_command, Child, Stream};
use rotor_testbed::topology::{backend_addr, Topology, VIP};
use rotor_testbed::util::find_binary;

pub use report::ConnMemoryReport;

/// Endpoints of the Service.
pub const ENDPOINTS: usize = 3;
const PORT: u16 = crate::RUST_PORT;

/// What `cargo xtask bench --conn-memory` measures.
#[derive(Debug, Clone, Serialize)]
pub struct ConnMemoryOptions {
    /// Idle connection counts, each on a fresh agent.
    pub idle: Vec<usize>,
    /// Connections kept busy (one request at a time each), on a fresh agent.
    pub active: usize,
    pub active_secs: f64,
    /// Idle connections to a Service of one endpoint: with the rows of three
    /// endpoints, this splits the cost into the client's part and each upstream's.
    pub one_endpoint: usize,
    /// Wait after the connections are up before reading, for the agent to settle.
    pub settle: Duration,
    /// The agent's CPU use with the connections held is read over `idle_window`,
    /// from `idle_after` after they are up: a settled connection's looks back
    /// off over about 6 s (userspace/src/agent/pace.rs), and what is read is
    /// the cost of holding them, not of their last requests.
    pub idle_after: Duration,
    pub idle_window: Duration,
    pub out_dir: PathBuf,
}

impl Default for ConnMemoryOptions {
    fn default() -> Self {
        ConnMemoryOptions {
            idle: vec![1000, 5000],
            active: 1000,
            active_secs: 10.0,
            one_endpoint: 1000,
            settle: Duration::from_secs(3),
            idle_after: Duration::from_secs(10),
            idle_window: Duration::from_secs(5),
            out_dir: rotor_testbed::util::target_dir().join("bench"),
        }
    }
}

/// One measurement: a fresh agent before (baseline) and with `connections`.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub connections: usize,
    pub active: bool,
    /// Endpoints of the Service (each client connection opens one upstream to each).
    pub endpoints: usize,
    /// The client's last phase line (connections it holds, requests, errors).
    pub client: client::Phase,
    pub baseline: Snapshot,
    pub loaded: Snapshot,
    /// Highest VmRSS sampled (every 50 ms) while connections opened and ran.
    pub peak_rss_sampled: u64,
    /// The agent's CPU use (cores) with the connections held (`idle_window`).
    pub idle_cores: f64,
    /// Warnings and errors the agent logged while the connections were up.
    pub agent_warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnMemoryResults {
    pub options: ConnMemoryOptions,
    pub points: Vec<Point>,
    pub endpoints: usize,
    pub kernel: String,
    pub host_nofile_hard: u64,
    pub memcg: bool,
    pub elapsed_s: f64,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    connections: usize,
    active: bool,
    endpoints: usize,
}

/// Field order is drop order: the clients' cgroup, then the backends, then
/// the namespaces.
struct ConnBed {
    cgroup: TestCgroup,
    backends: Vec<Child>,
    topo: Topology,
}

fn endpoints(n: usize) -> Vec<SocketAddrV4> {
    (1..=n)
        .map(|k| SocketAddrV4::new(*backend_addr(k).ip(), PORT))
        .collect()
}

impl ConnBed {
    fn setup() -> Result<ConnBed> {
        rotor_testbed::environment_ok()?;
        let topo = Topology::with_counting(ENDPOINTS, false).context("building topology")?;
        let bin = find_binary("rotor-h2-backend", "ROTOR_H2_BACKEND_BIN")?;
        let mut backends = Vec::new();
        for (i, addr) in endpoints(ENDPOINTS).into_iter().enumerate() {
            let name = format!("be{}", i + 1);
            let ns = topo.backend(i + 1)?.netns().to_string();
            let mut cmd = netns_command(&ns, None, &bin);
            cmd.arg("--listen")
                .arg(addr.to_string())
                .arg("--name")
                .arg(&name)
                .arg("--count-file")
                .arg(topo.dir().join(format!("{name}.count")));
            let mut child = Child::spawn(&format!("rotor-h2-backend-{name}"), cmd, topo.dir())?;
            child.wait_for_line(Stream::Stdout, "listening on", Duration::from_secs(10))?;
            backends.push(child);
        }
        let cgroup = TestCgroup::create().context("creating cgroup")?;
        Ok(ConnBed {
            cgroup,
            backends,
            topo,
        })
    }

    /// The agent under a wrapper that puts it into `memcg` before it
    /// creates its maps (they are charged to the cgroup that creates them).
    fn agent_wrapper(&self, memcg: Option<&MemCg>) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let agent = agent_binary()?;
        let path = self.topo.dir().join("rotor-agent-measured.sh");
        let join = memcg.map_or(String::new(), |m| {
            format!("echo $$ > '{}' || exit 1\n", m.procs_file().display())
        });
        let script = format!("#!/bin/sh\n{join}exec '{}' \"$@\"\n", agent.display());
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }

    fn snapshot(&self, agent: &Agent, memcg: Option<&MemCg>) -> Result<Snapshot> {
        let mut s = Snapshot::default();
        measure::process(agent.pid(), &mut s)?;
        if let Some(m) = memcg {
            s.memcg = m.usage()?;
        }
        s.sockets = measure::sockets(self.topo.node(), PORT)?;
        Ok(s)
    }

    fn check_backends(&mut self) -> Result<()> {
        for b in &mut self.backends {
            if let Some(status) = b.try_wait()? {
                bail!("{} exited ({status}):\n{}", b.name(), b.stderr_tail());
            }
        }
        Ok(())
    }

    /// A fresh agent: its baseline, then `n` connections (busy for
    /// `active_secs` if `active`), then what they cost.
    fn measure(&mut self, opts: &ConnMemoryOptions, run: Run) -> Result<Point> {
        let Run {
            connections: n,
            active,
            endpoints: eps,
        } = run;
        self.wait_no_upstreams(Duration::from_secs(30))?;
        let memcg = MemCg::create()?;
        let wrapper = self.agent_wrapper(memcg.as_ref())?;
        let mut agent =
            Agent::start_binary(&wrapper, &self.topo, &self.cgroup, &endpoints(eps), &[])
                .context("starting rotor-agent")?;
        std::thread::sleep(opts.settle);
        let baseline = self.snapshot(&agent, memcg.as_ref())?;
        let log_before = agent.stderr_plain().len();

        let bin = find_binary("rotor-bench-conns", "ROTOR_BENCH_CONNS_BIN")?;
        let mut cmd = netns_command(self.topo.client_ns(), Some(self.cgroup.path()), bin);
        cmd.arg("--addr")
            .arg(VIP.to_string())
            .arg("--connections")
            .arg(n.to_string())
            .arg("--active")
            .arg(if active { opts.active_secs } else { 0.0 }.to_string());
        let kind = if active { "active" } else { "idle" };
        let mut client = Child::spawn(
            &format!("rotor-bench-conns-{kind}-{n}-{eps}"),
            cmd,
            self.topo.dir(),
        )?;
        let limit = rotor_testbed::scaled(Duration::from_secs(120))
            + Duration::from_secs_f64(opts.active_secs);
        let deadline = Instant::now() + limit;
        let mut peak = baseline.vm_rss;
        // A run that does not get all its connections up (the agent out of
        // open files, say) is measured as it stands and reported with why.
        let phase = loop {
            let out = client.output(Stream::Stdout);
            if let Some(line) = out.lines().find(|l| l.contains("\"holding\"")) {
                break serde_json::from_str::<client::Phase>(line)
                    .with_context(|| format!("client line {line:?}"))?;
            }
            if let Some(status) = client.try_wait()? {
                bail!(
                    "rotor-bench-conns exited ({status}):\n{}",
                    client.stderr_tail()
                );
            }
            agent.check_alive()?;
            if Instant::now() > deadline {
                break client::Phase {
                    phase: format!("not all {n} connections up within {limit:?}"),
                    connections: measure::sockets(self.topo.node(), PORT)?
                        .client_side
                        .sockets,
                    errors: vec![client.stderr_tail()],
                    ..client::Phase::default()
                };
            }
            peak = peak.max(rss(agent.pid()));
            std::thread::sleep(Duration::from_millis(50));
        };
        // The agent settles, then its CPU use with the connections idle (or
        // done) is read.
        std::thread::sleep(opts.settle.max(opts.idle_after));
        let cpu0 = measure::cpu_seconds(agent.pid())?;
        std::thread::sleep(opts.idle_window);
        let idle_cores =
            (measure::cpu_seconds(agent.pid())? - cpu0) / opts.idle_window.as_secs_f64();
        self.check_backends()?;
        agent.check_alive()?;
        let loaded = self.snapshot(&agent, memcg.as_ref())?;
        peak = peak.max(loaded.vm_rss);
        let log = agent.stderr_plain();
        let agent_warnings = warnings(log.get(log_before..).unwrap_or_default());
        drop(client);
        drop(agent);
        drop(memcg);
        Ok(Point {
            connections: n,
            active,
            endpoints: eps,
            client: phase,
            baseline,
            loaded,
            peak_rss_sampled: peak,
            idle_cores,
            agent_warnings,
        })
    }

    /// The previous agent's upstream sockets close once it exits; a baseline
    /// read before that would count them.
    fn wait_no_upstreams(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let s = measure::sockets(self.topo.node(), PORT)?;
            let left = s.upstream_side.sockets + s.client_side.sockets;
            if left == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{left} sockets of the previous agent still open after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The distinct warnings and errors in the agent's log (without their
/// timestamps), with how often each came.
fn warnings(log: &str) -> Vec<String> {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for l in log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
    {
        let msg = l
            .split_once("WARN")
            .or_else(|| l.split_once("ERROR"))
            .map_or(l, |(_, m)| m);
        // Without the fields that differ per connection, so alike warnings count as one.
        let msg: Vec<&str> = msg
            .split_whitespace()
            .filter(|w| !w.starts_with("conn=") && !w.starts_with("peer="))
            .collect();
        let msg = msg.join(" ");
        if let Some((_, k)) = seen.iter_mut().find(|(m, _)| *m == msg) {
            *k += 1;
        } else if seen.len() < 10 {
            seen.push((msg, 1));
        }
    }
    seen.into_iter().map(|(m, k)| format!("{k}× {m}")).collect()
}

/// VmRSS alone: sampled every 50 ms, so it must not walk the agent's
/// thousands of fds as a whole snapshot does.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_or(0, |t| measure::status_bytes(&t, "VmRSS"))
}

fn host_nofile_hard() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a properly sized struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_max
    } else {
        0
    }
}

/// Runs every measurement, writes `conn-memory.md` and `conn-memory.json`
/// under `opts.out_dir`, and returns the report.
pub fn run(opts: &ConnMemoryOptions) -> Result<ConnMemoryReport> {
    let t0 = Instant::now();
    let mut bed = ConnBed::setup()?;
    println!(
        "bench: conn-memory: topology {} up: {ENDPOINTS} endpoints (rotor-h2-backend :{PORT})",
        bed.topo.id()
    );
    let run = |connections, active, endpoints| Run {
        connections,
        active,
        endpoints,
    };
    let mut plan: Vec<Run> = opts
        .idle
        .iter()
        .map(|&n| run(n, false, ENDPOINTS))
        .collect();
    if opts.active > 0 {
        plan.push(run(opts.active, true, ENDPOINTS));
    }
    if opts.one_endpoint > 0 {
        plan.push(run(opts.one_endpoint, false, 1));
    }
    let mut points = Vec::new();
    for r in plan {
        let p = bed.measure(opts, r).with_context(|| {
            let kind = if r.active { "active" } else { "idle" };
            format!(
                "{} {kind} connections, {} endpoints",
                r.connections, r.endpoints
            )
        })?;
        println!("bench: conn-memory: {}", report::one_line(&p));
        points.push(p);
    }
    let memcg = points.iter().any(|p| p.baseline.memcg.usage > 0);
    drop(bed);
    let results = ConnMemoryResults {
        options: opts.clone(),
        points,
        endpoints: ENDPOINTS,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        host_nofile_hard: host_nofile_hard(),
        memcg,
        elapsed_s: t0.elapsed().as_secs_f64(),
    };
    let rep = ConnMemoryReport::new(results);
    rep.write(&opts.out_dir)?;
    Ok(rep)
}

/// For callers that want the files' names.
pub fn files(dir: &Path) -> [PathBuf; 2] {
    [dir.join("conn-memory.md"), dir.join("conn-memory.json")]
}
