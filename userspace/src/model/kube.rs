//! The Kubernetes source: Services labelled `rotor.dev/balance` (any
//! namespace) and their EndpointSlices, watched with kube-rs; each event
//! updates one Service in an [`index::Index`], and what changed is sent to
//! the agent as a [`Delta`].
//!
//! ```text
//!  watcher(Service, label rotor.dev/balance) ───────────────────┐
//!  watcher(EndpointSlice, label rotor.dev/balance) ─────────────┼─► Index ─► Delta ─► agent
//!  watcher(EndpointSlice, kubernetes.io/service-name in (...)) ─┘
//! ```
//!
//! The EndpointSlice controller copies a Service's labels onto the slices
//! it manages, also onto existing slices when a label is added later
//! (README, "Kubernetes"), so the second watch selects by our label and
//! holds no slice of a Service rotor does not balance. Services without a
//! selector get their slices from a user or another controller, which need
//! not copy our label: the third watch names them, and starts again when
//! that set of names changes.

mod events;
mod index;
mod run;
mod translate;

pub use events::{no_policy_event, REASON_NO_POLICY, REPORTING_CONTROLLER};
pub use index::{Event, Index, SliceSource};
pub use translate::NodeInfo;
pub use translate::{model_from, model_on};

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::mpsc;

use super::source::SourceHealth;
use super::{Delta, Model};
/// The label a Service carries to be balanced per request (any value).
pub const BALANCE_LABEL: &str = "rotor.dev/balance";
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration: not in a pod, and neither KUBECONFIG nor ~/.kube/config is usable")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot create the Kubernetes client")]
    Client(#[source] kube::Error),
    #[error("Services and EndpointSlices not listed within {}s (last error: {last_error})", .waited.as_secs())]
    NotSynced {
        waited: Duration,
        last_error: String,
    },
    #[error("the Kubernetes watch task ended")]
    Stopped,
}

/// A client from `kubeconfig` if given, else inferred: `KUBECONFIG`,
/// `~/.kube/config`, then the in-cluster service account.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |source| KubeError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let kc = Kubeconfig::read_from(path).map_err(err)?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(err)?
        }
        None => Config::infer().await.map_err(KubeError::Infer)?,
    };
    Client::try_from(config).map_err(KubeError::Client)
}

/// What the source sends: the first complete model, then what changed.
#[derive(Debug)]
pub enum Update {
    Listed(Model),
    Changed(Delta),
}

/// The running source, fed by a task that owns the watchers (it stops
/// when this is dropped).
pub struct KubeSource {
    updates: mpsc::UnboundedReceiver<Update>,
    health: SourceHealth,
    task: tokio::task::JoinHandle<()>,
}

impl KubeSource {
    /// Starts the watchers. The first model is sent once the Services and
    /// the slices have been listed; then one delta per change.
    /// `node`: this node's name (`--node-name`): the endpoints of
    /// `internalTrafficPolicy: Local` Services, and the Events' reporting
    /// instance (else the host name).
    pub fn start(client: Client, node: Option<String>) -> KubeSource {
        let (tx, updates) = mpsc::unbounded_channel();
        let health = SourceHealth::new("kubernetes");
        let task = tokio::spawn(run::run(client, tx, health.clone(), node));
        KubeSource {
            updates,
            health,
            task,
        }
    }

    /// Waits for the first complete model, at most `limit`.
    pub async fn first(&mut self, limit: Duration) -> Result<Model, KubeError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.updates.recv()).await {
                Ok(Some(Update::Listed(model))) => return Ok(model),
                Ok(Some(Update::Changed(_))) => continue,
                Ok(None) => return Err(KubeError::Stopped),
                Err(_) => {
                    let last_error = self
                        .health
                        .last_error()
                        .unwrap_or_else(|| "none; the API server did not answer".into());
                    return Err(KubeError::NotSynced {
                        waited: limit,
                        last_error,
                    });
                }
            }
        }
    }

    /// The next change after the first model; None once the source ended.
    pub async fn next(&mut self) -> Option<Delta> {
        loop {
            match self.updates.recv().await? {
                Update::Changed(d) => return Some(d),
                Update::Listed(_) => continue,
            }
        }
    }

    /// Where the source stands (for `rotor status`).
    pub fn health(&self) -> SourceHealth {
        self.health.clone()
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The error and its sources on one line, as `anyhow` prints them.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s = s.to_string();
        if !out.contains(&s) {
            out += &format!(": {s}");
        }
        cur = cur.and_then(|c| c.source());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_api_server_is_an_error_naming_the_cause() {
        // A loopback port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = Config::new(format!("http://127.0.0.1:{port}").parse().expect("uri"));
        let client = Client::try_from(config).expect("client");
        let mut source = KubeSource::start(client, None);
        let err = source
            .first(Duration::from_millis(1500))
            .await
            .map(|_| ())
            .expect_err("no server");
        let text = err.to_string();
        assert!(text.contains("not listed within 1s"), "{text}");
        assert!(text.contains("refused"), "{text}");
    }

    #[test]
    fn error_chain_skips_repeated_sources() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = KubeError::Kubeconfig {
            path: "/k".into(),
            source: kube::config::KubeconfigError::ReadConfig(inner, "/k".into()),
        };
        let s = error_chain(&outer);
        assert!(s.starts_with("cannot read kubeconfig /k"), "{s}");
    }
}
