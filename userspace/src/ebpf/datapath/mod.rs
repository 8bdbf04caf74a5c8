//! The loaded kernel side: programs attached to a cgroup and to the socket
//! hashes, and typed handles to the maps the agent writes.
//!
//! Cgroup programs are attached through bpf links owned by this process and
//! the sk_skb programs through the socket hashes it owns: when the agent
//! exits, everything detaches and connections go the normal way (fail-open).

use std::fs::File;
use std::net::{SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf, SockHash};
// Links ignore the attach mode: several can share a cgroup.
use aya::programs::cgroup_sock_addr::CgroupSockAddrLink;
use aya::programs::{CgroupAttachMode, CgroupSockAddr, ProgramError, SkSkb, SockOps};
use aya::{Ebpf, EbpfError, EbpfLoader};

use super::abi::*;
use super::conn_table::{ConnTable, ConnTableError, LatencyTable};

mod adopt;
mod endpoints;
mod gate;
mod room;
mod sockets;
mod streams;
mod taps;

pub use room::SocketRoom;
pub use sockets::{upstream_key, verdict_bytes};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rotor.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the eBPF object failed (kernel {kernel}); rotor needs sockmap, sk_skb and cgroup programs (Linux 6.1+)")]
    Load {
        kernel: String,
        // Boxed: aya's error is large, and every Result of this module
        // would carry its size.
        source: Box<EbpfError>,
    },
    #[error("program {name} (kernel {kernel})")]
    Program {
        name: &'static str,
        kernel: String,
        source: ProgramError,
    },
    #[error("map {0} missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map {name}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("cgroup {path}: pass the cgroup v2 directory with --cgroup (e.g. /sys/fs/cgroup)")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("map {name}: its descriptor")]
    Descriptor {
        name: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    ConnTable(#[from] ConnTableError),
    #[error(transparent)]
    Probe(#[from] super::probe::ProbeError),
}

pub struct LoadOptions {
    pub cgroup: PathBuf,
    pub listen: SocketAddrV4,
    /// The IPv6 listener native IPv6 clients are sent to; without one,
    /// IPv6 Services keep their original path.
    pub listen6: Option<SocketAddrV6>,
    pub max_conns: u32,
    /// Entries of the per-socket maps (sock_idents, parse_states,
    /// upstream_socks, and agent_socks when given); default 4 × 65,536.
    pub max_sockets: Option<u32>,
    /// Entries of `streams`; default 262,144.
    pub max_streams: Option<u32>,
    /// Per-endpoint counts and stream timestamps in the kernel (on but in
    /// the benchmark that measures their cost: maps.h, endpoint_stats_on).
    pub endpoint_stats: bool,
}

/// bpf_map_update_elem: only if the key is not there yet.
const BPF_NOEXIST: u64 = 1;

/// The compiled-in sizes of ebpf/lib/maps.h.
const MAX_CONNS: u32 = 65_536;
const MAX_STREAMS: u32 = 262_144;

/// What was found and attached at load, for `rotor status`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Loaded {
    pub kernel: String,
    /// The features the probe checked, every one found (else no load).
    pub features: Vec<String>,
    /// Each program and where it is attached.
    pub programs: Vec<(String, String)>,
    pub cgroup: PathBuf,
    pub listen: String,
}

/// Maps the agent writes, each behind its own lock (one syscall per use).
pub struct Datapath {
    /// The loaded object; none in a generation adopted from the agent
    /// before this one (adopt.rs), whose programs live in its maps.
    _ebpf: Option<Ebpf>,
    /// A descriptor of each of GENERATION_MAPS, for a successor (adopt.rs).
    generation: Vec<(&'static str, std::os::fd::OwnedFd)>,
    pub loaded: Loaded,
    _agent_socks: SockHash<MapData, ClientKey>,
    pub conns: ConnTable,
    /// Peak-EWMA latency per endpoint id (endpoints.rs).
    latency: LatencyTable,
    services: Mutex<HashMap<MapData, ServiceKey, Service>>,
    client_origins: Mutex<HashMap<MapData, PeerKey, Origin>>,
    sock_idents: Mutex<HashMap<MapData, u64, SockIdent>>,
    parse_states: Mutex<HashMap<MapData, u64, ParseState>>,
    streams: Mutex<HashMap<MapData, StreamKey, Stream>>,
    upstream_socks: Mutex<SockHash<MapData, u64>>,
    injector_socks: Mutex<SockHash<MapData, u32>>,
    /// The sources' taps and where A's begin (agent/tap.rs); none in an
    /// adopted generation, whose programs may predate them.
    taps: Option<taps::Taps>,
    stats: PerCpuArray<MapData, u64>,
    endpoint_stats: Array<MapData, EndpointStats>,
    client_count: Array<MapData, u64>,
    /// Connections the agent handed back to their original path after the
    /// kernel had sent them to it (agent/fail_open.rs).
    fail_open_agent: std::sync::atomic::AtomicU64,
    /// What the per-socket maps hold, as claimed (room.rs).
    room: std::sync::Arc<room::Room>,
    max_streams: u32,
    events: Mutex<Option<RingBuf<MapData>>>,
    /// The links of the connect programs (dropping one detaches it).
    redirects: Mutex<Vec<CgroupSockAddrLink>>,
    /// connect's bound on new connections (gate.rs); none in an adopted
    /// generation, whose connect programs are gone.
    gate: Option<gate::ConnectGate>,
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn program_error(name: &'static str) -> impl FnOnce(ProgramError) -> DatapathError {
    move |source| DatapathError::Program {
        name,
        kernel: kernel(),
        source,
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(DatapathError::MissingMap(name))?;
    take_typed(map, name)
}

fn take_typed<T>(map: aya::maps::Map, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    T::try_from(map).map_err(|source| DatapathError::Map { name, source })
}

impl Datapath {
    pub fn load(opts: &LoadOptions) -> Result<Self, DatapathError> {
        let cgroup = File::open(&opts.cgroup).map_err(|source| DatapathError::Cgroup {
            path: opts.cgroup.clone(),
            source,
        })?;
        check_cgroup2(&opts.cgroup)?;
        // Every program, map, helper and attach type is tried first, so a
        // kernel that lacks one is named with the feature, not a verifier log.
        let support = super::probe::probe_kernel(Some(&opts.cgroup))?;
        let cg = opts.cgroup.display().to_string();
        let mut programs: Vec<(String, String)> = vec![(
            "rotor_frame_parser".into(),
            "agent_socks, upstream_socks, injector_socks (sk_skb stream parser)".into(),
        )];
        // Accepted sockets outlive their client's close by a moment, and
        // LRU maps evict early when small: twice the connections, at least
        // the compiled-in size.
        let per_conn = MAX_CONNS.max(opts.max_conns.saturating_mul(2));
        // The compiled-in 4,096 Service ports were full at 5,000 labelled
        // Services (bench/src/services_memory.rs): the rest stayed on
        // kube-proxy's path and the self-check's address found no room.
        const MAX_SERVICE_PORTS: u32 = 32768;
        let sockets = opts.max_sockets.unwrap_or(MAX_CONNS * 4);
        let endpoint_stats_on = u32::from(opts.endpoint_stats);
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries("services", MAX_SERVICE_PORTS)
            .map_max_entries("conns", opts.max_conns)
            .map_max_entries("pending_origins", per_conn)
            .map_max_entries("client_origins", per_conn)
            .map_max_entries("agent_socks", opts.max_sockets.unwrap_or(per_conn))
            .map_max_entries("sock_idents", sockets)
            .map_max_entries("parse_states", sockets)
            .map_max_entries("upstream_socks", sockets)
            // a tap per accepted socket and per upstream
            .map_max_entries(
                "agent_taps",
                opts.max_sockets.unwrap_or(per_conn).saturating_add(sockets),
            )
            // at most every tap at once, each while it is read out
            .map_max_entries(
                "tap_held",
                opts.max_sockets.unwrap_or(per_conn).saturating_add(sockets),
            )
            .map_max_entries("tap_starts", opts.max_sockets.unwrap_or(per_conn))
            // an index per accepted socket alive, and those cooling
            .map_max_entries("spare_taps", per_conn)
            .map_max_entries("spare_ready", per_conn)
            .map_max_entries("spare_dropped", per_conn)
            .map_max_entries("spare_owner", per_conn)
            .map_max_entries("streams", opts.max_streams.unwrap_or(MAX_STREAMS))
            .override_global("endpoint_stats_on", &endpoint_stats_on, true);
        let mut ebpf = loader.load(OBJECT).map_err(|source| DatapathError::Load {
            kernel: kernel(),
            source: Box::new(source),
        })?;
        let generation = adopt::descriptors(&ebpf)?;

        let agent_socks: SockHash<MapData, ClientKey> = take(&mut ebpf, "agent_socks")?;
        let upstream_socks: SockHash<MapData, u64> = take(&mut ebpf, "upstream_socks")?;
        let injector_socks: SockHash<MapData, u32> = take(&mut ebpf, "injector_socks")?;

        let parser: &mut SkSkb = prog(&mut ebpf, "rotor_frame_parser")?;
        parser.load().map_err(program_error("rotor_frame_parser"))?;
        for map in [agent_socks.fd(), upstream_socks.fd(), injector_socks.fd()] {
            parser
                .attach(map)
                .map_err(program_error("rotor_frame_parser"))?;
        }
        for (name, map) in [
            ("rotor_client_verdict", agent_socks.fd()),
            ("rotor_upstream_verdict", upstream_socks.fd()),
            ("rotor_injector_verdict", injector_socks.fd()),
        ] {
            let verdict: &mut SkSkb = prog(&mut ebpf, name)?;
            verdict.load().map_err(program_error(name))?;
            verdict.attach(map).map_err(program_error(name))?;
            let on = name
                .trim_start_matches("rotor_")
                .replace("_verdict", "_socks");
            let on = on.replace("client_socks", "agent_socks");
            programs.push((name.into(), format!("{on} (sk_skb verdict)")));
        }

        let mut config: Array<MapData, AgentConfig> = take(&mut ebpf, "agent_config")?;
        let open = AgentConfig {
            listen_ip: u32::from_ne_bytes(opts.listen.ip().octets()),
            listen_port: opts.listen.port() as u32,
            // id 0 names no connection (registry.rs)
            max_clients: opts.max_conns.saturating_sub(1),
            listen_ip6: opts
                .listen6
                .map(|a| crate::ebpf::addr::ip_words((*a.ip()).into()))
                .unwrap_or_default(),
            listen_port6: opts.listen6.map_or(0, |a| u32::from(a.port())),
        };
        config
            .set(0, open, 0)
            .map_err(|source| DatapathError::Map {
                name: "agent_config",
                source,
            })?;
        let gate = gate::ConnectGate::new(config, open);

        let conns_map = ebpf
            .take_map("conns")
            .ok_or(DatapathError::MissingMap("conns"))?;
        let aya::maps::Map::Array(conns_data) = &conns_map else {
            return Err(DatapathError::MissingMap("conns"));
        };
        let conns = ConnTable::map(conns_data.fd(), opts.max_conns)?;
        // The mapping keeps the map alive after the Map handle is dropped.
        drop(conns_map);
        let latency_map = ebpf
            .take_map("endpoint_latency")
            .ok_or(DatapathError::MissingMap("endpoint_latency"))?;
        let aya::maps::Map::Array(latency_data) = &latency_map else {
            return Err(DatapathError::MissingMap("endpoint_latency"));
        };
        let latency = LatencyTable::map(latency_data.fd(), ROTOR_MAX_ENDPOINTS)?;
        drop(latency_map);

        super::own_socks::install(take(&mut ebpf, "own_socks")?);

        let sockops: &mut SockOps = prog(&mut ebpf, "rotor_sockops")?;
        sockops.load().map_err(program_error("rotor_sockops"))?;
        sockops
            .attach(&cgroup, CgroupAttachMode::Single)
            .map_err(program_error("rotor_sockops"))?;
        programs.push(("rotor_sockops".into(), format!("cgroup {cg}")));
        // The agent's accepted sockets are in the agent's own cgroup: they
        // join the socket hash only if sockops runs there too (cgroup.rs).
        if let Some(own) = super::cgroup::own_cgroup(&opts.cgroup) {
            let given = opts
                .cgroup
                .canonicalize()
                .unwrap_or_else(|_| opts.cgroup.clone());
            if !super::cgroup::is_within(&own, &given) {
                let dir = File::open(&own).map_err(|source| DatapathError::Cgroup {
                    path: own.clone(),
                    source,
                })?;
                sockops
                    .attach(&dir, CgroupAttachMode::Single)
                    .map_err(program_error("rotor_sockops"))?;
                programs.push((
                    "rotor_sockops".into(),
                    format!("cgroup {} (the agent's own)", own.display()),
                ));
                tracing::info!(own = %own.display(), cgroup = %opts.cgroup.display(),
                    "the agent runs outside --cgroup: sockops also runs in its own cgroup, for its accepted sockets");
            }
        } else {
            tracing::warn!("the agent's own cgroup is unknown: if it is outside --cgroup, connections run through the agent");
        }
        let mut redirects = Vec::new();
        for name in [
            "rotor_connect4",
            "rotor_getpeername4",
            "rotor_connect6",
            "rotor_getpeername6",
        ] {
            let p: &mut CgroupSockAddr = prog(&mut ebpf, name)?;
            p.load().map_err(program_error(name))?;
            let link = p
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(program_error(name))?;
            programs.push((name.into(), format!("cgroup {cg}")));
            // The connect programs' links are owned here, so that a stopping
            // agent can stop taking new connections (stop_redirecting) while
            // its other programs carry the ones it has. getpeername stays:
            // clients of those connections still ask for their peer.
            if name.starts_with("rotor_connect") {
                redirects.push(p.take_link(link).map_err(program_error(name))?);
            }
        }

        Ok(Datapath {
            loaded: Loaded {
                kernel: support.kernel,
                features: (support.checked.iter())
                    .map(|f| f.name.to_string())
                    .collect(),
                programs,
                cgroup: opts.cgroup.clone(),
                listen: match opts.listen6 {
                    Some(six) => format!("{}, {six}", opts.listen),
                    None => opts.listen.to_string(),
                },
            },
            _agent_socks: agent_socks,
            conns,
            latency,
            services: Mutex::new(take(&mut ebpf, "services")?),
            client_origins: Mutex::new(take(&mut ebpf, "client_origins")?),
            sock_idents: Mutex::new(take(&mut ebpf, "sock_idents")?),
            parse_states: Mutex::new(take(&mut ebpf, "parse_states")?),
            streams: Mutex::new(take(&mut ebpf, "streams")?),
            upstream_socks: Mutex::new(upstream_socks),
            injector_socks: Mutex::new(injector_socks),
            taps: Some(taps::Taps {
                socks: Mutex::new(take(&mut ebpf, "agent_taps")?),
                held: Mutex::new(take(&mut ebpf, "tap_held")?),
                starts: Mutex::new(take(&mut ebpf, "tap_starts")?),
                spares: taps::Spares::take(&mut ebpf, per_conn)?,
            }),
            stats: take(&mut ebpf, "stats")?,
            endpoint_stats: take(&mut ebpf, "endpoint_stats")?,
            client_count: take(&mut ebpf, "client_count")?,
            fail_open_agent: Default::default(),
            room: room::Room::new(sockets as usize),
            max_streams: opts.max_streams.unwrap_or(MAX_STREAMS),
            events: Mutex::new(Some(take(&mut ebpf, "events")?)),
            redirects: Mutex::new(redirects),
            gate: Some(gate),
            _ebpf: Some(ebpf),
            generation,
        })
    }

    /// New connects to balanced Services no longer come to this agent:
    /// they take their original path, or the path of an agent started
    /// beside this one (its connect programs run after ours, and see the
    /// Service address only once ours are gone). Returns how many links
    /// were detached.
    pub fn stop_redirecting(&self) -> usize {
        std::mem::take(&mut *lock(&self.redirects)).len()
    }

    /// Stops (`true`) or resumes sending new connections to the agent
    /// (gate.rs); returns whether that changed anything.
    pub fn gate_new_clients(&self, closed: bool) -> bool {
        self.gate.as_ref().is_some_and(|g| g.set_closed(closed))
    }

    /// Whether new connections keep their original path (gate.rs).
    pub fn new_clients_gated(&self) -> bool {
        self.gate.as_ref().is_some_and(|g| g.is_closed())
    }

    /// Whether the connect programs are attached (not yet stopping).
    pub fn redirecting(&self) -> bool {
        !lock(&self.redirects).is_empty()
    }

    pub fn take_events(&self) -> Option<RingBuf<MapData>> {
        lock(&self.events).take()
    }

    /// Nobody reads the ring buffer yet: a generation adopted while the
    /// agent before this one still runs (its connections look for
    /// themselves: client/housekeeping.rs).
    pub fn events_unread(&self) -> bool {
        lock(&self.events).is_some()
    }

    /// One more connection the agent handed back to its original path.
    pub fn note_fail_open(&self) {
        self.fail_open_agent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Kernel counters summed over CPUs, by name; then the balanced client
    /// sockets open now, and the agent's own fail-open count.
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        let live = self.client_count.get(&0, 0).unwrap_or(0);
        let agent = self
            .fail_open_agent
            .load(std::sync::atomic::Ordering::Relaxed);
        STAT_NAMES
            .iter()
            .map(|(i, name)| {
                let sum = self.stats.get(i, 0).map(|v| v.iter().sum()).unwrap_or(0);
                (*name, sum)
            })
            .chain([("clients_live", live), ("fail_open_agent", agent)])
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn prog<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DatapathError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p = ebpf.program_mut(name).ok_or(DatapathError::Program {
        name,
        kernel: kernel(),
        source: ProgramError::UnexpectedProgramType,
    })?;
    p.try_into().map_err(program_error(name))
}

fn check_cgroup2(path: &Path) -> Result<(), DatapathError> {
    if path.join("cgroup.procs").exists() && path.join("cgroup.controllers").exists() {
        return Ok(());
    }
    Err(DatapathError::Cgroup {
        path: path.to_path_buf(),
        source: std::io::Error::other("not a cgroup v2 directory"),
    })
}
