//! Per-request balancing through rotor: the client dials the VIP, no DNAT.

use rotor_tests::{LoadSpec, TestBed};

#[test]
fn one_connection_eight_streams_spread_evenly() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let before = bed.topo.request_counts().unwrap();
    let report = bed.load(&LoadSpec::whoami(1, 8, 3000)).unwrap();
    let served = bed.served_since(&before).unwrap();
    let diag = bed.diagnostics();
    assert_eq!((report.ok, report.failed), (3000, 0), "{report:?}\n{diag}");
    for k in 1..=3 {
        let name = format!("be{k}");
        let seen = report.count(&name);
        assert!(
            (900..=1100).contains(&seen),
            "{name}: client saw {seen} responses, want 1000±10%: {report:?}\n{diag}"
        );
    }
    for (name, n) in &served {
        assert!(
            (900..=1100).contains(n),
            "{name} served {n}, want 1000±10%: {served:?}\n{diag}"
        );
    }
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
