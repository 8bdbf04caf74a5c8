//! What a Service's traffic fields make of its endpoints on this node:
//! `internalTrafficPolicy: Local` balances this node's endpoints only (the
//! EndpointSlice endpoints' `nodeName` against the agent's `--node-name`);
//! `trafficDistribution: PreferClose` balances the endpoints the slices hint
//! for this node's zone (its Node's `topology.kubernetes.io/zone`), all or
//! nothing as kube-proxy reads hints.

use rotor_testbed::wait_until;
use std::time::Duration;

use rotor_testbed::kube_api::{endpoint_slice, node, service, EndpointState, Kind, KubeApi};
use rotor_testbed::{backend_addr, Agent, LoadSpec, TestBed, VIP};
use serde_json::Value;

fn echo(traffic_policy: &str) -> Value {
    let mut svc = service(
        "default",
        "echo",
        &[("rotor.dev/balance", "round-robin")],
        VIP,
        "h2c",
    );
    svc["spec"]["internalTrafficPolicy"] = traffic_policy.into();
    svc
}

/// be1..be3 in one slice, on these nodes.
fn slice_on(nodes: [&str; 3]) -> Value {
    let eps: Vec<_> = (1..=3)
        .map(|k| (*backend_addr(k).ip(), EndpointState::Ready))
        .collect();
    let mut slice = endpoint_slice("default", "echo-7xk2p", "echo", "h2c", VIP.port(), &eps);
    for (i, node) in nodes.iter().enumerate() {
        slice["endpoints"][i]["nodeName"] = (*node).into();
    }
    slice
}

/// The agent of node-a, reading the stand-in.
fn start_agent_on_node_a(bed: &mut TestBed, api: &KubeApi) {
    let kubeconfig = bed.topo.dir().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    bed.agent = Some(
        Agent::start_kubernetes(
            &bed.topo,
            &bed.cgroup,
            &kubeconfig,
            &["--node-name", "node-a"],
        )
        .expect("agent of node-a"),
    );
}

/// Two nodes' worth of endpoints: be1 and be2 on node-a (the agent's), be3
/// on node-b. Local: be1 and be2 share the calls, be3 gets none. The same
/// Service turned Cluster: all three. Local with every endpoint on node-b:
/// the Service has no endpoint here and its connections take kube-proxy's
/// path (which, on a real node, drops them: kube-proxy's rule for a Local
/// Service without a local endpoint; the test bed's DNAT stands in for it
/// and sends one connection to one backend).
#[test]
fn internal_traffic_policy_local_balances_this_nodes_endpoints_only() {
    let mut bed = TestBed::new(3).expect("test bed");
    bed.topo.kube_proxy_dnat().expect("kube-proxy-style DNAT");
    let api = KubeApi::start_in_netns(bed.topo.node_ns()).expect("stand-in API server");
    api.apply(Kind::Service, echo("Local")).expect("Service");
    api.apply(
        Kind::EndpointSlice,
        slice_on(["node-a", "node-a", "node-b"]),
    )
    .expect("EndpointSlice");
    start_agent_on_node_a(&mut bed, &api);

    assert_eq!(
        bed.balanced_endpoints(VIP).map(|e| e.len()),
        Some(2),
        "{}",
        bed.diagnostics()
    );
    bed.check_balanced(&["be1", "be2"])
        .expect("Local: this node's be1 and be2 only");

    api.apply(Kind::Service, echo("Cluster")).expect("Cluster");
    assert!(
        wait_until(Duration::from_secs(5), || bed
            .balanced_endpoints(VIP)
            .is_some_and(|e| e.len() == 3))
        .is_some(),
        "Cluster: not all three\n{}",
        bed.diagnostics()
    );
    bed.check_balanced(&["be1", "be2", "be3"])
        .expect("Cluster: every node's endpoints");

    api.apply(Kind::Service, echo("Local")).expect("Local");
    api.apply(
        Kind::EndpointSlice,
        slice_on(["node-b", "node-b", "node-b"]),
    )
    .expect("all on node-b");
    assert!(
        wait_until(Duration::from_secs(5), || bed
            .balanced_endpoints(VIP)
            .is_none_or(|e| e.is_empty()))
        .is_some(),
        "Local with no endpoint here still has endpoints\n{}",
        bed.diagnostics()
    );
    let before = bed.topo.request_counts().expect("counts");
    let report = bed.load(&LoadSpec::whoami(1, 8, 300)).expect("load");
    assert_eq!((report.ok, report.failed), (300, 0), "{report:?}");
    let served = bed.served_since(&before).expect("served");
    let hit = served.iter().filter(|(_, n)| *n > 0).count();
    assert_eq!(
        hit, 1,
        "not kube-proxy's path (one connection, one backend): {served:?}"
    );
}

