//! The kernel's ring buffer of flow-control events, each sent on to the
//! task of the connection it names.

use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::registry::Registry;
use crate::ebpf::abi::Event;

pub fn spawn(ring: RingBuf<MapData>, registry: Arc<Registry>) -> anyhow::Result<()> {
    // SAFETY: the ring buffer owns its fd and moves into the AsyncFd, so the
    // fd stays open for as long as it is registered.
    let mut fd = unsafe { AsyncFd::register(ring) }.map_err(|e| anyhow::anyhow!("ring buffer: {e}"))?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else { return };
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                if item.len() < std::mem::size_of::<Event>() {
                    continue;
                }
                let conn_id = u32::from_ne_bytes([item[0], item[1], item[2], item[3]]);
                registry.wake(conn_id);
            }
            guard.clear_ready();
        }
    });
    Ok(())
}
