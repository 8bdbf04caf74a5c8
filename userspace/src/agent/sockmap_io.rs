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
//! lost wake-up, an idle one costs four syscalls a second.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

const FIRST_RECHECK: Duration = Duration::from_millis(1);
const LAST_RECHECK: Duration = Duration::from_millis(256);
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
    pub async fn recv(&mut self, stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
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
                    if let Some(n) = recv_now(stream, buf)? {
                        return Ok(self.got(n));
                    }
                    if let Some(e) = stream.take_error()? {
                        return Err(e);
                    }
                    spurious = false;
                    self.backoff = (self.backoff * 2).min(LAST_RECHECK);
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
        stream: &TcpStream,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        let n = self.recv(stream, buf).await?;
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

/// One non-blocking recvmsg, whatever tokio believes about readiness.
pub fn recv_now(stream: &TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    crate::sys::recv_dontwait(stream, buf)
}
