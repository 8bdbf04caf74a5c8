//! What one snapshot of the agent costs: its process (`/proc/PID/status`,
//! open files), its BPF maps (`memlock` in the fdinfo of each map fd), its
//! memory cgroup (what a container limit counts: user and kernel memory,
//! TCP buffers) and its TCP sockets (`ss -tmn` in the node namespace).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use rotor_testbed::netns::Netns;
use rotor_testbed::topology::AGENT_LISTEN;

/// Socket memory of a group of sockets, from `ss -m`'s skmem, bytes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SockMem {
    pub sockets: usize,
    /// Receive queue (`r`: sk_rmem_alloc).
    pub rmem: u64,
    /// Send queue (`w`: sk_wmem_queued) and its forward allocation (`f`).
    pub wmem_queued: u64,
    pub fwd_alloc: u64,
    /// Everything charged: r + w + f + o (option memory) + bl (backlog).
    pub charged: u64,
}

impl SockMem {
    fn add(&mut self, k: &BTreeMap<String, u64>) {
        let g = |n: &str| k.get(n).copied().unwrap_or(0);
        self.sockets += 1;
        self.rmem += g("r");
        self.wmem_queued += g("w");
        self.fwd_alloc += g("f");
        self.charged += g("r") + g("w") + g("f") + g("o") + g("bl");
    }
}

/// Established TCP sockets in the node namespace, by role.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sockets {
    /// The agent's accepted ends of client connections (local port = the listener's).
    pub client_side: SockMem,
    /// The agent's connections to endpoints (remote port = `upstream_port`).
    pub upstream_side: SockMem,
    /// Upstream connections per endpoint address.
    pub per_endpoint: BTreeMap<String, usize>,
    /// Anything else (the injector's loopback pair).
    pub other: SockMem,
}

/// The memory cgroup the agent runs in (cgroup v1 `memory` here; on a
/// cgroup v2 node the container's memory.current counts the same things).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemCgUsage {
    /// memory.usage_in_bytes: user memory and kernel memory (slab, BPF maps, page tables).
    pub usage: u64,
    /// memory.kmem.usage_in_bytes: the kernel part of `usage`.
    pub kmem: u64,
    /// memory.kmem.tcp.usage_in_bytes: TCP buffers (v1 keeps them apart;
    /// v2's memory.current includes them as `sock`).
    pub tcp: u64,
    /// memory.stat `rss` (anonymous memory).
    pub anon: u64,
}

impl MemCgUsage {
    /// What a cgroup v2 container limit would count.
    pub fn total(&self) -> u64 {
        self.usage + self.tcp
    }
}

/// One BPF map the agent holds.
#[derive(Debug, Clone, Serialize)]
pub struct MapInfo {
    pub map_type: u32,
    pub max_entries: u64,
    pub memlock: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub vm_rss: u64,
    pub vm_hwm: u64,
    pub rss_anon: u64,
    pub threads: u64,
    pub fds: usize,
    pub maps: Vec<MapInfo>,
    pub memcg: MemCgUsage,
    /// (Connections are counted here, not from `rotor status`: its JSON for
    /// 5,000 connections did not arrive whole.)
    pub sockets: Sockets,
}

impl Snapshot {
    pub fn maps_memlock(&self) -> u64 {
        self.maps.iter().map(|m| m.memlock).sum()
    }
}

/// User + system CPU time of `pid`, seconds (`/proc/PID/stat` fields 14, 15).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces: fields count from after its ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

/// `/proc/PID/status` field in bytes (the file says kB).
pub fn status_bytes(text: &str, field: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

pub fn process(pid: u32, snap: &mut Snapshot) -> Result<()> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    snap.vm_rss = status_bytes(&status, "VmRSS");
    snap.vm_hwm = status_bytes(&status, "VmHWM");
    snap.rss_anon = status_bytes(&status, "RssAnon");
    snap.threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let fd_dir = format!("/proc/{pid}/fd");
    snap.fds = fs::read_dir(&fd_dir)
        .with_context(|| format!("listing {fd_dir}"))?
        .count();
    snap.maps = maps(pid)?;
    Ok(())
}

/// Every BPF map fd of `pid`, from its fdinfo (a map held twice is one map).
fn maps(pid: u32) -> Result<Vec<MapInfo>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut seen = BTreeMap::new();
    for e in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let Ok(text) = fs::read_to_string(e?.path()) else {
            continue; // the fd closed meanwhile
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(t), Some(memlock)) =
            (field("map_id"), field("map_type"), field("memlock"))
        {
            seen.insert(
                id,
                MapInfo {
                    map_type: t as u32,
                    max_entries: field("max_entries").unwrap_or(0),
                    memlock,
                },
            );
        }
    }
    Ok(seen.into_values().collect())
}

/// A cgroup v1 `memory` directory for the agent, created before it starts
/// (BPF maps are charged to the cgroup that creates them) and removed on drop.
#[derive(Debug)]
pub struct MemCg {
    path: PathBuf,
}

/// Where the v1 memory controller is mounted on a hybrid host.
const MEMORY_V1: &str = "/sys/fs/cgroup/memory";

