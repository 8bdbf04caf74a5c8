//! A balanced connection looks like a connection to the Service.

use std::time::Duration;

use rotor_testbed::{tools::client_tool, TestBed, VIP};

#[test]
fn getpeername_answers_the_service_address() {
    let bed = TestBed::with_agent(3).expect("test bed with agent");
    let script = format!(
        "import socket; s = socket.create_connection(('{}', {})); print('%s:%d' % s.getpeername())",
        VIP.ip(),
        VIP.port()
    );
    let out = client_tool(
        &bed.topo,
        Some(&bed.cgroup),
        "python3",
        &["-c", &script],
        Duration::from_secs(10),
    )
    .expect("python3 in the client namespace");
    let peer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        peer,
        VIP.to_string(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A dual-stack client (an AF_INET6 socket dialling `::ffff:VIP`, as grpcio
/// and Java do) is balanced (cgroup/connect6) and sees the Service address
/// as its peer (cgroup/getpeername6), not the agent's.
#[test]
fn getpeername_answers_the_service_address_to_a_dual_stack_socket() {
    let bed = TestBed::with_agent(3).expect("test bed with agent");
    let script = format!(
        "import socket; s = socket.socket(socket.AF_INET6); s.settimeout(5); s.connect(('::ffff:{}', {})); \
         s.sendall(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n'); print('%s:%d' % s.getpeername()[:2])",
        VIP.ip(),
        VIP.port()
    );
    let out = client_tool(
        &bed.topo,
        Some(&bed.cgroup),
        "python3",
        &["-c", &script],
        Duration::from_secs(10),
    )
    .expect("python3 in the client namespace");
    let peer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        peer,
        format!("::ffff:{}:{}", VIP.ip(), VIP.port()),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A threaded client blocks in recv() on its socket while another thread
/// writes to it: through rotor it must see what it sees straight to a
/// backend, data and nothing else. While the client's socket sat in a BPF
/// socket map, its blocking recv() returned EAGAIN when a write woke it.
#[test]
fn blocking_reader_beside_a_writer_thread_sees_only_data() {
    let bed = TestBed::with_agent(3).expect("test bed with agent");
    let run = |addr: std::net::SocketAddrV4| {
        let cmd = rotor_tests::peers::python_script(
            bed.topo.client_ns(),
            Some(bed.cgroup.path()),
            "blocking_reader.py",
            &[
                &addr.ip().to_string(),
                &addr.port().to_string(),
                "500",
                "/whoami",
            ],
        );
        rotor_tests::peers::run_json(cmd, Duration::from_secs(60)).expect("blocking_reader.py")
    };
    let direct = run(rotor_testbed::backend_addr(1));
    let through = run(VIP);
    for (what, r) in [("direct", &direct), ("through rotor", &through)] {
        assert_eq!(r["responses"], 500, "{what}: {r}\ndirect: {direct}");
        assert_eq!(
            r["errors"].as_array().map(Vec::len),
            Some(0),
            "{what}: {r}\ndirect: {direct}"
        );
    }
}
