//! The per-socket maps: Services, the original destinations of accepted
//! clients, socket identities and parser states, and the socket hashes of
//! upstreams and the injector.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use aya::maps::MapError;

use super::room::SocketRoom;
use super::{lock, Datapath, BPF_NOEXIST};
use crate::ebpf::abi::{Origin, ParseState, PeerKey, Service, ServiceKey, SockIdent};
use crate::ebpf::addr::ip_words;
use crate::sys::socket_cookie;

impl Datapath {
    pub fn set_service(&self, vip: SocketAddr, id: u32) -> Result<(), MapError> {
        lock(&self.services).insert(service_key(vip), Service { id }, 0)
    }

    pub fn remove_service(&self, vip: SocketAddr) -> Result<(), MapError> {
        lock(&self.services).remove(&service_key(vip))
    }

    /// The original destination of an accepted client connection, once.
    pub fn take_origin(&self, peer: SocketAddr) -> Option<Origin> {
        let key = PeerKey {
            ip: ip_words(peer.ip()),
            port: peer.port() as u32,
        };
        let mut map = lock(&self.client_origins);
        let origin = map.get(&key, 0).ok()?;
        let _ = map.remove(&key);
        Some(origin)
    }

    /// The identity names the connection's current generation (the
    /// programs check it: rotor.h).
    pub fn set_ident(&self, cookie: u64, mut ident: SockIdent) -> Result<(), MapError> {
        if let Some(c) = self.conns.get(ident.conn_id) {
            ident.generation = c.generation.load(std::sync::atomic::Ordering::SeqCst);
        }
        lock(&self.sock_idents).insert(cookie, ident, 0)
    }

    /// Room for `sockets` of the agent's sockets in the per-socket maps,
    /// if they have it beside every other claim (room.rs).
    pub fn claim_room(&self, sockets: usize) -> Option<SocketRoom> {
        SocketRoom::claim(&self.room, sockets)
    }

    /// Sockets that are in the maps whatever the limit says (the
    /// injector, a self-check, connections adopted at an upgrade),
    /// counted so that later claims see them.
    pub fn count_room(&self, sockets: usize) -> SocketRoom {
        SocketRoom::count(&self.room, sockets)
    }

    /// The parser state of a socket, if the programs have seen its bytes.
    pub fn parse_state(&self, cookie: u64) -> Option<ParseState> {
        lock(&self.parse_states).get(&cookie, 0).ok()
    }

    /// Forgets a socket's identity and parser state (when it closes).
    pub fn forget_cookie(&self, cookie: u64) {
        if cookie != 0 {
            let _ = lock(&self.sock_idents).remove(&cookie);
            let _ = lock(&self.parse_states).remove(&cookie);
            self.forget_tap_start(cookie);
        }
    }

    /// Deletes the parser states of sockets the agent has no identity for
    /// and had none for at the previous sweep either (`unknown_before`):
    /// sockets whose last bytes were parsed after the agent forgot them.
    /// An accepted socket's state (`accepted`) is not the sweep's: that
    /// socket may wait in the accept queue for as long as the agent does
    /// not run, and sockops deletes the state when it closes.
    /// Returns the cookies unknown now and how many states were deleted.
    pub fn sweep_parse_states(&self, unknown_before: &HashSet<u64>) -> (HashSet<u64>, usize) {
        let known: HashSet<u64> = lock(&self.sock_idents)
            .keys()
            .filter_map(Result::ok)
            .collect();
        let mut states = lock(&self.parse_states);
        let unknown: HashSet<u64> = states
            .iter()
            .filter_map(Result::ok)
            .filter(|(c, st)| st.accepted == 0 && !known.contains(c))
            .map(|(c, _)| c)
            .collect();
        let mut deleted = 0;
        for cookie in unknown.intersection(unknown_before) {
            deleted += usize::from(states.remove(cookie).is_ok());
        }
        (
            unknown.difference(unknown_before).copied().collect(),
            deleted,
        )
    }

    pub fn insert_upstream(
        &self,
        conn_id: u32,
        slot: u32,
        sock: &impl AsRawFd,
    ) -> Result<(), MapError> {
        // Its parser state is made here, not by the parser at the first
        // byte: a full parse_states then fails this insert, where the
        // agent can close the slot, instead of leaving an upstream the
        // kernel cannot frame.
        let cookie = socket_cookie(sock).map_err(|io_error| {
            MapError::SyscallError(aya::sys::SyscallError {
                call: "getsockopt(SO_COOKIE)",
                io_error,
            })
        })?;
        {
            let mut states = lock(&self.parse_states);
            if states.get(&cookie, 0).is_err() {
                states.insert(cookie, ParseState::default(), BPF_NOEXIST)?;
            }
        }
        lock(&self.upstream_socks).insert(upstream_key(conn_id, slot), sock.as_raw_fd(), 0)
    }

    pub fn insert_injector(&self, index: u32, sock: &impl AsRawFd) -> Result<(), MapError> {
        lock(&self.injector_socks).insert(index, sock.as_raw_fd(), 0)
    }
}

pub fn upstream_key(conn_id: u32, slot: u32) -> u64 {
    ((conn_id as u64) << 32) | slot as u64
}

fn service_key(vip: SocketAddr) -> ServiceKey {
    ServiceKey {
        ip: ip_words(vip.ip()),
        port: vip.port() as u32,
    }
}

/// Bytes of a socket's stream its verdict has handled, since the parser
/// first saw it.
pub fn verdict_bytes(st: &ParseState) -> u32 {
    if st.seq_valid == 0 {
        return 0;
    }
    st.next_seq.wrapping_sub(st.first_seq)
}
