//! `cargo xtask bench`: rotor measured side by side with a direct connection,
//! kube-proxy-style DNAT and HAProxy, on one namespace topology, with the same
//! load on every path.
//!
//! ```text
//!  client ──► node ──► be1 … be5      (each backend: rotor-h2-backend :8081, nghttpd :8080)
//!   direct   10.1.1.2:8081             the floor: one backend, routed through the node
//!   dnat     10.96.0.10:8080           iptables DNAT in the client netns, statistic mode random
//!   haproxy  10.0.0.1:9080             haproxy in the node netns, h2c both sides, round robin
//!   rotor    10.96.0.10:8080           client in the agent's cgroup: connect4 → agent → kernel
//! ```
//!
//! Every measurement is repeated ([`BenchOptions::repeat`]); paths are
//! interleaved (repeat → scenario → path, the path order rotating per repeat)
//! so drift of the machine hits every path alike.

pub mod backend;
pub mod chart;
pub mod dnat;
pub mod haproxy;
pub mod load;
pub mod report;
pub mod stats;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::agent::Agent;
use crate::cgroup::TestCgroup;
use crate::process::{netns_command, Child, Stream};
use crate::topology::{backend_addr, Topology, VIP};
use crate::util::find_binary;
use load::{BenchLoadReport, CpuTimes};

/// Port of the Rust backends (nghttpd keeps 8080).
pub const RUST_PORT: u16 = 8081;
/// Second Service, balanced over the nghttpd backends (the h2load cross-check).
pub const VIP_NGHTTPD: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 11), 8080);
/// HAProxy frontends in the node namespace.
pub const HAPROXY_RUST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 9080);
pub const HAPROXY_NGHTTPD: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 9081);
/// Endpoints at start; the scale-up adds the rest.
pub const INITIAL: usize = 3;
pub const SCALED: usize = 5;
/// When the scale-up adds endpoints, seconds into the run.
pub const SCALE_AT_S: f64 = 5.0;

/// The four ways from the client to the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Path4 {
    Direct,
    Dnat,
    Haproxy,
    Rotor,
}

impl Path4 {
    pub const ALL: [Path4; 4] = [Path4::Direct, Path4::Dnat, Path4::Haproxy, Path4::Rotor];

    pub fn label(self) -> &'static str {
        match self {
            Path4::Direct => "direct",
            Path4::Dnat => "kube-proxy DNAT",
            Path4::Haproxy => "HAProxy",
            Path4::Rotor => "rotor",
        }
    }
}

/// Which backends serve a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Servers {
    /// rotor-h2-backend: counts its own requests.
    Rust,
    /// nghttpd without -v: not counted.
    Nghttpd,
}

/// The load of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Load {
    Closed { connections: usize, streams: usize },
    Open { connections: usize, rate: f64 },
    ScaleUp { connections: usize, streams: usize },
    H2load { connections: usize, streams: usize },
}

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub id: String,
    pub title: String,
    pub load: Load,
    pub path: String,
    pub servers: Servers,
}

impl Scenario {
    /// Paths this scenario runs on (a scale-up has no direct path).
    pub fn paths(&self) -> Vec<Path4> {
        match self.load {
            Load::ScaleUp { .. } => vec![Path4::Dnat, Path4::Haproxy, Path4::Rotor],
            _ => Path4::ALL.to_vec(),
        }
    }
}

/// What `cargo xtask bench` runs.
#[derive(Debug, Clone, Serialize)]
pub struct BenchOptions {
    pub quick: bool,
    pub repeat: usize,
    /// Seconds measured per run (after the warm-up).
    pub duration: f64,
    pub warmup: f64,
    /// Whole scale-up run, seconds (endpoints added at [`SCALE_AT_S`]).
    pub scale_run: f64,
    /// Open-loop rate, requests per second.
    pub rate: f64,
    /// Seconds the whole bench may spend waiting for other work on the machine
    /// to stop before a run (then it runs anyway and flags the result).
    pub quiet_wait: f64,
    /// Only scenarios whose id contains one of these (empty: all).
    pub only: Vec<String>,
    pub out_dir: PathBuf,
}

