//! JSON for the objects the stand-in serves, shaped as the API server
//! returns them (kind, apiVersion and resourceVersion are set by
//! [`KubeApi::apply`](super::KubeApi::apply)).

use std::net::{Ipv4Addr, SocketAddrV4};

use serde_json::{json, Map, Value};

/// A `ClusterIP` Service `ns/name` with one TCP port `port_name` (`""`: unnamed)
/// at `vip`, targeting the same port number, with `labels`.
pub fn service(
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    vip: SocketAddrV4,
    port_name: &str,
) -> Value {
    let mut port = json!({"port": vip.port(), "protocol": "TCP", "targetPort": vip.port()});
    if !port_name.is_empty() {
        port["name"] = port_name.into();
    }
    json!({
        "metadata": {"namespace": ns, "name": name, "labels": label_map(labels)},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": vip.ip().to_string(),
            "clusterIPs": [vip.ip().to_string()],
            "ipFamilies": ["IPv4"],
            "ports": [port],
            "selector": {"app": name},
        },
        "status": {"loadBalancer": {}},
    })
}

/// Conditions of one endpoint in a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    Ready,
    NotReady,
    /// Pod being deleted: not ready, still serving its in-flight requests.
    Terminating,
}

/// An IPv4 EndpointSlice `name` of Service `ns/service` with one TCP port
/// `port_name` = `port` and these endpoints, as the EndpointSlice controller writes it.
pub fn endpoint_slice(
    ns: &str,
    name: &str,
    service: &str,
    port_name: &str,
    port: u16,
    endpoints: &[(Ipv4Addr, EndpointState)],
) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .enumerate()
        .map(|(i, (ip, state))| {
            let (ready, serving, terminating) = match state {
                EndpointState::Ready => (true, true, false),
                EndpointState::NotReady => (false, false, false),
                EndpointState::Terminating => (false, true, true),
            };
            json!({
                "addresses": [ip.to_string()],
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                "nodeName": "node-1",
                "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("{service}-{i}")},
            })
        })
        .collect();
    json!({
        "metadata": {
            "namespace": ns,
            "name": name,
            "labels": label_map(&[
                ("kubernetes.io/service-name", service),
                ("endpointslice.kubernetes.io/managed-by", "endpointslice-controller.k8s.io"),
            ]),
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service, "uid": "0", "controller": true}],
        },
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    })
}

/// A Node `name` with `labels` (`topology.kubernetes.io/zone`, ...), as
/// the kubelet registers it (what the agent reads of it: its labels).
pub fn node(name: &str, labels: &[(&str, &str)]) -> Value {
    json!({
        "metadata": {"name": name, "labels": label_map(labels)},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    })
}

fn label_map(labels: &[(&str, &str)]) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect::<Map<String, Value>>(),
    )
}
