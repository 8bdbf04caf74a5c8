//! One balanced client connection: the agent's side of it. The kernel
//! carries stream frames once the fast path is open; this task is the
//! HTTP/2 peer for connection-level frames on both sides and carries, in
//! order, whatever the kernel passes to it (the slow path).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::endpoint_socket::{self, UpstreamEvent};
use super::pace::{self, Pace};
use super::registry::{ServiceState, Wake};
use super::slot::{Slot, SlotState};
use super::{Shared, Target};
use crate::ebpf::abi::*;
use crate::h2::frame::{self, setting};
use crate::h2::message::{Expect, Message, MessageReader};
use kernel::ConnKernel;

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
    /// The connection's maps and control records (kernel.rs).
    kernel: kernel::Kernel,
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
    /// Streams the agent carries itself (carried.rs).
    carried: carried::CarriedStreams,
    /// The client's connection window as the agent counts it (windows.rs).
    windows: windows::ClientWindows,
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
    before_preface: Option<BytesMut>,
    /// New streams waiting for an endpoint with room (held.rs).
    held: held::HeldStreams,
    /// This connection's window over a large Service (subset.rs).
    subset: subset::Subset,
    /// Going away because the agent stops (shutdown.rs).
    shutdown: shutdown::Shutdown,
    /// Its share of the node's budget (budgeted.rs).
    shares: budgeted::Shares,
    /// The client's address.
    peer: SocketAddr,
    /// Handing over (handover.rs): since when the agent tries, whether it
    /// gave up (drained instead), whether the successor has it now.
    handover_since: Option<tokio::time::Instant>,
    handover_given_up: bool,
    handed_over: bool,
    /// Why it was not at its quiet point when last looked at (logged).
    last_busy: &'static str,
    /// Taken from the agent before this one: its upstreams' sockets until
    /// their readers start (handover.rs, start_adopted).
    adopted: bool,
    resumed: Vec<(u32, TcpStream, u64, super::endpoint_socket::Resume)>,
    /// What its sockets may take of the per-socket maps (upstream_slots.rs).
    room: crate::ebpf::SocketRoom,
    /// Its activity, for the endpoints' seats (seat.rs).
    seat: seat::SeatWatch,
}

pub use accept::serve;
pub(crate) use handover::serve_adopted;

impl ClientConn {
    pub(super) fn new(
        id: u32,
        shared: Arc<Shared>,
        service: Arc<ServiceState>,
        room: crate::ebpf::SocketRoom,
    ) -> Self {
        let (up_tx, _) = mpsc::unbounded_channel();
        let (connect_tx, _) = mpsc::unbounded_channel();
        let shares = budgeted::Shares::new(&shared.budget, id);
        let kernel = kernel::Kernel {
            shared: shared.clone(),
            id,
        };
        let now = tokio::time::Instant::now();
        ClientConn {
            id,
            kernel,
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
            carried: Default::default(),
            windows: Default::default(),
            up_tx,
            connect_tx,
            failed: false,
            cookie: 0,
            read_bytes: 0,
            client_watch: Default::default(),
            client_headers: Default::default(),
            advertised_streams: None,
            before_preface: Some(BytesMut::new()),
            held: held::HeldStreams::new(now),
            subset: subset::Subset::new(0, now),
            shutdown: Default::default(),
            shares,
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            handover_since: None,
            handover_given_up: false,
            handed_over: false,
            last_busy: "",
            adopted: false,
            resumed: Vec::new(),
            room,
            seat: seat::SeatWatch::new(now),
        }
    }

    /// Not HTTP/2: the HTTP/2 upstreams close and the connection goes
    /// whole to one endpoint, each connection to the next.
    async fn splice(
        &mut self,
        a: TcpStream,
        first: bytes::Bytes,
        input: super::tap::SourceInput,
    ) -> anyhow::Result<()> {
        let endpoint = {
            let eps = self.service.endpoints.borrow();
            (!eps.is_empty()).then(|| eps[self.subset.offset() % eps.len()])
        };
        let endpoint =
            endpoint.ok_or_else(|| anyhow::anyhow!("no endpoint for an L4 connection"))?;
        for slot in 0..MAX_UPSTREAMS as u32 {
            self.close_slot(slot);
        }
        let spliced = super::registry::Spliced {
            endpoint: endpoint.to_string(),
            why: super::splice::what_it_speaks(&first).into(),
        };
        self.shared.registry.update_conn(self.id, |i| {
            i.spliced = Some(spliced);
            i.fast = false;
            i.slots.clear();
            i.upstreams.clear();
        });
        super::splice::run(&self.shared.dp, endpoint, a, first, input).await
    }

