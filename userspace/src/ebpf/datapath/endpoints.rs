//! The kernel's per-endpoint counters (`endpoint_stats`, rotor.h) and
//! latency estimates (`endpoint_latency`), by the endpoint id the agent
//! gives each endpoint (agent/metrics_counts.rs).

use std::sync::atomic::Ordering;

use super::Datapath;
use crate::ebpf::abi::EndpointStats;
use crate::model::{peak_ewma_observe, peak_ewma_read};

impl Datapath {
    /// Entries `streams` holds at most.
    pub fn max_streams(&self) -> u32 {
        self.max_streams
    }

    /// One endpoint id's counters; None for an id outside the map.
    pub fn endpoint_stats(&self, id: u32) -> Option<EndpointStats> {
        self.endpoint_stats.get(&id, 0).ok()
    }

    /// An endpoint's peak-EWMA latency estimate at `now` (CLOCK_MONOTONIC
    /// ns), decayed as the kernel reads it; 0 when none.
    pub fn latency_estimate(&self, id: u32, now: u64) -> u64 {
        self.latency.get(id).map_or(0, |l| {
            peak_ewma_read(
                l.ewma_ns.load(Ordering::Relaxed),
                l.at_ns.load(Ordering::Relaxed),
                now,
            )
        })
    }

    /// An answer the agent carried, timed: fed to the estimate as the
    /// kernel feeds the answers it carries (ebpf/lib/ewma.h).
    pub fn latency_observe(&self, id: u32, now: u64, rtt: u64) {
        if let Some(l) = self.latency.get(id) {
            let at = l.at_ns.load(Ordering::Relaxed);
            let e = peak_ewma_observe(
                l.ewma_ns.load(Ordering::Relaxed),
                now.saturating_sub(at),
                rtt,
            );
            l.ewma_ns.store(e, Ordering::Relaxed);
            l.at_ns.store(now, Ordering::Relaxed);
        }
    }
}
