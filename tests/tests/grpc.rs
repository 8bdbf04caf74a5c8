//! gRPC through rotor with implementations nobody here wrote: Python grpcio
//! (gRPC's C core) and tonic 0.14 (hyper + h2), as clients and as servers,
//! and @grpc/grpc-js (Node's http2) as a client.
//! Unary, server-streaming, client-streaming and bidirectional calls succeed;
//! unary calls on one channel spread over the backends; every message of one
//! streaming call comes from the same backend.

use std::time::Duration;

use rotor_testbed::{Agent, Child, TestBed};
use rotor_tests::peers::{self, endpoints_on, grpc_client, n, Grpc, GRPC_PORT};
use rotor_tests::probe;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// Three backends running `servers`' gRPC server on [`GRPC_PORT`], and the
/// agent balancing the VIP over them. Servers drop before the bed.
///
/// The client namespace has IPv6 switched off: gRPC's C core (grpcio) then
/// connects with AF_INET sockets. With IPv6 on (as in every Kubernetes pod,
/// which has `::1`) it connects through an AF_INET6 socket to the v4-mapped
/// address `::ffff:VIP`, which only a cgroup/connect6 hook sees:
/// [`grpc_python_dual_stack_client`] covers that case.
fn grpc_bed(servers: Grpc) -> (TestBed, Vec<Child>) {
    let (bed, children) = grpc_bed_ipv6(servers, false);
    (bed, children)
}

fn grpc_bed_ipv6(servers: Grpc, ipv6: bool) -> (TestBed, Vec<Child>) {
    servers.available().expect("gRPC server peer");
    let mut bed = TestBed::new(3).expect("test bed");
    if !ipv6 {
        peers::ipv4_only_client(&bed.topo).expect("IPv4-only client");
    }
    let children = peers::start_grpc_servers(&bed.topo, servers, &[]).expect("gRPC servers");
    bed.agent = Some(
        Agent::start(&bed.topo, &bed.cgroup, &endpoints_on(&bed.topo, GRPC_PORT))
            .expect("rotor-agent"),
    );
    (bed, children)
}

fn run(bed: &mut TestBed, client: Grpc, args: &[&str]) -> Value {
    client.available().expect("gRPC client peer");
    let r = grpc_client(&bed.topo, Some(&bed.cgroup), client, args, LIMIT);
    match r {
        Ok(v) => v,
        Err(e) => panic!("{client:?} client: {e:#}\n{}", probe::report(bed)),
    }
}

/// Every call of `kind` succeeded, intact, and each streaming call stayed on one backend.
fn assert_kind(bed: &mut TestBed, report: &Value, kind: &str, calls: u64) {
    let k = &report[kind];
    let ok = n(k, "calls") == calls
        && n(k, "ok") == calls
        && n(k, "failed") == 0
        && n(k, "corrupt") == 0
        && n(k, "mixed") == 0;
    assert!(
        ok,
        "{kind}: want {calls} calls, all ok, intact, one backend per streaming call; got {}\n\
         (mixed = streaming calls answered by more than one backend)\nfull report: {report}\n{}",
        k,
        probe::report(bed)
    );
}

/// Every backend answered at least `min` unary calls.
fn assert_spread(bed: &mut TestBed, report: &Value, min: u64) {
    let backends = &report["unary"]["backends"];
    let counts: Vec<u64> = (1..=3).map(|k| n(backends, &format!("be{k}"))).collect();
    assert!(
        counts.iter().all(|c| *c >= min),
        "unary calls on one channel did not spread: per backend {counts:?} (want each >= {min}); \
         report: {report}\n{}",
        probe::report(bed)
    );
}

fn all_call_kinds(client: Grpc, servers: Grpc) {
    let (mut bed, _servers) = grpc_bed(servers);
    let r = run(&mut bed, client, peers::ALL_CALL_KINDS);
    assert!(
        r["connect_error"].is_null(),
        "connect: {r}\n{}",
        probe::report(&mut bed)
    );
    assert_kind(&mut bed, &r, "unary", 300);
    assert_kind(&mut bed, &r, "server_stream", 3);
    assert_kind(&mut bed, &r, "client_stream", 3);
    assert_kind(&mut bed, &r, "bidi", 3);
    assert_spread(&mut bed, &r, 50);
    bed.check_agent().expect("agent alive");
}

#[test]
fn grpc_python_all_call_kinds() {
    all_call_kinds(Grpc::Python, Grpc::Python);
}

#[test]
fn grpc_tonic_all_call_kinds() {
    all_call_kinds(Grpc::Tonic, Grpc::Tonic);
}

#[test]
fn grpc_python_client_tonic_servers() {
    all_call_kinds(Grpc::Python, Grpc::Tonic);
}

#[test]
fn grpc_tonic_client_python_servers() {
    all_call_kinds(Grpc::Tonic, Grpc::Python);
}

