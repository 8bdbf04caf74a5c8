//! The agent out of open files.

use std::time::Duration;

use rotor_testbed::agent::{agent_wrapper, Agent};
use rotor_testbed::process::netns_command;
use rotor_testbed::tools::h2load;
use rotor_testbed::{scaled, wait_until, Child, Stream, TestBed};
use rotor_tests::probe;
use serde_json::Value;

/// The agent's soft and hard RLIMIT_NOFILE: room for a few dozen carried
/// connections to 3 endpoints after its maps, listeners and spare taps.
const LIMIT: u64 = 600;
/// Client connections held at once: more than the limit lets it carry.
const CLIENTS: usize = 120;

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn counter(status: &Value, name: &str) -> u64 {
    (status["kernel"].as_array())
        .and_then(|a| a.iter().find(|kv| kv[0] == name))
        .and_then(|kv| kv[1].as_u64())
        .unwrap_or_else(|| panic!("no counter {name} in {status}"))
}

/// An agent whose hard open file limit (600) is far below what 120 held
/// client connections to 3 endpoints cost it carries what fits and leaves
/// the rest on their original path: every client gets its answer, the
/// agent never reaches its limit (before, accepts failed with EMFILE,
/// clients hung, and `rotor status` did not answer: cli.rs's 5,000
/// connections under a limit of 20,000), `rotor status` answers while the
/// clients hold, and once they are gone new connections are carried again.
#[test]
fn out_of_open_files_new_clients_keep_their_path_and_status_answers() {
    let mut bed = TestBed::new(3).expect("test bed");
    // the original path: kube-proxy's rules where the client dials (the
    // gate) and on the node (the agent's splice)
    bed.topo.kube_proxy_dnat().expect("kube-proxy DNAT");
    (bed.topo.node_dnat(bed.topo.backend_addrs()[0])).expect("node DNAT");
    // prlimit, not setrlimit here: a hard limit once lowered cannot be
    // raised back without CAP_SYS_RESOURCE, which a container may lack.
    let prefix = format!("prlimit --nofile={LIMIT}:{LIMIT}");
    let bin = agent_wrapper(bed.topo.dir(), "agent-low-nofile", &prefix).expect("wrapper");
    let endpoints = bed.topo.backend_addrs();
    let agent = Agent::start_binary(&bin, &bed.topo, &bed.cgroup, &endpoints, &[]);
    bed.agent = Some(agent.expect("agent"));
    let pid = bed.agent().unwrap().pid();
    let at_rest = open_files(pid);

    let bin = rotor_testbed::util::target_dir().join("release/rotor-bench-conns");
    assert!(
        bin.is_file(),
        "{} missing: cargo build --release --workspace",
        bin.display()
    );
    let mut cmd = netns_command(bed.topo.client_ns(), Some(bed.cgroup.path()), &bin);
    let timeout = scaled(Duration::from_secs(10)).as_secs_f64().to_string();
    cmd.args(["--addr", "10.96.0.10:8080", "--path", "/whoami"])
        .args(["--connections", &CLIENTS.to_string(), "--timeout", &timeout]);
    let mut client = Child::spawn("rotor-bench-conns", cmd, bed.topo.dir()).expect("client");
    let line = client
        .wait_for_line(
            Stream::Stdout,
            "\"holding\"",
            scaled(Duration::from_secs(60)),
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", probe::report(&mut bed)));
    let held: Value = serde_json::from_str(&line).expect("client's JSON line");
    let holding = open_files(pid);
    let status = bed.agent().unwrap().status();
    let diag = probe::report(&mut bed);
    let status = status.unwrap_or_else(|e| panic!("status while full: {e:#}\n{diag}"));
    let carried = status["connections"].as_array().map_or(0, Vec::len);
    // left by the agent after it accepted them, or by connect4 once the
    // agent closed its gate (ebpf/datapath/gate.rs)
    let left_of =
        |status: &Value| counter(status, "fail_open_agent") + counter(status, "fail_open_connect");
    let (gated, left) = (counter(&status, "fail_open_connect"), left_of(&status));
    let said = bed.agent().unwrap().stderr_plain();
    eprintln!(
        "agent files: {at_rest} at rest, {holding} holding; carried {carried}, left on their path {left} ({gated} at connect); client: {line}"
    );
    assert_eq!(
        held["requests_ok"].as_u64(),
        Some(CLIENTS as u64),
        "every client answered, carried or not: {line}\n{diag}"
    );
    assert!(
        (holding as u64) < LIMIT,
        "the agent stays below its limit: {holding} of {LIMIT}\n{diag}"
    );
    assert!(
        carried > 0 && carried + left as usize >= CLIENTS && gated > 0,
        "some carried ({carried}), the rest left on their path ({left}, {gated} of them at connect), {CLIENTS} in all\n{diag}"
    );
    assert!(
        said.contains("near RLIMIT_NOFILE") && !said.contains("Too many open files"),
        "the agent says why, and met no EMFILE\n{said}"
    );
    assert_eq!(
        status["agent"]["new_clients_gated"].as_bool(),
        Some(true),
        "status says new connections are left on their path\n{diag}"
    );
    drop(client);
    // their tasks gone, the charges are given back and the gate opens
    let agent = bed.agent().unwrap();
    let open = wait_until(Duration::from_secs(10), || {
        (agent.status().ok()).is_some_and(|s| s["agent"]["new_clients_gated"] == false)
    });
    assert!(
        open.is_some(),
        "the gate did not open again: {}",
        agent.stderr_plain()
    );

    // The held connections gone, new ones are carried again.
    let res = h2load(
        &bed.topo,
        Some(&bed.cgroup),
        &[
            "-c",
            "4",
            "-m",
            "1",
            "-n",
            "200",
            "http://10.96.0.10:8080/whoami",
        ],
    );
    let after = bed.agent().unwrap().status().expect("status after");
    let diag = probe::report(&mut bed);
    let (s, _) = res.unwrap_or_else(|e| panic!("h2load: {e:#}\n{diag}"));
    assert_eq!(s.succeeded, 200, "{:?}\n{diag}", s.lines);
    assert_eq!(
        left_of(&after),
        left,
        "connections after the held ones closed were carried\n{diag}"
    );
    bed.check_agent().expect("agent alive");
}
