//! Generated cases: the named classes with random parameters, handshake
//! timing and write splits, plus byte mutations of valid exchanges.

use super::*;

/// splitmix64
pub(super) struct Rng(u64);

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

pub(super) const CLASSES: &[&str] = &[
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
    let mode = if r.chance(40) {
        Mode::Early
    } else {
        Mode::Settled
    };
    let s = r.odd_stream();
    let (bytes, expect, mode) = match class {
        "bad_preface" => {
            let mut p = PREFACE.to_vec();
            for _ in 0..r.range(1, 3) {
                let at = r.below(24) as usize;
                p[at] ^= (r.range(1, 255)) as u8;
            }
            let cut = r.range(1, 24) as usize;
            p.truncate(
                cut.max(
                    p.iter()
                        .zip(PREFACE)
                        .position(|(a, b)| a != b)
                        .map_or(24, |d| d + 1),
                ),
            );
            p.extend(r.bytes_below(40));
            (p, Conn(vec![PROTOCOL_ERROR]), Mode::Raw)
        }
        "frame_too_large" => {
            let len = if r.chance(50) {
                r.range(MAX_FRAME as u64 + 1, 70_000)
            } else {
                r.range(70_000, 0xff_ffff)
            } as usize;
            let t = [
                kind::DATA,
                kind::HEADERS,
                kind::SETTINGS,
                kind::PING,
                kind::WINDOW_UPDATE,
                0x33,
            ][r.below(6) as usize];
            let st = if t == kind::SETTINGS || t == kind::PING {
                0
            } else {
                s
            };
            let send = len.min(r.range(0, 20_000) as usize);
            let mut b = Vec::new();
            if t == kind::DATA {
                b.extend(request(st, "/whoami?echo", false));
            }
            b.extend(frame_claiming(t, END_HEADERS, st, len, send));
            let exp = if t == kind::DATA {
                Stream(st, vec![FRAME_SIZE_ERROR])
            } else {
                Conn(vec![FRAME_SIZE_ERROR])
            };
            (b, exp, mode)
        }
        "even_stream" => (
            request(s + 1, "/whoami", r.chance(50)),
            Conn(vec![PROTOCOL_ERROR]),
            mode,
        ),
        "decreasing_stream" => {
            let s = s.max(3);
            let lower = (r.below((s / 2) as u64) * 2 + 1) as u32; // odd, below s
            let b = [request(s, "/whoami", true), request(lower, "/whoami", true)].concat();
            (
                b,
                RejectOrIgnore(lower, vec![PROTOCOL_ERROR, STREAM_CLOSED]),
                mode,
            )
        }
        "stray_continuation" => {
            let payload = r.bytes_below(64);
            let flags = if r.chance(50) { END_HEADERS } else { 0 };
            let b = if r.chance(50) {
                frame(kind::CONTINUATION, flags, s, &payload)
            } else {
                [
                    request(s, "/whoami", true),
                    frame(kind::CONTINUATION, flags, s, &payload),
                ]
                .concat()
            };
            (b, Conn(vec![PROTOCOL_ERROR]), mode)
        }
        "interrupted_block" => {
            let head = frame(
                kind::HEADERS,
                END_STREAM,
                s,
                &hpack_block(&request_fields("GET", "/whoami")),
            );
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
                2 => frame(
                    kind::PING,
                    if r.chance(30) { ACK } else { 0 },
                    s,
                    &r.bytes(8),
                ),
                _ => frame(
                    kind::GOAWAY,
                    0,
                    s,
                    &[0, 0, 0, 0, 0, 0, 0, r.below(14) as u8],
                ),
            };
            (f, Conn(vec![PROTOCOL_ERROR]), mode)
        }
        "idle_stream" => {
            let f = match r.below(3) {
                0 => frame(
                    kind::DATA,
                    if r.chance(50) { END_STREAM } else { 0 },
                    s,
                    &r.bytes_below(100),
                ),
                1 => frame(
                    kind::WINDOW_UPDATE,
                    0,
                    s,
                    &u32be(r.range(1, 1 << 20) as u32),
                ),
                _ => frame(kind::RST_STREAM, 0, s, &u32be(r.below(14) as u32)),
            };
            (f, Conn(vec![PROTOCOL_ERROR, STREAM_CLOSED]), mode)
        }
        "truncated" => {
            let mut full = if r.chance(50) {
                request(s, "/whoami", true)
            } else {
                frame(kind::PING, 0, 0, b"12345678")
            };
            let cut = r.range(1, full.len() as u64 - 1) as usize;
            full.truncate(cut);
            (full, Closed, mode)
        }
        "bad_length" => {
            let (f, exp) = match r.below(5) {
                0 => {
                    let n = loop {
                        let n = r.range(1, 40);
                        if !n.is_multiple_of(6) {
                            break n;
                        }
                    };
                    (
                        frame(kind::SETTINGS, 0, 0, &r.bytes(n as usize)),
                        Conn(vec![FRAME_SIZE_ERROR]),
                    )
                }
                1 => {
                    let n = [0, 1, 4, 7, 9, 16][r.below(6) as usize];
                    (
                        frame(kind::PING, 0, 0, &r.bytes(n)),
                        Conn(vec![FRAME_SIZE_ERROR]),
                    )
                }
                2 => {
                    let n = [0, 1, 3, 5, 8][r.below(5) as usize];
                    (
                        frame(kind::WINDOW_UPDATE, 0, 0, &r.bytes(n)),
                        Conn(vec![FRAME_SIZE_ERROR]),
                    )
                }
                3 => (
                    frame(kind::SETTINGS, ACK, 0, &r.bytes_range(1, 12)),
                    Conn(vec![FRAME_SIZE_ERROR]),
                ),
                _ => {
                    let n = [0, 3, 5, 8][r.below(4) as usize];
                    (
                        [
                            request(s, "/whoami?echo", false),
                            frame(kind::RST_STREAM, 0, s, &r.bytes(n)),
                        ]
                        .concat(),
                        Conn(vec![FRAME_SIZE_ERROR]),
                    )
                }
            };
            (f, exp, mode)
        }
        "flow_control" => {
            if r.chance(50) {
                (
                    frame(kind::WINDOW_UPDATE, 0, 0, &u32be(0)),
                    Conn(vec![PROTOCOL_ERROR]),
                    mode,
                )
            } else {
                let a = r.range(0x7fff_0000, 0x7fff_ffff) as u32;
                (
                    [
                        frame(kind::WINDOW_UPDATE, 0, 0, &u32be(a)),
                        frame(kind::WINDOW_UPDATE, 0, 0, &u32be(a)),
                    ]
                    .concat(),
                    Conn(vec![FLOW_CONTROL_ERROR]),
                    mode,
                )
            }
        }
        "bad_settings" => match r.below(3) {
            0 => (
                settings(&[(0x2, r.range(2, u32::MAX as u64) as u32)]),
                Conn(vec![PROTOCOL_ERROR]),
                mode,
            ),
            1 => (
                settings(&[(0x4, r.range(0x8000_0000, u32::MAX as u64) as u32)]),
                Conn(vec![FLOW_CONTROL_ERROR]),
                mode,
            ),
            _ => {
                let v = if r.chance(50) {
                    r.range(0, 16383)
                } else {
                    r.range(16_777_216, u32::MAX as u64)
                } as u32;
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
            (
                frame(kind::HEADERS, END_HEADERS | END_STREAM, s, &block),
                Conn(vec![COMPRESSION_ERROR]),
                mode,
            )
        }
        "push_promise" => {
            let mut p = u32be(s + 1).to_vec();
            p.extend(hpack_block(&request_fields("GET", "/x")));
            (
                frame(kind::PUSH_PROMISE, END_HEADERS, s, &p),
                Conn(vec![PROTOCOL_ERROR]),
                mode,
            )
        }
        "padding" => {
            let n = r.range(0, 20) as usize;
            // Padding as long as the payload (n + 1) or longer is the error
            // (RFC 9113 §6.1); n itself would be valid.
            let mut p = vec![(n + 1 + r.range(0, 200) as usize).min(255) as u8];
            p.extend(r.bytes(n));
            (
                [
                    request(s, "/whoami?echo", false),
                    frame(kind::DATA, PADDED, s, &p),
                ]
                .concat(),
                Conn(vec![PROTOCOL_ERROR]),
                mode,
            )
        }
        "unknown_type" => {
            let t = r.range(0x0a, 0xff) as u8;
            let st = if r.chance(50) { 0 } else { s };
            let f = frame(t, r.next() as u8, st, &r.bytes_below(200));
            let get = request(s + 2, "/whoami", true);
            ([f, get].concat(), Responses(vec![s + 2]), mode)
        }
        "mutation" => {
            let mut b = [
                request(s, "/whoami?echo", false),
                frame(kind::DATA, END_STREAM, s, &r.bytes_below(300)),
                request(s + 2, "/whoami", true),
            ]
            .concat();
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
            let b: Vec<u8> = (0..n)
                .flat_map(|k| request(s + 2 * k, "/whoami", true))
                .collect();
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
