//! Connection-level flow control, shared with the kernel's counters: no
//! endpoint receives more than it granted, the client never receives more
//! than it granted, and so no upstream's queue grows without bound (ebpf/README.md R2).

use std::sync::atomic::Ordering;

use bytes::BytesMut;

use super::grants::{credit_room, credit_taken, plan_grants, EndpointWindow};
use super::kernel::ConnKernel;
use super::windows::req_notify_after;
use super::ClientConn;
use crate::ebpf::abi::{STREAM_CLIENT_END, STREAM_SERVER_END};
use crate::h2::frame;
use crate::h2::frame::data_len;
use crate::h2::message::Message;

impl ClientConn {
    /// Sends the frames waiting for an endpoint, in order, as its window allows.
    pub(super) fn flush_to_endpoint(&mut self, slot: u32) {
        let up = self.kernel.up(slot);
        let Some(s) = self.slots[slot as usize].as_mut() else {
            return;
        };
        if !s.is_open() {
            return;
        }
        let mut out = BytesMut::new();
        while let Some(n) = s.to_endpoint.front().map(|f| data_len(f)) {
            if n > 0 && !s.take_req_window(up, n) {
                break;
            }
            if let Some(front) = s.to_endpoint.pop_front() {
                out.extend_from_slice(&front);
            }
        }
        if !out.is_empty() {
            self.inject(super::Target::Upstream(slot), &out);
            self.replenish_client();
        }
        self.release_streams(slot);
    }

    /// Slowed streams of this slot with nothing left in the agent go back
    /// to the kernel once it has handed over nothing newer of them (the
    /// release travels through the injector, behind what was sent).
    fn release_streams(&mut self, slot: u32) {
        let Some(s) = self.slots[slot as usize].as_ref() else {
            return;
        };
        let waiting: std::collections::HashSet<u32> = s
            .to_endpoint
            .iter()
            .filter_map(|f| frame::FrameHeader::parse(f))
            .map(|h| h.stream)
            .collect();
        self.carried
            .release_drained(slot, &waiting, &self.kernel, self.consumed);
    }

    /// Called on kernel events, window updates and new upstreams.
    pub(super) fn on_wake(&mut self) {
        self.dispatch_held();
        for slot in 0..self.slots.len() as u32 {
            self.flush_to_endpoint(slot);
            self.flush_to_client(slot);
        }
        self.replenish_client();
        self.grant_endpoints();
    }

    /// Counts DATA the agent was handed; false once the client has sent more
    /// than the connection window it was granted.
    pub(super) fn client_within_window(&mut self, n: u64) -> bool {
        let c = self.kernel.conn();
        let kernel: u64 = c.up.iter().map(|u| u.req_data.load(Ordering::SeqCst)).sum();
        self.windows.receive(n, kernel)
    }

    /// Gives the client connection window as the endpoints have room
    /// (windows.rs, `replenish`), and re-arms the kernel's wake-ups on the
    /// DATA it carries.
    fn replenish_client(&mut self) {
        let c = self.kernel.conn();
        let mut kernel_received = 0;
        let mut room = 0u64;
        let active = self.slots.iter().flatten().filter(|s| s.is_open()).count() as u64;
        for (slot, s) in self.slots.iter().enumerate() {
            let up = &c.up[slot];
            let kernel = up.req_data.load(Ordering::SeqCst);
            kernel_received += kernel;
            if s.as_ref().is_some_and(|s| s.is_open()) {
                room += up.req_limit.load(Ordering::SeqCst).saturating_sub(kernel);
                // Re-arm so that the kernel's share alone cannot use a quarter
                // of the window without waking us.
                up.req_notify
                    .store(kernel + req_notify_after(active), Ordering::SeqCst);
            }
        }
        let queued: u64 = self
            .slots
            .iter()
            .flatten()
            .flat_map(|s| s.to_endpoint.iter())
            .map(|f| data_len(f))
            .sum::<u64>()
            + self.held.data_bytes();
        if let Some(inc) = self.windows.replenish(room, queued, kernel_received) {
            let mut out = BytesMut::new();
            frame::window_update(&mut out, 0, inc);
            self.send_to_client(&out);
        }
    }

    /// Grants each endpoint response window as the client's connection
    /// window allows (grants.rs, `plan_grants`). Endpoints start with
    /// 65,535 bytes each whatever the client granted, so the sum can exceed
    /// the client's window; the kernel then diverts the overflow to the
    /// agent (and back once the agent has sent it on) instead of sending
    /// the client more than it allowed.
    pub(super) fn grant_endpoints(&mut self) {
        self.grant_pass(false);
    }

    /// A busy endpoint has had no window for DRY_WAIT (grants.rs): if
    /// nothing reached the client meanwhile, it gets its share anyway.
    pub(super) fn on_dry_due(&mut self) {
        let received = self.kernel.conn().client_recv.load(Ordering::SeqCst);
        if self
            .windows
            .dry
            .starved(received, tokio::time::Instant::now())
        {
            self.grant_pass(true);
        }
    }

