//! A kernel generation handed from one agent to the next (issue 13, README
//! "Upgrades and stopping"). A socket cannot move between two agents'
//! socket hashes without risking bytes (ebpf/README.md point 31), but a
//! socket hash's descriptor held by another process keeps the hash, its
//! sk_skb programs and its sockets working after the process that loaded
//! them has exited. So the old agent sends a descriptor of every map its
//! connections' tasks use, and its successor builds a second `Datapath`
//! from them, beside its own, for the connections it adopts.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Mutex;

use aya::maps::{Map, MapData};
use aya::Ebpf;

use super::{kernel, take_typed, Datapath, DatapathError, Loaded};
use crate::ebpf::abi::ROTOR_MAX_ENDPOINTS;
use crate::ebpf::conn_table::{ConnTable, LatencyTable};

/// The maps an adopted generation is run with, in the order they are
/// sent (`Message::Generation` names them; the receiver checks the names).
pub const GENERATION_MAPS: [&str; 14] = [
    "agent_socks",
    "conns",
    "endpoint_latency",
    "services",
    "client_origins",
    "sock_idents",
    "parse_states",
    "streams",
    "upstream_socks",
    "injector_socks",
    "stats",
    "endpoint_stats",
    "client_count",
    "events",
];

fn data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(d)
        | Map::PerCpuArray(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::SockHash(d)
        | Map::RingBuf(d) => Some(d),
        _ => None,
    }
}

/// A descriptor of each map of GENERATION_MAPS, taken right after the
/// object is loaded (before the maps are taken apart into typed handles).
pub(super) fn descriptors(ebpf: &Ebpf) -> Result<Vec<(&'static str, OwnedFd)>, DatapathError> {
    GENERATION_MAPS
        .iter()
        .map(|&name| {
            let map = ebpf.map(name).ok_or(DatapathError::MissingMap(name))?;
            let d = data(map).ok_or(DatapathError::MissingMap(name))?;
            let fd = d
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|source| DatapathError::Descriptor { name, source })?;
            Ok((name, fd))
        })
        .collect()
}

impl Datapath {
    /// The maps a successor needs, by name, in GENERATION_MAPS order (none
    /// for a generation that was itself adopted: it is not handed on).
    pub fn generation(&self) -> (Vec<String>, Vec<BorrowedFd<'_>>) {
        (
            self.generation.iter().map(|(n, _)| n.to_string()).collect(),
            self.generation.iter().map(|(_, fd)| fd.as_fd()).collect(),
        )
    }

    /// The generation of the agent before this one, from the descriptors
    /// it sent: `names` and `fds` as `Message::Generation` carried them.
    /// Nothing is attached or loaded: its programs are attached to its
    /// socket hashes already, and its connect programs were detached
    /// before it sent them (it takes no new connections).
    pub fn adopt(
        names: &[String],
        fds: Vec<OwnedFd>,
        cgroup: PathBuf,
    ) -> Result<Datapath, DatapathError> {
        if names.len() != GENERATION_MAPS.len() || fds.len() != names.len() {
            return Err(DatapathError::MissingMap("(the generation's map list)"));
        }
        let mut maps: Vec<Option<Map>> = Vec::with_capacity(names.len());
        for ((name, want), fd) in names.iter().zip(GENERATION_MAPS).zip(fds) {
            if name != want {
                return Err(DatapathError::MissingMap(want));
            }
            let map = MapData::from_fd(fd)
                .and_then(Map::from_map_data)
                .map_err(|source| DatapathError::Map { name: want, source })?;
            maps.push(Some(map));
        }
        let mut take = |name: &'static str| -> Result<Map, DatapathError> {
            let k = GENERATION_MAPS.iter().position(|n| *n == name);
            k.and_then(|k| maps[k].take())
                .ok_or(DatapathError::MissingMap(name))
        };
        let conns_map = take("conns")?;
        let Map::Array(conns_data) = &conns_map else {
            return Err(DatapathError::MissingMap("conns"));
        };
        let max_conns = max_entries(conns_data, "conns")?;
        let conns = ConnTable::map(conns_data.fd(), max_conns)?;
        let latency_map = take("endpoint_latency")?;
        let Map::Array(latency_data) = &latency_map else {
            return Err(DatapathError::MissingMap("endpoint_latency"));
        };
        let latency = LatencyTable::map(latency_data.fd(), ROTOR_MAX_ENDPOINTS)?;
        let sock_idents = take("sock_idents")?;
        let max_sockets = match &sock_idents {
            Map::HashMap(d) => max_entries(d, "sock_idents")?,
            _ => return Err(DatapathError::MissingMap("sock_idents")),
        };
        let streams = take("streams")?;
        let max_streams = match &streams {
            Map::HashMap(d) => max_entries(d, "streams")?,
            _ => return Err(DatapathError::MissingMap("streams")),
        };
        Ok(Datapath {
            _ebpf: None,
            generation: Vec::new(),
            loaded: Loaded {
                kernel: kernel(),
                features: Vec::new(),
                programs: vec![(
                    "the agent before this one's".into(),
                    "adopted with its connections".into(),
                )],
                cgroup,
                listen: String::new(),
            },
            _agent_socks: take_typed(take("agent_socks")?, "agent_socks")?,
            conns,
            latency,
            services: Mutex::new(take_typed(take("services")?, "services")?),
            client_origins: Mutex::new(take_typed(take("client_origins")?, "client_origins")?),
            sock_idents: Mutex::new(take_typed(sock_idents, "sock_idents")?),
            parse_states: Mutex::new(take_typed(take("parse_states")?, "parse_states")?),
            streams: Mutex::new(take_typed(streams, "streams")?),
            upstream_socks: Mutex::new(take_typed(take("upstream_socks")?, "upstream_socks")?),
            injector_socks: Mutex::new(take_typed(take("injector_socks")?, "injector_socks")?),
            taps: None,
            stats: take_typed(take("stats")?, "stats")?,
            endpoint_stats: take_typed(take("endpoint_stats")?, "endpoint_stats")?,
            client_count: take_typed(take("client_count")?, "client_count")?,
            fail_open_agent: Default::default(),
            room: super::room::Room::new(max_sockets as usize),
            max_streams,
            events: Mutex::new(Some(take_typed(take("events")?, "events")?)),
            redirects: Mutex::new(Vec::new()),
            gate: None,
        })
    }
}

fn max_entries(d: &MapData, name: &'static str) -> Result<u32, DatapathError> {
    d.info()
        .map(|i| i.max_entries())
        .map_err(|source| DatapathError::Map { name, source })
}
