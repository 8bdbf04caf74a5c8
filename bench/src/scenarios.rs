//! The scenarios of `cargo xtask bench`, in the order they run, and the
//! `--only` filter over their ids.

use super::{saturation, BenchOptions, Load, Scenario, Servers, INITIAL, SCALED, SCALE_AT_S};

impl BenchOptions {
    /// The scenarios `--only` picks (all without it), in the order they run;
    /// with the scenario an open loop near saturation takes its rate from.
    pub fn scenarios(&self) -> Vec<Scenario> {
        let s = |id: &str, title: &str, load: Load, path: &str, servers: Servers| Scenario {
            id: id.into(),
            title: title.into(),
            load,
            path: path.into(),
            servers,
        };
        let c = |connections, streams| Load::Closed {
            connections,
            streams,
        };
        let all = vec![
            s("1x16-100b", "closed loop, 1 connection × 16 streams, 100 B responses", c(1, 16), "/100b", Servers::Rust),
            s("4x16-100b", "closed loop, 4 connections × 16 streams, 100 B responses", c(4, 16), "/100b", Servers::Rust),
            s("1x16-64k", "closed loop, 1 connection × 16 streams, 64 KiB responses", c(1, 16), "/64k", Servers::Rust),
            s("4x16-64k", "closed loop, 4 connections × 16 streams, 64 KiB responses", c(4, 16), "/64k", Servers::Rust),
            s(
                "open-100b",
                &format!("open loop, {} req/s over 4 connections, 100 B responses (latency from the intended send time)", self.rate),
                Load::Open { connections: 4, rate: self.rate },
                "/100b",
                Servers::Rust,
            ),
            s(
                "scale-up",
                &format!("scale-up: closed loop 4 × 16, 100 B; {INITIAL} → {SCALED} endpoints {SCALE_AT_S} s into the run"),
                Load::ScaleUp { connections: 4, streams: 16 },
                "/100b",
                Servers::Rust,
            ),
            s(
                "h2load-1x16-100b",
                "cross-check: h2load -c 1 -m 16, 100 B, rotor-h2-backend",
                Load::H2load { connections: 1, streams: 16, window_bits: None },
                "/100b",
                Servers::Rust,
            ),
            s(
                "h2load-nghttpd-1x16-100b",
                "cross-check: h2load -c 1 -m 16, 100 B, nghttpd backends",
                Load::H2load { connections: 1, streams: 16, window_bits: None },
                "/100b",
                Servers::Nghttpd,
            ),
            s(
                "h2load-win64k-4x16-64k",
                "nghttp2 client with HTTP/2's default windows: h2load -c 4 -m 16 -w 16 -W 16 (65,535 B stream and connection windows), 64 KiB responses",
                Load::H2load { connections: 4, streams: 16, window_bits: Some(16) },
                "/64k",
                Servers::Rust,
            ),
            s(
                "1000x1-100b",
                "closed loop, 1,000 connections × 1 stream, 100 B responses",
                c(1000, 1),
                "/100b",
                Servers::Rust,
            ),
            s(
                "idle1000-1x16-100b",
                "closed loop 1 × 16, 100 B, without and with 1,000 idle connections held open beside it",
                Load::Idle { idle: 1000, connections: 1, streams: 16 },
                "/100b",
                Servers::Rust,
            ),
            s(
                "open-sat-100b",
                &format!("open loop over 4 connections, 100 B, at {:.0} % of the lowest closed-loop req/s of `{}` over DNAT, HAProxy and rotor in this run (latency from the intended send time)", saturation::FRACTION * 100.0, saturation::BASE),
                Load::OpenNearSaturation { connections: 4, fraction: saturation::FRACTION },
                "/100b",
                Servers::Rust,
            ),
            s(
                "upstreams-200x3",
                "upstream connections per endpoint: 200 client connections that made 3 requests each, still open",
                Load::Upstreams { clients: 200, requests: 3 },
                "/100b",
                Servers::Rust,
            ),
        ];
        let mut picked: Vec<Scenario> = all
            .iter()
            .filter(|s| self.only.is_empty() || self.only.iter().any(|o| s.id.contains(o.as_str())))
            .cloned()
            .collect();
        saturation::add_base(&mut picked, &all);
        picked
    }
}

#[cfg(test)]
mod tests {
    use crate::BenchOptions;

    fn ids(only: &[&str]) -> Vec<String> {
        let mut o = BenchOptions::new(true, None);
        o.only = only.iter().map(|s| s.to_string()).collect();
        o.scenarios().into_iter().map(|s| s.id).collect()
    }

    #[test]
    fn only_picks_by_id_and_brings_the_rate_base() {
        assert_eq!(ids(&["upstreams"]), vec!["upstreams-200x3"]);
        assert_eq!(ids(&["1000"]), vec!["1000x1-100b", "idle1000-1x16-100b"]);
        // The open loop near saturation needs 4x16-100b's req/s, first.
        assert_eq!(ids(&["open-sat"]), vec!["4x16-100b", "open-sat-100b"]);
        let all = ids(&[]);
        let base = all.iter().position(|s| s == "4x16-100b");
        let sat = all.iter().position(|s| s == "open-sat-100b");
        assert!(base < sat && base.is_some());
    }
}