#[test]
fn grpc_node_client_python_servers() {
    all_call_kinds(Grpc::Node, Grpc::Python);
}

#[test]
fn grpc_node_client_tonic_servers() {
    all_call_kinds(Grpc::Node, Grpc::Tonic);
}

/// Long streaming calls (2 s, 100 messages each) while unary calls on the
/// same channel keep rotating: each streaming call stays on one backend, and
/// the streaming calls themselves are spread.
fn streams_stay_put(client: Grpc, servers: Grpc) {
    let (mut bed, _servers) = grpc_bed(servers);
    // unary calls run for the duration, the streaming calls are counted: in
    // a VM under QEMU an unscaled 2.5 s made only 16 to 72 unary calls
    let duration = rotor_testbed::scaled_secs(2.5).to_string();
    let r = run(
        &mut bed,
        client,
        &[
            "--duration",
            &duration,
            "--concurrency",
            "4",
            "--streams",
            "6",
            "--kinds",
            "server,bidi",
            "--stream-msgs",
            "100",
            "--stream-delay-ms",
            "20",
        ],
    );
    assert_kind(&mut bed, &r, "server_stream", 6);
    assert_kind(&mut bed, &r, "bidi", 6);
    let unary = n(&r, "unary.calls");
    assert!(
        unary > 100 && n(&r, "unary.failed") == 0,
        "unary calls beside the streams: {}\n{}",
        r["unary"],
        probe::report(&mut bed)
    );
    assert_spread(&mut bed, &r, unary / 6);
    // 12 streaming calls over 3 backends: no backend got them all.
    for kind in ["server_stream", "bidi"] {
        let per = r[kind]["calls_by_backend"]
            .as_object()
            .map_or(0, |m| m.len());
        assert!(
            per >= 2,
            "{kind}: all streaming calls went to one backend: {}\n{}",
            r[kind],
            probe::report(&mut bed)
        );
    }
}

#[test]
fn grpc_python_streams_stay_on_one_backend() {
    streams_stay_put(Grpc::Python, Grpc::Python);
}

#[test]
fn grpc_tonic_streams_stay_on_one_backend() {
    streams_stay_put(Grpc::Tonic, Grpc::Tonic);
}

#[test]
fn grpc_node_streams_stay_on_one_backend() {
    streams_stay_put(Grpc::Node, Grpc::Python);
}

/// 1 MiB messages both ways (unary), 40 × 64 KiB client and server streams.
/// (Every request body is larger than the 64 KiB stream window a client
/// starts with: the backends' WINDOW_UPDATEs must reach the client.)
fn large_messages(imp: Grpc) {
    let (mut bed, _servers) = grpc_bed(imp);
    // 40 MiB through grpcio took over 15 s in a VM under QEMU
    let timeout = rotor_testbed::scaled_secs(15.0).to_string();
    let r = run(
        &mut bed,
        imp,
        &[
            "--unary",
            "6",
            "--concurrency",
            "3",
            "--payload",
            "1048576",
            "--timeout",
            &timeout,
        ],
    );
    assert_kind(&mut bed, &r, "unary", 6);
    let r = run(
        &mut bed,
        imp,
        &[
            "--streams",
            "3",
            "--stream-msgs",
            "40",
            "--stream-delay-ms",
            "0",
            "--payload",
            "65536",
            "--timeout",
            &timeout,
        ],
    );
    assert_kind(&mut bed, &r, "server_stream", 3);
    assert_kind(&mut bed, &r, "client_stream", 3);
    assert_kind(&mut bed, &r, "bidi", 3);
}

#[test]
fn grpc_python_large_messages() {
    large_messages(Grpc::Python);
}

/// grpcio in a pod as Kubernetes makes it (IPv6 loopback present): gRPC's C
/// core dials an IPv4 address through an AF_INET6 socket (`::ffff:10.96.0.10`).
/// The VIP must still be balanced (only a connect6 hook sees that connect).
#[test]
fn grpc_python_dual_stack_client() {
    let (mut bed, _servers) = grpc_bed_ipv6(Grpc::Python, true);
    let r = run(
        &mut bed,
        Grpc::Python,
        &["--unary", "30", "--concurrency", "3"],
    );
    let clients = probe::ss(bed.topo.client_ns());
    let status = bed
        .agent
        .as_ref()
        .map(|a| probe::status(a).map(|s| probe::kernel_counters(&s)));
    assert!(
        r["connect_error"].is_null() && n(&r, "unary.ok") == 30,
        "grpcio with IPv6 on (AF_INET6 socket, v4-mapped VIP) did not get through rotor: {r}\n\
         kernel counters (connect_rewrite counts connects the hook redirected): {status:?}\n\
         client namespace sockets:\n{clients}\n{}",
        probe::report(&mut bed)
    );
    assert_spread(&mut bed, &r, 5);
}

#[test]
fn grpc_tonic_large_messages() {
    large_messages(Grpc::Tonic);
}
