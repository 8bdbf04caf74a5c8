//! Connections the agent does not carry, as `ss` and `conntrack` would show
//! them: for `rotor explain`, the skew a Service's connections have now.
//!
//! Read from procfs of every network namespace the agent can see: one
//! `/proc/PID/net/tcp` and `/proc/PID/net/nf_conntrack` per distinct
//! `/proc/PID/ns/net` (a DaemonSet pod sees the node's processes only with
//! `hostPID`; without it, only its own namespace, the node's with
//! `hostNetwork`). IPv4 only, like the rest of rotor.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};

/// TCP_ESTABLISHED in /proc/net/tcp's `st` column.
const ESTABLISHED: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSock {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub established: bool,
    pub inode: u64,
}

fn hex_addr(s: &str) -> Option<SocketAddrV4> {
    let (ip, port) = s.split_once(':')?;
    // The kernel prints the address as the u32 it holds in network order,
    // read in host order: its bytes in memory are the address.
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port))
}

/// `/proc/net/tcp`: one socket a line after the header; lines that do not
/// parse are skipped.
pub fn parse_tcp(text: &str) -> Vec<TcpSock> {
    (text.lines().skip(1))
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(TcpSock {
                local: hex_addr(f.get(1)?)?,
                remote: hex_addr(f.get(2)?)?,
                established: u8::from_str_radix(f.get(3)?, 16).ok()? == ESTABLISHED,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// One conntrack entry: the original direction's destination (the Service
/// address a client dialled) and the reply's source (the endpoint it reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    pub client: Ipv4Addr,
    pub dialled: SocketAddrV4,
    pub reached: SocketAddrV4,
}

/// `/proc/net/nf_conntrack`: established TCP entries only.
pub fn parse_conntrack(text: &str) -> Vec<Tracked> {
    text.lines()
        .filter(|l| l.contains(" tcp ") && l.contains(" ESTABLISHED "))
        .filter_map(|line| {
            let mut src = Vec::new();
            let mut dst = Vec::new();
            let mut sport = Vec::new();
            let mut dport = Vec::new();
            for kv in line.split_whitespace() {
                match kv.split_once('=') {
                    Some(("src", v)) => src.push(v.parse::<Ipv4Addr>().ok()?),
                    Some(("dst", v)) => dst.push(v.parse::<Ipv4Addr>().ok()?),
                    Some(("sport", v)) => sport.push(v.parse::<u16>().ok()?),
                    Some(("dport", v)) => dport.push(v.parse::<u16>().ok()?),
                    _ => {}
                }
            }
            Some(Tracked {
                client: *src.first()?,
                dialled: SocketAddrV4::new(*dst.first()?, *dport.first()?),
                reached: SocketAddrV4::new(*src.get(1)?, *sport.get(1)?),
            })
        })
        .collect()
}

/// What the scan read.
#[derive(Debug, Default)]
pub struct Scan {
    /// Network namespaces read.
    pub namespaces: usize,
    /// Established sockets of all of them.
    pub sockets: Vec<TcpSock>,
    pub tracked: Vec<Tracked>,
    /// Whether any namespace had a conntrack table to read.
    pub conntrack: bool,
    /// (local, remote) of the agent's own sockets (its upstreams and splices).
    pub own: HashSet<(SocketAddrV4, SocketAddrV4)>,
}

/// Reads every visible namespace once.
pub fn scan() -> Scan {
    let mut seen = HashSet::new();
    let mut scan = Scan::default();
    let own_inodes = own_socket_inodes();
    let pids = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    let dirs = std::iter::once("self".to_string()).chain(
        pids.filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit())),
    );
    for pid in dirs {
        let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if !seen.insert(ns) {
            continue;
        }
        let Ok(tcp) = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")) else {
            continue;
        };
        scan.namespaces += 1;
        for s in parse_tcp(&tcp).into_iter().filter(|s| s.established) {
            if pid == "self" && own_inodes.contains(&s.inode) {
                scan.own.insert((s.local, s.remote));
            }
            scan.sockets.push(s);
        }
        if let Ok(ct) = std::fs::read_to_string(format!("/proc/{pid}/net/nf_conntrack")) {
            scan.conntrack = true;
            scan.tracked.extend(parse_conntrack(&ct));
        }
    }
    scan
}

