//! A connection that idles: the agent looks at a settled connection less
//! and less often (100 ms up to 6.4 s, userspace/src/agent/pace.rs) and
//! re-reads its idle sockets up to 2 s apart (sockmap_io.rs). Nothing the
//! client or the Service does may wait for those looks.

use std::time::Duration;

use rotor_testbed::process::{Child, Stream};
use rotor_testbed::{scaled, TestBed};
use rotor_tests::peers::{self, python_script};
use rotor_tests::probe;
use serde_json::Value;

/// Longer than the agent's back-off takes to reach its longest look
/// (100 ms + 200 ms + … + 3.2 s = 6.3 s).
const IDLE: Duration = Duration::from_secs(10);
const ROUNDS: usize = 4;
const GETS: usize = 3;
/// What a PING or a GET after an idle period may take: far below the
/// looks it must not wait for, far above a loaded host's milliseconds.
const ANSWER: Duration = Duration::from_secs(1);
/// How long before round 2 be3 joins: time to connect to it, never a look.
const JOIN_AHEAD: Duration = Duration::from_secs(2);

/// After each idle period the client's PING (answered by the agent) and its
/// GETs (carried by the kernel) are answered at once, and an endpoint that
/// joined while the connection idled gets its share of the next GETs.
#[test]
fn an_idle_connection_is_answered_at_once_and_follows_the_service() {
    peers::python_has(&["h2"]).expect("python h2");
    let mut bed = TestBed::with_agent(2).expect("test bed with agent");
    let k = bed.topo.add_backend().expect("be3");
    assert_eq!(k, 3);
    let two: Vec<_> = bed.topo.backend_addrs().into_iter().take(2).collect();
    bed.agent().unwrap().set_endpoints(&two).unwrap();

    let (idle, rounds, gets) = (
        IDLE.as_secs_f64().to_string(),
        ROUNDS.to_string(),
        GETS.to_string(),
    );
    let limit = scaled(Duration::from_secs(30)).as_secs_f64().to_string();
    let args = [
        "--addr",
        "10.96.0.10:8080",
        "--rounds",
        &rounds,
        "--idle",
        &idle,
        "--gets",
        &gets,
        "--limit",
        &limit,
    ];
    let cmd = python_script(
        bed.topo.client_ns(),
        Some(bed.cgroup.path()),
        "idle_client.py",
        &args,
    );
    let mut client = Child::spawn("idle_client", cmd, bed.topo.dir()).expect("idle_client.py");
    // be3 joins late in the idle period before round 2, JOIN_AHEAD before
    // its GETs: a join the agent only saw at a look (up to 6.4 s apart)
    // would miss them.
    client
        .wait_for_line(Stream::Stdout, "idle 2", scaled(IDLE * 3))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", probe::report(&mut bed)));
    std::thread::sleep(IDLE - JOIN_AHEAD);
    bed.agent()
        .unwrap()
        .set_endpoints(&bed.topo.backend_addrs())
        .unwrap();
    let status = client
        .wait_timeout(scaled(IDLE * (ROUNDS as u32 + 2)))
        .expect("idle_client.py ends");
    let out = client.output(Stream::Stdout);
    let tail = format!(
        "status {status}; stdout:\n{out}\nstderr:\n{}",
        client.output(Stream::Stderr)
    );
    let report: Value = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report\n{tail}\n{}", probe::report(&mut bed)));
    let rounds = report["rounds"].as_array().cloned().unwrap_or_default();
    assert!(
        report["errors"].as_array().is_some_and(|e| e.is_empty()) && rounds.len() == ROUNDS,
        "{report}\n{tail}\n{}",
        probe::report(&mut bed)
    );
    let answer_ms = scaled(ANSWER).as_secs_f64() * 1000.0;
    for (r, round) in rounds.iter().enumerate().skip(1) {
        let ping = round["ping_ms"].as_f64().unwrap_or(f64::MAX);
        assert!(
            ping < answer_ms,
            "round {r}: the PING after {IDLE:?} idle was answered in {ping:.0} ms: {report}"
        );
        for get in round["gets"].as_array().unwrap() {
            let ms = get["ms"].as_f64().unwrap_or(f64::MAX);
            assert!(
                get["status"] == 200 && ms < answer_ms,
                "round {r}: a GET after {IDLE:?} idle: {get}: {report}"
            );
        }
    }
    let bodies = |from: usize, to: usize| -> Vec<String> {
        rounds[from..to]
            .iter()
            .flat_map(|r| r["gets"].as_array().unwrap().iter())
            .map(|g| g["body"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert!(
        !bodies(0, 2).iter().any(|b| b == "be3"),
        "be3 answered before it joined: {report}"
    );
    // Round-robin over three endpoints: three GETs in a row reach each once.
    for r in 2..ROUNDS {
        let got = bodies(r, r + 1);
        assert!(
            got.iter().any(|b| b == "be3"),
            "round {r}, after be3 joined during the idle period: {got:?}: {report}\n{}",
            probe::report(&mut bed)
        );
    }
}

/// A client that sends its preface only after the agent's wait for a
/// server-first protocol (1 s) is spliced to one endpoint, and its HTTP/2
/// must come through the splice whole, though its socket is in the
/// kernel's socket hash (sockmap_io.rs). Under QEMU such spliced clients of
/// scale.rs were ended by nghttpd with GOAWAY SETTINGS_TIMEOUT; on this
/// host the splice's old plain read served this test too.
#[test]
fn a_client_slow_to_send_its_preface_is_served() {
    peers::python_has(&["h2"]).expect("python h2");
    let mut bed = TestBed::with_agent(2).expect("test bed with agent");
    let limit = scaled(Duration::from_secs(20)).as_secs_f64().to_string();
    let args = [
        "--addr",
        "10.96.0.10:8080",
        "--rounds",
        "2",
        "--idle",
        "0.5",
        "--gets",
        "3",
        "--preface-after",
        "1.5",
        "--limit",
        &limit,
    ];
    let cmd = python_script(
        bed.topo.client_ns(),
        Some(bed.cgroup.path()),
        "idle_client.py",
        &args,
    );
    let report = peers::run_json(cmd, scaled(Duration::from_secs(40)))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", probe::report(&mut bed)));
    let rounds = report["rounds"].as_array().cloned().unwrap_or_default();
    let served = (rounds.iter())
        .flat_map(|r| r["gets"].as_array().cloned().unwrap_or_default())
        .filter(|g| g["status"] == 200 && g["body"].as_str().is_some_and(|b| b.starts_with("be")))
        .count();
    assert!(
        report["errors"].as_array().is_some_and(|e| e.is_empty()) && served == 6,
        "{served} of 6 GETs served: {report}\n{}",
        probe::report(&mut bed)
    );
}
