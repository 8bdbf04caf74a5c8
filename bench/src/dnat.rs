//! kube-proxy-style DNAT for the benchmark's Services, in the client namespace:
//! `nat OUTPUT` → KUBE-SERVICES → one KUBE-SVC chain per Service choosing a
//! KUBE-SEP chain with `-m statistic --mode random` (probabilities 1/n, 1/(n−1), …).
//! Replacing a Service's endpoints re-declares its chains (iptables-restore
//! flushes a declared chain even with `--noflush`), which, as with kube-proxy,
//! only affects new connections.

use std::net::SocketAddrV4;

use anyhow::Result;

use rotor_testbed::netns::Netns;

/// A Service: its chain suffix, VIP and endpoints.
#[derive(Debug, Clone)]
pub struct Service {
    pub tag: String,
    pub vip: SocketAddrV4,
    pub endpoints: Vec<SocketAddrV4>,
}

fn svc_rules(s: &Service, r: &mut String) {
    let svc = format!("KUBE-SVC-{}", s.tag);
    r.push_str(&format!(":{svc} - [0:0]\n"));
    for k in 1..=s.endpoints.len() {
        r.push_str(&format!(":KUBE-SEP-{}{k} - [0:0]\n", s.tag));
    }
    let n = s.endpoints.len();
    for (i, ep) in s.endpoints.iter().enumerate() {
        let k = i + 1;
        let sep = format!("KUBE-SEP-{}{k}", s.tag);
        if n - i > 1 {
            r.push_str(&format!(
                "-A {svc} -m statistic --mode random --probability {:.11} -j {sep}\n",
                1.0 / (n - i) as f64
            ));
        } else {
            r.push_str(&format!("-A {svc} -j {sep}\n"));
        }
        r.push_str(&format!(
            "-A {sep} -p tcp -m tcp -j DNAT --to-destination {ep}\n"
        ));
    }
}

/// The whole nat table content for `services` (install once).
pub fn install_rules(services: &[Service]) -> String {
    let mut r = String::from("*nat\n:KUBE-SERVICES - [0:0]\n");
    let mut body = String::new();
    for s in services {
        svc_rules(s, &mut body);
    }
    r.push_str(&body);
    r.push_str("-A OUTPUT -m comment --comment rotor-bench-kube-services -j KUBE-SERVICES\n");
    for s in services {
        r.push_str(&format!(
            "-A KUBE-SERVICES -d {}/32 -p tcp -m tcp --dport {} -j KUBE-SVC-{}\n",
            s.vip.ip(),
            s.vip.port(),
            s.tag
        ));
    }
    r.push_str("COMMIT\n");
    r
}

/// Rules that replace one Service's endpoints (its SVC chain is re-declared, so flushed).
pub fn update_rules(s: &Service) -> String {
    let mut r = String::from("*nat\n");
    svc_rules(s, &mut r);
    r.push_str("COMMIT\n");
    r
}

/// Runs `iptables-restore --noflush` with `rules` in `ns`.
pub fn restore(ns: &Netns, rules: &str) -> Result<()> {
    ns.iptables_restore(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_shape() {
        let s = Service {
            tag: "RUST".into(),
            vip: "10.96.0.10:8080".parse().unwrap(),
            endpoints: vec![
                "10.1.1.2:8081".parse().unwrap(),
                "10.1.2.2:8081".parse().unwrap(),
            ],
        };
        let r = install_rules(std::slice::from_ref(&s));
        assert!(r.contains("-A KUBE-SVC-RUST -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-RUST1\n"));
        assert!(r.contains("-A KUBE-SVC-RUST -j KUBE-SEP-RUST2\n"));
        assert!(r.contains("--dport 8080 -j KUBE-SVC-RUST\n"));
        let u = update_rules(&s);
        assert!(!u.contains("OUTPUT"));
        assert!(u.contains(":KUBE-SVC-RUST - [0:0]\n"));
    }
}
