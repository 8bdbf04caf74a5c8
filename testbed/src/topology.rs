//! `Topology`: client, node and backend namespaces wired with veth pairs, plus
//! an optional kube-proxy-like DNAT for the Service VIP (the "without rotor" path).
//!
//! ```text
//!  client 10.0.0.2/24 ── veth ── 10.0.0.1/24 node 10.1.k.1/24 ── veth ── 10.1.k.2/24 be{k}
//! ```
//!
//! [`Topology::dual_stack`] adds IPv6 on the same links (ipv6.rs).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::backend::{Backend, BACKEND_PORT};
use crate::delay_line::{self, DelayLine};
use crate::netns::Netns;
use crate::util::{owned_id, TempDir};

mod ipv6;
pub use ipv6::{backend_addr6, AGENT_LISTEN6, CLIENT_ADDR6, VIP6};

/// The Service address nobody listens on.
pub const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 8080);
/// Where the agent listens, in the node namespace.
pub const AGENT_LISTEN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 15001);
/// The client's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// Address of backend `k` (1-based): `10.1.k.2:8080`.
pub fn backend_addr(k: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 1, k as u8, 2), BACKEND_PORT)
}

/// One backend: its namespace and the nghttpd serving in it.
#[derive(Debug)]
struct BackendSlot {
    // Field order is drop order: the server stops before its namespace goes.
    server: Backend,
    ns: Netns,
}

/// The whole test network. Dropping it stops the backends and deletes every
/// namespace (with it the veths and iptables rules), then the temp dir.
#[derive(Debug)]
pub struct Topology {
    // Field order is drop order.
    /// The delay on the way to the backends, if any (its thread stops first).
    link_delay: Option<DelayLine>,
    /// The backends the delay applies to (1-based); None: all, also later ones.
    delayed: Option<Vec<usize>>,
    backends: Vec<BackendSlot>,
    client: Netns,
    node: Netns,
    id: String,
    dnat: bool,
    count_requests: bool,
    /// IPv6 on every link too, and backends listening on both families.
    ipv6: bool,
    dir: TempDir,
}

impl Topology {
    /// Builds the network with `n_backends` backends, each already serving and
    /// counting the requests it receives.
    pub fn new(n_backends: usize) -> Result<Topology> {
        Topology::with_counting(n_backends, true)
    }

    /// Like [`Topology::new`]; `count_requests: false` runs the backends without
    /// verbose logs (twice their request rate; for benchmarks).
    pub fn with_counting(n_backends: usize, count_requests: bool) -> Result<Topology> {
        Topology::build(n_backends, count_requests, false)
    }

    fn build(n_backends: usize, count_requests: bool, ipv6: bool) -> Result<Topology> {
        if n_backends > 250 {
            bail!("at most 250 backends");
        }
        let id = owned_id();
        let dir = TempDir::new(&format!("rotor-test-{id}"))?;
        let client = Netns::create(&format!("rotor-{id}-client"))?;
        let node = Netns::create(&format!("rotor-{id}-node"))?;
        // veth with one end in each namespace: no name ever appears in the root namespace.
        node.ip(&[
            "link",
            "add",
            "c0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            client.name(),
        ])?;
        node.ip(&["addr", "add", "10.0.0.1/24", "dev", "c0"])?;
        node.ip(&["link", "set", "c0", "up"])?;
        client.ip(&["addr", "add", "10.0.0.2/24", "dev", "eth0"])?;
        client.ip(&["link", "set", "eth0", "up"])?;
        client.ip(&["route", "add", "default", "via", "10.0.0.1"])?;
        node.sysctl("net.ipv4.ip_forward", "1")?;
        if ipv6 {
            ipv6::link_client(&node, &client)?;
        }
        let mut topo = Topology {
            link_delay: None,
            delayed: None,
            backends: Vec::new(),
            client,
            node,
            id,
            dnat: false,
            count_requests,
            ipv6,
            dir,
        };
        for _ in 0..n_backends {
            topo.add_backend()?;
        }
        Ok(topo)
    }

