//! This connection's part in who holds an endpoint's seats, the dedicated
//! upstreams whose streams the kernel carries (agent/pool/seats.rs): while
//! it is busy, an upstream of its through a multiplexer asks for a seat and
//! is replaced by one when it gets it; while it is idle, a seat of its that
//! a busy connection waits for is given up (its upstream drains, and one
//! through the multiplexer takes its place).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::kernel::ConnKernel;
use super::{ClientConn, SlotState};
use crate::ebpf::abi::MAX_UPSTREAMS;

/// A connection that opens streams at least this fast is busy: its streams
/// are worth the kernel's path rather than a user-space hop each way.
const BUSY_PER_SECOND: u64 = 50;
/// And it opened at least this many since it was last looked at (a look
/// right after another must not take two streams for a load).
const BUSY_LEAST: u32 = 4;
/// A holder that opened no stream for this long gives its seat up when
/// asked: a connection that sends a request now and then loses little on
/// the multiplexer.
const IDLE_BEFORE_YIELD: Duration = Duration::from_secs(1);

/// How fast the client opens streams, from the kernel's count of them.
#[derive(Debug)]
pub(super) struct Activity {
    last_stream: u32,
    at: Instant,
    active_at: Instant,
    busy: bool,
}

impl Activity {
    pub fn new(now: Instant) -> Self {
        Activity {
            last_stream: 0,
            at: now,
            active_at: now,
            busy: false,
        }
    }

    /// `last_stream`: the highest stream id the client opened (client ids
    /// are odd and rise by two).
    pub fn observe(&mut self, now: Instant, last_stream: u32) {
        let opened = last_stream.wrapping_sub(self.last_stream) / 2;
        let millis = now.duration_since(self.at).as_millis().max(1);
        if opened > 0 {
            self.active_at = now;
        }
        self.busy = opened >= BUSY_LEAST
            && u128::from(opened) * 1000 >= u128::from(BUSY_PER_SECOND) * millis;
        self.last_stream = last_stream;
        self.at = now;
    }

    pub fn busy(&self) -> bool {
        self.busy
    }

    pub fn idle(&self, now: Instant) -> bool {
        now.duration_since(self.active_at) >= IDLE_BEFORE_YIELD
    }
}

/// The connection's side of the seats: its activity, and how the pool asks
/// it to look whether it can give a seat up.
#[derive(Debug)]
pub(super) struct SeatWatch {
    pub activity: Activity,
    pub asked: Arc<Notify>,
}

impl SeatWatch {
    pub fn new(now: Instant) -> Self {
        SeatWatch {
            activity: Activity::new(now),
            asked: Arc::new(Notify::new()),
        }
    }
}

impl ClientConn {
    /// At each look, and when a busy connection waits for a seat this one
    /// holds.
    pub(super) fn review_seats(&mut self) {
        let now = Instant::now();
        let last = self.kernel.conn().last_stream.load(Ordering::Relaxed);
        self.seat.activity.observe(now, last);
        // a connection on its way out or to the successor keeps what it has
        let staying = self.shutdown.serving() && self.shared.handover.borrow().is_none();
        let (busy, idle) = (self.seat.activity.busy(), self.seat.activity.idle(now));
        let pools = self.shared.pools.clone();
        let mut seated = Vec::new();
        let mut gave_up = false;
        for slot in 0..MAX_UPSTREAMS {
            let open = self.kernel.up(slot as u32).streams.load(Ordering::SeqCst);
            let Some(endpoint) = self.slots[slot].as_ref().map(|s| s.endpoint) else {
                continue;
            };
            // a seat's upstream already on its way, or one that failed to
            // connect and waits for its backoff (an endpoint that takes no
            // new connection is not dialled at every look)
            let replacing = (self.slots.iter().flatten()).any(|o| {
                o.replaces == Some(slot as u32)
                    || (o.endpoint == endpoint && o.state == SlotState::Closed && !o.retry_due())
            });
            let Some(s) = self.slots[slot].as_mut() else {
                continue;
            };
            let quiet = open == 0 && s.to_endpoint.is_empty() && s.to_client.is_empty();
            let Some(ticket) = s.ticket.as_mut().filter(|_| s.state == SlotState::Active) else {
                continue;
            };
            if ticket.is_shared() {
                if busy && staying && !replacing {
                    if let Some(seat) = pools.promote(ticket, Some(&self.seat.asked)) {
                        seated.push((slot as u32, s.endpoint, seat));
                    }
                } else if idle {
                    // not at a look that found fewer streams: the holders
                    // would be asked again at every such flicker
                    ticket.unwant();
                }
            } else if idle && quiet && staying && ticket.seat_wanted() && ticket.give_up() {
                tracing::debug!(conn = self.id, endpoint = %s.endpoint, "seat given up to a busy connection");
                gave_up = true;
                self.drain_slot(slot as u32);
            }
        }
        for (slot, endpoint, seat) in seated {
            tracing::debug!(conn = self.id, %endpoint, "busy: an upstream of its own replaces the multiplexer's");
            self.add_upstream(endpoint, Some(seat), Some(slot));
        }
        if gave_up {
            // the multiplexer in the drained upstream's place
            let endpoints = self.service.endpoints.borrow().clone();
            self.reconcile(&endpoints);
        }
    }

    /// A seat of this connection's is asked for: looks come soon until it
    /// is given up or nobody waits (pace.rs).
    pub(super) fn seat_asked(&self) -> bool {
        (self.slots.iter().flatten())
            .filter(|s| s.state == SlotState::Active)
            .filter_map(|s| s.ticket.as_ref())
            .any(|t| !t.is_shared() && t.seat_wanted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_opening_streams_fast_is_busy_and_idle_only_after_a_pause() {
        let t0 = Instant::now();
        let mut a = Activity::new(t0);
        // 20 streams (ids 1..=39) in 100 ms: 200 per second
        a.observe(t0 + Duration::from_millis(100), 39);
        assert!(a.busy());
        assert!(!a.idle(t0 + Duration::from_millis(100)));
        // then 2 in the next 100 ms: too few to call it a load
        a.observe(t0 + Duration::from_millis(200), 43);
        assert!(!a.busy());
        // 10 in 6.4 s: slower than the bound
        a.observe(t0 + Duration::from_millis(6600), 63);
        assert!(!a.busy());
        assert!(!a.idle(t0 + Duration::from_millis(7000)));
        assert!(a.idle(t0 + Duration::from_millis(7600)));
        // nothing new keeps it idle
        a.observe(t0 + Duration::from_millis(9000), 63);
        assert!(!a.busy() && a.idle(t0 + Duration::from_millis(9000)));
    }

    #[test]
    fn a_fresh_connection_is_neither_busy_nor_idle() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        assert!(!a.busy());
        assert!(!a.idle(t0 + Duration::from_millis(500)));
        assert!(a.idle(t0 + IDLE_BEFORE_YIELD));
    }
}
