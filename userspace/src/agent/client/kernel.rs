//! What one client connection sees of the kernel: its entry in the shared
//! `conns` array, its entries in the streams map, and the control records
//! it queues behind its frames in the injector. A trait, so that the
//! per-connection state (held.rs, carried.rs, windows.rs) is unit-tested
//! against `FakeKernel` without root, namespaces or a loaded program, the
//! way a balancer is tested against a mock service.

use std::sync::Arc;

use aya::maps::MapError;

use crate::agent::injector::Injector;
use crate::agent::Shared;
use crate::ebpf::abi::{ConnShared, Stream, UpstreamShared, MAX_UPSTREAMS};
use crate::ebpf::Datapath;

pub(super) trait ConnKernel {
    /// The connection's entry in `conns`, which the programs change concurrently.
    fn conn(&self) -> &ConnShared;

    fn up(&self, slot: u32) -> &UpstreamShared {
        &self.conn().up[slot as usize % MAX_UPSTREAMS]
    }

    fn get_stream(&self, stream: u32) -> Option<Stream>;
    fn set_stream(&self, stream: u32, entry: Stream) -> Result<(), MapError>;
    /// True if this call removed the entry (a program may race us to it).
    fn remove_stream(&self, stream: u32) -> bool;
    /// The streams bound to one slot.
    fn streams_of(&self, slot: u32) -> Vec<(u32, Stream)>;
    /// Removes and returns (id, entry) of the slot's streams above `above`.
    fn take_streams_of(&self, slot: u32, above: u32) -> Vec<(u32, Stream)>;

    /// The kernel carries `stream` again once it has passed no more than
    /// `consumed` messages of the client (queued behind the frames sent).
    fn release_stream(&self, stream: u32, consumed: u32);
    /// The divert of an upstream ends if it handed over no frame past `consumed`.
    fn release_upstream(&self, slot: u32, consumed: u32);
    /// The kernel opens new streams again (nothing waits in the agent).
    fn unhold(&self, consumed: u32);
    /// The fast path opens.
    fn open_gate(&self, consumed: u32);
}

/// The real kernel side: the loaded programs' maps and the injector.
pub(super) struct Kernel {
    pub shared: Arc<Shared>,
    pub id: u32,
}

impl Kernel {
    fn dp(&self) -> &Datapath {
        &self.shared.dp
    }

    fn injector(&self) -> &Injector {
        &self.shared.injector
    }
}

impl ConnKernel for Kernel {
    fn conn(&self) -> &ConnShared {
        // alloc_conn hands out ids below the table's length only
        self.dp()
            .conns
            .get(self.id)
            .expect("conn id within the table")
    }

    fn get_stream(&self, stream: u32) -> Option<Stream> {
        self.dp().get_stream(self.id, stream)
    }

    fn set_stream(&self, stream: u32, entry: Stream) -> Result<(), MapError> {
        self.dp().set_stream(self.id, stream, entry)
    }

    fn remove_stream(&self, stream: u32) -> bool {
        self.dp().remove_stream(self.id, stream)
    }

    fn streams_of(&self, slot: u32) -> Vec<(u32, Stream)> {
        self.dp().streams_of(self.id, slot)
    }

    fn take_streams_of(&self, slot: u32, above: u32) -> Vec<(u32, Stream)> {
        self.dp().take_streams_of(self.id, slot, above)
    }

    fn release_stream(&self, stream: u32, consumed: u32) {
        self.injector().release_stream(self.id, stream, consumed);
    }

    fn release_upstream(&self, slot: u32, consumed: u32) {
        self.injector().release_upstream(self.id, slot, consumed);
    }

    fn unhold(&self, consumed: u32) {
        self.injector().unhold(self.id, consumed);
    }

    fn open_gate(&self, consumed: u32) {
        self.injector().open_gate(self.id, consumed);
    }
}

#[cfg(test)]
pub(super) mod fake {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::*;

    /// A control record the connection queued for the kernel.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Record {
        ReleaseStream { stream: u32, consumed: u32 },
        ReleaseUpstream { slot: u32, consumed: u32 },
        Unhold { consumed: u32 },
        OpenGate { consumed: u32 },
    }

    /// The kernel side in memory: a `conns` entry the test sets as a
    /// program would, a streams map with room for `capacity` entries, and
    /// the records sent, in order.
    pub struct FakeKernel {
        pub conn: ConnShared,
        pub streams: RefCell<BTreeMap<u32, Stream>>,
        pub capacity: usize,
        pub records: RefCell<Vec<Record>>,
    }

    impl Default for FakeKernel {
        fn default() -> Self {
            FakeKernel {
                conn: ConnShared::default(),
                streams: RefCell::default(),
                capacity: usize::MAX,
                records: RefCell::default(),
            }
        }
    }

    impl FakeKernel {
        pub fn take_records(&self) -> Vec<Record> {
            std::mem::take(&mut self.records.borrow_mut())
        }
    }

    impl ConnKernel for FakeKernel {
        fn conn(&self) -> &ConnShared {
            &self.conn
        }

        fn get_stream(&self, stream: u32) -> Option<Stream> {
            self.streams.borrow().get(&stream).copied()
        }

        fn set_stream(&self, stream: u32, entry: Stream) -> Result<(), MapError> {
            let mut map = self.streams.borrow_mut();
            if !map.contains_key(&stream) && map.len() >= self.capacity {
                return Err(MapError::OutOfBounds {
                    index: map.len() as u32,
                    max_entries: self.capacity as u32,
                });
            }
            map.insert(stream, entry);
            Ok(())
        }

        fn remove_stream(&self, stream: u32) -> bool {
            self.streams.borrow_mut().remove(&stream).is_some()
        }

        fn streams_of(&self, slot: u32) -> Vec<(u32, Stream)> {
            let map = self.streams.borrow();
            map.iter()
                .filter(|(_, s)| s.slot == slot)
                .map(|(id, s)| (*id, *s))
                .collect()
        }

        fn take_streams_of(&self, slot: u32, above: u32) -> Vec<(u32, Stream)> {
            let mut map = self.streams.borrow_mut();
            let taken: Vec<(u32, Stream)> = map
                .iter()
                .filter(|(id, s)| s.slot == slot && **id > above)
                .map(|(id, s)| (*id, *s))
                .collect();
            for (id, _) in &taken {
                map.remove(id);
            }
            taken
        }

        fn release_stream(&self, stream: u32, consumed: u32) {
            let r = Record::ReleaseStream { stream, consumed };
            self.records.borrow_mut().push(r);
        }

        fn release_upstream(&self, slot: u32, consumed: u32) {
            let r = Record::ReleaseUpstream { slot, consumed };
            self.records.borrow_mut().push(r);
        }

        fn unhold(&self, consumed: u32) {
            self.records.borrow_mut().push(Record::Unhold { consumed });
        }

        fn open_gate(&self, consumed: u32) {
            self.records
                .borrow_mut()
                .push(Record::OpenGate { consumed });
        }
    }
}
