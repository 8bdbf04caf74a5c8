//! Differential runs: one client scenario run straight to a backend (its
//! address dialled directly, outside the test cgroup: no agent involvement)
//! and through rotor (the Service VIP, in the test cgroup, with the agent),
//! then compared on what the client saw: requests that succeeded or failed,
//! status codes, body sizes and digests, response bytes, resets, GOAWAYs, and
//! how long it took.
//!
//! Every run is bounded. The direct run is the reference: the run through
//! rotor may take at most [`TIME_FACTOR`] × the direct time + [`TIME_SLACK`],
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

use crate::agent::Agent;
use crate::bed::TestBed;
use crate::cgroup::TestCgroup;
use crate::load::{load_binary, LoadSpec};
use crate::loadgen::LoadReport;
use crate::peers::{clip, peers_dir, python};
use crate::probe;
use crate::process::{netns_command, Child, Stream};
use crate::tools::parse_h2load;
use crate::topology::{backend_addr, VIP};

/// A run through rotor may take this many times the direct run's time …
pub const TIME_FACTOR: u32 = 4;
/// … plus this.
pub const TIME_SLACK: Duration = Duration::from_secs(5);
/// The bound of a direct run (the reference; beyond it the bed is broken).
pub const DIRECT_LIMIT: Duration = Duration::from_secs(180);
/// h2load's `-N`: a connection without a byte for this long is stalled
/// (h2load then ends it and still prints its counts).
pub const H2LOAD_INACTIVITY: &str = "5s";
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
                cmd.args(args)
                    .args(["-N", H2LOAD_INACTIVITY, "-T", &active])
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
    let hard = limit + REPORT_GRACE;
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

/// The comparison of one scenario.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub name: String,
    pub client: String,
    pub direct: Outcome,
    pub rotor: Outcome,
    /// Empty when rotor's run matches the direct one.
    pub problems: Vec<String>,
    /// Agent diagnostics taken when there were problems.
    pub diagnostics: String,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The bound of a run through rotor after a direct run that took `direct`.
pub fn rotor_limit(direct: Duration) -> Duration {
    direct * TIME_FACTOR + TIME_SLACK
}

