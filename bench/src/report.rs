//! Summaries of the runs: medians and spreads, ratios to direct and to HAProxy
//! (from the same run), the goals of issue 4, and the Markdown / JSON / SVG output.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::stats::Summary;
use super::{BenchOptions, Load, Path4, Results, Sample, Scenario};

/// A spread above this (percent) marks a result as noisy.
pub const NOISY_SPREAD_PCT: f64 = 10.0;
/// Machine CPU busy before a run above this (cores) marks it as noisy.
pub const NOISY_BACKGROUND_CORES: f64 = 0.10;

/// Ratios of medians of one path to a reference path of the same scenario.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ratios {
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub cpu_per_req: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PathSummary {
    pub path: Path4,
    pub label: String,
    pub rps: Summary,
    pub p50_us: Summary,
    pub p90_us: Summary,
    pub p99_us: Summary,
    pub p999_us: Summary,
    pub mean_us: Summary,
    pub cpu_us_per_req: Summary,
    /// Of `cpu_us_per_req`: user space, kernel (system), and irq + softirq.
    pub cpu_user_us_per_req: Summary,
    pub cpu_system_us_per_req: Summary,
    pub cpu_irq_us_per_req: Summary,
    pub share_max_min: Summary,
    /// Share of every backend over all repeats (fractions, be1 first).
    pub share_by_backend: Vec<f64>,
    pub fair_share_s: Summary,
    pub dip_after_change: Summary,
    pub machine_cpu_us_per_req: Summary,
    pub failed: u64,
    pub max_background_cores: f64,
    pub noisy: bool,
    pub vs_direct: Option<Ratios>,
    pub vs_haproxy: Option<Ratios>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioSummary {
    pub scenario: Scenario,
    pub paths: Vec<PathSummary>,
}

impl ScenarioSummary {
    pub fn path(&self, p: Path4) -> Option<&PathSummary> {
        self.paths.iter().find(|s| s.path == p)
    }
}

/// One goal checked on one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct GoalResult {
    pub goal: String,
    pub scenario: String,
    pub value: f64,
    pub limit: f64,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub options: BenchOptions,
    pub kernel: String,
    pub cpus: usize,
    pub started_unix: u64,
    pub elapsed_s: f64,
    pub idle_background_cores: f64,
    pub scenarios: Vec<ScenarioSummary>,
    pub goals: Vec<GoalResult>,
    pub rotor_status: Option<serde_json::Value>,
    pub raw: Results,
}

