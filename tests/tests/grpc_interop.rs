//! gRPC's interop test cases, run as a differential test: the same case suite
//! runs once straight to one backend and once through rotor (the Service VIP,
//! balanced by the agent over three backends), and the client must see the
//! same thing both ways: status codes and the servers' messages, message
//! sizes and bodies, echoed initial and trailing metadata and status details,
//! and how many rounds of each case succeeded. Besides: the direct run was
//! answered by be1 alone, the rotor run by more than one backend (it did go
//! through the agent), and once the client has exited the agent holds no
//! connection and no open stream (cancelled and timed-out calls left nothing).
//!
//! Clients: grpcio (gRPC's C core), `tests/peers/grpc_interop.py client`,
//! and tonic (hyper, h2), `rotor-peer interop-client`; all rounds over ONE
//! channel (one HTTP/2 connection), as a long-lived client.
//! Servers (`rotor.interop.TestService`, `tests/peers/interop.proto`):
//! grpcio (`grpc_interop.py server`), tonic (`rotor-peer interop-server`)
//! and @grpc/grpc-js (`node/interop_server.js`).
//!
//! Cases (`CASES` in grpc_interop.py): empty_unary; large_unary (271,828 B
//! request, 314,159 B response); client_streaming (27,182 / 8 / 1,828 /
//! 45,904 B); server_streaming (31,415 / 9 / 2,653 / 58,979 B); ping_pong
//! (four round trips of those sizes); empty_stream; custom_metadata (unary and
//! bidi: `x-grpc-test-echo-initial` and the binary trailer
//! `x-grpc-test-echo-trailing-bin` echoed); status_code_and_message (unary
//! and bidi), special_status_message (whitespace and Unicode), status_details
//! (`grpc-status-details-bin`); unimplemented_method / _service;
//! cancel_after_begin, cancel_after_first_response;
//! timeout_on_sleeping_server (bidi and unary: DEADLINE_EXCEEDED); slow_unary
//! (one call alone on the connection whose server answers after 1, 2 or 3 s:
//! nothing moves meanwhile, and a proxy that pings a grpc-core server then
//! gets GOAWAY ENHANCE_YOUR_CALM "too_many_pings").

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rotor_testbed::process::netns_command;
use rotor_testbed::topology::VIP;
use rotor_testbed::{backend_addr, Agent, Child, TestBed};
use rotor_tests::peers::{
    self, endpoints_on, peer_binary, peers_dir, python_script, Grpc, Running, GRPC_PORT,
};
use rotor_tests::probe;
use serde_json::Value;

/// Rounds of the whole suite on one channel, per path.
const ROUNDS: u64 = 10;
/// Time limit of one client run (a round takes about 4 s).
const LIMIT: Duration = Duration::from_secs(300);
/// How soon after the client exits the agent must hold no connection and no stream.
const IDLE_LIMIT: Duration = Duration::from_secs(10);

/// Which implementation serves the interop service on every backend.
#[derive(Debug, Clone, Copy)]
enum Server {
    /// grpcio, `grpc_interop.py server`.
    Python,
    /// tonic, `rotor-peer interop-server`.
    Tonic,
    /// @grpc/grpc-js, `node/interop_server.js`.
    Node,
}

impl Server {
    fn command(self, netns: &str, name: &str, listen: &str) -> Command {
        let args = ["--name", name, "--listen", listen];
        match self {
            Server::Python => {
                let mut a = vec!["server"];
                a.extend(args);
                python_script(netns, None, "grpc_interop.py", &a)
            }
            Server::Tonic => {
                let mut cmd = netns_command(netns, None, peer_binary().expect("rotor-peer"));
                cmd.arg("interop-server").args(args);
                cmd
            }
            Server::Node => {
                let mut cmd = netns_command(netns, None, "node");
                cmd.arg(peers_dir().join("node").join("interop_server.js"))
                    .args(args);
                cmd
            }
        }
    }

    fn available(self) {
        let stack = match self {
            Server::Python => Grpc::Python,
            Server::Tonic => Grpc::Tonic,
            Server::Node => Grpc::Node,
        };
        stack.available().expect("gRPC server peer");
    }
}

/// Which implementation runs the case suite.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// grpcio, `grpc_interop.py client`.
    Python,
    /// tonic, `rotor-peer interop-client`.
    Tonic,
}

