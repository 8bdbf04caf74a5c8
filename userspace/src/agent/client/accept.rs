//! A client connection the cgroup program sent to the agent: which Service
//! it was for, whether the kernel and the node have room for it, and
//! otherwise its original path (fail_open.rs).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::ClientConn;
use crate::agent::registry::ConnInfo;
use crate::agent::Shared;
use crate::ebpf::abi::{Origin, MAX_UPSTREAMS};

pub async fn serve(shared: Arc<Shared>, a: TcpStream, peer: SocketAddr) {
    let Some(origin) = take_origin(&shared, peer).await else {
        tracing::warn!(%peer, "connection without a recorded destination; closing");
        return;
    };
    let cookie = crate::ebpf::socket_cookie(&a).unwrap_or(0);
    let took = crate::agent::fail_open::kernel_took(&shared, cookie).await;
    // Where A's frames for the agent have gone from the first, if sockops
    // had a spare tap for it (agent/spare_taps.rs); every path below reads
    // A through it. sockops names it with A's parser state, which can come
    // a moment after the accept (kernel_took).
    let spare = took
        .then(|| shared.spares.take(&shared.dp, cookie))
        .flatten();
    if spare.is_some() {
        // A read of A would have its parser parse what TCP queued unparsed
        // (seen: a preface unparsed for 2 s, ebpf/README.md R1); A is not
        // read, its tap is.
        if let Err(e) = crate::sys::kick_parser(&a) {
            tracing::debug!(%peer, error = %e, "SO_RCVLOWAT on an accepted socket");
        }
    }
    if origin.service_id == crate::agent::self_check::SERVICE_ID {
        if let Err(e) = crate::agent::self_check::answer(&shared.dp, a, spare).await {
            tracing::debug!(%peer, error = %format!("{e:#}"), "self-check connection");
        }
        return;
    }
    let dest = crate::ebpf::addr::socket_addr(origin.ip, origin.port);
    let fail_open =
        |a, why: String, spare| crate::agent::fail_open::run(&shared, a, peer, dest, why, spare);
    let Some(service) = shared.registry.service(origin.service_id) else {
        return fail_open(a, "its service is gone".into(), spare).await;
    };
    if !took {
        // sockops deletes an accepted socket's state when it closes: one
        // the client reset while it waited in the accept queue has none,
        // and nowhere to go.
        if crate::ebpf::tcp_received(&a).is_ok_and(|r| r.reset) {
            tracing::debug!(%peer, "connection reset before the agent took it");
            return;
        }
        let why = "the kernel did not take it within 1 s (parse_states or agent_socks full)";
        return fail_open(a, why.into(), spare).await;
    }
    // A and one socket per upstream, so that no upstream fails for want of
    // room; claimed at once, so two clients accepted together cannot both
    // count the same free room (ebpf/datapath/room.rs).
    let sockets = 1 + service.endpoints.borrow().len().clamp(1, MAX_UPSTREAMS);
    // The kernel goes on parsing A on the original path as well, and its
    // counts tell the splice what it has read (fail_open.rs): A's state is
    // forgotten when the splice ends, not before. Deleted here, the parser
    // made a new one from the next message on, its counts started at 0, the
    // splice read the tap while A's own ingress still held bytes and cut the
    // connection (hostile's budget test, 38 of 40 requests failed).
    // Before the kernel's room is claimed: a refusal here gives nothing
    // back. The charge goes with this task.
    let sharing = shared.pools.limits().shared > 0;
    let need = crate::agent::files::cost_of_connection(sockets - 1, sharing);
    let Some(_files) = shared.files.admit(need) else {
        crate::agent::files::refused(&shared);
        let why = format!(
            "the agent's open files are near its limit of {}: raise its hard RLIMIT_NOFILE",
            shared.files.limit()
        );
        return fail_open(a, why, spare).await;
    };
    let Some(room) = shared.dp.claim_room(sockets) else {
        return fail_open(a, "the per-socket maps are full".into(), spare).await;
    };
    if shared.budget.refuse_new() {
        let why = "the agent's queued bytes are over --max-queued-bytes".into();
        return fail_open(a, why, spare).await;
    }
    let Some(id) = shared.registry.alloc_conn(shared.dp.conns.len() as u32) else {
        return fail_open(a, "connection table full; raise --max-conns".into(), spare).await;
    };
    tracing::debug!(conn = id, cookie, %peer, tapped = spare.is_some(), "client connection accepted");
    let (wake_tx, wake_rx) = mpsc::unbounded_channel();
    shared.registry.register_conn(
        ConnInfo {
            id,
            service: service.name.clone(),
            client: peer.to_string(),
            ..Default::default()
        },
        wake_tx,
    );
    let mut conn = ClientConn::new(id, shared.clone(), service, room);
    // Nothing has been read or sent yet: a connection that cannot be set
    // up can still go its original way.
    if let Err(e) = conn.adopt(&a, peer, cookie) {
        conn.teardown();
        shared.registry.release_conn(id);
        return fail_open(a, format!("setting it up failed: {e:#}"), spare).await;
    }
    if let Err(e) = conn.run(a, wake_rx, spare).await {
        tracing::debug!(conn = id, error = %e, "client connection ended");
    }
    finish(&shared, conn);
}

/// A connection's task ends: its kernel state goes with it, unless the
/// agent after this one runs it now (handover.rs), whose maps they are.
pub(super) fn finish(shared: &Shared, mut conn: ClientConn) {
    let id = conn.id;
    if conn.handed_over {
        shared.registry.forget_conn(id);
        return;
    }
    conn.teardown();
    shared.registry.release_conn(id);
}

/// sockops records the destination when the client's side is established,
/// which can be a moment after our accept returns.
async fn take_origin(shared: &Shared, peer: SocketAddr) -> Option<Origin> {
    for _ in 0..50 {
        if let Some(o) = shared.dp.take_origin(peer) {
            return Some(o);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}
