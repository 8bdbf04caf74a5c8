//! Sending the streams that wait (held.rs) once an endpoint has room.

use bytes::{Bytes, BytesMut};

use super::{ClientConn, SlotState};
use crate::h2::frame::FrameHeader;

impl ClientConn {
    /// Whether the first upstreams are still connecting (held.rs, SETTLE_WAIT).
    pub(super) fn settling(&mut self) -> bool {
        let connecting = (self.slots.iter().flatten()).any(|s| s.state == SlotState::Connecting);
        self.held.settling(connecting, tokio::time::Instant::now())
    }

    /// Whether a new stream may wait: some endpoint is connected or
    /// connecting, and the queue is not full.
    pub(super) fn may_hold(&self) -> bool {
        self.held.has_room() && self.slots.iter().flatten().any(|s| s.takes_streams())
    }

    pub(super) fn hold(&mut self, stream: u32, headers: Bytes) {
        tracing::debug!(
            conn = self.id,
            stream,
            held = self.held.len() + 1,
            "no endpoint has room; stream waits"
        );
        self.held.hold(stream, headers, &self.kernel);
        (self.service.held).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A later frame of a waiting stream waits with it; a reset ends it here.
    pub(super) fn add_to_held(&mut self, header: &FrameHeader, bytes: Bytes) {
        if self.held.add(header, bytes) {
            self.dispatch_held();
        }
    }

    /// Sends waiting streams, oldest first, to endpoints with room; lets
    /// the kernel open streams again once none waits.
    pub(super) fn dispatch_held(&mut self) {
        if self.settling() {
            return;
        }
        while let Some(stream) = self.held.oldest() {
            let Some(slot) = self.pick_slot() else { break };
            let frames = self.held.take(stream);
            tracing::debug!(
                conn = self.id,
                stream,
                slot,
                "waiting stream goes to an endpoint with room"
            );
            self.bind_stream(stream, slot);
            for bytes in frames {
                if let Some(header) = FrameHeader::parse(&bytes) {
                    self.carry(slot, header, bytes);
                }
            }
        }
        if !self.held.is_empty() && !self.slots.iter().flatten().any(|s| s.takes_streams()) {
            // No endpoint is left to wait for: the client may retry elsewhere.
            let mut out = BytesMut::new();
            self.held.refuse_all(&mut out);
            self.send_to_client(&out);
        }
        self.release_hold();
    }
}
