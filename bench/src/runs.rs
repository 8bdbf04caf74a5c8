//! One measurement: a load on one path for one scenario (closed loop, open
//! loop, scale-up, h2load), turned into a [`Sample`].

use super::*;

pub(super) fn has_command(cmd: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join(cmd).is_file())
}

/// Waits (within what is left of `budget`) until the machine is quiet: CPU
/// busy below [`report::NOISY_BACKGROUND_CORES`] over 300 ms. Returns the last
/// busy figure, in cores.
pub(super) fn wait_quiet(budget: &mut Duration) -> f64 {
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
pub(super) fn background(d: Duration) -> f64 {
    let a = CpuTimes::now();
    std::thread::sleep(d);
    CpuTimes::now().since(&a).busy_ms / d.as_millis() as f64
}

pub(super) fn spawn_load(
    bed: &Bed,
    path: Path4,
    sc: &Scenario,
    args: &[String],
    tag: &str,
) -> Result<Child> {
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

pub(super) fn finish_load(mut child: Child, limit: Duration) -> Result<BenchLoadReport> {
    let status = child.wait_timeout(limit)?;
    let out = child.output(Stream::Stdout);
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| {
            format!(
                "rotor-bench-load ({status}) printed no report:\n{}",
                child.stderr_tail()
            )
        })?;
    serde_json::from_str(line).with_context(|| format!("parsing {line:?}"))
}

pub(super) fn sample_from(
    rep: usize,
    r: &BenchLoadReport,
    counts: Vec<u64>,
    share: f64,
    bg: f64,
) -> Sample {
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
        upstream_conns: Vec::new(),
        upstream_conns_before: Vec::new(),
        without_idle: None,
    }
}

pub(super) fn diff(a: &[u64], b: &[u64]) -> Vec<u64> {
    b.iter().zip(a).map(|(b, a)| b.saturating_sub(*a)).collect()
}

/// Share over the endpoints the path balances across (direct: n/a).
pub(super) fn share_of(path: Path4, counts: &[u64], active: usize) -> f64 {
    if path == Path4::Direct {
        return f64::NAN;
    }
    stats::max_min(&counts[..active.min(counts.len())])
}

pub(super) fn run_steady(
    bed: &mut Bed,
    opts: &BenchOptions,
    sc: &Scenario,
    path: Path4,
    rep: usize,
) -> Result<Sample> {
    let bg = wait_quiet(&mut bed.quiet_budget);
    let before = bed.read_counts()?;
    let mut args = vec![
        "--duration".to_string(),
        opts.duration.to_string(),
        "--warmup".into(),
        opts.warmup.to_string(),
    ];
    match sc.load {
        Load::Closed {
            connections,
            streams,
        } => args.extend([
            "--connections".into(),
            connections.to_string(),
            "--streams".into(),
            streams.to_string(),
        ]),
        Load::Open { connections, rate } => args.extend([
            "--connections".into(),
            connections.to_string(),
            "--rate".into(),
            rate.to_string(),
        ]),
        _ => bail!("not a steady scenario"),
    }
    let child = spawn_load(bed, path, sc, &args, &format!("{}-{:?}-{rep}", sc.id, path))?;
    let r = finish_load(
        child,
        Duration::from_secs_f64(opts.duration + opts.warmup + 60.0),
    )?;
    // The backends write their counters every 5 ms.
    std::thread::sleep(Duration::from_millis(30));
    let counts = diff(&before, &bed.read_counts()?);
    let share = share_of(path, &counts, INITIAL);
    Ok(sample_from(rep, &r, counts, share, bg))
}

pub(super) fn run_scale_up(
    bed: &mut Bed,
    opts: &BenchOptions,
    sc: &Scenario,
    path: Path4,
    rep: usize,
) -> Result<Sample> {
    let Load::ScaleUp {
        connections,
        streams,
    } = sc.load
    else {
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
            let s = if *t >= added {
                (*t - added).as_secs_f64()
            } else {
                -(added - *t).as_secs_f64()
            };
            (s, diff(&before, c))
        })
        .collect();
    let fair = stats::time_to_fair_share(&timeline, SCALED - INITIAL).unwrap_or(f64::INFINITY);
    // Share over the last 2 s of the run, all five endpoints.
    let tail_from = timeline
        .iter()
        .rev()
        .find(|(t, _)| *t <= timeline.last().map_or(0.0, |l| l.0) - 2.0);
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

