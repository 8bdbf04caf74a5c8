//! A balanced connection looks like a connection to the Service.

use std::time::Duration;

use rotor_tests::{tools::client_tool, TestBed, VIP};

#[test]
fn getpeername_answers_the_service_address() {
    let bed = TestBed::with_agent(3).expect("test bed with agent");
    let script = format!(
        "import socket; s = socket.create_connection(('{}', {})); print('%s:%d' % s.getpeername())",
        VIP.ip(),
        VIP.port()
    );
    let out = client_tool(&bed.topo, Some(&bed.cgroup), "python3", &["-c", &script], Duration::from_secs(10))
        .expect("python3 in the client namespace");
    let peer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(peer, VIP.to_string(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
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
    let out = client_tool(&bed.topo, Some(&bed.cgroup), "python3", &["-c", &script], Duration::from_secs(10))
        .expect("python3 in the client namespace");
    let peer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(peer, format!("::ffff:{}:{}", VIP.ip(), VIP.port()), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}
