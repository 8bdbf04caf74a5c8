//! The rate of the open loop near saturation (`open-sat-100b`): not a
//! constant, but [`FRACTION`] of the lowest closed-loop req/s of [`BASE`]
//! over the paths that balance (DNAT, HAProxy, rotor), measured earlier in
//! the same run. Every path gets the same rate; the slowest balancing path
//! then runs at [`FRACTION`] of what it can do, the others below that.

use anyhow::{bail, Result};

use super::{Cell, Path4, Scenario};

/// The closed-loop scenario the rate is derived from.
pub const BASE: &str = "4x16-100b";
/// Share of the lowest closed-loop req/s the open loop asks for.
pub const FRACTION: f64 = 0.75;
/// The paths whose closed-loop req/s count (direct does not balance).
pub const BALANCING: [Path4; 3] = [Path4::Dnat, Path4::Haproxy, Path4::Rotor];

/// Puts [`BASE`] first into `picked` (from `all`) when a scenario there needs
/// its rate and `--only` left it out.
pub fn add_base(picked: &mut Vec<Scenario>, all: &[Scenario]) {
    let needs = picked
        .iter()
        .any(|s| matches!(s.load, super::Load::OpenNearSaturation { .. }));
    if needs && !picked.iter().any(|s| s.id == BASE) {
        if let Some(base) = all.iter().find(|s| s.id == BASE) {
            picked.insert(0, base.clone());
        }
    }
}

/// `fraction` × the lowest, over [`BALANCING`], of each path's median req/s
/// (finite, above 0) in `cells`. None when a balancing path has no such sample.
pub fn derive(cells: &[Cell], fraction: f64) -> Option<f64> {
    let mut lowest = f64::INFINITY;
    for p in BALANCING {
        let mut v: Vec<f64> = cells
            .iter()
            .filter(|c| c.path == p)
            .flat_map(|c| c.samples.iter().map(|s| s.rps))
            .filter(|r| r.is_finite() && *r > 0.0)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        lowest = lowest.min(v[v.len() / 2]);
    }
    Some(lowest * fraction)
}

/// The rate, derived the first time it is asked for (after the first repeat
/// of [`BASE`]) and kept for the later repeats, so every repeat and path
/// runs at the same rate.
pub fn rate_once(
    cached: &mut Option<f64>,
    scenarios: &[Scenario],
    cells: &[Vec<Cell>],
    fraction: f64,
) -> Result<f64> {
    if let Some(r) = *cached {
        return Ok(r);
    }
    let Some(i) = scenarios.iter().position(|s| s.id == BASE) else {
        bail!("no `{BASE}` scenario in this run to derive the open-loop rate from");
    };
    let Some(rate) = cells.get(i).and_then(|c| derive(c, fraction)) else {
        bail!("`{BASE}` has no req/s on every balancing path to derive the open-loop rate from");
    };
    println!(
        "bench: open loop near saturation: {rate:.0} req/s = {:.0} % of the lowest `{BASE}` req/s over DNAT, HAProxy, rotor",
        fraction * 100.0
    );
    *cached = Some(rate);
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sample;

    fn cell(path: Path4, rps: &[f64]) -> Cell {
        Cell {
            path,
            samples: rps
                .iter()
                .map(|&r| Sample {
                    rps: r,
                    ..Sample::failed(0, String::new())
                })
                .collect(),
        }
    }

    #[test]
    fn rate_is_a_fraction_of_the_slowest_balancing_median() {
        let cells = vec![
            cell(Path4::Direct, &[10_000.0]),
            cell(Path4::Dnat, &[90_000.0]),
            cell(Path4::Haproxy, &[60_000.0, 64_000.0, 20_000.0]),
            cell(Path4::Rotor, &[70_000.0, f64::NAN]),
        ];
        // HAProxy's median (60,000) is the lowest; direct does not count.
        assert_eq!(derive(&cells, 0.75), Some(45_000.0));
    }

    #[test]
    fn no_rate_without_every_balancing_path() {
        let cells = vec![
            cell(Path4::Dnat, &[90_000.0]),
            cell(Path4::Haproxy, &[f64::NAN]),
            cell(Path4::Rotor, &[70_000.0]),
        ];
        assert_eq!(derive(&cells, 0.75), None);
        let mut cached = None;
        assert!(rate_once(&mut cached, &[], &[cells], 0.75).is_err());
        let mut cached = Some(1.0);
        assert_eq!(rate_once(&mut cached, &[], &[], 0.75).ok(), Some(1.0));
    }
}
