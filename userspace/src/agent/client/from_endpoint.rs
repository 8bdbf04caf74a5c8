//! Messages the kernel passed from an endpoint: its connection-level frames
//! (the agent is its peer) and frames diverted over the client's window.

use super::kernel::ConnKernel;
use std::sync::atomic::Ordering;

use bytes::BytesMut;

use super::stream_end::Gone;
use super::{ClientConn, SlotState};
use crate::agent::endpoint_socket::{self, UpstreamEvent};
use crate::agent::metrics_counts::SIDE_ENDPOINT;
use crate::ebpf::abi::{STREAM_SERVER_END, UP_DRAINING, UP_EMPTY};
use crate::h2::frame::{self, error_code, flag, kind, setting};
use crate::h2::message::Message;

impl ClientConn {
    pub(super) fn on_upstream_event(&mut self, ev: UpstreamEvent) {
        match ev {
            UpstreamEvent::Message {
                slot,
                message,
                held,
            } => {
                if let Some(s) = self.slots[slot as usize].as_mut() {
                    s.from_endpoint = s.from_endpoint.wrapping_add(1);
                }
                self.on_upstream_message(slot, message);
                // the reader may read on (its READ_AHEAD), once the message
                // is queued where its own bound counts it
                drop(held);
            }
            UpstreamEvent::Closed { slot, reason } => {
                let Some(s) = self.slots[slot as usize].as_mut() else {
                    return;
                };
                if s.state == SlotState::Closed {
                    return;
                }
                tracing::info!(conn = self.id, endpoint = %s.endpoint, %reason, "upstream closed");
                // No new streams; the socket stays open (its reader holds
                // it) until the kernel has carried the endpoint's last
                // frames, a response's trailers before its FIN say: only
                // then do its streams end (`end_slot_streams`) and the slot
                // is reused.
                s.state = SlotState::Closed;
                s.closed_at = Some(tokio::time::Instant::now());
                s.unsettled = true;
                self.kernel.up(slot).state.store(UP_EMPTY, Ordering::SeqCst);
                self.advertise_stream_limit();
            }
            UpstreamEvent::Unparsed { slot } => {
                // The endpoint's bytes wait unparsed (liveness.rs): it must
                // answer a SETTINGS, and its answer makes the parser run.
                tracing::debug!(
                    conn = self.id,
                    slot,
                    "endpoint bytes wait unparsed: SETTINGS to the endpoint"
                );
                let mut out = BytesMut::new();
                frame::settings(&mut out, &[]);
                self.send_to_upstream(slot, &out);
            }
            UpstreamEvent::ReadsOn { slot, cookie, ask } => {
                // the same upstream, not one that took its slot since
                if let Some(s) = self.slots[slot as usize]
                    .as_mut()
                    .filter(|s| s.cookie == cookie && s.is_open())
                {
                    s.handback = Some(ask);
                }
            }
            UpstreamEvent::Settled { slot } => {
                let Some(s) = self.slots[slot as usize].as_mut().filter(|s| s.unsettled) else {
                    return;
                };
                s.unsettled = false;
                self.end_slot_streams(slot, Gone::Lost);
                self.close_slot(slot);
            }
        }
    }

