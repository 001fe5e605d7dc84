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

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::Sink;
use crate::alert::{AlertEvent, Severity, Status};
use crate::config_error::KeyError;
use crate::queue::StartAt;

/// `[[sink]]` as written: the shared keys, and its one kind sub-table.
#[derive(Debug, Clone)]
pub struct RawSink {
    name: String,
    tenants: Vec<String>,
    severities: Vec<Severity>,
    statuses: Vec<Status>,
    concurrency: Option<u32>,
    give_up_after: Option<String>,
    start: Option<String>,
    kind: SinkKind,
}

/// Declares the sink kinds once: the [`SinkKind`] enum, its sub-table names, and the
/// dispatch to each kind's module. A kind's module owns its config struct
/// (`deny_unknown_fields`) and a `spec(settings, raw, base) -> Result<SinkSpec, KeyError>`
/// whose error key is relative to the sub-table. A new kind is its module plus
/// one line here.
macro_rules! sink_kinds {
    ($($table:literal => $variant:ident($module:ident::$config:ident),)+) => {
        /// A `[[sink]]`'s kind: which sub-table it has, with that table's config.
        #[derive(Debug, Clone)]
        pub enum SinkKind {
            $($variant(super::$module::$config),)+
        }

        /// The kinds' sub-table names, in declaration order.
        pub const KINDS: &[&str] = &[$($table,)+];

        impl SinkKind {
            /// The sub-table name: `webhook`, …
            pub fn table(&self) -> &'static str {
                match self {
                    $(SinkKind::$variant(_) => $table,)+
                }
            }

            /// Reads the value of sub-table `table` from `map`; `None` when `table` names
            /// no kind.
            fn read<'de, A: MapAccess<'de>>(table: &str, map: &mut A) -> Result<Option<SinkKind>, A::Error> {
                match table {
                    $($table => map.next_value().map(|raw| Some(SinkKind::$variant(raw))),)+
                    _ => Ok(None),
                }
            }

            /// The kind's own validation; the error key is relative to its sub-table.
            fn spec(self, settings: SinkSettings, base: &Path) -> Result<SinkSpec, KeyError> {
                match self {
                    $(SinkKind::$variant(raw) => super::$module::spec(settings, raw, base),)+
                }
            }
        }
    };
}

sink_kinds! {
    "webhook" => Webhook(webhook::WebhookConfig),
    "pagerduty" => PagerDuty(pagerduty::PagerDutyConfig),
    "alertmanager" => Alertmanager(alertmanager::AlertmanagerConfig),
    "email" => Email(email::EmailConfig),
    "nats" => Nats(nats::NatsConfig),
}

/// The keys every kind shares.
const SHARED_KEYS: &[&str] =
    &["name", "tenants", "severities", "statuses", "concurrency", "give_up_after", "start"];

impl<'de> Deserialize<'de> for RawSink {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawSinkVisitor)
    }
}

/// `[[sink]]` by hand rather than derived: the kind is "exactly one of these
/// sub-tables", which serde's derive cannot say together with `deny_unknown_fields`.
struct RawSinkVisitor;

impl<'de> Visitor<'de> for RawSinkVisitor {
    type Value = RawSink;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a [[sink]] table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawSink, A::Error> {
        let mut name = None;
        let (mut tenants, mut severities, mut statuses) = (Vec::new(), Vec::new(), Vec::new());
        let (mut concurrency, mut give_up_after, mut start) = (None, None, None);
        let mut kind: Option<SinkKind> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "name" => name = Some(map.next_value()?),
                "tenants" => tenants = map.next_value()?,
                "severities" => severities = map.next_value()?,
                "statuses" => statuses = map.next_value()?,
                "concurrency" => concurrency = map.next_value()?,
                "give_up_after" => give_up_after = map.next_value()?,
                "start" => start = map.next_value()?,
                table => match SinkKind::read(table, &mut map)? {
                    Some(_) if kind.is_some() => {
                        let first = kind.as_ref().map_or("", SinkKind::table);
                        return Err(de::Error::custom(format!(
                            "a sink has one kind: [sink.{first}] and [sink.{table}] are both given"
                        )));
                    }
                    Some(read) => kind = Some(read),
                    None => {
                        return Err(de::Error::custom(format!(
                            "unknown key `{table}`: expected one of {}, or one kind sub-table ({})",
                            SHARED_KEYS.join(", "),
                            KINDS.join(", ")
                        )));
                    }
                },
            }
        }
        let name: String = name.ok_or_else(|| de::Error::missing_field("name"))?;
        let kind = kind.ok_or_else(|| {
            de::Error::custom(format!(
                "sink {name:?}: give exactly one kind sub-table ([sink.<kind>], kind one of: {})",
                KINDS.join(", ")
            ))
        })?;
        Ok(RawSink { name, tenants, severities, statuses, concurrency, give_up_after, start, kind })
    }
}

/// Puts a kind's error key under its sub-table: `url` → `sink[2].webhook.url`.
fn kind_error(index: usize, kind: &str) -> impl FnOnce(KeyError) -> KeyError + '_ {
    move |error| error.under(&format!("sink[{index}].{kind}"))
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
        let table = self.kind.table();
        self.kind.spec(settings, base).map_err(kind_error(index, table))
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
