//! Hostile endpoints: what one endpoint sends can cost the agent only a
//! bounded amount of memory, ends only its own upstream, and no other
//! connection notices.

use std::net::SocketAddrV4;
use std::time::Duration;

use rotor_tests::peers::{self, python_script, run_json};
use rotor_tests::probe::{self, Dmesg};
use rotor_tests::{backend_addr, Agent, Child, LoadSpec, Stream, TestBed};
use serde_json::Value;

const PORT: u16 = 8081;
/// What the hostile endpoint floods: 16 times the agent's bound for one queue.
const FLOOD: &str = "67108864";
/// Resident memory the agent may gain during the flood (its bounds are 4 MiB
/// of control frames and 8 MiB of DATA per queue).
const RSS_CEILING_KIB: u64 = 32 * 1024;

/// Three endpoints; be2 is flood_server.py (correct but for /flood).
fn bed_with_flooder(mode: &str) -> (TestBed, Child) {
    peers::python_has(&["h2"]).expect("python h2");
    let mut bed = TestBed::new(3).expect("test bed");
    let ns = bed.topo.backend(2).unwrap().netns().to_string();
    let flooder = peers::spawn_in_backend(
        &bed.topo,
        "flood-server-be2",
        python_script(
            &ns,
            None,
            "flood_server.py",
            &[
                "--name",
                "be2",
                "--port",
                &PORT.to_string(),
                "--mode",
                mode,
                "--bytes",
                FLOOD,
            ],
        ),
    )
    .expect("flood server in be2");
    let mut endpoints = bed.topo.backend_addrs();
    endpoints[1] = SocketAddrV4::new(*backend_addr(2).ip(), PORT);
    bed.agent = Some(Agent::start(&bed.topo, &bed.cgroup, &endpoints).expect("agent"));
    (bed, flooder)
}

/// A client whose window stays at 65,535 asks be2 for /flood: be2 answers
/// with more than that window, then 64 MiB of `mode` frames that must wait
/// in the agent behind the DATA the client has no window for. The agent
/// stops at its bound and drops be2's upstream with GOAWAY (`code`); the
/// flooded stream is cancelled; the agent grows by less than
/// RSS_CEILING_KIB; a steady load on another connection succeeds
/// throughout (be2 answers it too, until it is dropped).
fn flood(mode: &str, code: u64) {
    let (mut bed, flooder) = bed_with_flooder(mode);
    let dmesg = Dmesg::mark();
    let pid = bed.agent().unwrap().pid();
    let rss_before = probe::rss_kib(pid).expect("agent rss");
    let load = bed
        .spawn_load(&LoadSpec {
            duration: Some(4.0),
            requests: None,
            ..LoadSpec::whoami(1, 4, 0)
        })
        .expect("steady load");
    std::thread::sleep(Duration::from_millis(500));
    // Round robin: the connection's first stream may go to be1 or be3;
    // 3 requests reach every endpoint once.
    let attacker = python_script(
        bed.topo.client_ns(),
        Some(bed.cgroup.path()),
        "h2_client.py",
        &[
            "h2",
            "--addr",
            "10.96.0.10:8080",
            "--path",
            "/flood",
            "--requests",
            "3",
            "--concurrency",
            "3",
            "--conn-window",
            "65535",
            "--no-ack",
            "--timeout",
            "8",
        ],
    );
    let mut peak = rss_before;
    let watcher = std::thread::spawn(move || {
        let mut peak = 0;
        for _ in 0..60 {
            peak = peak.max(probe::rss_kib(pid).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(100));
        }
        peak
    });
    let attack: Value = run_json(attacker, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("attacker client: {e:#}"));
    peak = peak.max(watcher.join().unwrap_or(0));
    let report = load.finish().expect("load report");
    let out = flooder.output(Stream::Stdout);
    let goaway = out
        .lines()
        .find_map(|l| l.strip_prefix("goaway "))
        .and_then(|c| c.trim().parse::<u64>().ok());
    let grown = peak.saturating_sub(rss_before);
    let warnings = dmesg.new_warnings();
    assert!(
        goaway == Some(code)
            && grown < RSS_CEILING_KIB
            && report.failed == 0
            && report.ok > 100
            && warnings.is_empty(),
        "be2 flooded {mode} frames behind a closed client window: be2 got GOAWAY {goaway:?} (want \
         {code}); agent grew by {grown} KiB (want < {RSS_CEILING_KIB}); steady load on another \
         connection: {report:?} (want no failure); kernel warnings: {warnings:?}\nattacker: \
         {attack}\nbe2: {out}\n{}",
        probe::report(&mut bed)
    );
    bed.check_agent().expect("agent alive");
}

#[test]
fn endpoint_flooding_unknown_frames_loses_only_its_upstream() {
    flood("control", 0xb); // ENHANCE_YOUR_CALM
}

#[test]
fn endpoint_ignoring_flow_control_loses_only_its_upstream() {
    flood("data", 0x3); // FLOW_CONTROL_ERROR
}
