//! Frames the agent holds for one direction of one upstream, bounded.
//!
//! DATA waits here only within a window: the client's DATA within the window
//! the agent granted the client, the endpoint's within the window granted the
//! endpoint; a peer that sends more has broken flow control. Every other frame
//! type is free of flow control and waits behind a DATA frame that has no
//! window yet: an endpoint that answered with more than the client's window
//! and then sent frames of an unknown type on the same stream, without end,
//! grew the agent by each of them.

use std::collections::vec_deque::Iter;
use std::collections::VecDeque;

use bytes::Bytes;
use thiserror::Error;

use crate::h2::message::Message;

/// Bytes of frames other than DATA one queue may hold: 64 times the largest
/// header block a correct peer sends (64 KiB), so only a flood reaches it.
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

/// (DATA bytes, other bytes) of one frame.
fn sizes(frame: &[u8]) -> (usize, usize) {
    if frame.get(3) == Some(&crate::h2::frame::kind::DATA) {
        (frame.len(), 0)
    } else {
        (0, frame.len())
    }
}

pub struct FrameQueue<T> {
    frames: VecDeque<T>,
    data_bytes: usize,
    control_bytes: usize,
}

impl<T> Default for FrameQueue<T> {
    fn default() -> Self {
        FrameQueue {
            frames: VecDeque::new(),
            data_bytes: 0,
            control_bytes: 0,
        }
    }
}

impl<T: QueuedFrame> FrameQueue<T> {
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
        Ok(())
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let f = self.frames.pop_front()?;
        let (data, control) = sizes(f.frame_bytes());
        self.data_bytes -= data;
        self.control_bytes -= control;
        Some(f)
    }

    pub fn front(&self) -> Option<&T> {
        self.frames.front()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn clear(&mut self) {
        self.frames.clear();
        self.data_bytes = 0;
        self.control_bytes = 0;
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
        let fits = MAX_CONTROL_BYTES / unknown.len();
        for _ in 0..fits {
            q.push_back(unknown.clone()).unwrap();
        }
        assert_eq!(
            q.push_back(unknown.clone()),
            Err(Overflow::Control((fits + 1) * unknown.len()))
        );
        // what leaves makes room again, DATA or not
        while q.front().is_some_and(|f| f[3] == kind::DATA) {
            q.pop_front();
        }
        q.pop_front();
        assert!(q.push_back(unknown).is_ok());
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
