//! `/healthz` and `/readyz` for the kubelet, on `--health-addr`, and
//! `/metrics` (metrics_page.rs) on the same server, on `--metrics`.
//!
//! Ready means redirecting: the model is in (the Kubernetes lists or the
//! file), the programs are loaded and attached, and the self-check's
//! connect from the balanced cgroup was redirected and served. A rollout
//! with `maxUnavailable: 0` then waits for exactly that before it moves on.
//! Readiness does not go back for an API server that becomes unreachable:
//! the agent keeps balancing with its last model.
//!
//! Alive means not wedged: the tokio runtime ran the heartbeat task within
//! [`STALL_BOUND`], and the source of the model has not stopped for longer
//! than [`SOURCE_DEAD_BOUND`] (kube-rs watchers retry for ever, so a source
//! that ends never comes back without a restart). An agent waiting for a
//! slow API server at start is alive and not ready: restarting it would not
//! make the API server answer.
//!
//! The responder is a plain HTTP/1.1 loop on a thread of its own, not a task
//! of the runtime it judges: a runtime whose workers are all blocked could
//! not answer at all, and the kubelet would see a timeout instead of why.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The heartbeat runs every second; this many without one is a stall.
pub const STALL_BOUND: Duration = Duration::from_secs(10);
const BEAT: Duration = Duration::from_secs(1);
/// How long the model's source may be gone before the agent is not alive.
pub const SOURCE_DEAD_BOUND: Duration = Duration::from_secs(30);
/// One probe connection may take this long to send its request.
const REQUEST_LIMIT: Duration = Duration::from_secs(1);

/// What the probes read; shared by the agent's start-up, its tasks and the
/// responder thread.
#[derive(Debug)]
pub struct Health {
    origin: Instant,
    /// Milliseconds after `origin` of the last heartbeat.
    beat: AtomicU64,
    ready: AtomicBool,
    /// Why not ready yet (the start-up step the agent is in).
    waiting: Mutex<String>,
    /// When and why the model's source stopped.
    source_dead: Mutex<Option<(Instant, String)>>,
    /// Writes `/metrics`, once the programs are loaded.
    metrics: Mutex<MetricsHook>,
}

/// Renders the `/metrics` page (metrics_page.rs).
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Default)]
struct MetricsHook(Option<MetricsFn>);

impl std::fmt::Debug for MetricsHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "set" } else { "unset" })
    }
}

