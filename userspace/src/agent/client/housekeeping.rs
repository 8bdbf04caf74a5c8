//! What a connection does at each look (every 100 ms while anything waits on time, up to 6.4 s apart once settled:
//! pace.rs): move a large Service's window, reconnect failed upstreams, close drained ones.

use super::kernel::ConnKernel;
use std::sync::atomic::Ordering;

use bytes::BytesMut;

use std::time::Duration;

use super::{ClientConn, Slot, SlotState, DRAIN_GRACE, DRAIN_LIMIT};
use crate::agent::registry::SlotInfo;
use crate::ebpf::abi::*;
use crate::h2::frame;

impl ClientConn {
    pub(super) fn on_tick(&mut self) {
        // Adopted (handover.rs): the kernel's wake-ups went to the agent
        // before this one until it exited; the counters are looked at.
        if self.adopted {
            self.on_wake();
        }
        self.slide_window();
        self.reconnect();
        self.dispatch_held();
        self.maybe_open_gate();
        self.publish_upstreams();
        // a lower limit waits until it fits (stream_limit.rs)
        self.advertise_stream_limit();
        self.review_seats();
        let now = tokio::time::Instant::now();
        for slot in 0..MAX_UPSTREAMS as u32 {
            let streams = self.kernel.up(slot).streams.load(Ordering::SeqCst);
            let Some(s) = self.slots[slot as usize].as_mut() else {
                continue;
            };
            let SlotState::Draining { since } = s.state else {
                continue;
            };
            let idle = streams == 0 && s.to_endpoint.is_empty() && s.to_client.is_empty();
            let in_service = self.service.endpoints.borrow().contains(&s.endpoint);
            if drained(now.duration_since(since), idle, in_service) {
                tracing::info!(conn = self.id, endpoint = %s.endpoint, "drained upstream closed");
                self.close_slot(slot);
            }
        }
    }

    /// Nothing of this connection waits on time, so its next look can wait
    /// (pace.rs): what else could change reaches the task as an event.
    /// `client_eof`: the client has closed its sending side (its end is
    /// looked for).
    pub(super) fn settled(&self, client_eof: bool) -> bool {
        let flags = self.kernel.conn().flags.load(Ordering::SeqCst);
        let wanted = self.subset.wanted(&self.service.endpoints.borrow());
        let slots = || self.slots.iter().flatten();
        // streams held for room, an upstream connecting, draining or due to
        // be dialled again, a lower stream limit waiting to fit
        let streams_settled = self.held.is_empty()
            && !self.stream_limit_waits()
            && slots().all(|s| {
                !matches!(s.state, SlotState::Connecting | SlotState::Draining { .. })
                    && s.to_endpoint.is_empty()
                    && s.to_client.is_empty()
            })
            && wanted
                .iter()
                .all(|ep| slots().any(|s| s.endpoint == *ep && s.takes_streams()));
        // going away, handing over, the gate still to open, a large
        // Service's window due to move, the client's bytes unparsed
        let conn_settled = !client_eof
            && self.shutdown.serving()
            && !self.injector_backed_up()
            && (self.shared.handover.borrow().is_none() || self.handover_given_up)
            && !(self.adopted && self.shared.dp.events_unread())
            // the kernel sets CONN_FAST at the next stream frame once the gate is open
            && (!self.acked || flags & CONN_FAST != 0 || self.gate_sent == Some(self.consumed))
            && !self.subset.waits(
                self.service.endpoints.borrow().len(),
                self.kernel.conn().last_stream.load(Ordering::Relaxed),
            )
            && !self.client_watch.waiting()
            // a busy connection waits for a seat this one may give up
            && !self.seat_asked();
        streams_settled && conn_settled
    }

    /// The kernel's counters that move without telling the agent: streams
    /// opened and open, the connection's flags, the client's parser.
    pub(super) fn kernel_progress(&self) -> u64 {
        let c = self.kernel.conn();
        crate::agent::pace::progress([
            c.last_stream.load(Ordering::Relaxed) as u64,
            self.client_streams_open() as u64,
            c.flags.load(Ordering::Relaxed) as u64,
            self.client_watch.progress(),
        ])
    }

    /// Moves a large Service's window on (subset.rs) and follows it.
    fn slide_window(&mut self) {
        let endpoints = self.service.endpoints.borrow().clone();
        let last_stream =
            (self.kernel.conn().last_stream.load(Ordering::Relaxed)).max(self.last_stream);
        let free = (self.slots.iter()).any(|s| s.as_ref().is_none_or(Slot::is_free));
        let connecting = (self.slots.iter().flatten()).any(|s| s.state == SlotState::Connecting);
        let now = tokio::time::Instant::now();
        if self
            .subset
            .slide(now, endpoints.len(), last_stream, free && !connecting)
        {
            self.reconcile(&endpoints);
        }
    }

