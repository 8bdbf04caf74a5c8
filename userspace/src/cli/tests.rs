//! Rendering against fixed answers of the agent.

use super::render::*;
use super::render_more::*;
use crate::agent::admin::wire::*;
use crate::agent::metrics_counts::{EndpointTotals, Failing, RESET_CODES, SIDES, TTFB_BUCKETS};
use crate::agent::{ConnInfo, SlotInfo, Spliced};

fn totals(ep: &str, opened: u64, ended: u64) -> EndpointTotals {
    let mut t = EndpointTotals {
        service: "ns/echo:80".into(),
        endpoint: ep.into(),
        opened,
        answered: ended,
        ended,
        ttfb: vec![0; TTFB_BUCKETS],
        resets: vec![vec![0; RESET_CODES]; SIDES.len()],
        ..Default::default()
    };
    t.ttfb[7] = ended; // < 2^17 ns: 0.131 ms
    t
}

fn report() -> EndpointsReport {
    let ep = |state: &str, window, t| EndpointReport {
        state: state.into(),
        window,
        totals: t,
    };
    let mut failing = totals("10.0.3.2:8080", 0, 0);
    failing.failing = Some(Failing {
        why: "HTTP/2 handshake: no SETTINGS".into(),
        attempts: 4,
        for_s: 3,
    });
    let mut reset = totals("10.0.2.2:8080", 300, 298);
    reset.resets[1][8] = 2;
    EndpointsReport {
        window_s: 10.0,
        services: vec![ServiceReport {
            name: "ns/echo:80".into(),
            vip: "10.96.0.10:80".into(),
            policy: "round-robin".into(),
            members: 3,
            connections: [2, 1, 1],
            endpoints: vec![
                ep("ready", 60, totals("10.0.1.2:8080", 600, 600)),
                ep("ready", 40, reset),
                ep("failing", 0, failing),
                ep("draining", 0, totals("10.0.9.2:8080", 10, 9)),
            ],
        }],
    }
}

#[test]
fn rates_shares_and_fair_shares_come_from_the_window() {
    let v = services_view(&report(), None);
    let s = &v.services[0];
    assert_eq!((s.requests, s.requests_per_s), (100, 10.0));
    let e = &s.endpoints;
    assert_eq!((e[0].requests_per_s, e[0].share), (6.0, Some(0.6)));
    let third = 1.0 / 3.0;
    assert_eq!(e[0].fair_share, Some(third));
    assert!((e[0].share_ratio.unwrap() - 1.8).abs() < 1e-9);
    assert!((e[1].share_ratio.unwrap() - 1.2).abs() < 1e-9);
    assert_eq!(e[1].resets, 2);
    assert_eq!(e[2].state, "failing");
    assert_eq!(e[2].share_ratio, Some(0.0));
    assert_eq!(e[2].why.as_deref(), Some("HTTP/2 handshake: no SETTINGS"));
    // left the Service: no fair share
    assert_eq!(
        (e[3].fair_share, e[3].share_ratio, e[3].in_flight),
        (None, None, 1)
    );
    assert_eq!(e[0].p50_le_s, Some(131_072e-9));
    // by name, with or without the port
    assert_eq!(services_view(&report(), Some("ns/echo")).services.len(), 1);
    assert_eq!(
        services_view(&report(), Some("ns/echo:80")).services.len(),
        1
    );
    assert!(services_view(&report(), Some("ns/other"))
        .services
        .is_empty());
}

#[test]
fn services_table_shows_each_endpoint_and_why_it_fails() {
    let text = services_table(&services_view(&report(), None));
    assert!(text.starts_with("window 10.0s"), "{text}");
    assert!(text.contains("SERVICE ns/echo:80 10.96.0.10:80 round-robin: 10.0 req/s; connections 2 kernel, 1 agent, 1 spliced"), "{text}");
    let line = text.lines().find(|l| l.contains("10.0.1.2:8080")).unwrap();
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "10.0.1.2:8080",
            "ready",
            "6.0",
            "60.0%",
            "33.3%",
            "1.80",
            "0",
            "<=0.131ms",
            "<=0.131ms",
            "0"
        ]
    );
    assert!(
        text.contains("    why: HTTP/2 handshake: no SETTINGS\n"),
        "{text}"
    );
    let draining = text.lines().find(|l| l.contains("10.0.9.2")).unwrap();
    assert!(
        draining.contains("draining") && draining.contains(" - "),
        "{draining}"
    );
}

