//! The agent's only way to send bytes to a client or an upstream once the
//! kernel may redirect to it: a loopback connection whose receiving end (J)
//! is in `injector_socks`. Its verdict queues each frame on the target's
//! socket, behind the frames the kernel redirected there before, so agent
//! frames never land inside another frame and never overtake (rules 11, 14).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::budget::{Charge, Holder, MESSAGE_OVERHEAD};
use crate::ebpf::abi::{
    Route, SockIdent, ROLE_INJECTOR, ROUTE_ACT_GATE, ROUTE_ACT_NONE, ROUTE_ACT_RELEASE_STREAM,
    ROUTE_ACT_RELEASE_UPSTREAM, ROUTE_ACT_UNHOLD, ROUTE_CLIENT, ROUTE_LEN,
};
use crate::ebpf::Datapath;
use crate::h2::frame::{kind, FrameHeader};

/// Frames of one connection waiting for the injector's writer, counted in
/// the node's budget against their target's holder and in the connection's
/// own backlog (which stops it reading its peers while that is large).
pub struct Owed {
    _charge: Charge,
    backlog: Arc<AtomicUsize>,
    n: usize,
}

impl Owed {
    pub fn new(holder: &Arc<Holder>, backlog: &Arc<AtomicUsize>, frames: usize) -> Owed {
        let n = frames + MESSAGE_OVERHEAD;
        backlog.fetch_add(n, Ordering::SeqCst);
        Owed {
            _charge: Charge::new(holder, n),
            backlog: backlog.clone(),
            n,
        }
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        self.backlog.fetch_sub(self.n, Ordering::SeqCst);
    }
}

struct Item {
    bytes: Bytes,
    _owed: Option<Owed>,
}

/// The accepted end of the agent's own connection, J. Any process on the
/// node can connect to a loopback port: a stranger that connected first was
/// taken for J, its route frames steered frames into other connections, and
/// the agent's own frames went nowhere (every connection hung). Ours is the
/// one whose peer is the writer's address: on loopback no other connection
/// to this listener can have it. It is already queued (connect returned),
/// so the loop ends after the strangers queued before it.
fn accept_own(listener: &TcpListener, writer: &TcpStream) -> anyhow::Result<TcpStream> {
    let own = writer.local_addr().context("injector: local address")?;
    loop {
        let (sock, peer) = listener.accept().context("injector: accept")?;
        if peer == own {
            return Ok(sock);
        }
        tracing::warn!(%peer, "injector: closed a connection that is not the agent's own");
    }
}

/// Where injected frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Client,
    Upstream(u32),
}

#[derive(Clone)]
pub struct Injector {
    /// Unbounded in count, bounded in bytes: what waits here is charged to
    /// the node's budget, and a connection with more than its share waiting
    /// reads no more until it is written (client/budgeted.rs).
    tx: mpsc::UnboundedSender<Item>,
    /// For the generation of the connection a frame is for: frames still
    /// queued when the connection ends are dropped, not delivered to the
    /// next connection with its id.
    dp: Arc<Datapath>,
}

impl Injector {
    pub fn start(dp: &Arc<Datapath>) -> anyhow::Result<Injector> {
        Injector::start_keyed(dp, 0)
    }

