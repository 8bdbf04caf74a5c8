//! The shared connections to one endpoint: picked per stream, opened up
//! to the limit, dropped when they end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::frame_watch::FrameWatch;
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
    /// Bumped when the endpoint is lost: its last live shared connection
    /// went away or closed, or none could be opened while none was live.
    /// Each local connection then goes away (GOAWAY), as a connection's own
    /// upstream would with the endpoint, so the client connection's task
    /// and the kernel stop sending it streams and dial again with backoff
    /// (mux.rs, `serve_local`).
    pub(super) lost: tokio::sync::watch::Sender<u64>,
    /// The node's bound on queued bytes (budget.rs).
    pub(super) budget: Arc<crate::agent::budget::Budget>,
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
    /// Every connection was full: the stream waits in h2's `ready` for one
    /// of this connection's streams to end.
    pub(super) waits: bool,
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
                    Choice::Use(c.picked(false))
                } else if live.len() + opening < self.limits.shared.max(1) {
                    self.opening.fetch_add(1, Ordering::Relaxed);
                    Choice::Open
                } else if let Some(c) = live.iter().min_by_key(|c| load(c)) {
                    Choice::Use(c.picked(true))
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
                    match opened {
                        Ok(conn) => lock(&self.conns).push(conn),
                        Err(e) => {
                            self.lost_if_none_live();
                            return Err(e);
                        }
                    }
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
        let deadline = tokio::time::Instant::now() + limit;
        let (send, mut conn, mut said) = tokio::time::timeout_at(deadline, async {
            let io = crate::ebpf::own_socks::connect(endpoint)
                .await
                .with_context(|| format!("connect {endpoint}"))?;
            io.set_nodelay(true)?;
            let (io, said) = FrameWatch::wrap(io);
            let (send, conn) = h2::client::Builder::new()
                .enable_push(false)
                .header_table_size(0)
                .initial_window_size(SHARED_STREAM_WINDOW)
                .initial_connection_window_size(SHARED_CONNECTION_WINDOW)
                // an endpoint's response header lists, bounded as the
                // clients' are (they decode into memory here)
                .max_header_list_size(crate::h2::header_block::MAX_HEADER_LIST_SIZE)
                .handshake::<_, Bytes>(io)
                .await
                .with_context(|| format!("HTTP/2 handshake with {endpoint}"))?;
            Ok::<_, anyhow::Error>((send, conn, said))
        })
        .await
        .with_context(|| format!("{endpoint}: shared connection not up within {limit:?}"))??;
        // driven until the endpoint's SETTINGS are in, within the same limit
        let settled = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                ended = &mut conn => Err(anyhow::anyhow!("{endpoint} closed before its SETTINGS: {ended:?}")),
                first = said.wait_for(|s| s.first.is_some()) => match first.map(|s| s.first) {
                    Ok(Some(true)) => Ok(()),
                    _ => Err(anyhow::anyhow!("{endpoint}: its first frame was not SETTINGS")),
                },
            }
        })
        .await;
        match settled {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("{endpoint}: no SETTINGS within {limit:?}"),
        }
        let closed = Arc::new(AtomicBool::new(false));
        let going_away = Arc::new(AtomicBool::new(false));
        // Weak: the connections go with the multiplexer (their drivers are
        // aborted with them), so a driver must not keep it alive.
        let this = Arc::downgrade(self);
        let stats = self.stats.clone();
        let flag = closed.clone();
        let going = going_away.clone();
        let driver = tokio::spawn(async move {
            // the endpoint's GOAWAY, seen as it comes (frame_watch.rs)
            let goaway = async {
                let seen = said.wait_for(|s| s.goaway).await.is_ok();
                // (not seen: the watch went with the socket, which ends)
                if seen {
                    going.store(true, Ordering::Relaxed);
                    if let Some(this) = this.upgrade() {
                        this.lost_if_none_live();
                    }
                }
                std::future::pending::<std::convert::Infallible>().await
            };
            let ended = tokio::select! {
                ended = &mut conn => ended,
                never = goaway => match never {},
            };
            if let Err(e) = ended {
                tracing::debug!(%endpoint, error = %e, "multiplexer: shared connection ended");
            }
            flag.store(true, Ordering::Relaxed);
            stats.connections.fetch_sub(1, Ordering::Relaxed);
            if let Some(this) = this.upgrade() {
                this.changed.notify_waiters();
                this.lost_if_none_live();
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
            going_away,
            closed,
            _driver: AbortOnDrop(driver),
        })
    }
}

impl SharedConns {
    /// A shared connection went away, closed, or could not be opened: if
    /// none that takes new streams is left, the endpoint is lost.
    pub(super) fn lost_if_none_live(&self) {
        let live = (lock(&self.conns).iter())
            .filter(|c| !c.going_away.load(Ordering::Relaxed) && !c.closed.load(Ordering::Relaxed))
            .count();
        if live == 0 {
            tracing::info!(endpoint = %self.endpoint, "multiplexer: no shared connection to the endpoint takes streams: its local connections go away");
            self.lost.send_modify(|n| *n += 1);
        }
    }
}

impl SharedConn {
    fn picked(&self, waits: bool) -> Picked {
        self.active.fetch_add(1, Ordering::Relaxed);
        Picked {
            send: self.send.clone(),
            active: Active(self.active.clone()),
            going_away: self.going_away.clone(),
            waits,
        }
    }
}
