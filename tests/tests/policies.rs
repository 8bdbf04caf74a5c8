//! The Service's policy: the value of its `rotor.dev/balance` label (or
//! `policy:` of the static configuration) decides how new streams pick an
//! endpoint, and a value that names no policy balances nothing.

use rotor_testbed::wait_until;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use rotor_testbed::kube_api::{endpoint_slice, service, EndpointState, Kind, KubeApi};
use rotor_testbed::{backend_addr, scaled, Agent, LoadSpec, TestBed, VIP};

const BACKENDS: [&str; 3] = ["be1", "be2", "be3"];

fn endpoints() -> Vec<SocketAddrV4> {
    (1..=3).map(backend_addr).collect()
}

/// The policy `rotor status` shows for the VIP, if the agent balances it.
fn policy_shown(bed: &TestBed) -> Option<String> {
    let status = bed.agent().ok()?.status().ok()?;
    status["services"]
        .as_array()?
        .iter()
        .find(|s| s["vip"] == VIP.to_string())
        .and_then(|s| s["policy"].as_str().map(str::to_string))
}

fn set_policy(bed: &mut TestBed, policy: &str) {
    bed.agent()
        .expect("agent")
        .set_policy(&endpoints(), policy)
        .expect("config");
    let shown = wait_until(Duration::from_secs(3), || {
        policy_shown(bed).as_deref() == Some(policy)
    });
    assert!(
        shown.is_some(),
        "the agent did not take {policy}\n{}",
        bed.diagnostics()
    );
}

/// Requests each backend served during one load.
fn served(bed: &mut TestBed, spec: &LoadSpec) -> Vec<(String, u64)> {
    let before = bed.topo.request_counts().expect("counts");
    let report = bed.load(spec).expect("load");
    let diag = bed.diagnostics();
    let want = spec.requests.unwrap_or_default();
    assert_eq!((report.ok, report.failed), (want, 0), "{report:?}\n{diag}");
    bed.served_since(&before).expect("served")
}

/// How much later be1 answers than be2 and be3: 50 ms on the host, where a
/// fast endpoint answers in a few ms, times the machine's time scale. What
/// these policies give be1 follows how much slower it is than the others,
/// not the delay alone: on 6.1 under QEMU (`ROTOR_TIME_SCALE` 28) a fast
/// answer took tens of ms, an unscaled 50 ms made be1 only a few times
/// slower, and peak EWMA gave it 48 and 54 of 1,500 (the bound is 45). At
/// most 500 ms: the agent's upstream handshake to be1 crosses the delay
/// twice (SYN, then its SETTINGS) within the agent's 3 s handshake
/// timeout, which does not scale.
fn slow_delay() -> Duration {
    scaled(Duration::from_millis(50)).min(Duration::from_millis(500))
}

/// The control of the slow-endpoint tests: round robin gives be1 its turn
/// whatever it costs. Run for a time (2 s, scaled), not a count: be1's
/// upstream joins a new connection only once its handshake has crossed the
/// delay line, and the first streams wait at most 200 ms for it. Under QEMU
/// (`ROTOR_TIME_SCALE` 26, be1 500 ms away) 600 requests were over before
/// it joined and it got none; over the time, be1 got 1,655 of 5,975 while
/// be2 and be3 got 2,160 each: round robin between the two alone while be1
/// was joining (its requests on the way at the end are not counted either).
/// So the bound is a quarter, not a third: still far from the 10 % and 3 %
/// the policies are held to. Returns be1's count and the total.
fn round_robin_control(bed: &mut TestBed) -> (u64, u64) {
    set_policy(bed, "round-robin");
    let spec = LoadSpec {
        requests: None,
        duration: Some(rotor_testbed::scaled_secs(2.0)),
        timeout: 30.0,
        ..LoadSpec::whoami(1, 16, 0)
    };
    let before = bed.topo.request_counts().expect("counts");
    let report = bed.load(&spec).expect("load");
    let diag = bed.diagnostics();
    assert!(report.ok > 0 && report.failed == 0, "{report:?}\n{diag}");
    let rr = bed.served_since(&before).expect("served");
    let total: u64 = rr.iter().map(|(_, n)| n).sum();
    let slow = count(&rr, "be1");
    assert!(
        slow * 4 >= total,
        "round robin gave the slow endpoint {slow} of {total} (a quarter at least expected): {rr:?}\n{diag}"
    );
    (slow, total)
}

