//! Timing as a test dimension (issue 10, "every client, every timing"): the
//! same client scenarios with the backends 0, 1, 10 and 50 ms away (every
//! packet the node sends towards a backend waits that long in a delay line,
//! `Topology::set_backend_delay`: each round trip to a backend, the agent's
//! upstream handshakes included, takes that much longer), with fast backends
//! (nghttpd without `-v`), and with the agent in the clients' cgroup (0 and
//! 10 ms) or beside it (1 and 50 ms), so the agent's timing is not the one
//! the rest of the suite is used to.
//!
//! Each scenario runs twice with the differential harness
//! (`rotor_tests::differential`): straight to backend 1 (no agent involved)
//! and through rotor (the VIP, three backends); what the client sees must be
//! the same, and rotor may take at most 4× the direct time + 5 s. One test per
//! delay runs every scenario on one bed and reports all of them:
//!
//! * (a) `h2load -c 1 -m 16` on a 3-byte file (`/whoami`) and on a 100-byte
//!   file (`/100b`), with enough requests to pass 65,535 response bytes
//!   (21,845 and 655 requests): a connection whose window the agent stops
//!   crediting stalls there;
//! * (b) responses larger than every initial window: `nghttp -n /big` (8 MiB)
//!   with its default 64 KiB windows and with `-W 30 -w 30`, `h2load -n 4 -m 4
//!   /big`; the Python h2 client with 1 MiB stream windows downloading 4 × 8
//!   MiB and uploading 4 × 4 MiB (echoed);
//! * (c) a client whose first write holds the preface, SETTINGS,
//!   WINDOW_UPDATE and 64 HEADERS, and one that writes one byte at a time;
//! * (d) an agent that just started: the first client connects right after
//!   the agent prints `ready` (a fresh agent per client, in and outside the
//!   clients' cgroup in turn); the connection must be redirected (the
//!   kernel's `connect_rewrite`), listed by the agent, served, spread over
//!   the backends, and on the kernel path (`CONN_FAST`) in a status sample.
//!
//! In every scenario whose client sends stream frames after its first
//! flight (more requests than it opens at once, or upload DATA), the
//! connection must reach the kernel path (`CONN_FAST`) in one of the agent
//! status samples taken while the client runs.

use std::time::Duration;

use rotor_testbed::{environment_ok, LoadSpec, TestBed, TestCgroup, Topology};
use rotor_tests::differential::{
    self, clients_available, rotor_limit, Bodies, Client, Expect, Placement, Route, Session,
};

/// Request counts per delay, so every run stays bounded (h2load with 16
/// streams does 16 requests per round trip at best).
struct Plan {
    /// h2load -m and -n on the 3-byte file: past 21,845 requests.
    tiny: (u32, u64),
    /// h2load -m and -n on the 100-byte file: past 655 requests.
    small: (u32, u64),
    /// Requests of the one-write client (64 streams, 100-byte file).
    one_write: u64,
    /// Requests of the first client of a fresh agent.
    first: u64,
}

fn plan(delay_ms: u64) -> Plan {
    match delay_ms {
        0 | 1 => Plan {
            tiny: (16, 30_000),
            small: (16, 30_000),
            one_write: 6_400,
            first: 30_000,
        },
        10 => Plan {
            tiny: (16, 30_000),
            small: (16, 3_000),
            one_write: 6_400,
            first: 3_000,
        },
        // 16 streams per 50 ms round trip would take 70 s for 22,000
        // requests: 64 streams keep the 3-byte run past 21,845 in 20 s.
        _ => Plan {
            tiny: (64, 24_000),
            small: (16, 2_000),
            one_write: 2_560,
            first: 1_000,
        },
    }
}

fn bed(delay_ms: u64) -> TestBed {
    environment_ok().expect("test environment");
    clients_available().expect("clients");
    // nghttpd without -v: about twice as fast as the suite's usual backends.
    let mut topo = Topology::with_counting(3, false).expect("topology");
    topo.set_backend_delay(Duration::from_millis(delay_ms))
        .expect("backend delay");
    let cgroup = TestCgroup::create().expect("cgroup");
    TestBed {
        agent: None,
        cgroup,
        topo,
    }
}

fn h2load(m: u32, n: u64, path: &str) -> Client {
    Client::h2load(
        &["-c", "1", "-m", &m.to_string(), "-n", &n.to_string()],
        path,
    )
}

