//! A hyper 1 HTTP/2 client (prior knowledge) on one connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Address to connect to.
    #[arg(long)]
    addr: SocketAddr,
    /// Request path (e.g. /whoami, /big, /whoami?echo).
    #[arg(long, default_value = "/whoami")]
    path: String,
    #[arg(long, default_value_t = 1)]
    requests: u64,
    /// Requests in flight at once on the connection.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// POST this many bytes (the backend echoes them; the body must come back intact).
    #[arg(long)]
    upload: Option<usize>,
    /// Add this many request headers `x-rotor-N` ...
    #[arg(long, default_value_t = 0)]
    headers: usize,
    /// ... each with a value of this many bytes (different for every request:
    /// HPACK cannot shrink them).
    #[arg(long, default_value_t = 32)]
    header_bytes: usize,
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

#[derive(Default, Serialize)]
struct Report {
    requests: u64,
    ok: u64,
    failed: u64,
    errors: BTreeMap<String, u64>,
    /// Response bodies: the text if short, else `<LEN bytes fnv FNV>`.
    bodies: BTreeMap<String, u64>,
    /// Echoed uploads that differed from what was sent.
    corrupt: u64,
    elapsed_s: f64,
}

pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn label(body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(s) if body.len() <= 64 => s.trim().to_string(),
        _ => format!("<{} bytes fnv {:016x}>", body.len(), fnv1a64(body)),
    }
}

fn upload_body(n: usize, seq: u64) -> Bytes {
    (0..n)
        .map(|i| (i as u64 ^ seq).wrapping_mul(2_654_435_761) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn header_value(n: usize, seq: u64, k: usize) -> String {
    // Printable, different per request and header.
    let seed = format!("{seq}-{k}-");
    seed.chars().cycle().take(n).collect()
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let report = Arc::new(Mutex::new(Report::default()));
    let result = async {
        let stream = tokio::net::TcpStream::connect(a.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .max_header_list_size(1 << 20)
            .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("connection: {e}");
            }
        });
        let a = Arc::new(a);
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..a.concurrency.max(1) {
            let (mut sender, a, next, report) =
                (sender.clone(), a.clone(), next.clone(), report.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= a.requests {
                        return;
                    }
                    let uri = format!("http://{}{}", a.addr, a.path);
                    let mut req = http::Request::builder().uri(uri);
                    for k in 0..a.headers {
                        req = req
                            .header(format!("x-rotor-{k}"), header_value(a.header_bytes, seq, k));
                    }
                    let body = a.upload.map(|n| upload_body(n, seq));
                    let req = match &body {
                        Some(b) => req.method("POST").body(Full::new(b.clone())),
                        None => req.method("GET").body(Full::new(Bytes::new())),
                    };
                    let outcome = async {
                        let req = req.map_err(|e| e.to_string())?;
                        sender.ready().await.map_err(|e| format!("ready: {e}"))?;
                        let resp = sender
                            .send_request(req)
                            .await
                            .map_err(|e| format!("{e:?}"))?;
                        let status = resp.status();
                        let data = resp
                            .into_body()
                            .collect()
                            .await
                            .map_err(|e| format!("body: {e:?}"))?
                            .to_bytes();
                        if status != http::StatusCode::OK {
                            return Err(format!("status {status}"));
                        }
                        Ok(data)
                    };
                    let outcome = tokio::time::timeout(Duration::from_secs_f64(a.timeout), outcome)
                        .await
                        .unwrap_or_else(|_| Err("timeout".to_string()));
                    let mut r = report.lock().expect("report lock");
                    r.requests += 1;
                    match outcome {
                        Ok(data) => {
                            r.ok += 1;
                            if let Some(b) = &body {
                                if *b != data {
                                    r.corrupt += 1;
                                }
                            }
                            *r.bodies.entry(label(&data)).or_default() += 1;
                        }
                        Err(e) => {
                            r.failed += 1;
                            let e: String = e.chars().take(240).collect();
                            *r.errors.entry(e).or_default() += 1;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    let mut r = report.lock().expect("report lock");
    if let Err(e) = result {
        *r.errors.entry(format!("connect: {e:#}")).or_default() += 1;
    }
    r.elapsed_s = start.elapsed().as_secs_f64();
    println!("{}", serde_json::to_string(&*r)?);
    Ok(())
}
