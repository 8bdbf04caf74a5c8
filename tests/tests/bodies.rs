//! Large request and response bodies through rotor, byte-identical.

use rotor_testbed::{LoadSpec, TestBed};
use rotor_tests::differential::{self, Client, Route};

const MIB8: usize = 8 << 20;

#[test]
fn uploads_8mib_echoed_intact() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let before = bed.topo.request_counts().unwrap();
    let spec = LoadSpec {
        streams: 6,
        requests: Some(6),
        upload_bytes: Some(MIB8),
        ..LoadSpec::default()
    };
    let report = bed.load(&spec).unwrap();
    let served = bed.served_since(&before).unwrap();
    let diag = bed.diagnostics();
    assert_eq!(
        (report.ok, report.failed, report.count("echo")),
        (6, 0, 6),
        "{report:?}\n{diag}"
    );
    assert!(
        served.iter().all(|(_, n)| *n > 0),
        "6 uploads on one connection: {served:?}\n{diag}"
    );
}

#[test]
fn downloads_8mib_intact() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let before = bed.topo.request_counts().unwrap();
    let spec = LoadSpec {
        streams: 6,
        requests: Some(12),
        path: Some("/big".into()),
        ..LoadSpec::default()
    };
    let report = bed.load(&spec).unwrap();
    let served = bed.served_since(&before).unwrap();
    let diag = bed.diagnostics();
    assert_eq!(
        (report.ok, report.failed, report.count("big")),
        (12, 0, 12),
        "{report:?}\n{diag}"
    );
    assert!(
        served.iter().all(|(_, n)| *n > 0),
        "12 downloads on one connection: {served:?}\n{diag}"
    );
}

/// HTTP/2's default windows (h2load `-w 16 -W 16`: 65,535 bytes per stream
/// and for the connection) and 64 KiB responses from three backends: the
/// client paces every byte with WINDOW_UPDATEs, and nghttp2 sends one for
/// the connection each time it has read about half of its window. Those
/// reach the endpoints from the kernel (ebpf/lib/window.h) instead of each
/// waking the agent, and the client gets every byte, as it does straight
/// from a backend. Through the agent alone `window_credits` stays 0; on a
/// 2-core host 250 of about 960 went through the kernel, beside 188
/// diverts (the endpoints' three default windows exceed the client's one,
/// and while a divert waits the frame goes to the agent).
#[test]
fn default_windows_reach_the_endpoints_from_the_kernel() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let args = ["-c", "1", "-m", "16", "-n", "480", "-w", "16", "-W", "16"];
    let client = Client::h2load(&args, "/64k");
    let limit = differential::direct_limit();
    let direct = differential::run(&mut bed, &client, Route::Direct, limit).expect("direct run");
    let rotor = differential::run(&mut bed, &client, Route::Rotor, limit).expect("rotor run");
    let diag = bed.diagnostics();
    assert_eq!((direct.ok, direct.failed), (480, 0), "direct: {direct:?}");
    assert_eq!(
        (rotor.ok, rotor.failed, rotor.goaways.len()),
        (480, 0, 0),
        "through rotor: {rotor:?}\n{diag}"
    );
    assert_eq!(
        rotor.data_bytes, direct.data_bytes,
        "response bytes through rotor and direct\n{diag}"
    );
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
    println!("{counts}");
    assert!(
        k("window_credits") * 10 >= updates,
        "fewer than a tenth of the client's WINDOW_UPDATEs reached an endpoint from the kernel: {counts}\n{diag}"
    );
}
