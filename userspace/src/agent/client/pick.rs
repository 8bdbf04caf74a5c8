//! Which upstream a stream the agent opens goes to: the kernel's pick
//! (ebpf/lib/conn.h `pick_upstream`) on the same cursor and counts, so
//! streams spread alike whichever of the two opens them.

use crate::model::{peak_ewma_cost, Policy};

/// The upstreams of one connection as a pick sees them.
pub(super) trait Upstreams {
    /// Slots, usable or not.
    fn len(&self) -> usize;
    /// Whether a new stream may go to this slot now.
    fn takes_stream(&self, slot: usize) -> bool;
    /// Streams open on this slot.
    fn open(&self, slot: usize) -> u32;
    /// The peak-EWMA estimate of the slot's endpoint now, 0 when none
    /// (ebpf/lib/ewma.h `ewma_read`).
    fn latency(&self, slot: usize) -> u64;
}

/// The slot for a new stream and the round-robin cursor after it; `draw(n)`
/// returns a number below `n` (random in production).
pub(super) fn pick(
    policy: Policy,
    cursor: usize,
    ups: &impl Upstreams,
    draw: impl FnOnce(usize) -> usize,
) -> Option<(usize, usize)> {
    let n = ups.len();
    let rr = (0..n)
        .map(|i| (cursor + i) % n)
        .find(|&slot| ups.takes_stream(slot))?;
    let next = rr + 1;
    if policy == Policy::RoundRobin {
        return Some((rr, next));
    }
    // The kernel numbers the other candidates in slot order, skipping rr.
    let others: Vec<usize> = (0..n)
        .filter(|&slot| slot != rr && ups.takes_stream(slot))
        .collect();
    if others.is_empty() {
        return Some((rr, next));
    }
    let other = others[draw(others.len()) % others.len()];
    let better = match policy {
        Policy::PeakEwma => {
            peak_ewma_cost(ups.latency(other), ups.open(other))
                < peak_ewma_cost(ups.latency(rr), ups.open(rr))
        }
        _ => ups.open(other) < ups.open(rr),
    };
    Some((if better { other } else { rr }, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (takes a stream, open streams) per slot, and latency estimates.
    struct Mock(Vec<(bool, u32)>, Vec<u64>);

    fn mock(slots: Vec<(bool, u32)>) -> Mock {
        let n = slots.len();
        Mock(slots, vec![0; n])
    }

    impl Upstreams for Mock {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn takes_stream(&self, slot: usize) -> bool {
            self.0[slot].0
        }
        fn open(&self, slot: usize) -> u32 {
            self.0[slot].1
        }
        fn latency(&self, slot: usize) -> u64 {
            self.1[slot]
        }
    }

    #[test]
    fn round_robin_takes_the_next_usable_slot_whatever_is_open() {
        let ups = mock(vec![(true, 9), (false, 0), (true, 0), (false, 0)]);
        assert_eq!(pick(Policy::RoundRobin, 1, &ups, |_| 0), Some((2, 3)));
        assert_eq!(pick(Policy::RoundRobin, 3, &ups, |_| 0), Some((0, 1)));
        let none = mock(vec![(false, 0); 4]);
        assert_eq!(pick(Policy::RoundRobin, 0, &none, |_| 0), None);
    }

    #[test]
    fn least_request_leaves_the_busier_turn_for_a_drawn_slot_with_fewer_open() {
        // slot 0's turn, but it has 5 open; the draw names slot 2 (the
        // second of the others, in slot order: 1, 2) with 1 open
        let ups = mock(vec![(true, 5), (true, 7), (true, 1)]);
        assert_eq!(pick(Policy::LeastRequest, 0, &ups, |n| n - 1), Some((2, 1)));
        // drawn slot 1 has more open than slot 0: the turn stands
        assert_eq!(pick(Policy::LeastRequest, 0, &ups, |_| 0), Some((0, 1)));
    }

    #[test]
    fn least_request_with_equal_counts_is_round_robin() {
        let ups = mock(vec![(true, 2), (true, 2), (true, 2)]);
        let mut cursor = 0;
        let mut seen = Vec::new();
        for draw in 0..6 {
            let (slot, next) =
                pick(Policy::LeastRequest, cursor, &ups, |n| draw % n).expect("a slot");
            seen.push(slot);
            cursor = next;
        }
        assert_eq!(seen, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_request_never_draws_a_slot_that_takes_no_stream() {
        // slot 1 has none open but is full (takes no stream)
        let ups = mock(vec![(true, 3), (false, 0), (true, 4)]);
        for draw in 0..4 {
            assert_eq!(
                pick(Policy::LeastRequest, 0, &ups, |n| draw % n),
                Some((0, 1))
            );
        }
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn peak_ewma_leaves_a_slow_turn_for_a_faster_drawn_slot() {
        // slot 0's turn at 50 ms, nothing open; slot 1 at 1 ms with 3 open
        let ups = Mock(vec![(true, 0), (true, 3), (true, 0)], vec![50 * MS, MS, MS]);
        assert_eq!(pick(Policy::PeakEwma, 0, &ups, |_| 0), Some((1, 1)));
        // slot 1 with 60 open costs more than slot 0 with none: the turn stands
        let busy = Mock(
            vec![(true, 0), (true, 60), (true, 0)],
            vec![50 * MS, MS, MS],
        );
        assert_eq!(pick(Policy::PeakEwma, 0, &busy, |_| 0), Some((0, 1)));
        // least request would not have moved: both have few open
        assert_eq!(pick(Policy::LeastRequest, 0, &ups, |_| 0), Some((0, 1)));
    }

    #[test]
    fn peak_ewma_probes_a_new_endpoint_once_per_connection_until_it_answers() {
        // slot 2 has no estimate: free with nothing open, so it is taken
        let fresh = Mock(vec![(true, 1), (true, 1), (true, 0)], vec![MS, MS, 0]);
        assert_eq!(pick(Policy::PeakEwma, 0, &fresh, |n| n - 1), Some((2, 1)));
        // with its probe open and still no answer, it is passed over
        let probing = Mock(vec![(true, 9), (true, 9), (true, 1)], vec![MS, MS, 0]);
        assert_eq!(pick(Policy::PeakEwma, 0, &probing, |n| n - 1), Some((0, 1)));
        assert_eq!(pick(Policy::PeakEwma, 2, &probing, |_| 0), Some((0, 3)));
    }
}
