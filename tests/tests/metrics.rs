//! `/metrics` (`rotor-agent --metrics`), scraped as Prometheus would, after
//! real traffic: the per-endpoint counts equal what each backend counted,
//! the time-to-first-byte histogram counts every answered stream, a
//! backend's RST_STREAM shows with its code and side, and streams the agent
//! carries (held for an endpoint's MAX_CONCURRENT_STREAMS) count too, as do
//! the streams that wait in an endpoint's multiplexer for room.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rotor_testbed::agent::http_get;
use rotor_testbed::process::Child;
use rotor_testbed::tools::h2load;
use rotor_testbed::topology::backend_addr;
use rotor_testbed::{scaled, scaled_secs, Agent, LoadSpec, TestBed};
use rotor_tests::peers::{self, count_requests, python_script, spawn_in_backend, start_nghttpd};
use rotor_tests::probe;

const METRICS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 15020);
/// The test Service's name in the agent's config (agent::config_yaml).
const SERVICE: &str = "echo";
const RESET_PORT: u16 = 9004;
const LIMITED_PORT: u16 = 9005;
const GOAWAY_PORT: u16 = 9006;
const WHOAMI: &str = "http://10.96.0.10:8080/whoami";

fn start_agent(bed: &mut TestBed, endpoints: &[SocketAddrV4]) {
    start_agent_with(bed, endpoints, &[]);
}

fn start_agent_with(bed: &mut TestBed, endpoints: &[SocketAddrV4], args: &[&str]) {
    let addr = METRICS.to_string();
    let mut all = vec!["--metrics", &addr];
    all.extend_from_slice(args);
    let agent = Agent::start_with_args(&bed.topo, &bed.cgroup, endpoints, &all).expect("agent");
    bed.agent = Some(agent);
}

/// Two nghttpd that take 4 streams at a time each (`-m 4`), and their
/// addresses.
fn limited_endpoints(bed: &TestBed) -> (Vec<Child>, Vec<SocketAddrV4>) {
    let servers = (1..=2)
        .map(|k| start_nghttpd(&bed.topo, k, LIMITED_PORT, &["-m", "4"]).expect("nghttpd -m 4"))
        .collect();
    let endpoints = (1..=2)
        .map(|k| SocketAddrV4::new(*backend_addr(k).ip(), LIMITED_PORT))
        .collect();
    (servers, endpoints)
}

/// 2,000 requests 48 at a time, on `conns` connections: every one succeeds.
fn forty_eight_at_once(bed: &mut TestBed, conns: usize) {
    let (c, m) = (conns.to_string(), (48 / conns).to_string());
    let res = h2load(
        &bed.topo,
        Some(&bed.cgroup),
        &["-c", &c, "-m", &m, "-n", "2000", WHOAMI],
    );
    let diag = bed.diagnostics();
    let (s, _) = res.unwrap_or_else(|e| panic!("{e:#}\n{diag}"));
    assert!(
        s.succeeded == 2000 && s.failed == 0 && s.errored == 0,
        "{:?}\n{diag}",
        s.lines
    );
}

fn scrape(bed: &TestBed) -> String {
    let (code, body) = http_get(bed.topo.node_ns(), METRICS, "/metrics").expect("curl");
    assert_eq!(code, 200, "GET /metrics: {body}");
    body
}

/// The value of the sample of `name` whose labels include all of `labels`
/// (the sum if several match); None if none does.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        if n != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        {
            *found.get_or_insert(0.0) += value.parse::<f64>().expect("sample value");
        }
    }
    found
}

