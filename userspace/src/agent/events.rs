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
                let Some(ev) = parse(&item) else { continue };
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

fn parse(item: &[u8]) -> Option<Event> {
    let word = |i: usize| {
        Some(u32::from_ne_bytes(
            item.get(i * 4..i * 4 + 4)?.try_into().ok()?,
        ))
    };
    Some(Event {
        conn_id: word(0)?,
        kind: word(1)?,
        slot: word(2)?,
        stream: word(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_in_native_order_and_short_ones_are_dropped() {
        let words = [7u32, EV_STREAM_WINDOW, 3, 41];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let ev = parse(&bytes).expect("a whole event");
        assert_eq!(
            (ev.conn_id, ev.kind, ev.slot, ev.stream),
            (7, EV_STREAM_WINDOW, 3, 41)
        );
        assert!(parse(&bytes[..15]).is_none());
    }
}