/// What differs between a direct and a rotor run of the same scenario
/// (also what is wrong with the direct run itself).
pub fn compare(expect: &Expect, client: &Client, direct: &Outcome, rotor: &Outcome) -> Vec<String> {
    let mut p = Vec::new();
    // The reference must be right, or nothing can be compared.
    let direct_ok = direct.finished
        && direct.ok == expect.requests
        && direct.failed == 0
        && direct.resets == 0
        && direct.goaways.is_empty();
    if !direct_ok {
        p.push(format!(
            "the DIRECT run itself failed (want {} ok): {} [{}] errors {:?}",
            expect.requests,
            direct.line(),
            direct.summary,
            direct.errors
        ));
    }
    if direct
        .kernel_delta
        .get("connect_rewrite")
        .is_some_and(|n| *n > 0)
    {
        p.push(format!(
            "the direct run was redirected by the agent: kernel {:?}",
            direct.kernel_delta
        ));
    }
    let limit = rotor_limit(direct.elapsed);
    if !rotor.finished {
        p.push(format!(
            "through rotor the client did not finish within {:.1}s ({}× direct {:.2}s + {:?}): {}",
            limit.as_secs_f64(),
            TIME_FACTOR,
            direct.elapsed.as_secs_f64(),
            TIME_SLACK,
            rotor.exit
        ));
    } else if rotor.elapsed > limit {
        p.push(format!(
            "through rotor took {:.2}s, more than {}× direct {:.2}s + {:?}",
            rotor.elapsed.as_secs_f64(),
            TIME_FACTOR,
            direct.elapsed.as_secs_f64(),
            TIME_SLACK
        ));
    }
    if rotor
        .kernel_delta
        .get("connect_rewrite")
        .copied()
        .unwrap_or(0)
        == 0
    {
        p.push(format!(
            "the run through rotor was not redirected (no connect_rewrite): kernel {:?}",
            rotor.kernel_delta
        ));
    }
    let mut diff = |what: &str, d: String, r: String| {
        if d != r {
            p.push(format!("{what}: direct {d}, rotor {r}"));
        }
    };
    diff("ok requests", direct.ok.to_string(), rotor.ok.to_string());
    diff(
        "failed requests",
        direct.failed.to_string(),
        rotor.failed.to_string(),
    );
    diff(
        "status codes",
        format!("{:?}", direct.statuses),
        format!("{:?}", rotor.statuses),
    );
    diff(
        "response body bytes",
        format!("{:?}", direct.data_bytes),
        format!("{:?}", rotor.data_bytes),
    );
    diff(
        "RST_STREAMs received",
        direct.resets.to_string(),
        rotor.resets.to_string(),
    );
    diff(
        "GOAWAYs received",
        format!("{:?}", direct.goaways),
        format!("{:?}", rotor.goaways),
    );
    let norm = |b: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for (k, v) in b {
            let key = match expect.bodies {
                Bodies::BackendNames if is_backend_name(k) => "be*".to_string(),
                _ => k.clone(),
            };
            *m.entry(key).or_insert(0) += v;
        }
        m
    };
    diff(
        "bodies",
        format!("{:?}", norm(&direct.bodies)),
        format!("{:?}", norm(&rotor.bodies)),
    );
    if expect.bodies == Bodies::BackendNames
        && client.reports_bodies()
        && rotor.ok >= 6
        && rotor.backends_seen() < 2
    {
        p.push(format!(
            "through rotor every request went to one backend: {:?}",
            rotor.bodies
        ));
    }
    if expect.kernel_path && rotor.agent_samples > 0 && rotor.agent_fast_samples == 0 {
        p.push(format!(
            "the connection never reached the kernel path: no CONN_FAST in {} samples of the \
             agent's status (last: {})",
            rotor.agent_samples, rotor.agent_during
        ));
    }
    if !rotor.errors.is_empty() && direct.errors.is_empty() {
        p.push(format!("client errors through rotor: {:?}", rotor.errors));
    }
    p
}

/// Runs a scenario direct, then through rotor, and compares.
pub fn differential(
    bed: &mut TestBed,
    name: &str,
    client: &Client,
    expect: &Expect,
) -> Result<Verdict> {
    let direct = run(bed, client, Route::Direct, DIRECT_LIMIT)?;
    let rotor = run(bed, client, Route::Rotor, rotor_limit(direct.elapsed))?;
    Ok(verdict(bed, name, client, expect, direct, rotor))
}

/// Compares two outcomes and, when they differ, takes the agent's diagnostics.
pub fn verdict(
    bed: &mut TestBed,
    name: &str,
    client: &Client,
    expect: &Expect,
    direct: Outcome,
    rotor: Outcome,
) -> Verdict {
    let problems = compare(expect, client, &direct, &rotor);
    let diagnostics = if problems.is_empty() {
        String::new()
    } else {
        probe::report(bed)
    };
    Verdict {
        name: name.to_string(),
        client: client.describe(),
        direct,
        rotor,
        problems,
        diagnostics,
    }
}

/// Text of a failed verdict: both outcomes, the problems, what the agent
/// showed while the client ran, and the diagnostics.
pub fn explain(v: &Verdict) -> String {
    let mut s = format!("── {} — {}\n", v.name, v.client);
    for (route, o) in [("direct", &v.direct), ("rotor ", &v.rotor)] {
        let _ = writeln!(
            s,
            "  {route}: {}\n          {}\n          statuses {:?} bodies {:?} data {:?} errors {:?}",
            o.line(),
            o.summary.replace('\n', "\n          "),
            o.statuses,
            o.bodies,
            o.data_bytes,
            o.errors
        );
    }
    let _ = writeln!(
        s,
        "  rotor kernel counters (delta): {:?}",
        v.rotor.kernel_delta
    );
    if !v.rotor.agent_during.is_empty() {
        let _ = writeln!(
            s,
            "  agent while the client ran (last sample), {}",
            v.rotor.agent_during
        );
    }
    for p in &v.problems {
        let _ = writeln!(s, "  PROBLEM: {p}");
    }
    if !v.diagnostics.is_empty() {
        let _ = writeln!(s, "  diagnostics:\n{}", clip(&v.diagnostics, 12_000));
    }
    s
}

