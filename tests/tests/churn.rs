//! Endpoint churn while a connection carries streams.

use std::time::{Duration, Instant};

use rotor_testbed::{LoadSpec, TestBed};

fn steady_load() -> LoadSpec {
    // Paced, so the backends' verbose logs stay small: 500 requests/s over 4 streams.
    LoadSpec {
        requests: None,
        duration: Some(5.0),
        rate: Some(500.0),
        timeout: 30.0,
        ..LoadSpec::whoami(1, 4, 0)
    }
}

#[test]
fn added_backend_gets_streams_within_a_second() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let load = bed.spawn_load(&steady_load()).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let k = bed.topo.add_backend().unwrap();
    assert_eq!(k, 4);
    bed.agent()
        .unwrap()
        .set_endpoints(&bed.topo.backend_addrs())
        .unwrap();
    let changed = Instant::now();
    let mut first = None;
    while changed.elapsed() < Duration::from_secs(3) {
        if bed.topo.backend(4).unwrap().requests().unwrap() > 0 {
            first = Some(changed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = load.finish().unwrap();
    let diag = bed.diagnostics();
    let first = first.unwrap_or_else(|| panic!("be4 got no stream within 3 s: {report:?}\n{diag}"));
    assert!(
        first <= Duration::from_secs(1),
        "be4's first stream came {first:?} after the config change\n{diag}"
    );
    assert_eq!(report.failed, 0, "{report:?}\n{diag}");
    assert!(report.count("be4") > 0, "{report:?}\n{diag}");
}

#[test]
fn removed_backend_stops_getting_streams_and_none_fail() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let load = bed.spawn_load(&steady_load()).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let be3_before = bed.topo.backend(3).unwrap().requests().unwrap();
    let keep: Vec<_> = bed.topo.backend_addrs().into_iter().take(2).collect();
    bed.agent().unwrap().set_endpoints(&keep).unwrap();
    // Streams already on be3 finish; after a second no new ones start there.
    std::thread::sleep(Duration::from_secs(1));
    let be3_settled = bed.topo.backend(3).unwrap().requests().unwrap();
    let report = load.finish().unwrap();
    let be3_end = bed.topo.backend(3).unwrap().requests().unwrap();
    let diag = bed.diagnostics();
    assert!(
        be3_before > 0,
        "be3 had no streams before removal: {report:?}\n{diag}"
    );
    assert_eq!(
        be3_end, be3_settled,
        "be3 still got streams a second after removal\n{diag}"
    );
    assert_eq!(report.failed, 0, "{report:?}\n{diag}");
    assert!(
        report.count("be1") > 0 && report.count("be2") > 0,
        "{report:?}\n{diag}"
    );
}
