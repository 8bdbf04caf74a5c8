//! The Kubernetes source: the agent runs with `--source kubernetes` against a
//! stand-in kube-apiserver (testbed/src/kube_api.rs) listening on 127.0.0.1 in
//! the node namespace; the test changes the Service and its EndpointSlice
//! there and watches the traffic follow.

use rotor_testbed::wait_until;
use std::net::SocketAddrV4;
use std::time::Duration;

use rotor_testbed::kube_api::{endpoint_slice, service, EndpointState, Kind, KubeApi};
use rotor_testbed::{backend_addr, scaled, Agent, LoadSpec, TestBed, VIP};
use serde_json::Value;

const NS: &str = "default";
const SLICE: &str = "echo-7xk2p";

/// The slice of Service `echo` with backends `k` in these states.
fn slice(backends: &[(usize, EndpointState)]) -> Value {
    let eps: Vec<_> = backends
        .iter()
        .map(|(k, s)| (*backend_addr(*k).ip(), *s))
        .collect();
    endpoint_slice(NS, SLICE, "echo", "h2c", VIP.port(), &eps)
}

fn ready(ks: &[usize]) -> Vec<(usize, EndpointState)> {
    ks.iter().map(|k| (*k, EndpointState::Ready)).collect()
}

/// What the agent and the stand-in say, for assertion messages.
fn diagnostics(bed: &mut TestBed, api: &KubeApi) -> String {
    let reqs = api.requests();
    let tail: Vec<&String> = reqs.iter().rev().take(12).collect();
    format!(
        "{}\nstand-in requests ({} in all, last first): {tail:#?}",
        bed.diagnostics(),
        reqs.len()
    )
}

fn requests(bed: &TestBed, k: usize) -> u64 {
    bed.topo
        .backend(k)
        .and_then(|b| b.requests())
        .unwrap_or_else(|e| panic!("be{k} request count: {e:#}"))
}