/// A table of verdicts, one line each.
pub fn table(verdicts: &[Verdict]) -> String {
    let mut s = String::new();
    for v in verdicts {
        let _ = writeln!(
            s,
            "{} {:<58} direct: {:<40} rotor: {}",
            if v.passed() { "PASS" } else { "FAIL" },
            v.name,
            v.direct.line(),
            v.rotor.line()
        );
    }
    s
}

// ---- client output parsers ----

fn parse_h2load_outcome(stdout: &str, out: &mut Outcome) -> Result<()> {
    if !stdout.lines().any(|l| l.starts_with("requests:")) {
        // Stopped before its summary: how far its progress lines got.
        let total = stdout
            .lines()
            .find_map(|l| {
                l.split_once("client(s). ")?
                    .1
                    .strip_suffix(" total requests")
            })
            .unwrap_or("?");
        let progress = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("progress: "))
            .unwrap_or("0% done");
        out.summary = format!("no summary: stopped with {progress} of {total} requests");
        out.errors.push(format!(
            "h2load stopped before its summary, {progress} of {total} requests"
        ));
        return Ok(());
    }
    let s = parse_h2load(stdout)?;
    out.ok = s.succeeded;
    out.failed = s.total.saturating_sub(s.succeeded);
    if let Some(line) = stdout.lines().find(|l| l.starts_with("status codes:")) {
        for part in line.trim_start_matches("status codes:").split(',') {
            let mut it = part.split_whitespace();
            if let (Some(n), Some(class)) = (it.next(), it.next()) {
                let n: u64 = n.parse().unwrap_or(0);
                if n > 0 {
                    out.statuses.insert(class.to_string(), n);
                }
            }
        }
    }
    out.data_bytes = stdout
        .lines()
        .find(|l| l.starts_with("traffic:"))
        .and_then(|l| l.split(',').find(|p| p.trim_end().ends_with("data")))
        .and_then(paren_number);
    let mut lines = s.lines.clone();
    lines.extend(
        stdout
            .lines()
            .filter(|l| l.starts_with("traffic:"))
            .map(str::to_string),
    );
    out.summary = lines.join("\n");
    Ok(())
}

/// The number in the first parentheses of `s`: `87.89KB (90000) data` → 90000.
fn paren_number(s: &str) -> Option<u64> {
    let open = s.find('(')?;
    let close = s[open..].find(')')? + open;
    s[open + 1..close].trim().parse().ok()
}

#[derive(Debug, Default)]
struct NghttpStream {
    status: Option<String>,
    data: u64,
    ended: bool,
    reset: bool,
}

