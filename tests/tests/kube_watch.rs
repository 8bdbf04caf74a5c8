//! What the Kubernetes source watches and what it does when the API server
//! goes away, against the stand-in kube-apiserver (testbed/src/kube_api.rs),
//! which also plays the EndpointSlice controller's part with labels.
//!
//! * A Service labelled `rotor.dev/balance` after its slices exist: the
//!   controller copies the label onto them a moment later; meanwhile the
//!   agent knows a Service without endpoints and leaves its connections to
//!   kube-proxy. No request fails at any point.
//! * A labelled Service without a selector, whose slices someone else wrote
//!   without our label, is balanced; so is one added later.
//! * The API server stops: balancing goes on with the last state, `rotor
//!   status` says unreachable, `/readyz` stays 200; it comes back on the
//!   same port: synced, and a change made meanwhile is applied.

use rotor_testbed::wait_until;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rotor_testbed::agent::{agent_binary, http_get};
use rotor_testbed::kube_api::{endpoint_slice, service, EndpointState, Kind, KubeApi};
use rotor_testbed::{backend_addr, scaled, Agent, LoadSpec, TestBed, VIP};
use serde_json::Value;

const NS: &str = "default";
const HEALTH: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 15021);
const BALANCE: (&str, &str) = ("rotor.dev/balance", "round-robin");

/// A slice of Service `svc` with backends `ks` ready, as the EndpointSlice
/// controller writes it (the stand-in gives it the Service's labels).
fn slice(svc: &str, ks: &[usize]) -> Value {
    let eps: Vec<_> = ks
        .iter()
        .map(|k| (*backend_addr(*k).ip(), EndpointState::Ready))
        .collect();
    endpoint_slice(NS, &format!("{svc}-7xk2p"), svc, "h2c", VIP.port(), &eps)
}

fn addrs(ks: &[usize]) -> Option<Vec<String>> {
    Some(ks.iter().map(|k| backend_addr(*k).to_string()).collect())
}

fn diagnostics(bed: &mut TestBed, api: &KubeApi) -> String {
    let reqs = api.requests();
    let tail: Vec<&String> = reqs.iter().rev().take(12).collect();
    format!(
        "{}\nstand-in requests ({} in all, last first): {tail:#?}",
        bed.diagnostics(),
        reqs.len()
    )
}

fn start_agent(bed: &mut TestBed, api: &KubeApi, extra: &[&str]) {
    let kubeconfig = bed.topo.dir().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    bed.agent =
        Some(Agent::start_kubernetes(&bed.topo, &bed.cgroup, &kubeconfig, extra).expect("agent"));
}

fn rewrites(bed: &TestBed) -> u64 {
    bed.agent()
        .and_then(|a| a.kernel_counter("connect_rewrite"))
        .expect("connect_rewrite counter")
}

