//! Per-endpoint stream counters: the ids the kernel counts under
//! (`endpoint_stats`, rotor.h), what the agent counts itself for the
//! streams and frames it carries, and the sum of both that `/metrics` and
//! `rotor status` show.
//!
//! An endpoint keeps its id for the life of the agent, also after it left
//! its Service: its counters are cumulative (a Prometheus counter that
//! vanished and came back would read as a reset), and a stream still open
//! to it counts under it until it ends. The table holds
//! `ROTOR_MAX_ENDPOINTS - 1` endpoints; past that, new endpoints count
//! together under id 0, shown as service="" endpoint="other" (the agent
//! logs it once). Folding endpoints that left into a per-Service total, to
//! free their ids, is left for when a node sees that many.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::ebpf::abi::{EndpointStats, ROTOR_MAX_ENDPOINTS, ROTOR_RESET_CODES, ROTOR_TTFB_BUCKETS};

pub const TTFB_BUCKETS: usize = ROTOR_TTFB_BUCKETS as usize;
pub const RESET_CODES: usize = ROTOR_RESET_CODES as usize;
/// Who reset a stream: the client, the endpoint (both seen in the kernel
/// or the agent), or the agent itself (REFUSED_STREAM, CANCEL).
pub const SIDES: [&str; 3] = ["client", "endpoint", "agent"];
pub const SIDE_CLIENT: usize = 0;
pub const SIDE_ENDPOINT: usize = 1;
pub const SIDE_AGENT: usize = 2;

/// The upper bound of TTFB bucket `b` in seconds (rotor.h: ns < 2^(b+10));
/// None for the last, which holds the rest.
pub fn bucket_le(b: usize) -> Option<f64> {
    (b + 1 < TTFB_BUCKETS).then(|| (1u64 << (b + 10)) as f64 / 1e9)
}

/// One endpoint's counters as shown: the kernel's plus the agent's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointTotals {
    pub service: String,
    pub endpoint: String,
    pub opened: u64,
    pub answered: u64,
    pub ended: u64,
    pub req_bytes: u64,
    pub resp_bytes: u64,
    pub ttfb_sum_ns: u64,
    pub ttfb: Vec<u64>,
    /// Upstream connects (and handshakes) to the endpoint that failed.
    pub connect_failures: u64,
    /// [side][code], sides as in [`SIDES`], code 15 any other.
    pub resets: Vec<Vec<u64>>,
    /// GOAWAYs the endpoint sent, by error code (15 any other).
    #[serde(default)]
    pub goaways: Vec<u64>,
    /// The part of `req_bytes` and `resp_bytes` the agent carried itself
    /// (the slow path: streams held or diverted, a divert over a window).
    #[serde(default)]
    pub agent_req_bytes: u64,
    #[serde(default)]
    pub agent_resp_bytes: u64,
    /// Streams the agent answered 502 because the endpoint's connection
    /// ended before the endpoint answered them.
    #[serde(default)]
    pub lost: u64,
    /// Its last connect or handshake failed, and none succeeded since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<Failing>,
}

/// Why an endpoint's upstreams fail, as the last failed attempt said.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Failing {
    pub why: String,
    /// Failed attempts since the last success.
    pub attempts: u64,
    /// Seconds since the first of them.
    pub for_s: u64,
}

impl EndpointTotals {
    pub fn in_flight(&self) -> u64 {
        self.opened.saturating_sub(self.ended)
    }

    pub fn ttfb_count(&self) -> u64 {
        self.ttfb.iter().sum()
    }

    /// The upper bound (seconds) of the bucket the q-quantile falls in.
    pub fn ttfb_quantile(&self, q: f64) -> Option<f64> {
        let total = self.ttfb_count();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, n) in self.ttfb.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_le(b).unwrap_or(f64::INFINITY));
            }
        }
        None
    }

    fn add_kernel(&mut self, k: &EndpointStats) {
        self.opened += k.opened;
        self.answered += k.answered;
        self.ended += k.ended;
        self.req_bytes += k.req_bytes;
        self.resp_bytes += k.resp_bytes;
        self.ttfb_sum_ns += k.ttfb_sum_ns;
        for (t, v) in self.ttfb.iter_mut().zip(k.ttfb) {
            *t += v;
        }
        for (side, codes) in k.resets.iter().enumerate() {
            for (t, v) in self.resets[side].iter_mut().zip(codes) {
                *t += v;
            }
        }
    }
}

/// What the agent counts for one endpoint id.
#[derive(Debug, Default)]
struct AgentCounts {
    opened: AtomicU64,
    answered: AtomicU64,
    ended: AtomicU64,
    req_bytes: AtomicU64,
    resp_bytes: AtomicU64,
    ttfb_sum_ns: AtomicU64,
    ttfb: [AtomicU64; TTFB_BUCKETS],
    resets: [[AtomicU64; RESET_CODES]; 3],
    goaways: [AtomicU64; RESET_CODES],
    connect_failures: AtomicU64,
    lost: AtomicU64,
}

