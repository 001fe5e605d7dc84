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
    pub fn from_raw(raw: Vec<RawMaintenance>, key: &str) -> Result<Maintenance, String> {
        let windows = raw
            .into_iter()
            .enumerate()
            .map(|(index, entry)| entry.validate(&format!("{key}[{index}]")))
            .collect::<Result<Vec<_>, String>>()?;
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
    pub fn validate(self, key: &str) -> Result<MaintenanceWindow, String> {
        let name = match self.name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => name.to_owned(),
            Some(_) => return Err(format!("{key}.name: empty; name the window, it shows in the alert log")),
            None => return Err(format!("{key}.name: missing; name the window, it shows in the alert log")),
        };
        let scope = self.scope(key)?;
        let timezone = match &self.timezone {
            Some(zone) => {
                Some(parse_time_zone(zone).map_err(|message| format!("{key}.timezone: {message}"))?)
            }
            None => None,
        };
        let one_off = self.start.is_some() || self.end.is_some();
        let weekly = self.days.is_some() || self.from.is_some() || self.to.is_some();
        let schedule = match (one_off, weekly) {
            (true, true) => {
                return Err(format!(
                    "{key}: set either start/end (one-off) or days/from/to (weekly), not both"
                ));
            }
            (false, false) => {
                return Err(format!(
                    "{key}: set either start/end or days/from/to to say when the window is (start/end: once; days/from/to: every week)"
                ));
            }
            (true, false) => {
                let missing =
                    |edge: &str| format!("{key}.{edge}: missing; a one-off window needs both start and end");
                let start = self.start.as_deref().ok_or_else(|| missing("start"))?;
                let end = self.end.as_deref().ok_or_else(|| missing("end"))?;
                let start = moment(key, "start", start, timezone.as_ref(), Edge::Start)?;
                let end = moment(key, "end", end, timezone.as_ref(), Edge::End)?;
                Schedule::one_off(start, end).map_err(|_| {
                    format!("{key}.end: {end} is not after start {start}; a window must end after it starts")
                })?
            }
            (false, true) => {
                let timezone = timezone.ok_or_else(|| {
                    format!("{key}.timezone: missing; say which zone from/to are in, e.g. timezone = \"Europe/Berlin\"")
                })?;
                let days = match &self.days {
                    Some(specs) => {
                        Weekdays::parse_list(specs).map_err(|message| format!("{key}.days: {message}"))?
                    }
                    None => Weekdays::ALL,
                };
                let time = |field: &str, text: &str| {
                    TimeOfDay::parse(text).map_err(|message| format!("{key}.{field}: {message}"))
                };
                let hours = match (self.from.as_deref(), self.to.as_deref()) {
                    (Some(from), Some(to)) => Hours::new(time("from", from)?, time("to", to)?)
                        .map_err(|message| format!("{key}.to: {message}"))?,
                    (None, None) => Hours::WHOLE_DAY,
                    (Some(_), None) => return Err(format!("{key}.to: missing; set when the window closes")),
                    (None, Some(_)) => return Err(format!("{key}.from: missing; set when the window opens")),
                };
                Schedule::Weekly { days, hours, timezone }
            }
        };
        Ok(MaintenanceWindow { name, scope, schedule })
    }

    /// Validates an entry that must be a silence (one-off); `key` names it in errors.
    pub fn validate_silence(self, key: &str) -> Result<MaintenanceWindow, String> {
        if self.start.is_none() && self.end.is_none() {
            return Err(format!(
                "{key}: a silence needs start and end; use a maintenance window for a weekly schedule"
            ));
        }
        self.validate(key)
    }

    fn scope(&self, key: &str) -> Result<Scope, String> {
        let non_empty = |field: &str, value: &Option<String>| match value.as_deref() {
            Some("") => Err(format!("{key}.{field}: empty; remove the key to match every {field}")),
            other => Ok(other.map(str::to_owned)),
        };
        if let Some(label) = self.labels.keys().find(|label| label.is_empty()) {
            return Err(format!("{key}.labels: {label:?} is not a label name"));
        }
        let check = match self.check.as_deref() {
            Some("") => {
                return Err(format!("{key}.check: empty; use \"*\" or remove the key to match every check"));
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
) -> Result<Timestamp, String> {
    parse_moment(text, timezone, edge).map_err(|error| match error {
        MomentError::Invalid => format!(
            "{key}.{field}: {text:?} is not a date and time; write \"2026-11-28T22:00\" (with timezone) or \"2026-11-28T22:00:00+01:00\""
        ),
        MomentError::NeedsTimeZone => format!(
            "{key}.timezone: missing; {field} {text:?} has no offset, so say which zone it is in, e.g. timezone = \"Europe/Berlin\""
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
    }

    fn raw(toml_text: &str) -> RawMaintenance {
        toml::from_str(toml_text).unwrap()
    }

    fn window(toml_text: &str) -> MaintenanceWindow {
        raw(toml_text).validate("maintenance[0]").unwrap()
    }

    #[test]
    fn glob_matching() {
        let cases = [
            ("disk:*", "disk:/var", true),
            ("disk:*", "disk:", true),
            ("disk:*", "service:disk", false),
            ("*", "", true),
            ("*", "anything", true),
            ("", "", true),
            ("", "x", false),
            ("disk:?", "disk:C", true),
            ("disk:?", "disk:CD", false),
            ("*:/var", "disk:/var", true),
            ("*:/var", "disk:/var/log", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a*b", "abab", true),
            ("**x", "yyx", true),
            ("ping:*.example.com", "ping:db.example.com", true),
            ("ping:*.example.com", "ping:example.com", false),
            ("Disk:*", "disk:/", false),
            ("svc:w?n*", "svc:wüntime", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(Glob::new(pattern).matches(text), expected, "{pattern:?} vs {text:?}");
        }
    }

    #[test]
    fn scope_matching() {
        let server = labels(&[("role", "server"), ("site", "hq")]);
        let workstation = labels(&[("role", "workstation"), ("site", "hq")]);
        let scope =
            |tenant: Option<&str>, agent: Option<&str>, wanted: &[(&str, &str)], check: Option<&str>| Scope {
                tenant: tenant.map(str::to_owned),
                agent: agent.map(str::to_owned),
                labels: labels(wanted),
                check: check.map(Glob::new),
            };
        let everything = scope(None, None, &[], None);
        let acme = scope(Some("acme"), None, &[], None);
        let acme_servers = scope(Some("acme"), None, &[("role", "server")], None);
        let acme_hq_servers = scope(Some("acme"), None, &[("role", "server"), ("site", "hq")], None);
        let acme_disks = scope(Some("acme"), None, &[], Some("disk:*"));
        let one_agent = scope(Some("acme"), Some("srv-01"), &[], None);
        let servers_anywhere = scope(None, None, &[("role", "server")], None);
        // (scope, tenant, agent, check, labels, expected)
        let cases = [
            (&everything, "globex", "pc-7", "cpu", &workstation, true),
            (&acme, "acme", "pc-7", "cpu", &workstation, true),
            (&acme, "globex", "pc-7", "cpu", &workstation, false),
            (&acme_servers, "acme", "srv-01", "cpu", &server, true),
            (&acme_servers, "acme", "pc-7", "cpu", &workstation, false),
            (&acme_servers, "acme", "bare", "cpu", &BTreeMap::new(), false),
            (&acme_hq_servers, "acme", "srv-01", "cpu", &server, true),
            (&acme_hq_servers, "acme", "srv-02", "cpu", &labels(&[("role", "server")]), false),
            (&acme_disks, "acme", "srv-01", "disk:/var", &server, true),
            (&acme_disks, "acme", "srv-01", "service:nginx", &server, false),
            (&one_agent, "acme", "srv-01", "cpu", &server, true),
            (&one_agent, "acme", "srv-02", "cpu", &server, false),
            (&one_agent, "globex", "srv-01", "cpu", &server, false),
            (&servers_anywhere, "globex", "srv-9", "cpu", &server, true),
        ];
        for (index, (scope, tenant, agent, check, agent_labels, expected)) in cases.into_iter().enumerate() {
            assert_eq!(scope.matches(tenant, agent, check, agent_labels), expected, "case {index}");
        }
    }

    #[test]
    fn config_example_validates() {
        let patch_night = window(
            r#"
            name = "acme patch night"
            tenant = "acme"
            labels = { role = "server" }
            days = ["sat"]
            from = "22:00"
            to = "02:00"
            timezone = "Europe/Berlin"
            "#,
        );
        assert_eq!(patch_night.name, "acme patch night");
        assert_eq!(patch_night.scope.tenant.as_deref(), Some("acme"));
        assert_eq!(patch_night.scope.labels, labels(&[("role", "server")]));
        assert!(matches!(patch_night.schedule, Schedule::Weekly { .. }));

        let whole_weekend = window(
            r#"name = "w"
            days = ["sat-sun"]
            timezone = "UTC""#,
        );
        assert!(whole_weekend.active(ts("2026-11-29T23:59:59Z")));
        assert!(!whole_weekend.active(ts("2026-11-30T00:00:00Z")));
    }

    #[test]
    fn one_off_window_in_another_zone() {
        // Civil times in New York (EST, UTC-5): 22:00 - 02:00 local is 03:00Z - 07:00Z.
        let night = window(
            r#"
            name = "nyc migration"
            start = "2026-11-28T22:00"
            end = "2026-11-29T02:00"
            timezone = "America/New_York"
            "#,
        );
        assert_eq!(
            night.schedule,
            Schedule::OneOff { start: ts("2026-11-29T03:00:00Z"), end: ts("2026-11-29T07:00:00Z") }
        );
        let cases = [
            ("2026-11-28T22:30:00Z", false),
            ("2026-11-29T02:59:59Z", false),
            ("2026-11-29T03:00:00Z", true),
            ("2026-11-29T06:59:59Z", true),
            ("2026-11-29T07:00:00Z", false),
        ];
        for (at, active) in cases {
            assert_eq!(night.active(ts(at)), active, "{at}");
        }
        // RFC 3339 instants need no time zone.
        let instant = window(
            r#"
            name = "instant"
            start = "2026-11-28T22:00:00+01:00"
            end = "2026-11-29T01:00:00Z"
            "#,
        );
        assert_eq!(
            instant.schedule,
            Schedule::OneOff { start: ts("2026-11-28T21:00:00Z"), end: ts("2026-11-29T01:00:00Z") }
        );
    }

    #[test]
    fn silences() {
        let silence = MaintenanceWindow::silence(
            "ack srv-01 disk",
            Scope { agent: Some("srv-01".into()), check: Some(Glob::new("disk:*")), ..Scope::default() },
            ts("2026-11-28T21:00:00Z"),
            ts("2026-11-28T23:00:00Z"),
        )
        .unwrap();
        assert!(silence.matches("acme", "srv-01", "disk:/var", &BTreeMap::new()));
        assert!(!silence.matches("acme", "srv-02", "disk:/var", &BTreeMap::new()));
        assert!(silence.active(ts("2026-11-28T22:00:00Z")));
        assert!(!silence.active(ts("2026-11-28T23:00:00Z")));
        assert!(
            MaintenanceWindow::silence(
                "x",
                Scope::default(),
                ts("2026-11-28T23:00:00Z"),
                ts("2026-11-28T21:00:00Z")
            )
            .is_err()
        );

        let weekly = raw(r#"name = "s"
            days = ["sat"]
            timezone = "UTC""#);
        let error = weekly.validate_silence("silence[3]").unwrap_err();
        assert!(error.starts_with("silence[3]: a silence needs start and end"), "{error}");
    }

    #[test]
    fn covering_picks_the_first_active_matching_window() {
        let maintenance = Maintenance {
            windows: vec![
                window(
                    r#"name = "acme servers saturday night"
                    tenant = "acme"
                    labels = { role = "server" }
                    days = ["sat"]
                    from = "22:00"
                    to = "02:00"
                    timezone = "Europe/Berlin""#,
                ),
                window(
                    r#"name = "acme disks silenced"
                    tenant = "acme"
                    check = "disk:*"
                    start = "2026-11-28T20:00:00Z"
                    end = "2026-11-29T00:00:00Z""#,
                ),
            ],
        };
        let server = labels(&[("role", "server")]);
        let workstation = labels(&[("role", "workstation")]);
        // (tenant, agent, check, labels, at, expected window name)
        let cases = [
            ("acme", "srv-01", "cpu", &server, "2026-11-28T21:30:00Z", Some("acme servers saturday night")),
            (
                "acme",
                "srv-01",
                "disk:/",
                &server,
                "2026-11-28T21:30:00Z",
                Some("acme servers saturday night"),
            ),
            ("acme", "srv-01", "disk:/", &server, "2026-11-28T20:30:00Z", Some("acme disks silenced")),
            ("acme", "pc-7", "disk:/", &workstation, "2026-11-28T21:30:00Z", Some("acme disks silenced")),
            ("acme", "pc-7", "cpu", &workstation, "2026-11-28T21:30:00Z", None),
            ("acme", "srv-01", "cpu", &server, "2026-11-29T01:00:00Z", None),
            ("globex", "srv-01", "disk:/", &server, "2026-11-28T21:30:00Z", None),
        ];
        for (tenant, agent, check, agent_labels, at, expected) in cases {
            let found = maintenance.covering(tenant, agent, check, agent_labels, ts(at));
            assert_eq!(
                found.map(|window| window.name.as_str()),
                expected,
                "{tenant}/{agent}/{check} at {at}"
            );
        }
    }

    #[test]
    fn next_change_is_the_earliest_start_or_end() {
        let maintenance = Maintenance::from_raw(
            vec![
                raw(r#"name = "saturday night"
                    days = ["sat"]
                    from = "22:00"
                    to = "02:00"
                    timezone = "Europe/Berlin""#),
                raw(r#"name = "silence"
                    start = "2026-11-28T20:00:00Z"
                    end = "2026-11-28T23:00:00Z""#),
            ],
            "maintenance",
        )
        .unwrap();
        // The weekly window is Sat 21:00Z - Sun 01:00Z in November.
        let cases = [
            ("2026-11-28T12:00:00Z", Some("2026-11-28T20:00:00Z")), // silence starts
            ("2026-11-28T20:00:00Z", Some("2026-11-28T21:00:00Z")), // weekly starts
            ("2026-11-28T21:00:00Z", Some("2026-11-28T23:00:00Z")), // silence ends
            ("2026-11-28T23:00:00Z", Some("2026-11-29T01:00:00Z")), // weekly ends
            ("2026-11-29T01:00:00Z", Some("2026-12-05T21:00:00Z")), // next saturday
        ];
        for (at, expected) in cases {
            assert_eq!(maintenance.next_change(ts(at)), expected.map(ts), "{at}");
        }
        let only_silence = Maintenance { windows: maintenance.windows[1..].to_vec() };
        assert_eq!(only_silence.next_change(ts("2026-11-28T23:00:00Z")), None);
        assert_eq!(Maintenance::default().next_change(ts("2026-11-28T23:00:00Z")), None);
    }

    #[test]
    fn validation_errors_name_the_key() {
        let cases = [
            (
                r#"name = "x"
                days = ["sat"]
                from = "22:00"
                to = "02:00"
                timezone = "Europe/Berln""#,
                "maintenance[2].timezone: unknown time zone \"Europe/Berln\"",
            ),
            (
                r#"name = "x"
                timezone = "UTC""#,
                "maintenance[2]: set either start/end or days/from/to",
            ),
            (
                r#"name = "x"
                start = "2026-11-28T22:00"
                end = "2026-11-29T02:00"
                days = ["sat"]
                timezone = "UTC""#,
                "maintenance[2]: set either start/end (one-off) or days/from/to (weekly), not both",
            ),
            (
                r#"days = ["sat"]
                timezone = "UTC""#,
                "maintenance[2].name: missing",
            ),
            (
                r#"name = " "
                days = ["sat"]
                timezone = "UTC""#,
                "maintenance[2].name: empty",
            ),
            (
                r#"name = "x"
                start = "2026-11-28T22:00"
                timezone = "UTC""#,
                "maintenance[2].end: missing",
            ),
            (
                r#"name = "x"
                start = "2026-11-28T22:00"
                end = "2026-11-29T02:00""#,
                "maintenance[2].timezone: missing; start \"2026-11-28T22:00\"",
            ),
            (
                r#"name = "x"
                start = "tonight"
                end = "2026-11-29T02:00"
                timezone = "UTC""#,
                "maintenance[2].start: \"tonight\" is not a date and time",
            ),
            (
                r#"name = "x"
                start = "2026-11-29T02:00"
                end = "2026-11-28T22:00"
                timezone = "UTC""#,
                "maintenance[2].end: 2026-11-28T22:00:00Z is not after start",
            ),
            (
                r#"name = "x"
                days = ["sat"]
                from = "22:00""#,
                "maintenance[2].timezone: missing",
            ),
            (
                r#"name = "x"
                days = ["saturday", "sonntag"]
                from = "22:00"
                to = "02:00"
                timezone = "UTC""#,
                "maintenance[2].days: \"sonntag\" is not a day",
            ),
            (
                r#"name = "x"
                days = []
                timezone = "UTC""#,
                "maintenance[2].days: no days given",
            ),
            (
                r#"name = "x"
                from = "22"
                to = "02:00"
                timezone = "UTC""#,
                "maintenance[2].from: \"22\" is not HH:MM",
            ),
            (
                r#"name = "x"
                from = "22:00"
                timezone = "UTC""#,
                "maintenance[2].to: missing",
            ),
            (
                r#"name = "x"
                from = "22:00"
                to = "22:00"
                timezone = "UTC""#,
                "maintenance[2].to: 22:00-22:00 is empty",
            ),
            (
                r#"name = "x"
                tenant = ""
                days = ["sat"]
                timezone = "UTC""#,
                "maintenance[2].tenant: empty",
            ),
            (
                r#"name = "x"
                check = ""
                days = ["sat"]
                timezone = "UTC""#,
                "maintenance[2].check: empty",
            ),
        ];
        for (toml_text, expected) in cases {
            let error = raw(toml_text).validate("maintenance[2]").unwrap_err();
            assert!(error.starts_with(expected), "got {error:?}, want {expected:?}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = toml::from_str::<RawMaintenance>("name = \"x\"\ntimzone = \"UTC\"").unwrap_err();
        assert!(error.to_string().contains("unknown field `timzone`"), "{error}");
    }

    #[test]
    fn from_raw_names_the_index() {
        let entries = vec![
            raw(r#"name = "ok"
                days = ["sat"]
                timezone = "UTC""#),
            raw(r#"name = "bad"
                days = ["sat"]
                timezone = "Mars/Olympus""#),
        ];
        let error = Maintenance::from_raw(entries, "maintenance").unwrap_err();
        assert!(error.starts_with("maintenance[1].timezone: unknown time zone \"Mars/Olympus\""), "{error}");
    }
}
