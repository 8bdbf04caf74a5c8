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
        out.extend(service_specs(svc, &own));
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
pub(super) fn service_specs(svc: &Service, own: &[&EndpointSlice]) -> Vec<ServiceSpec> {
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
    for port in svc.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
        if !is_tcp(port.protocol.as_deref()) {
            tracing::debug!(service = %format!("{ns}/{name}"), port = port.port, "not TCP: not balanced");
            continue;
        }
        let Ok(svc_port) = u16::try_from(port.port) else {
            continue;
        };
        let spec_name = format!("{ns}/{name}:{svc_port}");
        let endpoints = ready_endpoints(own, port);
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
fn ready_endpoints(slices: &[&EndpointSlice], port: &ServicePort) -> Vec<SocketAddrV4> {
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
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec as K8sServiceSpec;
    use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn meta(ns: &str, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn service(name: &str, labelled: bool, cluster_ip: &str, ports: &[(&str, i32)]) -> Service {
        let labels: &[(&str, &str)] = if labelled {
            &[(BALANCE_LABEL, "round-robin")]
        } else {
            &[]
        };
        Service {
            metadata: meta("default", name, labels),
            spec: Some(K8sServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                cluster_ips: Some(vec![cluster_ip.into()]),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p)| ServicePort {
                            name: (!n.is_empty()).then(|| n.to_string()),
                            port: *p,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// `eps`: (address, ready, terminating).
    fn slice(
        svc: &str,
        family: &str,
        ports: &[(&str, i32)],
        eps: &[(&str, Option<bool>, Option<bool>)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: meta(
                "default",
                &format!("{svc}-abcde"),
                &[(SERVICE_NAME_LABEL, svc)],
            ),
            address_type: family.into(),
            endpoints: eps
                .iter()
                .map(|(a, ready, terminating)| Endpoint {
                    addresses: vec![a.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        serving: *ready,
                        terminating: *terminating,
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: Some(n.to_string()),
                        port: Some(*p),
                        protocol: Some("TCP".into()),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        }
    }

    fn addrs(s: &[&str]) -> Vec<SocketAddrV4> {
        s.iter().map(|a| a.parse().expect("test address")).collect()
    }

    #[test]
    fn labelled_service_with_ready_endpoints() {
        let svcs = [service("echo", true, "10.96.0.10", &[("h2c", 8080)])];
        let slices = [slice(
            "echo",
            "IPv4",
            &[("h2c", 9090)],
            &[
                ("10.1.2.2", Some(true), None),
                ("10.1.1.2", None, Some(false)),
                ("10.1.1.2", Some(true), None),
            ],
        )];
        let m = model_from(&svcs, &slices);
        assert_eq!(
            m.services,
            vec![ServiceSpec {
                name: "default/echo:8080".into(),
                vip: "10.96.0.10:8080".parse().expect("vip"),
                policy: Policy::RoundRobin,
                endpoints: addrs(&["10.1.1.2:9090", "10.1.2.2:9090"]),
            }]
        );
        m.validate().expect("valid model");
    }

    #[test]
    fn ignores_unlabelled_not_ready_ipv6_and_headless() {
        let svcs = [
            service("echo", true, "10.96.0.10", &[("", 8080)]),
            service("plain", false, "10.96.0.11", &[("", 8080)]),
            service("v6", true, "fd00::10", &[("", 8080)]),
            service("headless", true, "None", &[("", 8080)]),
        ];
        let slices = [
            slice(
                "echo",
                "IPv4",
                &[("", 8080)],
                &[
                    ("10.1.1.2", Some(true), None),
                    ("10.1.2.2", Some(false), None),
                    ("10.1.3.2", Some(false), Some(true)),
                ],
            ),
            slice(
                "echo",
                "IPv6",
                &[("", 8080)],
                &[("fd00::2", Some(true), None)],
            ),
            slice(
                "plain",
                "IPv4",
                &[("", 8080)],
                &[("10.1.4.2", Some(true), None)],
            ),
            slice(
                "v6",
                "IPv6",
                &[("", 8080)],
                &[("fd00::3", Some(true), None)],
            ),
            slice(
                "headless",
                "IPv4",
                &[("", 8080)],
                &[("10.1.5.2", Some(true), None)],
            ),
        ];
        let m = model_from(&svcs, &slices);
        assert_eq!(m.services.len(), 1, "{m:?}");
        assert_eq!(m.services[0].name, "default/echo:8080");
        assert_eq!(m.services[0].endpoints, addrs(&["10.1.1.2:8080"]));
    }

    #[test]
    fn one_spec_per_tcp_port_with_the_slice_port_of_the_same_name() {
        let mut svc = service(
            "multi",
            true,
            "10.96.0.20",
            &[("grpc", 50051), ("http", 80), ("dns", 53)],
        );
        if let Some(p) = svc
            .spec
            .as_mut()
            .and_then(|s| s.ports.as_mut())
            .and_then(|p| p.get_mut(2))
        {
            p.protocol = Some("UDP".into());
        }
        let slices = [slice(
            "multi",
            "IPv4",
            &[("http", 8080), ("grpc", 9000)],
            &[("10.1.1.2", Some(true), None)],
        )];
        let m = model_from([&svc], &slices);
        let got: Vec<(&str, String, Vec<SocketAddrV4>)> = m
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.vip.to_string(), s.endpoints.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "default/multi:50051",
                    "10.96.0.20:50051".into(),
                    addrs(&["10.1.1.2:9000"])
                ),
                (
                    "default/multi:80",
                    "10.96.0.20:80".into(),
                    addrs(&["10.1.1.2:8080"])
                ),
            ]
        );
    }

    #[test]
    fn slices_of_other_namespaces_or_services_do_not_count() {
        let svcs = [service("echo", true, "10.96.0.10", &[("", 8080)])];
        let mut other_ns = slice(
            "echo",
            "IPv4",
            &[("", 8080)],
            &[("10.1.7.2", Some(true), None)],
        );
        other_ns.metadata.namespace = Some("prod".into());
        let other_svc = slice(
            "echo2",
            "IPv4",
            &[("", 8080)],
            &[("10.1.8.2", Some(true), None)],
        );
        let m = model_from(&svcs, [&other_ns, &other_svc]);
        assert_eq!(m.services.len(), 1);
        assert!(m.services[0].endpoints.is_empty(), "{m:?}");
    }

    #[test]
    fn dual_stack_uses_the_ipv4_cluster_ip() {
        let mut svc = service("ds", true, "fd00::20", &[("", 8080)]);
        if let Some(spec) = svc.spec.as_mut() {
            spec.cluster_ips = Some(vec!["fd00::20".into(), "10.96.0.30".into()]);
        }
        let m = model_from([&svc], []);
        assert_eq!(m.services.len(), 1);
        assert_eq!(m.services[0].vip, "10.96.0.30:8080".parse().expect("vip"));
    }

    #[test]
    fn every_ready_endpoint_of_a_large_service_is_kept() {
        let svcs = [service("big", true, "10.96.0.40", &[("", 8080)])];
        let ips: Vec<String> = (1..=40).map(|k| format!("10.2.0.{k}")).collect();
        let eps: Vec<(&str, Option<bool>, Option<bool>)> =
            ips.iter().map(|a| (a.as_str(), Some(true), None)).collect();
        let slices = [slice("big", "IPv4", &[("", 8080)], &eps)];
        let m = model_from(&svcs, &slices);
        assert_eq!(m.services[0].endpoints.len(), 40);
        m.validate().expect("valid model");
    }

    #[test]
    fn the_label_value_is_the_policy_and_other_values_balance_nothing() {
        let with_value = |name: &str, ip: &str, value: &str| {
            let mut svc = service(name, true, ip, &[("h2c", 8080)]);
            let labels = svc.metadata.labels.get_or_insert_default();
            labels.insert(BALANCE_LABEL.into(), value.into());
            svc
        };
        let svcs = [
            with_value("lr", "10.96.0.10", "least-request"),
            with_value("rr", "10.96.0.11", "round-robin"),
            with_value("off", "10.96.0.12", "false"),
            with_value("empty", "10.96.0.13", ""),
        ];
        let slices: Vec<EndpointSlice> = ["lr", "rr", "off", "empty"]
            .iter()
            .map(|svc| {
                slice(
                    svc,
                    "IPv4",
                    &[("h2c", 9090)],
                    &[("10.1.1.2", Some(true), None)],
                )
            })
            .collect();
        let m = model_from(&svcs, &slices);
        let policies: Vec<(&str, Policy)> = m
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.policy))
            .collect();
        assert_eq!(
            policies,
            vec![
                ("default/lr:8080", Policy::LeastRequest),
                ("default/rr:8080", Policy::RoundRobin),
            ]
        );
    }

    #[test]
    fn terminating_endpoints_that_serve_carry_the_service_when_none_is_ready() {
        let svcs = [service("echo", true, "10.96.0.10", &[("h2c", 8080)])];
        // (address, ready, terminating); the helper sets serving = ready
        let mut rollout = slice(
            "echo",
            "IPv4",
            &[("h2c", 9090)],
            &[
                ("10.1.1.2", Some(false), Some(true)),
                ("10.1.2.2", Some(false), Some(true)),
                ("10.1.3.2", Some(false), Some(true)),
            ],
        );
        // be1 and be2 still pass their readiness probes; be3 no longer does
        for ep in &mut rollout.endpoints[..2] {
            ep.conditions.get_or_insert_default().serving = Some(true);
        }
        let m = model_from(&svcs, std::slice::from_ref(&rollout));
        assert_eq!(
            m.services[0].endpoints,
            addrs(&["10.1.1.2:9090", "10.1.2.2:9090"])
        );
        // one ready endpoint: the terminating ones get nothing
        rollout.endpoints.push(Endpoint {
            addresses: vec!["10.1.4.2".into()],
            ..Default::default()
        });
        let m = model_from(&svcs, &[rollout]);
        assert_eq!(m.services[0].endpoints, addrs(&["10.1.4.2:9090"]));
    }

    #[test]
    fn client_ip_session_affinity_is_left_to_kube_proxy() {
        let mut sticky = service("sticky", true, "10.96.0.10", &[("h2c", 8080)]);
        if let Some(spec) = sticky.spec.as_mut() {
            spec.session_affinity = Some("ClientIP".into());
        }
        let mut none = service("plain", true, "10.96.0.11", &[("h2c", 8080)]);
        if let Some(spec) = none.spec.as_mut() {
            spec.session_affinity = Some("None".into());
        }
        let slices = [
            slice(
                "sticky",
                "IPv4",
                &[("h2c", 9090)],
                &[("10.1.1.2", Some(true), None)],
            ),
            slice(
                "plain",
                "IPv4",
                &[("h2c", 9090)],
                &[("10.1.1.2", Some(true), None)],
            ),
        ];
        let m = model_from(&[sticky, none], &slices);
        let names: Vec<&str> = m.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["default/plain:8080"]);
    }
}