    fn on_upstream_message(&mut self, slot: u32, m: Message) {
        let Message::Frame { header, bytes } = &m else {
            return;
        };
        tracing::trace!(conn = self.id, slot, ?header, "from upstream");
        if self.slots[slot as usize]
            .as_ref()
            .is_some_and(|s| s.flooded)
        {
            return; // what a dropped flooder still sends goes nowhere
        }
        if header.stream != 0 {
            self.count_from_endpoint(slot, header, bytes.len());
            if header.kind == kind::RST_STREAM {
                let code = super::counting::rst_code(bytes);
                self.count_reset(header.stream, SIDE_ENDPOINT, code);
            }
            // Diverted: keep order behind what is already waiting.
            let ends = (header.kind == kind::DATA || header.kind == kind::HEADERS)
                && header.has(flag::END_STREAM);
            if header.kind == kind::RST_STREAM || ends {
                // as the upstream verdict does (rotor.h, upstream.refused)
                let refused = header.kind == kind::RST_STREAM
                    && m.payload().get(..4) == Some(&error_code::REFUSED_STREAM.to_be_bytes()[..]);
                if refused || ends {
                    self.kernel
                        .up(slot)
                        .refused
                        .store(refused as u32, Ordering::SeqCst);
                }
                self.stream_end(
                    header.stream,
                    slot,
                    STREAM_SERVER_END,
                    header.kind == kind::RST_STREAM,
                );
            }
            let flood = self.slots[slot as usize]
                .as_mut()
                .and_then(|s| s.to_client.push_back(m).err());
            if let Some(e) = flood {
                return self.drop_flooding_endpoint(slot, &e);
            }
            self.flush_to_client(slot);
            // The endpoint spent window on what the agent just sent on; an
            // upstream that has caught up gets it back here. Waiting for a
            // kernel event (its DATA goes to the agent: resp_data does not
            // move) or a client WINDOW_UPDATE (a client with 30 MB of window
            // left sends none) left it without window and still diverted:
            // 10 of 12 downloads of 8 MiB stalled (ebpf/README.md point 21).
            self.grant_endpoints();
            return;
        }
        let payload = m.payload();
        let mut out = BytesMut::new();
        match header.kind {
            kind::SETTINGS if !header.has(flag::ACK) => {
                if let Some(max) = endpoint_socket::max_streams_in(payload) {
                    if let Some(s) = self.slots[slot as usize].as_mut() {
                        s.max_streams = max;
                    }
                    self.kernel
                        .up(slot)
                        .max_streams
                        .store(max, Ordering::SeqCst);
                    self.advertise_stream_limit();
                }
                if let Some(window) = frame::setting_in(payload, setting::INITIAL_WINDOW_SIZE) {
                    self.set_endpoint_stream_window(slot, window);
                }
                frame::settings_ack(&mut out);
                self.send_to_upstream(slot, &out);
            }
            kind::PING if !header.has(flag::ACK) => {
                frame::ping_ack(&mut out, payload);
                self.send_to_upstream(slot, &out);
            }
            // the upstream verdict has added the increment to req_limit
            kind::WINDOW_UPDATE => self.on_wake(),
            kind::GOAWAY
                if payload.get(4..8).is_some_and(|c| {
                    client_caused(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                }) =>
            {
                // This upstream carries only this client's frames (and ours,
                // which are correct): the client broke the protocol, and gets
                // the connection error the endpoint gave, as it would directly.
                let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                self.endpoints().goaway(self.slot_endpoint(slot), code);
                tracing::info!(
                    conn = self.id,
                    slot,
                    code,
                    "endpoint closed the upstream over the client's frames"
                );
                self.fail(code);
            }
            kind::GOAWAY => {
                let code = payload
                    .get(4..8)
                    .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                self.endpoints().goaway(self.slot_endpoint(slot), code);
                // The endpoint is going away: no new streams; streams above
                // its last stream id were not processed and are refused, so
                // clients retry them; the others finish (RFC 9113 §6.8).
                self.kernel
                    .up(slot)
                    .state
                    .store(UP_DRAINING, Ordering::SeqCst);
                if let Some(s) = self.slots[slot as usize].as_mut() {
                    if s.state == SlotState::Active {
                        s.state = SlotState::Draining {
                            since: tokio::time::Instant::now(),
                        };
                    }
                }
                let last = payload
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]));
                self.end_slot_streams(slot, Gone::Above(last.unwrap_or(0)));
                self.advertise_stream_limit();
            }
            _ => {}
        }
    }
}

/// How long a dropped endpoint's slot waits for its reader to say goodbye
/// (endpoint_socket.rs, GOODBYE_LIMIT) before it is closed anyway: a reader that
/// had already ended says nothing.
const DROP_CLOSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

impl ClientConn {
    /// An endpoint that floods frames past the bound loses its upstream
    /// (GOAWAY ENHANCE_YOUR_CALM, or FLOW_CONTROL_ERROR for DATA beyond
    /// its window: RFC 9113 §5.4.1, §6.9).
    fn drop_flooding_endpoint(&mut self, slot: u32, e: &crate::agent::slot::Overflow) {
        let code = match e {
            crate::agent::slot::Overflow::Control(_) => error_code::ENHANCE_YOUR_CALM,
            crate::agent::slot::Overflow::Data(_) => error_code::FLOW_CONTROL_ERROR,
        };
        self.drop_endpoint(slot, code, &e.to_string());
    }

    /// Ends an upstream with a connection error for its endpoint; the client
    /// keeps its connection, and the upstream's streams end as those of a
    /// lost upstream (`end_slot_streams`).
    /// The reader writes the GOAWAY and closes the socket (endpoint_socket.rs).
    pub(super) fn drop_endpoint(&mut self, slot: u32, code: u32, why: &str) {
        if let Some(s) = self.slots[slot as usize].as_mut() {
            tracing::warn!(conn = self.id, endpoint = %s.endpoint, code, why, "endpoint dropped: GOAWAY, upstream closed");
            s.to_client.clear();
            s.to_endpoint.clear();
            s.flooded = true;
            s.dropped.send_replace(code + 1);
            s.state = SlotState::Closed;
            s.closed_at = Some(tokio::time::Instant::now());
            s.unsettled = true;
        }
        self.kernel.up(slot).state.store(UP_EMPTY, Ordering::SeqCst);
        self.end_slot_streams(slot, Gone::Lost);
        self.advertise_stream_limit();
        let tx = self.up_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(DROP_CLOSE_LIMIT).await;
            let _ = tx.send(UpstreamEvent::Settled { slot });
        });
    }
}

/// Connection errors an endpoint can only have been driven to by what the
/// client sent through us (RFC 9113 §7).
fn client_caused(code: u32) -> bool {
    use frame::error_code::*;
    matches!(
        code,
        PROTOCOL_ERROR
            | FLOW_CONTROL_ERROR
            | STREAM_CLOSED
            | FRAME_SIZE_ERROR
            | COMPRESSION_ERROR
            | ENHANCE_YOUR_CALM
    )
}
