//! Per-request balancing through rotor: the client dials the VIP, no DNAT.

use rotor_testbed::{uneven_spread, LoadSpec, TestBed};

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
        counter("redirect_client") - client0,
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
