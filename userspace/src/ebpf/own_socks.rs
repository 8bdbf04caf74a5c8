//! The agent's own connects: connect4 leaves a socket alone while its
//! cookie is in `own_socks`. A PID cannot tell the agent's connects from a
//! client's: in a pod without hostPID the agent's `getpid()` is from its
//! own PID namespace and never equals the kernel's tgid, so its upstream
//! connects to a balanced address came back to its own listener.

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use aya::maps::{HashMap, MapData};
use tokio::net::{TcpSocket, TcpStream};

static OWN_SOCKS: OnceLock<Mutex<HashMap<MapData, u64, u32>>> = OnceLock::new();

/// Called once the programs are loaded; every later [`connect`] is exempt.
pub(super) fn install(map: HashMap<MapData, u64, u32>) {
    let _ = OWN_SOCKS.set(Mutex::new(map));
}

/// Removes the socket's entry when the connect is over, however it ended.
struct Registered(u64);

impl Registered {
    fn new(cookie: u64) -> std::io::Result<Registered> {
        if let Some(map) = OWN_SOCKS.get() {
            lock(map)
                .insert(cookie, 1, 0)
                .map_err(|e| std::io::Error::other(format!("own_socks: {e}")))?;
        }
        Ok(Registered(cookie))
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(map) = OWN_SOCKS.get() {
            let _ = lock(map).remove(&self.0);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A TCP connect that connect4 does not redirect (the agent's upstreams,
/// its splices, and the connections it leaves on their original path).
pub async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    let _own = Registered::new(super::socket_cookie(&socket)?)?;
    socket.connect(addr).await
}
