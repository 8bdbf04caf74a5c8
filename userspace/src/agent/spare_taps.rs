//! Spare taps (ebpf/lib/maps.h, `spare_taps`): taps made before any
//! accepted socket needs one, so that an accepted socket (A) has a tap from
//! its first byte, while it still waits in the accept queue.
//!
//! Without one, A's first frames for the agent go into its own ingress,
//! which 7.3 turns into SK_PASS; read late (an agent short of CPU, curl
//! sending its preface, a request and 64 KiB of body at once), such an A
//! stopped calling its parser and went deaf (ebpf/README.md, "What differs
//! by kernel"). sockops gives A the next ready index; the agent takes the
//! tap there at accept, and the index stays A's until A closes or is let
//! go at a handover. Then it rests ([`COOLING`]) and names a fresh tap.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::tap::Tap;
use crate::ebpf::Datapath;

/// Taps kept ready: connections that can arrive between two refills
/// before the agent accepts any of them. The rest take their own ingress
/// until the agent makes them a tap (counted: `spare_tap_none`).
const READY: usize = 256;
/// A verdict that read an index's owner just before the owner let go may
/// still hand one frame to the tap at that index: the index names no new
/// tap before this has passed (the verdict's run is microseconds; a
/// second covers a preempted vCPU many times over). An index let go at a
/// handover keeps its tap in `spare_taps` while the tap is read out, as
/// the tap keeps what it had not delivered only while a map holds it.
const COOLING: Duration = Duration::from_secs(2);
const _: () = assert!(COOLING.as_millis() > super::tap::UNTAP_LIMIT.as_millis());
/// How often the agent gives the pool back what sockops took.
const REFILL_EVERY: Duration = Duration::from_millis(100);

/// The indexes of `spare_taps`: which may name a fresh tap, which rest.
#[derive(Debug)]
struct Indexes {
    /// 0..unused have been used; the rest never were.
    unused: u32,
    capacity: u32,
    resting: VecDeque<(u32, Instant)>,
    rested: Vec<u32>,
}

impl Indexes {
    fn new(capacity: u32) -> Indexes {
        Indexes {
            unused: 0,
            capacity,
            resting: VecDeque::new(),
            rested: Vec::new(),
        }
    }

    /// An index that may name a fresh tap at `now`.
    fn next(&mut self, now: Instant) -> Option<u32> {
        while let Some(&(index, since)) = self.resting.front() {
            if now.duration_since(since) < COOLING {
                break;
            }
            self.resting.pop_front();
            self.rested.push(index);
        }
        if let Some(index) = self.rested.pop() {
            return Some(index);
        }
        (self.unused < self.capacity).then(|| {
            self.unused += 1;
            self.unused - 1
        })
    }

    /// `index` names no tap of any socket any more, from `now`.
    fn give_back(&mut self, index: u32, now: Instant) {
        if index < self.unused {
            self.resting.push_back((index, now));
        }
    }
}

struct Pool {
    indexes: Indexes,
    /// Taps ready or given by sockops to a socket the agent has not taken
    /// yet, by index.
    waiting: HashMap<u32, Tap>,
}

pub struct SparePool {
    pool: Mutex<Pool>,
    want: usize,
}

impl SparePool {
    /// The pool of `dp`'s generation (empty in one without spare taps).
    pub fn new(dp: &Datapath) -> SparePool {
        let indexes = dp.spare_indexes();
        SparePool {
            pool: Mutex::new(Pool {
                indexes: Indexes::new(indexes),
                waiting: HashMap::new(),
            }),
            // Spares must leave most of the taps' share of the open files
            // to the sockets that use them.
            want: match indexes {
                0 => 0,
                _ => READY.min(super::tap::budget() / 4),
            },
        }
    }

    /// Takes back the indexes sockops and handovers let go, and makes
    /// taps until `want` wait.
    pub fn refill(&self, dp: &Datapath) {
        if self.want == 0 {
            return;
        }
        let now = Instant::now();
        let mut pool = super::lock(&self.pool);
        for index in dp.dropped_spares() {
            // A closed before the agent took its tap: what it holds is
            // that socket's, the index a fresh tap's after its rest.
            let waited = pool.waiting.remove(&index).is_some();
            tracing::debug!(index, waited, "spare tap index given back");
            pool.indexes.give_back(index, now);
        }
        while pool.waiting.len() < self.want {
            let Some(index) = pool.indexes.next(now) else {
                break;
            };
            let Some(tap) = Tap::spare(dp, index) else {
                // It may have been ready a moment: it rests like any other.
                pool.indexes.give_back(index, now);
                break;
            };
            tracing::debug!(index, "spare tap ready");
            pool.waiting.insert(index, tap);
        }
    }

    /// The spare tap sockops gave the accepted socket with `cookie`: its
    /// frames for the agent have gone there from the first. None if it got
    /// none.
    pub fn take(&self, dp: &Datapath, cookie: u64) -> Option<Tap> {
        let index = dp.spare_of(cookie)?;
        let (tap, low) = {
            let mut pool = super::lock(&self.pool);
            let tap = pool.waiting.remove(&index);
            if tap.is_none() {
                // sockops gave the socket an index with no tap of ours
                // ready: its first frames went where the agent does not
                // read. Seen on 6.1 when an empty spare_ready "gave" index
                // 0 (ebpf/lib/map_ops.h).
                tracing::warn!(cookie, index, "an accepted socket was given a spare tap the agent had not made ready: its first frames may be lost");
            }
            (tap, pool.waiting.len() < self.want / 2)
        };
        if low {
            self.refill(dp);
        }
        tap
    }
}

/// Keeps the pool of `dp` filled for as long as the agent runs.
pub async fn keep_filled(pool: std::sync::Arc<SparePool>, dp: std::sync::Arc<Datapath>) {
    let mut every = tokio::time::interval(REFILL_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        pool.refill(&dp);
    }
}

#[cfg(test)]
mod tests {
    use super::{Indexes, COOLING};
    use tokio::time::Instant;

    #[test]
    fn an_index_given_back_names_no_tap_before_it_has_rested() {
        let t0 = Instant::now();
        let mut ix = Indexes::new(3);
        assert_eq!(ix.next(t0), Some(0));
        assert_eq!(ix.next(t0), Some(1));
        ix.give_back(0, t0);
        assert_eq!(ix.next(t0), Some(2));
        // every index is in use or resting
        assert_eq!(ix.next(t0 + COOLING / 2), None);
        assert_eq!(ix.next(t0 + COOLING), Some(0));
        assert_eq!(ix.next(t0 + COOLING), None);
    }

    #[test]
    fn only_indexes_that_were_given_come_back() {
        let t0 = Instant::now();
        let mut ix = Indexes::new(2);
        // an index the kernel reports that the agent never used (a corrupt
        // queue entry) does not enter the pool twice
        ix.give_back(1, t0);
        assert_eq!(ix.next(t0 + COOLING), Some(0));
        assert_eq!(ix.next(t0 + COOLING), Some(1));
        assert_eq!(ix.next(t0 + COOLING), None);
    }

    #[test]
    fn indexes_rest_in_the_order_they_were_given_back() {
        let t0 = Instant::now();
        let mut ix = Indexes::new(2);
        let (a, b) = (ix.next(t0).unwrap(), ix.next(t0).unwrap());
        ix.give_back(b, t0);
        ix.give_back(a, t0 + COOLING / 2);
        assert_eq!(ix.next(t0 + COOLING), Some(b));
        assert_eq!(ix.next(t0 + COOLING), None);
        assert_eq!(ix.next(t0 + COOLING + COOLING / 2), Some(a));
    }
}
