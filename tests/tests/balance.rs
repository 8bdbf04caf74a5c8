//! Per-request balancing through rotor: the client dials the VIP, no DNAT.

use rotor_testbed::process::netns_command;
use rotor_testbed::{uneven_spread, LoadSpec, TestBed};
use rotor_tests::differential::{self, Client, Outcome, Route};

const BACKENDS: [&str; 3] = ["be1", "be2", "be3"];

/// One long-lived connection, 8 streams at a time, 3,000 requests: each
/// backend gets 1,000 ± 10 %, as the client saw it and as the backends
/// counted. Per-connection balancing puts all 3,000 on one backend
/// (`plain_dnat_fails_the_spread_check` shows the check notices).
#[test]
fn one_connection_eight_streams_spread_evenly() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let before = bed.topo.request_counts().unwrap();
    let report = bed.load(&LoadSpec::whoami(1, 8, 3000)).unwrap();
    let served = bed.served_since(&before).unwrap();
    let diag = bed.diagnostics();
    assert_eq!((report.ok, report.failed), (3000, 0), "{report:?}\n{diag}");
    let seen = report.by_body.iter().map(|(k, v)| (k.as_str(), *v));
    if let Some(e) = uneven_spread(seen, &BACKENDS, 3000, 100) {
        panic!("responses the client saw: {e}\n{diag}");
    }
    let counted = served.iter().map(|(k, v)| (k.as_str(), *v));
    if let Some(e) = uneven_spread(counted, &BACKENDS, 3000, 100) {
        panic!("requests the backends served: {e}\n{diag}");
    }
}

/// The control: the same load through kube-proxy-style DNAT alone (the
/// test bed without the agent) is balanced per connection, and the spread
/// check above must say so. Without this, a check that could not fail
/// would pass the test above whatever rotor did.
#[test]
fn plain_dnat_fails_the_spread_check() {
    let mut bed = TestBed::new(3).expect("test bed without agent");
    bed.topo.kube_proxy_dnat().expect("kube-proxy-style DNAT");
    let before = bed.topo.request_counts().unwrap();
    let report = bed.load(&LoadSpec::whoami(1, 8, 3000)).unwrap();
    let served = bed.served_since(&before).unwrap();
    let diag = bed.diagnostics();
    assert_eq!((report.ok, report.failed), (3000, 0), "{report:?}\n{diag}");
    let counted = served.iter().map(|(k, v)| (k.as_str(), *v));
    let uneven = uneven_spread(counted, &BACKENDS, 3000, 100);
    assert!(
        uneven.is_some(),
        "one connection through DNAT alone spread over every backend: {served:?}\n{diag}"
    );
    println!("DNAT alone: {}", uneven.unwrap_or_default());
}

#[test]
fn short_connections_do_not_all_land_on_one_backend() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let report = bed.load(&LoadSpec::whoami(30, 1, 30)).unwrap();
    let diag = bed.diagnostics();
    assert_eq!((report.ok, report.failed), (30, 0), "{report:?}\n{diag}");
    assert!(
        report.by_body.len() >= 2,
        "30 one-request connections all went to one backend: {report:?}\n{diag}"
    );
}

