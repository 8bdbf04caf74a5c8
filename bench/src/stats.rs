//! Medians, spreads, shares and the scale-up analysis (pure functions).

use serde::Serialize;

/// Median, extremes and spread of one metric over the repeats.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// (max − min) / median, percent (NaN for a single value or a zero median).
    pub spread_pct: f64,
    pub n: usize,
}

impl Summary {
    /// Summary of the finite values of `v` (infinite values count as larger than
    /// any finite one: the median of [1, ∞, ∞] is ∞). NaN values are dropped.
    pub fn of(v: &[f64]) -> Summary {
        let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
        v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        if v.is_empty() {
            return Summary {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
                spread_pct: f64::NAN,
                n: 0,
            };
        }
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        let (min, max) = (v[0], v[n - 1]);
        let spread_pct = if n > 1 && median.is_finite() && median != 0.0 && max.is_finite() {
            (max - min) / median * 100.0
        } else {
            f64::NAN
        };
        Summary {
            median,
            min,
            max,
            spread_pct,
            n,
        }
    }
}

/// max/min of per-backend counts: ∞ when one got nothing, NaN when fewer than
/// two backends are involved or nothing was counted.
pub fn max_min(counts: &[u64]) -> f64 {
    if counts.len() < 2 || counts.iter().all(|&c| c == 0) {
        return f64::NAN;
    }
    let max = *counts.iter().max().expect("non-empty") as f64;
    let min = *counts.iter().min().expect("non-empty") as f64;
    if min == 0.0 {
        f64::INFINITY
    } else {
        max / min
    }
}

/// One sample of the scale-up timeline: seconds since the endpoints were
/// added (negative before) and the cumulative count of every backend.
pub type Point = (f64, Vec<u64>);

/// Length of the windows the scale-up analysis looks at, seconds.
pub const FAIR_WINDOW_S: f64 = 0.2;

/// Share of each of the `new` backends (the last ones in every count vector)
/// in the window between two samples.
pub fn new_shares(a: &[u64], b: &[u64], new: usize) -> Option<Vec<f64>> {
    let d: Vec<u64> = b.iter().zip(a).map(|(b, a)| b.saturating_sub(*a)).collect();
    let total: u64 = d.iter().sum();
    if total < 50 {
        return None;
    }
    Some(
        d[d.len() - new..]
            .iter()
            .map(|&x| x as f64 / total as f64)
            .collect(),
    )
}

/// Seconds from the change until the new endpoints are at their fair share:
/// the start of the first window of [`FAIR_WINDOW_S`] (starting at or after
/// the change) in which every new endpoint got ≥ 90 % of its fair share and
/// keeps ≥ 90 % of it over the rest of the run (counted from that window's
/// start to the end, so a short noisy window later on does not undo it).
/// `None`: never in this run.
pub fn time_to_fair_share(timeline: &[Point], new: usize) -> Option<f64> {
    let n = timeline.first()?.1.len();
    if new == 0 || new > n {
        return None;
    }
    let fair = 1.0 / n as f64;
    let last = timeline.last()?;
    let low = |s: Option<Vec<f64>>| s.map(|s| s.iter().copied().fold(f64::INFINITY, f64::min));
    for i in 0..timeline.len() {
        if timeline[i].0 < 0.0 {
            continue;
        }
        let Some(j) =
            (i + 1..timeline.len()).find(|&j| timeline[j].0 - timeline[i].0 >= FAIR_WINDOW_S)
        else {
            break;
        };
        let window = low(new_shares(&timeline[i].1, &timeline[j].1, new));
        let rest = low(new_shares(&timeline[i].1, &last.1, new));
        if window.is_some_and(|w| w >= 0.9 * fair) && rest.is_some_and(|r| r >= 0.9 * fair) {
            return Some(timeline[i].0);
        }
    }
    None
}

/// Share of the `new` backends together per window, for the chart: (t, share).
pub fn new_share_series(timeline: &[Point], new: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < timeline.len() {
        let Some(j) =
            (i + 1..timeline.len()).find(|&j| timeline[j].0 - timeline[i].0 >= FAIR_WINDOW_S)
        else {
            break;
        };
        if let Some(s) = new_shares(&timeline[i].1, &timeline[j].1, new) {
            out.push(((timeline[i].0 + timeline[j].0) / 2.0, s.iter().sum()));
        }
        i = j;
    }
    out
}

/// Request rate (all backends) per window of [`FAIR_WINDOW_S`]: (window middle, req/s).
pub fn rate_series(timeline: &[Point]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < timeline.len() {
        let Some(j) =
            (i + 1..timeline.len()).find(|&j| timeline[j].0 - timeline[i].0 >= FAIR_WINDOW_S)
        else {
            break;
        };
        let n: u64 = timeline[j].1.iter().sum::<u64>() - timeline[i].1.iter().sum::<u64>();
        out.push((
            (timeline[i].0 + timeline[j].0) / 2.0,
            n as f64 / (timeline[j].0 - timeline[i].0),
        ));
        i = j;
    }
    out
}

/// The lowest windowed request rate in the `after` seconds following the
/// change, divided by the mean rate over the 2 s before it (1.0: no dip).
pub fn dip_after_change(timeline: &[Point], after: f64) -> f64 {
    let r = rate_series(timeline);
    let before: Vec<f64> = r
        .iter()
        .filter(|(t, _)| (-2.0..0.0).contains(t))
        .map(|x| x.1)
        .collect();
    let low = r
        .iter()
        .filter(|(t, _)| *t >= 0.0 && *t <= after)
        .map(|x| x.1)
        .fold(f64::INFINITY, f64::min);
    if before.is_empty() || !low.is_finite() {
        return f64::NAN;
    }
    low / (before.iter().sum::<f64>() / before.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_median_spread() {
        let s = Summary::of(&[10.0, 12.0, 11.0]);
        assert_eq!(s.median, 11.0);
        assert!((s.spread_pct - 2.0 / 11.0 * 100.0).abs() < 1e-9);
        assert_eq!(
            Summary::of(&[1.0, f64::INFINITY, f64::INFINITY]).median,
            f64::INFINITY
        );
        assert!(Summary::of(&[f64::NAN]).median.is_nan());
    }

    #[test]
    fn max_min_cases() {
        assert_eq!(max_min(&[100, 50]), 2.0);
        assert_eq!(max_min(&[100, 0]), f64::INFINITY);
        assert!(max_min(&[100]).is_nan());
    }

    #[test]
    fn fair_share_timing() {
        // 3 old backends; 2 new ones join fully 0.3 s after the change.
        let mut tl = Vec::new();
        let mut c = vec![0u64; 5];
        for step in -20..60 {
            let t = step as f64 * 0.05;
            tl.push((t, c.clone()));
            let active = if t >= 0.3 { 5 } else { 3 };
            for v in c.iter_mut().take(active) {
                *v += 100;
            }
        }
        let t = time_to_fair_share(&tl, 2).unwrap();
        assert!((t - 0.3).abs() < 0.051, "{t}");
        // Never: the new ones get nothing.
        let tl2: Vec<Point> = (0..40)
            .map(|i| (i as f64 * 0.05, vec![i * 100, i * 100, i * 100, 0, 0]))
            .collect();
        assert_eq!(time_to_fair_share(&tl2, 2), None);
        assert!(!new_share_series(&tl, 2).is_empty());
    }
}