fn count(served: &[(String, u64)], backend: &str) -> u64 {
    served
        .iter()
        .find(|(b, _)| b == backend)
        .map_or(0, |(_, n)| *n)
}

/// be1 answers [`slow_delay`] (50 ms on the host) later than be2 and be3 (a
/// delay on the way to it only); one connection keeps 16 streams open.
/// Round robin gives be1 its turn whatever it costs (the control, which
/// shows the problem: [`round_robin_control`]); least request passes it
/// over while it has more streams open than the endpoint drawn beside it,
/// so it serves a small part.
#[test]
fn least_request_passes_over_a_slow_endpoint_that_round_robin_feeds_a_third() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    bed.topo
        .set_slow_backends(&[1], slow_delay())
        .expect("be1 slow");

    let (rr_slow, rr_total) = round_robin_control(&mut bed);

    set_policy(&mut bed, "least-request");
    let lr = served(&mut bed, &LoadSpec::whoami(1, 16, 1500));
    let lr_slow = count(&lr, "be1");
    let diag = bed.diagnostics();
    println!("slow endpoint: round robin {rr_slow}/{rr_total}, least request {lr_slow}/1500");
    assert!(
        lr_slow <= 150,
        "least request gave the slow endpoint {lr_slow} of 1500 (round robin: {rr_slow} of {rr_total}): {lr:?}\n{diag}"
    );
    // the fast two share the rest
    for fast in ["be2", "be3"] {
        assert!(count(&lr, fast) >= 450, "{fast}: {lr:?}\n{diag}");
    }
}

/// be1 answers [`slow_delay`] (50 ms on the host) later than be2 and be3;
/// one connection keeps 16 calls in flight, on an agent that has not timed
/// any of them yet. Peak EWMA learns be1's time to first byte from its
/// first answers and then takes it only when its cost (≥ 50 ms × (its open
/// streams + 1)) is below that of the endpoint drawn beside it (a fast
/// one's estimate, a few ms at most here, × at most 17): about never while
/// the fast ones answer. What be1 gets is its first probes (one per pick of
/// it before its first answer comes back, 50 ms later) and the odd pick
/// while a fast one's estimate spikes; 1,500 calls take well under the 10 s
/// time constant, so its estimate does not decay to the point of a new
/// probe. Bound: 45 of 1,500 (3 %), against the 150 least request is held
/// to. Round robin on the same bed gives be1 its turn
/// ([`round_robin_control`]).
#[test]
fn peak_ewma_gives_a_slow_endpoint_a_small_share_where_round_robin_gives_a_third() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    bed.topo
        .set_slow_backends(&[1], slow_delay())
        .expect("be1 slow");

    set_policy(&mut bed, "peak-ewma");
    let pe = served(&mut bed, &LoadSpec::whoami(1, 16, 1500));
    let pe_slow = count(&pe, "be1");
    let diag = bed.diagnostics();
    for fast in ["be2", "be3"] {
        assert!(count(&pe, fast) >= 450, "{fast}: {pe:?}\n{diag}");
    }

    let (rr_slow, rr_total) = round_robin_control(&mut bed);
    println!("slow endpoint: peak EWMA {pe_slow}/1500, round robin {rr_slow}/{rr_total}");
    assert!(
        pe_slow <= 45,
        "peak EWMA gave the slow endpoint {pe_slow} of 1500 (round robin: {rr_slow} of {rr_total}): {pe:?}\n{diag}"
    );
}

/// be1 is slow until peak EWMA has all but dropped it, then recovers: its
/// estimate, read, decays with the 10 s time constant until it costs less
/// than a fast endpoint with its open streams, it is probed, answers fast,
/// and its estimate comes down with each answer. Rounds of 600 calls (16
/// at a time) run until one gives be1 at least a sixth (half its third);
/// it must within 60 s (scaled). A recovered endpoint that was never
/// probed again, or whose estimate never came down, fails here.
#[test]
fn peak_ewma_gives_a_recovered_endpoint_traffic_back() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    bed.topo
        .set_slow_backends(&[1], slow_delay())
        .expect("be1 slow");
    set_policy(&mut bed, "peak-ewma");
    let slow = served(&mut bed, &LoadSpec::whoami(1, 16, 1500));
    let slow_share = count(&slow, "be1");
    assert!(slow_share <= 45, "slow be1 served {slow_share}: {slow:?}");

    bed.topo
        .set_backend_delay(Duration::ZERO)
        .expect("be1 recovered");
    let recovered = Instant::now();
    let mut rounds = Vec::new();
    loop {
        let round = served(&mut bed, &LoadSpec::whoami(1, 16, 600));
        let be1 = count(&round, "be1");
        rounds.push((recovered.elapsed().as_millis(), be1));
        if be1 >= 100 {
            break;
        }
        assert!(
            recovered.elapsed() < scaled(Duration::from_secs(60)),
            "be1 recovered got no share back: (ms after recovery, be1 of 600) {rounds:?}\n{}",
            bed.diagnostics()
        );
    }
    println!("be1 slow: {slow_share}/1500; recovered, per round of 600 (ms, be1): {rounds:?}");
}

