//! The report's tables and number formats, and the one line printed per run.

use std::fmt::Write as _;

use super::report::{PathSummary, ScenarioSummary, NOISY_BACKGROUND_CORES};
use super::{Load, Sample, Scenario};

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

pub fn fmt_rps(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.0}")
    } else {
        "–".into()
    }
}

pub fn fmt_pct(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.0}")
    } else {
        "–".into()
    }
}

pub fn spread(p: &PathSummary) -> String {
    format!(
        "±{}% / ±{}%{}",
        fmt_pct(p.rps.spread_pct),
        fmt_pct(p.p50_us.spread_pct),
        if p.noisy { " ⚠" } else { "" }
    )
}

pub fn failed(p: &PathSummary) -> String {
    if p.failed > 0 {
        format!(" ({} failed)", p.failed)
    } else {
        String::new()
    }
}

pub fn steady_table(m: &mut String, s: &ScenarioSummary) {
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

pub fn scale_table(m: &mut String, s: &ScenarioSummary) {
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

pub fn h2load_table(m: &mut String, s: &ScenarioSummary) {
    let _ = writeln!(
        m,
        "| path | req/s (h2load) | mean latency (h2load) | CPU/req | req/s ÷ direct | req/s ÷ HAProxy | CPU ÷ HAProxy | share max/min |"
    );
    let _ = writeln!(m, "|---|--:|--:|--:|--:|--:|--:|--:|");
    let nan = f64::NAN;
    for p in &s.paths {
        let _ = writeln!(
            m,
            "| {}{} | {} | {} | {} | {} | {} | {} | {} |",
            p.label,
            failed(p),
            fmt_rps(p.rps.median),
            fmt_us(p.mean_us.median),
            fmt_us(p.cpu_us_per_req.median),
            fmt_ratio(p.vs_direct.map_or(nan, |r| r.rps)),
            fmt_ratio(p.vs_haproxy.map_or(nan, |r| r.rps)),
            fmt_ratio(p.vs_haproxy.map_or(nan, |r| r.cpu_per_req)),
            fmt_share(p.share_max_min.median)
        );
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
    if !s.upstream_conns.is_empty() {
        let _ = write!(
            l,
            "  established per backend {:?} (before {:?})",
            s.upstream_conns, s.upstream_conns_before
        );
    }
    if let Some(w) = &s.without_idle {
        let _ = write!(
            l,
            "  without idle: {} req/s p99 {} cpu {}/req",
            fmt_rps(w.rps),
            fmt_us(w.p99_us),
            fmt_us(w.cpu_us_per_req)
        );
    }
    if s.failed > 0 {
        let _ = write!(l, "  FAILED {} {:?}", s.failed, s.errors);
    }
    if s.background_cores > NOISY_BACKGROUND_CORES {
        let _ = write!(l, "  (machine {:.2} cores busy before)", s.background_cores);
    }
    l
}
