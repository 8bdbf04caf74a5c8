//! Least privilege: the agent runs with CAP_BPF, CAP_NET_ADMIN and
//! CAP_PERFMON only (what deploy/daemonset.yaml adds after dropping ALL),
//! and an agent missing one of them says which, and why it needs it.
//!
//! The agent runs as root under `setpriv --bounding-set`: a root process's
//! capabilities after exec are its bounding set, as in a container whose
//! runtime dropped the rest.

use std::path::{Path, PathBuf};

use rotor_testbed::agent::agent_wrapper;
use rotor_testbed::{Agent, TestBed};

const BACKENDS: [&str; 3] = ["be1", "be2", "be3"];

/// (setpriv name, the agent's name, bit in CapEff)
const NEEDED: [(&str, &str, u32); 3] = [
    ("bpf", "CAP_BPF", 39),
    ("net_admin", "CAP_NET_ADMIN", 12),
    ("perfmon", "CAP_PERFMON", 38),
];

/// A script that runs the agent with exactly `caps` (setpriv names).
fn agent_with_caps(dir: &Path, name: &str, caps: &[&str]) -> PathBuf {
    let bounding: String = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let prefix =
        format!("setpriv --inh-caps=-all --ambient-caps=-all --bounding-set={bounding} --");
    agent_wrapper(dir, name, &prefix).expect("wrapper script")
}

/// CapEff of a running process.
fn cap_eff(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff");
    u64::from_str_radix(hex.trim(), 16).expect("hex")
}

#[test]
fn agent_with_only_bpf_net_admin_and_perfmon_balances() {
    let mut bed = TestBed::new(3).expect("test bed");
    let caps: Vec<&str> = NEEDED.iter().map(|(c, _, _)| *c).collect();
    let wrapper = agent_with_caps(bed.topo.dir(), "agent-least", &caps);
    let agent = Agent::start_binary(
        &wrapper,
        &bed.topo,
        &bed.cgroup,
        &bed.topo.backend_addrs(),
        &[],
    )
    .expect("agent with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON only");
    let want: u64 = NEEDED.iter().map(|(_, _, bit)| 1u64 << bit).sum();
    assert_eq!(
        cap_eff(agent.pid()),
        want,
        "the agent's effective capabilities"
    );
    bed.agent = Some(agent);
    if let Err(e) = bed.check_balanced(&BACKENDS) {
        panic!("{e:#}");
    }
}

/// Each of the three taken away in turn: the agent does not start, and its
/// error names that capability and what it is for, not a kernel feature
/// (without CAP_NET_ADMIN the feature probe alone would blame the kernel).
#[test]
fn each_missing_capability_is_named() {
    let bed = TestBed::new(1).expect("test bed");
    for (gone, name, _) in NEEDED {
        let rest: Vec<&str> = NEEDED
            .iter()
            .map(|(c, _, _)| *c)
            .filter(|c| *c != gone)
            .collect();
        let wrapper = agent_with_caps(bed.topo.dir(), &format!("agent-no-{gone}"), &rest);
        let err = Agent::start_binary(
            &wrapper,
            &bed.topo,
            &bed.cgroup,
            &bed.topo.backend_addrs(),
            &[],
        )
        .map(|_| ())
        .expect_err("the agent started without a capability it needs");
        let text = format!("{err:#}");
        assert!(
            text.contains(&format!("lacks the capability {name} (")),
            "without {name}: {text}"
        );
        assert!(
            !text.contains("features rotor needs") && !text.contains("Verifier output"),
            "without {name} the kernel was blamed: {text}"
        );
    }
}
