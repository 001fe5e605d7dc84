//! Coverage calendars: a tenant's business hours, time zone and holidays, and the
//! after-hours policy built on them.
//!
//! During business hours every alert goes out at once. After hours P1 and P2 still go
//! out at once (they wake someone); P3 and P4 are held until business hours start, when
//! they go out together as the morning summary. A tenant without a calendar (and no
//! default) is covered 24/7: nothing is ever held. Holding and releasing held events
//! durably is the evaluator's and the queue's job; this module only says until when.

use std::collections::{BTreeMap, HashMap};

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use super::{Days, Hours, Weekdays, parse_time_zone};
use crate::alert::Severity;
use crate::config_error::KeyError;

/// How far [`Coverage::next_business_start`] looks ahead: more than a year, so any run
/// of holidays is skipped.
const BUSINESS_HORIZON_DAYS: u32 = 400;

/// When no business hours start within the horizon (a calendar that is all holidays),
/// hold for this long and ask again then, rather than forever.
const FALLBACK_HOLD: SignedDuration = SignedDuration::from_hours(24);

const WEEK: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

/// One tenant's business hours.
#[derive(Debug, Clone, PartialEq)]
pub struct Coverage {
    /// The zone the hours and holidays are in.
    pub timezone: TimeZone,
    /// Business hours per weekday, Monday first; `None` = closed all day. Hours that
    /// cross midnight belong to the day they start on.
    pub days: [Option<Hours>; 7],
    /// Civil dates in `timezone` on which no business hours start.
    pub holidays: Vec<Date>,
}

impl Coverage {
    /// Whether `at` is inside business hours.
    pub fn is_business_hours(&self, at: Timestamp) -> bool {
        Days::new(&self.timezone, |date| self.hours_on(date)).contains(at)
    }

    /// The next moment after `at` at which business hours begin, skipping closed days
    /// and holidays (if `at` is inside business hours: the start of the next stretch).
    /// Looks ahead 400 days; a calendar with no business hours in that time yields
    /// `at` + 24 h, so whoever holds events asks again then.
    pub fn next_business_start(&self, at: Timestamp) -> Timestamp {
        Days::new(&self.timezone, |date| self.hours_on(date))
            .next_start(at, BUSINESS_HORIZON_DAYS)
            .unwrap_or_else(|| at.saturating_add(FALLBACK_HOLD).unwrap_or(at))
    }

    /// Until when an event of `severity` raised at `at` is held: `None` = send it now.
    /// P1/P2 are never held; P3/P4 are held after hours until business hours start.
    pub fn hold_until(&self, severity: Severity, at: Timestamp) -> Option<Timestamp> {
        match severity {
            Severity::P1 | Severity::P2 => None,
            Severity::P3 | Severity::P4 => {
                (!self.is_business_hours(at)).then(|| self.next_business_start(at))
            }
        }
    }

    fn hours_on(&self, date: Date) -> Option<Hours> {
        if self.holidays.contains(&date) {
            return None;
        }
        let index = usize::try_from(date.weekday().to_monday_zero_offset()).ok()?;
        self.days.get(index).copied().flatten()
    }
}

/// The coverage calendars in force: a default and per-tenant overrides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoverageSet {
    /// For tenants without their own calendar; `None` = those tenants are covered 24/7.
    pub default: Option<Coverage>,
    pub per_tenant: HashMap<String, Coverage>,
}

impl CoverageSet {
    /// The tenant's calendar, else the default; `None` = covered 24/7, never hold.
    pub fn for_tenant(&self, tenant: &str) -> Option<&Coverage> {
        self.per_tenant.get(tenant).or(self.default.as_ref())
    }

    /// [`Coverage::hold_until`] with the tenant's calendar; `None` without one.
    pub fn hold_until(&self, tenant: &str, severity: Severity, at: Timestamp) -> Option<Timestamp> {
        self.for_tenant(tenant).and_then(|coverage| coverage.hold_until(severity, at))
    }
}

/// The `[coverage]` section of the collector's TOML:
///
/// ```toml
/// [coverage.default]                 # tenants without their own calendar
/// timezone = "Europe/London"
/// hours = { mon-fri = "08:00-18:00" }
/// holidays = ["2026-12-25", "2026-12-26"]
///
/// [coverage.tenant.acme]             # replaces the default for tenant "acme"
/// timezone = "America/New_York"
/// hours = { mon-fri = "07:00-19:00", sat = "09:00-12:00" }
/// ```
///
/// Without any coverage every tenant is covered 24/7 and no alert is ever held.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCoverageSet {
    /// The calendar of every tenant not listed under `tenant`.
    pub default: Option<RawCoverage>,
    /// Per-tenant calendars, by tenant id. A tenant's calendar replaces the default
    /// as a whole (holidays are not merged).
    #[serde(default)]
    pub tenant: BTreeMap<String, RawCoverage>,
}

