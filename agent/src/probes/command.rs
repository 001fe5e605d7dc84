//! Command probe (being written).

use nightowl_proto::CheckResult;
use serde::Deserialize;

use super::{Probe, ProbeContext};
use crate::config::HumanDuration;

/// One `[[command]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Check name: the check id is `command:<name>`.
    pub name: String,
    /// How often to sample; default: `[agent] interval`.
    #[serde(default)]
    pub interval: Option<HumanDuration>,
}

impl CommandConfig {
    pub fn validate(&self) -> Result<(), String> {
        super::validate_name(&self.name)
    }
}

pub struct CommandProbe {
    config: CommandConfig,
}

impl CommandProbe {
    pub fn new(config: &CommandConfig, _context: &ProbeContext) -> Self {
        Self { config: config.clone() }
    }
}

impl Probe for CommandProbe {
    async fn sample(&mut self) -> Vec<CheckResult> {
        let _ = &self.config;
        Vec::new()
    }
}
