//! Whether connect4/connect6 send new connections to the agent at all.
//!
//! connect.c leaves a connection on its original path while the balanced
//! client sockets open are `agent_config.max_clients` or more (README R25).
//! The agent lowers that bound to 1 when it cannot carry another
//! connection for want of open files (agent/files.rs): a connection the
//! kernel no longer sends costs the agent nothing, where one it sends and
//! the agent then leaves on its path costs a descriptor for as long as it
//! lives (agent/fail_open.rs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use aya::maps::{Array, MapData};

use crate::ebpf::abi::AgentConfig;

pub struct ConnectGate {
    map: Mutex<Array<MapData, AgentConfig>>,
    /// As loaded: the agent's table (`--max-conns`) is the bound.
    open: AgentConfig,
    closed: AtomicBool,
}

impl ConnectGate {
    pub fn new(map: Array<MapData, AgentConfig>, open: AgentConfig) -> ConnectGate {
        ConnectGate {
            map: Mutex::new(map),
            open,
            closed: AtomicBool::new(false),
        }
    }

    /// Closes (`true`) or opens the gate; returns whether that changed it.
    /// connect.c reads the value's fields one by one: every field but
    /// max_clients stays as loaded, so no read sees a mix that matters.
    pub fn set_closed(&self, closed: bool) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if self.closed.load(Ordering::Relaxed) == closed {
            return false;
        }
        let value = AgentConfig {
            // 0 would mean no bound; with 1, any open client closes it
            max_clients: if closed { 1 } else { self.open.max_clients },
            ..self.open
        };
        match map.set(0, value, 0) {
            Ok(()) => {
                self.closed.store(closed, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, closed, "agent_config: the connect programs' bound not changed");
                false
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}
