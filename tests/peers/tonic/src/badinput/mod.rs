//! Malformed HTTP/2 (RFC 9113), one case per connection, and what the server
//! answered. Each case says what a correct HTTP/2 server does with it
//! ([`Expect`]); the verdict compares that with what came back.
//!
//! A case's connection: optional handshake (preface, SETTINGS, wait for the
//! server's SETTINGS and ACK, our ACK), the case's bytes, then a PING probe.
//! We read until GOAWAY, EOF/reset, or the PING ACK (plus a short grace for
//! RST_STREAMs that race it), then half-close and wait for the server to close.
//! "Hung" means: no reaction to the probe and no close after our FIN.
//!
//! Generated cases (`--fuzz N --seed S`) are drawn from the same classes
//! with random parameters, random handshake timing (after the SETTINGS ACK,
//! i.e. the kernel's fast path, or in the first write, the agent's slow path)
//! and random write splits, plus random byte mutations of valid exchanges.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const MAX_FRAME: usize = 16384;

mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

pub mod code {
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    pub const STREAM_CLOSED: u32 = 0x5;
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    pub const CANCEL: u32 = 0x8;
    pub const COMPRESSION_ERROR: u32 = 0x9;
}

fn code_name(c: u32) -> String {
    let n = match c {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => return format!("0x{c:x}"),
    };
    n.to_string()
}

#[derive(clap::Args)]
pub struct Args {
    /// Address to connect to (the Service VIP in tests).
    #[arg(long)]
    addr: SocketAddr,
    /// Named cases to run (`all` for every one; `--list` prints them).
    #[arg(long)]
    case: Vec<String>,
    /// Named cases of these classes (e.g. `idle_stream`).
    #[arg(long)]
    class: Vec<String>,
    /// Generated cases to run.
    #[arg(long)]
    fuzz: Option<u64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Connections in flight at once.
    #[arg(long, default_value_t = 16)]
    parallel: usize,
    /// How long to wait for a reaction to the probe.
    #[arg(long, default_value_t = 1500)]
    probe_ms: u64,
    /// How long to wait for the server to close after our FIN.
    #[arg(long, default_value_t = 3000)]
    close_ms: u64,
    /// Meanwhile keep one well-behaved connection (GET /whoami) busy and report on it.
    #[arg(long)]
    good: bool,
    #[arg(long, default_value_t = 10)]
    good_interval_ms: u64,
    /// `stop_reading`: how long the client holds its responses unread.
    #[arg(long, default_value_t = 4000)]
    hold_ms: u64,
    /// Print the names of the named cases and exit.
    #[arg(long)]
    list: bool,
    /// Stop starting cases once this many hung or could not connect (each
    /// costs the timeouts): a wedged server would otherwise take hours.
    #[arg(long, default_value_t = 200)]
    max_hung: u64,
}

