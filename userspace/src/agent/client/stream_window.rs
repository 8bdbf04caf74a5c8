//! Stream windows. The client is told the default initial stream window
//! (65,535); an endpoint may grant more (hyper, tonic, grpc-java: 1 MiB) and
//! then sends its first stream WINDOW_UPDATE only after receiving a good
//! part of that. Both ends must agree, so each stream bound to such an
//! endpoint gets the difference from the agent, once, when it carries DATA:
//! the kernel asks for streams it carries (EV_STREAM_WINDOW), the agent
//! grants streams it carries itself, and STREAM_WINDOW_GRANTED in the
//! stream's entry makes sure only one of them does.

use super::kernel::ConnKernel;
use std::sync::atomic::Ordering;

use bytes::BytesMut;

use super::ClientConn;
use crate::ebpf::abi::STREAM_WINDOW_GRANTED;
use crate::h2::frame::{self, DEFAULT_WINDOW};

/// What a client told the default window must be granted on each stream
/// to match an endpoint's SETTINGS_INITIAL_WINDOW_SIZE.
pub(super) fn extra_for(endpoint_window: u32) -> u32 {
    endpoint_window.saturating_sub(DEFAULT_WINDOW)
}

impl ClientConn {
    /// Sends the client a stream WINDOW_UPDATE for the slot's extra window
    /// (or `amount`, when given).
    pub(super) fn send_stream_window(&mut self, slot: u32, stream: u32, amount: Option<u32>) {
        let inc = amount.unwrap_or_else(|| {
            self.kernel
                .up(slot)
                .stream_window_extra
                .load(Ordering::SeqCst)
        });
        if inc == 0 {
            return;
        }
        let mut out = BytesMut::new();
        frame::window_update(&mut out, stream, inc);
        self.send_to_client(&out);
    }

    /// A stream the agent carries, bound to `slot`, is about to send DATA:
    /// grant it the endpoint's window unless the kernel or we already did.
    pub(super) fn grant_carried_stream(&mut self, slot: u32, stream: u32) {
        if self
            .kernel
            .up(slot)
            .stream_window_extra
            .load(Ordering::SeqCst)
            == 0
        {
            return;
        }
        let Some(mut s) = self.kernel.get_stream(stream) else {
            return;
        };
        if s.flags & STREAM_WINDOW_GRANTED != 0 {
            return;
        }
        s.flags |= STREAM_WINDOW_GRANTED;
        if self.kernel.set_stream(stream, s).is_ok() {
            self.send_stream_window(slot, stream, None);
        }
    }

    /// The endpoint's SETTINGS_INITIAL_WINDOW_SIZE became known or changed.
    /// A rise also reaches streams already granted (RFC 9113 §6.9.2: the
    /// endpoint applies the difference to every open stream, so must the
    /// client); a fall cannot be taken back from the client and is only
    /// logged.
    pub(super) fn set_endpoint_stream_window(&mut self, slot: u32, window: u32) {
        let extra = extra_for(window);
        let before = self
            .kernel
            .up(slot)
            .stream_window_extra
            .swap(extra, Ordering::SeqCst);
        if extra < before {
            tracing::warn!(
                conn = self.id,
                slot,
                window,
                "endpoint lowered its stream window; open streams keep the larger one"
            );
        }
        if extra <= before {
            return; // no walk of the streams map for a SETTINGS that changes nothing
        }
        for (stream, s) in self.kernel.streams_of(slot) {
            if s.flags & STREAM_WINDOW_GRANTED != 0 {
                self.send_stream_window(slot, stream, Some(extra - before));
            }
        }
    }

    /// Streams the agent routed to a slot while it was connecting: their
    /// endpoint's window is known now.
    pub(super) fn grant_streams_waiting_for(&mut self, slot: u32) {
        let waiting = self.carried.on_slot(slot);
        for stream in waiting {
            self.grant_carried_stream(slot, stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_larger_endpoint_window_needs_a_grant() {
        assert_eq!(extra_for(1 << 20), (1 << 20) - 65_535);
        assert_eq!(extra_for(65_535), 0);
        assert_eq!(extra_for(16_384), 0);
    }
}