    /// Adds backend `be{n+1}` (namespace, veth, routes, nghttpd); returns its index k.
    pub fn add_backend(&mut self) -> Result<usize> {
        let k = self.backends.len() + 1;
        if k > 250 {
            bail!("at most 250 backends");
        }
        let name = format!("be{k}");
        let ns = Netns::create(&format!("rotor-{}-{name}", self.id))?;
        let node_if = format!("b{k}");
        self.node.ip(&[
            "link",
            "add",
            &node_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])?;
        self.node
            .ip(&["addr", "add", &format!("10.1.{k}.1/24"), "dev", &node_if])?;
        self.node.ip(&["link", "set", &node_if, "up"])?;
        ns.ip(&["addr", "add", &format!("10.1.{k}.2/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&["route", "add", "default", "via", &format!("10.1.{k}.1")])?;
        if self.ipv6 {
            ipv6::link_backend(&self.node, &ns, &node_if, k)?;
        }
        let server = Backend::start_on(
            &name,
            ns.name(),
            backend_addr(k),
            self.dir.path(),
            self.count_requests,
            self.ipv6,
        )
        .with_context(|| format!("backend {name}"))?;
        if self.link_delay.is_some() && self.delayed.is_none() {
            delay_route(&self.node, k, "add")?;
        }
        self.backends.push(BackendSlot { server, ns });
        Ok(k)
    }

    /// Delays every packet the node sends towards a backend (forwarded
    /// client packets and the agent's own upstream connections alike) by
    /// `delay`, so each round trip to a backend takes that much longer;
    /// backends added later are delayed too, and a zero delay removes it.
    ///
    /// The kernels this runs on may lack `sch_netem`, so the delay is a
    /// [`DelayLine`] in the node namespace: policy routing sends packets for
    /// 10.1.0.0/16 into its `dlyin` device (rule 200, table 100) and takes
    /// what comes out of `dlyout` by the main table (rule 100), out `b{k}`.
    pub fn set_backend_delay(&mut self, delay: Duration) -> Result<()> {
        self.delay_backends(None, delay)
    }

    /// Like [`Topology::set_backend_delay`] for the backends `only` (1-based)
    /// alone: a slow endpoint beside fast ones. Their packets take the delay
    /// line (routes in table 100); the others find no route there and fall
    /// through to the main table.
    pub fn set_slow_backends(&mut self, only: &[usize], delay: Duration) -> Result<()> {
        if self.link_delay.is_some() {
            bail!("a backend delay is already set");
        }
        self.delay_backends(Some(only.to_vec()), delay)
    }

    fn delay_backends(&mut self, only: Option<Vec<usize>>, delay: Duration) -> Result<()> {
        if delay.is_zero() {
            self.delayed = None;
            if self.link_delay.take().is_some() {
                self.node.ip(&["rule", "del", "pref", "100"])?;
                self.node.ip(&["rule", "del", "pref", "200"])?;
            }
            return Ok(());
        }
        if let Some(line) = &self.link_delay {
            line.set_delay(delay);
            return Ok(());
        }
        let line = DelayLine::start(self.node.name(), delay)?;
        let node = &self.node;
        for dev in [delay_line::DEV_IN, delay_line::DEV_OUT] {
            node.ip(&["link", "set", dev, "txqueuelen", "10000", "up"])?;
        }
        // Packets out of dlyout may carry the node's own source address (the
        // agent's connections) and come from anywhere (forwarded clients).
        node.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        node.sysctl(
            &format!("net.ipv4.conf.{}.rp_filter", delay_line::DEV_OUT),
            "0",
        )?;
        node.sysctl(
            &format!("net.ipv4.conf.{}.accept_local", delay_line::DEV_OUT),
            "1",
        )?;
        node.ip(&[
            "rule",
            "add",
            "pref",
            "100",
            "iif",
            delay_line::DEV_OUT,
            "lookup",
            "main",
        ])?;
        node.ip(&[
            "rule",
            "add",
            "pref",
            "200",
            "to",
            "10.1.0.0/16",
            "lookup",
            "100",
        ])?;
        let delayed = only
            .clone()
            .unwrap_or_else(|| (1..=self.backends.len()).collect());
        for k in delayed {
            delay_route(node, k, "add")?;
        }
        self.link_delay = Some(line);
        self.delayed = only;
        Ok(())
    }

    /// The delay set with [`Topology::set_backend_delay`] (zero: none).
    pub fn backend_delay(&self) -> Duration {
        self.link_delay
            .as_ref()
            .map_or(Duration::ZERO, DelayLine::delay)
    }

    /// Packets the backend delay has carried so far.
    pub fn delayed_packets(&self) -> u64 {
        self.link_delay.as_ref().map_or(0, DelayLine::packets)
    }

    /// The short id shared by this topology's namespace names.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Directory for logs and files of this topology (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Name of the client namespace.
    pub fn client_ns(&self) -> &str {
        self.client.name()
    }

    /// Name of the node namespace (where the agent runs).
    pub fn node_ns(&self) -> &str {
        self.node.name()
    }

    /// The client namespace guard (for running commands in it).
    pub fn client(&self) -> &Netns {
        &self.client
    }

    /// The node namespace guard.
    pub fn node(&self) -> &Netns {
        &self.node
    }

    /// Every namespace name of this topology.
    pub fn netns_names(&self) -> Vec<String> {
        let mut v = vec![self.client.name().to_string(), self.node.name().to_string()];
        v.extend(self.backends.iter().map(|b| b.ns.name().to_string()));
        v
    }

    /// Number of backends.
    pub fn n_backends(&self) -> usize {
        self.backends.len()
    }

    /// Backend `k` (1-based).
    pub fn backend(&self, k: usize) -> Result<&Backend> {
        k.checked_sub(1)
            .and_then(|i| self.backends.get(i))
            .map(|b| &b.server)
            .with_context(|| format!("no backend {k} (have {})", self.backends.len()))
    }

    /// Backend `k`, mutable (e.g. to stop it).
    pub fn backend_mut(&mut self, k: usize) -> Result<&mut Backend> {
        let n = self.backends.len();
        k.checked_sub(1)
            .and_then(|i| self.backends.get_mut(i))
            .map(|b| &mut b.server)
            .with_context(|| format!("no backend {k} (have {n})"))
    }

    /// All backends, in order be1, be2, …
    pub fn backends(&self) -> impl Iterator<Item = &Backend> {
        self.backends.iter().map(|b| &b.server)
    }

    /// Addresses of all backends.
    pub fn backend_addrs(&self) -> Vec<SocketAddrV4> {
        self.backends().map(Backend::addr).collect()
    }

    /// Request counts of all backends, by name.
    pub fn request_counts(&self) -> Result<Vec<(String, u64)>> {
        self.backends()
            .map(|b| Ok((b.name().to_string(), b.requests()?)))
            .collect()
    }

    /// The Service VIP, `10.96.0.10:8080`.
    pub fn vip(&self) -> SocketAddrV4 {
        VIP
    }

    /// The agent's listen address, `10.0.0.1:15001`.
    pub fn agent_listen(&self) -> SocketAddrV4 {
        AGENT_LISTEN
    }

    /// Installs, in the client namespace, a kube-proxy-style `nat OUTPUT` DNAT of
    /// the VIP to the current backends: each new connection picks one at random
    /// (`-m statistic --mode random`). Removed with the namespace.
    pub fn kube_proxy_dnat(&mut self) -> Result<()> {
        if self.dnat {
            bail!("kube-proxy DNAT already installed");
        }
        let rules = dnat_rules(&self.backend_addrs());
        self.client.iptables_restore(&rules)?;
        self.dnat = true;
        Ok(())
    }

    /// In the node namespace, connects from the node itself to the Service
    /// address go to `backend` (kube-proxy's `nat OUTPUT` rules on a node;
    /// the route only gets the connect past its route lookup, as a node's
    /// default route does): where a connection the agent leaves on its
    /// original path ends up. Removed with the namespace.
    pub fn node_dnat(&self, backend: SocketAddrV4) -> Result<()> {
        self.node
            .ip(&["route", "add", &format!("{}/32", VIP.ip()), "dev", "b1"])?;
        self.node.iptables_restore(&format!(
            "*nat\n-A OUTPUT -d {}/32 -p tcp -m tcp --dport {} -j DNAT --to-destination {backend}\nCOMMIT\n",
            VIP.ip(),
            VIP.port()
        ))?;
        Ok(())
    }

    /// The client namespace's nat table (`iptables-save -t nat`), for inspection.
    pub fn client_nat_rules(&self) -> Result<String> {
        let out = crate::util::run(self.client.command("iptables-save").args(["-t", "nat"]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A `Command` running `program` in the client namespace (no cgroup).
    pub fn client_command(&self, program: &str) -> Command {
        self.client.command(program)
    }
}

/// Table 100's route to backend `k` through the delay line, with the
/// node's address on that backend's link as the source of its own packets.
fn delay_route(node: &Netns, k: usize, op: &str) -> Result<()> {
    node.ip(&[
        "route",
        op,
        &format!("10.1.{k}.0/24"),
        "dev",
        delay_line::DEV_IN,
        "src",
        &format!("10.1.{k}.1"),
        "table",
        "100",
    ])?;
    Ok(())
}

/// kube-proxy's iptables mode: a KUBE-SVC chain choosing among KUBE-SEP chains
/// with probabilities 1/n, 1/(n-1), …, 1.
fn dnat_rules(backends: &[SocketAddrV4]) -> String {
    let mut r = String::from("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-ROTOR - [0:0]\n");
    for k in 1..=backends.len() {
        r.push_str(&format!(":KUBE-SEP-ROTOR{k} - [0:0]\n"));
    }
    r.push_str("-A OUTPUT -m comment --comment rotor-test-kube-services -j KUBE-SERVICES\n");
    r.push_str(&format!(
        "-A KUBE-SERVICES -d {}/32 -p tcp -m tcp --dport {} -j KUBE-SVC-ROTOR\n",
        VIP.ip(),
        VIP.port()
    ));
    let n = backends.len();
    for (i, be) in backends.iter().enumerate() {
        let k = i + 1;
        let left = n - i;
        if left > 1 {
            r.push_str(&format!(
                "-A KUBE-SVC-ROTOR -m statistic --mode random --probability {:.11} -j KUBE-SEP-ROTOR{k}\n",
                1.0 / left as f64
            ));
        } else {
            r.push_str(&format!("-A KUBE-SVC-ROTOR -j KUBE-SEP-ROTOR{k}\n"));
        }
        r.push_str(&format!(
            "-A KUBE-SEP-ROTOR{k} -p tcp -m tcp -j DNAT --to-destination {be}\n"
        ));
    }
    r.push_str("COMMIT\n");
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn dnat_probabilities() {
        let r = super::dnat_rules(&[
            super::backend_addr(1),
            super::backend_addr(2),
            super::backend_addr(3),
        ]);
        assert!(r.contains("--probability 0.33333333333 -j KUBE-SEP-ROTOR1"));
        assert!(r.contains("--probability 0.50000000000 -j KUBE-SEP-ROTOR2"));
        assert!(r.contains("-A KUBE-SVC-ROTOR -j KUBE-SEP-ROTOR3"));
        assert!(r.contains("--to-destination 10.1.3.2:8080"));
    }
}
