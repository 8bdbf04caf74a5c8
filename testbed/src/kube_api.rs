//! `KubeApi`: a stand-in for kube-apiserver that serves Services and
//! EndpointSlices over the list/watch wire protocol kube-rs uses, so the
//! agent's Kubernetes source runs against real HTTP without a cluster.
//!
//! * `GET /api/v1/services`, `/apis/discovery.k8s.io/v1/endpointslices`
//!   (and the `/namespaces/NS/` forms), with `labelSelector` (`k`, `!k`,
//!   `k=v`, `k==v`, `k!=v`, comma-separated): a `ServiceList` /
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

mod objects;
mod query;
mod server;
mod watch;

pub use objects::{endpoint_slice, service, EndpointState};
use server::serve;

/// The two kinds the agent watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Service,
    EndpointSlice,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::Service => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
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
}

/// A running stand-in. Dropping it stops the server and closes every watch.
#[derive(Debug)]
pub struct KubeApi {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
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
        }));
        let (stop, stopped) = oneshot::channel();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("kube-api".into())
            .spawn(move || {
                let listener = netns.as_deref().map_or(Ok(()), enter_netns).and_then(|()| {
                    let l = std::net::TcpListener::bind("127.0.0.1:0")
                        .context("binding 127.0.0.1:0")?;
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
                rt.block_on(serve(listener, st, stopped));
            })?;
        let addr = bound_rx.recv().context("kube-api thread died")??;
        Ok(KubeApi {
            state,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
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
    pub fn apply(&self, kind: Kind, obj: Value) -> Result<u64> {
        let mut st = self.lock();
        let change = st.put(kind, obj)?;
        let rv = change.rv;
        st.record(change);
        Ok(rv)
    }

    /// Deletes an object; fails if there is none.
    pub fn delete(&self, kind: Kind, ns: &str, name: &str) -> Result<u64> {
        let mut st = self.lock();
        let Some(mut old) = st.objects.remove(&(kind, ns.to_string(), name.to_string())) else {
            bail!("no {} {ns}/{name}", kind.name());
        };
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
    pub fn apply_behind_compaction(&self, kind: Kind, obj: Value) -> Result<u64> {
        let mut st = self.lock();
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

    /// Every request so far: `METHOD path?query`, in order.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// Open watch requests served so far of `kind` (counts requests, not live streams).
    pub fn watches(&self, kind: Kind) -> usize {
        let path = match kind {
            Kind::Service => "/services?",
            Kind::EndpointSlice => "/endpointslices?",
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
        self.objects.insert(key, obj.clone());
        Ok(Change {
            rv,
            kind,
            old,
            new: Some(obj),
        })
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
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};

    use super::*;

    const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 8080);

    /// Sends a GET and returns the reader positioned at the body (chunked for watches).
    fn get(api: &KubeApi, target: &str) -> BufReader<TcpStream> {
        let mut s = TcpStream::connect(api.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            s,
            "GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .expect("write");
        let mut r = BufReader::new(s);
        let mut line = String::new();
        while r.read_line(&mut line).expect("head") > 2 {
            line.clear();
        }
        r
    }

    /// The next JSON line of a chunked body (skipping chunk-size lines).
    fn next_json(r: &mut BufReader<TcpStream>) -> Value {
        loop {
            let mut line = String::new();
            assert!(r.read_line(&mut line).expect("body") > 0, "body ended");
            if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                if v.is_object() {
                    return v;
                }
            }
        }
    }

    #[test]
    fn list_then_watch_from_its_revision() {
        let api = KubeApi::start().expect("stand-in");
        let labels = [("rotor.dev/balance", "round-robin")];
        api.apply(
            Kind::Service,
            service("default", "echo", &labels, VIP, "h2c"),
        )
        .expect("apply");
        api.apply(
            Kind::Service,
            service(
                "default",
                "plain",
                &[],
                SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 11), 80),
                "",
            ),
        )
        .expect("apply");
        let mut r = get(
            &api,
            "/api/v1/services?labelSelector=rotor.dev%2Fbalance&limit=500",
        );
        let mut body = String::new();
        let _ = std::io::Read::read_to_string(&mut r, &mut body);
        let list: Value = serde_json::from_str(body.trim()).expect("list JSON");
        assert_eq!(list["kind"], "ServiceList");
        assert_eq!(list["apiVersion"], "v1");
        assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
        assert_eq!(list["items"][0]["metadata"]["name"], "echo");
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .expect("list resourceVersion")
            .to_string();

        let mut w = get(&api, &format!("/api/v1/services?watch=true&labelSelector=rotor.dev%2Fbalance&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=10"));
        let mut svc = api.get(Kind::Service, "default", "echo").expect("stored");
        svc["spec"]["ports"][0]["port"] = 9090.into();
        api.apply(Kind::Service, svc.clone()).expect("modify");
        let ev = next_json(&mut w);
        assert_eq!(
            (
                ev["type"].as_str(),
                ev["object"]["spec"]["ports"][0]["port"].as_u64()
            ),
            (Some("MODIFIED"), Some(9090)),
            "{ev}"
        );
        assert_eq!(ev["object"]["kind"], "Service");
        // Dropping the label takes the Service out of this watch's selection.
        svc["metadata"]["labels"] = serde_json::json!({});
        let dropped = api.apply(Kind::Service, svc).expect("unlabel");
        let ev = next_json(&mut w);
        assert_eq!(ev["type"], "DELETED", "{ev}");
        let ev = next_json(&mut w);
        assert_eq!(ev["type"], "BOOKMARK", "{ev}");
        assert_eq!(
            ev["object"]["metadata"]["resourceVersion"],
            dropped.to_string()
        );
        assert!(
            api.requests().iter().any(|r| r.contains("watch=true")),
            "{:?}",
            api.requests()
        );
    }

    #[test]
    fn a_revision_older_than_the_compaction_is_gone() {
        let api = KubeApi::start().expect("stand-in");
        let old = api
            .apply(Kind::Service, service("default", "echo", &[], VIP, ""))
            .expect("apply");
        let mut open = get(
            &api,
            &format!("/api/v1/services?watch=true&resourceVersion={old}"),
        );
        let mut svc = api.get(Kind::Service, "default", "echo").expect("stored");
        svc["spec"]["ports"][0]["port"] = 9090.into();
        let new = api
            .apply_behind_compaction(Kind::Service, svc)
            .expect("compacted change");
        // The open watch ends without the change.
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut open, &mut rest);
        assert!(!rest.contains("MODIFIED"), "{rest}");
        let ev = next_json(&mut get(
            &api,
            &format!("/api/v1/services?watch=true&resourceVersion={old}"),
        ));
        assert_eq!(
            (ev["type"].as_str(), ev["object"]["code"].as_u64()),
            (Some("ERROR"), Some(410)),
            "{ev}"
        );
        assert_eq!(ev["object"]["reason"], "Expired");
        // From the compacted revision on, watching works again.
        let mut w = get(
            &api,
            &format!("/api/v1/services?watch=true&resourceVersion={new}&allowWatchBookmarks=true"),
        );
        assert_eq!(next_json(&mut w)["type"], "BOOKMARK");
    }

    #[test]
    fn slices_list_with_their_kind_and_unknown_paths_get_a_status() {
        let api = KubeApi::start().expect("stand-in");
        let eps = [
            (Ipv4Addr::new(10, 1, 1, 2), EndpointState::Ready),
            (Ipv4Addr::new(10, 1, 2, 2), EndpointState::NotReady),
        ];
        api.apply(
            Kind::EndpointSlice,
            endpoint_slice("default", "echo-x1", "echo", "h2c", 8080, &eps),
        )
        .expect("apply");
        let mut body = String::new();
        let _ = std::io::Read::read_to_string(&mut get(&api, "/apis/discovery.k8s.io/v1/endpointslices?labelSelector=kubernetes.io%2Fservice-name"), &mut body);
        let list: Value = serde_json::from_str(body.trim()).expect("list JSON");
        assert_eq!(
            (list["kind"].as_str(), list["apiVersion"].as_str()),
            (Some("EndpointSliceList"), Some("discovery.k8s.io/v1"))
        );
        assert_eq!(
            list["items"][0]["endpoints"][1]["conditions"]["ready"],
            false
        );
        let mut body = String::new();
        let _ = std::io::Read::read_to_string(&mut get(&api, "/api/v1/pods"), &mut body);
        assert!(body.contains("\"code\":404"), "{body}");
    }
}