    /// `spare`: A's tap from its first byte, if sockops gave it one
    /// (agent/spare_taps.rs).
    pub(super) async fn run(
        &mut self,
        a: TcpStream,
        mut wake_rx: mpsc::UnboundedReceiver<Wake>,
        spare: Option<super::tap::Tap>,
    ) -> anyhow::Result<()> {
        let (up_tx, mut up_rx) = mpsc::unbounded_channel();
        let (connect_tx, mut connect_rx) = mpsc::unbounded_channel();
        self.up_tx = up_tx;
        self.connect_tx = connect_tx;
        let endpoints = self.service.endpoints.subscribe();
        let mut endpoints_rx = endpoints.clone();
        if self.adopted {
            self.start_adopted();
        } else {
            let initial = self.subset.wanted(&endpoints.borrow());
            for ep in initial {
                self.add_endpoint(ep);
            }
        }
        // Whether the agent hands its connections over (handover.rs).
        let mut handing = self.shared.handover.subscribe();

        let mut buf = vec![0u8; 32 * 1024];
        // The client's frames for the agent: from its spare tap, or from A
        // until the tap the agent makes takes over (agent/tap.rs). That
        // one comes once the preface is read, so no preface is split
        // between A and the tap.
        let mut input = super::tap::SourceInput::new(spare, true);
        // The looks at what the kernel did unasked (pace.rs).
        let mut pace = Pace::default();
        let look = tokio::time::sleep(pace::FIRST);
        tokio::pin!(look);
        let cut = self.shares.wake.clone();
        let server_first = tokio::time::sleep(SERVER_FIRST_WAIT);
        tokio::pin!(server_first);
        // When the client shut down its sending side (its FIN).
        let mut client_eof: Option<tokio::time::Instant> = None;
        let mut stopping = self.shared.stopping.subscribe();
        if *stopping.borrow() {
            self.go_away();
        }
        // A busy endpoint left with no window (grants.rs, DryWatch).
        let dry = tokio::time::sleep(pace::MOST);
        tokio::pin!(dry);
        let mut dry_at = None;
        let dp = self.shared.dp.clone();
        let seat_asked = self.seat.asked.clone();
        loop {
            let due_dry = self.windows.dry.due();
            if due_dry != dry_at {
                if let Some(at) = due_dry {
                    dry.as_mut().reset(at);
                }
                dry_at = due_dry;
            }
            let mut looked = false;
            let (cookie, consumed) = (self.cookie, self.consumed);
            let due = || housekeeping::client_due(&dp, cookie, consumed);
            let caught_up = || {
                super::tap::SourceInput::caught_up(
                    dp.tap_start(cookie).map(|t| t.messages),
                    consumed,
                )
            };
            tokio::select! {
                () = &mut server_first, if self.consumed == 0 => {
                    if housekeeping::client_sent_first(&dp, cookie) || self.endpoints_speak_h2() {
                        // The kernel has passed the client's first message
                        // and this task has not read it yet: a busy agent,
                        // not a silent client. A CPU-starved agent (5 % of a
                        // core, 1,000 connections at once) spliced HTTP/2
                        // clients to nghttpd here, which got no preface and
                        // closed them with GOAWAY SETTINGS_TIMEOUT.
                        // Or the endpoints speak HTTP/2: a server-first
                        // protocol cannot be theirs, the client is slow.
                        server_first.as_mut().reset(tokio::time::Instant::now() + SERVER_FIRST_WAIT);
                    } else {
                        // No preface after a second: a protocol whose server
                        // speaks first (SMTP, MySQL, SSH banners), or a client
                        // whose first bytes happened to start like one and
                        // that waits for an answer. No HTTP/2 client pauses
                        // inside its preface.
                        tracing::debug!(conn = self.id, bytes = self.reader.buffered(), "no preface; spliced to one endpoint");
                        let first = self.reader.take_buffered();
                        return self.splice(a, first, input).await;
                    }
                }
                () = cut.notified() => self.on_budget_cut(),
                () = seat_asked.notified() => self.review_seats(),
                () = &mut dry, if dry_at.is_some() => self.on_dry_due(),
                r = input.recv(&a, &mut buf, &due, &caught_up),
                    if client_eof.is_none() && !self.injector_backed_up() => {
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
                        if pace.stir() {
                            look.as_mut().reset(tokio::time::Instant::now() + pace::FIRST);
                        }
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
                            return self.splice(a, first, input).await;
                        }
                        self.on_client_message(m);
                    }
                    self.release_hold();
                    self.maybe_open_gate();
                    self.tap_client(&mut input);
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
                Ok(()) = stopping.changed() => self.go_away(),
                // looked at below, after every event
                Ok(()) = handing.changed() => {}
                Ok(()) = endpoints_rx.changed() => {
                    let eps = endpoints_rx.borrow_and_update().clone();
                    let policy = self.service.policy().kernel_code();
                    self.kernel.conn().policy.store(policy, Ordering::Relaxed);
                    self.reconcile(&eps);
                }
                () = &mut look => {
                    looked = true;
                    self.kick_client_if_unparsed(&a);
                    self.on_tick();
                    let now = tokio::time::Instant::now();
                    if let Some(goaway) = self.shutdown.step(now, &self.kernel, self.last_stream) {
                        self.send_to_client(&goaway);
                    }
                    let wait = pace.next(self.settled(client_eof.is_some()), self.kernel_progress());
                    look.as_mut().reset(now + wait);
                }
            }
            if !looked && pace.stir() {
                look.as_mut()
                    .reset(tokio::time::Instant::now() + pace::FIRST);
            }
            // A client that closed for good (its process gone: our writes
            // drew a reset) waits for nothing.
            let finished = client_eof.is_some_and(|since| {
                self.streams_done()
                    || since.elapsed() > CLIENT_FIN_LIMIT
                    || crate::ebpf::tcp_received(&a).is_ok_and(|r| r.reset)
            });
            match self.try_hand_over(&a, &mut input, &mut up_rx).await {
                handover::Step::NotYet => {}
                // the successor runs it: nothing here is touched
                handover::Step::Gone => return Ok(()),
                handover::Step::Drain => self.go_away(),
            }
            // Going away: done once the last id is out and its streams ended.
            let gone = self.shutdown.closing() && self.streams_done();
            if self.failed || finished || gone {
                tokio::time::sleep(CLOSE_GRACE).await;
                return Ok(());
            }
        }
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
        if let Some(waiting) = self.before_preface.take() {
            out.extend_from_slice(&waiting);
        }
        self.inject(Target::Client, &out);
    }

    fn send_to_client(&mut self, frames: &[u8]) {
        if let Some(waiting) = self.before_preface.as_mut() {
            waiting.extend_from_slice(frames);
            return;
        }
        self.inject(Target::Client, frames);
    }

    fn send_to_upstream(&self, slot: u32, frames: &[u8]) {
        self.inject(Target::Upstream(slot), frames);
    }

    /// The agent stops: the client is told to go away (shutdown.rs).
    fn go_away(&mut self) {
        if let Some(goaway) = self.shutdown.begin(tokio::time::Instant::now()) {
            tracing::debug!(conn = self.id, "agent stopping: GOAWAY to the client");
            self.send_to_client(&goaway);
        }
    }

    /// Lets the kernel open streams again once none waits in the agent,
    /// unless the connection is going away (the kernel must keep sending
    /// new streams here to be refused).
    pub(super) fn release_hold(&mut self) {
        if !self.shutdown.holds() {
            self.held.release(&self.kernel, self.consumed);
        }
    }

    pub(super) fn teardown(&mut self) {
        for slot in 0..MAX_UPSTREAMS as u32 {
            self.close_slot(slot);
        }
        for entry in self.shared.dp.forget_streams(self.id) {
            self.count_ended(&entry);
        }
        self.shared.dp.forget_cookie(self.cookie);
        self.kernel.conn().flags.store(0, Ordering::SeqCst);
    }
}

mod accept;
mod budgeted;
mod carried;
mod counting;
mod flow;
mod from_client;
mod from_endpoint;
mod grants;
mod handover;
mod held;
mod hold;
mod housekeeping;
mod kernel;
mod pick;
mod seat;
mod setup;
mod shutdown;
mod stream_end;
mod stream_limit;
mod stream_window;
mod subset;
mod upstream_slots;
mod windows;
