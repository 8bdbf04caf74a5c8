//! One connection's state as the agent holds it at its quiet point
//! (`Message::Conn`): what the successor needs to run the connection on,
//! in the same task types (agent/client/handover.rs). The kernel's side of
//! the connection (`conns[id]`, its streams, parse states and socket
//! identities) is not here: it lives in the adopted maps, untouched.
//!
//! The state comes from the other agent, so it is checked before anything
//! is built from it (`validate`): bounded sizes, slots in range and
//! distinct, addresses that parse.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::ebpf::abi::MAX_UPSTREAMS;

/// Bytes of a message begun but not yet whole, per reader: a message is at
/// most a header block (ROTOR_MAX_BLOCK) or a frame; more is not a state
/// an agent leaves.
pub const MAX_BUFFERED: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnState {
    /// The Service, by name and address: ids are per agent.
    pub service: String,
    pub vip: SocketAddr,
    pub client: SocketAddr,
    /// The client socket's cookie (its `sock_idents` entry names `id`).
    pub cookie: u64,
    /// Messages the agent read from the client's socket (the kernel's gate
    /// and releases are counted in them).
    pub consumed: u32,
    pub gate_sent: Option<u32>,
    pub acked: bool,
    pub client_settings_seen: bool,
    pub first_slot: u32,
    pub last_stream: u32,
    pub read_bytes: u64,
    pub advertised_streams: Option<u32>,
    pub windows: WindowsState,
    pub subset_offset: u64,
    pub subset_last_stream: u32,
    pub unhold_sent: Option<u32>,
    /// Client bytes read but not yet a whole message.
    pub buffered: Vec<u8>,
    /// The upstreams with a socket, in the order their sockets follow the
    /// client's in the message.
    pub slots: Vec<SlotState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowsState {
    pub initial: u32,
    pub increments: u64,
    pub granted: u64,
    pub data_seen: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotState {
    pub slot: u32,
    pub endpoint: SocketAddr,
    /// Left the Service (or the connection's window): no new streams.
    pub draining: bool,
    pub cookie: u64,
    pub agent_req: u64,
    pub granted_resp: u64,
    pub agent_resp: u64,
    pub max_streams: u32,
    pub from_endpoint: u32,
    pub release_sent: Option<u32>,
    /// Messages its reader handed the connection, and the start of one it
    /// had not finished reading.
    pub reader_messages: u32,
    pub reader_buffered: Vec<u8>,
    /// Bytes the agent read itself in the handshake, before the kernel
    /// parsed the socket (liveness.rs compares the two).
    pub read_bytes: u64,
    /// Its peer is the multiplexer of the agent that hands it over (or of
    /// one before that), not the endpoint: the successor drains it and
    /// dials the endpoint its own way, while that agent keeps the
    /// multiplexer until the upstream closes (agent/pool.rs, `park`).
    /// Offered only to a successor that said `adopts_shared`.
    #[serde(default)]
    pub through_multiplexer: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("connection id {0} out of range")]
    Id(u32),
    #[error("slot {0} out of range or named twice")]
    Slot(u32),
    #[error("{0} buffered bytes (at most {MAX_BUFFERED})")]
    Buffered(usize),
    #[error("{got} sockets for {want} (the client's and one per slot)")]
    Sockets { got: usize, want: usize },
}

impl ConnState {
    /// Checks what came over the channel: `conns` is the adopted
    /// connection table's length, `sockets` the descriptors that came.
    pub fn validate(&self, id: u32, conns: usize, sockets: usize) -> Result<(), StateError> {
        if id == 0 || id as usize >= conns {
            return Err(StateError::Id(id));
        }
        if sockets != 1 + self.slots.len() {
            return Err(StateError::Sockets {
                got: sockets,
                want: 1 + self.slots.len(),
            });
        }
        let mut seen = [false; MAX_UPSTREAMS];
        for s in &self.slots {
            let k = s.slot as usize;
            if k >= MAX_UPSTREAMS || seen[k] {
                return Err(StateError::Slot(s.slot));
            }
            seen[k] = true;
            if s.reader_buffered.len() > MAX_BUFFERED {
                return Err(StateError::Buffered(s.reader_buffered.len()));
            }
        }
        if self.buffered.len() > MAX_BUFFERED {
            return Err(StateError::Buffered(self.buffered.len()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ConnState {
        ConnState {
            service: "echo".into(),
            vip: "10.96.0.10:8080".parse().unwrap(),
            client: "10.0.0.2:40000".parse().unwrap(),
            cookie: 7,
            consumed: 12,
            gate_sent: Some(3),
            acked: true,
            client_settings_seen: true,
            first_slot: 1,
            last_stream: 21,
            read_bytes: 400,
            advertised_streams: None,
            windows: WindowsState {
                initial: 65_535,
                increments: 0,
                granted: 65_535,
                data_seen: 0,
            },
            subset_offset: 1,
            subset_last_stream: 0,
            unhold_sent: None,
            buffered: vec![],
            slots: vec![SlotState {
                slot: 0,
                endpoint: "10.1.0.1:8080".parse().unwrap(),
                draining: false,
                cookie: 9,
                agent_req: 0,
                granted_resp: 65_535,
                agent_resp: 0,
                max_streams: 100,
                from_endpoint: 4,
                release_sent: None,
                reader_messages: 4,
                reader_buffered: vec![],
                read_bytes: 60,
                through_multiplexer: false,
            }],
        }
    }

    #[test]
    fn a_state_survives_the_wire_and_is_checked() {
        let s = sample();
        let json = serde_json::to_value(&s).unwrap();
        let back: ConnState = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
        assert_eq!(s.validate(5, 16, 2), Ok(()));
        assert_eq!(s.validate(0, 16, 2), Err(StateError::Id(0)));
        assert_eq!(s.validate(16, 16, 2), Err(StateError::Id(16)));
        assert!(matches!(
            s.validate(5, 16, 1),
            Err(StateError::Sockets { got: 1, want: 2 })
        ));
        let mut twice = s.clone();
        twice.slots.push(twice.slots[0].clone());
        assert_eq!(twice.validate(5, 16, 3), Err(StateError::Slot(0)));
        let mut far = s.clone();
        far.slots[0].slot = MAX_UPSTREAMS as u32;
        assert!(matches!(far.validate(5, 16, 2), Err(StateError::Slot(_))));
        let mut big = s;
        big.buffered = vec![0; MAX_BUFFERED + 1];
        assert!(matches!(
            big.validate(5, 16, 2),
            Err(StateError::Buffered(_))
        ));
    }
}
