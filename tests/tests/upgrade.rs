//! Upgrading the agent the way a DaemonSet rollout with `maxSurge: 1,
//! maxUnavailable: 0` does: the new agent starts beside the running one
//! (same arguments), then the old one gets SIGTERM. Here the GOAWAY drain
//! (the fallback: the old agent started with ROTOR_HANDOVER=off): no call
//! of a client that retries a refused stream fails, the old agent exits
//! once its connections have gone, and the new one balances the
//! connections clients open again. The live handover, which replaces the
//! drain when both agents speak the same state format, is handover.rs.

use std::time::{Duration, Instant};

use std::net::SocketAddrV4;

use rotor_testbed::agent::agent_wrapper;
use rotor_testbed::tools::h2load;
use rotor_testbed::{Agent, TestBed, TestCgroup, Topology};
use rotor_tests::peers::{self, endpoints_on, n, Grpc, GRPC_PORT};
use rotor_tests::probe;
use rotor_tests::upgrade::{grpc_load, upgrade, WHOAMI};
use serde_json::Value;

/// An agent that drains its connections with GOAWAY when it stops instead
/// of handing them over (ROTOR_HANDOVER=off): the fallback, as a successor
/// of another state format or a failed channel gets it. The tests below
/// check it.
fn draining_agent(topo: &Topology, cgroup: &TestCgroup, endpoints: &[SocketAddrV4]) -> Agent {
    let script = agent_wrapper(topo.dir(), "rotor-agent-drains", "env ROTOR_HANDOVER=off")
        .expect("wrapper script");
    Agent::start_binary(&script, topo, cgroup, endpoints, &[]).expect("the agent that drains")
}

fn assert_drained(stderr: &str) {
    assert!(
        stderr.contains("not handed over: the handover is turned off"),
        "the old agent did not drain:\n{stderr}"
    );
}