#[test]
fn a_label_added_later_is_balanced_once_the_slices_carry_it() {
    let mut bed = TestBed::new(3).expect("test bed");
    bed.topo.kube_proxy_dnat().expect("DNAT");
    let api = KubeApi::start_in_netns(bed.topo.node_ns()).expect("stand-in API server");
    // The controller's relabelling comes this long after the Service's.
    let lag = scaled(Duration::from_secs(4));
    api.set_controller_delay(lag);
    api.apply(Kind::Service, service(NS, "echo", &[], VIP, "h2c"))
        .expect("Service");
    api.apply(Kind::EndpointSlice, slice("echo", &[1, 2, 3]))
        .expect("EndpointSlice");
    start_agent(&mut bed, &api, &[]);
    assert_eq!(
        bed.balanced_endpoints(VIP),
        None,
        "balanced before the label"
    );

    let mut svc = api.get(Kind::Service, NS, "echo").expect("stored Service");
    svc["metadata"]["labels"][BALANCE.0] = BALANCE.1.into();
    let labelled_at = Instant::now();
    api.apply(Kind::Service, svc).expect("label");
    let known = wait_until(Duration::from_secs(2), || {
        bed.balanced_endpoints(VIP) == Some(Vec::new())
    });

    // New connections, a few at a time, from the label until the agent
    // balances: in the window they must take kube-proxy's path.
    let (mut in_window, mut failed, mut loads) = (0, 0, Vec::new());
    let balanced = loop {
        let empty_before = bed.balanced_endpoints(VIP) == Some(Vec::new());
        let rewrites_before = rewrites(&bed);
        let report = bed.load(&LoadSpec::whoami(2, 4, 40)).expect("load");
        let empty_after = bed.balanced_endpoints(VIP) == Some(Vec::new());
        let redirected = rewrites(&bed) - rewrites_before;
        failed += report.failed;
        if empty_before && empty_after {
            in_window += 1;
            loads.push((report.ok, report.failed, redirected));
        }
        if bed.balanced_endpoints(VIP) == addrs(&[1, 2, 3]) {
            break true;
        }
        if labelled_at.elapsed() > lag + scaled(Duration::from_secs(5)) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let diag = diagnostics(&mut bed, &api);
    assert!(
        known.is_some(),
        "the agent did not show the labelled Service without endpoints\n{diag}"
    );
    assert!(
        balanced,
        "the slices' endpoints not balanced {:?} after the label (controller lag {lag:?})\n{diag}",
        labelled_at.elapsed()
    );
    assert!(
        in_window >= 2,
        "only {in_window} loads ran while the Service had no endpoints\n{diag}"
    );
    assert_eq!(failed, 0, "requests failed: {loads:?}\n{diag}");
    assert!(
        loads.iter().all(|(ok, failed, redirected)| (*ok, *failed, *redirected) == (40, 0, 0)),
        "(ok, failed, connects sent to the agent) of the loads while the Service had no endpoints: {loads:?}\n{diag}"
    );
    if let Err(e) = bed.check_balanced(&["be1", "be2", "be3"]) {
        panic!("after the slices carry the label: {e:#}");
    }
}

#[test]
fn slices_of_a_service_without_selector_are_balanced_without_our_label() {
    let mut bed = TestBed::new(3).expect("test bed");
    let api = KubeApi::start_in_netns(bed.topo.node_ns()).expect("stand-in API server");
    let hand_made = |svc: &str, ks: &[usize]| {
        let mut s = slice(svc, ks);
        s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] =
            "staff.example.com".into();
        s
    };
    let selectorless = |name: &str, vip: SocketAddrV4| {
        let mut s = service(NS, name, &[BALANCE], vip, "h2c");
        if let Some(spec) = s["spec"].as_object_mut() {
            spec.remove("selector");
        }
        s
    };
    api.apply(Kind::Service, selectorless("db", VIP))
        .expect("Service");
    api.apply(Kind::EndpointSlice, hand_made("db", &[1, 2, 3]))
        .expect("hand-made slice");
    start_agent(&mut bed, &api, &[]);
    let eps = bed.balanced_endpoints(VIP);
    assert_eq!(eps, addrs(&[1, 2, 3]), "{}", diagnostics(&mut bed, &api));
    if let Err(e) = bed.check_balanced(&["be1", "be2", "be3"]) {
        panic!("{e:#}");
    }

    // A second one: the watch of such slices starts again with both names.
    let vip2 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 12), VIP.port());
    api.apply(Kind::Service, selectorless("cache", vip2))
        .expect("second Service");
    api.apply(Kind::EndpointSlice, hand_made("cache", &[2, 3]))
        .expect("its slice");
    let second = wait_until(Duration::from_secs(5), || {
        bed.balanced_endpoints(vip2) == addrs(&[2, 3])
    });
    // The first keeps its endpoints across the restart of the watch.
    let first = bed.balanced_endpoints(VIP);
    let report = bed
        .load(&LoadSpec {
            addr: vip2,
            ..LoadSpec::whoami(1, 8, 400)
        })
        .expect("load to the second");
    let diag = diagnostics(&mut bed, &api);
    assert!(
        second.is_some(),
        "the second Service's hand-made slice not balanced\n{diag}"
    );
    assert_eq!(first, addrs(&[1, 2, 3]), "{diag}");
    assert_eq!((report.ok, report.failed), (400, 0), "{report:?}\n{diag}");
    assert!(
        report.count("be2") > 100 && report.count("be3") > 100,
        "{report:?}\n{diag}"
    );
}

