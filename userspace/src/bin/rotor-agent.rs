//! rotor-agent: per-request HTTP/2 balancing for the Services in --config.

use std::net::SocketAddrV4;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(version, about = "Per-request HTTP/2 and gRPC load balancing in the kernel")]
struct Args {
    /// YAML file of services (reloaded when it changes).
    #[arg(long, required_unless_present = "probe")]
    config: Option<PathBuf>,
    /// cgroup v2 directory whose processes are balanced (/sys/fs/cgroup on most nodes).
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup: PathBuf,
    /// Address the kernel redirects balanced connections to.
    #[arg(long, default_value = "127.0.0.1:15001")]
    listen: SocketAddrV4,
    /// Admin socket read by the `rotor` CLI.
    #[arg(long, default_value = "/run/rotor/admin.sock")]
    admin: PathBuf,
    /// Most client connections balanced at once.
    #[arg(long, default_value_t = 16384)]
    max_conns: u32,
    /// Check that this kernel has every feature rotor needs, print the result and exit.
    #[arg(long)]
    probe: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.probe {
        let cgroup = args.cgroup.exists().then_some(args.cgroup.as_path());
        let support = rotor::ebpf::probe::probe_kernel(cgroup)?;
        println!("kernel {}: all {} features rotor needs are present", support.kernel, support.checked.len());
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(rotor::agent::run(rotor::agent::AgentOptions {
        config: args.config.unwrap_or_default(),
        cgroup: args.cgroup,
        listen: args.listen,
        admin: args.admin,
        max_conns: args.max_conns,
    }))
}
