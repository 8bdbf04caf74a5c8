//! The documents the admin socket answers with, built from the agent's
//! state: the whole status, per-endpoint reports with their window, and
//! the connections.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::wire::*;
use crate::agent::metrics_page::MetricsPage;
use crate::agent::registry::ConnInfo;
use crate::agent::Shared;

fn counters(shared: &Shared, id: u32) -> ConnCounters {
    let Some(c) = shared.dp.conns.get(id) else {
        return ConnCounters::default();
    };
    ConnCounters {
        flags: c.flags.load(Relaxed),
        client_recv: c.client_recv.load(Relaxed),
        client_limit: c.client_limit.load(Relaxed),
        upstreams: c
            .up
            .iter()
            .enumerate()
            .filter(|(_, u)| u.state.load(Relaxed) != crate::ebpf::abi::UP_EMPTY)
            .map(|(slot, u)| UpstreamCounters {
                slot: slot as u32,
                state: u.state.load(Relaxed),
                streams: u.streams.load(Relaxed),
                req_data: u.req_data.load(Relaxed),
                req_limit: u.req_limit.load(Relaxed),
                resp_data: u.resp_data.load(Relaxed),
                diverted: u.diverted.load(Relaxed) != 0,
                passed: u.passed.load(Relaxed),
                last_diverted: u.last_diverted.load(Relaxed),
                consumed: u.consumed.load(Relaxed),
                release: u.release.load(Relaxed) != 0,
            })
            .collect(),
    }
}

pub fn conn_status(shared: &Shared, info: ConnInfo) -> ConnStatus {
    // a spliced connection's slots were closed: the kernel's entry is stale
    let kernel = match info.spliced {
        Some(_) => ConnCounters::default(),
        None => counters(shared, info.id),
    };
    ConnStatus { kernel, info }
}

/// Connections, of one Service if named (its full name, or without the port).
pub fn conns(shared: &Shared, service: Option<&str>) -> Vec<ConnStatus> {
    let mut all: Vec<ConnStatus> = (shared.registry.conns().into_iter())
        .filter(|c| service.is_none_or(|s| names(&c.service, s)))
        .map(|info| conn_status(shared, info))
        .collect();
    all.sort_by_key(|c| c.info.id);
    all
}

/// Whether `wanted` names the Service `name` (`ns/name:port`): the whole
/// name, or without its port.
pub fn names(name: &str, wanted: &str) -> bool {
    name == wanted || name.rsplit_once(':').is_some_and(|(n, _)| n == wanted)
}

pub fn agent_info(shared: &Shared, started: std::time::Instant) -> AgentInfo {
    AgentInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        uptime_s: started.elapsed().as_secs(),
        loaded: shared.dp.loaded.clone(),
        redirecting: shared.dp.redirecting(),
        new_clients_gated: shared.dp.new_clients_gated(),
    }
}

pub fn status(shared: &Shared, started: std::time::Instant) -> Status {
    let mut services: Vec<ServiceStatus> = (shared.registry.services().iter())
        .map(|s| ServiceStatus {
            name: s.name.clone(),
            vip: s.vip.to_string(),
            policy: s.policy().name().to_string(),
            endpoints: s.listed().iter().map(|e| e.to_string()).collect(),
        })
        .collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    Status {
        services,
        connections: conns(shared, None),
        open_streams: shared.dp.stream_count(),
        kernel: (shared.dp.stats().into_iter())
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        budget: shared.budget.status(),
        source: shared.source.report(),
        endpoints: (shared.registry.endpoints).totals(|id| shared.dp.endpoint_stats(id)),
        agent: agent_info(shared, started),
        upstreams: shared.pools.connections(),
    }
}

pub fn endpoints(shared: &Shared, page: &MetricsPage, window: Duration) -> EndpointsReport {
    let totals = page.totals();
    let (window_s, before) = match page.window(window) {
        Some((age, opened)) => (age.as_secs_f64(), opened),
        None => (0.0, HashMap::new()),
    };
    let mut paths: HashMap<String, [u64; 3]> = HashMap::new();
    for c in conns(shared, None) {
        let k = match c.path() {
            "kernel" => 0,
            "agent" => 1,
            _ => 2,
        };
        paths.entry(c.info.service.clone()).or_default()[k] += 1;
    }
    let mut services: Vec<ServiceReport> = (shared.registry.services().iter())
        .map(|svc| {
            let members: Vec<String> = (svc.listed().iter()).map(|e| e.to_string()).collect();
            let endpoints = (totals.iter().filter(|t| t.service == svc.name))
                .filter_map(|t| {
                    let key = (t.service.clone(), t.endpoint.clone());
                    let window = match before.get(&key) {
                        Some(was) => t.opened.saturating_sub(*was),
                        // not sampled yet: new since the window began
                        None if window_s > 0.0 => t.opened,
                        None => 0,
                    };
                    let member = members.contains(&t.endpoint);
                    let state = match (member, &t.failing, t.in_flight()) {
                        (true, Some(_), _) => "failing",
                        (true, None, _) => "ready",
                        (false, _, n) if n > 0 => "draining",
                        (false, _, _) if window > 0 => "gone",
                        _ => return None,
                    };
                    Some(EndpointReport {
                        state: state.into(),
                        window,
                        totals: t.clone(),
                    })
                })
                .collect::<Vec<_>>();
            // members with no stream yet have no totals: shown as ready, 0
            let mut endpoints = endpoints;
            for m in &members {
                if !endpoints.iter().any(|e| &e.totals.endpoint == m) {
                    endpoints.push(EndpointReport {
                        state: "ready".into(),
                        window: 0,
                        totals: crate::agent::metrics_counts::EndpointTotals {
                            service: svc.name.clone(),
                            endpoint: m.clone(),
                            ..Default::default()
                        },
                    });
                }
            }
            endpoints.sort_by(|a, b| a.totals.endpoint.cmp(&b.totals.endpoint));
            ServiceReport {
                name: svc.name.clone(),
                vip: svc.vip.to_string(),
                policy: svc.policy().name().into(),
                members: members.len(),
                connections: paths.get(&svc.name).copied().unwrap_or_default(),
                endpoints,
            }
        })
        .collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    EndpointsReport { window_s, services }
}
