//! The agent: loads the kernel side, accepts the connections it redirects,
//! keeps the upstreams, and applies the endpoint model.

pub mod admin;
mod apply;
pub mod budget;
pub mod caps;
mod client;
mod drain;
mod endpoint_socket;
mod events;
mod fail_open;
mod files;
pub mod handover;
pub mod health;
mod injector;
mod listeners;
mod liveness;
pub mod metrics;
pub mod metrics_counts;
pub mod metrics_page;
mod pace;
pub mod pool;
mod registry;
pub mod self_check;
mod slot;
mod sockmap_io;
mod spare_taps;
mod splice;
mod tap;
mod trouble;

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncWriteExt;

pub use admin::Status;
pub use injector::{Injector, Target};
pub use registry::Registry;
pub use registry::{ConnInfo, SlotInfo, Spliced};

use crate::ebpf::{Datapath, LoadOptions};
use crate::model::kube::KubeSource;
use crate::model::{ConfigFile, Delta, Model, SourceHealth};

/// Where the Services and their endpoints come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A YAML file, reloaded when it changes.
    File(PathBuf),
    /// Services labelled `rotor.dev/balance` and their EndpointSlices;
    /// kubeconfig from this path, else inferred (KUBECONFIG, in-cluster).
    /// `node_name`: this node's (the downward API's spec.nodeName), else
    /// the host name.
    Kubernetes {
        kubeconfig: Option<PathBuf>,
        node_name: Option<String>,
    },
}

/// How often the agent says it is still waiting for the Kubernetes lists
/// at start. It waits for as long as it takes (not ready meanwhile): an API
/// server that is slow after a control-plane upgrade must not put every
/// node's agent into a crash loop.
const KUBE_SYNC_REPORT: Duration = Duration::from_secs(10);

pub struct AgentOptions {
    pub source: Source,
    pub cgroup: PathBuf,
    pub listen: SocketAddrV4,
    /// The IPv6 listener for native IPv6 clients (IPv6 ClusterIPs); without
    /// it, IPv6 Services keep their original path.
    pub listen6: Option<SocketAddrV6>,
    pub admin: PathBuf,
    pub max_conns: u32,
    /// Sizes of the per-socket maps and of `streams` (tests fill them).
    pub max_sockets: Option<u32>,
    pub max_streams: Option<u32>,
    /// Node-wide bound on the bytes the agent queues (budget.rs).
    pub max_queued_bytes: usize,
    /// How long a stopping agent carries its connections (drain.rs).
    pub drain_timeout: Duration,
    /// An endpoint's connect and HTTP/2 handshake (endpoint_socket.rs).
    pub connect_timeout: Duration,
    /// Upstreams per endpoint of the node's own, then shared (pool.rs).
    pub dedicated_upstreams: usize,
    pub shared_upstreams: usize,
    /// Where `/healthz` and `/readyz` are served (health.rs), if anywhere.
    pub health_addr: Option<SocketAddr>,
    /// Where `/metrics` is served, with the probes (metrics_page.rs).
    pub metrics_addr: Option<SocketAddr>,
    /// The kernel's per-endpoint counts and stream timestamps (off only
    /// to measure their cost: bench/src/endpoint_stats.rs).
    pub endpoint_stats: bool,
}

