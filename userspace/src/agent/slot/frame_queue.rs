//! Frames the agent holds for one direction of one upstream, bounded.
//!
//! DATA waits here only within a window: the client's DATA within the window
//! the agent granted the client, the endpoint's within the window granted the
//! endpoint; a peer that sends more has broken flow control. Every other frame
//! type is free of flow control and waits behind a DATA frame that has no
//! window yet: an endpoint that answered with more than the client's window
//! and then sent frames of an unknown type on the same stream, without end,
//! grew the agent by each of them.
//!
//! What a queue holds is also charged to its holder in the node-wide budget
//! (budget.rs): the client connection for frames to an endpoint, the
//! upstream for frames to the client.

use std::collections::vec_deque::Iter;
use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

use crate::agent::budget::{Holder, MESSAGE_OVERHEAD};
use crate::h2::message::Message;

/// Bytes of frames other than DATA one queue may hold, each frame counted
/// with what it costs beyond its bytes (MESSAGE_OVERHEAD): 64 times the
/// largest header block a correct peer sends (64 KiB), or 29,000 frames of
/// 9 to 16 bytes (PRIORITY, RST_STREAM, WINDOW_UPDATE), so only a flood
/// reaches it.
pub const MAX_CONTROL_BYTES: usize = 4 << 20;
/// DATA bytes one queue may hold: twice the largest window the agent grants
/// (the client's 4 MiB); only a peer that ignores flow control reaches it.
pub const MAX_DATA_BYTES: usize = 8 << 20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Overflow {
    #[error(
        "{0} bytes of frames other than DATA wait behind flow control (limit {MAX_CONTROL_BYTES})"
    )]
    Control(usize),
    #[error("{0} DATA bytes wait, beyond any window granted (limit {MAX_DATA_BYTES})")]
    Data(usize),
}

/// A frame as the queue counts it.
pub trait QueuedFrame {
    fn frame_bytes(&self) -> &[u8];
}

impl QueuedFrame for Bytes {
    fn frame_bytes(&self) -> &[u8] {
        self
    }
}

impl QueuedFrame for Message {
    fn frame_bytes(&self) -> &[u8] {
        match self {
            Message::Frame { bytes, .. } => bytes,
            _ => &[],
        }
    }
}

/// (DATA bytes, other bytes) one frame costs.
fn sizes(frame: &[u8]) -> (usize, usize) {
    if frame.get(3) == Some(&crate::h2::frame::kind::DATA) {
        (frame.len(), 0)
    } else {
        (0, frame.len() + MESSAGE_OVERHEAD)
    }
}

pub struct FrameQueue<T> {
    frames: VecDeque<T>,
    data_bytes: usize,
    control_bytes: usize,
    holder: Option<Arc<Holder>>,
}

impl<T> Default for FrameQueue<T> {
    fn default() -> Self {
        FrameQueue {
            frames: VecDeque::new(),
            data_bytes: 0,
            control_bytes: 0,
            holder: None,
        }
    }
}

impl<T> Drop for FrameQueue<T> {
    fn drop(&mut self) {
        if let Some(h) = &self.holder {
            h.sub(self.data_bytes + self.control_bytes);
        }
    }
}

impl<T: QueuedFrame> FrameQueue<T> {
    /// An empty queue whose bytes count against `holder`'s budget.
    pub fn charged_to(holder: Arc<Holder>) -> Self {
        FrameQueue {
            frames: VecDeque::new(),
            data_bytes: 0,
            control_bytes: 0,
            holder: Some(holder),
        }
    }

    /// Queues a frame; Err when it would pass a bound (it is not queued:
    /// the sender floods or ignores flow control).
    pub fn push_back(&mut self, frame: T) -> Result<(), Overflow> {
        let (data, control) = sizes(frame.frame_bytes());
        if self.control_bytes + control > MAX_CONTROL_BYTES {
            return Err(Overflow::Control(self.control_bytes + control));
        }
        if self.data_bytes + data > MAX_DATA_BYTES {
            return Err(Overflow::Data(self.data_bytes + data));
        }
        self.control_bytes += control;
        self.data_bytes += data;
        self.frames.push_back(frame);
        if let Some(h) = &self.holder {
            h.add(data + control);
        }
        Ok(())
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let f = self.frames.pop_front()?;
        let (data, control) = sizes(f.frame_bytes());
        self.data_bytes -= data;
        self.control_bytes -= control;
        if let Some(h) = &self.holder {
            h.sub(data + control);
        }
        Some(f)
    }

