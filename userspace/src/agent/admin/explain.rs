//! `rotor explain VIP:PORT|SERVICE|CLIENT-IP`: why traffic is or is not
//! balanced, from what the agent knows, and what it cannot know said so.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::report::{conns, names};
use super::sockets::{self, Scan};
use super::wire::{ConnStatus, Explanation, Finding, Skew};
use crate::agent::registry::ServiceState;
use crate::agent::Shared;

fn finding(level: &str, text: impl Into<String>) -> Finding {
    Finding {
        level: level.into(),
        text: text.into(),
    }
}

const NOT_IN_MODEL: &str = "The agent balances no Service with this address. It cannot tell why: \
with --source kubernetes it only sees Services labelled rotor.dev/balance whose value names a policy \
(round-robin, least-request), with an IPv4 ClusterIP, without sessionAffinity: ClientIP; with a file, \
only the file's Services. An unlabelled Service, a label value of false/off/empty, a headless or \
IPv6-only Service and an address that is no Service all look the same from here.";

pub fn explain(shared: &Shared, target: &str) -> Explanation {
    let services = shared.registry.services();
    if let Ok(vip) = target.parse::<SocketAddrV4>() {
        return match services.iter().find(|s| s.vip == vip) {
            Some(s) => service(shared, s, target, "vip"),
            None => unknown_vip(shared, vip, target),
        };
    }
    if let Ok(ip) = target.parse::<Ipv4Addr>() {
        let at_ip: Vec<_> = services.iter().filter(|s| *s.vip.ip() == ip).collect();
        if let [s] = at_ip.as_slice() {
            return service(shared, s, target, "vip");
        }
        return client(shared, ip, target);
    }
    let named: Vec<_> = services.iter().filter(|s| names(&s.name, target)).collect();
    match named.as_slice() {
        [s] => service(shared, s, target, "service"),
        [] => Explanation {
            target: target.into(),
            kind: "service".into(),
            verdict: "not balanced: no such Service in the agent's model".into(),
            findings: vec![finding("problem", NOT_IN_MODEL)],
            skew: None,
        },
        many => Explanation {
            target: target.into(),
            kind: "service".into(),
            verdict: "ambiguous: name one port".into(),
            findings: (many.iter())
                .map(|s| finding("unknown", format!("{} at {}", s.name, s.vip)))
                .collect(),
            skew: None,
        },
    }
}

fn unknown_vip(shared: &Shared, vip: SocketAddrV4, target: &str) -> Explanation {
    let scan = sockets::scan();
    let mut findings = vec![finding("problem", NOT_IN_MODEL)];
    let same_ip: Vec<String> = (shared.registry.services().iter())
        .filter(|s| s.vip.ip() == vip.ip())
        .map(|s| format!("{} ({})", s.vip, s.name))
        .collect();
    if !same_ip.is_empty() {
        findings.push(finding(
            "problem",
            format!(
                "Other ports of this address are balanced: {}. Is the port right?",
                same_ip.join(", ")
            ),
        ));
    }
    let skew = skew(&scan, vip, &[]);
    Explanation {
        target: target.into(),
        kind: "vip".into(),
        verdict: "not balanced: not in the agent's model".into(),
        findings,
        skew: Some(skew),
    }
}

fn skew(scan: &Scan, vip: SocketAddrV4, endpoints: &[SocketAddrV4]) -> Skew {
    let at = sockets::at_endpoints(scan, endpoints);
    let mut by_endpoint: Vec<(String, u64, u64)> = (endpoints.iter())
        .map(|e| {
            let (agent, other) = at.get(e).copied().unwrap_or_default();
            (e.to_string(), agent, other)
        })
        .collect();
    by_endpoint.sort();
    let mut conntrack = sockets::through_nat(scan, vip);
    // an endpoint the model knows and no tracked connection reached: 0
    for e in endpoints {
        if !conntrack.is_empty() && !conntrack.iter().any(|(c, _)| c == e) {
            conntrack.push((*e, 0));
        }
    }
    conntrack.sort();
    let conntrack = (conntrack.into_iter())
        .map(|(e, n)| (e.to_string(), n))
        .collect();
    let ct = if scan.conntrack {
        "nf_conntrack entries dialled to the Service address"
    } else {
        "no conntrack table readable"
    };
    Skew {
        source: format!(
            "established TCP sockets from /proc/PID/net/tcp of {} network namespaces the agent sees \
             (the server side at each endpoint; all of a node's pods only with hostPID), and {ct}",
            scan.namespaces
        ),
        endpoints: by_endpoint,
        conntrack,
    }
}

