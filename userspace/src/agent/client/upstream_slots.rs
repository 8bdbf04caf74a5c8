//! The upstreams of one client connection: connecting, joining the kernel's
//! maps, following the Service's endpoints, draining, reconnecting, closing.

use super::kernel::ConnKernel;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::BytesMut;

use super::stream_end::{self, Gone, StreamEnd};
use super::{ClientConn, Slot, SlotState};
use crate::agent::endpoint_socket;
use crate::agent::metrics_counts::SIDE_AGENT;
use crate::agent::pool::UpstreamTicket;
use crate::ebpf::abi::*;
use crate::h2::frame::{self, DEFAULT_WINDOW};

impl ClientConn {
    pub(super) fn add_endpoint(&mut self, endpoint: SocketAddr) {
        self.add_upstream(endpoint, None, None);
    }

    /// A new upstream to `endpoint`: with `seat`, a dedicated one that
    /// replaces slot `replaces`, through a multiplexer, once it is up
    /// (seat.rs); without, with what the pool gives.
    pub(super) fn add_upstream(
        &mut self,
        endpoint: SocketAddr,
        seat: Option<UpstreamTicket>,
        replaces: Option<u32>,
    ) {
        let free = |s: &Option<Slot>| s.as_ref().is_none_or(Slot::is_free);
        // the endpoint's own closed slot first: it carries the failure count
        let own = self
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.endpoint == endpoint) && free(s));
        let Some(slot) = own.or_else(|| self.slots.iter().position(free)) else {
            // every slot busy, one still draining: tried again on a later tick
            tracing::debug!(conn = self.id, %endpoint, "no free upstream slot");
            return;
        };
        // A and every upstream with a socket, this one included, must fit
        // in what the connection claimed of the per-socket maps (a Service
        // that grew since the accept needs more): otherwise tried again on
        // a later tick, and the streams go to the upstreams it has.
        let sockets = 2 + self.slots.iter().flatten().filter(|s| !s.is_free()).count();
        if !self.room.grow_to(sockets) {
            tracing::debug!(conn = self.id, %endpoint, "no room in the per-socket maps for another upstream");
            return;
        }
        // Counted among the node's upstreams to the endpoint; past the
        // dedicated ones it dials the endpoint's multiplexer (pool.rs).
        let ticket = match seat.map_or_else(
            || self.shared.pools.ticket(endpoint, Some(&self.seat.asked)),
            Ok,
        ) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(conn = self.id, %endpoint, error = %e, "no multiplexer for the endpoint");
                return;
            }
        };
        let dial = ticket.dial();
        let failures = self.slots[slot]
            .as_ref()
            .filter(|s| s.endpoint == endpoint)
            .map_or(0, |s| s.failures);
        let holder = self
            .shares
            .endpoint(&self.shared.budget, self.id, slot as u32);
        let id = (self.endpoints()).id(&self.service.name, endpoint);
        self.kernel
            .up(slot as u32)
            .endpoint
            .store(id, Ordering::SeqCst);
        let mut fresh = Slot::connecting(endpoint, &self.shares.client, holder);
        fresh.failures = failures;
        fresh.ticket = Some(ticket);
        fresh.replaces = replaces;
        self.slots[slot] = Some(fresh);
        let tx = self.connect_tx.clone();
        let window = self.windows.initial();
        let limit = self.shared.connect_timeout;
        tokio::spawn(async move {
            let r = endpoint_socket::connect(dial, window, limit).await;
            let _ = tx.send((slot as u32, r));
        });
    }

    pub(super) fn on_connected(
        &mut self,
        slot: u32,
        result: anyhow::Result<endpoint_socket::Handshake>,
    ) {
        let id = self.id;
        let Some(s) = self.slots[slot as usize].as_mut() else {
            return;
        };
        if s.state != SlotState::Connecting {
            return; // removed while connecting
        }
        let hs = match result {
            Ok(hs) => hs,
            Err(e) => {
                tracing::warn!(conn = id, endpoint = %s.endpoint, error = %format!("{e:#}"), "upstream failed");
                let endpoint = self.kernel.up(slot).endpoint.load(Ordering::SeqCst);
                let why = format!("{e:#}");
                self.shared
                    .registry
                    .endpoints
                    .connect_failed(endpoint, &why);
                return self.upstream_never_opened(slot);
            }
        };
        let dp = &self.shared.dp;
        // Fresh counters before the socket joins the map: from then on the
        // programs update them (a WINDOW_UPDATE may already be on its way).
        let up = self.kernel.up(slot);
        reset_upstream(
            up,
            DEFAULT_WINDOW as u64 + hs.extra_window as u64,
            hs.max_streams,
        );
        up.stream_window_extra.store(
            super::stream_window::extra_for(hs.stream_window),
            Ordering::SeqCst,
        );
        let cookie = crate::ebpf::socket_cookie(&hs.stream).unwrap_or(0);
        let mut tap = None;
        let joined = (|| -> anyhow::Result<()> {
            anyhow::ensure!(cookie != 0, "the upstream socket has no cookie");
            dp.set_ident(
                cookie,
                SockIdent {
                    conn_id: id,
                    role: ROLE_UPSTREAM,
                    slot,
                    generation: 0,
                },
            )?;
            // its tap before it joins: none of its frames for the agent
            // goes into its own ingress (agent/tap.rs)
            tap = crate::agent::tap::Tap::open(dp, cookie);
            dp.insert_upstream(id, slot, &hs.stream)?;
            Ok(())
        })();
        if let Err(e) = joined {
            // A map the claim did not foresee is full (parser states of
            // sockets that closed and are not swept yet): the socket goes,
            // with what it wrote, and the endpoint is tried again with the
            // backoff of a failed connect; its streams go elsewhere.
            tracing::warn!(conn = id, endpoint = %s.endpoint, error = %format!("{e:#}"), "cannot hand the upstream to the kernel");
            dp.forget_cookie(cookie);
            return self.upstream_never_opened(slot);
        }
        s.cookie = cookie;
        s.failures = 0;
        let ep_id = self.kernel.up(slot).endpoint.load(Ordering::SeqCst);
        self.shared.registry.endpoints.connected(ep_id);
        s.max_streams = hs.max_streams;
        s.state = SlotState::Active;
        let joined = endpoint_socket::Joined {
            dp: self.shared.dp.clone(),
            cookie,
            read_bytes: hs.read_bytes,
            conn: id,
            slot,
        };
        let (reader, handback) = endpoint_socket::spawn_reader(
            hs.stream,
            tap,
            joined,
            self.up_tx.clone(),
            s.dropped.subscribe(),
            s.holder.clone(),
            endpoint_socket::Resume::default(),
        );
        s.reader = Some(reader);
        s.handback = Some(handback);
        self.kernel
            .up(slot)
            .state
            .store(UP_ACTIVE, Ordering::SeqCst);
        self.grant_streams_waiting_for(slot);
        self.dispatch_held();
        if self.windows.initial() != DEFAULT_WINDOW {
            let mut out = BytesMut::new();
            frame::settings(
                &mut out,
                &endpoint_socket::our_settings(self.windows.initial()),
            );
            self.send_to_upstream(slot, &out);
        }
        self.flush_to_endpoint(slot);
        // A seat's upstream is up: the one through the multiplexer takes no
        // new stream and closes once its streams have ended.
        let replaced = self.slots[slot as usize]
            .as_mut()
            .and_then(|s| s.replaces.take());
        if let Some(old) = replaced {
            let endpoint = self.slots[slot as usize].as_ref().map(|s| s.endpoint);
            let same = self.slots[old as usize]
                .as_ref()
                .is_some_and(|o| o.state == SlotState::Active && Some(o.endpoint) == endpoint);
            if same {
                self.drain_slot(old);
            }
        }
        self.on_wake();
        self.publish_upstreams();
        self.advertise_stream_limit();
        self.maybe_open_gate();
    }

    /// An upstream that never became usable: tried again with backoff, and
    /// the streams that waited for it (none of which reached it) are
    /// refused, or go to the other endpoints.
    fn upstream_never_opened(&mut self, slot: u32) {
        if let Some(s) = self.slots[slot as usize].as_mut() {
            s.close();
            s.failures += 1;
        }
        self.end_slot_streams(slot, Gone::NeverOpened);
        self.dispatch_held();
        self.maybe_open_gate();
    }

    /// Endpoints still in the Service whose upstream failed or closed are
    /// tried again with backoff.
    pub(super) fn reconnect(&mut self) {
        let endpoints = self.subset.wanted(&self.service.endpoints.borrow());
        for ep in endpoints {
            let mut mine = self.slots.iter().flatten().filter(|s| s.endpoint == ep);
            let usable = mine.clone().any(|s| s.takes_streams());
            let due = mine.all(|s| s.retry_due());
            if !usable && due {
                self.add_endpoint(ep);
            }
        }
    }

    /// Follows the Service's endpoints (all of them, or this connection's
    /// window over them: subset.rs): upstreams to endpoints no longer
    /// wanted drain, wanted ones without an upstream get one.
    pub(super) fn reconcile(&mut self, endpoints: &[SocketAddr]) {
        let endpoints = &self.subset.wanted(endpoints)[..];
        for slot in 0..MAX_UPSTREAMS {
            let Some(s) = self.slots[slot].as_mut() else {
                continue;
            };
            if s.takes_streams() && !endpoints.contains(&s.endpoint) {
                self.drain_slot(slot as u32);
            }
        }
        for ep in endpoints {
            let present = self
                .slots
                .iter()
                .flatten()
                .any(|s| s.endpoint == *ep && s.takes_streams());
            if !present {
                self.add_endpoint(*ep);
            }
        }
        self.publish_upstreams();
    }

    /// No new stream goes to the upstream; it closes once idle (on_tick).
    pub(super) fn drain_slot(&mut self, slot: u32) {
        let Some(s) = self.slots[slot as usize].as_mut() else {
            return;
        };
        if s.state == SlotState::Connecting {
            s.state = SlotState::Closed;
        } else {
            s.state = SlotState::Draining {
                since: tokio::time::Instant::now(),
            };
        }
        self.kernel
            .up(slot)
            .state
            .store(UP_DRAINING, Ordering::SeqCst);
    }

    pub(super) fn close_slot(&mut self, slot: u32) {
        self.kernel.up(slot).state.store(UP_EMPTY, Ordering::SeqCst);
        let Some(s) = self.slots[slot as usize].as_mut() else {
            return;
        };
        let cookie = s.cookie;
        s.close();
        self.shared.dp.forget_cookie(cookie);
    }

    /// Ends the streams of an upstream that is gone, each with what the
    /// client may know of it (stream_end.rs).
    pub(super) fn end_slot_streams(&mut self, slot: u32, gone: Gone) {
        let last = gone.above();
        let mut out = BytesMut::new();
        for (stream, entry) in self.kernel.take_streams_of(slot, last) {
            self.carried.end(stream);
            self.kernel.up(slot).streams.fetch_sub(1, Ordering::SeqCst);
            let end = stream_end::stream_end(Some(entry.flags), gone);
            stream_end::write(&mut out, stream, end);
            self.count_stream_end(entry.endpoint, end);
            self.count_ended(&entry);
        }
        let endpoint = self.slot_endpoint(slot);
        for stream in self.carried.take_above(slot, last) {
            let end = stream_end::stream_end(None, gone);
            stream_end::write(&mut out, stream, end);
            self.count_stream_end(endpoint, end);
        }
        if last == 0 {
            if let Some(s) = self.slots[slot as usize].as_mut() {
                s.to_endpoint.clear();
            }
        }
        if !out.is_empty() {
            self.send_to_client(&out);
        }
    }

    fn count_stream_end(&self, endpoint: u32, end: StreamEnd) {
        match end {
            StreamEnd::Reset(code) => (self.endpoints()).reset(endpoint, SIDE_AGENT, code),
            StreamEnd::BadGateway { .. } => (self.endpoints()).lost(endpoint),
        }
    }
}

/// The kernel's view of an upstream slot, as a new upstream starts in it.
/// `streams` is left alone: streams the agent routed to the slot while it
/// was connecting are already counted there.
pub(super) fn reset_upstream(up: &UpstreamShared, req_limit: u64, max_streams: u32) {
    up.state.store(UP_EMPTY, Ordering::SeqCst);
    up.req_data.store(0, Ordering::SeqCst);
    up.req_limit.store(req_limit, Ordering::SeqCst);
    up.req_notify.store(u64::MAX, Ordering::SeqCst);
    up.resp_data.store(0, Ordering::SeqCst);
    up.resp_notify.store(u64::MAX, Ordering::SeqCst);
    up.diverted.store(0, Ordering::SeqCst);
    up.max_streams.store(max_streams, Ordering::SeqCst);
    up.passed.store(0, Ordering::SeqCst);
    up.last_diverted.store(0, Ordering::SeqCst);
    up.consumed.store(0, Ordering::SeqCst);
    up.release.store(0, Ordering::SeqCst);
    up.stream_window_extra.store(0, Ordering::SeqCst);
    up.refused.store(0, Ordering::SeqCst);
    up.credit_room.store(0, Ordering::SeqCst);
}
