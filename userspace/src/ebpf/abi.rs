//! `#[repr(C)]` mirrors of ebpf/include/rotor.h. The test below checks
//! them against the layout the C compiler gives the header.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub const MAX_UPSTREAMS: usize = 16;

pub const ROLE_AGENT: u32 = 1;
pub const ROLE_UPSTREAM: u32 = 2;
pub const ROLE_INJECTOR: u32 = 3;

pub const CONN_FAST: u32 = 0x1;
pub const CONN_GATE_OPEN: u32 = 0x4;
pub const CONN_HOLD: u32 = 0x8;
pub const CONN_UNHOLD: u32 = 0x10;

pub const UP_EMPTY: u32 = 0;
pub const UP_ACTIVE: u32 = 1;
pub const UP_DRAINING: u32 = 2;

pub const STREAM_SLOW: u32 = 0x1;
pub const STREAM_CLIENT_END: u32 = 0x2;
pub const STREAM_SERVER_END: u32 = 0x4;
pub const STREAM_ANSWERED: u32 = 0x8;
pub const STREAM_RELEASE: u32 = 0x10;
pub const STREAM_WINDOW_GRANTED: u32 = 0x20;

pub const ROUTE_CLIENT: u32 = 0;
pub const ROUTE_ACT_NONE: u32 = 0;
pub const ROUTE_ACT_GATE: u32 = 1;
pub const ROUTE_ACT_RELEASE_UPSTREAM: u32 = 2;
pub const ROUTE_ACT_RELEASE_STREAM: u32 = 3;
pub const ROUTE_ACT_UNHOLD: u32 = 4;

pub const EV_REQ_DATA: u32 = 1;
pub const EV_RESP_DATA: u32 = 2;
pub const EV_DIVERTED: u32 = 3;
pub const EV_STREAM_WINDOW: u32 = 4;
pub const EV_STREAM_CLOSED: u32 = 5;

pub const STAT_NAMES: [&str; 12] = [
    "redirect_upstream",
    "redirect_client",
    "pass_agent",
    "divert",
    "bad_frame",
    "connect_rewrite",
    "no_upstream",
    "redirect_bytes",
    "agent_bytes",
    "fail_open_connect",
    "fail_open_accept",
    "unknown_frame",
];

