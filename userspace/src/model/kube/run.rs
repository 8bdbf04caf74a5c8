//! The source's task: three watchers into the [`Index`], deltas out, and
//! the source's state (synced, unreachable since when and why) kept for
//! `rotor status`.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;

use super::events::PolicyEvents;
use super::index::{Event, Index, SliceSource};
use super::translate::NodeInfo;
use super::{error_chain, Update, BALANCE_LABEL, SERVICE_NAME_LABEL};
use crate::model::source::{SourceHealth, SourceState};

type Events<K> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// While unreachable, how often a one-item list asks whether the API
/// server answers again: the watchers retry on their own backoff (up to
/// 30 s) and say nothing when they resume without a change to report.
const PROBE_EVERY: Duration = Duration::from_secs(2);
const PROBE_LIMIT: Duration = Duration::from_secs(2);

/// Only what the translation reads is kept: at 5,000 Services, what a
/// Service or slice carries besides (managed fields, annotations, the
/// labels the controller copies from the Service, pod references) is most
/// of the agent's memory.
fn slim_service(s: &mut Service) {
    s.managed_fields_mut().clear();
    s.annotations_mut().clear();
    s.labels_mut().retain(|k, _| k == BALANCE_LABEL);
    s.status = None;
}

fn slim_slice(s: &mut EndpointSlice) {
    s.managed_fields_mut().clear();
    s.annotations_mut().clear();
    s.labels_mut().retain(|k, _| k == SERVICE_NAME_LABEL);
    s.metadata.owner_references = None;
    for ep in &mut s.endpoints {
        // node_name stays: internalTrafficPolicy: Local keeps this node's
        ep.target_ref = None;
        ep.hints = None;
        ep.deprecated_topology = None;
        ep.zone = None;
        ep.hostname = None;
    }
}

fn services(client: Client) -> Events<Service> {
    watcher(
        Api::<Service>::all(client),
        watcher::Config::default().labels(BALANCE_LABEL),
    )
    .default_backoff()
    .modify(slim_service)
    .boxed()
}

fn slices(client: Client, selector: &str) -> Events<EndpointSlice> {
    watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default().labels(selector),
    )
    .default_backoff()
    .modify(slim_slice)
    .boxed()
}

/// The selector of the slices of Services without a selector.
fn named_selector(names: &BTreeSet<String>) -> String {
    let list: Vec<&str> = names.iter().map(String::as_str).collect();
    format!("{SERVICE_NAME_LABEL} in ({})", list.join(","))
}

/// One watcher's (re)list: objects buffered from `Init` to `InitDone`, so
/// that the index sees the full list at once and nothing flickers.
struct Relist<K>(Option<Vec<K>>);

enum Step<K> {
    Nothing,
    Put(K),
    Gone(K),
    All(Vec<K>),
}

impl<K> Relist<K> {
    fn step(&mut self, ev: watcher::Event<K>) -> Step<K> {
        match ev {
            watcher::Event::Init => {
                self.0 = Some(Vec::new());
                Step::Nothing
            }
            watcher::Event::InitApply(o) => {
                self.0.get_or_insert_with(Vec::new).push(o);
                Step::Nothing
            }
            watcher::Event::InitDone => Step::All(self.0.take().unwrap_or_default()),
            watcher::Event::Apply(o) => Step::Put(o),
            watcher::Event::Delete(o) => Step::Gone(o),
        }
    }
}

// One lives on the stack for one turn of the loop: boxing the large
// Service event would cost an allocation per event for nothing.
#[allow(clippy::large_enum_variant)]
enum Tick {
    Services(Result<watcher::Event<Service>, watcher::Error>),
    Slices(
        SliceSource,
        Result<watcher::Event<EndpointSlice>, watcher::Error>,
    ),
    Probe,
}

async fn next_of(
    s: &mut Option<Events<EndpointSlice>>,
) -> Option<<Events<EndpointSlice> as futures::Stream>::Item> {
    match s {
        Some(s) => s.next().await,
        None => None,
    }
}

