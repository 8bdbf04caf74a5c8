//! A hand-written HTTP/2 client on a raw TcpStream that writes its bytes in
//! chunks of K bytes (down to one byte per write) with a pause between writes,
//! so frame headers reach the peer split across TCP segments.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::frames::{self, FrameHeader};
use super::{classify, Args, Expected, LoadReport, Stats};

/// Window we grant per stream and (as an increment) on the connection.
const WINDOW: u32 = 1 << 30;

/// What the reader thread tells the writer.
enum Event {
    /// Frames the writer must send (ACKs, WINDOW_UPDATEs), whole.
    Send(Vec<u8>),
    /// A stream finished (classified already).
    StreamDone,
    /// The connection is gone; in-flight streams are lost.
    Closed(String),
}

/// Runs `args.connections` connections on threads and returns the report.
pub fn run(args: &Args, chunk: usize) -> LoadReport {
    let start = Instant::now();
    let stats = Arc::new(Stats::new(args.total_requests()));
    let expected = Arc::new(args.expected_body());
    let deadline = start + args.timeout();
    let stop_at = args.duration().map(|d| start + d);
    if args.upload_bytes.is_some() {
        stats.error("--upload-bytes is not supported with --split-writes".into());
    }
    let threads: Vec<_> = (0..args.connections.max(1))
        .map(|_| {
            let (args, stats, expected) = (args.clone(), stats.clone(), expected.clone());
            std::thread::spawn(move || {
                connection(&args, chunk, &stats, expected, deadline, stop_at)
            })
        })
        .collect();
    let mut timed_out = false;
    for t in threads {
        timed_out |= t.join().unwrap_or(true);
    }
    stats.report(start.elapsed(), timed_out)
}

/// One connection; returns whether it hit the deadline.
fn connection(
    args: &Args,
    chunk: usize,
    stats: &Stats,
    expected: Arc<Option<Expected>>,
    deadline: Instant,
    stop_at: Option<Instant>,
) -> bool {
    let stream = match TcpStream::connect_timeout(&args.addr, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            let e = format!("connect {}: {e}", args.addr);
            stats.error(e.clone());
            while !past(stop_at) && stats.issue() {
                stats.fail(e.clone());
            }
            return false;
        }
    };
    let _ = stream.set_nodelay(true);
    let reader_stream = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            stats.error(format!("try_clone: {e}"));
            return false;
        }
    };
    let (tx, rx) = mpsc::channel();
    let started: Mutex<HashMap<u32, Instant>> = Mutex::default();
    std::thread::scope(|scope| {
        let (tx_r, started_r, expected_r) = (tx.clone(), &started, &*expected);
        scope.spawn(move || read_loop(reader_stream, stats, expected_r, started_r, &tx_r));
        drop(tx);
        let timed_out = write_loop(
            &stream, args, chunk, stats, &started, &rx, deadline, stop_at,
        );
        // Unblocks the reader, which then ends the scope.
        let _ = stream.shutdown(Shutdown::Both);
        timed_out
    })
}

fn past(t: Option<Instant>) -> bool {
    t.is_some_and(|t| Instant::now() >= t)
}

#[allow(clippy::too_many_arguments)]
fn write_loop(
    mut stream: &TcpStream,
    args: &Args,
    chunk: usize,
    stats: &Stats,
    started: &Mutex<HashMap<u32, Instant>>,
    rx: &Receiver<Event>,
    deadline: Instant,
    stop_at: Option<Instant>,
) -> bool {
    let delay = Duration::from_micros(args.chunk_delay_us);
    let (path, authority) = (args.path(), args.authority());
    let mut pending: VecDeque<u8> = VecDeque::new();
    pending.extend(frames::PREFACE);
    pending.extend(frames::settings(&[
        (frames::SETTINGS_ENABLE_PUSH, 0),
        (frames::SETTINGS_INITIAL_WINDOW_SIZE, WINDOW),
    ]));
    pending.extend(frames::window_update(0, WINDOW));
    let (mut next_id, mut inflight, mut exhausted) = (1u32, 0usize, false);
    loop {
        // Whole frames from the reader join the queue at a frame boundary.
        loop {
            match rx.try_recv() {
                Ok(Event::Send(f)) => pending.extend(f),
                Ok(Event::StreamDone) => inflight = inflight.saturating_sub(1),
                Ok(Event::Closed(e)) => {
                    fail_inflight(stats, inflight, &e);
                    return false;
                }
                Err(_) => break,
            }
        }
        while !exhausted && inflight < args.streams.max(1) {
            if past(stop_at) || !stats.issue() {
                exhausted = true;
                break;
            }
            if let Ok(mut m) = started.lock() {
                m.insert(next_id, Instant::now());
            }
            pending.extend(frames::get_request(next_id, &path, &authority));
            next_id += 2;
            inflight += 1;
        }
        if Instant::now() >= deadline {
            stats.error(format!("timeout with {inflight} streams in flight"));
            return true;
        }
        if !pending.is_empty() {
            let n = chunk.min(pending.len());
            let bytes: Vec<u8> = pending.drain(..n).collect();
            if let Err(e) = stream.write_all(&bytes) {
                let e = format!("write: {e}");
                fail_inflight(stats, inflight, &e);
                return false;
            }
            std::thread::sleep(delay);
            continue;
        }
        if exhausted && inflight == 0 {
            return false;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Event::Send(f)) => pending.extend(f),
            Ok(Event::StreamDone) => inflight = inflight.saturating_sub(1),
            Ok(Event::Closed(e)) => {
                fail_inflight(stats, inflight, &e);
                return false;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                fail_inflight(stats, inflight, "reader stopped");
                return false;
            }
        }
    }
}

