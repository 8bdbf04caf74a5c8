//! The differential check of message boundaries: the kernel's stream parser
//! (as strparser drives it, [`crate::kernel`]) and the agent's
//! `MessageReader` must make the same messages of the same bytes, however
//! each is split. The agent counts messages as the kernel does (that count
//! opens the fast path, ebpf/README.md point 11) and parses what the kernel
//! hands it; a difference is a bug in one of them.
//!
//! Input bytes: `[mode, isn (4, LE), kernel split, reader split, stream...]`.
//! mode bit 0: frames from the first byte (an upstream) instead of the
//! client preface; bit 1: coalesced skbs (see [`kernel::Strparser`]);
//! bits 2-3: the room an upstream's client window has for a batch's DATA
//! (none, 100 bytes, 16 KiB, more than a batch holds).
//!
//! On an upstream the kernel makes one message of the whole stream frames
//! queued together (rotor.h `MSG_FRAME_BATCH`); the agent, handed such a message,
//! reads the frames it is made of, so a batch counts here as its frames.

use crate::h2::frame::{flag, kind, HEADER_LEN, MAX_FRAME, PREFACE};
use crate::h2::message::{Expect, Message, MessageReader, MAX_BLOCK, MAX_CONTINUATIONS};
use crate::kernel::{
    self, KernelRun, Strparser, MSG_FRAME, MSG_FRAME_BATCH, MSG_PREFACE, MSG_PREFACE_PART, MSG_RAW,
};
use crate::rng::Rng;

/// A message, as both sides must agree on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    Preface,
    /// A frame or a whole header block: where it starts, its length, and
    /// its first frame's type, stream and flags.
    Frame {
        off: usize,
        len: usize,
        kind: u8,
        stream: u32,
        flags: u8,
    },
    /// From here on nothing is framed: not HTTP/2, or bad framing (the
    /// kernel hands the bytes to the agent as they come, the reader stops
    /// with an error; either way the agent answers with GOAWAY).
    RawFrom(usize),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub units: Vec<Unit>,
    /// Where the bytes that are part of no message yet start.
    pub pending_from: usize,
    /// Messages of several frames the kernel made on an upstream; the
    /// reader reads their frames one by one (not compared).
    pub batches: usize,
}

pub const HEADER: usize = 7;

pub struct Input<'a> {
    pub preface: bool,
    pub strparser: Strparser,
    pub kernel_split: u8,
    pub reader_split: u8,
    pub stream: &'a [u8],
}

impl<'a> Input<'a> {
    /// Any bytes are an input; a short one means zeros and no stream.
    pub fn parse(data: &'a [u8]) -> Self {
        let mut h = [0u8; HEADER];
        let n = data.len().min(HEADER);
        h[..n].copy_from_slice(&data[..n]);
        let isn = u32::from_le_bytes([h[1], h[2], h[3], h[4]]);
        Input {
            preface: h[0] & 1 == 0,
            strparser: Strparser {
                isn,
                coalesce: h[0] & 2 != 0,
                seed: u64::from(isn) << 8 | u64::from(h[0]),
                room: [0, 100, 16384, 1 << 20][usize::from(h[0] >> 2 & 3)],
            },
            kernel_split: h[5],
            reader_split: h[6],
            stream: &data[n..],
        }
    }
}

/// The ends of the pieces `len` bytes arrive in: whole, byte by byte, or
/// pieces of random small or large sizes (`how` picks, and seeds them).
pub fn split(len: usize, how: u8, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed ^ u64::from(how) << 32);
    let max = match how % 4 {
        0 => return vec![len],
        1 => 1,
        2 => 16,
        _ => 3000,
    };
    let mut ends = Vec::new();
    let mut at = 0;
    while at < len {
        at = (at + 1 + rng.below(max) as usize).min(len);
        ends.push(at);
    }
    ends
}

