//! Applying what changed in the model, and only that: with thousands of
//! Services, one endpoint change used to upsert and log every Service.
//!
//! A Service without a ready endpoint is known to the agent (connections
//! it already carries keep waiting for endpoints, and get them when they
//! come) but not to the kernel: new connections to its address take their
//! original path, kube-proxy's. Such a moment comes when a Service is
//! labelled before the EndpointSlice controller has copied the label onto
//! its slices; redirecting the connections then would hold their streams
//! in the agent with nowhere to send them, while kube-proxy knows the
//! endpoints.

use super::Shared;
use crate::model::{Delta, ServiceSpec};

/// Above this many changes in one go (the first model), one line says how
/// many instead of one line each.
const LOG_EACH_UP_TO: usize = 20;

pub(super) fn apply(shared: &Shared, delta: &Delta) {
    let each = delta.removed.len() + delta.set.len() <= LOG_EACH_UP_TO;
    for spec in &delta.removed {
        forget(shared, spec, each);
    }
    let mut unbalanced = 0;
    for spec in &delta.set {
        if !configure(shared, spec, each) {
            unbalanced += 1;
        }
    }
    if !each {
        tracing::info!(
            removed = delta.removed.len(),
            configured = delta.set.len(),
            without_endpoints = unbalanced,
            "services configured"
        );
    }
}

fn forget(shared: &Shared, spec: &ServiceSpec, log: bool) {
    shared.registry.remove_service(&spec.name, spec.vip);
    // Absent already if it had no endpoint.
    let _ = shared.dp.remove_service(spec.vip);
    if log {
        tracing::info!(service = %spec.name, vip = %spec.vip, "service removed");
    } else {
        tracing::debug!(service = %spec.name, vip = %spec.vip, "service removed");
    }
}

/// Returns whether the kernel redirects the Service's connections.
fn configure(shared: &Shared, spec: &ServiceSpec, log: bool) -> bool {
    let (id, _) = shared.registry.upsert_service(spec);
    let balanced = !spec.endpoints.is_empty();
    if balanced {
        if let Err(e) = shared.dp.set_service(spec.vip, id) {
            tracing::error!(service = %spec.name, error = %e, "cannot balance service");
            return false;
        }
    } else {
        let _ = shared.dp.remove_service(spec.vip);
    }
    let endpoints = spec.endpoints.len();
    match (log, balanced) {
        (true, true) => {
            tracing::info!(service = %spec.name, vip = %spec.vip, endpoints, "service configured")
        }
        (true, false) => tracing::info!(
            service = %spec.name, vip = %spec.vip,
            "service has no ready endpoint: its new connections take their original path"
        ),
        (false, _) => {
            tracing::debug!(service = %spec.name, vip = %spec.vip, endpoints, "service configured")
        }
    }
    balanced
}
