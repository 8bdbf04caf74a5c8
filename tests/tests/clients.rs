//! HTTP/2 clients nobody here wrote, through rotor: curl, nghttp, h2load,
//! Python's h2 and httpx, and hyper. HPACK-heavy requests (many, large,
//! never-repeating header values: header blocks of 20-40 KB, so HEADERS +
//! CONTINUATION frames) and large bodies both ways (uploads echoed by the
//! backends, the 8 MiB `/big` download).

use std::time::Duration;

use rotor_testbed::tools::{client_tool, h2load};
use rotor_testbed::{content, TestBed};
use rotor_tests::peers::{self, n, peer_command, python_script, run_json};
use rotor_tests::probe;
use serde_json::Value;

const VIP_URL: &str = "http://10.96.0.10:8080";
const LIMIT: Duration = Duration::from_secs(120);

fn big_label() -> String {
    let big = content::big();
    format!("<{} bytes fnv {:016x}>", big.len(), content::fnv1a64(&big))
}

/// `count` request headers `x-rotor-K: VALUE` of `bytes` bytes each, as curl/nghttp/h2load `-H` arguments.
fn header_args(count: usize, bytes: usize, flag: &str) -> Vec<String> {
    let mut v = Vec::new();
    for k in 0..count {
        let seed = format!("{k}-rotor-");
        let value: String = seed.chars().cycle().take(bytes).collect();
        v.push(flag.to_string());
        v.push(format!("x-rotor-{k}: {value}"));
    }
    v
}

/// A report with `requests` ok, none failed or corrupt, and only the expected bodies.
fn assert_report(bed: &mut TestBed, what: &str, r: &Value, requests: u64, bodies: &[&str]) {
    let body_ok = r["bodies"]
        .as_object()
        .is_some_and(|m| m.keys().all(|k| bodies.contains(&k.as_str())));
    assert!(
        n(r, "ok") == requests && n(r, "failed") == 0 && n(r, "corrupt") == 0 && body_ok,
        "{what}: want {requests} ok responses with bodies in {bodies:?}, none failed or corrupt; got {r}\n{}",
        probe::report(bed)
    );
}

/// Every backend served at least `min` of the requests (from the reports' bodies).
fn assert_spread(bed: &mut TestBed, what: &str, r: &Value, min: u64) {
    let per: Vec<u64> = (1..=3)
        .map(|k| n(&r["bodies"], &format!("be{k}")))
        .collect();
    assert!(
        per.iter().all(|c| *c >= min),
        "{what}: requests did not spread (per backend {per:?}, want each >= {min}): {r}\n{}",
        probe::report(bed)
    );
}

const BACKENDS: [&str; 3] = ["be1", "be2", "be3"];

/// curl (prior knowledge) POSTs `file` to the backends' echo, for at most
/// `max_time` seconds.
fn curl_upload_echo(
    bed: &TestBed,
    file: &std::path::Path,
    max_time: &str,
) -> anyhow::Result<std::process::Output> {
    let file_arg = format!("@{}", file.display());
    client_tool(
        &bed.topo,
        Some(&bed.cgroup),
        "curl",
        &[
            "-sS",
            "--fail",
            "--http2-prior-knowledge",
            "--max-time",
            max_time,
            "--data-binary",
            &file_arg,
            &format!("{VIP_URL}/whoami?echo"),
        ],
        Duration::from_secs(40),
    )
}

#[test]
fn curl_large_bodies_both_ways() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let upload = content::pseudo_random(4 << 20, 7);
    let file = bed.topo.dir().join("upload-4m");
    std::fs::write(&file, &upload).unwrap();
    let out = curl_upload_echo(&bed, &file, "30").expect("running curl");
    assert!(
        out.status.success() && out.stdout == upload,
        "curl 4 MiB upload echo: {} got {} bytes (fnv {:016x}, want {:016x}) stderr {}\n{}",
        out.status,
        out.stdout.len(),
        content::fnv1a64(&out.stdout),
        content::fnv1a64(&upload),
        String::from_utf8_lossy(&out.stderr),
        probe::report(&mut bed)
    );
    let out = client_tool(
        &bed.topo,
        Some(&bed.cgroup),
        "curl",
        &[
            "-sS",
            "--fail",
            "--http2-prior-knowledge",
            "--max-time",
            "30",
            &format!("{VIP_URL}/big"),
        ],
        Duration::from_secs(40),
    )
    .expect("running curl");
    assert!(
        out.status.success() && content::fnv1a64(&out.stdout) == content::fnv1a64(&content::big()),
        "curl /big: {} got {} bytes, stderr {}\n{}",
        out.status,
        out.stdout.len(),
        String::from_utf8_lossy(&out.stderr),
        probe::report(&mut bed)
    );
}

