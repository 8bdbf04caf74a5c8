//! What a connection does every tick (100 ms): move a large Service's window, reconnect failed upstreams, close drained
//! ones.

use std::sync::atomic::Ordering;

use bytes::BytesMut;

use super::{ClientConn, SlotState, DRAIN_GRACE, DRAIN_LIMIT};
use crate::ebpf::abi::*;
use crate::h2::frame;

impl ClientConn {
    pub(super) fn on_tick(&mut self) {
        self.slide_window();
        self.reconnect();
        self.dispatch_held();
        self.maybe_open_gate();
        self.publish_upstreams();
        for slot in 0..MAX_UPSTREAMS as u32 {
            let streams = self.up(slot).streams.load(Ordering::SeqCst);
            let Some(s) = self.slots[slot as usize].as_mut() else {
                continue;
            };
            if let SlotState::Draining { since } = s.state {
                let idle = streams == 0 && s.to_endpoint.is_empty() && s.to_client.is_empty();
                // An endpoint that left the Service gets DRAIN_LIMIT; one
                // that only left this connection's window (subset.rs) keeps
                // its streams until they end.
                let overdue = since.elapsed() > DRAIN_LIMIT
                    && !self.service.endpoints.borrow().contains(&s.endpoint);
                if (idle && since.elapsed() > DRAIN_GRACE) || overdue {
                    tracing::info!(conn = self.id, endpoint = %s.endpoint, "drained upstream closed");
                    self.close_slot(slot);
                }
            }
        }
    }

    /// No stream of this connection is open or waiting, and nothing is
    /// queued for either side: a half-closed client has had every answer.
    pub(super) fn streams_done(&self) -> bool {
        // The kernel's per-endpoint counts cover the streams the agent
        // carries too (bind_stream), except one the full streams map left
        // without an entry: DRAIN_LIMIT ends that wait.
        self.held.is_empty()
            && (0..MAX_UPSTREAMS as u32).all(|slot| {
                self.up(slot).streams.load(Ordering::SeqCst) == 0
                    && self.slots[slot as usize]
                        .as_ref()
                        .is_none_or(|s| s.to_endpoint.is_empty() && s.to_client.is_empty())
            })
    }

    /// After the client's FIN: bytes it sent that the kernel's parser holds
    /// as the start of a message it has not seen the end of.
    pub(super) fn client_bytes_unparsed(&self, a: &tokio::net::TcpStream) -> bool {
        let (Some(st), Ok(received)) = (
            self.shared.dp.parse_state(self.cookie),
            crate::ebpf::tcp_received(a),
        ) else {
            return false;
        };
        received.bytes as u32 != crate::ebpf::verdict_bytes(&st)
    }

    /// The client's bytes wait unparsed (liveness.rs): an empty SETTINGS
    /// makes the client answer. The client's socket joins its socket hash
    /// before its first byte, so this is a safety net, not a path.
    pub(super) fn kick_client_if_unparsed(&mut self, a: &tokio::net::TcpStream) {
        let Some(st) = self.shared.dp.parse_state(self.cookie) else {
            return;
        };
        let Ok(received) = crate::ebpf::tcp_received(a) else {
            return;
        };
        if self
            .client_watch
            .should_kick(received.bytes, crate::ebpf::verdict_bytes(&st))
        {
            tracing::debug!(
                conn = self.id,
                "client bytes wait unparsed: SETTINGS to the client"
            );
            let mut out = BytesMut::new();
            frame::settings(&mut out, &[]);
            self.to_client(&out);
        }
    }

    pub(super) fn publish_upstreams(&self) {
        let ups: Vec<String> = self
            .slots
            .iter()
            .flatten()
            .filter(|s| s.state != SlotState::Closed)
            .map(|s| {
                format!(
                    "{} ({:?}) read {} waiting {} release {:?}",
                    s.endpoint,
                    s.state,
                    s.from_endpoint,
                    s.to_client.iter().count(),
                    s.release_sent
                )
            })
            .collect();
        let fast = self.shared_conn().flags.load(Ordering::Relaxed) & CONN_FAST != 0;
        let (read_bytes, read_messages) = (self.read_bytes, self.consumed);
        self.shared.registry.update_conn(self.id, |i| {
            i.upstreams = ups;
            i.fast = fast;
            i.read_bytes = read_bytes;
            i.read_messages = read_messages;
        });
    }

    /// Opens the fast path once the client acknowledged our SETTINGS and the
    /// first upstreams are settled; re-sent while the kernel has passed
    /// messages we had not yet read.
    pub(super) fn maybe_open_gate(&mut self) {
        if !self.acked || self.shared_conn().flags.load(Ordering::SeqCst) & CONN_FAST != 0 {
            return;
        }
        let settled = self
            .slots
            .iter()
            .flatten()
            .all(|s| s.state != SlotState::Connecting);
        let queued = self
            .slots
            .iter()
            .flatten()
            .any(|s| !s.to_endpoint.is_empty())
            || !self.held.is_empty();
        if !settled || queued || self.gate_sent == Some(self.consumed) {
            return;
        }
        self.gate_sent = Some(self.consumed);
        self.shared.injector.open_gate(self.id, self.consumed);
    }
}
