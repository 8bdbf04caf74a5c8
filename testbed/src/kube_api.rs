//! `KubeApi`: a stand-in for kube-apiserver that serves Services and
//! EndpointSlices over the list/watch wire protocol kube-rs uses, so the
//! agent's Kubernetes source runs against real HTTP without a cluster.
//!
//! * `GET /api/v1/services`, `/apis/discovery.k8s.io/v1/endpointslices`
//!   (and the `/namespaces/NS/` forms), with `labelSelector` (`k`, `!k`,
//!   `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, comma-separated): a `ServiceList` /
//!   `EndpointSliceList` with `metadata.resourceVersion`. Lists are never
//!   paged (`limit` is accepted; the tests keep far fewer objects).
//! * `?watch=true&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=T`:
//!   newline-delimited `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK","object":…}`,
//!   every change after N first, then live ones, a BOOKMARK every 500 ms,
//!   closed after T seconds (or [`KubeApi::set_watch_limit`]). As the real
//!   server does, an object whose labels stop (start) matching the selector
//!   arrives as DELETED (ADDED). A watch from a revision older than the last
//!   compaction ([`KubeApi::apply_behind_compaction`]) gets one ERROR event
//!   with a 410 Expired Status.
//!
//! * It plays the EndpointSlice controller's part with labels
//!   (controller.rs): managed slices carry their Service's labels.
//! * [`KubeApi::pause`] and [`KubeApi::resume`]: the API server goes away
//!   (port closed, watches cut) and comes back on the same port.
//!
//! One global resourceVersion counts every change, like etcd's revision.
//! [`KubeApi::start_in_netns`] listens on 127.0.0.1 inside a test's network
//! namespace: the server thread enters it before binding (`setns` changes
//! only the calling thread), so nothing listens outside the test's namespaces.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

mod controller;
mod objects;
mod query;
mod server;
mod watch;

pub use objects::{endpoint_slice, service, EndpointState};
use server::serve;

/// The two kinds the agent watches, and the Events it posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Service,
    EndpointSlice,
    /// events.k8s.io/v1 (created by POST, as the agent does).
    Event,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::Service => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::Event => "events.k8s.io/v1",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Event => "Event",
        }
    }
}

/// A change as the store saw it: the object before (None: created) and after (None: deleted).
#[derive(Debug, Clone)]
pub(super) struct Change {
    rv: u64,
    kind: Kind,
    old: Option<Value>,
    new: Option<Value>,
}

#[derive(Debug)]
pub(super) struct State {
    rv: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    /// Changes after `compacted`, oldest first.
    history: Vec<Change>,
    /// A watch from an older revision gets 410 Gone (Expired).
    compacted: u64,
    changes: broadcast::Sender<Change>,
    /// Bumped to end every open watch.
    epoch: tokio::sync::watch::Sender<u64>,
    /// Longest a watch stays open, whatever its timeoutSeconds.
    watch_limit: Option<Duration>,
    /// While true, list requests get no answer (a slow API server).
    lists_held: tokio::sync::watch::Sender<bool>,
    requests: Vec<String>,
    /// Slice names by (namespace, `kubernetes.io/service-name`), for the controller.
    slices_of: std::collections::HashMap<(String, String), std::collections::BTreeSet<String>>,
    /// How long the controller takes to relabel slices (controller.rs).
    controller_delay: Duration,
}

/// A running stand-in. Dropping it stops the server and closes every watch.
#[derive(Debug)]
pub struct KubeApi {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    netns: Option<std::path::PathBuf>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KubeApi {
    /// Listens on 127.0.0.1 (an ephemeral port) of this process's namespace.
    pub fn start() -> Result<KubeApi> {
        KubeApi::spawn(None)
    }

    /// Listens on 127.0.0.1 inside network namespace `netns` (a name under /var/run/netns).
    pub fn start_in_netns(netns: &str) -> Result<KubeApi> {
        KubeApi::spawn(Some(Path::new(crate::process::NETNS_RUN_DIR).join(netns)))
    }