/// A probe's answer: 200 or 503, and a line saying why.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub why: String,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health {
            origin: Instant::now(),
            beat: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            waiting: Mutex::new("starting".into()),
            source_dead: Mutex::new(None),
            metrics: Mutex::default(),
        })
    }

    /// The start-up step the agent is in (readiness says it while not ready).
    pub fn waiting_for(&self, what: impl Into<String>) {
        if let Ok(mut w) = self.waiting.lock() {
            *w = what.into();
        }
    }

    pub fn set_metrics(&self, render: MetricsFn) {
        if let Ok(mut m) = self.metrics.lock() {
            *m = MetricsHook(Some(render));
        }
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn source_stopped(&self, why: impl Into<String>) {
        if let Ok(mut d) = self.source_dead.lock() {
            *d = Some((Instant::now(), why.into()));
        }
    }

    fn beat(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.beat.store(ms, Ordering::Release);
    }

    /// Beats once a second on the runtime it is spawned on.
    pub fn spawn_heartbeat(self: &Arc<Self>) {
        let health = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(BEAT);
            loop {
                tick.tick().await;
                health.beat();
            }
        });
    }

    pub fn readiness(&self) -> Verdict {
        if self.ready.load(Ordering::Acquire) {
            return Verdict {
                ok: true,
                why: "ready: model applied, programs attached, self-check passed".into(),
            };
        }
        let waiting = self.waiting.lock().map(|w| w.clone()).unwrap_or_default();
        Verdict {
            ok: false,
            why: format!("not ready: {waiting}"),
        }
    }

    pub fn liveness(&self) -> Verdict {
        self.liveness_at(self.origin.elapsed())
    }

    /// Liveness `now` after the origin (tests move the clock).
    fn liveness_at(&self, now: Duration) -> Verdict {
        let beat = Duration::from_millis(self.beat.load(Ordering::Acquire));
        let silent = now.saturating_sub(beat);
        if silent > STALL_BOUND {
            return Verdict {
                ok: false,
                why: format!(
                    "wedged: the event loop has not run its heartbeat for {}s (bound {}s)",
                    silent.as_secs(),
                    STALL_BOUND.as_secs()
                ),
            };
        }
        if let Some((at, why)) = self.source_dead.lock().ok().and_then(|d| d.clone()) {
            let dead = (self.origin + now).saturating_duration_since(at);
            if dead > SOURCE_DEAD_BOUND {
                return Verdict {
                    ok: false,
                    why: format!(
                        "wedged: {why} {}s ago (bound {}s)",
                        dead.as_secs(),
                        SOURCE_DEAD_BOUND.as_secs()
                    ),
                };
            }
        }
        Verdict {
            ok: true,
            why: "alive".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("binding the health address {addr}")]
pub struct HealthError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Answers on `addr` from a thread of its own. When another agent holds
/// the port (this one was started beside it, as a rollout does: both pods
/// are on the host network), the probes reach that agent until it exits,
/// and this one binds the port then; any other error is a start-up error.
pub fn serve(addr: SocketAddr, health: Arc<Health>) -> Result<(), HealthError> {
    let err = |source| HealthError { addr, source };
    let listener = match TcpListener::bind(addr) {
        Ok(l) => Some(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::info!(%addr, "another agent serves the health address: taking it when it goes");
            None
        }
        Err(e) => return Err(err(e)),
    };
    std::thread::Builder::new()
        .name("rotor-health".into())
        .spawn(move || {
            let listener = match listener {
                Some(l) => l,
                None => loop {
                    std::thread::sleep(TAKE_OVER_POLL);
                    if let Ok(l) = TcpListener::bind(addr) {
                        break l;
                    }
                },
            };
            tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => answer(s, &health),
                    Err(e) => {
                        tracing::warn!(error = %e, "health accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(err)?;
    Ok(())
}

/// How often an agent started beside another tries the health address.
const TAKE_OVER_POLL: Duration = Duration::from_millis(200);

/// One request, one answer, then close. A client that sends nothing holds
/// the thread for at most [`REQUEST_LIMIT`].
fn answer(mut s: TcpStream, health: &Health) {
    let _ = s.set_read_timeout(Some(REQUEST_LIMIT));
    let _ = s.set_write_timeout(Some(REQUEST_LIMIT));
    let mut buf = [0u8; 2048];
    let mut len = 0;
    while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let line = head.lines().next().unwrap_or("");
    let (code, body) = respond(line, health);
    let metrics = line
        .split_whitespace()
        .nth(1)
        .is_some_and(|t| t.starts_with("/metrics"));
    let content_type = if metrics && code == 200 {
        super::metrics::CONTENT_TYPE
    } else {
        "text/plain"
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let reply = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(reply.as_bytes());
}

/// The status code and body for a request line.
fn respond(request_line: &str, health: &Health) -> (u16, String) {
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return (405, "GET /healthz, /readyz or /metrics\n".into());
    }
    let verdict = match path {
        "/metrics" => {
            let render = health.metrics.lock().ok().and_then(|m| m.0.clone());
            return match render {
                Some(render) => (200, render()),
                None => (503, "not yet: the programs are not loaded\n".into()),
            };
        }
        "/healthz" | "/livez" => health.liveness(),
        "/readyz" => health.readiness(),
        _ => return (404, "GET /healthz, /readyz or /metrics\n".into()),
    };
    (if verdict.ok { 200 } else { 503 }, verdict.why + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_once_set_and_says_what_it_waits_for() {
        let h = Health::new();
        h.waiting_for("the Kubernetes lists (last error: connection refused)");
        let (code, body) = respond("GET /readyz HTTP/1.1", &h);
        assert_eq!(code, 503);
        assert!(body.contains("connection refused"), "{body}");
        h.set_ready();
        assert_eq!(respond("GET /readyz HTTP/1.1", &h).0, 200);
    }

    #[test]
    fn a_stalled_heartbeat_fails_liveness() {
        let h = Health::new();
        h.beat();
        assert!(h.liveness_at(Duration::from_secs(5)).ok);
        let v = h.liveness_at(STALL_BOUND + Duration::from_secs(2));
        assert!(!v.ok, "{v:?}");
        assert!(v.why.contains("heartbeat"), "{v:?}");
    }

    #[test]
    fn a_source_gone_past_the_bound_fails_liveness() {
        let h = Health::new();
        h.source_stopped("the Kubernetes watch ended");
        let now = h.origin.elapsed();
        // Keep the heartbeat fresh at every moment looked at.
        h.beat.store(
            (now + SOURCE_DEAD_BOUND).as_millis() as u64,
            Ordering::Release,
        );
        assert!(h.liveness_at(now + Duration::from_secs(1)).ok);
        let v = h.liveness_at(now + SOURCE_DEAD_BOUND + Duration::from_secs(2));
        assert!(!v.ok && v.why.contains("watch ended"), "{v:?}");
    }

    #[test]
    fn other_paths_and_methods() {
        let h = Health::new();
        h.beat();
        assert_eq!(respond("GET /healthz HTTP/1.1", &h).0, 200);
        assert_eq!(respond("GET /healthz?verbose HTTP/1.1", &h).0, 200);
        assert_eq!(respond("GET / HTTP/1.1", &h).0, 404);
        assert_eq!(respond("POST /readyz HTTP/1.1", &h).0, 405);
        assert_eq!(respond("", &h).0, 405);
    }
}