impl BenchOptions {
    pub fn new(quick: bool, repeat: Option<usize>) -> BenchOptions {
        BenchOptions {
            quick,
            repeat: repeat.unwrap_or(if quick { 1 } else { 3 }).max(1),
            duration: if quick { 2.0 } else { 5.0 },
            warmup: if quick { 0.5 } else { 1.0 },
            scale_run: if quick { 8.0 } else { 11.0 },
            rate: 2000.0,
            quiet_wait: if quick { 30.0 } else { 180.0 },
            only: Vec::new(),
            out_dir: crate::util::target_dir().join("bench"),
        }
    }

    pub fn scenarios(&self) -> Vec<Scenario> {
        let s = |id: &str, title: &str, load: Load, path: &str, servers: Servers| Scenario {
            id: id.into(),
            title: title.into(),
            load,
            path: path.into(),
            servers,
        };
        let c = |connections, streams| Load::Closed { connections, streams };
        let all = vec![
            s("1x16-100b", "closed loop, 1 connection × 16 streams, 100 B responses", c(1, 16), "/100b", Servers::Rust),
            s("4x16-100b", "closed loop, 4 connections × 16 streams, 100 B responses", c(4, 16), "/100b", Servers::Rust),
            s("1x16-64k", "closed loop, 1 connection × 16 streams, 64 KiB responses", c(1, 16), "/64k", Servers::Rust),
            s("4x16-64k", "closed loop, 4 connections × 16 streams, 64 KiB responses", c(4, 16), "/64k", Servers::Rust),
            s(
                "open-100b",
                &format!("open loop, {} req/s over 4 connections, 100 B responses (latency from the intended send time)", self.rate),
                Load::Open { connections: 4, rate: self.rate },
                "/100b",
                Servers::Rust,
            ),
            s(
                "scale-up",
                &format!("scale-up: closed loop 4 × 16, 100 B; {INITIAL} → {SCALED} endpoints {SCALE_AT_S} s into the run"),
                Load::ScaleUp { connections: 4, streams: 16 },
                "/100b",
                Servers::Rust,
            ),
            s(
                "h2load-1x16-100b",
                "cross-check: h2load -c 1 -m 16, 100 B, rotor-h2-backend",
                Load::H2load { connections: 1, streams: 16 },
                "/100b",
                Servers::Rust,
            ),
            s(
                "h2load-nghttpd-1x16-100b",
                "cross-check: h2load -c 1 -m 16, 100 B, nghttpd backends",
                Load::H2load { connections: 1, streams: 16 },
                "/100b",
                Servers::Nghttpd,
            ),
        ];
        all.into_iter()
            .filter(|s| self.only.is_empty() || self.only.iter().any(|o| s.id.contains(o.as_str())))
            .collect()
    }
}

/// One run of one scenario on one path.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub repeat: usize,
    pub rps: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub mean_us: f64,
    /// Whole-machine busy CPU per request (NaN where not measured).
    pub cpu_us_per_req: f64,
    pub cpu: CpuTimes,
    pub ok: u64,
    pub failed: u64,
    /// Requests each backend counted during the run (Rust backends), be1 first.
    pub counts: Vec<u64>,
    /// max/min of `counts` over the endpoints in use (∞: one got none; NaN: n/a).
    pub share_max_min: f64,
    /// Scale-up: seconds until the new endpoints had their fair share (∞: never).
    pub fair_share_s: f64,
    /// Scale-up: lowest 200 ms request rate in the 3 s after the change ÷ the
    /// rate before it (1.0: no dip).
    pub dip_after_change: f64,
    /// Scale-up: cumulative counts over time (seconds since the change).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<stats::Point>,
    /// Machine CPU busy just before the run, in cores (other work on the machine).
    pub background_cores: f64,
    pub errors: Vec<String>,
}

impl Sample {
    /// A run that produced no report.
    fn failed(rep: usize, error: String) -> Sample {
        Sample {
            repeat: rep,
            rps: f64::NAN,
            p50_us: f64::NAN,
            p90_us: f64::NAN,
            p99_us: f64::NAN,
            p999_us: f64::NAN,
            mean_us: f64::NAN,
            cpu_us_per_req: f64::NAN,
            cpu: CpuTimes::default(),
            ok: 0,
            failed: 1,
            counts: Vec::new(),
            share_max_min: f64::NAN,
            fair_share_s: f64::NAN,
            dip_after_change: f64::NAN,
            timeline: Vec::new(),
            background_cores: f64::NAN,
            errors: vec![error],
        }
    }
}

