//! The `[[sink]]` table: what every sink kind shares (name, filters, delivery settings),
//! plus exactly one kind-specific sub-table.
//!
//! ```toml
//! [[sink]]
//! name = "psa"                      # unique; the durable cursor is named after it
//! tenants = ["acme"]                # default: every tenant
//! severities = ["P1", "P2"]         # default: every severity
//! statuses = ["firing", "resolved"] # default: both
//! concurrency = 4                   # lanes; one fingerprint always uses the same lane
//! give_up_after = "24h"             # then the event is dead-lettered
//! start = "latest"                  # a NEW sink starts at: "latest" (default) | "earliest"
//! [sink.webhook]                    # the kind: one of the sub-tables below
//! url = "https://psa.example.net/hooks/nightowl"
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::Sink;
use crate::alert::{AlertEvent, Severity, Status};
use crate::config::KeyError;
use crate::queue::StartAt;

/// `[[sink]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    name: String,
    #[serde(default)]
    tenants: Vec<String>,
    #[serde(default)]
    severities: Vec<Severity>,
    #[serde(default)]
    statuses: Vec<Status>,
    concurrency: Option<u32>,
    give_up_after: Option<String>,
    start: Option<String>,
    email: Option<super::email::EmailConfig>,
    nats: Option<super::nats::NatsConfig>,
    // The kinds: exactly one sub-table is set. Each kind's module owns its config struct
    // (`deny_unknown_fields`) and a `spec(settings, raw, base) -> Result<SinkSpec,
    // (String, String)>` whose error key is relative to the sub-table; add the field
    // here and one `kind(...)` line in `validate`.
    webhook: Option<super::webhook::WebhookConfig>,
    pagerduty: Option<super::pagerduty::PagerDutyConfig>,
    alertmanager: Option<super::alertmanager::AlertmanagerConfig>,
}

/// Puts a kind's error key under its sub-table: `url` → `sink[2].webhook.url`.
fn kind_error(index: usize, kind: &str) -> impl FnOnce((String, String)) -> KeyError + '_ {
    move |(key, message)| KeyError::new(key, message).under(&format!("sink[{index}].{kind}"))
}

/// Which events a sink takes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Empty: every tenant.
    pub tenants: BTreeSet<String>,
    pub severities: BTreeSet<Severity>,
    pub statuses: Vec<Status>,
}

impl Filter {
    pub fn accepts(&self, event: &AlertEvent) -> bool {
        (self.tenants.is_empty() || self.tenants.contains(&event.tenant))
            && (self.severities.is_empty() || self.severities.contains(&event.severity))
            && (self.statuses.is_empty() || self.statuses.contains(&event.status))
    }
}

/// The runner's settings for one sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSettings {
    pub name: String,
    pub filter: Filter,
    pub concurrency: usize,
    pub give_up_after: Duration,
    pub start: StartAt,
}

/// What building a sink may use besides its own config: the collector's runtime
/// context, known only at startup (not when the config is validated).
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The collector's data directory: a sink may read the store through its own
    /// read-only `queue::Reader` (Alertmanager seeds its firing alerts from it).
    pub data_dir: PathBuf,
}

/// The constructor of a validated sink.
type Build = dyn Fn(&BuildContext) -> Result<Arc<dyn Sink>, String> + Send + Sync;

/// A validated sink: settings plus the kind, ready to build.
#[derive(Clone)]
pub struct SinkSpec {
    pub settings: SinkSettings,
    build: Arc<Build>,
}

impl std::fmt::Debug for SinkSpec {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("SinkSpec").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl PartialEq for SinkSpec {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings && Arc::ptr_eq(&self.build, &other.build)
    }
}

impl SinkSpec {
    /// A spec from settings and a constructor (kinds validated by their own module).
    pub fn new(
        settings: SinkSettings,
        build: impl Fn(&BuildContext) -> Result<Arc<dyn Sink>, String> + Send + Sync + 'static,
    ) -> Self {
        Self { settings, build: Arc::new(build) }
    }

    /// Builds the sink (opens clients; nothing is sent yet).
    pub fn build(&self, context: &BuildContext) -> Result<Arc<dyn Sink>, String> {
        (self.build)(context)
    }
}

/// The kinds' sub-table names, for messages.
const KINDS: &[&str] = &["webhook", "pagerduty", "alertmanager", "email", "nats"];

