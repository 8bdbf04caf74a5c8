//! The endpoints' side of connection-level flow control (ebpf/README.md
//! R2): how much response window each endpoint is granted out of what the
//! client's window has left, and what the kernel may hand them of the
//! client's WINDOW_UPDATEs itself (ebpf/lib/window.h). windows.rs counts
//! the client's side; flow.rs reads the kernel's counters and sends the
//! WINDOW_UPDATEs these numbers call for.

use tokio::time::Instant;

use super::windows::ENDPOINT_WINDOW;

/// The response window an endpoint that has `outstanding` unused would be
/// granted from its `share` of the client's window: up to the share (at
/// most ENDPOINT_WINDOW), once less than half of it is left.
fn endpoint_grant(outstanding: u64, share: u64) -> u64 {
    let target = ENDPOINT_WINDOW.min(share);
    if outstanding >= target / 2 {
        0
    } else {
        (target - outstanding).min(0x7fff_ffff)
    }
}

/// How much of its `window` an endpoint may use before the agent is woken:
/// half. A client that sends a WINDOW_UPDATE only once half its window is
/// used (nghttp2: Node, nghttp) can sit just short of that while an
/// endpoint's share is spent: neither would ever move.
fn notify_after(window: u64) -> u64 {
    (window / 2).clamp(1, ENDPOINT_WINDOW / 4)
}

/// One endpoint as a grant pass sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct EndpointWindow {
    /// Window granted and not used yet, frames waiting in a divert included.
    pub outstanding: u64,
    /// It has streams open, so it may use that window now.
    pub busy: bool,
    /// Not draining a divert (which it must do before it gets more).
    pub grantable: bool,
}

/// A grant pass: per endpoint, its increment and how much it may use before
/// the agent is woken (None: left as it was), and whether the client
/// verdict may hand busy endpoints the client's connection WINDOW_UPDATEs.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct GrantPlan {
    pub grants: Vec<Option<(u64, u64)>>,
    pub kernel_credit: bool,
    /// A busy endpoint is left with no window at all.
    pub dry: bool,
}

/// How long nothing may reach the client while a busy endpoint has no
/// window before it gets its share past the others' (`plan_grants`).
pub(super) const DRY_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

/// Shares what the client's window has left (`client_left`) among the
/// endpoints. Each is granted only from what the others' windows leave
/// free: whatever they may send together past the client's window is
/// diverted to the agent, one wake-up per frame, until the client's window
/// takes it. And the kernel may hand on the client's WINDOW_UPDATEs only
/// while the endpoints' windows together fit in the client's: each one it
/// hands on raises one endpoint's window and the client's by the same
/// amount, so any excess there would stay for the connection's life (the
/// concrete case: three endpoints' initial 65,535 bytes each beside a
/// client's one 65,535, h2load -w 16 -W 16, diverted every few responses).
/// Through the agent instead, the excess is paid off as the endpoints use
/// the windows they have. Busy endpoints (streams open) come first, the
/// one with the least window first; an idle one gets what is left for its
/// next stream (topped up to 1 MiB when the client's window is large).
///
/// One exception keeps every stream moving. When nothing has reached the
/// client for a while (`starved`, [`DRY_WAIT`]), a busy endpoint with no
/// window left gets its share anyway: the others may hold the rest of the
/// client's window for streams with nothing to send (or none of their own
/// stream windows left), and the client sends no WINDOW_UPDATE before it
/// receives something. Not sooner: a dry endpoint is the common case with
/// small windows (every endpoint sends faster than the client reads), and
/// the client's next WINDOW_UPDATE reaches it from the kernel; granted at
/// once, it made the excess again on nearly every pass, and so did idle
/// endpoints granted past what was free, as their next streams came.
pub(super) fn plan_grants(
    client_left: u64,
    endpoints: &[EndpointWindow],
    starved: bool,
) -> GrantPlan {
    let busy = endpoints.iter().filter(|e| e.busy).count().max(1) as u64;
    let share = client_left / busy;
    let held = |busy: bool| -> u64 {
        endpoints
            .iter()
            .filter(|e| e.busy == busy)
            .map(|e| e.outstanding)
            .sum()
    };
    // What idle endpoints hold is not counted against busy ones: it may
    // never be used (their streams ended with it left; HTTP/2 cannot take
    // a connection window back), and half a small client window held so
    // starved the others until DRY_WAIT on every few responses.
    let (mut busy_held, mut idle_held) = (held(true), held(false));
    let mut grants = vec![None; endpoints.len()];
    let mut dry = false;
    let mut order: Vec<usize> = (0..endpoints.len()).collect();
    order.sort_by_key(|&i| (!endpoints[i].busy, endpoints[i].outstanding));
    for i in order {
        let e = endpoints[i];
        if !e.grantable {
            continue;
        }
        let want = endpoint_grant(e.outstanding, share);
        let committed = busy_held + if e.busy { 0 } else { idle_held };
        let inc = if e.busy && e.outstanding == 0 && starved {
            want
        } else {
            want.min(client_left.saturating_sub(committed))
        };
        if e.busy {
            busy_held += inc;
        } else {
            idle_held += inc;
        }
        let window = e.outstanding + inc;
        dry |= e.busy && window == 0 && want > 0;
        // Held short, it has nothing more from the agent before it runs
        // dry: the client's WINDOW_UPDATEs reach it from the kernel. Woken
        // at every half of what is left, the agent would look a dozen
        // times per window for nothing.
        let notify = if inc < want {
            window.max(1)
        } else {
            notify_after(window)
        };
        grants[i] = Some((inc, notify));
    }
    GrantPlan {
        grants,
        kernel_credit: busy_held + idle_held <= client_left,
        dry,
    }
}

