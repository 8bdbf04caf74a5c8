//! Kubernetes Events on a Service whose `rotor.dev/balance` value names no
//! policy: the user who labelled it sees why it is not balanced in
//! `kubectl describe service` (and `kubectl events`), not only in the
//! agent's log.
//!
//! Once per (Service, value): the Service's relists and unrelated changes
//! post nothing more. The Event's name is derived from the Service's uid
//! and the value, so every agent of the DaemonSet creates the same one and
//! the API server keeps the first (the others get 409 AlreadyExists,
//! taken as done): one Event per cluster, not one per node.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use super::{error_chain, BALANCE_LABEL};
use crate::model::Policy;

/// `reportingController` of the Events rotor posts.
pub const REPORTING_CONTROLLER: &str = "rotor.dev/agent";
/// `reason` of the Event for a value that names no policy.
pub const REASON_NO_POLICY: &str = "UnknownBalancePolicy";

/// Posts the Events; remembers which it posted (or saw posted).
pub(super) struct PolicyEvents {
    client: Client,
    /// Who reports: the node name, else the host name.
    instance: String,
    /// (uid, value) posted, or being posted.
    posted: HashSet<(String, String)>,
    failed: tokio::sync::mpsc::UnboundedSender<(String, String)>,
    failures: tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
}

impl PolicyEvents {
    pub(super) fn new(client: Client, instance: String) -> Self {
        let (failed, failures) = tokio::sync::mpsc::unbounded_channel();
        PolicyEvents {
            client,
            instance,
            posted: HashSet::new(),
            failed,
            failures,
        }
    }

    /// A labelled Service as the watch delivered it: an Event if its value
    /// names no policy and none was posted for this value yet. The POST
    /// runs beside the watch loop; one that failed (RBAC, the API server
    /// away) is tried again at the Service's next event.
    pub(super) fn service_seen(&mut self, svc: &Service) {
        while let Ok(key) = self.failures.try_recv() {
            self.posted.remove(&key);
        }
        let Some(event) = no_policy_event(svc, &self.instance) else {
            return;
        };
        let (Some(uid), Some(value), Some(ns)) = (
            svc.metadata.uid.clone(),
            label_value(svc).map(str::to_string),
            svc.metadata.namespace.clone(),
        ) else {
            return;
        };
        let key = (uid, value);
        if !self.posted.insert(key.clone()) {
            return;
        }
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let failed = self.failed.clone();
        tokio::spawn(async move {
            let name = event.metadata.name.clone().unwrap_or_default();
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => {
                    tracing::info!(namespace = %ns, event = %name, "Event posted on the Service: its label names no policy")
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::debug!(namespace = %ns, event = %name, "Event already posted (by another agent)")
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns, event = %name, error = %error_chain(&e), "posting an Event on the Service (needs create on events.k8s.io events)");
                    let _ = failed.send(key);
                }
            }
        });
    }
}

fn label_value(svc: &Service) -> Option<&str> {
    svc.metadata
        .labels
        .as_ref()?
        .get(BALANCE_LABEL)
        .map(String::as_str)
}

/// The Event for a labelled Service whose value names no policy; None
/// for one whose value names a policy, or without a name or uid.
pub fn no_policy_event(svc: &Service, instance: &str) -> Option<Event> {
    let value = label_value(svc)?;
    if Policy::from_name(value).is_some() {
        return None;
    }
    let m = &svc.metadata;
    let (ns, name, uid) = (m.namespace.as_ref()?, m.name.as_ref()?, m.uid.as_ref()?);
    // a printable, bounded echo of an untrusted value
    let shown: String = value.chars().take(63).collect();
    Some(Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.rotor-{:016x}", fnv1a(&[uid, value]))),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(jiff_now())),
        type_: Some("Warning".into()),
        reason: Some(REASON_NO_POLICY.into()),
        action: Some("Balance".into()),
        note: Some(format!(
            "{BALANCE_LABEL}={shown:?} names no policy (accepted: {}): not balanced per request; connections keep kube-proxy's path",
            Policy::names()
        )),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(instance.chars().take(128).collect()),
        regarding: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(ns.clone()),
            name: Some(name.clone()),
            uid: Some(uid.clone()),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// FNV-1a over the parts, each followed by a 0 byte: a stable name for
/// the same (uid, value) on every node.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(value: &str, uid: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                name: Some("cart".into()),
                uid: Some(uid.into()),
                labels: Some([(BALANCE_LABEL.to_string(), value.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_value_that_names_no_policy_gets_an_event_naming_the_accepted_values() {
        let e = no_policy_event(&svc("false", "u1"), "node-a").expect("an event");
        let note = e.note.as_deref().unwrap_or("");
        assert!(
            note.contains("\"false\"") && note.contains(&Policy::names()),
            "{note}"
        );
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some(REASON_NO_POLICY));
        let r = e.regarding.expect("regarding");
        assert_eq!(
            (r.kind.as_deref(), r.name.as_deref(), r.uid.as_deref()),
            (Some("Service"), Some("cart"), Some("u1"))
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("shop"));
        for p in Policy::ALL {
            assert!(no_policy_event(&svc(p.name(), "u1"), "node-a").is_none());
        }
    }

    #[test]
    fn every_node_names_the_event_alike_and_each_value_or_service_apart() {
        let name = |v: &str, uid: &str, node: &str| {
            no_policy_event(&svc(v, uid), node)
                .and_then(|e| e.metadata.name)
                .expect("named")
        };
        assert_eq!(name("off", "u1", "node-a"), name("off", "u1", "node-b"));
        assert_ne!(name("off", "u1", "node-a"), name("false", "u1", "node-a"));
        assert_ne!(name("off", "u1", "node-a"), name("off", "u2", "node-a"));
        // the split between uid and value counts
        assert_ne!(name("ab", "u", "n"), name("b", "ua", "n"));
        assert!(name("", "u1", "n").starts_with("cart.rotor-"));
    }
}
