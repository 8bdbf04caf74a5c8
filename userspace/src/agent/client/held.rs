//! Streams waiting for an endpoint with room. An endpoint's
//! SETTINGS_MAX_CONCURRENT_STREAMS is a hard limit (it refuses or, once
//! the limit is acknowledged, fails the connection), and a client may open
//! streams before it has read the limit we advertise. A new stream that no
//! endpoint has room for waits here, as a proxy's pending request would;
//! every newer stream waits behind it, because an endpoint must see stream
//! ids in increasing order: the kernel sets CONN_HOLD when its pick fails
//! and sends new streams to the agent until the agent lets go
//! (ROUTE_ACT_UNHOLD, behind the frames it sent, once it has read every
//! message the kernel passed).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::kernel::ConnKernel;
use crate::ebpf::abi::{CONN_HOLD, CONN_UNHOLD};
use crate::h2::frame::data_len;
use crate::h2::frame::{self, error_code, kind, FrameHeader};

/// Waiting streams per connection, beyond which new streams are refused
/// (Envoy's default max_pending_requests is 1024 too).
pub(super) const MAX_HELD_STREAMS: usize = 1024;
/// How long the first streams of a connection wait for upstreams still connecting.
pub(super) const SETTLE_WAIT: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub(super) struct HeldStreams {
    /// Each waiting stream's frames, oldest stream first.
    waiting: BTreeMap<u32, Vec<Bytes>>,
    /// `consumed` when the agent last let the kernel go.
    unhold_sent: Option<u32>,
    /// When the connection started, and whether its first upstreams are settled.
    started: Instant,
    settled: bool,
}