/// The new agent carries the clients' connections (they reconnected to it).
fn assert_serves(new: &Agent, what: &str) {
    // The new agent takes the admin socket's path over once the old one's
    // socket stops answering (admin.rs): within a poll of it.
    let start = Instant::now();
    let status = loop {
        match new.status() {
            Ok(status) => break status,
            Err(e) if start.elapsed() > rotor_testbed::scaled(Duration::from_secs(2)) => {
                panic!("{what}: the new agent's admin socket: {e:#}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let conns = status["connections"].as_array().map_or(0, Vec::len);
    assert!(
        conns > 0,
        "{what}: the new agent carries no connection after the upgrade: {status}"
    );
}

fn upgrade_under_grpc(client: Grpc) {
    let (mut bed, _servers) = peers::grpc_bed(Grpc::Python, &[]).expect("gRPC test bed");
    client.available().expect("gRPC client peer");
    drop(bed.agent.take());
    let endpoints = endpoints_on(&bed.topo, GRPC_PORT);
    bed.agent = Some(draining_agent(&bed.topo, &bed.cgroup, &endpoints));
    let running = grpc_load(&bed, client);
    let mut old = bed.agent.take().expect("the running agent");
    let (new, old_stderr, _) = upgrade(&bed.topo, &bed.cgroup, &endpoints, &mut old, &[]);
    assert_drained(&old_stderr);
    assert_serves(&new, &format!("{client:?}"));
    let r: Value = running
        .finish()
        .unwrap_or_else(|e| panic!("client: {e:#}\n{}", probe::report(&mut bed)));
    let failed: u64 = ["unary", "server_stream", "bidi"]
        .iter()
        .map(|k| n(&r[*k], "failed"))
        .sum();
    let ok: u64 = ["unary", "server_stream", "bidi"]
        .iter()
        .map(|k| n(&r[*k], "ok"))
        .sum();
    let backends = r["unary"]["backends"].as_object().map_or(0, |b| b.len());
    // tonic (hyper's h2) fails the calls it had queued for the connection
    // when the GOAWAY arrived, "connection closed", before they are sent; it
    // does the same against a server that shuts down gracefully
    // (failures.rs, backend_graceful_shutdown_tonic_client). At most the
    // calls in flight (4 unary, 2 streams); grpcio retries them.
    let queued_at_goaway: u64 = ["unary", "server_stream", "bidi"]
        .iter()
        .filter_map(|k| r[*k]["errors"].as_object())
        .flat_map(|errors| errors.iter())
        .filter(|(e, _)| e.contains("connection closed"))
        .map(|(_, count)| count.as_u64().unwrap_or(0))
        .sum();
    let allowed = match client {
        Grpc::Tonic => queued_at_goaway.min(6),
        Grpc::Python | Grpc::Node => 0,
    };
    assert!(
        failed == allowed && ok > 0 && backends == 3,
        "{client:?} client through an agent upgrade: {failed} calls failed (want {allowed}: \
         {queued_at_goaway} queued at the GOAWAY), {ok} ok, unary calls on {backends} of 3 backends\nreport: {r}\nold agent:\n{old_stderr}\nnew agent:\n{}",
        new.stderr_plain()
    );
    bed.agent = Some(new);
}

#[test]
fn upgrade_under_grpcio_load_fails_no_call() {
    upgrade_under_grpc(Grpc::Python);
}

#[test]
fn upgrade_under_tonic_load_fails_only_calls_queued_at_the_goaway() {
    upgrade_under_grpc(Grpc::Tonic);
}

/// h2load's 4 connections, each with 8 streams at a time, for 5 s; the
/// upgrade 1.5 s in. h2load reconnects after the GOAWAY; what it counts
/// as failed are the requests it could not start on a connection that had
/// received a GOAWAY (nghttp2 refuses them before they are sent: "Process
/// Request Failure"), as it does against any server that shuts down
/// gracefully. Every request it sent must have its response, and the
/// backends must have served exactly those.
#[test]
fn upgrade_under_h2load_loses_no_request_sent() {
    let mut bed = TestBed::new(3).expect("test bed");
    let endpoints = bed.topo.backend_addrs();
    let mut old = draining_agent(&bed.topo, &bed.cgroup, &endpoints);
    let before = bed.topo.request_counts().unwrap();
    let (topo, cgroup) = (&bed.topo, &bed.cgroup);
    let ((s, out), (new, old_stderr, _)) = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            h2load(
                topo,
                Some(cgroup),
                &["-c", "4", "-m", "8", "-D", "5", WHOAMI],
            )
        });
        std::thread::sleep(Duration::from_millis(1500));
        let upgraded = upgrade(topo, cgroup, &endpoints, &mut old, &[]);
        let done = load.join().expect("h2load thread");
        (done.unwrap_or_else(|e| panic!("h2load: {e:#}")), upgraded)
    });
    assert_drained(&old_stderr);
    let served: u64 = bed
        .served_since(&before)
        .unwrap()
        .iter()
        .map(|(_, c)| c)
        .sum();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Each connection that got the GOAWAY fails at most what it had queued
    // to start: its 8 streams' worth, plus the one being submitted.
    let unstarted_bound = 4 * 9;
    assert!(
        s.succeeded > 0
            && s.timeout == 0
            && (s.succeeded..=s.started).contains(&served)
            && s.failed <= unstarted_bound
            && stdout.contains(" 2xx, 0 3xx, 0 4xx, 0 5xx"),
        "h2load through an agent upgrade: {s:?}; the backends served {served} requests \
         (want every sent request answered: served == succeeded, or up to started, \
         which counts those in flight when h2load's time was up; and no more than \
         {unstarted_bound} never started)\n{stdout}\nold agent:\n{old_stderr}"
    );
    // a new connection after the upgrade is balanced by the new agent
    let before = bed.topo.request_counts().unwrap();
    let (s, _) = h2load(
        &bed.topo,
        Some(&bed.cgroup),
        &["-c", "1", "-m", "8", "-n", "600", WHOAMI],
    )
    .expect("h2load after the upgrade");
    let served = bed.served_since(&before).unwrap();
    assert!(
        s.succeeded == 600 && served.iter().all(|(_, c)| *c >= 150),
        "one connection after the upgrade: {s:?}, per backend {served:?}\nnew agent:\n{}",
        new.stderr_plain()
    );
    bed.agent = Some(new);
}

#[test]
fn upgrade_under_grpc_js_load_fails_no_call() {
    upgrade_under_grpc(Grpc::Node);
}