/// Everything that runs during the bench; field order is drop order.
struct Bed {
    /// What is left of the time we may wait for a quiet machine.
    quiet_budget: Duration,
    haproxy: haproxy::HaProxy,
    agent: Agent,
    cgroup: TestCgroup,
    rust: Vec<Child>,
    counts: Vec<PathBuf>,
    topo: Topology,
}

fn rust_addr(k: usize) -> SocketAddrV4 {
    SocketAddrV4::new(*backend_addr(k).ip(), RUST_PORT)
}

fn rust_endpoints(n: usize) -> Vec<SocketAddrV4> {
    (1..=n).map(rust_addr).collect()
}

fn nghttpd_endpoints(n: usize) -> Vec<SocketAddrV4> {
    (1..=n).map(backend_addr).collect()
}

fn rust_service(n: usize) -> dnat::Service {
    dnat::Service { tag: "RUST".into(), vip: VIP, endpoints: rust_endpoints(n) }
}

/// The agent's config: Service `echo` (VIP) over `n` Rust backends, Service
/// `nghttpd` (VIP_NGHTTPD) over the nghttpd backends.
fn agent_yaml(n: usize) -> String {
    let list = |v: Vec<SocketAddrV4>| v.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ");
    format!(
        "services:\n  - name: echo\n    vip: {VIP}\n    policy: round-robin\n    endpoints: [{}]\n  - name: nghttpd\n    vip: {VIP_NGHTTPD}\n    policy: round-robin\n    endpoints: [{}]\n",
        list(rust_endpoints(n)),
        list(nghttpd_endpoints(INITIAL))
    )
}

impl Bed {
    fn setup() -> Result<Bed> {
        crate::environment_ok()?;
        if !has_command("haproxy") {
            bail!("haproxy not found: `apt-get install haproxy` (cargo xtask bench installs it)");
        }
        let mut topo = Topology::with_counting(INITIAL, false).context("building topology")?;
        for _ in INITIAL..SCALED {
            topo.add_backend()?;
        }
        let bin = find_binary("rotor-h2-backend", "ROTOR_H2_BACKEND_BIN")?;
        let mut rust = Vec::new();
        let mut counts = Vec::new();
        for k in 1..=SCALED {
            let name = format!("be{k}");
            let ns = topo.backend(k)?.netns().to_string();
            let count = topo.dir().join(format!("rust-{name}.count"));
            let mut cmd = netns_command(&ns, None, &bin);
            cmd.arg("--listen").arg(rust_addr(k).to_string()).arg("--name").arg(&name).arg("--count-file").arg(&count);
            let mut child = Child::spawn(&format!("rotor-h2-backend-{name}"), cmd, topo.dir())?;
            child.wait_for_line(Stream::Stdout, "listening on", Duration::from_secs(10))?;
            rust.push(child);
            counts.push(count);
        }
        dnat::restore(
            topo.client(),
            &dnat::install_rules(&[
                rust_service(INITIAL),
                dnat::Service { tag: "NGHTTPD".into(), vip: VIP_NGHTTPD, endpoints: nghttpd_endpoints(INITIAL) },
            ]),
        )?;
        let cgroup = TestCgroup::create().context("creating cgroup")?;
        let agent = Agent::start(&topo, &cgroup, &rust_endpoints(INITIAL)).context("starting rotor-agent")?;
        let haproxy = haproxy::HaProxy::start(
            topo.node_ns(),
            topo.dir(),
            vec![
                haproxy::Pool { name: "rust".into(), bind: HAPROXY_RUST, servers: rust_endpoints(SCALED), enabled: INITIAL },
                haproxy::Pool { name: "nghttpd".into(), bind: HAPROXY_NGHTTPD, servers: nghttpd_endpoints(INITIAL), enabled: INITIAL },
            ],
        )?;
        let bed = Bed { quiet_budget: Duration::ZERO, haproxy, agent, cgroup, rust, counts, topo };
        bed.set_agent_endpoints(INITIAL)?;
        Ok(bed)
    }

