//! A socket the `h2` crate drives, with a watcher that sees its bytes both
//! ways (frame_watch.rs, local_watch.rs): what h2 keeps to itself is read
//! off them, and a watcher may change what goes out.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub(super) trait Watch {
    /// Bytes read from the socket, in order.
    fn read(&mut self, bytes: &[u8]);

    /// Bytes about to be written: what to write instead, if anything (the
    /// same length). `commit` is false for a look ahead of a write that may
    /// take only part of them, true once for the bytes that went out.
    fn write(&mut self, bytes: &[u8], commit: bool) -> Option<Vec<u8>>;
}

pub(super) struct Watched<T, W> {
    io: T,
    pub(super) watch: W,
}

impl<T, W> Watched<T, W> {
    pub(super) fn new(io: T, watch: W) -> Self {
        Watched { io, watch }
    }
}

impl<T: AsyncRead + Unpin, W: Watch + Unpin> AsyncRead for Watched<T, W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watch.read(&buf.filled()[before..]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin, W: Watch + Unpin> AsyncWrite for Watched<T, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let instead = this.watch.write(buf, false);
        let r = Pin::new(&mut this.io).poll_write(cx, instead.as_deref().unwrap_or(buf));
        if let Poll::Ready(Ok(n)) = r {
            let _ = this.watch.write(&buf[..n], true);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
