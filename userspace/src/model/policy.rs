//! How a Service's new streams pick an endpoint: the value of its
//! `rotor.dev/balance` label, or `policy:` in the static configuration.

use serde::Deserialize;

use crate::ebpf::abi::{POLICY_LEAST_REQUEST, POLICY_PEAK_EWMA, POLICY_ROUND_ROBIN};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Each new stream to the next endpoint in turn.
    #[default]
    RoundRobin,
    /// Power of two choices over the streams each endpoint has open on the
    /// connection: the round-robin choice unless another, drawn at random,
    /// has fewer (ebpf/lib/conn.h `pick_least_request`).
    LeastRequest,
    /// Power of two choices over cost: each endpoint's peak EWMA of time
    /// to first byte times (its streams open on the connection + 1)
    /// (ebpf/lib/conn.h `pick_peak_ewma`, model/peak_ewma.rs).
    PeakEwma,
}

impl Policy {
    pub const ALL: [Policy; 3] = [Policy::RoundRobin, Policy::LeastRequest, Policy::PeakEwma];

    /// The name in labels, the static configuration and `rotor status`.
    pub fn name(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round-robin",
            Policy::LeastRequest => "least-request",
            Policy::PeakEwma => "peak-ewma",
        }
    }

    /// The policy a label value names; anything else, "false", "off" and
    /// the empty value included, names none: such a Service is not balanced.
    pub fn from_name(value: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name() == value)
    }

    /// The accepted values, for messages that refuse another.
    pub fn names() -> String {
        Policy::ALL.map(Policy::name).join(", ")
    }

    /// `conn.policy` in the kernel (rotor.h POLICY_*).
    pub fn kernel_code(self) -> u32 {
        match self {
            Policy::RoundRobin => POLICY_ROUND_ROBIN,
            Policy::LeastRequest => POLICY_LEAST_REQUEST,
            Policy::PeakEwma => POLICY_PEAK_EWMA,
        }
    }

    pub fn from_kernel_code(code: u32) -> Policy {
        match code {
            POLICY_LEAST_REQUEST => Policy::LeastRequest,
            POLICY_PEAK_EWMA => Policy::PeakEwma,
            _ => Policy::RoundRobin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_name_a_policy_or_none() {
        assert_eq!(Policy::from_name("round-robin"), Some(Policy::RoundRobin));
        assert_eq!(
            Policy::from_name("least-request"),
            Some(Policy::LeastRequest)
        );
        assert_eq!(Policy::from_name("peak-ewma"), Some(Policy::PeakEwma));
        for refused in [
            "",
            "false",
            "off",
            "true",
            "Round-Robin",
            "random",
            "peak_ewma",
            "ewma",
            " round-robin",
        ] {
            assert_eq!(Policy::from_name(refused), None, "{refused:?}");
        }
        assert_eq!(Policy::names(), "round-robin, least-request, peak-ewma");
    }

    #[test]
    fn kernel_codes_round_trip() {
        for p in Policy::ALL {
            assert_eq!(Policy::from_kernel_code(p.kernel_code()), p);
        }
    }

    #[test]
    fn the_static_configuration_takes_the_label_names() {
        for p in Policy::ALL {
            let parsed: Policy = serde_yaml_ng::from_str(p.name()).expect("parses");
            assert_eq!(parsed, p);
        }
        assert!(serde_yaml_ng::from_str::<Policy>("false").is_err());
    }
}