    /// Rewrites the agent's config (atomically) and waits until it logged
    /// both Services as configured.
    fn set_agent_endpoints(&self, n: usize) -> Result<()> {
        let before = self.agent.stderr().matches("service configured").count();
        let path = self.agent.config_path();
        let tmp = path.with_extension("yaml.bench");
        std::fs::write(&tmp, agent_yaml(n)).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.agent.stderr().matches("service configured").count() < before + 2 {
            if Instant::now() > deadline {
                bail!("rotor-agent did not apply its new config within 5 s:\n{}", self.agent.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn read_counts(&self) -> Result<Vec<u64>> {
        self.counts.iter().map(|p| backend::read_count(p)).collect()
    }

    fn addr(&self, path: Path4, servers: Servers) -> SocketAddrV4 {
        match (path, servers) {
            (Path4::Direct, Servers::Rust) => rust_addr(1),
            (Path4::Direct, Servers::Nghttpd) => backend_addr(1),
            (Path4::Dnat | Path4::Rotor, Servers::Rust) => VIP,
            (Path4::Dnat | Path4::Rotor, Servers::Nghttpd) => VIP_NGHTTPD,
            (Path4::Haproxy, Servers::Rust) => HAPROXY_RUST,
            (Path4::Haproxy, Servers::Nghttpd) => HAPROXY_NGHTTPD,
        }
    }

    /// The client runs in the agent's cgroup only on the rotor path.
    fn cgroup_for(&self, path: Path4) -> Option<&Path> {
        (path == Path4::Rotor).then(|| self.cgroup.path())
    }

    fn check_alive(&mut self) -> Result<()> {
        for (k, child) in self.rust.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                bail!("rotor-h2-backend be{} exited ({status}):\n{}", k + 1, child.stderr_tail());
            }
        }
        self.agent.check_alive()?;
        self.haproxy.check_alive()
    }

    /// Sets the endpoints of the Rust Service on `path` to the first `n`.
    fn scale(&mut self, path: Path4, n: usize) -> Result<()> {
        match path {
            Path4::Direct => Ok(()),
            Path4::Dnat => dnat::restore(self.topo.client(), &dnat::update_rules(&rust_service(n))),
            Path4::Haproxy => self.haproxy.set_enabled("rust", n),
            Path4::Rotor => {
                // The change counts from the file rename; waiting for the log
                // line only makes sure it was taken.
                self.set_agent_endpoints(n)
            }
        }
    }
}

fn has_command(cmd: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join(cmd).is_file())
}

/// Waits (within what is left of `budget`) until the machine is quiet: CPU
/// busy below [`report::NOISY_BACKGROUND_CORES`] over 300 ms. Returns the last
/// busy figure, in cores.
fn wait_quiet(budget: &mut Duration) -> f64 {
    loop {
        let t = Instant::now();
        let bg = background(Duration::from_millis(300));
        if bg <= report::NOISY_BACKGROUND_CORES || budget.is_zero() {
            return bg;
        }
        std::thread::sleep(Duration::from_millis(700));
        *budget = budget.saturating_sub(t.elapsed());
    }
}

/// Machine CPU busy over `d`, in cores.
fn background(d: Duration) -> f64 {
    let a = CpuTimes::now();
    std::thread::sleep(d);
    CpuTimes::now().since(&a).busy_ms / d.as_millis() as f64
}

fn spawn_load(bed: &Bed, path: Path4, sc: &Scenario, args: &[String], tag: &str) -> Result<Child> {
    let bin = find_binary("rotor-bench-load", "ROTOR_BENCH_LOAD_BIN")?;
    let mut cmd = netns_command(bed.topo.client_ns(), bed.cgroup_for(path), &bin);
    cmd.arg("--addr")
        .arg(bed.addr(path, sc.servers).to_string())
        .arg("--path")
        .arg(&sc.path)
        .arg("--bench-netns")
        .arg(bed.topo.netns_names().join(","))
        .args(args);
    Child::spawn(&format!("bench-load-{tag}"), cmd, bed.topo.dir())
}

fn finish_load(mut child: Child, limit: Duration) -> Result<BenchLoadReport> {
    let status = child.wait_timeout(limit)?;
    let out = child.output(Stream::Stdout);
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("rotor-bench-load ({status}) printed no report:\n{}", child.stderr_tail()))?;
    serde_json::from_str(line).with_context(|| format!("parsing {line:?}"))
}

