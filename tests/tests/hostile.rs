//! Hostile endpoints (rotor issue 11, `tests/peers/flood_server.py`): what
//! one endpoint sends costs the agent a bounded amount of memory, ends only
//! its own upstream with the answer RFC 9113 gives, and no other connection
//! notices; and many endpoints each within their bounds cannot together
//! take more than `--max-queued-bytes` (userspace/src/agent/budget.rs).
//!
//! The agent's VmRSS is sampled every 20 ms from before the attack to its
//! end; the kernel must log no warning.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use rotor_testbed::{backend_addr, scaled, scaled_secs, Agent, Child, LoadSpec, Stream, TestBed};
use rotor_tests::peers::{self, python_script, run_json};
use rotor_tests::probe::{self, Dmesg};
use serde_json::Value;

const PORT: u16 = 8081;
/// What the flood tests' endpoint floods: 16 times the agent's bound for
/// one queue.
const FLOOD: &str = "67108864";
/// Resident memory the agent may gain while one endpoint floods: the
/// flooded queue holds at most 8 MiB of DATA or 4 MiB of other frames, its
/// reader 1 MiB on the way (endpoint_socket.rs READ_AHEAD); the rest is the
/// allocator's and the steady load's. Before the reader was bounded the
/// agent grew by 82 MiB under a CPU hog.
const RSS_CEILING_KIB: u64 = 32 * 1024;
const ENHANCE_YOUR_CALM: u64 = 0xb;
const FLOW_CONTROL_ERROR: u64 = 0x3;

/// Three endpoints; be2 is flood_server.py (correct but for /flood), which
/// floods `bytes` of `mode` frames.
fn bed_with_flooder(mode: &str, bytes: &str, agent_args: &[&str]) -> (TestBed, Child) {
    peers::python_has(&["h2"]).expect("python h2");
    let mut bed = TestBed::new(3).expect("test bed");
    let ns = bed.topo.backend(2).unwrap().netns().to_string();
    let port = PORT.to_string();
    let args = [
        "--name", "be2", "--port", &port, "--mode", mode, "--bytes", bytes,
    ];
    let mut flooder = peers::spawn_in_backend(
        &bed.topo,
        "flood-server-be2",
        python_script(&ns, None, "flood_server.py", &args),
    )
    .expect("flood server in be2");
    flooder
        .wait_for_line(Stream::Stdout, "listening", Duration::from_secs(10))
        .expect("flood server listening");
    let mut endpoints = bed.topo.backend_addrs();
    endpoints[1] = SocketAddrV4::new(*backend_addr(2).ip(), PORT);
    bed.agent = Some(
        Agent::start_with_args(&bed.topo, &bed.cgroup, &endpoints, agent_args).expect("agent"),
    );
    (bed, flooder)
}

/// A client whose connection window stays at 65,535: 3 requests for
/// /flood, one per endpoint (round robin); be2 answers with more than the
/// window, then floods.
fn attacker(bed: &TestBed, timeout: &str) -> std::process::Command {
    python_script(
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
            timeout,
        ],
    )
}

/// The agent's VmRSS, sampled every 20 ms on a thread until `stop`.
struct RssWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(probe::rss_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        RssWatch { stop, thread }
    }

    fn peak(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap_or(0)
    }
}

/// `goaway CODE` lines the flood server printed.
fn goaways(out: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| l.strip_prefix("goaway "))
        .filter_map(|c| c.trim().parse().ok())
        .collect()
}

/// be2 answers the attacker's request with more than its window, then 64
/// MiB of `mode` frames that must wait in the agent behind the DATA the
/// client has no window for. The agent stops at its bound and drops be2's
/// upstream: be2 reads GOAWAY(`code`) and its connection ends; the agent
/// grows by less than RSS_CEILING_KIB; a steady load on another
/// connection (be2 answers it too, on its own upstream) succeeds
/// throughout.
fn flood(mode: &str, code: u64) {
    let (mut bed, flooder) = bed_with_flooder(mode, FLOOD, &[]);
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
    let watch = RssWatch::start(pid);
    // The attacker's own time scales like every bound of the tests: an
    // unscaled 8 s under QEMU left before a slow agent could reach its bound.
    let patience = scaled_secs(8.0).to_string();
    let attack: Value = run_json(attacker(&bed, &patience), Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("attacker client: {e:#}"));
    // be2's goodbye takes up to a second after the drop
    let started = Instant::now();
    while !flooder
        .output(Stream::Stdout)
        .contains("closed after flood")
        && started.elapsed() < scaled(Duration::from_secs(5))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = load.finish().expect("load report");
    let peak = watch.peak();
    let out = flooder.output(Stream::Stdout);
    let grown = peak.saturating_sub(rss_before);
    eprintln!("{mode} flood: agent VmRSS {rss_before} KiB before, peak {peak} KiB");
    let warnings = dmesg.new_warnings();
    assert!(
        goaways(&out) == [code]
            && out.contains("closed after flood")
            && grown < RSS_CEILING_KIB
            && report.failed == 0
            && report.ok > 100
            && warnings.is_empty(),
        "be2 flooded {mode} frames behind a closed client window: be2 got GOAWAYs {:?} (want \
         [{code}]) and its connection {} (want closed); agent grew by {grown} KiB (want < \
         {RSS_CEILING_KIB}); steady load on another connection: {report:?} (want no failure); \
         kernel warnings: {warnings:?}\nattacker: {attack}\nbe2: {out}\n{}",
        goaways(&out),
        if out.contains("closed after flood") {
            "closed"
        } else {
            "stayed open"
        },
        probe::report(&mut bed)
    );
    bed.check_agent().expect("agent alive");
}

