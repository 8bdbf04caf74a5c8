//! Streams waiting for an endpoint with room. An endpoint's
//! SETTINGS_MAX_CONCURRENT_STREAMS is a hard limit (it refuses or, once
//! the limit is acknowledged, fails the connection), and a client may open
//! streams before it has read the limit we advertise. A new stream that no
//! endpoint has room for waits here, as a proxy's pending request would;
//! every newer stream waits behind it, because an endpoint must see stream
//! ids in increasing order: the kernel sets CONN_HOLD when its pick fails
//! and sends new streams to the agent until the agent lets go
//! (ROUTE_ACT_UNHOLD, behind the frames it sent, once it has read every
//! message the kernel passed).

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use super::{ClientConn, SlotState};
use crate::ebpf::abi::{CONN_HOLD, CONN_UNHOLD};
use crate::h2::frame::{self, error_code, kind, FrameHeader};

/// Waiting streams per connection, beyond which new streams are refused
/// (Envoy's default max_pending_requests is 1024 too).
const MAX_HELD_STREAMS: usize = 1024;
/// How long the first streams of a connection wait for upstreams still connecting.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Where a frame of a stream the agent carries goes.
pub(super) enum StreamSlot {
    Bound(u32),
    Wait,
}

impl ClientConn {
    /// Streams that come before a new connection's upstreams are all up
    /// wait until they are (a connect takes a millisecond in a cluster),
    /// or for SETTLE_WAIT at most, so they spread over all of them.
    pub(super) fn settling(&mut self) -> bool {
        if self.settled {
            return false;
        }
        let connecting = self
            .slots
            .iter()
            .flatten()
            .any(|s| s.state == SlotState::Connecting);
        self.settled = !connecting || self.started.elapsed() >= SETTLE_WAIT;
        !self.settled
    }

    /// Whether a new stream may wait: some endpoint is connected or
    /// connecting, and the queue is not full.
    pub(super) fn may_hold(&self) -> bool {
        self.held.len() < MAX_HELD_STREAMS && self.slots.iter().flatten().any(|s| s.takes_streams())
    }

    pub(super) fn hold(&mut self, stream: u32, headers: Bytes) {
        tracing::debug!(
            conn = self.id,
            stream,
            held = self.held.len() + 1,
            "no endpoint has room; stream waits"
        );
        self.held.insert(stream, vec![headers]);
        // Before the gate opens the kernel opens no stream anyway; the flag
        // makes it report closed streams (EV_STREAM_CLOSED) so waiting
        // streams go as soon as there is room.
        let flags = &self.shared_conn().flags;
        flags.fetch_and(!CONN_UNHOLD, Ordering::SeqCst);
        flags.fetch_or(CONN_HOLD, Ordering::SeqCst);
    }

    /// A later frame of a waiting stream waits with it; a reset ends it here.
    pub(super) fn add_to_held(&mut self, header: &FrameHeader, bytes: Bytes) {
        if header.kind == kind::RST_STREAM {
            self.held.remove(&header.stream);
            return self.dispatch_held();
        }
        if let Some(frames) = self.held.get_mut(&header.stream) {
            frames.push(bytes);
        }
    }

    /// Waiting DATA bytes, counted against the window the client gets.
    pub(super) fn held_data(&self) -> u64 {
        self.held
            .values()
            .flatten()
            .map(|f| crate::agent::slot::data_len(f))
            .sum()
    }

    /// Sends waiting streams, oldest first, to endpoints with room; lets
    /// the kernel open streams again once none waits.
    pub(super) fn dispatch_held(&mut self) {
        if self.settling() {
            return;
        }
        while let Some(stream) = self.held.keys().next().copied() {
            let Some(slot) = self.pick_slot() else { break };
            let frames = self.held.remove(&stream).unwrap_or_default();
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
        if self.held.is_empty() {
            self.release_hold();
        } else if !self.slots.iter().flatten().any(|s| s.takes_streams()) {
            self.refuse_held();
        }
    }

    /// No endpoint is left to wait for: the client may retry elsewhere.
    fn refuse_held(&mut self) {
        let mut out = BytesMut::new();
        for stream in std::mem::take(&mut self.held).into_keys() {
            frame::rst_stream(&mut out, stream, error_code::REFUSED_STREAM);
        }
        self.to_client(&out);
        self.release_hold();
    }

    pub(super) fn release_hold(&mut self) {
        let held_by_kernel = self.shared_conn().flags.load(Ordering::SeqCst) & CONN_HOLD != 0;
        if held_by_kernel && self.unhold_sent != Some(self.consumed) {
            self.unhold_sent = Some(self.consumed);
            self.shared.injector.unhold(self.id, self.consumed);
        }
    }
}
