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

// ---------------------------------------------------------------- frames

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = Vec::with_capacity(9 + len);
    f.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A frame header claiming `len` bytes, followed by `send` bytes of payload.
fn frame_claiming(kind: u8, flags: u8, stream: u32, len: usize, send: usize) -> Vec<u8> {
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend(std::iter::repeat_n(0u8, send));
    f
}

fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in values {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(kind::SETTINGS, 0, 0, &p)
}

fn u32be(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

fn hpack_int(out: &mut Vec<u8>, mut n: usize, prefix: u8, first: u8) {
    let max = (1usize << prefix) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// Literal header fields without indexing (no dynamic table, no Huffman).
fn hpack_block(fields: &[(&str, String)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in fields {
        b.push(0);
        hpack_int(&mut b, n.len(), 7, 0);
        b.extend_from_slice(n.as_bytes());
        hpack_int(&mut b, v.len(), 7, 0);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

fn request_fields(method: &str, path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", method.to_string()),
        (":scheme", "http".to_string()),
        (":path", path.to_string()),
        (":authority", "10.96.0.10:8080".to_string()),
    ]
}

/// A GET (END_STREAM) or the HEADERS of a POST, as HEADERS + CONTINUATIONs as needed.
fn request(stream: u32, path: &str, end_stream: bool) -> Vec<u8> {
    let method = if end_stream { "GET" } else { "POST" };
    headers_frames(stream, &hpack_block(&request_fields(method, path)), end_stream)
}

fn headers_frames(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunks = block.chunks(MAX_FRAME).peekable();
    let first = chunks.next().unwrap_or(&[]);
    let es = if end_stream { END_STREAM } else { 0 };
    let eh = if chunks.peek().is_none() { END_HEADERS } else { 0 };
    out.extend(frame(kind::HEADERS, es | eh, stream, first));
    while let Some(c) = chunks.next() {
        let eh = if chunks.peek().is_none() { END_HEADERS } else { 0 };
        out.extend(frame(kind::CONTINUATION, eh, stream, c));
    }
    out
}

// ---------------------------------------------------------------- named cases

/// Every named case, in the modes where it makes sense.
pub fn named_cases() -> Vec<Case> {
    use code::*;
    use Expect::*;
    let mut v: Vec<Case> = Vec::new();
    let mut both = |name: &str, class: &'static str, bytes: Vec<u8>, expect: Expect| {
        v.push(Case::new(name, class, Mode::Settled, bytes.clone(), expect.clone()));
        v.push(Case::new(&format!("{name}/early"), class, Mode::Early, bytes, expect));
    };
    let get1 = request(1, "/whoami", true);
    let post1 = request(1, "/whoami?echo", false);

    both("valid_request", "valid", get1.clone(), Responses(vec![1]));
    both(
        "valid_three_requests",
        "valid",
        [request(1, "/whoami", true), request(3, "/whoami", true), request(5, "/whoami", true)].concat(),
        Responses(vec![1, 3, 5]),
    );
    both("frame_too_large_data", "frame_too_large", [post1.clone(), frame_claiming(kind::DATA, 0, 1, MAX_FRAME + 1, MAX_FRAME + 1)].concat(), Stream(1, vec![FRAME_SIZE_ERROR]));
    both("frame_too_large_headers", "frame_too_large", frame_claiming(kind::HEADERS, END_HEADERS, 1, 20000, 20000), Conn(vec![FRAME_SIZE_ERROR]));
    both("frame_too_large_settings", "frame_too_large", frame_claiming(kind::SETTINGS, 0, 0, 16386, 16386), Conn(vec![FRAME_SIZE_ERROR]));
    both("frame_too_large_max_len", "frame_too_large", frame_claiming(kind::DATA, 0, 1, 0xff_ffff, 1000), Conn(vec![FRAME_SIZE_ERROR, PROTOCOL_ERROR]));
    both("even_stream_id", "even_stream", request(2, "/whoami", true), Conn(vec![PROTOCOL_ERROR]));
    both(
        "decreasing_stream_id",
        "decreasing_stream",
        [request(5, "/whoami", true), request(3, "/whoami", true)].concat(),
        RejectOrIgnore(3, vec![PROTOCOL_ERROR, STREAM_CLOSED]),
    );
    both("continuation_without_headers", "stray_continuation", frame(kind::CONTINUATION, END_HEADERS, 1, &hpack_block(&request_fields("GET", "/whoami"))), Conn(vec![PROTOCOL_ERROR]));
    both(
        "continuation_after_end_headers",
        "stray_continuation",
        [get1.clone(), frame(kind::CONTINUATION, END_HEADERS, 1, &[0x82])].concat(),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both(
        "header_block_interrupted_by_ping",
        "interrupted_block",
        [frame(kind::HEADERS, END_STREAM, 1, &hpack_block(&request_fields("GET", "/whoami"))), frame(kind::PING, 0, 0, b"intrrupt")].concat(),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both(
        "header_block_interrupted_by_other_stream",
        "interrupted_block",
        [frame(kind::HEADERS, END_STREAM, 1, &hpack_block(&request_fields("GET", "/whoami"))), request(3, "/whoami", true)].concat(),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both("settings_on_stream", "control_on_stream", frame(kind::SETTINGS, 0, 1, &[]), Conn(vec![PROTOCOL_ERROR]));
    both("settings_ack_on_stream", "control_on_stream", frame(kind::SETTINGS, ACK, 3, &[]), Conn(vec![PROTOCOL_ERROR]));
    both("ping_on_stream", "control_on_stream", frame(kind::PING, 0, 1, b"12345678"), Conn(vec![PROTOCOL_ERROR]));
    both("goaway_on_stream", "control_on_stream", frame(kind::GOAWAY, 0, 1, &[0, 0, 0, 0, 0, 0, 0, 0]), Conn(vec![PROTOCOL_ERROR]));
    both("data_on_idle_stream", "idle_stream", frame(kind::DATA, 0, 1, b"hello"), Conn(vec![PROTOCOL_ERROR, STREAM_CLOSED]));
    both("data_on_idle_stream_end", "idle_stream", frame(kind::DATA, END_STREAM, 7, b"hello"), Conn(vec![PROTOCOL_ERROR, STREAM_CLOSED]));
    both("window_update_on_idle_stream", "idle_stream", frame(kind::WINDOW_UPDATE, 0, 9, &u32be(100)), Conn(vec![PROTOCOL_ERROR]));
    both("rst_stream_on_idle_stream", "idle_stream", frame(kind::RST_STREAM, 0, 11, &u32be(CANCEL)), Conn(vec![PROTOCOL_ERROR]));
    both("settings_bad_length", "bad_length", frame(kind::SETTINGS, 0, 0, &[0, 4, 0, 0, 0]), Conn(vec![FRAME_SIZE_ERROR]));
    both("settings_ack_with_payload", "bad_length", frame(kind::SETTINGS, ACK, 0, &[0, 4, 0, 0, 0, 1]), Conn(vec![FRAME_SIZE_ERROR]));
    both("ping_bad_length", "bad_length", frame(kind::PING, 0, 0, b"1234567"), Conn(vec![FRAME_SIZE_ERROR]));
    both("window_update_bad_length", "bad_length", frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1]), Conn(vec![FRAME_SIZE_ERROR]));
    both("rst_stream_bad_length", "bad_length", [post1.clone(), frame(kind::RST_STREAM, 0, 1, &[0, 0, 8])].concat(), Conn(vec![FRAME_SIZE_ERROR]));
    both("priority_bad_length", "bad_length", frame(kind::PRIORITY, 0, 3, &[0, 0, 0, 0]), Stream(3, vec![FRAME_SIZE_ERROR]));
    both("window_update_zero_increment", "flow_control", frame(kind::WINDOW_UPDATE, 0, 0, &u32be(0)), Conn(vec![PROTOCOL_ERROR]));
    both(
        "window_update_overflow",
        "flow_control",
        [frame(kind::WINDOW_UPDATE, 0, 0, &u32be(0x7fff_ffff)), frame(kind::WINDOW_UPDATE, 0, 0, &u32be(0x7fff_ffff))].concat(),
        Conn(vec![FLOW_CONTROL_ERROR]),
    );
    both("settings_enable_push_2", "bad_settings", settings(&[(0x2, 2)]), Conn(vec![PROTOCOL_ERROR]));
    both("settings_initial_window_too_big", "bad_settings", settings(&[(0x4, 0x8000_0000)]), Conn(vec![FLOW_CONTROL_ERROR]));
    both("settings_max_frame_size_too_small", "bad_settings", settings(&[(0x5, 100)]), Conn(vec![PROTOCOL_ERROR]));
    both("bad_hpack", "bad_hpack", frame(kind::HEADERS, END_HEADERS | END_STREAM, 1, &[0xff, 0xff, 0xff, 0xff, 0x7f]), Conn(vec![COMPRESSION_ERROR]));
    // A dynamic table size update whose integer never ends (0x3f wants more
    // bytes): panicked the hpack crate's decoder (found by userspace/fuzz).
    both("bad_hpack_truncated_integer", "bad_hpack", frame(kind::HEADERS, END_HEADERS | END_STREAM, 1, &[0x3f]), Conn(vec![COMPRESSION_ERROR]));
    both("bad_hpack_index", "bad_hpack", frame(kind::HEADERS, END_HEADERS | END_STREAM, 1, &[0x82, 0xbf, 0x84]), Conn(vec![COMPRESSION_ERROR]));
    both("push_promise_from_client", "push_promise", frame(kind::PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2, 0x82]), Conn(vec![PROTOCOL_ERROR]));
    both(
        "padding_too_long",
        "padding",
        [post1.clone(), frame(kind::DATA, PADDED, 1, &[10, b'a', b'b'])].concat(),
        Conn(vec![PROTOCOL_ERROR]),
    );
    {
        let mut p = vec![0, 0, 0, 1, 15];
        p.extend(hpack_block(&request_fields("GET", "/whoami")));
        both("self_dependency", "priority", frame(kind::HEADERS, END_HEADERS | END_STREAM | PRIORITY_FLAG, 1, &p), Stream(1, vec![PROTOCOL_ERROR]));
    }
    both(
        "data_after_end_stream",
        "closed_stream",
        [get1.clone(), frame(kind::DATA, 0, 1, b"late")].concat(),
        Stream(1, vec![STREAM_CLOSED, PROTOCOL_ERROR]),
    );
    both("unknown_frame_type_stream_0", "unknown_type", frame(0x20, 0xff, 0, b"ignore me"), Alive);
    both("unknown_frame_type_on_stream", "unknown_type", [frame(0x21, 0, 1, b"ignore me"), get1.clone()].concat(), Responses(vec![1]));
    // 0xfa is the frame type rotor's agent uses on its private injector socket.
    both("rotor_private_frame_type", "unknown_type", frame(0xfa, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]), Alive);
    both("rotor_private_frame_type_on_stream", "unknown_type", [frame(0xfa, 0, 1, &[0, 0, 0, 1]), get1.clone()].concat(), Responses(vec![1]));
    {
        let mut fields = request_fields("GET", "/whoami");
        for k in 0..80 {
            fields.push(("x-big", format!("{k:04}-{}", "v".repeat(1000))));
        }
        both("header_block_over_64k", "big_block", headers_frames(1, &hpack_block(&fields), true), NoHang);
    }
    {
        let mut fields = request_fields("GET", "/whoami");
        for k in 0..40 {
            fields.push(("x-big", format!("{k:04}-{}", "v".repeat(1000))));
        }
        both("header_block_40k_continuations", "big_block", headers_frames(1, &hpack_block(&fields), true), Responses(vec![1]));
    }
    {
        let mut b = Vec::new();
        for i in 0..500u32 {
            b.extend(request(1 + 2 * i, "/whoami", false));
            b.extend(frame(kind::RST_STREAM, 0, 1 + 2 * i, &u32be(CANCEL)));
        }
        b.extend(request(1001, "/whoami", true));
        both("rapid_reset", "rapid_reset", b, NoHang);
    }
    // Without a handshake.
    v.push(Case::new("bad_preface_typo", "bad_preface", Mode::Raw, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n".to_vec(), Conn(vec![PROTOCOL_ERROR])));
    v.push(Case::new("bad_preface_http2_then_garbage", "bad_preface", Mode::Raw, [&PREFACE[..10], &b"\x00\x01garbage\xff\xfe"[..]].concat(), Conn(vec![PROTOCOL_ERROR])));
    v.push(Case::new("preface_only_then_fin", "truncated", Mode::Raw, PREFACE[..16].to_vec(), Closed));
    v.push(Case::new("no_settings_after_preface", "bad_preface", Mode::Raw, [PREFACE, &frame(kind::PING, 0, 0, b"12345678")[..]].concat(), Conn(vec![PROTOCOL_ERROR])));
    for mode in [Mode::Settled, Mode::Early] {
        let sfx = if mode == Mode::Early { "/early" } else { "" };
        v.push(Case::new(&format!("truncated_frame_header{sfx}"), "truncated", mode, get1[..5].to_vec(), Closed));
        v.push(Case::new(&format!("truncated_frame_payload{sfx}"), "truncated", mode, get1[..get1.len() - 3].to_vec(), Closed));
        v.push(Case::new(
            &format!("truncated_data{sfx}"),
            "truncated",
            mode,
            [post1.clone(), frame_claiming(kind::DATA, END_STREAM, 1, 1000, 200)].concat(),
            Closed,
        ));
    }
    // A client that stops reading: 16 downloads of /big with windows wide open, unread.
    {
        let mut b = settings(&[(0x4, 0x7fff_ffff)]);
        b.extend(frame(kind::WINDOW_UPDATE, 0, 0, &u32be(0x7fff_ffff - 65535)));
        let streams: Vec<u32> = (0..16).map(|i| 1 + 2 * i).collect();
        for s in &streams {
            b.extend(request(*s, "/big", true));
        }
        let mut c = Case::new("stop_reading", "stop_reading", Mode::Settled, b, Responses(streams));
        c.stop_reading = true;
        v.push(c);
    }
    v
}

// ---------------------------------------------------------------- generated cases

/// splitmix64
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn odd_stream(&mut self) -> u32 {
        (self.range(0, 2000) * 2 + 1) as u32
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn bytes_below(&mut self, n: u64) -> Vec<u8> {
        let n = self.below(n) as usize;
        self.bytes(n)
    }
    fn bytes_range(&mut self, lo: u64, hi: u64) -> Vec<u8> {
        let n = self.range(lo, hi) as usize;
        self.bytes(n)
    }
}

const CLASSES: &[&str] = &[
    "bad_preface",
    "frame_too_large",
    "even_stream",
    "decreasing_stream",
    "stray_continuation",
    "interrupted_block",
    "control_on_stream",
    "idle_stream",
    "truncated",
    "bad_length",
    "flow_control",
    "bad_settings",
    "bad_hpack",
    "push_promise",
    "padding",
    "unknown_type",
    "mutation",
    "mutation",
    "valid",
];

/// Case `i` of the run seeded with `seed`.
pub fn generate(seed: u64, i: u64) -> Case {
    use code::*;
    use Expect::*;
    let mut r = Rng(seed.wrapping_mul(0x1000_0000_01b3) ^ i.wrapping_mul(0x9e37_79b9));
    r.next();
    let class = CLASSES[r.below(CLASSES.len() as u64) as usize];
    let mode = if r.chance(40) { Mode::Early } else { Mode::Settled };
    let s = r.odd_stream();
    let (bytes, expect, mode) = match class {
        "bad_preface" => {
            let mut p = PREFACE.to_vec();
            for _ in 0..r.range(1, 3) {
                let at = r.below(24) as usize;
                p[at] ^= (r.range(1, 255)) as u8;
            }
            let cut = r.range(1, 24) as usize;
            p.truncate(cut.max(p.iter().zip(PREFACE).position(|(a, b)| a != b).map_or(24, |d| d + 1)));
            p.extend(r.bytes_below(40));
            (p, Conn(vec![PROTOCOL_ERROR]), Mode::Raw)
        }
        "frame_too_large" => {
            let len = if r.chance(50) { r.range(MAX_FRAME as u64 + 1, 70_000) } else { r.range(70_000, 0xff_ffff) } as usize;
            let t = [kind::DATA, kind::HEADERS, kind::SETTINGS, kind::PING, kind::WINDOW_UPDATE, 0x33][r.below(6) as usize];
            let st = if t == kind::SETTINGS || t == kind::PING { 0 } else { s };
            let send = len.min(r.range(0, 20_000) as usize);
            let mut b = Vec::new();
            if t == kind::DATA {
                b.extend(request(st, "/whoami?echo", false));
            }
            b.extend(frame_claiming(t, END_HEADERS, st, len, send));
            let exp = if t == kind::DATA { Stream(st, vec![FRAME_SIZE_ERROR]) } else { Conn(vec![FRAME_SIZE_ERROR]) };
            (b, exp, mode)
        }
        "even_stream" => (request(s + 1, "/whoami", r.chance(50)), Conn(vec![PROTOCOL_ERROR]), mode),
        "decreasing_stream" => {
            let s = s.max(3);
            let lower = (r.below((s / 2) as u64) * 2 + 1) as u32; // odd, below s
            let b = [request(s, "/whoami", true), request(lower, "/whoami", true)].concat();
            (b, RejectOrIgnore(lower, vec![PROTOCOL_ERROR, STREAM_CLOSED]), mode)
        }
        "stray_continuation" => {
            let payload = r.bytes_below(64);
            let flags = if r.chance(50) { END_HEADERS } else { 0 };
            let b = if r.chance(50) {
                frame(kind::CONTINUATION, flags, s, &payload)
            } else {
                [request(s, "/whoami", true), frame(kind::CONTINUATION, flags, s, &payload)].concat()
            };
            (b, Conn(vec![PROTOCOL_ERROR]), mode)
        }
        "interrupted_block" => {
            let head = frame(kind::HEADERS, END_STREAM, s, &hpack_block(&request_fields("GET", "/whoami")));
            let other = match r.below(4) {
                0 => frame(kind::PING, 0, 0, b"12345678"),
                1 => frame(kind::DATA, 0, s, b"x"),
                2 => request(s + 2, "/whoami", true),
                _ => frame(kind::CONTINUATION, END_HEADERS, s + 2, &[0x82]),
            };
            ([head, other].concat(), Conn(vec![PROTOCOL_ERROR]), mode)
        }
        "control_on_stream" => {
            let f = match r.below(4) {
                0 => frame(kind::SETTINGS, 0, s, &[]),
                1 => frame(kind::SETTINGS, ACK, s, &[]),
                2 => frame(kind::PING, if r.chance(30) { ACK } else { 0 }, s, &r.bytes(8)),
                _ => frame(kind::GOAWAY, 0, s, &[0, 0, 0, 0, 0, 0, 0, r.below(14) as u8]),
            };
            (f, Conn(vec![PROTOCOL_ERROR]), mode)
        }
        "idle_stream" => {
            let f = match r.below(3) {
                0 => frame(kind::DATA, if r.chance(50) { END_STREAM } else { 0 }, s, &r.bytes_below(100)),
                1 => frame(kind::WINDOW_UPDATE, 0, s, &u32be(r.range(1, 1 << 20) as u32)),
                _ => frame(kind::RST_STREAM, 0, s, &u32be(r.below(14) as u32)),
            };
            (f, Conn(vec![PROTOCOL_ERROR, STREAM_CLOSED]), mode)
        }
        "truncated" => {
            let mut full = if r.chance(50) { request(s, "/whoami", true) } else { frame(kind::PING, 0, 0, b"12345678") };
            let cut = r.range(1, full.len() as u64 - 1) as usize;
            full.truncate(cut);
            (full, Closed, mode)
        }
        "bad_length" => {
            let (f, exp) = match r.below(5) {
                0 => {
                    let n = loop {
                        let n = r.range(1, 40);
                        if n % 6 != 0 {
                            break n;
                        }
                    };
                    (frame(kind::SETTINGS, 0, 0, &r.bytes(n as usize)), Conn(vec![FRAME_SIZE_ERROR]))
                }
                1 => {
                    let n = [0, 1, 4, 7, 9, 16][r.below(6) as usize];
                    (frame(kind::PING, 0, 0, &r.bytes(n)), Conn(vec![FRAME_SIZE_ERROR]))
                }
                2 => {
                    let n = [0, 1, 3, 5, 8][r.below(5) as usize];
                    (frame(kind::WINDOW_UPDATE, 0, 0, &r.bytes(n)), Conn(vec![FRAME_SIZE_ERROR]))
                }
                3 => (frame(kind::SETTINGS, ACK, 0, &r.bytes_range(1, 12)), Conn(vec![FRAME_SIZE_ERROR])),
                _ => {
                    let n = [0, 3, 5, 8][r.below(4) as usize];
                    ([request(s, "/whoami?echo", false), frame(kind::RST_STREAM, 0, s, &r.bytes(n))].concat(), Conn(vec![FRAME_SIZE_ERROR]))
                }
            };
            (f, exp, mode)
        }
        "flow_control" => {
            if r.chance(50) {
                (frame(kind::WINDOW_UPDATE, 0, 0, &u32be(0)), Conn(vec![PROTOCOL_ERROR]), mode)
            } else {
                let a = r.range(0x7fff_0000, 0x7fff_ffff) as u32;
                ([frame(kind::WINDOW_UPDATE, 0, 0, &u32be(a)), frame(kind::WINDOW_UPDATE, 0, 0, &u32be(a))].concat(), Conn(vec![FLOW_CONTROL_ERROR]), mode)
            }
        }
        "bad_settings" => match r.below(3) {
            0 => (settings(&[(0x2, r.range(2, u32::MAX as u64) as u32)]), Conn(vec![PROTOCOL_ERROR]), mode),
            1 => (settings(&[(0x4, r.range(0x8000_0000, u32::MAX as u64) as u32)]), Conn(vec![FLOW_CONTROL_ERROR]), mode),
            _ => {
                let v = if r.chance(50) { r.range(0, 16383) } else { r.range(16_777_216, u32::MAX as u64) } as u32;
                (settings(&[(0x5, v)]), Conn(vec![PROTOCOL_ERROR]), mode)
            }
        },
        "bad_hpack" => {
            // Index beyond the static table (and the empty dynamic one), or a
            // string length beyond the block.
            let block = if r.chance(50) {
                let mut b = vec![0x82];
                hpack_int(&mut b, r.range(70, 5000) as usize, 7, 0x80);
                b
            } else {
                vec![0x00, 0x7f, 0xff, 0xff, 0x0f, b'a']
            };
            (frame(kind::HEADERS, END_HEADERS | END_STREAM, s, &block), Conn(vec![COMPRESSION_ERROR]), mode)
        }
        "push_promise" => {
            let mut p = u32be(s + 1).to_vec();
            p.extend(hpack_block(&request_fields("GET", "/x")));
            (frame(kind::PUSH_PROMISE, END_HEADERS, s, &p), Conn(vec![PROTOCOL_ERROR]), mode)
        }
        "padding" => {
            let n = r.range(0, 20) as usize;
            // Padding as long as the payload (n + 1) or longer is the error
            // (RFC 9113 §6.1); n itself would be valid.
            let mut p = vec![(n + 1 + r.range(0, 200) as usize).min(255) as u8];
            p.extend(r.bytes(n));
            ([request(s, "/whoami?echo", false), frame(kind::DATA, PADDED, s, &p)].concat(), Conn(vec![PROTOCOL_ERROR]), mode)
        }
        "unknown_type" => {
            let t = r.range(0x0a, 0xff) as u8;
            let st = if r.chance(50) { 0 } else { s };
            let f = frame(t, r.next() as u8, st, &r.bytes_below(200));
            let get = request(s + 2, "/whoami", true);
            ([f, get].concat(), Responses(vec![s + 2]), mode)
        }
        "mutation" => {
            let mut b = [request(s, "/whoami?echo", false), frame(kind::DATA, END_STREAM, s, &r.bytes_below(300)), request(s + 2, "/whoami", true)].concat();
            for _ in 0..r.range(1, 4) {
                let at = r.below(b.len() as u64) as usize;
                b[at] ^= r.range(1, 255) as u8;
            }
            if r.chance(20) {
                let cut = r.range(1, b.len() as u64) as usize;
                b.truncate(cut);
            }
            (b, NoHang, mode)
        }
        _ => {
            let n = r.range(1, 5) as u32;
            let b: Vec<u8> = (0..n).flat_map(|k| request(s + 2 * k, "/whoami", true)).collect();
            (b, Responses((0..n).map(|k| s + 2 * k).collect()), mode)
        }
    };
    let mut c = Case::new(&format!("fuzz-{seed}-{i}"), class, mode, bytes, expect);
    if r.chance(30) && c.bytes.len() > 1 {
        let mut left = c.bytes.len();
        while left > 0 {
            let n = (r.range(1, 64) as usize).min(left);
            c.chunks.push(n);
            left -= n;
        }
    }
    c
}

// ---------------------------------------------------------------- running a case

#[derive(Debug, Default, Clone, Serialize)]
pub struct Outcome {
    pub name: String,
    pub class: String,
    pub mode: String,
    pub connect_error: Option<String>,
    /// The server's SETTINGS arrived (Settled mode).
    pub handshake: bool,
    pub goaway: Option<String>,
    pub goaway_last_stream: Option<u32>,
    /// RST_STREAMs as "stream:CODE".
    pub rst: Vec<String>,
    /// Response HEADERS by stream, as ":status" (or "?" if not decodable).
    pub responses: BTreeMap<u32, String>,
    /// Streams whose response ended (END_STREAM).
    pub completed: Vec<u32>,
    /// DATA bytes received, by stream.
    pub data: BTreeMap<u32, u64>,
    pub ping_ack: bool,
    /// How the server ended the connection before our FIN: "eof", "reset", or none.
    pub closed: Option<String>,
    /// After our FIN: "eof", "reset", or "open" (the server kept it open).
    pub after_fin: Option<String>,
    /// Bytes from the server that are not HTTP/2 frames we accept.
    pub garbage: Option<String>,
    /// `ss -tnmi` of our socket when the server kept it open after our FIN.
    pub socket: Option<String>,
    pub ms: u64,
    pub ok: bool,
    pub why: String,
    pub summary: String,
}

struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    hpack: hpack::Decoder<'static>,
    out: Outcome,
    got_settings: bool,
    got_settings_ack: bool,
    eof: bool,
}

impl Conn {
    fn write(&mut self, b: &[u8]) -> bool {
        match self.s.write_all(b) {
            Ok(()) => true,
            Err(e) => {
                self.note_closed(&e);
                false
            }
        }
    }

    fn note_closed(&mut self, e: &std::io::Error) {
        if self.out.closed.is_none() {
            self.out.closed = Some(match e.kind() {
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => "reset".to_string(),
                _ => format!("error: {e}"),
            });
        }
        self.eof = true;
    }

    /// Reads what is there until `until` (or EOF); handles every whole frame.
    /// Returns whether it read something.
    fn read_some(&mut self, until: Instant) -> bool {
        let mut tmp = vec![0u8; 65536];
        loop {
            let now = Instant::now();
            if self.eof || now >= until {
                return false;
            }
            let _ = self.s.set_read_timeout(Some((until - now).max(Duration::from_millis(1))));
            match self.s.read(&mut tmp) {
                Ok(0) => {
                    if self.out.closed.is_none() {
                        self.out.closed = Some("eof".into());
                    }
                    self.eof = true;
                    if !self.buf.is_empty() && self.out.garbage.is_none() {
                        self.out.garbage = Some(format!("{} bytes of a partial frame before EOF", self.buf.len()));
                    }
                    return false;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    self.handle_frames();
                    return true;
                }
                // A socket in a sockmap (rotor puts the client's there) can
                // return EAGAIN from a blocking read before its timeout, when
                // a wake-up brought no data: wait on until the deadline.
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => {
                    self.note_closed(&e);
                    return false;
                }
            }
        }
    }

    fn handle_frames(&mut self) {
        while self.buf.len() >= 9 && self.out.garbage.is_none() {
            let len = (usize::from(self.buf[0]) << 16) | (usize::from(self.buf[1]) << 8) | usize::from(self.buf[2]);
            let (t, flags) = (self.buf[3], self.buf[4]);
            let stream = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]) & 0x7fff_ffff;
            if len > MAX_FRAME {
                self.out.garbage = Some(format!("frame of {len} bytes (type 0x{t:x}, stream {stream}): beyond our MAX_FRAME_SIZE"));
                return;
            }
            if self.buf.len() < 9 + len {
                return;
            }
            let payload: Vec<u8> = self.buf[9..9 + len].to_vec();
            self.buf.drain(..9 + len);
            self.on_frame(t, flags, stream, &payload);
        }
    }

    fn on_frame(&mut self, t: u8, flags: u8, stream: u32, p: &[u8]) {
        match t {
            kind::SETTINGS if stream == 0 => {
                if flags & ACK != 0 {
                    self.got_settings_ack = true;
                } else {
                    self.got_settings = true;
                    if self.out.handshake || self.out.mode != "Settled" {
                        // Later SETTINGS: acknowledge as a good peer would.
                        let _ = self.s.write_all(&frame(kind::SETTINGS, ACK, 0, &[]));
                    }
                }
            }
            kind::PING if stream == 0 => {
                if flags & ACK != 0 {
                    if p == b"rotorfzz" {
                        self.out.ping_ack = true;
                    }
                } else {
                    let _ = self.s.write_all(&frame(kind::PING, ACK, 0, p));
                }
            }
            kind::GOAWAY if p.len() >= 8 => {
                let last = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
                let c = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                self.out.goaway = Some(code_name(c));
                self.out.goaway_last_stream = Some(last);
            }
            kind::RST_STREAM if p.len() == 4 => {
                let c = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                self.out.rst.push(format!("{stream}:{}", code_name(c)));
            }
            kind::HEADERS => {
                // Responses (and trailers); rotor's endpoints use no dynamic table.
                let mut block = p;
                if flags & PADDED != 0 && !block.is_empty() {
                    let pad = block[0] as usize;
                    block = &block[1..block.len().saturating_sub(pad).max(1)];
                }
                if flags & PRIORITY_FLAG != 0 && block.len() >= 5 {
                    block = &block[5..];
                }
                let status = match self.hpack.decode(block) {
                    Ok(fields) => fields
                        .iter()
                        .find(|(n, _)| n == b":status")
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_else(|| "trailers".into()),
                    Err(_) => "?".into(),
                };
                if status != "trailers" || !self.out.responses.contains_key(&stream) {
                    self.out.responses.insert(stream, status);
                }
                if flags & END_STREAM != 0 {
                    self.out.completed.push(stream);
                }
            }
            kind::DATA => {
                *self.out.data.entry(stream).or_default() += p.len() as u64;
                if flags & END_STREAM != 0 {
                    self.out.completed.push(stream);
                }
                // Keep the windows open: we read everything we are sent.
                if !p.is_empty() {
                    let inc = u32be(p.len() as u32);
                    let _ = self.s.write_all(&[frame(kind::WINDOW_UPDATE, 0, 0, &inc), frame(kind::WINDOW_UPDATE, 0, stream, &inc)].concat());
                }
            }
            _ => {}
        }
    }

    fn reacted(&self) -> bool {
        self.out.goaway.is_some() || self.eof
    }
}

pub fn run_case(addr: SocketAddr, case: &Case, a: &Args) -> Outcome {
    let start = Instant::now();
    let mut out = Outcome {
        name: case.name.clone(),
        class: case.class.to_string(),
        mode: format!("{:?}", case.mode),
        ..Default::default()
    };
    let s = match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) => {
            out.connect_error = Some(e.to_string());
            return finish(out, case, start);
        }
    };
    let _ = s.set_nodelay(true);
    let mut c = Conn {
        s,
        buf: Vec::new(),
        hpack: hpack::Decoder::new(),
        out,
        got_settings: false,
        got_settings_ack: false,
        eof: false,
    };
    let hello = [PREFACE, &settings(&[])[..]].concat();
    let mut pending: Vec<u8> = Vec::new();
    match case.mode {
        Mode::Raw => pending.extend_from_slice(&case.bytes),
        Mode::Early => {
            pending.extend_from_slice(&hello);
            pending.extend_from_slice(&case.bytes);
        }
        Mode::Settled => {
            if c.write(&hello) {
                let until = Instant::now() + Duration::from_secs(3);
                while !(c.got_settings && c.got_settings_ack) && c.read_some(until) {}
                if c.got_settings {
                    c.out.handshake = true;
                    c.write(&frame(kind::SETTINGS, ACK, 0, &[]));
                    // Let the server act on our ACK (rotor: open its fast path).
                    std::thread::sleep(Duration::from_millis(30));
                    let until = Instant::now() + Duration::from_millis(5);
                    while c.read_some(until) {}
                }
            }
            pending.extend_from_slice(&case.bytes);
        }
    }
    // The case's bytes (maybe split), the probe.
    if !c.eof {
        if case.chunks.is_empty() || case.mode != Mode::Settled {
            c.write(&pending);
        } else {
            let mut at = 0;
            for n in &case.chunks {
                if !c.write(&pending[at..at + n]) {
                    break;
                }
                at += n;
                std::thread::sleep(Duration::from_micros(300));
            }
        }
    }
    if case.stop_reading {
        // Hold everything unread, then read it all.
        std::thread::sleep(Duration::from_millis(a.hold_ms));
        let until = Instant::now() + Duration::from_secs(30);
        let want = match &case.expect {
            Expect::Responses(s) => s.len(),
            _ => 0,
        };
        while c.out.completed.len() < want && !c.reacted() && c.read_some(until) {}
    }
    if case.probe && !c.eof {
        c.write(&frame(kind::PING, 0, 0, b"rotorfzz"));
    }
    let want_responses: Vec<u32> = match &case.expect {
        Expect::Responses(s) => s.clone(),
        _ => Vec::new(),
    };
    let until = Instant::now() + Duration::from_millis(a.probe_ms);
    let mut grace: Option<Instant> = None;
    loop {
        if c.reacted() {
            break;
        }
        let done_responses = want_responses.iter().all(|s| c.out.completed.contains(s));
        if c.out.ping_ack && done_responses {
            let g = *grace.get_or_insert_with(|| Instant::now() + Duration::from_millis(30));
            if Instant::now() >= g {
                break;
            }
            c.read_some(g);
            continue;
        }
        if !c.read_some(until) && Instant::now() >= until {
            break;
        }
    }
    // Our FIN; the server must close.
    if !c.eof {
        let _ = c.s.shutdown(Shutdown::Write);
        let until = Instant::now() + Duration::from_millis(a.close_ms);
        let before = c.out.closed.clone();
        while c.read_some(until) {}
        let after = if c.eof { c.out.closed.clone().unwrap_or_else(|| "eof".into()) } else { "open".into() };
        c.out.closed = before;
        if after == "open" {
            c.out.socket = our_socket(&c.s);
        }
        c.out.after_fin = Some(after);
    }
    finish(c.out, case, start)
}

