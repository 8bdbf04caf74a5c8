//! Which endpoints one client connection balances over. A connection has
//! MAX_UPSTREAMS upstream slots; a Service with more endpoints than that is
//! balanced over a window of them that slides by one endpoint every
//! SUBSET_STEP, so over time every endpoint gets its share of each
//! connection's streams, and connections start their windows at different
//! endpoints so that many connections cover all of them at once.

use std::net::SocketAddrV4;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{ClientConn, Slot, SlotState};
use crate::ebpf::abi::MAX_UPSTREAMS;

/// How often an oversubscribed connection moves its window on.
pub const SUBSET_STEP: Duration = Duration::from_secs(1);

/// Endpoints in the window when the Service does not fit: one slot stays
/// free for the endpoint that enters while the one leaving drains.
const WINDOW: usize = MAX_UPSTREAMS - 1;

/// All `endpoints` when they fit the slots; otherwise `WINDOW` of them in
/// address order, starting at `offset` and wrapping around.
pub fn window(endpoints: &[SocketAddrV4], offset: usize) -> Vec<SocketAddrV4> {
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

impl ClientConn {
    /// The endpoints this connection should have upstreams to now.
    pub(super) fn wanted(&self, endpoints: &[SocketAddrV4]) -> Vec<SocketAddrV4> {
        window(endpoints, self.subset_offset)
    }

    /// Moves the window on by one endpoint once SUBSET_STEP has passed, if
    /// the client opened streams since (an idle connection does not churn
    /// upstreams) and a slot is free for the endpoint that enters (an
    /// upstream still draining long streams holds its slot; the window waits).
    pub(super) fn slide_window(&mut self) {
        if self.subset_moved.elapsed() < SUBSET_STEP
            || self.service.endpoints.borrow().len() <= MAX_UPSTREAMS
        {
            return;
        }
        let last_stream = self
            .shared_conn()
            .last_stream
            .load(Ordering::Relaxed)
            .max(self.last_stream);
        if last_stream == self.subset_last_stream {
            return;
        }
        let endpoints = self.service.endpoints.borrow().clone();
        let free = self
            .slots
            .iter()
            .any(|s| s.as_ref().is_none_or(Slot::is_free));
        let connecting = self
            .slots
            .iter()
            .flatten()
            .any(|s| s.state == SlotState::Connecting);
        if !free || connecting {
            return;
        }
        self.subset_offset = self.subset_offset.wrapping_add(1);
        self.subset_moved = tokio::time::Instant::now();
        self.subset_last_stream = last_stream;
        self.reconcile(&endpoints);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: u8) -> Vec<SocketAddrV4> {
        // out of address order on purpose
        (1..=n)
            .rev()
            .map(|k| SocketAddrV4::new([10, 0, 0, k].into(), 80))
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
        assert_eq!(w[0], SocketAddrV4::new([10, 0, 0, 19].into(), 80));
        assert_eq!(w[2], SocketAddrV4::new([10, 0, 0, 1].into(), 80));
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
}
