//! How often a connection's task looks at what the kernel did without
//! telling it (its counters, its parser's progress) and at what waits on
//! time (held streams, draining upstreams, a lower stream limit).
//!
//! Every connection and every upstream reader used to look every 100 ms,
//! busy or not: 1,000 idle connections to 3 endpoints cost the agent 0.41
//! cores of this 2-core machine and 5,000 cost 1.61 (`cargo xtask bench
//! --conn-memory`), and under emulation, 30 times slower, the looks alone
//! outran the CPU: upstream handshakes waited more than nghttpd's 10 s for
//! their SETTINGS ACK (GOAWAY SETTINGS_TIMEOUT) and the scale test failed
//! (issue 16). A kernel-carried connection needs the agent only when
//! something happens, and everything but the kernel's own progress reaches
//! the task as an event. So a look that finds nothing waiting and the
//! kernel's counters where the previous look left them doubles the wait
//! to the next, up to [`MOST`]; any event brings it back to [`FIRST`].

use std::time::Duration;

/// The wait after a look that found something to do, and after an event.
pub const FIRST: Duration = Duration::from_millis(100);
/// The longest wait: how late a safety net (liveness.rs) may come for a
/// connection that looked settled.
pub const MOST: Duration = Duration::from_millis(6400);

#[derive(Debug)]
pub struct Pace {
    every: Duration,
    seen: Option<u64>,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            every: FIRST,
            seen: None,
        }
    }
}

impl Pace {
    /// After a look: `settled` when nothing waits on time, `progress` a
    /// summary of the kernel's counters the look read. Returns the wait
    /// until the next look.
    pub fn next(&mut self, settled: bool, progress: u64) -> Duration {
        let still = self.seen.replace(progress) == Some(progress);
        self.every = if settled && still {
            (self.every * 2).min(MOST)
        } else {
            FIRST
        };
        self.every
    }

    /// Something happened: true when the next look was planned later than
    /// [`FIRST`] and must be brought forward.
    pub fn stir(&mut self) -> bool {
        let late = self.every > FIRST;
        self.every = FIRST;
        late
    }
}

/// One number from the counters a look read, so that a change in any of
/// them counts as progress.
pub fn progress(counters: impl IntoIterator<Item = u64>) -> u64 {
    counters.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, c| {
        (h ^ c).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settled_connection_backs_off_to_the_most() {
        let mut p = Pace::default();
        assert_eq!(
            p.next(true, 7),
            FIRST,
            "the first look has nothing to compare"
        );
        let waits: Vec<_> = (0..8).map(|_| p.next(true, 7)).collect();
        assert_eq!(waits[0], FIRST * 2);
        assert_eq!(waits[1], FIRST * 4);
        assert_eq!(*waits.last().unwrap(), MOST);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn kernel_progress_or_pending_work_looks_again_soon() {
        let mut p = Pace::default();
        for _ in 0..10 {
            p.next(true, 1);
        }
        assert_eq!(p.next(true, 2), FIRST, "the counters moved");
        p.next(true, 2);
        assert!(p.next(true, 2) > FIRST);
        assert_eq!(p.next(false, 2), FIRST, "something waits on time");
    }

    #[test]
    fn an_event_brings_a_late_look_forward_once() {
        let mut p = Pace::default();
        assert!(!p.stir(), "already at the first pace");
        for _ in 0..5 {
            p.next(true, 0);
        }
        assert!(p.stir());
        assert!(!p.stir(), "already brought forward");
        assert_eq!(p.next(true, 0), FIRST * 2, "backs off again from the start");
    }

    #[test]
    fn progress_tells_counters_apart() {
        assert_ne!(progress([1, 0]), progress([0, 1]));
        assert_ne!(progress([5]), progress([6]));
        assert_eq!(progress([3, 4]), progress([3, 4]));
    }
}
