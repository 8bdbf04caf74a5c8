//! The node-wide bound on the bytes the agent queues (`--max-queued-bytes`).
//!
//! Every queue the agent keeps for a peer is bounded on its own (FrameQueue,
//! the reader-to-connection channel, the injector backlog), but thousands
//! of connections each within their bounds can still hold more than a node
//! can give: one tenant's many slow connections would take the memory the
//! other tenants' connections need. Like Envoy's overload manager, the
//! agent then sheds the largest holder and stops taking new connections:
//!
//! * the total passes the budget: the holder with the most queued bytes is
//!   cut (a client connection gets GOAWAY ENHANCE_YOUR_CALM, an upstream is
//!   dropped with the same code), one at a time: the next is picked once the
//!   last one has let go of its bytes, so one excess never costs two holders;
//! * from then until the total is back under three quarters of the budget,
//!   new client connections stay on their original path (fail_open.rs); the
//!   gap keeps admission from flapping at the limit.
//!
//! The state lives here only; holders are handles the queues charge.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// What one queued message costs beyond its bytes (its allocation, its
/// queue entry): 64 MiB of 9-byte frames are 7 million messages, several
/// times their bytes in memory.
pub const MESSAGE_OVERHEAD: usize = 128;

/// How long a holder that was cut may take to let go of its bytes before
/// the next one is picked (a task that is slow to run is not waited for).
const CUT_PATIENCE: Duration = Duration::from_secs(1);

/// Who holds queued bytes, and so who answers for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A client connection: what it sent that waits for an endpoint, and
    /// the agent's frames for it not yet written.
    Client { conn: u32 },
    /// One upstream of a client connection: what its endpoint sent that
    /// waits for the client, or for the connection's task.
    Endpoint { conn: u32, slot: u32 },
    /// A local connection of an endpoint's multiplexer (agent/pool): what
    /// it holds of its streams' bodies both ways. Cut, the local
    /// connection, which is a client connection's upstream, goes with
    /// GOAWAY ENHANCE_YOUR_CALM; the shared connections stay.
    Multiplexer { endpoint: std::net::SocketAddr },
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct BudgetStatus {
    pub max_queued_bytes: u64,
    pub queued_bytes: u64,
    pub peak_queued_bytes: u64,
    /// New connections now stay on their original path.
    pub over: bool,
    pub cut_clients: u64,
    pub cut_endpoints: u64,
    /// Connections left on their original path while over the budget.
    pub fail_open: u64,
}

pub struct Budget {
    limit: usize,
    total: AtomicUsize,
    peak: AtomicUsize,
    refusing: AtomicBool,
    /// The holder cut last, until it let go of its bytes.
    cutting: Mutex<Option<(u64, Instant)>>,
    /// The id of the last cut holder whose bytes are all out of `total`
    /// (0: none). Stored after its bytes left the total, so a picker that
    /// sees it reads a total without them.
    let_go: AtomicU64,
    holders: Mutex<HashMap<u64, Weak<Holder>>>,
    next_id: AtomicU64,
    cut_clients: AtomicU64,
    cut_endpoints: AtomicU64,
    fail_open: AtomicU64,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("limit", &self.limit)
            .field("total", &self.total.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            total: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            refusing: AtomicBool::new(false),
            cutting: Mutex::new(None),
            let_go: AtomicU64::new(0),
            holders: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            cut_clients: AtomicU64::new(0),
            cut_endpoints: AtomicU64::new(0),
            fail_open: AtomicU64::new(0),
        })
    }

    /// A new holder; `wake` is notified when it is cut.
    pub fn holder(self: &Arc<Self>, side: Side, wake: Arc<Notify>) -> Arc<Holder> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let h = Arc::new(Holder {
            id,
            side,
            bytes: AtomicUsize::new(0),
            cut: AtomicBool::new(false),
            wake,
            budget: self.clone(),
        });
        lock(&self.holders).insert(id, Arc::downgrade(&h));
        h
    }

    /// Whether a new connection must stay on its original path; counted.
    pub fn refuse_new(&self) -> bool {
        let refuse = self.refusing.load(Ordering::SeqCst);
        if refuse {
            self.fail_open.fetch_add(1, Ordering::Relaxed);
        }
        refuse
    }

    pub fn status(&self) -> BudgetStatus {
        BudgetStatus {
            max_queued_bytes: self.limit as u64,
            queued_bytes: self.total.load(Ordering::Relaxed) as u64,
            peak_queued_bytes: self.peak.load(Ordering::Relaxed) as u64,
            over: self.refusing.load(Ordering::Relaxed),
            cut_clients: self.cut_clients.load(Ordering::Relaxed),
            cut_endpoints: self.cut_endpoints.load(Ordering::Relaxed),
            fail_open: self.fail_open.load(Ordering::Relaxed),
        }
    }

    fn changed(&self, total: usize, may_cut: bool) {
        self.peak.fetch_max(total, Ordering::Relaxed);
        let was = self.refusing.load(Ordering::SeqCst);
        let now = refusing(was, total, self.limit);
        if now != was
            && self
                .refusing
                .compare_exchange(was, now, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            if now {
                tracing::warn!(
                    queued = total,
                    limit = self.limit,
                    "queued bytes over --max-queued-bytes: new connections stay on their original path, the largest holder is cut"
                );
            } else {
                tracing::info!(
                    queued = total,
                    limit = self.limit,
                    "queued bytes back under three quarters of --max-queued-bytes: new connections are balanced again"
                );
            }
        }
        if may_cut && total > self.limit {
            self.cut_largest();
        }
    }

    fn cut_largest(&self) {
        // Reentrant calls (a holder dropped while we pick) and concurrent
        // ones find it taken: one picker at a time is enough.
        let Ok(mut cutting) = self.cutting.try_lock() else {
            return;
        };
        // The last victim counts as holding until its bytes are out of the
        // total, not until it is out of the holder list: a victim whose last
        // Arc is gone no longer upgrades, but its Drop has not yet taken its
        // bytes off the total, and a second holder was cut for an excess
        // the first had covered (185 us after the first cut, 12 us after
        // the first victim's upstream closed).
        if let Some((id, at)) = *cutting {
            if self.let_go.load(Ordering::SeqCst) != id && at.elapsed() < CUT_PATIENCE {
                return;
            }
        }
        // Read only now, after the victim's release: the total that sent us
        // here may be stale.
        if self.total.load(Ordering::SeqCst) <= self.limit {
            return;
        }
        let holders: Vec<Arc<Holder>> = lock(&self.holders)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        let victim = largest(
            holders
                .iter()
                .map(|h| (h.bytes.load(Ordering::SeqCst), h.cut.load(Ordering::SeqCst))),
        )
        .map(|i| holders[i].clone());
        if let Some(v) = victim {
            v.cut.store(true, Ordering::SeqCst);
            *cutting = Some((v.id, Instant::now()));
            match v.side {
                Side::Client { .. } => &self.cut_clients,
                Side::Endpoint { .. } | Side::Multiplexer { .. } => &self.cut_endpoints,
            }
            .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                holder = ?v.side,
                bytes = v.bytes.load(Ordering::SeqCst),
                total = self.total.load(Ordering::SeqCst),
                limit = self.limit,
                "over --max-queued-bytes: the largest holder is cut (ENHANCE_YOUR_CALM)"
            );
            v.wake.notify_one();
        }
        drop(cutting);
        // the Arcs go after the lock: the last one runs Holder::drop
        drop(holders);
    }
}

