//! The index against `model_from` over the same objects, after seeded
//! random sequences of watch events: Services and slices added, modified
//! (endpoints, ports, ClusterIP, selector, the label added or removed) and
//! deleted, relists, and the deltas applied as the agent applies them.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec as K8sServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::model::kube::{model_from, BALANCE_LABEL, SERVICE_NAME_LABEL};

/// splitmix64: a seeded sequence without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const NAMESPACES: [&str; 2] = ["default", "prod"];
const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

fn meta(ns: &str, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn random_service(rng: &mut Rng) -> Service {
    let ns = NAMESPACES[rng.below(2) as usize];
    let name = NAMES[rng.below(NAMES.len() as u64) as usize];
    // The label's value is the policy; "false" opts nothing in.
    let value = ["round-robin", "least-request", "false"][rng.below(3) as usize];
    let labels: &[(&str, &str)] = if rng.chance(75) {
        &[(BALANCE_LABEL, value)]
    } else {
        &[("app", "x")]
    };
    // Few addresses, so that two Services sometimes claim one.
    let ip = format!("10.96.0.{}", 1 + rng.below(6));
    let ports: Vec<ServicePort> = (0..1 + rng.below(3))
        .map(|_| ServicePort {
            name: Some(["", "h2c", "grpc"][rng.below(3) as usize].to_string()),
            port: [80, 8080, 8080, 9090][rng.below(4) as usize],
            protocol: rng.chance(90).then(|| "TCP".into()),
            ..Default::default()
        })
        .collect();
    let selector = rng
        .chance(70)
        .then(|| [("app".to_string(), name.to_string())].into());
    Service {
        metadata: meta(ns, name, labels),
        spec: Some(K8sServiceSpec {
            cluster_ip: Some(ip.clone()),
            cluster_ips: Some(vec![ip]),
            ports: Some(ports),
            selector,
            ..Default::default()
        }),
        status: None,
    }
}

fn random_slice(rng: &mut Rng) -> EndpointSlice {
    let ns = NAMESPACES[rng.below(2) as usize];
    let owner = NAMES[rng.below(NAMES.len() as u64) as usize];
    let name = format!("{owner}-{}", rng.below(3));
    let endpoints = (0..rng.below(4))
        .map(|_| Endpoint {
            addresses: vec![format!("10.1.0.{}", 1 + rng.below(8))],
            conditions: Some(EndpointConditions {
                ready: [None, Some(true), Some(false)][rng.below(3) as usize],
                serving: None,
                terminating: rng.chance(10).then_some(true),
            }),
            ..Default::default()
        })
        .collect();
    let ports = (0..1 + rng.below(2))
        .map(|_| EndpointPort {
            name: Some(["", "h2c", "grpc"][rng.below(3) as usize].to_string()),
            port: Some([8080, 9000][rng.below(2) as usize]),
            protocol: Some("TCP".into()),
            app_protocol: None,
        })
        .collect();
    // The slice's own name says which Service it started with; its label
    // may name another (a slice is re-pointed by whoever writes it).
    let named = if rng.chance(85) {
        owner
    } else {
        NAMES[rng.below(NAMES.len() as u64) as usize]
    };
    EndpointSlice {
        metadata: meta(ns, &name, &[(SERVICE_NAME_LABEL, named)]),
        address_type: if rng.chance(90) { "IPv4" } else { "IPv6" }.into(),
        endpoints,
        ports: Some(ports),
    }
}

type ObjKey = (String, String);

fn key(m: &ObjectMeta) -> ObjKey {
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

/// What the watches would hold: the Services watch keeps labelled ones only.
#[derive(Default)]
struct Stores {
    services: HashMap<ObjKey, Service>,
    slices: HashMap<(SliceSource, String, String), EndpointSlice>,
}

impl Stores {
    fn model(&self) -> Model {
        model_from(self.services.values(), self.slices.values())
    }
}

/// The agent's side: a model by spec name, deltas applied in order.
fn apply_delta(model: &mut BTreeMap<String, ServiceSpec>, delta: &Delta) {
    for r in &delta.removed {
        let held = model.get(&r.name);
        assert!(
            held.is_some_and(|s| s.vip == r.vip),
            "removed {r:?} which the agent does not hold ({held:?})"
        );
        model.remove(&r.name);
    }
    for s in &delta.set {
        assert_ne!(model.get(&s.name), Some(s), "an unchanged spec was sent");
        model.insert(s.name.clone(), s.clone());
    }
}

fn step(rng: &mut Rng, stores: &mut Stores) -> Event {
    let src = if rng.chance(70) {
        SliceSource::Labelled
    } else {
        SliceSource::Named
    };
    match rng.below(100) {
        0..=29 => {
            let svc = random_service(rng);
            let k = key(&svc.metadata);
            if labelled(&svc) {
                stores.services.insert(k, svc.clone());
                Event::Service(svc)
            } else {
                // The label went: the watch sends DELETED.
                stores.services.remove(&k);
                Event::ServiceGone(svc)
            }
        }
        30..=39 => {
            let svc = random_service(rng);
            stores.services.remove(&key(&svc.metadata));
            Event::ServiceGone(svc)
        }
        40..=74 => {
            let slice = random_slice(rng);
            let (ns, name) = key(&slice.metadata);
            stores.slices.insert((src, ns, name), slice.clone());
            Event::Slice(src, slice)
        }
        75..=89 => {
            let slice = random_slice(rng);
            let (ns, name) = key(&slice.metadata);
            stores.slices.remove(&(src, ns, name));
            Event::SliceGone(src, slice)
        }
        90..=94 => {
            // A relist: a few objects come and go behind the client's back.
            for _ in 0..rng.below(4) {
                let svc = random_service(rng);
                let k = key(&svc.metadata);
                if labelled(&svc) && rng.chance(60) {
                    stores.services.insert(k, svc);
                } else {
                    stores.services.remove(&k);
                }
            }
            Event::Services(stores.services.values().cloned().collect())
        }
        _ => {
            for _ in 0..rng.below(4) {
                let slice = random_slice(rng);
                let (ns, name) = key(&slice.metadata);
                if rng.chance(60) {
                    stores.slices.insert((src, ns, name), slice);
                } else {
                    stores.slices.remove(&(src, ns, name));
                }
            }
            let list = stores
                .slices
                .iter()
                .filter(|(k, _)| k.0 == src)
                .map(|(_, s)| s.clone())
                .collect();
            Event::Slices(src, list)
        }
    }
}

#[test]
fn same_model_as_model_from_after_random_changes() {
    for seed in 0..200u64 {
        let mut rng = Rng(seed);
        let mut stores = Stores::default();
        let mut index = Index::new();
        let mut agent = BTreeMap::new();
        for n in 0..300 {
            let event = step(&mut rng, &mut stores);
            let what = format!("{event:?}");
            let delta = index.apply(event);
            apply_delta(&mut agent, &delta);
            let want = stores.model();
            want.validate().expect("model_from is valid");
            assert_eq!(
                index.model(),
                want,
                "seed {seed}, step {n}: index differs after {what}"
            );
            let applied: Vec<ServiceSpec> = agent.values().cloned().collect();
            assert_eq!(
                applied, want.services,
                "seed {seed}, step {n}: deltas applied differ after {what}"
            );
        }
    }
}

fn labelled_service(ns: &str, name: &str, ip: &str, selector: bool) -> Service {
    Service {
        metadata: meta(ns, name, &[(BALANCE_LABEL, "round-robin")]),
        spec: Some(K8sServiceSpec {
            cluster_ip: Some(ip.into()),
            cluster_ips: Some(vec![ip.into()]),
            ports: Some(vec![ServicePort {
                port: 8080,
                ..Default::default()
            }]),
            selector: selector.then(|| [("app".to_string(), name.to_string())].into()),
            ..Default::default()
        }),
        status: None,
    }
}

fn one_endpoint_slice(ns: &str, svc: &str, ip: &str) -> EndpointSlice {
    EndpointSlice {
        metadata: meta(ns, &format!("{svc}-x"), &[(SERVICE_NAME_LABEL, svc)]),
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec![ip.into()],
            ..Default::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some(String::new()),
            port: Some(9000),
            protocol: None,
            app_protocol: None,
        }]),
    }
}

