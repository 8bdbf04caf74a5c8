//! A connection handed to the agent that replaces this one, and one taken
//! from the agent before (issue 13; README, "Upgrades and stopping").
//!
//! Handing over happens at the connection's quiet point: the agent carries
//! and holds no stream, has nothing queued for either side or waiting in
//! the injector, and no upstream is connecting or settling. Streams the
//! kernel carries stay in flight: the successor runs the connection with
//! the same maps (ebpf/datapath/adopt.rs). The upstreams' readers give
//! their sockets back between two messages; what they had handed the task
//! is taken in first. A connection that does not get there within
//! QUIET_LIMIT, or that the successor refuses, is drained with GOAWAY as
//! before: no byte depends on the handover.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::kernel::ConnKernel;
use super::{ClientConn, Slot, SlotState};
use crate::agent::endpoint_socket::{self, Handback, Resume, UpstreamEvent};
use crate::agent::handover::give::{Offer, Verdict};
use crate::agent::handover::state::{ConnState, SlotState as SlotSnapshot};
use crate::agent::registry::ServiceState;
use crate::agent::Shared;
use crate::ebpf::abi::{CONN_FAST, MAX_UPSTREAMS, UP_DRAINING};
use crate::h2::message::{Expect, MessageReader};

/// How long a connection may take to reach its quiet point once the agent
/// hands over; then it is drained with GOAWAY instead.
pub const QUIET_LIMIT: Duration = Duration::from_secs(1);
/// How long the upstreams' readers may take to give their sockets back:
/// each answers between two messages, after reading its tap out
/// (agent/tap.rs, UNTAP_LIMIT, 1 s). One that answers later reads on.
const HANDBACK_LIMIT: Duration = Duration::from_millis(1500);
/// How long the successor may take to answer (it answers after spawning
/// the connection's task: milliseconds).
const VERDICT_LIMIT: Duration = Duration::from_secs(5);

/// Where a connection stands with the handover.
pub(super) enum Step {
    /// Not at its quiet point yet (or not asked): carry on.
    NotYet,
    /// The successor runs it now: end without touching anything.
    Gone,
    /// Not handed over: drain it with GOAWAY.
    Drain,
}