pub(super) async fn run(
    client: Client,
    tx: mpsc::UnboundedSender<Update>,
    health: SourceHealth,
    node: Option<String>,
) {
    let mut index = Index::on_node(NodeInfo { name: node.clone() });
    let instance = node.unwrap_or_else(host_name);
    let mut events = PolicyEvents::new(client.clone(), instance);
    let mut svc_events = services(client.clone());
    let mut labelled = slices(client.clone(), BALANCE_LABEL);
    let mut named: Option<Events<EndpointSlice>> = None;
    let mut names = BTreeSet::new();
    let (mut svc_list, mut labelled_list, mut named_list) =
        (Relist(None), Relist(None), Relist(None));
    let (mut svc_listed, mut labelled_listed, mut named_listed) = (false, false, true);
    let mut sent = false;
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let unreachable = health.state() == SourceState::Unreachable;
        let tick = tokio::select! {
            Some(e) = svc_events.next() => Tick::Services(e),
            Some(e) = labelled.next() => Tick::Slices(SliceSource::Labelled, e),
            Some(e) = next_of(&mut named) => Tick::Slices(SliceSource::Named, e),
            _ = probe.tick(), if unreachable => Tick::Probe,
            else => break,
        };
        let (what, event) = match tick {
            Tick::Probe => {
                probe_once(&client, &health).await;
                continue;
            }
            Tick::Services(Ok(ev)) => {
                let ev = match svc_list.step(ev) {
                    Step::Nothing => None,
                    Step::Put(s) => {
                        events.service_seen(&s);
                        Some(Event::Service(s))
                    }
                    Step::Gone(s) => Some(Event::ServiceGone(s)),
                    Step::All(list) => {
                        svc_listed = true;
                        list.iter().for_each(|s| events.service_seen(s));
                        Some(Event::Services(list))
                    }
                };
                ("Services", ev)
            }
            Tick::Slices(src, Ok(ev)) => {
                let list = match src {
                    SliceSource::Labelled => &mut labelled_list,
                    SliceSource::Named => &mut named_list,
                };
                let ev = match list.step(ev) {
                    Step::Nothing => None,
                    Step::Put(s) => Some(Event::Slice(src, s)),
                    Step::Gone(s) => Some(Event::SliceGone(src, s)),
                    Step::All(list) => {
                        match src {
                            SliceSource::Labelled => labelled_listed = true,
                            SliceSource::Named => named_listed = true,
                        }
                        Some(Event::Slices(src, list))
                    }
                };
                ("EndpointSlices", ev)
            }
            Tick::Services(Err(e)) => {
                failed(&health, "Services", e);
                continue;
            }
            Tick::Slices(_, Err(e)) => {
                failed(&health, "EndpointSlices", e);
                continue;
            }
        };
        if sent && health.state() != SourceState::Synced {
            tracing::info!("the Kubernetes API server answers again");
            health.synced();
        }
        let Some(event) = event else { continue };
        let services_changed = what == "Services";
        let delta = index.apply(event);
        if sent && !delta.is_empty() {
            let _ = tx.send(Update::Changed(delta));
        }
        if services_changed {
            let now = index.selectorless_names();
            if now != names {
                names = now;
                if names.is_empty() {
                    named = None;
                    named_listed = true;
                    let delta = index.apply(Event::Slices(SliceSource::Named, Vec::new()));
                    if sent && !delta.is_empty() {
                        let _ = tx.send(Update::Changed(delta));
                    }
                } else {
                    let selector = named_selector(&names);
                    tracing::info!(%selector, "watching the slices of the labelled Services without a selector");
                    // The old watch's slices stay until the new one has listed.
                    named = Some(slices(client.clone(), &selector));
                    named_list = Relist(None);
                    named_listed = false;
                }
            }
        }
        if !sent && svc_listed && labelled_listed && named_listed {
            let model = index.model();
            let (services, slices) = index.sizes();
            tracing::info!(
                balanced = model.services.len(),
                services,
                slices,
                "Kubernetes Services and EndpointSlices listed"
            );
            health.synced();
            let _ = tx.send(Update::Listed(model));
            sent = true;
        }
    }
    tracing::error!("Kubernetes watch streams ended");
    health.ended();
}

/// The host name, when the node's name is not given.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn failed(health: &SourceHealth, what: &str, e: watcher::Error) {
    if let watcher::Error::WatchError(status) = &e {
        if status.code == 410 {
            // Routine (etcd compaction every few minutes): not a failure.
            tracing::info!("watch of {what} expired (410 Gone); listing again");
            return;
        }
    }
    let e = error_chain(&e);
    tracing::warn!(error = %e, "watching {what}; retrying, balancing with the last state");
    health.failed(format!("watching {what}: {e}"));
}

/// One cheap request: does the API server answer again?
async fn probe_once(client: &Client, health: &SourceHealth) {
    let api = Api::<Service>::all(client.clone());
    let params = ListParams::default().labels(BALANCE_LABEL).limit(1);
    match tokio::time::timeout(PROBE_LIMIT, api.list_metadata(&params)).await {
        Ok(Ok(_)) => {
            tracing::info!("the Kubernetes API server answers again; the watches resume on their backoff and replay what changed");
            health.synced();
        }
        Ok(Err(e)) => health.failed(format!("probing: {}", error_chain(&e))),
        Err(_) => health.failed(format!(
            "probing: no answer within {}s",
            PROBE_LIMIT.as_secs()
        )),
    }
}
