//! Upstreams shared by the client connections of a node (issue 17;
//! userspace/src/agent/pool.rs): past `--dedicated-upstreams` connections
//! to an endpoint, a client connection's upstream to it goes through the
//! agent's multiplexer for it, which opens at most `--shared-upstreams`
//! connections to the endpoint. Counted where it matters: on each
//! backend's port, in its namespace, while the load runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rotor_testbed::backend::BACKEND_PORT;
use rotor_testbed::{uneven_spread, Agent, LoadReport, LoadSpec, TestBed};

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

/// Established connections on the backend port in each backend's
/// namespace, be1 first.
fn held(namespaces: &[String]) -> Vec<usize> {
    namespaces
        .iter()
        .map(|ns| {
            let out = std::process::Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{ns}"))
                .args(["--", "ss", "-Htn", "state", "established"])
                .output()
                .expect("ss");
            let port = format!(":{BACKEND_PORT}");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.split_whitespace().nth(2).is_some_and(|a| a.ends_with(&port)))
                .count()
        })
        .collect()
}

/// Runs `spec` while counting each backend's connections every 20 ms;
/// the report and the most each backend held at once.
fn load_counting(bed: &TestBed, spec: &LoadSpec) -> (LoadReport, Vec<usize>) {
    let namespaces: Vec<String> = (1..=3)
        .map(|k| bed.topo.backend(k).unwrap().netns().to_string())
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut most = vec![0; namespaces.len()];
            while !done.load(Ordering::Relaxed) {
                for (m, n) in most.iter_mut().zip(held(&namespaces)) {
                    *m = (*m).max(n);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            most
        })
    };
    let load = bed.spawn_load(spec).expect("rotor-load");
    let report = load.finish();
    done.store(true, Ordering::Relaxed);
    let most = sampler.join().expect("sampler");
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
