//! One endpoint's multiplexer: an HTTP/2 server on loopback whose local
//! connections are client connections' upstreams (pool.rs), and at most
//! `shared` HTTP/2 connections to the endpoint that carry their streams.
//!
//! The `h2` crate is both ends: it decodes each local connection's header
//! blocks (an error there ends that local connection only), numbers the
//! streams of each shared connection as it sends them, and keeps both
//! sides' flow control; a stream's DATA is taken from one side only as the
//! other has room, so what waits here is bounded by the windows below.

mod cursor;
mod forward;
mod frame_watch;
mod local_watch;
mod shared_conns;
#[cfg(test)]
mod tests;
mod watched;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::Request;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::PoolLimits;
use crate::agent::budget::{Budget, Holder, Side};
use crate::h2::header_block::MAX_HEADER_LIST_SIZE;
use forward::{download, forward_request};
use shared_conns::{AbortOnDrop, SharedConns};

/// Streams a local connection may have open: the client connection's task
/// holds the rest (client/held.rs), as for any endpoint.
const LOCAL_MAX_STREAMS: u32 = 256;
/// The windows of a shared connection towards the endpoint: what one shared
/// connection's responses may hold in the agent at most.
const SHARED_STREAM_WINDOW: u32 = 256 * 1024;
const SHARED_CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;

/// What the multiplexer holds and did, for status and metrics.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MuxCounts {
    /// Shared connections to the endpoint now, and since it started.
    pub connections: usize,
    pub connections_opened: u64,
    /// Local connections (client connections' upstreams) now.
    pub local: usize,
    /// Streams carried, and of those refused before the endpoint had them.
    pub streams: u64,
    pub refused: u64,
    /// Streams that waited for room: every shared connection was at the
    /// endpoint's SETTINGS_MAX_CONCURRENT_STREAMS and no more could open.
    /// (Default: a predecessor's status before it counted them.)
    #[serde(default)]
    pub held: u64,
}

#[derive(Debug, Default)]
pub(super) struct Stats {
    connections: AtomicUsize,
    connections_opened: AtomicU64,
    local: AtomicUsize,
    streams: AtomicU64,
    refused: AtomicU64,
    held: AtomicU64,
}

#[derive(Debug)]
pub struct Mux {
    addr: SocketAddr,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl Drop for Mux {
    fn drop(&mut self) {
        // its listener, its local connections' tasks and the shared
        // connections go with it
        self.task.abort();
    }
}

impl Mux {
    /// Listens on an ephemeral loopback port for `endpoint`'s local connections.
    /// Its local connections are charged to `budget` for what they hold.
    pub fn start(
        endpoint: SocketAddr,
        limits: PoolLimits,
        budget: Arc<Budget>,
    ) -> std::io::Result<Arc<Mux>> {
        // Every connection of the node past the dedicated ones connects
        // here at once after a rollout: 976 to each of 5 endpoints for 1,000
        // clients (scale::thousand_connections_200k_requests). On std's
        // backlog of 128 the accept queue overflowed 4,957 times, handshakes
        // timed out after 3 s and their streams were refused.
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind((Ipv4Addr::LOCALHOST, 0).into())?;
        let listener = socket.listen(crate::agent::drain::LISTEN_BACKLOG)?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(SharedConns {
            endpoint,
            limits,
            conns: Mutex::new(Vec::new()),
            opening: AtomicUsize::new(0),
            changed: Notify::new(),
            stats: stats.clone(),
            lost: tokio::sync::watch::channel(0).0,
            budget,
        });
        let task = tokio::spawn(accept_local(listener, shared));
        Ok(Arc::new(Mux { addr, stats, task }))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn counts(&self) -> MuxCounts {
        let s = &self.stats;
        MuxCounts {
            connections: s.connections.load(Ordering::Relaxed),
            connections_opened: s.connections_opened.load(Ordering::Relaxed),
            local: s.local.load(Ordering::Relaxed),
            streams: s.streams.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            held: s.held.load(Ordering::Relaxed),
        }
    }
}

/// Local connections' tasks end with this one (they are in its set).
async fn accept_local(listener: TcpListener, shared: Arc<SharedConns>) {
    let mut locals = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((io, _)) => {
                    let _ = io.set_nodelay(true);
                    locals.spawn(serve_local(io, shared.clone()));
                }
                Err(e) => {
                    tracing::warn!(endpoint = %shared.endpoint, error = %e, "multiplexer: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = locals.join_next() => {}
        }
    }
}

async fn serve_local(io: TcpStream, shared: Arc<SharedConns>) {
    shared.stats.local.fetch_add(1, Ordering::Relaxed);
    let _local = Decrement(&shared.stats.local);
    // Up only while the endpoint is: the handshake waits for a shared
    // connection (at most the connect timeout), so a client connection
    // whose upstream this is fails to connect while the endpoint is down
    // and dials again with backoff, as it would the endpoint itself.
    let mut lost = shared.lost.subscribe();
    if let Err(e) = shared.pick().await {
        tracing::debug!(endpoint = %shared.endpoint, error = %format!("{e:#}"), "multiplexer: local connection refused, the endpoint is not reachable");
        return;
    }
    // what was lost before this connection came up is not its concern
    lost.borrow_and_update();
    // What its streams' bodies hold here, both ways, counts against the
    // node's --max-queued-bytes like a connection's own upstream's queues.
    let wake = Arc::new(Notify::new());
    let holder = (shared.budget).holder(
        Side::Multiplexer {
            endpoint: shared.endpoint,
        },
        wake.clone(),
    );
    let io = local_watch::LocalWatch::wrap(io);
    let mut conn = match h2::server::Builder::new()
        .max_concurrent_streams(LOCAL_MAX_STREAMS)
        // what the agent carries for clients at all: a list decodes into
        // memory here, so it must not be the h2 crate's 16 MiB
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .handshake::<_, Bytes>(io)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(endpoint = %shared.endpoint, error = %e, "multiplexer: local handshake failed");
            return;
        }
    };
    // The streams' tasks end with the connection (a client connection's
    // upstream closed: its streams are over).
    let mut streams = tokio::task::JoinSet::new();
    let mut going = false;
    let mut cut = false;
    loop {
        tokio::select! {
            // the budget picked this connection to go: its client
            // connection loses this upstream, as it would its own
            () = wake.notified(), if !cut => {
                if holder.is_cut() {
                    cut = true;
                    tracing::warn!(endpoint = %shared.endpoint, bytes = holder.bytes(), "multiplexer: a local connection over the node's budget is cut (ENHANCE_YOUR_CALM)");
                    conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                }
            }
            // the endpoint was lost since this connection came up: it goes
            // away; its streams finish (graceful: GOAWAY, then the last id)
            Ok(()) = lost.changed(), if !going => {
                going = true;
                conn.graceful_shutdown();
            }
            next = conn.accept() => match next {
                Some(Ok((request, respond))) => {
                    streams.spawn(carry(request, respond, shared.clone(), holder.clone()));
                }
                Some(Err(e)) => {
                    tracing::debug!(endpoint = %shared.endpoint, error = %e, "multiplexer: local connection failed");
                    break;
                }
                None => break,
            },
            Some(_) = streams.join_next() => {}
        }
    }
}

struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Shared connections a stream is offered to before it is refused.
const SEND_ATTEMPTS: usize = 3;

/// The request as it goes out on a shared connection: the local one's
/// pseudo-headers and fields (h2 checks them as it encodes).
fn outgoing(parts: &http::request::Parts) -> Request<()> {
    let mut r = Request::new(());
    *r.method_mut() = parts.method.clone();
    *r.uri_mut() = parts.uri.clone();
    *r.version_mut() = parts.version;
    *r.headers_mut() = parts.headers.clone();
    r
}

/// One stream of a local connection, carried on a shared connection.
async fn carry(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    shared: Arc<SharedConns>,
    holder: Arc<Holder>,
) {
    shared.stats.streams.fetch_add(1, Ordering::Relaxed);
    let refuse = |respond: &mut SendResponse<Bytes>| {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        respond.send_reset(Reason::REFUSED_STREAM);
    };
    let (parts, body) = request.into_parts();
    let end = body.is_end_stream();
    // A connection that takes no new stream (a GOAWAY came) is left for
    // another; the stream was not sent, so trying again is safe.
    let mut sent = None;
    let mut held = false;
    for _ in 0..SEND_ATTEMPTS {
        let picked = match shared.pick().await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(endpoint = %shared.endpoint, error = %format!("{e:#}"), "multiplexer: no shared connection");
                break;
            }
        };
        if picked.waits && !held {
            held = true;
            shared.stats.held.fetch_add(1, Ordering::Relaxed);
        }
        let tried = match picked.send.ready().await {
            Ok(mut send) => send.send_request(outgoing(&parts), end),
            Err(e) => Err(e),
        };
        match tried {
            Ok(r) => {
                sent = Some((r, picked.active));
                break;
            }
            Err(e) => {
                tracing::debug!(endpoint = %shared.endpoint, error = %e, "multiplexer: a shared connection takes no new stream");
                picked.going_away.store(true, Ordering::Relaxed);
                shared.lost_if_none_live();
            }
        }
    }
    let Some(((response, upload), _active)) = sent else {
        return refuse(&mut respond);
    };
    let upload =
        (!end).then(|| AbortOnDrop(tokio::spawn(forward_request(body, upload, holder.clone()))));
    download(response, respond, &holder).await;
    // the response is over: whatever of the request is still on its way
    // is not wanted (its task's end resets the stream if it is still open)
    drop(upload);
}
