//! Upstreams shared by the client connections of a node (issue 17;
//! userspace/src/agent/pool.rs): past `--dedicated-upstreams` connections
//! to an endpoint, a client connection's upstream to it goes through the
//! agent's multiplexer for it, which opens at most `--shared-upstreams`
//! connections to the endpoint. Counted where it matters: on each
//! backend's port, in its namespace, while the load runs.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rotor_testbed::backend::BACKEND_PORT;
use rotor_testbed::process::{Child, Stream};
use rotor_testbed::{
    scaled, scaled_secs, uneven_spread, wait_until, Agent, LoadReport, LoadSpec, TestBed,
};
use rotor_tests::peers::{
    self, endpoints_on, grpc_client, n, python_script, Grpc, Running, GRPC_PORT,
};
use rotor_tests::probe;

const BACKENDS: [&str; 3] = ["be1", "be2", "be3"];

fn bed(dedicated: usize, shared: usize) -> TestBed {
    let mut bed = TestBed::new(3).expect("test bed");
    let (d, s) = (dedicated.to_string(), shared.to_string());
    bed.agent = Some(
        Agent::start_with_args(
            &bed.topo,
            &bed.cgroup,
            &bed.topo.backend_addrs(),
            &["--dedicated-upstreams", &d, "--shared-upstreams", &s],
        )
        .expect("agent"),
    );
    bed
}

/// The established connections on `port` in `ns` ("local peer").
fn connections(ns: &str, port: u16) -> HashSet<String> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{ns}"))
        .args(["--", "ss", "-Htn", "state", "established"])
        .output()
        .expect("ss");
    let port = format!(":{port}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().skip(2);
            let (local, peer) = (f.next()?, f.next()?);
            local.ends_with(&port).then(|| format!("{local} {peer}"))
        })
        .collect()
}

/// How many connections each backend's namespace holds on `port`, be1
/// first.
fn held(namespaces: &[String], port: u16) -> Vec<usize> {
    (namespaces.iter())
        .map(|ns| connections(ns, port).len())
        .collect()
}

/// Runs `work` while counting each backend's connections every 20 ms;
/// what it returned and the most each backend held at once.
fn counting<R>(bed: &TestBed, port: u16, work: impl FnOnce() -> R) -> (R, Vec<usize>) {
    let namespaces: Vec<String> = (1..=3)
        .map(|k| bed.topo.backend(k).unwrap().netns().to_string())
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut most = vec![0; namespaces.len()];
            while !done.load(Ordering::Relaxed) {
                for (m, n) in most.iter_mut().zip(held(&namespaces, port)) {
                    *m = (*m).max(n);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            most
        })
    };
    let r = work();
    done.store(true, Ordering::Relaxed);
    (r, sampler.join().expect("sampler"))
}

/// Runs `spec`, counting as [`counting`] does.
fn load_counting(bed: &TestBed, spec: &LoadSpec) -> (LoadReport, Vec<usize>) {
    let (report, most) = counting(bed, BACKEND_PORT, || {
        bed.spawn_load(spec).expect("rotor-load").finish()
    });
    (report.expect("rotor-load report"), most)
}

/// 40 client connections, 4 streams each, 4,000 requests, with 2
/// dedicated and 2 shared upstreams per endpoint: every request answered,
/// spread evenly, and no backend ever holds more than 4 connections from
/// the node (without sharing it would hold 40: the test below).
#[test]
fn forty_client_connections_hold_at_most_the_limit_to_each_endpoint() {
    let mut bed = bed(2, 2);
    let (report, most) = load_counting(&bed, &LoadSpec::whoami(40, 4, 4000));
    let diag = bed.diagnostics();
    assert_eq!((report.ok, report.failed), (4000, 0), "{report:?}\n{diag}");
    assert!(
        most.iter().all(|n| (1..=4).contains(n)),
        "connections per backend at most: {most:?} (limit 2 + 2)\n{diag}"
    );
    let seen = report.by_body.iter().map(|(k, v)| (k.as_str(), *v));
    if let Some(e) = uneven_spread(seen, &BACKENDS, 4000, 400) {
        panic!("responses: {e}\n{diag}");
    }
    eprintln!("shared: at most {most:?} connections per backend");
    let _ = bed.agent.take();
}

