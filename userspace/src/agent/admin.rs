//! The admin API: one JSON document per connection on a root-only Unix
//! socket, read by the `rotor` CLI.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
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

pub fn spawn(path: &Path, shared: Arc<Shared>) -> Result<(), AdminError> {
    let fail = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| AdminError { what, path, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail("creating", dir))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(fail("binding", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(fail("setting the mode of", path))?;
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
    Ok(())
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
    }
}
