//! Who holds an endpoint's dedicated upstreams (its *seats*: the kernel
//! carries their streams), and which upstreams to its multiplexer wait for
//! one because their client connection is busy.
//!
//! A seat used to go to whichever client connection dialled first, for as
//! long as it lived. 1,000 connections that made one request each and then
//! idled held all 24 seats of each endpoint, and the one busy connection
//! opened after them had every stream cross the multiplexer in user space:
//! rotor fell to 0.27× direct beside them, and to 1.03× its own rate without
//! them once every upstream had a seat (`cargo xtask bench --quick --only
//! idle1000`, with `--dedicated-upstreams 4000` for the second). So a busy
//! connection's upstream to the multiplexer asks for a seat; an idle holder
//! asked to give one up drains its upstream and goes through the
//! multiplexer itself; and while anyone waits, a fresh upstream (whose
//! client's load nobody knows yet) does not take the seat that frees.
//!
//! Pure bookkeeping: pool.rs keeps one per endpoint under its lock and
//! wakes the holders.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::Notify;

/// One endpoint's seats. Ids are the tickets' (pool.rs).
#[derive(Debug, Default)]
pub(super) struct Seats {
    /// Tickets holding a seat, draining ones included: a seat is free only
    /// once its upstream has closed.
    held: usize,
    /// Of those, the ones whose holder gave the seat up for a waiting one.
    yielding: usize,
    /// Upstreams to the multiplexer whose connection is busy.
    wanting: HashSet<u64>,
    /// How to ask a holder to look whether it can give its seat up.
    holders: HashMap<u64, Arc<Notify>>,
}

/// What [`Seats::promote`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Promotion {
    /// A seat was free and is the caller's.
    Seated,
    /// None is: the caller waits; `first` when it was not waiting yet (the
    /// holders are asked then, not at every look).
    Waiting { first: bool },
}

impl Seats {
    /// A fresh upstream takes a seat while one is free that nobody waits for.
    pub fn take_fresh(&mut self, limit: usize, id: u64, wake: Option<&Arc<Notify>>) -> bool {
        if self.held + self.wanting.len() >= limit {
            return false;
        }
        self.seat(id, wake);
        true
    }

    /// A seat that cannot be refused: an upstream handed over (it exists).
    pub fn take_adopted(&mut self, id: u64, wake: Option<&Arc<Notify>>) {
        self.seat(id, wake);
    }

    /// A busy connection's upstream `waiting` (to the multiplexer) asks for
    /// a seat for its successor, ticket `id`.
    pub fn promote(
        &mut self,
        limit: usize,
        waiting: u64,
        id: u64,
        wake: Option<&Arc<Notify>>,
    ) -> Promotion {
        if self.held < limit {
            self.wanting.remove(&waiting);
            self.seat(id, wake);
            return Promotion::Seated;
        }
        Promotion::Waiting {
            first: self.wanting.insert(waiting),
        }
    }

    /// The upstream is no longer busy, or gone.
    pub fn unwant(&mut self, waiting: u64) {
        self.wanting.remove(&waiting);
    }

    /// Whether someone waits for a seat that no holder has given up yet.
    pub fn wanted(&self) -> bool {
        self.wanting.len() > self.yielding
    }

    /// A holder offers its seat: true when it is to give it up (only as
    /// many give up as wait, so not every idle holder drains at once).
    pub fn give_up(&mut self) -> bool {
        if !self.wanted() {
            return false;
        }
        self.yielding += 1;
        true
    }

    /// Ticket `id`'s upstream closed; `yielded` if it had given its seat up.
    pub fn release(&mut self, id: u64, yielded: bool) {
        self.held = self.held.saturating_sub(1);
        if yielded {
            self.yielding = self.yielding.saturating_sub(1);
        }
        self.holders.remove(&id);
    }

    /// The holders to ask when a first wait starts.
    pub fn holders(&self) -> impl Iterator<Item = &Arc<Notify>> {
        self.holders.values()
    }

    pub fn held(&self) -> usize {
        self.held
    }

    fn seat(&mut self, id: u64, wake: Option<&Arc<Notify>>) {
        self.held += 1;
        if let Some(w) = wake {
            self.holders.insert(id, w.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wake() -> Arc<Notify> {
        Arc::new(Notify::new())
    }

    #[test]
    fn fresh_upstreams_take_free_seats_up_to_the_limit() {
        let mut s = Seats::default();
        assert!(s.take_fresh(2, 1, None));
        assert!(s.take_fresh(2, 2, None));
        assert!(!s.take_fresh(2, 3, None), "full");
        s.release(1, false);
        assert!(s.take_fresh(2, 4, None), "a closed holder frees its seat");
        assert_eq!(s.held(), 2);
    }

    #[test]
    fn a_waiting_upstream_gets_the_seat_a_holder_gives_up_not_a_fresh_one() {
        let mut s = Seats::default();
        let (w1, w2) = (wake(), wake());
        assert!(s.take_fresh(2, 1, Some(&w1)));
        assert!(s.take_fresh(2, 2, Some(&w2)));
        assert_eq!(s.holders().count(), 2);
        // upstream 10 (through the multiplexer) is busy
        assert_eq!(
            s.promote(2, 10, 11, None),
            Promotion::Waiting { first: true }
        );
        assert_eq!(
            s.promote(2, 10, 11, None),
            Promotion::Waiting { first: false }
        );
        assert!(s.wanted());
        // one holder gives up; the second is not asked to
        assert!(s.give_up());
        assert!(!s.wanted());
        assert!(!s.give_up(), "one waits, one gave up");
        // the yielding holder drains and dials the multiplexer: no seat
        assert!(!s.take_fresh(2, 3, None));
        s.release(1, true);
        // a fresh connection arriving now does not take the freed seat
        assert!(!s.take_fresh(2, 4, None));
        assert_eq!(s.promote(2, 10, 11, None), Promotion::Seated);
        assert!(!s.wanted());
        assert_eq!(s.held(), 2);
        assert_eq!(
            s.holders().count(),
            1,
            "only the holder that stayed had a wake"
        );
    }

    #[test]
    fn a_wait_that_ends_frees_the_seats_for_fresh_upstreams() {
        let mut s = Seats::default();
        assert!(s.take_fresh(2, 1, None));
        assert!(s.take_fresh(2, 2, None));
        assert_eq!(
            s.promote(2, 10, 11, None),
            Promotion::Waiting { first: true }
        );
        s.release(2, false);
        // the seat stays for the waiting one while it waits
        assert!(!s.take_fresh(2, 3, None));
        s.unwant(10);
        assert!(s.take_fresh(2, 3, None));
    }

    #[test]
    fn adopted_upstreams_count_even_past_the_limit() {
        let mut s = Seats::default();
        s.take_adopted(1, None);
        s.take_adopted(2, None);
        assert!(!s.take_fresh(1, 3, None));
        assert_eq!(s.held(), 2);
        assert_eq!(
            s.promote(1, 10, 11, None),
            Promotion::Waiting { first: true }
        );
    }
}
