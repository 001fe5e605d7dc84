//! Calendars: when a maintenance window or silence is active, and when a tenant's
//! business hours are.
//!
//! Everything here is pure: no clock reads and no I/O. Every question takes the instant
//! `at`, so the evaluator (and the tests) decide what "now" is, and every answer that
//! names a future instant ([`Schedule::current_end`], [`Schedule::next_start`],
//! [`Maintenance::next_change`], [`Coverage::next_business_start`]) is what the evaluator
//! sets its next timer to.
//!
//! # Civil time and DST
//!
//! Recurring windows and business hours are written in civil (wall-clock) time in a named
//! IANA time zone and follow that zone's daylight-saving rules, as the people who wrote
//! them expect. A range whose end is at or before its start (`22:00`–`02:00`) crosses
//! midnight and belongs to the day it starts on. `24:00` may end a range (the next
//! midnight). Instants are half-open: active from the start (inclusive) to the end
//! (exclusive). Two civil times need a rule:
//!
//! - a time that does not exist (spring-forward gap) opens or closes the window at the
//!   moment the clocks jump past it;
//! - a time that happens twice (fall-back fold) opens the window at its first occurrence
//!   and closes it at its second, so a repeated hour lengthens a window, never shortens it.
//!
//! In Europe/Berlin a Saturday `22:00`–`04:00` window lasts 6 real hours on most nights,
//! 5 on 2026-03-28/29 and 7 on 2026-10-24/25. A `22:00`–`02:00` window lasts 4 hours on
//! the spring-forward night too (02:00 never shows on the clocks there: the window ends at
//! the jump, 03:00 CEST) and 5 on the fall-back night.
//!
//! # Layout
//! - this file: [`Schedule`] (one-off or weekly), [`TimeOfDay`], [`Hours`], [`Weekdays`],
//!   the parsers shared by the config types, and the occurrence engine that walks civil
//!   days in a zone (shared with coverage).
//! - `window`: [`MaintenanceWindow`] and silences, their [`Scope`] (tenant / agent /
//!   labels / check glob), the set [`Maintenance`], and the raw config [`RawMaintenance`].
//! - `coverage`: business hours and holidays per tenant ([`Coverage`], [`CoverageSet`]),
//!   the after-hours hold policy, and the raw config [`RawCoverage`], [`RawCoverageSet`].

mod coverage;
mod window;

use std::fmt;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};

pub use coverage::{Coverage, CoverageSet, RawCoverage, RawCoverageSet};
pub use window::{Glob, Maintenance, MaintenanceWindow, RawMaintenance, Scope};

/// How many civil days past `at` a weekly schedule looks for its next occurrence: one
/// week, plus a day for a range crossing midnight.
const WEEKLY_HORIZON_DAYS: u32 = 8;

/// When something is active.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Active from `start` (inclusive) to `end` (exclusive); `start < end`.
    OneOff { start: Timestamp, end: Timestamp },
    /// Active on each of `days`, during `hours` in civil time in `timezone`. A range that
    /// crosses midnight belongs to the day it starts on.
    Weekly { days: Weekdays, hours: Hours, timezone: TimeZone },
}

impl Schedule {
    /// A one-off schedule; `Err` unless `start < end`.
    pub fn one_off(start: Timestamp, end: Timestamp) -> Result<Schedule, String> {
        if start < end {
            Ok(Schedule::OneOff { start, end })
        } else {
            Err(format!("end {end} is not after start {start}"))
        }
    }

    /// Whether `at` lies inside an occurrence.
    pub fn contains(&self, at: Timestamp) -> bool {
        match self {
            Schedule::OneOff { start, end } => *start <= at && at < *end,
            Schedule::Weekly { timezone, .. } => Days::new(timezone, self.hours_on()).contains(at),
        }
    }

