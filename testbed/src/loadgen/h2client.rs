//! Load over long-lived HTTP/2 connections with the `h2` crate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, Request};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::{classify, Args, Expected, LoadReport, Stats};
use crate::content;

/// Shared by every stream worker.
struct Plan {
    uri: String,
    upload: Option<Bytes>,
    expected: Option<Expected>,
    stop_at: Option<Instant>,
    start: Instant,
    rate: Option<f64>,
}

impl Plan {
    /// When request number `slot` may start, under `--rate`.
    fn due(&self, slot: u64) -> Option<Instant> {
        self.rate
            .filter(|r| *r > 0.0)
            .map(|r| self.start + Duration::from_secs_f64(slot as f64 / r))
    }
}

/// Runs `args.connections` connections × `args.streams` workers until the
/// request budget or the duration is used up, or the timeout passes.
pub async fn run(args: &Args) -> LoadReport {
    let start = Instant::now();
    let stats = Arc::new(Stats::new(args.total_requests()));
    let plan = Arc::new(Plan {
        uri: format!("http://{}{}", args.authority(), args.path()),
        upload: args
            .upload_bytes
            .map(|n| Bytes::from(content::pseudo_random(n, content::UPLOAD_SEED))),
        expected: args.expected_body(),
        stop_at: args.duration().map(|d| start + d),
        start,
        rate: args.rate,
    });
    let mut conns = JoinSet::new();
    for _ in 0..args.connections.max(1) {
        conns.spawn(connection(args.clone(), plan.clone(), stats.clone()));
    }
    let all = async { while conns.join_next().await.is_some() {} };
    let timed_out = tokio::time::timeout(args.timeout(), all).await.is_err();
    if timed_out {
        stats.error(format!("timeout after {:?}", args.timeout()));
        conns.abort_all();
    }
    stats.report(start.elapsed(), timed_out)
}

async fn handshake(args: &Args, stats: Arc<Stats>) -> Result<SendRequest<Bytes>, String> {
    let tcp = TcpStream::connect(args.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", args.addr))?;
    let _ = tcp.set_nodelay(true);
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .handshake::<_, Bytes>(tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            stats.error(format!("connection: {e}"));
        }
    });
    Ok(send)
}

async fn connection(args: Args, plan: Arc<Plan>, stats: Arc<Stats>) {
    let send = match handshake(&args, stats.clone()).await {
        Ok(s) => s,
        Err(e) => {
            // Every request this connection would have carried fails with this error,
            // so a client that cannot connect at all reports failed = requests.
            stats.error(e.clone());
            while stats.issue() && !past(plan.stop_at) {
                stats.fail(e.clone());
            }
            return;
        }
    };
    let mut workers = JoinSet::new();
    for _ in 0..args.streams.max(1) {
        let (send, plan, stats) = (send.clone(), plan.clone(), stats.clone());
        workers.spawn(async move {
            while !past(plan.stop_at) {
                let Some(slot) = stats.issue_slot() else {
                    break;
                };
                if let Some(due) = plan.due(slot) {
                    tokio::time::sleep_until(due.into()).await;
                    if past(plan.stop_at) {
                        stats.unissue();
                        break;
                    }
                }
                let t0 = Instant::now();
                match request(send.clone(), &plan).await {
                    Ok((status, body)) => {
                        classify(&stats, plan.expected.as_ref(), status, &body, t0.elapsed())
                    }
                    Err(e) => stats.fail(e),
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

fn past(t: Option<Instant>) -> bool {
    t.is_some_and(|t| Instant::now() >= t)
}

async fn request(send: SendRequest<Bytes>, plan: &Plan) -> Result<(u16, Vec<u8>), String> {
    let mut send = send.ready().await.map_err(|e| format!("ready: {e}"))?;
    let mut builder = Request::builder().uri(&plan.uri);
    builder = match &plan.upload {
        Some(body) => builder
            .method(Method::POST)
            .header("content-length", body.len()),
        None => builder.method(Method::GET),
    };
    let req = builder.body(()).map_err(|e| format!("request: {e}"))?;
    let (resp, mut tx) = send
        .send_request(req, plan.upload.is_none())
        .map_err(|e| format!("send_request: {e}"))?;
    if let Some(body) = &plan.upload {
        send_body(&mut tx, body.clone()).await?;
    }
    let resp = resp.await.map_err(|e| format!("response: {e}"))?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("body after {} bytes: {e}", buf.len()))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
    }
    Ok((status, buf))
}

/// Sends `body` as DATA frames as flow control allows, then END_STREAM.
async fn send_body(tx: &mut h2::SendStream<Bytes>, mut body: Bytes) -> Result<(), String> {
    if body.is_empty() {
        return tx
            .send_data(Bytes::new(), true)
            .map_err(|e| format!("send_data: {e}"));
    }
    while !body.is_empty() {
        tx.reserve_capacity(body.len().min(1 << 20));
        let cap = std::future::poll_fn(|cx| tx.poll_capacity(cx))
            .await
            .ok_or_else(|| format!("stream closed with {} bytes left to upload", body.len()))?
            .map_err(|e| format!("upload with {} bytes left: {e}", body.len()))?;
        if cap == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        let chunk = body.split_to(cap.min(body.len()));
        tx.send_data(chunk, body.is_empty())
            .map_err(|e| format!("send_data: {e}"))?;
    }
    Ok(())
}