fn per_req(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> Summary {
    Summary::of(
        &samples
            .iter()
            .map(|s| {
                if s.ok > 0 {
                    f(s) * 1000.0 / s.ok as f64
                } else {
                    f64::NAN
                }
            })
            .collect::<Vec<_>>(),
    )
}

fn summarize(path: Path4, samples: &[Sample]) -> PathSummary {
    let of = |f: fn(&Sample) -> f64| Summary::of(&samples.iter().map(f).collect::<Vec<_>>());
    let rps = of(|s| s.rps);
    let p50 = of(|s| s.p50_us);
    let max_bg = samples
        .iter()
        .map(|s| s.background_cores)
        .fold(0.0, f64::max);
    let noisy = [rps.spread_pct, p50.spread_pct]
        .iter()
        .any(|x| *x > NOISY_SPREAD_PCT)
        || max_bg > NOISY_BACKGROUND_CORES;
    let n = samples.iter().map(|s| s.counts.len()).max().unwrap_or(0);
    let mut tot = vec![0u64; n];
    for s in samples {
        for (t, c) in tot.iter_mut().zip(&s.counts) {
            *t += c;
        }
    }
    let sum: u64 = tot.iter().sum();
    let mut errors: Vec<String> = samples.iter().flat_map(|s| s.errors.clone()).collect();
    errors.sort();
    errors.dedup();
    errors.truncate(10);
    PathSummary {
        path,
        label: path.label().to_string(),
        rps,
        p50_us: p50,
        p90_us: of(|s| s.p90_us),
        p99_us: of(|s| s.p99_us),
        p999_us: of(|s| s.p999_us),
        mean_us: of(|s| s.mean_us),
        cpu_us_per_req: of(|s| s.cpu_us_per_req),
        cpu_user_us_per_req: per_req(samples, |s| s.cpu.user_ms),
        cpu_system_us_per_req: per_req(samples, |s| s.cpu.system_ms),
        cpu_irq_us_per_req: per_req(samples, |s| s.cpu.irq_ms),
        share_max_min: of(|s| s.share_max_min),
        share_by_backend: tot
            .iter()
            .map(|&c| if sum > 0 { c as f64 / sum as f64 } else { 0.0 })
            .collect(),
        fair_share_s: of(|s| s.fair_share_s),
        dip_after_change: of(|s| s.dip_after_change),
        machine_cpu_us_per_req: per_req(samples, |s| s.cpu.busy_ms),
        failed: samples.iter().map(|s| s.failed).sum(),
        max_background_cores: max_bg,
        noisy,
        vs_direct: None,
        vs_haproxy: None,
        errors,
    }
}

fn ratios(a: &PathSummary, b: &PathSummary) -> Ratios {
    Ratios {
        rps: a.rps.median / b.rps.median,
        p50: a.p50_us.median / b.p50_us.median,
        p99: a.p99_us.median / b.p99_us.median,
        p999: a.p999_us.median / b.p999_us.median,
        cpu_per_req: a.cpu_us_per_req.median / b.cpu_us_per_req.median,
    }
}

impl Report {
    pub fn new(opts: &BenchOptions, raw: Results) -> Report {
        let mut scenarios = Vec::new();
        for (sc, cells) in &raw.scenarios {
            let mut paths: Vec<PathSummary> = cells
                .iter()
                .map(|c| summarize(c.path, &c.samples))
                .collect();
            let direct = paths.iter().find(|p| p.path == Path4::Direct).cloned();
            let haproxy = paths.iter().find(|p| p.path == Path4::Haproxy).cloned();
            for p in &mut paths {
                p.vs_direct = direct.as_ref().map(|d| ratios(p, d));
                p.vs_haproxy = haproxy.as_ref().map(|h| ratios(p, h));
            }
            scenarios.push(ScenarioSummary {
                scenario: sc.clone(),
                paths,
            });
        }
        let goals = goals(&scenarios);
        Report {
            options: opts.clone(),
            kernel: raw.kernel.clone(),
            cpus: raw.cpus,
            started_unix: raw.started_unix,
            elapsed_s: raw.elapsed_s,
            idle_background_cores: raw.idle_background_cores,
            scenarios,
            goals,
            rotor_status: raw.rotor_status.clone(),
            raw,
        }
    }

    /// Writes bench.json, bench.md and bench.svg (and a dated copy of the JSON).
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(dir.join("bench.json"), &json)?;
        std::fs::write(dir.join(format!("bench-{}.json", self.started_unix)), &json)?;
        std::fs::write(dir.join("bench.md"), self.markdown())?;
        super::chart::draw(self, &dir.join("bench.svg"))?;
        Ok(())
    }

    pub fn noisy(&self) -> bool {
        self.scenarios
            .iter()
            .any(|s| s.paths.iter().any(|p| p.noisy))
    }

    /// The whole Markdown report.
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(
            m,
            "rotor bench — kernel {}, {} CPUs, {} repeat(s) of {} s (+{} s warm-up) per cell, {:.0} s in all{}.",
            self.kernel,
            self.cpus,
            self.options.repeat,
            self.options.duration,
            self.options.warmup,
            self.elapsed_s,
            if self.options.quick { ", --quick" } else { "" }
        );
        let _ = writeln!(
            m,
            "Medians over the repeats; `±` is the spread (max − min) / median of req/s and p50. ⚠ marks a noisy cell (spread > {NOISY_SPREAD_PCT}% or the machine > {NOISY_BACKGROUND_CORES} cores busy before the run)."
        );
        if self.idle_background_cores > NOISY_BACKGROUND_CORES {
            let _ = writeln!(
                m,
                "\n**Noisy machine**: {:.2} cores were busy with other work before the bench started; CPU per request and latencies include that interference.",
                self.idle_background_cores
            );
        }
        for s in &self.scenarios {
            let _ = writeln!(m, "\n#### `{}`: {}\n", s.scenario.id, s.scenario.title);
            match s.scenario.load {
                Load::Closed { .. } | Load::Open { .. } => steady_table(&mut m, s),
                Load::ScaleUp { .. } => scale_table(&mut m, s),
                Load::H2load { .. } => h2load_table(&mut m, s),
            }
            for p in s.paths.iter().filter(|p| p.failed > 0) {
                let _ = writeln!(
                    m,
                    "\n{}: {} failed requests; {}",
                    p.label,
                    p.failed,
                    p.errors.first().map_or("", |e| e.as_str())
                );
            }
        }
        let _ = writeln!(m, "\n#### Goals (rotor)\n");
        goal_table(&mut m, &self.goals);
        if let Some(sm) = &self.raw.services_memory {
            let _ = write!(m, "\n{}", sm.markdown());
        }
        m
    }
}

// ---- formatting ----

