//! What a Service's traffic fields make of its endpoints on this node:
//! `internalTrafficPolicy: Local` balances this node's endpoints only (the
//! EndpointSlice endpoints' `nodeName` against the agent's `--node-name`).

use rotor_testbed::wait_until;
use std::time::Duration;

use rotor_testbed::kube_api::{endpoint_slice, service, EndpointState, Kind, KubeApi};
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
    let kubeconfig = bed.topo.dir().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    bed.agent = Some(
        Agent::start_kubernetes(
            &bed.topo,
            &bed.cgroup,
            &kubeconfig,
            &["--node-name", "node-a"],
        )
        .expect("agent"),
    );

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
