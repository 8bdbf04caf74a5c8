// Pending: these tests of tests/tests/clients.rs fail today; see tests/pending/README.md.
// They move back (with the helpers they use from that file) when the agent passes them.

#[test]
fn curl_hpack_heavy_requests() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    // 100 headers of 300 bytes: a 31 KB header block, two CONTINUATIONs.
    let mut args: Vec<String> = ["-sS", "--fail", "--http2-prior-knowledge", "--max-time", "10"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(header_args(100, 300, "-H"));
    args.push(format!("{VIP_URL}/whoami"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for _ in 0..6 {
        let out = client_tool(&bed.topo, Some(&bed.cgroup), "curl", &args, Duration::from_secs(15))
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

#[test]
fn httpx_headers_and_bodies() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let r = python_client(
        &mut bed,
        "httpx",
        &["--requests", "60", "--concurrency", "6", "--headers", "40", "--header-bytes", "500"],
    );
    assert_report(&mut bed, "httpx with 20 KB header blocks", &r, 60, &BACKENDS);
    assert_spread(&mut bed, "httpx", &r, 10);
    let r = python_client(&mut bed, "httpx", &["--path", "/whoami?echo", "--requests", "4", "--concurrency", "2", "--upload", "1048576"]);
    assert_uploads(&mut bed, "httpx 1 MiB uploads", &r, 4);
    let big = big_label();
    let r = python_client(&mut bed, "httpx", &["--path", "/big", "--requests", "2", "--concurrency", "2"]);
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
        .map(|k| peers::start_nghttpd(&bed.topo, k, peers::ALT_H2_PORT, &["-w", "20"]).expect("nghttpd"))
        .collect();
    bed.agent = Some(
        rotor_tests::Agent::start(&bed.topo, &bed.cgroup, &peers::endpoints_on(&bed.topo, peers::ALT_H2_PORT))
            .expect("agent"),
    );
    let r = hyper(
        &mut bed,
        &["--path", "/whoami?echo", "--requests", "3", "--concurrency", "3", "--upload", "1048576", "--timeout", "15"],
    );
    assert_uploads(&mut bed, "hyper 1 MiB uploads to backends with a 1 MiB stream window", &r, 3);
    drop(servers);
}
