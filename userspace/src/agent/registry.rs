//! What the agent's tasks share: the services being balanced (with a watch
//! of their endpoints) and the live client connections by conn id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::model::{Policy, ServiceSpec};

pub struct ServiceState {
    pub id: u32,
    pub name: String,
    pub vip: SocketAddr,
    /// The endpoints its connections use; also notified when the policy
    /// changes, so the connections take the new one. A list that goes
    /// empty (every pod not ready, the slices gone before the label) is
    /// not sent: the connections keep the endpoints they have, as a
    /// connection kube-proxy placed keeps its pod, rather than refuse
    /// every new stream.
    pub endpoints: watch::Sender<Vec<SocketAddr>>,
    /// The endpoints the source lists now (empty included), for status.
    listed: Mutex<Vec<SocketAddr>>,
    /// `Policy::kernel_code`, as each connection copies it into the kernel.
    policy: AtomicU32,
    /// Where the next connection starts its rotation, so the first streams
    /// of short connections spread too.
    rotation: AtomicU32,
    /// Streams that waited in the agent because no endpoint had room
    /// (MAX_CONCURRENT_STREAMS reached everywhere), since the Service came.
    pub held: std::sync::atomic::AtomicU64,
}

impl ServiceState {
    pub fn next_rotation(&self) -> u32 {
        self.rotation.fetch_add(1, Ordering::Relaxed)
    }

    pub fn policy(&self) -> Policy {
        Policy::from_kernel_code(self.policy.load(Ordering::Relaxed))
    }

