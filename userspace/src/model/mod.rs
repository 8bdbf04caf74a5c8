//! Services and their endpoints: what the agent balances. Sources (a YAML
//! file, or Kubernetes Services and EndpointSlices) produce a `Model`; the
//! agent applies it.

mod config;
pub mod kube;
mod peak_ewma;
mod policy;
pub mod source;

pub use config::{ConfigError, ConfigFile};
pub use peak_ewma::{cost as peak_ewma_cost, observe as peak_ewma_observe, read as peak_ewma_read};
pub use policy::Policy;
pub use source::{SourceHealth, SourceReport, SourceState};

use std::net::SocketAddrV4;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub vip: SocketAddrV4,
    #[serde(default)]
    pub policy: Policy,
    pub endpoints: Vec<SocketAddrV4>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Model {
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
}

impl Model {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        let mut vips = std::collections::HashSet::new();
        for s in &self.services {
            if !names.insert(&s.name) {
                return Err(ConfigError::Invalid(format!(
                    "service {:?} is listed twice",
                    s.name
                )));
            }
            if !vips.insert(s.vip) {
                return Err(ConfigError::Invalid(format!(
                    "address {} belongs to two services",
                    s.vip
                )));
            }
        }
        Ok(())
    }
}

/// What changed between two models: the agent forgets `removed` (by name
/// and address) first, then configures `set`, and touches nothing else.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delta {
    pub removed: Vec<ServiceSpec>,
    pub set: Vec<ServiceSpec>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.set.is_empty()
    }

    /// From `old` to `new` (the file source's reloads).
    pub fn between(old: &Model, new: &Model) -> Delta {
        let same = |a: &ServiceSpec, b: &ServiceSpec| a.name == b.name && a.vip == b.vip;
        Delta {
            removed: old
                .services
                .iter()
                .filter(|o| !new.services.iter().any(|n| same(o, n)))
                .cloned()
                .collect(),
            set: new
                .services
                .iter()
                .filter(|n| !old.services.contains(n))
                .cloned()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, vip: &str, eps: &[&str]) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            vip: vip.parse().expect("vip"),
            policy: Policy::RoundRobin,
            endpoints: eps.iter().map(|e| e.parse().expect("endpoint")).collect(),
        }
    }

    #[test]
    fn delta_between_models_names_only_what_changed() {
        let old = Model {
            services: vec![
                spec("a", "10.96.0.1:80", &["10.1.0.1:80"]),
                spec("b", "10.96.0.2:80", &["10.1.0.2:80"]),
                spec("c", "10.96.0.3:80", &[]),
            ],
        };
        let new = Model {
            services: vec![
                spec("a", "10.96.0.1:80", &["10.1.0.1:80"]),
                spec("b", "10.96.0.2:80", &["10.1.0.9:80"]),
                spec("c", "10.96.0.4:80", &[]),
            ],
        };
        let d = Delta::between(&old, &new);
        assert_eq!(d.removed, vec![spec("c", "10.96.0.3:80", &[])]);
        assert_eq!(
            d.set,
            vec![
                spec("b", "10.96.0.2:80", &["10.1.0.9:80"]),
                spec("c", "10.96.0.4:80", &[])
            ]
        );
        assert!(Delta::between(&new, &new).is_empty());
    }
}