/// The control: the same count without sharing sees every client
/// connection's own upstream, so the check above can fail.
#[test]
fn without_sharing_each_client_connection_holds_its_own() {
    let mut bed = bed(2, 0);
    let (report, most) = load_counting(&bed, &LoadSpec::whoami(40, 1, 800));
    let diag = bed.diagnostics();
    assert_eq!((report.ok, report.failed), (800, 0), "{report:?}\n{diag}");
    assert!(
        most.iter().all(|n| *n > 4),
        "without sharing a backend held at most {most:?}, not one per client connection\n{diag}"
    );
    eprintln!("not shared: at most {most:?} connections per backend");
    let _ = bed.agent.take();
}

/// Streams the endpoints' multiplexers have carried, all endpoints, from
/// a status document.
fn multiplexed(status: &serde_json::Value) -> u64 {
    (status["upstreams"].as_array().cloned().unwrap_or_default())
        .iter()
        .map(|u| u["shared"]["streams"].as_u64().unwrap_or(0))
        .sum()
}

/// How long the busy connection runs; the idle ones wait that long and
/// more before their second round.
const BUSY: Duration = Duration::from_secs(4);
const IDLE_CLIENTS: usize = 6;

/// The seats follow the load (userspace/src/agent/pool/seats.rs): six idle
/// connections that made one round of requests hold both dedicated
/// upstreams of each endpoint (the first two) or go through its
/// multiplexer; a busy connection opened after them starts on the
/// multiplexers, gets seats the idle holders give up, and its streams go
/// the kernel's way. In the second half of its run the multiplexers carry
/// under a tenth of its streams (before seats moved, all of them), every
/// request of both kinds of connection is answered, and no backend ever
/// holds more than the 2 + 1 connections from the node.
#[test]
fn a_busy_connection_gets_the_seats_idle_ones_held() {
    peers::python_has(&["h2"]).expect("python h2");
    let mut bed = bed(2, 1);
    let idle = scaled(BUSY) + scaled(Duration::from_secs(5));
    let limit = (idle * 3).as_secs_f64().to_string();
    let idle_s = idle.as_secs_f64().to_string();
    let args = [
        "--addr",
        "10.96.0.10:8080",
        "--limit",
        &limit,
        "--rounds",
        "2",
        "--idle",
        &idle_s,
        "--gets",
        "3",
    ];
    let mut clients: Vec<Child> = (0..IDLE_CLIENTS)
        .map(|k| {
            let cmd = python_script(
                bed.topo.client_ns(),
                Some(bed.cgroup.path()),
                "idle_client.py",
                &args,
            );
            Child::spawn(&format!("idle_client-{k}"), cmd, bed.topo.dir()).expect("idle_client.py")
        })
        .collect();
    for c in &mut clients {
        c.wait_for_line(Stream::Stdout, "idle 1", scaled(Duration::from_secs(20)))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", bed.diagnostics()));
    }
    let agent = bed.agent.as_ref().expect("agent");
    let before = multiplexed(&probe::status(agent).expect("status"));
    assert!(
        before > 0,
        "the idle connections past the seats went through the multiplexers"
    );

    // the multiplexers' count while the busy connection runs, every 100 ms
    let spec = LoadSpec {
        connections: 1,
        streams: 4,
        requests: None,
        duration: Some(scaled(BUSY).as_secs_f64()),
        ..LoadSpec::default()
    };
    let (report, most, samples) = {
        let admin = agent.admin_socket().to_path_buf();
        let sampler = Sampler::start(admin);
        let (report, most) = load_counting(&bed, &spec);
        (report, most, sampler.stop())
    };
    let diag = bed.diagnostics();
    assert!(report.ok > 0 && report.failed == 0, "{report:?}\n{diag}");
    assert!(
        most.iter().all(|n| *n <= 3),
        "connections per backend at most: {most:?} (2 seats + 1 shared)\n{diag}"
    );
    // the second half of the run, as the samples saw it
    let (first, last) = (samples.first().copied(), samples.last().copied());
    let (Some((t0, _)), Some((t1, end))) = (first, last) else {
        panic!("no sample of the multiplexers' count\n{diag}");
    };
    let mid = t0 + (t1 - t0) / 2;
    let at_mid = (samples.iter())
        .find(|(t, _)| *t >= mid)
        .map_or(end, |(_, c)| *c);
    let late = end - at_mid;
    let all = end - before;
    eprintln!(
        "busy connection: {} requests; multiplexers carried {all} streams during it, {late} in its second half",
        report.ok
    );
    assert!(
        late * 20 < report.ok,
        "the multiplexers carried {late} streams in the second half of a run of {} requests ({all} in all): the busy connection got no seat\n{diag}",
        report.ok
    );
    for (k, mut c) in clients.into_iter().enumerate() {
        let status = c.wait_timeout(idle * 2).expect("idle_client.py ends");
        let out = c.output(Stream::Stdout);
        let report: serde_json::Value = (out.lines().rev())
            .find(|l| l.starts_with('{'))
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("idle client {k}: no report ({status})\n{out}\n{diag}"));
        let gets: Vec<_> = (report["rounds"].as_array().cloned().unwrap_or_default())
            .iter()
            .flat_map(|r| r["gets"].as_array().cloned().unwrap_or_default())
            .collect();
        assert!(
            report["errors"].as_array().is_some_and(|e| e.is_empty())
                && gets.len() == 6
                && gets.iter().all(|g| g["status"] == 200),
            "idle client {k}, after the busy one took its seat: {report}\n{diag}"
        );
    }
    let _ = bed.agent.take();
}