impl MemCg {
    /// None when there is no v1 memory hierarchy (a pure v2 host: the
    /// cgroup2 root here has no controllers to give the agent's cgroup).
    pub fn create() -> Result<Option<MemCg>> {
        if !Path::new(MEMORY_V1).join("memory.usage_in_bytes").exists() {
            return Ok(None);
        }
        let path =
            Path::new(MEMORY_V1).join(format!("rotor-bench-{}", rotor_testbed::util::owned_id()));
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        let cg = MemCg { path };
        // v1 charges TCP buffers to a cgroup only once it has a TCP limit.
        fs::write(
            cg.path.join("memory.kmem.tcp.limit_in_bytes"),
            "1099511627776",
        )
        .context("enabling TCP accounting")?;
        Ok(Some(cg))
    }

    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    pub fn usage(&self) -> Result<MemCgUsage> {
        let num = |f: &str| -> Result<u64> {
            let p = self.path.join(f);
            let t = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            t.trim()
                .parse()
                .with_context(|| format!("{}: {t:?}", p.display()))
        };
        let stat = fs::read_to_string(self.path.join("memory.stat")).unwrap_or_default();
        let anon = stat
            .lines()
            .find_map(|l| l.strip_prefix("rss "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Ok(MemCgUsage {
            usage: num("memory.usage_in_bytes")?,
            kmem: num("memory.kmem.usage_in_bytes")?,
            tcp: num("memory.kmem.tcp.usage_in_bytes")?,
            anon,
        })
    }
}

impl Drop for MemCg {
    fn drop(&mut self) {
        let root = Path::new(MEMORY_V1).join("cgroup.procs");
        for _ in 0..50 {
            let pids = fs::read_to_string(self.procs_file()).unwrap_or_default();
            for pid in pids.lines() {
                let _ = fs::write(&root, pid.trim());
            }
            if fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("bench: could not remove {}", self.path.display());
    }
}

/// `ss -tmnH state established` in `node`, split by role.
pub fn sockets(node: &Netns, upstream_port: u16) -> Result<Sockets> {
    let out = rotor_testbed::util::run(
        std::process::Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", node.name()))
            .args(["--", "ss", "-tmnH", "state", "established"]),
    )?;
    Ok(parse_ss(
        &String::from_utf8_lossy(&out.stdout),
        AGENT_LISTEN.port(),
        upstream_port,
    ))
}

/// Parses `ss -tmnH state established` (without the state column: a
/// filtered state is not printed): `Recv-Q Send-Q Local Peer` then
/// `skmem:(r0,rb…,t0,tb…,f0,w0,o0,bl0,d0)`, on the same line or the next.
pub fn parse_ss(text: &str, listen_port: u16, upstream_port: u16) -> Sockets {
    let mut s = Sockets::default();
    let mut current: Option<(String, String)> = None;
    let port = |a: &str| a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
    // Padded so a skmem token near the end still starts a window.
    let mut toks: Vec<&str> = text.split_whitespace().collect();
    toks.extend(["", "", ""]);
    for tok in toks.windows(4) {
        if let Some(inner) = tok[0].strip_prefix("skmem:(") {
            let Some((local, peer)) = current.take() else {
                continue;
            };
            let mut k = BTreeMap::new();
            for kv in inner.trim_end_matches(')').split(',') {
                let split = kv.find(|c: char| c.is_ascii_digit()).unwrap_or(kv.len());
                let (name, v) = kv.split_at(split);
                k.insert(name.to_string(), v.parse().unwrap_or(0));
            }
            if port(&local) == Some(listen_port) {
                s.client_side.add(&k);
            } else if port(&peer) == Some(upstream_port) {
                s.upstream_side.add(&k);
                let ip = peer
                    .rsplit_once(':')
                    .map_or(peer.clone(), |(ip, _)| ip.into());
                *s.per_endpoint.entry(ip).or_default() += 1;
            } else {
                s.other.add(&k);
            }
        } else if tok[0].parse::<u64>().is_ok()
            && tok[1].parse::<u64>().is_ok()
            && tok[2].contains(':')
            && tok[3].contains(':')
        {
            current = Some((tok[2].to_string(), tok[3].to_string()));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn ss_lines_by_role() {
        let text = "0      0      10.0.0.1:15001  10.0.0.2:40000\n\t skmem:(r0,rb131072,t0,tb87040,f4096,w0,o0,bl0,d0)\n\
0 0 10.1.1.1:50000 10.1.1.2:8081 skmem:(r100,rb131072,t0,tb87040,f0,w200,o0,bl0,d0)\n\
0 0 10.1.2.1:50001 10.1.2.2:8081 skmem:(r0,rb131072,t0,tb87040,f0,w0,o0,bl0,d0)\n\
0 0 127.0.0.1:9 127.0.0.1:33333\n skmem:(r0,rb1,t0,tb1,f0,w0,o0,bl0,d0)\n";
        let s = super::parse_ss(text, 15001, 8081);
        assert_eq!(s.client_side.sockets, 1);
        assert_eq!(s.client_side.charged, 4096);
        assert_eq!(s.upstream_side.sockets, 2);
        assert_eq!(s.upstream_side.charged, 300);
        assert_eq!(s.per_endpoint["10.1.1.2"], 1);
        assert_eq!(s.other.sockets, 1);
    }
}
