//! What this connection counts per endpoint for the frames the agent
//! carries itself (the kernel counts the rest: ebpf/lib/endpoint.h); both
//! add up in the same per-endpoint totals (agent/metrics_counts.rs).

use std::sync::atomic::Ordering;

use super::kernel::ConnKernel;
use super::ClientConn;
use crate::agent::metrics_counts::EndpointTable;
use crate::ebpf::abi::{Stream, STREAM_ANSWERED};
use crate::h2::frame::{kind, FrameHeader};

/// The error code of a whole RST_STREAM frame, header included.
pub(super) fn rst_code(frame: &[u8]) -> u32 {
    frame
        .get(9..13)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

impl ClientConn {
    pub(super) fn endpoints(&self) -> &EndpointTable {
        &self.shared.registry.endpoints
    }

    /// The endpoint id a slot's streams count under.
    pub(super) fn slot_endpoint(&self, slot: u32) -> u32 {
        self.kernel.up(slot).endpoint.load(Ordering::SeqCst)
    }

    /// A reset of a stream that has an entry, counted under the entry's
    /// endpoint (the slot may have another by now).
    pub(super) fn count_reset(&self, stream: u32, side: usize, code: u32) {
        if let Some(s) = self.kernel.get_stream(stream) {
            self.endpoints().reset(s.endpoint, side, code);
        }
    }

    /// A stream entry the agent removed: the stream ended.
    pub(super) fn count_ended(&self, entry: &Stream) {
        self.endpoints().ended(entry.endpoint);
    }

    /// An endpoint's stream frame the agent carries (its upstream is
    /// diverted): bytes, and the first response HEADERS answers the
    /// stream. The kernel sends none of this upstream's frames until the
    /// agent releases it, so marking ANSWERED here races no program.
    pub(super) fn count_from_endpoint(&self, slot: u32, header: &FrameHeader, len: usize) {
        self.endpoints()
            .bytes(self.slot_endpoint(slot), true, len as u64);
        if header.kind != kind::HEADERS {
            return;
        }
        let Some(mut s) = self.kernel.get_stream(header.stream) else {
            return;
        };
        if s.flags & STREAM_ANSWERED != 0 {
            return;
        }
        s.flags |= STREAM_ANSWERED;
        if self.kernel.set_stream(header.stream, s).is_ok() {
            self.endpoints().answered(s.endpoint, s.opened_ns);
            if s.opened_ns != 0 {
                let now = crate::agent::metrics_counts::monotonic_ns();
                (self.shared.dp).latency_observe(s.endpoint, now, now.saturating_sub(s.opened_ns));
            }
        }
    }
}