#[test]
fn endpoint_flooding_headers_loses_only_its_upstream() {
    flood("control", ENHANCE_YOUR_CALM);
}

#[test]
fn endpoint_ignoring_flow_control_loses_only_its_upstream() {
    flood("data", FLOW_CONTROL_ERROR);
}

/// The node's budget as `rotor status --json` shows it.
fn budget(bed: &TestBed) -> Value {
    bed.agent()
        .expect("agent")
        .status()
        .map(|s| s["budget"].clone())
        .unwrap_or(Value::Null)
}

fn field(b: &Value, name: &str) -> u64 {
    b[name].as_u64().unwrap_or(0)
}

/// Waits until `pred` holds for the budget (or `limit` passes); the last one read.
fn wait_budget(bed: &TestBed, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let limit = rotor_testbed::scaled(limit);
    let started = Instant::now();
    loop {
        let b = budget(bed);
        if pred(&b) || started.elapsed() > limit {
            return b;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 16 MiB, against attackers of 3.35 MiB each: four of them (13.4 MiB, and
/// up to 1 MiB more on its way from a reader) stay under it; the fifth
/// passes it, and after the largest is cut the rest (at least 16 − 3.35
/// MiB) are still over the three quarters (12 MiB) under which admission
/// opens again. With four attackers no size does both: cutting one of n
/// equal holders leaves over three quarters only if each is under a quarter.
const BUDGET: u64 = 16 << 20;
/// What one attacking connection makes the agent hold: be2's 3.35 MiB of
/// DATA past the client's window (and past every window the agent granted
/// be2), well within the 8 MiB one queue may hold.
const PER_ATTACKER: &str = "3500000";
const ATTACKERS: u64 = 5;

/// Five connections whose endpoint each sends 3.35 MiB beyond the client's
/// window (each within the per-upstream bound) hold more than a 16 MiB
/// `--max-queued-bytes` together: when the fifth passes it, the upstream
/// holding the most is dropped with GOAWAY ENHANCE_YOUR_CALM (the others
/// are left: 4 × 3.35 MiB is under the budget again); while the total stays
/// over three quarters of the budget, new connections are left on their
/// original path (kube-proxy's rule on the node, to be1) and served; once
/// the attackers are gone, new connections are balanced again. A steady
/// connection beside it all is served throughout, and the agent's RSS stays
/// under its baseline + the budget + 32 MiB.
#[test]
fn many_endpoints_within_their_bounds_cannot_pass_the_node_budget() {
    let budget_arg = BUDGET.to_string();
    let (mut bed, flooder) =
        bed_with_flooder("data", PER_ATTACKER, &["--max-queued-bytes", &budget_arg]);
    // where a connection the agent leaves on its original path ends up
    (bed.topo.node_dnat(bed.topo.backend_addrs()[0])).expect("node DNAT");
    let dmesg = Dmesg::mark();
    let pid = bed.agent().unwrap().pid();
    // one request first: the agent's buffers for a connection exist
    let warm = bed.load(&LoadSpec::whoami(1, 1, 3)).expect("warm-up");
    let rss_before = probe::rss_kib(pid).expect("agent rss");
    let watch = RssWatch::start(pid);
    let steady = bed
        .spawn_load(&LoadSpec {
            duration: Some(20.0),
            requests: None,
            rate: Some(200.0),
            timeout: 40.0,
            ..LoadSpec::whoami(1, 2, 0)
        })
        .expect("steady load");
    let mut attackers = Vec::new();
    let mut held = Vec::new();
    for k in 0..ATTACKERS {
        let name = format!("attacker-{k}");
        let patience = scaled_secs(40.0).to_string();
        let child =
            Child::spawn(&name, attacker(&bed, &patience), bed.topo.dir()).expect("attacker");
        attackers.push(child);
        // each one's bytes are in the agent before the next starts
        let want = ((k + 1) * 3) << 20;
        let b = wait_budget(&bed, Duration::from_secs(10), |b| {
            field(b, "queued_bytes") >= want.min(BUDGET - (1 << 20))
                || field(b, "cut_endpoints") > 0
        });
        held.push(field(&b, "queued_bytes"));
    }
    let over = wait_budget(&bed, Duration::from_secs(10), |b| {
        field(b, "cut_endpoints") > 0 && b["over"].as_bool() == Some(true)
    });
    // be2 reads the GOAWAY of the upstream that was cut
    let started = Instant::now();
    while goaways(&flooder.output(Stream::Stdout)).is_empty()
        && started.elapsed() < scaled(Duration::from_secs(5))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let counter = |bed: &TestBed, name: &str| {
        bed.agent()
            .expect("agent")
            .kernel_counter(name)
            .unwrap_or(0)
    };
    let rewrites0 = counter(&bed, "connect_rewrite");
    let while_over = bed
        .load(&LoadSpec {
            timeout: 10.0,
            ..LoadSpec::whoami(2, 2, 40)
        })
        .expect("new connections while over the budget");
    let after_over = budget(&bed);
    let rewrites1 = counter(&bed, "connect_rewrite");

    drop(attackers);
    let under = wait_budget(&bed, Duration::from_secs(10), |b| {
        b["over"].as_bool() == Some(false)
    });
    let again = bed
        .load(&LoadSpec {
            timeout: 10.0,
            ..LoadSpec::whoami(2, 2, 60)
        })
        .expect("new connections under the budget");
    let after_under = budget(&bed);
    let steady = steady.finish().expect("steady load");
    let peak = watch.peak();
    let out = flooder.output(Stream::Stdout);
    let warnings = dmesg.new_warnings();
    let grown = peak.saturating_sub(rss_before);
    let ceiling = BUDGET / 1024 + 32 * 1024;
    eprintln!(
        "budget: agent VmRSS {rss_before} KiB before, peak {peak} KiB; peak queued {} bytes",
        field(&after_under, "peak_queued_bytes")
    );
    let diag = |bed: &mut TestBed| {
        format!(
            "warm-up {warm:?}\nqueued after each attacker: {held:?}\nonce over: {over}\n\
             new connections while over: {while_over:?}, budget then {after_over}, \
             connect rewrites {rewrites0} -> {rewrites1}\nafter the attackers left: {under}\n\
             new connections then: {again:?}, budget then {after_under}\nsteady: {steady:?}\n\
             agent grew by {grown} KiB (ceiling {ceiling} KiB)\nkernel warnings: {warnings:?}\n\
             be2: {out}\n{}",
            probe::report(bed)
        )
    };
    // the largest was cut with the right code, and no more than needed
    assert_eq!(
        (field(&over, "cut_endpoints"), goaways(&out)),
        (1, vec![ENHANCE_YOUR_CALM]),
        "one upstream cut, with GOAWAY ENHANCE_YOUR_CALM\n{}",
        diag(&mut bed)
    );
    assert_eq!(field(&after_under, "cut_clients"), 0, "{}", diag(&mut bed));
    // new connections while over: all served, none through rotor
    assert_eq!(
        (
            while_over.ok,
            while_over.failed,
            while_over.by_body.get("be1").copied()
        ),
        (40, 0, Some(40)),
        "new connections while over the budget must be served on their original path (be1)\n{}",
        diag(&mut bed)
    );
    assert_eq!(
        (
            field(&after_over, "fail_open") - field(&over, "fail_open"),
            rewrites1 - rewrites0
        ),
        (2, 2),
        "the 2 new connections were redirected to the agent and left on their original path\n{}",
        diag(&mut bed)
    );
    // under the budget again: balanced again
    assert!(
        again.ok == 60
            && again.failed == 0
            && field(&after_under, "fail_open") == field(&after_over, "fail_open")
            && again.by_body.len() == 3,
        "once under the budget new connections must be balanced again\n{}",
        diag(&mut bed)
    );
    assert!(
        steady.failed == 0 && steady.ok > 1000,
        "the steady connection must be served throughout\n{}",
        diag(&mut bed)
    );
    assert!(grown < ceiling, "agent grew too much\n{}", diag(&mut bed));
    assert!(warnings.is_empty(), "{}", diag(&mut bed));
    assert!(
        bed.agent()
            .expect("agent")
            .stderr_plain()
            .contains("the largest holder is cut"),
        "the agent did not log the cut\n{}",
        diag(&mut bed)
    );
    bed.check_agent().expect("agent alive");
}
