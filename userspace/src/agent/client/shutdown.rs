//! A connection going away because the agent stops (drain.rs), as RFC 9113
//! §6.8 asks of a server that shuts down gracefully: a first GOAWAY with
//! the largest stream id tells the client to open no more streams here,
//! and after a round trip or more, a second one names the last stream that
//! will be processed. Streams in between are served; streams above it are
//! refused (REFUSED_STREAM: the client may retry them on its new
//! connection), and the connection closes when its streams have ended.
//!
//! The kernel opens streams on its own: before the last id is read, it is
//! told to send every new stream to the agent (CONN_HOLD, as when no
//! endpoint has room), and the id is read a tick later, when no verdict
//! that missed the flag can still be running; the hold is never released.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use super::kernel::ConnKernel;
use crate::ebpf::abi::{CONN_HOLD, CONN_UNHOLD};
use crate::h2::frame::{self, error_code};

/// Between the first GOAWAY and the hold: a client's streams on their way
/// when it was sent still arrive and are served.
pub(super) const ANNOUNCE_WAIT: Duration = Duration::from_secs(1);
/// Between the hold and the last id.
pub(super) const HOLD_SETTLE: Duration = Duration::from_millis(100);

/// The largest stream id: "no new streams, last one to come" (RFC 9113 §6.8).
const ALL_STREAMS: u32 = 0x7fff_ffff;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    Serving,
    Announced {
        at: Instant,
    },
    Holding {
        at: Instant,
    },
    Closing {
        last: u32,
    },
}

#[derive(Debug, Default)]
pub(super) struct Shutdown {
    phase: Phase,
}

impl Shutdown {
    /// The agent stops: the first GOAWAY, once.
    pub fn begin(&mut self, now: Instant) -> Option<BytesMut> {
        if self.phase != Phase::Serving {
            return None;
        }
        self.phase = Phase::Announced { at: now };
        let mut out = BytesMut::new();
        frame::goaway(&mut out, ALL_STREAMS, error_code::NO_ERROR);
        Some(out)
    }

    /// Moves on as time passes; returns the second GOAWAY when it is due.
    /// `agent_last`: the last stream the agent itself opened.
    pub fn step(
        &mut self,
        now: Instant,
        kernel: &impl ConnKernel,
        agent_last: u32,
    ) -> Option<BytesMut> {
        match self.phase {
            Phase::Announced { at } if now.duration_since(at) >= ANNOUNCE_WAIT => {
                let flags = &kernel.conn().flags;
                flags.fetch_and(!CONN_UNHOLD, Ordering::SeqCst);
                flags.fetch_or(CONN_HOLD, Ordering::SeqCst);
                self.phase = Phase::Holding { at: now };
                None
            }
            Phase::Holding { at } if now.duration_since(at) >= HOLD_SETTLE => {
                let kernel_last = kernel.conn().last_stream.load(Ordering::SeqCst);
                let last = kernel_last.max(agent_last);
                self.phase = Phase::Closing { last };
                let mut out = BytesMut::new();
                frame::goaway(&mut out, last, error_code::NO_ERROR);
                Some(out)
            }
            _ => None,
        }
    }

    /// Not going away (a connection may be handed over: handover.rs).
    pub fn serving(&self) -> bool {
        self.phase == Phase::Serving
    }

    /// The kernel must keep sending new streams to the agent: no unhold.
    pub fn holds(&self) -> bool {
        matches!(self.phase, Phase::Holding { .. } | Phase::Closing { .. })
    }

    /// A new stream above the last id named: not processed.
    pub fn refuses(&self, stream: u32) -> bool {
        matches!(self.phase, Phase::Closing { last } if stream > last)
    }

    /// The last id is out: the connection closes once its streams end.
    pub fn closing(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernel::fake::FakeKernel;
    use super::*;
    use crate::h2::frame::{kind, FrameHeader};

    fn goaway_last(frame: &[u8]) -> (u32, u32) {
        let h = FrameHeader::parse(frame).expect("a frame");
        assert_eq!((h.kind, h.stream, h.len), (kind::GOAWAY, 0, 8));
        let word = |i: usize| u32::from_be_bytes(frame[i..i + 4].try_into().expect("4 bytes"));
        (word(9) & 0x7fff_ffff, word(13))
    }

    #[test]
    fn two_goaways_with_the_kernel_held_between() {
        let k = FakeKernel::default();
        k.conn.flags.store(CONN_UNHOLD, Ordering::SeqCst);
        let t0 = Instant::now();
        let mut s = Shutdown::default();
        assert_eq!(s.step(t0, &k, 0), None, "nothing before the agent stops");
        let first = s.begin(t0).expect("a first GOAWAY");
        assert_eq!(goaway_last(&first), (ALL_STREAMS, error_code::NO_ERROR));
        assert!(s.begin(t0).is_none(), "once");
        assert!(!s.holds() && !s.refuses(99));

        // within the announce wait the kernel opens streams as before
        assert_eq!(s.step(t0 + ANNOUNCE_WAIT / 2, &k, 3), None);
        assert_eq!(k.conn.flags.load(Ordering::SeqCst) & CONN_HOLD, 0);
        assert_eq!(s.step(t0 + ANNOUNCE_WAIT, &k, 3), None);
        let flags = k.conn.flags.load(Ordering::SeqCst);
        assert_eq!(flags & (CONN_HOLD | CONN_UNHOLD), CONN_HOLD);
        assert!(s.holds());

        // a stream the kernel opened before it saw the hold counts
        k.conn.last_stream.store(41, Ordering::SeqCst);
        let t1 = t0 + ANNOUNCE_WAIT;
        assert_eq!(s.step(t1 + HOLD_SETTLE / 2, &k, 3), None);
        let second = s.step(t1 + HOLD_SETTLE, &k, 3).expect("the last id");
        assert_eq!(goaway_last(&second), (41, error_code::NO_ERROR));
        assert!(s.closing() && s.holds());
        assert!(!s.refuses(41) && s.refuses(43));
        assert_eq!(s.step(t1 + ANNOUNCE_WAIT * 10, &k, 3), None, "sent once");
    }

    #[test]
    fn the_last_id_covers_streams_the_agent_opened() {
        let k = FakeKernel::default();
        let t0 = Instant::now();
        let mut s = Shutdown::default();
        s.begin(t0);
        s.step(t0 + ANNOUNCE_WAIT, &k, 0);
        k.conn.last_stream.store(5, Ordering::SeqCst);
        let last = s.step(t0 + ANNOUNCE_WAIT + HOLD_SETTLE, &k, 9);
        assert_eq!(goaway_last(&last.expect("GOAWAY")).0, 9);
    }
}
