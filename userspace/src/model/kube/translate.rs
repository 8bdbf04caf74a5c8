//! Kubernetes objects → [`Model`]: the pure half of the Kubernetes source.
//!
//! One [`ServiceSpec`] per TCP port of every Service labelled
//! [`BALANCE_LABEL`] that has an IPv4 ClusterIP; its endpoints are the IPv4
//! addresses of the ready, not terminating endpoints of the Service's
//! EndpointSlices, on the slice port whose name matches the Service port's.

use std::collections::{BTreeSet, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

use super::{BALANCE_LABEL, SERVICE_NAME_LABEL};
use crate::model::{Model, Policy, ServiceSpec};

/// The model for these Services and EndpointSlices (in any order; objects
/// that do not concern a labelled Service are ignored). Deterministic:
/// services sorted by name, endpoints by address. The agent keeps the same
/// model one Service at a time (index.rs); this is its reference.
pub fn model_from<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Model {
    model_on(&NodeInfo::default(), services, slices)
}

/// This node, as the Service fields that depend on it read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// `--node-name`; without it, `internalTrafficPolicy: Local` Services
    /// are left to kube-proxy.
    pub name: Option<String>,
}

/// [`model_from`] for the agent of `node`.
pub fn model_on<'a>(
    node: &NodeInfo,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Model {
    let slices: Vec<&EndpointSlice> = slices.into_iter().collect();
    let mut out: Vec<ServiceSpec> = Vec::new();
    for svc in services {
        let (Some(ns), Some(name)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let own: Vec<&EndpointSlice> = slices
            .iter()
            .copied()
            .filter(|s| slice_of(s, ns, name))
            .collect();
        out.extend(service_specs(svc, &own, node));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    // Kubernetes never gives two Services one ClusterIP, but a model with
    // a repeated address would be refused whole: keep the first.
    let mut vips = HashSet::new();
    out.retain(|s| {
        let first = vips.insert(s.vip);
        if !first {
            tracing::warn!(service = %s.name, vip = %s.vip, "address already belongs to another Service; skipped");
        }
        first
    });
    Model { services: out }
}

/// One Service's specs, one per TCP port, from its own slices (`own`: the
/// caller picked them), in port order; none unless it is labelled and has
/// an IPv4 ClusterIP.
pub(super) fn service_specs(
    svc: &Service,
    own: &[&EndpointSlice],
    node: &NodeInfo,
) -> Vec<ServiceSpec> {
    let mut out = Vec::new();
    let (Some(ns), Some(name)) = (
        svc.metadata.namespace.as_deref(),
        svc.metadata.name.as_deref(),
    ) else {
        return out;
    };
    let Some(policy) = policy_of(svc, ns, name) else {
        return out;
    };
    let Some(ip) = cluster_ipv4(svc, ns, name) else {
        return out;
    };
    let Ok(only_node) = node_filter(svc, ns, name, node) else {
        return out;
    };
    let ports: Vec<&ServicePort> = svc
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .collect();
    let by_app_protocol = ports.iter().any(|p| p.app_protocol.is_some());
    for port in ports {
        if !is_tcp(port.protocol.as_deref()) {
            tracing::debug!(service = %format!("{ns}/{name}"), port = port.port, "not TCP: not balanced");
            continue;
        }
        if by_app_protocol && !speaks_h2(port.app_protocol.as_deref()) {
            tracing::debug!(service = %format!("{ns}/{name}"), port = port.port, app_protocol = ?port.app_protocol, "the Service names its HTTP/2 ports by appProtocol, and not this one: not balanced");
            continue;
        }
        let Ok(svc_port) = u16::try_from(port.port) else {
            continue;
        };
        let spec_name = format!("{ns}/{name}:{svc_port}");
        let endpoints = ready_endpoints(own, port, only_node);
        if endpoints.is_empty() {
            tracing::debug!(service = %spec_name, "no ready endpoint");
        }
        out.push(ServiceSpec {
            name: spec_name,
            vip: SocketAddrV4::new(ip, svc_port),
            policy,
            endpoints,
        });
    }
    out
}

/// `internalTrafficPolicy: Local`: only this node's endpoints (Ok(Some)).
/// With none of them, the Service has no endpoint and its connections
/// keep kube-proxy's path, where kube-proxy drops them as it does for a
/// Local Service without a local endpoint. Unknown node name: Err, the
/// Service is left to kube-proxy (which knows its node).
fn node_filter<'n>(
    svc: &Service,
    ns: &str,
    name: &str,
    node: &'n NodeInfo,
) -> Result<Option<&'n str>, ()> {
    let policy = svc
        .spec
        .as_ref()
        .and_then(|s| s.internal_traffic_policy.as_deref());
    if policy != Some("Local") {
        return Ok(None);
    }
    match node.name.as_deref() {
        Some(n) => Ok(Some(n)),
        None => {
            tracing::warn!(
                service = %format!("{ns}/{name}"),
                "internalTrafficPolicy: Local needs the agent's node name (--node-name, NODE_NAME): left to kube-proxy"
            );
            Err(())
        }
    }
}

/// Whether the Service opted in (the watch selects these too; this keeps
/// the function right on its own).
pub(super) fn labelled(svc: &Service) -> bool {
    svc.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(BALANCE_LABEL))
}

