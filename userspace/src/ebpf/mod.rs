//! Loading, attaching and typed access to the kernel side (ebpf/).

pub mod abi;
mod cgroup;
mod conn_table;
mod datapath;
pub mod own_socks;
pub mod probe;

pub use cgroup::{is_within as cgroup_is_within, own_cgroup};
pub use conn_table::ConnTable;
pub use datapath::{
    socket_cookie, tcp_fin_acked, tcp_received, upstream_key, verdict_bytes, Datapath,
    DatapathError, LoadOptions,
};
