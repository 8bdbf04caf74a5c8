//! Streams the agent carries itself (the slow path), by id: the slot each
//! is bound to, and whether the kernel slowed it after the fast path
//! opened. A slowed stream goes back to the kernel once nothing of it
//! waits in the agent; the release travels through the injector behind
//! the stream's last frame, so the endpoint sees its frames in order.

use std::collections::{HashMap, HashSet};

use super::kernel::ConnKernel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Carry {
    /// The agent knows its slot; the kernel may carry it too.
    Bound,
    /// The kernel sends its frames to the agent until the agent releases it
    /// (it went over the endpoint's window, or was opened by the agent
    /// after the gate opened).
    Slowed,
}

#[derive(Debug, Default)]
pub(super) struct CarriedStreams {
    streams: HashMap<u32, (u32, Carry)>,
}

impl CarriedStreams {
    /// Whether the kernel sends a stream's frames to the agent (a
    /// connection with one is not at its quiet point: handover.rs). Bound
    /// streams are not: the kernel carries them (an entry may outlive its
    /// stream, whose end the kernel saw), and a frame of one diverted later
    /// finds its slot in the kernel's `streams` (from_client.rs).
    pub fn any_slowed(&self) -> bool {
        self.streams.values().any(|(_, c)| *c == Carry::Slowed)
    }

    pub fn slot_of(&self, stream: u32) -> Option<u32> {
        self.streams.get(&stream).map(|(slot, _)| *slot)
    }

    pub fn contains(&self, stream: u32) -> bool {
        self.streams.contains_key(&stream)
    }

    /// The agent routes `stream` to `slot`; `slowed` once the fast path is open.
    pub fn bind(&mut self, stream: u32, slot: u32, slowed: bool) {
        let carry = if slowed { Carry::Slowed } else { Carry::Bound };
        self.streams.insert(stream, (slot, carry));
    }

    /// The kernel handed the agent a frame of a bound stream after the gate.
    pub fn mark_slowed(&mut self, stream: u32) {
        if let Some((_, carry)) = self.streams.get_mut(&stream) {
            *carry = Carry::Slowed;
        }
    }

    /// The stream ended (both sides, or a reset).
    pub fn end(&mut self, stream: u32) {
        self.streams.remove(&stream);
    }

    /// Streams bound to `slot`.
    pub fn on_slot(&self, slot: u32) -> Vec<u32> {
        let mut ids: Vec<u32> = (self.streams.iter())
            .filter(|(_, (s, _))| *s == slot)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Removes and returns the streams of `slot` above `last` (its
    /// endpoint went away: they are refused).
    pub fn take_above(&mut self, slot: u32, last: u32) -> Vec<u32> {
        let ids: Vec<u32> = (self.on_slot(slot).into_iter())
            .filter(|id| *id > last)
            .collect();
        for id in &ids {
            self.streams.remove(id);
        }
        ids
    }

    /// Slowed streams of `slot` with no frame in `waiting` go back to the
    /// kernel, each released once; they stay bound, so a frame the kernel
    /// hands over later still finds its slot.
    pub fn release_drained(
        &mut self,
        slot: u32,
        waiting: &HashSet<u32>,
        kernel: &impl ConnKernel,
        consumed: u32,
    ) {
        let mut done: Vec<u32> = (self.streams.iter())
            .filter(|(id, (s, carry))| {
                *s == slot && *carry == Carry::Slowed && !waiting.contains(id)
            })
            .map(|(id, _)| *id)
            .collect();
        done.sort_unstable();
        for stream in done {
            self.streams.insert(stream, (slot, Carry::Bound));
            kernel.release_stream(stream, consumed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernel::fake::{FakeKernel, Record};
    use super::*;

    #[test]
    fn a_slowed_stream_is_released_once_nothing_of_it_waits() {
        let k = FakeKernel::default();
        let mut c = CarriedStreams::default();
        c.bind(1, 0, true);
        c.bind(3, 0, true);
        c.bind(5, 1, true);
        c.release_drained(0, &HashSet::from([3]), &k, 7);
        assert_eq!(
            k.take_records(),
            [Record::ReleaseStream {
                stream: 1,
                consumed: 7
            }]
        );
        // released once: a second flush sends nothing more for it
        c.release_drained(0, &HashSet::from([3]), &k, 8);
        assert_eq!(k.take_records(), []);
        // stream 3 drains later
        c.release_drained(0, &HashSet::new(), &k, 9);
        assert_eq!(
            k.take_records(),
            [Record::ReleaseStream {
                stream: 3,
                consumed: 9
            }]
        );
        assert_eq!(c.slot_of(1), Some(0), "a released stream keeps its slot");
    }

    #[test]
    fn streams_bound_before_the_gate_are_never_released() {
        let k = FakeKernel::default();
        let mut c = CarriedStreams::default();
        c.bind(1, 2, false);
        c.release_drained(2, &HashSet::new(), &k, 1);
        assert_eq!(k.take_records(), []);
        // until the kernel slows it
        c.mark_slowed(1);
        c.release_drained(2, &HashSet::new(), &k, 4);
        assert_eq!(
            k.take_records(),
            [Record::ReleaseStream {
                stream: 1,
                consumed: 4
            }]
        );
    }

    #[test]
    fn an_ended_stream_is_neither_released_nor_marked_again() {
        let k = FakeKernel::default();
        let mut c = CarriedStreams::default();
        c.bind(9, 0, true);
        c.end(9);
        c.mark_slowed(9);
        c.release_drained(0, &HashSet::new(), &k, 1);
        assert_eq!(k.take_records(), []);
        assert!(!c.contains(9));
    }

    #[test]
    fn a_goaway_takes_only_the_streams_above_its_last_id() {
        let mut c = CarriedStreams::default();
        for id in [1, 3, 5, 7] {
            c.bind(id, 0, false);
        }
        c.bind(9, 1, false);
        assert_eq!(c.take_above(0, 3), [5, 7]);
        assert_eq!(c.on_slot(0), [1, 3]);
        assert_eq!(c.on_slot(1), [9]);
        assert_eq!(c.take_above(0, 0), [1, 3]);
        assert!(c.on_slot(0).is_empty());
    }
}
