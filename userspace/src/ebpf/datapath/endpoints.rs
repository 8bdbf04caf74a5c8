//! The kernel's per-endpoint counters (`endpoint_stats`, rotor.h), by the
//! endpoint id the agent gives each endpoint (agent/metrics_counts.rs).

use super::Datapath;
use crate::ebpf::abi::EndpointStats;

impl Datapath {
    /// Entries `streams` holds at most.
    pub fn max_streams(&self) -> u32 {
        self.max_streams
    }

    /// One endpoint id's counters; None for an id outside the map.
    pub fn endpoint_stats(&self, id: u32) -> Option<EndpointStats> {
        self.endpoint_stats.get(&id, 0).ok()
    }
}
