//! `/metrics`: the Prometheus text exposition format, version 0.0.4.
//!
//! Written here rather than with a crate: a few families of counters,
//! gauges and one histogram, whose format rules are the ones below
//! (HELP and TYPE once per family, before its samples; label values
//! escaped; histogram buckets cumulative, ending at `le="+Inf"` equal to
//! `_count`).

use std::fmt::Write;

use super::metrics_counts::{bucket_le, EndpointTotals, RESET_CODES, SIDES, TTFB_BUCKETS};

/// The content type of the format, for the HTTP answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A text exposition being written, one family after the other.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// `\`, `"` and newlines escaped, as label values need.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A float as the format writes it (`+Inf`, integers without a fraction).
fn number(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v.is_nan() {
        return "NaN".into();
    }
    format!("{v}")
}

impl Exposition {
    /// Starts a family: its HELP and TYPE lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, pairs: &[(&str, &str)], value: f64) {
        let _ = writeln!(self.out, "{name}{} {}", labels(pairs), number(value));
    }

    /// A histogram's samples from per-bucket counts (not cumulative) and
    /// their upper bounds (None: the last, +Inf).
    pub fn histogram(
        &mut self,
        name: &str,
        pairs: &[(&str, &str)],
        buckets: &[(Option<f64>, u64)],
        sum: f64,
    ) {
        let mut seen = 0u64;
        let mut inf_written = false;
        for (le, n) in buckets {
            seen += n;
            let le = match le {
                Some(v) => number(*v),
                None => {
                    inf_written = true;
                    "+Inf".into()
                }
            };
            let mut with = pairs.to_vec();
            with.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &with, seen as f64);
        }
        if !inf_written {
            let mut with = pairs.to_vec();
            with.push(("le", "+Inf"));
            self.sample(&format!("{name}_bucket"), &with, seen as f64);
        }
        self.sample(&format!("{name}_sum"), pairs, sum);
        self.sample(&format!("{name}_count"), pairs, seen as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// RST_STREAM codes by name (RFC 9113 §7); the last index any other.
pub fn code_name(code: usize) -> &'static str {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    NAMES.get(code).copied().unwrap_or("OTHER")
}

