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