pub fn fmt_us(us: f64) -> String {
    if !us.is_finite() {
        "–".into()
    } else if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

pub fn fmt_ratio(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x.is_infinite() {
        "∞".into()
    } else {
        format!("{x:.2}×")
    }
}

pub fn fmt_share(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else if x.is_infinite() {
        "∞".into()
    } else {
        format!("{x:.2}")
    }
}

fn fmt_rps(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.0}")
    } else {
        "–".into()
    }
}

fn fmt_pct(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.0}")
    } else {
        "–".into()
    }
}

fn spread(p: &PathSummary) -> String {
    format!(
        "±{}% / ±{}%{}",
        fmt_pct(p.rps.spread_pct),
        fmt_pct(p.p50_us.spread_pct),
        if p.noisy { " ⚠" } else { "" }
    )
}

fn failed(p: &PathSummary) -> String {
    if p.failed > 0 {
        format!(" ({} failed)", p.failed)
    } else {
        String::new()
    }
}

fn steady_table(m: &mut String, s: &ScenarioSummary) {
    let _ = writeln!(m, "| path | req/s | p50 | p99 | p99.9 | CPU/req (irq part) | share max/min | req/s ÷ direct | p50 ÷ direct | p99 ÷ direct | CPU ÷ HAProxy | spread req/s / p50 |");
    let _ = writeln!(m, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for p in &s.paths {
        let d = p.vs_direct;
        let h = p.vs_haproxy;
        let _ = writeln!(
            m,
            "| {}{} | {} | {} | {} | {} | {} ({:.0}) | {} | {} | {} | {} | {} | {} |",
            p.label,
            failed(p),
            fmt_rps(p.rps.median),
            fmt_us(p.p50_us.median),
            fmt_us(p.p99_us.median),
            fmt_us(p.p999_us.median),
            fmt_us(p.cpu_us_per_req.median),
            p.cpu_irq_us_per_req.median,
            fmt_share(p.share_max_min.median),
            fmt_ratio(d.map_or(f64::NAN, |r| r.rps)),
            fmt_ratio(d.map_or(f64::NAN, |r| r.p50)),
            fmt_ratio(d.map_or(f64::NAN, |r| r.p99)),
            fmt_ratio(h.map_or(f64::NAN, |r| r.cpu_per_req)),
            spread(p)
        );
    }
}

fn scale_table(m: &mut String, s: &ScenarioSummary) {
    let _ = writeln!(m, "| path | req/s | new endpoints at fair share after | share max/min over the last 2 s (5 endpoints) | lowest req/s in the 3 s after ÷ before | spread req/s / p50 |");
    let _ = writeln!(m, "|---|--:|--:|--:|--:|--:|");
    for p in &s.paths {
        let f = &p.fair_share_s;
        let fair = if f.median.is_infinite() {
            if f.min.is_finite() {
                format!("never in {} of {} runs", f.n - f.n / 2, f.n)
            } else {
                "never (existing connections keep their backend)".into()
            }
        } else if f.median.is_finite() {
            format!(
                "{:.2} s (max {})",
                f.median,
                if f.max.is_finite() {
                    format!("{:.2} s", f.max)
                } else {
                    "never".into()
                }
            )
        } else {
            "–".into()
        };
        let _ = writeln!(
            m,
            "| {}{} | {} | {} | {} | {} | {} |",
            p.label,
            failed(p),
            fmt_rps(p.rps.median),
            fair,
            fmt_share(p.share_max_min.median),
            if p.dip_after_change.median.is_finite() {
                format!(
                    "{:.2} (worst {:.2})",
                    p.dip_after_change.median, p.dip_after_change.min
                )
            } else {
                "–".into()
            },
            spread(p)
        );
    }
}

fn h2load_table(m: &mut String, s: &ScenarioSummary) {
    let _ = writeln!(
        m,
        "| path | req/s (h2load) | mean latency (h2load) | req/s ÷ direct | share max/min |"
    );
    let _ = writeln!(m, "|---|--:|--:|--:|--:|");
    for p in &s.paths {
        let _ = writeln!(
            m,
            "| {}{} | {} | {} | {} | {} |",
            p.label,
            failed(p),
            fmt_rps(p.rps.median),
            fmt_us(p.mean_us.median),
            fmt_ratio(p.vs_direct.map_or(f64::NAN, |r| r.rps)),
            fmt_share(p.share_max_min.median)
        );
    }
}

fn goals(scenarios: &[ScenarioSummary]) -> Vec<GoalResult> {
    let mut g = Vec::new();
    let mut push = |goal: &str, sc: &str, value: f64, limit: f64, le: bool| {
        if value.is_nan() {
            return;
        }
        g.push(GoalResult {
            goal: goal.into(),
            scenario: sc.into(),
            value,
            limit,
            met: if le { value <= limit } else { value >= limit },
        });
    };
    for s in scenarios {
        let Some(r) = s.path(Path4::Rotor) else {
            continue;
        };
        let id = s.scenario.id.as_str();
        match s.scenario.load {
            Load::Closed { .. } | Load::Open { .. } => {
                let d = r.vs_direct;
                push(
                    "p50 ≤ 1.10× direct",
                    id,
                    d.map_or(f64::NAN, |x| x.p50),
                    1.10,
                    true,
                );
                push(
                    "p99 ≤ 1.25× direct",
                    id,
                    d.map_or(f64::NAN, |x| x.p99),
                    1.25,
                    true,
                );
                push(
                    "CPU/request ≤ 0.5× HAProxy",
                    id,
                    r.vs_haproxy.map_or(f64::NAN, |x| x.cpu_per_req),
                    0.5,
                    true,
                );
                if matches!(s.scenario.load, Load::Closed { .. }) {
                    push(
                        "throughput ≥ 0.9× direct",
                        id,
                        d.map_or(f64::NAN, |x| x.rps),
                        0.9,
                        false,
                    );
                }
                push(
                    "share max/min ≤ 1.05",
                    id,
                    r.share_max_min.median,
                    1.05,
                    true,
                );
            }
            Load::ScaleUp { .. } => {
                push(
                    "new endpoints at fair share ≤ 1 s",
                    id,
                    r.fair_share_s.median,
                    1.0,
                    true,
                );
                push(
                    "share max/min ≤ 1.05",
                    id,
                    r.share_max_min.median,
                    1.05,
                    true,
                );
            }
            Load::H2load { .. } => {}
        }
    }
    g
}

fn goal_table(m: &mut String, goals: &[GoalResult]) {
    let mut names: Vec<&str> = Vec::new();
    let mut scs: Vec<&str> = Vec::new();
    for x in goals {
        if !names.contains(&x.goal.as_str()) {
            names.push(&x.goal);
        }
        if !scs.contains(&x.scenario.as_str()) {
            scs.push(&x.scenario);
        }
    }
    let _ = writeln!(
        m,
        "| goal | {} |",
        scs.iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(m, "|---|{}", "--:|".repeat(scs.len()));
    for n in names {
        let cells: Vec<String> = scs
            .iter()
            .map(
                |sc| match goals.iter().find(|x| x.goal == n && x.scenario == *sc) {
                    None => "".into(),
                    Some(x) => {
                        let v = if x.goal.contains("fair share ≤") {
                            if x.value.is_finite() {
                                format!("{:.2} s", x.value)
                            } else {
                                "never".into()
                            }
                        } else if x.goal.starts_with("share") {
                            fmt_share(x.value)
                        } else {
                            fmt_ratio(x.value)
                        };
                        format!("{v} {}", if x.met { "✅" } else { "❌" })
                    }
                },
            )
            .collect();
        let _ = writeln!(m, "| {n} | {} |", cells.join(" | "));
    }
}

/// One progress line for a finished run.
pub fn one_line(sc: &Scenario, s: &Sample) -> String {
    let mut l = format!("{:>7} req/s", fmt_rps(s.rps));
    if s.p50_us.is_finite() {
        let _ = write!(
            l,
            "  p50 {:>8}  p99 {:>8}  p99.9 {:>8}",
            fmt_us(s.p50_us),
            fmt_us(s.p99_us),
            fmt_us(s.p999_us)
        );
    } else if s.mean_us.is_finite() {
        let _ = write!(l, "  mean {:>8}", fmt_us(s.mean_us));
    }
    if s.cpu_us_per_req.is_finite() {
        let _ = write!(l, "  cpu {:>7}/req", fmt_us(s.cpu_us_per_req));
    }
    if !s.counts.is_empty() {
        let _ = write!(
            l,
            "  counts {:?} max/min {}",
            s.counts,
            fmt_share(s.share_max_min)
        );
    }
    if matches!(sc.load, Load::ScaleUp { .. }) {
        let f = if s.fair_share_s.is_finite() {
            format!("{:.2} s", s.fair_share_s)
        } else {
            "never".into()
        };
        let _ = write!(l, "  fair share after {f}, dip {:.2}", s.dip_after_change);
    }
    if s.failed > 0 {
        let _ = write!(l, "  FAILED {} {:?}", s.failed, s.errors);
    }
    if s.background_cores > NOISY_BACKGROUND_CORES {
        let _ = write!(l, "  (machine {:.2} cores busy before)", s.background_cores);
    }
    l
}
