//! Counters shared by the load client's workers and the JSON report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many distinct error strings a report keeps.
pub const MAX_ERRORS: usize = 10;

/// What `rotor-load` prints on stdout (one JSON object).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LoadReport {
    pub ok: u64,
    pub failed: u64,
    /// Successful responses by body (`be1`, …) or by checked payload (`big`, `echo`).
    pub by_body: BTreeMap<String, u64>,
    /// The first few distinct error strings.
    pub errors: Vec<String>,
    pub elapsed_ms: u64,
    /// Latency percentiles of successful requests, microseconds.
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl LoadReport {
    /// Requests per second over the run.
    pub fn rate(&self) -> f64 {
        (self.ok + self.failed) as f64 / (self.elapsed_ms.max(1) as f64 / 1000.0)
    }

    /// Successful responses whose body was `name`.
    pub fn count(&self, name: &str) -> u64 {
        self.by_body.get(name).copied().unwrap_or(0)
    }
}

/// Thread-safe counters; `issue()` hands out request slots.
#[derive(Debug)]
pub struct Stats {
    limit: Option<u64>,
    issued: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    ok: u64,
    failed: u64,
    by_body: BTreeMap<String, u64>,
    errors: Vec<String>,
    latencies_us: Vec<u64>,
}

impl Stats {
    pub fn new(limit: Option<u64>) -> Stats {
        Stats {
            limit,
            issued: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Takes one request slot; `false` once the request budget is used up.
    pub fn issue(&self) -> bool {
        self.issue_slot().is_some()
    }

    /// Takes one request slot and returns its index (0, 1, …), or `None` once
    /// the request budget is used up.
    pub fn issue_slot(&self) -> Option<u64> {
        // Never counts past the limit, so `issued` is exact and `unissue` is safe.
        self.issued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                self.limit.is_none_or(|l| n < l).then_some(n + 1)
            })
            .ok()
    }

    /// Gives back a slot taken by [`Stats::issue_slot`] but never used.
    pub fn unissue(&self) {
        self.issued.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    pub fn ok(&self, label: &str, latency: Duration) {
        self.with(|i| {
            i.ok += 1;
            *i.by_body.entry(label.to_string()).or_default() += 1;
            i.latencies_us.push(latency.as_micros() as u64);
        })
    }

    pub fn fail(&self, err: String) {
        self.with(|i| {
            i.failed += 1;
            Self::note(i, err);
        })
    }

    /// Records an error that is not a request (e.g. a connection error).
    pub fn error(&self, err: String) {
        self.with(|i| Self::note(i, err))
    }

    fn note(i: &mut Inner, err: String) {
        if i.errors.len() < MAX_ERRORS && !i.errors.contains(&err) {
            i.errors.push(err);
        }
    }

    pub fn done(&self) -> u64 {
        self.with(|i| i.ok + i.failed)
    }

    /// Builds the report. Requests issued but never answered count as failed; so do
    /// requests never issued when the run hit its overall timeout (`timed_out`)
    /// with a fixed request budget.
    pub fn report(&self, elapsed: Duration, timed_out: bool) -> LoadReport {
        let expected = match (timed_out, self.limit) {
            (true, Some(limit)) => limit,
            _ => self.issued(),
        };
        self.with(|i| {
            let missing = expected.saturating_sub(i.ok + i.failed);
            if missing > 0 {
                Self::note(
                    i,
                    format!("{missing} requests not answered before the timeout"),
                );
            }
            let mut lat = i.latencies_us.clone();
            lat.sort_unstable();
            let pct = |p: f64| {
                lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(0)
            };
            LoadReport {
                ok: i.ok,
                failed: i.failed + missing,
                by_body: i.by_body.clone(),
                errors: i.errors.clone(),
                elapsed_ms: elapsed.as_millis() as u64,
                p50_us: pct(0.50),
                p99_us: pct(0.99),
                max_us: lat.last().copied().unwrap_or(0),
            }
        })
    }
}
