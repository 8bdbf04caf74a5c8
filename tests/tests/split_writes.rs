//! Frame headers split across writes (down to one byte per write) through rotor.

use rotor_tests::{LoadSpec, TestBed};

#[test]
fn split_frame_headers_get_correct_responses() {
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
        assert!(
            report
                .by_body
                .keys()
                .all(|k| ["be1", "be2", "be3"].contains(&k.as_str())),
            "chunk {chunk}: {report:?}\n{diag}"
        );
    }
}
