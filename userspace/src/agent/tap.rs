//! A source socket's tap: where the kernel hands the agent the frames of
//! an accepted socket (A) or an upstream (Uk) that it does not redirect.
//!
//! They used to go into the source's own ingress. 7.3 turns that redirect
//! into SK_PASS, and with a stream parser SK_PASS counts bytes that were
//! passed earlier and are still unread twice: the socket then never calls
//! its parser again, and a client that waits for answers waits for good
//! (ebpf/README.md, "What differs by kernel"). A redirect into another
//! socket's ingress takes the psock's queue on every kernel. The tap is one
//! end of a unix socket pair in `agent_taps`, keyed by the source's cookie;
//! the agent keeps the other end so the pair stays connected.
//!
//! An upstream gets its tap before it joins its socket hash, so all its
//! frames come through the tap. An accepted socket joins at ESTABLISHED,
//! before the agent has it, and takes a spare tap there
//! (agent/spare_taps.rs). One that found none ready sends its first
//! messages into its own ingress, and the verdict records in `tap_starts`
//! how many (counted as the agent counts what it reads) before the first
//! went into the tap the agent made it later. The agent reads the source up
//! to there, then the tap; the source still tells the connection's end
//! (EOF, an error).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};

use super::sockmap_io::SockmapReader;
use crate::ebpf::Datapath;
use crate::h2::message::{Expect, MessageReader};

/// What a tap may hold unread: as much as the sources' receive buffers
/// held when their frames waited in their own ingress.
const TAP_BUFFER: usize = 512 * 1024;
/// After the source's end, how often and how long the tap is looked at for
/// frames the verdict handed it before the end (its work item may run
/// after the FIN is seen).
const END_RECHECK: Duration = Duration::from_millis(5);
const END_CHECKS: u32 = 400;
/// How long a tap is read out at a handover: what the verdict handed it
/// comes from a work item, microseconds later on a host, and more than
/// 500 ms later under emulation with every vCPU busy (handover.rs on 7.3).
pub(super) const UNTAP_LIMIT: Duration = Duration::from_secs(1);
/// While the source's own ingress is read before the tap, how often the
/// agent looks whether it has read all of it.
const CATCH_UP_FIRST: Duration = Duration::from_millis(1);
const CATCH_UP_LAST: Duration = Duration::from_millis(64);

/// Taps may hold at most this share of the open-file limit (two
/// descriptors each): a socket's accept must never fail for a tap. Under a
/// hard limit of 20,000, 5,000 connections to 2 endpoints (15,000 sockets)
/// took 30,000 descriptors with a tap each, accepts failed with EMFILE and
/// clients hung (cli.rs, 5,000 connections). Beyond it a source has no
/// tap: its frames take its own ingress, as before taps.
const TAP_SHARE_OF_FILES: u64 = 4;

/// The taps open now.
static OPEN: AtomicU64 = AtomicU64::new(0);

fn files_limit() -> u64 {
    static LIMIT: OnceLock<u64> = OnceLock::new();
    *LIMIT.get_or_init(|| crate::sys::open_files_limit().unwrap_or(1024))
}

/// The descriptors the taps may hold at most, for agent/files.rs.
pub fn files_share() -> u64 {
    budget() as u64 * 2
}

/// How many taps may be open at once.
pub fn budget() -> usize {
    usize::try_from(files_limit() / TAP_SHARE_OF_FILES / 2).unwrap_or(usize::MAX)
}

fn room_for_one() -> bool {
    let limit = files_limit();
    let open = OPEN.fetch_add(1, Ordering::SeqCst) + 1;
    if open * 2 <= limit / TAP_SHARE_OF_FILES {
        return true;
    }
    OPEN.fetch_sub(1, Ordering::SeqCst);
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        tracing::info!(limit, taps = open - 1, "taps hold their share of the open-file limit: new sources take their own ingress (a higher RLIMIT_NOFILE gives every source a tap)");
    });
    false
}

