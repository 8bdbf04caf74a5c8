//! The model kept one Service at a time: a Service's event, or an event of
//! one of its EndpointSlices, recomputes that Service only (keyed
//! namespace/name), and what changed comes out as a [`Delta`]. With 5,000
//! balanced Services, recomputing the whole model (and the agent applying
//! and logging every Service) on each endpoint change was the cost of a
//! change; now it is the cost of one Service.
//!
//! The result is [`model_from`](super::model_from) over the same objects
//! (tests.rs checks it on random sequences), including its rule for two
//! Services claiming one address: the first by spec name keeps it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddrV4;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::translate::{labelled, service_name, service_specs, NodeInfo};
use crate::model::{Delta, Model, ServiceSpec};

/// A Service's namespace and name.
pub type Key = (String, String);

/// Which watch a slice came from: one slice can be in both (a hand-made
/// slice that carries our label), and leaves each on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SliceSource {
    /// Slices labelled `rotor.dev/balance` (the EndpointSlice controller
    /// copies the Service's labels onto the slices it manages).
    Labelled,
    /// Slices named by `kubernetes.io/service-name` for the labelled
    /// Services without a selector (their slices are written by hand or by
    /// another controller, and may not carry our label).
    Named,
}

type SliceKey = (SliceSource, String, String);

/// A change seen by one of the watches.
#[derive(Debug)]
pub enum Event {
    Service(Service),
    ServiceGone(Service),
    Slice(SliceSource, EndpointSlice),
    SliceGone(SliceSource, EndpointSlice),
    /// A (re)list of the Services completed: the full set.
    Services(Vec<Service>),
    /// A (re)list of one slice watch completed: its full set.
    Slices(SliceSource, Vec<EndpointSlice>),
}

#[derive(Debug, Default)]
pub struct Index {
    /// This node, for the Services whose endpoints depend on it.
    node: NodeInfo,
    /// Labelled Services only: the others produce nothing.
    services: HashMap<Key, Service>,
    /// Labelled Services without a selector (see [`SliceSource::Named`]).
    selectorless: BTreeSet<Key>,
    slices: HashMap<SliceKey, EndpointSlice>,
    /// The slices naming each Service (whether or not it is known yet).
    by_service: HashMap<Key, BTreeSet<SliceKey>>,
    /// Each Service's specs before addresses are settled between Services.
    raw: HashMap<Key, Vec<ServiceSpec>>,
    /// Who claims each address, by spec name: the first keeps it.
    claims: HashMap<SocketAddrV4, BTreeSet<(String, Key)>>,
    /// The model: the spec holding each address.
    out: HashMap<SocketAddrV4, ServiceSpec>,
}

impl Index {
    pub fn new() -> Self {
        Index::default()
    }

    /// An index for the agent of `node`.
    pub fn on_node(node: NodeInfo) -> Self {
        Index {
            node,
            ..Index::default()
        }
    }

    /// Takes in one event; returns what changed in the model.
    pub fn apply(&mut self, event: Event) -> Delta {
        let mut touched = BTreeSet::new();
        match event {
            Event::Service(svc) => self.put_service(svc, &mut touched),
            Event::ServiceGone(svc) => {
                if let Some(key) = key_of(&svc.metadata) {
                    self.drop_service(&key, &mut touched);
                }
            }
            Event::Slice(src, slice) => self.put_slice(src, slice, &mut touched),
            Event::SliceGone(src, slice) => {
                if let Some((ns, name)) = key_of(&slice.metadata) {
                    self.drop_slice(&(src, ns, name), &mut touched);
                }
            }
            Event::Services(list) => {
                let listed: HashSet<Key> =
                    list.iter().filter_map(|s| key_of(&s.metadata)).collect();
                let gone: Vec<Key> = self
                    .services
                    .keys()
                    .filter(|k| !listed.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.drop_service(&key, &mut touched);
                }
                for svc in list {
                    self.put_service(svc, &mut touched);
                }
            }
            Event::Slices(src, list) => {
                let listed: HashSet<SliceKey> = list
                    .iter()
                    .filter_map(|s| key_of(&s.metadata))
                    .map(|(ns, name)| (src, ns, name))
                    .collect();
                let gone: Vec<SliceKey> = self
                    .slices
                    .keys()
                    .filter(|k| k.0 == src && !listed.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.drop_slice(&key, &mut touched);
                }
                for slice in list {
                    self.put_slice(src, slice, &mut touched);
                }
            }
        }
        self.settle(touched)
    }

    /// The whole model, sorted by name (as `model_from` gives it).
    pub fn model(&self) -> Model {
        let mut services: Vec<ServiceSpec> = self.out.values().cloned().collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        Model { services }
    }