    /// The end of the occurrence containing `at`, or `None` when `at` is outside. Weekly
    /// occurrences that touch (`00:00`–`24:00` on consecutive days) count as one; a
    /// schedule that never ends returns a lower bound about a week ahead, at which time
    /// [`Schedule::contains`] is still true.
    pub fn current_end(&self, at: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::OneOff { start, end } => (*start <= at && at < *end).then_some(*end),
            Schedule::Weekly { timezone, .. } => {
                Days::new(timezone, self.hours_on()).current_end(at, WEEKLY_HORIZON_DAYS)
            }
        }
    }

    /// The next instant after `at` at which the schedule becomes active (a start that
    /// merely continues the occurrence containing `at` does not count), or `None` when
    /// there is none: a one-off window that has started, or a schedule that is always on.
    pub fn next_start(&self, at: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::OneOff { start, .. } => (at < *start).then_some(*start),
            Schedule::Weekly { timezone, .. } => {
                Days::new(timezone, self.hours_on()).next_start(at, WEEKLY_HORIZON_DAYS)
            }
        }
    }

    fn hours_on(&self) -> impl Fn(Date) -> Option<Hours> + '_ {
        move |date| match self {
            Schedule::Weekly { days, hours, .. } => days.contains(date.weekday()).then_some(*hours),
            Schedule::OneOff { .. } => None,
        }
    }
}

/// A civil time of day from `00:00` to `24:00` (the latter only ends a range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay {
    minutes: u16,
}

impl TimeOfDay {
    pub const MIDNIGHT: TimeOfDay = TimeOfDay { minutes: 0 };
    pub const END_OF_DAY: TimeOfDay = TimeOfDay { minutes: 24 * 60 };

    /// `None` unless `hour:minute` is a valid time or exactly `24:00`.
    pub fn new(hour: u8, minute: u8) -> Option<TimeOfDay> {
        let valid = (hour < 24 && minute < 60) || (hour == 24 && minute == 0);
        valid.then_some(TimeOfDay { minutes: u16::from(hour) * 60 + u16::from(minute) })
    }

    /// Parses `HH:MM` (`8:30` is accepted too); the error says what was wrong.
    pub fn parse(text: &str) -> Result<TimeOfDay, String> {
        let invalid = || format!("{text:?} is not HH:MM (e.g. \"08:00\", \"22:30\", \"24:00\")");
        let (hour, minute) = text.split_once(':').ok_or_else(invalid)?;
        let digits = |part: &str, lengths: std::ops::RangeInclusive<usize>| {
            lengths.contains(&part.len()) && part.bytes().all(|byte| byte.is_ascii_digit())
        };
        if !digits(hour, 1..=2) || !digits(minute, 2..=2) {
            return Err(invalid());
        }
        let hour: u8 = hour.parse().map_err(|_| invalid())?;
        let minute: u8 = minute.parse().map_err(|_| invalid())?;
        TimeOfDay::new(hour, minute)
            .ok_or_else(|| format!("{text:?} is not a time of day (00:00 to 23:59, or 24:00 to end a range)"))
    }

    /// This time on `date` (`24:00` is midnight of the next day).
    fn on(self, date: Date) -> Option<DateTime> {
        let day = if self == TimeOfDay::END_OF_DAY { date.tomorrow().ok()? } else { date };
        let within_day = self.minutes % (24 * 60);
        // Both fit: hours < 24, minutes < 60.
        let hour = i8::try_from(within_day / 60).ok()?;
        let minute = i8::try_from(within_day % 60).ok()?;
        Some(day.at(hour, minute, 0, 0))
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

/// A civil time range within a day. `to <= from` crosses midnight into the next day;
/// `from == to` is rejected by [`Hours::new`] (write `00:00-24:00` for a whole day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hours {
    from: TimeOfDay,
    to: TimeOfDay,
}

impl Hours {
    /// A whole day, `00:00`–`24:00`.
    pub const WHOLE_DAY: Hours = Hours { from: TimeOfDay::MIDNIGHT, to: TimeOfDay::END_OF_DAY };

    pub fn new(from: TimeOfDay, to: TimeOfDay) -> Result<Hours, String> {
        if from == TimeOfDay::END_OF_DAY {
            return Err("24:00 can only end a range; start at 00:00 instead".into());
        }
        if from == to {
            return Err(format!("{from}-{to} is empty; for a whole day write 00:00-24:00"));
        }
        Ok(Hours { from, to })
    }