/// What the client verdict may hand an endpoint of the client's
/// connection WINDOW_UPDATEs before the agent looks again (ebpf/lib/window.h):
/// up to ENDPOINT_WINDOW unused, as the agent's own grants.
pub(super) fn credit_room(outstanding: u64) -> u32 {
    ENDPOINT_WINDOW.saturating_sub(outstanding) as u32
}

/// What the kernel took of a room set at `set` that it left at `left`.
/// The kernel only lowers a room; a `left` above `set` (a room nobody
/// here set: an adopted generation's) counts as nothing taken.
pub(super) fn credit_taken(set: u32, left: u32) -> u64 {
    set.saturating_sub(left) as u64
}

/// Since when a pass has left a busy endpoint with no window, and what the
/// client had received then: nothing more after [`DRY_WAIT`] is starving.
#[derive(Debug, Default)]
pub(super) struct DryWatch {
    since: Option<(u64, Instant)>,
}

impl DryWatch {
    /// After a pass that left an endpoint `dry` or not.
    pub fn pass(&mut self, dry: bool, received: u64, now: Instant) {
        if !dry {
            self.since = None;
        } else if self.since.is_none() {
            self.since = Some((received, now));
        }
    }

    pub fn due(&self) -> Option<Instant> {
        self.since.map(|(_, at)| at + DRY_WAIT)
    }