impl Client {
    fn command(self, netns: &str, cgroup: Option<&Path>, target: &str) -> Command {
        let rounds = ROUNDS.to_string();
        match self {
            Client::Python => python_script(
                netns,
                cgroup,
                "grpc_interop.py",
                &[
                    "client",
                    "--target",
                    target,
                    "--rounds",
                    &rounds,
                    "--verbose",
                ],
            ),
            Client::Tonic => {
                let mut cmd = netns_command(netns, cgroup, peer_binary().expect("rotor-peer"));
                cmd.args(["interop-client", "--target", &format!("http://{target}")])
                    .args(["--rounds", &rounds, "--verbose"]);
                cmd
            }
        }
    }

    fn available(self) {
        match self {
            Client::Python => Grpc::Python.available().expect("grpcio client"),
            Client::Tonic => Grpc::Tonic.available().expect("tonic client"),
        }
    }
}

/// Three backends serving the interop service on [`GRPC_PORT`] and the agent
/// balancing the VIP over them. The client namespace has IPv6 off (grpcio
/// then dials with AF_INET sockets; `grpc::grpc_python_dual_stack_client`
/// covers the other case). Servers drop before the bed.
fn interop_bed(client: Client, server: Server) -> (TestBed, Vec<Child>) {
    server.available();
    client.available();
    let mut bed = TestBed::new(3).expect("test bed");
    peers::ipv4_only_client(&bed.topo).expect("IPv4-only client");
    let listen = format!("0.0.0.0:{GRPC_PORT}");
    let servers = (1..=bed.topo.n_backends())
        .map(|k| {
            let ns = bed.topo.backend(k).expect("backend").netns().to_string();
            let name = format!("be{k}");
            let cmd = server.command(&ns, &name, &listen);
            peers::spawn_in_backend(&bed.topo, &format!("interop-{server:?}-{name}"), cmd)
                .expect("interop server")
        })
        .collect();
    bed.agent = Some(
        Agent::start(&bed.topo, &bed.cgroup, &endpoints_on(&bed.topo, GRPC_PORT))
            .expect("rotor-agent"),
    );
    (bed, servers)
}

/// One client run of the whole suite against `target`, in the client
/// namespace (and the test cgroup when `through_rotor`); its report, and its
/// per-round log (stderr).
fn run_suite(
    bed: &TestBed,
    client: Client,
    label: &str,
    target: &str,
    through_rotor: bool,
) -> (Value, String) {
    let cgroup = through_rotor.then(|| bed.cgroup.path());
    let cmd = client.command(bed.topo.client_ns(), cgroup, target);
    let name = format!("interop-{client:?}-client-{label}");
    let log = bed.topo.dir().join(format!("{name}.stderr"));
    let report = Running::spawn(&name, cmd, bed.topo.dir(), LIMIT)
        .and_then(|r| r.finish())
        .unwrap_or_else(|e| panic!("{client:?} interop client ({label}, {target}): {e:#}"));
    (report, read(&log))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()))
}

