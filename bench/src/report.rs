//! Summaries of the runs: medians and spreads, ratios to direct and to HAProxy
//! (from the same run), the goals ([`crate::goals`]), and the Markdown / JSON /
//! SVG output.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::stats::Summary;
use super::{BenchOptions, Load, Path4, Results, Sample, Scenario};
pub use crate::goals::GoalResult;
use crate::goals::{goal_table, goals};
pub use crate::tables::{failed, fmt_ratio, fmt_rps, fmt_share, fmt_us, one_line, spread};
use crate::tables::{h2load_table, scale_table, steady_table};

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
    /// Upstreams: the most connections any backend held, and all of them
    /// (while the clients were open; before they opened).
    pub upstream_max: Summary,
    pub upstream_total: Summary,
    pub upstream_before_total: Summary,
    /// Upstreams: connections each backend held in the first repeat, be1 first.
    pub upstream_by_backend: Vec<u64>,
    /// Idle: the same load without the idle connections, and this ÷ that.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub without_idle: Option<Box<PathSummary>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_without_idle: Option<Ratios>,
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

/// The summary of `samples` (none: every figure NaN).
pub fn summarize(path: Path4, samples: &[Sample]) -> PathSummary {
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
    let upstream = |f: fn(&[u64]) -> f64| {
        Summary::of(
            &samples
                .iter()
                .filter(|s| !s.upstream_conns.is_empty())
                .map(|s| f(&s.upstream_conns))
                .collect::<Vec<_>>(),
        )
    };
    let upstream_before = Summary::of(
        &samples
            .iter()
            .filter(|s| !s.upstream_conns_before.is_empty())
            .map(|s| s.upstream_conns_before.iter().sum::<u64>() as f64)
            .collect::<Vec<_>>(),
    );
    let without: Vec<Sample> = samples
        .iter()
        .filter_map(|s| s.without_idle.as_deref().cloned())
        .collect();
    let without_idle = (!without.is_empty()).then(|| Box::new(summarize(path, &without)));
    let mut summary = PathSummary {
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
        upstream_max: upstream(|v| v.iter().copied().max().unwrap_or(0) as f64),
        upstream_total: upstream(|v| v.iter().sum::<u64>() as f64),
        upstream_before_total: upstream_before,
        upstream_by_backend: samples
            .iter()
            .find(|s| !s.upstream_conns.is_empty())
            .map_or(Vec::new(), |s| s.upstream_conns.clone()),
        without_idle: None,
        vs_without_idle: None,
    };
    if let Some(w) = without_idle {
        summary.vs_without_idle = Some(ratios(&summary, &w));
        summary.without_idle = Some(w);
    }
    summary
}

pub fn ratios(a: &PathSummary, b: &PathSummary) -> Ratios {
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
        if !self.options.rotor_args.is_empty() {
            let _ = writeln!(
                m,
                "\nThe rotor path's agent ran with `{}`.",
                self.options.rotor_args.join(" ")
            );
        }
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
                Load::OpenNearSaturation { .. } => {
                    if let Some(rate) = self.raw.saturation_rate {
                        let _ = writeln!(m, "Rate in this run: {rate:.0} req/s.\n");
                    }
                    steady_table(&mut m, s)
                }
                Load::ScaleUp { .. } => scale_table(&mut m, s),
                Load::H2load { .. } => h2load_table(&mut m, s),
                Load::Upstreams { .. } => crate::held::upstreams_table(&mut m, s),
                Load::Idle { .. } => crate::held::idle_table(&mut m, s),
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