/// Whether new connections are refused, given whether they were: from the
/// moment the total passes the limit until it is under three quarters of it.
pub fn refusing(was: bool, total: usize, limit: usize) -> bool {
    if total > limit {
        true
    } else if was {
        total >= limit / 4 * 3
    } else {
        false
    }
}

/// The index of the holder with the most bytes among those not cut yet.
pub fn largest(holders: impl Iterator<Item = (usize, bool)>) -> Option<usize> {
    holders
        .enumerate()
        .filter(|(_, (bytes, cut))| !cut && *bytes > 0)
        .max_by_key(|(_, (bytes, _))| *bytes)
        .map(|(i, _)| i)
}

/// One holder's share of the total.
pub struct Holder {
    id: u64,
    side: Side,
    bytes: AtomicUsize,
    cut: AtomicBool,
    wake: Arc<Notify>,
    budget: Arc<Budget>,
}

impl Holder {
    pub fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::SeqCst);
        let total = self.budget.total.fetch_add(n, Ordering::SeqCst) + n;
        self.budget.changed(total, true);
    }

    pub fn sub(&self, n: usize) {
        let had = self.bytes.fetch_sub(n, Ordering::SeqCst);
        let total = self.budget.total.fetch_sub(n, Ordering::SeqCst) - n;
        if had == n {
            self.emptied();
        }
        self.budget.changed(total, true);
    }

    /// All of a cut holder's bytes are out of the total: the next may go.
    fn emptied(&self) {
        if self.cut.load(Ordering::SeqCst) {
            self.budget.let_go.store(self.id, Ordering::SeqCst);
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }

    /// The budget picked this holder to go.
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    pub fn side(&self) -> Side {
        self.side
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let left = self.bytes.swap(0, Ordering::SeqCst);
        let total = (left > 0).then(|| self.budget.total.fetch_sub(left, Ordering::SeqCst) - left);
        self.emptied();
        if let Some(total) = total {
            // no cut from here: the picker may be the one dropping us
            self.budget.changed(total, false);
        }
        lock(&self.budget.holders).remove(&self.id);
    }
}

/// `n` bytes charged to a holder for as long as this lives.
pub struct Charge {
    holder: Arc<Holder>,
    n: usize,
}