/// `ss -tnmi` lines of this socket (state, queues, counters): whether the
/// server's FIN arrived (CLOSE-WAIT) or not (FIN-WAIT-2), bytes unread.
fn our_socket(s: &TcpStream) -> Option<String> {
    let port = s.local_addr().ok()?.port();
    let out = std::process::Command::new("ss")
        .args(["-tanmi", "sport", "=", &format!(":{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().skip(1).map(str::trim).collect();
    Some(lines.join(" | ").chars().take(600).collect())
}

fn finish(mut out: Outcome, case: &Case, start: Instant) -> Outcome {
    out.ms = start.elapsed().as_millis() as u64;
    let (ok, why) = verdict(&out, &case.expect);
    out.ok = ok;
    out.why = why;
    out.summary = summary(&out);
    out
}

fn summary(o: &Outcome) -> String {
    let mut parts = Vec::new();
    if let Some(e) = &o.connect_error {
        parts.push(format!("connect error {e}"));
    }
    if let Some(g) = &o.goaway {
        parts.push(format!("GOAWAY({g})"));
    }
    if !o.rst.is_empty() {
        let mut codes: Vec<&str> = o.rst.iter().filter_map(|r| r.split(':').nth(1)).collect();
        codes.sort();
        codes.dedup();
        parts.push(format!("RST({})", codes.join(",")));
    }
    if !o.responses.is_empty() {
        let mut st: Vec<&str> = o.responses.values().map(String::as_str).collect();
        st.sort();
        st.dedup();
        parts.push(format!("responses({})", st.join(",")));
    }
    if o.ping_ack {
        parts.push("PING-ACK".into());
    }
    if let Some(c) = &o.closed {
        parts.push(format!("closed:{c}"));
    }
    if let Some(f) = &o.after_fin {
        parts.push(format!("after-FIN:{f}"));
    }
    if o.garbage.is_some() {
        parts.push("GARBAGE".into());
    }
    if parts.is_empty() {
        parts.push("nothing".into());
    }
    parts.join(" ")
}

/// The TCP state of our socket (FIN-WAIT-2: the server never closed its end).
fn socket_state(o: &Outcome) -> &str {
    o.socket.as_deref().and_then(|s| s.split_whitespace().next()).unwrap_or("?")
}

fn code_ok(name: &str, codes: &[u32]) -> bool {
    codes.iter().any(|c| code_name(*c) == name)
}

/// Whether the outcome is what a correct server does, and why not.
fn verdict(o: &Outcome, expect: &Expect) -> (bool, String) {
    if let Some(e) = &o.connect_error {
        return (false, format!("connect failed: {e}"));
    }
    if let Some(g) = &o.garbage {
        return (false, format!("server sent bytes that are not HTTP/2 frames: {g}"));
    }
    let hung = o.closed.is_none() && o.goaway.is_none() && o.after_fin.as_deref() == Some("open");
    if hung {
        return (
            false,
            format!("hung: no reaction and still open after our FIN (our socket: {})", socket_state(o)),
        );
    }
    let closed_by_server = o.closed.is_some();
    if let Some(g) = &o.goaway {
        if g != "NO_ERROR" && o.after_fin.as_deref() == Some("open") {
            // RFC 9113 §5.4.1: after a GOAWAY for an error, close the connection.
            return (
                false,
                format!(
                    "sent GOAWAY({g}) but kept the connection open, even after our FIN (our socket: {})",
                    socket_state(o)
                ),
            );
        }
    }
    match expect {
        Expect::Conn(codes) => match &o.goaway {
            Some(g) if code_ok(g, codes) => (true, String::new()),
            Some(g) => (false, format!("GOAWAY({g}), expected one of {:?}", codes.iter().map(|c| code_name(*c)).collect::<Vec<_>>())),
            None if closed_by_server => (true, String::new()),
            None => (
                false,
                format!(
                    "no GOAWAY({:?}) and not closed: the bad input was {}",
                    codes.iter().map(|c| code_name(*c)).collect::<Vec<_>>(),
                    if o.ping_ack { "ignored (PING answered)" } else { "not answered" }
                ),
            ),
        },
        Expect::Stream(stream, codes) => {
            let rst_ok = o.rst.iter().any(|r| {
                let (s, c) = r.split_once(':').unwrap_or(("", ""));
                s == stream.to_string() && code_ok(c, codes)
            });
            let goaway_ok = o.goaway.as_deref().is_some_and(|g| code_ok(g, codes) || code_ok(g, &[code::PROTOCOL_ERROR]));
            if rst_ok || goaway_ok || (o.goaway.is_none() && closed_by_server) {
                (true, String::new())
            } else {
                (
                    false,
                    format!(
                        "expected RST_STREAM({stream}, {:?}) or GOAWAY or close; got {}",
                        codes.iter().map(|c| code_name(*c)).collect::<Vec<_>>(),
                        summary(o)
                    ),
                )
            }
        }
        Expect::Alive => {
            if o.ping_ack && o.goaway.is_none() && !closed_by_server {
                (true, String::new())
            } else {
                (false, format!("valid input, but the connection did not stay usable: {}", summary(o)))
            }
        }
        Expect::Responses(streams) => {
            let missing: Vec<u32> = streams.iter().copied().filter(|s| !o.completed.contains(s)).collect();
            let bad_status: Vec<String> = o.responses.iter().filter(|(_, st)| st.as_str() != "200").map(|(s, st)| format!("{s}:{st}")).collect();
            if missing.is_empty() && bad_status.is_empty() {
                (true, String::new())
            } else {
                (false, format!("valid requests: streams {missing:?} got no complete response, statuses not 200: {bad_status:?}; {}", summary(o)))
            }
        }
        Expect::Closed => {
            if o.closed.is_some() || matches!(o.after_fin.as_deref(), Some("eof") | Some("reset")) {
                (true, String::new())
            } else {
                (false, format!("not closed after our FIN: {}", summary(o)))
            }
        }
        Expect::NoHang => (true, String::new()),
        Expect::RejectOrIgnore(stream, codes) => {
            let goaway_ok = o.goaway.as_deref().is_some_and(|g| code_ok(g, codes));
            let rst = o.rst.iter().any(|r| r.starts_with(&format!("{stream}:")));
            let ignored = o.ping_ack && !o.responses.contains_key(stream);
            if goaway_ok || rst || ignored || (o.goaway.is_none() && closed_by_server) {
                (true, String::new())
            } else {
                (false, format!("stream {stream} reused or decreasing: expected GOAWAY({:?}) or no response for it; got {}", codes.iter().map(|c| code_name(*c)).collect::<Vec<_>>(), summary(o)))
            }
        }
    }
}

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
            if want == "all" || &c.name == want || c.name.strip_suffix("/early") == Some(want.as_str()) {
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
    let good = a.good.then(|| spawn_good(a.addr, a.good_interval_ms, stop.clone()));

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
                if done % 1000 == 0 {
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
fn spawn_good(addr: SocketAddr, interval_ms: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<GoodReport> {
    std::thread::spawn(move || {
        let mut rep = GoodReport::default();
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
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
                let (sender, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
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
                let req = http::Request::get(format!("http://{addr}/whoami")).body(Empty::<Bytes>::new()).expect("request");
                let res = tokio::time::timeout(Duration::from_secs(10), async {
                    sender.ready().await.map_err(|e| format!("ready: {e}"))?;
                    let resp = sender.send_request(req).await.map_err(|e| format!("{e:?}"))?;
                    let st = resp.status();
                    let body = resp.into_body().collect().await.map_err(|e| format!("body: {e:?}"))?.to_bytes();
                    if st != 200 {
                        return Err(format!("status {st}"));
                    }
                    Ok(String::from_utf8_lossy(&body).into_owned())
                })
                .await
                .unwrap_or_else(|_| Err("timeout".into()));
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
