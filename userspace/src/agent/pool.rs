//! Upstream connections shared by the client connections of a node.
//!
//! A client connection has its own upstream to every endpoint it balances
//! over (ebpf/README.md, R5): the kernel numbers the streams it opens there
//! one after another, and one client's bad frame ends its own upstream
//! only. A node with many client connections then holds as many
//! connections to each endpoint (200 client connections, 200 to each
//! endpoint: README, Benchmark), and a pod behind many nodes accepts their
//! product. So each endpoint gets at most `dedicated` such upstreams from
//! the node; past that, a client connection's upstream to it is a loopback
//! connection to the endpoint's *multiplexer* (mux.rs): an HTTP/2 server in
//! the agent that carries the streams of all its local connections over at
//! most `shared` connections to the endpoint, as a proxy's pool does. Which
//! client connections hold the dedicated ones follows their load, not the
//! order they came in (seats.rs).
//!
//! The client connection's task and the kernel treat that upstream like any
//! other (balancing, flow control, holding streams, draining). The
//! multiplexer keeps what a shared connection needs that the kernel's
//! per-connection numbering gives for free (ebpf/README.md, R5): it decodes
//! every header block before it goes out (a client's undecodable block ends
//! that client's loopback connection, never the shared one), numbers the
//! streams of a shared connection in the order it sends them, and keeps the
//! flow control of each shared connection and of each stream.
//!
//! What sharing costs: a stream on a shared upstream crosses the agent in
//! user space both ways, an HTTP/2 proxy's work, beside the kernel's
//! hand-offs to and from the loopback connection. Only client connections
//! past the first `dedicated` to an endpoint pay it.

mod mux;
mod seats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use seats::{Promotion, Seats};

pub use mux::MuxCounts;

/// How many connections a node holds to one endpoint, at most: `dedicated`
/// client connections' own upstreams, then `shared` connections carrying
/// the streams of every other client connection's upstream to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    pub dedicated: usize,
    pub shared: usize,
    /// An endpoint's connect and HTTP/2 handshake (`--connect-timeout`).
    pub connect_timeout: Duration,
}

/// Where an upstream connects: the endpoint itself, or its multiplexer.
/// Kept with the upstream for as long as it exists: it is what counts it.
#[derive(Debug)]
pub struct UpstreamTicket {
    endpoint: SocketAddr,
    kind: TicketKind,
    pools: Weak<Pools>,
    id: u64,
    /// A seat's holder that gave it up for a busy connection (seats.rs).
    yielded: bool,
    /// An upstream to the multiplexer that waits for a seat.
    waiting: bool,
}

#[derive(Debug)]
enum TicketKind {
    Dedicated,
    Shared {
        mux: Arc<mux::Mux>,
    },
    /// Handed over through the multiplexer of the agent before this one,
    /// which counts it and keeps it until it closes: nothing here.
    Inherited,
}

impl UpstreamTicket {
    /// The address the upstream dials.
    pub fn dial(&self) -> SocketAddr {
        match &self.kind {
            TicketKind::Dedicated | TicketKind::Inherited => self.endpoint,
            TicketKind::Shared { mux } => mux.addr(),
        }
    }

    /// Whether the upstream's streams go through a multiplexer (this
    /// agent's, or one it inherited the upstream from).
    pub fn is_shared(&self) -> bool {
        matches!(self.kind, TicketKind::Shared { .. } | TicketKind::Inherited)
    }
}

impl UpstreamTicket {
    /// A seat's holder: whether a busy connection waits for a seat that no
    /// holder has given up yet (seats.rs).
    pub fn seat_wanted(&self) -> bool {
        matches!(self.kind, TicketKind::Dedicated)
            && !self.yielded
            && self.with_pool(|e| e.seats.wanted()).unwrap_or(false)
    }

    /// A seat's idle holder offers it: true when it is to give it up (drain
    /// its upstream and dial the multiplexer instead).
    pub fn give_up(&mut self) -> bool {
        if !matches!(self.kind, TicketKind::Dedicated) || self.yielded {
            return false;
        }
        self.yielded = self.with_pool(|e| e.seats.give_up()).unwrap_or(false);
        self.yielded
    }

