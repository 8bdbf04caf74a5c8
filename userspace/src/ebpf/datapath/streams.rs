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

    /// Removes and returns (id, entry) of the streams of a connection routed
    /// to one slot with an id above `above`, each once even if the programs
    /// race us to it.
    pub fn take_streams_of(&self, conn_id: u32, slot: u32, above: u32) -> Vec<(u32, Stream)> {
        let mut map = lock(&self.streams);
        let found: Vec<(u32, Stream)> = map
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, v)| k.conn_id == conn_id && v.slot == slot && k.stream > above)
            .map(|(k, v)| (k.stream, v))
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

    /// Removes every stream entry of a connection (after it closed) and
    /// returns those this call removed (the programs may race us to one).
    pub fn forget_streams(&self, conn_id: u32) -> Vec<Stream> {
        let mut map = lock(&self.streams);
        let found: Vec<(StreamKey, Stream)> = map
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| k.conn_id == conn_id)
            .collect();
        found
            .into_iter()
            .filter(|(k, _)| map.remove(k).is_ok())
            .map(|(_, v)| v)
            .collect()
    }

    pub fn stream_count(&self) -> usize {
        lock(&self.streams).keys().count()
    }
}
