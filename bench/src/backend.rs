//! The benchmark backend behind `rotor-h2-backend`: an h2c server (the `h2`
//! crate, one thread) that serves `/100b`, `/64k` (the same bytes as the
//! nghttpd backends), `/whoami` (its name) and echoes POST bodies, and counts
//! every request it answers.
//!
//! The count is the backend's own: it is incremented when a request's HEADERS
//! arrive and written every few milliseconds, as a fixed-width decimal number,
//! to `--count-file` (pwrite at offset 0, so a reader never sees a torn value
//! longer than the file). The bench reads it for per-backend shares and the
//! scale-up timeline.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use http::{Method, Response, StatusCode};
use tokio::net::TcpListener;

use rotor_testbed::content;

/// Command line of `rotor-h2-backend`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "rotor-h2-backend",
    about = "HTTP/2 (h2c) benchmark backend that counts its requests"
)]
pub struct Args {
    /// Address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Name served at /whoami.
    #[arg(long)]
    pub name: String,
    /// File the request count is written to (every --count-interval-ms).
    #[arg(long)]
    pub count_file: PathBuf,
    #[arg(long, default_value_t = 5)]
    pub count_interval_ms: u64,
}

/// Width of the number in the count file.
pub const COUNT_WIDTH: usize = 20;

/// Reads a count file written by the backend (0 when it is still empty).
pub fn read_count(path: &std::path::Path) -> Result<u64> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let t = text.trim();
    if t.is_empty() {
        return Ok(0);
    }
    t.parse()
        .with_context(|| format!("bad count {t:?} in {}", path.display()))
}

struct Bodies {
    b100: Bytes,
    k64: Bytes,
    name: Bytes,
}

/// Runs the server until killed.
pub fn run(args: &Args) -> Result<()> {
    let count = Arc::new(AtomicU64::new(0));
    let file = File::create(&args.count_file)
        .with_context(|| format!("creating {}", args.count_file.display()))?;
    {
        let count = count.clone();
        let every = Duration::from_millis(args.count_interval_ms.max(1));
        std::thread::spawn(move || {
            let mut last = u64::MAX;
            loop {
                let n = count.load(Ordering::Relaxed);
                if n != last {
                    let _ = file.write_all_at(format!("{n:0w$}\n", w = COUNT_WIDTH).as_bytes(), 0);
                    last = n;
                }
                std::thread::sleep(every);
            }
        });
    }
    let bodies = Arc::new(Bodies {
        b100: Bytes::from(content::pseudo_random(100, 100)),
        k64: Bytes::from(content::pseudo_random(64 * 1024, 64)),
        name: Bytes::from(args.name.clone()),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        println!("listening on {}", args.listen);
        loop {
            let (tcp, _) = listener.accept().await.context("accept")?;
            let _ = tcp.set_nodelay(true);
            let (bodies, count) = (bodies.clone(), count.clone());
            tokio::spawn(async move {
                let _ = serve(tcp, bodies, count).await;
            });
        }
    })
}

async fn serve(
    tcp: tokio::net::TcpStream,
    bodies: Arc<Bodies>,
    count: Arc<AtomicU64>,
) -> Result<()> {
    let mut conn = h2::server::Builder::new()
        .initial_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .max_concurrent_streams(1024)
        .handshake::<_, Bytes>(tcp)
        .await?;
    while let Some(req) = conn.accept().await {
        let (req, respond) = req?;
        count.fetch_add(1, Ordering::Relaxed);
        let bodies = bodies.clone();
        tokio::spawn(async move {
            let _ = answer(req, respond, &bodies).await;
        });
    }
    Ok(())
}

async fn answer(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    bodies: &Bodies,
) -> Result<()> {
    let (parts, mut recv) = req.into_parts();
    let body = if parts.method == Method::POST || parts.method == Method::PUT {
        let mut buf = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            buf.extend_from_slice(&chunk);
        }
        Some(Bytes::from(buf))
    } else {
        match parts.uri.path() {
            "/100b" => Some(bodies.b100.clone()),
            "/64k" => Some(bodies.k64.clone()),
            "/whoami" => Some(bodies.name.clone()),
            _ => None,
        }
    };
    let Some(body) = body else {
        let resp = Response::builder().status(StatusCode::NOT_FOUND).body(())?;
        respond.send_response(resp, true)?;
        return Ok(());
    };
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header("content-length", body.len())
        .body(())?;
    let mut tx = respond.send_response(resp, body.is_empty())?;
    let mut rest = body;
    while !rest.is_empty() {
        tx.reserve_capacity(rest.len());
        let cap = std::future::poll_fn(|cx| tx.poll_capacity(cx))
            .await
            .context("stream closed")??;
        if cap == 0 {
            continue;
        }
        let chunk = rest.split_to(cap.min(rest.len()));
        tx.send_data(chunk, rest.is_empty())?;
    }
    Ok(())
}
