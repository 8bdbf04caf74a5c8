//! A connection accepted for a Service is set up: the accepted socket named
//! to the kernel, the connection's entry in `conns` reset for it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use tokio::net::TcpStream;

use super::kernel::ConnKernel;
use super::{subset, upstream_slots, ClientConn};
use crate::ebpf::abi::*;
use crate::ebpf::addr::ip_words;
use crate::h2::frame::DEFAULT_WINDOW;

impl ClientConn {
    /// Names the accepted socket to the kernel and resets the connection's
    /// shared state; fails if a map has no room (sock_idents full).
    pub(super) fn adopt(
        &mut self,
        a: &TcpStream,
        peer: SocketAddr,
        cookie: u64,
    ) -> anyhow::Result<()> {
        let local = a.local_addr()?;
        let endpoints = self.service.endpoints.borrow().clone();
        self.init_kernel_state(peer, local, &endpoints)?;
        self.shared.dp.set_ident(
            cookie,
            SockIdent {
                conn_id: self.id,
                role: ROLE_AGENT,
                ..Default::default()
            },
        )?;
        self.cookie = cookie;
        self.peer = peer;
        // WINDOW_UPDATEs the client sent before the socket had an identity
        // were counted in its parser state, not in the connection.
        if let Some(st) = self.shared.dp.parse_state(cookie) {
            self.kernel
                .conn()
                .client_limit
                .fetch_max(DEFAULT_WINDOW as u64 + st.client_window, Ordering::SeqCst);
        }
        Ok(())
    }

    fn init_kernel_state(
        &mut self,
        peer: SocketAddr,
        local: SocketAddr,
        endpoints: &[SocketAddr],
    ) -> anyhow::Result<()> {
        let rotation = self.service.next_rotation();
        self.subset = subset::Subset::new(rotation as usize, tokio::time::Instant::now());
        // slot k holds the k-th wanted endpoint; a window already starts
        // at a different endpoint for each connection
        let n = endpoints.len().max(1) as u32;
        self.first_slot = if endpoints.len() > MAX_UPSTREAMS {
            0
        } else {
            rotation % n
        };
        let c = self.kernel.conn();
        c.flags.store(0, Ordering::SeqCst);
        for (w, v) in c.client_ip.iter().zip(ip_words(peer.ip())) {
            w.store(v, Ordering::Relaxed);
        }
        for (w, v) in c.agent_ip.iter().zip(ip_words(local.ip())) {
            w.store(v, Ordering::Relaxed);
        }
        c.client_port.store(peer.port() as u32, Ordering::Relaxed);
        c.agent_port.store(local.port() as u32, Ordering::Relaxed);
        c.service_id.store(self.service.id, Ordering::Relaxed);
        c.policy
            .store(self.service.policy().kernel_code(), Ordering::Relaxed);
        c.consumed.store(0, Ordering::Relaxed);
        c.generation.fetch_add(1, Ordering::Relaxed);
        c.last_stream.store(0, Ordering::Relaxed);
        c.next.store(self.first_slot, Ordering::Relaxed);
        c.client_recv.store(0, Ordering::Relaxed);
        c.client_limit
            .store(DEFAULT_WINDOW as u64, Ordering::Relaxed);
        for up in &c.up {
            upstream_slots::reset_upstream(up, DEFAULT_WINDOW as u64, 0);
            up.streams.store(0, Ordering::SeqCst);
        }
        Ok(())
    }
}
