//! Stopping without anyone noticing. A DaemonSet rollout with `maxSurge: 1,
//! maxUnavailable: 0` starts the new agent beside the old one, then sends
//! the old one SIGTERM.
//!
//! Beside: the new agent listens on the next free port (`listen`) and
//! attaches its programs after the old agent's. While both run, the old
//! agent's connect program runs first and redirects; the new one then sees
//! the old agent's address, which is no Service of its own, and leaves it.
//! Its sockops program only takes sockets on its own listener.
//!
//! Stopping (`stop`): the old agent detaches its connect programs, so new
//! connects reach the new agent (or, with none, their original path), and
//! tells every client connection to go away (GOAWAY, client/shutdown.rs):
//! clients finish the calls they have and open new connections. The agent
//! exits once its connections are gone, and the upstreams it handed over
//! through its multiplexers closed (agent/pool.rs, `park`), or after
//! --drain-timeout.

use std::net::SocketAddr;
use std::time::Duration;

use super::Shared;

/// Ports tried after the one given, when it is taken by an agent that is
/// still running (the one this agent replaces).
const LISTEN_PORTS: u16 = 8;

/// Every balanced connect of the node lands here at once after a rollout:
/// the accept queue is as long as the kernel allows (net.core.somaxconn).
pub(crate) const LISTEN_BACKLOG: u32 = 65_535;

/// Listens on `addr`, or on one of the next ports if another agent has it;
/// returns the address taken, which the connect program redirects to.
pub fn listen(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let mut taken = None;
    for k in 0..LISTEN_PORTS {
        let Some(port) = addr.port().checked_add(k) else {
            break;
        };
        let at = SocketAddr::new(addr.ip(), port);
        match bind(at) {
            Ok(listener) => {
                if k > 0 {
                    tracing::info!(given = %addr, listen = %at, "the address given is taken (an agent still running?): listening beside it");
                }
                return Ok((listener, at));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => taken = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(taken.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrInUse)))
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => {
            let s = tokio::net::TcpSocket::new_v6()?;
            crate::sys::set_ipv6_only(&s)?;
            s
        }
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How often a stopping agent looks at what is left.
const POLL: Duration = Duration::from_millis(100);

/// Stops taking new connections, tells every client connection to go away,
/// and returns once none is left or `timeout` has passed (a second SIGINT
/// or SIGTERM ends the wait at once).
pub async fn stop(shared: &Shared, timeout: Duration) {
    let detached = shared.dp.stop_redirecting();
    shared.stopping.send_replace(true);
    // Connections adopted from the agent before this one go away too.
    for g in shared.adopted.lock().map(|a| a.clone()).unwrap_or_default() {
        g.stopping.send_replace(true);
    }
    let left = shared.registry.conns().len();
    tracing::info!(
        detached,
        connections = left,
        "stopping: new connects take another path; clients are told to go away"
    );
    let drained = async {
        let mut told = false;
        loop {
            let left = shared.registry.conns().len();
            // upstreams of connections handed over whose streams this
            // agent's multiplexers carry until the successor closes them
            let local = shared.pools.local_connections();
            if left == 0 && local == 0 {
                tracing::info!("every connection has ended");
                return;
            }
            if left == 0 && !told {
                tracing::info!(
                    upstreams = local,
                    "waiting for the successor to close the upstreams it took over through this agent's multiplexers"
                );
                told = true;
            }
            tokio::time::sleep(POLL).await;
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let again = async {
        match term.as_mut() {
            Some(t) => drop(t.recv().await),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = drained => {}
        () = tokio::time::sleep(timeout) => {
            let left = shared.registry.conns().len();
            let upstreams = shared.pools.local_connections();
            tracing::warn!(left, upstreams, "drain timeout: the connections left are closed");
        }
        _ = tokio::signal::ctrl_c() => tracing::warn!("interrupted while draining"),
        () = again => tracing::warn!("SIGTERM again while draining"),
    }
}
