//! Rules: which metric of which checks, thresholds, hysteresis, `for`, severities, and
//! per-tenant / per-label overrides.
//!
//! A rules file (TOML) holds `[[rule]]` and `[[override]]` entries and an optional
//! `[flapping]` table; the embedded defaults (`default_rules.toml`) are loaded through
//! exactly the same path. Loading validates everything and names the rule in every
//! error; an override is validated as the rule it produces.
//!
//! ```toml
//! [[rule]]
//! name = "disk_used_pct"        # part of the alert fingerprint: never rename one in use
//! kind = "disk"                 # CheckResult.kind
//! check = "disk:/var*"          # optional glob on the check id
//! tenant = "acme"               # optional: only this tenant
//! labels = { role = "server" }  # optional: only agents with these labels
//! metric = "used_pct"           # or "@status": the probe's verdict (0 ok, 1 warning, 2 critical)
//! direction = "above"           # "above" (default: higher is worse) or "below"
//! warn = 90
//! crit = 95
//! clear = 85                    # resolve only past this (hysteresis); default: warn (or crit)
//! for = "2m"                    # condition must hold this long before firing
//! missing = "ignore"            # metric absent: "ignore" (keep state) or "ok" (resolve)
//! severity = { warn = "P3", crit = "P2" }
//! summary = "Disk {subject} {value}% used ({level} at {threshold}%)"
//! resolved = "Disk {subject} {value}% used (back below {clear}%)"
//! runbook = "https://wiki.example/disk"
//!
//! [[override]]                  # later overrides win; every field but `rule` optional
//! rule = "disk_used_pct"
//! tenant = "acme"
//! labels = { role = "workstation" }
//! check = "disk:/scratch"
//! warn = 97
//! crit = 99
//! severity = { crit = "P3" }
//! disabled = false
//!
//! [flapping]
//! window = "10m"                # state changes counted over this window
//! changes = 6                   # this many changes in the window: flapping
//! ```
//!
//! Summary placeholders: `{subject}` (check id without its kind), `{check}`, `{value}`,
//! `{value_duration}` (value read as seconds, e.g. "3h 20m"), `{threshold}`, `{clear}`,
//! `{level}` ("warning"/"critical"), `{message}` (the probe's message).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::Level;
use crate::alert::Severity;
use crate::calendar::Glob;

/// Which side of the thresholds is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Higher is worse (disk used %, rtt).
    Above,
    /// Lower is worse (free bytes, time to full, "up").
    Below,
}

/// What a firing check does when a result lacks the rule's metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Keep the state (the metric is just not in this result).
    Ignore,
    /// Absent means fine (e.g. no time-to-full forecast: the disk is not filling).
    Ok,
}

/// A validated summary template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(String);

const PLACEHOLDERS: [&str; 9] =
    ["subject", "check", "value", "value_duration", "threshold", "clear", "level", "message", "metric"];

