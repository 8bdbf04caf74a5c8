//! Loading, attaching and typed access to the kernel side (ebpf/).

pub mod abi;
pub mod addr;
mod cgroup;
#[allow(unsafe_code)] // the memory-mapped connection table, fenced here
mod conn_table;
mod datapath;
pub mod own_socks;
pub mod probe;

pub use cgroup::{is_within as cgroup_is_within, own_cgroup};
pub use conn_table::{ConnTable, LatencyTable};
pub use datapath::{
    upstream_key, verdict_bytes, Datapath, DatapathError, LoadOptions, Loaded, SocketRoom,
};
// The socket options the programs' bookkeeping is compared with; the calls
// themselves live in crate::sys with the agent's other raw syscalls.
pub use crate::sys::{socket_cookie, tcp_fin_acked, tcp_received, TcpReceived};
