//! The agent's open files against its RLIMIT_NOFILE.
//!
//! A carried client connection costs the agent several descriptors: the
//! accepted socket and, per endpoint, its upstream, which through a
//! multiplexer is a loopback connection whose two ends are both the
//! agent's (agent/pool.rs). Under a hard limit of 20,000, 5,000 connections
//! to one endpoint with shared upstreams held 19,999: accepts failed with
//! EMFILE, twenty clients were neither carried nor left on their path, and
//! `rotor status` hung for 30 s because the admin socket could not accept
//! either (cli.rs, 5,000 connections).
//!
//! So every connection is charged what it may come to hold, for its whole
//! life: upstreams open when the policy first picks their endpoint, so a
//! count of the open files now says nothing of what admitted connections
//! will open later (counting /proc/self/fd instead let 84 connections in
//! under a limit of 600, whose upstreams then failed with EMFILE). A new
//! connection is carried only while the charges fit below the limit beside
//! what the agent holds anyway: the files open at start, the taps' share
//! (agent/tap.rs) and a reserve. Past that it stays on its original path
//! (fail_open.rs), and the connect programs stop sending new connections to
//! the agent at all (ebpf/datapath/gate.rs) until the charges are back
//! under the limit by one more reserve. The reserve keeps the admin socket,
//! the probes, the multiplexers' shared connections and the splices of
//! connections already on their way working.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Shared;

/// How often a closed gate looks whether the charges have room again.
const REOPEN_CHECK: Duration = Duration::from_millis(250);

/// Descriptors kept free of connections' charges: the admin socket and its
/// answers, the health and metrics listeners' connections, a handover's
/// sockets, the multiplexers' shared connections, and the fail-open
/// splices of the connections refused here.
pub fn reserve_for(limit: u64) -> u64 {
    (limit / 32).max(64)
}

/// What a client connection to a Service of `endpoints` may hold: the
/// accepted socket, and per endpoint an upstream of one descriptor, or
/// two while upstreams may be shared (`sharing`).
pub fn cost_of_connection(endpoints: usize, sharing: bool) -> u64 {
    1 + endpoints as u64 * if sharing { 2 } else { 1 }
}

#[derive(Debug)]
pub struct Files {
    limit: u64,
    /// Open at start, the taps' share and the reserve.
    fixed: u64,
    reserve: u64,
    /// What the connections alive now are charged.
    charged: AtomicU64,
}

/// A connection's charge, given back when it is dropped with the
/// connection's task.
#[derive(Debug)]
pub struct Charge {
    files: Arc<Files>,
    n: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.files.charged.fetch_sub(self.n, Ordering::Relaxed);
    }
}

impl Files {
    /// The agent's files: its limit (after it raised its soft limit:
    /// bin/rotor-agent.rs) and what it holds now, its programs and maps
    /// loaded.
    pub fn of_this_process() -> Files {
        let limit = crate::sys::open_files_limit().unwrap_or(1024);
        let open = count_open().unwrap_or(0);
        Files::new(limit, open, super::tap::files_share())
    }

    pub fn new(limit: u64, open: u64, taps: u64) -> Files {
        let reserve = reserve_for(limit);
        Files {
            limit,
            fixed: open + taps + reserve,
            reserve,
            charged: AtomicU64::new(0),
        }
    }

    /// `need` charged, if it fits below the limit.
    pub fn admit(self: &Arc<Self>, need: u64) -> Option<Charge> {
        let room = self.limit.saturating_sub(self.fixed);
        (self.charged)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                (c + need <= room).then_some(c + need)
            })
            .ok()?;
        Some(Charge {
            files: self.clone(),
            n: need,
        })
    }

    /// `n` charged whether it fits or not: a connection that exists
    /// already (handed over by the agent before this one).
    pub fn charge(self: &Arc<Self>, n: u64) -> Charge {
        self.charged.fetch_add(n, Ordering::Relaxed);
        Charge {
            files: self.clone(),
            n,
        }
    }

    /// Whether the charges are back under the limit by one more reserve:
    /// the gap keeps the gate from flapping at the limit.
    pub fn room_again(&self) -> bool {
        let charged = self.charged.load(Ordering::Relaxed);
        self.fixed + charged + self.reserve <= self.limit
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// A connection refused for want of files: new ones keep their original
/// path in the kernel from now on.
pub fn refused(shared: &Shared) {
    if shared.dp.gate_new_clients(true) {
        tracing::warn!(
            limit = shared.files.limit(),
            charged = shared.files.charged.load(Ordering::Relaxed),
            "the agent's open files near RLIMIT_NOFILE: new connections stay on their original path (raise the agent's hard open file limit)"
        );
    }
}

/// Opens the gate `refused` closed once the charges have room again.
pub async fn reopen(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(REOPEN_CHECK);
    loop {
        tick.tick().await;
        if shared.dp.new_clients_gated()
            && shared.files.room_again()
            && shared.dp.gate_new_clients(false)
        {
            tracing::info!(
                limit = shared.files.limit(),
                "open files back under the limit: new connections are carried again"
            );
        }
    }
}

/// This process's open descriptors, from /proc/self/fd (less the one that
/// reads it).
fn count_open() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_what_fits_beside_the_fixed_share() {
        // 1000 - (100 open + 250 taps + 64 reserve) = 586 for connections
        let f = Arc::new(Files::new(1000, 100, 250));
        let a = f.admit(500).expect("fits");
        let b = f.admit(86).expect("fits exactly");
        assert!(f.admit(1).is_none(), "nothing left");
        drop(a);
        assert!(
            f.admit(500).is_some(),
            "a connection's end gives its charge back"
        );
        drop(b);
    }

    #[test]
    fn charges_last_as_long_as_the_connection() {
        let f = Arc::new(Files::new(1000, 100, 250));
        let held: Vec<Charge> = (0..58).map(|_| f.admit(10).expect("fits")).collect();
        assert!(f.admit(10).is_none(), "58 x 10 + 10 > 586");
        drop(held);
        assert_eq!(f.charged.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn room_again_only_a_reserve_under_the_limit() {
        let f = Arc::new(Files::new(1000, 100, 250));
        let handed_over = f.charge(600);
        assert!(
            f.admit(1).is_none(),
            "an adopted charge counts past the room"
        );
        assert!(!f.room_again());
        drop(handed_over);
        let c = f.admit(522).expect("fits");
        assert!(f.room_again(), "414 + 522 + 64 = 1000");
        let d = f.admit(1).expect("fits");
        assert!(!f.room_again());
        drop((c, d));
    }

    #[test]
    fn a_tiny_limit_admits_nothing_rather_than_wrapping() {
        let f = Arc::new(Files::new(100, 90, 25));
        assert!(f.admit(1).is_none());
        assert!(!f.room_again());
    }

    #[test]
    fn costs_and_reserve() {
        assert_eq!(reserve_for(1024), 64);
        assert_eq!(reserve_for(20_000), 625);
        assert_eq!(cost_of_connection(3, true), 7);
        assert_eq!(cost_of_connection(3, false), 4);
    }
}