impl Template {
    fn parse(text: &str) -> Result<Template, String> {
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| format!("unclosed '{{' in {text:?}"))?;
            let name = &after[..close];
            if !PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "unknown placeholder {{{name}}} in {text:?}; known: {}",
                    PLACEHOLDERS.join(", ")
                ));
            }
            rest = &after[close + 1..];
        }
        Ok(Template(text.to_owned()))
    }

    pub fn render(&self, values: &[(&str, String)]) -> String {
        let mut out = self.0.clone();
        for (name, value) in values {
            out = out.replace(&format!("{{{name}}}"), value);
        }
        out.trim().to_owned()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Stable rule name; part of the alert fingerprint. Never rename a shipped rule.
    pub name: String,
    /// Check kind the rule applies to (`CheckResult.kind`).
    pub kind: String,
    pub check: Option<Glob>,
    pub tenant: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Metric read from the result ("@status": the probe's own verdict).
    pub metric: String,
    pub direction: Direction,
    pub warn: Option<f64>,
    pub crit: Option<f64>,
    /// A firing check resolves only once the value is back past this (hysteresis).
    pub clear: f64,
    /// The condition must hold this long before the check fires.
    pub for_duration: Duration,
    pub missing: Missing,
    pub warn_severity: Severity,
    pub crit_severity: Severity,
    pub summary: Template,
    pub resolved: Template,
    pub runbook: Option<String>,
}

impl Rule {
    fn worse_or_equal(&self, value: f64, threshold: f64) -> bool {
        match self.direction {
            Direction::Above => value >= threshold,
            Direction::Below => value <= threshold,
        }
    }

    /// The level the value calls for, given the level the check is at now (hysteresis:
    /// a firing check stays firing, at warning, until the value is past `clear`).
    pub fn next_level(&self, current: Level, value: f64) -> Level {
        let raw = if self.crit.is_some_and(|crit| self.worse_or_equal(value, crit)) {
            Level::Critical
        } else if self.warn.is_some_and(|warn| self.worse_or_equal(value, warn)) {
            Level::Warning
        } else {
            Level::Ok
        };
        let cleared = match self.direction {
            Direction::Above => value < self.clear,
            Direction::Below => value > self.clear,
        };
        if raw == Level::Ok && current.is_firing() && !cleared {
            return if self.warn.is_some() { Level::Warning } else { current };
        }
        raw
    }

    pub fn severity(&self, level: Level) -> Severity {
        match level {
            Level::Critical => self.crit_severity,
            Level::Warning | Level::Ok => self.warn_severity,
        }
    }

    /// The threshold that a firing level was judged against.
    pub fn threshold(&self, level: Level) -> f64 {
        match level {
            Level::Critical => self.crit.or(self.warn).unwrap_or(self.clear),
            Level::Warning | Level::Ok => self.warn.or(self.crit).unwrap_or(self.clear),
        }
    }

    /// Whether the rule applies to this agent's check (overrides not considered).
    fn selects(&self, tenant: &str, labels: &BTreeMap<String, String>, kind: &str, check: &str) -> bool {
        (self.kind == "*" || self.kind == kind)
            && self.check.as_ref().is_none_or(|glob| glob.matches(check))
            && self.tenant.as_deref().is_none_or(|only| only == tenant)
            && self.labels.iter().all(|(key, value)| labels.get(key) == Some(value))
    }

    fn validate(&self) -> Result<(), String> {
        if self.warn.is_none() && self.crit.is_none() {
            return Err("set warn, crit or both".into());
        }
        let (worse, better) = match self.direction {
            Direction::Above => ("above", "below"),
            Direction::Below => ("below", "above"),
        };
        let ordered = |low: f64, high: f64| match self.direction {
            Direction::Above => low <= high,
            Direction::Below => low >= high,
        };
        if let (Some(warn), Some(crit)) = (self.warn, self.crit)
            && !ordered(warn, crit)
        {
            return Err(format!(
                "warn ({warn}) must not be {worse} crit ({crit}) for direction = \"{worse}\": the warning comes first"
            ));
        }
        let first = self.warn.or(self.crit).unwrap_or_default();
        if !ordered(self.clear, first) {
            return Err(format!(
                "clear ({}) must be {better} or at the first threshold ({first}) for direction = \"{worse}\"",
                self.clear
            ));
        }
        for value in [self.warn, self.crit, Some(self.clear)].into_iter().flatten() {
            if !value.is_finite() {
                return Err("thresholds must be finite numbers".into());
            }
        }
        Ok(())
    }
}

/// Flap detection settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flapping {
    pub window: Duration,
    pub changes: usize,
}