fn sample_from(rep: usize, r: &BenchLoadReport, counts: Vec<u64>, share: f64, bg: f64) -> Sample {
    // No request answered in the window: no latency to report (throughput 0 stays).
    let lat = |v: f64| if r.ok > 0 { v } else { f64::NAN };
    Sample {
        repeat: rep,
        rps: r.rps,
        p50_us: lat(r.p50_us),
        p90_us: lat(r.p90_us),
        p99_us: lat(r.p99_us),
        p999_us: lat(r.p999_us),
        mean_us: lat(r.mean_us),
        cpu_us_per_req: if r.ok > 0 { r.cpu_us_per_req } else { f64::NAN },
        cpu: r.cpu,
        ok: r.ok,
        failed: r.failed,
        counts,
        share_max_min: share,
        fair_share_s: f64::NAN,
        dip_after_change: f64::NAN,
        timeline: Vec::new(),
        background_cores: bg,
        errors: r.errors.clone(),
    }
}

fn diff(a: &[u64], b: &[u64]) -> Vec<u64> {
    b.iter().zip(a).map(|(b, a)| b.saturating_sub(*a)).collect()
}

/// Share over the endpoints the path balances across (direct: n/a).
fn share_of(path: Path4, counts: &[u64], active: usize) -> f64 {
    if path == Path4::Direct {
        return f64::NAN;
    }
    stats::max_min(&counts[..active.min(counts.len())])
}

fn run_steady(bed: &mut Bed, opts: &BenchOptions, sc: &Scenario, path: Path4, rep: usize) -> Result<Sample> {
    let bg = wait_quiet(&mut bed.quiet_budget);
    let before = bed.read_counts()?;
    let mut args = vec![
        "--duration".to_string(),
        opts.duration.to_string(),
        "--warmup".into(),
        opts.warmup.to_string(),
    ];
    match sc.load {
        Load::Closed { connections, streams } => {
            args.extend(["--connections".into(), connections.to_string(), "--streams".into(), streams.to_string()])
        }
        Load::Open { connections, rate } => {
            args.extend(["--connections".into(), connections.to_string(), "--rate".into(), rate.to_string()])
        }
        _ => bail!("not a steady scenario"),
    }
    let child = spawn_load(bed, path, sc, &args, &format!("{}-{:?}-{rep}", sc.id, path))?;
    let r = finish_load(child, Duration::from_secs_f64(opts.duration + opts.warmup + 60.0))?;
    // The backends write their counters every 5 ms.
    std::thread::sleep(Duration::from_millis(30));
    let counts = diff(&before, &bed.read_counts()?);
    let share = share_of(path, &counts, INITIAL);
    Ok(sample_from(rep, &r, counts, share, bg))
}

fn run_scale_up(bed: &mut Bed, opts: &BenchOptions, sc: &Scenario, path: Path4, rep: usize) -> Result<Sample> {
    let Load::ScaleUp { connections, streams } = sc.load else {
        bail!("not a scale-up scenario");
    };
    let bg = wait_quiet(&mut bed.quiet_budget);
    let before = bed.read_counts()?;
    let args = vec![
        "--duration".to_string(),
        opts.scale_run.to_string(),
        "--warmup".into(),
        "0".into(),
        "--connections".into(),
        connections.to_string(),
        "--streams".into(),
        streams.to_string(),
    ];
    let mut child = spawn_load(bed, path, sc, &args, &format!("{}-{:?}-{rep}", sc.id, path))?;
    let t0 = Instant::now();
    let mut raw: Vec<(Instant, Vec<u64>)> = Vec::new();
    let mut added: Option<Instant> = None;
    let mut scale_err = None;
    while child.try_wait()?.is_none() {
        if added.is_none() && t0.elapsed().as_secs_f64() >= SCALE_AT_S {
            let t = Instant::now();
            if let Err(e) = bed.scale(path, SCALED) {
                scale_err = Some(e);
            }
            added = Some(t);
        }
        raw.push((Instant::now(), bed.read_counts()?));
        std::thread::sleep(Duration::from_millis(50));
        if t0.elapsed().as_secs_f64() > opts.scale_run + 60.0 {
            break;
        }
    }
    let r = finish_load(child, Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_millis(30));
    let after = bed.read_counts()?;
    // Back to the initial endpoints for the next run.
    bed.scale(path, INITIAL)?;
    std::thread::sleep(Duration::from_millis(500));
    if let Some(e) = scale_err {
        return Err(e.context(format!("scaling up on {}", path.label())));
    }
    let added = added.context("the run ended before the endpoints were added")?;
    let timeline: Vec<stats::Point> = raw
        .iter()
        .map(|(t, c)| {
            let s = if *t >= added { (*t - added).as_secs_f64() } else { -(added - *t).as_secs_f64() };
            (s, diff(&before, c))
        })
        .collect();
    let fair = stats::time_to_fair_share(&timeline, SCALED - INITIAL).unwrap_or(f64::INFINITY);
    // Share over the last 2 s of the run, all five endpoints.
    let tail_from = timeline.iter().rev().find(|(t, _)| *t <= timeline.last().map_or(0.0, |l| l.0) - 2.0);
    let share = match (tail_from, timeline.last()) {
        (Some(a), Some(b)) => stats::max_min(&diff(&a.1, &b.1)),
        _ => f64::NAN,
    };
    let mut s = sample_from(rep, &r, diff(&before, &after), share, bg);
    s.fair_share_s = fair;
    s.dip_after_change = stats::dip_after_change(&timeline, 3.0);
    s.timeline = timeline;
    Ok(s)
}