/// The check: the messages both made, or what differs.
pub fn check(data: &[u8]) -> Result<Outcome, String> {
    let input = Input::parse(data);
    let stream = input.stream;
    let seed = input.strparser.seed;
    let run = kernel::run(
        input.preface,
        stream,
        &split(stream.len(), input.kernel_split, seed),
        input.strparser,
    );
    let kernel = kernel_outcome(stream, &run)?;
    let reader = reader_outcome(
        input.preface,
        stream,
        &split(stream.len(), input.reader_split, !seed),
    );
    if (&kernel.units, kernel.pending_from) != (&reader.units, reader.pending_from) {
        return Err(format!(
            "the kernel's parser and MessageReader differ\n kernel: {kernel:?}\n reader: {reader:?}"
        ));
    }
    Ok(kernel)
}

/// The kernel's messages as units: the preface's parts (the agent gets
/// them as they come and counts one preface, rotor.h MSG_PREFACE_PART) are
/// one preface, or part of the raw bytes if the preface turns out wrong.
pub fn kernel_outcome(stream: &[u8], run: &KernelRun) -> Result<Outcome, String> {
    if let Some((off, ret)) = run.error {
        return Err(format!(
            "the kernel's parser failed ({ret}) at {off}: strparser aborts the connection"
        ));
    }
    let mut units = Vec::new();
    let mut part_from: Option<usize> = None;
    let mut raw = false;
    let mut batches = 0;
    for m in &run.messages {
        let len = m.msg.len as usize;
        if raw {
            if m.msg.kind != MSG_RAW {
                return Err(format!("a framed message after raw bytes: {m:?}"));
            }
            continue;
        }
        match m.msg.kind {
            MSG_PREFACE_PART => {
                part_from.get_or_insert(m.off);
            }
            MSG_PREFACE => {
                let from = part_from.take().unwrap_or(m.off);
                if from != 0 || m.off + len != PREFACE.len() {
                    return Err(format!("a preface from {from} to {}", m.off + len));
                }
                units.push(Unit::Preface);
            }
            MSG_RAW => {
                units.push(Unit::RawFrom(part_from.take().unwrap_or(m.off)));
                raw = true;
            }
            MSG_FRAME => {
                if part_from.is_some() {
                    return Err(format!("a frame after part of the preface: {m:?}"));
                }
                let block = len > HEADER_LEN + frame_len(&stream[m.off..]);
                let want = m.msg.first_flags
                    | if block {
                        u32::from(flag::END_HEADERS)
                    } else {
                        0
                    };
                if m.msg.flags != want {
                    return Err(format!(
                        "last-frame flags {:#x}, expected {want:#x}: {m:?}",
                        m.msg.flags
                    ));
                }
                units.push(Unit::Frame {
                    off: m.off,
                    len,
                    kind: m.msg.kind_type as u8,
                    stream: m.msg.stream,
                    flags: m.msg.first_flags as u8,
                });
            }
            MSG_FRAME_BATCH => {
                if part_from.is_some() {
                    return Err(format!("a batch after part of the preface: {m:?}"));
                }
                let frames = batch_frames(&stream[m.off..m.off + len], m.off)?;
                let data: usize = frames
                    .iter()
                    .filter(|f| matches!(f, Unit::Frame { kind: k, .. } if *k == kind::DATA))
                    .map(|f| match f {
                        Unit::Frame { len, .. } => len - HEADER_LEN,
                        _ => 0,
                    })
                    .sum();
                let first_stream = match frames.first() {
                    Some(Unit::Frame { stream, .. }) => *stream,
                    _ => 0,
                };
                if frames.len() < 2
                    || frames.len() > BATCH_FRAMES
                    || frames.len() != m.msg.flags as usize
                    || data != m.msg.first_flags as usize
                    || data as u64 > run.room.min(MAX_BLOCK as u64)
                    || len > MAX_BLOCK
                    || first_stream != m.msg.stream
                {
                    return Err(format!(
                        "a batch of {} frames and {data} DATA bytes in {len} (room {}): {m:?}",
                        frames.len(),
                        run.room
                    ));
                }
                units.extend(frames);
                batches += 1;
            }
            k => return Err(format!("unknown message kind {k}")),
        }
    }
    if raw && run.unparsed_from != stream.len() {
        return Err(format!(
            "raw bytes from {} never handed on",
            run.unparsed_from
        ));
    }
    Ok(Outcome {
        units,
        pending_from: part_from.unwrap_or(run.unparsed_from),
        batches,
    })
}

