//! Watch streams of the stand-in: the backlog after a revision, then live
//! changes, bookmarks, and the end of the stream (timeout, limit, compaction).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::query::{FieldSelector, Selector};
use super::server::Body;
use super::{Change, Kind, State};

pub(super) struct Filter {
    pub(super) kind: Kind,
    pub(super) ns: Option<String>,
    pub(super) selector: Selector,
    pub(super) fields: FieldSelector,
}

impl Filter {
    pub(super) fn matches(&self, obj: &Value) -> bool {
        obj["kind"] == self.kind.name()
            && self
                .ns
                .as_deref()
                .is_none_or(|ns| obj["metadata"]["namespace"] == ns)
            && self.selector.matches(&obj["metadata"]["labels"])
            && self.fields.matches(obj)
    }

    /// The watch event for a change, as this watch sees it (None: not visible).
    fn event(&self, c: &Change) -> Option<Value> {
        if c.kind != self.kind {
            return None;
        }
        let was = c.old.as_ref().is_some_and(|o| self.matches(o));
        let is = c.new.as_ref().is_some_and(|o| self.matches(o));
        let (kind, obj) = match (was, is, &c.new) {
            (false, true, Some(n)) => ("ADDED", n.clone()),
            (true, true, Some(n)) => ("MODIFIED", n.clone()),
            // Left the selection: the last state, as the apiserver's watch cache sends it.
            (true, false, Some(n)) => ("DELETED", n.clone()),
            (true, false, None) => ("DELETED", c.old.clone()?),
            _ => return None,
        };
        Some(json!({"type": kind, "object": obj}))
    }
}

/// How often an open watch gets a BOOKMARK (the real server: about a minute).
const BOOKMARK_EVERY: Duration = Duration::from_millis(500);

pub(super) fn watch(
    state: &Arc<Mutex<State>>,
    filter: Filter,
    since: u64,
    timeout: Duration,
    bookmarks: bool,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    // Past changes and the subscription under one lock: none is missed or sent twice.
    let (backlog, mut live, mut rv, mut epoch, timeout) = {
        let st = state.lock().unwrap_or_else(|e| e.into_inner());
        if since < st.compacted {
            // What the real server sends: 200, then one ERROR event, then the end.
            let gone = json!({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {since} ({})", st.compacted),
                "reason": "Expired", "code": 410}});
            let mut line = gone.to_string();
            line.push('\n');
            return stream_response(Body::Full(Some(Bytes::from(line))));
        }
        let backlog: Vec<Value> = st
            .history
            .iter()
            .filter(|c| c.rv > since)
            .filter_map(|c| filter.event(c))
            .collect();
        let timeout = st.watch_limit.map_or(timeout, |l| l.min(timeout));
        (
            backlog,
            st.changes.subscribe(),
            st.rv.max(since),
            st.epoch.subscribe(),
            timeout,
        )
    };
    tokio::spawn(async move {
        let send = |v: &Value| {
            let mut line = v.to_string().into_bytes();
            line.push(b'\n');
            tx.send(Bytes::from(line))
        };
        for ev in &backlog {
            if send(ev).await.is_err() {
                return;
            }
        }
        let end = tokio::time::sleep(timeout);
        tokio::pin!(end);
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut end => return,
                _ = epoch.changed() => return,
                _ = tick.tick(), if bookmarks => {
                    let ev = json!({"type": "BOOKMARK", "object": {
                        "kind": filter.kind.name(), "apiVersion": filter.kind.api_version(),
                        "metadata": {"resourceVersion": rv.to_string()}}});
                    if send(&ev).await.is_err() { return; }
                }
                c = live.recv() => match c {
                    Ok(c) => {
                        rv = c.rv;
                        if let Some(ev) = filter.event(&c) {
                            if send(&ev).await.is_err() { return; }
                        }
                    }
                    // Lagged or closed: end the watch; the client re-watches from its last revision.
                    Err(_) => return,
                },
            }
        }
    });
    stream_response(Body::Stream(rx))
}

fn stream_response(body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