/// Reads the multiplexers' count from the agent's status on a thread,
/// about every 300 ms (a status read without a request takes 200 ms).
struct Sampler {
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, u64)>>,
}

impl Sampler {
    fn start(admin: std::path::PathBuf) -> Sampler {
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    if let Ok(status) = probe::status_at(&admin) {
                        seen.push((Instant::now(), multiplexed(&status)));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                seen
            })
        };
        Sampler { done, thread }
    }

    fn stop(self) -> Vec<(Instant, u64)> {
        self.done.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler")
    }
}

/// gRPC's four kinds of call from tonic to Python grpcio servers, every
/// stream through the multiplexers (no dedicated upstream, one shared
/// connection per endpoint): trailers, client and server streaming and
/// bidirectional calls pass, and each unary call is balanced.
#[test]
fn grpc_calls_of_every_kind_pass_through_shared_connections() {
    Grpc::Python.available().expect("gRPC server peer");
    Grpc::Tonic.available().expect("gRPC client peer");
    let mut bed = TestBed::new(3).expect("test bed");
    peers::ipv4_only_client(&bed.topo).expect("IPv4-only client");
    let _servers = peers::start_grpc_servers(&bed.topo, Grpc::Python, &[]).expect("servers");
    bed.agent = Some(
        Agent::start_with_args(
            &bed.topo,
            &bed.cgroup,
            &endpoints_on(&bed.topo, GRPC_PORT),
            &["--dedicated-upstreams", "0", "--shared-upstreams", "1"],
        )
        .expect("agent"),
    );
    let args = peers::ALL_CALL_KINDS;
    // counted while the calls run: the multiplexers stop, and their
    // connections close, once the client's connection has gone
    let (r, most) = counting(&bed, GRPC_PORT, || {
        grpc_client(
            &bed.topo,
            Some(&bed.cgroup),
            Grpc::Tonic,
            args,
            Duration::from_secs(120),
        )
    });
    let r = r.unwrap_or_else(|e| panic!("tonic client: {e:#}\n{}", probe::report(&mut bed)));
    for (kind, calls) in [
        ("unary", 300),
        ("server_stream", 3),
        ("client_stream", 3),
        ("bidi", 3),
    ] {
        let k = &r[kind];
        assert!(
            n(k, "calls") == calls
                && n(k, "ok") == calls
                && n(k, "corrupt") == 0
                && n(k, "mixed") == 0,
            "{kind}: want {calls} calls, all ok and intact; got {k}\n{}",
            probe::report(&mut bed)
        );
    }
    let per: Vec<u64> = (1..=3)
        .map(|k| n(&r["unary"]["backends"], &format!("be{k}")))
        .collect();
    assert!(
        per.iter().all(|c| *c >= 50),
        "unary calls per backend: {per:?}"
    );
    assert!(
        most.iter().all(|c| *c == 1),
        "connections per backend at most, during the calls: {most:?} (one shared)"
    );
}

