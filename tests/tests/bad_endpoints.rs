//! Endpoints that do not speak HTTP/2: a Service pointed at an HTTP/1.1
//! port, a server that echoes what it gets, a hung server that accepts and
//! never answers. Their upstreams fail (and are retried with backoff); the
//! endpoint that speaks HTTP/2 carries every stream, and none fails.

use std::net::SocketAddrV4;

use rotor_testbed::topology::backend_addr;
use rotor_testbed::{Agent, Child, LoadSpec, TestBed};
use rotor_tests::peers::{self, python_script, spawn_in_backend, ECHO_PORT, HTTP1_PORT};

const SILENT_PORT: u16 = 9002;

fn on(k: usize, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(*backend_addr(k).ip(), port)
}

#[test]
fn endpoints_that_do_not_speak_http2_get_no_streams() {
    peers::python_has(&["http.server"]).expect("python3");
    let mut bed = TestBed::new(4).expect("test bed");
    let peers: Vec<(usize, Vec<String>)> = vec![
        (
            2,
            vec![
                "http1".into(),
                "--name".into(),
                "be2".into(),
                "--port".into(),
                HTTP1_PORT.to_string(),
            ],
        ),
        (
            3,
            vec!["echo".into(), "--port".into(), ECHO_PORT.to_string()],
        ),
        (
            4,
            vec!["silent".into(), "--port".into(), SILENT_PORT.to_string()],
        ),
    ];
    let _servers: Vec<Child> = peers
        .iter()
        .map(|(k, a)| {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            let cmd = python_script(
                bed.topo.backend(*k).unwrap().netns(),
                None,
                "tcp_peer.py",
                &a,
            );
            spawn_in_backend(&bed.topo, &format!("tcp-peer-be{k}"), cmd).expect("tcp peer")
        })
        .collect();
    let endpoints = [
        backend_addr(1),
        on(2, HTTP1_PORT),
        on(3, ECHO_PORT),
        on(4, SILENT_PORT),
    ];
    // The hung endpoint's handshake must time out within the load below,
    // on any machine: the agent's default, not one scaled to the machine.
    bed.agent = Some(
        Agent::start_with_args(
            &bed.topo,
            &bed.cgroup,
            &endpoints,
            &["--connect-timeout", "3"],
        )
        .expect("agent"),
    );

    // at once, while every upstream is still being tried
    let burst = bed.load(&LoadSpec::whoami(1, 8, 1000)).unwrap();
    // then for longer than the hung server's handshake timeout (3 s), while
    // the failed upstreams are retried
    let paced = LoadSpec {
        requests: None,
        duration: Some(5.0),
        rate: Some(300.0),
        timeout: 30.0,
        ..LoadSpec::whoami(4, 4, 0)
    };
    let steady = bed.load(&paced).unwrap();
    let diag = bed.diagnostics();
    assert_eq!((burst.ok, burst.failed), (1000, 0), "{burst:?}\n{diag}");
    assert_eq!(burst.count("be1"), 1000, "{burst:?}\n{diag}");
    assert_eq!(steady.failed, 0, "{steady:?}\n{diag}");
    assert!(steady.ok > 1000, "{steady:?}\n{diag}");
    assert_eq!(steady.count("be1"), steady.ok, "{steady:?}\n{diag}");
    let log = bed.agent().unwrap().stderr_plain();
    for bad in &endpoints[1..] {
        assert!(
            log.contains(&format!("endpoint={bad}")) && log.contains("upstream failed"),
            "the agent's log does not say why {bad} failed\n{diag}"
        );
    }
}