/// nghttp -v: `recv (stream_id=13) :status: 200`, `recv DATA frame
/// <length=16384, flags=0x00, stream_id=13>`, `recv RST_STREAM frame …`,
/// `recv GOAWAY frame …` and the `(last_stream_id=…, error_code=…)` line after it.
fn parse_nghttp(stdout: &str, out: &mut Outcome) {
    let mut streams: BTreeMap<u64, NghttpStream> = BTreeMap::new();
    let mut lines = stdout.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.split_once("] recv ").map(|(_, r)| r) else {
            continue;
        };
        if let Some(r) = rest.strip_prefix("(stream_id=") {
            if let Some((id, field)) = r.split_once(") ") {
                if let (Ok(id), Some(st)) = (id.parse(), field.strip_prefix(":status: ")) {
                    streams.entry(id).or_default().status = Some(st.trim().to_string());
                }
            }
            continue;
        }
        let Some((kind, attrs)) = rest.split_once(" frame <") else {
            continue;
        };
        let attr = |name: &str| -> Option<u64> {
            let v = attrs.split(", ").find_map(|a| a.strip_prefix(name))?;
            let v = v.trim_end_matches('>');
            match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            }
        };
        let (len, flags, id) = (
            attr("length=").unwrap_or(0),
            attr("flags=").unwrap_or(0),
            attr("stream_id=").unwrap_or(0),
        );
        match kind {
            "DATA" => {
                let s = streams.entry(id).or_default();
                s.data += len;
                s.ended |= flags & 1 != 0;
            }
            "HEADERS" => streams.entry(id).or_default().ended |= flags & 1 != 0,
            "RST_STREAM" => {
                streams.entry(id).or_default().reset = true;
                out.resets += 1;
            }
            "GOAWAY" => {
                let detail = lines
                    .peek()
                    .map(|l| l.trim().to_string())
                    .unwrap_or_default();
                out.goaways.push(detail);
            }
            _ => {}
        }
    }
    let mut data = 0;
    for s in streams.values() {
        if s.status.is_none() && !s.reset {
            continue; // nghttp's PRIORITY placeholder streams
        }
        data += s.data;
        if let Some(st) = &s.status {
            *out.statuses.entry(st.clone()).or_insert(0) += 1;
        }
        if s.ended && !s.reset && s.status.as_deref().is_some_and(|c| c.starts_with('2')) {
            out.ok += 1;
            *out.bodies.entry(format!("<{} bytes>", s.data)).or_insert(0) += 1;
        } else {
            out.failed += 1;
        }
    }
    out.data_bytes = Some(data);
    out.summary = format!(
        "{} request stream(s), {} B of DATA; {}",
        out.ok + out.failed,
        data,
        stdout
            .lines()
            .filter(|l| l.contains("send GOAWAY") || l.contains("error"))
            .take(3)
            .collect::<Vec<_>>()
            .join(" | ")
    );
}

fn last_json(stdout: &str) -> Result<Value> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("no JSON report; stdout: {}", clip(stdout, 1000)))?;
    serde_json::from_str(line).with_context(|| format!("parsing {line:.300}"))
}

fn parse_python(stdout: &str, out: &mut Outcome) -> Result<()> {
    let v = last_json(stdout)?;
    out.ok = v["ok"].as_u64().unwrap_or(0);
    out.failed = v["failed"].as_u64().unwrap_or(0);
    if let Some(b) = v["bodies"].as_object() {
        for (k, n) in b {
            out.bodies.insert(k.clone(), n.as_u64().unwrap_or(0));
        }
    }
    let corrupt = v["corrupt"].as_u64().unwrap_or(0);
    if corrupt > 0 {
        out.errors
            .push(format!("{corrupt} echoed bodies differ from the upload"));
    }
    if let Some(errs) = v["errors"].as_object() {
        for (e, n) in errs {
            classify_error(e, n.as_u64().unwrap_or(1), out);
        }
    }
    out.summary = clip(&v.to_string(), 600);
    Ok(())
}

fn parse_load(stdout: &str, out: &mut Outcome) -> Result<()> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("no rotor-load report; stdout: {}", clip(stdout, 1000)))?;
    let r: LoadReport =
        serde_json::from_str(line).with_context(|| format!("parsing {line:.300}"))?;
    out.ok = r.ok;
    out.failed = r.failed;
    out.bodies = r.by_body.clone();
    for e in &r.errors {
        classify_error(e, 1, out);
    }
    out.summary = format!(
        "ok {} failed {} p50 {}us p99 {}us max {}us",
        r.ok, r.failed, r.p50_us, r.p99_us, r.max_us
    );
    Ok(())
}

fn classify_error(e: &str, n: u64, out: &mut Outcome) {
    if e.contains("RST_STREAM") {
        out.resets += n;
    } else if e.contains("GOAWAY") {
        out.goaways.push(e.to_string());
    }
    // Every error string is kept (a reset is also an error the client saw).
    if out.errors.len() < 10 {
        out.errors.push(if n > 1 {
            format!("{e} (×{n})")
        } else {
            e.to_string()
        });
    }
}

/// Where the agent process runs relative to the clients' cgroup (the one
/// its programs attach to, `--cgroup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In the clients' cgroup, as on a node whose `--cgroup` is the root.
    Inside,
    /// In a cgroup of its own beside the clients' one, as an agent started
    /// from a shell, or a pod whose `--cgroup` names a subtree.
    Outside,
}

impl Placement {
    pub fn other(self) -> Placement {
        match self {
            Placement::Inside => Placement::Outside,
            Placement::Outside => Placement::Inside,
        }
    }
}