    /// What the source lists now: what `rotor status` shows.
    pub fn listed(&self) -> Vec<SocketAddr> {
        self.listed.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// Signals from the kernel (ring buffer) to one connection's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A flow-control counter crossed its mark: look at the windows.
    FlowControl,
    /// A stream bound to an endpoint with a larger initial stream window
    /// needs the difference granted to the client.
    StreamWindow { slot: u32, stream: u32 },
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ConnInfo {
    pub id: u32,
    pub service: String,
    pub client: String,
    pub fast: bool,
    pub upstreams: Vec<String>,
    /// Bytes and messages the agent read from the client's connection.
    pub read_bytes: u64,
    pub read_messages: u32,
    /// Not HTTP/2: carried whole to one endpoint (splice.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spliced: Option<Spliced>,
    /// Its upstreams, by slot (the kernel's counters are in the status by slot too).
    #[serde(default)]
    pub slots: Vec<SlotInfo>,
    /// New streams waiting in the agent for an endpoint with room.
    #[serde(default)]
    pub held: usize,
    /// Taken over from the agent before this one, with its kernel
    /// generation (agent/handover): its kernel counters are in that one's
    /// maps, not in this agent's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Spliced {
    pub endpoint: String,
    /// What the client's first bytes looked like: `TLS`, `HTTP/1.x`, ...
    pub why: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct SlotInfo {
    pub slot: u32,
    pub endpoint: String,
    /// connecting, active, draining.
    pub state: String,
    /// The endpoint's SETTINGS_MAX_CONCURRENT_STREAMS (absent: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<u32>,
}

/// How long a connection id rests before it is used again, if another is
/// free: a socket of the connection that ended can still be parsed a
/// moment after the agent let it go (the programs also check the id's
/// generation, rotor.h).
const ID_REST: std::time::Duration = std::time::Duration::from_secs(1);

/// Connection ids: fresh ones first, then the longest free. They were
/// reused last-in first-out, so the next connection got the id of the one
/// that had just ended.
#[derive(Debug)]
struct ConnIds {
    free: std::collections::VecDeque<(u32, std::time::Instant)>,
    /// id 0 is never used: a zeroed sock_ident must not name a connection
    next: u32,
}

impl Default for ConnIds {
    fn default() -> Self {
        ConnIds {
            free: Default::default(),
            next: 1,
        }
    }
}

impl ConnIds {
    fn alloc(&mut self, limit: u32, now: std::time::Instant) -> Option<u32> {
        if let Some(&(id, at)) = self.free.front() {
            if now.duration_since(at) >= ID_REST {
                self.free.pop_front();
                return Some(id);
            }
        }
        if self.next < limit {
            self.next += 1;
            return Some(self.next - 1);
        }
        // Every id in use or resting: the generation check keeps a rested
        // too little apart from its last connection.
        self.free.pop_front().map(|(id, _)| id)
    }

    fn free(&mut self, id: u32, now: std::time::Instant) {
        self.free.push_back((id, now));
    }
}

#[derive(Default)]
pub struct Registry {
    services: Mutex<HashMap<u32, Arc<ServiceState>>>,
    next_service: AtomicU32,
    /// Services removed while connections still hold them: the same one
    /// back (the label put back) reaches those connections again.
    retired: Mutex<HashMap<(String, SocketAddr), std::sync::Weak<ServiceState>>>,
    conns: Mutex<HashMap<u32, (mpsc::UnboundedSender<Wake>, ConnInfo)>>,
    ids: Mutex<ConnIds>,
    /// Endpoint ids for the kernel's per-endpoint counters, and the
    /// agent's own (metrics_counts.rs).
    pub endpoints: super::metrics_counts::EndpointTable,
    /// The registries of generations adopted from the agent before this
    /// one (agent/handover): their connections are this agent's too.
    linked: Mutex<Vec<Arc<Registry>>>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    pub fn service(&self, id: u32) -> Option<Arc<ServiceState>> {
        self.services.lock().ok()?.get(&id).cloned()
    }

    pub fn services(&self) -> Vec<Arc<ServiceState>> {
        self.services
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Adds or updates a service; returns its id and whether it is new.
    pub fn upsert_service(&self, spec: &ServiceSpec) -> (u32, bool) {
        let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        let revived = self
            .retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(spec.name.clone(), spec.vip))
            .and_then(|w| w.upgrade());
        if let Some(s) = revived {
            services.insert(s.id, s);
        }
        if let Some(s) = services
            .values()
            .find(|s| s.name == spec.name && s.vip == spec.vip)
        {
            let policy = spec.policy.kernel_code();
            let policy_changed = s.policy.swap(policy, Ordering::Relaxed) != policy;
            if let Ok(mut listed) = s.listed.lock() {
                listed.clone_from(&spec.endpoints);
            }
            s.endpoints.send_if_modified(|eps| {
                let changed = !spec.endpoints.is_empty() && *eps != spec.endpoints;
                if changed {
                    eps.clone_from(&spec.endpoints);
                }
                changed || policy_changed
            });
            return (s.id, false);
        }
        let id = self.next_service.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, _) = watch::channel(spec.endpoints.clone());
        services.insert(
            id,
            Arc::new(ServiceState {
                id,
                name: spec.name.clone(),
                vip: spec.vip,
                endpoints: tx,
                listed: Mutex::new(spec.endpoints.clone()),
                policy: AtomicU32::new(spec.policy.kernel_code()),
                rotation: AtomicU32::new(0),
                held: Default::default(),
            }),
        );
        (id, true)
    }

    /// Removes one service (by name and address); false if it was not there.
    pub fn remove_service(&self, name: &str, vip: SocketAddr) -> bool {
        let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        let id = services
            .values()
            .find(|s| s.name == name && s.vip == vip)
            .map(|s| s.id);
        // The connections that hold the Service keep its last endpoints to
        // their end, as a connection kube-proxy placed keeps its pod: the
        // label went, or the Service, not the pods (those that do go fail
        // their upstreams like any endpoint that dies).
        let Some(gone) = id.and_then(|id| services.remove(&id)) else {
            return false;
        };
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.retain(|_, w| w.strong_count() > 0);
        retired.insert((gone.name.clone(), gone.vip), Arc::downgrade(&gone));
        true
    }

    /// Removes services not in `keep`; returns their addresses.
    pub fn retain_services(&self, keep: &[ServiceSpec]) -> Vec<SocketAddr> {
        let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<u32> = services
            .values()
            .filter(|s| !keep.iter().any(|k| k.name == s.name && k.vip == s.vip))
            .map(|s| s.id)
            .collect();
        gone.iter()
            .filter_map(|id| services.remove(id))
            .map(|s| {
                s.endpoints.send_replace(Vec::new());
                s.vip
            })
            .collect()
    }

    pub fn alloc_conn(&self, limit: u32) -> Option<u32> {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .alloc(limit, std::time::Instant::now())
    }

    pub fn register_conn(&self, info: ConnInfo, wake: mpsc::UnboundedSender<Wake>) {
        if let Ok(mut m) = self.conns.lock() {
            m.insert(info.id, (wake, info));
        }
    }

    pub fn update_conn(&self, id: u32, f: impl FnOnce(&mut ConnInfo)) {
        if let Some((_, info)) = self
            .conns
            .lock()
            .ok()
            .as_deref_mut()
            .and_then(|m| m.get_mut(&id))
        {
            f(info);
        }
    }

    pub fn release_conn(&self, id: u32) {
        if let Ok(mut m) = self.conns.lock() {
            m.remove(&id);
        }
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free(id, std::time::Instant::now());
    }

    pub fn wake(&self, id: u32, wake: Wake) {
        if let Some((tx, _)) = self.conns.lock().ok().as_ref().and_then(|m| m.get(&id)) {
            let _ = tx.send(wake);
        }
    }

    pub fn conns(&self) -> Vec<ConnInfo> {
        let mut all: Vec<ConnInfo> = self
            .conns
            .lock()
            .map(|m| m.values().map(|(_, i)| i.clone()).collect())
            .unwrap_or_default();
        let linked = self.linked.lock().map(|l| l.clone()).unwrap_or_default();
        for r in linked {
            all.extend(r.conns());
        }
        all
    }

    /// Counts `other`'s connections as this registry's (an adopted
    /// generation's: agent/handover).
    pub fn link(&self, other: Arc<Registry>) {
        if let Ok(mut l) = self.linked.lock() {
            l.push(other);
        }
    }

    /// Forgets a connection the agent after this one runs now: its id is
    /// not used again here, since the kernel's entry is that agent's.
    pub fn forget_conn(&self, id: u32) {
        if let Ok(mut m) = self.conns.lock() {
            m.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn an_id_is_not_reused_at_once() {
        let (mut ids, t0) = (ConnIds::default(), Instant::now());
        assert_eq!(ids.alloc(4, t0), Some(1));
        ids.free(1, t0);
        // fresh ids first, while the freed one rests
        assert_eq!(ids.alloc(4, t0), Some(2));
        assert_eq!(ids.alloc(4, t0), Some(3));
        // rested long enough: the oldest free id
        ids.free(3, t0 + Duration::from_millis(10));
        assert_eq!(ids.alloc(4, t0 + ID_REST), Some(1));
        // none fresh, the only free one still resting: it is taken anyway
        assert_eq!(ids.alloc(4, t0 + ID_REST), Some(3));
        assert_eq!(ids.alloc(4, t0 + ID_REST), None);
    }

    #[test]
    fn connections_keep_their_endpoints_when_the_list_empties_or_the_service_goes_and_see_it_come_back(
    ) {
        let reg = Registry::new();
        let ep = |p: u16| SocketAddr::from(([10, 1, 1, 2], p));
        let spec = |eps: Vec<SocketAddr>| ServiceSpec {
            name: "default/echo:8080".into(),
            vip: SocketAddr::from(([10, 96, 0, 10], 8080)),
            policy: Policy::default(),
            endpoints: eps,
        };
        let (id, new) = reg.upsert_service(&spec(vec![ep(1), ep(2)]));
        assert!(new);
        // A connection holds the Service and watches its endpoints.
        let held = reg.service(id).expect("service");
        let mut seen = held.endpoints.subscribe();
        // Every endpoint unready (or the slices gone first): the status
        // shows none, the connections keep theirs.
        reg.upsert_service(&spec(vec![]));
        assert_eq!(held.listed(), Vec::<SocketAddr>::new());
        assert!(
            !seen.has_changed().unwrap_or(true),
            "emptied for the connections"
        );
        assert!(reg.remove_service("default/echo:8080", spec(vec![]).vip));
        assert!(reg.service(id).is_none(), "still listed");
        assert_eq!(*seen.borrow_and_update(), vec![ep(1), ep(2)]);
        assert!(!seen.has_changed().unwrap_or(true), "emptied on removal");
        // The label comes back with a new endpoint: the same Service, and
        // the connection sees the change.
        let (again, _) = reg.upsert_service(&spec(vec![ep(1), ep(2), ep(3)]));
        assert_eq!(again, id);
        assert!(seen.has_changed().unwrap_or(false));
        assert_eq!(*seen.borrow_and_update(), vec![ep(1), ep(2), ep(3)]);
        // Once no connection holds it, a new one is made.
        drop((held, seen));
        assert!(reg.remove_service("default/echo:8080", spec(vec![]).vip));
        let (fresh, new) = reg.upsert_service(&spec(vec![ep(1)]));
        assert!(new && fresh != id);
    }
}
