//! Per-stream state: which upstream a stream is bound to and how far the
//! kernel and the agent each carried it (`streams`, keyed by connection
//! and stream id).

use aya::maps::MapError;

use super::{lock, Datapath};
use crate::ebpf::abi::{Stream, StreamKey};

impl Datapath {
    pub fn set_stream(&self, conn_id: u32, stream: u32, value: Stream) -> Result<(), MapError> {
        lock(&self.streams).insert(StreamKey { conn_id, stream }, value, 0)
    }

    pub fn get_stream(&self, conn_id: u32, stream: u32) -> Option<Stream> {
        lock(&self.streams)
            .get(&StreamKey { conn_id, stream }, 0)
            .ok()
    }

    /// True if this call removed the entry (the kernel may race us to it).
    pub fn remove_stream(&self, conn_id: u32, stream: u32) -> bool {
        lock(&self.streams)
            .remove(&StreamKey { conn_id, stream })
            .is_ok()
    }

    /// Removes and returns (id, flags) of the streams of a connection routed
    /// to one slot with an id above `above`, each once even if the programs
    /// race us to it.
    pub fn take_streams_of(&self, conn_id: u32, slot: u32, above: u32) -> Vec<(u32, u32)> {
        let mut map = lock(&self.streams);
        let found: Vec<(u32, u32)> = map
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, v)| k.conn_id == conn_id && v.slot == slot && k.stream > above)
            .map(|(k, v)| (k.stream, v.flags))
            .collect();
        found
            .into_iter()
            .filter(|(stream, _)| {
                map.remove(&StreamKey {
                    conn_id,
                    stream: *stream,
                })
                .is_ok()
            })
            .collect()
    }

    /// The streams of a connection bound to one slot.
    pub fn streams_of(&self, conn_id: u32, slot: u32) -> Vec<(u32, Stream)> {
        let map = lock(&self.streams);
        map.iter()
            .filter_map(Result::ok)
            .filter(|(k, v)| k.conn_id == conn_id && v.slot == slot)
            .map(|(k, v)| (k.stream, v))
            .collect()
    }

    /// Removes every stream entry of a connection (after it closed).
    pub fn forget_streams(&self, conn_id: u32) -> usize {
        let mut map = lock(&self.streams);
        let keys: Vec<StreamKey> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.conn_id == conn_id)
            .collect();
        for k in &keys {
            let _ = map.remove(k);
        }
        keys.len()
    }

    pub fn stream_count(&self) -> usize {
        lock(&self.streams).keys().count()
    }
}
