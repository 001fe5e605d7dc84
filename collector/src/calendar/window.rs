//! Maintenance windows and silences: which alerts they cover, and when.
//!
//! A window covers an alert when its [`Scope`] matches the alert's tenant, agent, check
//! and labels and its [`Schedule`] contains the instant. A silence is a window with a
//! one-off schedule. Alerts inside a window are recorded but not notified; that decision
//! (and emitting a still-firing alert when the window ends) belongs to the evaluator,
//! which sets its timer to [`Maintenance::next_change`].

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Deserialize;

use super::{Edge, Hours, MomentError, Schedule, TimeOfDay, Weekdays, parse_moment, parse_time_zone};
use crate::config_error::KeyError;

/// A check id pattern: `*` matches any run of characters (also none), `?` exactly one;
/// everything else matches itself, case-sensitively. `disk:*` matches every disk check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
}

impl Glob {
    pub fn new(pattern: impl Into<String>) -> Glob {
        Glob { pattern: pattern.into() }
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `text` matches the whole pattern. Linear backtracking: on a mismatch after
    /// a `*`, let that `*` swallow one more character and retry; only the last `*` ever
    /// needs to move, so this is O(pattern × text) at worst and never recursive.
    pub fn matches(&self, text: &str) -> bool {
        let pattern: Vec<char> = self.pattern.chars().collect();
        let text: Vec<char> = text.chars().collect();
        let (mut p, mut t) = (0, 0);
        // Position of the last `*` seen, and where in `text` it currently stops.
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match pattern.get(p) {
                Some('*') => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(&wanted) if wanted == '?' || wanted == text[t] => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((star_p, star_t)) => {
                        p = star_p + 1;
                        t = star_t + 1;
                        star = Some((star_p, star_t + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|&rest| rest == '*')
    }
}

/// Which alerts a window covers. Every field that is set must match; an empty scope
/// covers everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Only this tenant's alerts; `None` = every tenant.
    pub tenant: Option<String>,
    /// Only this agent's alerts; `None` = every agent (of the tenant).
    pub agent: Option<String>,
    /// Only agents carrying all of these labels with these values.
    pub labels: BTreeMap<String, String>,
    /// Only checks whose id matches this pattern.
    pub check: Option<Glob>,
}

impl Scope {
    pub fn matches(&self, tenant: &str, agent: &str, check: &str, labels: &BTreeMap<String, String>) -> bool {
        self.tenant.as_deref().is_none_or(|wanted| wanted == tenant)
            && self.agent.as_deref().is_none_or(|wanted| wanted == agent)
            && self.labels.iter().all(|(key, value)| labels.get(key) == Some(value))
            && self.check.as_ref().is_none_or(|glob| glob.matches(check))
    }
}

/// A named maintenance window or silence.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceWindow {
    /// Shown in logs and in the alert record ("suppressed by acme patch night").
    pub name: String,
    pub scope: Scope,
    pub schedule: Schedule,
}

impl MaintenanceWindow {
    /// A silence: a one-off window from `start` to `end`.
    pub fn silence(
        name: impl Into<String>,
        scope: Scope,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<MaintenanceWindow, String> {
        Ok(MaintenanceWindow { name: name.into(), scope, schedule: Schedule::one_off(start, end)? })
    }

    pub fn matches(&self, tenant: &str, agent: &str, check: &str, labels: &BTreeMap<String, String>) -> bool {
        self.scope.matches(tenant, agent, check, labels)
    }

    pub fn active(&self, at: Timestamp) -> bool {
        self.schedule.contains(at)
    }
}

/// All maintenance windows and silences in force.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Maintenance {
    pub windows: Vec<MaintenanceWindow>,
}

impl Maintenance {
    /// Validates `[[maintenance]]` entries; `key` is the array's name, so errors read
    /// `maintenance[2].timezone: ...`.
    pub fn from_raw(raw: Vec<RawMaintenance>, key: &str) -> Result<Maintenance, KeyError> {
        let windows = raw
            .into_iter()
            .enumerate()
            .map(|(index, entry)| entry.validate(&format!("{key}[{index}]")))
            .collect::<Result<Vec<_>, KeyError>>()?;
        Ok(Maintenance { windows })
    }

    /// The first window (in configuration order) that is active at `at` and covers the
    /// alert, if any.
    pub fn covering(
        &self,
        tenant: &str,
        agent: &str,
        check: &str,
        labels: &BTreeMap<String, String>,
        at: Timestamp,
    ) -> Option<&MaintenanceWindow> {
        self.windows.iter().find(|window| window.matches(tenant, agent, check, labels) && window.active(at))
    }

    /// The earliest instant after `at` at which any window starts or ends: when the
    /// evaluator must look again at what is suppressed. `None` when nothing will change.
    pub fn next_change(&self, at: Timestamp) -> Option<Timestamp> {
        self.windows
            .iter()
            .flat_map(|window| [window.schedule.current_end(at), window.schedule.next_start(at)])
            .flatten()
            .min()
    }
}

/// A maintenance window or silence in the collector's TOML:
///
/// ```toml
/// [[maintenance]]
/// name = "acme patch night"
/// tenant = "acme"
/// labels = { role = "server" }
/// check = "disk:*"
/// days = ["sat"]             # or "mon-fri"; omit for every day
/// from = "22:00"             # crossing midnight belongs to the start day
/// to = "02:00"
/// timezone = "Europe/Berlin"
///
/// [[maintenance]]
/// name = "globex san migration"
/// tenant = "globex"
/// start = "2026-11-28T22:00"  # civil time in `timezone`, or an RFC 3339 instant
/// end = "2026-11-29T02:00"
/// timezone = "Europe/Berlin"
/// ```
///
/// Set either `start` and `end` (a one-off window) or `days` / `from` / `to` (every week).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaintenance {
    /// Names the window in logs and alert records. Required.
    pub name: Option<String>,
    /// Cover only this tenant's alerts. Omit to cover every tenant.
    pub tenant: Option<String>,
    /// Cover only this agent's alerts (its agent id).
    pub agent: Option<String>,
    /// Cover only agents with all of these labels, e.g. `{ role = "server" }`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Cover only checks whose id matches this pattern; `*` matches anything, `?` one
    /// character (`"disk:*"`).
    pub check: Option<String>,
    /// One-off: when the window opens, `"2026-11-28T22:00"` (civil time in `timezone`)
    /// or an instant with an offset, `"2026-11-28T21:00:00Z"`.
    pub start: Option<String>,
    /// One-off: when the window closes; same forms as `start`.
    pub end: Option<String>,
    /// Weekly: the days the window opens on, e.g. `["sat", "sun"]` or `["mon-fri"]`.
    /// Omit (with `from` and `to`) for every day; alone, it means whole days.
    pub days: Option<Vec<String>>,
    /// Weekly: when the window opens, `"HH:MM"` civil time in `timezone`.
    pub from: Option<String>,
    /// Weekly: when it closes, `"HH:MM"`; at or before `from` means the next day, and
    /// `"24:00"` is midnight.
    pub to: Option<String>,
    /// IANA time zone of the civil times, e.g. `"Europe/Berlin"` or `"UTC"`. Required
    /// unless `start` and `end` carry offsets. Windows follow its daylight-saving rules.
    pub timezone: Option<String>,
}

impl RawMaintenance {
    /// Validates one entry; `key` names it in errors (`maintenance[0]`).
    pub fn validate(self, key: &str) -> Result<MaintenanceWindow, KeyError> {
        let name = match self.name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => name.to_owned(),
            Some(_) => {
                return Err(KeyError::new(
                    format!("{key}.name"),
                    "empty; name the window, it shows in the alert log",
                ));
            }
            None => {
                return Err(KeyError::new(
                    format!("{key}.name"),
                    "missing; name the window, it shows in the alert log",
                ));
            }
        };
        let scope = self.scope(key)?;
        let timezone = match &self.timezone {
            Some(zone) => Some(
                parse_time_zone(zone).map_err(|message| KeyError::new(format!("{key}.timezone"), message))?,
            ),
            None => None,
        };
        let one_off = self.start.is_some() || self.end.is_some();
        let weekly = self.days.is_some() || self.from.is_some() || self.to.is_some();
        let schedule = match (one_off, weekly) {
            (true, true) => {
                return Err(KeyError::new(
                    key,
                    "set either start/end (one-off) or days/from/to (weekly), not both",
                ));
            }
            (false, false) => {
                return Err(KeyError::new(
                    key,
                    "set either start/end or days/from/to to say when the window is (start/end: once; days/from/to: every week)",
                ));
            }
            (true, false) => {
                let missing = |edge: &str| {
                    KeyError::new(
                        format!("{key}.{edge}"),
                        "missing; a one-off window needs both start and end",
                    )
                };
                let start = self.start.as_deref().ok_or_else(|| missing("start"))?;
                let end = self.end.as_deref().ok_or_else(|| missing("end"))?;
                let start = moment(key, "start", start, timezone.as_ref(), Edge::Start)?;
                let end = moment(key, "end", end, timezone.as_ref(), Edge::End)?;
                Schedule::one_off(start, end).map_err(|_| {
                    KeyError::new(
                        format!("{key}.end"),
                        format!("{end} is not after start {start}; a window must end after it starts"),
                    )
                })?
            }
            (false, true) => {
                let timezone = timezone.ok_or_else(|| {
                    KeyError::new(
                        format!("{key}.timezone"),
                        "missing; say which zone from/to are in, e.g. timezone = \"Europe/Berlin\"",
                    )
                })?;
                let days = match &self.days {
                    Some(specs) => Weekdays::parse_list(specs)
                        .map_err(|message| KeyError::new(format!("{key}.days"), message))?,
                    None => Weekdays::ALL,
                };
                let time = |field: &str, text: &str| {
                    TimeOfDay::parse(text).map_err(|message| KeyError::new(format!("{key}.{field}"), message))
                };
                let hours = match (self.from.as_deref(), self.to.as_deref()) {
                    (Some(from), Some(to)) => Hours::new(time("from", from)?, time("to", to)?)
                        .map_err(|message| KeyError::new(format!("{key}.to"), message))?,
                    (None, None) => Hours::WHOLE_DAY,
                    (Some(_), None) => {
                        return Err(KeyError::new(
                            format!("{key}.to"),
                            "missing; set when the window closes",
                        ));
                    }
                    (None, Some(_)) => {
                        return Err(KeyError::new(
                            format!("{key}.from"),
                            "missing; set when the window opens",
                        ));
                    }
                };
                Schedule::Weekly { days, hours, timezone }
            }
        };
        Ok(MaintenanceWindow { name, scope, schedule })
    }