/// A sequence of differential scenarios on one bed; failures are collected,
/// not raised, so one run shows every scenario. [`Session::finish`] panics
/// with all failures. After a failed scenario the agent is restarted, so the
/// next scenario starts from a fresh agent instead of one left stalled.
pub struct Session {
    // Field order is drop order: the agent (in `bed`) stops before its own
    // cgroup goes.
    pub bed: TestBed,
    own_cgroup: Option<TestCgroup>,
    pub placement: Placement,
    pub label: String,
    pub verdicts: Vec<Verdict>,
}

impl Session {
    /// A session on `bed` (without an agent yet): starts the agent at `placement`.
    pub fn new(bed: TestBed, label: &str, placement: Placement) -> Result<Session> {
        let mut s = Session {
            bed,
            own_cgroup: None,
            placement,
            label: label.to_string(),
            verdicts: Vec::new(),
        };
        s.start_agent(placement)?;
        Ok(s)
    }

    /// Stops the agent, if any, and starts a fresh one (with every backend)
    /// at `placement`; returns once it printed `ready`.
    pub fn start_agent(&mut self, placement: Placement) -> Result<()> {
        self.bed.agent = None;
        match placement {
            Placement::Inside => self.bed.start_agent(),
            Placement::Outside => {
                if self.own_cgroup.is_none() {
                    self.own_cgroup = Some(TestCgroup::create().context("the agent's own cgroup")?);
                }
                let own = self.own_cgroup.as_ref().context("no own cgroup")?;
                let endpoints = self.bed.topo.backend_addrs();
                self.bed.agent = Some(Agent::start_outside(
                    &self.bed.topo,
                    &self.bed.cgroup,
                    own,
                    &endpoints,
                )?);
                Ok(())
            }
        }
    }

    /// Runs one scenario direct and through rotor, and records the verdict.
    pub fn scenario(&mut self, name: &str, client: Client, expect: Expect) {
        eprintln!("[{}] {name}: {}", self.label, client.describe());
        let v = match differential(&mut self.bed, name, &client, &expect) {
            Ok(v) => v,
            Err(e) => self.harness_error(name, &client, e),
        };
        self.record(v);
    }

    /// Records a verdict (printing it), restarting the agent after a failure.
    pub fn record(&mut self, v: Verdict) {
        eprintln!(
            "[{}] {} {}\n    direct {}\n    rotor  {}",
            self.label,
            if v.passed() { "PASS" } else { "FAIL" },
            v.name,
            v.direct.line(),
            v.rotor.line()
        );
        let failed = !v.passed();
        if failed {
            eprintln!("{}", explain(&v));
        }
        self.verdicts.push(v);
        if failed {
            if let Err(e) = self.restart_agent() {
                panic!("[{}] restarting the agent: {e:#}", self.label);
            }
        }
    }

    /// A verdict for a run the harness could not even make.
    pub fn harness_error(&mut self, name: &str, client: &Client, e: anyhow::Error) -> Verdict {
        let diagnostics = probe::report(&mut self.bed);
        Verdict {
            name: name.to_string(),
            client: client.describe(),
            direct: Outcome::default(),
            rotor: Outcome::default(),
            problems: vec![format!("harness error: {e:#}")],
            diagnostics,
        }
    }

    /// Stops the agent and starts a fresh one at the session's placement.
    pub fn restart_agent(&mut self) -> Result<()> {
        self.start_agent(self.placement)
    }

    /// Prints the table and panics with every failure.
    pub fn finish(self) {
        let t = table(&self.verdicts);
        eprintln!("[{}] results:\n{t}", self.label);
        let failed: Vec<&Verdict> = self.verdicts.iter().filter(|v| !v.passed()).collect();
        if !failed.is_empty() {
            let details: Vec<String> = failed.iter().map(|v| explain(v)).collect();
            panic!(
                "[{}] {} of {} scenarios differ through rotor:\n{t}\n{}",
                self.label,
                failed.len(),
                self.verdicts.len(),
                details.join("\n")
            );
        }
    }
}

