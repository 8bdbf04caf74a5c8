//! The kernel's ring buffer of flow-control events, each sent on to the
//! task of the connection it names.

use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::registry::{Registry, Wake};
use crate::ebpf::abi::{Event, EV_STREAM_WINDOW};

pub fn spawn(ring: RingBuf<MapData>, registry: Arc<Registry>) -> anyhow::Result<()> {
    // SAFETY: the ring buffer owns its fd and moves into the AsyncFd, so the
    // fd stays open for as long as it is registered.
    let mut fd =
        unsafe { AsyncFd::register(ring) }.map_err(|e| anyhow::anyhow!("ring buffer: {e}"))?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                let Some(ev) = Event::from_bytes(&item) else {
                    continue;
                };
                let wake = match ev.kind {
                    EV_STREAM_WINDOW => Wake::StreamWindow {
                        slot: ev.slot,
                        stream: ev.stream,
                    },
                    _ => Wake::FlowControl,
                };
                registry.wake(ev.conn_id, wake);
            }
            guard.clear_ready();
        }
    });
    Ok(())
}
