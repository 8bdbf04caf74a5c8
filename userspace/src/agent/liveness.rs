//! Bytes a stream parser has not looked at, and how to make it look.
//!
//! A socket that joins its socket hash with bytes already queued leaves
//! them unparsed until more bytes arrive (ebpf/README.md R1). An upstream joins
//! after the agent read its handshake, so a frame the endpoint sent just
//! after (a WINDOW_UPDATE behind its SETTINGS ACK) can wait there; if the
//! endpoint then waits for us, both wait for ever. A peer must answer a
//! SETTINGS frame (RFC 9113 §6.5.3), so an empty one makes it send a few
//! bytes, and the parser runs over everything queued.
//!
//! This used to be a PING to both sides whenever streams were open and
//! nothing moved. A gRPC server that is simply thinking then got PINGs
//! every 100 ms, 200 ms, 400 ms …, and grpc-core and grpc-go servers
//! count PINGs without data as abuse: GOAWAY ENHANCE_YOUR_CALM ("too many
//! pings") closed the connection with every call on it. Now a peer hears
//! from us only when bytes it sent wait unparsed, once per such state.

/// Watches one socket: what TCP received after the agent's own reads, and
/// what its verdict has handled.
#[derive(Debug, Default)]
pub struct ParserWatch {
    seen: Option<(u64, u32)>,
    kicked: Option<(u64, u32)>,
}

impl ParserWatch {
    /// `received`: payload bytes TCP received since the parser's first byte;
    /// `carried`: bytes its verdict has handled (both wrap at 2^32 like TCP
    /// sequence numbers). True when bytes wait and nothing moved since the
    /// last look (one look per tick), at most once for the same state: a
    /// frame still arriving moves `received`, a kicked peer's answer too.
    pub fn should_kick(&mut self, received: u64, carried: u32) -> bool {
        let state = (received, carried);
        let waiting = received as u32 != carried;
        let still = self.seen == Some(state);
        self.seen = Some(state);
        if !waiting || !still || self.kicked == Some(state) {
            return false;
        }
        self.kicked = Some(state);
        true
    }

    /// Bytes waited unparsed at the last look.
    pub fn waiting(&self) -> bool {
        self.seen
            .is_some_and(|(received, carried)| received as u32 != carried)
    }

    /// The last look's counts, as pace.rs compares them.
    pub fn progress(&self) -> u64 {
        self.seen.map_or(0, |(received, carried)| {
            super::pace::progress([received, carried as u64])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kicks_once_when_bytes_wait_and_nothing_moves() {
        let mut w = ParserWatch::default();
        assert!(!w.should_kick(100, 100), "all carried");
        assert!(!w.should_kick(100, 100));
        assert!(
            !w.should_kick(130, 100),
            "first look at waiting bytes: they may still be moving"
        );
        assert!(w.should_kick(130, 100), "the same state twice: stuck");
        assert!(!w.should_kick(130, 100), "once per state");
        assert!(!w.should_kick(150, 100), "bytes arrived: look again");
        assert!(!w.should_kick(150, 150), "the parser caught up");
        assert!(!w.should_kick(150, 150));
        assert!(!w.waiting());
    }

    #[test]
    fn waiting_and_progress_follow_the_last_look() {
        let mut w = ParserWatch::default();
        assert!(!w.waiting(), "never looked");
        w.should_kick(130, 100);
        assert!(w.waiting());
        let before = w.progress();
        w.should_kick(130, 130);
        assert!(!w.waiting());
        assert_ne!(w.progress(), before);
    }

    #[test]
    fn a_frame_still_arriving_is_not_stuck() {
        let mut w = ParserWatch::default();
        for received in (1_000..20_000).step_by(1_000) {
            assert!(!w.should_kick(received, 500));
        }
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut w = ParserWatch::default();
        let received = (1u64 << 32) + 10;
        assert!(!w.should_kick(received, 10));
        assert!(
            !w.should_kick(received, 10),
            "10 of 2^32 + 10 is everything, wrapped"
        );
    }
}