    /// Parses `HH:MM-HH:MM`.
    pub fn parse(text: &str) -> Result<Hours, String> {
        let invalid = || format!("{text:?} is not HH:MM-HH:MM (e.g. \"08:00-18:00\")");
        let (from, to) = text.split_once('-').ok_or_else(invalid)?;
        let from = TimeOfDay::parse(from.trim()).map_err(|_| invalid())?;
        let to = TimeOfDay::parse(to.trim()).map_err(|_| invalid())?;
        Hours::new(from, to).map_err(|message| format!("{text:?}: {message}"))
    }

    pub fn from(&self) -> TimeOfDay {
        self.from
    }

    pub fn to(&self) -> TimeOfDay {
        self.to
    }

    pub fn crosses_midnight(&self) -> bool {
        self.to <= self.from
    }

    /// The civil start and end of this range on `date`.
    fn on(self, date: Date) -> Option<(DateTime, DateTime)> {
        let end_day = if self.crosses_midnight() { date.tomorrow().ok()? } else { date };
        Some((self.from.on(date)?, self.to.on(end_day)?))
    }
}

impl fmt::Display for Hours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.from, self.to)
    }
}

/// A set of weekdays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Weekdays {
    /// Bit `n` is set for the weekday `n` days after Monday.
    bits: u8,
}

impl Weekdays {
    pub const ALL: Weekdays = Weekdays { bits: 0b111_1111 };

    pub fn contains(self, day: Weekday) -> bool {
        self.bits & Self::bit(day) != 0
    }

    pub fn with(self, day: Weekday) -> Weekdays {
        Weekdays { bits: self.bits | Self::bit(day) }
    }

    pub fn is_empty(self) -> bool {
        self.bits == 0
    }

    fn bit(day: Weekday) -> u8 {
        1 << day.to_monday_zero_offset()
    }

    /// The days named by one spec: a day (`"sat"`, `"saturday"`) or an inclusive range
    /// (`"mon-fri"`; `"fri-mon"` wraps over the weekend).
    pub fn parse_spec(spec: &str) -> Result<Weekdays, String> {
        let invalid = || {
            format!(
                "{spec:?} is not a day or a range of days (use mon, tue, wed, thu, fri, sat, sun or e.g. \"mon-fri\")"
            )
        };
        let day = |name: &str| parse_weekday(name.trim()).ok_or_else(invalid);
        let (first, last) = match spec.split_once('-') {
            Some((first, last)) => (day(first)?, day(last)?),
            None => (day(spec)?, day(spec)?),
        };
        let mut days = Weekdays::default();
        let mut current = first;
        loop {
            days = days.with(current);
            if current == last {
                return Ok(days);
            }
            current = current.next();
        }
    }

    /// The union of several specs (`["sat", "sun"]`, `["mon-fri"]`); an empty list is an
    /// error, since it would never be active.
    pub fn parse_list<S: AsRef<str>>(specs: &[S]) -> Result<Weekdays, String> {
        let mut days = Weekdays::default();
        for spec in specs {
            let parsed = Weekdays::parse_spec(spec.as_ref())?;
            days = Weekdays { bits: days.bits | parsed.bits };
        }
        if days.is_empty() {
            return Err("no days given; list days such as [\"sat\", \"sun\"] or [\"mon-fri\"]".into());
        }
        Ok(days)
    }
}

fn parse_weekday(name: &str) -> Option<Weekday> {
    let day = match name.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => return None,
    };
    Some(day)
}

/// Looks up an IANA time zone in the system database.
pub fn parse_time_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| {
        format!("unknown time zone {name:?} (use an IANA name such as \"Europe/Berlin\" or \"UTC\")")
    })
}

/// Which side of a range a civil time is on; decides DST gaps and folds (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge {
    Start,
    End,
}

/// The instant of civil time `datetime` in `timezone`, as a `edge` of a range: in a gap
/// the moment the clocks jump; in a fold the first occurrence for a start, the second
/// for an end.
fn resolve(timezone: &TimeZone, datetime: DateTime, edge: Edge) -> Option<Timestamp> {
    let ambiguous = timezone.to_ambiguous_timestamp(datetime);
    match ambiguous.offset() {
        AmbiguousOffset::Unambiguous { .. } => ambiguous.compatible().ok(),
        AmbiguousOffset::Gap { .. } => {
            // Read with the offset after the gap, the civil time lands before the jump;
            // the next transition from there is the jump itself.
            let before_jump = ambiguous.earlier().ok()?;
            timezone.following(before_jump).next().map(|transition| transition.timestamp())
        }
        AmbiguousOffset::Fold { .. } => match edge {
            Edge::Start => ambiguous.earlier().ok(),
            Edge::End => ambiguous.later().ok(),
        },
    }
}

