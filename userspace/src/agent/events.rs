//! The kernel's ring buffer of flow-control events, each sent on to the
//! task of the connection it names.

use std::sync::Arc;

use aya::maps::{MapData, RingBuf};

use super::registry::{Registry, Wake};
use crate::ebpf::abi::{Event, EV_STREAM_WINDOW};

pub fn spawn(ring: RingBuf<MapData>, registry: Arc<Registry>) -> std::io::Result<()> {
    let mut fd = crate::sys::register_owned(ring)?;
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
