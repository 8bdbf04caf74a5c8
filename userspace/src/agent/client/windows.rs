//! The arithmetic of connection-level flow control (ebpf/README.md R2):
//! what the client was granted and sent, and how much more it gets
//! (grants.rs: what each endpoint may send). flow.rs reads the kernel's
//! counters and sends the WINDOW_UPDATEs these numbers call for.

use super::grants::DryWatch;
use crate::h2::frame::DEFAULT_WINDOW;

/// Connection window the agent keeps open for the client's uploads, and
/// for each endpoint's responses (as the client's window allows).
pub(super) const CLIENT_WINDOW: u64 = 4 << 20;
pub(super) const ENDPOINT_WINDOW: u64 = 1 << 20;

/// The client's side of the connection window, as the agent counts it.
#[derive(Debug)]
pub(super) struct ClientWindows {
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE: what endpoints may send per stream.
    initial: u32,
    /// Connection WINDOW_UPDATE increments the agent read from the client.
    increments: u64,
    /// Connection window granted to the client, in total.
    granted: u64,
    /// Client DATA bytes the agent received (carried, queued or dropped).
    data_seen: u64,
    /// A busy endpoint with no window, waiting for the client's (plan_grants).
    pub dry: DryWatch,
}

impl Default for ClientWindows {
    fn default() -> Self {
        ClientWindows {
            initial: DEFAULT_WINDOW,
            increments: 0,
            granted: DEFAULT_WINDOW as u64,
            data_seen: 0,
            dry: DryWatch::default(),
        }
    }
}

impl ClientWindows {
    pub fn initial(&self) -> u32 {
        self.initial
    }

    /// A new SETTINGS_INITIAL_WINDOW_SIZE; true if it changed.
    pub fn set_initial(&mut self, window: u32) -> bool {
        std::mem::replace(&mut self.initial, window) != window
    }

    /// Counts `n` DATA bytes the agent was handed; false once the client
    /// has sent more than it was granted (`kernel`: DATA bytes the kernel
    /// carried to endpoints).
    pub fn receive(&mut self, n: u64, kernel: u64) -> bool {
        self.data_seen += n;
        kernel + self.data_seen <= self.granted
    }

    /// A connection WINDOW_UPDATE from the client: the window the client
    /// gave us is the default plus every increment (the kernel counts the
    /// same sum from the socket's parse state; both take the maximum).
    pub fn credit(&mut self, inc: u32) -> u64 {
        self.increments += inc as u64;
        DEFAULT_WINDOW as u64 + self.increments
    }

    /// The increment to grant the client, if any: what it may still send
    /// stays close to what the endpoints together can take now (`room`,
    /// up to CLIENT_WINDOW), minus what already waits in the agent
    /// (`queued`), so DATA rarely waits for an endpoint's window and what
    /// waits is bounded. Granted only once less than half is left, so
    /// WINDOW_UPDATEs are not sent for every frame.
    pub fn replenish(&mut self, room: u64, queued: u64, kernel: u64) -> Option<u32> {
        let received = self.data_seen + kernel;
        let target = room.saturating_sub(queued).min(CLIENT_WINDOW);
        let remaining = self.granted.saturating_sub(received);
        if remaining >= target / 2 {
            return None;
        }
        let inc = target - remaining;
        self.granted += inc;
        Some(inc as u32)
    }
}

/// What the kernel may carry of the client's DATA to one endpoint before
/// it wakes the agent: a quarter of the client's window, shared.
pub(super) fn req_notify_after(active_upstreams: u64) -> u64 {
    CLIENT_WINDOW / 4 / active_upstreams.max(1)
}

/// A connection handed to the agent after this one (agent/handover).
impl ClientWindows {
    pub fn to_state(&self) -> crate::agent::handover::state::WindowsState {
        crate::agent::handover::state::WindowsState {
            initial: self.initial,
            increments: self.increments,
            granted: self.granted,
            data_seen: self.data_seen,
        }
    }

    pub fn from_state(s: &crate::agent::handover::state::WindowsState) -> Self {
        ClientWindows {
            initial: s.initial,
            increments: s.increments,
            granted: s.granted,
            data_seen: s.data_seen,
            dry: DryWatch::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_past_its_window_is_caught_counting_the_kernels_bytes() {
        let mut w = ClientWindows::default();
        assert!(w.receive(35_535, 30_000));
        assert!(!w.receive(1, 30_000), "65,536 bytes on a 65,535 window");
        let mut w = ClientWindows::default();
        assert!(!w.receive(1, 65_535));
    }

    #[test]
    fn the_client_is_granted_up_to_what_endpoints_can_take() {
        let mut w = ClientWindows::default();
        // endpoints have 1 MiB of room: the client gets it
        assert_eq!(w.replenish(1 << 20, 0, 0), Some((1 << 20) - 65_535));
        // still more than half left: nothing more
        assert_eq!(w.replenish(1 << 20, 0, 400_000), None);
        // past half: topped up to the target again
        assert_eq!(w.replenish(1 << 20, 0, 600_000), Some(600_000));
        // never beyond CLIENT_WINDOW, whatever the endpoints offer
        let mut w = ClientWindows::default();
        assert_eq!(
            w.replenish(64 << 20, 0, 0),
            Some((CLIENT_WINDOW - 65_535) as u32)
        );
    }

    #[test]
    fn what_waits_in_the_agent_is_not_granted_again() {
        let mut w = ClientWindows::default();
        assert_eq!(w.replenish(1 << 20, 1 << 20, 0), None);
        assert_eq!(
            w.replenish(1 << 20, 512 << 10, 0),
            Some((512 << 10) - 65_535)
        );
        // no endpoint room at all: nothing, however little is left
        let mut w = ClientWindows::default();
        assert!(w.receive(65_000, 0));
        assert_eq!(w.replenish(0, 0, 0), None);
    }

    #[test]
    fn increments_add_up_and_initial_window_changes_are_reported() {
        let mut w = ClientWindows::default();
        assert_eq!(w.credit(10), 65_545);
        assert_eq!(w.credit(5), 65_550);
        assert!(!w.set_initial(DEFAULT_WINDOW));
        assert!(w.set_initial(1 << 20));
        assert_eq!(w.initial(), 1 << 20);
        assert!(!w.set_initial(1 << 20));
    }

    #[test]
    fn the_kernels_share_of_uploads_wakes_the_agent_per_upstream() {
        assert_eq!(req_notify_after(1), CLIENT_WINDOW / 4);
        assert_eq!(req_notify_after(4), CLIENT_WINDOW / 16);
        assert_eq!(req_notify_after(0), CLIENT_WINDOW / 4);
    }
}
