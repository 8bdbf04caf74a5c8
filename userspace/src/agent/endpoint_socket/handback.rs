//! An upstream's reader giving its socket back, between two messages,
//! when its connection is handed to the agent after this one (issue 13:
//! agent/client/handover.rs), and a reader starting where the reader of
//! the agent before this one stopped.

use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Where a reader starts: fresh (the default), or where the reader of
/// the agent before this one stopped (a connection handed over).
#[derive(Debug, Default)]
pub struct Resume {
    /// Messages already handed to the connection (the kernel counts them
    /// in `upstream.passed`).
    pub messages: u32,
    /// The start of a message read but not yet whole.
    pub buffered: bytes::Bytes,
}

/// What a reader gives back when its connection is handed over: its
/// socket, between two messages, and where it stood.
#[derive(Debug)]
pub struct Handback {
    pub stream: TcpStream,
    /// What the agent read itself in the handshake (`Joined::read_bytes`).
    pub read_bytes: u64,
    pub messages: u32,
    pub buffered: bytes::Bytes,
}

/// Asks a reader to stop between two messages and give its socket back.
pub type HandbackAsk = oneshot::Sender<oneshot::Sender<Handback>>;

/// The connection's request to give the socket back, once it comes.
pub(super) async fn asked(
    handback: &mut Option<oneshot::Receiver<oneshot::Sender<Handback>>>,
) -> Result<oneshot::Sender<Handback>, oneshot::error::RecvError> {
    match handback {
        Some(r) => r.await,
        None => std::future::pending().await,
    }
}
