//! tonic server and client for `rotor.test.Echo`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status, Streaming};

pub mod pb {
    tonic::include_proto!("rotor.test");
}

use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};
use pb::Msg;

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Name put in every reply (`backend`).
    #[arg(long)]
    name: String,
    #[arg(long, default_value = "0.0.0.0:50051")]
    listen: SocketAddr,
    /// SETTINGS_MAX_CONCURRENT_STREAMS the server advertises.
    #[arg(long)]
    max_concurrent_streams: Option<u32>,
    /// Print a line `call` per call.
    #[arg(long)]
    log_calls: bool,
}

struct Svc {
    name: String,
    calls: AtomicU64,
    log_calls: bool,
}

impl Svc {
    fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.log_calls {
            println!("call");
        }
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for Svc {
    async fn unary(&self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        self.count();
        let m = req.into_inner();
        if m.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(m.delay_ms as u64)).await;
        }
        Ok(Response::new(Msg {
            backend: self.name.clone(),
            seq: m.seq,
            payload: m.payload,
            ..Default::default()
        }))
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(&self, req: Request<Msg>) -> Result<Response<ReplyStream>, Status> {
        self.count();
        let m = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let name = self.name.clone();
        tokio::spawn(async move {
            for i in 0..m.count {
                if i > 0 && m.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(m.delay_ms as u64)).await;
                }
                let reply = Msg {
                    backend: name.clone(),
                    seq: i as u64,
                    payload: m.payload.clone(),
                    ..Default::default()
                };
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn client_stream(&self, req: Request<Streaming<Msg>>) -> Result<Response<Msg>, Status> {
        self.count();
        let mut s = req.into_inner();
        let (mut n, mut bytes) = (0u32, 0u64);
        while let Some(m) = s.message().await? {
            n += 1;
            bytes += m.payload.len() as u64;
        }
        Ok(Response::new(Msg {
            backend: self.name.clone(),
            received: n,
            seq: bytes,
            ..Default::default()
        }))
    }

    type BidiStream = ReplyStream;

    async fn bidi(&self, req: Request<Streaming<Msg>>) -> Result<Response<ReplyStream>, Status> {
        self.count();
        let mut s = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let name = self.name.clone();
        tokio::spawn(async move {
            loop {
                match s.message().await {
                    Ok(Some(m)) => {
                        let reply = Msg {
                            backend: name.clone(),
                            seq: m.seq,
                            payload: m.payload,
                            ..Default::default()
                        };
                        if tx.send(Ok(reply)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Serves until SIGTERM, then shuts down gracefully (GOAWAY, in-flight calls finish).
pub async fn serve(a: ServerArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(a.listen).await?;
    println!("listening {}", listener.local_addr()?);
    let svc = EchoServer::new(Svc {
        name: a.name.clone(),
        calls: AtomicU64::new(0),
        log_calls: a.log_calls,
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        term.recv().await;
        eprintln!("SIGTERM: graceful shutdown");
    };
    let mut builder = Server::builder();
    if let Some(n) = a.max_concurrent_streams {
        builder = builder.max_concurrent_streams(Some(n));
    }
    builder
        .add_service(svc)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    eprintln!("stopped");
    Ok(())
}

#[derive(clap::Args, Clone)]
pub struct ClientArgs {
    /// e.g. http://10.96.0.10:8080
    #[arg(long)]
    target: String,
    /// Unary calls to make (over all workers).
    #[arg(long, default_value_t = 0)]
    unary: u64,
    /// Keep making unary calls for this many seconds (instead of --unary).
    #[arg(long)]
    duration: Option<f64>,
    /// Unary calls in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Server-side delay of each unary call.
    #[arg(long, default_value_t = 0)]
    unary_delay_ms: u32,
    /// Payload bytes of every message.
    #[arg(long, default_value_t = 16)]
    payload: usize,
    /// Calls of each streaming kind (run concurrently with the unary calls).
    #[arg(long, default_value_t = 0)]
    streams: usize,
    /// Which streaming kinds: server,client,bidi.
    #[arg(long, value_delimiter = ',', default_value = "server,client,bidi")]
    kinds: Vec<String>,
    /// Messages per streaming call.
    #[arg(long, default_value_t = 20)]
    stream_msgs: u32,
    /// Delay between two messages of a streaming call.
    #[arg(long, default_value_t = 10)]
    stream_delay_ms: u32,
    /// Per-call time limit in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

/// What happened to the calls of one kind.
#[derive(Debug, Default, Serialize)]
pub struct KindReport {
    calls: u64,
    ok: u64,
    failed: u64,
    /// Failures by "CODE: message".
    errors: BTreeMap<String, u64>,
    /// Failures that were an HTTP/2 RST_STREAM(REFUSED_STREAM) (safe to retry).
    refused: u64,
    /// Streaming calls that failed after the server had sent at least one message.
    answered_failed: u64,
    /// Calls (unary) or messages (streaming) by the backend that answered.
    backends: BTreeMap<String, u64>,
    /// Streaming calls answered by more than one backend.
    mixed: u64,
    /// Streaming calls by the one backend that answered them all.
    calls_by_backend: BTreeMap<String, u64>,
    /// Calls whose replies were wrong (payload, order, count).
    corrupt: u64,
}

#[derive(Default)]
struct Rec(Mutex<KindReport>);

impl Rec {
    fn with(&self, f: impl FnOnce(&mut KindReport)) {
        if let Ok(mut r) = self.0.lock() {
            f(&mut r)
        }
    }

    fn fail(&self, err: String, answered: bool) {
        self.with(|r| {
            r.failed += 1;
            if err.contains("refused stream") || err.contains("REFUSED_STREAM") {
                r.refused += 1;
            }
            if answered {
                r.answered_failed += 1;
            }
            if r.errors.len() < 20 || r.errors.contains_key(&err) {
                *r.errors.entry(err).or_default() += 1;
            }
        })
    }

    /// A streaming call's outcome from the backends of its replies.
    fn stream_done(&self, backends: &[String], intact: bool) {
        self.with(|r| {
            r.ok += 1;
            for b in backends {
                *r.backends.entry(b.clone()).or_default() += 1;
            }
            let mut distinct: Vec<&String> = backends.iter().collect();
            distinct.sort();
            distinct.dedup();
            if distinct.len() > 1 {
                r.mixed += 1;
            }
            if let [one] = distinct.as_slice() {
                *r.calls_by_backend.entry((*one).clone()).or_default() += 1;
            }
            if !intact {
                r.corrupt += 1;
            }
        })
    }

    fn take(&self) -> KindReport {
        self.0
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

#[derive(Serialize)]
struct Report {
    unary: KindReport,
    server_stream: KindReport,
    client_stream: KindReport,
    bidi: KindReport,
    elapsed_s: f64,
    connect_error: Option<String>,
}

fn describe(s: &Status) -> String {
    use std::error::Error;
    let mut text = format!("{:?}: {}", s.code(), s.message());
    let mut src = s.source();
    while let Some(e) = src {
        text.push_str(&format!(" / {e}"));
        src = e.source();
    }
    text.chars().take(240).collect()
}

fn payload(n: usize, seq: u64) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(seq) as u8)
        .collect()
}

pub async fn client(a: ClientArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let channel = match Channel::from_shared(a.target.clone())?.connect().await {
        Ok(c) => c,
        Err(e) => {
            let report = Report {
                unary: KindReport::default(),
                server_stream: KindReport::default(),
                client_stream: KindReport::default(),
                bidi: KindReport::default(),
                elapsed_s: start.elapsed().as_secs_f64(),
                connect_error: Some(format!("{e:?}")),
            };
            println!("{}", serde_json::to_string(&report)?);
            return Ok(());
        }
    };
    let client = EchoClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let a = Arc::new(a);
    let unary = Arc::new(Rec::default());
    let sstream = Arc::new(Rec::default());
    let cstream = Arc::new(Rec::default());
    let bidi = Arc::new(Rec::default());
    let limit = Duration::from_secs_f64(a.timeout);
    let mut tasks = Vec::new();

    for i in 0..a.streams {
        let kinds = &a.kinds;
        if kinds.iter().any(|k| k == "server") {
            let (c, a, rec) = (client.clone(), a.clone(), sstream.clone());
            tasks.push(tokio::spawn(async move {
                server_stream_call(c, &a, i as u64, &rec, limit).await
            }));
        }
        if kinds.iter().any(|k| k == "client") {
            let (c, a, rec) = (client.clone(), a.clone(), cstream.clone());
            tasks.push(tokio::spawn(async move {
                client_stream_call(c, &a, &rec, limit).await
            }));
        }
        if kinds.iter().any(|k| k == "bidi") {
            let (c, a, rec) = (client.clone(), a.clone(), bidi.clone());
            tasks.push(tokio::spawn(
                async move { bidi_call(c, &a, &rec, limit).await },
            ));
        }
    }

    let next = Arc::new(AtomicU64::new(0));
    let deadline = a.duration.map(|d| start + Duration::from_secs_f64(d));
    let workers = if a.unary > 0 || a.duration.is_some() {
        a.concurrency.max(1)
    } else {
        0
    };
    for _ in 0..workers {
        let (mut c, a, rec, next) = (client.clone(), a.clone(), unary.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                match deadline {
                    Some(d) if Instant::now() >= d => return,
                    None if seq >= a.unary => return,
                    _ => {}
                }
                let body = payload(a.payload, seq);
                let req = Msg {
                    seq,
                    payload: body.clone(),
                    delay_ms: a.unary_delay_ms,
                    ..Default::default()
                };
                rec.with(|r| r.calls += 1);
                match tokio::time::timeout(limit, c.unary(req)).await {
                    Err(_) => rec.fail("timeout".into(), false),
                    Ok(Err(s)) => rec.fail(describe(&s), false),
                    Ok(Ok(resp)) => {
                        let m = resp.into_inner();
                        rec.with(|r| {
                            r.ok += 1;
                            *r.backends.entry(m.backend.clone()).or_default() += 1;
                            if m.seq != seq || m.payload != body {
                                r.corrupt += 1;
                            }
                        });
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let report = Report {
        unary: unary.take(),
        server_stream: sstream.take(),
        client_stream: cstream.take(),
        bidi: bidi.take(),
        elapsed_s: start.elapsed().as_secs_f64(),
        connect_error: None,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn server_stream_call(
    mut c: EchoClient<Channel>,
    a: &ClientArgs,
    id: u64,
    rec: &Rec,
    limit: Duration,
) {
    rec.with(|r| r.calls += 1);
    let body = payload(a.payload, id);
    let req = Msg {
        count: a.stream_msgs,
        delay_ms: a.stream_delay_ms,
        payload: body.clone(),
        ..Default::default()
    };
    let mut backends = Vec::new();
    let mut intact = true;
    let run = async {
        let mut s = c.server_stream(req).await?.into_inner();
        while let Some(m) = s.message().await? {
            intact &= m.seq == backends.len() as u64 && m.payload == body;
            backends.push(m.backend);
        }
        Ok::<(), Status>(())
    };
    match tokio::time::timeout(limit, run).await {
        Err(_) => rec.fail("timeout".into(), !backends.is_empty()),
        Ok(Err(s)) => rec.fail(describe(&s), !backends.is_empty()),
        Ok(Ok(())) => rec.stream_done(
            &backends,
            intact && backends.len() == a.stream_msgs as usize,
        ),
    }
}

async fn client_stream_call(
    mut c: EchoClient<Channel>,
    a: &ClientArgs,
    rec: &Rec,
    limit: Duration,
) {
    rec.with(|r| r.calls += 1);
    let (n, size, delay) = (a.stream_msgs, a.payload, a.stream_delay_ms);
    let outbound = tokio_stream::iter(0..n).then(move |i| async move {
        if i > 0 && delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
        }
        Msg {
            seq: i as u64,
            payload: payload(size, i as u64),
            ..Default::default()
        }
    });
    match tokio::time::timeout(limit, c.client_stream(outbound)).await {
        Err(_) => rec.fail("timeout".into(), false),
        Ok(Err(s)) => rec.fail(describe(&s), false),
        Ok(Ok(resp)) => {
            let m = resp.into_inner();
            let intact = m.received == n && m.seq == n as u64 * size as u64;
            rec.stream_done(&[m.backend], intact);
        }
    }
}

/// Ping-pong: each message is sent after the reply to the previous one.
async fn bidi_call(mut c: EchoClient<Channel>, a: &ClientArgs, rec: &Rec, limit: Duration) {
    rec.with(|r| r.calls += 1);
    let (tx, rx) = mpsc::channel::<Msg>(1);
    let mut backends = Vec::new();
    let mut intact = true;
    let run = async {
        let first = Msg {
            seq: 0,
            payload: payload(a.payload, 0),
            ..Default::default()
        };
        tx.send(first).await.map_err(|_| Status::internal("send"))?;
        let mut s = c.bidi(ReceiverStream::new(rx)).await?.into_inner();
        for i in 0..a.stream_msgs as u64 {
            let Some(m) = s.message().await? else {
                return Err(Status::data_loss(format!("stream ended after {i} replies")));
            };
            intact &= m.seq == i && m.payload == payload(a.payload, i);
            backends.push(m.backend);
            if i + 1 < a.stream_msgs as u64 {
                if a.stream_delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(a.stream_delay_ms as u64)).await;
                }
                let next = Msg {
                    seq: i + 1,
                    payload: payload(a.payload, i + 1),
                    ..Default::default()
                };
                tx.send(next).await.map_err(|_| Status::internal("send"))?;
            }
        }
        drop(tx);
        while s.message().await?.is_some() {
            intact = false;
        }
        Ok::<(), Status>(())
    };
    match tokio::time::timeout(limit, run).await {
        Err(_) => rec.fail("timeout".into(), !backends.is_empty()),
        Ok(Err(s)) => rec.fail(describe(&s), !backends.is_empty()),
        Ok(Ok(())) => rec.stream_done(&backends, intact),
    }
}
