//! IPv6 and dual-stack Services on a dual-stack test bed (ULA addresses in
//! the test's own namespaces: topology/ipv6.rs). A native IPv6 client
//! dialling [VIP6]:port is balanced per request over IPv6 endpoints, with
//! h2load and with grpcio; the ip6tables DNAT alone (kube-proxy's path)
//! sends its one connection to one backend. A dual-stack Service through
//! the stand-in API server is balanced on both ClusterIPs, each over its own
//! family's EndpointSlice. A dual-stack client dialling ::ffff:VIP still
//! is. getpeername() answers the address dialled.
//!
//! `ROTOR_TEST_NO_LISTEN6=1` starts the agent without `--listen6` (IPv6
//! Services then keep their original path): the native IPv6 tests fail.

use std::time::Duration;

use rotor_testbed::kube_api::{endpoint_slice, service, EndpointState, Kind, KubeApi};
use rotor_testbed::tools::h2load;
use rotor_testbed::{
    backend_addr, backend_addr6, uneven_spread, wait_until, Agent, Child, TestBed, VIP, VIP6,
};
use rotor_tests::peers::{self, n, python_script, run_json, spawn_in_backend, GRPC_PORT};
use rotor_tests::probe;
use serde_json::Value;

const BE: [&str; 3] = ["be1", "be2", "be3"];
const REQUESTS: u64 = 3000;

/// The static configuration: `echo` at the IPv4 VIP over the backends'
/// IPv4 addresses, `echo6` at [`VIP6`] over their IPv6 addresses, both on
/// `port` at the backends.
fn both_families(port: u16) -> String {
    let v4: Vec<String> = (1..=3)
        .map(|k| format!("{}:{port}", backend_addr(k).ip()))
        .collect();
    let v6: Vec<String> = (1..=3)
        .map(|k| format!("\"[{}]:{port}\"", backend_addr6(k).ip()))
        .collect();
    format!(
        "services:\n  - name: echo\n    vip: {VIP}\n    endpoints: [{}]\n  - name: echo6\n    vip: \"{VIP6}\"\n    endpoints: [{}]\n",
        v4.join(", "),
        v6.join(", ")
    )
}

fn bed_with_agent(port: u16) -> TestBed {
    let mut bed = TestBed::dual_stack(3).expect("dual-stack test bed");
    bed.agent = Some(
        Agent::start_yaml(&bed.topo, &bed.cgroup, &both_families(port), &[]).expect("rotor-agent"),
    );
    bed
}

/// h2load over one connection, 8 streams at a time, to `url`: every
/// request answered, and the backends' counts since.
fn h2load_served(bed: &mut TestBed, url: &str) -> Vec<(String, u64)> {
    let before = bed.topo.request_counts().expect("counts");
    let n = REQUESTS.to_string();
    let res = h2load(
        &bed.topo,
        Some(&bed.cgroup),
        &["-c", "1", "-m", "8", "-n", &n, url],
    );
    let (s, out) = match res {
        Ok(r) => r,
        Err(e) => panic!("h2load {url}: {e:#}\n{}", probe::report(bed)),
    };
    if (s.succeeded, s.failed, s.errored) != (REQUESTS, 0, 0) {
        panic!(
            "h2load {url}: want {REQUESTS} answered: {s:?}\nstderr: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            probe::report(bed)
        );
    }
    bed.served_since(&before).expect("served")
}

fn assert_spread(bed: &mut TestBed, url: &str) {
    let served = h2load_served(bed, url);
    let counted = served.iter().map(|(k, v)| (k.as_str(), *v));
    if let Some(e) = uneven_spread(counted, &BE, REQUESTS, 100) {
        panic!(
            "{url}: not balanced per request: {e}\n{}",
            probe::report(bed)
        );
    }
}

fn url(addr: impl std::fmt::Display) -> String {
    format!("http://{addr}/whoami")
}

/// The ip6tables DNAT alone (no agent): the one connection goes to one
/// backend. With the agent: the same client, the same URL, every request
/// answered and spread evenly over the three IPv6 endpoints.
#[test]
fn native_ipv6_h2load_is_balanced_per_request() {
    let mut bed = TestBed::dual_stack(3).expect("dual-stack test bed");
    bed.topo.kube_proxy_dnat6().expect("ip6tables DNAT");
    let served = h2load_served(&mut bed, &url(VIP6));
    let hit: Vec<_> = served.iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(hit.len(), 1, "the DNAT alone: one backend: {served:?}");

    bed.agent = Some(
        Agent::start_yaml(&bed.topo, &bed.cgroup, &both_families(8080), &[]).expect("rotor-agent"),
    );
    let eps = bed.balanced_endpoints(VIP6);
    assert_eq!(
        eps.as_ref().map(Vec::len),
        Some(3),
        "echo6 not balanced: {eps:?}\n{}",
        bed.diagnostics()
    );
    assert_spread(&mut bed, &url(VIP6));
    let rewrites = bed
        .agent()
        .and_then(|a| a.kernel_counter("connect_rewrite"));
    assert!(
        rewrites.as_ref().is_ok_and(|n| *n >= 1),
        "connect6 redirected nothing: {rewrites:?}"
    );
}