fn kernel_counter(bed: &TestBed, name: &str) -> u64 {
    let agent = bed.agent().expect("agent");
    agent.kernel_counter(name).expect("kernel counter")
}

/// curl with prior knowledge writes its preface, SETTINGS, the request and
/// the first 64 KiB of its upload at once, here while the agent is stopped
/// and cannot accept: the kernel takes the connection, parses it and hands
/// the agent those frames before the agent has seen the socket. They go to
/// the accepted socket's spare tap (ebpf/README.md, point 2), none into
/// the socket's own ingress, which 7.3 turns into SK_PASS and where such
/// an upload stopped at 64 KiB (ebpf/README.md, "What differs by kernel");
/// once the agent runs again the upload comes back whole.
#[test]
fn frames_sent_before_the_accept_reach_the_agent_through_a_spare_tap() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let upload = content::pseudo_random(4 << 20, 11);
    let file = bed.topo.dir().join("upload-before-accept");
    std::fs::write(&file, &upload).unwrap();
    let max_time = rotor_testbed::scaled(Duration::from_secs(30))
        .as_secs()
        .to_string();
    let (own0, none0) = (
        kernel_counter(&bed, "own_ingress"),
        kernel_counter(&bed, "spare_tap_none"),
    );
    let agent_pid = bed.agent().unwrap().pid() as i32;
    let out = std::thread::scope(|s| {
        // Nothing below may panic before SIGCONT: a stopped agent would
        // not exit.
        // SAFETY: kill(2) on the agent this test started.
        unsafe { libc::kill(agent_pid, libc::SIGSTOP) };
        let curl = s.spawn(|| curl_upload_echo(&bed, &file, &max_time));
        std::thread::sleep(rotor_testbed::scaled(Duration::from_millis(1000)));
        // SAFETY: as above.
        unsafe { libc::kill(agent_pid, libc::SIGCONT) };
        curl.join()
    });
    let out = out.expect("curl thread").expect("running curl");
    assert!(
        out.status.success() && out.stdout == upload,
        "curl 4 MiB upload echo, written before the accept: {} got {} bytes, stderr {}\n{}",
        out.status,
        out.stdout.len(),
        String::from_utf8_lossy(&out.stderr),
        probe::report(&mut bed)
    );
    let own = kernel_counter(&bed, "own_ingress") - own0;
    let none = kernel_counter(&bed, "spare_tap_none") - none0;
    assert!(
        own == 0 && none == 0,
        "frames handed to the agent through a socket's own ingress: {own}, accepted sockets without a spare tap: {none}"
    );
}

