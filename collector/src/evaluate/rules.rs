//! Rules: which metric of which check kind, thresholds and severities.

use std::sync::Arc;

use crate::alert::Severity;

use super::Level;

/// Which side of the thresholds is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Higher is worse (disk used %, rtt).
    Above,
    /// Lower is worse (free bytes, days until certificate expiry).
    Below,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Stable rule name; part of the alert fingerprint. Never rename a shipped rule.
    pub name: String,
    /// Check kind the rule applies to (`CheckResult.kind`).
    pub kind: String,
    /// Metric read from the result.
    pub metric: String,
    pub direction: Direction,
    pub warn: Option<f64>,
    pub crit: Option<f64>,
    /// A firing check resolves only once the value is back past this (hysteresis).
    pub clear: f64,
    pub warn_severity: Severity,
    pub crit_severity: Severity,
    /// Words for the summary: "{label} {subject} {value}{unit} {noun}".
    pub label: String,
    pub noun: String,
    pub unit: String,
    pub runbook: Option<String>,
}

impl Rule {
    fn worse_or_equal(&self, value: f64, threshold: f64) -> bool {
        match self.direction {
            Direction::Above => value >= threshold,
            Direction::Below => value <= threshold,
        }
    }

    /// The level a check moves to from `current` when it reads `value`.
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
            // Inside the hysteresis band: still firing, at the lower level.
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

    pub fn summary(&self, subject: &str, value: f64, level: Level) -> String {
        let head = format!("{} {subject} {}{} {}", self.label, format_number(value), self.unit, self.noun);
        let (word, threshold) = match level {
            Level::Critical => ("critical at", self.threshold(level)),
            Level::Warning => ("warning at", self.threshold(level)),
            Level::Ok => (
                match self.direction {
                    Direction::Above => "back below",
                    Direction::Below => "back above",
                },
                self.clear,
            ),
        };
        format!("{head} ({word} {}{})", format_number(threshold), self.unit)
    }
}

/// One decimal, without a trailing ".0" ("96.2", "95").
fn format_number(value: f64) -> String {
    let rounded = (value * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 { format!("{rounded:.0}") } else { format!("{rounded:.1}") }
}

/// The rules in force. Shared read-only by every session.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> Arc<Self> {
        Arc::new(Self { rules })
    }

    /// The embedded default rules, used with no rules file.
    pub fn defaults() -> Arc<Self> {
        Self::new(vec![Rule {
            name: "disk_used_pct".into(),
            kind: "disk".into(),
            metric: "used_pct".into(),
            direction: Direction::Above,
            warn: Some(90.0),
            crit: Some(95.0),
            clear: 85.0,
            warn_severity: Severity::P3,
            crit_severity: Severity::P2,
            label: "Disk".into(),
            noun: "used".into(),
            unit: "%".into(),
            runbook: None,
        }])
    }

    pub fn matching<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |rule| rule.kind == kind)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}