/// `finished in 5.00s, 41234.20 req/s, 6.12MB/s` → req/s; `time for request:  59us  6.58ms  290us …` → mean µs.
pub fn parse_h2load_rates(stdout: &str) -> (f64, f64) {
    let rps = stdout
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or(f64::NAN);
    let mean = stdout
        .lines()
        .find(|l| l.starts_with("time for request:"))
        .and_then(|l| l.split_whitespace().nth(5))
        .map(parse_h2load_time)
        .unwrap_or(f64::NAN);
    (rps, mean)
}

fn parse_h2load_time(t: &str) -> f64 {
    let (num, mult) = if let Some(x) = t.strip_suffix("us") {
        (x, 1.0)
    } else if let Some(x) = t.strip_suffix("ms") {
        (x, 1e3)
    } else if let Some(x) = t.strip_suffix('s') {
        (x, 1e6)
    } else {
        (t, f64::NAN)
    };
    num.parse::<f64>().map_or(f64::NAN, |v| v * mult)
}

fn run_h2load(bed: &mut Bed, opts: &BenchOptions, sc: &Scenario, path: Path4, rep: usize) -> Result<Sample> {
    let Load::H2load { connections, streams } = sc.load else {
        bail!("not an h2load scenario");
    };
    let bg = wait_quiet(&mut bed.quiet_budget);
    let before = bed.read_counts()?;
    let url = format!("http://{}{}", bed.addr(path, sc.servers), sc.path);
    let mut cmd = netns_command(bed.topo.client_ns(), bed.cgroup_for(path), "h2load");
    cmd.args([
        "-c",
        &connections.to_string(),
        "-m",
        &streams.to_string(),
        "-D",
        &format!("{}", opts.duration.round().max(1.0)),
        &format!("--warm-up-time={}", opts.warmup.ceil().max(1.0)),
        &url,
    ]);
    let out = crate::util::run_with_timeout(&mut cmd, Duration::from_secs_f64(opts.duration + opts.warmup + 60.0))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary = crate::tools::parse_h2load(&stdout)
        .with_context(|| format!("h2load: {}", String::from_utf8_lossy(&out.stderr)))?;
    let (rps, mean) = parse_h2load_rates(&stdout);
    std::thread::sleep(Duration::from_millis(30));
    let counts = if sc.servers == Servers::Rust { diff(&before, &bed.read_counts()?) } else { Vec::new() };
    let share = if sc.servers == Servers::Rust { share_of(path, &counts, INITIAL) } else { f64::NAN };
    let mut errors = Vec::new();
    let mut failed = summary.failed + summary.errored + summary.timeout;
    if failed > 0 {
        errors.push(format!("h2load: {}", summary.lines.join(" | ")));
    }
    if summary.succeeded == 0 {
        // h2load -D counts nothing for a connection that stalled.
        failed = failed.max(1);
        errors.push(format!("h2load: no request completed (stalled): {}", summary.lines.join(" | ")));
    }
    let mean = if summary.succeeded > 0 { mean } else { f64::NAN };
    Ok(Sample {
        repeat: rep,
        rps,
        p50_us: f64::NAN,
        p90_us: f64::NAN,
        p99_us: f64::NAN,
        p999_us: f64::NAN,
        mean_us: mean,
        cpu_us_per_req: f64::NAN,
        cpu: CpuTimes { busy_ms: f64::NAN, ..CpuTimes::default() },
        ok: summary.succeeded,
        failed,
        counts,
        share_max_min: share,
        fair_share_s: f64::NAN,
        dip_after_change: f64::NAN,
        timeline: Vec::new(),
        background_cores: bg,
        errors,
    })
}