impl Charge {
    pub fn new(holder: &Arc<Holder>, n: usize) -> Charge {
        holder.add(n);
        Charge {
            holder: holder.clone(),
            n,
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.holder.sub(self.n);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(b: &Arc<Budget>, slot: u32) -> (Arc<Holder>, Arc<Notify>) {
        let wake = Arc::new(Notify::new());
        let side = Side::Endpoint { conn: 1, slot };
        (b.holder(side, wake.clone()), wake)
    }

    #[test]
    fn admission_closes_over_the_limit_and_opens_under_three_quarters() {
        let limit = 1000;
        assert!(!refusing(false, 1000, limit));
        assert!(refusing(false, 1001, limit));
        // between 750 and the limit it stays as it was
        assert!(refusing(true, 900, limit));
        assert!(!refusing(false, 900, limit));
        assert!(refusing(true, 750, limit));
        assert!(!refusing(true, 749, limit));
    }

    #[test]
    fn the_largest_holder_not_yet_cut_is_picked() {
        assert_eq!(
            largest([(5, false), (9, false), (7, false)].into_iter()),
            Some(1)
        );
        assert_eq!(
            largest([(5, false), (9, true), (7, false)].into_iter()),
            Some(2)
        );
        assert_eq!(largest([(0, false), (9, true)].into_iter()), None);
        assert_eq!(largest(std::iter::empty()), None);
    }

    #[test]
    fn charges_add_up_and_go_with_their_holder() {
        let b = Budget::new(1 << 20);
        let (a, _) = holder(&b, 0);
        let (c, _) = holder(&b, 1);
        let one = Charge::new(&a, 100);
        a.add(50);
        c.add(30);
        assert_eq!(b.status().queued_bytes, 180);
        drop(one);
        assert_eq!((a.bytes(), b.status().queued_bytes), (50, 80));
        // a holder that goes takes what it still held with it
        drop(a);
        assert_eq!(b.status().queued_bytes, 30);
        assert_eq!(lock(&b.holders).len(), 1);
        assert_eq!(b.status().peak_queued_bytes, 180);
    }

    #[test]
    fn over_the_limit_the_largest_is_cut_and_the_next_only_after_it_let_go() {
        let b = Budget::new(1000);
        let (small, _) = holder(&b, 0);
        let (big, big_wake) = holder(&b, 1);
        let (mid, _) = holder(&b, 2);
        small.add(400);
        mid.add(380);
        big.add(200);
        assert!(!b.status().over && !big.is_cut());
        big.add(250); // 1,230 > 1,000
        assert!(big.is_cut() && !mid.is_cut() && !small.is_cut());
        assert!(b.status().over);
        assert_eq!(b.status().cut_endpoints, 1);
        // the cut holder was woken (a permit is stored for its task)
        let woken = tokio_test_notified(&big_wake);
        assert!(woken);
        // still over, but the first one still holds its bytes: nobody else
        small.add(10);
        assert!(!mid.is_cut() && !small.is_cut());
        // it lets go; 790 is under the limit, so nobody else is cut, but
        // admission stays closed until under 750
        big.sub(450);
        assert!(!mid.is_cut() && !small.is_cut());
        assert!(b.status().over);
        small.sub(100);
        assert!(!b.status().over, "{:?}", b.status());
        assert!(!b.refuse_new());
    }

    #[test]
    fn while_over_and_the_last_victim_let_go_the_next_largest_goes() {
        let b = Budget::new(1000);
        let (x, _) = holder(&b, 0);
        let (y, _) = holder(&b, 1);
        let (z, _) = holder(&b, 2);
        x.add(600);
        y.add(450);
        assert!(x.is_cut());
        z.add(400);
        assert!(!y.is_cut(), "x still holds its bytes");
        x.sub(600); // 850: under the limit again
        assert!(!y.is_cut());
        z.add(200); // 1,050: z holds 600, y 450
        assert!(z.is_cut() && !y.is_cut());
        assert_eq!(b.status().cut_endpoints, 2);
        assert!(b.refuse_new());
        assert_eq!(b.status().fail_open, 1);
    }

    #[test]
    fn a_victim_gone_from_the_list_but_not_yet_from_the_total_is_waited_for() {
        // The race CI hit: the victim's last Arc is gone, so it no longer
        // upgrades from the holder list, but its Drop has not yet taken its
        // bytes off the total. Its leaving the list is not its letting go.
        let b = Budget::new(1000);
        let (x, _) = holder(&b, 0);
        let (y, _) = holder(&b, 1);
        y.add(400);
        x.add(700);
        assert!(x.is_cut());
        lock(&b.holders).remove(&x.id);
        b.changed(b.status().queued_bytes as usize, true);
        assert!(!y.is_cut(), "x's bytes are still in the total");
        assert_eq!(b.status().cut_endpoints, 1);
        // once its bytes are out, nobody else: 400 is under the limit
        drop(x);
        assert!(!y.is_cut());
        assert_eq!(b.status().queued_bytes, 400);
    }

    #[test]
    fn a_stale_total_over_the_limit_cuts_nobody() {
        // another thread's add saw 1,100; a victim let go before it picked
        let b = Budget::new(1000);
        let (x, _) = holder(&b, 0);
        x.add(500);
        b.changed(1100, true);
        assert!(!x.is_cut());
        assert_eq!(b.status().cut_endpoints, 0);
    }

    /// Whether `notify` holds a stored permit (notify_one with no waiter).
    fn tokio_test_notified(notify: &Notify) -> bool {
        let fut = notify.notified();
        tokio::pin!(fut);
        fut.as_mut().enable()
    }
}