impl ClientConn {
    /// What of the connection is still in the agent's hands, if anything
    /// but its counters; `stopped`: the upstreams' readers have given
    /// their sockets back; `adopts_shared`: the successor takes upstreams
    /// through this agent's multiplexers.
    fn busy(&self, stopped: bool, adopts_shared: bool) -> Option<&'static str> {
        let flags = self
            .kernel
            .conn()
            .flags
            .load(std::sync::atomic::Ordering::SeqCst);
        let slot_busy = |s: &Slot| match s.state {
            SlotState::Connecting => Some("an upstream is connecting"),
            SlotState::Closed if !s.is_free() => Some("an upstream is settling"),
            SlotState::Closed => None,
            SlotState::Active | SlotState::Draining { .. } => {
                if !stopped && s.handback.is_none() {
                    Some("an upstream's reader cannot be asked for its socket")
                } else if s.flooded {
                    Some("an upstream was dropped")
                } else if s.is_shared() && !adopts_shared {
                    // its peer is this agent's multiplexer, which a
                    // successor from before shared upstreams would take
                    // for the endpoint: drained instead (pool.rs)
                    Some("an upstream goes through this agent's multiplexer")
                } else if !s.to_endpoint.is_empty() || !s.to_client.is_empty() {
                    Some("frames wait for an upstream's window")
                } else {
                    None
                }
            }
        };
        if flags & CONN_FAST == 0 {
            Some("the fast path is not open")
        } else if self.before_preface.is_some() || self.failed || !self.shutdown.serving() {
            Some("the connection is starting or ending")
        } else if self.carried.any_slowed() {
            Some("the agent carries a stream")
        } else if !self.held.is_empty() {
            Some("the agent holds a stream")
        } else if self.injector_backlog() != 0 {
            Some("frames wait for the injector")
        } else {
            self.slots.iter().flatten().find_map(slot_busy)
        }
    }

    /// Tries to hand the connection over, if the agent is handing over.
    pub(super) async fn try_hand_over(
        &mut self,
        a: &TcpStream,
        input: &mut crate::agent::tap::SourceInput,
        up_rx: &mut mpsc::UnboundedReceiver<UpstreamEvent>,
    ) -> Step {
        let Some(sink) = self.shared.handover.borrow().clone() else {
            return Step::NotYet;
        };
        if self.handover_given_up {
            return Step::NotYet;
        }
        let since = *self.handover_since.get_or_insert_with(Instant::now);
        let late = since.elapsed() > QUIET_LIMIT;
        if let Some(why) = self.busy(false, sink.adopts_shared) {
            self.last_busy = why;
            return if late {
                self.give_up(&sink)
            } else {
                Step::NotYet
            };
        }
        // Every reader is asked at once: each reads its tap out first.
        let mut asked = Vec::new();
        let mut all_back = true;
        for slot in 0..MAX_UPSTREAMS {
            let Some(s) = self.slots[slot].as_mut().filter(|s| s.is_open()) else {
                continue;
            };
            let Some(ask) = s.handback.take() else {
                all_back = false;
                continue;
            };
            let (tx, rx) = oneshot::channel();
            if ask.send(tx).is_err() {
                all_back = false;
                continue;
            }
            asked.push((slot as u32, rx));
        }
        let deadline = Instant::now() + HANDBACK_LIMIT;
        let mut back: Vec<(u32, Handback)> = Vec::new();
        for (slot, rx) in asked {
            match self.handback(rx, up_rx, deadline).await {
                Some(h) => back.push((slot, h)),
                None => all_back = false,
            }
        }
        // What the readers handed the task before they stopped.
        while let Ok(ev) = up_rx.try_recv() {
            self.on_upstream_event(ev);
        }
        let open = self.slots.iter().flatten().filter(|s| s.is_open()).count();
        let busy = match (
            all_back && back.len() == open,
            self.busy(true, sink.adopts_shared),
        ) {
            (false, _) => Some("an upstream's reader did not give its socket back"),
            (true, busy) => busy,
        };
        if let Some(why) = busy {
            self.last_busy = why;
            self.resume_readers(back);
            return if late {
                self.give_up(&sink)
            } else {
                Step::NotYet
            };
        }
        // What A's tap holds is the successor's to parse, and what comes
        // after goes into A, which it reads (agent/tap.rs).
        if let Some(tap) = input.untap(&self.shared.dp, self.cookie) {
            let mut out = tap.read_out();
            loop {
                let Some(bytes) = out.next(a).await else {
                    tracing::warn!(
                        conn = self.id,
                        "handover: A's tap did not give every frame the verdict passed"
                    );
                    break;
                };
                self.reader.push(&bytes);
                let read = self
                    .consumed
                    .wrapping_add(self.reader.whole_messages())
                    .wrapping_add(out.own_messages());
                if !super::housekeeping::client_due(&self.shared.dp, self.cookie, read) {
                    break;
                }
            }
            self.reader.push(&out.own());
        }
        let buffered = self.reader.take_buffered();
        // the window the kernel handed endpoints counts in granted_resp
        self.settle_credit();
        let state = self.snapshot(&back, &buffered);
        let fds = std::iter::once(a.as_fd())
            .chain(back.iter().map(|(_, h)| h.stream.as_fd()))
            .map(|fd| fd.try_clone_to_owned())
            .collect::<std::io::Result<Vec<OwnedFd>>>();
        let fds = match fds {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(conn = self.id, error = %e, "handover: cannot duplicate the sockets");
                self.reader.push(&buffered);
                self.resume_readers(back);
                return self.give_up(&sink);
            }
        };
        let (reply, verdict) = oneshot::channel();
        sink.offer(Offer {
            id: self.id,
            state,
            fds,
            reply,
        });
        match tokio::time::timeout(VERDICT_LIMIT, verdict).await {
            Ok(Ok(Verdict::Adopted)) => {
                sink.handed(self.id);
                tracing::debug!(conn = self.id, "handed over");
                self.handed_over = true;
                self.park_shared_tickets();
                Step::Gone
            }
            Ok(Ok(Verdict::Refused(why))) => {
                tracing::info!(conn = self.id, why, "handover refused: drained instead");
                self.reader.push(&buffered);
                self.resume_readers(back);
                self.give_up(&sink)
            }
            Ok(Ok(Verdict::Unknown(why))) => self.left_to_successor(&sink, &why),
            Ok(Err(_)) | Err(_) => self.left_to_successor(&sink, "no answer"),
        }
    }

    /// A reader's socket once it gives it back, None past `deadline` (the
    /// reader then reads on: UpstreamEvent::ReadsOn). What the readers
    /// hand the task meanwhile is taken in, so none waits on READ_AHEAD
    /// for a task that waits on it.
    async fn handback(
        &mut self,
        mut rx: oneshot::Receiver<Handback>,
        up_rx: &mut mpsc::UnboundedReceiver<UpstreamEvent>,
        deadline: Instant,
    ) -> Option<Handback> {
        loop {
            tokio::select! {
                r = &mut rx => return r.ok(),
                Some(ev) = up_rx.recv() => self.on_upstream_event(ev),
                () = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// The successor may have the connection, or not: running it here too
    /// could interleave two agents' frames, so it is left alone.
    fn left_to_successor(&mut self, sink: &crate::agent::handover::give::Sink, why: &str) -> Step {
        tracing::error!(
            conn = self.id,
            why,
            "handover: the successor's answer is unknown; the connection is left to it"
        );
        sink.handed(self.id);
        self.handed_over = true;
        self.park_shared_tickets();
        Step::Gone
    }

    /// The successor drains this connection's upstreams through the
    /// multiplexers, which carry their streams until then: their tickets
    /// keep the multiplexers after the connection's task ends, and the
    /// agent waits for those upstreams to close before it exits.
    fn park_shared_tickets(&mut self) {
        for s in self.slots.iter_mut().flatten() {
            if s.is_shared() {
                if let Some(t) = s.ticket.take() {
                    self.shared.pools.park(t);
                }
            }
        }
    }

    fn give_up(&mut self, sink: &crate::agent::handover::give::Sink) -> Step {
        tracing::info!(
            conn = self.id,
            why = self.last_busy,
            "not handed over: no quiet point within {QUIET_LIMIT:?}; drained"
        );
        self.handover_given_up = true;
        sink.drained(self.id);
        Step::Drain
    }

    /// Readers that gave their sockets back read on (the offer failed).
    pub(super) fn resume_readers(&mut self, back: Vec<(u32, Handback)>) {
        for (slot, h) in back {
            self.spawn_resumed_reader(
                slot,
                h.stream,
                h.read_bytes,
                Resume {
                    messages: h.messages,
                    buffered: h.buffered,
                },
            );
        }
    }

    fn spawn_resumed_reader(&mut self, slot: u32, stream: TcpStream, read_bytes: u64, r: Resume) {
        // A slot closed meanwhile: its socket closes here, as it would have.
        let Some(s) = self.slots[slot as usize].as_mut().filter(|s| s.is_open()) else {
            return;
        };
        let joined = endpoint_socket::Joined {
            dp: self.shared.dp.clone(),
            cookie: s.cookie,
            read_bytes,
            conn: self.id,
            slot,
        };
        let (reader, ask) = endpoint_socket::spawn_reader(
            stream,
            None,
            joined,
            self.up_tx.clone(),
            s.dropped.subscribe(),
            s.holder.clone(),
            r,
        );
        s.reader = Some(reader);
        s.handback = Some(ask);
    }

    fn snapshot(&self, back: &[(u32, Handback)], buffered: &Bytes) -> ConnState {
        let slots = back
            .iter()
            .filter_map(|(slot, h)| {
                let s = self.slots[*slot as usize].as_ref()?;
                Some(SlotSnapshot {
                    slot: *slot,
                    endpoint: s.endpoint,
                    draining: matches!(s.state, SlotState::Draining { .. }),
                    cookie: s.cookie,
                    agent_req: s.agent_req,
                    granted_resp: s.granted_resp,
                    agent_resp: s.agent_resp,
                    max_streams: s.max_streams,
                    from_endpoint: s.from_endpoint,
                    release_sent: s.release_sent,
                    reader_messages: h.messages,
                    reader_buffered: h.buffered.to_vec(),
                    read_bytes: h.read_bytes,
                    through_multiplexer: s.is_shared(),
                })
            })
            .collect();
        ConnState {
            service: self.service.name.clone(),
            vip: self.service.vip,
            client: self.peer,
            cookie: self.cookie,
            consumed: self.consumed,
            gate_sent: self.gate_sent,
            acked: self.acked,
            client_settings_seen: self.client_settings_seen,
            first_slot: self.first_slot,
            last_stream: self.last_stream,
            read_bytes: self.read_bytes,
            advertised_streams: self.advertised_streams,
            windows: self.windows.to_state(),
            subset_offset: self.subset.offset() as u64,
            subset_last_stream: self.subset.last_stream(),
            unhold_sent: self.held.unhold_sent(),
            buffered: buffered.to_vec(),
            slots,
        }
    }

    /// The connection as the agent before this one left it; `upstreams`
    /// are the slots' sockets in the order of `st.slots` (checked by the
    /// caller: ConnState::validate and the sockets' cookies).
    pub(crate) fn from_state(
        id: u32,
        shared: Arc<Shared>,
        service: Arc<ServiceState>,
        st: &ConnState,
        upstreams: Vec<TcpStream>,
    ) -> ClientConn {
        let now = Instant::now();
        // its sockets are in the maps already: A and its upstreams
        let room = shared.dp.count_room(1 + st.slots.len());
        let mut c = ClientConn::new(id, shared, service, room);
        c.peer = st.client;
        c.cookie = st.cookie;
        c.consumed = st.consumed;
        c.gate_sent = st.gate_sent;
        c.acked = st.acked;
        c.client_settings_seen = st.client_settings_seen;
        c.first_slot = st.first_slot;
        c.last_stream = st.last_stream;
        c.read_bytes = st.read_bytes;
        c.advertised_streams = st.advertised_streams;
        c.windows = super::windows::ClientWindows::from_state(&st.windows);
        c.subset =
            super::subset::Subset::resumed(st.subset_offset as usize, st.subset_last_stream, now);
        c.held = super::held::HeldStreams::resumed(st.unhold_sent, now);
        c.before_preface = None;
        c.reader = MessageReader::new(Expect::Frames);
        c.reader.push(&st.buffered);
        for (s, stream) in st.slots.iter().zip(upstreams) {
            let holder = c.shares.endpoint(&c.shared.budget, id, s.slot);
            let mut slot = Slot::connecting(s.endpoint, &c.shares.client, holder);
            // An upstream through the multiplexer of the agent before this
            // one drains: that agent carries its streams until it closes,
            // and the endpoint gets an upstream of this agent's (reconnect).
            slot.state = match s.draining || s.through_multiplexer {
                true => SlotState::Draining { since: now },
                false => SlotState::Active,
            };
            if s.through_multiplexer {
                c.kernel
                    .up(s.slot)
                    .state
                    .store(UP_DRAINING, std::sync::atomic::Ordering::SeqCst);
            }
            slot.cookie = s.cookie;
            slot.agent_req = s.agent_req;
            slot.granted_resp = s.granted_resp;
            slot.agent_resp = s.agent_resp;
            slot.max_streams = s.max_streams;
            slot.from_endpoint = s.from_endpoint;
            slot.release_sent = s.release_sent;
            // its own connection to the endpoint counts as one here
            slot.ticket = Some(match s.through_multiplexer {
                true => crate::agent::pool::Pools::inherited(s.endpoint),
                false => c.shared.pools.adopted(s.endpoint),
            });
            c.slots[s.slot as usize] = Some(slot);
            let resume = Resume {
                messages: s.reader_messages,
                buffered: Bytes::from(s.reader_buffered.clone()),
            };
            c.resumed.push((s.slot, stream, s.read_bytes, resume));
        }
        c.adopted = true;
        c
    }

    /// An adopted connection's first moves (run): its readers read on, the
    /// Service's endpoints it has no upstream to get one, and whatever the
    /// kernel signalled while no agent listened is looked at.
    pub(super) fn start_adopted(&mut self) {
        for (slot, stream, read_bytes, r) in std::mem::take(&mut self.resumed) {
            self.spawn_resumed_reader(slot, stream, read_bytes, r);
        }
        let endpoints = self.service.endpoints.borrow().clone();
        self.reconcile(&endpoints);
        self.publish_upstreams();
        self.on_wake();
    }
}

/// Runs a connection taken from the agent before this one, in `shared`
/// (the adopted generation's), until it ends.
pub(crate) async fn serve_adopted(
    shared: Arc<Shared>,
    id: u32,
    service: Arc<ServiceState>,
    st: ConnState,
    a: TcpStream,
    upstreams: Vec<TcpStream>,
) {
    let (wake_tx, wake_rx) = mpsc::unbounded_channel();
    shared.registry.register_conn(
        crate::agent::registry::ConnInfo {
            id,
            service: service.name.clone(),
            client: st.client.to_string(),
            fast: true,
            adopted: true,
            ..Default::default()
        },
        wake_tx,
    );
    let mut conn = ClientConn::from_state(id, shared.clone(), service, &st, upstreams);
    // an adopted A's frames go into its own ingress until it has a tap
    if let Err(e) = conn.run(a, wake_rx, None).await {
        tracing::debug!(conn = id, error = %e, "adopted client connection ended");
    }
    super::accept::finish(&shared, conn);
}
