//! Real HTTP/2 clients (curl, nghttp, h2load) through rotor.

use rotor_testbed::tools::{curl_h2, h2load, nghttp};
use rotor_testbed::{content, TestBed};

const WHOAMI: &str = "http://10.96.0.10:8080/whoami";

#[test]
fn curl_gets_a_backend_name() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    for _ in 0..6 {
        // One URL per curl: curl 7.88 sends only the first URL on a prior-knowledge connection.
        let body = curl_h2(&bed.topo, Some(&bed.cgroup), WHOAMI);
        let diag = bed.diagnostics();
        let body = String::from_utf8(body.unwrap_or_else(|e| panic!("{e:#}\n{diag}"))).unwrap();
        assert!(
            ["be1", "be2", "be3"].contains(&body.as_str()),
            "curl got {body:?}\n{diag}"
        );
    }
}

#[test]
fn nghttp_many_streams_on_one_connection() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let before = bed.topo.request_counts().unwrap();
    // -m 30: the same URI 30 times, concurrently, on one connection; bodies go to stdout.
    let out = nghttp(&bed.topo, Some(&bed.cgroup), &["-m", "30", WHOAMI]);
    let diag = bed.diagnostics();
    let out = out.unwrap_or_else(|e| panic!("{e:#}\n{diag}"));
    let bodies = String::from_utf8_lossy(&out.stdout).into_owned();
    let names: Vec<&str> = bodies
        .as_bytes()
        .chunks(3)
        .map(|c| std::str::from_utf8(c).unwrap_or("?"))
        .collect();
    assert_eq!(names.len(), 30, "nghttp output {bodies:?}\n{diag}");
    assert!(
        names.iter().all(|n| ["be1", "be2", "be3"].contains(n)),
        "nghttp output {bodies:?}\n{diag}"
    );
    // nghttp sends all 30 HEADERS in its first flight, before it has
    // acknowledged the agent's SETTINGS (HEADER_TABLE_SIZE=0): their header
    // blocks may use HPACK's dynamic table. The agent re-encodes them, so they
    // spread like any other stream.
    let served = bed.served_since(&before).unwrap();
    for (name, n) in &served {
        assert!(
            (8..=12).contains(n),
            "{name} served {n} of 30, want 10±2: {served:?}\n{diag}"
        );
    }
}

#[test]
fn nghttp_downloads_big_intact() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let out = nghttp(
        &bed.topo,
        Some(&bed.cgroup),
        &["http://10.96.0.10:8080/big"],
    );
    let diag = bed.diagnostics();
    let out = out.unwrap_or_else(|e| panic!("{e:#}\n{diag}"));
    assert_eq!(out.stdout.len(), content::BIG_LEN, "{diag}");
    assert_eq!(
        content::fnv1a64(&out.stdout),
        content::fnv1a64(&content::big()),
        "/big content differs\n{diag}"
    );
}

#[test]
fn h2load_one_connection() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let before = bed.topo.request_counts().unwrap();
    let res = h2load(
        &bed.topo,
        Some(&bed.cgroup),
        &["-c", "1", "-m", "8", "-n", "600", WHOAMI],
    );
    let diag = bed.diagnostics();
    let (summary, _) = res.unwrap_or_else(|e| panic!("{e:#}\n{diag}"));
    assert_eq!(
        (summary.succeeded, summary.failed),
        (600, 0),
        "{summary:?}\n{diag}"
    );
    let served = bed.served_since(&before).unwrap();
    assert!(served.iter().all(|(_, n)| *n >= 150), "{served:?}\n{diag}");
}