/// All samples of one scenario on one path.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub path: Path4,
    pub samples: Vec<Sample>,
}

/// The raw results; [`report::Report`] summarizes them.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub scenarios: Vec<(Scenario, Vec<Cell>)>,
    pub idle_background_cores: f64,
    pub started_unix: u64,
    pub elapsed_s: f64,
    pub kernel: String,
    pub cpus: usize,
    pub rotor_status: Option<serde_json::Value>,
}

/// Builds the bed, runs every scenario on every path `repeat` times, writes
/// `bench.md`, `bench.json` and `bench.svg` under `opts.out_dir`, and returns the report.
pub fn run_bench(opts: &BenchOptions) -> Result<report::Report> {
    let t_start = Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let idle_bg = background(Duration::from_secs(1));
    println!("bench: machine busy before setup: {idle_bg:.2} cores (other work on the machine)");
    let mut bed = Bed::setup()?;
    bed.quiet_budget = Duration::from_secs_f64(opts.quiet_wait);
    println!("bench: topology {} up: {SCALED} backends (rotor-h2-backend :{RUST_PORT}, nghttpd :8080), haproxy, rotor-agent", bed.topo.id());
    let scenarios = opts.scenarios();
    let mut cells: Vec<Vec<Cell>> = scenarios
        .iter()
        .map(|s| s.paths().into_iter().map(|path| Cell { path, samples: Vec::new() }).collect())
        .collect();
    for rep in 0..opts.repeat {
        for (si, sc) in scenarios.iter().enumerate() {
            let n = cells[si].len();
            for i in 0..n {
                let ci = (i + rep) % n;
                let path = cells[si][ci].path;
                let res = match sc.load {
                    Load::Closed { .. } | Load::Open { .. } => run_steady(&mut bed, opts, sc, path, rep),
                    Load::ScaleUp { .. } => run_scale_up(&mut bed, opts, sc, path, rep),
                    Load::H2load { .. } => run_h2load(&mut bed, opts, sc, path, rep),
                };
                bed.check_alive()?;
                // A run that fails (e.g. the load client had to be killed) is
                // recorded with its error; the bench goes on.
                let s = res.unwrap_or_else(|e| {
                    let e = format!("{:#}", e.context(format!("{} on {}", sc.id, path.label())));
                    eprintln!("bench: {e}");
                    Sample::failed(rep, e)
                });
                println!("bench: [{}/{}] {:<26} {:<16} {}", rep + 1, opts.repeat, sc.id, path.label(), report::one_line(sc, &s));
                cells[si][ci].samples.push(s);
            }
        }
    }
    let rotor_status = read_agent_status(bed.agent.admin_socket()).ok();
    drop(bed);
    let results = Results {
        scenarios: scenarios.into_iter().zip(cells).collect(),
        idle_background_cores: idle_bg,
        started_unix,
        elapsed_s: t_start.elapsed().as_secs_f64(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        rotor_status,
    };
    let rep = report::Report::new(opts, results);
    rep.write(&opts.out_dir)?;
    Ok(rep)
}

fn read_agent_status(sock: &Path) -> Result<serde_json::Value> {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(serde_json::from_str(&body)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn h2load_lines() {
        let out = "finished in 5.00s, 41234.20 req/s, 6.12MB/s\nrequests: 1 total\n\
time for request:       59us      6.58ms       290us       118us    85.05%\n";
        let (rps, mean) = super::parse_h2load_rates(out);
        assert_eq!(rps, 41234.20);
        assert_eq!(mean, 290.0);
        assert!(super::agent_yaml(3).contains("endpoints: [10.1.1.2:8081, 10.1.2.2:8081, 10.1.3.2:8081]"));
    }
}