    /// An upstream to the multiplexer whose connection is no longer busy.
    pub fn unwant(&mut self) {
        if std::mem::take(&mut self.waiting) {
            let id = self.id;
            self.with_pool(|e| e.seats.unwant(id));
        }
    }

    pub fn waits_for_seat(&self) -> bool {
        self.waiting
    }

    fn with_pool<R>(&self, f: impl FnOnce(&mut EndpointPool) -> R) -> Option<R> {
        let pools = self.pools.upgrade()?;
        let mut endpoints = lock(&pools.endpoints);
        endpoints.get_mut(&self.endpoint).map(f)
    }
}

impl Drop for UpstreamTicket {
    fn drop(&mut self) {
        let Some(pools) = self.pools.upgrade() else {
            return;
        };
        let mut endpoints = lock(&pools.endpoints);
        let Some(e) = endpoints.get_mut(&self.endpoint) else {
            return;
        };
        match &self.kind {
            TicketKind::Dedicated => e.seats.release(self.id, self.yielded),
            TicketKind::Shared { .. } => {
                e.shared_tickets = e.shared_tickets.saturating_sub(1);
                e.seats.unwant(self.id);
            }
            TicketKind::Inherited => return,
        }
        // A multiplexer with no upstream left stops: its shared connections
        // close with it. The next client connection past the limit starts
        // another.
        if e.seats.held() == 0 && e.shared_tickets == 0 {
            endpoints.remove(&self.endpoint);
        }
    }
}

#[derive(Debug, Default)]
struct EndpointPool {
    seats: Seats,
    shared_tickets: usize,
    mux: Option<Arc<mux::Mux>>,
}

/// Every endpoint's count of upstreams and its multiplexer, node-wide
/// (every generation of client connections, adopted ones included).
#[derive(Debug)]
pub struct Pools {
    limits: PoolLimits,
    /// The node's bound on queued bytes, which the multiplexers' local
    /// connections are charged to (mux.rs).
    budget: Arc<crate::agent::budget::Budget>,
    endpoints: Mutex<HashMap<SocketAddr, EndpointPool>>,
    /// Multiplexers started, for the metrics.
    started: AtomicUsize,
    /// Tickets of upstreams handed over to the successor (`park`).
    parked: Mutex<Vec<UpstreamTicket>>,
    next_ticket: AtomicU64,
}

