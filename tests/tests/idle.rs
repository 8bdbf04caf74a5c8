//! Connections that wait. One that idles: the agent looks at a settled
//! connection less and less often (100 ms up to 6.4 s,
//! userspace/src/agent/pace.rs) and re-reads its idle sockets up to 2 s
//! apart (sockmap_io.rs); nothing the client or the Service does may wait
//! for those looks. One slow to send its preface. Ones that wait in the
//! agent's accept queue while the agent does not run.

use std::time::Duration;

use rotor_testbed::load::LoadSpec;
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
    let args = ["--rounds", &rounds, "--idle", &idle, "--gets", &gets];
    let cmd = idle_client(&bed, Duration::from_secs(30), &args);
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
/// server-first protocol (1 s): its endpoints speak HTTP/2, so it is a slow
/// HTTP/2 client and is balanced, not spliced to one endpoint. Under QEMU a
/// burst of 1,000 clients of scale.rs sent their prefaces seconds late;
/// spliced, they were ended by nghttpd with GOAWAY SETTINGS_TIMEOUT
/// (non_h2.rs keeps the splice for endpoints that do not speak HTTP/2).
#[test]
fn a_client_slow_to_send_its_preface_is_balanced() {
    peers::python_has(&["h2"]).expect("python h2");
    let mut bed = TestBed::with_agent(2).expect("test bed with agent");
    let args = [
        "--rounds",
        "2",
        "--idle",
        "0.5",
        "--gets",
        "3",
        "--preface-after",
        "1.5",
    ];
    let cmd = idle_client(&bed, Duration::from_secs(20), &args);
    let report = peers::run_json(cmd, scaled(Duration::from_secs(40)))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", probe::report(&mut bed)));
    let rounds = report["rounds"].as_array().cloned().unwrap_or_default();
    let mut by_endpoint = std::collections::BTreeMap::<String, usize>::new();
    for g in (rounds.iter()).flat_map(|r| r["gets"].as_array().cloned().unwrap_or_default()) {
        if let (200, Some(body)) = (g["status"].as_u64().unwrap_or(0), g["body"].as_str()) {
            *by_endpoint.entry(body.to_string()).or_default() += 1;
        }
    }
    assert!(
        report["errors"].as_array().is_some_and(|e| e.is_empty())
            && by_endpoint.values().sum::<usize>() == 6
            && by_endpoint.len() == 2,
        "6 GETs after a preface 1.5 s late, served by {by_endpoint:?} (want all 6, by both \
         endpoints): {report}\n{}",
        probe::report(&mut bed)
    );
}

/// Connections that wait in the agent's accept queue, their parser states
/// made by sockops, for longer than two of the agent's sweeps of parser
/// states nobody owns (5 s apart, agent/mod.rs): the sweep took them for
/// closed sockets' and the agent, finding no state, left the connections on
/// their original path (here none: they fail). Here the agent is out of file
/// descriptors for 12 s (its RLIMIT_NOFILE lowered below what it has open);
/// a node short of CPU keeps sockets queued as long (6.1 under QEMU did).
/// Once it can accept, every one of them is balanced.
#[test]
fn connections_queued_while_the_agent_cannot_accept_are_balanced() {
    const CONNS: usize = 16;
    const REQUESTS: u64 = 320;
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let pid = bed.agent().expect("agent").pid() as libc::pid_t;
    let limit = OpenFiles::lower(pid).expect("prlimit on the agent");
    let spec = LoadSpec {
        timeout: 60.0,
        ..LoadSpec::whoami(CONNS, 4, REQUESTS)
    };
    let load = bed.spawn_load(&spec);
    // Longer than two sweep periods: the agent's period, not this
    // machine's speed, so not scaled.
    std::thread::sleep(Duration::from_secs(12));
    drop(limit);
    let report = load.and_then(|l| l.finish()).expect("load report");
    let agent = bed.agent().expect("agent");
    let failed_open = agent.kernel_counter("fail_open_agent").unwrap_or(u64::MAX);
    // It retries every 10 ms and says so once per 10 s, not 1,200 times.
    let warnings = agent.stderr_plain().matches("accept failed").count();
    assert!(
        report.failed == 0
            && report.ok == REQUESTS
            && failed_open == 0
            && report.by_body.len() == 3
            && report.by_body.values().all(|n| *n >= REQUESTS / 10)
            && (1..=3).contains(&warnings),
        "{CONNS} connections queued for 12 s while the agent could not accept: load \
         {report:?}, {failed_open} left on their original path by the agent (want 0); want \
         every endpoint >= {}; {warnings} accept warnings (want 1 to 3)\n{}",
        REQUESTS / 10,
        probe::report(&mut bed)
    );
}

/// The agent's open-file limit lowered so that it can open nothing new
/// (accept fails with EMFILE); put back when dropped.
struct OpenFiles {
    pid: libc::pid_t,
    old: libc::rlimit,
}

impl OpenFiles {
    fn lower(pid: libc::pid_t) -> std::io::Result<OpenFiles> {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit(2) reads into `old`, which we own.
        if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let low = libc::rlimit {
            rlim_cur: 1,
            rlim_max: old.rlim_max,
        };
        // SAFETY: prlimit(2) on the agent this test started, from `low`.
        if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &low, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OpenFiles { pid, old })
    }
}

impl Drop for OpenFiles {
    fn drop(&mut self) {
        // SAFETY: as in `lower`, back to the limit it had.
        unsafe {
            libc::prlimit(
                self.pid,
                libc::RLIMIT_NOFILE,
                &self.old,
                std::ptr::null_mut(),
            )
        };
    }
}

/// `idle_client.py` to the Service from the client namespace and the
/// balanced cgroup, its socket timeout `limit` scaled to the machine.
fn idle_client(bed: &TestBed, limit: Duration, args: &[&str]) -> std::process::Command {
    let limit = scaled(limit).as_secs_f64().to_string();
    let mut full = vec!["--addr", "10.96.0.10:8080", "--limit", &limit];
    full.extend_from_slice(args);
    python_script(
        bed.topo.client_ns(),
        Some(bed.cgroup.path()),
        "idle_client.py",
        &full,
    )
}
