//! A connection's part in the node's budget (budget.rs): what it holds is
//! charged to its holders, the client's and one per upstream; a holder the
//! budget cuts gets its connection error here; and a connection whose
//! frames pile up in the injector reads no more from its peers until they
//! are written.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use super::{ClientConn, Target};
use crate::agent::budget::{Budget, Holder, Side};
use crate::agent::injector::{Injector, Owed};
use crate::ebpf::abi::MAX_UPSTREAMS;
use crate::h2::frame::error_code;

/// Bytes of one connection's frames that may wait for the injector's
/// writer before the connection stops reading: 16 full windows' worth of
/// responses the agent carries, so only a stalled injector reaches it (its
/// loopback socket full while the kernel's work items run late), and the
/// peers then wait in TCP instead of in the agent.
const MAX_INJECTOR_BACKLOG: usize = 1 << 20;

pub(super) struct Shares {
    /// Notified when the budget cuts one of this connection's holders.
    pub wake: Arc<Notify>,
    pub client: Arc<Holder>,
    /// This connection's bytes waiting for the injector's writer.
    injected: Arc<AtomicUsize>,
}

impl Shares {
    pub fn new(budget: &Arc<Budget>, conn: u32) -> Shares {
        let wake = Arc::new(Notify::new());
        Shares {
            client: budget.holder(Side::Client { conn }, wake.clone()),
            wake,
            injected: Arc::default(),
        }
    }

    /// A holder for what one upstream's endpoint sends.
    pub fn endpoint(&self, budget: &Arc<Budget>, conn: u32, slot: u32) -> Arc<Holder> {
        budget.holder(Side::Endpoint { conn, slot }, self.wake.clone())
    }

    /// Frames for the client, charged to it until written.
    pub fn to_client(&self, injector: &Injector, conn: u32, frames: &[u8]) {
        let owed = Owed::new(&self.client, &self.injected, frames.len());
        injector.send(conn, Target::Client, frames, Some(owed));
    }
}

impl ClientConn {
    /// Frames for the client or an upstream, through the injector; what
    /// waits there is charged to the holder the frames answer (the client,
    /// or the upstream they go to).
    pub(super) fn inject(&self, target: Target, frames: &[u8]) {
        let holder = match target {
            Target::Client => None,
            Target::Upstream(slot) => self.slots[slot as usize].as_ref().map(|s| &s.holder),
        };
        match holder {
            Some(h) => {
                let owed = Owed::new(h, &self.shares.injected, frames.len());
                self.shared
                    .injector
                    .send(self.id, target, frames, Some(owed));
            }
            None => self
                .shares
                .to_client(&self.shared.injector, self.id, frames),
        }
    }

    /// Bytes of this connection still waiting for the injector's writer.
    pub(super) fn injector_backlog(&self) -> usize {
        self.shares.injected.load(Ordering::SeqCst)
    }

    pub(super) fn injector_backed_up(&self) -> bool {
        self.shares.injected.load(Ordering::SeqCst) > MAX_INJECTOR_BACKLOG
    }

    /// The budget picked one of this connection's holders: the client gets
    /// GOAWAY ENHANCE_YOUR_CALM (and what it queued goes at once, so the
    /// budget can move on), an upstream is dropped with the same code.
    pub(super) fn on_budget_cut(&mut self) {
        if self.shares.client.is_cut() {
            tracing::warn!(
                conn = self.id,
                bytes = self.shares.client.bytes(),
                "client connection cut for the node's budget: GOAWAY ENHANCE_YOUR_CALM"
            );
            for s in self.slots.iter_mut().flatten() {
                s.to_endpoint.clear();
                s.to_client.clear();
            }
            return self.fail(error_code::ENHANCE_YOUR_CALM);
        }
        for slot in 0..MAX_UPSTREAMS as u32 {
            let cut = self.slots[slot as usize]
                .as_ref()
                .is_some_and(|s| s.holder.is_cut() && !s.flooded);
            if cut {
                self.drop_endpoint(
                    slot,
                    error_code::ENHANCE_YOUR_CALM,
                    "holds the most queued bytes while the node is over --max-queued-bytes",
                );
            }
        }
    }
}
