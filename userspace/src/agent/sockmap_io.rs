//! Reading a socket that is in a socket hash.
//!
//! Two things measured here (ebpf/README.md, "Reading a sockmap socket"):
//! tokio's `read` treats a short read as "drained" and waits for the next
//! epoll edge, but such a socket returns at most one queued message per
//! recvmsg; and even with readiness cleared only by EAGAIN, a message the
//! verdict passes can occasionally arrive without an epoll wake-up (6.18).
//! Either way the connection stalls with data queued (nghttp -m 6: 4 stalls
//! in 6 runs). So readiness is cleared only by an actual EAGAIN, and while
//! no edge comes the socket is re-read directly, backing off from 1 ms to
//! 256 ms: an active connection loses at most a millisecond or two to a
//! lost wake-up.
//!
//! An idle socket then cost four wake-ups a second, and a node's agent
//! holds four sockets per connection to 3 endpoints: with 1,000 idle
//! connections, 16,000 wake-ups a second were most of the agent's CPU
//! (pace.rs has the figures). Where the kernel counts the messages its
//! verdict passed to the agent, the reader is told whether one is due
//! (passed but not read); while none is, there is nothing a lost wake-up
//! could have lost, and the re-reads back off further, to QUIET_RECHECK:
//! the longest a message passed to an idle socket waits if its wake-up is
//! lost.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};

/// A socket with a psock: a source in a socket hash (TCP), or a tap
/// (agent/tap.rs, unix). Both queue what a verdict hands them as messages.
pub trait PsockSocket: AsRawFd + Sync {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn take_error(&self) -> io::Result<Option<io::Error>>;
}

macro_rules! psock_socket {
    ($($t:ty),*) => {$(
        impl PsockSocket for $t {
            fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$t>::readable(self)
            }
            fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                <$t>::try_read(self, buf)
            }
            fn take_error(&self) -> io::Result<Option<io::Error>> {
                <$t>::take_error(self)
            }
        }
    )*};
}

psock_socket!(TcpStream, UnixStream);

const FIRST_RECHECK: Duration = Duration::from_millis(1);
const LAST_RECHECK: Duration = Duration::from_millis(256);
const QUIET_RECHECK: Duration = Duration::from_millis(2048);
const EOF_RECHECK: Duration = Duration::from_millis(5);
const EOF_CHECKS: usize = 3;

pub struct SockmapReader {
    backoff: Duration,
}

impl Default for SockmapReader {
    fn default() -> Self {
        SockmapReader {
            backoff: FIRST_RECHECK,
        }
    }
}

impl SockmapReader {
    /// Cancel safe: nothing is consumed unless it returns.
    ///
    /// A sockmap socket reports EAGAIN, never its error, to a non-blocking
    /// read, while epoll keeps signalling the error: the error is taken from
    /// SO_ERROR, and a readiness that yields nothing waits for the timer
    /// instead of spinning.
    pub async fn recv(&mut self, stream: &impl PsockSocket, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_counted(stream, buf, &|| true).await
    }

    /// [`recv`](Self::recv) for a socket whose verdict counts what it
    /// passes: `due` says whether a message was passed and not read yet.
    pub async fn recv_counted(
        &mut self,
        stream: &impl PsockSocket,
        buf: &mut [u8],
        due: &(dyn Fn() -> bool + Sync),
    ) -> io::Result<usize> {
        let mut spurious = false;
        loop {
            tokio::select! {
                r = stream.readable(), if !spurious => {
                    r?;
                    match stream.try_read(buf) {
                        Ok(n) => return Ok(self.got(n)),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if let Some(e) = stream.take_error()? {
                                return Err(e);
                            }
                            spurious = true;
                        }
                        Err(e) => return Err(e),
                    }
                }
                _ = tokio::time::sleep(self.backoff) => {
                    let due = due();
                    if due {
                        if let Some(n) = recv_now(stream, buf)? {
                            return Ok(self.got(n));
                        }
                    }
                    if let Some(e) = stream.take_error()? {
                        return Err(e);
                    }
                    spurious = false;
                    self.backoff = next_recheck(self.backoff, due);
                }
            }
        }
    }

    /// Like [`recv`](Self::recv), but an end of stream is believed only if
    /// nothing arrives for a moment after it: the verdict that queues a
    /// socket's last message for us runs from a work item, and the FIN
    /// behind that message can be seen first (an endpoint's GOAWAY was lost
    /// that way in 27 of 10,000 fuzz cases).
    pub async fn recv_confirmed(
        &mut self,
        stream: &impl PsockSocket,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        self.recv_confirmed_counted(stream, buf, &|| true).await
    }

    /// [`recv_confirmed`](Self::recv_confirmed) with what the verdict
    /// counted ([`recv_counted`](Self::recv_counted)).
    pub async fn recv_confirmed_counted(
        &mut self,
        stream: &impl PsockSocket,
        buf: &mut [u8],
        due: &(dyn Fn() -> bool + Sync),
    ) -> io::Result<usize> {
        let n = self.recv_counted(stream, buf, due).await?;
        if n > 0 {
            return Ok(n);
        }
        for _ in 0..EOF_CHECKS {
            tokio::time::sleep(EOF_RECHECK).await;
            if let Some(n) = recv_now(stream, buf)?.filter(|n| *n > 0) {
                return Ok(self.got(n));
            }
        }
        Ok(0)
    }

    fn got(&mut self, n: usize) -> usize {
        self.backoff = FIRST_RECHECK;
        n
    }
}

/// The wait before the next re-read: doubling, up to LAST_RECHECK while a
/// message may be due, up to QUIET_RECHECK while none is.
fn next_recheck(backoff: Duration, due: bool) -> Duration {
    (backoff * 2).min(if due { LAST_RECHECK } else { QUIET_RECHECK })
}

/// One non-blocking recvmsg, whatever tokio believes about readiness.
pub fn recv_now(stream: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    crate::sys::recv_dontwait(stream, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rechecks_back_off_further_only_while_nothing_is_due() {
        let mut b = FIRST_RECHECK;
        for _ in 0..20 {
            b = next_recheck(b, true);
        }
        assert_eq!(
            b, LAST_RECHECK,
            "a message may be due: never later than this"
        );
        for _ in 0..20 {
            b = next_recheck(b, false);
        }
        assert_eq!(b, QUIET_RECHECK);
        assert_eq!(
            next_recheck(b, true),
            LAST_RECHECK,
            "a message passed while idle is looked for soon"
        );
    }
}
