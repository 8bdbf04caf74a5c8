//! One balanced client connection: the agent's side of it. The kernel
//! carries stream frames once the fast path is open; this task is the
//! HTTP/2 peer for connection-level frames on both sides and carries, in
//! order, whatever the kernel passes to it (the slow path).

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::endpoint_socket::{self, UpstreamEvent};
use super::registry::{ConnInfo, ServiceState, Wake};
use super::slot::{Slot, SlotState};
use super::{Shared, Target};
use crate::ebpf::abi::*;
use crate::h2::frame::{self, setting, DEFAULT_WINDOW};
use crate::h2::message::{Expect, Message, MessageReader};

/// Connection window the agent keeps open for the client's uploads, and
/// for each endpoint's responses (as the client's window allows).
const CLIENT_WINDOW: u64 = 4 << 20;
const ENDPOINT_WINDOW: u64 = 1 << 20;
const DRAIN_GRACE: Duration = Duration::from_millis(200);
/// How long a silent client may take to send its first bytes before the
/// connection is taken for a server-speaks-first protocol.
const SERVER_FIRST_WAIT: Duration = Duration::from_secs(1);
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How long a closing connection lingers so that what it sent last (a
/// GOAWAY, the end of a response) leaves through A's psock queue, whose
/// work item a loaded machine runs late: 50 ms lost the GOAWAY in 1 of 3
/// runs of bad_input::fuzz_10000 beside two builds.
const CLOSE_GRACE: Duration = Duration::from_millis(250);
/// How long a client that shut down its sending side waits for the answers
/// still on their way (HAProxy's `timeout client-fin`): a backend dialled
/// directly answers what it read before the FIN, and a correct server's
/// GOAWAY over a bad frame comes within a round trip.
const CLIENT_FIN_LIMIT: Duration = Duration::from_secs(1);

type ConnectResult = (u32, anyhow::Result<endpoint_socket::Handshake>);

pub struct ClientConn {
    id: u32,
    shared: Arc<Shared>,
    service: Arc<ServiceState>,
    slots: Vec<Option<Slot>>,
    reader: MessageReader,
    consumed: u32,
    gate_sent: Option<u32>,
    acked: bool,
    /// The client's first frame, its SETTINGS, has arrived.
    client_settings_seen: bool,
    first_slot: u32,
    last_stream: u32,
    /// Streams the agent carries itself, by id → slot.
    slow: HashMap<u32, u32>,
    client_initial_window: u32,
    /// Connection WINDOW_UPDATE increments the agent read from the client.
    client_increments: u64,
    /// Connection window granted to the client, in total; bytes of it that
    /// were dropped (closed streams) rather than forwarded.
    client_granted: u64,
    client_dropped: u64,
    /// Client DATA bytes the agent received (carried, queued or dropped).
    client_data_seen: u64,
    up_tx: mpsc::UnboundedSender<UpstreamEvent>,
    connect_tx: mpsc::UnboundedSender<ConnectResult>,
    /// A connection error was sent to the client: stop reading.
    failed: bool,
    cookie: u64,
    read_bytes: u64,
    /// Whether the client's bytes wait unparsed (liveness.rs).
    client_watch: super::liveness::ParserWatch,
    client_headers: crate::h2::header_block::ClientHeaders,
    advertised_streams: Option<u32>,
    /// Frames for the client before its preface arrived (see greet_client).
    before_preface: std::cell::RefCell<Option<BytesMut>>,
    /// Streams the kernel slowed and the agent carries until it releases them.
    slowed: std::collections::HashSet<u32>,
    /// New streams waiting for an endpoint with room, oldest first (hold.rs).
    held: std::collections::BTreeMap<u32, Vec<bytes::Bytes>>,
    unhold_sent: Option<u32>,
    /// When the task started, and whether its first upstreams are settled (hold.rs).
    started: tokio::time::Instant,
    settled: bool,
    /// Where this connection's window over a large Service starts, when it
    /// last moved and the client's last stream then (subset.rs).
    subset_offset: usize,
    subset_moved: tokio::time::Instant,
    subset_last_stream: u32,
    /// Its share of the node's budget (budgeted.rs).
    shares: budgeted::Shares,
}

pub async fn serve(shared: Arc<Shared>, a: TcpStream, peer: SocketAddrV4) {
    let Some(origin) = take_origin(&shared, peer).await else {
        tracing::warn!(%peer, "connection without a recorded destination; closing");
        return;
    };
    if origin.service_id == super::self_check::SERVICE_ID {
        // sockops made its parser state; no sweep needs to find it
        let cookie = crate::ebpf::socket_cookie(&a).unwrap_or(0);
        if let Err(e) = super::self_check::answer(&shared.dp, a).await {
            tracing::debug!(%peer, error = %format!("{e:#}"), "self-check connection");
        }
        shared.dp.forget_cookie(cookie);
        return;
    }
    let dest = SocketAddrV4::new(
        std::net::Ipv4Addr::from(origin.ip.to_ne_bytes()),
        origin.port as u16,
    );
    let Some(service) = shared.registry.service(origin.service_id) else {
        return super::fail_open::run(&shared, a, peer, dest, "its service is gone".into()).await;
    };
    let cookie = crate::ebpf::socket_cookie(&a).unwrap_or(0);
    if !super::fail_open::kernel_took(&shared, cookie).await {
        return super::fail_open::run(
            &shared,
            a,
            peer,
            dest,
            "the kernel could not take it (parse_states or agent_socks full)".into(),
        )
        .await;
    }
    // A and one socket per upstream, so that no upstream fails for want of room
    let sockets = 1 + service.endpoints.borrow().len().min(MAX_UPSTREAMS);
    if !shared.dp.has_room_for(sockets) {
        shared.dp.forget_cookie(cookie);
        return super::fail_open::run(
            &shared,
            a,
            peer,
            dest,
            "the per-socket maps are full".into(),
        )
        .await;
    }
    if shared.budget.refuse_new() {
        shared.dp.forget_cookie(cookie);
        let why = "the agent's queued bytes are over --max-queued-bytes".into();
        return super::fail_open::run(&shared, a, peer, dest, why).await;
    }
    let Some(id) = shared.registry.alloc_conn(shared.dp.conns.len() as u32) else {
        return super::fail_open::run(
            &shared,
            a,
            peer,
            dest,
            "connection table full; raise --max-conns".into(),
        )
        .await;
    };
    let (wake_tx, wake_rx) = mpsc::unbounded_channel();
    shared.registry.register_conn(
        ConnInfo {
            id,
            service: service.name.clone(),
            client: peer.to_string(),
            ..Default::default()
        },
        wake_tx,
    );
    let mut conn = ClientConn::new(id, shared.clone(), service);
    // Nothing has been read or sent yet: a connection that cannot be set
    // up can still go its original way.
    if let Err(e) = conn.adopt(&a, peer, cookie) {
        conn.teardown();
        shared.registry.release_conn(id);
        return super::fail_open::run(
            &shared,
            a,
            peer,
            dest,
            format!("setting it up failed: {e:#}"),
        )
        .await;
    }
    if let Err(e) = conn.run(a, wake_rx).await {
        tracing::debug!(conn = id, error = %e, "client connection ended");
    }
    conn.teardown();
    shared.registry.release_conn(id);
}

/// sockops records the destination when the client's side is established,
/// which can be a moment after our accept returns.
async fn take_origin(shared: &Shared, peer: SocketAddrV4) -> Option<Origin> {
    for _ in 0..50 {
        if let Some(o) = shared.dp.take_origin(peer) {
            return Some(o);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

impl ClientConn {
    fn new(id: u32, shared: Arc<Shared>, service: Arc<ServiceState>) -> Self {
        let (up_tx, _) = mpsc::unbounded_channel();
        let (connect_tx, _) = mpsc::unbounded_channel();
        let shares = budgeted::Shares::new(&shared.budget, id);
        ClientConn {
            id,
            shared,
            service,
            slots: (0..MAX_UPSTREAMS).map(|_| None).collect(),
            reader: MessageReader::new(Expect::Preface),
            consumed: 0,
            gate_sent: None,
            acked: false,
            client_settings_seen: false,
            first_slot: 0,
            last_stream: 0,
            slow: HashMap::new(),
            client_initial_window: DEFAULT_WINDOW,
            client_increments: 0,
            client_granted: DEFAULT_WINDOW as u64,
            client_dropped: 0,
            client_data_seen: 0,
            up_tx,
            connect_tx,
            failed: false,
            cookie: 0,
            read_bytes: 0,
            client_watch: Default::default(),
            client_headers: Default::default(),
            advertised_streams: None,
            before_preface: std::cell::RefCell::new(Some(BytesMut::new())),
            slowed: Default::default(),
            held: Default::default(),
            unhold_sent: None,
            started: tokio::time::Instant::now(),
            settled: false,
            subset_offset: 0,
            subset_moved: tokio::time::Instant::now(),
            subset_last_stream: 0,
            shares,
        }
    }

    /// Not HTTP/2: the HTTP/2 upstreams close and the connection goes
    /// whole to one endpoint, each connection to the next.
    async fn splice(&mut self, a: TcpStream, first: bytes::Bytes) -> anyhow::Result<()> {
        let endpoint = {
            let eps = self.service.endpoints.borrow();
            (!eps.is_empty()).then(|| eps[self.subset_offset % eps.len()])
        };
        let endpoint =
            endpoint.ok_or_else(|| anyhow::anyhow!("no endpoint for an L4 connection"))?;
        for slot in 0..MAX_UPSTREAMS as u32 {
            self.close_slot(slot);
        }
        super::splice::run(endpoint, a, first).await
    }

    fn shared_conn(&self) -> &ConnShared {
        self.shared
            .dp
            .conns
            .get(self.id)
            .expect("conn id within the table")
    }

    fn up(&self, slot: u32) -> &UpstreamShared {
        &self.shared_conn().up[slot as usize % MAX_UPSTREAMS]
    }

    /// Names the accepted socket to the kernel and resets the connection's
    /// shared state; fails if a map has no room (sock_idents full).
    fn adopt(&mut self, a: &TcpStream, peer: SocketAddrV4, cookie: u64) -> anyhow::Result<()> {
        let local = match a.local_addr()? {
            std::net::SocketAddr::V4(v4) => v4,
            other => anyhow::bail!("IPv6 agent address {other}"),
        };
        let endpoints = self.service.endpoints.borrow().clone();
        self.init_kernel_state(peer, local, &endpoints)?;
        self.shared.dp.set_ident(
            cookie,
            SockIdent {
                conn_id: self.id,
                role: ROLE_AGENT,
                ..Default::default()
            },
        )?;
        self.cookie = cookie;
        // WINDOW_UPDATEs the client sent before the socket had an identity
        // were counted in its parser state, not in the connection.
        if let Some(st) = self.shared.dp.parse_state(cookie) {
            self.shared_conn()
                .client_limit
                .fetch_max(DEFAULT_WINDOW as u64 + st.client_window, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn run(
        &mut self,
        a: TcpStream,
        mut wake_rx: mpsc::UnboundedReceiver<Wake>,
    ) -> anyhow::Result<()> {
        let (up_tx, mut up_rx) = mpsc::unbounded_channel();
        let (connect_tx, mut connect_rx) = mpsc::unbounded_channel();
        self.up_tx = up_tx;
        self.connect_tx = connect_tx;
        let endpoints = self.service.endpoints.subscribe();
        let mut endpoints_rx = endpoints.clone();
        let initial = self.wanted(&endpoints.borrow());
        for ep in initial {
            self.add_endpoint(ep);
        }

        let mut buf = vec![0u8; 32 * 1024];
        let mut a_reader = super::sockmap_io::SockmapReader::default();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let cut = self.shares.wake.clone();
        let server_first = tokio::time::sleep(SERVER_FIRST_WAIT);
        tokio::pin!(server_first);
        // When the client shut down its sending side (its FIN).
        let mut client_eof: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                () = &mut server_first, if self.consumed == 0 => {
                    // No preface after a second: a protocol whose server
                    // speaks first (SMTP, MySQL, SSH banners), or a client
                    // whose first bytes happened to start like one and
                    // that waits for an answer. No HTTP/2 client pauses
                    // inside its preface.
                    tracing::debug!(conn = self.id, bytes = self.reader.buffered(), "no preface; spliced to one endpoint");
                    let first = self.reader.take_buffered();
                    return self.splice(a, first).await;
                }
                () = cut.notified() => self.on_budget_cut(),
                r = a_reader.recv_confirmed(&a, &mut buf), if client_eof.is_none() && !self.injector_backed_up() => {
                    let n = r?;
                    if n == 0 {
                        // A client may write its requests and then only
                        // read (shutdown(SHUT_WR)); a backend dialled
                        // directly answers them all, and so do we: the
                        // connection ends once its streams have.
                        if self.client_bytes_unparsed(&a) {
                            // A frame cut off by the FIN can never end.
                            tracing::debug!(conn = self.id, "client closed inside a frame");
                            return Ok(());
                        }
                        tracing::debug!(conn = self.id, "client closed its sending side");
                        client_eof = Some(tokio::time::Instant::now());
                        continue;
                    }
                    self.reader.push(&buf[..n]);
                    self.read_bytes += n as u64;
                    loop {
                        let m = match self.reader.next_message() {
                            Ok(Some(m)) => m,
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(conn = self.id, error = %e, "client broke HTTP/2 framing");
                                self.fail(e.code());
                                break;
                            }
                        };
                        self.consumed += 1;
                        if m == Message::Preface {
                            self.greet_client();
                        }
                        if let Message::Raw(first) = m {
                            return self.splice(a, first).await;
                        }
                        self.on_client_message(m);
                    }
                    if self.held.is_empty() {
                        self.release_hold();
                    }
                    self.maybe_open_gate();
                }
                Some(ev) = up_rx.recv(), if !self.injector_backed_up() => {
                    self.on_upstream_event(ev);
                    self.dispatch_held();
                }
                Some((slot, result)) = connect_rx.recv() => self.on_connected(slot, result),
                Some(wake) = wake_rx.recv() => match wake {
                    Wake::FlowControl => self.on_wake(),
                    Wake::StreamWindow { slot, stream } => self.send_stream_window(slot, stream, None),
                },
                Ok(()) = endpoints_rx.changed() => {
                    let eps = endpoints_rx.borrow_and_update().clone();
                    self.reconcile(&eps);
                }
                _ = tick.tick() => {
                    self.kick_client_if_unparsed(&a);
                    self.on_tick();
                }
            }
            // A client that closed for good (its process gone: our writes
            // drew a reset) waits for nothing.
            let finished = client_eof.is_some_and(|since| {
                self.streams_done()
                    || since.elapsed() > CLIENT_FIN_LIMIT
                    || crate::ebpf::tcp_received(&a).is_ok_and(|r| r.reset)
            });
            if self.failed || finished {
                tokio::time::sleep(CLOSE_GRACE).await;
                return Ok(());
            }
        }
    }

    fn init_kernel_state(
        &mut self,
        peer: SocketAddrV4,
        local: SocketAddrV4,
        endpoints: &[SocketAddrV4],
    ) -> anyhow::Result<()> {
        let rotation = self.service.next_rotation();
        self.subset_offset = rotation as usize;
        // slot k holds the k-th wanted endpoint; a window already starts
        // at a different endpoint for each connection
        let n = endpoints.len().max(1) as u32;
        self.first_slot = if endpoints.len() > MAX_UPSTREAMS {
            0
        } else {
            rotation % n
        };
        let dp = self.shared.dp.clone();
        let c = dp.conns.get(self.id).expect("conn id within the table");
        c.flags.store(0, Ordering::SeqCst);
        c.client_ip
            .store(u32::from_ne_bytes(peer.ip().octets()), Ordering::Relaxed);
        c.agent_ip
            .store(u32::from_ne_bytes(local.ip().octets()), Ordering::Relaxed);
        c.client_port.store(peer.port() as u32, Ordering::Relaxed);
        c.agent_port.store(local.port() as u32, Ordering::Relaxed);
        c.service_id.store(self.service.id, Ordering::Relaxed);
        c.consumed.store(0, Ordering::Relaxed);
        c.generation.fetch_add(1, Ordering::Relaxed);
        c.last_stream.store(0, Ordering::Relaxed);
        c.next.store(self.first_slot, Ordering::Relaxed);
        c.client_recv.store(0, Ordering::Relaxed);
        c.client_limit
            .store(DEFAULT_WINDOW as u64, Ordering::Relaxed);
        for up in &c.up {
            upstream_slots::reset_upstream(up, DEFAULT_WINDOW as u64, 0);
            up.streams.store(0, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Our SETTINGS come first on the client's queue (RFC 9113 §3.4): the client's
    /// HPACK encoder must not use a dynamic table whose entries only one
    /// endpoint would see, and its header lists must fit what the agent
    /// re-encodes and the kernel carries (header_block::MAX_HEADER_LIST_SIZE).
    /// The connection window grows as upstreams connect (flow.rs).
    /// Our SETTINGS must be the first frame the client reads (RFC 9113
    /// §3.4), so frames for the client wait until the preface has been seen
    /// and then follow it; a client that turns out not to speak HTTP/2 gets
    /// none of them.
    fn greet_client(&mut self) {
        let mut out = BytesMut::new();
        frame::settings(
            &mut out,
            &[
                (setting::HEADER_TABLE_SIZE, 0),
                (
                    setting::MAX_HEADER_LIST_SIZE,
                    crate::h2::header_block::MAX_HEADER_LIST_SIZE,
                ),
            ],
        );
        if let Some(waiting) = self.before_preface.borrow_mut().take() {
            out.extend_from_slice(&waiting);
        }
        self.inject(Target::Client, &out);
    }

    fn to_client(&self, frames: &[u8]) {
        if let Some(waiting) = self.before_preface.borrow_mut().as_mut() {
            waiting.extend_from_slice(frames);
            return;
        }
        self.inject(Target::Client, frames);
    }

    fn to_upstream(&self, slot: u32, frames: &[u8]) {
        self.inject(Target::Upstream(slot), frames);
    }

    fn teardown(&mut self) {
        for slot in 0..MAX_UPSTREAMS as u32 {
            self.close_slot(slot);
        }
        self.shared.dp.forget_streams(self.id);
        self.shared.dp.forget_cookie(self.cookie);
        let c = self.shared_conn();
        c.flags.store(0, Ordering::SeqCst);
    }
}

mod budgeted;
mod flow;
mod from_client;
mod from_endpoint;
mod hold;
mod housekeeping;
mod stream_window;
mod subset;
mod upstream_slots;