fn service(shared: &Shared, s: &ServiceState, target: &str, kind: &str) -> Explanation {
    let endpoints = s.endpoints.borrow().clone();
    let conns = conns(shared, Some(&s.name));
    let totals = (shared.registry.endpoints).totals(|id| shared.dp.endpoint_stats(id));
    let mut f = vec![finding(
        "ok",
        format!(
            "{} at {} is in the model, policy {}",
            s.name,
            s.vip,
            s.policy().name()
        ),
    )];
    let mut balanced = true;
    match endpoints.len() {
        0 => {
            balanced = false;
            f.push(finding("problem", "No ready endpoint: the kernel does not redirect its connections; new ones take their original path (kube-proxy's)."));
        }
        1 => {
            balanced = false;
            f.push(finding("problem", format!("Only one endpoint is ready ({}): every stream goes to it; there is nothing to balance until a second one is ready.", endpoints[0])));
        }
        n => f.push(finding("ok", format!("{n} endpoints ready"))),
    }
    for t in totals.iter().filter(|t| t.service == s.name) {
        if let Some(why) = &t.failing {
            f.push(finding("problem", format!(
                "Endpoint {} fails: its last {} connects or HTTP/2 handshakes failed ({}s): {}. It gets no streams until one succeeds.",
                t.endpoint, why.attempts, why.for_s, why.why
            )));
        }
    }
    f.extend(connections(&conns, &s.name));
    let spliced = conns.iter().filter(|c| c.info.spliced.is_some()).count();
    let scan = sockets::scan();
    let skew = skew(&scan, s.vip, &endpoints);
    let direct: u64 = skew.endpoints.iter().map(|e| e.2).sum();
    if direct > 0 {
        f.push(finding("problem", format!(
            "{direct} connections reach its endpoints from elsewhere than the agent (opened before it balanced the Service, from clients outside --cgroup {}, or straight to the pods): those are not balanced per request (skew below).",
            shared.dp.loaded.cgroup.display()
        )));
    }
    let verdict = match (balanced, conns.len(), spliced, direct) {
        (false, ..) => "not balanced",
        (true, 0, _, _) => "balanced when clients come: no connection through the agent now",
        (true, n, k, _) if k == n => "not balanced: its connections are spliced",
        (true, _, k, d) if k > 0 || d > 0 => "partly balanced",
        _ => "balanced",
    };
    Explanation {
        target: target.into(),
        kind: kind.into(),
        verdict: verdict.into(),
        findings: f,
        skew: Some(skew),
    }
}

/// What the Service's connections say: paths, splices, held streams, flow control.
fn connections(conns: &[ConnStatus], name: &str) -> Vec<Finding> {
    let mut f = Vec::new();
    if conns.is_empty() {
        f.push(finding("unknown", format!(
            "No client connection to {name} goes through the agent now. Clients outside --cgroup, and connections opened before the Service was balanced, are not seen by the agent."
        )));
        return f;
    }
    let by = |p: &str| conns.iter().filter(|c| c.path() == p).count();
    f.push(finding("ok", format!(
        "{} client connections through the agent: {} on the kernel path, {} carried by the agent, {} spliced",
        conns.len(), by("kernel"), by("agent"), by("spliced")
    )));
    for c in conns {
        if let Some(sp) = &c.info.spliced {
            f.push(finding("problem", format!(
                "Connection #{} from {} is spliced to {}: its client speaks {}, not cleartext HTTP/2 (h2c), so it goes whole to one endpoint.",
                c.info.id, c.info.client, sp.endpoint, sp.why
            )));
        }
    }
    let held: usize = conns.iter().map(|c| c.info.held).sum();
    let limits: Vec<String> = (conns.iter().flat_map(|c| &c.info.slots))
        .filter_map(|s| Some(format!("{} {}", s.endpoint, s.max_streams?)))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if held > 0 {
        f.push(finding("problem", format!(
            "{held} new streams wait in the agent for an endpoint with room: endpoints limit their SETTINGS_MAX_CONCURRENT_STREAMS ({}).",
            if limits.is_empty() { "none advertised".into() } else { limits.join(", ") }
        )));
    } else if !limits.is_empty() {
        f.push(finding(
            "ok",
            format!(
                "Endpoints limit concurrent streams ({}); no stream waits for room now.",
                limits.join(", ")
            ),
        ));
    }
    let diverted: usize = (conns.iter())
        .map(|c| c.kernel.upstreams.iter().filter(|u| u.diverted).count())
        .sum();
    if diverted > 0 {
        f.push(finding("problem", format!(
            "{diverted} upstreams send their responses through the agent now: they are ahead of the client's flow-control window (the agent path; balanced, but slower)."
        )));
    }
    f
}

fn client(shared: &Shared, ip: Ipv4Addr, target: &str) -> Explanation {
    let all = conns(shared, None);
    let mine: Vec<&ConnStatus> = (all.iter())
        .filter(|c| {
            c.info
                .client
                .parse::<SocketAddrV4>()
                .is_ok_and(|a| *a.ip() == ip)
        })
        .collect();
    let mut f = Vec::new();
    let verdict = if mine.is_empty() {
        f.push(finding("unknown", format!(
            "No connection from {ip} goes through the agent now. Either the client is outside --cgroup {} (the agent cannot see a process's cgroup from its address), it dials an address that is not balanced (rotor explain VIP:PORT), its connections were opened before the Service was balanced, or it is idle.",
            shared.dp.loaded.cgroup.display()
        )));
        let left: u64 = (shared.dp.stats().iter())
            .filter(|(n, _)| n.starts_with("fail_open"))
            .map(|(_, v)| v)
            .sum();
        if left > 0 {
            f.push(finding("problem", format!(
                "{left} connections (of any client) were left on their original path because the agent's tables were full (fail_open_* in rotor status)."
            )));
        }
        "not balanced: no connection through the agent"
    } else {
        let mut services: Vec<&str> = mine.iter().map(|c| c.info.service.as_str()).collect();
        services.sort_unstable();
        services.dedup();
        for s in services {
            let of: Vec<ConnStatus> = conns(shared, Some(s))
                .into_iter()
                .filter(|c| {
                    c.info
                        .client
                        .parse::<SocketAddrV4>()
                        .is_ok_and(|a| *a.ip() == ip)
                })
                .collect();
            f.extend(connections(&of, s));
        }
        if mine.iter().all(|c| c.info.spliced.is_some()) {
            "not balanced: its connections are spliced"
        } else {
            "balanced"
        }
    };
    Explanation {
        target: target.into(),
        kind: "client".into(),
        verdict: verdict.into(),
        findings: f,
        skew: None,
    }
}