/// The per-endpoint families, one sample per endpoint (resets only where
/// non-zero: most endpoints never see most codes).
pub fn write_endpoints(x: &mut Exposition, totals: &[EndpointTotals]) {
    type Pick = fn(&EndpointTotals) -> u64;
    let plain: [(&str, Kind, &str, Pick); 7] = [
        (
            "rotor_requests_total",
            Kind::Counter,
            "Streams opened to the endpoint (the kernel's and the agent's).",
            |t| t.opened,
        ),
        (
            "rotor_requests_in_flight",
            Kind::Gauge,
            "Streams open to the endpoint now.",
            EndpointTotals::in_flight,
        ),
        (
            "rotor_responses_total",
            Kind::Counter,
            "Streams the endpoint answered (its first response HEADERS).",
            |t| t.answered,
        ),
        (
            "rotor_request_bytes_total",
            Kind::Counter,
            "Bytes of the client's frames on streams to the endpoint (frame headers included).",
            |t| t.req_bytes,
        ),
        (
            "rotor_response_bytes_total",
            Kind::Counter,
            "Bytes of the endpoint's frames on its streams (frame headers included).",
            |t| t.resp_bytes,
        ),
        (
            "rotor_upstream_connect_failures_total",
            Kind::Counter,
            "Upstream connections to the endpoint that failed to connect or to complete the HTTP/2 handshake.",
            |t| t.connect_failures,
        ),
        (
            "rotor_streams_lost_total",
            Kind::Counter,
            "Streams whose endpoint's connection ended before it answered them; the agent answered 502 (gRPC: UNAVAILABLE).",
            |t| t.lost,
        ),
    ];
    for (name, kind, help, pick) in plain {
        x.family(name, kind, help);
        for t in totals {
            let l = [("service", t.service.as_str()), ("endpoint", &t.endpoint)];
            x.sample(name, &l, pick(t) as f64);
        }
    }
    let name = "rotor_response_first_byte_seconds";
    x.family(
        name,
        Kind::Histogram,
        "Time from the request's HEADERS to the endpoint's first response HEADERS.",
    );
    for t in totals {
        let l = [("service", t.service.as_str()), ("endpoint", &t.endpoint)];
        let buckets: Vec<(Option<f64>, u64)> = (0..TTFB_BUCKETS)
            .map(|b| (bucket_le(b), t.ttfb.get(b).copied().unwrap_or(0)))
            .collect();
        x.histogram(name, &l, &buckets, t.ttfb_sum_ns as f64 / 1e9);
    }
    let name = "rotor_agent_carried_bytes_total";
    x.family(
        name,
        Kind::Counter,
        "The part of the request and response bytes the agent carried itself (slow path) rather than the kernel.",
    );
    for t in totals {
        for (direction, n) in [
            ("request", t.agent_req_bytes),
            ("response", t.agent_resp_bytes),
        ] {
            let l = [
                ("service", t.service.as_str()),
                ("endpoint", &t.endpoint),
                ("direction", direction),
            ];
            x.sample(name, &l, n as f64);
        }
    }
    let name = "rotor_endpoint_goaways_total";
    x.family(
        name,
        Kind::Counter,
        "GOAWAY frames the endpoint sent on rotor's upstream connections, by error code.",
    );
    for t in totals {
        for (code, n) in t.goaways.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let l = [
                ("service", t.service.as_str()),
                ("endpoint", &t.endpoint),
                ("code", code_name(code)),
            ];
            x.sample(name, &l, *n as f64);
        }
    }
    let name = "rotor_stream_resets_total";
    x.family(
        name,
        Kind::Counter,
        "RST_STREAM by error code and by who sent it: the client, the endpoint, or the agent (REFUSED_STREAM, CANCEL).",
    );
    for t in totals {
        for (side, codes) in t.resets.iter().enumerate() {
            for (code, n) in codes.iter().enumerate().take(RESET_CODES) {
                if *n == 0 {
                    continue;
                }
                let l = [
                    ("service", t.service.as_str()),
                    ("endpoint", &t.endpoint),
                    ("code", code_name(code)),
                    ("side", SIDES.get(side).copied().unwrap_or("other")),
                ];
                x.sample(name, &l, *n as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals() -> EndpointTotals {
        let mut t = EndpointTotals {
            service: "default/echo:80".into(),
            endpoint: "10.0.0.1:8080".into(),
            opened: 5,
            answered: 4,
            ended: 3,
            ttfb_sum_ns: 1_500_000_000,
            ttfb: vec![0; TTFB_BUCKETS],
            resets: vec![vec![0; RESET_CODES]; SIDES.len()],
            ..Default::default()
        };
        t.ttfb[1] = 3;
        t.ttfb[TTFB_BUCKETS - 1] = 1;
        t.resets[1][8] = 2;
        t.goaways = vec![0; RESET_CODES];
        t.goaways[0] = 3;
        t
    }

    #[test]
    fn families_have_help_and_type_before_their_samples() {
        let mut x = Exposition::default();
        write_endpoints(&mut x, &[totals()]);
        let text = x.finish();
        let lines: Vec<&str> = text.lines().collect();
        let at = |l: &str| lines.iter().position(|x| *x == l).unwrap();
        let help = at("# HELP rotor_requests_total Streams opened to the endpoint (the kernel's and the agent's).");
        let kind = at("# TYPE rotor_requests_total counter");
        let sample =
            at(r#"rotor_requests_total{service="default/echo:80",endpoint="10.0.0.1:8080"} 5"#);
        assert!(help < kind && kind < sample);
        assert!(text.contains(
            r#"rotor_requests_in_flight{service="default/echo:80",endpoint="10.0.0.1:8080"} 2"#
        ));
        // each family's TYPE once
        for l in lines.iter().filter(|l| l.starts_with("# TYPE")) {
            assert_eq!(lines.iter().filter(|x| *x == l).count(), 1, "{l}");
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        let mut x = Exposition::default();
        write_endpoints(&mut x, &[totals()]);
        let text = x.finish();
        let bucket = |le: &str| -> f64 {
            let prefix = format!(
                r#"rotor_response_first_byte_seconds_bucket{{service="default/echo:80",endpoint="10.0.0.1:8080",le="{le}"}} "#
            );
            let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap();
            line[prefix.len()..].parse().unwrap()
        };
        assert_eq!(bucket("0.000001024"), 0.0);
        assert_eq!(bucket("0.000002048"), 3.0);
        assert_eq!(bucket("+Inf"), 4.0);
        let values: Vec<f64> = (text.lines())
            .filter(|l| l.starts_with("rotor_response_first_byte_seconds_bucket"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(values.len(), TTFB_BUCKETS);
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
        assert!(text.contains(
            r#"rotor_response_first_byte_seconds_count{service="default/echo:80",endpoint="10.0.0.1:8080"} 4"#
        ));
        assert!(text.contains(
            r#"rotor_response_first_byte_seconds_sum{service="default/echo:80",endpoint="10.0.0.1:8080"} 1.5"#
        ));
    }

    #[test]
    fn resets_only_where_seen_with_code_names_and_sides() {
        let mut x = Exposition::default();
        write_endpoints(&mut x, &[totals()]);
        let text = x.finish();
        let resets: Vec<&str> = (text.lines())
            .filter(|l| l.starts_with("rotor_stream_resets_total{"))
            .collect();
        assert_eq!(
            resets,
            [
                r#"rotor_stream_resets_total{service="default/echo:80",endpoint="10.0.0.1:8080",code="CANCEL",side="endpoint"} 2"#
            ]
        );
    }

    #[test]
    fn goaways_only_where_seen_with_code_names() {
        let mut x = Exposition::default();
        write_endpoints(&mut x, &[totals()]);
        let text = x.finish();
        let goaways: Vec<&str> = (text.lines())
            .filter(|l| l.starts_with("rotor_endpoint_goaways_total{"))
            .collect();
        assert_eq!(
            goaways,
            [
                r#"rotor_endpoint_goaways_total{service="default/echo:80",endpoint="10.0.0.1:8080",code="NO_ERROR"} 3"#
            ]
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut x = Exposition::default();
        x.family("a_total", Kind::Counter, "line\\one\ntwo");
        x.sample("a_total", &[("l", "q\"b\\s\nn")], 1.0);
        x.sample("a_total", &[], f64::INFINITY);
        assert_eq!(
            x.finish(),
            "# HELP a_total line\\\\one\\ntwo\n# TYPE a_total counter\na_total{l=\"q\\\"b\\\\s\\nn\"} 1\na_total +Inf\n"
        );
    }
}