const BATCH_FRAMES: usize = crate::ebpf::abi::ROTOR_BATCH_FRAMES as usize;

/// The frames of a batch that starts at `off`: each whole, on a stream, of
/// a type the kernel carries, a HEADERS with its END_HEADERS.
fn batch_frames(b: &[u8], off: usize) -> Result<Vec<Unit>, String> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let rest = &b[at..];
        if rest.len() < HEADER_LEN || rest.len() < HEADER_LEN + frame_len(rest) {
            return Err(format!("a batch ends inside a frame at {}", off + at));
        }
        let (len, k, flags) = (frame_len(rest), rest[3], rest[4]);
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        let carried = match k {
            kind::DATA => true,
            kind::HEADERS => flags & flag::END_HEADERS != 0,
            kind::PRIORITY => len == 5,
            kind::RST_STREAM | kind::WINDOW_UPDATE => len == 4,
            _ => false,
        };
        if stream == 0 || len > MAX_FRAME || !carried {
            return Err(format!(
                "a batch holds a frame it may not (type {k}, stream {stream}, length {len}) at {}",
                off + at
            ));
        }
        frames.push(Unit::Frame {
            off: off + at,
            len: HEADER_LEN + len,
            kind: k,
            stream,
            flags,
        });
        at += HEADER_LEN + len;
    }
    Ok(frames)
}

