//! Which endpoints one client connection balances over. A connection has
//! MAX_UPSTREAMS upstream slots; a Service with more endpoints than that is
//! balanced over a window of them that slides by one endpoint every
//! SUBSET_STEP, so over time every endpoint gets its share of each
//! connection's streams, and connections start their windows at different
//! endpoints so that many connections cover all of them at once.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::ebpf::abi::MAX_UPSTREAMS;

/// How often an oversubscribed connection moves its window on.
pub const SUBSET_STEP: Duration = Duration::from_secs(1);

/// Endpoints in the window when the Service does not fit: one slot stays
/// free for the endpoint that enters while the one leaving drains.
const WINDOW: usize = MAX_UPSTREAMS - 1;

/// All `endpoints` when they fit the slots; otherwise `WINDOW` of them in
/// address order, starting at `offset` and wrapping around.
pub fn window(endpoints: &[SocketAddr], offset: usize) -> Vec<SocketAddr> {
    if endpoints.len() <= MAX_UPSTREAMS {
        return endpoints.to_vec();
    }
    let mut sorted = endpoints.to_vec();
    sorted.sort();
    sorted.dedup();
    let n = sorted.len();
    (0..WINDOW.min(n))
        .map(|k| sorted[(offset + k) % n])
        .collect()
}

/// Where one connection's window over a large Service starts, when it
/// last moved, and the client's last stream then.
#[derive(Debug)]
pub(super) struct Subset {
    offset: usize,
    moved: Instant,
    last_stream: u32,
}

impl Subset {
    /// `offset`: the Service's rotation, different for each connection.
    pub fn new(offset: usize, now: Instant) -> Self {
        Subset {
            offset,
            moved: now,
            last_stream: 0,
        }
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The endpoints this connection should have upstreams to now.
    pub fn wanted(&self, endpoints: &[SocketAddr]) -> Vec<SocketAddr> {
        window(endpoints, self.offset)
    }

    /// The window will move once SUBSET_STEP has passed: the Service does
    /// not fit and the client opened streams since it last moved.
    pub fn waits(&self, endpoints: usize, last_stream: u32) -> bool {
        endpoints > MAX_UPSTREAMS && last_stream != self.last_stream
    }

    /// Moves the window on by one endpoint once SUBSET_STEP has passed, if
    /// the Service does not fit, the client opened streams since
    /// (`last_stream`: an idle connection does not churn upstreams) and a
    /// slot is ready for the endpoint that enters (`slot_ready`: one is
    /// free and none is connecting; an upstream still draining long
    /// streams holds its slot, and the window waits). True if it moved.
    pub fn slide(
        &mut self,
        now: Instant,
        endpoints: usize,
        last_stream: u32,
        slot_ready: bool,
    ) -> bool {
        let due = now.duration_since(self.moved) >= SUBSET_STEP;
        if !due || endpoints <= MAX_UPSTREAMS || last_stream == self.last_stream || !slot_ready {
            return false;
        }
        self.offset = self.offset.wrapping_add(1);
        self.moved = now;
        self.last_stream = last_stream;
        true
    }
}

/// A connection handed to the agent after this one (agent/handover): the
/// window stays where it was; it may move again a SUBSET_STEP from now.
impl Subset {
    pub fn last_stream(&self) -> u32 {
        self.last_stream
    }

    pub fn resumed(offset: usize, last_stream: u32, now: Instant) -> Self {
        Subset {
            offset,
            moved: now,
            last_stream,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: u8) -> Vec<SocketAddr> {
        // out of address order on purpose
        (1..=n)
            .rev()
            .map(|k| SocketAddr::new([10, 0, 0, k].into(), 80))
            .collect()
    }

    #[test]
    fn a_service_that_fits_is_taken_whole_and_in_its_order() {
        let all = eps(MAX_UPSTREAMS as u8);
        assert_eq!(window(&all, 7), all);
    }

    #[test]
    fn a_larger_service_gets_a_window_that_wraps() {
        let all = eps(20);
        let w = window(&all, 18);
        assert_eq!(w.len(), WINDOW);
        assert_eq!(w[0], SocketAddr::new([10, 0, 0, 19].into(), 80));
        assert_eq!(w[2], SocketAddr::new([10, 0, 0, 1].into(), 80));
    }

    #[test]
    fn each_step_swaps_one_endpoint_and_a_cycle_visits_all() {
        let all = eps(24);
        let mut seen = std::collections::HashSet::new();
        for offset in 0..24 {
            let (a, b) = (window(&all, offset), window(&all, offset + 1));
            assert_eq!(a.iter().filter(|e| !b.contains(e)).count(), 1);
            seen.extend(a);
        }
        assert_eq!(seen.len(), 24);
    }

    #[test]
    fn every_endpoint_is_in_the_same_number_of_windows() {
        let all = eps(21);
        let mut count = std::collections::HashMap::new();
        for offset in 0..21 {
            for e in window(&all, offset) {
                *count.entry(e).or_insert(0) += 1;
            }
        }
        assert!(count.values().all(|&c| c == WINDOW), "{count:?}");
    }

    #[test]
    fn the_window_moves_one_step_at_a_time_only_while_the_client_is_busy() {
        let t0 = Instant::now();
        let n = MAX_UPSTREAMS + 4;
        let mut s = Subset::new(3, t0);
        assert!(!s.slide(t0 + SUBSET_STEP / 2, n, 5, true), "before a step");
        assert!(
            !s.slide(t0 + SUBSET_STEP, MAX_UPSTREAMS, 5, true),
            "the Service fits"
        );
        assert!(!s.slide(t0 + SUBSET_STEP, n, 5, false), "no slot ready");
        assert!(s.slide(t0 + SUBSET_STEP, n, 5, true));
        assert_eq!(s.offset(), 4);
        // no new stream since the move: an idle connection stays put
        assert!(!s.slide(t0 + 3 * SUBSET_STEP, n, 5, true));
        // a new stream, but within a step of the last move
        assert!(!s.slide(t0 + SUBSET_STEP + SUBSET_STEP / 2, n, 7, true));
        assert!(s.slide(t0 + 2 * SUBSET_STEP, n, 7, true));
        assert_eq!(s.offset(), 5);
    }

    #[test]
    fn a_window_waits_to_move_exactly_when_a_later_slide_would_move_it() {
        let t0 = Instant::now();
        let n = MAX_UPSTREAMS + 4;
        let mut s = Subset::new(3, t0);
        assert!(!s.waits(MAX_UPSTREAMS, 5), "the Service fits");
        assert!(!s.waits(n, 0), "no stream yet");
        assert!(s.waits(n, 5));
        assert!(s.slide(t0 + SUBSET_STEP, n, 5, true));
        assert!(!s.waits(n, 5), "moved; the client idle since");
        assert!(s.waits(n, 7));
    }

    #[test]
    fn a_moved_window_swaps_one_endpoint() {
        let all = eps(20);
        let t0 = Instant::now();
        let mut s = Subset::new(0, t0);
        let before = s.wanted(&all);
        assert!(s.slide(t0 + SUBSET_STEP, all.len(), 1, true));
        let after = s.wanted(&all);
        assert_eq!(before.iter().filter(|e| !after.contains(e)).count(), 1);
    }
}
