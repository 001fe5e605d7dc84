//! Backup probe (being written).

use nightowl_proto::CheckResult;
use serde::Deserialize;

use super::{Probe, ProbeContext};
use crate::config::HumanDuration;

/// One `[[backup]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Check name: the check id is `backup:<name>`.
    pub name: String,
    /// How often to sample; default: `[agent] interval`.
    #[serde(default)]
    pub interval: Option<HumanDuration>,
}

impl BackupConfig {
    pub fn validate(&self) -> Result<(), String> {
        super::validate_name(&self.name)
    }
}

pub struct BackupProbe {
    config: BackupConfig,
}

impl BackupProbe {
    pub fn new(config: &BackupConfig, _context: &ProbeContext) -> Self {
        Self { config: config.clone() }
    }
}

impl Probe for BackupProbe {
    async fn sample(&mut self) -> Vec<CheckResult> {
        let _ = &self.config;
        Vec::new()
    }
}
