//! Topology hints: which of a Service's ready endpoints this node uses, by
//! the rule kube-proxy applies (`topologyModeFromHints`, Kubernetes 1.33).
//!
//! The EndpointSlice controller writes the hints when a Service asks for
//! them (`trafficDistribution: PreferClose` or `PreferSameZone`: each
//! endpoint hinted for its own zone; `PreferSameNode`: for its own node;
//! the `service.kubernetes.io/topology-mode: Auto` annotation: zones
//! weighted by their CPUs). The proxy reads only the hints, never the
//! Service's field, and uses them all or not at all: a node whose zone no
//! endpoint is hinted for, or a slice where one ready endpoint has no hint
//! (the controller is rewriting it, or a hand-made slice), gets every ready
//! endpoint. Were rotor to narrow where kube-proxy does not, a connection
//! would reach other pods through rotor than around it.

use k8s_openapi::api::discovery::v1::Endpoint;

use super::NodeInfo;

/// Where this node's calls go among the ready endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Near {
    /// No hint applies: every ready endpoint.
    Anywhere,
    /// Those hinted for this node's zone.
    SameZone,
    /// Those hinted for this node (`PreferSameNode`).
    SameNode,
}

impl Near {
    /// The mode for these endpoints as seen from `node`; `ready` says which
    /// count (hints of endpoints that are not ready are never looked at).
    pub(super) fn of<'a>(
        endpoints: impl IntoIterator<Item = &'a Endpoint>,
        ready: impl Fn(&Endpoint) -> bool,
        node: &NodeInfo,
    ) -> Near {
        let (mut any_ready, mut all_nodes, mut all_zones) = (false, true, true);
        let (mut for_node, mut for_zone) = (false, false);
        for ep in endpoints.into_iter().filter(|ep| ready(ep)) {
            any_ready = true;
            let nodes = node_hints(ep);
            if nodes.is_empty() {
                all_nodes = false;
            } else if node.name.as_deref().is_some_and(|n| nodes.contains(&n)) {
                for_node = true;
            }
            let zones = zone_hints(ep);
            if zones.is_empty() {
                all_zones = false;
            } else if node.zone.as_deref().is_some_and(|z| zones.contains(&z)) {
                for_zone = true;
            }
        }
        if !any_ready {
            Near::Anywhere
        } else if all_nodes && for_node {
            Near::SameNode
        } else if all_zones && for_zone {
            Near::SameZone
        } else {
            Near::Anywhere
        }
    }

    /// Whether `ep` is one this node sends calls to in this mode.
    pub(super) fn admits(self, ep: &Endpoint, node: &NodeInfo) -> bool {
        match self {
            Near::Anywhere => true,
            Near::SameZone => node
                .zone
                .as_deref()
                .is_some_and(|z| zone_hints(ep).contains(&z)),
            Near::SameNode => node
                .name
                .as_deref()
                .is_some_and(|n| node_hints(ep).contains(&n)),
        }
    }
}

fn zone_hints(ep: &Endpoint) -> Vec<&str> {
    ep.hints
        .iter()
        .flat_map(|h| h.for_zones.iter().flatten())
        .map(|z| z.name.as_str())
        .collect()
}

fn node_hints(ep: &Endpoint) -> Vec<&str> {
    ep.hints
        .iter()
        .flat_map(|h| h.for_nodes.iter().flatten())
        .map(|n| n.name.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{EndpointHints, ForNode, ForZone};

    fn ep(ready: bool, zones: &[&str], nodes: &[&str]) -> Endpoint {
        let hints = (!zones.is_empty() || !nodes.is_empty()).then(|| EndpointHints {
            for_zones: (!zones.is_empty()).then(|| {
                zones
                    .iter()
                    .map(|z| ForZone {
                        name: z.to_string(),
                    })
                    .collect()
            }),
            for_nodes: (!nodes.is_empty()).then(|| {
                nodes
                    .iter()
                    .map(|n| ForNode {
                        name: n.to_string(),
                    })
                    .collect()
            }),
        });
        Endpoint {
            conditions: Some(k8s_openapi::api::discovery::v1::EndpointConditions {
                ready: Some(ready),
                ..Default::default()
            }),
            hints,
            ..Default::default()
        }
    }

    fn is_ready(e: &Endpoint) -> bool {
        e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
    }

    fn node(name: &str, zone: &str) -> NodeInfo {
        NodeInfo {
            name: Some(name.into()),
            zone: Some(zone.into()),
        }
    }

    #[test]
    fn every_ready_endpoint_hinted_and_one_for_this_zone_narrows_to_the_zone() {
        let eps = [
            ep(true, &["a"], &[]),
            ep(true, &["b"], &[]),
            ep(true, &["b"], &[]),
        ];
        let here = node("n1", "a");
        let near = Near::of(&eps, is_ready, &here);
        assert_eq!(near, Near::SameZone);
        let admitted: Vec<bool> = eps.iter().map(|e| near.admits(e, &here)).collect();
        assert_eq!(admitted, [true, false, false]);
        // The other zone's node gets the other two.
        let there = node("n2", "b");
        let near = Near::of(&eps, is_ready, &there);
        let admitted: Vec<bool> = eps.iter().map(|e| near.admits(e, &there)).collect();
        assert_eq!(admitted, [false, true, true]);
    }

    #[test]
    fn hints_are_used_all_or_not_at_all() {
        // One ready endpoint without a hint: every endpoint, as kube-proxy.
        let eps = [ep(true, &["a"], &[]), ep(true, &[], &[])];
        assert_eq!(Near::of(&eps, is_ready, &node("n", "a")), Near::Anywhere);
        // No endpoint hinted for this zone: every endpoint, not none.
        let eps = [ep(true, &["b"], &[]), ep(true, &["c"], &[])];
        assert_eq!(Near::of(&eps, is_ready, &node("n", "a")), Near::Anywhere);
        // A node without a zone label never narrows by zone.
        let eps = [ep(true, &["a"], &[])];
        let unzoned = NodeInfo {
            name: Some("n".into()),
            zone: None,
        };
        assert_eq!(Near::of(&eps, is_ready, &unzoned), Near::Anywhere);
        // Nothing ready: nothing to narrow (the terminating fallback follows).
        let eps = [ep(false, &["a"], &[])];
        assert_eq!(Near::of(&eps, is_ready, &node("n", "a")), Near::Anywhere);
    }

    #[test]
    fn endpoints_not_ready_do_not_count_against_the_hints() {
        // The unhinted one is not ready: the hints still apply.
        let eps = [ep(true, &["a"], &[]), ep(false, &[], &[])];
        assert_eq!(Near::of(&eps, is_ready, &node("n", "a")), Near::SameZone);
    }

    #[test]
    fn node_hints_come_before_zone_hints() {
        let eps = [
            ep(true, &["a"], &["n1"]),
            ep(true, &["a"], &["n2"]),
            ep(true, &["b"], &["n3"]),
        ];
        let n1 = node("n1", "a");
        let near = Near::of(&eps, is_ready, &n1);
        assert_eq!(near, Near::SameNode);
        let admitted: Vec<bool> = eps.iter().map(|e| near.admits(e, &n1)).collect();
        assert_eq!(admitted, [true, false, false]);
        // No endpoint on n4: its zone's endpoints instead.
        let n4 = node("n4", "a");
        let near = Near::of(&eps, is_ready, &n4);
        assert_eq!(near, Near::SameZone);
        let admitted: Vec<bool> = eps.iter().map(|e| near.admits(e, &n4)).collect();
        assert_eq!(admitted, [true, true, false]);
    }
}
