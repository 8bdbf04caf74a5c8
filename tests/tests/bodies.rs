//! Large request and response bodies through rotor, byte-identical.

use rotor_testbed::{LoadSpec, TestBed};

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