macro_rules! pod {
    ($($t:ty),*) => {$(
        // SAFETY: plain integers, repr(C), no padding beyond what C has.
        unsafe impl aya::Pod for $t {}
    )*};
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub ip: u32, // network byte order
    pub port: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Service {
    pub id: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentConfig {
    pub listen_ip: u32,
    pub listen_port: u32,
    /// connect4 redirects no more client connections at once (0: no limit).
    pub max_clients: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin {
    pub ip: u32,
    pub port: u32,
    pub service_id: u32,
    pub counted: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientKey {
    pub client_ip: u32,
    pub agent_ip: u32,
    pub client_port: u32,
    pub agent_port: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerKey {
    pub ip: u32,
    pub port: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SockIdent {
    pub conn_id: u32,
    pub role: u32,
    pub slot: u32,
    /// Filled in by `Datapath::set_ident` (rotor.h).
    pub generation: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseState {
    pub next_seq: u32,
    pub msg_off: u32,
    pub seq_valid: u32,
    pub preface: u32,
    pub raw: u32,
    pub preface_seen: u32,
    pub first_seq: u32,
    pub kind: u32,
    pub len: u32,
    pub stream: u32,
    pub kind_type: u32,
    pub flags: u32,
    pub first_flags: u32,
    pub passed: u32,
    pub parse_calls: u32,
    pub last_seq: u32,
    pub last_skb_len: u32,
    pub last_ret: i32,
    pub client_window: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamKey {
    pub conn_id: u32,
    pub stream: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Stream {
    pub slot: u32,
    pub flags: u32,
    pub last_passed: u32,
    pub consumed: u32,
    pub req_sent: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Route {
    pub conn_id: u32,
    pub target: u32,
    pub action: u32,
    pub arg: u32,
    pub stream: u32,
    pub generation: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Event {
    pub conn_id: u32,
    pub kind: u32,
    pub slot: u32,
    pub stream: u32,
}

pod!(
    ServiceKey,
    Service,
    AgentConfig,
    Origin,
    ClientKey,
    PeerKey,
    SockIdent,
    ParseState,
    StreamKey,
    Stream
);

/// `struct upstream`, as the agent sees it in the memory-mapped `conns`
/// array: the programs change these fields concurrently, so every access is
/// atomic.
#[repr(C)]
#[derive(Debug, Default)]
pub struct UpstreamShared {
    pub state: AtomicU32,
    pub streams: AtomicU32,
    pub req_data: AtomicU64,
    pub req_limit: AtomicU64,
    pub req_notify: AtomicU64,
    pub resp_data: AtomicU64,
    pub resp_notify: AtomicU64,
    pub diverted: AtomicU32,
    pub max_streams: AtomicU32,
    pub passed: AtomicU32,
    pub last_diverted: AtomicU32,
    pub consumed: AtomicU32,
    pub release: AtomicU32,
    pub stream_window_extra: AtomicU32,
    /// The endpoint refused a stream: none goes there until one of its open
    /// streams ends (rotor.h).
    pub refused: AtomicU32,
}

impl UpstreamShared {
    /// Whether a new stream may go to this upstream now: the kernel's
    /// `up_takes_stream`, less the state the agent checks on its side.
    pub fn has_room(&self, max_streams: u32) -> bool {
        let open = self.streams.load(Ordering::SeqCst);
        open < max_streams && !(self.refused.load(Ordering::SeqCst) != 0 && open > 0)
    }
}

/// `struct conn` in the memory-mapped `conns` array.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ConnShared {
    pub client_ip: AtomicU32,
    pub agent_ip: AtomicU32,
    pub client_port: AtomicU32,
    pub agent_port: AtomicU32,
    pub flags: AtomicU32,
    pub service_id: AtomicU32,
    pub consumed: AtomicU32,
    pub generation: AtomicU32,
    pub last_stream: AtomicU32,
    pub next: AtomicU32,
    pub first_slot: AtomicU32,
    pub hold_consumed: AtomicU32,
    pub client_recv: AtomicU64,
    pub client_limit: AtomicU64,
    pub up: [UpstreamShared; MAX_UPSTREAMS],
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[allow(non_upper_case_globals)]
    mod c {
        include!(concat!(env!("OUT_DIR"), "/abi_layout.rs"));
    }

    #[test]
    fn sizes_match_the_c_header() {
        assert_eq!(size_of::<ServiceKey>(), c::SIZE_service_key);
        assert_eq!(size_of::<Service>(), c::SIZE_service);
        assert_eq!(size_of::<AgentConfig>(), c::SIZE_agent_config);
        assert_eq!(size_of::<Origin>(), c::SIZE_origin);
        assert_eq!(size_of::<ClientKey>(), c::SIZE_client_key);
        assert_eq!(size_of::<PeerKey>(), c::SIZE_peer_key);
        assert_eq!(size_of::<SockIdent>(), c::SIZE_sock_ident);
        assert_eq!(size_of::<ParseState>(), c::SIZE_parse_state);
        assert_eq!(size_of::<UpstreamShared>(), c::SIZE_upstream);
        assert_eq!(size_of::<ConnShared>(), c::SIZE_conn);
        assert_eq!(size_of::<StreamKey>(), c::SIZE_stream_key);
        assert_eq!(size_of::<Stream>(), c::SIZE_stream);
        assert_eq!(size_of::<Route>(), c::SIZE_route);
        assert_eq!(size_of::<Event>(), c::SIZE_event);
        assert_eq!(MAX_UPSTREAMS, c::MAX_UPSTREAMS);
    }

    #[test]
    fn offsets_match_the_c_header() {
        assert_eq!(offset_of!(ConnShared, flags), c::OFF_conn_flags);
        assert_eq!(offset_of!(ConnShared, consumed), c::OFF_conn_consumed);
        assert_eq!(offset_of!(ConnShared, last_stream), c::OFF_conn_last_stream);
        assert_eq!(offset_of!(ConnShared, first_slot), c::OFF_conn_first_slot);
        assert_eq!(
            offset_of!(ConnShared, hold_consumed),
            c::OFF_conn_hold_consumed
        );
        assert_eq!(offset_of!(ConnShared, client_recv), c::OFF_conn_client_recv);
        assert_eq!(
            offset_of!(ConnShared, client_limit),
            c::OFF_conn_client_limit
        );
        assert_eq!(offset_of!(ConnShared, up), c::OFF_conn_up);
        assert_eq!(
            offset_of!(UpstreamShared, req_data),
            c::OFF_upstream_req_data
        );
        assert_eq!(
            offset_of!(UpstreamShared, req_limit),
            c::OFF_upstream_req_limit
        );
        assert_eq!(
            offset_of!(UpstreamShared, req_notify),
            c::OFF_upstream_req_notify
        );
        assert_eq!(
            offset_of!(UpstreamShared, resp_data),
            c::OFF_upstream_resp_data
        );
        assert_eq!(
            offset_of!(UpstreamShared, resp_notify),
            c::OFF_upstream_resp_notify
        );
        assert_eq!(
            offset_of!(UpstreamShared, diverted),
            c::OFF_upstream_diverted
        );
        assert_eq!(offset_of!(ParseState, passed), c::OFF_parse_state_passed);
        assert_eq!(offset_of!(ParseState, kind), c::OFF_parse_state_kind);
        assert_eq!(
            offset_of!(ParseState, client_window),
            c::OFF_parse_state_client_window
        );
        assert_eq!(offset_of!(UpstreamShared, passed), c::OFF_upstream_passed);
        assert_eq!(offset_of!(UpstreamShared, release), c::OFF_upstream_release);
        assert_eq!(offset_of!(Route, stream), c::OFF_route_stream);
        assert_eq!(offset_of!(Stream, consumed), c::OFF_stream_consumed);
        assert_eq!(offset_of!(Stream, last_passed), c::OFF_stream_last_passed);
        assert_eq!(
            offset_of!(UpstreamShared, last_diverted),
            c::OFF_upstream_last_diverted
        );
        assert_eq!(
            offset_of!(UpstreamShared, consumed),
            c::OFF_upstream_consumed
        );
        assert_eq!(
            offset_of!(UpstreamShared, stream_window_extra),
            c::OFF_upstream_stream_window_extra
        );
        assert_eq!(offset_of!(UpstreamShared, refused), c::OFF_upstream_refused);
        assert_eq!(offset_of!(Stream, req_sent), c::OFF_stream_req_sent);
        assert_eq!(offset_of!(Event, stream), c::OFF_event_stream);
        assert_eq!(
            offset_of!(SockIdent, generation),
            c::OFF_sock_ident_generation
        );
        assert_eq!(offset_of!(Route, generation), c::OFF_route_generation);
    }
    #[test]
    fn an_upstream_that_refused_takes_no_stream_until_one_ends() {
        let up = UpstreamShared::default();
        up.streams.store(1, Ordering::SeqCst);
        assert!(up.has_room(2));
        up.refused.store(1, Ordering::SeqCst);
        assert!(!up.has_room(2), "refused with a stream open");
        up.streams.store(0, Ordering::SeqCst);
        assert!(
            up.has_room(2),
            "refused, nothing open: nothing will clear the flag"
        );
        up.streams.store(2, Ordering::SeqCst);
        up.refused.store(0, Ordering::SeqCst);
        assert!(!up.has_room(2), "at the endpoint's limit");
    }
}
