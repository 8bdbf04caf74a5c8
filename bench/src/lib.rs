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
//!
//! The scenarios are in scenarios.rs; issue 17's rows run in held.rs
//! (upstream connections per endpoint, idle connections beside a load) and
//! saturation.rs (the open loop's rate), and goals.rs checks rotor's goals.

pub mod backend;
mod bed;
pub mod chart;
pub mod conn_memory;
pub mod dnat;
pub mod endpoint_stats;
pub mod goals;
pub mod haproxy;
pub mod held;
pub mod load;
pub mod report;
mod runs;
pub mod saturation;
mod scenarios;
pub mod services_memory;
pub mod stats;
pub mod tables;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use load::{BenchLoadReport, CpuTimes};
use rotor_testbed::agent::Agent;
use rotor_testbed::cgroup::TestCgroup;
use rotor_testbed::process::{netns_command, Child, Stream};
use rotor_testbed::topology::{backend_addr, Topology, VIP};
use rotor_testbed::util::find_binary;

use bed::*;
use runs::*;
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
    Closed {
        connections: usize,
        streams: usize,
    },
    Open {
        connections: usize,
        rate: f64,
    },
    ScaleUp {
        connections: usize,
        streams: usize,
    },
    /// h2load; `window_bits`: its `-w`/`-W` (None: h2load's own, 2^30 − 1).
    H2load {
        connections: usize,
        streams: usize,
        window_bits: Option<u8>,
    },
    /// `clients` connections that each make `requests` requests and stay
    /// open: the established connections each backend holds meanwhile.
    Upstreams {
        clients: usize,
        requests: usize,
    },
    /// The closed loop `connections` × `streams`, without and then with
    /// `idle` more connections held open (one request each, then idle).
    Idle {
        idle: usize,
        connections: usize,
        streams: usize,
    },
    /// Open loop at `fraction` of the lowest closed-loop req/s of
    /// [`saturation::BASE`] over the paths that balance, from the same run.
    OpenNearSaturation {
        connections: usize,
        fraction: f64,
    },
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
            Load::ScaleUp { .. } | Load::Upstreams { .. } => {
                vec![Path4::Dnat, Path4::Haproxy, Path4::Rotor]
            }
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
    /// Extra arguments of the rotor path's agent (e.g.
    /// `--dedicated-upstreams 0`: every stream through the multiplexers).
    pub rotor_args: Vec<String>,
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
            out_dir: rotor_testbed::util::target_dir().join("bench"),
            rotor_args: Vec::new(),
        }
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
    /// Upstreams: established connections each backend held while the
    /// clients were open that it did not hold before they opened (be1
    /// first), and how many it held before.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstream_conns: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstream_conns_before: Vec<u64>,
    /// Idle: the same load without the idle connections, just before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub without_idle: Option<Box<Sample>>,
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
            upstream_conns: Vec::new(),
            upstream_conns_before: Vec::new(),
            without_idle: None,
        }
    }
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
    /// services_memory.rs, unless `--only` leaves it out.
    pub services_memory: Option<services_memory::ServicesMemory>,
    /// The rate of the open loop near saturation, as derived in this run.
    pub saturation_rate: Option<f64>,
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
    let mut bed = Bed::setup(&opts.rotor_args)?;
    bed.quiet_budget = Duration::from_secs_f64(opts.quiet_wait);
    println!("bench: topology {} up: {SCALED} backends (rotor-h2-backend :{RUST_PORT}, nghttpd :8080), haproxy, rotor-agent", bed.topo.id());
    let scenarios = opts.scenarios();
    let mut cells: Vec<Vec<Cell>> = scenarios
        .iter()
        .map(|s| {
            s.paths()
                .into_iter()
                .map(|path| Cell {
                    path,
                    samples: Vec::new(),
                })
                .collect()
        })
        .collect();
    let mut saturation_rate: Option<f64> = None;
    for rep in 0..opts.repeat {
        for (si, sc) in scenarios.iter().enumerate() {
            let n = cells[si].len();
            for i in 0..n {
                let ci = (i + rep) % n;
                let path = cells[si][ci].path;
                let res = match sc.load {
                    Load::Closed { .. } | Load::Open { .. } => {
                        run_steady(&mut bed, opts, sc, path, rep)
                    }
                    Load::ScaleUp { .. } => run_scale_up(&mut bed, opts, sc, path, rep),
                    Load::H2load { .. } => run_h2load(&mut bed, opts, sc, path, rep),
                    Load::Upstreams { .. } => held::run_upstreams(&mut bed, opts, sc, path, rep),
                    Load::Idle { .. } => held::run_idle(&mut bed, opts, sc, path, rep),
                    Load::OpenNearSaturation {
                        connections,
                        fraction,
                    } => saturation::rate_once(&mut saturation_rate, &scenarios, &cells, fraction)
                        .and_then(|rate| {
                            let open = Scenario {
                                load: Load::Open { connections, rate },
                                ..sc.clone()
                            };
                            run_steady(&mut bed, opts, &open, path, rep)
                        }),
                };
                bed.check_alive()?;
                // A run that fails (e.g. the load client had to be killed) is
                // recorded with its error; the bench goes on.
                let s = res.unwrap_or_else(|e| {
                    let e = format!("{:#}", e.context(format!("{} on {}", sc.id, path.label())));
                    eprintln!("bench: {e}");
                    Sample::failed(rep, e)
                });
                println!(
                    "bench: [{}/{}] {:<26} {:<16} {}",
                    rep + 1,
                    opts.repeat,
                    sc.id,
                    path.label(),
                    report::one_line(sc, &s)
                );
                cells[si][ci].samples.push(s);
            }
        }
    }
    let rotor_status = read_agent_status(bed.agent.admin_socket()).ok();
    drop(bed);
    let services_memory = services_memory::in_bench(&opts.only);
    let results = Results {
        scenarios: scenarios.into_iter().zip(cells).collect(),
        idle_background_cores: idle_bg,
        started_unix,
        elapsed_s: t_start.elapsed().as_secs_f64(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        rotor_status,
        services_memory,
        saturation_rate,
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
        assert!(super::agent_yaml(3)
            .contains("endpoints: [10.1.1.2:8081, 10.1.2.2:8081, 10.1.3.2:8081]"));
    }
}