impl HeldStreams {
    pub fn new(started: Instant) -> Self {
        HeldStreams {
            waiting: BTreeMap::new(),
            unhold_sent: None,
            started,
            settled: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn contains(&self, stream: u32) -> bool {
        self.waiting.contains_key(&stream)
    }

    /// Streams that come before a new connection's upstreams are all up
    /// wait until they are (a connect takes a millisecond in a cluster),
    /// or for SETTLE_WAIT at most, so they spread over all of them. Once
    /// settled, a connection stays settled.
    pub fn settling(&mut self, connecting: bool, now: Instant) -> bool {
        if !self.settled {
            self.settled = !connecting || now.duration_since(self.started) >= SETTLE_WAIT;
        }
        !self.settled
    }

    /// Whether one more stream may wait.
    pub fn has_room(&self) -> bool {
        self.waiting.len() < MAX_HELD_STREAMS
    }

    /// A new stream waits; the kernel is told to send every newer one here.
    pub fn hold(&mut self, stream: u32, headers: Bytes, kernel: &impl ConnKernel) {
        self.waiting.insert(stream, vec![headers]);
        // Before the gate opens the kernel opens no stream anyway; the flag
        // makes it report closed streams (EV_STREAM_CLOSED) so waiting
        // streams go as soon as there is room.
        let flags = &kernel.conn().flags;
        flags.fetch_and(!CONN_UNHOLD, Ordering::SeqCst);
        flags.fetch_or(CONN_HOLD, Ordering::SeqCst);
    }

    /// A later frame of a waiting stream waits with it; a reset ends it
    /// here. True when the frame ended the stream.
    pub fn add(&mut self, header: &FrameHeader, bytes: Bytes) -> bool {
        if header.kind == kind::RST_STREAM {
            return self.waiting.remove(&header.stream).is_some();
        }
        if let Some(frames) = self.waiting.get_mut(&header.stream) {
            frames.push(bytes);
        }
        false
    }

    /// Waiting DATA bytes, counted against the window the client gets.
    pub fn data_bytes(&self) -> u64 {
        self.waiting.values().flatten().map(|f| data_len(f)).sum()
    }

    /// The oldest waiting stream.
    pub fn oldest(&self) -> Option<u32> {
        self.waiting.keys().next().copied()
    }

    /// Takes a stream's frames out to send them to an endpoint.
    pub fn take(&mut self, stream: u32) -> Vec<Bytes> {
        self.waiting.remove(&stream).unwrap_or_default()
    }

    /// No endpoint is left to wait for: every waiting stream is refused
    /// (REFUSED_STREAM: the client may retry it elsewhere).
    pub fn refuse_all(&mut self, out: &mut BytesMut) {
        for stream in std::mem::take(&mut self.waiting).into_keys() {
            frame::rst_stream(out, stream, error_code::REFUSED_STREAM);
        }
    }

    /// Lets the kernel open streams again once nothing waits: once per
    /// message count, and only if the kernel holds.
    pub fn release(&mut self, kernel: &impl ConnKernel, consumed: u32) {
        if !self.waiting.is_empty() {
            return;
        }
        let held_by_kernel = kernel.conn().flags.load(Ordering::SeqCst) & CONN_HOLD != 0;
        if held_by_kernel && self.unhold_sent != Some(consumed) {
            self.unhold_sent = Some(consumed);
            kernel.unhold(consumed);
        }
    }
}

/// A connection handed over holds no stream (its quiet point): what is
/// carried across is only when the kernel was last let go.
impl HeldStreams {
    pub fn unhold_sent(&self) -> Option<u32> {
        self.unhold_sent
    }

    pub fn resumed(unhold_sent: Option<u32>, now: Instant) -> Self {
        HeldStreams {
            waiting: BTreeMap::new(),
            unhold_sent,
            started: now,
            settled: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernel::fake::{FakeKernel, Record};
    use super::*;
    use crate::h2::frame::flag;

    fn frame_of(kind: u8, flags: u8, stream: u32, len: usize) -> (FrameHeader, Bytes) {
        let header = FrameHeader {
            len: len as u32,
            kind,
            flags,
            stream,
        };
        let mut out = BytesMut::new();
        header.encode(&mut out);
        out.extend_from_slice(&vec![0; len]);
        (header, out.freeze())
    }

    fn headers(stream: u32) -> Bytes {
        frame_of(kind::HEADERS, flag::END_HEADERS, stream, 0).1
    }

    fn data(stream: u32, len: usize) -> (FrameHeader, Bytes) {
        frame_of(kind::DATA, 0, stream, len)
    }

    #[test]
    fn holding_sets_the_kernels_hold_and_release_lets_go_once() {
        let k = FakeKernel::default();
        k.conn.flags.store(CONN_UNHOLD, Ordering::SeqCst);
        let mut h = HeldStreams::new(Instant::now());
        h.hold(1, headers(1), &k);
        let flags = k.conn.flags.load(Ordering::SeqCst);
        assert_eq!(flags & (CONN_HOLD | CONN_UNHOLD), CONN_HOLD);
        // a stream still waits: the kernel keeps holding
        h.release(&k, 3);
        assert_eq!(k.take_records(), []);
        assert_eq!(h.take(1).len(), 1);
        h.release(&k, 3);
        h.release(&k, 3);
        assert_eq!(k.take_records(), [Record::Unhold { consumed: 3 }]);
        // more messages read since: the kernel may have held again
        h.release(&k, 5);
        assert_eq!(k.take_records(), [Record::Unhold { consumed: 5 }]);
    }

    #[test]
    fn no_unhold_when_the_kernel_holds_nothing() {
        let k = FakeKernel::default();
        let mut h = HeldStreams::new(Instant::now());
        h.release(&k, 1);
        assert_eq!(k.take_records(), []);
    }

    #[test]
    fn streams_leave_oldest_first_with_their_frames_and_data_counts() {
        let k = FakeKernel::default();
        let mut h = HeldStreams::new(Instant::now());
        h.hold(5, headers(5), &k);
        h.hold(3, headers(3), &k);
        let (hd, body) = data(3, 100);
        assert!(!h.add(&hd, body));
        let (hd, body) = data(7, 50); // not waiting: not kept
        assert!(!h.add(&hd, body));
        assert_eq!(h.data_bytes(), 100);
        assert_eq!(h.oldest(), Some(3));
        assert_eq!(h.take(3).len(), 2);
        assert_eq!(h.oldest(), Some(5));
        assert_eq!(h.data_bytes(), 0);
    }

    #[test]
    fn a_reset_ends_a_waiting_stream() {
        let k = FakeKernel::default();
        let mut h = HeldStreams::new(Instant::now());
        h.hold(1, headers(1), &k);
        let mut out = BytesMut::new();
        frame::rst_stream(&mut out, 1, error_code::CANCEL);
        let rst = out.freeze();
        let header = FrameHeader::parse(&rst).expect("a frame");
        assert!(h.add(&header, rst.clone()));
        assert!(h.is_empty());
        assert!(!h.add(&header, rst), "nothing left to end");
    }

    #[test]
    fn refused_streams_get_refused_stream_and_the_queue_is_bounded() {
        let k = FakeKernel::default();
        let mut h = HeldStreams::new(Instant::now());
        for i in 0..MAX_HELD_STREAMS as u32 {
            assert!(h.has_room());
            h.hold(2 * i + 1, headers(2 * i + 1), &k);
        }
        assert!(!h.has_room());
        let mut out = BytesMut::new();
        h.refuse_all(&mut out);
        assert!(h.is_empty());
        assert_eq!(out.len(), MAX_HELD_STREAMS * 13);
        let first = FrameHeader::parse(&out).expect("a frame");
        assert_eq!((first.kind, first.stream), (kind::RST_STREAM, 1));
        assert_eq!(out[9..13], error_code::REFUSED_STREAM.to_be_bytes());
    }

    #[test]
    fn settling_ends_when_upstreams_are_up_or_after_the_wait() {
        let t0 = Instant::now();
        let mut h = HeldStreams::new(t0);
        assert!(h.settling(true, t0));
        assert!(h.settling(true, t0 + SETTLE_WAIT / 2));
        assert!(!h.settling(true, t0 + SETTLE_WAIT));
        // settled for good, even if an upstream connects again later
        assert!(!h.settling(true, t0));
        let mut h = HeldStreams::new(t0);
        assert!(!h.settling(false, t0));
    }
}
