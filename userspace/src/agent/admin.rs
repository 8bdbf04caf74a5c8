//! The admin API on a root-only Unix socket, read by the `rotor` CLI.
//!
//! A client writes one request line (`status`, `endpoints [SECONDS]`,
//! `conns [SERVICE]`, `explain TARGET`: wire::Request) and reads one JSON
//! answer, `{"ok": ...}` or `{"error": "..."}`, until the agent closes. A
//! client that writes nothing (and shuts its side, or waits
//! `LEGACY_WAIT`) gets the bare status document, as before the requests.

mod explain;
mod report;
mod sockets;
pub mod wire;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::metrics_page::MetricsPage;
use super::Shared;
pub use report::names;
pub use wire::*;

/// How long a reader may take to take the next chunk of its answer. A
/// limit on the whole answer cut off `rotor status --json` above ~4,000
/// connections on a busy node: the answer is megabytes, and each wait for
/// the reader counts only while it reads nothing.
const ADMIN_WRITE_STALL: Duration = Duration::from_secs(5);
const WRITE_CHUNK: usize = 64 * 1024;
/// How long the agent waits for a request line before it answers as it
/// did before requests existed (the whole status).
const LEGACY_WAIT: Duration = Duration::from_millis(200);
/// A request line is short; more is not a request.
const MAX_REQUEST: usize = 1024;

/// The admin socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}", .path.display())]
pub struct AdminError {
    what: &'static str,
    path: std::path::PathBuf,
    #[source]
    source: std::io::Error,
}

/// The bound admin socket; `remove` unlinks it at exit if it is still ours.
pub struct AdminSocket {
    /// Where it is bound now: the path given, or beside it until the agent
    /// it replaces has gone (see spawn).
    path: Arc<std::sync::Mutex<PathBuf>>,
    inode: u64,
}

impl AdminSocket {
    /// Unlinks the socket unless another agent has taken the path since:
    /// an agent that started beside this one renames its own socket onto
    /// the path, and must keep it.
    pub fn remove(&self) {
        let path = self.path.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if inode(&path) == Some(self.inode) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

/// Binds the admin socket at `path`. When an agent still answers there
/// (this one was started beside it, as a rollout does), the socket is bound
/// beside the path and renamed onto it once that agent has gone, so
/// `rotor status` always reaches an agent that runs.
pub fn spawn(
    path: &Path,
    shared: Arc<Shared>,
    page: Arc<MetricsPage>,
) -> Result<AdminSocket, AdminError> {
    let started = Instant::now();
    let fail = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| AdminError { what, path, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail("creating", dir))?;
    }
    let taken = std::os::unix::net::UnixStream::connect(path).is_ok();
    let bound = if taken {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{}", std::process::id()));
        PathBuf::from(name)
    } else {
        path.to_path_buf()
    };
    let _ = std::fs::remove_file(&bound);
    let listener = UnixListener::bind(&bound).map_err(fail("binding", &bound))?;
    std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(0o600))
        .map_err(fail("setting the mode of", &bound))?;
    let socket = AdminSocket {
        inode: inode(&bound).unwrap_or(0),
        path: Arc::new(std::sync::Mutex::new(bound.clone())),
    };
    if taken {
        tracing::info!(path = %path.display(), beside = %bound.display(), "another agent answers on the admin socket: serving beside it until it has gone");
        tokio::spawn(take_over(bound, path.to_path_buf(), socket.path.clone()));
    }
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((sock, _)) => {
                    // A reader that never reads holds only its own task.
                    let (shared, page) = (shared.clone(), page.clone());
                    tokio::spawn(answer(sock, shared, page, started));
                }
                // EMFILE and the like pass; one of them used to end this
                // loop, and `rotor status` with it, for the agent's life.
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(socket)
}

/// Renames this agent's socket onto `path` once nothing answers there.
async fn take_over(bound: PathBuf, path: PathBuf, current: Arc<std::sync::Mutex<PathBuf>>) {
    while std::os::unix::net::UnixStream::connect(&path).is_ok() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match std::fs::rename(&bound, &path) {
        Ok(()) => {
            *current.lock().unwrap_or_else(|e| e.into_inner()) = path.clone();
            tracing::info!(path = %path.display(), "the agent before this one has gone: admin socket taken over");
        }
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "cannot take over the admin socket")
        }
    }
}

/// Reads the request, builds the answer off the runtime (a status of
/// thousands of connections, a scan of /proc) and writes it.
async fn answer(sock: UnixStream, shared: Arc<Shared>, page: Arc<MetricsPage>, started: Instant) {
    let (rd, mut wr) = sock.into_split();
    let mut line = String::new();
    let mut rd = BufReader::new(tokio::io::AsyncReadExt::take(rd, MAX_REQUEST as u64));
    let read = tokio::time::timeout(LEGACY_WAIT, rd.read_line(&mut line)).await;
    let request = match read {
        // nothing within the wait, or the client shut its side at once
        Err(_) | Ok(Ok(0)) => None,
        Ok(Ok(_)) if !line.ends_with('\n') && line.len() >= MAX_REQUEST => {
            Some(Err("request line too long".to_string()))
        }
        Ok(Ok(_)) => Some(Request::parse(line.trim())),
        Ok(Err(e)) => Some(Err(format!("reading the request: {e}"))),
    };
    let body = tokio::task::spawn_blocking(move || respond(&shared, &page, started, request)).await;
    let Ok(body) = body else { return };
    for chunk in body.chunks(WRITE_CHUNK) {
        match tokio::time::timeout(ADMIN_WRITE_STALL, wr.write_all(chunk)).await {
            Ok(Ok(())) => {}
            _ => {
                tracing::debug!(
                    bytes = body.len(),
                    "admin client stopped reading; answer cut off"
                );
                return;
            }
        }
    }
    let _ = wr.shutdown().await;
}

fn respond(
    shared: &Shared,
    page: &MetricsPage,
    started: Instant,
    request: Option<Result<Request, String>>,
) -> Vec<u8> {
    fn ok<T: serde::Serialize>(doc: T) -> Vec<u8> {
        serde_json::to_vec(&Reply::Ok(doc)).unwrap_or_default()
    }
    match request {
        None => serde_json::to_vec(&report::status(shared, started)).unwrap_or_default(),
        Some(Err(e)) => serde_json::to_vec(&Reply::<()>::Error(e)).unwrap_or_default(),
        Some(Ok(Request::Status)) => ok(report::status(shared, started)),
        Some(Ok(Request::Endpoints { window_s })) => ok(report::endpoints(
            shared,
            page,
            Duration::from_secs(window_s),
        )),
        Some(Ok(Request::Conns { service })) => ok(report::conns(shared, service.as_deref())),
        Some(Ok(Request::Explain { target })) => ok(explain::explain(shared, &target)),
    }
}