#[test]
fn endpoint_slices_drive_the_balancing() {
    let mut bed = TestBed::new(3).expect("test bed");
    // kube-proxy's DNAT, as on a node: what a Service without the label goes through.
    bed.topo.kube_proxy_dnat().expect("DNAT");
    // Declared after `bed`: stops first.
    let api = KubeApi::start_in_netns(bed.topo.node_ns()).expect("stand-in API server");
    api.apply(
        Kind::Service,
        service(
            NS,
            "echo",
            &[("rotor.dev/balance", "round-robin")],
            VIP,
            "h2c",
        ),
    )
    .expect("Service");
    api.apply(
        Kind::Service,
        service(
            NS,
            "other",
            &[],
            SocketAddrV4::new([10, 96, 0, 11].into(), 8080),
            "h2c",
        ),
    )
    .expect("unlabelled Service");
    api.apply(Kind::EndpointSlice, slice(&ready(&[1, 2, 3])))
        .expect("EndpointSlice");
    let kubeconfig = bed.topo.dir().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    bed.agent =
        Some(Agent::start_kubernetes(&bed.topo, &bed.cgroup, &kubeconfig, &[]).expect("agent"));
    let eps = bed.balanced_endpoints(VIP);
    let want: Vec<String> = (1..=3).map(|k| backend_addr(k).to_string()).collect();
    assert_eq!(
        eps.as_ref(),
        Some(&want),
        "agent's endpoints at ready\n{}",
        diagnostics(&mut bed, &api)
    );

    // 1. One connection's 3000 requests spread evenly over the slice's endpoints.
    let before = bed.topo.request_counts().expect("counts");
    let report = bed.load(&LoadSpec::whoami(1, 8, 3000)).expect("load");
    let served = bed.served_since(&before).expect("counts");
    let diag = diagnostics(&mut bed, &api);
    assert_eq!((report.ok, report.failed), (3000, 0), "{report:?}\n{diag}");
    for (name, n) in &served {
        assert!(
            (900..=1100).contains(n),
            "{name} served {n}, want 1000±10%: {served:?}\n{diag}"
        );
        assert_eq!(
            report.count(name),
            *n,
            "{name}: client and backend disagree\n{diag}"
        );
    }

    // 2. A 4th endpoint joins the slice (watch MODIFIED): the live connection uses it within 1 s.
    // be4 is built before the load (outside the slice), so that the load
    // still runs when it joins: under QEMU building it outlasted the load.
    assert_eq!(bed.topo.add_backend().expect("be4"), 4);
    let steady = LoadSpec {
        requests: None,
        duration: Some(scaled(Duration::from_secs(6)).as_secs_f64()),
        rate: Some(500.0),
        timeout: 30.0,
        ..LoadSpec::whoami(1, 4, 0)
    };
    let load = bed.spawn_load(&steady).expect("steady load");
    std::thread::sleep(scaled(Duration::from_millis(1500)));
    api.apply(Kind::EndpointSlice, slice(&ready(&[1, 2, 3, 4])))
        .expect("slice with be4");
    let be4_first = wait_until(Duration::from_secs(3), || requests(&bed, 4) > 0);

    // 3. be1 turns not ready: no new streams go to it.
    let mut states = ready(&[1, 2, 3, 4]);
    states[0].1 = EndpointState::NotReady;
    api.apply(Kind::EndpointSlice, slice(&states))
        .expect("be1 not ready");
    let be1_marked = requests(&bed, 1);
    std::thread::sleep(scaled(Duration::from_secs(1)));
    let be1_settled = requests(&bed, 1);
    let report = load.finish().expect("steady load result");
    let be1_end = requests(&bed, 1);
    let diag = diagnostics(&mut bed, &api);
    let be4_first = be4_first.unwrap_or_else(|| {
        panic!(
            "be4 got no stream within {:?} of the slice change: {report:?}\n{diag}",
            scaled(Duration::from_secs(3))
        )
    });
    assert!(
        be4_first <= scaled(Duration::from_secs(1)),
        "be4's first stream came {be4_first:?} after the slice change\n{diag}"
    );
    assert_eq!(report.failed, 0, "{report:?}\n{diag}");
    assert!(report.count("be4") > 0, "{report:?}\n{diag}");
    assert!(
        be1_marked > 0,
        "be1 had no streams before it turned not ready\n{diag}"
    );
    assert_eq!(be1_end, be1_settled, "be1 still got streams a second after it turned not ready ({be1_marked} when marked)\n{diag}");
    assert!(
        report.count("be2") > 0 && report.count("be3") > 0,
        "{report:?}\n{diag}"
    );

    // 4. The label goes: the agent drops the Service (the watch sends DELETED),
    //    and new connections go through kube-proxy's DNAT, not the agent.
    let mut svc = api.get(Kind::Service, NS, "echo").expect("stored Service");
    if let Some(labels) = svc["metadata"]["labels"].as_object_mut() {
        labels.remove("rotor.dev/balance");
    }
    api.apply(Kind::Service, svc).expect("unlabel");
    let gone = wait_until(Duration::from_secs(2), || {
        bed.balanced_endpoints(VIP).is_none()
    });
    let agent = bed.agent().expect("agent");
    let rewrites = agent.kernel_counter("connect_rewrite").expect("counter");
    let report = bed
        .load(&LoadSpec::whoami(1, 8, 300))
        .expect("load after unlabel");
    let rewrites_after = bed
        .agent()
        .expect("agent")
        .kernel_counter("connect_rewrite")
        .expect("counter");
    let diag = diagnostics(&mut bed, &api);
    assert!(
        gone.is_some(),
        "the agent still balances the Service 2 s after its label went\n{diag}"
    );
    assert_eq!((report.ok, report.failed), (300, 0), "{report:?}\n{diag}");
    assert_eq!(
        rewrites_after, rewrites,
        "a connect to the VIP was still sent to the agent\n{diag}"
    );
    assert_eq!(
        report.by_body.len(),
        1,
        "one connection through the DNAT reaches one backend: {report:?}\n{diag}"
    );
    assert!(
        api.watches(Kind::Service) >= 1 && api.watches(Kind::EndpointSlice) >= 1,
        "{diag}"
    );
}

