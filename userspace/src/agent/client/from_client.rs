//! Messages the kernel passed from the client: connection-level frames the
//! agent answers, and stream frames it carries itself (slow path).

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use super::kernel::ConnKernel;
use super::{pick, ClientConn, SlotState};
use crate::agent::metrics_counts::SIDE_CLIENT;
use crate::ebpf::abi::{Stream, CONN_FAST, STREAM_CLIENT_END, STREAM_SLOW};
use crate::h2::frame::{self, error_code, flag, kind, setting, FrameHeader};
use crate::h2::header_block::{self, HeaderBlockError};
use crate::h2::message::Message;
use crate::model::Policy;

/// Where a frame of a stream the agent carries goes.
enum StreamSlot {
    Bound(u32),
    Wait,
}

impl ClientConn {
    pub(super) fn on_client_message(&mut self, m: Message) {
        let Message::Frame { header, bytes } = m else {
            return;
        };
        tracing::trace!(conn = self.id, ?header, "from client");
        if !self.client_settings_seen {
            // The preface ends with a SETTINGS frame (RFC 9113 §3.4); every
            // frame before the gate opens comes through here, so this sees it.
            if header.kind != kind::SETTINGS || header.has(flag::ACK) {
                return self.fail(error_code::PROTOCOL_ERROR);
            }
            self.client_settings_seen = true;
        }
        if header.stream == 0 {
            self.on_client_control(header, &bytes);
        } else {
            self.on_client_stream_frame(header, bytes);
        }
    }

    fn on_client_control(&mut self, header: FrameHeader, bytes: &[u8]) {
        let payload = &bytes[frame::HEADER_LEN..];
        if let Some(code) = frame::connection_frame_error(&header) {
            return self.fail(code);
        }
        let mut out = BytesMut::new();
        match header.kind {
            kind::SETTINGS if header.has(flag::ACK) => self.acked = true,
            kind::SETTINGS => {
                let Some(values) = frame::parse_settings(payload) else {
                    return self.fail(error_code::PROTOCOL_ERROR);
                };
                if let Some(code) = frame::settings_value_error(&values) {
                    return self.fail(code);
                }
                if let Some((_, w)) = values
                    .iter()
                    .rev()
                    .find(|(id, _)| *id == setting::INITIAL_WINDOW_SIZE)
                {
                    self.set_client_initial_window(*w);
                }
                frame::settings_ack(&mut out);
                self.send_to_client(&out);
            }
            kind::PING if !header.has(flag::ACK) => {
                frame::ping_ack(&mut out, payload);
                self.send_to_client(&out);
            }
            kind::WINDOW_UPDATE => match frame::parse_window_update(payload) {
                Some(0) => self.fail(error_code::PROTOCOL_ERROR),
                Some(inc) => {
                    self.credit_client_window(inc);
                    if self.client_window_overflowed() {
                        self.fail(error_code::FLOW_CONTROL_ERROR)
                    } else {
                        self.on_wake()
                    }
                }
                None => {}
            },
            _ => {} // GOAWAY: the client closes when done; PING ACK; unknown types are ignored
        }
    }

    /// The client's window is the default plus every increment it sent.
    /// The client verdict applies the same sum from the socket's parse
    /// state; the agent applies it too, so the window grows whichever path
    /// the WINDOW_UPDATE took (a socket the kernel does not parse hands
    /// every frame to the agent, and the connection stalled at 65,535
    /// response bytes). Both take the maximum: nothing counts twice.
    fn credit_client_window(&mut self, inc: u32) {
        let limit = self.windows.credit(inc);
        self.kernel
            .conn()
            .client_limit
            .fetch_max(limit, Ordering::SeqCst);
    }

    /// What the client allows us to send on the connection may not exceed
    /// 2^31-1 (RFC 9113 §6.9.1); the kernel has already added the increment.
    fn client_window_overflowed(&self) -> bool {
        let c = self.kernel.conn();
        let window = c
            .client_limit
            .load(Ordering::SeqCst)
            .saturating_sub(c.client_recv.load(Ordering::SeqCst));
        window > frame::MAX_WINDOW as u64
    }

