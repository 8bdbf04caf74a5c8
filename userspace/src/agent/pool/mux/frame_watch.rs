//! What a shared connection's endpoint says that the `h2` crate keeps to
//! itself, read off its bytes on their way in:
//!
//! * its SETTINGS, the first frame it sends (RFC 9113 §3.4). A shared
//!   connection is used once they are in, as a connection's own upstream
//!   is (endpoint_socket/handshake.rs): until then h2 assumes it may open
//!   100 streams, and an endpoint that allows fewer refuses the rest
//!   (nghttpd with 4, grpcio with 2: `failures.rs` with every stream
//!   shared lost 1 of 3,000 requests and 18 of 600 calls);
//! * a GOAWAY: the connection takes no new stream from then on, and if it
//!   was the last one that did, the endpoint is lost at once (the local
//!   connections go away, shared_conns.rs), as the kernel drains a
//!   connection's own upstream the moment it parses one (ebpf/README.md
//!   point 22). h2 tells only the next stream it fails to send, and
//!   streams meanwhile were refused (grpcio shutting down gracefully).

use tokio::sync::watch;

use super::cursor::{Cursor, Piece};
use super::watched::{Watch, Watched};

/// What the frames so far say.
#[derive(Debug, Default)]
struct Frames {
    cursor: Cursor,
    first_type: Option<u8>,
    goaway: bool,
}

impl Frames {
    fn take(&mut self, bytes: &[u8]) {
        let (first_type, goaway) = (&mut self.first_type, &mut self.goaway);
        self.cursor.walk(bytes, |piece| {
            if let Piece::Header(h) = piece {
                first_type.get_or_insert(h.kind);
                *goaway |= h.kind == 7 && h.stream == 0;
            }
        });
    }

    /// The first frame was read whole.
    fn first_done(&self) -> bool {
        self.cursor.frames() > 1 || (self.cursor.frames() == 1 && self.cursor.frame_done())
    }
}

/// What the endpoint said so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Said {
    /// Its first frame is in: true if it was SETTINGS.
    pub(super) first: Option<bool>,
    pub(super) goaway: bool,
}

/// The endpoint's frames, watched (a `Watched` socket's).
pub(super) struct FrameWatch {
    frames: Frames,
    said: watch::Sender<Said>,
}

impl FrameWatch {
    /// `io`, watched, and what the endpoint said so far.
    pub(super) fn wrap<T>(io: T) -> (Watched<T, FrameWatch>, watch::Receiver<Said>) {
        let (said, rx) = watch::channel(Said::default());
        let w = FrameWatch {
            frames: Frames::default(),
            said,
        };
        (Watched::new(io, w), rx)
    }
}

impl Watch for FrameWatch {
    fn read(&mut self, bytes: &[u8]) {
        self.frames.take(bytes);
        let now = Said {
            first: (self.frames.first_done()).then(|| self.frames.first_type == Some(4)),
            goaway: self.frames.goaway,
        };
        self.said.send_if_modified(|s| {
            let changed = *s != now;
            *s = now;
            changed
        });
    }

    fn write(&mut self, _: &[u8], _: bool) -> Option<Vec<u8>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SETTINGS with one setting, a DATA frame of 20 bytes, a GOAWAY.
    fn bytes() -> Vec<u8> {
        let mut b = vec![0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 2];
        b.extend_from_slice(&[0, 0, 20, 0, 0, 0, 0, 0, 1]);
        b.extend_from_slice(&[0x07; 20]); // type bytes in a payload are not frames
        b.extend_from_slice(&[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        b
    }

    #[test]
    fn settings_then_goaway_are_seen_whatever_the_reads() {
        let all = bytes();
        for split in 1..all.len() {
            let (mut w, rx) = FrameWatch::wrap(());
            w.watch.read(&all[..split]);
            let at_split = *rx.borrow();
            assert_eq!(
                at_split.first,
                (split >= 15).then_some(true),
                "split {split}"
            );
            assert_eq!(at_split.goaway, split >= 15 + 29 + 9, "split {split}");
            w.watch.read(&all[split..]);
            assert_eq!(
                *rx.borrow(),
                Said {
                    first: Some(true),
                    goaway: true
                },
                "split {split}"
            );
        }
    }

    #[test]
    fn a_first_frame_that_is_not_settings_is_told() {
        let (mut w, rx) = FrameWatch::wrap(());
        w.watch
            .read(&[0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(rx.borrow().first, Some(false));
    }
}
