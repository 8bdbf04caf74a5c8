//! Services and their endpoints: what the agent balances. Sources (a YAML
//! file, or Kubernetes Services and EndpointSlices) produce a `Model`; the
//! agent applies it.

mod config;
pub mod kube;
mod policy;

pub use config::{ConfigError, ConfigFile};
pub use policy::Policy;

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