/// Endpoint ids and the agent's counters by id.
pub struct EndpointTable {
    ids: Mutex<Ids>,
    counts: Vec<AgentCounts>,
    full_logged: AtomicBool,
    /// Endpoints whose last connect failed: why, attempts, since when.
    failing: Mutex<HashMap<u32, (String, u64, std::time::Instant)>>,
}

#[derive(Default)]
struct Ids {
    by_key: HashMap<(String, SocketAddr), u32>,
    /// Index id - 1: the labels of each id given out.
    labels: Vec<(String, SocketAddr)>,
}

impl Default for EndpointTable {
    fn default() -> Self {
        EndpointTable {
            ids: Default::default(),
            counts: (0..ROTOR_MAX_ENDPOINTS)
                .map(|_| Default::default())
                .collect(),
            full_logged: AtomicBool::new(false),
            failing: Mutex::default(),
        }
    }
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns, so a stream the
/// agent stamps is timed by the kernel at its response, and the other way.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0; // 0 means "not timed" (rotor.h, stream.opened_ns)
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The kernel's bucket for a time to first byte (endpoint.h, ttfb_bucket).
pub fn ttfb_bucket(ns: u64) -> usize {
    let bits = (64 - (ns >> 10).leading_zeros()) as usize;
    bits.min(TTFB_BUCKETS - 1)
}

impl EndpointTable {
    /// The id of `endpoint` in `service`, given on first use; 0 once the
    /// table is full.
    pub fn id(&self, service: &str, endpoint: SocketAddr) -> u32 {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let key = (service.to_string(), endpoint);
        if let Some(id) = ids.by_key.get(&key) {
            return *id;
        }
        let id = ids.labels.len() as u32 + 1;
        if id >= ROTOR_MAX_ENDPOINTS {
            if !self.full_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(%endpoint, service, max = ROTOR_MAX_ENDPOINTS - 1,
                    "endpoint table full: further endpoints are counted together, unlabelled");
            }
            return 0;
        }
        ids.labels.push(key.clone());
        ids.by_key.insert(key, id);
        id
    }

