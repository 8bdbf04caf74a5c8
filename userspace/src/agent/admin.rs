//! The admin API: one JSON document per connection on a root-only Unix
//! socket, read by the `rotor` CLI.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
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
    pub id: u32,
    pub service: String,
    pub client: String,
    pub fast: bool,
    pub upstreams: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub services: Vec<ServiceStatus>,
    pub connections: Vec<ConnStatus>,
    pub open_streams: usize,
    pub kernel: Vec<(String, u64)>,
}

pub fn spawn(path: &Path, shared: Arc<Shared>) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let body = serde_json::to_vec_pretty(&status(&shared)).unwrap_or_default();
            let _ = sock.write_all(&body).await;
        }
    });
    Ok(())
}

fn status(shared: &Shared) -> Status {
    let conn = |c: ConnInfo| ConnStatus { id: c.id, service: c.service, client: c.client, fast: c.fast, upstreams: c.upstreams };
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
        kernel: shared.dp.stats().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}
