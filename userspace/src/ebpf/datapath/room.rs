//! Room in the per-socket maps (sock_idents, parse_states, upstream_socks),
//! claimed before the agent writes a socket into them and held for as long
//! as the socket may be there.
//!
//! The concrete case: with `--max-sockets 5` (the injector and two
//! connections of a client and an upstream each), two clients accepted in
//! the same millisecond both found room for two sockets before either had
//! written its identity, and the second one's upstream then found
//! parse_states full: its streams waited on an upstream that could never
//! join. A claim is taken atomically when a connection is admitted, so
//! what was admitted fits, and what does not fit keeps its original path.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What the per-socket maps can hold and what is claimed of it.
#[derive(Debug)]
pub struct Room {
    claimed: AtomicUsize,
    max: usize,
}

impl Room {
    pub fn new(max: usize) -> Arc<Room> {
        Arc::new(Room {
            claimed: AtomicUsize::new(0),
            max,
        })
    }

    /// Sockets claimed now (for status and tests).
    pub fn claimed(&self) -> usize {
        self.claimed.load(Ordering::SeqCst)
    }

    fn take(&self, n: usize) -> bool {
        self.claimed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                c.checked_add(n).filter(|t| *t <= self.max)
            })
            .is_ok()
    }
}

/// Sockets one owner (a client connection, the injector, a self-check) may
/// put into the per-socket maps; given back when dropped.
#[derive(Debug)]
pub struct SocketRoom {
    room: Arc<Room>,
    n: usize,
}

impl SocketRoom {
    /// `n` sockets if they fit beside every other claim.
    pub fn claim(room: &Arc<Room>, n: usize) -> Option<SocketRoom> {
        room.take(n).then(|| SocketRoom {
            room: room.clone(),
            n,
        })
    }

    /// `n` sockets that are in the maps already or must be (the injector,
    /// connections adopted from the agent before this one): counted even
    /// over the limit, so that later claims see them.
    pub fn count(room: &Arc<Room>, n: usize) -> SocketRoom {
        room.claimed.fetch_add(n, Ordering::SeqCst);
        SocketRoom {
            room: room.clone(),
            n,
        }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Room for `n` sockets in all, if the maps have it.
    pub fn grow_to(&mut self, n: usize) -> bool {
        if n <= self.n {
            return true;
        }
        if !self.room.take(n - self.n) {
            return false;
        }
        self.n = n;
        true
    }
}

impl Drop for SocketRoom {
    fn drop(&mut self) {
        self.room.claimed.fetch_sub(self.n, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_never_exceed_the_maps_and_come_back_when_dropped() {
        let room = Room::new(5);
        let injector = SocketRoom::count(&room, 1);
        let a = SocketRoom::claim(&room, 2).expect("first connection fits");
        let b = SocketRoom::claim(&room, 2).expect("second connection fits");
        assert!(SocketRoom::claim(&room, 1).is_none(), "the maps are full");
        assert_eq!(room.claimed(), 5);
        drop(a);
        assert_eq!(room.claimed(), 3);
        let mut c = SocketRoom::claim(&room, 1).expect("room came back");
        assert!(c.grow_to(2));
        assert!(!c.grow_to(3), "only what is free may be grown into");
        assert_eq!(c.len(), 2);
        drop((b, c, injector));
        assert_eq!(room.claimed(), 0);
    }

    #[test]
    fn counted_sockets_over_the_limit_leave_no_room() {
        let room = Room::new(2);
        let adopted = SocketRoom::count(&room, 3);
        assert!(SocketRoom::claim(&room, 1).is_none());
        drop(adopted);
        assert!(SocketRoom::claim(&room, 2).is_some());
    }

    #[test]
    fn concurrent_claims_admit_no_more_than_fits() {
        let room = Room::new(100);
        let held: Vec<SocketRoom> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        (0..50)
                            .filter_map(|_| SocketRoom::claim(&room, 3))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("worker"))
                .collect()
        });
        assert_eq!(held.len(), 33, "100 / 3 claims of 3 fit");
        assert_eq!(room.claimed(), 99);
    }
}