/// What `rotor status` prints.
fn rotor_status(bed: &TestBed) -> String {
    let agent = bed.agent().expect("agent");
    let cli = agent_binary().expect("binaries").with_file_name("rotor");
    let out = std::process::Command::new(&cli)
        .arg("--admin")
        .arg(agent.admin_socket())
        .arg("status")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", cli.display()));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn source_state(bed: &TestBed) -> Value {
    bed.agent()
        .and_then(|a| a.status())
        .map(|s| s["source"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn api_server_unreachable_keeps_the_last_state_and_catches_up() {
    let mut bed = TestBed::new(3).expect("test bed");
    let mut api = KubeApi::start_in_netns(bed.topo.node_ns()).expect("stand-in API server");
    api.apply(Kind::Service, service(NS, "echo", &[BALANCE], VIP, "h2c"))
        .expect("Service");
    api.apply(Kind::EndpointSlice, slice("echo", &[1, 2]))
        .expect("EndpointSlice");
    let health = HEALTH.to_string();
    start_agent(&mut bed, &api, &["--health-addr", &health]);
    assert_eq!(source_state(&bed)["state"], "synced");
    let node = bed.topo.node_ns().to_string();
    let probe = |path: &str| http_get(&node, HEALTH, path).expect("curl");

    // One connection runs throughout.
    let steady = LoadSpec {
        requests: None,
        duration: Some(scaled(Duration::from_secs(10)).as_secs_f64()),
        rate: Some(200.0),
        timeout: 30.0,
        ..LoadSpec::whoami(1, 4, 0)
    };
    let load = bed.spawn_load(&steady).expect("steady load");
    std::thread::sleep(scaled(Duration::from_millis(500)));
    api.pause();
    let unreachable = wait_until(Duration::from_secs(10), || {
        source_state(&bed)["state"] == "unreachable"
    });
    let state = source_state(&bed);
    let ready = probe("/readyz");
    let live = probe("/healthz");
    let text = rotor_status(&bed);
    // New connections while it is away: balanced over the last endpoints
    // (counted by the client: the steady load reaches the backends too).
    let away = bed
        .load(&LoadSpec::whoami(1, 8, 3000))
        .expect("load while away");
    // A change made meanwhile.
    api.apply(Kind::EndpointSlice, slice("echo", &[1, 2, 3]))
        .expect("be3 joins while the agent cannot see it");
    let diag = diagnostics(&mut bed, &api);
    assert!(
        unreachable.is_some(),
        "status did not say unreachable: {state}\n{diag}"
    );
    assert!(
        state["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{state}"
    );
    assert!(
        text.contains("SOURCE kubernetes: unreachable for"),
        "rotor status: {text}"
    );
    assert_eq!(ready.0, 200, "readiness while unreachable: {}", ready.1);
    assert_eq!(live.0, 200, "liveness while unreachable: {}", live.1);
    assert_eq!((away.ok, away.failed), (3000, 0), "{away:?}\n{diag}");
    assert!(
        (1350..=1650).contains(&away.count("be1")) && away.count("be3") == 0,
        "one connection while the API server is away, want be1 and be2 1500±150 each: {away:?}\n{diag}"
    );
    assert_eq!(bed.balanced_endpoints(VIP), addrs(&[1, 2]), "{diag}");

    api.resume().expect("the API server comes back");
    let synced = wait_until(Duration::from_secs(40), || {
        source_state(&bed)["state"] == "synced" && bed.balanced_endpoints(VIP) == addrs(&[1, 2, 3])
    });
    let report = load.finish().expect("steady load");
    let diag = diagnostics(&mut bed, &api);
    assert!(
        synced.is_some(),
        "not synced with the change made meanwhile: {} {:?}\n{diag}",
        source_state(&bed),
        bed.balanced_endpoints(VIP)
    );
    eprintln!("synced {synced:?} after the API server came back");
    assert_eq!(report.failed, 0, "{report:?}\n{diag}");
    assert!(report.ok > 0, "{report:?}");
    if let Err(e) = bed.check_balanced(&["be1", "be2", "be3"]) {
        panic!("after the API server came back: {e:#}");
    }
}