#[test]
fn nghttp_hpack_heavy_and_uploads() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let upload = content::pseudo_random(1 << 20, 11);
    let file = bed.topo.dir().join("upload-1m");
    std::fs::write(&file, &upload).unwrap();
    // 10 concurrent POSTs of 1 MiB on one connection, each with a 24 KB header block.
    let mut args: Vec<String> = vec![
        "-m".into(),
        "10".into(),
        "-d".into(),
        file.display().to_string(),
    ];
    args.extend(header_args(60, 400, "-H"));
    args.push(format!("{VIP_URL}/whoami?echo"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = client_tool(
        &bed.topo,
        Some(&bed.cgroup),
        "nghttp",
        &args,
        Duration::from_secs(60),
    )
    .expect("running nghttp");
    // nghttp writes each stream's DATA as it arrives: the ten echoes
    // interleave on stdout, so compare byte histograms (and the length).
    let histogram = |b: &[u8]| {
        let mut h = [0u64; 256];
        for x in b {
            h[*x as usize] += 1;
        }
        h
    };
    let want = histogram(&upload).map(|c| c * 10);
    assert!(
        out.status.success() && out.stdout.len() == upload.len() * 10 && histogram(&out.stdout) == want,
        "nghttp -m 10 POST 1 MiB with 24 KB headers: {} got {} bytes of {} (or other bytes) stderr {}\n{}",
        out.status,
        out.stdout.len(),
        upload.len() * 10,
        peers::clip(&String::from_utf8_lossy(&out.stderr), 2000),
        probe::report(&mut bed)
    );
}

#[test]
fn h2load_hpack_heavy_and_uploads() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let before = bed.topo.request_counts().unwrap();
    let mut args: Vec<String> = ["-c", "2", "-m", "8", "-n", "600"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(header_args(30, 600, "-H"));
    args.push(format!("{VIP_URL}/whoami"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let res = h2load(&bed.topo, Some(&bed.cgroup), &argv);
    let diag = probe::report(&mut bed);
    let (s, _) = res.unwrap_or_else(|e| panic!("{e:#}\n{diag}"));
    assert_eq!(
        (s.succeeded, s.failed, s.errored),
        (600, 0, 0),
        "h2load with 18 KB header blocks: {s:?}\n{diag}"
    );
    let served = bed.served_since(&before).unwrap();
    assert!(
        served.iter().all(|(_, c)| *c >= 100),
        "not spread: {served:?}\n{diag}"
    );

    // Uploads: every request POSTs 256 KiB (echoed).
    let file = bed.topo.dir().join("upload-256k");
    std::fs::write(&file, content::pseudo_random(256 << 10, 3)).unwrap();
    let f = file.display().to_string();
    let res = h2load(
        &bed.topo,
        Some(&bed.cgroup),
        &[
            "-c",
            "2",
            "-m",
            "4",
            "-n",
            "200",
            "-d",
            &f,
            &format!("{VIP_URL}/whoami?echo"),
        ],
    );
    let diag = probe::report(&mut bed);
    let (s, _) = res.unwrap_or_else(|e| panic!("{e:#}\n{diag}"));
    assert_eq!(
        (s.succeeded, s.failed, s.errored),
        (200, 0, 0),
        "h2load 256 KiB uploads: {s:?}\n{diag}"
    );
}

fn python_client(bed: &mut TestBed, which: &str, args: &[&str]) -> Value {
    peers::python_has(&["h2", "httpx"]).expect("python h2/httpx");
    let mut full = vec![which, "--addr", "10.96.0.10:8080"];
    full.extend_from_slice(args);
    let cmd = python_script(
        bed.topo.client_ns(),
        Some(bed.cgroup.path()),
        "h2_client.py",
        &full,
    );
    run_json(cmd, LIMIT).unwrap_or_else(|e| panic!("{which}: {e:#}\n{}", probe::report(bed)))
}

#[test]
fn python_h2_many_large_headers() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    // 60 requests, 10 at a time from the first write on (before our SETTINGS
    // reach h2, its HPACK encoder uses the dynamic table), 60 × 500-byte headers.
    let r = python_client(
        &mut bed,
        "h2",
        &[
            "--requests",
            "60",
            "--concurrency",
            "10",
            "--headers",
            "60",
            "--header-bytes",
            "500",
        ],
    );
    assert_report(&mut bed, "h2 with 30 KB header blocks", &r, 60, &BACKENDS);
    assert_spread(&mut bed, "h2", &r, 10);
}

#[test]
fn python_h2_large_bodies() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let r = python_client(
        &mut bed,
        "h2",
        &[
            "--path",
            "/whoami?echo",
            "--requests",
            "6",
            "--concurrency",
            "3",
            "--upload",
            "2097152",
        ],
    );
    assert_uploads(&mut bed, "h2 2 MiB uploads (echoed)", &r, 6);
    let big = big_label();
    let r = python_client(
        &mut bed,
        "h2",
        &["--path", "/big", "--requests", "3", "--concurrency", "3"],
    );
    assert_report(&mut bed, "h2 /big downloads", &r, 3, &[big.as_str()]);
}

/// Allow the echo bodies of uploads: any `<N bytes …>` label.
fn assert_uploads(bed: &mut TestBed, what: &str, r: &Value, requests: u64) {
    assert!(
        n(r, "ok") == requests && n(r, "failed") == 0 && n(r, "corrupt") == 0,
        "{what}: want {requests} intact echoes; got {r}\n{}",
        probe::report(bed)
    );
}

fn hyper(bed: &mut TestBed, args: &[&str]) -> Value {
    let mut full = vec!["hyper", "--addr", "10.96.0.10:8080"];
    full.extend_from_slice(args);
    let cmd = peer_command(&bed.topo, Some(&bed.cgroup), &full).expect("rotor-peer");
    run_json(cmd, LIMIT).unwrap_or_else(|e| panic!("hyper: {e:#}\n{}", probe::report(bed)))
}

#[test]
fn hyper_many_streams_headers_and_bodies() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let r = hyper(
        &mut bed,
        &[
            "--requests",
            "300",
            "--concurrency",
            "16",
            "--headers",
            "40",
            "--header-bytes",
            "600",
        ],
    );
    assert_report(
        &mut bed,
        "hyper, 16 streams, 24 KB header blocks",
        &r,
        300,
        &BACKENDS,
    );
    assert_spread(&mut bed, "hyper", &r, 50);
    let r = hyper(
        &mut bed,
        &[
            "--path",
            "/whoami?echo",
            "--requests",
            "8",
            "--concurrency",
            "4",
            "--upload",
            "4194304",
        ],
    );
    assert_uploads(&mut bed, "hyper 4 MiB uploads", &r, 8);
    let big = big_label();
    let r = hyper(
        &mut bed,
        &["--path", "/big", "--requests", "4", "--concurrency", "4"],
    );
    assert_report(&mut bed, "hyper /big", &r, 4, &[big.as_str()]);
}