/// What every connection task shares.
pub struct Shared {
    pub dp: Arc<Datapath>,
    pub injector: Injector,
    pub registry: Arc<Registry>,
    pub budget: Arc<budget::Budget>,
    /// The agent's open files against its limit (files.rs).
    pub files: Arc<files::Files>,
    /// True once the agent stops: every connection goes away gracefully.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// Where the model stands with its source (`rotor status`).
    pub source: SourceHealth,
    /// Set while the agent hands its connections over (handover/give.rs):
    /// each offers itself there at its quiet point.
    pub handover: tokio::sync::watch::Sender<Option<Arc<handover::give::Sink>>>,
    /// Generations adopted from the agent before this one, each with the
    /// connections it handed over (handover/adopt.rs).
    pub adopted: std::sync::Mutex<Vec<Arc<Shared>>>,
    /// The model as applied, for a generation adopted later.
    pub model: std::sync::Mutex<Model>,
    /// An endpoint's connect and HTTP/2 handshake (`--connect-timeout`).
    pub connect_timeout: Duration,
    /// Taps for accepted sockets from their first byte (spare_taps.rs).
    pub spares: Arc<spare_taps::SparePool>,
    /// Upstreams per endpoint, node-wide, and the multiplexers (pool.rs).
    pub pools: Arc<pool::Pools>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Applies a change of the model to this agent's generation and to every
/// adopted one (their connections follow the Services too).
fn apply_everywhere(shared: &Shared, delta: &Delta) {
    apply::apply(shared, delta);
    let changed: std::collections::HashSet<(&str, SocketAddr)> = (delta.removed.iter())
        .chain(&delta.set)
        .map(|s| (s.name.as_str(), s.vip))
        .collect();
    let mut model = lock(&shared.model);
    model
        .services
        .retain(|s| !changed.contains(&(s.name.as_str(), s.vip)));
    model.services.extend(delta.set.iter().cloned());
    drop(model);
    for g in lock(&shared.adopted).iter() {
        apply::apply(g, delta);
    }
}

/// A generation adopted from the agent before this one runs beside this
/// one's: it gets the Services as they are, its connections count as this
/// agent's (status, drain), and it follows the model from now on.
pub(crate) fn adopt_generation(main: &Shared, generation: Arc<Shared>) {
    let model = lock(&main.model).clone();
    apply::apply(&generation, &Delta::between(&Model::default(), &model));
    main.registry.link(generation.registry.clone());
    lock(&main.adopted).push(generation);
}

/// How long an agent that handed connections over stays after the last
/// one left: its injector's socket may still hold frames the kernel has
/// not yet passed on, and closing it would drop them (ebpf/README.md
/// point 31).
const INJECTOR_GRACE: Duration = Duration::from_millis(500);

pub async fn run(opts: AgentOptions) -> anyhow::Result<()> {
    let health = health::Health::new();
    health.spawn_heartbeat();
    if let Some(addr) = opts.health_addr {
        health::serve(addr, health.clone())?;
    }
    if let Some(addr) = opts.metrics_addr.filter(|a| Some(*a) != opts.health_addr) {
        health::serve(addr, health.clone())?;
    }
    // Says which source from the first probe on: a node's kubelet (and
    // probes.rs, in a VM where building the client took seconds) sees
    // what the agent waits for, not a generic phase.
    health.waiting_for(match &opts.source {
        Source::File(_) => "reading the Services from the file",
        Source::Kubernetes { .. } => "connecting to the Kubernetes API server",
    });
    let (model, updates, source_health) = match &opts.source {
        Source::File(path) => {
            let mut config = ConfigFile::new(path);
            let model = config
                .poll()
                .context("reading the configuration")?
                .unwrap_or_default();
            let file = SourceHealth::new("file");
            file.synced();
            (model, Updates::File(config), file)
        }
        Source::Kubernetes {
            kubeconfig,
            node_name,
        } => {
            let client = crate::model::kube::client(kubeconfig.as_deref()).await?;
            let mut source = KubeSource::start(client, node_name.clone());
            let model = first_model(&mut source, &health).await?;
            let h = source.health();
            (model, Updates::Kubernetes(source), h)
        }
    };

    health.waiting_for("loading and attaching the programs");
    let (listener, listen_addr) = listeners::listen_v4(opts.listen)?;
    let (listener6, listen6_addr) = match opts.listen6 {
        Some(six) => {
            let (l, at) = listeners::listen_v6(six)?;
            (Some(l), Some(at))
        }
        None => (None, None),
    };
    let dp = Arc::new(
        Datapath::load(&LoadOptions {
            cgroup: opts.cgroup.clone(),
            listen: listen_addr,
            listen6: listen6_addr,
            max_conns: opts.max_conns,
            max_sockets: opts.max_sockets,
            max_streams: opts.max_streams,
            endpoint_stats: opts.endpoint_stats,
        })
        .context("loading the eBPF programs")?,
    );
    let registry = Arc::new(Registry::new());
    let injector = Injector::start(&dp).context("starting the injector")?;
    if let Some(ring) = dp.take_events() {
        events::spawn(ring, registry.clone())?;
    }
    let budget = budget::Budget::new(opts.max_queued_bytes);
    let shared = Arc::new(Shared {
        dp: dp.clone(),
        injector,
        registry: registry.clone(),
        budget: budget.clone(),
        files: Arc::new(files::Files::of_this_process()),
        stopping: tokio::sync::watch::channel(false).0,
        source: source_health,
        handover: tokio::sync::watch::channel(None).0,
        adopted: Default::default(),
        model: Default::default(),
        connect_timeout: opts.connect_timeout,
        spares: Arc::new(spare_taps::SparePool::new(&dp)),
        pools: pool::Pools::new(
            pool::PoolLimits {
                dedicated: opts.dedicated_upstreams,
                shared: opts.shared_upstreams,
                connect_timeout: opts.connect_timeout,
            },
            budget,
        ),
    });
    // Before the first accept: the connections that come before the
    // self-check's are clients' (sockops runs from the load on).
    shared.spares.refill(&dp);
    tokio::spawn(spare_taps::keep_filled(shared.spares.clone(), dp.clone()));
    tokio::spawn(files::reopen(shared.clone()));
    apply_everywhere(&shared, &Delta::between(&Model::default(), &model));
    let page = metrics_page::MetricsPage::start(shared.clone());
    let rendered = page.clone();
    health.set_metrics(Arc::new(move || rendered.render()));
    let admin =
        admin::spawn(&opts.admin, shared.clone(), page).context("starting the admin socket")?;
    // Without the channel the agent still stops well: it drains (drain.rs).
    let adopter = handover::adopt::Adopter::new(shared.clone(), opts.cgroup.clone());
    let handover = handover::channel::spawn(&opts.admin, Some(adopter))
        .inspect_err(|e| tracing::warn!(error = %e, "no handover channel beside the admin socket"))
        .ok();
    tokio::spawn(sweep_parse_states(dp.clone()));
    tokio::spawn(report_trouble(dp.clone()));
    match updates {
        Updates::File(config) => drop(tokio::spawn(watch_config(
            config,
            model.clone(),
            shared.clone(),
        ))),
        Updates::Kubernetes(source) => drop(tokio::spawn(watch_models(
            source,
            shared.clone(),
            health.clone(),
        ))),
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let accepting = tokio::spawn(accept(listener, shared.clone()));
    let accepting6 = listener6.map(|l| tokio::spawn(accept(l, shared.clone())));
    health.waiting_for("the self-check (a connect from the balanced cgroup redirected and served)");
    self_check::run(&dp, &opts.cgroup).await?;
    health.set_ready();
    tracing::info!(listen = %listen_addr, listen6 = ?listen6_addr, cgroup = %opts.cgroup.display(), services = model.services.len(), "agent ready: a connect from the balanced cgroup was redirected and served");
    let mut stdout = tokio::io::stdout();
    stdout.write_all(b"ready\n").await?;
    stdout.flush().await?;

    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let mut handed_over = 0;
    // Held until exit (handover/give.rs, Summary::channel).
    let mut _channel = None;
    if let Some(at) = handover.as_ref().map(handover::channel::Channel::at_stop) {
        let handover::channel::AtStop {
            successor,
            plan,
            stream,
        } = at;
        match (&plan, stream) {
            (handover::Plan::Drain(why), _) => {
                tracing::info!(
                    ?successor,
                    "stopping: connections are drained with GOAWAY, not handed over: {why}"
                )
            }
            (handover::Plan::HandOver, None) => {}
            (handover::Plan::HandOver, Some(stream)) => {
                tracing::info!(?successor, "stopping: connections are handed over");
                let adopts_shared = successor
                    .as_ref()
                    .is_some_and(handover::Message::adopts_shared);
                let done = handover::give::hand_over(&shared, stream, adopts_shared).await;
                tracing::info!(
                    handed_over = done.handed_over,
                    drained = done.drained,
                    "handover done"
                );
                handed_over = done.handed_over;
                _channel = done.channel;
            }
        }
    }
    drain::stop(&shared, opts.drain_timeout).await;
    if handed_over > 0 {
        tokio::time::sleep(INJECTOR_GRACE).await;
    }
    accepting.abort();
    if let Some(a) = accepting6 {
        a.abort();
    }
    tracing::info!("agent stopped; programs detach with it");
    admin.remove();
    if let Some(h) = &handover {
        h.remove();
    }
    Ok(())
}

/// Every connection the kernel redirects to the agent gets a task.
/// An agent out of file descriptors fails every accept until one frees up
/// (its connections wait in the listen queue meanwhile): one warning per
/// ACCEPT_WARN_EVERY, not one per 10 ms retry.
async fn accept(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let mut warned: Option<(tokio::time::Instant, u64)> = None;
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                let now = tokio::time::Instant::now();
                match &mut warned {
                    Some((at, failed)) if now.duration_since(*at) < ACCEPT_WARN_EVERY => {
                        *failed += 1
                    }
                    _ => {
                        let since = warned.map_or(0, |(_, failed)| failed);
                        tracing::warn!(error = %e, failed_since_last_warning = since,
                            "accept failed; connections wait in the listen queue");
                        warned = Some((now, 0));
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        warned = None;
        // The kernel keys the peer as its IPv4 address if it is one.
        let peer = crate::ebpf::addr::canonical(peer);
        let _ = sock.set_nodelay(true);
        tokio::spawn(client::serve(shared.clone(), sock, peer));
    }
}

/// The parser can parse a closing socket's last bytes after the agent
/// forgot it, making a state nobody owns: such states are swept. Sweeps
/// stay a period apart after the agent was stopped or starved (no burst of
/// missed ticks), so the agent has run a whole period between the sweep
/// that finds a state unowned and the one that deletes it.
async fn sweep_parse_states(dp: Arc<Datapath>) {
    let mut unknown = std::collections::HashSet::new();
    let mut tick = tokio::time::interval(SWEEP_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let deleted;
        (unknown, deleted) = dp.sweep_parse_states(&unknown);
        if deleted > 0 {
            tracing::debug!(deleted, "parser states of closed sockets swept");
        }
    }
}

const SWEEP_PERIOD: Duration = Duration::from_secs(5);
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// Kernel counters that mean trouble reach the log (trouble.rs).
async fn report_trouble(dp: Arc<Datapath>) {
    let mut trouble = trouble::Trouble::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for g in trouble.grew(&dp.stats()) {
            tracing::warn!(
                counter = g.counter,
                new = g.new,
                total = g.total,
                "{}",
                g.what
            );
        }
    }
}

/// The source, once its first model is read.
enum Updates {
    File(ConfigFile),
    Kubernetes(KubeSource),
}

/// The first complete model, however long the API server takes; readiness
/// says what the agent waits for meanwhile.
async fn first_model(source: &mut KubeSource, health: &health::Health) -> anyhow::Result<Model> {
    health.waiting_for("the Kubernetes Services and EndpointSlices to be listed");
    let start = tokio::time::Instant::now();
    loop {
        match source.first(KUBE_SYNC_REPORT).await {
            Ok(model) => return Ok(model),
            Err(e @ crate::model::kube::KubeError::NotSynced { .. }) => {
                let waited = start.elapsed().as_secs();
                tracing::warn!(error = %e, waited_s = waited, "still waiting for the Kubernetes API server; not ready");
                health.waiting_for(format!("waiting for the Kubernetes API server: {e}"));
            }
            Err(e) => return Err(e).context("the Kubernetes source"),
        }
    }
}

async fn watch_models(mut source: KubeSource, shared: Arc<Shared>, health: Arc<health::Health>) {
    while let Some(delta) = source.next().await {
        apply_everywhere(&shared, &delta);
    }
    tracing::error!("the Kubernetes source stopped; keeping the last model");
    health.source_stopped("the Kubernetes watch ended");
}

async fn watch_config(mut config: ConfigFile, mut applied: Model, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        match config.poll() {
            Ok(Some(model)) => {
                apply_everywhere(&shared, &Delta::between(&applied, &model));
                applied = model;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "configuration not applied; keeping the previous one")
            }
        }
    }
}