    /// An injector whose socket is entry `key` of `injector_socks`: an
    /// adopted generation's (agent/handover) goes beside the old agent's,
    /// whose frames still pass through entry 0 until it exits; replacing
    /// that entry would drop its socket's queue (ebpf/README.md point 31).
    pub fn start_keyed(dp: &Arc<Datapath>, key: u32) -> anyhow::Result<Injector> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("injector: bind 127.0.0.1 (is lo up?)")?;
        let addr: SocketAddr = listener.local_addr()?;
        let writer = TcpStream::connect(addr).context("injector: connect")?;
        let receiver = accept_own(&listener, &writer)?;
        drop(listener);
        writer.set_nodelay(true)?;
        let cookie = crate::ebpf::socket_cookie(&receiver).context("injector: SO_COOKIE")?;
        let room = dp.count_room(1);
        dp.set_ident(
            cookie,
            SockIdent {
                role: ROLE_INJECTOR,
                ..Default::default()
            },
        )
        .context("injector: sock_idents")?;
        dp.insert_injector(key, &receiver)
            .context("injector: insert into injector_socks")?;
        writer.set_nonblocking(true)?;
        let mut writer = tokio::net::TcpStream::from_std(writer)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
        tokio::spawn(async move {
            let _receiver = (receiver, room); // J lives as long as the writer
            let mut batch = BytesMut::new();
            let mut owed = Vec::new();
            while let Some(first) = rx.recv().await {
                batch.extend_from_slice(&first.bytes);
                owed.push(first);
                while let Ok(more) = rx.try_recv() {
                    batch.extend_from_slice(&more.bytes);
                    owed.push(more);
                }
                if let Err(e) = writer.write_all(&batch).await {
                    tracing::error!(error = %e, "injector write failed; agent frames are lost");
                    return;
                }
                batch.clear();
                owed.clear();
            }
        });
        Ok(Injector { tx, dp: dp.clone() })
    }

    /// Sends whole frames to a target of a connection; `owed` counts them
    /// until they are written.
    pub fn send(&self, conn_id: u32, target: Target, frames: &[u8], owed: Option<Owed>) {
        self.send_with(conn_id, target, ROUTE_ACT_NONE, 0, 0, frames, owed);
    }

    /// Opens the fast path of a connection once the kernel has passed no
    /// more than `consumed` messages (applied after everything sent before).
    pub fn open_gate(&self, conn_id: u32, consumed: u32) {
        self.send_with(
            conn_id,
            Target::Client,
            ROUTE_ACT_GATE,
            consumed,
            0,
            &[],
            None,
        );
    }

    /// Ends the divert of an upstream's frames through the agent, if it had
    /// handed the agent no stream frame beyond message `consumed`.
    pub fn release_upstream(&self, conn_id: u32, slot: u32, consumed: u32) {
        self.send_with(
            conn_id,
            Target::Upstream(slot),
            ROUTE_ACT_RELEASE_UPSTREAM,
            consumed,
            0,
            &[],
            None,
        );
    }

    /// Ends the slow path of a stream, if the kernel had handed the agent no
    /// frame of it beyond message `consumed` of the client's connection.
    pub fn release_stream(&self, conn_id: u32, stream: u32, consumed: u32) {
        self.send_with(
            conn_id,
            Target::Client,
            ROUTE_ACT_RELEASE_STREAM,
            consumed,
            stream,
            &[],
            None,
        );
    }

    /// Lets the kernel open new streams again once it has passed no more
    /// than `consumed` messages (the agent holds no stream).
    pub fn unhold(&self, conn_id: u32, consumed: u32) {
        self.send_with(
            conn_id,
            Target::Client,
            ROUTE_ACT_UNHOLD,
            consumed,
            0,
            &[],
            None,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn send_with(
        &self,
        conn_id: u32,
        target: Target,
        action: u32,
        arg: u32,
        stream: u32,
        frames: &[u8],
        owed: Option<Owed>,
    ) {
        if tracing::enabled!(tracing::Level::TRACE) {
            let mut rest = frames;
            while let Some(h) = FrameHeader::parse(rest) {
                tracing::trace!(conn_id, ?target, ?h, "inject");
                rest = rest.get(9 + h.len as usize..).unwrap_or(&[]);
            }
        }
        let mut b = BytesMut::with_capacity(9 + ROUTE_LEN + frames.len());
        FrameHeader {
            len: ROUTE_LEN as u32,
            kind: kind::ROTOR_ROUTE,
            flags: 0,
            stream: 0,
        }
        .encode(&mut b);
        let target = match target {
            Target::Client => ROUTE_CLIENT,
            Target::Upstream(slot) => slot + 1,
        };
        let generation = self.dp.conns.get(conn_id).map_or(0, |c| {
            c.generation.load(std::sync::atomic::Ordering::SeqCst)
        });
        let route = Route {
            conn_id,
            target,
            action,
            arg,
            stream,
            generation,
        };
        b.extend_from_slice(&route.to_bytes());
        b.extend_from_slice(frames);
        let _ = self.tx.send(Item {
            bytes: b.freeze(),
            _owed: owed,
        });
    }
}
