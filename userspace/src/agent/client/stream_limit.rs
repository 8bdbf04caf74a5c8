//! The SETTINGS_MAX_CONCURRENT_STREAMS the client hears: as many streams
//! as the endpoints together accept (RFC 9113 §5.1.2), so the client
//! queues its own calls instead of the agent holding them (held.rs).
//!
//! The agent learns the endpoints' limits after the client's connection is
//! up, so its first value can only come after the client has opened
//! streams. A limit below the streams the client has open is allowed
//! (§5.1.2: the excess may simply complete), but grpcio (1.85) then never
//! opens a stream again: with 10 calls open when 6 arrived, all 10 were
//! answered and the client sat idle until killed, 24 calls waiting
//! (failures::backend_max_concurrent_streams_grpc_python, about one run in
//! ten; with backends 30 ms away, in every run:
//! backend_max_concurrent_streams_known_after_grpcio_opened_more). A lower
//! limit therefore goes out only once fewer streams are open than it
//! allows; the connection's tick looks again. A higher one goes at once.

use std::sync::atomic::Ordering;

use bytes::BytesMut;

use super::kernel::ConnKernel;
use super::ClientConn;
use crate::ebpf::abi::MAX_UPSTREAMS;
use crate::h2::frame::{self, setting};

/// The value to send now, if any. `advertised` is the last value sent
/// (`None`: none yet, the protocol's "unlimited"); `accepted` is what the
/// endpoints together accept (`None`: one of them sets no limit); `open`
/// is the streams the client has open as far as the agent knows.
fn to_advertise(advertised: Option<u32>, accepted: Option<u32>, open: u32) -> Option<u32> {
    let want = match accepted {
        // no endpoint takes streams (all connecting or gone): nothing to say yet
        Some(0) => return None,
        Some(total) => total,
        // an endpoint without a limit joined: raise what was said, if anything
        None => advertised.map(|_| u32::MAX)?,
    };
    match advertised {
        Some(a) if a == want => None,
        Some(a) if want > a => Some(want),
        _ => (open < want).then_some(want),
    }
}

impl ClientConn {
    /// Sends the client the endpoints' total stream limit when it changed
    /// and may be said now (the module's rule).
    pub(super) fn advertise_stream_limit(&mut self) {
        let Some(limit) = to_advertise(
            self.advertised_streams,
            self.endpoints_accept(),
            self.client_streams_open(),
        ) else {
            return;
        };
        self.advertised_streams = Some(limit);
        let mut out = BytesMut::new();
        frame::settings(&mut out, &[(setting::MAX_CONCURRENT_STREAMS, limit)]);
        self.send_to_client(&out);
    }

    /// A lower limit waits for the client's streams to fit under it (the
    /// connection's looks keep coming: pace.rs).
    pub(super) fn stream_limit_waits(&self) -> bool {
        to_advertise(self.advertised_streams, self.endpoints_accept(), 0).is_some()
    }

    /// The streams the endpoints accept together (`None`: one of them sets
    /// no limit).
    fn endpoints_accept(&self) -> Option<u32> {
        (self.slots.iter().flatten())
            .filter(|s| s.takes_streams())
            .try_fold(0u32, |sum, s| {
                (s.max_streams != u32::MAX).then(|| sum.saturating_add(s.max_streams))
            })
    }

    /// Streams bound to an endpoint (the kernel's per-endpoint counts,
    /// which cover those the agent carries: bind_stream) and those waiting
    /// for room. The client may count a few more: ends on their way to it.
    pub(super) fn client_streams_open(&self) -> u32 {
        let bound = (0..MAX_UPSTREAMS as u32)
            .map(|slot| self.kernel.up(slot).streams.load(Ordering::SeqCst))
            .fold(0u32, u32::saturating_add);
        bound.saturating_add(self.held.len() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_limit_waits_until_fewer_streams_are_open() {
        // 10 open when the endpoints' 6 became known: grpcio stalled
        assert_eq!(to_advertise(None, Some(6), 10), None);
        assert_eq!(to_advertise(None, Some(6), 6), None);
        assert_eq!(to_advertise(None, Some(6), 5), Some(6));
        assert_eq!(to_advertise(None, Some(6), 0), Some(6));
    }

    #[test]
    fn a_lower_limit_waits_and_a_higher_one_goes_at_once() {
        // an endpoint left: 6 -> 4 while 5 are open
        assert_eq!(to_advertise(Some(6), Some(4), 5), None);
        assert_eq!(to_advertise(Some(6), Some(4), 3), Some(4));
        // one joined: 4 -> 6 however many are open
        assert_eq!(to_advertise(Some(4), Some(6), 40), Some(6));
        assert_eq!(to_advertise(Some(6), Some(6), 0), None);
    }

    #[test]
    fn unlimited_endpoints_and_none_at_all() {
        // nothing said yet and an endpoint without a limit: nothing to say
        assert_eq!(to_advertise(None, None, 3), None);
        // a limit was said, then an endpoint without one joined: raised
        assert_eq!(to_advertise(Some(6), None, 30), Some(u32::MAX));
        assert_eq!(to_advertise(Some(u32::MAX), None, 30), None);
        // every endpoint gone or connecting: the last value stands
        assert_eq!(to_advertise(Some(6), Some(0), 0), None);
        assert_eq!(to_advertise(None, Some(0), 0), None);
    }
}
