//! `rotor::h2::message::MessageReader`: the agent's copy of the kernel's
//! message boundaries, fed bytes a client or an endpoint sent.
//!
//! Input: byte 0 picks the mode (client side, expecting the preface, or
//! frames) and a split pattern; the rest is the byte stream. Checks: no panic;
//! the messages are the same however the stream is split into pushes (the
//! kernel sees arbitrary segment boundaries); every message is a whole frame
//! or header block whose bytes add up; nothing is made out of thin air.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rotor_h2check::h2::frame::{FrameHeader, HEADER_LEN, MAX_FRAME};
use rotor_h2check::h2::message::{Expect, Message, MessageError, MessageReader};

#[derive(Debug, PartialEq)]
enum Step {
    Msg(Message),
    Err(MessageError),
}

fn read_all(expect: Expect, data: &[u8], split: impl Fn(usize) -> usize) -> (Vec<Step>, usize) {
    let mut r = MessageReader::new(expect);
    let mut steps = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let n = split(at).clamp(1, data.len() - at);
        r.push(&data[at..at + n]);
        at += n;
        loop {
            match r.next_message() {
                Ok(Some(m)) => steps.push(Step::Msg(m)),
                Ok(None) => break,
                Err(e) => {
                    steps.push(Step::Err(e));
                    return (steps, r.buffered());
                }
            }
        }
    }
    (steps, r.buffered())
}

/// Raw messages are whatever came; merge consecutive ones (their split
/// depends on the pushes by design).
fn normalize(steps: Vec<Step>) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    for s in steps {
        if let (Some(Step::Msg(Message::Raw(prev))), Step::Msg(Message::Raw(b))) = (out.last_mut(), &s) {
            let mut v = prev.to_vec();
            v.extend_from_slice(b);
            *prev = v.into();
            continue;
        }
        out.push(s);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else { return };
    let expect = if mode & 1 == 0 { Expect::Preface } else { Expect::Frames };
    let seed = (mode >> 1) as usize;

    let (whole, _) = read_all(expect, stream, |_| usize::MAX);
    let (ones, _) = read_all(expect, stream, |_| 1);
    let (odd, _) = read_all(expect, stream, |at| 1 + (at * 7 + seed) % 23);
    let whole = normalize(whole);
    assert_eq!(whole, normalize(ones), "messages depend on how the bytes were split (1-byte pushes)");
    assert_eq!(whole, normalize(odd), "messages depend on how the bytes were split (uneven pushes)");

    let mut consumed = 0usize;
    for step in &whole {
        let Step::Msg(m) = step else { break };
        match m {
            Message::Preface => {
                assert_eq!(consumed, 0, "a preface after the start");
                consumed += 24;
            }
            Message::Raw(b) => {
                assert_eq!(&stream[consumed..consumed + b.len()], &b[..], "raw bytes differ from the input");
                consumed += b.len();
            }
            Message::Frame { header, bytes } => {
                assert_eq!(&stream[consumed..consumed + bytes.len()], &bytes[..], "message bytes differ from the input");
                assert_eq!(FrameHeader::parse(bytes), Some(*header), "header is not the message's first frame");
                assert!(header.len as usize <= MAX_FRAME, "frame over MAX_FRAME accepted");
                // Walk the frames of the message: they must tile it exactly.
                let mut off = 0;
                let mut frames = 0;
                while off < bytes.len() {
                    let h = FrameHeader::parse(&bytes[off..]).expect("a frame header inside a message");
                    assert!(h.len as usize <= MAX_FRAME, "frame over MAX_FRAME inside a header block");
                    if frames > 0 {
                        assert_eq!(h.kind, rotor_h2check::h2::frame::kind::CONTINUATION, "non-CONTINUATION inside a header block");
                        assert_eq!(h.stream, header.stream, "CONTINUATION of another stream inside a header block");
                    }
                    off += HEADER_LEN + h.len as usize;
                    frames += 1;
                }
                assert_eq!(off, bytes.len(), "frames do not tile the message");
                consumed += bytes.len();
            }
        }
    }
    assert!(consumed <= stream.len());
});
