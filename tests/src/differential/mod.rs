//! Differential runs: one client scenario run straight to a backend (its
//! address dialled directly, outside the test cgroup: no agent involvement)
//! and through rotor (the Service VIP, in the test cgroup, with the agent),
//! then compared on what the client saw: requests that succeeded or failed,
//! status codes, body sizes and digests, response bytes, resets, GOAWAYs, and
//! how long it took.
//!
//! Every run is bounded. The direct run is the reference: the run through
//! rotor may take at most [`TIME_FACTOR`] × the direct time + [`time_slack`],
//! then it is stopped and counts as a stall. While a run through rotor is in
//! flight the agent's status is sampled, so a stall comes with the state of
//! its connection (kernel or agent path, the counters of its upstreams), the
//! agent's kernel counters and the end of its log.
//!
//! Clients: h2load (its `requests:`, `status codes:` and `traffic:` lines),
//! nghttp (`-v`: the frames it received), the Python h2 client
//! (`tests/peers/h2_client.py`, its JSON report) and `rotor-load` (its JSON
//! report; `--split-writes` for one-write and trickling clients).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::peers::{clip, peers_dir, python};
use crate::probe;
use rotor_testbed::agent::Agent;
use rotor_testbed::bed::TestBed;
use rotor_testbed::bounds::scaled;
use rotor_testbed::cgroup::TestCgroup;
use rotor_testbed::load::{load_binary, LoadSpec};
use rotor_testbed::loadgen::LoadReport;
use rotor_testbed::process::{netns_command, Child, Stream};
use rotor_testbed::tools::parse_h2load;
use rotor_testbed::topology::{backend_addr, VIP};

/// A run through rotor may take this many times the direct run's time …
pub const TIME_FACTOR: u32 = 4;
/// … plus this on the host, times the machine's slowness ([`time_slack`]).
const TIME_SLACK: Duration = Duration::from_secs(5);
/// The bound of a direct run on the host (the reference; beyond it the bed
/// is broken), times the machine's slowness ([`direct_limit`]).
const DIRECT_LIMIT: Duration = Duration::from_secs(180);
/// h2load's `-N` on the host: a connection without a byte for this long is
/// stalled (h2load then ends it and still prints its counts).
const H2LOAD_INACTIVITY: Duration = Duration::from_secs(5);

/// The slack of a run through rotor on this machine. It scales while the
/// factor does not: a direct run's time is partly the links' delay, which
/// emulation does not slow, while rotor's extra work is CPU, which it does.
/// Seen under QEMU TCG (scale 32): 64 streams per write with backends 1 ms
/// away took 3.9 s direct and 21 s through rotor, on the host 0.17 s and
/// 0.54 s (the timing target).
pub fn time_slack() -> Duration {
    scaled(TIME_SLACK)
}

/// The bound of a direct run on this machine.
pub fn direct_limit() -> Duration {
    scaled(DIRECT_LIMIT)
}
/// How often the agent's status is sampled during a run through rotor.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The kernel's connection flag for "stream frames bypass the agent"
/// (`CONN_FAST` in `ebpf/include/rotor.h`), as `rotor status` shows it.
pub const CONN_FAST: u64 = 0x1;
/// Time a client gets past its own timeout to report before it is killed.
const REPORT_GRACE: Duration = Duration::from_secs(5);

/// Which way the client goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To backend 1's address, outside the test cgroup: no agent involvement.
    Direct,
    /// To the Service VIP, in the test cgroup: redirected to the agent.
    Rotor,
}

impl Route {
    pub fn addr(self) -> SocketAddrV4 {
        match self {
            Route::Direct => backend_addr(1),
            Route::Rotor => VIP,
        }
    }
}

/// A client and what it does.
#[derive(Debug, Clone)]
pub enum Client {
    /// `h2load ARGS -N 5s -T BOUND http://ADDR/PATH`.
    H2load { args: Vec<String>, path: String },
    /// `nghttp -v -n ARGS http://ADDR/PATH` (counts the frames it received).
    Nghttp { args: Vec<String>, path: String },
    /// `tests/peers/h2_client.py h2 --addr ADDR --timeout T ARGS`.
    PythonH2 { args: Vec<String> },
    /// `rotor-load` with this spec (its `addr` and `timeout` are set per run).
    Load(LoadSpec),
}

impl Client {
    pub fn h2load(args: &[&str], path: &str) -> Client {
        Client::H2load {
            args: strings(args),
            path: path.to_string(),
        }
    }

    pub fn nghttp(args: &[&str], path: &str) -> Client {
        Client::Nghttp {
            args: strings(args),
            path: path.to_string(),
        }
    }

    pub fn python_h2(args: &[&str]) -> Client {
        Client::PythonH2 {
            args: strings(args),
        }
    }