fn frame_len(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// MessageReader's messages as units, the bytes pushed in pieces ending
/// at `ends`.
pub fn reader_outcome(preface: bool, stream: &[u8], ends: &[usize]) -> Outcome {
    let mut r = MessageReader::new(if preface {
        Expect::Preface
    } else {
        Expect::Frames
    });
    let mut units = Vec::new();
    let mut consumed = 0;
    let mut raw = false;
    let mut at = 0;
    for &end in ends {
        r.push(&stream[at..end]);
        at = end;
        loop {
            match r.next_message() {
                Ok(None) => break,
                Ok(Some(Message::Preface)) => {
                    units.push(Unit::Preface);
                    consumed += PREFACE.len();
                }
                Ok(Some(Message::Frame { header, bytes })) => {
                    units.push(Unit::Frame {
                        off: consumed,
                        len: bytes.len(),
                        kind: header.kind,
                        stream: header.stream,
                        flags: header.flags,
                    });
                    consumed += bytes.len();
                }
                Ok(Some(Message::Raw(b))) => {
                    if !raw {
                        units.push(Unit::RawFrom(consumed));
                        raw = true;
                    }
                    consumed += b.len();
                }
                Err(_) => {
                    units.push(Unit::RawFrom(consumed));
                    return Outcome {
                        units,
                        pending_from: stream.len(),
                        batches: 0,
                    };
                }
            }
        }
    }
    Outcome {
        units,
        pending_from: consumed,
        batches: 0,
    }
}

/// An input for [`check`]: mostly well-formed streams (frames of every
/// type, header blocks of up to and beyond the kernel's limits) with the
/// mistakes a peer can make, split and sequenced at random.
pub fn generate(rng: &mut Rng) -> Vec<u8> {
    let mode = rng.below(8) as u8;
    let mut out = vec![mode];
    out.extend_from_slice(&(rng.next() as u32).to_le_bytes());
    out.push(rng.next() as u8);
    out.push(rng.next() as u8);
    if mode & 1 == 0 {
        match rng.below(10) {
            0 => out.extend_from_slice(&PREFACE[..rng.below(24) as usize]),
            1 => {
                let mut p = PREFACE.to_vec();
                let i = rng.below(24) as usize;
                p[i] ^= 1 + rng.below(255) as u8;
                out.extend_from_slice(&p);
            }
            2 => out.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            _ => out.extend_from_slice(PREFACE),
        }
    }
    // half the streams make no mistake on purpose: they reach deep
    let careful = rng.below(2) == 0;
    for _ in 0..rng.below(14) {
        gen_message(rng, &mut out, careful);
    }
    if rng.below(4) == 0 {
        let cut = rng.below(40) as usize;
        out.truncate(out.len().saturating_sub(cut).max(HEADER));
    }
    out
}

fn put_frame(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32, rng: &mut Rng) {
    put_header(out, len, kind, flags, stream);
    // random payload: a parser that lost its place reads frame headers in it
    let payload = rng.bytes(len);
    out.extend_from_slice(&payload);
}

fn put_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

fn gen_message(rng: &mut Rng, out: &mut Vec<u8>, careful: bool) {
    let stream = [0, 1, 3, 0x7fff_ffff, 0x8000_0001][rng.below(5) as usize];
    let small = rng.below(48) as usize;
    let pick = rng.below(18);
    let pick = if careful && (6..=8).contains(&pick) {
        0
    } else {
        pick
    };
    match pick {
        16 | 17 => {
            // a response as an endpoint writes it: HEADERS, DATA of every
            // size up to a full frame, trailers (an upstream batches them)
            let stream = stream.max(1);
            put_frame(out, small, kind::HEADERS, flag::END_HEADERS, stream, rng);
            for _ in 0..rng.below(5) {
                let len = [small, 1000, MAX_FRAME][rng.below(3) as usize];
                put_frame(out, len, kind::DATA, 0, stream, rng);
            }
            let end = flag::END_HEADERS | flag::END_STREAM;
            put_frame(out, small, kind::HEADERS, end, stream, rng);
        }
        0..=4 => {
            let kind = [
                kind::DATA,
                kind::HEADERS,
                kind::PRIORITY,
                kind::RST_STREAM,
                kind::SETTINGS,
                kind::PING,
                kind::GOAWAY,
                kind::WINDOW_UPDATE,
            ][rng.below(8) as usize];
            let flags = rng.next() as u8
                | if kind == kind::HEADERS {
                    flag::END_HEADERS
                } else {
                    0
                };
            put_frame(out, small, kind, flags, stream, rng);
        }
        5 => put_frame(
            out,
            small,
            0x0a + rng.below(0xf6) as u8,
            rng.next() as u8,
            stream,
            rng,
        ),
        6 => match rng.below(3) {
            0 => put_frame(out, MAX_FRAME, kind::DATA, 0, stream, rng),
            // too large: refused from the header, the payload never comes
            _ => put_header(
                out,
                [MAX_FRAME + 1, 0xff_ffff][rng.below(2) as usize],
                kind::DATA,
                0,
                stream,
            ),
        },
        7 => put_frame(
            out,
            small,
            kind::CONTINUATION,
            rng.next() as u8,
            stream,
            rng,
        ),
        8 => out.extend(rng.bytes(small)),
        _ => {
            // a header block: HEADERS or PUSH_PROMISE and CONTINUATIONs, at
            // times too many or too large, on another stream or interrupted
            let opener = if rng.below(4) == 0 {
                kind::PUSH_PROMISE
            } else {
                kind::HEADERS
            };
            let conts = match rng.below(6) {
                0 if !careful => MAX_CONTINUATIONS + rng.below(3) as usize - 1,
                _ if careful => 1 + rng.below(3) as usize,
                _ => rng.below(4) as usize,
            };
            let big = rng.below(8) == 0 && !careful;
            let size = |rng: &mut Rng| {
                if big {
                    MAX_BLOCK / 4 - HEADER_LEN + rng.below(3) as usize - 1
                } else {
                    rng.below(24) as usize
                }
            };
            let n = size(rng);
            put_frame(
                out,
                n.min(MAX_FRAME),
                opener,
                rng.next() as u8 & !flag::END_HEADERS,
                stream,
                rng,
            );
            for i in 0..conts {
                let last = i + 1 == conts && (careful || rng.below(8) != 0);
                let s = if !careful && rng.below(16) == 0 {
                    stream ^ 2
                } else {
                    stream
                };
                let k = if !careful && rng.below(16) == 0 {
                    kind::DATA
                } else {
                    kind::CONTINUATION
                };
                let n = size(rng);
                put_frame(
                    out,
                    n.min(MAX_FRAME + 1),
                    k,
                    if last { flag::END_HEADERS } else { 0 },
                    s,
                    rng,
                );
            }
        }
    }
}
