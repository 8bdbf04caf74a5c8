//! IPv6 on the test network ([`Topology::dual_stack`]): ULA addresses
//! (fd00::/8) on the same veths, beside the IPv4 ones, and a kube-proxy
//! stand-in for the IPv6 Service address (ip6tables DNAT).
//!
//! ```text
//!  client fd00::2/64 ── veth ── fd00::1/64 node fd00:1:k::1/64 ── veth ── fd00:1:k::2/64 be{k}
//! ```
//!
//! Addresses are added `nodad`: duplicate address detection would keep
//! them tentative (unusable for bind and connect) for a second or two, and
//! nothing else on these links can hold them.

use std::net::{Ipv6Addr, SocketAddrV6};

use anyhow::{bail, Result};

use super::Topology;
use crate::backend::BACKEND_PORT;
use crate::netns::Netns;

/// The IPv6 Service address nobody listens on, `[fd00:96::10]:8080`.
pub const VIP6: SocketAddrV6 =
    SocketAddrV6::new(Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x10), 8080, 0, 0);
/// Where the agent listens for IPv6 clients (`--listen6`), in the node namespace.
pub const AGENT_LISTEN6: SocketAddrV6 =
    SocketAddrV6::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1), 15001, 0, 0);
/// The client's IPv6 address.
pub const CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

/// IPv6 address of backend `k` (1-based): `[fd00:1:k::2]:8080`.
pub fn backend_addr6(k: usize) -> SocketAddrV6 {
    SocketAddrV6::new(
        Ipv6Addr::new(0xfd00, 1, k as u16, 0, 0, 0, 0, 2),
        BACKEND_PORT,
        0,
        0,
    )
}

impl Topology {
    /// Like [`Topology::new`], with IPv6 too: every namespace has an IPv6
    /// address beside its IPv4 one, the node forwards both, and the
    /// backends' nghttpd listens on both families.
    pub fn dual_stack(n_backends: usize) -> Result<Topology> {
        Topology::build(n_backends, true, true)
    }

    /// Whether this topology has IPv6 ([`Topology::dual_stack`]).
    pub fn has_ipv6(&self) -> bool {
        self.ipv6
    }

    /// The agent's IPv6 listen address, `[fd00::1]:15001`, if the
    /// topology has IPv6.
    pub fn agent_listen6(&self) -> Option<SocketAddrV6> {
        self.ipv6.then_some(AGENT_LISTEN6)
    }

    /// IPv6 addresses of all backends.
    pub fn backend_addrs6(&self) -> Vec<SocketAddrV6> {
        (1..=self.backends.len()).map(backend_addr6).collect()
    }

    /// The IPv6 twin of [`Topology::kube_proxy_dnat`]: in the client
    /// namespace, an ip6tables `nat OUTPUT` DNAT of [`VIP6`] to the
    /// backends' IPv6 addresses, one picked at random per connection.
    pub fn kube_proxy_dnat6(&mut self) -> Result<()> {
        if !self.ipv6 {
            bail!("the topology has no IPv6 (Topology::dual_stack)");
        }
        self.client
            .ip6tables_restore(&dnat6_rules(&self.backend_addrs6()))
    }
}

/// Addresses on the client's link, the client's default route, forwarding.
pub(super) fn link_client(node: &Netns, client: &Netns) -> Result<()> {
    node.ip(&["-6", "addr", "add", "fd00::1/64", "dev", "c0", "nodad"])?;
    client.ip(&["-6", "addr", "add", "fd00::2/64", "dev", "eth0", "nodad"])?;
    client.ip(&["-6", "route", "add", "default", "via", "fd00::1"])?;
    node.sysctl("net.ipv6.conf.all.forwarding", "1")?;
    Ok(())
}

/// Addresses on backend `k`'s link (`node_if` on the node, eth0 in `ns`)
/// and its default route.
pub(super) fn link_backend(node: &Netns, ns: &Netns, node_if: &str, k: usize) -> Result<()> {
    let net = format!("fd00:1:{k:x}");
    node.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{net}::1/64"),
        "dev",
        node_if,
        "nodad",
    ])?;
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{net}::2/64"),
        "dev",
        "eth0",
        "nodad",
    ])?;
    ns.ip(&["-6", "route", "add", "default", "via", &format!("{net}::1")])?;
    Ok(())
}

/// kube-proxy's rules for [`VIP6`] (as topology.rs's `dnat_rules`).
fn dnat6_rules(backends: &[SocketAddrV6]) -> String {
    let mut r = String::from("*nat\n:KUBE-SERVICES6 - [0:0]\n:KUBE-SVC-ROTOR6 - [0:0]\n");
    for k in 1..=backends.len() {
        r.push_str(&format!(":KUBE-SEP-ROTOR6-{k} - [0:0]\n"));
    }
    r.push_str("-A OUTPUT -m comment --comment rotor-test-kube-services6 -j KUBE-SERVICES6\n");
    r.push_str(&format!(
        "-A KUBE-SERVICES6 -d {}/128 -p tcp -m tcp --dport {} -j KUBE-SVC-ROTOR6\n",
        VIP6.ip(),
        VIP6.port()
    ));
    let n = backends.len();
    for (i, be) in backends.iter().enumerate() {
        let k = i + 1;
        let left = n - i;
        if left > 1 {
            r.push_str(&format!(
                "-A KUBE-SVC-ROTOR6 -m statistic --mode random --probability {:.11} -j KUBE-SEP-ROTOR6-{k}\n",
                1.0 / left as f64
            ));
        } else {
            r.push_str(&format!("-A KUBE-SVC-ROTOR6 -j KUBE-SEP-ROTOR6-{k}\n"));
        }
        r.push_str(&format!(
            "-A KUBE-SEP-ROTOR6-{k} -p tcp -m tcp -j DNAT --to-destination {be}\n"
        ));
    }
    r.push_str("COMMIT\n");
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipv6_addresses_and_dnat_rules() {
        assert_eq!(super::backend_addr6(12).to_string(), "[fd00:1:c::2]:8080");
        assert_eq!(super::VIP6.to_string(), "[fd00:96::10]:8080");
        let r = super::dnat6_rules(&[super::backend_addr6(1), super::backend_addr6(2)]);
        assert!(r.contains("-d fd00:96::10/128 -p tcp -m tcp --dport 8080"));
        assert!(r.contains("--probability 0.50000000000 -j KUBE-SEP-ROTOR6-1"));
        assert!(r.contains("--to-destination [fd00:1:2::2]:8080"));
    }
}