    /// The command line, for reports.
    pub fn describe(&self) -> String {
        match self {
            Client::H2load { args, path } => join(["h2load"], args, path),
            Client::Nghttp { args, path } => join(["nghttp", "-n"], args, path),
            Client::PythonH2 { args } => format!("h2_client.py h2 {}", args.join(" ")),
            Client::Load(spec) => {
                // Without the per-run --addr and --timeout.
                let a = spec.args();
                let kept: Vec<&str> = a
                    .chunks(2)
                    .filter(|kv| kv[0] != "--addr" && kv[0] != "--timeout")
                    .flatten()
                    .map(String::as_str)
                    .collect();
                format!("rotor-load {}", kept.join(" "))
            }
        }
    }

    /// Whether the client reports response bodies (labels) per request.
    pub fn reports_bodies(&self) -> bool {
        matches!(self, Client::PythonH2 { .. } | Client::Load(_))
    }

    fn command(&self, bed: &TestBed, route: Route, limit: Duration) -> Result<Command> {
        let addr = route.addr();
        let cgroup = match route {
            Route::Direct => None,
            Route::Rotor => Some(bed.cgroup.path()),
        };
        let ns = bed.topo.client_ns();
        Ok(match self {
            Client::H2load { args, path } => {
                let mut cmd = netns_command(ns, cgroup, "h2load");
                // -N / -T: h2load ends a connection that is idle or open
                // past the bound and prints its counts. (Seen: a connection
                // stalled mid-run is not always ended; it is then stopped,
                // and its `progress:` lines tell how far it got.)
                let active = format!("{}ms", limit.as_millis().max(1));
                let inactive = format!("{}ms", scaled(H2LOAD_INACTIVITY).as_millis());
                cmd.args(args)
                    .args(["-N", &inactive, "-T", &active])
                    .arg(format!("http://{addr}{path}"));
                cmd
            }
            Client::Nghttp { args, path } => {
                let mut cmd = netns_command(ns, cgroup, "nghttp");
                cmd.args(["-v", "-n"])
                    .args(args)
                    .arg(format!("http://{addr}{path}"));
                cmd
            }
            Client::PythonH2 { args } => {
                let mut cmd = netns_command(ns, cgroup, python());
                cmd.arg(peers_dir().join("h2_client.py"))
                    .args(["h2", "--addr", &addr.to_string()])
                    .args(["--timeout", &format!("{:.1}", limit.as_secs_f64())])
                    .args(args);
                cmd
            }
            Client::Load(spec) => {
                let spec = LoadSpec {
                    addr,
                    timeout: limit.as_secs_f64(),
                    ..spec.clone()
                };
                let mut cmd = netns_command(ns, cgroup, load_binary()?);
                cmd.args(spec.args());
                cmd
            }
        })
    }

    fn parse(&self, stdout: &str, stderr: &str, out: &mut Outcome) -> Result<()> {
        match self {
            Client::H2load { .. } => parse_h2load_outcome(stdout, out),
            Client::Nghttp { .. } => {
                parse_nghttp(stdout, out);
                Ok(())
            }
            Client::PythonH2 { .. } => parse_python(stdout, out),
            Client::Load(_) => parse_load(stdout, out),
        }
        .with_context(|| format!("client stderr: {}", clip(stderr, 1500)))
    }
}

fn join<const N: usize>(head: [&str; N], args: &[String], tail: &str) -> String {
    let mut v: Vec<&str> = head.to_vec();
    v.extend(args.iter().map(String::as_str));
    v.push(tail);
    v.join(" ")
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// What a client saw in one run.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub elapsed: Duration,
    /// The client exited by itself within its bound.
    pub finished: bool,
    /// Its exit status (or that it was stopped).
    pub exit: String,
    /// Requests answered 2xx with a whole body / failed or unanswered.
    pub ok: u64,
    pub failed: u64,
    /// Status codes (classes for h2load: `2xx`, …).
    pub statuses: BTreeMap<String, u64>,
    /// Response bodies by label (text, or `<N bytes …>`), when the client tells.
    pub bodies: BTreeMap<String, u64>,
    /// Response body bytes in all (h2load's `data`, nghttp's DATA frames).
    pub data_bytes: Option<u64>,
    /// RST_STREAMs and GOAWAYs the client received.
    pub resets: u64,
    pub goaways: Vec<String>,
    /// Other errors the client reported (first few).
    pub errors: Vec<String>,
    /// The client's own summary lines.
    pub summary: String,
    /// For runs through rotor: kernel counters after minus before.
    pub kernel_delta: BTreeMap<String, u64>,
    /// The agent's connections in the last status sampled while the client ran.
    pub agent_during: String,
    /// Connections the agent listed in any sample while the client ran.
    pub agent_conns_seen: usize,
    /// Samples that listed a connection, and those in which every listed
    /// connection was on the kernel path (flag [`CONN_FAST`]).
    pub agent_samples: usize,
    pub agent_fast_samples: usize,
}

impl Outcome {
    /// One line for tables.
    pub fn line(&self) -> String {
        format!(
            "{} ok {} failed {:.2}s{}{}{}",
            self.ok,
            self.failed,
            self.elapsed.as_secs_f64(),
            if self.finished { "" } else { " STOPPED" },
            if self.resets > 0 {
                format!(" {} RST", self.resets)
            } else {
                String::new()
            },
            if self.goaways.is_empty() {
                String::new()
            } else {
                format!(" GOAWAY {:?}", self.goaways)
            },
        )
    }