/// grpcio (gRPC's C core) dialling [VIP6] on one channel: every unary
/// call answered, and the calls spread over the three IPv6 endpoints.
#[test]
fn grpc_over_native_ipv6_is_balanced_per_call() {
    peers::python_has(&["grpc", "grpc_tools"]).expect("grpcio");
    let mut bed = bed_with_agent(GRPC_PORT);
    let _servers: Vec<Child> = (1..=3)
        .map(|k| {
            let ns = bed.topo.backend(k).expect("backend").netns().to_string();
            let listen = format!("[::]:{GRPC_PORT}");
            let cmd = python_script(
                &ns,
                None,
                "grpc_peer.py",
                &["server", "--name", &format!("be{k}"), "--listen", &listen],
            );
            spawn_in_backend(&bed.topo, &format!("grpc6-be{k}"), cmd).expect("gRPC server")
        })
        .collect();
    let target = format!("http://{VIP6}");
    let cmd = python_script(
        bed.topo.client_ns(),
        Some(bed.cgroup.path()),
        "grpc_peer.py",
        &[
            "client",
            "--target",
            &target,
            "--unary",
            "300",
            "--concurrency",
            "4",
        ],
    );
    let r: Value = run_json(cmd, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("grpcio client: {e:#}\n{}", probe::report(&mut bed)));
    let per: Vec<u64> = (1..=3)
        .map(|k| n(&r["unary"]["backends"], &format!("be{k}")))
        .collect();
    assert!(
        r["connect_error"].is_null()
            && n(&r, "unary.ok") == 300
            && n(&r, "unary.failed") == 0
            && per.iter().all(|c| *c >= 50),
        "grpcio over IPv6: want 300 calls ok, each backend >= 50; per backend {per:?}; report {r}\n{}",
        probe::report(&mut bed)
    );
}

/// A dual-stack Service (clusterIPs IPv4 then IPv6) with an IPv4 and an
/// IPv6 EndpointSlice, through the stand-in API server: both ClusterIPs
/// balanced, each over its own family's endpoints.
#[test]
fn dual_stack_service_from_kubernetes_balances_both_families() {
    let mut bed = TestBed::dual_stack(3).expect("dual-stack test bed");
    let api = KubeApi::start_in_netns(bed.topo.node_ns()).expect("stand-in API server");
    let mut svc = service(
        "default",
        "echo",
        &[("rotor.dev/balance", "round-robin")],
        VIP,
        "h2c",
    );
    svc["spec"]["clusterIPs"] = vec![VIP.ip().to_string(), VIP6.ip().to_string()].into();
    svc["spec"]["ipFamilies"] = vec!["IPv4", "IPv6"].into();
    svc["spec"]["ipFamilyPolicy"] = "PreferDualStack".into();
    api.apply(Kind::Service, svc).expect("Service");
    let eps: Vec<_> = (1..=3)
        .map(|k| (*backend_addr(k).ip(), EndpointState::Ready))
        .collect();
    let v4 = endpoint_slice("default", "echo-v4", "echo", "h2c", VIP.port(), &eps);
    let mut v6 = endpoint_slice("default", "echo-v6", "echo", "h2c", VIP.port(), &eps);
    v6["addressType"] = "IPv6".into();
    for k in 1..=3 {
        v6["endpoints"][k - 1]["addresses"] = vec![backend_addr6(k).ip().to_string()].into();
    }
    api.apply(Kind::EndpointSlice, v4).expect("IPv4 slice");
    api.apply(Kind::EndpointSlice, v6).expect("IPv6 slice");
    let kubeconfig = bed.topo.dir().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    bed.agent =
        Some(Agent::start_kubernetes(&bed.topo, &bed.cgroup, &kubeconfig, &[]).expect("agent"));
    let both = wait_until(Duration::from_secs(5), || {
        bed.balanced_endpoints(VIP).is_some_and(|e| e.len() == 3)
            && bed.balanced_endpoints(VIP6).is_some_and(|e| e.len() == 3)
    });
    assert!(
        both.is_some(),
        "both families not balanced: IPv4 {:?}, IPv6 {:?}\n{}",
        bed.balanced_endpoints(VIP),
        bed.balanced_endpoints(VIP6),
        bed.diagnostics()
    );
    let six = bed.balanced_endpoints(VIP6).unwrap_or_default();
    assert!(
        six.iter().all(|e| e.starts_with("[fd00:1:")),
        "the IPv6 ClusterIP's endpoints are not the IPv6 slice's: {six:?}"
    );
    assert_spread(&mut bed, &url(VIP));
    assert_spread(&mut bed, &url(VIP6));
}

/// A dual-stack client dialling the IPv4 Service as ::ffff:VIP (an IPv6
/// socket carrying IPv4) is still balanced, beside the IPv6 Service.
#[test]
fn ipv4_mapped_clients_are_still_balanced() {
    let mut bed = bed_with_agent(8080);
    assert_spread(
        &mut bed,
        &url(format!("[::ffff:{}]:{}", VIP.ip(), VIP.port())),
    );
}

/// getpeername() on a balanced socket names the Service address dialled,
/// not the agent: for [VIP6] and for ::ffff:VIP. Nothing else answers
/// there (no DNAT): a connection at all means the agent took it.
#[test]
fn getpeername_answers_the_dialled_address() {
    let mut bed = bed_with_agent(8080);
    let code = concat!(
        "import socket, sys\n",
        "for host in sys.argv[1:]:\n",
        "    s = socket.create_connection((host, 8080), timeout=5)\n",
        "    print(host, s.getpeername()[0], s.getpeername()[1])\n",
        "    s.close()\n",
    );
    let mapped = format!("::ffff:{}", VIP.ip());
    let vip6 = VIP6.ip().to_string();
    let mut cmd = peers::client_command(&bed.topo, Some(&bed.cgroup), peers::python());
    cmd.args(["-c", code, vip6.as_str(), mapped.as_str()]);
    let out =
        rotor_testbed::util::run_with_timeout(&mut cmd, Duration::from_secs(30)).expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text,
        format!("{vip6} {vip6} 8080\n{mapped} {mapped} 8080\n"),
        "stderr: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        probe::report(&mut bed)
    );
}