#[test]
fn stream_frames_stay_in_the_kernel() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let agent = bed.agent.as_ref().expect("agent");
    let counter = |name: &str| agent.kernel_counter(name).expect("kernel counter");
    let (up0, client0, bytes0, agent0) = (
        counter("redirect_upstream"),
        counter("redirect_client"),
        counter("redirect_bytes"),
        counter("agent_bytes"),
    );
    let (batches0, batched0) = (counter("batches"), counter("batched_frames"));
    let spec = LoadSpec {
        streams: 4,
        requests: Some(40),
        path: Some("/big".into()),
        ..LoadSpec::whoami(1, 4, 40)
    };
    let report = bed.load(&spec).unwrap();
    let agent = bed.agent.as_ref().expect("agent");
    let counter = |name: &str| agent.kernel_counter(name).expect("kernel counter");
    let (up, client, bytes, to_agent) = (
        counter("redirect_upstream") - up0,
        // a batch is one redirect of several frames
        counter("redirect_client") - client0 - (counter("batches") - batches0)
            + (counter("batched_frames") - batched0),
        counter("redirect_bytes") - bytes0,
        counter("agent_bytes") - agent0,
    );
    let diag = bed.diagnostics();
    assert_eq!((report.ok, report.failed), (40, 0), "{report:?}\n{diag}");
    // 40 × 8 MiB in 16 KiB DATA frames: 20,480 frames the kernel moved to
    // the client, and the requests' HEADERS it moved to the endpoints.
    assert!(
        client >= 40 * 512,
        "frames redirected to the client: {client}\n{diag}"
    );
    assert!(up >= 30, "HEADERS redirected to endpoints: {up}\n{diag}");
    // The agent sees connection-level frames (SETTINGS, WINDOW_UPDATE,
    // PING), the first requests' headers, and the frames the kernel diverts
    // while an endpoint is ahead of the client's window (this client starts
    // at 64 KiB): measured 0.1-1 % of the bytes on a quiet machine, more when
    // the agent lags on a loaded one. Bodies through user space would be ~100 %.
    assert!(
        to_agent * 20 < bytes,
        "the agent was handed {to_agent} bytes for {bytes} redirected: bodies went through user space\n{diag}"
    );
}

/// An endpoint writes a response's HEADERS and DATA together, and under
/// load several responses at once. The upstream's verdict carries the stream
/// frames queued together as one message (ebpf/lib/h2.h, `batch_len`), so
/// the client gets segments about the size the endpoint wrote rather than one
/// per frame. Measured on a 2-core host: 3,204 frames to the client, 3,200
/// of them in 288 batches, in 295 segments; with one message per frame the
/// same load took 3,195 segments, straight to the backend 104.
#[test]
fn small_responses_ride_in_batches_and_arrive_whole() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let client = Client::h2load(&["-c", "1", "-m", "16", "-n", "1600"], "/100b");
    let (direct, rotor, segments) = direct_and_through_rotor(&mut bed, &client);
    let diag = bed.diagnostics();
    assert_eq!((direct.ok, direct.failed), (1600, 0), "direct: {direct:?}");
    assert_eq!(
        (rotor.ok, rotor.failed),
        (1600, 0),
        "through rotor: {rotor:?}\n{diag}"
    );
    assert_eq!(
        rotor.data_bytes, direct.data_bytes,
        "response bytes through rotor and direct\n{diag}"
    );
    let k = |name: &str| rotor.kernel_delta.get(name).copied().unwrap_or(0);
    let frames = k("redirect_client") - k("batches") + k("batched_frames");
    let batched = k("batched_frames");
    let counts = format!(
        "{frames} frames carried to the client, {batched} of them in {} batches, {segments} TCP segments to the client",
        k("batches")
    );
    println!("{counts}");
    // every response is a HEADERS and a DATA frame
    assert!(frames >= 3200, "{counts}\n{diag}");
    assert!(
        batched * 4 >= frames,
        "few frames rode in batches: {counts}\n{diag}"
    );
    assert!(
        segments * 2 < frames,
        "the client received about a segment per frame: {counts}\n{diag}"
    );
}

/// A batch takes no more DATA than the client's connection window has room
/// for, and the verdict checks the room again for the batch as a whole: with
/// the 64 KiB connection window RFC 9113 starts with (h2load -W 16 keeps it;
/// its default raises it to 1 GiB) and 8 streams of 64 KiB responses, the frames
/// past the window wait in the agent (`divert`) while the rest ride in
/// batches, and the client, which ends the connection with
/// FLOW_CONTROL_ERROR at a byte past its window, gets every byte.
#[test]
fn a_client_window_smaller_than_the_responses_cuts_batches_and_every_byte_arrives() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let client = Client::h2load(&["-c", "1", "-m", "8", "-n", "240", "-W", "16"], "/64k");
    let (direct, rotor, _) = direct_and_through_rotor(&mut bed, &client);
    let diag = bed.diagnostics();
    every_response_whole(&direct, &rotor, 240, &diag);
    let k = |name: &str| rotor.kernel_delta.get(name).copied().unwrap_or(0);
    let counts = format!(
        "divert {}, batches {}, batched_frames {}",
        k("divert"),
        k("batches"),
        k("batched_frames")
    );
    println!("{counts}");
    assert!(
        k("divert") > 0,
        "the window never held frames back: {counts}\n{diag}"
    );
    assert!(k("batches") > 0, "no batch at all: {counts}\n{diag}");
}