const ZONE: &str = "topology.kubernetes.io/zone";

/// be1..be3 in one slice as the EndpointSlice controller writes it for a
/// PreferClose Service: each endpoint in its zone, hinted for it (None:
/// that endpoint has no hint, as in a hand-made slice or mid-rewrite).
fn slice_in_zones(zones: [&str; 3], hinted: [bool; 3]) -> Value {
    let mut slice = slice_on(["node-a", "node-b", "node-c"]);
    for (i, zone) in zones.iter().enumerate() {
        slice["endpoints"][i]["zone"] = (*zone).into();
        if hinted[i] {
            slice["endpoints"][i]["hints"] = serde_json::json!({"forZones": [{"name": zone}]});
        }
    }
    slice
}

fn wait_for_endpoints(bed: &mut TestBed, n: usize, why: &str) {
    assert!(
        wait_until(Duration::from_secs(5), || bed
            .balanced_endpoints(VIP)
            .is_some_and(|e| e.len() == n))
        .is_some(),
        "{why}: not {n} endpoints\n{}",
        bed.diagnostics()
    );
}

/// The agent on node-a in zone-a; be1 in zone-a, be2 and be3 in zone-b, each
/// hinted for its zone. Calls go to be1 only; the Node relabelled zone-b
/// moves them to be2 and be3 on a live agent; one endpoint without a hint
/// spreads them over all three (kube-proxy's all-or-nothing rule), as does
/// a zone no endpoint is hinted for. With the nodes forbidden by RBAC the
/// agent still starts, ready, and balances over every endpoint.
#[test]
fn prefer_close_balances_the_endpoints_hinted_for_this_zone() {
    let mut bed = TestBed::new(3).expect("test bed");
    bed.topo.kube_proxy_dnat().expect("kube-proxy-style DNAT");
    let api = KubeApi::start_in_netns(bed.topo.node_ns()).expect("stand-in API server");
    let mut svc = echo("Cluster");
    svc["spec"]["trafficDistribution"] = "PreferClose".into();
    api.apply(Kind::Service, svc).expect("Service");
    let zones = ["zone-a", "zone-b", "zone-b"];
    api.apply(Kind::EndpointSlice, slice_in_zones(zones, [true; 3]))
        .expect("EndpointSlice");
    api.apply(Kind::Node, node("node-a", &[(ZONE, "zone-a")]))
        .expect("Node");
    api.apply(Kind::Node, node("node-b", &[(ZONE, "zone-b")]))
        .expect("another Node");
    start_agent_on_node_a(&mut bed, &api);
    let asked = api.requests();
    assert!(
        asked.iter().any(|r| r.contains("/api/v1/nodes?")
            && (r.contains("metadata.name%3Dnode-a") || r.contains("metadata.name=node-a"))),
        "the agent did not read its own Node: {asked:?}"
    );
    wait_for_endpoints(&mut bed, 1, "zone-a");
    bed.check_balanced(&["be1"]).expect("zone-a: be1 only");

    api.apply(Kind::Node, node("node-a", &[(ZONE, "zone-b")]))
        .expect("relabelled");
    wait_for_endpoints(&mut bed, 2, "zone-b");
    bed.check_balanced(&["be2", "be3"])
        .expect("zone-b: be2 and be3");

    api.apply(
        Kind::EndpointSlice,
        slice_in_zones(zones, [true, true, false]),
    )
    .expect("be3 without a hint");
    wait_for_endpoints(&mut bed, 3, "one endpoint unhinted");
    bed.check_balanced(&["be1", "be2", "be3"])
        .expect("a missing hint: every endpoint");

    api.apply(Kind::EndpointSlice, slice_in_zones(zones, [true; 3]))
        .expect("hinted again");
    wait_for_endpoints(&mut bed, 2, "hinted again");
    api.apply(Kind::Node, node("node-a", &[(ZONE, "zone-c")]))
        .expect("a zone without endpoints");
    wait_for_endpoints(&mut bed, 3, "no endpoint for zone-c");
    bed.check_balanced(&["be1", "be2", "be3"])
        .expect("no endpoint hinted here: every endpoint");

    // An agent whose role cannot read Nodes (a ClusterRole from before
    // this watch): ready, balancing without topology.
    bed.agent = None;
    api.forbid(Kind::Node);
    api.apply(Kind::Node, node("node-a", &[(ZONE, "zone-a")]))
        .expect("zone-a again");
    start_agent_on_node_a(&mut bed, &api);
    wait_for_endpoints(&mut bed, 3, "nodes forbidden");
    bed.check_balanced(&["be1", "be2", "be3"])
        .expect("nodes forbidden: every endpoint");
}