/// A policy change reaches the connections already open: one connection
/// keeps 16 calls in flight over a slow be1 under round robin (be1 serves
/// a third); after some 300 calls the Service turns least-request, and of
/// the 1,500 calls in all be1 serves far less than its third of 500.
#[test]
fn a_policy_change_reaches_live_connections() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    bed.topo
        .set_slow_backends(&[1], slow_delay())
        .expect("be1 slow");
    set_policy(&mut bed, "round-robin");
    let before = bed.topo.request_counts().expect("counts");
    let load = bed
        .spawn_load(&LoadSpec::whoami(1, 16, 1500))
        .expect("load");
    let total = |bed: &TestBed| -> u64 {
        bed.served_since(&before)
            .map_or(0, |s| s.iter().map(|(_, n)| n).sum())
    };
    let started = wait_until(Duration::from_secs(10), || total(&bed) >= 300);
    assert!(
        started.is_some(),
        "300 calls not served\n{}",
        bed.diagnostics()
    );
    let at_switch = bed.served_since(&before).expect("served");
    set_policy(&mut bed, "least-request");
    let report = load.finish().expect("load report");
    let served = bed.served_since(&before).expect("served");
    let diag = bed.diagnostics();
    assert_eq!((report.ok, report.failed), (1500, 0), "{report:?}\n{diag}");
    let slow = count(&served, "be1");
    println!("at the switch {at_switch:?}; in all {served:?}");
    assert!(
        slow < 300,
        "be1 served {slow} of 1500 (at the switch: {at_switch:?}): the live connection kept round robin\n{diag}"
    );
}

/// With endpoints alike, least request uses every one of them: one
/// connection, 8 streams at a time, 3,000 requests, each endpoint at least
/// a twentieth. Not round robin's 1,000 ± 10 %: least request follows how fast
/// each endpoint answers, and on two cores shared with the load and the
/// agent one nghttpd is often slower for a while (a run here: 411 / 1,252 /
/// 1,337, and 275 / 1,338 / 1,387; the slow one a different one each run).
#[test]
fn least_request_uses_every_equal_endpoint() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    set_policy(&mut bed, "least-request");
    let counted = served(&mut bed, &LoadSpec::whoami(1, 8, 3000));
    let diag = bed.diagnostics();
    for be in BACKENDS {
        assert!(
            count(&counted, be) >= 150,
            "least request starved {be}: {counted:?}\n{diag}"
        );
    }
}

/// One call at a time, every endpoint has no stream open at each pick:
/// least request is round robin then, 100 of 300 each. A stream counted
/// against an endpoint and never uncounted would show here: that endpoint
/// would look busy at every pick and serve almost nothing.
#[test]
fn least_request_one_call_at_a_time_is_round_robin() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    set_policy(&mut bed, "least-request");
    let counted = served(&mut bed, &LoadSpec::whoami(1, 1, 300));
    let diag = bed.diagnostics();
    for be in BACKENDS {
        let n = count(&counted, be);
        assert!(
            (95..=105).contains(&n),
            "{be} served {n} of 300: {counted:?}\n{diag}"
        );
    }
}