/// Large response header blocks: every backend adds a 20 KB trailer (nghttpd
/// `--trailer`), so responses carry HEADERS + CONTINUATION from the backend,
/// interleaved from three upstreams into one client connection.
#[test]
fn large_response_header_blocks() {
    let mut bed = TestBed::new(3).expect("test bed");
    let value: String = "t".repeat(20_000);
    let trailer = format!("x-big-trailer: {value}");
    let servers: Vec<_> = (1..=3)
        .map(|k| {
            peers::start_nghttpd(&bed.topo, k, peers::ALT_H2_PORT, &["--trailer", &trailer])
                .expect("nghttpd")
        })
        .collect();
    bed.agent = Some(
        rotor_testbed::Agent::start(
            &bed.topo,
            &bed.cgroup,
            &peers::endpoints_on(&bed.topo, peers::ALT_H2_PORT),
        )
        .expect("agent"),
    );
    let r = hyper(
        &mut bed,
        &["--path", "/64k", "--requests", "120", "--concurrency", "12"],
    );
    let want = format!(
        "<65536 bytes fnv {:016x}>",
        content::fnv1a64(&content::pseudo_random(64 * 1024, 64))
    );
    assert_report(
        &mut bed,
        "hyper /64k with 20 KB response trailers",
        &r,
        120,
        &[want.as_str()],
    );
    let per: Vec<u64> = servers.iter().map(peers::count_requests).collect();
    assert!(
        per.iter().all(|c| *c >= 20),
        "not spread: {per:?}\n{}",
        probe::report(&mut bed)
    );
    drop(servers);
}

#[test]
fn curl_hpack_heavy_requests() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    // 100 headers of 300 bytes: a 31 KB header block, two CONTINUATIONs.
    let mut args: Vec<String> = [
        "-sS",
        "--fail",
        "--http2-prior-knowledge",
        "--max-time",
        "10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(header_args(100, 300, "-H"));
    args.push(format!("{VIP_URL}/whoami"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for _ in 0..6 {
        let out = client_tool(
            &bed.topo,
            Some(&bed.cgroup),
            "curl",
            &args,
            Duration::from_secs(15),
        )
        .expect("running curl");
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && BACKENDS.contains(&body.as_str()),
            "curl with a 31 KB header block: {} body {body:?} stderr {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            probe::report(&mut bed)
        );
    }
}

/// One request at a time: httpx (httpcore 1.x) with concurrent requests on
/// one connection sometimes writes a HEADERS after one with a higher stream
/// id, which a server must treat as a connection error (RFC 9113 §5.1.1);
/// nghttpd without rotor ends 1 run in 40 of this load with GOAWAY
/// STREAM_CLOSED "HEADERS: stream closed". Concurrent streams are covered by
/// the other clients here.
#[test]
fn httpx_headers_and_bodies() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let r = python_client(
        &mut bed,
        "httpx",
        &[
            "--requests",
            "60",
            "--concurrency",
            "1",
            "--headers",
            "40",
            "--header-bytes",
            "500",
        ],
    );
    assert_report(
        &mut bed,
        "httpx with 20 KB header blocks",
        &r,
        60,
        &BACKENDS,
    );
    assert_spread(&mut bed, "httpx", &r, 10);
    let r = python_client(
        &mut bed,
        "httpx",
        &[
            "--path",
            "/whoami?echo",
            "--requests",
            "4",
            "--concurrency",
            "1",
            "--upload",
            "1048576",
        ],
    );
    assert_uploads(&mut bed, "httpx 1 MiB uploads", &r, 4);
    let big = big_label();
    let r = python_client(
        &mut bed,
        "httpx",
        &["--path", "/big", "--requests", "2", "--concurrency", "1"],
    );
    assert_report(&mut bed, "httpx /big", &r, 2, &[big.as_str()]);
}

