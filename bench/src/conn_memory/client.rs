//! The client behind `rotor-bench-conns`: opens many HTTP/2 connections,
//! sends one request on each (or `--requests` one after the other),
//! optionally keeps every connection busy for a while (one request at a
//! time), then holds them all open, idle, until it is killed. Each phase
//! ends with one JSON line on stdout, which the bench waits for before it
//! measures the agent (or the backends' connections, or a load beside them).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use h2::client::SendRequest;
use http::{Method, Request};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

/// Command line of `rotor-bench-conns`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "rotor-bench-conns",
    about = "Holds many HTTP/2 connections open (after one request each) for the memory benchmark"
)]
pub struct ConnArgs {
    #[arg(long)]
    pub addr: SocketAddr,
    #[arg(long)]
    pub connections: usize,
    #[arg(long, default_value = "/100b")]
    pub path: String,
    /// Seconds every connection sends requests back to back (one at a time)
    /// after its first; 0: idle after the first request.
    #[arg(long, default_value_t = 0.0)]
    pub active: f64,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub parallel: usize,
    /// Requests each connection makes (one after the other) when it opens.
    #[arg(long, default_value_t = 1)]
    pub requests: usize,
    /// Seconds a connection may take to open and make its first requests;
    /// past it, it counts as failed and the others go on.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
}

/// One phase's line on stdout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Phase {
    /// `opened` (every connection tried, one request each), `active` (the
    /// busy period is over), `holding` (idle from here on).
    pub phase: String,
    pub connections: usize,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub elapsed_s: f64,
    /// The first few distinct errors.
    pub errors: Vec<String>,
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Counts {
    fn fail(&self, e: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errors.len() < 5 && !errors.contains(&e) {
            errors.push(e);
        }
    }

    fn phase(&self, name: &str, connections: usize, t0: Instant) -> Phase {
        Phase {
            phase: name.into(),
            connections,
            requests_ok: self.ok.load(Ordering::Relaxed),
            requests_failed: self.failed.load(Ordering::Relaxed),
            elapsed_s: t0.elapsed().as_secs_f64(),
            errors: self
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

fn say(p: &Phase) {
    match serde_json::to_string(p) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("rotor-bench-conns: {e}"),
    }
}

/// Open files for `n` connections and the runtime; as root the hard limit
/// may be raised too (the machine's may be below what 5,000 connections need).
pub fn raise_open_files(n: usize) {
    let want = (n as libc::rlim_t) + 1024;
    let lim = libc::rlimit {
        rlim_cur: want,
        rlim_max: want,
    };
    // SAFETY: setrlimit reads a properly initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        eprintln!(
            "rotor-bench-conns: RLIMIT_NOFILE {want}: {}",
            std::io::Error::last_os_error()
        );
    }
}

pub fn run(args: &ConnArgs) -> anyhow::Result<()> {
    raise_open_files(args.connections);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(args.clone()))
}

async fn run_async(args: ConnArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let counts = Arc::new(Counts::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(args.parallel.max(1)));
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        let (args, counts, gate) = (args.clone(), counts.clone(), gate.clone());
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let attempt = async {
                let send = connect(args.addr).await?;
                for _ in 0..args.requests.max(1) {
                    request(send.clone(), &args.path).await?;
                }
                Ok::<_, String>(send)
            };
            // A connection the agent cannot take (out of open files, say)
            // is not waited for long: the others still get measured.
            let limit = Duration::from_secs_f64(args.timeout);
            match tokio::time::timeout(limit, attempt).await {
                Ok(Ok(send)) => {
                    counts.ok.fetch_add(1, Ordering::Relaxed);
                    Some(send)
                }
                Ok(Err(e)) => {
                    counts.fail(e);
                    None
                }
                Err(_) => {
                    counts.fail(format!("no answer within {limit:?}"));
                    None
                }
            }
        });
    }
    let mut held: Vec<SendRequest<Bytes>> = Vec::with_capacity(args.connections);
    while let Some(r) = opening.join_next().await {
        if let Ok(Some(send)) = r {
            held.push(send);
        }
    }
    say(&counts.phase("opened", held.len(), t0));
    if args.active > 0.0 {
        let end = Instant::now() + Duration::from_secs_f64(args.active);
        let mut busy = tokio::task::JoinSet::new();
        for send in &held {
            let (send, counts, path) = (send.clone(), counts.clone(), args.path.clone());
            busy.spawn(async move {
                while Instant::now() < end {
                    match request(send.clone(), &path).await {
                        Ok(()) => drop(counts.ok.fetch_add(1, Ordering::Relaxed)),
                        Err(e) => {
                            counts.fail(e);
                            // Do not spin on a broken connection.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        }
        while busy.join_next().await.is_some() {}
        say(&counts.phase("active", held.len(), t0));
    }
    say(&counts.phase("holding", held.len(), t0));
    // Idle until killed; `held` keeps every connection open.
    std::future::pending::<()>().await;
    drop(held);
    Ok(())
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Bytes>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (send, conn) = h2::client::handshake(tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        // The connection's end shows as failed requests in the active phase
        // and as a socket gone in the measurement; nothing to do here.
        let _ = conn.await;
    });
    send.ready().await.map_err(|e| format!("ready: {e}"))
}

async fn request(send: SendRequest<Bytes>, path: &str) -> Result<(), String> {
    let mut send = send.ready().await.map_err(|e| format!("ready: {e}"))?;
    let req = Request::builder()
        .method(Method::GET)
        .uri(format!("http://rotor.bench{path}"))
        .body(())
        .map_err(|e| format!("request: {e}"))?;
    let (resp, _) = send
        .send_request(req, true)
        .map_err(|e| format!("send_request: {e}"))?;
    let resp = resp.await.map_err(|e| format!("response: {e}"))?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("body: {e}"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    if status != 200 {
        return Err(format!("status {status}"));
    }
    Ok(())
}