/// A case's results, "10× OK …" or "9× OK …; 1× UNAVAILABLE: …".
fn results(case: &Value) -> BTreeMap<String, u64> {
    case["results"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

fn show(r: &BTreeMap<String, u64>) -> String {
    if r.is_empty() {
        return "(not run)".into();
    }
    r.iter()
        .map(|(sig, n)| format!("{n}× {sig}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Compares the two reports case by case. Returns the table (every case) and
/// whether every case was the same both ways and passed every round.
fn compare(direct: &Value, rotor: &Value) -> (String, bool) {
    let names: Vec<String> = direct["cases"]
        .as_object()
        .into_iter()
        .chain(rotor["cases"].as_object())
        .flat_map(|m| m.keys().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut table = format!(
        "{:<34} | {:<9} | {:<9} | direct result / rotor result\n{}\n",
        "case",
        "direct ok",
        "rotor ok",
        "-".repeat(100)
    );
    let mut all_good = !names.is_empty();
    for name in &names {
        let (d, r) = (&direct["cases"][name], &rotor["cases"][name]);
        let (dr, rr) = (results(d), results(r));
        let (dp, rp) = (peers::n(d, "passed"), peers::n(r, "passed"));
        let same = dr == rr;
        let good = same && dp == ROUNDS && rp == ROUNDS;
        all_good &= good;
        let verdict = match (same, dp == ROUNDS, rp == ROUNDS) {
            (true, true, true) => "same",
            (_, false, _) => "DIRECT FAILS (peer or test bug)",
            (false, _, _) => "DIFFERENT",
            (true, true, false) => "FAILS",
        };
        table.push_str(&format!(
            "{name:<34} | {dp:>2}/{ROUNDS:<6} | {rp:>2}/{ROUNDS:<6} | {verdict}\n"
        ));
        if same {
            table.push_str(&format!("{:<34}     both: {}\n", "", show(&dr)));
        } else {
            table.push_str(&format!("{:<34}   direct: {}\n", "", show(&dr)));
            table.push_str(&format!("{:<34}    rotor: {}\n", "", show(&rr)));
        }
        for (label, c) in [("direct", d), ("rotor", r)] {
            if let Some(f) = c["failures"].as_object().filter(|f| !f.is_empty()) {
                let f: Vec<String> = f.keys().cloned().collect();
                table.push_str(&format!(
                    "{:<34}   {label} failures: {}\n",
                    "",
                    f.join(", ")
                ));
            }
        }
    }
    (table, all_good)
}

/// Server ids that answered, by name.
fn server_ids(report: &Value) -> BTreeMap<String, u64> {
    report["server_ids"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// Agent log lines about upstreams and connections ending (GOAWAYs from
/// endpoints land here), for the failure message.
fn agent_lines(bed: &TestBed) -> String {
    let Some(agent) = bed.agent.as_ref() else {
        return "no agent".into();
    };
    let log = agent.stderr_plain();
    let keys = [
        "closed the upstream",
        "upstream closed",
        "GOAWAY",
        "connection error",
        "WARN",
        "ERROR",
    ];
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| keys.iter().any(|k| l.contains(k)))
        .collect();
    let n = lines.len();
    let shown: Vec<String> = lines
        .iter()
        .take(30)
        .map(|l| l.chars().take(300).collect())
        .collect();
    format!(
        "agent log, upstream/connection ends ({n}, first 30):\n{}",
        shown.join("\n")
    )
}

/// The per-round lines of a client log that failed.
fn failed_lines(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("FAILED")).collect();
    if lines.is_empty() {
        return "(none)".into();
    }
    lines
        .iter()
        .take(40)
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

fn differential(client: Client, server: Server) {
    let (mut bed, _servers) = interop_bed(client, server);
    let be1 = format!("{}:{GRPC_PORT}", backend_addr(1).ip());
    let (direct, direct_log) = run_suite(&bed, client, "direct", &be1, false);
    let (rotor, rotor_log) = run_suite(&bed, client, "rotor", &VIP.to_string(), true);
    let (table, same) = compare(&direct, &rotor);
    println!(
        "{client:?} client, {server:?} servers, {ROUNDS} rounds, one channel each way:\n{table}"
    );
    let (d_ids, r_ids) = (server_ids(&direct), server_ids(&rotor));
    let connected = direct["connect_error"].is_null() && rotor["connect_error"].is_null();
    let direct_is_direct = d_ids.keys().all(|k| k == "be1") && !d_ids.is_empty();
    // Through rotor the calls spread: the rotor run did go through the agent.
    let balanced = r_ids.len() >= 2;
    let agent_alive = bed.check_agent();
    // The client has exited: cancelled and timed-out calls left nothing in the agent.
    let idle = bed
        .agent()
        .and_then(|a| probe::wait_idle(a, IDLE_LIMIT))
        .map(|(left, _)| left);
    let idle_ok = matches!(idle, Ok((0, 0)));
    let ok = connected && same && direct_is_direct && balanced && agent_alive.is_ok() && idle_ok;
    if !ok {
        let report = probe::report(&mut bed);
        panic!(
            "{client:?} client, {server:?} servers: the interop suite straight to be1 and through rotor differ\n\
             connect errors: direct {} / rotor {}\n\
             servers that answered: direct {d_ids:?} (want only be1), rotor {r_ids:?} (want >= 2 backends)\n\
             agent: {agent_alive:?}; (connections, open streams) left {IDLE_LIMIT:?} after the client exited: {idle:?}\n\n{table}\n\
             rotor client, failed rounds:\n{}\n\ndirect client, failed rounds:\n{}\n\n{}\n\n{report}",
            direct["connect_error"],
            rotor["connect_error"],
            failed_lines(&rotor_log),
            failed_lines(&direct_log),
            agent_lines(&bed),
        );
    }
}

// grpcio client (the stack with every interop feature) against each server.

#[test]
fn grpc_interop_python_servers() {
    differential(Client::Python, Server::Python);
}

#[test]
fn grpc_interop_tonic_servers() {
    differential(Client::Python, Server::Tonic);
}

#[test]
fn grpc_interop_node_servers() {
    differential(Client::Python, Server::Node);
}

// tonic client (hyper, h2): a second HTTP/2 stack on the client side.

#[test]
fn grpc_interop_tonic_client_python_servers() {
    differential(Client::Tonic, Server::Python);
}

#[test]
fn grpc_interop_tonic_client_node_servers() {
    differential(Client::Tonic, Server::Node);
}