/// HTTP/2's default windows (h2load `-w 16 -W 16`: 65,535 bytes per stream
/// and for the connection) and 64 KiB responses from three backends: the
/// client paces every byte with WINDOW_UPDATEs, and nghttp2 sends one for
/// the connection each time it has read about half of its window. Those
/// reach the endpoints from the kernel (ebpf/lib/window.h) instead of each
/// waking the agent, and the client gets every byte, as it does straight
/// from a backend. Through the agent alone `window_credits` stays 0. And
/// the endpoints' windows together stay within the client's (windows.rs,
/// `plan_grants`), so few of their frames are diverted to the agent: on a
/// 2-core host, 370–393 of about 960 went through the kernel beside 12–26
/// diverts; while the agent granted each endpoint its share whatever the
/// others held, 207–250 beside 139–188.
#[test]
fn default_windows_reach_the_endpoints_from_the_kernel() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    const REQUESTS: u64 = 480;
    let n = REQUESTS.to_string();
    let args = ["-c", "1", "-m", "16", "-n", &n, "-w", "16", "-W", "16"];
    let client = Client::h2load(&args, "/64k");
    let (direct, rotor, _) = direct_and_through_rotor(&mut bed, &client);
    let diag = bed.diagnostics();
    every_response_whole(&direct, &rotor, REQUESTS, &diag);
    let k = |name: &str| rotor.kernel_delta.get(name).copied().unwrap_or(0);
    let bytes = rotor.data_bytes.unwrap_or(0);
    // about one connection WINDOW_UPDATE per 32 KiB read
    let updates = bytes / 32_768;
    let counts = format!(
        "{} response bytes (about {updates} connection WINDOW_UPDATEs), window_credits {}, divert {}",
        bytes,
        k("window_credits"),
        k("divert")
    );
    println!(
        "{counts}\nkernel counters: {:?}\nthrough rotor: {}\ndirect: {}",
        rotor.kernel_delta, rotor.summary, direct.summary
    );
    assert!(
        k("window_credits") * 4 >= updates,
        "fewer than a quarter of the client's WINDOW_UPDATEs reached an endpoint from the kernel: {counts}\n{diag}"
    );
    assert!(
        k("divert") * 4 <= REQUESTS,
        "the endpoints' windows outgrew the client's: a divert per fewer than 4 responses: {counts}\n{diag}"
    );
}

/// `n` requests answered straight and through rotor, no GOAWAY through
/// rotor, and the same response bytes both ways.
fn every_response_whole(direct: &Outcome, rotor: &Outcome, n: u64, diag: &str) {
    assert_eq!((direct.ok, direct.failed), (n, 0), "direct: {direct:?}");
    assert_eq!(
        (rotor.ok, rotor.failed, rotor.goaways.len()),
        (n, 0, 0),
        "through rotor: {rotor:?}\n{diag}"
    );
    assert_eq!(
        rotor.data_bytes, direct.data_bytes,
        "response bytes through rotor and direct\n{diag}"
    );
}

/// The client's run straight to backend 1 and then through rotor, and the
/// TCP segments its namespace received during the run through rotor.
fn direct_and_through_rotor(bed: &mut TestBed, client: &Client) -> (Outcome, Outcome, u64) {
    let limit = differential::direct_limit();
    let direct = differential::run(bed, client, Route::Direct, limit).expect("direct run");
    let before = client_segments(bed);
    let rotor = differential::run(bed, client, Route::Rotor, limit).expect("run through rotor");
    (direct, rotor, client_segments(bed) - before)
}

/// `Tcp: InSegs` of the client's namespace (/proc/net/snmp).
fn client_segments(bed: &TestBed) -> u64 {
    let out = netns_command(bed.topo.client_ns(), None, "cat")
        .arg("/proc/net/snmp")
        .output()
        .expect("cat /proc/net/snmp in the client's namespace");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap_or(""), tcp.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InSegs")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no Tcp InSegs in the client's /proc/net/snmp:\n{text}"))
}
