//! What the EndpointSlice controller does with a Service's labels, played
//! by the stand-in (kubernetes/endpointslice, utils.go
//! `setEndpointSliceLabels` and reconciler.go `reconcileByPortMapping`):
//! the slices it manages carry the Service's labels, except the reserved
//! ones (`kubernetes.io/service-name`, `endpointslice.kubernetes.io/managed-by`,
//! `service.kubernetes.io/headless`), which it sets itself; when the
//! Service's labels change, it rewrites its existing slices with the new
//! ones (one update per slice, a moment later: [`KubeApi::set_controller_delay`]).
//! It manages the slices of Services with a selector only; slices other
//! writers made (another `managed-by`, or none) are left as they are.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};

use super::{Kind, KubeApi, State};

pub(super) const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub(super) const CONTROLLER: &str = "endpointslice-controller.k8s.io";
pub(super) const SERVICE_NAME: &str = "kubernetes.io/service-name";
const HEADLESS: &str = "service.kubernetes.io/headless";

fn reserved(key: &str) -> bool {
    key == SERVICE_NAME || key == MANAGED_BY || key == HEADLESS
}

pub(super) fn managed(slice: &Value) -> bool {
    slice["metadata"]["labels"][MANAGED_BY] == CONTROLLER
}

fn has_selector(svc: &Value) -> bool {
    svc["spec"]["selector"]
        .as_object()
        .is_some_and(|s| !s.is_empty())
}

/// The labels the controller gives a slice of `svc`: the Service's, minus
/// the reserved ones, then those (`setEndpointSliceLabels`).
fn slice_labels(svc: &Value, slice: &Value) -> Value {
    let mut labels: Map<String, Value> = svc["metadata"]["labels"]
        .as_object()
        .map(|l| {
            l.iter()
                .filter(|(k, _)| !reserved(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let headless = svc["spec"]["clusterIP"] == "None";
    if headless {
        labels.insert(HEADLESS.into(), "".into());
    }
    labels.insert(
        SERVICE_NAME.into(),
        slice["metadata"]["labels"][SERVICE_NAME].clone(),
    );
    labels.insert(MANAGED_BY.into(), CONTROLLER.into());
    Value::Object(labels)
}

impl State {
    /// A managed slice as the controller writes it: with its Service's
    /// labels, if the Service exists and has a selector.
    pub(super) fn label_slice(&self, slice: &mut Value) {
        if !managed(slice) {
            return;
        }
        let (Some(ns), Some(svc)) = (
            slice["metadata"]["namespace"].as_str(),
            slice["metadata"]["labels"][SERVICE_NAME].as_str(),
        ) else {
            return;
        };
        let key = (Kind::Service, ns.to_string(), svc.to_string());
        if let Some(svc) = self.objects.get(&key).filter(|s| has_selector(s)) {
            slice["metadata"]["labels"] = slice_labels(svc, slice);
        }
    }

    /// Rewrites the managed slices of Service `ns/name` whose labels differ
    /// from the Service's (one change each, as the controller's updates).
    pub(super) fn relabel_slices(&mut self, ns: &str, name: &str) {
        let Some(svc) = self
            .objects
            .get(&(Kind::Service, ns.to_string(), name.to_string()))
            .filter(|s| has_selector(s))
            .cloned()
        else {
            return;
        };
        let names: Vec<String> = self
            .slices_of
            .get(&(ns.to_string(), name.to_string()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for slice_name in names {
            let key = (Kind::EndpointSlice, ns.to_string(), slice_name);
            let Some(slice) = self.objects.get(&key).filter(|s| managed(s)) else {
                continue;
            };
            let labels = slice_labels(&svc, slice);
            if slice["metadata"]["labels"] == labels {
                continue;
            }
            let mut slice = slice.clone();
            slice["metadata"]["labels"] = labels;
            if let Ok(change) = self.put(Kind::EndpointSlice, slice) {
                self.record(change);
            }
        }
    }
}

impl KubeApi {
    /// How long the controller takes to copy a Service's new labels onto
    /// its slices (0 by default: in the same step). In a cluster it is the
    /// controller's queue and its API round trip; a Service labelled
    /// `rotor.dev/balance` has no slices in rotor's view meanwhile.
    pub fn set_controller_delay(&self, delay: Duration) {
        self.lock().controller_delay = delay;
    }
}

/// The controller's reaction to a Service change: now, or after its delay.
pub(super) fn service_changed(state: &Arc<Mutex<State>>, ns: &str, name: &str) {
    let delay = state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .controller_delay;
    if delay.is_zero() {
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .relabel_slices(ns, name);
        return;
    }
    let (state, ns, name) = (state.clone(), ns.to_string(), name.to_string());
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .relabel_slices(&ns, &name);
    });
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;
    use crate::kube_api::{endpoint_slice, service, EndpointState};

    #[test]
    fn service_labels_reach_managed_slices_only() {
        let api = KubeApi::start().expect("stand-in");
        let vip = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 80);
        api.apply(Kind::Service, service("default", "echo", &[], vip, ""))
            .expect("Service");
        let eps = [(Ipv4Addr::new(10, 1, 1, 2), EndpointState::Ready)];
        api.apply(
            Kind::EndpointSlice,
            endpoint_slice("default", "echo-x1", "echo", "", 80, &eps),
        )
        .expect("slice");
        let mut own = endpoint_slice("default", "echo-own", "echo", "", 80, &eps);
        own["metadata"]["labels"][MANAGED_BY] = "someone-else".into();
        api.apply(Kind::EndpointSlice, own)
            .expect("hand-made slice");
        let mut svc = api.get(Kind::Service, "default", "echo").expect("svc");
        svc["metadata"]["labels"]["rotor.dev/balance"] = "".into();
        svc["metadata"]["labels"][SERVICE_NAME] = "spoofed".into();
        api.apply(Kind::Service, svc).expect("labelled");
        let slice = api
            .get(Kind::EndpointSlice, "default", "echo-x1")
            .expect("slice");
        let labels = &slice["metadata"]["labels"];
        assert_eq!(labels["rotor.dev/balance"], "", "{slice}");
        assert_eq!(labels[SERVICE_NAME], "echo", "reserved label kept: {slice}");
        let own = api
            .get(Kind::EndpointSlice, "default", "echo-own")
            .expect("own");
        assert!(own["metadata"]["labels"]["rotor.dev/balance"].is_null());
    }
}