    /// The client's stream windows are what endpoints may send per stream:
    /// every endpoint must hear the client's value.
    fn set_client_initial_window(&mut self, window: u32) {
        if !self.windows.set_initial(window) {
            return;
        }
        let mut out = BytesMut::new();
        frame::settings(&mut out, &super::endpoint_socket::our_settings(window));
        for slot in 0..self.slots.len() as u32 {
            if self.slots[slot as usize]
                .as_ref()
                .is_some_and(|s| s.is_open())
            {
                self.send_to_upstream(slot, &out);
            }
        }
    }

    fn on_client_stream_frame(&mut self, mut header: FrameHeader, mut bytes: Bytes) {
        match frame::stream_frame_error(&header) {
            Some(frame::FrameCheck::ConnectionError(code)) => return self.fail(code),
            Some(frame::FrameCheck::Ignore) => return,
            None => {}
        }
        if header.kind == kind::DATA && !self.client_within_window(header.len as u64) {
            // A client that ignores flow control loses its own connection
            // (RFC 9113 §6.9.1); what it sent is not buffered without bound.
            return self.fail(error_code::FLOW_CONTROL_ERROR);
        }
        // After the ACK the client's table is empty and stays so: its
        // blocks stand on their own and go on as they came, like those the
        // kernel carries (an undecodable one is the endpoint's to refuse).
        if header.kind == kind::HEADERS && !self.acked {
            match self.client_headers.rewrite(&bytes) {
                Ok(rewritten) => bytes = rewritten,
                Err(HeaderBlockError::TooLarge { size }) => {
                    let s = header.stream;
                    tracing::info!(
                        conn = self.id,
                        stream = s,
                        size,
                        "header list over SETTINGS_MAX_HEADER_LIST_SIZE"
                    );
                    let carried = self.held.contains(s)
                        || self.carried.contains(s)
                        || self.kernel.get_stream(s).is_some();
                    let mut out = BytesMut::new();
                    if !carried {
                        // A new stream no endpoint has seen: answered here,
                        // and its id is used up.
                        let last = self
                            .last_stream
                            .max(self.kernel.conn().last_stream.load(Ordering::SeqCst));
                        if s.is_multiple_of(2) || s <= last {
                            return self.fail(error_code::PROTOCOL_ERROR);
                        }
                        self.last_stream = s;
                        self.kernel
                            .conn()
                            .last_stream
                            .fetch_max(s, Ordering::SeqCst);
                        header_block::header_list_too_large(
                            &mut out,
                            s,
                            !header.has(flag::END_STREAM),
                        );
                        return self.send_to_client(&out);
                    }
                    // Trailers of a stream an endpoint has: the stream ends
                    // on both sides, the endpoint's as if the client had
                    // reset it (which also ends what the agent holds of it).
                    frame::rst_stream(&mut out, s, error_code::CANCEL);
                    self.send_to_client(&out);
                    header = FrameHeader {
                        len: 4,
                        kind: kind::RST_STREAM,
                        flags: 0,
                        stream: s,
                    };
                    bytes = out.freeze();
                }
                Err(e) => {
                    tracing::info!(conn = self.id, error = %e, "undecodable header block");
                    return self.fail(
                        e.connection_error()
                            .unwrap_or(error_code::COMPRESSION_ERROR),
                    );
                }
            }
        }
        if self.held.contains(header.stream) {
            return self.add_to_held(&header, bytes);
        }
        let slot = match self.slow_stream_slot(&header) {
            Some(StreamSlot::Bound(slot)) => slot,
            Some(StreamSlot::Wait) => return self.hold(header.stream, bytes),
            None => return self.on_unknown_stream_frame(&header),
        };
        self.carry(slot, header, bytes);
    }

