//! The Kubernetes source: Services labelled `rotor.dev/balance` (any
//! namespace) and the EndpointSlices of every Service, watched with kube-rs
//! into reflector stores; each change that alters the [`Model`] is sent on a
//! `tokio::sync::watch` channel.
//!
//! ```text
//!  watcher(Service, label rotor.dev/balance) ─► store ─┐
//!                                                      ├─► model_from ─► watch::Sender<Model>
//!  watcher(EndpointSlice, kubernetes.io/service-name) ─► store ─┘
//! ```

mod translate;

pub use translate::model_from;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Config, ResourceExt};
use tokio::sync::watch;

use super::Model;

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

/// The running source: models on a watch channel, fed by a task that owns
/// both watchers (it stops when this is dropped).
pub struct KubeSource {
    models: watch::Receiver<Model>,
    last_error: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl KubeSource {
    /// Starts the watchers. The first model is sent once both the Services
    /// and the EndpointSlices have been listed; then one per change.
    pub fn start(client: Client) -> KubeSource {
        let (tx, models) = watch::channel(Model::default());
        let last_error = Arc::new(Mutex::new(None));
        let task = tokio::spawn(run(client, tx, last_error.clone()));
        KubeSource {
            models,
            last_error,
            task,
        }
    }

    /// Waits for the first complete model (both lists done), at most `limit`.
    pub async fn first(&mut self, limit: Duration) -> Result<Model, KubeError> {
        match tokio::time::timeout(limit, self.models.changed()).await {
            Ok(Ok(())) => Ok(self.models.borrow_and_update().clone()),
            Ok(Err(_)) => Err(KubeError::Stopped),
            Err(_) => {
                let last_error = self
                    .last_error
                    .lock()
                    .ok()
                    .and_then(|e| e.clone())
                    .unwrap_or_else(|| "none; the API server did not answer".into());
                Err(KubeError::NotSynced {
                    waited: limit,
                    last_error,
                })
            }
        }
    }

    /// The channel of models (the current one already seen after [`first`](Self::first)).
    pub fn models(&self) -> watch::Receiver<Model> {
        self.models.clone()
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which watcher an event came from, and whether its store changed.
enum Tick {
    Services(Change),
    Slices(Change),
}

enum Change {
    /// Nothing visible in the store yet (a relist is buffering).
    None,
    /// The store changed.
    Some,
    /// A (re)list completed: the store now holds the full list.
    Listed,
    /// 410 Gone: the API server compacted past our revision; the watcher lists again.
    Expired,
    Failed(String),
}

fn change<K>(event: Result<watcher::Event<K>, watcher::Error>) -> Change {
    match event {
        Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => Change::None,
        Ok(watcher::Event::InitDone) => Change::Listed,
        Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => Change::Some,
        Err(watcher::Error::WatchError(status)) if status.code == 410 => Change::Expired,
        Err(e) => Change::Failed(error_chain(&e)),
    }
}

/// Objects keep only what [`model_from`] reads (and what the store keys on).
fn slim<K: ResourceExt>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut().clear();
}

async fn run(client: Client, tx: watch::Sender<Model>, last_error: Arc<Mutex<Option<String>>>) {
    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let svc_events = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default().labels(BALANCE_LABEL),
    )
    .default_backoff()
    .modify(|s: &mut Service| {
        slim(s);
        s.status = None;
    })
    .reflect(svc_writer)
    .map(|e| Tick::Services(change(e)));
    let slice_events = watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default().labels(SERVICE_NAME_LABEL),
    )
    .default_backoff()
    .modify(slim::<EndpointSlice>)
    .reflect(slice_writer)
    .map(|e| Tick::Slices(change(e)));
    let mut ticks = std::pin::pin!(futures::stream::select(svc_events, slice_events));
    let (mut svc_listed, mut slices_listed, mut sent) = (false, false, false);
    while let Some(tick) = ticks.next().await {
        let (what, change) = match tick {
            Tick::Services(c) => ("Services", c),
            Tick::Slices(c) => ("EndpointSlices", c),
        };
        match change {
            Change::None => continue,
            Change::Expired => {
                // Routine (etcd compaction every few minutes): not a warning.
                tracing::info!("watch of {what} expired (410 Gone); listing again");
                continue;
            }
            Change::Failed(e) => {
                tracing::warn!(error = %e, "watching {what}; retrying");
                if let Ok(mut last) = last_error.lock() {
                    *last = Some(format!("watching {what}: {e}"));
                }
                continue;
            }
            Change::Listed => {
                tracing::debug!("{what} listed");
                match what {
                    "Services" => svc_listed = true,
                    _ => slices_listed = true,
                }
            }
            Change::Some => {}
        }
        if !(svc_listed && slices_listed) {
            continue;
        }
        let model = current(&services, &slices);
        if !sent {
            tracing::info!(
                services = model.services.len(),
                "Kubernetes Services and EndpointSlices listed"
            );
            tx.send_replace(model);
            sent = true;
        } else {
            tx.send_if_modified(|m| {
                let changed = *m != model;
                *m = model;
                changed
            });
        }
    }
    tracing::error!("Kubernetes watch streams ended");
}

fn current(services: &Store<Service>, slices: &Store<EndpointSlice>) -> Model {
    let svcs = services.state();
    let sls = slices.state();
    model_from(
        svcs.iter().map(|s| s.as_ref()),
        sls.iter().map(|s| s.as_ref()),
    )
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
        let mut source = KubeSource::start(client);
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