pub(super) fn parse_h2load_time(t: &str) -> f64 {
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

pub(super) fn run_h2load(
    bed: &mut Bed,
    opts: &BenchOptions,
    sc: &Scenario,
    path: Path4,
    rep: usize,
) -> Result<Sample> {
    let Load::H2load {
        connections,
        streams,
        window_bits,
    } = sc.load
    else {
        bail!("not an h2load scenario");
    };
    let bg = wait_quiet(&mut bed.quiet_budget);
    let before = bed.read_counts()?;
    let url = format!("http://{}{}", bed.addr(path, sc.servers), sc.path);
    let (secs, warm) = (opts.duration.round().max(1.0), opts.warmup.ceil().max(1.0));
    let mut cmd = netns_command(bed.topo.client_ns(), bed.cgroup_for(path), "h2load");
    if let Some(bits) = window_bits {
        cmd.args(["-w", &bits.to_string(), "-W", &bits.to_string()]);
    }
    cmd.args([
        "-c",
        &connections.to_string(),
        "-m",
        &streams.to_string(),
        "-D",
        &format!("{secs}"),
        &format!("--warm-up-time={warm}"),
        &url,
    ]);
    // The machine's CPU over h2load's measured window (it starts once the
    // connections are up: a few ms later than this clock).
    let ours = CpuTimes::netns_inodes(&bed.topo.netns_names());
    let sampler = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(warm));
        let a = CpuTimes::now_excluding(&ours);
        std::thread::sleep(Duration::from_secs_f64(secs));
        CpuTimes::now_excluding(&ours).since(&a)
    });
    let out = rotor_testbed::util::run_with_timeout(
        &mut cmd,
        Duration::from_secs_f64(opts.duration + opts.warmup + 60.0),
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary = rotor_testbed::tools::parse_h2load(&stdout)
        .with_context(|| format!("h2load: {}", String::from_utf8_lossy(&out.stderr)))?;
    let (rps, mean) = parse_h2load_rates(&stdout);
    let cpu = sampler.join().unwrap_or_default();
    let ok_in_window = rps * secs;
    std::thread::sleep(Duration::from_millis(30));
    let counts = if sc.servers == Servers::Rust {
        diff(&before, &bed.read_counts()?)
    } else {
        Vec::new()
    };
    let share = if sc.servers == Servers::Rust {
        share_of(path, &counts, INITIAL)
    } else {
        f64::NAN
    };
    let mut errors = Vec::new();
    let mut failed = summary.failed + summary.errored + summary.timeout;
    if failed > 0 {
        errors.push(format!("h2load: {}", summary.lines.join(" | ")));
    }
    if summary.succeeded == 0 {
        // h2load -D counts nothing for a connection that stalled.
        failed = failed.max(1);
        errors.push(format!(
            "h2load: no request completed (stalled): {}",
            summary.lines.join(" | ")
        ));
    }
    let mean = if summary.succeeded > 0 {
        mean
    } else {
        f64::NAN
    };
    Ok(Sample {
        repeat: rep,
        rps,
        p50_us: f64::NAN,
        p90_us: f64::NAN,
        p99_us: f64::NAN,
        p999_us: f64::NAN,
        mean_us: mean,
        cpu_us_per_req: if summary.succeeded > 0 && ok_in_window > 0.0 {
            (cpu.busy_ms - cpu.other_ms).max(0.0) * 1000.0 / ok_in_window
        } else {
            f64::NAN
        },
        cpu,
        ok: summary.succeeded,
        failed,
        counts,
        share_max_min: share,
        fair_share_s: f64::NAN,
        dip_after_change: f64::NAN,
        timeline: Vec::new(),
        background_cores: bg,
        errors,
        upstream_conns: Vec::new(),
        upstream_conns_before: Vec::new(),
        without_idle: None,
    })
}