    /// A frame of a stream the agent carries goes on to its endpoint.
    pub(super) fn carry(&mut self, slot: u32, header: FrameHeader, bytes: Bytes) {
        let ends = header.kind == kind::RST_STREAM
            || ((header.kind == kind::DATA || header.kind == kind::HEADERS)
                && header.has(flag::END_STREAM));
        if self.kernel.conn().flags.load(Ordering::SeqCst) & CONN_FAST != 0 {
            // the kernel slowed this stream (over the endpoint's window)
            self.carried.mark_slowed(header.stream);
        }
        if header.kind == kind::DATA && !header.has(flag::END_STREAM) {
            self.grant_carried_stream(slot, header.stream);
        }
        (self.endpoints()).bytes(self.slot_endpoint(slot), false, bytes.len() as u64);
        if header.kind == kind::RST_STREAM {
            self.count_reset(
                header.stream,
                SIDE_CLIENT,
                super::counting::rst_code(&bytes),
            );
        }
        if let Some(s) = self.slots[slot as usize].as_mut() {
            if let Err(e) = s.to_endpoint.push_back(bytes) {
                // frames without flow control, without end, behind DATA
                // the endpoint has no window for: the client floods
                tracing::info!(conn = self.id, error = %e, "client flood");
                return self.fail(match e {
                    crate::agent::slot::Overflow::Control(_) => error_code::ENHANCE_YOUR_CALM,
                    crate::agent::slot::Overflow::Data(_) => error_code::FLOW_CONTROL_ERROR,
                });
            }
        }
        if ends {
            self.stream_end(
                header.stream,
                slot,
                STREAM_CLIENT_END,
                header.kind == kind::RST_STREAM,
            );
        }
        self.flush_to_endpoint(slot);
    }

    /// A frame for a stream nobody carries: idle (never opened) is a
    /// connection error; closed gets STREAM_CLOSED for DATA, and the window
    /// its DATA used goes back to the client (RFC 9113 §5.1, §6.9).
    fn on_unknown_stream_frame(&mut self, header: &FrameHeader) {
        let last = self
            .last_stream
            .max(self.kernel.conn().last_stream.load(Ordering::SeqCst));
        let idle = header.stream > last;
        match header.kind {
            kind::DATA if idle => self.fail(error_code::PROTOCOL_ERROR),
            kind::DATA => {
                // its window goes back to the client (replenish counts it received)
                let mut out = BytesMut::new();
                frame::rst_stream(&mut out, header.stream, error_code::STREAM_CLOSED);
                self.send_to_client(&out);
                self.on_wake();
            }
            kind::RST_STREAM | kind::WINDOW_UPDATE if idle => self.fail(error_code::PROTOCOL_ERROR),
            _ => {} // PRIORITY on any stream, late RST/WINDOW_UPDATE: ignored
        }
    }

    /// The slot of a stream the agent carries; opens it for a new HEADERS,
    /// or says it must wait for an endpoint with room.
    fn slow_stream_slot(&mut self, header: &FrameHeader) -> Option<StreamSlot> {
        if let Some(slot) = self.carried.slot_of(header.stream) {
            return Some(StreamSlot::Bound(slot));
        }
        // A stream the kernel opened and then diverted (over credit).
        if let Some(s) = self.kernel.get_stream(header.stream) {
            self.carried.bind(header.stream, s.slot, false);
            return Some(StreamSlot::Bound(s.slot));
        }
        if header.kind != kind::HEADERS {
            return None;
        }
        let last = self
            .last_stream
            .max(self.kernel.conn().last_stream.load(Ordering::SeqCst));
        if header.stream.is_multiple_of(2) || header.stream <= last {
            let c = self.kernel.conn();
            tracing::debug!(conn = self.id, ?header, agent_last = self.last_stream, kernel_last = c.last_stream.load(Ordering::SeqCst),
                flags = c.flags.load(Ordering::SeqCst), consumed = self.consumed, gate_consumed = c.consumed.load(Ordering::SeqCst),
                passed = ?self.shared.dp.parse_state(self.cookie).map(|p| p.passed), gate_sent = ?self.gate_sent, acked = self.acked,
                "new stream id not above the last");
            self.fail(error_code::PROTOCOL_ERROR);
            return None;
        }
        self.last_stream = header.stream;
        self.kernel
            .conn()
            .last_stream
            .fetch_max(header.stream, Ordering::SeqCst);
        if self.shutdown.refuses(header.stream) {
            // above the last id of our GOAWAY: not processed (shutdown.rs)
            let mut out = BytesMut::new();
            frame::rst_stream(&mut out, header.stream, error_code::REFUSED_STREAM);
            self.send_to_client(&out);
            return None;
        }
        if self.held.is_empty() && !self.settling() {
            if let Some(slot) = self.pick_slot() {
                self.bind_stream(header.stream, slot);
                return Some(StreamSlot::Bound(slot));
            }
        }
        if self.may_hold() {
            return Some(StreamSlot::Wait);
        }
        let mut out = BytesMut::new();
        frame::rst_stream(&mut out, header.stream, error_code::REFUSED_STREAM);
        self.send_to_client(&out);
        None
    }