/// A header block that the agent passes on as it came and nobody can
/// decode (hostile_headers.py `continuations`: a reference to an empty
/// dynamic table) reaches the multiplexer, which ends that client's
/// upstream to it; the shared connections, carrying another client's
/// steady load meanwhile, are the same TCP connections after as before,
/// and that load loses nothing.
#[test]
fn an_undecodable_header_block_does_not_reach_the_shared_connections() {
    let mut bed = bed(0, 1);
    let namespaces: Vec<String> = (1..=3)
        .map(|k| bed.topo.backend(k).unwrap().netns().to_string())
        .collect();
    // The load must outlive the attack (checked below): once it ends, its
    // client connections close and the multiplexers stop with their
    // connections. Under QEMU the attacker's wait alone is 100 s, and 6 s
    // on a host busy with a VM were too short.
    let duration = scaled_secs(12.0);
    let started = Instant::now();
    let load = bed
        .spawn_load(&LoadSpec {
            connections: 2,
            streams: 2,
            requests: None,
            duration: Some(duration),
            rate: Some(200.0),
            timeout: 40.0,
            ..LoadSpec::default()
        })
        .expect("steady load");
    let all_held = wait_until(Duration::from_secs(10), || {
        held(&namespaces, BACKEND_PORT).iter().all(|n| *n > 0)
    });
    assert!(
        all_held.is_some(),
        "the steady load reached no shared connection to some backend: {:?}",
        held(&namespaces, BACKEND_PORT)
    );
    let before: Vec<HashSet<String>> = namespaces
        .iter()
        .map(|ns| connections(ns, BACKEND_PORT))
        .collect();
    let wait = scaled_secs(3.0).to_string();
    let cmd = python_script(
        bed.topo.client_ns(),
        Some(bed.cgroup.path()),
        "hostile_headers.py",
        &[
            "continuations",
            "--frames",
            "1",
            "--addr",
            "10.96.0.10:8080",
            "--wait",
            &wait,
        ],
    );
    let attack = Running::spawn(
        "hostile-continuations",
        cmd,
        bed.topo.dir(),
        Duration::from_secs(60),
    )
    .expect("attacker")
    .finish()
    .unwrap_or_else(|e| panic!("attacker: {e:#}\n{}", probe::report(&mut bed)));
    let after: Vec<HashSet<String>> = namespaces
        .iter()
        .map(|ns| connections(ns, BACKEND_PORT))
        .collect();
    let counted_at = started.elapsed();
    assert!(
        counted_at.as_secs_f64() < duration,
        "the attack outlasted the steady load ({counted_at:?} of {duration} s): the \
         connections after it say nothing"
    );
    // `rotor status` says the same while the load runs: no own upstream,
    // one shared connection to each endpoint
    let status = probe::status(bed.agent().unwrap()).expect("status");
    let upstreams = status["upstreams"].as_array().cloned().unwrap_or_default();
    let counts: Vec<(u64, u64)> = (upstreams.iter())
        .map(|u| (n(u, "dedicated"), n(&u["shared"], "connections")))
        .collect();
    let report = load.finish().expect("steady load report");
    let diag = bed.diagnostics();
    for (k, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(
            !b.is_empty() && b.is_subset(a),
            "be{}: connections before the attack {b:?}, after {a:?}\nattacker: {attack}\n{diag}",
            k + 1
        );
    }
    assert!(
        report.ok > 0 && report.failed == 0,
        "steady load: {report:?}\nattacker: {attack}\n{diag}"
    );
    assert_eq!(counts, [(0, 1); 3], "status upstreams: {upstreams:?}");
    eprintln!("attacker saw: {attack}");
    let _ = bed.agent.take();
}
