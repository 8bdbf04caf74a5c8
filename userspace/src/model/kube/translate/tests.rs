//! `model_from` and `service_specs` on hand-made objects.

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

/// Two nodes' endpoints: a Local Service keeps this node's, ready first,
/// then this node's serving terminating ones; none here: no endpoint (its
/// connections keep kube-proxy's path, which drops them); no node name:
/// not balanced. A Cluster Service keeps all of them.
#[test]
fn internal_traffic_policy_local_keeps_this_nodes_endpoints() {
    let svc = |name: &str, policy: Option<&str>, ip: &str| {
        let mut s = service(name, true, ip, &[("h2c", 8080)]);
        if let Some(spec) = s.spec.as_mut() {
            spec.internal_traffic_policy = policy.map(str::to_string);
        }
        s
    };
    let on_nodes = |svc_name: &str, eps: &[(&str, &str, bool)]| {
        let mut s = slice(
            svc_name,
            "IPv4",
            &[("h2c", 9090)],
            &eps.iter()
                .map(|(a, _, ready)| (*a, Some(*ready), Some(!*ready)))
                .collect::<Vec<_>>(),
        );
        for (ep, (_, node, ready)) in s.endpoints.iter_mut().zip(eps) {
            ep.node_name = Some(node.to_string());
            // not ready: terminating, still passing its readiness probe
            if let Some(c) = ep.conditions.as_mut() {
                c.serving = Some(true);
                c.terminating = Some(!*ready);
            }
        }
        s
    };
    let two_nodes = [
        ("10.1.1.2", "node-a", true),
        ("10.1.1.3", "node-a", true),
        ("10.1.1.4", "node-b", true),
    ];
    let node_a = NodeInfo {
        name: Some("node-a".into()),
    };
    let endpoints = |m: &Model| -> Vec<Vec<SocketAddrV4>> {
        m.services.iter().map(|s| s.endpoints.clone()).collect()
    };
    let services = [
        svc("local", Some("Local"), "10.96.0.10"),
        svc("cluster", Some("Cluster"), "10.96.0.11"),
    ];
    let slices = [
        on_nodes("local", &two_nodes),
        on_nodes("cluster", &two_nodes),
    ];
    let m = model_on(&node_a, &services, &slices);
    assert_eq!(
        endpoints(&m),
        vec![
            addrs(&["10.1.1.2:9090", "10.1.1.3:9090", "10.1.1.4:9090"]),
            addrs(&["10.1.1.2:9090", "10.1.1.3:9090"]),
        ]
    );
    // this node's only endpoint terminating: it serves, node-b's ready one does not
    let terminating_here = [on_nodes(
        "local",
        &[("10.1.1.2", "node-a", false), ("10.1.1.4", "node-b", true)],
    )];
    let m = model_on(&node_a, &services[..1], &terminating_here);
    assert_eq!(endpoints(&m), vec![addrs(&["10.1.1.2:9090"])]);
    // none on this node
    let elsewhere = [on_nodes("local", &[("10.1.1.4", "node-b", true)])];
    let m = model_on(&node_a, &services[..1], &elsewhere);
    assert_eq!(endpoints(&m), vec![Vec::<SocketAddrV4>::new()]);
    // the node unknown: the Local Service is not balanced, the other is
    let m = model_on(&NodeInfo::default(), &services, &slices);
    let names: Vec<&str> = m.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["default/cluster:8080"]);
}

/// No appProtocol anywhere: every TCP port. Any port with one: only the
/// `kubernetes.io/h2c` and `grpc` ports.
#[test]
fn app_protocol_names_the_balanced_ports_once_any_port_has_one() {
    let ports = [
        ("grpc", 8080),
        ("h2c", 8081),
        ("web", 8082),
        ("ws", 8083),
        ("bare", 8084),
    ];
    let with = |name: &str, ip: &str, protos: [Option<&str>; 5]| {
        let mut s = service(name, true, ip, &ports);
        if let Some(spec) = s.spec.as_mut() {
            for (p, a) in spec.ports.iter_mut().flatten().zip(protos) {
                p.app_protocol = a.map(str::to_string);
            }
        }
        s
    };
    let services = [
        with(
            "named",
            "10.96.0.10",
            [
                Some("grpc"),
                Some("kubernetes.io/h2c"),
                Some("http"),
                Some("kubernetes.io/ws"),
                None,
            ],
        ),
        with("plain", "10.96.0.11", [None; 5]),
    ];
    let slices = [
        slice("named", "IPv4", &ports, &[("10.1.1.2", Some(true), None)]),
        slice("plain", "IPv4", &ports, &[("10.1.1.2", Some(true), None)]),
    ];
    let m = model_from(&services, &slices);
    let names: Vec<&str> = m.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "default/named:8080",
            "default/named:8081",
            "default/plain:8080",
            "default/plain:8081",
            "default/plain:8082",
            "default/plain:8083",
            "default/plain:8084",
        ]
    );
}
