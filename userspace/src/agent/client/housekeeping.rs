//! What a connection does every tick (100 ms): nudge a stalled socket,
//! move a large Service's window, reconnect failed upstreams, close drained
//! ones.

use std::sync::atomic::Ordering;

use bytes::BytesMut;

use super::{ClientConn, SlotState, DRAIN_GRACE, DRAIN_LIMIT};
use crate::ebpf::abi::*;
use crate::h2::frame;

impl ClientConn {
    pub(super) fn on_tick(&mut self) {
        self.nudge_if_stalled();
        self.slide_window();
        self.reconnect();
        self.dispatch_held();
        self.maybe_open_gate();
        self.publish_upstreams();
        for slot in 0..MAX_UPSTREAMS as u32 {
            let streams = self.up(slot).streams.load(Ordering::SeqCst);
            let Some(s) = self.slots[slot as usize].as_mut() else { continue };
            if let SlotState::Draining { since } = s.state {
                let idle = streams == 0 && s.to_endpoint.is_empty() && s.to_client.is_empty();
                // An endpoint that left the Service gets DRAIN_LIMIT; one
                // that only left this connection's window (subset.rs) keeps
                // its streams until they end.
                let overdue = since.elapsed() > DRAIN_LIMIT && !self.service.endpoints.borrow().contains(&s.endpoint);
                if (idle && since.elapsed() > DRAIN_GRACE) || overdue {
                    tracing::info!(conn = self.id, endpoint = %s.endpoint, "drained upstream closed");
                    self.close_slot(slot);
                }
            }
        }
    }

    /// A sockmap socket can hold bytes its parser has not looked at until
    /// more bytes arrive (ebpf/README.md). With streams open and nothing
    /// moving, a PING to both sides makes each peer send a few bytes.
    fn nudge_if_stalled(&mut self) {
        let c = self.shared_conn();
        let mut progress = self.read_bytes + self.upstream_messages + c.client_recv.load(Ordering::Relaxed);
        let mut open = !self.slow.is_empty();
        for up in &c.up {
            progress += up.req_data.load(Ordering::Relaxed) + up.resp_data.load(Ordering::Relaxed);
            open |= up.streams.load(Ordering::Relaxed) > 0;
        }
        if !self.stall.should_nudge(progress, open) {
            return;
        }
        let mut ping = BytesMut::new();
        frame::ping(&mut ping, *b"rotor\0\0\0");
        self.to_client(&ping);
        for slot in 0..MAX_UPSTREAMS as u32 {
            if self.slots[slot as usize].as_ref().is_some_and(|s| s.is_open()) {
                self.to_upstream(slot, &ping);
            }
        }
    }
}
