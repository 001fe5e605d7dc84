//! [`HumanDuration`]: a duration written the human way in config files. A leaf: the
//! probes' config structs and `config` both use it, so it imports nothing of the agent.

use std::time::Duration;

use serde::Deserialize;

/// A duration written the human way in config files ("10s", "1m30s", "26h").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map(HumanDuration).map_err(|error| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({error}): use e.g. \"10s\", \"5m\", \"26h\""
            ))
        })
    }
}
