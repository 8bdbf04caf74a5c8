//! rotor's goals (issues 4 and 17), checked per scenario against the other
//! paths of the same run: throughput ≥ 0.9× direct and ≥ 1.5× HAProxy, CPU
//! per request ≤ 0.5× HAProxy, p50 ≤ 1.10× and p99 ≤ 1.25× direct, an even
//! share, new endpoints used within 1 s, and at most [`MAX_UPSTREAMS`]
//! connections to any endpoint from the 200 client connections of a node.
//! Met or not met is reported; nothing fails on it.

use std::fmt::Write as _;

use serde::Serialize;

use super::report::{fmt_ratio, fmt_share, ScenarioSummary};
use super::{Load, Path4};

/// Connections any endpoint may hold for the client connections of a node.
pub const MAX_UPSTREAMS: f64 = 32.0;

/// How a goal's value reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    /// rotor ÷ another path of the same scenario.
    Ratio,
    Seconds,
    Share,
    Count,
}

/// One goal checked on one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct GoalResult {
    pub goal: String,
    pub scenario: String,
    pub value: f64,
    pub limit: f64,
    pub unit: Unit,
    pub met: bool,
}

impl GoalResult {
    fn value_text(&self) -> String {
        match self.unit {
            Unit::Ratio => fmt_ratio(self.value),
            Unit::Share => fmt_share(self.value),
            Unit::Seconds if self.value.is_finite() => format!("{:.2} s", self.value),
            Unit::Seconds => "never".into(),
            Unit::Count => format!("{:.0}", self.value),
        }
    }
}

/// Every goal that rotor's results in `scenarios` can be checked against
/// (a value that could not be measured is left out).
pub fn goals(scenarios: &[ScenarioSummary]) -> Vec<GoalResult> {
    let mut g = Vec::new();
    let mut push = |goal: &str, sc: &str, value: f64, limit: f64, unit: Unit, le: bool| {
        if value.is_nan() {
            return;
        }
        g.push(GoalResult {
            goal: goal.into(),
            scenario: sc.into(),
            value,
            limit,
            unit,
            met: if le { value <= limit } else { value >= limit },
        });
    };
    let nan = f64::NAN;
    for s in scenarios {
        let Some(r) = s.path(Path4::Rotor) else {
            continue;
        };
        let id = s.scenario.id.as_str();
        let d = r.vs_direct;
        let h = r.vs_haproxy;
        // An open loop's throughput is its rate: no throughput goal there.
        if matches!(
            s.scenario.load,
            Load::Closed { .. } | Load::Idle { .. } | Load::H2load { .. }
        ) {
            let rd = d.map_or(nan, |x| x.rps);
            push("throughput ≥ 0.9× direct", id, rd, 0.9, Unit::Ratio, false);
            let rh = h.map_or(nan, |x| x.rps);
            push("throughput ≥ 1.5× HAProxy", id, rh, 1.5, Unit::Ratio, false);
        }
        // The CPU goal wherever requests are timed (not the scale-up or
        // the count of upstreams).
        if !matches!(
            s.scenario.load,
            Load::ScaleUp { .. } | Load::Upstreams { .. }
        ) {
            let cpu = h.map_or(nan, |x| x.cpu_per_req);
            push(
                "CPU/request ≤ 0.5× HAProxy",
                id,
                cpu,
                0.5,
                Unit::Ratio,
                true,
            );
        }
        match s.scenario.load {
            Load::Closed { .. }
            | Load::Open { .. }
            | Load::OpenNearSaturation { .. }
            | Load::Idle { .. } => {
                let p50 = d.map_or(nan, |x| x.p50);
                push("p50 ≤ 1.10× direct", id, p50, 1.10, Unit::Ratio, true);
                let p99 = d.map_or(nan, |x| x.p99);
                push("p99 ≤ 1.25× direct", id, p99, 1.25, Unit::Ratio, true);
                let share = r.share_max_min.median;
                push("share max/min ≤ 1.05", id, share, 1.05, Unit::Share, true);
            }
            Load::H2load { .. } => {}
            Load::ScaleUp { .. } => {
                let fair = r.fair_share_s.median;
                let goal = "new endpoints at fair share ≤ 1 s";
                push(goal, id, fair, 1.0, Unit::Seconds, true);
                let share = r.share_max_min.median;
                push("share max/min ≤ 1.05", id, share, 1.05, Unit::Share, true);
            }
            Load::Upstreams { clients, .. } => {
                let goal =
                    format!("{clients} client connections hold ≤ 32 connections to any endpoint");
                let most = r.upstream_max.median;
                push(&goal, id, most, MAX_UPSTREAMS, Unit::Count, true);
            }
        }
    }
    g
}

