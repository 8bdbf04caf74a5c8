//! rotor-agent: per-request HTTP/2 balancing for the Services in --config,
//! or for the Kubernetes Services labelled `rotor.dev/balance`.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser, ValueEnum};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SourceKind {
    /// The YAML file given by --config.
    File,
    /// Services labelled rotor.dev/balance and their EndpointSlices.
    Kubernetes,
}

#[derive(Parser)]
#[command(
    name = "rotor-agent",
    version,
    about = "Per-request HTTP/2 and gRPC load balancing in the kernel"
)]
struct Args {
    /// Where services and endpoints come from.
    #[arg(long, value_enum, default_value = "file")]
    source: SourceKind,
    /// YAML file of services (reloaded when it changes); with --source file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// kubeconfig for --source kubernetes (default: KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// This node's name (the DaemonSet sets NODE_NAME from spec.nodeName):
    /// the reporting instance of the Events the agent posts.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// cgroup v2 directory whose processes are balanced (/sys/fs/cgroup on most nodes).
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup: PathBuf,
    /// Address the kernel redirects balanced connections to.
    #[arg(long, default_value = "127.0.0.1:15001")]
    listen: SocketAddrV4,
    /// IPv6 address native IPv6 clients are redirected to (IPv6 and
    /// dual-stack Services' IPv6 ClusterIPs); an address of this node,
    /// e.g. [$NODE_IP]:15001 on an IPv6-only node. Without it IPv6
    /// ClusterIPs keep kube-proxy's path.
    #[arg(long, value_name = "[ADDR]:PORT")]
    listen6: Option<SocketAddrV6>,
    /// Admin socket read by the `rotor` CLI.
    #[arg(long, default_value = "/run/rotor/admin.sock")]
    admin: PathBuf,
    /// Most client connections balanced at once.
    #[arg(long, default_value_t = 16384)]
    max_conns: u32,
    /// Most bytes the agent queues for all peers together (frames waiting
    /// for a window or a busy task, and its own frames not yet written).
    /// Past it the connection or upstream holding the most is cut (GOAWAY
    /// ENHANCE_YOUR_CALM), and new connections stay on their original path
    /// until the total is under three quarters of it. Each peer has its own
    /// bound too (8 MiB of DATA and 4 MiB of other frames per queue). The
    /// memory limit must hold it beside the agent at rest and its
    /// connections' fixed buffers (README, "Resources": the DaemonSet
    /// passes 128 MiB within a 768 MiB limit for --max-conns 4096).
    #[arg(long, default_value_t = 256 << 20, value_name = "BYTES")]
    max_queued_bytes: usize,
    /// Entries of the per-socket maps (tests fill them with a few connections).
    #[arg(long, hide = true)]
    max_sockets: Option<u32>,
    /// Entries of the streams map (tests fill it with a few streams).
    #[arg(long, hide = true)]
    max_streams: Option<u32>,
    /// No per-endpoint counts or stream timestamps in the kernel: the
    /// benchmark's baseline for what they cost (`cargo xtask bench --endpoint-stats`).
    #[arg(long, hide = true)]
    no_endpoint_stats: bool,
    /// On SIGTERM, how long the agent goes on carrying the connections it
    /// has, after telling each client to go away (GOAWAY) and letting new
    /// connects take the path of an agent started beside it, or their
    /// original one. Keep it below the pod's terminationGracePeriodSeconds.
    #[arg(long, default_value = "25", value_name = "SECONDS")]
    drain_timeout: u64,
    /// How long the agent waits for an endpoint to accept a connection and
    /// finish the HTTP/2 handshake (its SETTINGS and the ACK of ours)
    /// before it takes the endpoint out of that connection's rotation and
    /// tries it again with backoff (Envoy's cluster connect_timeout).
    #[arg(long, default_value = "3", value_name = "SECONDS", value_parser = parse_seconds)]
    connect_timeout: std::time::Duration,
    /// Upstream connections to one endpoint that the node's client
    /// connections hold each of their own (the kernel carries their
    /// streams). Past them, a client connection's upstream to the endpoint
    /// goes to the agent's multiplexer for it, which carries all such
    /// streams over --shared-upstreams connections: at most the sum of the
    /// two connections from a node to any endpoint. A busy client
    /// connection on a multiplexer gets one of these from an idle holder,
    /// which goes through the multiplexer instead.
    #[arg(long, default_value_t = 24, value_name = "N")]
    dedicated_upstreams: usize,
    /// Connections an endpoint's multiplexer opens to it (0: no sharing,
    /// every client connection has its own upstream to every endpoint).
    #[arg(long, default_value_t = 8, value_name = "N")]
    shared_upstreams: usize,
    /// Serve GET /healthz (alive: not wedged) and /readyz (model applied,
    /// programs attached, self-check passed) on this address, e.g. $(NODE_IP):15021.
    #[arg(long, value_name = "ADDR")]
    health_addr: Option<SocketAddr>,
    /// Serve GET /metrics (Prometheus text format: per-endpoint requests,
    /// time to first byte, resets, connections by path) on this address,
    /// with /healthz and /readyz, e.g. $(NODE_IP):15020. May be the
    /// --health-addr.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Check that this kernel has every feature rotor needs, print the result and exit.
    #[arg(long)]
    probe: bool,
    /// The agent's own start-up check: connect to ADDR as a balanced client would.
    #[arg(long, hide = true, value_name = "ADDR")]
    self_check_connect: Option<SocketAddrV4>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.self_check_connect.is_none() {
        // Before any bpf(): without CAP_NET_ADMIN the probe would report
        // features as missing from a kernel that has them (caps.rs).
        rotor::agent::caps::check()?;
    }
    if args.probe {
        let cgroup = args.cgroup.exists().then_some(args.cgroup.as_path());
        let support = rotor::ebpf::probe::probe_kernel(cgroup)?;
        println!(
            "kernel {}: all {} features rotor needs are present",
            support.kernel,
            support.checked.len()
        );
        return Ok(());
    }
    if let Some(vip) = args.self_check_connect {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?;
        runtime.block_on(rotor::agent::self_check::connect(vip))?;
        return Ok(());
    }
    let source = match (args.source, args.config, args.kubeconfig) {
        (SourceKind::File, Some(path), None) => rotor::agent::Source::File(path),
        (SourceKind::File, None, None) => Args::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--config FILE is required with --source file",
            )
            .exit(),
        (SourceKind::File, _, Some(_)) => Args::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--kubeconfig needs --source kubernetes",
            )
            .exit(),
        (SourceKind::Kubernetes, None, kubeconfig) => rotor::agent::Source::Kubernetes {
            kubeconfig,
            node_name: args.node_name,
        },
        (SourceKind::Kubernetes, Some(_), _) => Args::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--config is for --source file",
            )
            .exit(),
    };
    raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(rotor::agent::run(rotor::agent::AgentOptions {
        source,
        cgroup: args.cgroup,
        listen: args.listen,
        listen6: args.listen6,
        admin: args.admin,
        max_conns: args.max_conns,
        max_sockets: args.max_sockets,
        max_streams: args.max_streams,
        max_queued_bytes: args.max_queued_bytes,
        drain_timeout: std::time::Duration::from_secs(args.drain_timeout),
        connect_timeout: args.connect_timeout,
        dedicated_upstreams: args.dedicated_upstreams,
        shared_upstreams: args.shared_upstreams,
        health_addr: args.health_addr,
        metrics_addr: args.metrics,
        endpoint_stats: !args.no_endpoint_stats,
    }))
}

/// Every balanced client costs the agent one socket and one per endpoint it
/// connects to: 200 clients of a 3-pod Service hold 800, past the soft limit
/// of 1,024 that most container runtimes and systemd hand a process (its
/// hard limit is far higher). Out of descriptors, accept and connect fail
/// with EMFILE and new clients hang until they time out (limits.rs: h2load
/// -c 200 under a soft limit of 256). The soft limit goes up to the hard one.
fn raise_open_file_limit() {
    match rotor::sys::raise_open_files() {
        Ok((from, to)) if from != to => tracing::info!(from, to, "open file limit raised"),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "raising the open file limit"),
    }
}

/// Seconds, fractions allowed (`0.5`), more than zero and at most a day.
fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!("{s}: want more than 0 and at most 86400 seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}