    pub fn front(&self) -> Option<&T> {
        self.frames.front()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn clear(&mut self) {
        if let Some(h) = &self.holder {
            h.sub(self.data_bytes + self.control_bytes);
        }
        self.frames.clear();
        self.data_bytes = 0;
        self.control_bytes = 0;
    }

    /// Bytes this queue counts (as the budget does).
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.data_bytes + self.control_bytes
    }

    pub fn iter(&self) -> Iter<'_, T> {
        self.frames.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::frame::{kind, FrameHeader};
    use bytes::BytesMut;

    fn frame(kind: u8, len: usize) -> Bytes {
        let mut b = BytesMut::new();
        FrameHeader {
            len: len as u32,
            kind,
            flags: 0,
            stream: 1,
        }
        .encode(&mut b);
        b.extend_from_slice(&vec![0u8; len]);
        b.freeze()
    }

    #[test]
    fn frames_other_than_data_have_their_own_bound() {
        let mut q = FrameQueue::<Bytes>::default();
        for _ in 0..400 {
            q.push_back(frame(kind::DATA, 16_384)).unwrap();
        }
        let unknown = frame(0xfa, 16_000);
        let cost = unknown.len() + MESSAGE_OVERHEAD;
        let fits = MAX_CONTROL_BYTES / cost;
        for _ in 0..fits {
            q.push_back(unknown.clone()).unwrap();
        }
        assert_eq!(
            q.push_back(unknown.clone()),
            Err(Overflow::Control((fits + 1) * cost))
        );
        // what leaves makes room again, DATA or not
        while q.front().is_some_and(|f| f[3] == kind::DATA) {
            q.pop_front();
        }
        q.pop_front();
        assert!(q.push_back(unknown).is_ok());
    }

    #[test]
    fn small_frames_count_what_they_cost() {
        // a PRIORITY frame is 14 bytes; 4 MiB of them would be 300,000
        // messages and several times 4 MiB of memory
        let mut q = FrameQueue::<Bytes>::default();
        let priority = frame(kind::PRIORITY, 5);
        let mut n = 0;
        while q.push_back(priority.clone()).is_ok() {
            n += 1;
        }
        assert_eq!(n, MAX_CONTROL_BYTES / (14 + MESSAGE_OVERHEAD));
    }

    #[test]
    fn the_budget_sees_what_the_queue_holds() {
        let budget = crate::agent::budget::Budget::new(1 << 30);
        let side = crate::agent::budget::Side::Client { conn: 1 };
        let holder = budget.holder(side, Default::default());
        let mut q = FrameQueue::<Bytes>::charged_to(holder.clone());
        q.push_back(frame(kind::DATA, 1000)).unwrap();
        q.push_back(frame(kind::HEADERS, 100)).unwrap();
        assert_eq!(holder.bytes(), 1009 + 109 + MESSAGE_OVERHEAD);
        assert_eq!(holder.bytes(), q.queued());
        q.pop_front();
        assert_eq!(holder.bytes(), 109 + MESSAGE_OVERHEAD);
        q.clear();
        assert_eq!(holder.bytes(), 0);
        q.push_back(frame(kind::DATA, 10)).unwrap();
        drop(q);
        assert_eq!(budget.status().queued_bytes, 0);
    }

    #[test]
    fn data_beyond_any_window_is_refused() {
        let mut q = FrameQueue::<Bytes>::default();
        let data = frame(kind::DATA, 16_384);
        let fits = MAX_DATA_BYTES / data.len();
        for _ in 0..fits {
            q.push_back(data.clone()).unwrap();
        }
        assert!(matches!(q.push_back(data), Err(Overflow::Data(_))));
        assert_eq!(q.control_bytes, 0);
        q.clear();
        assert!(q.is_empty() && q.data_bytes == 0);
    }
}