    fn grant_pass(&mut self, starved: bool) {
        self.settle_credit();
        let c = self.kernel.conn();
        let received = c.client_recv.load(Ordering::SeqCst);
        let client_left = c
            .client_limit
            .load(Ordering::SeqCst)
            .saturating_sub(received);
        let mut slots = Vec::new();
        let mut endpoints = Vec::new();
        for (slot, s) in self.slots.iter().enumerate() {
            let Some(s) = s.as_ref().filter(|s| s.is_open()) else {
                continue;
            };
            let up = &c.up[slot];
            slots.push(slot);
            endpoints.push(EndpointWindow {
                outstanding: s.resp_outstanding(up),
                busy: up.streams.load(Ordering::Relaxed) > 0,
                // a divert must run dry so the agent catches up and it can end
                grantable: up.diverted.load(Ordering::SeqCst) == 0 || s.caught_up(up),
            });
        }
        let plan = plan_grants(client_left, &endpoints, starved);
        (self.windows.dry).pass(plan.dry, received, tokio::time::Instant::now());
        let mut grants = Vec::new();
        for (&slot, grant) in slots.iter().zip(plan.grants) {
            let (Some((inc, notify_after)), Some(s)) = (grant, self.slots[slot].as_mut()) else {
                continue;
            };
            let up = &c.up[slot];
            up.resp_notify.store(
                up.resp_data.load(Ordering::SeqCst) + notify_after,
                Ordering::SeqCst,
            );
            s.granted_resp += inc;
            if plan.kernel_credit {
                s.credit_room_set = credit_room(s.resp_outstanding(up));
                up.credit_room.store(s.credit_room_set, Ordering::SeqCst);
            }
            if inc > 0 {
                grants.push((slot as u32, inc as u32));
            }
        }
        for (slot, inc) in grants {
            let mut out = BytesMut::new();
            frame::window_update(&mut out, 0, inc);
            self.send_to_upstream(slot, &out);
        }
    }

    /// Counts as granted what the client verdict handed each endpoint of
    /// the client's WINDOW_UPDATEs since the agent last looked, and leaves
    /// the kernel no room until `grant_endpoints` sets it again: a room is
    /// the agent's to hand out only while it knows what was taken of it.
    /// Also before a handover, so the successor starts from a room of 0.
    pub(super) fn settle_credit(&mut self) {
        let c = self.kernel.conn();
        for (slot, s) in self.slots.iter_mut().enumerate() {
            let left = c.up[slot].credit_room.swap(0, Ordering::SeqCst);
            if let Some(s) = s.as_mut() {
                s.granted_resp += credit_taken(s.credit_room_set, left);
                s.credit_room_set = 0;
            }
        }
    }

    /// Endpoint frames diverted to the agent go on as the client's window allows.
    pub(super) fn flush_to_client(&mut self, slot: u32) {
        let id = self.id;
        let c = self.kernel.conn();
        let Some(s) = self.slots[slot as usize].as_mut() else {
            return;
        };
        let mut out = BytesMut::new();
        while let Some(Message::Frame { bytes, .. }) = s.to_client.front() {
            let n = data_len(bytes);
            if n > 0 {
                let recv = c.client_recv.fetch_add(n, Ordering::SeqCst) + n;
                if recv > c.client_limit.load(Ordering::SeqCst) {
                    c.client_recv.fetch_sub(n, Ordering::SeqCst);
                    break;
                }
                s.agent_resp += n;
            }
            out.extend_from_slice(bytes);
            s.to_client.pop_front();
        }
        if !out.is_empty() {
            // diverted frames exist only after the preface: the greeting is out
            self.shares.to_client(&self.shared.injector, id, &out);
        }
        // Nothing of this upstream left in the agent: the kernel may carry
        // its frames again (the release is queued behind what was sent).
        let up = &c.up[slot as usize];
        if s.to_client.is_empty()
            && up.diverted.load(Ordering::SeqCst) != 0
            && s.release_sent != Some(s.from_endpoint)
        {
            s.release_sent = Some(s.from_endpoint);
            self.kernel.release_upstream(slot, s.from_endpoint);
        }
    }

    /// One side of a stream the agent carried has ended (`end` is
    /// STREAM_CLIENT_END or STREAM_SERVER_END); with both, or a reset, the
    /// entry goes, and the slot's count drops once even if the kernel races.
    pub(super) fn stream_end(&mut self, stream: u32, slot: u32, end: u32, reset: bool) {
        let Some(mut s) = self.kernel.get_stream(stream) else {
            self.carried.end(stream);
            return;
        };
        s.flags |= end;
        let both = STREAM_CLIENT_END | STREAM_SERVER_END;
        if reset || s.flags & both == both {
            if self.kernel.remove_stream(stream) {
                self.kernel.up(slot).streams.fetch_sub(1, Ordering::SeqCst);
                self.count_ended(&s);
            }
            self.carried.end(stream);
        } else {
            let _ = self.kernel.set_stream(stream, s);
        }
    }
}
