//! The capabilities the agent needs, checked before anything touches the
//! kernel.
//!
//! Without CAP_NET_ADMIN every bpf() call of the feature probe fails with
//! EPERM, and the probe then reports seven kernel features as missing on a
//! kernel that has them all (measured on 6.18 under `setpriv
//! --bounding-set=-all,+bpf,+perfmon`). Without CAP_PERFMON the maps and
//! the probe work and the frame parser is refused by the verifier halfway
//! through loading ("pointer arithmetic with it prohibited for !root").
//! Reading CapEff first names the capability instead.
//!
//! The set was found by running the agent with each subset of
//! `setpriv --bounding-set`: CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON is the
//! smallest that loads, attaches and passes the self-check; CAP_SYS_ADMIN
//! alone covers all three (kernels before 5.8 know no other).
//! CAP_SYS_RESOURCE is not needed: RLIMIT_MEMLOCK no longer counts bpf
//! memory since 5.11, and the open file limit is raised only up to its hard
//! limit.

use std::fmt;

/// One capability the agent needs, and what for.
#[derive(Debug, PartialEq, Eq)]
pub struct Capability {
    pub name: &'static str,
    /// Its bit in the CapEff mask (linux/capability.h).
    pub bit: u32,
    pub why: &'static str,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.why)
    }
}

/// Exactly what `deploy/daemonset.yaml` adds (as BPF, NET_ADMIN, PERFMON).
pub const NEEDED: [Capability; 3] = [
    Capability {
        name: "CAP_BPF",
        bit: 39,
        why: "the bpf() system call: creating the maps and loading the programs",
    },
    Capability {
        name: "CAP_NET_ADMIN",
        bit: 12,
        why: "loading the socket programs (sk_skb, sockops, cgroup/connect4) and attaching them to the cgroup and the socket hashes",
    },
    Capability {
        name: "CAP_PERFMON",
        bit: 38,
        why: "the verifier allows the frame parser's pointer arithmetic on packet and map values only with it",
    },
];

/// Covers all of [`NEEDED`] (the kernel checks it as an alternative to each).
pub const CAP_SYS_ADMIN: u32 = 21;

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("reading the agent's capabilities from /proc/self/status")]
    Read(#[source] std::io::Error),
    #[error("no CapEff line in /proc/self/status")]
    NoCapEff,
    #[error(
        "rotor-agent lacks the capabilit{} {}. Its effective capabilities are {have:#x}: give it CAP_BPF, \
         CAP_NET_ADMIN and CAP_PERFMON (deploy/daemonset.yaml adds BPF, NET_ADMIN and PERFMON), or \
         CAP_SYS_ADMIN, or run it as root",
        if .missing.len() == 1 { "y" } else { "ies" },
        .missing.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("; ")
    )]
    Missing {
        missing: Vec<&'static Capability>,
        have: u64,
    },
}

/// The CapEff mask of a `/proc/PID/status` text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// What of [`NEEDED`] an effective mask lacks.
pub fn missing(eff: u64) -> Vec<&'static Capability> {
    if eff & (1 << CAP_SYS_ADMIN) != 0 {
        return Vec::new();
    }
    NEEDED.iter().filter(|c| eff & (1 << c.bit) == 0).collect()
}

/// Fails naming each needed capability this process does not have.
pub fn check() -> Result<(), CapsError> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(CapsError::Read)?;
    let have = parse_cap_eff(&status).ok_or(CapsError::NoCapEff)?;
    let missing = missing(have);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CapsError::Missing { missing, have })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BPF_NET_PERFMON: u64 = (1 << 39) | (1 << 12) | (1 << 38);

    #[test]
    fn reads_cap_eff() {
        let status = "Name:\trotor-agent\nCapInh:\t0000000000000000\nCapPrm:\t000000c000001000\nCapEff:\t000000c000001000\n";
        assert_eq!(parse_cap_eff(status), Some(BPF_NET_PERFMON));
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn the_three_or_sys_admin_suffice() {
        assert!(missing(BPF_NET_PERFMON).is_empty());
        assert!(missing(1 << CAP_SYS_ADMIN).is_empty());
        assert!(missing(u64::MAX >> 23).is_empty(), "root's full set");
    }

    #[test]
    fn each_missing_one_is_named_with_why() {
        for cap in &NEEDED {
            let have = BPF_NET_PERFMON & !(1 << cap.bit);
            assert_eq!(missing(have), vec![cap]);
            let text = CapsError::Missing {
                missing: missing(have),
                have,
            }
            .to_string();
            assert!(text.contains(&format!("capability {}", cap.name)), "{text}");
            assert!(text.contains(cap.why), "{text}");
        }
        let none = CapsError::Missing {
            missing: missing(0),
            have: 0,
        }
        .to_string();
        assert!(none.contains("capabilities CAP_BPF"), "{none}");
    }
}