impl Default for Flapping {
    fn default() -> Self {
        Self { window: Duration::from_secs(600), changes: 6 }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Override {
    rule: String,
    tenant: Option<String>,
    labels: BTreeMap<String, String>,
    check: Option<Glob>,
    patch: RawPatch,
}

/// The rules in force. Shared read-only by every session.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
    overrides: Vec<Override>,
    pub flapping: Flapping,
    /// Where the rules came from, for logs.
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{file}: {place}: {message}")]
pub struct RulesError {
    pub file: String,
    /// "rule disk_used_pct", "override[2] (rule x)", "line 3"…
    pub place: String,
    pub message: String,
}

const DEFAULT_RULES: &str = include_str!("default_rules.toml");

impl RuleSet {
    /// The embedded default rules.
    pub fn defaults() -> Arc<Self> {
        Arc::new(
            Self::parse(DEFAULT_RULES, "<embedded default rules>").expect("embedded default rules are valid"),
        )
    }

    pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| RulesError {
            file: file.clone(),
            place: "(file)".into(),
            message: format!("cannot read: {error}"),
        })?;
        Self::parse(&text, &file)
    }

    pub fn parse(text: &str, file: &str) -> Result<RuleSet, RulesError> {
        let error = |place: String, message: String| RulesError { file: file.to_owned(), place, message };
        // Parse to tables first, so that a bad key inside a rule can be reported with
        // that rule's name.
        let document: toml::Table = toml::from_str(text).map_err(|parse| {
            let line =
                parse.span().map_or(0, |span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            error(format!("line {line}"), parse.message().to_owned())
        })?;
        let mut rules: Vec<Arc<Rule>> = Vec::new();
        let mut overrides = Vec::new();
        let mut flapping = Flapping::default();
        // Rules before overrides (which name them), whatever the order in the file.
        let mut document: Vec<(String, toml::Value)> = document.into_iter().collect();
        document.sort_by_key(|(key, _)| match key.as_str() {
            "rule" => 0,
            "override" => 1,
            _ => 2,
        });
        for (key, value) in document {
            match key.as_str() {
                "rule" => {
                    let entries =
                        value.as_array().ok_or_else(|| error("rule".into(), "use [[rule]] tables".into()))?;
                    for (index, entry) in entries.iter().enumerate() {
                        let name = entry.get("name").and_then(|name| name.as_str()).map(str::to_owned);
                        let place = name
                            .as_ref()
                            .map_or_else(|| format!("rule[{index}]"), |name| format!("rule {name}"));
                        let raw: RawRule = entry.clone().try_into().map_err(|parse: toml::de::Error| {
                            error(place.clone(), parse.message().to_owned())
                        })?;
                        let rule = raw.validate().map_err(|message| error(place.clone(), message))?;
                        if rules.iter().any(|known| known.name == rule.name) {
                            return Err(error(place, "a rule with this name exists already".into()));
                        }
                        rules.push(Arc::new(rule));
                    }
                }
                "override" => {
                    let entries = value
                        .as_array()
                        .ok_or_else(|| error("override".into(), "use [[override]] tables".into()))?;
                    for (index, entry) in entries.iter().enumerate() {
                        let target =
                            entry.get("rule").and_then(|rule| rule.as_str()).unwrap_or("?").to_owned();
                        let place = format!("override[{index}] (rule {target})");
                        let raw: RawOverride =
                            entry.clone().try_into().map_err(|parse: toml::de::Error| {
                                error(place.clone(), parse.message().to_owned())
                            })?;
                        let base = rules.iter().find(|rule| rule.name == raw.rule).ok_or_else(|| {
                            error(
                                place.clone(),
                                format!("no rule named {:?} (define it before overriding)", raw.rule),
                            )
                        })?;
                        // The rule this override produces must be valid on its own.
                        let patch = raw.patch();
                        let patched = patch.apply(base).map_err(|message| error(place.clone(), message))?;
                        patched.validate().map_err(|message| error(place.clone(), message))?;
                        overrides.push(Override {
                            rule: raw.rule,
                            tenant: raw.tenant,
                            labels: raw.labels.unwrap_or_default(),
                            check: raw.check.as_deref().map(Glob::new),
                            patch,
                        });
                    }
                }
                "flapping" => {
                    let raw: RawFlapping = value.try_into().map_err(|parse: toml::de::Error| {
                        error("flapping".into(), parse.message().to_owned())
                    })?;
                    flapping = raw.validate().map_err(|message| error("flapping".into(), message))?;
                }
                other => {
                    return Err(error(
                        other.to_owned(),
                        format!("unknown table `{other}`: expected [[rule]], [[override]] or [flapping]"),
                    ));
                }
            }
        }
        Ok(RuleSet { rules, overrides, flapping, source: file.to_owned() })
    }

    /// The rules in force for one check of one agent, with overrides applied (in file
    /// order, later wins) and disabled rules left out.
    pub fn effective(
        &self,
        tenant: &str,
        labels: &BTreeMap<String, String>,
        kind: &str,
        check: &str,
    ) -> Vec<Arc<Rule>> {
        let mut effective = Vec::new();
        for rule in self.rules.iter().filter(|rule| rule.selects(tenant, labels, kind, check)) {
            let matching: Vec<&Override> = self
                .overrides
                .iter()
                .filter(|patch| {
                    patch.rule == rule.name
                        && patch.tenant.as_deref().is_none_or(|only| only == tenant)
                        && patch.labels.iter().all(|(key, value)| labels.get(key) == Some(value))
                        && patch.check.as_ref().is_none_or(|glob| glob.matches(check))
                })
                .collect();
            if matching.is_empty() {
                effective.push(rule.clone());
                continue;
            }
            let mut patched = (**rule).clone();
            let mut disabled = false;
            for patch in matching {
                // Validated at load against the base rule; a combination of several
                // overrides is checked again here and skipped (with a log) if invalid.
                match patch.patch.apply(&patched) {
                    Ok(next) if next.validate().is_ok() => patched = next,
                    _ => {
                        tracing::warn!(rule = %rule.name, tenant, check, "overrides combine into an invalid rule; later one ignored")
                    }
                }
                disabled = patch.patch.disabled.unwrap_or(disabled);
            }
            if !disabled {
                effective.push(Arc::new(patched));
            }
        }
        effective
    }

    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeverity {
    warn: Option<Severity>,
    crit: Option<Severity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    kind: String,
    check: Option<String>,
    tenant: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    metric: String,
    direction: Option<String>,
    warn: Option<f64>,
    crit: Option<f64>,
    clear: Option<f64>,
    #[serde(rename = "for")]
    for_duration: Option<String>,
    missing: Option<String>,
    severity: Option<RawSeverity>,
    summary: Option<String>,
    resolved: Option<String>,
    runbook: Option<String>,
}

fn parse_duration(key: &str, text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| format!("{key}: {text:?} is not a duration ({error})"))
}

impl RawRule {
    fn validate(self) -> Result<Rule, String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !name_ok {
            return Err(format!("name {:?}: use 1-64 characters of a-z, 0-9, '_', '-'", self.name));
        }
        if self.kind.is_empty() || self.metric.is_empty() {
            return Err("kind and metric must not be empty".into());
        }
        let direction = match self.direction.as_deref() {
            None | Some("above") => Direction::Above,
            Some("below") => Direction::Below,
            Some(other) => return Err(format!("direction {other:?}: use \"above\" or \"below\"")),
        };
        let missing = match self.missing.as_deref() {
            None | Some("ignore") => Missing::Ignore,
            Some("ok") => Missing::Ok,
            Some(other) => return Err(format!("missing {other:?}: use \"ignore\" or \"ok\"")),
        };
        let severity = self.severity.unwrap_or(RawSeverity { warn: None, crit: None });
        let default_summary =
            format!("{} {{subject}} {} = {{value}} ({{level}} at {{threshold}})", self.kind, self.metric);
        let default_resolved = format!("{} {{subject}} {} back to {{value}}", self.kind, self.metric);
        let rule = Rule {
            clear: self.clear.or(self.warn).or(self.crit).unwrap_or_default(),
            for_duration: self
                .for_duration
                .as_deref()
                .map(|text| parse_duration("for", text))
                .transpose()?
                .unwrap_or_default(),
            summary: Template::parse(self.summary.as_deref().unwrap_or(&default_summary))
                .map_err(|e| format!("summary: {e}"))?,
            resolved: Template::parse(self.resolved.as_deref().unwrap_or(&default_resolved))
                .map_err(|e| format!("resolved: {e}"))?,
            name: self.name,
            kind: self.kind,
            check: self.check.as_deref().map(Glob::new),
            tenant: self.tenant,
            labels: self.labels.unwrap_or_default(),
            metric: self.metric,
            direction,
            warn: self.warn,
            crit: self.crit,
            missing,
            warn_severity: severity.warn.unwrap_or(Severity::P3),
            crit_severity: severity.crit.unwrap_or(Severity::P2),
            runbook: self.runbook,
        };
        rule.validate()?;
        Ok(rule)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    rule: String,
    tenant: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    check: Option<String>,
    warn: Option<f64>,
    crit: Option<f64>,
    clear: Option<f64>,
    #[serde(rename = "for")]
    for_duration: Option<String>,
    severity: Option<RawPatchSeverity>,
    runbook: Option<String>,
    disabled: Option<bool>,
}

impl RawOverride {
    fn patch(&self) -> RawPatch {
        RawPatch {
            warn: self.warn,
            crit: self.crit,
            clear: self.clear,
            for_duration: self.for_duration.clone(),
            severity: self.severity.clone(),
            runbook: self.runbook.clone(),
            disabled: self.disabled,
        }
    }
}

/// The fields an override may change.
#[derive(Debug, Clone, PartialEq, Default)]
struct RawPatch {
    warn: Option<f64>,
    crit: Option<f64>,
    clear: Option<f64>,
    for_duration: Option<String>,
    severity: Option<RawPatchSeverity>,
    runbook: Option<String>,
    disabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPatchSeverity {
    warn: Option<Severity>,
    crit: Option<Severity>,
}

impl RawPatch {
    fn apply(&self, base: &Rule) -> Result<Rule, String> {
        let mut rule = base.clone();
        if let Some(warn) = self.warn {
            rule.warn = Some(warn);
        }
        if let Some(crit) = self.crit {
            rule.crit = Some(crit);
        }
        match self.clear {
            Some(clear) => rule.clear = clear,
            // Moving thresholds without a clear: keep the base's gap below the first one.
            None if self.warn.is_some() || self.crit.is_some() => {
                let base_first = base.warn.or(base.crit).unwrap_or(base.clear);
                let first = rule.warn.or(rule.crit).unwrap_or(rule.clear);
                rule.clear = first - (base_first - base.clear);
            }
            None => {}
        }
        if let Some(text) = &self.for_duration {
            rule.for_duration = parse_duration("for", text)?;
        }
        if let Some(severity) = &self.severity {
            rule.warn_severity = severity.warn.unwrap_or(rule.warn_severity);
            rule.crit_severity = severity.crit.unwrap_or(rule.crit_severity);
        }
        if let Some(runbook) = &self.runbook {
            rule.runbook = Some(runbook.clone());
        }
        Ok(rule)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlapping {
    window: Option<String>,
    changes: Option<usize>,
}

impl RawFlapping {
    fn validate(self) -> Result<Flapping, String> {
        let defaults = Flapping::default();
        let window = self
            .window
            .as_deref()
            .map(|text| parse_duration("window", text))
            .transpose()?
            .unwrap_or(defaults.window);
        let changes = self.changes.unwrap_or(defaults.changes);
        if changes < 2 {
            return Err("changes must be at least 2".into());
        }
        Ok(Flapping { window, changes })
    }
}

#[cfg(test)]
mod tests;
