//! What `rotor services`, `endpoints`, `conns` and `status` print: rows
//! computed from the agent's answers (the same rows are the JSON output),
//! and their tables. Pure: unit-tested against fixed answers.

use std::fmt::Write;

use serde::Serialize;

use crate::agent::admin::wire::{ConnStatus, EndpointsReport, ServiceReport, Status};

/// One endpoint of a Service over the window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EndpointRow {
    pub endpoint: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// Streams opened to it in the window, and per second.
    pub requests: u64,
    pub requests_per_s: f64,
    /// Its part of the Service's streams in the window (None: none at all).
    pub share: Option<f64>,
    /// 1 / the Service's endpoints (None: it left the Service).
    pub fair_share: Option<f64>,
    /// share / fair_share: 1 is balanced.
    pub share_ratio: Option<f64>,
    pub in_flight: u64,
    /// Since the agent started.
    pub opened: u64,
    pub answered: u64,
    pub resets: u64,
    /// Upper bounds of the log2 histogram buckets the quantiles fall in.
    pub p50_le_s: Option<f64>,
    pub p99_le_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceRow {
    pub name: String,
    pub vip: String,
    pub policy: String,
    pub connections_kernel: u64,
    pub connections_agent: u64,
    pub connections_spliced: u64,
    pub requests: u64,
    pub requests_per_s: f64,
    pub endpoints: Vec<EndpointRow>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServicesView {
    /// The window the rates and shares cover.
    pub window_s: f64,
    pub services: Vec<ServiceRow>,
}

fn per_s(n: u64, window_s: f64) -> f64 {
    if window_s > 0.0 {
        n as f64 / window_s
    } else {
        0.0
    }
}

pub fn service_row(s: &ServiceReport, window_s: f64) -> ServiceRow {
    let total = s.window_total();
    let fair = (s.members > 0).then(|| 1.0 / s.members as f64);
    let endpoints = (s.endpoints.iter())
        .map(|e| {
            let t = &e.totals;
            let member = matches!(e.state.as_str(), "ready" | "failing");
            let share = (total > 0).then(|| e.window as f64 / total as f64);
            let fair_share = fair.filter(|_| member);
            EndpointRow {
                endpoint: t.endpoint.clone(),
                state: e.state.clone(),
                why: t.failing.as_ref().map(|f| f.why.clone()),
                requests: e.window,
                requests_per_s: per_s(e.window, window_s),
                share,
                fair_share,
                share_ratio: share.zip(fair_share).map(|(s, f)| s / f),
                in_flight: t.in_flight(),
                opened: t.opened,
                answered: t.answered,
                resets: t.resets.iter().flatten().sum(),
                p50_le_s: t.ttfb_quantile(0.5),
                p99_le_s: t.ttfb_quantile(0.99),
            }
        })
        .collect();
    ServiceRow {
        name: s.name.clone(),
        vip: s.vip.clone(),
        policy: s.policy.clone(),
        connections_kernel: s.connections[0],
        connections_agent: s.connections[1],
        connections_spliced: s.connections[2],
        requests: total,
        requests_per_s: per_s(total, window_s),
        endpoints,
    }
}

/// The Services the report has, or only those `wanted` names.
pub fn services_view(r: &EndpointsReport, wanted: Option<&str>) -> ServicesView {
    let services = (r.services.iter())
        .filter(|s| wanted.is_none_or(|w| crate::agent::admin::names(&s.name, w)))
        .map(|s| service_row(s, r.window_s))
        .collect();
    ServicesView {
        window_s: r.window_s,
        services,
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

pub fn latency(v: Option<f64>) -> String {
    match v {
        Some(s) if s.is_finite() => format!("<={:.3}ms", s * 1e3),
        Some(_) => "+Inf".into(),
        None => "-".into(),
    }
}

pub fn services_table(v: &ServicesView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "window {:.1}s (streams opened between two samples of the agent's counters); P50/P99: time to the first response HEADERS since the agent started, as the upper bound of its log2 histogram bucket",
        v.window_s
    );
    if v.services.is_empty() {
        out.push_str("no Service is balanced\n");
    }
    for s in &v.services {
        let _ = writeln!(
            out,
            "\nSERVICE {} {} {}: {:.1} req/s; connections {} kernel, {} agent, {} spliced",
            s.name,
            s.vip,
            s.policy,
            s.requests_per_s,
            s.connections_kernel,
            s.connections_agent,
            s.connections_spliced
        );
        let _ = writeln!(
            out,
            "  {:<21} {:<9} {:>9} {:>7} {:>7} {:>6} {:>9} {:>10} {:>10} {:>7}",
            "ENDPOINT",
            "STATE",
            "REQ/S",
            "SHARE",
            "FAIR",
            "RATIO",
            "IN-FLIGHT",
            "P50",
            "P99",
            "RESETS"
        );
        for e in &s.endpoints {
            let ratio = e.share_ratio.map_or("-".into(), |r| format!("{r:.2}"));
            let _ = writeln!(
                out,
                "  {:<21} {:<9} {:>9.1} {:>7} {:>7} {:>6} {:>9} {:>10} {:>10} {:>7}",
                e.endpoint,
                e.state,
                e.requests_per_s,
                pct(e.share),
                pct(e.fair_share),
                ratio,
                e.in_flight,
                latency(e.p50_le_s),
                latency(e.p99_le_s),
                e.resets
            );
            if let Some(why) = &e.why {
                let _ = writeln!(out, "    why: {why}");
            }
        }
    }
    out
}

/// One client connection and its upstreams.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConnRow {
    pub id: u32,
    pub service: String,
    pub client: String,
    /// kernel, agent or spliced.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spliced_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spliced_because: Option<String>,
    /// Streams waiting in the agent for an endpoint with room.
    pub held: usize,
    pub upstreams: Vec<UpstreamRow>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UpstreamRow {
    pub slot: u32,
    pub endpoint: String,
    pub state: String,
    pub streams_open: u32,
    pub request_data_bytes: u64,
    pub response_data_bytes: u64,
    /// Its responses go through the agent now (beyond the client's window).
    pub diverted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<u32>,
}

pub fn conn_rows(conns: &[ConnStatus]) -> Vec<ConnRow> {
    (conns.iter())
        .map(|c| ConnRow {
            id: c.info.id,
            service: c.info.service.clone(),
            client: c.info.client.clone(),
            path: c.path().into(),
            spliced_to: c.info.spliced.as_ref().map(|s| s.endpoint.clone()),
            spliced_because: c.info.spliced.as_ref().map(|s| s.why.clone()),
            held: c.info.held,
            upstreams: (c.info.slots.iter())
                .map(|s| {
                    let k = c.kernel.upstreams.iter().find(|u| u.slot == s.slot);
                    UpstreamRow {
                        slot: s.slot,
                        endpoint: s.endpoint.clone(),
                        state: s.state.clone(),
                        streams_open: k.map_or(0, |k| k.streams),
                        request_data_bytes: k.map_or(0, |k| k.req_data),
                        response_data_bytes: k.map_or(0, |k| k.resp_data),
                        diverted: k.is_some_and(|k| k.diverted),
                        max_streams: s.max_streams,
                    }
                })
                .collect(),
        })
        .collect()
}

pub fn conns_table(rows: &[ConnRow]) -> String {
    let mut out = format!("CONNECTIONS ({})\n", rows.len());
    let _ = writeln!(
        out,
        "  {:<6} {:<20} {:<21} {:<8} UPSTREAMS: ENDPOINT STATE OPEN-STREAMS REQ-DATA RESP-DATA",
        "ID", "SERVICE", "CLIENT", "PATH"
    );
    for r in rows {
        let _ = write!(
            out,
            "  #{:<5} {:<20} {:<21} {:<8}",
            r.id, r.service, r.client, r.path
        );
        match (&r.spliced_to, &r.spliced_because) {
            (Some(to), Some(why)) => {
                let _ = writeln!(out, " to {to} ({why}: not balanced per request)");
            }
            _ => {
                let held = if r.held > 0 {
                    format!(" {} streams held", r.held)
                } else {
                    String::new()
                };
                let _ = writeln!(out, "{held}");
            }
        }
        for u in &r.upstreams {
            let _ = writeln!(
                out,
                "      slot {:<2} {:<21} {:<10} {:>4} {:>10}B {:>10}B{}{}",
                u.slot,
                u.endpoint,
                u.state,
                u.streams_open,
                u.request_data_bytes,
                u.response_data_bytes,
                if u.diverted { " diverted" } else { "" },
                u.max_streams
                    .map_or(String::new(), |m| format!(" max-streams {m}"))
            );
        }
    }
    out
}

pub fn status_table(s: &Status) -> String {
    let mut out = String::new();
    let a = &s.agent;
    let _ = writeln!(
        out,
        "rotor-agent {} (pid {}, up {}s), rotor CLI {}",
        a.version,
        a.pid,
        a.uptime_s,
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "KERNEL {}: all {} features rotor checks found",
        a.loaded.kernel,
        a.loaded.features.len()
    );
    let _ = writeln!(out, "SOURCE {}", s.source);
    let _ = writeln!(
        out,
        "LISTEN {}  CGROUP {}  {}",
        a.loaded.listen,
        a.loaded.cgroup.display(),
        if a.redirecting && a.new_clients_gated {
            "redirecting none of the new connections (its open files are near their limit)"
        } else if a.redirecting {
            "redirecting"
        } else {
            "NOT redirecting (stopping)"
        }
    );
    let _ = writeln!(out, "PROGRAMS ({} attached)", a.loaded.programs.len());
    for (p, on) in &a.loaded.programs {
        let _ = writeln!(out, "  {p:<24} {on}");
    }
    let by = |p: &str| s.connections.iter().filter(|c| c.path() == p).count();
    let endpoints: usize = s.services.iter().map(|x| x.endpoints.len()).sum();
    let _ = writeln!(
        out,
        "COUNTS services {}, endpoints {}, connections {} (kernel {}, agent {}, spliced {}), open streams {}",
        s.services.len(),
        endpoints,
        s.connections.len(),
        by("kernel"),
        by("agent"),
        by("spliced"),
        s.open_streams
    );
    let b = &s.budget;
    let _ = writeln!(
        out,
        "QUEUED {} of {} bytes (peak {}){}; cut: {} clients, {} endpoints; left on their original path while over: {}",
        b.queued_bytes,
        b.max_queued_bytes,
        b.peak_queued_bytes,
        if b.over { ", OVER: new connections stay on their original path" } else { "" },
        b.cut_clients,
        b.cut_endpoints,
        b.fail_open
    );
    let _ = writeln!(out, "SERVICES ({})", s.services.len());
    for x in &s.services {
        let _ = writeln!(
            out,
            "  {:<20} {:<22} {:<14} {}",
            x.name,
            x.vip,
            x.policy,
            x.endpoints.join(" ")
        );
    }
    let _ = writeln!(
        out,
        "ENDPOINTS ({}) since the agent started",
        s.endpoints.len()
    );
    let _ = writeln!(
        out,
        "  {:<20} {:<22} {:>9} {:>9} {:>9} {:>7} {:>10} {:>10}",
        "SERVICE", "ENDPOINT", "OPENED", "IN-FLIGHT", "ANSWERED", "RESETS", "P50", "P99"
    );
    for e in &s.endpoints {
        let resets: u64 = e.resets.iter().flatten().sum();
        let _ = writeln!(
            out,
            "  {:<20} {:<22} {:>9} {:>9} {:>9} {:>7} {:>10} {:>10}",
            e.service,
            e.endpoint,
            e.opened,
            e.in_flight(),
            e.answered,
            resets,
            latency(e.ttfb_quantile(0.5)),
            latency(e.ttfb_quantile(0.99))
        );
    }
    out.push_str(&super::render_more::upstreams_table(&s.upstreams));
    let _ = writeln!(out, "KERNEL COUNTERS");
    for (k, v) in &s.kernel {
        let _ = writeln!(out, "  {k:<20} {v}");
    }
    out
}