pub struct Tap {
    rx: UnixStream,
    _tx: std::os::unix::net::UnixStream,
    /// Made as a spare at this index (ebpf/lib/maps.h, spare_taps), which
    /// the accepted socket it went to owns until it closes or is let go.
    spare: Option<u32>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Tap {
    /// A tap for the socket with `cookie`, in the kernel's map. None when
    /// this generation has none or the kernel refused it: the source's own
    /// ingress then, as before taps.
    pub fn open(dp: &Datapath, cookie: u64) -> Option<Tap> {
        if !dp.has_taps() || cookie == 0 || !room_for_one() {
            return None;
        }
        match Self::make(None, |rx| Ok(dp.insert_tap(cookie, rx)?)) {
            Ok(tap) => Some(tap),
            Err(e) => {
                tracing::debug!(cookie, error = %e, "no tap: frames for the agent go to the source's own ingress");
                None
            }
        }
    }

    /// A spare tap at `index`, ready for the next accepted socket; None
    /// when the open-file share is spent or the kernel refused it.
    pub fn spare(dp: &Datapath, index: u32) -> Option<Tap> {
        if !dp.has_taps() || !room_for_one() {
            return None;
        }
        match Self::make(Some(index), |rx| Ok(dp.ready_spare(index, rx)?)) {
            Ok(tap) => Some(tap),
            Err(e) => {
                tracing::debug!(index, error = %e, "no spare tap");
                None
            }
        }
    }

    /// After `room_for_one` counted it; `insert` names it to the kernel.
    fn make(
        spare: Option<u32>,
        insert: impl FnOnce(&std::os::unix::net::UnixStream) -> anyhow::Result<()>,
    ) -> anyhow::Result<Tap> {
        let made = (|| -> anyhow::Result<_> {
            let (rx, tx) = std::os::unix::net::UnixStream::pair()?;
            rx.set_nonblocking(true)?;
            crate::sys::set_receive_buffer(&rx, TAP_BUFFER)?;
            insert(&rx)?;
            Ok((UnixStream::from_std(rx)?, tx))
        })();
        // Counted as open from here on: Drop counts it closed.
        let (rx, tx) = made.inspect_err(|_| {
            OPEN.fetch_sub(1, Ordering::SeqCst);
        })?;
        Ok(Tap { rx, _tx: tx, spare })
    }

    /// The end the agent reads.
    pub fn reader(&self) -> &UnixStream {
        &self.rx
    }

    /// Everything the tap holds now.
    fn read_available(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        while let Ok(Some(n)) = super::sockmap_io::recv_now(&self.rx, &mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    /// Reads the tap out after the source's frames were sent back to its
    /// own ingress ([`SourceInput::untap`]).
    pub fn read_out(self) -> ReadOut {
        ReadOut {
            tap: self,
            deadline: tokio::time::Instant::now() + UNTAP_LIMIT,
            looked: false,
            own: MessageReader::new(Expect::Frames),
            own_ended: false,
        }
    }
}

/// A tap being read out at a handover. A frame the verdict handed the tap
/// reaches it from a work item, after the map no longer names the tap; the
/// frames after go into the source's own ingress, which is read too: the
/// verdict counts both alike, and under a steady flow of an upstream's
/// stream-0 frames (a grpcio server under grpc-js's load, under
/// emulation) the tap alone never made the count. The caller takes
/// [`next`](Self::next) until the tap and
/// [`own_messages`](Self::own_messages) hold everything the verdict
/// passed, for [`UNTAP_LIMIT`] at most, then [`own`](Self::own): every
/// frame of the tap came before those in the source's order.
pub struct ReadOut {
    tap: Tap,
    deadline: tokio::time::Instant,
    looked: bool,
    /// What the source's own ingress gave; only counted, never parsed.
    own: MessageReader,
    own_ended: bool,
}

impl ReadOut {
    /// What the tap holds now, after a pause from the second look on
    /// (what `source`'s own ingress holds is kept for [`own`](Self::own));
    /// None once the time is up.
    pub async fn next(&mut self, source: &TcpStream) -> Option<Vec<u8>> {
        if self.looked {
            if tokio::time::Instant::now() >= self.deadline {
                return None;
            }
            tokio::time::sleep(END_RECHECK).await;
        }
        self.looked = true;
        let from_tap = self.tap.read_available();
        let mut buf = [0u8; 16 * 1024];
        while !self.own_ended {
            match super::sockmap_io::recv_now(source, &mut buf) {
                Ok(Some(0)) | Err(_) => self.own_ended = true,
                Ok(Some(n)) => self.own.push(&buf[..n]),
                Ok(None) => break,
            }
        }
        Some(from_tap)
    }

    /// Whole messages read from the source's own ingress so far.
    pub fn own_messages(&self) -> u32 {
        self.own.whole_messages()
    }

    /// What the source's own ingress gave, to take in after the tap's.
    pub fn own(mut self) -> bytes::Bytes {
        self.own.take_buffered()
    }
}

/// Where one source's frames for the agent are read from.
pub struct SourceInput {
    source: SockmapReader,
    tap: Option<(Tap, SockmapReader)>,
    /// Everything the source's own ingress was handed has been read: the
    /// frames come from the tap.
    on_tap: bool,
    /// The source has ended; the tap is read out.
    ended: bool,
    /// A tap was asked for (once: a kernel that refused it refuses again).
    tried: bool,
}

impl SourceInput {
    /// `on_tap`: the source never had a frame for the agent in its own
    /// ingress (an upstream whose tap came before its join, an accepted
    /// socket with a spare tap).
    pub fn new(tap: Option<Tap>, on_tap: bool) -> SourceInput {
        SourceInput {
            source: SockmapReader::default(),
            on_tap: on_tap && tap.is_some(),
            tap: tap.map(|t| (t, SockmapReader::default())),
            ended: false,
            tried: false,
        }
    }

    pub fn has_tap(&self) -> bool {
        self.tap.is_some()
    }

    /// True the first time it is asked, while there is no tap.
    pub fn first_try(&mut self) -> bool {
        let first = !self.tried && self.tap.is_none();
        self.tried = true;
        first
    }

    /// The tap comes after frames may have gone into the source's own
    /// ingress: those are read first ([`catch_up`](Self::catch_up)).
    pub fn attach(&mut self, tap: Tap) {
        self.tap = Some((tap, SockmapReader::default()));
    }

    /// For a handover: the kernel hands the source's frames to its own
    /// ingress again, which travels with the socket, and the source is
    /// read from here on. The tap is returned to be read out
    /// ([`Tap::read_out`]); it closes when dropped. Until then a map still
    /// holds it (`tap_held`, or `spare_taps` for a spare): a tap in none
    /// loses what the verdict handed it and it had not delivered yet.
    pub fn untap(&mut self, dp: &Datapath, cookie: u64) -> Option<Tap> {
        let (tap, _) = self.tap.take()?;
        match tap.spare {
            Some(index) => dp.release_spare(index, cookie),
            None => {
                if let Err(e) = dp.remove_tap(cookie, &tap.rx) {
                    tracing::warn!(cookie, error = %e, "handover: a tap could not be held for its read-out: frames it has not delivered yet are lost");
                }
            }
        }
        self.on_tap = false;
        self.ended = false;
        Some(tap)
    }

    /// Whether the agent has read as many messages as went into the
    /// source's own ingress (`start`, from tap_starts) with `consumed`.
    pub fn caught_up(start: Option<u32>, consumed: u32) -> bool {
        start.is_some_and(|start| (consumed.wrapping_sub(start) as i32) >= 0)
    }

    /// One non-blocking read of where the frames come from now.
    pub fn recv_now(&self, source: &TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match (&self.tap, self.on_tap) {
            (Some((tap, _)), true) => super::sockmap_io::recv_now(&tap.rx, buf),
            _ => super::sockmap_io::recv_now(source, buf),
        }
    }

    /// The next bytes for the agent, 0 at the source's end once nothing
    /// more is due (`due`: the verdict handed a message not read yet).
    /// Cancel safe.
    ///
    /// `caught_up`: everything that went into the source's own ingress
    /// before its tap has been read ([`caught_up`](Self::caught_up)); from
    /// then on the tap is read. Nothing more goes into the source, so this
    /// is looked at while the source is read, not only when it gives bytes.
    pub async fn recv(
        &mut self,
        source: &TcpStream,
        buf: &mut [u8],
        due: &(dyn Fn() -> bool + Sync),
        caught_up: &(dyn Fn() -> bool + Sync),
    ) -> io::Result<usize> {
        if self.tap.is_some() && !self.on_tap {
            let mut wait = CATCH_UP_FIRST;
            loop {
                if caught_up() {
                    self.on_tap = true;
                    break;
                }
                tokio::select! {
                    r = self.source.recv_confirmed_counted(source, buf, due) => return r,
                    () = tokio::time::sleep(wait) => wait = (wait * 2).min(CATCH_UP_LAST),
                }
            }
        }
        let (Some((tap, tap_reader)), true) = (self.tap.as_mut(), self.on_tap) else {
            return self.source.recv_confirmed_counted(source, buf, due).await;
        };
        if !self.ended {
            let mut probe = [0u8; 1];
            tokio::select! {
                r = tap_reader.recv_counted(&tap.rx, buf, due) => return r,
                // Nothing more goes into the source's own ingress, so a
                // read of it returns its end or its error. A byte would be
                // a frame the verdict handed it for want of a tap: the
                // tap is in the map as long as this input lives.
                r = self.source.recv_counted(source, &mut probe, &|| false) => match r? {
                    0 => self.ended = true,
                    _ => return Err(io::Error::other("a frame for the agent in a tapped socket's own ingress")),
                },
            }
        }
        for _ in 0..END_CHECKS {
            if !due() {
                return Ok(0);
            }
            tokio::select! {
                r = tap_reader.recv_counted(&tap.rx, buf, due) => return r,
                () = tokio::time::sleep(END_RECHECK) => {}
            }
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::SourceInput;

    #[test]
    fn the_tap_is_read_once_what_went_before_it_is() {
        // No frame has gone to the tap yet: everything is in the source.
        assert!(!SourceInput::caught_up(None, 7));
        // Three went into the source before the first into the tap.
        assert!(!SourceInput::caught_up(Some(3), 2));
        assert!(SourceInput::caught_up(Some(3), 3));
        assert!(SourceInput::caught_up(Some(3), 4));
        // the counts wrap as the kernel's do
        assert!(SourceInput::caught_up(Some(u32::MAX), 1));
        assert!(!SourceInput::caught_up(Some(1), u32::MAX));
    }
}