fn of(ep: SocketAddrV4) -> [(&'static str, String); 2] {
    [("service", SERVICE.into()), ("endpoint", ep.to_string())]
}

fn get(text: &str, name: &str, ep: SocketAddrV4) -> u64 {
    let l = of(ep);
    let labels: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
    metric(text, name, &labels).unwrap_or(0.0) as u64
}

/// Scrapes until no stream is in flight (the last ends are counted a
/// moment after the client has its answers).
fn scrape_settled(bed: &TestBed, endpoints: &[SocketAddrV4]) -> String {
    let start = Instant::now();
    loop {
        let text = scrape(bed);
        let open: u64 = (endpoints.iter())
            .map(|ep| get(&text, "rotor_requests_in_flight", *ep))
            .sum();
        if open == 0 || start.elapsed() > scaled(Duration::from_secs(5)) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 3,000 requests over two connections of 8 streams to three nghttpd:
/// `rotor_requests_total` of each endpoint is what that backend counted,
/// every stream was answered, the histogram counts each once, and none is
/// left in flight.
#[test]
fn requests_per_endpoint_equal_what_each_backend_counted() {
    let mut bed = TestBed::new(3).expect("test bed");
    let endpoints = bed.topo.backend_addrs();
    start_agent(&mut bed, &endpoints);
    let before = bed.topo.request_counts().unwrap();
    let report = bed.load(&LoadSpec::whoami(2, 8, 3000)).unwrap();
    let served = bed.served_since(&before).unwrap();
    let text = scrape_settled(&bed, &endpoints);
    let diag = bed.diagnostics();
    assert_eq!((report.ok, report.failed), (3000, 0), "{report:?}\n{diag}");
    let mut total = 0;
    for (k, ep) in endpoints.iter().enumerate() {
        let name = format!("be{}", k + 1);
        let counted = served.iter().find(|(n, _)| *n == name).map_or(0, |x| x.1);
        let requests = get(&text, "rotor_requests_total", *ep);
        assert_eq!(
            requests, counted,
            "{name} ({ep}) served {counted}, /metrics says {requests}\n{text}\n{diag}"
        );
        assert_eq!(get(&text, "rotor_responses_total", *ep), counted, "{text}");
        assert_eq!(
            get(&text, "rotor_response_first_byte_seconds_count", *ep),
            counted,
            "histogram count against answered streams\n{text}"
        );
        let l = of(*ep);
        let inf = [("endpoint", l[1].1.as_str()), ("le", "+Inf")];
        assert_eq!(
            metric(&text, "rotor_response_first_byte_seconds_bucket", &inf),
            Some(counted as f64),
            "{text}"
        );
        assert_eq!(get(&text, "rotor_requests_in_flight", *ep), 0, "{text}");
        assert!(get(&text, "rotor_response_bytes_total", *ep) > 0, "{text}");
        total += requests;
    }
    assert_eq!(total, 3000, "{text}");
    // the time to first byte is real: some time, less than the whole run
    let sum = metric(&text, "rotor_response_first_byte_seconds_sum", &[]).unwrap_or(0.0);
    assert!(sum > 0.0 && sum < 3000.0 * 5.0, "sum {sum}\n{text}");
    let share = metric(&text, "rotor_endpoint_share_ratio", &[("service", SERVICE)]);
    assert!(share.is_some(), "no share ratio\n{text}");
}

/// A backend that answers /reset with RST_STREAM(INTERNAL_ERROR): each
/// reset it sent shows in `rotor_stream_resets_total` with side="endpoint"
/// and code="INTERNAL_ERROR", and each request it got in
/// `rotor_requests_total`.
#[test]
fn endpoint_resets_show_with_their_code_and_side() {
    peers::python_has(&["h2"]).expect("python3 h2");
    let mut bed = TestBed::new(1).expect("test bed");
    let ns = bed.topo.backend(1).unwrap().netns().to_string();
    let port = RESET_PORT.to_string();
    let args = ["--name", "be1", "--port", &port, "--code", "2"];
    let server = spawn_in_backend(
        &bed.topo,
        "reset-server",
        python_script(&ns, None, "reset_server.py", &args),
    )
    .expect("reset server");
    let ep = SocketAddrV4::new(*backend_addr(1).ip(), RESET_PORT);
    start_agent(&mut bed, &[ep]);
    let spec = LoadSpec {
        path: Some("/reset".into()),
        ..LoadSpec::whoami(1, 4, 40)
    };
    let report = bed.load(&spec).unwrap();
    let plain = bed.load(&LoadSpec::whoami(1, 4, 20)).unwrap();
    let text = scrape_settled(&bed, &[ep]);
    let out = server.output(rotor_testbed::process::Stream::Stdout);
    let resets = out.lines().filter(|l| l.starts_with("reset ")).count() as u64;
    let requests = out.lines().filter(|l| l.starts_with("request ")).count() as u64;
    let diag = bed.diagnostics();
    assert_eq!(report.ok, 0, "every /reset was reset: {report:?}\n{diag}");
    assert_eq!(plain.ok, 20, "{plain:?}\n{diag}");
    assert!(resets >= 40, "the server reset {resets}\n{out}");
    let seen = metric(
        &text,
        "rotor_stream_resets_total",
        &[
            ("endpoint", &ep.to_string()),
            ("code", "INTERNAL_ERROR"),
            ("side", "endpoint"),
        ],
    );
    assert_eq!(seen, Some(resets as f64), "{text}\n{diag}");
    assert_eq!(get(&text, "rotor_requests_total", ep), requests, "{text}");
    assert_eq!(get(&text, "rotor_requests_in_flight", ep), 0, "{text}");
    // reset streams were never answered: the histogram has the others
    assert_eq!(
        get(&text, "rotor_response_first_byte_seconds_count", ep),
        requests - resets,
        "{text}"
    );
}

/// Two nghttpd that take 4 streams at a time (`-m 4`) and h2load with 48
/// at once on one connection, sent before it has the agent's SETTINGS: the
/// agent carries the streams opened before the client's SETTINGS ACK and
/// holds those beyond the endpoints' room until one has room, and every
/// stream counts under the endpoint that served it (with the agent's
/// counting off, 2,000 requests showed as N: see the report).
#[test]
fn streams_the_agent_holds_and_carries_count_too() {
    let mut bed = TestBed::new(2).expect("test bed");
    let (servers, endpoints) = limited_endpoints(&bed);
    start_agent(&mut bed, &endpoints);
    forty_eight_at_once(&mut bed, 1);
    let text = scrape_settled(&bed, &endpoints);
    let diag = bed.diagnostics();
    let mut total = 0;
    for (server, ep) in servers.iter().zip(&endpoints) {
        let counted = count_requests(server);
        let requests = get(&text, "rotor_requests_total", *ep);
        assert_eq!(
            requests, counted,
            "{ep} served {counted}, /metrics says {requests}\n{text}\n{diag}"
        );
        assert_eq!(
            get(&text, "rotor_response_first_byte_seconds_count", *ep),
            counted,
            "{text}"
        );
        assert_eq!(get(&text, "rotor_requests_in_flight", *ep), 0, "{text}");
        total += requests;
    }
    assert_eq!(total, 2000, "{text}");
    let held = metric(&text, "rotor_streams_held_total", &[("service", SERVICE)]);
    assert!(
        held.is_some_and(|n| n >= 1.0),
        "48 streams at once, room for 8: some waited in the agent\n{text}"
    );
    let carried: f64 = (endpoints.iter())
        .filter_map(|ep| {
            let ep = ep.to_string();
            metric(
                &text,
                "rotor_agent_carried_bytes_total",
                &[("endpoint", &ep)],
            )
        })
        .sum();
    assert!(
        carried > 0.0,
        "held streams were carried by the agent\n{text}"
    );
}

/// With every stream shared (`--dedicated-upstreams 0`) and one shared
/// connection to each endpoint, 48 streams at once on six client
/// connections meet room for 8: the rest wait in the multiplexers, and
/// `rotor_shared_streams_held_total` counts them per endpoint, as `rotor
/// status` does (HELD). (One connection of 48 would not do: the agent
/// tells each client the endpoints' room, 8, and h2load keeps to it.)
#[test]
fn streams_waiting_in_a_multiplexer_count_as_held() {
    let mut bed = TestBed::new(2).expect("test bed");
    let (_servers, endpoints) = limited_endpoints(&bed);
    let shared_only = ["--dedicated-upstreams", "0", "--shared-upstreams", "1"];
    start_agent_with(&mut bed, &endpoints, &shared_only);
    forty_eight_at_once(&mut bed, 6);
    let text = scrape_settled(&bed, &endpoints);
    let agent = bed.agent.as_ref().expect("agent");
    let status = probe::status(agent).expect("rotor status");
    let diag = bed.diagnostics();
    let mut held = 0;
    for ep in &endpoints {
        let e = ep.to_string();
        let metric = metric(
            &text,
            "rotor_shared_streams_held_total",
            &[("endpoint", &e)],
        );
        let shown = (status["upstreams"].as_array().into_iter().flatten())
            .find(|u| u["endpoint"] == e.as_str())
            .and_then(|u| u["shared"]["held"].as_u64());
        assert_eq!(
            metric.map(|m| m as u64),
            shown,
            "{e}: /metrics and rotor status disagree\n{text}\n{status}"
        );
        held += shown.unwrap_or(0);
    }
    // 2,000 streams, at most 8 of them with room at a time
    println!("{held} of 2,000 streams waited in the multiplexers");
    assert!(
        held >= 1000,
        "{held} streams waited in the multiplexers\n{text}\n{diag}"
    );
}

/// An endpoint's graceful shutdown (GOAWAY NO_ERROR, tests/peers/
/// goaway_server.py) under load shows under that endpoint and code: at
/// least the GOAWAY on the upstream that carried the load, at most as many
/// as the server sent (it also sends one to each connection opened after,
/// which the agent meets in the handshake and counts as a connect failure).
#[test]
fn endpoint_goaways_show_with_their_code() {
    peers::python_has(&["h2"]).expect("python3 h2");
    let mut bed = TestBed::new(1).expect("test bed");
    let ns = bed.topo.backend(1).unwrap().netns().to_string();
    let port = GOAWAY_PORT.to_string();
    let mut server = spawn_in_backend(
        &bed.topo,
        "goaway-server",
        python_script(
            &ns,
            None,
            "goaway_server.py",
            &["--name", "be1", "--port", &port],
        ),
    )
    .expect("goaway server");
    let ep = SocketAddrV4::new(*backend_addr(1).ip(), GOAWAY_PORT);
    start_agent(&mut bed, &[ep]);
    let before = scrape(&bed);
    assert_eq!(
        metric(&before, "rotor_endpoint_goaways_total", &[]),
        None,
        "no GOAWAY yet\n{before}"
    );
    let spec = LoadSpec {
        duration: Some(scaled_secs(2.0)),
        requests: None,
        ..LoadSpec::whoami(1, 4, 0)
    };
    let load = bed.spawn_load(&spec).expect("load");
    // The GOAWAY must meet an established upstream, not one still in its
    // handshake (which counts as a connect failure): a slow machine took
    // longer than 700 ms to get there.
    let e = ep.to_string();
    let served = rotor_testbed::wait_until(Duration::from_secs(10), || {
        metric(&scrape(&bed), "rotor_responses_total", &[("endpoint", &e)]).is_some_and(|n| n > 0.0)
    });
    assert!(
        served.is_some(),
        "no response through rotor within 10 s\n{}",
        bed.diagnostics()
    );
    server.signal(libc::SIGUSR1).expect("SIGUSR1");
    let _ = load.finish();
    let text = scrape(&bed);
    let out = server.output(rotor_testbed::process::Stream::Stdout);
    let sent = (out.lines())
        .filter_map(|l| l.strip_prefix("goaways "))
        .filter_map(|n| n.trim().parse::<f64>().ok())
        .fold(0.0, f64::max);
    let seen = metric(
        &text,
        "rotor_endpoint_goaways_total",
        &[("endpoint", &e), ("code", "NO_ERROR")],
    )
    .unwrap_or(0.0);
    assert!(
        seen >= 1.0 && seen <= sent,
        "the server sent {sent} GOAWAYs, /metrics counts {seen}\n{out}\n{text}\n{}",
        bed.diagnostics()
    );
}

/// The probes answer on the metrics address too, and the page is the
/// Prometheus text format (the kind Prometheus asks for).
#[test]
fn probes_and_format_on_the_metrics_address() {
    let mut bed = TestBed::new(1).expect("test bed");
    let endpoints = bed.topo.backend_addrs();
    start_agent(&mut bed, &endpoints);
    let node = bed.topo.node_ns().to_string();
    assert_eq!(http_get(&node, METRICS, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(&node, METRICS, "/readyz").unwrap().0, 200);
    let text = scrape(&bed);
    for family in [
        "rotor_requests_total counter",
        "rotor_requests_in_flight gauge",
        "rotor_response_first_byte_seconds histogram",
        "rotor_stream_resets_total counter",
        "rotor_connections gauge",
        "rotor_upstream_connect_failures_total counter",
        "rotor_events_lost_total counter",
        "rotor_map_entries gauge",
        "rotor_endpoint_share_ratio gauge",
        "rotor_streams_held_total counter",
        "rotor_endpoint_goaways_total counter",
        "rotor_agent_carried_bytes_total counter",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}\n")),
            "{family}\n{text}"
        );
    }
}

/// Every query of the Grafana dashboard (deploy/grafana/rotor-dashboard.json)
/// parses as PromQL, and every metric it names is a family the agent
/// serves after traffic (histograms by their _bucket, _sum and _count).
#[test]
fn grafana_dashboard_queries_parse_and_name_only_served_metrics() {
    let mut bed = TestBed::new(2).expect("test bed");
    let endpoints = bed.topo.backend_addrs();
    start_agent(&mut bed, &endpoints);
    let report = bed.load(&LoadSpec::whoami(1, 4, 200)).expect("load");
    assert_eq!(report.ok, 200, "{report:?}");
    let text = scrape(&bed);
    let mut served = std::collections::BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                served.insert(format!("{name}{suffix}"));
            }
        } else {
            served.insert(name.to_string());
        }
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/rotor-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut exprs = Vec::new();
    collect_queries(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut named = std::collections::BTreeSet::new();
    for expr in &exprs {
        // Grafana's variables, as Grafana substitutes them.
        let q = expr
            .replace("$__rate_interval", "1m")
            .replace("$service", ".*")
            .replace("$node", ".*");
        if let Err(e) = promql_parser::parser::parse(&q) {
            panic!("{expr}: {e}");
        }
        let names = metric_names(&q);
        assert!(!names.is_empty(), "{expr} names no rotor metric");
        for name in names {
            assert!(
                served.contains(&name),
                "{expr}: {name} is not served\n{text}"
            );
            named.insert(name);
        }
    }
    for family in [
        "rotor_endpoint_share_ratio",
        "rotor_requests_total",
        "rotor_stream_resets_total",
    ] {
        assert!(named.contains(family), "the dashboard shows no {family}");
    }
}

/// The `expr` of every panel target, and the metric of every variable's
/// `label_values` query.
fn collect_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    // a variable's label_values(metric, label): its metric
                    // must be served too; the rest is Grafana's, not PromQL
                    ("query", serde_json::Value::String(s)) => {
                        if let Some(inner) = s.strip_prefix("label_values(") {
                            out.push(inner.split(',').next().unwrap_or(inner).to_string());
                        }
                    }
                    _ => collect_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_queries(i, out)),
        _ => {}
    }
}

fn metric_names(q: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = q.as_bytes();
    let mut i = 0;
    while let Some(at) = q[i..].find("rotor_") {
        let start = i + at;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = q[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(q.len(), |e| start + e);
        if before_ok {
            names.push(q[start..end].to_string());
        }
        i = end;
    }
    names
}
