//! A connection the kernel sent to the agent that the agent cannot carry
//! (its table is full, the kernel could not take the accepted socket, its
//! Service is gone, or setting it up failed) goes on to where the client
//! dialled: the Service address, which the node's kube-proxy rules send to
//! an endpoint, as if rotor were not there. Closing it instead would make
//! rotor the reason a request failed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tap::{SourceInput, Tap};
use super::Shared;
use crate::ebpf::Datapath;

/// Carries `a` to `dest` until both sides are done; counted and logged.
/// `spare`: A's tap from its first byte, if it had one (spare_taps.rs).
pub async fn run(
    shared: &Shared,
    a: TcpStream,
    peer: SocketAddr,
    dest: SocketAddr,
    why: String,
    spare: Option<Tap>,
) {
    shared.dp.note_fail_open();
    tracing::warn!(%peer, service = %dest, %why, "connection left on its original path (the Service address)");
    let cookie = crate::ebpf::socket_cookie(&a).unwrap_or(0);
    let input = SourceInput::new(spare, true);
    if let Err(e) = splice(&shared.dp, a, dest, &[], input).await {
        tracing::debug!(%peer, service = %dest, error = %e, "original path ended");
    }
    // A socket the kernel took before the agent gave up has a parser state.
    shared.dp.forget_cookie(cookie);
}

/// Carries `a` to `dest` both ways until both are done; `first` is what
/// `a` sent that was read already. `a` may be in agent_socks (its bytes
/// then reach us one message per read, and a plain read can wait for an
/// edge that never comes: sockmap_io.rs); everything else is plain TCP.
///
/// All of `a`'s bytes go to the agent, through its tap once it has one
/// (agent/tap.rs; `input` brings the one it has, else one is made here):
/// what went into `a`'s own ingress before is read first,
/// counted in bytes, as `first` and what is read here count them.
pub(super) async fn splice(
    dp: &Datapath,
    a: TcpStream,
    dest: SocketAddr,
    first: &[u8],
    mut input: SourceInput,
) -> std::io::Result<()> {
    let cookie = crate::ebpf::socket_cookie(&a).unwrap_or(0);
    if !input.has_tap() {
        if let Some(tap) = Tap::open(dp, cookie) {
            input.attach(tap);
        }
    }
    // bytes read from `a` since the kernel first parsed it
    let mut read = first.len() as u64;
    let mut up = crate::ebpf::own_socks::connect(dest).await?;
    up.set_nodelay(true)?;
    up.write_all(first).await?;
    let (mut from_a, mut from_up) = (vec![0u8; 65536], vec![0u8; 65536]);
    let (mut a_open, mut up_open) = (true, true);
    while a_open || up_open {
        let due = || {
            dp.parse_state(cookie)
                .is_none_or(|st| u64::from(crate::ebpf::verdict_bytes(&st)) != read)
        };
        let caught_up =
            || SourceInput::caught_up(dp.tap_start(cookie).map(|t| t.bytes), read as u32);
        tokio::select! {
            r = input.recv(&a, &mut from_a, &due, &caught_up), if a_open => {
                let n = r?;
                read += n as u64;
                if n == 0 {
                    a_open = false;
                    up.shutdown().await?;
                } else {
                    up.write_all(&from_a[..n]).await?;
                }
            }
            r = up.read(&mut from_up), if up_open => {
                let n = r?;
                if n == 0 {
                    up_open = false;
                    shutdown_write(&a);
                } else {
                    write_all(&a, &from_up[..n]).await?;
                }
            }
        }
    }
    Ok(())
}

async fn write_all(s: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        s.writable().await?;
        match s.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn shutdown_write(s: &TcpStream) {
    // Best effort: a socket the peer already reset has nothing to end.
    let _ = crate::sys::shutdown_write(s);
}

/// sockops makes an accepted socket's parser state when the handshake
/// completes, which can be a moment after accept returned it: the child
/// joins the accept queue before its ESTABLISHED callback runs, and on a
/// busy node that softirq work can wait in ksoftirqd. 50 ms was too short
/// there (113 of 5,000 connections left on their original path at load 9
/// with the maps nearly empty, conn-memory benchmark); a full table, the
/// case this tells apart, is rare enough to wait up to a second for.
pub async fn kernel_took(shared: &Shared, cookie: u64) -> bool {
    let mut pause = Duration::from_millis(1);
    let deadline = tokio::time::Instant::now() + KERNEL_TAKE_LIMIT;
    loop {
        if shared.dp.parse_state(cookie).is_some() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

const KERNEL_TAKE_LIMIT: Duration = Duration::from_secs(1);