    /// No stream of this connection is open or waiting, and nothing is
    /// queued for either side: a half-closed client has had every answer.
    pub(super) fn streams_done(&self) -> bool {
        // The kernel's per-endpoint counts cover the streams the agent
        // carries too (bind_stream), except one the full streams map left
        // without an entry: DRAIN_LIMIT ends that wait.
        self.client_streams_open() == 0
            && (self.slots.iter().flatten())
                .all(|s| s.to_endpoint.is_empty() && s.to_client.is_empty())
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

    /// The client's bytes wait unparsed (liveness.rs): the parser is
    /// called on what TCP holds (SO_RCVLOWAT, ebpf/README.md R1), and an
    /// empty SETTINGS makes the client answer. The client's socket joins
    /// its socket hash before its first byte and is kicked at accept
    /// (accept.rs), so this is a safety net, not a path.
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
            let _ = crate::sys::kick_parser(a);
            let mut out = BytesMut::new();
            frame::settings(&mut out, &[]);
            self.send_to_client(&out);
        }
    }

    /// A's tap, once the preface is read (agent/tap.rs).
    pub(super) fn tap_client(&mut self, input: &mut crate::agent::tap::SourceInput) {
        if self.consumed > 0 && input.first_try() {
            if let Some(tap) = crate::agent::tap::Tap::open(&self.shared.dp, self.cookie) {
                input.attach(tap);
            }
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
        let slots: Vec<SlotInfo> = (self.slots.iter().enumerate())
            .filter_map(|(k, s)| Some((k, s.as_ref()?)))
            .filter(|(_, s)| s.state != SlotState::Closed)
            .map(|(k, s)| SlotInfo {
                slot: k as u32,
                endpoint: s.endpoint.to_string(),
                state: match s.state {
                    SlotState::Connecting => "connecting",
                    SlotState::Active => "active",
                    SlotState::Draining { .. } => "draining",
                    SlotState::Closed => "closed",
                }
                .into(),
                max_streams: (s.max_streams != u32::MAX).then_some(s.max_streams),
            })
            .collect();
        let held = self.held.len();
        let fast = self.kernel.conn().flags.load(Ordering::Relaxed) & CONN_FAST != 0;
        let (read_bytes, read_messages) = (self.read_bytes, self.consumed);
        self.shared.registry.update_conn(self.id, |i| {
            i.slots = slots;
            i.held = held;
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
        if !self.acked || self.kernel.conn().flags.load(Ordering::SeqCst) & CONN_FAST != 0 {
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
        self.kernel.open_gate(self.consumed);
    }

    /// Whether this connection's endpoints speak HTTP/2, or may yet: one
    /// finished the handshake, or they are all still in their first one
    /// (none failed). A client silent for SERVER_FIRST_WAIT is then slow,
    /// not a server-first protocol, and is not spliced to one endpoint: a
    /// 1,000-client burst under QEMU sent its prefaces seconds late. An
    /// endpoint that speaks first (a banner) or not HTTP/2 fails the
    /// handshake at its first bytes.
    pub(super) fn endpoints_speak_h2(&self) -> bool {
        let slots = || self.slots.iter().flatten();
        slots().any(|s| s.state == SlotState::Active)
            || (slots().all(|s| s.failures == 0)
                && slots().any(|s| s.state == SlotState::Connecting))
    }
}

/// A message the client verdict passed to the agent is not read yet (or
/// the parse state cannot say): sockmap_io.rs re-reads the socket soon.
pub(super) fn client_due(dp: &crate::ebpf::Datapath, cookie: u64, consumed: u32) -> bool {
    dp.parse_state(cookie)
        .is_none_or(|st| st.passed.wrapping_sub(consumed) as i32 > 0)
}

/// The client verdict has passed at least one whole message of the client's
/// to the agent.
pub(super) fn client_sent_first(dp: &crate::ebpf::Datapath, cookie: u64) -> bool {
    dp.parse_state(cookie).is_some_and(|st| st.passed > 0)
}

/// Whether a draining upstream closes, `draining` after it started to: an
/// idle one after DRAIN_GRACE (a last response may still be on its way
/// through the kernel); an endpoint that left the Service after DRAIN_LIMIT
/// whatever it still carries; one that only left this connection's window
/// (subset.rs) keeps its streams until they end.
fn drained(draining: Duration, idle: bool, in_service: bool) -> bool {
    (idle && draining > DRAIN_GRACE) || (draining > DRAIN_LIMIT && !in_service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_upstream_closes_after_the_grace() {
        assert!(!drained(DRAIN_GRACE / 2, true, false));
        assert!(drained(DRAIN_GRACE * 2, true, false));
        assert!(drained(DRAIN_GRACE * 2, true, true));
    }

    #[test]
    fn a_busy_upstream_closes_only_if_its_endpoint_left_the_service() {
        let long = DRAIN_LIMIT + Duration::from_secs(1);
        assert!(!drained(DRAIN_LIMIT / 2, false, false));
        assert!(
            drained(long, false, false),
            "gone from the Service: bounded"
        );
        assert!(!drained(long, false, true), "only out of the window: waits");
    }
}