/// What a correct HTTP/2 server does with a case.
#[derive(Debug, Clone, Serialize)]
pub enum Expect {
    /// GOAWAY with one of these codes (or the connection is closed).
    Conn(Vec<u32>),
    /// RST_STREAM on the stream with one of these codes (or a GOAWAY with one, or a close).
    Stream(u32, Vec<u32>),
    /// The input is valid: the connection stays usable (the probe is answered).
    Alive,
    /// Valid requests: every listed stream gets a complete response.
    Responses(Vec<u32>),
    /// The client half-closed mid-frame: the server closes too.
    Closed,
    /// Anything but a hang or garbage.
    NoHang,
    /// A new stream whose id is not above every earlier one (RFC 9113 §5.1.1:
    /// connection error PROTOCOL_ERROR). nghttp2 only ignores such a HEADERS
    /// when it cannot be sure the stream was never used: accepted too, as long
    /// as the stream gets no response.
    RejectOrIgnore(u32, Vec<u32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// No preface: the bytes are all there is.
    Raw,
    /// Preface + SETTINGS + the case's bytes in one write, before the server's SETTINGS.
    Early,
    /// After the handshake and our SETTINGS ACK (rotor: the kernel's fast path).
    Settled,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub class: &'static str,
    pub mode: Mode,
    pub bytes: Vec<u8>,
    pub expect: Expect,
    /// Send the PING probe after the bytes.
    pub probe: bool,
    /// Split the case's bytes into writes of these sizes (with 1 ms pauses).
    pub chunks: Vec<usize>,
    /// Special: hold responses unread for hold_ms.
    pub stop_reading: bool,
}

impl Case {
    fn new(name: &str, class: &'static str, mode: Mode, bytes: Vec<u8>, expect: Expect) -> Case {
        let probe = !matches!(expect, Expect::Closed);
        Case {
            name: name.to_string(),
            class,
            mode,
            bytes,
            expect,
            probe,
            chunks: Vec::new(),
            stop_reading: false,
        }
    }
}

mod connection;
mod frames;
mod generated;
mod named;
mod verdict;

use connection::*;
use frames::*;
use generated::*;
use named::*;
use verdict::*;

// ---------------------------------------------------------------- the run

#[derive(Default, Serialize)]
struct ClassReport {
    cases: u64,
    ok: u64,
    bad: u64,
    /// Outcome summaries and how often each happened.
    outcomes: BTreeMap<String, u64>,
    /// Why cases failed, and how often.
    why: BTreeMap<String, u64>,
}

#[derive(Default, Serialize)]
struct GoodReport {
    ok: u64,
    failed: u64,
    errors: BTreeMap<String, u64>,
    bodies: BTreeMap<String, u64>,
}

#[derive(Default, Serialize)]
struct Report {
    cases: u64,
    ok: u64,
    bad: u64,
    hung: u64,
    /// Cases not run because --max-hung was reached.
    skipped: u64,
    /// The first case that hung or could not connect.
    first_stuck: Option<String>,
    by_class: BTreeMap<String, ClassReport>,
    /// Failed cases (the first 40), with the bytes sent (hex, first 96 bytes).
    bad_examples: Vec<serde_json::Value>,
    /// Every outcome, for named cases.
    named: Vec<Outcome>,
    good: Option<GoodReport>,
    elapsed_s: f64,
}

fn hex(b: &[u8]) -> String {
    b.iter().take(96).map(|x| format!("{x:02x}")).collect()
}

pub fn main(a: Args) -> anyhow::Result<()> {
    if a.list {
        for c in named_cases() {
            println!("{} {}", c.class, c.name);
        }
        return Ok(());
    }
    let start = Instant::now();
    let mut cases: Vec<Case> = Vec::new();
    let named = named_cases();
    for want in &a.case {
        let before = cases.len();
        for c in &named {
            if want == "all"
                || &c.name == want
                || c.name.strip_suffix("/early") == Some(want.as_str())
            {
                cases.push(c.clone());
            }
        }
        if cases.len() == before {
            anyhow::bail!("no named case {want:?} (see --list)");
        }
    }
    for want in &a.class {
        let before = cases.len();
        cases.extend(named.iter().filter(|c| c.class == want.as_str()).cloned());
        if cases.len() == before {
            anyhow::bail!("no named case of class {want:?} (see --list)");
        }
    }
    let n_named = cases.len();
    let fuzz = a.fuzz.unwrap_or(0);

    let stop = Arc::new(AtomicBool::new(false));
    let (first, answered) = std::sync::mpsc::channel();
    let good = a
        .good
        .then(|| spawn_good(a.addr, a.good_interval_ms, stop.clone(), first));
    // The cases start once the good connection has had its first answer:
    // under emulation its connect and first request through the agent took
    // longer than a class of six cases, which then ended it with no request
    // made (bad_input on 6.1 under QEMU: `good ... "ok":0,"failed":0`).
    if good.is_some() {
        let _ = answered.recv_timeout(Duration::from_secs(60));
    }

    let report = Arc::new(Mutex::new(Report::default()));
    let next = AtomicUsize::new(0);
    let total = n_named as u64 + fuzz;
    let hung = AtomicU64::new(0);
    let skipped = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..a.parallel.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as u64;
                if i >= total {
                    return;
                }
                if hung.load(Ordering::Relaxed) >= a.max_hung {
                    skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let case = if (i as usize) < n_named { cases[i as usize].clone() } else { generate(a.seed, i - n_named as u64) };
                let o = run_case(a.addr, &case, &a);
                // Hung, or could not even connect (a wedged server's full accept queue).
                let stuck = o.why.starts_with("hung") || o.connect_error.is_some();
                if stuck {
                    hung.fetch_add(1, Ordering::Relaxed);
                }
                let done = i + 1;
                if done.is_multiple_of(1000) {
                    eprintln!("badinput: {done} cases started, {} stuck, {:.1} s", hung.load(Ordering::Relaxed), start.elapsed().as_secs_f64());
                }
                let mut r = report.lock().expect("report lock");
                if stuck && r.first_stuck.is_none() {
                    r.first_stuck = Some(format!("case {i} ({}, {:?}): {}", case.class, case.mode, o.why));
                }
                r.cases += 1;
                let cr = r.by_class.entry(case.class.to_string()).or_default();
                cr.cases += 1;
                *cr.outcomes.entry(format!("{:?}: {}", case.mode, o.summary)).or_default() += 1;
                if o.ok {
                    cr.ok += 1;
                } else {
                    cr.bad += 1;
                    // Group reasons without stream ids and numbers that vary per case.
                    let key: String = o.why.chars().map(|ch| if ch.is_ascii_digit() { '#' } else { ch }).collect();
                    *cr.why.entry(key).or_default() += 1;
                }
                if o.ok {
                    r.ok += 1;
                } else {
                    r.bad += 1;
                    if r.bad_examples.len() < 40 {
                        let ex = serde_json::json!({
                            "case": case.name, "class": case.class, "mode": format!("{:?}", case.mode),
                            "chunks": case.chunks.len(), "expect": case.expect, "bytes": hex(&case.bytes),
                            "outcome": o.summary, "why": o.why,
                        });
                        r.bad_examples.push(ex);
                    }
                }
                if (i as usize) < n_named {
                    r.named.push(o);
                }
            });
        }
    });
    stop.store(true, Ordering::SeqCst);
    let mut r = std::mem::take(&mut *report.lock().expect("report lock"));
    r.hung = hung.load(Ordering::Relaxed);
    r.skipped = skipped.load(Ordering::Relaxed);
    if let Some(g) = good {
        r.good = Some(g.join().unwrap_or_default());
    }
    r.named.sort_by(|x, y| x.name.cmp(&y.name));
    r.elapsed_s = start.elapsed().as_secs_f64();
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