/// The policy the Service's label names, if it opted in (the watch
/// selects labelled Services; this keeps the function right on its own).
/// A value that names no policy ("false", "off", empty) balances nothing:
/// a label that reads "false" must not turn balancing on.
fn policy_of(svc: &Service, ns: &str, name: &str) -> Option<Policy> {
    let value = svc.metadata.labels.as_ref()?.get(BALANCE_LABEL)?;
    let affinity = svc
        .spec
        .as_ref()
        .and_then(|s| s.session_affinity.as_deref());
    if affinity == Some("ClientIP") {
        // The Service promises every connection of a client one pod; per
        // request balancing would break that promise, so kube-proxy keeps it.
        tracing::warn!(
            service = %format!("{ns}/{name}"),
            "sessionAffinity: ClientIP keeps a client on one pod: not balanced per request"
        );
        return None;
    }
    let policy = Policy::from_name(value);
    if policy.is_none() {
        tracing::warn!(
            service = %format!("{ns}/{name}"),
            value = %value,
            "{BALANCE_LABEL}={value:?} names no policy (accepted: {}): not balanced",
            Policy::names()
        );
    }
    policy
}

/// The Service's IPv4 ClusterIP: the first IPv4 of `clusterIPs` (dual stack
/// may list IPv6 first), else `clusterIP`. Headless, ExternalName and
/// IPv6-only Services have none.
fn cluster_ipv4(svc: &Service, ns: &str, name: &str) -> Option<Ipv4Addr> {
    let spec = svc.spec.as_ref()?;
    let ips: Vec<&str> = spec
        .cluster_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .chain(spec.cluster_ip.as_deref())
        .collect();
    if ips.is_empty() || ips.iter().all(|ip| *ip == "None" || ip.is_empty()) {
        tracing::debug!(service = %format!("{ns}/{name}"), "headless or without ClusterIP: not balanced");
        return None;
    }
    let v4 = ips.iter().find_map(|ip| ip.parse::<Ipv4Addr>().ok());
    if v4.is_none() {
        tracing::debug!(service = %format!("{ns}/{name}"), cluster_ips = ?ips, "no IPv4 ClusterIP (rotor is IPv4 only): not balanced");
    }
    v4
}

fn slice_of(slice: &EndpointSlice, ns: &str, name: &str) -> bool {
    slice.metadata.namespace.as_deref() == Some(ns) && service_name(slice) == Some(name)
}

/// The Service a slice belongs to (its `kubernetes.io/service-name` label).
pub(super) fn service_name(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .map(String::as_str)
}

/// The appProtocol values that promise HTTP/2 (cleartext, prior knowledge).
pub const H2_APP_PROTOCOLS: [&str; 2] = ["kubernetes.io/h2c", "grpc"];

/// Once a Service names any port's appProtocol, only the ports it names
/// HTTP/2 are balanced: `http`, `kubernetes.io/ws`, `https` and the rest
/// (and its ports without one) keep kube-proxy's path.
fn speaks_h2(app_protocol: Option<&str>) -> bool {
    app_protocol.is_some_and(|a| H2_APP_PROTOCOLS.contains(&a))
}

fn is_tcp(protocol: Option<&str>) -> bool {
    matches!(protocol, None | Some("TCP"))
}

/// Ready endpoints of `slices` on the port matching `port` (by name; an
/// unnamed port is `""` on both sides), sorted, without duplicates (an
/// endpoint may be in two slices while they are rebalanced). With none
/// ready, the terminating ones that still serve, as kube-proxy does: a
/// Deployment scaled to zero, or every pod of a rollout terminating at
/// once, still has pods finishing their work, and calls sent to them beat
/// calls sent nowhere.
fn ready_endpoints(
    slices: &[&EndpointSlice],
    port: &ServicePort,
    only_node: Option<&str>,
) -> Vec<SocketAddrV4> {
    let want = port.name.as_deref().unwrap_or("");
    let (mut ready_eps, mut terminating) = (BTreeSet::new(), BTreeSet::new());
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let target = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == want && is_tcp(p.protocol.as_deref()))
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok());
        let Some(target) = target else { continue };
        for ep in &slice.endpoints {
            if only_node.is_some() && ep.node_name.as_deref() != only_node {
                continue;
            }
            let set = if ready(ep) {
                &mut ready_eps
            } else if serving_while_terminating(ep) {
                &mut terminating
            } else {
                continue;
            };
            set.extend(
                ep.addresses
                    .iter()
                    .filter_map(|a| a.parse::<Ipv4Addr>().ok())
                    .map(|ip| SocketAddrV4::new(ip, target)),
            );
        }
    }
    if ready_eps.is_empty() {
        terminating.into_iter().collect()
    } else {
        ready_eps.into_iter().collect()
    }
}

/// Ready unless it says otherwise (an unset condition means ready, as
/// Kubernetes defines it), and not terminating.
fn ready(ep: &Endpoint) -> bool {
    let c = ep.conditions.as_ref();
    c.and_then(|c| c.ready) != Some(false) && c.and_then(|c| c.terminating) != Some(true)
}

/// Terminating, and its pod still passes its readiness probe (`serving`).
fn serving_while_terminating(ep: &Endpoint) -> bool {
    let c = ep.conditions.as_ref();
    c.and_then(|c| c.terminating) == Some(true) && c.and_then(|c| c.serving) == Some(true)
}

#[cfg(test)]
mod tests;