    /// The names of the labelled Services without a selector, for the
    /// second slice watch (`kubernetes.io/service-name in (...)`).
    pub fn selectorless_names(&self) -> BTreeSet<String> {
        self.selectorless.iter().map(|(_, n)| n.clone()).collect()
    }

    /// How many Services and slices are held (for the logs).
    pub fn sizes(&self) -> (usize, usize) {
        (self.services.len(), self.slices.len())
    }

    fn put_service(&mut self, svc: Service, touched: &mut BTreeSet<Key>) {
        let Some(key) = key_of(&svc.metadata) else {
            return;
        };
        if !labelled(&svc) {
            return self.drop_service(&key, touched);
        }
        let selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
        if selector.is_none_or(|s| s.is_empty()) {
            self.selectorless.insert(key.clone());
        } else {
            self.selectorless.remove(&key);
        }
        self.services.insert(key.clone(), svc);
        touched.insert(key);
    }

    fn drop_service(&mut self, key: &Key, touched: &mut BTreeSet<Key>) {
        self.selectorless.remove(key);
        if self.services.remove(key).is_some() {
            touched.insert(key.clone());
        }
    }

    fn put_slice(&mut self, src: SliceSource, slice: EndpointSlice, touched: &mut BTreeSet<Key>) {
        let Some((ns, name)) = key_of(&slice.metadata) else {
            return;
        };
        let skey = (src, ns, name);
        self.drop_slice(&skey, touched);
        if let Some(owner) = owner(&slice) {
            self.by_service
                .entry(owner.clone())
                .or_default()
                .insert(skey.clone());
            touched.insert(owner);
        }
        self.slices.insert(skey, slice);
    }

    fn drop_slice(&mut self, skey: &SliceKey, touched: &mut BTreeSet<Key>) {
        let Some(old) = self.slices.remove(skey) else {
            return;
        };
        if let Some(owner) = owner(&old) {
            if let Some(set) = self.by_service.get_mut(&owner) {
                set.remove(skey);
                if set.is_empty() {
                    self.by_service.remove(&owner);
                }
            }
            touched.insert(owner);
        }
    }

    /// Recomputes the touched Services, then the addresses they claimed or claim.
    fn settle(&mut self, touched: BTreeSet<Key>) -> Delta {
        let mut vips = BTreeSet::new();
        for key in touched {
            let new = self.translate(&key);
            let old = self.raw.remove(&key).unwrap_or_default();
            if old == new {
                if !old.is_empty() {
                    self.raw.insert(key, old);
                }
                continue;
            }
            for s in &old {
                if let Some(c) = self.claims.get_mut(&s.vip) {
                    c.remove(&(s.name.clone(), key.clone()));
                    if c.is_empty() {
                        self.claims.remove(&s.vip);
                    }
                }
                vips.insert(s.vip);
            }
            for s in &new {
                self.claims
                    .entry(s.vip)
                    .or_default()
                    .insert((s.name.clone(), key.clone()));
                vips.insert(s.vip);
            }
            if !new.is_empty() {
                self.raw.insert(key, new);
            }
        }
        let mut delta = Delta::default();
        for vip in vips {
            let winner = self.winner(vip);
            let old = self.out.get(&vip);
            if old == winner.as_ref() {
                continue;
            }
            if let Some(old) = old {
                if winner.as_ref().is_none_or(|w| w.name != old.name) {
                    delta.removed.push(old.clone());
                }
            }
            match winner {
                Some(w) => {
                    delta.set.push(w.clone());
                    self.out.insert(vip, w);
                }
                None => {
                    self.out.remove(&vip);
                }
            }
        }
        delta
    }

    /// The spec that holds `vip` now.
    fn winner(&self, vip: SocketAddrV4) -> Option<ServiceSpec> {
        let (name, key) = self.claims.get(&vip)?.iter().next()?;
        let w = self.raw.get(key)?.iter().find(|s| &s.name == name)?;
        if self.claims.get(&vip).is_some_and(|c| c.len() > 1) {
            tracing::warn!(service = %w.name, %vip, "address claimed by more than one Service; the first by name keeps it");
        }
        Some(w.clone())
    }

    /// One Service's specs from its slices, one per address (a port listed
    /// twice keeps its first entry, as `model_from` does).
    fn translate(&self, key: &Key) -> Vec<ServiceSpec> {
        let Some(svc) = self.services.get(key) else {
            return Vec::new();
        };
        let own: Vec<&EndpointSlice> = self
            .by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k))
            .collect();
        let mut seen = HashSet::new();
        let mut specs = service_specs(svc, &own, &self.node);
        specs.retain(|s| seen.insert(s.vip));
        specs
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

/// The Service a slice names, in the slice's namespace.
fn owner(slice: &EndpointSlice) -> Option<Key> {
    Some((
        slice.metadata.namespace.clone()?,
        service_name(slice)?.to_string(),
    ))
}

#[cfg(test)]
mod tests;
