//! One upstream slot of a client connection, as the agent keeps it: the
//! endpoint, the socket's reader task, and the agent's share of the
//! connection-level flow control the kernel also counts (ebpf/README.md R2).

mod frame_queue;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use super::budget::Holder;
use super::pool::UpstreamTicket;

use crate::ebpf::abi::UpstreamShared;
use crate::h2::frame::DEFAULT_WINDOW;
use crate::h2::message::Message;
pub use frame_queue::{FrameQueue, Overflow};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    Connecting,
    Active,
    /// Removed from the Service: no new streams; closed once idle.
    Draining {
        since: tokio::time::Instant,
    },
    Closed,
}

pub struct Slot {
    pub endpoint: SocketAddr,
    pub state: SlotState,
    pub reader: Option<tokio::task::JoinHandle<()>>,
    /// Asks the reader for the socket back (a connection handed over).
    pub handback: Option<super::endpoint_socket::HandbackAsk>,
    pub cookie: u64,
    /// DATA bytes the agent itself forwarded to the endpoint.
    pub agent_req: u64,
    /// Connection window we granted the endpoint, in total, with what the
    /// client verdict handed it of the client's WINDOW_UPDATEs once counted
    /// (client/flow.rs, `settle_credit`).
    pub granted_resp: u64,
    /// The kernel's `credit_room` as the agent last set it (ebpf/lib/window.h).
    pub credit_room_set: u32,
    /// Endpoint DATA bytes the agent itself forwarded to the client.
    pub agent_resp: u64,
    /// The endpoint's SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_streams: u32,
    /// Failed connects in a row, for the reconnect backoff.
    pub failures: u32,
    pub closed_at: Option<tokio::time::Instant>,
    /// Closed, and its streams not yet settled (from_endpoint.rs): the slot
    /// is not reused until they are.
    pub unsettled: bool,
    /// Messages read from the endpoint's socket (the kernel counts the same).
    pub from_endpoint: u32,
    /// `from_endpoint` when the agent last asked to end a divert.
    pub release_sent: Option<u32>,
    /// Dropped for flooding (from_endpoint.rs): what it still sends is ignored.
    pub flooded: bool,
    /// Non-zero: the endpoint is dropped (it flooded, or the node's budget
    /// cut it); its reader sends GOAWAY with this code - 1 (endpoint_socket.rs).
    pub dropped: watch::Sender<u32>,
    /// This upstream's share of the node's budget (budget.rs).
    pub holder: Arc<Holder>,
    /// Client frames for this endpoint waiting for the connection or for window.
    pub to_endpoint: FrameQueue<Bytes>,
    /// Endpoint frames diverted to the agent, waiting for the client's window.
    pub to_client: FrameQueue<Message>,
    /// What counts this upstream among the node's to its endpoint, and
    /// whether it dials the endpoint or its multiplexer (pool.rs); given
    /// back when the upstream closes.
    pub ticket: Option<UpstreamTicket>,
    /// The slot whose upstream, through a multiplexer, this one replaces
    /// once it is up: the connection got a seat (client/seat.rs).
    pub replaces: Option<u32>,
}

impl Slot {
    /// `client` answers for what waits for the endpoint, `holder` for what
    /// the endpoint sent.
    pub fn connecting(endpoint: SocketAddr, client: &Arc<Holder>, holder: Arc<Holder>) -> Slot {
        Slot {
            endpoint,
            state: SlotState::Connecting,
            reader: None,
            handback: None,
            cookie: 0,
            agent_req: 0,
            granted_resp: DEFAULT_WINDOW as u64,
            credit_room_set: 0,
            agent_resp: 0,
            max_streams: u32::MAX,
            failures: 0,
            closed_at: None,
            unsettled: false,
            from_endpoint: 0,
            release_sent: None,
            flooded: false,
            dropped: watch::channel(0).0,
            to_endpoint: FrameQueue::charged_to(client.clone()),
            to_client: FrameQueue::charged_to(holder.clone()),
            holder,
            ticket: None,
            replaces: None,
        }
    }

    pub fn takes_streams(&self) -> bool {
        matches!(self.state, SlotState::Connecting | SlotState::Active)
    }

    /// Closed, and its streams settled: the slot may take a new upstream.
    pub fn is_free(&self) -> bool {
        self.state == SlotState::Closed && !self.unsettled
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, SlotState::Active | SlotState::Draining { .. })
    }

    /// Its streams go through the endpoint's multiplexer (pool.rs).
    pub fn is_shared(&self) -> bool {
        self.ticket.as_ref().is_some_and(UpstreamTicket::is_shared)
    }

    /// Takes window for `n` bytes the agent wants to send itself. The
    /// kernel's allowance (`req_limit`: what the endpoint granted, which the
    /// upstream verdict raises on each WINDOW_UPDATE, minus what the agent
    /// sent) is shared with the client verdict, which redirects DATA while
    /// `req_data` stays within it.
    pub fn take_req_window(&mut self, up: &UpstreamShared, n: u64) -> bool {
        let limit = up.req_limit.fetch_sub(n, Ordering::SeqCst).wrapping_sub(n);
        if up.req_data.load(Ordering::SeqCst) <= limit && limit < u64::MAX / 2 {
            self.agent_req += n;
            return true;
        }
        up.req_limit.fetch_add(n, Ordering::SeqCst);
        false
    }

    /// The agent has sent on every frame the kernel diverted to it and asked
    /// for the divert to end: the next frame will go direct.
    pub fn caught_up(&self, up: &UpstreamShared) -> bool {
        let last = up.last_diverted.load(Ordering::SeqCst);
        self.to_client.is_empty()
            && self
                .release_sent
                .is_some_and(|n| n.wrapping_sub(last) as i32 >= 0)
    }

    /// Window we granted the endpoint that it has not used yet.
    pub fn resp_outstanding(&self, up: &UpstreamShared) -> u64 {
        self.granted_resp
            .saturating_sub(up.resp_data.load(Ordering::SeqCst) + self.agent_resp)
    }

    pub fn close(&mut self) {
        if let Some(r) = self.reader.take() {
            r.abort();
        }
        self.handback = None;
        self.ticket = None;
        self.replaces = None;
        if self.state != SlotState::Closed {
            self.closed_at = Some(tokio::time::Instant::now());
        }
        self.state = SlotState::Closed;
    }

    /// When a closed slot's endpoint may be tried again: 100 ms after the
    /// first failure, doubling up to 1 s.
    pub fn retry_due(&self) -> bool {
        let backoff = std::time::Duration::from_millis(100 << self.failures.min(4))
            .min(std::time::Duration::from_secs(1));
        self.closed_at.is_none_or(|t| t.elapsed() >= backoff)
    }
}
