//! Frame headers split across writes (down to one byte per write) through rotor.

use rotor_testbed::{uneven_spread, LoadSpec, TestBed};

const BACKENDS: [&str; 3] = ["be1", "be2", "be3"];

#[test]
fn split_frame_headers_get_correct_responses_spread_over_every_backend() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    for chunk in [1, 3, 7] {
        let spec = LoadSpec {
            split_writes: Some(chunk),
            streams: 4,
            requests: Some(12),
            chunk_delay_us: Some(500),
            timeout: 30.0,
            ..LoadSpec::default()
        };
        let report = bed.load(&spec).unwrap();
        let diag = bed.diagnostics();
        assert_eq!(
            (report.ok, report.failed),
            (12, 0),
            "chunk {chunk}: {report:?}\n{diag}"
        );
        // One connection's 12 requests, each balanced, however its bytes
        // were cut: 4 per backend, ±2 (ebpf/README.md, points 1 and 16).
        // Per-connection balancing puts all 12 on one backend.
        let seen = report.by_body.iter().map(|(k, v)| (k.as_str(), *v));
        if let Some(e) = uneven_spread(seen, &BACKENDS, 12, 2) {
            panic!("chunk {chunk}: {e}\n{diag}");
        }
        println!("chunk {chunk}: {:?}", report.by_body);
    }
}
