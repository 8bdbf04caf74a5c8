//! The stand-in over raw HTTP, as kube-rs talks to it.

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
    let _ = std::io::Read::read_to_string(
        &mut get(
            &api,
            "/apis/discovery.k8s.io/v1/endpointslices?labelSelector=kubernetes.io%2Fservice-name",
        ),
        &mut body,
    );
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
