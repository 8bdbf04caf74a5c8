//! The sources' taps (ebpf/lib/conn.h, `pass_to_agent`; agent/tap.rs):
//! the kernel hands the agent a socket's frames into its tap's ingress,
//! and records where an accepted socket's frames began to go there.

use std::os::fd::AsRawFd;
use std::sync::Mutex;

use aya::maps::{HashMap, MapData, MapError, SockHash};

use super::{lock, Datapath};
use crate::ebpf::abi::TapStart;

pub(super) struct Taps {
    pub(super) socks: Mutex<SockHash<MapData, u64>>,
    pub(super) starts: Mutex<HashMap<MapData, u64, TapStart>>,
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
    /// agent go into its own ingress again.
    pub fn remove_tap(&self, cookie: u64) {
        if let Some(t) = &self.taps {
            let _ = lock(&t.socks).remove(&cookie);
        }
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
}