fn fail_inflight(stats: &Stats, inflight: usize, err: &str) {
    for _ in 0..inflight {
        stats.fail(err.to_string());
    }
}

/// Per-stream response state.
#[derive(Default)]
struct Response {
    status: Option<u16>,
    body: Vec<u8>,
    unacked: u32,
}

fn read_loop(
    mut stream: TcpStream,
    stats: &Stats,
    expected: &Option<Expected>,
    started: &Mutex<HashMap<u32, Instant>>,
    tx: &Sender<Event>,
) {
    let err = match read_frames(&mut stream, stats, expected, started, tx) {
        Ok(()) => "connection closed by peer".to_string(),
        Err(e) => e,
    };
    let _ = tx.send(Event::Closed(err));
}

fn read_frames(
    stream: &mut TcpStream,
    stats: &Stats,
    expected: &Option<Expected>,
    started: &Mutex<HashMap<u32, Instant>>,
    tx: &Sender<Event>,
) -> Result<(), String> {
    let mut decoder = hpack::Decoder::new();
    let mut streams: HashMap<u32, Response> = HashMap::new();
    let mut block: Vec<u8> = Vec::new(); // header block being assembled (HEADERS + CONTINUATION)
    let mut conn_unacked: u32 = 0;
    let send = |f: Vec<u8>| {
        tx.send(Event::Send(f))
            .map_err(|_| "writer gone".to_string())
    };
    loop {
        let mut hdr = [0u8; 9];
        match stream.read_exact(&mut hdr) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("read: {e}")),
        }
        let h = FrameHeader::parse(&hdr);
        if h.len > 1 << 24 {
            return Err(format!("frame too large: {h:?}"));
        }
        let mut payload = vec![0u8; h.len];
        stream
            .read_exact(&mut payload)
            .map_err(|e| format!("read payload of {h:?}: {e}"))?;
        let mut end_stream = false;
        match h.kind {
            frames::SETTINGS if h.flags & frames::FLAG_ACK == 0 => send(frames::settings_ack())?,
            frames::PING if h.flags & frames::FLAG_ACK == 0 => send(frames::ping_ack(&payload))?,
            frames::GOAWAY => {
                let last = payload
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff);
                let code = payload
                    .get(4..8)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                stats.error(format!("GOAWAY last_stream={last:?} code={code:?}"));
            }
            frames::RST_STREAM => {
                let had_response = streams.remove(&h.stream).is_some();
                let was_open = take_start(started, h.stream).is_some();
                if had_response || was_open {
                    stats.fail(format!("RST_STREAM on stream {}: {payload:?}", h.stream));
                    tx.send(Event::StreamDone).map_err(|_| "writer gone")?;
                }
            }
            frames::HEADERS | frames::CONTINUATION => {
                let frag = frames::strip_padding(h.kind, h.flags, &payload)?;
                block.extend_from_slice(frag);
                if h.flags & frames::FLAG_END_HEADERS != 0 {
                    let fields = decoder
                        .decode(&block)
                        .map_err(|e| format!("HPACK decode: {e:?}"))?;
                    block.clear();
                    let r = streams.entry(h.stream).or_default();
                    for (k, v) in fields {
                        if k == b":status" {
                            r.status = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok());
                        }
                    }
                }
                end_stream = h.kind == frames::HEADERS && h.flags & frames::FLAG_END_STREAM != 0;
            }
            frames::DATA => {
                let data = frames::strip_padding(h.kind, h.flags, &payload)?;
                let r = streams.entry(h.stream).or_default();
                r.body.extend_from_slice(data);
                // Flow control counts the whole payload, padding included.
                r.unacked += h.len as u32;
                conn_unacked += h.len as u32;
                end_stream = h.flags & frames::FLAG_END_STREAM != 0;
                if r.unacked >= WINDOW / 2 && !end_stream {
                    send(frames::window_update(h.stream, r.unacked))?;
                    r.unacked = 0;
                }
                if conn_unacked >= WINDOW / 2 {
                    send(frames::window_update(0, conn_unacked))?;
                    conn_unacked = 0;
                }
            }
            _ => {} // PRIORITY, WINDOW_UPDATE, unknown types: nothing to do
        }
        if end_stream {
            let r = streams.remove(&h.stream).unwrap_or_default();
            let latency = take_start(started, h.stream)
                .map(|t| t.elapsed())
                .unwrap_or_default();
            classify(
                stats,
                expected.as_ref(),
                r.status.unwrap_or(0),
                &r.body,
                latency,
            );
            tx.send(Event::StreamDone).map_err(|_| "writer gone")?;
        }
    }
}

fn take_start(started: &Mutex<HashMap<u32, Instant>>, id: u32) -> Option<Instant> {
    started.lock().ok().and_then(|mut m| m.remove(&id))
}
