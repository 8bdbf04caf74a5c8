//! What the upgrade tests share (tests/tests/upgrade.rs: the GOAWAY
//! drain; tests/tests/handover.rs: the live handover): an upgrade the way
//! a DaemonSet rollout with `maxSurge: 1, maxUnavailable: 0` does it, and
//! the gRPC load both run through it.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use rotor_testbed::{Agent, TestBed, TestCgroup, Topology};

use crate::peers::{grpc_client_command, Grpc, Running};

/// The Service the h2load tests call.
pub const WHOAMI: &str = "http://10.96.0.10:8080/whoami";

/// How long the old agent may take to exit after SIGTERM: its drain (the
/// second GOAWAY comes 1.1 s after the first) and the clients' streams.
/// Scaled, like every bound below: under emulation the drain of one
/// grpcio connection outlasted the host's 15 s.
pub fn exit_limit() -> Duration {
    rotor_testbed::scaled(Duration::from_secs(15))
}

/// Starts the new agent beside `old` with the same arguments (`args`, the
/// ones the old one got besides its endpoints), sends `old` SIGTERM and
/// waits for it to exit; returns the new agent, the old one's stderr and
/// how long it took to exit after SIGTERM.
pub fn upgrade(
    topo: &Topology,
    cgroup: &TestCgroup,
    endpoints: &[SocketAddrV4],
    old: &mut Agent,
    args: &[&str],
) -> (Agent, String, Duration) {
    let new = Agent::start_with_args(topo, cgroup, endpoints, args)
        .expect("the new agent, beside the old");
    // SAFETY: the pid of our own (unreaped) child.
    assert_eq!(unsafe { libc::kill(old.pid() as i32, libc::SIGTERM) }, 0);
    let start = Instant::now();
    let limit = exit_limit();
    while old.check_alive().is_ok() && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = start.elapsed();
    let stderr = old.stderr_plain();
    assert!(
        old.check_alive().is_err(),
        "the old agent still runs {limit:?} after SIGTERM:\n{stderr}"
    );
    // The channel a handover of live connections will use: the new agent
    // introduced itself to the old one at start (agent/handover/channel.rs).
    assert!(
        stderr.contains("an agent started beside this one: it answers on the handover channel"),
        "the old agent did not hear from the new one on the handover channel:\n{stderr}"
    );
    assert!(
        stderr.contains("every connection has ended"),
        "the old agent exited without draining its connections:\n{stderr}"
    );
    (new, stderr, took)
}

/// The gRPC load the upgrade tests run through the upgrade: unary calls
/// every 20 ms on 4 workers and 2 streaming workers (server and bidi
/// streams of 20 messages 50 ms apart) for 6 s (scaled); returns 1.5 s
/// after the agent first carries the client's connection, when it carries
/// all of it. A fixed 1.5 s from the spawn was before grpcio and grpc-js
/// had connected in a VM under QEMU, and the upgrade found nothing to hand
/// over.
pub fn grpc_load(bed: &TestBed, client: Grpc) -> Running {
    let duration = rotor_testbed::scaled_secs(6.0).to_string();
    let timeout = rotor_testbed::scaled_secs(30.0).to_string();
    let args = [
        "--duration",
        &duration,
        "--concurrency",
        "4",
        "--unary-delay-ms",
        "20",
        "--streams",
        "2",
        "--kinds",
        "server,bidi",
        "--stream-msgs",
        "20",
        "--stream-delay-ms",
        "50",
        "--timeout",
        &timeout,
    ];
    let cmd = grpc_client_command(&bed.topo, Some(&bed.cgroup), client, &args)
        .expect("gRPC client command");
    let running = Running::spawn("grpc-client", cmd, bed.topo.dir(), Duration::from_secs(60))
        .expect("gRPC client");
    let agent = bed.agent().expect("the agent before the upgrade");
    let carried = rotor_testbed::wait_until(Duration::from_secs(10), || {
        agent
            .status()
            .is_ok_and(|s| s["connections"].as_array().is_some_and(|c| !c.is_empty()))
    });
    assert!(
        carried.is_some(),
        "{client:?}: the agent carried no connection of the gRPC client within 10 s (scaled)"
    );
    std::thread::sleep(Duration::from_millis(1500));
    running
}