const DEFAULT_CONCURRENCY: usize = 4;
const MAX_CONCURRENCY: u32 = 64;
const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

impl RawSink {
    /// Validates `[[sink]]` number `index`; an error's key is relative to the config
    /// root (`sink[0].concurrency`).
    pub fn validate(self, index: usize, base: &Path) -> Result<SinkSpec, KeyError> {
        let key = |field: &str| format!("sink[{index}].{field}");
        if crate::identity::validate_id("sink name", &self.name).is_err() {
            return Err(KeyError::new(
                key("name"),
                format!("{:?}: use [a-z0-9][a-z0-9._-]{{0,62}}", self.name),
            ));
        }
        for tenant in &self.tenants {
            crate::identity::validate_id("tenant", tenant)
                .map_err(|error| KeyError::new(key("tenants"), error.to_string()))?;
        }
        let concurrency = match self.concurrency {
            None => DEFAULT_CONCURRENCY,
            Some(count) if (1..=MAX_CONCURRENCY).contains(&count) => count as usize,
            Some(count) => {
                return Err(KeyError::new(
                    key("concurrency"),
                    format!("{count} is out of range 1..={MAX_CONCURRENCY}"),
                ));
            }
        };
        let give_up_after = match self.give_up_after {
            None => DEFAULT_GIVE_UP_AFTER,
            Some(text) => match humantime::parse_duration(&text) {
                Ok(duration) if !duration.is_zero() => duration,
                Ok(_) => return Err(KeyError::new(key("give_up_after"), "must be longer than zero")),
                Err(error) => {
                    return Err(KeyError::new(
                        key("give_up_after"),
                        format!("{text:?} is not a duration ({error})"),
                    ));
                }
            },
        };
        let start = match self.start.as_deref() {
            None | Some("latest") => StartAt::Latest,
            Some("earliest") => StartAt::Earliest,
            Some(other) => {
                return Err(KeyError::new(
                    key("start"),
                    format!("{other:?}: use \"latest\" or \"earliest\""),
                ));
            }
        };
        let settings = SinkSettings {
            name: self.name,
            filter: Filter {
                tenants: self.tenants.into_iter().collect(),
                severities: self.severities.into_iter().collect(),
                statuses: self.statuses,
            },
            concurrency,
            give_up_after,
            start,
        };
        let mut kinds: Vec<SinkSpec> = Vec::new();
        // One line per kind:
        if let Some(raw) = self.webhook {
            kinds.push(
                super::webhook::spec(settings.clone(), raw, base).map_err(kind_error(index, "webhook"))?,
            );
        }
        if let Some(raw) = self.pagerduty {
            kinds.push(
                super::pagerduty::spec(settings.clone(), raw, base)
                    .map_err(kind_error(index, "pagerduty"))?,
            );
        }
        if let Some(raw) = self.alertmanager {
            kinds.push(
                super::alertmanager::spec(settings.clone(), raw, base)
                    .map_err(kind_error(index, "alertmanager"))?,
            );
        }
        if let Some(raw) = self.email {
            kinds.push(super::email::spec(settings.clone(), raw, base).map_err(kind_error(index, "email"))?);
        }
        if let Some(raw) = self.nats {
            kinds.push(super::nats::spec(settings.clone(), raw, base).map_err(kind_error(index, "nats"))?);
        }
        if kinds.len() != 1 {
            return Err(KeyError::new(
                format!("sink[{index}]"),
                format!(
                    "sink {:?}: give exactly one kind sub-table ([sink.<kind>], kind one of: {})",
                    settings.name,
                    KINDS.join(", ")
                ),
            ));
        }
        Ok(kinds.remove(0))
    }
}

/// Validates every `[[sink]]`: each on its own, and names unique.
pub fn validate_all(raw: Vec<RawSink>, base: &Path) -> Result<Vec<SinkSpec>, KeyError> {
    let mut specs: Vec<SinkSpec> = Vec::with_capacity(raw.len());
    for (index, sink) in raw.into_iter().enumerate() {
        let spec = sink.validate(index, base)?;
        if specs.iter().any(|known| known.settings.name == spec.settings.name) {
            return Err(KeyError::new(
                format!("sink[{index}].name"),
                format!("{:?} is used twice", spec.settings.name),
            ));
        }
        specs.push(spec);
    }
    Ok(specs)
}
