//! `bench.svg`: latency percentiles per path for every latency scenario, the
//! share of every backend per path, and the scale-up timeline (plotters, SVG).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::report::Report;
use super::stats;
use super::{Load, Path4, INITIAL, SCALED};

fn pe<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing chart: {e:?}")
}

fn color(p: Path4) -> RGBColor {
    match p {
        Path4::Direct => RGBColor(60, 60, 60),
        Path4::Dnat => RGBColor(0, 158, 115),
        Path4::Haproxy => RGBColor(0, 114, 178),
        Path4::Rotor => RGBColor(213, 94, 0),
    }
}

const PERCENTILES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

pub fn draw(report: &Report, out: &Path) -> Result<()> {
    let root = SVGBackend::new(out, (1800, 960)).into_drawing_area();
    root.fill(&WHITE).map_err(pe)?;
    let (head, body) = root.split_vertically(36);
    head.draw(&Text::new(
        format!(
            "rotor bench: direct / kube-proxy DNAT / HAProxy / rotor — kernel {}, {} CPUs, medians of {} repeat(s)",
            report.kernel, report.cpus, report.options.repeat
        ),
        (12, 10),
        ("sans-serif", 18),
    ))
    .map_err(pe)?;
    let cells = body.split_evenly((2, 4));
    let mut cell = cells.iter();
    for s in &report.scenarios {
        // Eight panels: the five steady scenarios of issue 4 (not the
        // 1,000-connection one), two shares, the scale-up.
        let few = match s.scenario.load {
            Load::Closed { connections, .. } => connections <= 16,
            Load::Open { .. } => true,
            _ => false,
        };
        if few {
            if let Some(a) = cell.next() {
                latency(a, s)?;
            }
        }
    }
    for id in ["1x16-100b", "4x16-100b"] {
        if let Some(s) = report.scenarios.iter().find(|s| s.scenario.id == id) {
            if let Some(a) = cell.next() {
                shares(a, s)?;
            }
        }
    }
    if let Some(a) = cell.next() {
        scale_up(a, report)?;
    }
    root.present().map_err(pe)?;
    Ok(())
}

fn latency(area: &Area<'_>, s: &super::report::ScenarioSummary) -> Result<()> {
    let vals: Vec<f64> = s
        .paths
        .iter()
        .flat_map(|p| {
            [
                p.p50_us.median,
                p.p90_us.median,
                p.p99_us.median,
                p.p999_us.median,
            ]
        })
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min).max(1.0) / 1.5;
    let hi = vals.iter().copied().fold(1.0, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("latency, {} (µs)", s.scenario.id),
            ("sans-serif", 15),
        )
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.3f64..3.3f64, (lo..hi).log_scale())
        .map_err(pe)?;
    chart
        .configure_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && (0.0..4.0).contains(&i) {
                PERCENTILES[i as usize].to_string()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(pe)?;
    for p in &s.paths {
        let c = color(p.path);
        let pts: Vec<(f64, f64)> = [
            p.p50_us.median,
            p.p90_us.median,
            p.p99_us.median,
            p.p999_us.median,
        ]
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite() && **v > 0.0)
        .map(|(i, v)| (i as f64, *v))
        .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(pe)?
            .label(p.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&pt| Circle::new(pt, 3, c.filled())))
            .map_err(pe)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(pe)?;
    Ok(())
}

fn shares(area: &Area<'_>, s: &super::report::ScenarioSummary) -> Result<()> {
    let paths: Vec<_> = s
        .paths
        .iter()
        .filter(|p| !p.share_by_backend.is_empty())
        .collect();
    let nb = INITIAL;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("share per backend, {}", s.scenario.id),
            ("sans-serif", 15),
        )
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(40)
        .build_cartesian_2d(-0.1f64..nb as f64 + 0.1, 0f64..1.05f64)
        .map_err(pe)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(nb + 1)
        .x_label_formatter(&|x| {
            let k = (x - 0.5).round();
            if (x - 0.5 - k).abs() < 0.01 && k >= 0.0 {
                format!("be{}", k as usize + 1)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()
        .map_err(pe)?;
    let w = 0.8 / paths.len().max(1) as f64;
    for (j, p) in paths.iter().enumerate() {
        let c = color(p.path);
        chart
            .draw_series(
                p.share_by_backend
                    .iter()
                    .take(nb)
                    .enumerate()
                    .map(|(k, &v)| {
                        let x0 = k as f64 + 0.1 + j as f64 * w;
                        Rectangle::new([(x0, 0.0), (x0 + w * 0.9, v)], c.filled())
                    }),
            )
            .map_err(pe)?
            .label(p.label.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    let fair = 1.0 / nb as f64;
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, fair), (nb as f64, fair)],
            BLACK.stroke_width(1),
        ))
        .map_err(pe)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(pe)?;
    Ok(())
}

fn scale_up(area: &Area<'_>, report: &Report) -> Result<()> {
    let Some((_, cells)) = report
        .raw
        .scenarios
        .iter()
        .find(|(s, _)| matches!(s.load, Load::ScaleUp { .. }))
    else {
        return Ok(());
    };
    let new = SCALED - INITIAL;
    let end = report.options.scale_run - super::SCALE_AT_S;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "scale-up: share of the 2 new endpoints (per 200 ms)",
            ("sans-serif", 15),
        )
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(40)
        .build_cartesian_2d(-2.0f64..end, 0f64..0.7f64)
        .map_err(pe)?;
    chart
        .configure_mesh()
        .x_desc("s since the endpoints were added")
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()
        .map_err(pe)?;
    for cell in cells {
        let Some(sample) = cell.samples.first() else {
            continue;
        };
        let c = color(cell.path);
        let pts: Vec<(f64, f64)> = stats::new_share_series(&sample.timeline, new)
            .into_iter()
            .filter(|(t, _)| *t >= -2.0)
            .collect();
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(pe)?
            .label(cell.path.label())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
    }
    let fair = new as f64 / SCALED as f64;
    chart
        .draw_series(LineSeries::new(
            vec![(-2.0, fair), (end, fair)],
            BLACK.stroke_width(1),
        ))
        .map_err(pe)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(pe)?;
    Ok(())
}
