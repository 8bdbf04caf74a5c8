//! Detects a connection with open streams on which nothing moves.

use std::time::Duration;

use tokio::time::Instant;

const FIRST_NUDGE: Duration = Duration::from_millis(100);
const LAST_NUDGE: Duration = Duration::from_secs(5);

pub struct StallWatch {
    progress: u64,
    since: Instant,
    wait: Duration,
}

impl Default for StallWatch {
    fn default() -> Self {
        StallWatch { progress: 0, since: Instant::now(), wait: FIRST_NUDGE }
    }
}

impl StallWatch {
    /// `progress` is any counter that grows while bytes move. True when
    /// streams are open and it has not grown for the current wait; the wait
    /// doubles after each nudge, so an idle long-lived stream costs little.
    pub fn should_nudge(&mut self, progress: u64, streams_open: bool) -> bool {
        let now = Instant::now();
        if progress != self.progress || !streams_open {
            self.progress = progress;
            self.since = now;
            self.wait = FIRST_NUDGE;
            return false;
        }
        if now.duration_since(self.since) < self.wait {
            return false;
        }
        self.since = now;
        self.wait = (self.wait * 2).min(LAST_NUDGE);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn nudges_only_when_stuck_and_backs_off() {
        let mut w = StallWatch::default();
        assert!(!w.should_nudge(1, true));
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(w.should_nudge(1, true));
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(!w.should_nudge(1, true), "second wait is 200 ms");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(w.should_nudge(1, true));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!w.should_nudge(1, false), "no open streams: idle is fine");
        assert!(!w.should_nudge(2, true), "progress resets");
    }
}