    /// Endpoint ids given out.
    pub fn len(&self) -> usize {
        let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn at(&self, id: u32) -> Option<&AgentCounts> {
        self.counts.get(id as usize)
    }

    pub fn opened(&self, id: u32) {
        if let Some(c) = self.at(id) {
            c.opened.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn ended(&self, id: u32) {
        if let Some(c) = self.at(id) {
            c.ended.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn bytes(&self, id: u32, response: bool, n: u64) {
        if let Some(c) = self.at(id) {
            let which = if response {
                &c.resp_bytes
            } else {
                &c.req_bytes
            };
            which.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// A stream's first response HEADERS, carried by the agent; timed if
    /// it was stamped (`opened_ns` != 0).
    pub fn answered(&self, id: u32, opened_ns: u64) {
        let Some(c) = self.at(id) else { return };
        c.answered.fetch_add(1, Ordering::Relaxed);
        if opened_ns != 0 {
            let ns = monotonic_ns().saturating_sub(opened_ns);
            c.ttfb[ttfb_bucket(ns)].fetch_add(1, Ordering::Relaxed);
            c.ttfb_sum_ns.fetch_add(ns, Ordering::Relaxed);
        }
    }

    pub fn connect_failed(&self, id: u32, why: &str) {
        if let Some(c) = self.at(id) {
            c.connect_failures.fetch_add(1, Ordering::Relaxed);
        }
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        let entry =
            (failing.entry(id)).or_insert_with(|| (String::new(), 0, std::time::Instant::now()));
        entry.0 = why.to_string();
        entry.1 += 1;
    }

    /// A stream the endpoint had not answered when its connection ended.
    pub fn lost(&self, id: u32) {
        if let Some(c) = self.at(id) {
            c.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An upstream to the endpoint connected and shook hands.
    pub fn connected(&self, id: u32) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        failing.remove(&id);
    }

    /// The endpoint sent GOAWAY with `code`.
    pub fn goaway(&self, id: u32, code: u32) {
        if let Some(c) = self.at(id) {
            let code = (code as usize).min(RESET_CODES - 1);
            c.goaways[code].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn reset(&self, id: u32, side: usize, code: u32) {
        if let Some(c) = self.at(id) {
            let code = (code as usize).min(RESET_CODES - 1);
            c.resets[side.min(2)][code].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every endpoint with an id, the kernel's counters (`kernel(id)`)
    /// and the agent's summed.
    pub fn totals(&self, kernel: impl Fn(u32) -> Option<EndpointStats>) -> Vec<EndpointTotals> {
        let labels = {
            let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
            ids.labels.clone()
        };
        let mut out: Vec<EndpointTotals> = labels
            .iter()
            .enumerate()
            .map(|(i, (service, ep))| self.total(i as u32 + 1, service, &ep.to_string(), &kernel))
            .collect();
        let other = self.total(0, "", "other", &kernel);
        if other.opened + other.req_bytes + other.resp_bytes > 0 {
            out.push(other);
        }
        out
    }

    fn total(
        &self,
        id: u32,
        service: &str,
        endpoint: &str,
        kernel: &impl Fn(u32) -> Option<EndpointStats>,
    ) -> EndpointTotals {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut t = EndpointTotals {
            service: service.into(),
            endpoint: endpoint.into(),
            ttfb: vec![0; TTFB_BUCKETS],
            resets: vec![vec![0; RESET_CODES]; SIDES.len()],
            goaways: vec![0; RESET_CODES],
            ..Default::default()
        };
        if let Some(c) = self.at(id) {
            t.opened = load(&c.opened);
            t.answered = load(&c.answered);
            t.ended = load(&c.ended);
            t.req_bytes = load(&c.req_bytes);
            t.resp_bytes = load(&c.resp_bytes);
            t.ttfb_sum_ns = load(&c.ttfb_sum_ns);
            t.connect_failures = load(&c.connect_failures);
            t.lost = load(&c.lost);
            t.ttfb = c.ttfb.iter().map(load).collect();
            t.resets = (c.resets.iter())
                .map(|codes| codes.iter().map(load).collect())
                .collect();
            t.goaways = c.goaways.iter().map(load).collect();
            // Only frames the agent carries are counted here; the kernel
            // counts the rest (added below).
            t.agent_req_bytes = t.req_bytes;
            t.agent_resp_bytes = t.resp_bytes;
        }
        if let Some(k) = kernel(id) {
            t.add_kernel(&k);
        }
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        t.failing = failing.get(&id).map(|(why, attempts, since)| Failing {
            why: why.clone(),
            attempts: *attempts,
            for_s: since.elapsed().as_secs(),
        });
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_the_kernels_and_bound_their_times() {
        assert_eq!(ttfb_bucket(0), 0);
        assert_eq!(ttfb_bucket(1023), 0);
        assert_eq!(ttfb_bucket(1024), 1);
        assert_eq!(ttfb_bucket(2047), 1);
        assert_eq!(ttfb_bucket(2048), 2);
        assert_eq!(ttfb_bucket(u64::MAX), TTFB_BUCKETS - 1);
        for ns in [0u64, 5_000, 999_999, 123_456_789, 10_000_000_000] {
            let b = ttfb_bucket(ns);
            let le = bucket_le(b).unwrap();
            assert!(ns as f64 / 1e9 <= le, "{ns} ns in bucket {b} (le {le})");
            if b > 0 {
                assert!(ns as f64 / 1e9 >= bucket_le(b - 1).unwrap());
            }
        }
        assert_eq!(bucket_le(TTFB_BUCKETS - 1), None);
    }

    #[test]
    fn ids_are_per_service_and_endpoint_and_kept() {
        let t = EndpointTable::default();
        let ep: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let a = t.id("ns/a:80", ep);
        assert_eq!(a, 1);
        assert_eq!(t.id("ns/b:80", ep), 2);
        assert_eq!(t.id("ns/a:80", ep), a);
        t.opened(a);
        t.reset(a, SIDE_AGENT, 7);
        t.goaway(a, 0);
        t.goaway(a, 400);
        t.bytes(a, true, 100);
        let kernel = |id: u32| {
            (id == a).then(|| EndpointStats {
                opened: 2,
                ended: 1,
                resp_bytes: 1000,
                ..Default::default()
            })
        };
        let totals = t.totals(kernel);
        assert_eq!(totals.len(), 2, "id 0 unused: not shown");
        assert_eq!((totals[0].opened, totals[0].in_flight()), (3, 2));
        assert_eq!(totals[0].resets[SIDE_AGENT][7], 1);
        assert_eq!(totals[0].goaways[0], 1);
        assert_eq!(
            totals[0].goaways[RESET_CODES - 1],
            1,
            "unknown codes count as other"
        );
        assert_eq!(
            (totals[0].resp_bytes, totals[0].agent_resp_bytes),
            (1100, 100)
        );
        assert_eq!(totals[0].endpoint, "10.0.0.1:80");
    }

    #[test]
    fn quantiles_are_bucket_bounds() {
        let mut t = EndpointTotals {
            ttfb: vec![0; TTFB_BUCKETS],
            ..Default::default()
        };
        t.ttfb[3] = 98;
        t.ttfb[10] = 2;
        assert_eq!(t.ttfb_quantile(0.5), bucket_le(3));
        assert_eq!(t.ttfb_quantile(0.99), bucket_le(10));
        assert_eq!(EndpointTotals::default().ttfb_quantile(0.5), None);
    }
}