/// A well-behaved HTTP/2 connection (hyper) doing GET /whoami until `stop`.
fn spawn_good(
    addr: SocketAddr,
    interval_ms: u64,
    stop: Arc<AtomicBool>,
    first: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<GoodReport> {
    std::thread::spawn(move || {
        let mut rep = GoodReport::default();
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                rep.errors.insert(format!("runtime: {e}"), 1);
                return rep;
            }
        };
        rt.block_on(async {
            use bytes::Bytes;
            use http_body_util::{BodyExt, Empty};
            let conn = async {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                let (sender, conn) =
                    hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .handshake::<_, Empty<Bytes>>(hyper_util::rt::TokioIo::new(stream))
                        .await?;
                tokio::spawn(conn);
                Ok::<_, anyhow::Error>(sender)
            };
            let mut sender = match conn.await {
                Ok(s) => s,
                Err(e) => {
                    rep.failed += 1;
                    rep.errors.insert(format!("connect: {e:#}"), 1);
                    return;
                }
            };
            while !stop.load(Ordering::SeqCst) {
                let req = http::Request::get(format!("http://{addr}/whoami"))
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let res = tokio::time::timeout(Duration::from_secs(10), async {
                    sender.ready().await.map_err(|e| format!("ready: {e}"))?;
                    let resp = sender
                        .send_request(req)
                        .await
                        .map_err(|e| format!("{e:?}"))?;
                    let st = resp.status();
                    let body = resp
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| format!("body: {e:?}"))?
                        .to_bytes();
                    if st != 200 {
                        return Err(format!("status {st}"));
                    }
                    Ok(String::from_utf8_lossy(&body).into_owned())
                })
                .await
                .unwrap_or_else(|_| Err("timeout".into()));
                let _ = first.send(());
                match res {
                    Ok(b) => {
                        rep.ok += 1;
                        *rep.bodies.entry(b).or_default() += 1;
                    }
                    Err(e) => {
                        rep.failed += 1;
                        let e: String = e.chars().take(200).collect();
                        *rep.errors.entry(e).or_default() += 1;
                        if rep.failed > 50 {
                            return;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(interval_ms)).await;
            }
        });
        rep
    })
}