    /// Binds a stream the agent opens to a slot, in the kernel too. Before
    /// the gate opens every frame comes here anyway, and the gate waits for
    /// what the agent holds; after, the kernel must send the stream's frames
    /// to the agent until everything it carries of it is on its way (the
    /// release travels behind it through the injector).
    pub(super) fn bind_stream(&mut self, stream: u32, slot: u32) {
        let fast = self.kernel.conn().flags.load(Ordering::SeqCst) & CONN_FAST != 0;
        let endpoint = self.kernel.up(slot).endpoint.load(Ordering::SeqCst);
        let entry = Stream {
            slot,
            flags: if fast { STREAM_SLOW } else { 0 },
            endpoint,
            // timed from here, by whichever of the kernel and the agent
            // carries the response HEADERS (a held stream's wait included
            // only from its dispatch)
            opened_ns: crate::agent::metrics_counts::monotonic_ns(),
            ..Default::default()
        };
        // A stream without an entry is the agent's alone: the kernel sends
        // all its client frames here, and nothing (stream_end, the kernel's
        // end of stream) would ever take a count back, so it gets none. It
        // counted before, and each one left the endpoint a stream short for
        // the life of the connection.
        match self.kernel.set_stream(stream, entry) {
            Ok(()) => {
                self.kernel.up(slot).streams.fetch_add(1, Ordering::SeqCst);
                self.endpoints().opened(endpoint);
            }
            Err(e) => {
                tracing::warn!(conn = self.id, stream, error = %e, "streams map full: the agent carries the stream")
            }
        }
        self.carried.bind(stream, slot, fast);
    }

    /// The kernel's pick (round robin, or least request) over the
    /// connected endpoints with room for a stream, from the same cursor
    /// and counts. Header blocks the agent carries are re-encoded, so
    /// streams opened before the client's SETTINGS ACK spread too.
    pub(super) fn pick_slot(&mut self) -> Option<u32> {
        let c = self.kernel.conn();
        let policy = Policy::from_kernel_code(c.policy.load(Ordering::Relaxed));
        let ups = SlotView {
            conn: self,
            now: crate::agent::metrics_counts::monotonic_ns(),
        };
        let cursor = c.next.load(Ordering::SeqCst) as usize;
        let (slot, next) = pick::pick(policy, cursor, &ups, |n| fastrand::usize(..n))?;
        c.next.store(next as u32, Ordering::SeqCst);
        Some(slot as u32)
    }

    /// A connection error: tell the client why, then the task ends.
    #[track_caller]
    pub(super) fn fail(&mut self, code: u32) {
        if self.failed {
            return;
        }
        tracing::debug!(conn = self.id, code, at = %std::panic::Location::caller(), "connection error: GOAWAY to the client");
        let last = self
            .last_stream
            .max(self.kernel.conn().last_stream.load(Ordering::SeqCst));
        let mut out = BytesMut::new();
        frame::goaway(&mut out, last, code);
        self.send_to_client(&out);
        self.failed = true;
    }
}

/// The connection's slots as [`pick::pick`] sees them.
struct SlotView<'a> {
    conn: &'a ClientConn,
    /// CLOCK_MONOTONIC ns, read once per pick as the kernel does.
    now: u64,
}

impl pick::Upstreams for SlotView<'_> {
    fn len(&self) -> usize {
        self.conn.slots.len()
    }

    fn takes_stream(&self, slot: usize) -> bool {
        let up = &self.conn.kernel.conn().up[slot];
        self.conn.slots[slot]
            .as_ref()
            .is_some_and(|s| s.state == SlotState::Active && up.has_room(s.max_streams))
    }

    fn open(&self, slot: usize) -> u32 {
        self.conn.kernel.conn().up[slot]
            .streams
            .load(Ordering::SeqCst)
    }

    fn latency(&self, slot: usize) -> u64 {
        let endpoint = self.conn.kernel.conn().up[slot]
            .endpoint
            .load(Ordering::SeqCst);
        self.conn.shared.dp.latency_estimate(endpoint, self.now)
    }
}
