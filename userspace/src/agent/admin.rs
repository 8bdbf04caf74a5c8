//! The admin API: one JSON document per connection on a root-only Unix
//! socket, read by the `rotor` CLI.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;

use super::registry::ConnInfo;
use super::Shared;

#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub vip: String,
    /// How its streams pick an endpoint (`Policy::name`).
    #[serde(default)]
    pub policy: String,
    pub endpoints: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConnStatus {
    #[serde(flatten)]
    pub info: ConnInfo,
    /// The kernel's counters for this connection.
    pub kernel: ConnCounters,
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct ConnCounters {
    pub flags: u32,
    pub client_recv: u64,
    pub client_limit: u64,
    pub upstreams: Vec<UpstreamCounters>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct UpstreamCounters {
    pub slot: u32,
    pub state: u32,
    pub streams: u32,
    pub req_data: u64,
    pub req_limit: u64,
    pub resp_data: u64,
    pub diverted: bool,
    /// The divert's bookkeeping (upstream_skb.c): messages handed to the
    /// agent, the last stream frame among them, what the agent had handled
    /// when it asked for release, and whether that ask is pending.
    pub passed: u32,
    pub last_diverted: u32,
    pub consumed: u32,
    pub release: bool,
}

fn counters(shared: &Shared, id: u32) -> ConnCounters {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(c) = shared.dp.conns.get(id) else {
        return ConnCounters::default();
    };
    ConnCounters {
        flags: c.flags.load(Relaxed),
        client_recv: c.client_recv.load(Relaxed),
        client_limit: c.client_limit.load(Relaxed),
        upstreams: c
            .up
            .iter()
            .enumerate()
            .filter(|(_, u)| u.state.load(Relaxed) != crate::ebpf::abi::UP_EMPTY)
            .map(|(slot, u)| UpstreamCounters {
                slot: slot as u32,
                state: u.state.load(Relaxed),
                streams: u.streams.load(Relaxed),
                req_data: u.req_data.load(Relaxed),
                req_limit: u.req_limit.load(Relaxed),
                resp_data: u.resp_data.load(Relaxed),
                diverted: u.diverted.load(Relaxed) != 0,
                passed: u.passed.load(Relaxed),
                last_diverted: u.last_diverted.load(Relaxed),
                consumed: u.consumed.load(Relaxed),
                release: u.release.load(Relaxed) != 0,
            })
            .collect(),
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub services: Vec<ServiceStatus>,
    pub connections: Vec<ConnStatus>,
    pub open_streams: usize,
    pub kernel: Vec<(String, u64)>,
    /// What the agent queues, against --max-queued-bytes.
    #[serde(default)]
    pub budget: super::budget::BudgetStatus,
    /// Where the model stands with its source (synced, unreachable since when).
    #[serde(default)]
    pub source: crate::model::SourceReport,
    /// Per-endpoint stream totals, the kernel's and the agent's (also on
    /// `/metrics`).
    #[serde(default)]
    pub endpoints: Vec<super::metrics_counts::EndpointTotals>,
}

/// How long a CLI may take to read its answer.
const ADMIN_WRITE_LIMIT: Duration = Duration::from_secs(5);

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
pub fn spawn(path: &Path, shared: Arc<Shared>) -> Result<AdminSocket, AdminError> {
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
                Ok((mut sock, _)) => {
                    let body = serde_json::to_vec_pretty(&status(&shared)).unwrap_or_default();
                    // A reader that never reads holds only its own task.
                    tokio::spawn(async move {
                        let _ =
                            tokio::time::timeout(ADMIN_WRITE_LIMIT, sock.write_all(&body)).await;
                    });
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

fn status(shared: &Shared) -> Status {
    let conn = |info: ConnInfo| ConnStatus {
        kernel: counters(shared, info.id),
        info,
    };
    Status {
        services: shared
            .registry
            .services()
            .iter()
            .map(|s| ServiceStatus {
                name: s.name.clone(),
                vip: s.vip.to_string(),
                policy: s.policy().name().to_string(),
                endpoints: s.endpoints.borrow().iter().map(|e| e.to_string()).collect(),
            })
            .collect(),
        connections: shared.registry.conns().into_iter().map(conn).collect(),
        open_streams: shared.dp.stream_count(),
        kernel: shared
            .dp
            .stats()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        budget: shared.budget.status(),
        source: shared.source.report(),
        endpoints: (shared.registry.endpoints).totals(|id| shared.dp.endpoint_stats(id)),
    }
}
