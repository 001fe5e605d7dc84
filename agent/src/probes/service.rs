//! Service probe (being written).

use nightowl_proto::CheckResult;
use serde::Deserialize;

use super::{Probe, ProbeContext};
use crate::config::HumanDuration;

/// One `[[service]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Check name: the check id is `service:<name>`.
    pub name: String,
    /// How often to sample; default: `[agent] interval`.
    #[serde(default)]
    pub interval: Option<HumanDuration>,
}

impl ServiceConfig {
    pub fn validate(&self) -> Result<(), String> {
        super::validate_name(&self.name)
    }
}

pub struct ServiceProbe {
    config: ServiceConfig,
}

impl ServiceProbe {
    pub fn new(config: &ServiceConfig, _context: &ProbeContext) -> Self {
        Self { config: config.clone() }
    }
}

impl Probe for ServiceProbe {
    async fn sample(&mut self) -> Vec<CheckResult> {
        let _ = &self.config;
        Vec::new()
    }
}