    /// Distinct backend names among the bodies (`be1`, `be2`, …).
    pub fn backends_seen(&self) -> usize {
        self.bodies.keys().filter(|k| is_backend_name(k)).count()
    }
}

fn is_backend_name(s: &str) -> bool {
    s.strip_prefix("be")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// How bodies compare between the direct run and rotor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bodies {
    /// Every backend serves the same bytes: labels must match exactly.
    Same,
    /// `/whoami`: the body names the backend; only the count of names must
    /// match, and through rotor they must name more than one backend (when
    /// the client reports bodies and there are enough requests).
    BackendNames,
}

/// What a scenario must do.
#[derive(Debug, Clone)]
pub struct Expect {
    /// Requests the client makes (all must succeed directly and through rotor).
    pub requests: u64,
    pub bodies: Bodies,
    /// The client keeps opening streams after its first flight, so its
    /// connection must reach the kernel path (`CONN_FAST`) in one of the
    /// status samples taken while it runs. (A client that opened every
    /// stream in its first flight has no stream frame left for the kernel
    /// to carry: responses go through the kernel either way.)
    pub kernel_path: bool,
}

/// Runs `client` one way, bounded by `limit` (its own timeout where it has
/// one) and `limit` + a grace to report (then it is stopped).
pub fn run(bed: &mut TestBed, client: &Client, route: Route, limit: Duration) -> Result<Outcome> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let cmd = client.command(bed, route, limit)?;
    let agent = match route {
        Route::Rotor => Some(bed.agent().context("a run through rotor needs the agent")?),
        Route::Direct => bed.agent.as_ref(),
    };
    let before = match agent {
        Some(a) => probe::kernel_counters(&probe::status(a)?),
        None => BTreeMap::new(),
    };
    let name = format!("diff-{}-{:?}", RUNS.fetch_add(1, Ordering::Relaxed), route);
    let start = Instant::now();
    let mut child = Child::spawn(&name, cmd, bed.topo.dir())?;
    let hard = limit + scaled(REPORT_GRACE);
    let mut out = Outcome::default();
    let mut next_sample = start;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            out.finished = start.elapsed() <= hard;
            break format!("{st}");
        }
        if route == Route::Rotor && Instant::now() >= next_sample {
            if let Some(a) = agent {
                if let Ok(st) = probe::status(a) {
                    let list = st["connections"].as_array().cloned().unwrap_or_default();
                    let conns = list.len();
                    if conns > 0 {
                        out.agent_conns_seen = out.agent_conns_seen.max(conns);
                        out.agent_samples += 1;
                        let fast =
                            |c: &Value| c["kernel"]["flags"].as_u64().unwrap_or(0) & CONN_FAST != 0;
                        if list.iter().all(fast) {
                            out.agent_fast_samples += 1;
                        }
                        out.agent_during = format!(
                            "at {:.2}s: {}",
                            start.elapsed().as_secs_f64(),
                            connections_text(&st)
                        );
                    }
                }
            }
            next_sample = Instant::now() + SAMPLE_EVERY;
        }
        if start.elapsed() >= hard {
            child.stop();
            break format!("stopped after {hard:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    out.elapsed = start.elapsed();
    out.exit = status;
    if let Some(a) = agent {
        let after = probe::kernel_counters(&probe::status(a)?);
        out.kernel_delta = after
            .iter()
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
    }
    let stdout = child.output(Stream::Stdout);
    let stderr = child.output(Stream::Stderr);
    if let Err(e) = client.parse(&stdout, &stderr, &mut out) {
        // A client stopped before it reported: nothing answered as far as we know.
        out.errors.push(format!("{e:#}"));
        out.summary = format!("no report ({})", out.exit);
    }
    Ok(out)
}

/// The agent's connections, one line each: path (kernel `fast` or agent),
/// what it read, and its upstreams' kernel counters.
pub fn connections_text(status: &Value) -> String {
    let Some(conns) = status["connections"].as_array() else {
        return "no connections".into();
    };
    let mut s = format!("{} connection(s)", conns.len());
    for c in conns.iter().take(8) {
        let k = &c["kernel"];
        let ups: Vec<String> = k["upstreams"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|u| {
                        format!(
                            "#{} st{} streams {} req {}/{} resp {}{}",
                            u["slot"],
                            u["state"],
                            u["streams"],
                            u["req_data"],
                            u["req_limit"],
                            u["resp_data"],
                            if u["diverted"].as_bool() == Some(true) {
                                " diverted"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let _ = write!(
            s,
            "\n    conn {} fast={} read {} B / {} msgs, flags {:#x}, client_recv {} client_limit {}; upstreams [{}]",
            c["id"],
            c["fast"],
            c["read_bytes"],
            c["read_messages"],
            k["flags"].as_u64().unwrap_or(0),
            k["client_recv"],
            k["client_limit"],
            ups.join("; ")
        );
    }
    s
}

mod parse;
mod session;
mod verdict;

use parse::*;
pub use session::*;
pub use verdict::*;
