//! The `/metrics` page: the per-endpoint totals (metrics_counts.rs), each
//! endpoint's share of the last 10 s against a fair share, connections by
//! path, the kernel's counters and how full the maps are.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::metrics::{write_endpoints, Exposition, Kind};
use super::metrics_counts::EndpointTotals;
use super::Shared;
use crate::ebpf::abi::ROTOR_MAX_ENDPOINTS;

/// The window `rotor_endpoint_share_ratio` looks at.
pub const SHARE_WINDOW: Duration = Duration::from_secs(10);
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Streams opened per (service, endpoint).
pub type Opened = HashMap<(String, String), u64>;

pub struct MetricsPage {
    shared: Arc<Shared>,
    /// Streams opened per (service, endpoint), once a second, for the
    /// last SHARE_WINDOW.
    samples: Mutex<VecDeque<(Instant, Opened)>>,
}

fn opened_of(totals: &[EndpointTotals]) -> Opened {
    (totals.iter())
        .map(|t| ((t.service.clone(), t.endpoint.clone()), t.opened))
        .collect()
}

impl MetricsPage {
    /// Starts sampling (a task on the current runtime).
    pub fn start(shared: Arc<Shared>) -> Arc<MetricsPage> {
        let page = Arc::new(MetricsPage {
            shared,
            samples: Mutex::default(),
        });
        let sampler = page.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                let opened = opened_of(&sampler.totals());
                let mut s = sampler.samples.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                s.push_back((now, opened));
                while s
                    .front()
                    .is_some_and(|(at, _)| now.duration_since(*at) > SHARE_WINDOW)
                {
                    s.pop_front();
                }
            }
        });
        page
    }

    pub fn totals(&self) -> Vec<EndpointTotals> {
        let dp = &self.shared.dp;
        (self.shared.registry.endpoints).totals(|id| dp.endpoint_stats(id))
    }

    /// The newest sample at least `want` old (else the oldest), and its age:
    /// `rotor services` counts streams since then.
    pub fn window(&self, want: Duration) -> Option<(Duration, Opened)> {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (at, opened) = (s.iter().rev())
            .find(|(at, _)| now.duration_since(*at) >= want)
            .or(s.front())?;
        Some((now.duration_since(*at), opened.clone()))
    }

    /// Each endpoint's streams over the window divided by its fair share
    /// (1 / the endpoints its Service has now): 1 is balanced.
    fn shares(&self, now: &Opened) -> Vec<(String, String, f64)> {
        let oldest = {
            let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
            s.front().map(|(_, o)| o.clone())
        };
        let Some(oldest) = oldest else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for svc in self.shared.registry.services() {
            let members: Vec<String> = (svc.listed().iter()).map(|e| e.to_string()).collect();
            let delta = |ep: &String| {
                let key = (svc.name.clone(), ep.clone());
                let was = oldest.get(&key).copied().unwrap_or(0);
                now.get(&key).copied().unwrap_or(0).saturating_sub(was)
            };
            let total: u64 = members.iter().map(delta).sum();
            if total == 0 {
                continue;
            }
            let n = members.len() as f64;
            for ep in &members {
                let ratio = delta(ep) as f64 / total as f64 * n;
                out.push((svc.name.clone(), ep.clone(), ratio));
            }
        }
        out
    }

    pub fn render(&self) -> String {
        let mut x = Exposition::default();
        let totals = self.totals();
        write_endpoints(&mut x, &totals);

        let name = "rotor_endpoint_share_ratio";
        x.family(
            name,
            Kind::Gauge,
            "The endpoint's share of its Service's streams over the last 10 s, divided by its fair share (1 = balanced).",
        );
        for (service, endpoint, ratio) in self.shares(&opened_of(&totals)) {
            x.sample(
                name,
                &[("service", &service), ("endpoint", &endpoint)],
                ratio,
            );
        }

        let name = "rotor_connections";
        x.family(
            name,
            Kind::Gauge,
            "Client connections the agent has, by path: kernel (the fast path is open), agent (the agent carries the streams) or spliced (not HTTP/2: carried whole to one endpoint).",
        );
        let mut by: std::collections::BTreeMap<(String, &str), u64> = Default::default();
        for svc in self.shared.registry.services() {
            by.insert((svc.name.clone(), "kernel"), 0);
            by.insert((svc.name.clone(), "agent"), 0);
            by.insert((svc.name.clone(), "spliced"), 0);
        }
        for c in self.shared.registry.conns() {
            let path = match (&c.spliced, c.fast) {
                (Some(_), _) => "spliced",
                (None, true) => "kernel",
                (None, false) => "agent",
            };
            *by.entry((c.service, path)).or_default() += 1;
        }
        for ((service, path), n) in by {
            x.sample(name, &[("service", &service), ("path", path)], n as f64);
        }

        let name = "rotor_streams_held_total";
        x.family(
            name,
            Kind::Counter,
            "New streams that waited in the agent because every endpoint had reached its MAX_CONCURRENT_STREAMS.",
        );
        for svc in self.shared.registry.services() {
            let held = svc.held.load(std::sync::atomic::Ordering::Relaxed);
            x.sample(name, &[("service", &svc.name)], held as f64);
        }

        let stats = self.shared.dp.stats();
        let name = "rotor_events_lost_total";
        x.family(
            name,
            Kind::Counter,
            "Kernel events not sent to the agent: the ring buffer was full.",
        );
        let lost = stats.iter().find(|(n, _)| *n == "event_lost");
        x.sample(name, &[], lost.map_or(0, |(_, v)| *v) as f64);
        let name = "rotor_datapath_total";
        x.family(
            name,
            Kind::Counter,
            "The kernel programs' counters (as `rotor status` names them) and the agent's fail-open count.",
        );
        for (counter, v) in stats.iter().filter(|(n, _)| *n != "clients_live") {
            x.sample(name, &[("counter", counter)], *v as f64);
        }

        let name = "rotor_upstream_connections";
        x.family(
            name,
            Kind::Gauge,
            "Connections from this node to each endpoint by kind: own (a client connection's), shared (an endpoint's multiplexer's; the endpoint holds own + shared), via_shared (client connections' upstreams to the multiplexer, on loopback).",
        );
        let upstreams = self.shared.pools.connections();
        for u in &upstreams {
            for (kind, n) in [
                ("own", u.dedicated),
                ("shared", u.shared.connections),
                ("via_shared", u.via_shared),
            ] {
                x.sample(name, &[("endpoint", &u.endpoint), ("kind", kind)], n as f64);
            }
        }
        let name = "rotor_shared_streams_total";
        x.family(
            name,
            Kind::Counter,
            "Streams an endpoint's multiplexer carried over its shared connections, by outcome: carried, or refused before the endpoint had them.",
        );
        for u in &upstreams {
            let carried = u.shared.streams - u.shared.refused.min(u.shared.streams);
            for (outcome, n) in [("carried", carried), ("refused", u.shared.refused)] {
                x.sample(
                    name,
                    &[("endpoint", &u.endpoint), ("outcome", outcome)],
                    n as f64,
                );
            }
        }
        let name = "rotor_shared_streams_held_total";
        x.family(
            name,
            Kind::Counter,
            "Streams that waited in an endpoint's multiplexer for room: every shared connection was at the endpoint's SETTINGS_MAX_CONCURRENT_STREAMS and no more could open.",
        );
        for u in &upstreams {
            x.sample(name, &[("endpoint", &u.endpoint)], u.shared.held as f64);
        }

        let name = "rotor_map_entries";
        x.family(name, Kind::Gauge, "Entries in use in the agent's maps.");
        let fill = self.map_fill();
        for (map, used, _) in &fill {
            x.sample(name, &[("map", map)], *used as f64);
        }
        let name = "rotor_map_max_entries";
        x.family(name, Kind::Gauge, "Entries the agent's maps hold at most.");
        for (map, _, max) in &fill {
            x.sample(name, &[("map", map)], *max as f64);
        }
        x.finish()
    }

    /// (map, entries used, entries at most).
    fn map_fill(&self) -> Vec<(&'static str, u64, u64)> {
        let dp = &self.shared.dp;
        let clients = (dp.stats().iter())
            .find(|(n, _)| *n == "clients_live")
            .map_or(0, |(_, v)| *v);
        vec![
            ("streams", dp.stream_count() as u64, dp.max_streams() as u64),
            ("conns", clients, dp.conns.len().saturating_sub(1) as u64),
            (
                "endpoint_stats",
                self.shared.registry.endpoints.len() as u64,
                ROTOR_MAX_ENDPOINTS as u64 - 1,
            ),
        ]
    }
}