/// One endpoint's connections from this node, for status and metrics.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointConnections {
    pub endpoint: String,
    /// Client connections' own upstreams to it.
    pub dedicated: usize,
    /// Client connections' upstreams to its multiplexer.
    pub via_shared: usize,
    /// The multiplexer's connections to it, and what it carried.
    pub shared: MuxCounts,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pools {
    pub fn new(limits: PoolLimits, budget: Arc<crate::agent::budget::Budget>) -> Arc<Pools> {
        Arc::new(Pools {
            limits,
            budget,
            endpoints: Mutex::new(HashMap::new()),
            started: AtomicUsize::new(0),
            parked: Mutex::new(Vec::new()),
            next_ticket: AtomicU64::new(1),
        })
    }

    pub fn limits(&self) -> PoolLimits {
        self.limits
    }

    fn new_ticket(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        kind: TicketKind,
        id: u64,
    ) -> UpstreamTicket {
        UpstreamTicket {
            endpoint,
            kind,
            pools: Arc::downgrade(self),
            id,
            yielded: false,
            waiting: false,
        }
    }

    /// The ticket of a new upstream to `endpoint`: its own connection while
    /// the endpoint has a seat free that no busy connection waits for
    /// (seats.rs), else one to the endpoint's multiplexer, started here if
    /// it runs not yet (which needs a tokio runtime). `shared == 0` turns
    /// sharing off: every upstream is its own. `wake`: how to ask the
    /// upstream's connection to look whether it can give its seat up.
    pub fn ticket(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        wake: Option<&Arc<Notify>>,
    ) -> std::io::Result<UpstreamTicket> {
        let id = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let mut endpoints = lock(&self.endpoints);
        let e = endpoints.entry(endpoint).or_default();
        let kind = if self.limits.shared == 0 {
            e.seats.take_adopted(id, None);
            TicketKind::Dedicated
        } else if e.seats.take_fresh(self.limits.dedicated, id, wake) {
            TicketKind::Dedicated
        } else {
            let mux = match &e.mux {
                Some(m) => m.clone(),
                None => {
                    let m = mux::Mux::start(endpoint, self.limits, self.budget.clone())?;
                    self.started.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%endpoint, mux = %m.addr(), dedicated = e.seats.held(),
                        shared = self.limits.shared, "upstreams to the endpoint shared from now on");
                    e.mux = Some(m.clone());
                    m
                }
            };
            e.shared_tickets += 1;
            TicketKind::Shared { mux }
        };
        drop(endpoints);
        Ok(self.new_ticket(endpoint, kind, id))
    }

    /// `waiting`, an upstream to the multiplexer whose connection is busy,
    /// asks for a seat: the ticket of its successor when one is free, else
    /// none, and it waits (the holders are asked to look at its first ask).
    pub fn promote(
        self: &Arc<Self>,
        waiting: &mut UpstreamTicket,
        wake: Option<&Arc<Notify>>,
    ) -> Option<UpstreamTicket> {
        if !matches!(waiting.kind, TicketKind::Shared { .. }) {
            return None;
        }
        let id = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let mut endpoints = lock(&self.endpoints);
        let e = endpoints.get_mut(&waiting.endpoint)?;
        match e.seats.promote(self.limits.dedicated, waiting.id, id, wake) {
            Promotion::Seated => {
                waiting.waiting = false;
                drop(endpoints);
                Some(self.new_ticket(waiting.endpoint, TicketKind::Dedicated, id))
            }
            Promotion::Waiting { first } => {
                waiting.waiting = true;
                if first {
                    e.seats.holders().for_each(|h| h.notify_one());
                }
                None
            }
        }
    }

    /// An upstream handed over by the agent before this one: its own
    /// connection to the endpoint, counted even past `dedicated` (it exists).
    pub fn adopted(self: &Arc<Self>, endpoint: SocketAddr) -> UpstreamTicket {
        let id = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        (lock(&self.endpoints).entry(endpoint).or_default().seats).take_adopted(id, None);
        self.new_ticket(endpoint, TicketKind::Dedicated, id)
    }

    /// An upstream handed over by the agent before this one whose peer is
    /// that agent's multiplexer (which it keeps until the upstream closes):
    /// counted by neither this node's own nor its shared connections.
    pub fn inherited(endpoint: SocketAddr) -> UpstreamTicket {
        UpstreamTicket {
            endpoint,
            kind: TicketKind::Inherited,
            pools: Weak::new(),
            id: 0,
            yielded: false,
            waiting: false,
        }
    }

    /// Keeps a shared upstream's ticket, and with it the endpoint's
    /// multiplexer, after its client connection went to the successor:
    /// the successor drains the upstream, whose streams this multiplexer
    /// carries until then. The agent waits for `local_connections` to
    /// reach 0 before it exits (drain.rs).
    pub fn park(&self, ticket: UpstreamTicket) {
        lock(&self.parked).push(ticket);
    }

    /// Local connections into this agent's multiplexers: upstreams of
    /// client connections, its own or handed over.
    pub fn local_connections(&self) -> usize {
        (lock(&self.endpoints).values())
            .filter_map(|e| e.mux.as_ref())
            .map(|m| m.counts().local)
            .sum()
    }

    /// Every endpoint with an upstream from this node, in address order.
    pub fn connections(&self) -> Vec<EndpointConnections> {
        let endpoints = lock(&self.endpoints);
        let mut out: Vec<EndpointConnections> = (endpoints.iter())
            .map(|(addr, e)| EndpointConnections {
                endpoint: addr.to_string(),
                dedicated: e.seats.held(),
                via_shared: e.shared_tickets,
                shared: e.mux.as_ref().map(|m| m.counts()).unwrap_or_default(),
            })
            .collect();
        out.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        out
    }

    /// Multiplexers started since the agent started.
    pub fn started(&self) -> usize {
        self.started.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