fn timing(delay_ms: u64, placement: Placement) {
    let p = plan(delay_ms);
    let label = format!("{delay_ms} ms, agent {placement:?}");
    let mut s = Session::new(bed(delay_ms), &label, placement).expect("agent");
    // Clients that send stream frames after their first flight.
    let whoami = |requests| Expect {
        requests,
        bodies: Bodies::BackendNames,
        kernel_path: true,
    };
    let same = |requests| Expect {
        requests,
        bodies: Bodies::Same,
        kernel_path: true,
    };
    // Clients whose every stream is in their first flight.
    let first_flight = |requests| Expect {
        requests,
        bodies: Bodies::Same,
        kernel_path: false,
    };

    // (a) many small responses on one connection.
    let (m, n) = p.tiny;
    s.scenario(
        &format!("a: h2load -c1 -m{m} -n{n} 3-byte file"),
        h2load(m, n, "/whoami"),
        whoami(n),
    );
    // The delay is real: with m streams h2load makes at most m requests per round trip.
    let direct = s.verdicts[0].direct.elapsed;
    let floor = Duration::from_millis(delay_ms) * (n / u64::from(m)) as u32;
    assert!(
        direct >= floor.mul_f64(0.9),
        "[{label}] the direct h2load run took {direct:?}: backends {delay_ms} ms away allow no \
         less than {floor:?} (delayed packets: {})",
        s.bed.topo.delayed_packets()
    );
    let (m, n) = p.small;
    s.scenario(
        &format!("a: h2load -c1 -m{m} -n{n} 100-byte file"),
        h2load(m, n, "/100b"),
        same(n),
    );

    // (b) responses larger than every initial window.
    s.scenario(
        "b: nghttp -n /big, default windows",
        Client::nghttp(&[], "/big"),
        first_flight(1),
    );
    s.scenario(
        "b: nghttp -n -W30 -w30 /big",
        Client::nghttp(&["-W", "30", "-w", "30"], "/big"),
        first_flight(1),
    );
    s.scenario(
        "b: h2load -n4 -m4 /big",
        Client::h2load(&["-c", "1", "-n", "4", "-m", "4"], "/big"),
        first_flight(4),
    );
    s.scenario(
        "b: python h2, 1 MiB stream windows, 4 x 8 MiB down",
        Client::python_h2(&[
            "--path",
            "/big",
            "--requests",
            "4",
            "--concurrency",
            "4",
            "--stream-window",
            "1048576",
            "--digest",
            "sha256",
        ]),
        first_flight(4),
    );
    s.scenario(
        "b: python h2, 1 MiB stream windows, 4 x 4 MiB up (echo)",
        Client::python_h2(&[
            "--path",
            "/whoami?echo",
            "--requests",
            "4",
            "--concurrency",
            "4",
            "--upload",
            "4194304",
            "--stream-window",
            "1048576",
            "--digest",
            "sha256",
        ]),
        same(4),
    );

    // (c) first flight in one write, and one byte per write.
    s.scenario(
        "c: preface+SETTINGS+WINDOW_UPDATE+64 HEADERS in one write",
        Client::Load(LoadSpec {
            split_writes: Some(1 << 20),
            chunk_delay_us: Some(0),
            streams: 64,
            requests: Some(p.one_write),
            path: Some("/100b".into()),
            ..LoadSpec::default()
        }),
        same(p.one_write),
    );
    s.scenario(
        "c: one byte per write, 16 streams",
        Client::Load(LoadSpec {
            split_writes: Some(1),
            chunk_delay_us: Some(200),
            streams: 16,
            requests: Some(64),
            path: Some("/100b".into()),
            ..LoadSpec::default()
        }),
        same(64),
    );

    // (d) the first connection to an agent that just printed `ready`, one
    // fresh agent per client, in and outside the clients' cgroup in turn.
    let n = p.first;
    let firsts = [
        (
            "d: first connection of a fresh agent: rotor-load (h2 crate), 16 streams",
            Client::Load(LoadSpec::whoami(1, 16, n)),
            n,
        ),
        (
            "d: first connection of a fresh agent: h2load -c1 -m16",
            h2load(16, n, "/whoami"),
            n,
        ),
        (
            "d: first connection of a fresh agent: python h2, 16 streams",
            Client::python_h2(&[
                "--requests",
                &n.min(3_000).to_string(),
                "--concurrency",
                "16",
            ]),
            n.min(3_000),
        ),
    ];
    let mut at = placement;
    for (name, client, requests) in firsts {
        let name = format!("{name}, agent {at:?}");
        first_connection(&mut s, &name, &client, requests, at);
        at = at.other();
    }
    s.finish();
}

/// Runs `client` direct, then starts a fresh agent and runs it through rotor
/// as soon as `ready` is printed; besides the differential checks the
/// connection must have been redirected and carried by the kernel.
fn first_connection(
    s: &mut Session,
    name: &str,
    client: &Client,
    requests: u64,
    placement: Placement,
) {
    eprintln!("[{}] {name}: {}", s.label, client.describe());
    let expect = Expect {
        requests,
        bodies: Bodies::BackendNames,
        kernel_path: true,
    };
    let direct = match differential::run(
        &mut s.bed,
        client,
        Route::Direct,
        differential::direct_limit(),
    ) {
        Ok(o) => o,
        Err(e) => {
            let v = s.harness_error(name, client, e);
            return s.record(v);
        }
    };
    // Agent::start returns within 20 ms of `ready` (it polls the output).
    if let Err(e) = s.start_agent(placement) {
        let v = s.harness_error(name, client, e.context("starting a fresh agent"));
        return s.record(v);
    }
    let rotor = match differential::run(
        &mut s.bed,
        client,
        Route::Rotor,
        rotor_limit(direct.elapsed),
    ) {
        Ok(o) => o,
        Err(e) => {
            let v = s.harness_error(name, client, e);
            return s.record(v);
        }
    };
    let mut v = differential::verdict(&mut s.bed, name, client, &expect, direct, rotor);
    // The agent listed the connection while it ran (compare() then checks
    // it reached the kernel path in one of those samples).
    if v.rotor.agent_samples == 0 {
        v.problems.push(format!(
            "the agent never listed the connection while the client ran ({:.2}s); kernel {:?}",
            v.rotor.elapsed.as_secs_f64(),
            v.rotor.kernel_delta
        ));
        if v.diagnostics.is_empty() {
            v.diagnostics = rotor_tests::probe::report(&mut s.bed);
        }
    }
    s.record(v);
}

#[test]
fn backends_0ms_away_agent_in_clients_cgroup_every_client_sees_what_it_sees_direct() {
    timing(0, Placement::Inside);
}

#[test]
fn backends_1ms_away_agent_outside_clients_cgroup_every_client_sees_what_it_sees_direct() {
    timing(1, Placement::Outside);
}

#[test]
fn backends_10ms_away_agent_in_clients_cgroup_every_client_sees_what_it_sees_direct() {
    timing(10, Placement::Inside);
}

#[test]
fn backends_50ms_away_agent_outside_clients_cgroup_every_client_sees_what_it_sees_direct() {
    timing(50, Placement::Outside);
}