/// A one-off edge: an RFC 3339 instant with an offset (`2026-11-28T22:00+01:00`,
/// `...Z`), or a civil time (`2026-11-28T22:00`) read in `timezone`.
fn parse_moment(text: &str, timezone: Option<&TimeZone>, edge: Edge) -> Result<Timestamp, MomentError> {
    if let Ok(instant) = text.parse::<Timestamp>() {
        return Ok(instant);
    }
    let civil: DateTime = text.parse().map_err(|_| MomentError::Invalid)?;
    let timezone = timezone.ok_or(MomentError::NeedsTimeZone)?;
    resolve(timezone, civil, edge).ok_or(MomentError::Invalid)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MomentError {
    Invalid,
    NeedsTimeZone,
}

/// A half-open interval of instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Interval {
    start: Timestamp,
    end: Timestamp,
}

impl Interval {
    fn contains(self, at: Timestamp) -> bool {
        self.start <= at && at < self.end
    }
}

/// Ranges of civil hours, at most one starting on each civil date, in a time zone: the
/// engine behind weekly schedules and business hours. `hours_on(date)` says which range
/// starts on `date`, if any.
///
/// Occurrences come out in start order because both edge mappings are monotonic in civil
/// time. A range lasts at most a civil day, so an occurrence containing `at` starts on
/// `at`'s local date or one of the two before it (two to be safe around folds at midnight).
struct Days<'a, F> {
    timezone: &'a TimeZone,
    hours_on: F,
}

impl<'a, F: Fn(Date) -> Option<Hours>> Days<'a, F> {
    fn new(timezone: &'a TimeZone, hours_on: F) -> Self {
        Days { timezone, hours_on }
    }

    /// Occurrences starting on the dates from two days before `at`'s local date to
    /// `horizon_days` after it.
    fn around(&self, at: Timestamp, horizon_days: u32) -> impl Iterator<Item = Interval> + '_ {
        let local = self.timezone.to_datetime(at).date();
        let first = local.yesterday().and_then(|date| date.yesterday()).unwrap_or(local);
        let count = usize::try_from(horizon_days).unwrap_or(usize::MAX).saturating_add(3);
        std::iter::successors(Some(first), |date| date.tomorrow().ok())
            .take(count)
            .filter_map(move |date| self.occurrence(date))
    }

    fn occurrence(&self, date: Date) -> Option<Interval> {
        let (start, end) = (self.hours_on)(date)?.on(date)?;
        let start = resolve(self.timezone, start, Edge::Start)?;
        let end = resolve(self.timezone, end, Edge::End)?;
        // Empty only in pathological zones (a range inside one gap): not an occurrence.
        (start < end).then_some(Interval { start, end })
    }

    fn contains(&self, at: Timestamp) -> bool {
        self.around(at, 0).any(|interval| interval.contains(at))
    }

    fn current_end(&self, at: Timestamp, horizon_days: u32) -> Option<Timestamp> {
        let mut end: Option<Timestamp> = None;
        for interval in self.around(at, horizon_days) {
            match end {
                None if interval.contains(at) => end = Some(interval.end),
                None if interval.start > at => return None,
                None => {}
                Some(current) if interval.start <= current => end = Some(current.max(interval.end)),
                Some(_) => break,
            }
        }
        end
    }

    fn next_start(&self, at: Timestamp, horizon_days: u32) -> Option<Timestamp> {
        let mut previous_end: Option<Timestamp> = None;
        for interval in self.around(at, horizon_days) {
            let continues_previous = previous_end.is_some_and(|end| interval.start <= end);
            if interval.start > at && !continues_previous {
                return Some(interval.start);
            }
            previous_end = Some(previous_end.map_or(interval.end, |end| end.max(interval.end)));
        }
        None
    }
}

#[cfg(test)]
mod tests;