fn own_socket_inodes() -> HashSet<u64> {
    let fds = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten();
    fds.filter_map(|e| {
        let link = std::fs::read_link(e.path()).ok()?;
        let link = link.to_str()?;
        link.strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    })
    .collect()
}

/// Per endpoint: connections that reached it from the agent and from
/// anything else (the server side of each connection, at the endpoint).
pub fn at_endpoints(scan: &Scan, endpoints: &[SocketAddrV4]) -> HashMap<SocketAddrV4, (u64, u64)> {
    let mut out: HashMap<SocketAddrV4, (u64, u64)> =
        endpoints.iter().map(|e| (*e, (0, 0))).collect();
    for s in &scan.sockets {
        let Some(n) = out.get_mut(&s.local) else {
            continue;
        };
        // the agent's socket is the other end: (its local, its remote) = (s.remote, s.local)
        if scan.own.contains(&(s.remote, s.local)) {
            n.0 += 1;
        } else {
            n.1 += 1;
        }
    }
    out
}

/// Per endpoint reached: connections conntrack saw dialled to `vip`.
pub fn through_nat(scan: &Scan, vip: SocketAddrV4) -> Vec<(SocketAddrV4, u64)> {
    let mut by: HashMap<SocketAddrV4, u64> = HashMap::new();
    for t in scan.tracked.iter().filter(|t| t.dialled == vip) {
        *by.entry(t.reached).or_default() += 1;
    }
    let mut v: Vec<_> = by.into_iter().collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_parse() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n\
   1: 0201000A:1F90 0A00000A:A2B4 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 20 4 30 10 -1\n\
   garbage\n";
        let socks = parse_tcp(text);
        assert_eq!(socks.len(), 2);
        if cfg!(target_endian = "little") {
            assert_eq!(socks[0].local, "127.0.0.1:3306".parse().unwrap());
            assert_eq!(socks[1].local, "10.0.1.2:8080".parse().unwrap());
            assert_eq!(socks[1].remote, "10.0.0.10:41652".parse().unwrap());
        }
        assert!(!socks[0].established && socks[1].established);
        assert_eq!(socks[1].inode, 777);
    }

    #[test]
    fn conntrack_entries_give_the_endpoint_reached() {
        let text = "ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.0.10 dst=10.96.0.10 sport=40000 dport=8080 src=10.0.1.2 dst=10.0.0.10 sport=8080 dport=40000 [ASSURED] mark=0 zone=0 use=2\n\
ipv4     2 tcp      6 119 TIME_WAIT src=10.0.0.10 dst=10.96.0.10 sport=40001 dport=8080 src=10.0.2.2 dst=10.0.0.10 sport=8080 dport=40001 [ASSURED] mark=0 zone=0 use=2\n\
ipv4     2 udp      17 20 src=10.0.0.10 dst=10.96.0.1 sport=1 dport=53 src=10.0.3.2 dst=10.0.0.10 sport=53 dport=1 mark=0 use=2\n";
        let t = parse_conntrack(text);
        assert_eq!(
            t,
            [Tracked {
                client: "10.0.0.10".parse().unwrap(),
                dialled: "10.96.0.10:8080".parse().unwrap(),
                reached: "10.0.1.2:8080".parse().unwrap(),
            }]
        );
        let scan = Scan {
            tracked: t,
            ..Default::default()
        };
        let vip = "10.96.0.10:8080".parse().unwrap();
        assert_eq!(
            through_nat(&scan, vip),
            [("10.0.1.2:8080".parse().unwrap(), 1)]
        );
    }

    #[test]
    fn connections_from_the_agent_are_told_apart() {
        let ep: SocketAddrV4 = "10.0.1.2:8080".parse().unwrap();
        let agent: SocketAddrV4 = "10.0.0.1:50000".parse().unwrap();
        let other: SocketAddrV4 = "10.0.0.10:40000".parse().unwrap();
        let sock = |local, remote| TcpSock {
            local,
            remote,
            established: true,
            inode: 0,
        };
        let scan = Scan {
            sockets: vec![sock(ep, agent), sock(ep, other), sock(agent, ep)],
            own: [(agent, ep)].into_iter().collect(),
            ..Default::default()
        };
        assert_eq!(at_endpoints(&scan, &[ep])[&ep], (1, 1));
    }
}