#[test]
fn a_slice_event_recomputes_its_service_only() {
    let mut index = Index::new();
    let list: Vec<Service> = (0..100)
        .map(|k| labelled_service("default", &format!("s{k}"), &format!("10.96.1.{k}"), true))
        .collect();
    let first = index.apply(Event::Services(list));
    assert_eq!((first.removed.len(), first.set.len()), (0, 100));
    let delta = index.apply(Event::Slice(
        SliceSource::Labelled,
        one_endpoint_slice("default", "s7", "10.1.0.7"),
    ));
    assert!(delta.removed.is_empty(), "{delta:?}");
    assert_eq!(delta.set.len(), 1, "{delta:?}");
    assert_eq!(delta.set[0].name, "default/s7:8080");
    assert_eq!(
        delta.set[0].endpoints,
        vec!["10.1.0.7:9000".parse().expect("addr")]
    );
    // The same slice again: nothing changed, nothing to apply.
    let again = index.apply(Event::Slice(
        SliceSource::Labelled,
        one_endpoint_slice("default", "s7", "10.1.0.7"),
    ));
    assert!(again.is_empty(), "{again:?}");
    // A slice of a Service rotor does not balance changes nothing.
    let other = index.apply(Event::Slice(
        SliceSource::Labelled,
        one_endpoint_slice("default", "unlabelled", "10.1.0.9"),
    ));
    assert!(other.is_empty(), "{other:?}");
}

#[test]
fn selectorless_names_follow_the_services() {
    let mut index = Index::new();
    index.apply(Event::Service(labelled_service(
        "default",
        "db",
        "10.96.2.1",
        false,
    )));
    index.apply(Event::Service(labelled_service(
        "prod",
        "ext",
        "10.96.2.2",
        false,
    )));
    index.apply(Event::Service(labelled_service(
        "default",
        "web",
        "10.96.2.3",
        true,
    )));
    let names: Vec<String> = index.selectorless_names().into_iter().collect();
    assert_eq!(names, ["db", "ext"]);
    index.apply(Event::ServiceGone(labelled_service(
        "default",
        "db",
        "10.96.2.1",
        false,
    )));
    // Given a selector, its slices come from the controller (labelled).
    index.apply(Event::Service(labelled_service(
        "prod",
        "ext",
        "10.96.2.2",
        true,
    )));
    assert!(index.selectorless_names().is_empty());
}