/// `rotor.dev/balance: "false"` must not turn balancing on: the Service is
/// left to kube-proxy with a warning naming the accepted values, in the log
/// and as a Kubernetes Event on the Service (read back from the stand-in);
/// relabelled `round-robin`, it is balanced.
#[test]
fn a_label_value_that_names_no_policy_balances_nothing() {
    let mut bed = TestBed::new(3).expect("test bed");
    bed.topo.kube_proxy_dnat().expect("kube-proxy-style DNAT");
    let api = KubeApi::start_in_netns(bed.topo.node_ns()).expect("stand-in API server");
    let labelled = |value: &str| {
        service(
            "default",
            "echo",
            &[("rotor.dev/balance", value)],
            VIP,
            "h2c",
        )
    };
    api.apply(Kind::Service, labelled("false"))
        .expect("Service");
    let eps: Vec<_> = (1..=3)
        .map(|k| (*backend_addr(k).ip(), EndpointState::Ready))
        .collect();
    api.apply(
        Kind::EndpointSlice,
        endpoint_slice("default", "echo-7xk2p", "echo", "h2c", VIP.port(), &eps),
    )
    .expect("EndpointSlice");
    let kubeconfig = bed.topo.dir().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    bed.agent =
        Some(Agent::start_kubernetes(&bed.topo, &bed.cgroup, &kubeconfig, &[]).expect("agent"));

    // Not balanced: no Service in the agent, kube-proxy serves the calls
    // (one connection: one backend), and the log says why.
    let status = bed.agent().expect("agent").status().expect("status");
    assert_eq!(status["services"], serde_json::json!([]), "{status:#}");
    let counted = served(&mut bed, &LoadSpec::whoami(1, 8, 300));
    let backends_hit = counted.iter().filter(|(_, n)| *n > 0).count();
    assert_eq!(
        backends_hit, 1,
        "balanced although labelled \"false\": {counted:?}"
    );
    let log = bed.agent().expect("agent").stderr_plain();
    assert!(
        log.contains("names no policy") && log.contains("round-robin, least-request, peak-ewma"),
        "no warning naming the accepted values:\n{log}"
    );

    // A Warning Event on the Service names the accepted values, once per
    // (Service, value): the Service changed again without a new value (an
    // annotation, as a reconcile would write) posts nothing more; a new
    // value that names no policy posts a second one.
    let posted = |api: &KubeApi| {
        api.requests()
            .iter()
            .filter(|r| r.starts_with("POST /apis/events.k8s.io/v1/namespaces/default/events"))
            .count()
    };
    let events_for = |api: &KubeApi, value: &str| -> Vec<serde_json::Value> {
        api.list(Kind::Event)
            .into_iter()
            .filter(|e| {
                e["note"]
                    .as_str()
                    .is_some_and(|n| n.contains(&format!("={value:?}")))
            })
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(5), || !events_for(&api, "false")
            .is_empty())
        .is_some(),
        "no Event for \"false\": {:?}\n{}",
        api.list(Kind::Event),
        bed.diagnostics()
    );
    let ev = &events_for(&api, "false")[0];
    assert_eq!(ev["type"], "Warning", "{ev:#}");
    assert_eq!(ev["reason"], "UnknownBalancePolicy", "{ev:#}");
    assert_eq!(ev["regarding"]["kind"], "Service", "{ev:#}");
    assert_eq!(ev["regarding"]["name"], "echo", "{ev:#}");
    assert_eq!(ev["reportingController"], "rotor.dev/agent", "{ev:#}");
    assert!(
        ev["note"]
            .as_str()
            .is_some_and(|n| n.contains("round-robin, least-request, peak-ewma")),
        "{ev:#}"
    );
    let mut again = labelled("false");
    again["metadata"]["annotations"] = serde_json::json!({"reconciled": "1"});
    api.apply(Kind::Service, again)
        .expect("Service changed, same value");
    let mut again = labelled("false");
    again["metadata"]["annotations"] = serde_json::json!({"reconciled": "2"});
    api.apply(Kind::Service, again)
        .expect("Service changed, same value");
    std::thread::sleep(scaled(Duration::from_secs(1)));
    assert_eq!(posted(&api), 1, "{:?}", api.requests());
    api.apply(Kind::Service, labelled("off"))
        .expect("relabel off");
    assert!(
        wait_until(Duration::from_secs(5), || events_for(&api, "off").len()
            == 1)
        .is_some(),
        "no Event for \"off\": {:?}",
        api.list(Kind::Event)
    );
    assert_eq!(api.list(Kind::Event).len(), 2);
    assert_eq!(posted(&api), 2, "{:?}", api.requests());

    api.apply(Kind::Service, labelled("round-robin"))
        .expect("relabel");
    let taken = wait_until(Duration::from_secs(5), || {
        policy_shown(&bed).as_deref() == Some("round-robin")
    });
    assert!(
        taken.is_some(),
        "relabelled round-robin, not balanced\n{}",
        bed.diagnostics()
    );
    bed.check_balanced(&BACKENDS)
        .expect("balanced once relabelled");
}
