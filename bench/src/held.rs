//! Runs with many client connections held open by `rotor-bench-conns`
//! (conn_memory's client) on one path:
//!
//! * `upstreams-200x3`: 200 client connections that made 3 requests each,
//!   still open; the established TCP connections each backend then holds
//!   on its port (`ss -Htn state established` in its netns) that it did
//!   not hold before they opened. A count, not a speed: valid on a busy
//!   machine too.
//! * `idle1000-1x16-100b`: the closed loop 1 × 16 without, then with, 1,000
//!   idle connections open beside it; the report gives their ratio.

use std::fmt::Write as _;

use super::*;
use conn_memory::client::Phase;
use report::{failed, fmt_ratio, fmt_rps, fmt_share, fmt_us, ScenarioSummary};

/// How long the held connections may take to open.
const OPEN_LIMIT: Duration = Duration::from_secs(120);

/// `rotor-bench-conns` on `path`, once it holds its connections (after
/// `requests` requests each); with the last phase line it printed.
/// Dropping the child closes them.
fn hold(
    bed: &Bed,
    path: Path4,
    sc: &Scenario,
    clients: usize,
    requests: usize,
    tag: &str,
) -> Result<(Child, Phase)> {
    let bin = find_binary("rotor-bench-conns", "ROTOR_BENCH_CONNS_BIN")?;
    let mut cmd = netns_command(bed.topo.client_ns(), bed.cgroup_for(path), &bin);
    cmd.arg("--addr")
        .arg(bed.addr(path, sc.servers).to_string())
        .arg("--path")
        .arg(&sc.path)
        .arg("--connections")
        .arg(clients.to_string())
        .arg("--requests")
        .arg(requests.to_string());
    let mut child = Child::spawn(&format!("bench-conns-{tag}"), cmd, bed.topo.dir())?;
    let deadline = Instant::now() + OPEN_LIMIT;
    loop {
        let out = child.output(Stream::Stdout);
        if let Some(line) = out.lines().find(|l| l.contains("\"holding\"")) {
            let phase: Phase =
                serde_json::from_str(line).with_context(|| format!("client line {line:?}"))?;
            return Ok((child, phase));
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "rotor-bench-conns exited ({status}):\n{}",
                child.stderr_tail()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "rotor-bench-conns: {clients} connections not open within {OPEN_LIMIT:?}:\n{}",
                child.stderr_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The client's shortfall as errors of the sample (none when all opened).
fn phase_errors(phase: &Phase, want: usize) -> Vec<String> {
    let mut e = Vec::new();
    if phase.connections < want || phase.requests_failed > 0 {
        e.push(format!(
            "rotor-bench-conns held {} of {want} connections ({} failed): {}",
            phase.connections,
            phase.requests_failed,
            phase.errors.join("; ")
        ));
    }
    e
}

/// The connections (`local peer`) in `ss -Htn state established` (no state
/// column: `Recv-Q Send-Q Local Peer …`) whose local port is `port`.
pub fn established(ss: &str, port: u16) -> Vec<String> {
    ss.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().skip(2);
            let (local, peer) = (f.next()?, f.next()?);
            let p = local.rsplit_once(':')?.1.parse::<u16>().ok()?;
            (p == port).then(|| format!("{local} {peer}"))
        })
        .collect()
}

/// Per backend: how many of `now` were not in `before` (connections of an
/// earlier run, a proxy's idle pool, are not the clients').
pub fn new_since(before: &[Vec<String>], now: &[Vec<String>]) -> Vec<u64> {
    now.iter()
        .enumerate()
        .map(|(k, conns)| {
            let old = before.get(k);
            conns
                .iter()
                .filter(|c| !old.is_some_and(|o| o.contains(c)))
                .count() as u64
        })
        .collect()
}

/// Established connections on [`RUST_PORT`] in every backend's netns, be1 first.
fn backend_conns(bed: &Bed) -> Result<Vec<Vec<String>>> {
    (1..=SCALED)
        .map(|k| {
            let ns = bed.topo.backend(k)?.netns().to_string();
            let out = rotor_testbed::util::run(
                std::process::Command::new("nsenter")
                    .arg(format!("--net=/var/run/netns/{ns}"))
                    .args(["--", "ss", "-Htn", "state", "established"]),
            )
            .with_context(|| format!("ss in {ns}"))?;
            Ok(established(
                &String::from_utf8_lossy(&out.stdout),
                RUST_PORT,
            ))
        })
        .collect()
}

fn empty_sample(rep: usize, bg: f64) -> Sample {
    Sample {
        failed: 0,
        errors: Vec::new(),
        background_cores: bg,
        ..Sample::failed(rep, String::new())
    }
}

pub(super) fn run_upstreams(
    bed: &mut Bed,
    _opts: &BenchOptions,
    sc: &Scenario,
    path: Path4,
    rep: usize,
) -> Result<Sample> {
    let Load::Upstreams { clients, requests } = sc.load else {
        bail!("not an upstreams scenario");
    };
    // Connections of earlier runs closing (a proxy's idle pool stays).
    std::thread::sleep(Duration::from_millis(500));
    let before = backend_conns(bed)?;
    let counts0 = bed.read_counts()?;
    let (child, phase) = hold(
        bed,
        path,
        sc,
        clients,
        requests,
        &format!("{}-{path:?}-{rep}", sc.id),
    )?;
    // Let the last upstream handshakes settle before counting.
    std::thread::sleep(Duration::from_millis(300));
    let held = backend_conns(bed)?;
    std::thread::sleep(Duration::from_millis(30));
    let counts = diff(&counts0, &bed.read_counts()?);
    drop(child);
    let mut s = empty_sample(rep, f64::NAN);
    s.ok = counts.iter().sum();
    s.share_max_min = share_of(path, &counts, INITIAL);
    s.counts = counts;
    s.errors = phase_errors(&phase, clients);
    s.failed = phase.requests_failed;
    s.upstream_conns = new_since(&before, &held);
    s.upstream_conns_before = before.iter().map(|c| c.len() as u64).collect();
    Ok(s)
}

pub(super) fn run_idle(
    bed: &mut Bed,
    opts: &BenchOptions,
    sc: &Scenario,
    path: Path4,
    rep: usize,
) -> Result<Sample> {
    let Load::Idle {
        idle,
        connections,
        streams,
    } = sc.load
    else {
        bail!("not an idle scenario");
    };
    let closed = Scenario {
        load: Load::Closed {
            connections,
            streams,
        },
        ..sc.clone()
    };
    let without = run_steady(bed, opts, &closed, path, rep).context("without the idle ones")?;
    let (child, phase) = hold(bed, path, sc, idle, 1, &format!("{}-{path:?}-{rep}", sc.id))?;
    let with = run_steady(bed, opts, &closed, path, rep).context("with the idle ones");
    drop(child);
    let mut with = with?;
    with.errors.extend(phase_errors(&phase, idle));
    with.without_idle = Some(Box::new(without));
    Ok(with)
}

// ---- report ----

/// `upstreams-…`: per path, what the backends held while the clients were open.
pub fn upstreams_table(m: &mut String, s: &ScenarioSummary) {
    let _ = writeln!(m, "Established TCP connections on each backend's port (`ss -Htn state established` in its netns) while the client connections are still open, less those already there just before they opened; \"before\": those, all backends (a proxy's idle pool from earlier runs). Goal: ≤ {} to any endpoint.\n", goals::MAX_UPSTREAMS);
    let _ = writeln!(
        m,
        "| path | most to one endpoint | all endpoints | per backend (be1 …) | before | share of requests max/min |"
    );
    let _ = writeln!(m, "|---|--:|--:|---|--:|--:|");
    for p in &s.paths {
        let _ = writeln!(
            m,
            "| {}{} | {} | {} | {:?} | {} | {} |",
            p.label,
            failed(p),
            fmt_rps(p.upstream_max.median),
            fmt_rps(p.upstream_total.median),
            p.upstream_by_backend,
            fmt_rps(p.upstream_before_total.median),
            fmt_share(p.share_max_min.median)
        );
    }
}

/// `idle…`: the load with the idle connections open, and ÷ the same load
/// just before without them, per path.
pub fn idle_table(m: &mut String, s: &ScenarioSummary) {
    let _ = writeln!(m, "| path | req/s | p99 | CPU/req | req/s without idle | req/s ÷ without | p99 ÷ without | CPU ÷ without | req/s ÷ direct | p99 ÷ direct | CPU ÷ HAProxy |");
    let _ = writeln!(m, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    let nan = f64::NAN;
    for p in &s.paths {
        let w = p.vs_without_idle;
        let _ = writeln!(
            m,
            "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.label,
            failed(p),
            fmt_rps(p.rps.median),
            fmt_us(p.p99_us.median),
            fmt_us(p.cpu_us_per_req.median),
            fmt_rps(p.without_idle.as_ref().map_or(nan, |x| x.rps.median)),
            fmt_ratio(w.map_or(nan, |r| r.rps)),
            fmt_ratio(w.map_or(nan, |r| r.p99)),
            fmt_ratio(w.map_or(nan, |r| r.cpu_per_req)),
            fmt_ratio(p.vs_direct.map_or(nan, |r| r.rps)),
            fmt_ratio(p.vs_direct.map_or(nan, |r| r.p99)),
            fmt_ratio(p.vs_haproxy.map_or(nan, |r| r.cpu_per_req)),
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_established_to_the_port() {
        let ss = "0      0          10.1.1.2:8081      10.0.0.1:40000\n\
                  0      0          10.1.1.2:8081      10.0.0.1:40002 users:((\"x\",pid=1,fd=3))\n\
                  0      0          10.1.1.2:8080      10.0.0.1:40004\n\
                  0      0          10.1.1.2:50000     10.0.0.1:8081\n\
                  0      0    [::ffff:10.1.1.2]:8081   [::ffff:10.0.0.1]:4\n\
                  garbage\n";
        let now = super::established(ss, 8081);
        assert_eq!(now.len(), 3);
        assert_eq!(now[0], "10.1.1.2:8081 10.0.0.1:40000");
        assert!(super::established("", 8081).is_empty());
        // be1 had the first one before; be2 had none.
        let before = vec![vec![now[0].clone()], vec![]];
        let later = vec![now.clone(), vec![now[1].clone()]];
        assert_eq!(super::new_since(&before, &later), vec![2, 1]);
    }
}
