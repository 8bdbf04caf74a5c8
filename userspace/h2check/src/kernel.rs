//! The kernel's frame parser, compiled for the host (build.rs), and a
//! stand-in for strparser that drives it as the kernel does.
//!
//! strparser hands the parser the skb the next message starts in, from that
//! skb's first byte and up to everything received so far (later skbs are
//! appended to it), with `cb[0]` the TCP sequence number of its first byte
//! (ebpf/README.md, "Where a message starts"). The skb may start before the
//! message: bytes of earlier messages in the same skb, or, on 6.18, an skb
//! that TCP grew by coalescing, revisited from an earlier point. The parser
//! returns 0 (more bytes needed: it runs again when they come), the
//! message's length, or an error (the connection is aborted). The verdict
//! runs once per message and advances the parser's `next_seq`.

use std::ffi::c_void;

use crate::rng::Rng;

/// parse_state.kind (ebpf/include/rotor.h)
pub const MSG_FRAME: u32 = 0;
pub const MSG_PREFACE: u32 = 1;
pub const MSG_RAW: u32 = 2;
pub const MSG_PREFACE_PART: u32 = 3;
/// Whole frames of an upstream in one message: `flags` holds how many,
/// `first_flags` their DATA payload bytes.
pub const MSG_FRAME_BATCH: u32 = 4;
/// sock_ident.role of an upstream socket (frames from the first byte).
const ROLE_UPSTREAM: u32 = 2;
const EPROTO: i32 = 71;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HostMessage {
    pub kind: u32,
    pub len: u32,
    pub kind_type: u32,
    pub stream: u32,
    pub first_flags: u32,
    pub flags: u32,
}

extern "C" {
    fn rotor_host_socket_new(role: u32, room: u64) -> *mut c_void;
    fn rotor_host_socket_free(s: *mut c_void);
    fn rotor_host_parse(s: *mut c_void, data: *const u8, len: u32, seq: u32) -> i32;
    fn rotor_host_verdict(s: *mut c_void, out: *mut HostMessage) -> i32;
}

/// One socket's parser state, as the map would hold it.
pub struct KernelSocket(*mut c_void);

impl KernelSocket {
    /// `preface`: the agent's accepted end of a client connection (the
    /// client preface first); else an upstream (frames from the first byte)
    /// whose client's connection window has `room` bytes left for DATA.
    pub fn new(preface: bool, room: u64) -> Self {
        let role = if preface { 0 } else { ROLE_UPSTREAM };
        // SAFETY: plain allocation; checked for NULL.
        let s = unsafe { rotor_host_socket_new(role, room) };
        assert!(!s.is_null(), "out of memory");
        KernelSocket(s)
    }

    /// The stream parser on one skb.
    pub fn parse(&mut self, skb: &[u8], seq: u32) -> i32 {
        let len = u32::try_from(skb.len()).expect("skb under 4 GiB");
        // SAFETY: `skb` outlives the call; the parser reads within `len`.
        unsafe { rotor_host_parse(self.0, skb.as_ptr(), len, seq) }
    }

    /// The verdict's take_message; None if the socket has no parser state.
    pub fn verdict(&mut self) -> Option<HostMessage> {
        let mut m = HostMessage::default();
        // SAFETY: `m` is a valid out pointer of the C layout.
        (unsafe { rotor_host_verdict(self.0, &mut m) } != 0).then_some(m)
    }
}

impl Drop for KernelSocket {
    fn drop(&mut self) {
        // SAFETY: allocated by rotor_host_socket_new, freed once.
        unsafe { rotor_host_socket_free(self.0) }
    }
}

/// A message the verdict was handed: where it starts in the stream and
/// what the parser recorded about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelMessage {
    pub off: usize,
    pub msg: HostMessage,
}

#[derive(Debug, Default)]
pub struct KernelRun {
    pub messages: Vec<KernelMessage>,
    /// The parser returned an error (strparser aborts the connection):
    /// (where the message started, the value).
    pub error: Option<(usize, i32)>,
    /// Where the bytes not handed to a verdict start.
    pub unparsed_from: usize,
    /// The room the socket's client window had for DATA ([`Strparser::room`]).
    pub room: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Strparser {
    /// TCP sequence number of the stream's first byte.
    pub isn: u32,
    /// Hand the parser skbs that start at an earlier arrival than the one
    /// holding the message (a receive-queue skb grown by coalescing).
    pub coalesce: bool,
    pub seed: u64,
    /// An upstream's client window: DATA bytes a batch may carry.
    pub room: u64,
}

/// Feeds `stream` to a fresh socket's parser, arriving in skbs that end at
/// `ends` (increasing, the last = stream.len()).
pub fn run(preface: bool, stream: &[u8], ends: &[usize], sp: Strparser) -> KernelRun {
    let mut sock = KernelSocket::new(preface, sp.room);
    let mut rng = Rng::new(sp.seed);
    let mut out = KernelRun {
        room: sp.room,
        ..KernelRun::default()
    };
    // where each skb that arrived starts
    let mut starts: Vec<usize> = Vec::new();
    let mut msg_start = 0usize;
    // the length the parser gave the message in progress (strparser does
    // not ask again while it waits for that many bytes)
    let mut full_len: Option<usize> = None;
    // the parser said "more bytes" for the message in progress
    let mut waited = false;
    let mut arrived = 0usize;
    for &received in ends.iter().filter(|&&e| e <= stream.len()) {
        if received <= arrived {
            continue; // an empty skb: nothing arrives, nothing is parsed
        }
        starts.push(arrived);
        let before = arrived;
        arrived = received;
        loop {
            if msg_start >= received {
                break;
            }
            let len = match full_len {
                Some(l) => l,
                None => {
                    // the skb holding the message's first byte, or with
                    // `coalesce` one that starts at an earlier arrival
                    let holding = starts.partition_point(|&s| s <= msg_start) - 1;
                    let first = if sp.coalesce {
                        holding - rng.below(holding as u64 + 1).min(rng.below(3)) as usize
                    } else {
                        holding
                    };
                    let head = starts[first];
                    let skb = &stream[head..received];
                    let seq = sp.isn.wrapping_add(head as u32);
                    let ret = sock.parse(skb, seq);
                    // strparser (__strp_recv) refuses a length that ends
                    // before the skb just appended: the message would have
                    // been complete when the parser asked for more
                    // (bad_hdr_len, the connection aborted with EPROTO)
                    let bad_len = waited && ret > 0 && ret as usize <= before - msg_start;
                    if ret < 0 || bad_len {
                        out.error = Some((msg_start, if bad_len { -EPROTO } else { ret }));
                        out.unparsed_from = msg_start;
                        return out;
                    }
                    if ret == 0 {
                        waited = true;
                        break;
                    }
                    waited = false;
                    ret as usize
                }
            };
            if msg_start + len > received {
                full_len = Some(len);
                break;
            }
            full_len = None;
            let msg = sock
                .verdict()
                .expect("a socket the parser framed has a parser state");
            out.messages.push(KernelMessage {
                off: msg_start,
                msg,
            });
            msg_start += len;
        }
    }
    out.unparsed_from = msg_start;
    out
}
