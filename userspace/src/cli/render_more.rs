//! What `rotor explain` and `rotor top` print. Pure, like render.rs.

use std::fmt::Write;

use super::render::{EndpointRow, ServicesView};
use crate::agent::admin::wire::Explanation;
use crate::agent::pool::EndpointConnections;

/// `rotor status`'s connections per endpoint: what each endpoint holds from
/// this node is OWN + SHARED; VIA-SHARED are client connections' upstreams
/// to the endpoint's multiplexer, on loopback.
pub fn upstreams_table(upstreams: &[EndpointConnections]) -> String {
    let mut out = format!(
        "UPSTREAM CONNECTIONS ({} endpoints; each holds OWN + SHARED from this node)\n",
        upstreams.len()
    );
    if upstreams.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "  {:<22} {:>6} {:>10} {:>6} {:>14} {:>8} {:>8}",
        "ENDPOINT", "OWN", "VIA-SHARED", "SHARED", "SHARED-STREAMS", "REFUSED", "HELD"
    );
    for u in upstreams {
        let _ = writeln!(
            out,
            "  {:<22} {:>6} {:>10} {:>6} {:>14} {:>8} {:>8}",
            u.endpoint,
            u.dedicated,
            u.via_shared,
            u.shared.connections,
            u.shared.streams,
            u.shared.refused,
            u.shared.held
        );
    }
    out
}

pub fn explain_table(e: &Explanation) -> String {
    let mut out = format!("{} ({}): {}\n", e.target, e.kind, e.verdict);
    for f in &e.findings {
        let _ = writeln!(out, "  {:<8} {}", f.level, f.text);
    }
    if let Some(s) = &e.skew {
        let _ = writeln!(out, "CONNECTIONS NOW ({})", s.source);
        if !s.endpoints.is_empty() {
            let _ = writeln!(
                out,
                "  {:<21} {:>10} {:>10}",
                "ENDPOINT", "FROM-AGENT", "OTHER"
            );
            for (ep, agent, other) in &s.endpoints {
                let _ = writeln!(out, "  {ep:<21} {agent:>10} {other:>10}");
            }
            let others: Vec<u64> = s.endpoints.iter().map(|e| e.2).collect();
            let _ = writeln!(out, "  skew of the other connections: {}", skew(&others));
        }
        if s.conntrack.is_empty() {
            let _ = writeln!(
                out,
                "  conntrack: no established connection to the Service address"
            );
        } else {
            let _ = writeln!(out, "  conntrack (dialled the Service address, reached):");
            for (ep, n) in &s.conntrack {
                let _ = writeln!(out, "    {ep:<21} {n:>6}");
            }
            let counts: Vec<u64> = s.conntrack.iter().map(|c| c.1).collect();
            let _ = writeln!(out, "  skew: {}", skew(&counts));
        }
    }
    out
}

/// max/min of per-endpoint counts: "1.00" even, "inf" when one has none.
pub fn skew(counts: &[u64]) -> String {
    let (Some(max), Some(min)) = (counts.iter().max(), counts.iter().min()) else {
        return "n/a".into();
    };
    match (max, min) {
        (0, _) => "n/a (none)".into(),
        (_, 0) => format!("max/min inf (most {max}, least 0)"),
        (a, b) => format!("max/min {:.2}", *a as f64 / *b as f64),
    }
}

/// How far an endpoint is from its fair share: 0 is fair; endpoints that
/// left the Service and have no fair share come last.
fn off_fair(e: &EndpointRow) -> f64 {
    e.share_ratio.map_or(-1.0, |r| (r - 1.0).abs())
}

/// A bar of `width` cells for a share ratio: filled to the ratio, with
/// the fair share (1.0) at the middle, marked `|`; past 2× it is full.
pub fn bar(ratio: Option<f64>, width: usize) -> String {
    let Some(r) = ratio else {
        return " ".repeat(width);
    };
    let fair = width / 2;
    let filled = ((r.clamp(0.0, 2.0) / 2.0) * width as f64).round() as usize;
    (0..width)
        .map(|i| match (i < filled, i == fair) {
            (_, true) => '|',
            (true, false) => '#',
            (false, false) => '.',
        })
        .collect()
}

/// One screen of `rotor top`: every endpoint of every Service, the worst
/// share first. Lines end in \r\n (a raw terminal does not add the \r).
pub fn top_frame(v: &ServicesView, width: usize) -> String {
    let mut rows: Vec<(&str, &EndpointRow)> = (v.services.iter())
        .flat_map(|s| s.endpoints.iter().map(move |e| (s.name.as_str(), e)))
        .collect();
    rows.sort_by(|a, b| off_fair(b.1).total_cmp(&off_fair(a.1)));
    let total: f64 = v.services.iter().map(|s| s.requests_per_s).sum();
    let mut out = format!(
        "rotor top: {} Services, {:.1} req/s over the last {:.1}s; worst share first; bar: share of the Service's streams, | = fair share. q quits\r\n\r\n",
        v.services.len(),
        total,
        v.window_s
    );
    let bar_width = width.saturating_sub(80).clamp(10, 40);
    let _ = write!(
        out,
        "{:<20} {:<21} {:<9} {:>9} {:>7} {:>6} {:>6}  SHARE/FAIR\r\n",
        "SERVICE", "ENDPOINT", "STATE", "REQ/S", "SHARE", "RATIO", "FLIGHT"
    );
    for (service, e) in rows {
        let _ = write!(
            out,
            "{:<20} {:<21} {:<9} {:>9.1} {:>7} {:>6} {:>6}  {}\r\n",
            service,
            e.endpoint,
            e.state,
            e.requests_per_s,
            e.share.map_or("-".into(), |s| format!("{:.1}%", s * 100.0)),
            e.share_ratio.map_or("-".into(), |r| format!("{r:.2}")),
            e.in_flight,
            bar(e.share_ratio, bar_width)
        );
    }
    out
}

#[cfg(test)]
mod upstream_tests {
    use super::*;
    use crate::agent::pool::MuxCounts;

    #[test]
    fn upstreams_show_own_and_shared_per_endpoint() {
        let rows = [EndpointConnections {
            endpoint: "10.1.1.2:8080".into(),
            dedicated: 24,
            via_shared: 176,
            shared: MuxCounts {
                connections: 3,
                connections_opened: 3,
                local: 176,
                streams: 528,
                refused: 1,
                held: 40,
            },
        }];
        let t = upstreams_table(&rows);
        let line = t.lines().find(|l| l.contains("10.1.1.2:8080")).unwrap();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells, ["10.1.1.2:8080", "24", "176", "3", "528", "1", "40"]);
        assert!(upstreams_table(&[]).starts_with("UPSTREAM CONNECTIONS (0 endpoints"));
    }
}
