//! `/healthz` and `/readyz` (`--health-addr`), as the kubelet sees them: an
//! agent whose API server is slow at start waits, alive and not ready, past
//! the 30 s after which it used to exit; once the lists come it is ready
//! and balances.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rotor_testbed::agent::http_get;
use rotor_testbed::kube_api::{endpoint_slice, service, EndpointState, Kind, KubeApi};
use rotor_testbed::{backend_addr, Agent, TestBed, VIP};

const HEALTH: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 15021);
const BACKENDS: [&str; 3] = ["be1", "be2", "be3"];
/// Longer than the 30 s the agent gave the API server before it exited.
const SLOW_API: Duration = Duration::from_secs(35);

#[test]
fn not_ready_while_the_api_server_is_slow_then_ready_and_balancing() {
    let mut bed = TestBed::new(3).expect("test bed");
    let api = KubeApi::start_in_netns(bed.topo.node_ns()).expect("stand-in API server");
    api.apply(
        Kind::Service,
        service(
            "default",
            "echo",
            &[("rotor.dev/balance", "round-robin")],
            VIP,
            "h2c",
        ),
    )
    .expect("Service");
    let eps: Vec<_> = (1..=3)
        .map(|k| (*backend_addr(k).ip(), EndpointState::Ready))
        .collect();
    api.apply(
        Kind::EndpointSlice,
        endpoint_slice("default", "echo-x1", "echo", "h2c", VIP.port(), &eps),
    )
    .expect("EndpointSlice");
    let kubeconfig = bed.topo.dir().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    api.hold_lists(true);

    let health = HEALTH.to_string();
    let mut agent = Agent::launch_kubernetes(
        &bed.topo,
        &bed.cgroup,
        &kubeconfig,
        &["--health-addr", &health],
    )
    .expect("agent");
    let node = bed.topo.node_ns().to_string();
    let get = |path: &str| http_get(&node, HEALTH, path).expect("curl");
    let start = Instant::now();
    let mut looked = 0;
    // When the probes last answered: past the 30 s at which the agent used
    // to exit. How often they answered depends on how fast curl runs here.
    let mut last_answer = Duration::ZERO;
    while start.elapsed() < SLOW_API {
        if let Err(e) = agent.check_alive() {
            panic!(
                "the agent exited while the API server was slow ({:?} in): {e:#}",
                start.elapsed()
            );
        }
        let (live, why) = get("/healthz");
        let (ready, waiting) = get("/readyz");
        // The listener comes up a moment after the process.
        if live != 0 {
            assert_eq!(live, 200, "alive while waiting: {why}");
            assert_eq!(ready, 503, "ready without the lists: {waiting}");
            assert!(waiting.contains("Kubernetes"), "{waiting}");
            looked += 1;
            last_answer = start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        looked >= 5 && last_answer > Duration::from_secs(30),
        "the probes answered {looked} times, the last {last_answer:?} in (want past 30 s)"
    );
    assert!(
        !agent.stdout().contains("ready"),
        "ready printed without the lists: {}",
        agent.stdout()
    );
    assert!(
        agent
            .stderr_plain()
            .contains("still waiting for the Kubernetes API server"),
        "{}",
        agent.stderr_plain()
    );

    api.hold_lists(false);
    agent.wait_ready(Duration::from_secs(20)).expect("ready");
    let (ready, why) = get("/readyz");
    assert_eq!(ready, 200, "{why}");
    assert_eq!(get("/healthz").0, 200);
    bed.agent = Some(agent);

    if let Err(e) = bed.check_balanced(&BACKENDS) {
        panic!("{e:#}");
    }
}

/// The file source: ready once `ready` is printed; unknown paths are 404.
#[test]
fn file_source_is_ready_with_ready() {
    let mut bed = TestBed::new(1).expect("test bed");
    let health = HEALTH.to_string();
    bed.agent = Some(
        Agent::start_with_args(
            &bed.topo,
            &bed.cgroup,
            &bed.topo.backend_addrs(),
            &["--health-addr", &health],
        )
        .expect("agent"),
    );
    let node = bed.topo.node_ns().to_string();
    let get = |path: &str| http_get(&node, HEALTH, path).expect("curl");
    assert_eq!(get("/readyz").0, 200);
    assert_eq!(get("/healthz").0, 200);
    assert_eq!(get("/nothing-here").0, 404);
    // the metrics page shares the probes' port (README, "Metrics")
    assert_eq!(get("/metrics").0, 200);
}