/// The goals as a table: one row per goal, one column per scenario.
pub fn goal_table(m: &mut String, goals: &[GoalResult]) {
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
    let header: Vec<String> = scs.iter().map(|s| format!("`{s}`")).collect();
    let _ = writeln!(m, "| goal | {} |", header.join(" | "));
    let _ = writeln!(m, "|---|{}", "--:|".repeat(scs.len()));
    for n in names {
        let cells: Vec<String> = scs
            .iter()
            .map(
                |sc| match goals.iter().find(|x| x.goal == n && x.scenario == *sc) {
                    None => "".into(),
                    Some(x) => format!("{} {}", x.value_text(), if x.met { "✅" } else { "❌" }),
                },
            )
            .collect();
        let _ = writeln!(m, "| {n} | {} |", cells.join(" | "));
    }
    let met = goals.iter().filter(|x| x.met).count();
    let _ = writeln!(
        m,
        "\n{met} of {} goals met (✅ met, ❌ not met; ratios against the other paths of the same run).",
        goals.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{PathSummary, Ratios};
    use crate::stats::Summary;
    use crate::{Scenario, Servers};

    fn ratios(rps: f64, p99: f64, cpu: f64) -> Ratios {
        Ratios {
            rps,
            p50: 1.0,
            p99,
            p999: 1.0,
            cpu_per_req: cpu,
        }
    }

    fn rotor(vs_direct: Ratios, vs_haproxy: Ratios, upstream_max: f64) -> PathSummary {
        let mut p = crate::report::summarize(Path4::Rotor, &[]);
        p.vs_direct = Some(vs_direct);
        p.vs_haproxy = Some(vs_haproxy);
        p.share_max_min = Summary::of(&[1.01]);
        p.upstream_max = Summary::of(&[upstream_max]);
        p
    }

    fn scenario(id: &str, load: Load, rotor: PathSummary) -> ScenarioSummary {
        ScenarioSummary {
            scenario: Scenario {
                id: id.into(),
                title: String::new(),
                load,
                path: "/100b".into(),
                servers: Servers::Rust,
            },
            paths: vec![rotor],
        }
    }

    fn find<'a>(g: &'a [GoalResult], goal: &str, sc: &str) -> Option<&'a GoalResult> {
        g.iter()
            .find(|x| x.goal.starts_with(goal) && x.scenario == sc)
    }

    #[test]
    fn goals_per_scenario() {
        let closed = Load::Closed {
            connections: 4,
            streams: 16,
        };
        let open = Load::OpenNearSaturation {
            connections: 4,
            fraction: 0.75,
        };
        let up = Load::Upstreams {
            clients: 200,
            requests: 3,
        };
        let g = goals(&[
            scenario(
                "c",
                closed,
                rotor(ratios(0.95, 1.3, 0.4), ratios(1.4, 1.0, 0.4), f64::NAN),
            ),
            scenario(
                "o",
                open,
                rotor(ratios(1.0, 1.2, 0.6), ratios(1.0, 1.0, 0.6), f64::NAN),
            ),
            scenario(
                "u",
                up,
                rotor(
                    ratios(f64::NAN, f64::NAN, f64::NAN),
                    ratios(f64::NAN, f64::NAN, f64::NAN),
                    200.0,
                ),
            ),
        ]);
        let met = |goal, sc| find(&g, goal, sc).map(|x| x.met);
        assert_eq!(met("throughput ≥ 0.9× direct", "c"), Some(true));
        assert_eq!(met("throughput ≥ 1.5× HAProxy", "c"), Some(false));
        assert_eq!(met("CPU/request ≤ 0.5× HAProxy", "c"), Some(true));
        assert_eq!(met("p99 ≤ 1.25× direct", "c"), Some(false));
        // Open loop: no throughput goal; p99 and CPU as measured.
        assert_eq!(met("throughput ≥ 0.9× direct", "o"), None);
        assert_eq!(met("p99 ≤ 1.25× direct", "o"), Some(true));
        assert_eq!(met("CPU/request ≤ 0.5× HAProxy", "o"), Some(false));
        // 200 per endpoint is not ≤ 32; nothing else is checked there.
        let u = find(&g, "200 client connections", "u").map(|x| (x.met, x.value_text()));
        assert_eq!(u, Some((false, "200".to_string())));
        assert_eq!(g.iter().filter(|x| x.scenario == "u").count(), 1);
        let mut m = String::new();
        goal_table(&mut m, &g);
        assert!(m.contains("| 200 client connections hold ≤ 32 connections to any endpoint |"));
        assert!(m.contains("0.95× ✅"));
    }
}
