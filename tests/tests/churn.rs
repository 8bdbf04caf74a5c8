//! Endpoint churn while a connection carries streams.

use std::time::{Duration, Instant};

use rotor_testbed::{scaled, LoadSpec, TestBed};

/// How long the load runs: the change comes after `SETTLE` and its effect
/// is awaited for `WAIT`, all within it (each scaled to the machine).
const LOAD: Duration = Duration::from_secs(5);
const SETTLE: Duration = Duration::from_millis(1500);
const WAIT: Duration = Duration::from_secs(3);

fn steady_load() -> LoadSpec {
    // Paced, so the backends' verbose logs stay small: 500 requests/s over 4 streams.
    LoadSpec {
        requests: None,
        duration: Some(scaled(LOAD).as_secs_f64()),
        rate: Some(500.0),
        timeout: 30.0,
        ..LoadSpec::whoami(1, 4, 0)
    }
}

#[test]
fn added_backend_gets_streams_within_a_second() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    // be4 is built before the load starts and joins the Service later:
    // building its namespace and starting nghttpd took 5–8 s on 6.1 under
    // QEMU, longer than the whole 5 s load, which was over before the
    // Service grew (ebpf/README, "What differs by kernel").
    let k = bed.topo.add_backend().unwrap();
    assert_eq!(k, 4);
    let three: Vec<_> = bed.topo.backend_addrs().into_iter().take(3).collect();
    bed.agent().unwrap().set_endpoints(&three).unwrap();
    let load = bed.spawn_load(&steady_load()).unwrap();
    let started = Instant::now();
    std::thread::sleep(scaled(SETTLE));
    let before = bed.topo.backend(4).unwrap().requests().unwrap();
    bed.agent()
        .unwrap()
        .set_endpoints(&bed.topo.backend_addrs())
        .unwrap();
    let changed = Instant::now();
    let mut first = None;
    while changed.elapsed() < scaled(WAIT) {
        if bed.topo.backend(4).unwrap().requests().unwrap() > 0 {
            first = Some(changed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = load.finish().unwrap();
    let ran = started.elapsed();
    let diag = bed.diagnostics();
    assert_eq!(
        before, 0,
        "be4 got streams before it was an endpoint\n{diag}"
    );
    let first = first.unwrap_or_else(|| {
        panic!(
            "be4 got no stream within {:?} (the Service grew {:?} into a load that ran {ran:?}): {report:?}\n{diag}",
            scaled(WAIT),
            changed - started
        )
    });
    assert!(
        first <= scaled(Duration::from_secs(1)),
        "be4's first stream came {first:?} after the config change\n{diag}"
    );
    assert_eq!(report.failed, 0, "{report:?}\n{diag}");
    assert!(report.count("be4") > 0, "{report:?}\n{diag}");
}

#[test]
fn removed_backend_stops_getting_streams_and_none_fail() {
    let mut bed = TestBed::with_agent(3).expect("test bed with agent");
    let load = bed.spawn_load(&steady_load()).unwrap();
    std::thread::sleep(scaled(SETTLE));
    let be3_before = bed.topo.backend(3).unwrap().requests().unwrap();
    let keep: Vec<_> = bed.topo.backend_addrs().into_iter().take(2).collect();
    bed.agent().unwrap().set_endpoints(&keep).unwrap();
    // Streams already on be3 finish; after a second no new ones start there.
    std::thread::sleep(scaled(Duration::from_secs(1)));
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