impl RawCoverageSet {
    /// Validates the section; `key` is its name (`coverage`).
    pub fn validate(self, key: &str) -> Result<CoverageSet, KeyError> {
        let default = match self.default {
            Some(raw) => Some(raw.validate(&format!("{key}.default"))?),
            None => None,
        };
        let mut per_tenant = HashMap::with_capacity(self.tenant.len());
        for (tenant, raw) in self.tenant {
            if tenant.is_empty() {
                return Err(KeyError::new(format!("{key}.tenant"), "\"\" is not a tenant id"));
            }
            let coverage = raw.validate(&format!("{key}.tenant.{tenant}"))?;
            per_tenant.insert(tenant, coverage);
        }
        Ok(CoverageSet { default, per_tenant })
    }
}

/// One coverage calendar.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCoverage {
    /// IANA time zone of the hours and holidays, e.g. `"Europe/London"`. Required.
    pub timezone: Option<String>,
    /// Business hours by day or range of days: `{ mon-fri = "08:00-18:00" }`, or per
    /// day `{ mon = "08:00-18:00", sat = "09:00-12:00" }`. Each day at most once; days
    /// not listed are closed. Hours may cross midnight (`"22:00-06:00"`, belonging to
    /// the day they start on); `"00:00-24:00"` is the whole day. Required.
    #[serde(default)]
    pub hours: BTreeMap<String, String>,
    /// Dates (`"YYYY-MM-DD"`, quoted) on which no business hours start.
    #[serde(default)]
    pub holidays: Vec<String>,
}

impl RawCoverage {
    /// Validates one calendar; `key` names it in errors (`coverage.tenant.acme`).
    pub fn validate(self, key: &str) -> Result<Coverage, KeyError> {
        let timezone = match &self.timezone {
            Some(zone) => {
                parse_time_zone(zone).map_err(|message| KeyError::new(format!("{key}.timezone"), message))?
            }
            None => {
                return Err(KeyError::new(
                    format!("{key}.timezone"),
                    "missing; say which zone the business hours are in, e.g. timezone = \"Europe/London\"",
                ));
            }
        };
        if self.hours.is_empty() {
            return Err(KeyError::new(
                format!("{key}.hours"),
                "missing; set the business hours, e.g. hours = { mon-fri = \"08:00-18:00\" }",
            ));
        }
        let mut days: [Option<Hours>; 7] = [None; 7];
        // Which hours key set each day, to name both in a conflict.
        let mut set_by: [Option<&str>; 7] = [None; 7];
        for (spec, text) in &self.hours {
            let field = format!("{key}.hours.{spec}");
            let weekdays =
                Weekdays::parse_spec(spec).map_err(|message| KeyError::new(field.clone(), message))?;
            let hours = Hours::parse(text).map_err(|message| KeyError::new(field.clone(), message))?;
            for (index, day) in WEEK.into_iter().enumerate() {
                if !weekdays.contains(day) {
                    continue;
                }
                if let Some(earlier) = set_by[index] {
                    return Err(KeyError::new(
                        format!("{key}.hours"),
                        format!(
                            "{} is set by both {earlier:?} and {spec:?}; give each day once",
                            day_name(day)
                        ),
                    ));
                }
                set_by[index] = Some(spec);
                days[index] = Some(hours);
            }
        }
        let mut holidays = Vec::with_capacity(self.holidays.len());
        for (index, text) in self.holidays.iter().enumerate() {
            let date: Date =
                text.parse().ok().filter(|_| text.len() == "YYYY-MM-DD".len()).ok_or_else(|| {
                    KeyError::new(
                        format!("{key}.holidays[{index}]"),
                        format!("{text:?} is not a date (YYYY-MM-DD, e.g. \"2026-12-25\")"),
                    )
                })?;
            holidays.push(date);
        }
        holidays.sort_unstable();
        holidays.dedup();
        Ok(Coverage { timezone, days, holidays })
    }
}

fn day_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    }
}

#[cfg(test)]
mod tests;