/// Uploads to a backend whose stream window is larger than the HTTP/2
/// default (nghttpd `-w 20`: 1 MiB, as hyper/tonic, Go and Envoy servers
/// advertise): the backend sends its first stream WINDOW_UPDATE only after
/// half of *its* window, so the client must be allowed to send that much.
#[test]
fn uploads_to_backends_with_a_large_stream_window() {
    let mut bed = TestBed::new(3).expect("test bed");
    let servers: Vec<_> = (1..=3)
        .map(|k| {
            peers::start_nghttpd(&bed.topo, k, peers::ALT_H2_PORT, &["-w", "20"]).expect("nghttpd")
        })
        .collect();
    bed.agent = Some(
        rotor_testbed::Agent::start(
            &bed.topo,
            &bed.cgroup,
            &peers::endpoints_on(&bed.topo, peers::ALT_H2_PORT),
        )
        .expect("agent"),
    );
    let r = hyper(
        &mut bed,
        &[
            "--path",
            "/whoami?echo",
            "--requests",
            "3",
            "--concurrency",
            "3",
            "--upload",
            "1048576",
            "--timeout",
            "15",
        ],
    );
    assert_uploads(
        &mut bed,
        "hyper 1 MiB uploads to backends with a 1 MiB stream window",
        &r,
        3,
    );
    drop(servers);
}

/// A client that writes its requests and then shuts down its sending side
/// (shutdown(SHUT_WR), as `printf ... | nc` or a batch job does) still reads
/// every response: a backend dialled directly answers all of them, and so
/// must rotor. The agent used to end the connection at the client's FIN,
/// dropping every response still on its way (and the GOAWAY a backend sent
/// over a malformed frame, which bad_input::fuzz_10000 saw as an ignored
/// error in 1 of 512 padding cases).
#[test]
fn python_h2_half_closed_client_gets_every_response() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    // Answers take a while, so they are still on their way at the FIN.
    bed.topo
        .set_backend_delay(Duration::from_millis(50))
        .expect("backend delay");
    let args = [
        "h2",
        "--requests",
        "30",
        "--concurrency",
        "30",
        "--half-close",
        "--timeout",
        "20",
    ];
    let direct_addr = bed.topo.backend_addrs()[0].to_string();
    let mut direct = args.to_vec();
    direct.extend_from_slice(&["--addr", &direct_addr]);
    let cmd = python_script(bed.topo.client_ns(), None, "h2_client.py", &direct);
    let r = run_json(cmd, LIMIT).expect("half-closed client straight to a backend");
    assert_eq!((n(&r, "ok"), n(&r, "failed")), (30, 0), "direct: {r}");
    for round in 0..5 {
        let mut via = args.to_vec();
        via.extend_from_slice(&["--addr", "10.96.0.10:8080"]);
        let cmd = python_script(
            bed.topo.client_ns(),
            Some(bed.cgroup.path()),
            "h2_client.py",
            &via,
        );
        let r = run_json(cmd, LIMIT)
            .unwrap_or_else(|e| panic!("round {round}: {e:#}\n{}", probe::report(&mut bed)));
        assert_report(&mut bed, "half-closed h2 client", &r, 30, &BACKENDS);
    }
}