#[test]
fn ended_and_expired_watches_resume_without_losing_a_change() {
    let mut bed = TestBed::new(3).expect("test bed");
    let api = KubeApi::start_in_netns(bed.topo.node_ns()).expect("stand-in API server");
    // The real server ends a watch after timeoutSeconds (kube-rs asks 290 s): here after 1 s.
    api.set_watch_limit(Duration::from_secs(1));
    api.apply(
        Kind::Service,
        service(
            NS,
            "echo",
            &[("rotor.dev/balance", "round-robin")],
            VIP,
            "h2c",
        ),
    )
    .expect("Service");
    api.apply(Kind::EndpointSlice, slice(&ready(&[1, 2])))
        .expect("EndpointSlice");
    let kubeconfig = bed.topo.dir().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    bed.agent =
        Some(Agent::start_kubernetes(&bed.topo, &bed.cgroup, &kubeconfig, &[]).expect("agent"));
    let addrs = |ks: &[usize]| -> Option<Vec<String>> {
        Some(ks.iter().map(|k| backend_addr(*k).to_string()).collect())
    };

    std::thread::sleep(scaled(Duration::from_millis(2500)));
    let rewatched = api.watches(Kind::Service) >= 3 && api.watches(Kind::EndpointSlice) >= 3;
    assert!(
        rewatched,
        "watches were not resumed after they ended\n{}",
        diagnostics(&mut bed, &api)
    );
    api.apply(Kind::EndpointSlice, slice(&ready(&[1, 2, 3])))
        .expect("be3 joins");
    let joined = wait_until(Duration::from_secs(3), || {
        bed.balanced_endpoints(VIP) == addrs(&[1, 2, 3])
    });
    assert!(
        joined.is_some(),
        "be3 not balanced 3 s after it joined\n{}",
        diagnostics(&mut bed, &api)
    );

    // A change the watches miss, behind a compaction: resuming gets 410 Gone,
    // and kube-rs lists again.
    let lists_before = list_requests(&api);
    api.apply_behind_compaction(Kind::EndpointSlice, slice(&ready(&[2, 3])))
        .expect("be1 leaves");
    let relisted = wait_until(Duration::from_secs(8), || {
        bed.balanced_endpoints(VIP) == addrs(&[2, 3])
    });
    let diag = diagnostics(&mut bed, &api);
    assert!(
        relisted.is_some(),
        "be1 still balanced 8 s after a compacted change\n{diag}"
    );
    assert!(
        list_requests(&api) > lists_before,
        "no new list after 410 Gone\n{diag}"
    );
    eprintln!("relisted {relisted:?} after the compacted change");

    let before = bed.topo.request_counts().expect("counts");
    let report = bed.load(&LoadSpec::whoami(1, 8, 300)).expect("load");
    let served = bed.served_since(&before).expect("counts");
    let diag = diagnostics(&mut bed, &api);
    assert_eq!((report.ok, report.failed), (300, 0), "{report:?}\n{diag}");
    assert_eq!(report.count("be1"), 0, "{served:?}\n{diag}");
    assert!(
        (120..=180).contains(&report.count("be2")),
        "{served:?}\n{diag}"
    );
}

/// List (not watch) requests the stand-in has served.
fn list_requests(api: &KubeApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| !r.contains("watch=true"))
        .count()
}

/// An HPA scales a labelled Service from 2 pods to 20, more than the 16
/// upstreams a connection has, while one long-lived connection runs: every
/// new pod gets streams from it within seconds, and no request fails.
#[test]
fn scale_up_past_sixteen_pods_reaches_every_pod() {
    const PODS: usize = 20;
    let mut bed = TestBed::new(PODS).expect("test bed");
    let api = KubeApi::start_in_netns(bed.topo.node_ns()).expect("stand-in API server");
    api.apply(
        Kind::Service,
        service(
            NS,
            "echo",
            &[("rotor.dev/balance", "round-robin")],
            VIP,
            "h2c",
        ),
    )
    .expect("Service");
    api.apply(Kind::EndpointSlice, slice(&ready(&[1, 2])))
        .expect("EndpointSlice");
    let kubeconfig = bed.topo.dir().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    bed.agent =
        Some(Agent::start_kubernetes(&bed.topo, &bed.cgroup, &kubeconfig, &[]).expect("agent"));

    let spec = LoadSpec {
        requests: None,
        duration: Some(scaled(Duration::from_secs(9)).as_secs_f64()),
        rate: Some(500.0),
        timeout: 30.0,
        ..LoadSpec::whoami(1, 4, 0)
    };
    let load = bed.spawn_load(&spec).expect("load");
    std::thread::sleep(scaled(Duration::from_millis(1500)));
    let all: Vec<usize> = (1..=PODS).collect();
    api.apply(Kind::EndpointSlice, slice(&ready(&all)))
        .expect("scaled EndpointSlice");
    let report = load.finish().expect("load report");
    let diag = diagnostics(&mut bed, &api);
    assert_eq!(report.failed, 0, "{report:?}\n{diag}");
    let missing: Vec<usize> = all
        .iter()
        .copied()
        .filter(|k| report.count(&format!("be{k}")) == 0)
        .collect();
    assert!(
        missing.is_empty(),
        "pods that got no stream after the scale-up: {missing:?}\n{report:?}\n{diag}"
    );
}
