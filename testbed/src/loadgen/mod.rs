//! The load client behind the `rotor-load` binary: an `h2`-crate client
//! (many streams over a few long-lived connections) and a hand-written client
//! whose writes split frames down to single bytes.

pub mod frames;
pub mod h2client;
pub mod split;
pub mod stats;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::content;
pub use stats::{LoadReport, Stats};

/// Command line of `rotor-load`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "rotor-load",
    about = "HTTP/2 load client for rotor tests (prints a JSON report)"
)]
pub struct Args {
    /// Address to dial (the Service VIP in tests).
    #[arg(long)]
    pub addr: SocketAddr,
    /// Long-lived connections to open.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Concurrent streams per connection.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Total requests (over all connections). Default 1 unless --duration is given.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Keep issuing requests for this many seconds (stops early when --requests are done).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Pace requests to at most this many per second (over all connections).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Request path. Default: /whoami, or /whoami?echo with --upload-bytes.
    #[arg(long)]
    pub path: Option<String>,
    /// :authority of requests (default: --addr).
    #[arg(long)]
    pub authority: Option<String>,
    /// POST this many deterministic bytes and check the echoed body is identical.
    #[arg(long)]
    pub upload_bytes: Option<usize>,
    /// Use the hand-written client, writing its bytes in chunks of this size.
    #[arg(long)]
    pub split_writes: Option<usize>,
    /// Pause between two chunks of --split-writes, in microseconds.
    #[arg(long, default_value_t = 2000)]
    pub chunk_delay_us: u64,
    /// Give up after this many seconds: unfinished requests count as failed.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

impl Args {
    pub fn path(&self) -> String {
        match (&self.path, self.upload_bytes) {
            (Some(p), _) => p.clone(),
            (None, Some(_)) => "/whoami?echo".to_string(),
            (None, None) => "/whoami".to_string(),
        }
    }

    pub fn authority(&self) -> String {
        self.authority
            .clone()
            .unwrap_or_else(|| self.addr.to_string())
    }

    /// Total requests, or `None` for "until --duration ends".
    pub fn total_requests(&self) -> Option<u64> {
        match (self.requests, self.duration) {
            (Some(r), _) => Some(r),
            (None, Some(_)) => None,
            (None, None) => Some(1),
        }
    }

    pub fn duration(&self) -> Option<Duration> {
        self.duration.map(Duration::from_secs_f64)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout.max(0.1))
    }

    /// What a response body must be, if the path or mode defines it.
    pub fn expected_body(&self) -> Option<Expected> {
        if let Some(n) = self.upload_bytes {
            return Some(Expected {
                label: "echo".into(),
                body: content::pseudo_random(n, content::UPLOAD_SEED),
            });
        }
        let path = self.path();
        let file = path.trim_start_matches('/').split('?').next().unwrap_or("");
        let body = match file {
            "big" => content::big(),
            "100b" => content::pseudo_random(100, 100),
            "64k" => content::pseudo_random(64 * 1024, 64),
            _ => return None,
        };
        Some(Expected {
            label: file.to_string(),
            body,
        })
    }
}

/// An expected response body and the `by_body` key counted when it matches.
#[derive(Debug, Clone)]
pub struct Expected {
    pub label: String,
    pub body: Vec<u8>,
}

/// Checks a response and records it.
pub fn classify(
    stats: &Stats,
    expected: Option<&Expected>,
    status: u16,
    body: &[u8],
    latency: Duration,
) {
    if status != 200 {
        stats.fail(format!("status {status}"));
        return;
    }
    match expected {
        Some(exp) if body == exp.body.as_slice() => stats.ok(&exp.label, latency),
        Some(exp) => stats.fail(format!(
            "{} body mismatch: got {} bytes (fnv {:016x}), want {} bytes (fnv {:016x}){}",
            exp.label,
            body.len(),
            content::fnv1a64(body),
            exp.body.len(),
            content::fnv1a64(&exp.body),
            first_difference(body, &exp.body)
                .map(|i| format!(", first difference at {i}"))
                .unwrap_or_default()
        )),
        None => {
            let label = match std::str::from_utf8(body) {
                Ok(s) if body.len() <= 64 => s.trim().to_string(),
                _ => format!("<{} bytes>", body.len()),
            };
            stats.ok(&label, latency)
        }
    }
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// Runs the load described by `args` and returns the report.
pub fn run(args: &Args) -> LoadReport {
    if let Some(chunk) = args.split_writes {
        return split::run(args, chunk.max(1));
    }
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(h2client::run(args)),
        Err(e) => {
            let stats = Stats::new(args.total_requests());
            stats.fail(format!("tokio runtime: {e}"));
            stats.report(Duration::ZERO, false)
        }
    }
}