    /// At the due time: true if nothing reached the client since the watch
    /// began (the next pass starts a new one); else it watches on from now.
    pub fn starved(&mut self, received: u64, now: Instant) -> bool {
        match self.since {
            Some((r, _)) if r == received => {
                self.since = None;
                true
            }
            Some(_) => {
                self.since = Some((received, now));
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_granted_its_share_once_half_is_used() {
        // a fresh endpoint (65,535 outstanding) with the whole client window
        let inc = endpoint_grant(65_535, 16 << 20);
        assert_eq!(inc, ENDPOINT_WINDOW - 65_535);
        let notify = notify_after(65_535 + inc);
        assert_eq!(notify, ENDPOINT_WINDOW / 4, "wakes at most a quarter in");
        // more than half of its target outstanding: nothing
        assert_eq!(endpoint_grant(ENDPOINT_WINDOW / 2, 16 << 20), 0);
        // the client's window is nearly spent: the share bounds the grant
        let inc = endpoint_grant(0, 1000);
        assert_eq!((inc, notify_after(inc)), (1000, 500));
        // nothing to share: no grant, but it still wakes on its next byte
        assert_eq!((endpoint_grant(0, 0), notify_after(0)), (0, 1));
    }

    fn busy(outstanding: u64) -> EndpointWindow {
        EndpointWindow {
            outstanding,
            busy: true,
            grantable: true,
        }
    }

    #[test]
    fn busy_endpoints_are_granted_only_what_the_clients_window_leaves_free() {
        // three endpoints' initial windows beside the client's one: no
        // grants, and the kernel hands on nothing until the excess is used
        let plan = plan_grants(65_535, &[busy(65_535); 3], false);
        assert_eq!(plan.grants, vec![Some((0, 32_767)); 3]);
        assert!(!plan.kernel_credit);
        // 31,000 of 32,000 held by the others: the starved one gets the
        // 1,000 left, not its whole share of 16,000
        let plan = plan_grants(32_000, &[busy(30_000), busy(1_000)], false);
        // (held short, it wakes the agent only once it has used it all)
        assert_eq!(plan.grants, vec![Some((0, 15_000)), Some((1_000, 2_000))]);
        assert!(plan.kernel_credit);
        // what is free goes to the endpoint with the least window first
        let plan = plan_grants(40_000, &[busy(5_000), busy(10_000), busy(2_000)], false);
        assert_eq!(plan.grants[2], Some((11_333, 6_666)));
        assert_eq!(plan.grants[0], Some((8_333, 6_666)));
        assert_eq!(plan.grants[1], Some((0, 5_000)));
        assert!(plan.kernel_credit, "36,666 may come for 40,000");
    }

    #[test]
    fn no_stream_waits_for_a_window_nobody_will_open() {
        // the other endpoint holds all the client's window: the one with
        // none left waits for the client's next WINDOW_UPDATE...
        let plan = plan_grants(60_000, &[busy(60_000), busy(0)], false);
        assert_eq!(plan.grants[1], Some((0, 1)));
        assert!(plan.dry && plan.kernel_credit);
        // ...unless nothing reached the client meanwhile: the other may
        // never use its window, so this one gets its share anyway
        let plan = plan_grants(60_000, &[busy(60_000), busy(0)], true);
        assert_eq!(plan.grants[1], Some((30_000, 15_000)));
        assert!(!plan.dry);
        assert!(!plan.kernel_credit, "90,000 may come for 60,000");
        // an idle endpoint gets what the busy ones leave free, for its
        // next stream: nothing here...
        let idle = EndpointWindow {
            busy: false,
            ..busy(0)
        };
        let plan = plan_grants(1 << 20, &[idle, busy(1 << 20)], false);
        assert_eq!(plan.grants[0], Some((0, 1)));
        assert!(
            plan.kernel_credit && !plan.dry,
            "an idle one is not starving"
        );
        // ...and not past it when starved: it has no stream to wait
        assert_eq!(plan_grants(1 << 20, &[idle, busy(1 << 20)], true), plan);
        // ...its 1 MiB from a large window
        let plan = plan_grants(4 << 20, &[idle, busy(1 << 20)], false);
        assert_eq!(plan.grants[0], Some((ENDPOINT_WINDOW, ENDPOINT_WINDOW / 4)));
        assert!(plan.kernel_credit);
        // one draining a divert is left as it is, its window still counted
        let draining = EndpointWindow {
            grantable: false,
            ..busy(50_000)
        };
        let plan = plan_grants(60_000, &[draining, busy(5_000)], false);
        assert_eq!(plan.grants, vec![None, Some((5_000, 10_000))]);
        assert!(plan.kernel_credit);
    }

    #[test]
    fn a_dry_endpoint_is_starved_only_once_nothing_reached_the_client() {
        let t0 = Instant::now();
        let mut w = DryWatch::default();
        w.pass(true, 100, t0);
        assert_eq!(w.due(), Some(t0 + DRY_WAIT));
        // a later dry pass does not move the watch
        w.pass(true, 500, t0 + DRY_WAIT / 2);
        assert_eq!(w.due(), Some(t0 + DRY_WAIT));
        // bytes reached the client meanwhile: watch on from now
        let t1 = t0 + DRY_WAIT;
        assert!(!w.starved(900, t1));
        assert_eq!(w.due(), Some(t1 + DRY_WAIT));
        // nothing since: starved, and the watch ends
        assert!(w.starved(900, t1 + DRY_WAIT));
        assert_eq!(w.due(), None);
        // a pass with no endpoint dry ends it too
        w.pass(true, 900, t1);
        w.pass(false, 900, t1);
        assert_eq!(w.due(), None);
        assert!(!w.starved(900, t1 + DRY_WAIT));
    }

    #[test]
    fn large_client_windows_are_shared_as_before() {
        let plan = plan_grants(1 << 30, &[busy(0); 3], false);
        let inc = endpoint_grant(0, (1 << 30) / 3);
        assert_eq!(plan.grants, vec![Some((inc, notify_after(inc))); 3]);
        assert_eq!(inc, ENDPOINT_WINDOW);
        assert!(plan.kernel_credit);
    }

    #[test]
    fn the_kernel_may_credit_an_endpoint_up_to_the_agents_own_bound() {
        assert_eq!(credit_room(0), ENDPOINT_WINDOW as u32);
        assert_eq!(credit_room(ENDPOINT_WINDOW - 1000), 1000);
        // already granted past the bound (the initial 65,535 beside a
        // larger grant): no room, not a wrapped one
        assert_eq!(credit_room(ENDPOINT_WINDOW + 1), 0);
        // the kernel took 32 KiB of a 1 MiB room
        assert_eq!(credit_taken(1 << 20, (1 << 20) - 32_768), 32_768);
        assert_eq!(credit_taken(1000, 1000), 0);
        // a room nobody here set (an adopted generation's) is not counted
        assert_eq!(credit_taken(0, 5000), 0);
    }
}
