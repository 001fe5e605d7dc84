//! Latency probe (being written).

use nightowl_proto::CheckResult;
use serde::Deserialize;

use super::{Probe, ProbeContext};
use crate::config::HumanDuration;

/// One `[[latency]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    /// Check name: the check id is `latency:<name>`.
    pub name: String,
    /// How often to sample; default: `[agent] interval`.
    #[serde(default)]
    pub interval: Option<HumanDuration>,
}

impl LatencyConfig {
    pub fn validate(&self) -> Result<(), String> {
        super::validate_name(&self.name)
    }
}

pub struct LatencyProbe {
    config: LatencyConfig,
}

impl LatencyProbe {
    pub fn new(config: &LatencyConfig, _context: &ProbeContext) -> Self {
        Self { config: config.clone() }
    }
}

impl Probe for LatencyProbe {
    async fn sample(&mut self) -> Vec<CheckResult> {
        let _ = &self.config;
        Vec::new()
    }
}
