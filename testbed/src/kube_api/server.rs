//! The stand-in's HTTP side: hyper 1 over HTTP/1.1, routing, lists, and
//! the response body type (whole, or a stream of watch lines).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::query::{namespace_of, parse_query, route, Selector};
use super::watch::{watch, Filter};
use super::State;

pub(super) async fn serve(
    listener: std::net::TcpListener,
    state: Arc<Mutex<State>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return eprintln!("kube-api: listener: {e}"),
    };
    loop {
        let sock = tokio::select! {
            _ = &mut stopped => return,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        let st = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let st = st.clone();
                async move {
                    if req.method() == http::Method::POST {
                        return Ok::<_, Infallible>(create(&st, req).await);
                    }
                    let watching = req.uri().query().is_some_and(|q| q.contains("watch=true"));
                    if !watching {
                        let mut held = st
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .lists_held
                            .subscribe();
                        let _ = held.wait_for(|h| !h).await;
                    }
                    Ok::<_, Infallible>(handle(&st, req))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                .await;
        });
    }
}

fn handle(state: &Arc<Mutex<State>>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let target = req
        .uri()
        .path_and_query()
        .map_or(path.clone(), |p| p.to_string());
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .requests
        .push(format!("{} {target}", req.method()));
    let Some(kind) = route(&path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource {path}"),
        );
    };
    if req.method() != http::Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the stand-in serves GET only",
        );
    }
    let ns = namespace_of(&path);
    let selector = match Selector::parse(query.get("labelSelector").map_or("", String::as_str)) {
        Ok(s) => s,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    let filter = Filter { kind, ns, selector };
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let since = query
            .get("resourceVersion")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1800);
        let bookmarks = query
            .get("allowWatchBookmarks")
            .is_some_and(|b| b == "true");
        return watch(
            state,
            filter,
            since,
            Duration::from_secs(timeout),
            bookmarks,
        );
    }
    let st = state.lock().unwrap_or_else(|e| e.into_inner());
    let items: Vec<Value> = st
        .objects
        .values()
        .filter(|o| filter.matches(o))
        .map(|o| {
            // Real list items carry no kind/apiVersion.
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    let list = json!({
        "kind": format!("{}List", kind.name()),
        "apiVersion": kind.api_version(),
        "metadata": {"resourceVersion": st.rv.to_string()},
        "items": items,
    });
    json_response(StatusCode::OK, &list)
}

/// A POST that creates an object, as the real API server answers one: 201
/// with the object as stored, 409 AlreadyExists for a name taken, 400 for
/// a body that is not the kind of the path or names another namespace.
/// Only Events are created this way (the tests apply the rest).
async fn create(state: &Arc<Mutex<State>>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    use http_body_util::BodyExt;
    let path = req.uri().path().to_string();
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .requests
        .push(format!("POST {path}"));
    let (Some(kind), Some(ns)) = (route(&path), namespace_of(&path)) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource {path}"),
        );
    };
    if kind != super::Kind::Event {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the stand-in creates Events only",
        );
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let mut obj: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    if obj["kind"] != kind.name() || obj["apiVersion"] != kind.api_version() {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not an events.k8s.io/v1 Event",
        );
    }
    match obj["metadata"]["namespace"].as_str() {
        None => obj["metadata"]["namespace"] = ns.clone().into(),
        Some(n) if n == ns => {}
        Some(_) => return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        ),
    }
    // what the real server's validation of events.k8s.io/v1 insists on
    for field in [
        "eventTime",
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        if obj[field].as_str().is_none_or(str::is_empty) {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                &format!("Event is invalid: {field}: Required value"),
            );
        }
    }
    let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "metadata.name: Required value",
        );
    };
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    if st.objects.contains_key(&(kind, ns.clone(), name.clone())) {
        let mut resp = status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("events.events.k8s.io \"{name}\" already exists"),
        );
        *resp.status_mut() = StatusCode::CONFLICT;
        return resp;
    }
    match st.put(kind, obj) {
        Ok(change) => {
            let stored = change.new.clone().unwrap_or_default();
            st.record(change);
            json_response(StatusCode::CREATED, &stored)
        }
        Err(e) => status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let v = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    json_response(code, &v)
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::Full(Some(Bytes::from(v.to_string()))));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A whole body, or a stream of watch lines.
pub(super) enum Body {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(http_body::Frame::data(b)))),
            Body::Stream(rx) => rx
                .poll_recv(cx)
                .map(|o| o.map(|b| Ok(http_body::Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    /// Exact for a whole body, so hyper sends content-length (watches are chunked).
    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Body::Full(b) => {
                http_body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            Body::Stream(_) => http_body::SizeHint::default(),
        }
    }
}
