//! 1,000 concurrent client connections over 5 endpoints, 200,000 requests:
//! no failure; the agent's memory and the kernel maps' use are reported
//! (stderr, and in any failure) and bounded; everything is released after.

use std::time::{Duration, Instant};

use rotor_testbed::{LoadSpec, TestBed, TestCgroup, Topology};
use rotor_tests::probe::{self, Dmesg};

const CONNECTIONS: usize = 1000;
const REQUESTS: u64 = 200_000;
/// Bound on the agent's resident memory at peak.
const RSS_LIMIT_KIB: u64 = 512 * 1024;

#[test]
fn thousand_connections_200k_requests() {
    rotor_testbed::environment_ok().expect("test environment");
    // Backends without verbose logs (200,000 requests of -v output would dominate the run).
    let topo = Topology::with_counting(5, false).expect("topology");
    let cgroup = TestCgroup::create().expect("cgroup");
    let mut bed = TestBed {
        agent: None,
        cgroup,
        topo,
    };
    bed.start_agent().expect("agent");
    let dmesg = Dmesg::mark();
    let pid = bed.agent().unwrap().pid();
    let rss_idle = probe::rss_kib(pid).unwrap();
    let warm = probe::warm_baseline(&bed).expect("baseline: one request through rotor");
    let maps_idle = probe::agent_maps(pid).unwrap_or_default();

    let spec = LoadSpec {
        timeout: 300.0,
        ..LoadSpec::whoami(CONNECTIONS, 2, REQUESTS)
    };
    let start = Instant::now();
    let load = bed.spawn_load(&spec).expect("rotor-load");
    let (mut rss_peak, mut fds_peak, mut conns_peak) = (rss_idle, 0usize, 0usize);
    let mut maps_peak = None;
    let mut status_errors = 0;
    // Sample until the load client exits.
    loop {
        if let Ok(k) = probe::rss_kib(pid) {
            rss_peak = rss_peak.max(k);
        }
        if let Ok(f) = probe::fd_count(pid) {
            fds_peak = fds_peak.max(f);
        }
        match probe::status(bed.agent().unwrap()) {
            Ok(st) => {
                let (c, _) = probe::conns_and_streams(&st);
                if c > conns_peak {
                    conns_peak = c;
                }
                if maps_peak.is_none() && c >= CONNECTIONS / 2 {
                    maps_peak = Some(probe::agent_maps(pid).unwrap_or_default());
                }
            }
            Err(_) => status_errors += 1,
        }
        if !std::path::Path::new(&format!("/proc/{}", load.pid())).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", load.pid())).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        {
            break;
        }
        if start.elapsed() > Duration::from_secs(330) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let report = load.finish();
    let elapsed = start.elapsed();
    let node_tcp = probe::tcp_trouble(bed.topo.node_ns());
    let client_tcp = probe::tcp_trouble(bed.topo.client_ns());
    let maps_text = |m: &Option<Vec<probe::MapUse>>| match m {
        Some(m) => m.iter().map(|m| format!("  {m}\n")).collect::<String>(),
        None => "  (the agent never held half of the connections at once: not sampled)\n".into(),
    };
    let summary = format!(
        "scale: {CONNECTIONS} connections, {REQUESTS} requests over 5 endpoints in {:.1} s\n\
         agent RSS idle {rss_idle} KiB, peak {rss_peak} KiB; peak fds {fds_peak}; peak connections in status {conns_peak}; \
         status errors {status_errors}\nTCP trouble counters: node namespace {node_tcp:?}, client namespace {client_tcp:?}\n\
         kernel maps idle:\n{}kernel maps at peak:\n{}",
        elapsed.as_secs_f64(),
        maps_idle.iter().map(|m| format!("  {m}\n")).collect::<String>(),
        maps_text(&maps_peak)
    );
    eprintln!("{summary}");
    let report = report
        .unwrap_or_else(|e| panic!("rotor-load: {e:#}\n{summary}\n{}", probe::report(&mut bed)));
    let per: Vec<u64> = (1..=5).map(|k| report.count(&format!("be{k}"))).collect();
    eprintln!(
        "scale: {} ok, {} failed, {:.0} req/s, p50 {} µs, p99 {} µs, per backend {per:?}",
        report.ok,
        report.failed,
        report.rate(),
        report.p50_us,
        report.p99_us
    );
    assert!(
        report.ok == REQUESTS && report.failed == 0,
        "{} ok, {} failed of {REQUESTS}; errors {:?}\n{summary}\n{}",
        report.ok,
        report.failed,
        report.errors,
        probe::report(&mut bed)
    );
    assert!(
        per.iter().all(|c| *c >= REQUESTS / 5 / 2),
        "not spread over the 5 endpoints: {per:?}\n{summary}"
    );
    assert!(
        rss_peak < RSS_LIMIT_KIB,
        "agent RSS peaked at {rss_peak} KiB (limit {RSS_LIMIT_KIB})\n{summary}"
    );

    // Everything released.
    let ((c, s), _) = probe::wait_idle(bed.agent().unwrap(), Duration::from_secs(30)).unwrap();
    let left = probe::wait_maps_back(pid, &warm, Duration::from_secs(15));
    let rss_after = probe::rss_kib(pid).unwrap_or(0);
    eprintln!("scale: after the run {c} connections, {s} open streams, agent RSS {rss_after} KiB, map entries left {left:?}");
    let warnings = dmesg.new_warnings();
    assert!(
        (c, s) == (0, 0) && left.is_empty() && warnings.is_empty(),
        "after 1,000 connections closed: {c} connections, {s} open streams, map entries left {left:?}, \
         kernel warnings {warnings:#?}\n{summary}\n{}",
        probe::report(&mut bed)
    );
}