#[test]
fn json_rows_name_their_units() {
    let v = services_view(&report(), None);
    let j: serde_json::Value = serde_json::to_value(&v).unwrap();
    assert_eq!(j["window_s"], 10.0);
    let e = &j["services"][0]["endpoints"][0];
    assert_eq!(e["requests"], 60);
    assert_eq!(e["requests_per_s"], 6.0);
    assert_eq!(e["share"], 0.6);
    assert!(e["p99_le_s"].as_f64().is_some());
    assert!(j["services"][0]["endpoints"][0].get("why").is_none());
}

#[test]
fn top_puts_the_worst_share_first_with_bars() {
    let frame = top_frame(&services_view(&report(), None), 120);
    let rows: Vec<&str> = frame
        .split("\r\n")
        .filter(|l| l.starts_with("ns/echo"))
        .collect();
    // off the fair share by 1.0 (failing), 0.8, 0.2; the draining one last
    let order: Vec<&str> = rows
        .iter()
        .map(|r| r.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "10.0.3.2:8080",
            "10.0.1.2:8080",
            "10.0.2.2:8080",
            "10.0.9.2:8080"
        ]
    );
    assert!(!frame.contains('\n') || frame.contains("\r\n"));
    assert_eq!(bar(Some(1.0), 10), "#####|....");
    assert_eq!(bar(Some(0.0), 10), ".....|....");
    assert_eq!(bar(Some(5.0), 10), "#####|####");
    assert_eq!(bar(None, 4), "    ");
    assert!(rows[1].ends_with(&bar(Some(1.8), 40)), "{}", rows[1]);
}

#[test]
fn conns_show_the_path_and_per_upstream_counters() {
    let kernel = ConnStatus {
        info: ConnInfo {
            id: 7,
            service: "ns/echo:80".into(),
            client: "10.0.0.10:40000".into(),
            fast: true,
            slots: vec![SlotInfo {
                slot: 0,
                endpoint: "10.0.1.2:8080".into(),
                state: "active".into(),
                max_streams: Some(4),
            }],
            ..Default::default()
        },
        kernel: ConnCounters {
            upstreams: vec![UpstreamCounters {
                slot: 0,
                streams: 2,
                req_data: 10,
                resp_data: 2000,
                diverted: true,
                ..Default::default()
            }],
            ..Default::default()
        },
    };
    let spliced = ConnStatus {
        info: ConnInfo {
            id: 8,
            service: "ns/echo:80".into(),
            client: "10.0.0.10:40001".into(),
            spliced: Some(Spliced {
                endpoint: "10.0.2.2:8080".into(),
                why: "HTTP/1.x".into(),
            }),
            ..Default::default()
        },
        kernel: Default::default(),
    };
    let rows = conn_rows(&[kernel, spliced]);
    assert_eq!(rows[0].path, "kernel");
    let u = &rows[0].upstreams[0];
    assert_eq!(
        (
            u.streams_open,
            u.request_data_bytes,
            u.response_data_bytes,
            u.diverted
        ),
        (2, 10, 2000, true)
    );
    assert_eq!(rows[1].path, "spliced");
    let text = conns_table(&rows);
    assert!(
        text.contains("to 10.0.2.2:8080 (HTTP/1.x: not balanced per request)"),
        "{text}"
    );
    assert!(text.contains("diverted max-streams 4"), "{text}");
}

#[test]
fn explain_prints_verdict_findings_and_skew() {
    let e = Explanation {
        target: "10.96.0.99:80".into(),
        kind: "vip".into(),
        verdict: "not balanced: not in the agent's model".into(),
        findings: vec![Finding {
            level: "problem".into(),
            text: "not labelled?".into(),
        }],
        skew: Some(Skew {
            source: "sockets".into(),
            endpoints: vec![],
            conntrack: vec![("10.0.1.2:80".into(), 3), ("10.0.2.2:80".into(), 1)],
        }),
    };
    let text = explain_table(&e);
    assert!(
        text.starts_with("10.96.0.99:80 (vip): not balanced: not in the agent's model\n"),
        "{text}"
    );
    assert!(text.contains("  problem  not labelled?"), "{text}");
    assert!(text.contains("  skew: max/min 3.00"), "{text}");
    assert_eq!(skew(&[4, 0, 0]), "max/min inf (most 4, least 0)");
    assert_eq!(skew(&[]), "n/a");
}
