//! Clients that do not speak HTTP/2 on a balanced Service: the connection
//! goes whole to one endpoint (README: "spliced"), so HTTP/1.1 and raw TCP
//! clients keep working.

use std::time::Duration;

use rotor_testbed::tools::client_tool;
use rotor_testbed::{content, Agent, Child, TestBed};
use rotor_tests::peers::{
    self, endpoints_on, python_script, run_json, spawn_in_backend, ECHO_PORT, HTTP1_PORT,
};
use rotor_tests::probe;
use serde_json::Value;

/// Three backends running `tcp_peer.py ARGS` on `port`, the agent balancing the VIP over them.
fn bed_with(port: u16, args: &dyn Fn(usize) -> Vec<String>) -> (TestBed, Vec<Child>) {
    peers::python_has(&["http.server"]).expect("python3");
    let mut bed = TestBed::new(3).expect("test bed");
    let servers = (1..=3)
        .map(|k| {
            let a = args(k);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            let cmd = python_script(
                bed.topo.backend(k).unwrap().netns(),
                None,
                "tcp_peer.py",
                &a,
            );
            spawn_in_backend(&bed.topo, &format!("tcp-peer-be{k}"), cmd).expect("tcp peer")
        })
        .collect();
    bed.agent =
        Some(Agent::start(&bed.topo, &bed.cgroup, &endpoints_on(&bed.topo, port)).expect("agent"));
    (bed, servers)
}

fn http1_bed() -> (TestBed, Vec<Child>) {
    bed_with(HTTP1_PORT, &|k| {
        vec![
            "http1".into(),
            "--name".into(),
            format!("be{k}"),
            "--port".into(),
            HTTP1_PORT.to_string(),
        ]
    })
}

fn echo_bed(banner: Option<&str>) -> (TestBed, Vec<Child>) {
    let banner = banner.map(str::to_string);
    bed_with(ECHO_PORT, &move |_| {
        let mut a = vec!["echo".into(), "--port".into(), ECHO_PORT.to_string()];
        if let Some(b) = &banner {
            a.push("--banner".into());
            a.push(b.clone());
        }
        a
    })
}

fn curl(bed: &mut TestBed, args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = client_tool(
        &bed.topo,
        Some(&bed.cgroup),
        "curl",
        args,
        Duration::from_secs(20),
    )
    .expect("curl");
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn http1_curl_is_spliced_to_one_endpoint() {
    let (mut bed, _servers) = http1_bed();
    let url = "http://10.96.0.10:8080/whoami".to_string();
    let mut seen = Vec::new();
    for _ in 0..6 {
        let (ok, body, err) = curl(
            &mut bed,
            &["-sS", "--fail", "--http1.1", "--max-time", "10", &url],
        );
        let body = String::from_utf8_lossy(&body).into_owned();
        assert!(
            ok && ["be1", "be2", "be3"].contains(&body.as_str()),
            "HTTP/1.1 GET through a balanced Service: ok={ok} body {body:?} stderr {err}\n{}",
            probe::report(&mut bed)
        );
        seen.push(body);
    }
    // Two requests on one keep-alive connection: one endpoint answers both.
    let (ok, body, err) = curl(
        &mut bed,
        &["-sS", "--fail", "--http1.1", "--max-time", "10", &url, &url],
    );
    let body = String::from_utf8_lossy(&body).into_owned();
    let same = body.len() == 6 && body[..3] == body[3..];
    assert!(
        ok && same,
        "two requests on one HTTP/1.1 connection: {body:?} {err}\n{}",
        probe::report(&mut bed)
    );
    // A 1 MiB POST, echoed.
    let upload = content::pseudo_random(1 << 20, 5);
    let file = bed.topo.dir().join("http1-upload");
    std::fs::write(&file, &upload).unwrap();
    let at = format!("@{}", file.display());
    let (ok, body, err) = curl(
        &mut bed,
        &[
            "-sS",
            "--fail",
            "--http1.1",
            "--max-time",
            "20",
            "--data-binary",
            &at,
            &url,
        ],
    );
    assert!(
        ok && body == upload,
        "HTTP/1.1 1 MiB POST echo: ok={ok}, {} bytes back, stderr {err}\n{}",
        body.len(),
        probe::report(&mut bed)
    );
    let (conns, streams) = probe::wait_idle(bed.agent().unwrap(), Duration::from_secs(10))
        .unwrap()
        .0;
    assert_eq!(
        (conns, streams),
        (0, 0),
        "spliced connections left behind\n{}",
        probe::report(&mut bed)
    );
}

fn echo_client(bed: &mut TestBed, args: &[&str]) -> Value {
    let mut full = vec!["echo-client", "--addr", "10.96.0.10:8080"];
    full.extend_from_slice(args);
    let cmd = python_script(
        bed.topo.client_ns(),
        Some(bed.cgroup.path()),
        "tcp_peer.py",
        &full,
    );
    run_json(cmd, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("echo client: {e:#}\n{}", probe::report(bed)))
}

#[test]
fn raw_tcp_echo_is_spliced() {
    let (mut bed, _servers) = echo_bed(None);
    for bytes in ["10", "100000", "4194304"] {
        let r = echo_client(&mut bed, &["--bytes", bytes, "--timeout", "20"]);
        assert!(
            r["ok"] == true,
            "raw TCP echo of {bytes} bytes: {r}\n{}",
            probe::report(&mut bed)
        );
    }
}

/// A protocol whose server speaks first (SMTP, MySQL, SSH, FTP banners): the
/// client waits for the banner before it writes anything, so the agent cannot
/// wait for a client preface to decide.
#[test]
fn server_speaks_first_protocol_works() {
    let (mut bed, _servers) = echo_bed(Some("220 rotor-test ESMTP"));
    let r = echo_client(
        &mut bed,
        &[
            "--banner",
            "220 rotor-test ESMTP",
            "--bytes",
            "1000",
            "--timeout",
            "8",
        ],
    );
    assert!(
        r["ok"] == true,
        "server-speaks-first TCP protocol on a balanced Service: {r}\n\
         client sockets:\n{}\n{}",
        probe::ss(bed.topo.client_ns()),
        probe::report(&mut bed)
    );
}

/// A non-HTTP/2 client whose first write ("PRI") is a prefix of the HTTP/2
/// preface and who then waits for an answer: the sniffing must not wait for
/// bytes that never come.
#[test]
fn client_whose_first_bytes_look_like_the_preface() {
    let (mut bed, _servers) = echo_bed(None);
    let r = echo_client(
        &mut bed,
        &["--first", "PRI", "--bytes", "1000", "--timeout", "8"],
    );
    assert!(
        r["ok"] == true,
        "echo client sending `PRI` first, then waiting for its echo: {r}\n{}",
        probe::report(&mut bed)
    );
}
