//! This node's Node object, watched alone (`fieldSelector=metadata.name=`),
//! for its zone label: the zone hints of EndpointSlices are read against it
//! (translate/topology.rs), as kube-proxy reads them against its node's.
//! A label changes rarely (a node relabelled, a cloud's zone written after
//! the kubelet registered): each change recomputes every Service.

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};

/// The label kube-proxy and the EndpointSlice controller read a node's zone from.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

pub(super) type NodeEvents = BoxStream<'static, Result<watcher::Event<Node>, watcher::Error>>;

/// The watch of the Node named `name`, each object cut to its zone label.
pub(super) fn watch(client: Client, name: &str) -> NodeEvents {
    watcher(
        Api::<Node>::all(client),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .modify(|n: &mut Node| {
        n.managed_fields_mut().clear();
        n.annotations_mut().clear();
        n.labels_mut().retain(|k, _| k == ZONE_LABEL);
        n.spec = None;
        n.status = None;
    })
    .boxed()
}

/// The zone a Node is in, if labelled.
pub(super) fn zone_of(node: &Node) -> Option<String> {
    node.labels()
        .get(ZONE_LABEL)
        .filter(|z| !z.is_empty())
        .cloned()
}

/// Whether the API server refused to show the Node (no RBAC for nodes,
/// as with a ClusterRole from before this watch): the agent then balances
/// without topology rather than waiting for a list that will never come.
pub(super) fn refused(e: &watcher::Error) -> bool {
    let status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s,
        watcher::Error::WatchError(s) => s,
        _ => return false,
    };
    status.is_forbidden()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_from_the_label_and_none_when_empty_or_absent() {
        let mut n = Node::default();
        assert_eq!(zone_of(&n), None);
        n.labels_mut().insert(ZONE_LABEL.into(), String::new());
        assert_eq!(zone_of(&n), None);
        n.labels_mut()
            .insert(ZONE_LABEL.into(), "eu-west-1a".into());
        assert_eq!(zone_of(&n).as_deref(), Some("eu-west-1a"));
    }
}
