//! The sources' taps (ebpf/lib/conn.h, `pass_to_agent`; agent/tap.rs):
//! the kernel hands the agent a socket's frames into its tap's ingress,
//! and records where an accepted socket's frames began to go there.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use aya::maps::{HashMap, Map, MapData, MapError, Queue, SockHash, SockMap};
use aya::Ebpf;

use super::{lock, take, Datapath, DatapathError};
use crate::ebpf::abi::TapStart;
use crate::ebpf::conn_table::MappedArray;

pub(super) struct Taps {
    pub(super) socks: Mutex<SockHash<MapData, u64>>,
    /// Taps being read out at a handover.
    pub(super) held: Mutex<SockHash<MapData, u64>>,
    pub(super) starts: Mutex<HashMap<MapData, u64, TapStart>>,
    pub(super) spares: Spares,
}

/// The spare taps' maps (ebpf/lib/maps.h; agent/spare_taps.rs).
pub(super) struct Spares {
    socks: Mutex<SockMap<MapData>>,
    ready: Mutex<Queue<MapData, u32>>,
    dropped: Mutex<Queue<MapData, u32>>,
    /// The cookie of the accepted socket each index was given to; 0: none.
    owner: MappedArray<AtomicU64>,
}

impl Spares {
    pub(super) fn take(ebpf: &mut Ebpf, entries: u32) -> Result<Spares, DatapathError> {
        let owner_map = ebpf
            .take_map("spare_owner")
            .ok_or(DatapathError::MissingMap("spare_owner"))?;
        let Map::Array(owner_data) = &owner_map else {
            return Err(DatapathError::MissingMap("spare_owner"));
        };
        // The mapping keeps the map alive after the Map handle is dropped.
        let owner = MappedArray::map(owner_data.fd(), entries)?;
        Ok(Spares {
            socks: Mutex::new(take(ebpf, "spare_taps")?),
            ready: Mutex::new(take(ebpf, "spare_ready")?),
            dropped: Mutex::new(take(ebpf, "spare_dropped")?),
            owner,
        })
    }
}

impl Datapath {
    /// Whether this generation's programs hand frames to taps (an adopted
    /// one's may predate them).
    pub fn has_taps(&self) -> bool {
        self.taps.is_some()
    }

    /// From the next message on, the verdict hands the frames for the agent
    /// of the socket with `cookie` to `tap`.
    pub fn insert_tap(&self, cookie: u64, tap: &impl AsRawFd) -> Result<(), MapError> {
        match &self.taps {
            Some(t) => lock(&t.socks).insert(cookie, tap.as_raw_fd(), 0),
            None => Err(MapError::KeyNotFound),
        }
    }

    /// The socket with `cookie` has no tap any more: its frames for the
    /// agent go into its own ingress again. `tap` goes into `tap_held`
    /// first, so what the verdict handed it before still reaches it
    /// (ebpf/lib/maps.h); closing it takes it out. Err when that map had no
    /// room: what the tap had not delivered yet is lost with its psock.
    pub fn remove_tap(&self, cookie: u64, tap: &impl AsRawFd) -> Result<(), MapError> {
        let Some(t) = &self.taps else {
            return Ok(());
        };
        let held = lock(&t.held).insert(cookie, tap.as_raw_fd(), 0);
        let _ = lock(&t.socks).remove(&cookie);
        held
    }

    /// What went into the accepted socket's own ingress before the first
    /// message went into its tap; none until one has.
    pub fn tap_start(&self, cookie: u64) -> Option<TapStart> {
        lock(&self.taps.as_ref()?.starts).get(&cookie, 0).ok()
    }

    pub(super) fn forget_tap_start(&self, cookie: u64) {
        if let Some(t) = &self.taps {
            let _ = lock(&t.starts).remove(&cookie);
        }
    }

    fn spares(&self) -> Option<&Spares> {
        self.taps.as_ref().map(|t| &t.spares)
    }

    /// How many spare tap indexes the kernel has room for; 0 in a
    /// generation without them.
    pub fn spare_indexes(&self) -> u32 {
        self.spares().map_or(0, |s| s.owner.len() as u32)
    }

    /// `tap` is the spare at `index`, for the next accepted socket. The
    /// index must be owned by none (never given, or given back and past
    /// its cooling: agent/spare_taps.rs).
    pub fn ready_spare(&self, index: u32, tap: &impl AsRawFd) -> Result<(), MapError> {
        let spares = self.spares().ok_or(MapError::KeyNotFound)?;
        let owner = spares.owner.get(index).ok_or(MapError::OutOfBounds {
            index,
            max_entries: spares.owner.len() as u32,
        })?;
        owner.store(0, Ordering::SeqCst);
        lock(&spares.socks).set(index, tap, 0)?;
        lock(&spares.ready).push(index, 0)
    }

    /// The index of the spare tap sockops gave the accepted socket with
    /// `cookie`, while the socket owns it.
    pub fn spare_of(&self, cookie: u64) -> Option<u32> {
        let index = self.parse_state(cookie)?.spare.checked_sub(1)?;
        let owner = self.spares()?.owner.get(index)?;
        (owner.load(Ordering::SeqCst) == cookie).then_some(index)
    }

    /// The socket with `cookie` lets its spare tap at `index` go (a
    /// handover: its frames go into its own ingress again); the index comes
    /// back to the pool as a dropped one, unless sockops saw the socket
    /// close first and gave the index back itself. The tap stays in
    /// `spare_taps` until the index names a fresh one, so what the verdict
    /// handed it before still reaches it.
    pub fn release_spare(&self, index: u32, cookie: u64) {
        let Some(spares) = self.spares() else {
            return;
        };
        let Some(owner) = spares.owner.get(index) else {
            return;
        };
        if owner
            .compare_exchange(cookie, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        if let Err(e) = lock(&spares.dropped).push(index, 0) {
            tracing::warn!(index, error = %e, "a spare tap index let go could not be queued: it is lost to the pool");
        }
    }

    /// Indexes given back since the last call: their accepted socket
    /// closed, or was let go.
    pub fn dropped_spares(&self) -> Vec<u32> {
        let Some(spares) = self.spares() else {
            return Vec::new();
        };
        let mut queue = lock(&spares.dropped);
        std::iter::from_fn(|| queue.pop(0).ok()).collect()
    }
}
