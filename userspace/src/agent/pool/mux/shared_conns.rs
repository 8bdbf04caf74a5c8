//! The shared connections to one endpoint: picked per stream, opened up
//! to the limit, dropped when they end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{PoolLimits, Stats, SHARED_CONNECTION_WINDOW, SHARED_STREAM_WINDOW};

/// The shared connections to one endpoint.
pub(super) struct SharedConns {
    pub(super) endpoint: SocketAddr,
    pub(super) limits: PoolLimits,
    pub(super) conns: Mutex<Vec<SharedConn>>,
    /// Connections being opened, which count against `limits.shared`.
    pub(super) opening: AtomicUsize,
    /// A connection opened, failed to open, or closed.
    pub(super) changed: Notify,
    pub(super) stats: Arc<Stats>,
}

pub(super) struct SharedConn {
    send: SendRequest<Bytes>,
    /// Streams of ours open on it.
    active: Arc<AtomicUsize>,
    /// It took no new stream (a GOAWAY came): its streams finish on it,
    /// new ones go elsewhere, and it no longer counts against the limit.
    going_away: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
    _driver: AbortOnDrop,
}

/// A shared connection picked for a stream.
pub(super) struct Picked {
    pub(super) send: SendRequest<Bytes>,
    /// Held for as long as the stream is open.
    pub(super) active: Active,
    pub(super) going_away: Arc<AtomicBool>,
}

pub(super) struct AbortOnDrop(pub(super) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A stream's place on a shared connection, given back when it ends.
pub(super) struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Choice {
    Use(Picked),
    Open,
    Wait,
}

impl SharedConns {
    /// A shared connection for a new stream: the one with the fewest of our
    /// streams among those below the endpoint's SETTINGS_MAX_CONCURRENT_STREAMS;
    /// a new one while there are fewer than `shared`; else the least busy,
    /// where the stream waits for room (h2's `ready`).
    pub(super) async fn pick(self: &Arc<Self>) -> anyhow::Result<Picked> {
        loop {
            let choice = {
                let mut conns = lock(&self.conns);
                conns.retain(|c| !c.closed.load(Ordering::Relaxed));
                let load = |c: &SharedConn| c.active.load(Ordering::Relaxed);
                let live: Vec<&SharedConn> = (conns.iter())
                    .filter(|c| !c.going_away.load(Ordering::Relaxed))
                    .collect();
                let room = (live.iter())
                    .filter(|c| load(c) < c.send.current_max_send_streams())
                    .min_by_key(|c| load(c));
                let opening = self.opening.load(Ordering::Relaxed);
                if let Some(c) = room {
                    Choice::Use(c.picked())
                } else if live.len() + opening < self.limits.shared.max(1) {
                    self.opening.fetch_add(1, Ordering::Relaxed);
                    Choice::Open
                } else if let Some(c) = live.iter().min_by_key(|c| load(c)) {
                    Choice::Use(c.picked())
                } else {
                    Choice::Wait
                }
            };
            match choice {
                Choice::Use(picked) => return Ok(picked),
                Choice::Open => {
                    let opened = self.open().await;
                    self.opening.fetch_sub(1, Ordering::Relaxed);
                    self.changed.notify_waiters();
                    let conn = opened?;
                    lock(&self.conns).push(conn);
                }
                Choice::Wait => {
                    let changed = self.changed.notified();
                    if self.opening.load(Ordering::Relaxed) == 0 {
                        continue;
                    }
                    changed.await;
                }
            }
        }
    }

    async fn open(self: &Arc<Self>) -> anyhow::Result<SharedConn> {
        use anyhow::Context;
        let endpoint = self.endpoint;
        let limit = self.limits.connect_timeout;
        let (send, conn) = tokio::time::timeout(limit, async {
            let io = crate::ebpf::own_socks::connect(endpoint)
                .await
                .with_context(|| format!("connect {endpoint}"))?;
            io.set_nodelay(true)?;
            h2::client::Builder::new()
                .enable_push(false)
                .header_table_size(0)
                .initial_window_size(SHARED_STREAM_WINDOW)
                .initial_connection_window_size(SHARED_CONNECTION_WINDOW)
                // an endpoint's response header lists, bounded as the
                // clients' are (they decode into memory here)
                .max_header_list_size(crate::h2::header_block::MAX_HEADER_LIST_SIZE)
                .handshake::<_, Bytes>(io)
                .await
                .with_context(|| format!("HTTP/2 handshake with {endpoint}"))
        })
        .await
        .with_context(|| format!("{endpoint}: shared connection not up within {limit:?}"))??;
        let closed = Arc::new(AtomicBool::new(false));
        // Weak: the connections go with the multiplexer (their drivers are
        // aborted with them), so a driver must not keep it alive.
        let this = Arc::downgrade(self);
        let stats = self.stats.clone();
        let flag = closed.clone();
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%endpoint, error = %e, "multiplexer: shared connection ended");
            }
            flag.store(true, Ordering::Relaxed);
            stats.connections.fetch_sub(1, Ordering::Relaxed);
            if let Some(this) = this.upgrade() {
                this.changed.notify_waiters();
            }
        });
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        self.stats
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%endpoint, "multiplexer: shared connection opened");
        Ok(SharedConn {
            send,
            active: Arc::new(AtomicUsize::new(0)),
            going_away: Arc::new(AtomicBool::new(false)),
            closed,
            _driver: AbortOnDrop(driver),
        })
    }
}

impl SharedConn {
    fn picked(&self) -> Picked {
        self.active.fetch_add(1, Ordering::Relaxed);
        Picked {
            send: self.send.clone(),
            active: Active(self.active.clone()),
            going_away: self.going_away.clone(),
        }
    }
}
