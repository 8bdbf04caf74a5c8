//! Kernel counters that mean trouble, logged when they grow: what the
//! kernel did without the agent (a connection left on its original path
//! at connect, an accepted socket it could not take) and what the agent
//! missed (events lost to a full ring buffer) reach the log only this
//! way, once a second at most, with how many and the total so far. Bad
//! framing is counted too: the agent answers each such connection (GOAWAY)
//! and logs it there, this line gives the rate.

use std::collections::HashMap;

/// (counter as `rotor status` names it, what it means for the operator)
const WATCHED: [(&str, &str); 4] = [
    (
        "fail_open_connect",
        "connections left on their original path by the kernel: the agent's tables are full (raise --max-conns)",
    ),
    (
        "fail_open_accept",
        "accepted connections the kernel could not take (socket maps full): left on their original path",
    ),
    (
        "event_lost",
        "kernel events lost: the ring buffer was full (the agent is behind)",
    ),
    (
        "bad_frame",
        "connections whose bytes were not HTTP/2 framing (each answered with GOAWAY)",
    ),
];

/// What each watched counter was when last reported.
#[derive(Debug, Default)]
pub struct Trouble {
    reported: HashMap<&'static str, u64>,
}

/// One counter that grew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grew {
    pub counter: &'static str,
    pub what: &'static str,
    pub new: u64,
    pub total: u64,
}

impl Trouble {
    /// The watched counters that grew since the last call.
    pub fn grew(&mut self, stats: &[(&str, u64)]) -> Vec<Grew> {
        let mut out = Vec::new();
        for (counter, what) in WATCHED {
            let Some(total) = (stats.iter()).find(|(n, _)| *n == counter).map(|(_, v)| *v) else {
                continue;
            };
            let was = self.reported.insert(counter, total).unwrap_or(0);
            if total > was {
                out.push(Grew {
                    counter,
                    what,
                    new: total - was,
                    total,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_growth_is_reported_once_with_its_total() {
        let mut t = Trouble::default();
        let first = t.grew(&[
            ("fail_open_connect", 2),
            ("event_lost", 0),
            ("redirect_up", 9),
        ]);
        assert_eq!(first.len(), 1);
        assert_eq!(
            (first[0].counter, first[0].new, first[0].total),
            ("fail_open_connect", 2, 2)
        );
        assert!(first[0].what.contains("left on their original path"));
        assert_eq!(t.grew(&[("fail_open_connect", 2), ("event_lost", 0)]), []);
        let later = t.grew(&[
            ("fail_open_connect", 3),
            ("event_lost", 7),
            ("bad_frame", 1),
        ]);
        let got: Vec<_> = later.iter().map(|g| (g.counter, g.new, g.total)).collect();
        assert_eq!(
            got,
            [
                ("fail_open_connect", 1, 3),
                ("event_lost", 7, 7),
                ("bad_frame", 1, 1)
            ]
        );
    }
}
