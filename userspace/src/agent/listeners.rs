//! The agent's listeners: IPv4 (`--listen`), where connect4 sends IPv4
//! clients and connect6 dual-stack clients of IPv4 Services (::ffff:VIP),
//! and IPv6 (`--listen6`), where connect6 sends native IPv6 clients. Each
//! takes the next free port if another agent holds the one given (drain.rs).

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use anyhow::Context;

use super::drain;

pub fn listen_v4(addr: SocketAddrV4) -> anyhow::Result<(tokio::net::TcpListener, SocketAddrV4)> {
    match drain::listen(addr.into()).with_context(|| format!("listening on {addr}"))? {
        (l, SocketAddr::V4(at)) => Ok((l, at)),
        (_, at) => anyhow::bail!("listening on {addr} gave an IPv6 address {at}"),
    }
}

/// The IPv6 listener: a specific address, as the kernel compares the
/// accepted sockets' local address with it (sockops.c) and connect6 sends
/// clients to it.
pub fn listen_v6(addr: SocketAddrV6) -> anyhow::Result<(tokio::net::TcpListener, SocketAddrV6)> {
    if addr.ip().is_unspecified() {
        anyhow::bail!("--listen6 {addr}: give an IPv6 address of this node, not [::]");
    }
    match drain::listen(addr.into()).with_context(|| format!("listening on {addr}"))? {
        (l, SocketAddr::V6(at)) => Ok((l, at)),
        (_, at) => anyhow::bail!("listening on {addr} gave an IPv4 address {at}"),
    }
}
