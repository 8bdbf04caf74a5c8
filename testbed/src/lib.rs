//! rotor's test bed: network namespaces, a cgroup, real HTTP/2 peers (nghttpd,
//! curl, nghttp, h2load), a Rust load client, and the agent, all cleaned up on drop.
//! The integration tests (`tests/`), the benchmark (`bench/`) and the demo
//! (`demo/`) all run on it.
//!
//! Every resource is a guard: [`Netns`], [`TestCgroup`], [`Child`], [`Topology`],
//! [`Agent`]. Drop order matters only in that processes should go before the
//! namespace they run in; declaring `topo`, then `cgroup`, then `agent` as locals
//! gets that right (locals drop in reverse order), and [`TestBed`] does it for you.
//!
//! ```no_run
//! use rotor_testbed::{LoadSpec, TestBed};
//!
//! # fn main() -> anyhow::Result<()> {
//! let bed = TestBed::with_agent(3)?; // client, node, be1..be3, cgroup, rotor-agent
//! let report = bed.load(&LoadSpec::whoami(1, 8, 3000))?; // rotor-load in client netns + cgroup
//! assert_eq!(report.failed, 0);
//! println!("{:?}", bed.topo.request_counts()?); // counted by each nghttpd
//! # Ok(()) }
//! ```
//!
//! Children get SIGKILL when the thread that spawned them dies (PR_SET_PDEATHSIG),
//! and names carry the owner pid, so `cargo xtask clean` can remove what a killed
//! run left behind.

pub mod agent;
pub mod backend;
pub mod bed;
pub mod bounds;
pub mod cgroup;
pub mod content;
pub mod delay_line;
pub mod kube_api;
pub mod load;
pub mod loadgen;
pub mod netns;
pub mod process;
pub mod sweep;
pub mod tools;
pub mod topology;
pub mod util;

pub use agent::Agent;
pub use backend::Backend;
pub use bed::TestBed;
pub use bounds::{scaled, scaled_secs, time_scale, wait_until};
pub use cgroup::TestCgroup;
pub use load::{run_load, spawn_load, uneven_spread, LoadSpec, RunningLoad};
pub use loadgen::LoadReport;
pub use netns::Netns;
pub use process::{Child, Stream};
pub use topology::{backend_addr, Topology, AGENT_LISTEN, VIP};

/// Whether this process can build the test bed (root, `ip`, a cgroup2 mount).
/// Tests fail with its message on a machine without them (they never skip).
pub fn environment_ok() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("rotor tests need root (network namespaces, cgroups)");
    }
    cgroup::cgroup2_root()?;
    for tool in ["ip", "nsenter", "iptables-restore", "nghttpd"] {
        if !std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join(tool).is_file())
        {
            anyhow::bail!("`{tool}` not found in PATH");
        }
    }
    Ok(())
}