/// Fails unless `bed` can run the clients (h2load, nghttp, Python h2, rotor-load).
pub fn clients_available() -> Result<()> {
    crate::peers::python_has(&["h2"])?;
    load_binary()?;
    for tool in ["h2load", "nghttp"] {
        if !std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join(tool).is_file())
        {
            bail!("`{tool}` not found in PATH");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2load_counts_statuses_and_data() {
        let stdout = "finished in 1.20s, 25000.00 req/s, 1.10MB/s\n\
requests: 30000 total, 21861 started, 21845 done, 21845 succeeded, 8155 failed, 8155 errored, 0 timeout\n\
status codes: 21845 2xx, 0 3xx, 0 4xx, 0 5xx\n\
traffic: 1.10MB (1153285) total, 293.58KB (300623) headers (space savings 95.22%), 63.99KB (65535) data\n";
        let mut o = Outcome::default();
        parse_h2load_outcome(stdout, &mut o).unwrap();
        assert_eq!((o.ok, o.failed), (21845, 8155));
        assert_eq!(o.statuses.get("2xx"), Some(&21845));
        assert_eq!(o.statuses.len(), 1);
        assert_eq!(o.data_bytes, Some(65535));
    }

    #[test]
    fn h2load_stopped_reports_progress() {
        let stdout = "starting benchmark...\n\
spawning thread #0: 1 total client(s). 30000 total requests\n\
Application protocol: h2c\n\
progress: 10% done\n\
progress: 70% done\n";
        let mut o = Outcome::default();
        parse_h2load_outcome(stdout, &mut o).unwrap();
        assert_eq!((o.ok, o.failed), (0, 0));
        assert!(o.summary.contains("70% done of 30000"), "{}", o.summary);
    }

    #[test]
    fn nghttp_frames() {
        let stdout = "[  0.001] send HEADERS frame <length=38, flags=0x25, stream_id=13>\n\
[  0.002] recv (stream_id=13) :status: 200\n\
[  0.002] recv HEADERS frame <length=20, flags=0x04, stream_id=13>\n\
[  0.003] recv DATA frame <length=16384, flags=0x00, stream_id=13>\n\
[  0.003] recv DATA frame <length=100, flags=0x01, stream_id=13>\n\
[  0.004] recv (stream_id=15) :status: 200\n\
[  0.004] recv HEADERS frame <length=20, flags=0x04, stream_id=15>\n\
[  0.005] recv RST_STREAM frame <length=4, flags=0x00, stream_id=15>\n\
          (error_code=CANCEL(0x08))\n\
[  0.006] recv GOAWAY frame <length=8, flags=0x00, stream_id=0>\n\
          (last_stream_id=0, error_code=NO_ERROR(0x00), opaque_data(0)=[])\n";
        let mut o = Outcome::default();
        parse_nghttp(stdout, &mut o);
        assert_eq!((o.ok, o.failed, o.resets), (1, 1, 1));
        assert_eq!(o.data_bytes, Some(16484));
        assert_eq!(o.bodies.get("<16484 bytes>"), Some(&1));
        assert_eq!(o.statuses.get("200"), Some(&2));
        assert_eq!(o.goaways.len(), 1);
        assert!(o.goaways[0].contains("NO_ERROR"));
    }

    #[test]
    fn backend_bodies_normalise() {
        let expect = Expect {
            requests: 6,
            bodies: Bodies::BackendNames,
            kernel_path: true,
        };
        let client = Client::Load(LoadSpec::whoami(1, 1, 6));
        let direct = Outcome {
            finished: true,
            ok: 6,
            bodies: [("be1".to_string(), 6)].into(),
            ..Outcome::default()
        };
        let mut rotor = Outcome {
            finished: true,
            ok: 6,
            bodies: [("be1".to_string(), 3), ("be2".to_string(), 3)].into(),
            kernel_delta: [("connect_rewrite".to_string(), 1)].into(),
            ..Outcome::default()
        };
        assert_eq!(
            compare(&expect, &client, &direct, &rotor),
            Vec::<String>::new()
        );
        rotor.bodies = [("be2".to_string(), 6)].into();
        assert_eq!(compare(&expect, &client, &direct, &rotor).len(), 1);
    }
}