    fn spawn(netns: Option<std::path::PathBuf>) -> Result<KubeApi> {
        let (changes, _) = broadcast::channel(4096);
        let state = Arc::new(Mutex::new(State {
            rv: 1,
            objects: BTreeMap::new(),
            history: Vec::new(),
            compacted: 0,
            changes,
            epoch: tokio::sync::watch::channel(0).0,
            watch_limit: None,
            lists_held: tokio::sync::watch::channel(false).0,
            requests: Vec::new(),
            slices_of: Default::default(),
            controller_delay: Duration::ZERO,
        }));
        let (addr, stop, thread) = listen(state.clone(), netns.clone(), 0)?;
        Ok(KubeApi {
            state,
            addr,
            netns,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops answering, as an API server that went away: the port is
    /// closed (connects are refused) and every open watch ends. The objects
    /// stay; [`KubeApi::resume`] serves them again on the same port.
    pub fn pause(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Serves again on the port it had, after [`KubeApi::pause`].
    pub fn resume(&mut self) -> Result<()> {
        if self.thread.is_some() {
            bail!("the stand-in is serving already");
        }
        let (_, stop, thread) = listen(self.state.clone(), self.netns.clone(), self.addr.port())?;
        self.stop = Some(stop);
        self.thread = Some(thread);
        Ok(())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig that points at this server (plain http, a bearer token).
    pub fn write_kubeconfig(&self, path: &Path) -> Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: {}\n\
             users:\n- name: rotor\n  user:\n    token: rotor-test-token\n\
             contexts:\n- name: stand-in\n  context:\n    cluster: stand-in\n    user: rotor\n    namespace: default\n\
             current-context: stand-in\n",
            self.url()
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Creates or replaces an object (`metadata.namespace` and `.name` required);
    /// returns its new resourceVersion.
    /// Slices the EndpointSlice controller manages get their Service's
    /// labels, and a Service's labels reach its slices (controller.rs).
    pub fn apply(&self, kind: Kind, mut obj: Value) -> Result<u64> {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let rv = {
            let mut st = self.lock();
            if kind == Kind::EndpointSlice {
                st.label_slice(&mut obj);
            }
            let change = st.put(kind, obj)?;
            let rv = change.rv;
            st.record(change);
            rv
        };
        if kind == Kind::Service {
            controller::service_changed(&self.state, &ns, &name);
        }
        Ok(rv)
    }

    /// Deletes an object; fails if there is none.
    pub fn delete(&self, kind: Kind, ns: &str, name: &str) -> Result<u64> {
        let mut st = self.lock();
        let Some(mut old) = st.objects.remove(&(kind, ns.to_string(), name.to_string())) else {
            bail!("no {} {ns}/{name}", kind.name());
        };
        st.index_slice(kind, Some(&old), None);
        st.rv += 1;
        let rv = st.rv;
        // A deleted object is sent with the revision of its deletion.
        old["metadata"]["resourceVersion"] = rv.to_string().into();
        st.record(Change {
            rv,
            kind,
            old: Some(old),
            new: None,
        });
        Ok(rv)
    }

    /// Ends every watch after at most `limit` (the real server ends them
    /// after timeoutSeconds, which kube-rs sets to 290 s): clients re-watch
    /// from the last revision they saw.
    pub fn set_watch_limit(&self, limit: Duration) {
        self.lock().watch_limit = Some(limit);
    }

    /// Holds (true) or releases (false) every list request: a held list
    /// gets no answer until released, as from an API server too slow to
    /// answer (after a control-plane upgrade, under load).
    pub fn hold_lists(&self, held: bool) {
        self.lock().lists_held.send_replace(held);
    }

    /// Applies `obj` while no watch is open and compacts the history up to
    /// it, as etcd compaction does: every open watch ends, and a client
    /// resuming from an older revision gets 410 Gone, so it only sees the
    /// change by listing again. Returns the new resourceVersion.
    pub fn apply_behind_compaction(&self, kind: Kind, mut obj: Value) -> Result<u64> {
        let mut st = self.lock();
        if kind == Kind::EndpointSlice {
            st.label_slice(&mut obj);
        }
        st.epoch.send_modify(|e| *e += 1);
        let rv = st.put(kind, obj)?.rv;
        st.compacted = rv;
        st.history.clear();
        Ok(rv)
    }

    /// The object as stored (with its resourceVersion), for read-modify-apply.
    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(kind, ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Every stored object of `kind` (the Events the agent posted).
    pub fn list(&self, kind: Kind) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every request so far: `METHOD path?query`, in order.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// Open watch requests served so far of `kind` (counts requests, not live streams).
    pub fn watches(&self, kind: Kind) -> usize {
        let path = match kind {
            Kind::Service => "/services?",
            Kind::EndpointSlice => "/endpointslices?",
            Kind::Event => "/events?",
        };
        self.requests()
            .iter()
            .filter(|r| r.contains(path) && r.contains("watch=true"))
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Stores `obj` under a new revision (not yet recorded for watches).
    fn put(&mut self, kind: Kind, mut obj: Value) -> Result<Change> {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .context("metadata.namespace")?
            .to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .context("metadata.name")?
            .to_string();
        self.rv += 1;
        let rv = self.rv;
        let key = (kind, ns, name);
        let old = self.objects.get(&key).cloned();
        obj["kind"] = kind.name().into();
        obj["apiVersion"] = kind.api_version().into();
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        let uid = old.as_ref().map_or_else(
            || format!("00000000-0000-4000-8000-{rv:012}"),
            |o| o["metadata"]["uid"].as_str().unwrap_or("").to_string(),
        );
        obj["metadata"]["uid"] = uid.into();
        obj["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z".into();
        self.index_slice(kind, old.as_ref(), Some(&obj));
        self.objects.insert(key, obj.clone());
        Ok(Change {
            rv,
            kind,
            old,
            new: Some(obj),
        })
    }

    /// Keeps `slices_of` up to date with a slice going from `old` to `new`.
    fn index_slice(&mut self, kind: Kind, old: Option<&Value>, new: Option<&Value>) {
        if kind != Kind::EndpointSlice {
            return;
        }
        let owner = |v: &Value| -> Option<((String, String), String)> {
            let m = &v["metadata"];
            Some((
                (
                    m["namespace"].as_str()?.to_string(),
                    m["labels"][controller::SERVICE_NAME].as_str()?.to_string(),
                ),
                m["name"].as_str()?.to_string(),
            ))
        };
        if let Some((svc, name)) = old.and_then(owner) {
            if let Some(set) = self.slices_of.get_mut(&svc) {
                set.remove(&name);
            }
        }
        if let Some((svc, name)) = new.and_then(owner) {
            self.slices_of.entry(svc).or_default().insert(name);
        }
    }

    fn record(&mut self, change: Change) {
        self.history.push(change.clone());
        let _ = self.changes.send(change);
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Server = (SocketAddr, oneshot::Sender<()>, std::thread::JoinHandle<()>);

/// A server thread on 127.0.0.1:`port` (0: any) of `netns`; its runtime,
/// and every connection with it, ends when `stop` is sent.
fn listen(
    state: Arc<Mutex<State>>,
    netns: Option<std::path::PathBuf>,
    port: u16,
) -> Result<Server> {
    let (stop, stopped) = oneshot::channel();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("kube-api".into())
        .spawn(move || {
            let listener = netns.as_deref().map_or(Ok(()), enter_netns).and_then(|()| {
                // std sets SO_REUSEADDR: the port of a paused server binds again at once.
                let l = std::net::TcpListener::bind(("127.0.0.1", port))
                    .with_context(|| format!("binding 127.0.0.1:{port}"))?;
                l.set_nonblocking(true)?;
                Ok(l)
            });
            let listener = match listener {
                Ok(l) => l,
                Err(e) => {
                    let _ = bound_tx.send(Err(e));
                    return;
                }
            };
            let _ = bound_tx.send(listener.local_addr().map_err(anyhow::Error::from));
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return eprintln!("kube-api: runtime: {e}"),
            };
            rt.block_on(serve(listener, state, stopped));
        })?;
    let addr = bound_rx.recv().context("kube-api thread died")??;
    Ok((addr, stop, thread))
}

fn enter_netns(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a valid namespace fd; it changes only this thread's namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setns {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
