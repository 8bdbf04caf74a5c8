//! A Service with more endpoints than a client connection has upstream
//! slots (16): every endpoint still gets streams, from one connection over
//! time and from many connections at once.

use rotor_testbed::{LoadSpec, TestBed};

const BACKENDS: usize = 20;

#[test]
fn one_connection_reaches_every_endpoint_of_a_large_service() {
    let mut bed = TestBed::with_agent(BACKENDS).expect("test bed with agent");
    // 8 s: the connection's window of 15 endpoints moves on by one a
    // second, so all 20 have been in it after 5 s.
    let spec = LoadSpec {
        requests: None,
        duration: Some(8.0),
        rate: Some(400.0),
        timeout: 30.0,
        ..LoadSpec::whoami(1, 4, 0)
    };
    let report = bed.load(&spec).unwrap();
    let diag = bed.diagnostics();
    assert_eq!(report.failed, 0, "{report:?}\n{diag}");
    assert!(report.ok > 2000, "{report:?}\n{diag}");
    let missing: Vec<String> = (1..=BACKENDS)
        .map(|k| format!("be{k}"))
        .filter(|name| report.count(name) == 0)
        .collect();
    assert!(
        missing.is_empty(),
        "no stream reached {missing:?}: {report:?}\n{diag}"
    );
}

#[test]
fn many_connections_cover_a_large_service_evenly() {
    let mut bed = TestBed::with_agent(BACKENDS).expect("test bed with agent");
    // 20 connections start their windows at 20 different endpoints, so
    // every endpoint is in 15 of them.
    let report = bed.load(&LoadSpec::whoami(BACKENDS, 1, 3000)).unwrap();
    let diag = bed.diagnostics();
    assert_eq!((report.ok, report.failed), (3000, 0), "{report:?}\n{diag}");
    let counts: Vec<u64> = (1..=BACKENDS)
        .map(|k| report.count(&format!("be{k}")))
        .collect();
    let (min, max) = (
        *counts.iter().min().expect("backends"),
        *counts.iter().max().expect("backends"),
    );
    // even: 150 each
    assert!(
        min >= 100 && max <= 200,
        "per-backend requests {counts:?}, want 150 each (100..=200): {report:?}\n{diag}"
    );
}