    /// Validates an entry that must be a silence (one-off); `key` names it in errors.
    pub fn validate_silence(self, key: &str) -> Result<MaintenanceWindow, KeyError> {
        if self.start.is_none() && self.end.is_none() {
            return Err(KeyError::new(
                key,
                "a silence needs start and end; use a maintenance window for a weekly schedule",
            ));
        }
        self.validate(key)
    }

    fn scope(&self, key: &str) -> Result<Scope, KeyError> {
        let non_empty = |field: &str, value: &Option<String>| match value.as_deref() {
            Some("") => Err(KeyError::new(
                format!("{key}.{field}"),
                format!("empty; remove the key to match every {field}"),
            )),
            other => Ok(other.map(str::to_owned)),
        };
        if let Some(label) = self.labels.keys().find(|label| label.is_empty()) {
            return Err(KeyError::new(format!("{key}.labels"), format!("{label:?} is not a label name")));
        }
        let check = match self.check.as_deref() {
            Some("") => {
                return Err(KeyError::new(
                    format!("{key}.check"),
                    "empty; use \"*\" or remove the key to match every check",
                ));
            }
            other => other.map(Glob::new),
        };
        Ok(Scope {
            tenant: non_empty("tenant", &self.tenant)?,
            agent: non_empty("agent", &self.agent)?,
            labels: self.labels.clone(),
            check,
        })
    }
}

fn moment(
    key: &str,
    field: &str,
    text: &str,
    timezone: Option<&jiff::tz::TimeZone>,
    edge: Edge,
) -> Result<Timestamp, KeyError> {
    parse_moment(text, timezone, edge).map_err(|error| match error {
        MomentError::Invalid => KeyError::new(format!("{key}.{field}"), format!("{text:?} is not a date and time; write \"2026-11-28T22:00\" (with timezone) or \"2026-11-28T22:00:00+01:00\""
        )),
        MomentError::NeedsTimeZone => KeyError::new(format!("{key}.timezone"), format!("missing; {field} {text:?} has no offset, so say which zone it is in, e.g. timezone = \"Europe/Berlin\""
        )),
    })
}

#[cfg(test)]
mod tests;
