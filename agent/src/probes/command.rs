//! Command probe: runs a Nagios-compatible plugin and reports its verdict and perfdata.
//!
//! One result per `[[command]]`, check id `command:<name>`, kind `command`.
//!
//! - **Running.** `command` is an argv run through [`super::exec`]: never a shell, stdin
//!   from /dev/null, `LC_ALL=C`, output capped at 64 KiB, and on `timeout` the plugin's
//!   whole process group is killed.
//! - **Status.** The exit code is the verdict, as in the Nagios plugin guidelines:
//!   0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. Any other exit code, death by a signal, a
//!   timeout or a plugin that cannot be started is UNKNOWN with the reason in `message`.
//!   This family carries its own verdict: the collector's rules may still add theirs.
//! - **Message.** The first line of stdout, up to its first `|`, trimmed and capped at
//!   1 KiB (stderr's first line when stdout is empty).
//! - **Metrics.** `exit_code` (absent after a signal or a timeout), `duration_ms`, and one
//!   group per perfdata item (see [`parse_plugin_output`] for where perfdata is found and
//!   [`parse_perfdata`] for its grammar):
//!   - `<label>`: the value, in base units: times (`s`, `ms`, `us`, `ns`) in seconds and
//!     sizes (`B`, `KB`/`kB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`, `TB`/`TiB`, `PB`/`PiB`) in
//!     bytes, the decimal-looking prefixes counting 1024 as the plugins that print them
//!     (check_disk, check_swap) do. `%`, `c` and any other unit are kept as printed.
//!   - `<label>_warn`, `<label>_crit`: only when the threshold is a plain number (`10`),
//!     converted like the value. Ranges (`10:20`, `~:5`, `@10:20`, `10:`) express a
//!     direction a single number cannot carry, so they are left out rather than guessed.
//!   - `<label>_min`, `<label>_max`: when present and numeric, converted like the value.
//!   - A value of `U` (undetermined) yields no `<label>` metric.
//!
//!   Metric names are the labels lowercased, every run of characters outside
//!   `[a-z0-9_./-]` replaced by one `_`, leading/trailing `_` removed, cut to 200 bytes;
//!   a label that sanitises to nothing is skipped. When two names collide the first one
//!   wins, and `exit_code`/`duration_ms` always win over perfdata. At most 250 metrics
//!   are kept per result (the collector refuses results with more than 256).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::{Duration, Instant};

use nightowl_proto::{CheckResult, ProbeStatus};
use serde::Deserialize;

use super::exec::{self, ExecError, ExecSpec};
use super::{Probe, ProbeContext, ok_result, unknown_result};
use crate::duration::HumanDuration;

const KIND: &str = "command";

/// Used when `timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds of `timeout`.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Cap on `message`, in bytes.
const MAX_MESSAGE_BYTES: usize = 1024;

/// Cap on metrics per result, built-ins included (the collector's limit is 256).
const MAX_METRICS: usize = 250;

/// Cap on a metric name, leaving room for the `_warn` … suffixes within the collector's
/// 256-byte limit.
const MAX_METRIC_NAME_BYTES: usize = 200;

/// One `[[command]]` entry: a Nagios-compatible plugin.
///
/// ```toml
/// [[command]]
/// name = "root-disk"
/// command = ["/usr/lib/nagios/plugins/check_disk", "-w", "10%", "-c", "5%", "-p", "/"]
/// timeout = "10s"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Check name: the check id is `command:<name>`.
    pub name: String,
    /// The program and its arguments, run directly — never through a shell, so quotes,
    /// `$VARS`, globs and pipes are passed to the program verbatim. The program is an
    /// absolute path, or a bare name looked up in the agent's `PATH`. Required (a
    /// missing list is reported by `validate`, naming the entry).
    #[serde(default)]
    pub command: Vec<String>,
    /// How long the plugin may run before it (and every process it started) is killed
    /// and the check reported UNKNOWN; default 10s, at least 100ms, at most 1h.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// How often to sample; default: `[agent] interval`.
    #[serde(default)]
    pub interval: Option<HumanDuration>,
}

impl CommandConfig {
    /// Checks the name, the argv and the timeout. The error names the key, e.g.
    /// `command[0]: "./check_x" is a relative path; …`.
    pub fn validate(&self) -> Result<(), String> {
        super::validate_name(&self.name)?;
        let Some(program) = self.command.first() else {
            return Err("command: must not be empty; write the plugin and its arguments, \
                        e.g. [\"/usr/lib/nagios/plugins/check_dummy\", \"0\"]"
                .to_owned());
        };
        if program.is_empty() {
            return Err("command[0]: empty program; write the plugin's absolute path".to_owned());
        }
        // A relative path with a '/' would depend on the agent's working directory.
        if program.contains('/') && !program.starts_with('/') {
            return Err(format!(
                "command[0]: {program:?} is a relative path; write the plugin's absolute path \
                 (or a bare program name to look up in PATH)"
            ));
        }
        if let Some(index) = self.command.iter().position(|arg| arg.contains('\0')) {
            return Err(format!("command[{index}]: contains a NUL character"));
        }
        if let Some(HumanDuration(timeout)) = self.timeout
            && !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout)
        {
            return Err(format!(
                "timeout: {} is out of range; use between 100ms and 1h",
                humantime::format_duration(timeout)
            ));
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        self.timeout.map_or(DEFAULT_TIMEOUT, |HumanDuration(timeout)| timeout)
    }
}

/// Runs one plugin per sample.
pub struct CommandProbe {
    check_id: String,
    spec: ExecSpec,
}

impl CommandProbe {
    pub fn new(config: &CommandConfig, _context: &ProbeContext) -> Self {
        Self {
            check_id: format!("{KIND}:{}", config.name),
            spec: ExecSpec::new(config.command.clone(), config.timeout()),
        }
    }
}

impl Probe for CommandProbe {
    async fn sample(&mut self) -> Vec<CheckResult> {
        let started = Instant::now();
        let outcome = exec::run(&self.spec).await;
        vec![to_result(self.check_id.clone(), outcome, started.elapsed())]
    }
}

/// Turns a plugin run into the check's result.
fn to_result(
    check_id: String,
    outcome: Result<exec::ExecOutput, ExecError>,
    elapsed: Duration,
) -> CheckResult {
    let output = match outcome {
        Ok(output) => output,
        Err(ExecError::TimedOut { timeout, .. }) => {
            let reason = format!(
                "timed out after {}; the plugin and its children were killed",
                humantime::format_duration(timeout)
            );
            let mut result = unknown_result(check_id, KIND, reason);
            result.metrics.insert("duration_ms".to_owned(), elapsed.as_secs_f64() * 1000.0);
            return result;
        }
        Err(error) => return unknown_result(check_id, KIND, error.to_string()),
    };

    let mut stdout = output.stdout.as_str();
    if output.truncated {
        // The cap may have cut a perfdata item in half: drop the incomplete tail.
        stdout = stdout.rfind(char::is_whitespace).map_or("", |end| &stdout[..end]);
    }
    let parsed = parse_plugin_output(stdout);
    let mut message = parsed.message;
    if message.is_empty() {
        let stderr_line = output.stderr.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("");
        message = stderr_line[..stderr_line.floor_char_boundary(MAX_MESSAGE_BYTES)].to_owned();
    }
    if parsed.perfdata.skipped > 0 {
        tracing::debug!(check = %check_id, skipped = parsed.perfdata.skipped, "malformed perfdata items ignored");
    }

    let status = match output.code {
        Some(0) => ProbeStatus::Ok,
        Some(1) => ProbeStatus::Warning,
        Some(2) => ProbeStatus::Critical,
        Some(3) => ProbeStatus::Unknown,
        Some(code) => {
            message = join_reason(format!("exit code {code} is not a plugin status (0-3)"), &message);
            ProbeStatus::Unknown
        }
        None => {
            message = join_reason("the plugin was killed by a signal".to_owned(), &message);
            ProbeStatus::Unknown
        }
    };

    let mut metrics = perf_metrics(&parsed.perfdata.items, MAX_METRICS - 2);
    if let Some(code) = output.code {
        metrics.insert("exit_code".to_owned(), f64::from(code));
    }
    metrics.insert("duration_ms".to_owned(), output.elapsed.as_secs_f64() * 1000.0);
    let mut result = ok_result(check_id, KIND, metrics, message);
    result.status = status as i32;
    result
}

fn join_reason(reason: String, message: &str) -> String {
    if message.is_empty() { reason } else { format!("{reason}: {message}") }
}

/// A plugin's output, split the Nagios way.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PluginOutput {
    /// First line up to its first `|`, trimmed, capped at 1 KiB.
    pub message: String,
    pub perfdata: Perfdata,
}

/// Splits plugin output (plugin guidelines, "Plugin Output"):
///
/// ```text
/// TEXT OUTPUT | OPTIONAL PERFDATA
/// LONG TEXT LINE 1
/// LONG TEXT LINE 2 | PERFDATA LINE 2
/// PERFDATA LINE 3
/// ```
///
/// Perfdata is what follows the `|` on the first line, plus everything after the first
/// `|` in the following lines (the rest of that line and every later line).
pub fn parse_plugin_output(stdout: &str) -> PluginOutput {
    let (first, rest) = stdout.split_once('\n').unwrap_or((stdout, ""));
    let (message, first_perf) = first.split_once('|').unwrap_or((first, ""));
    let long_perf = rest.split_once('|').map_or("", |(_long_text, perf)| perf);
    let mut perfdata = parse_perfdata(first_perf);
    let more = parse_perfdata(long_perf);
    perfdata.items.extend(more.items);
    perfdata.skipped += more.skipped;
    let message = message.trim();
    PluginOutput {
        message: message[..message.floor_char_boundary(MAX_MESSAGE_BYTES)].trim_end().to_owned(),
        perfdata,
    }
}

/// Parsed perfdata: the well-formed items, and how many malformed ones were skipped.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Perfdata {
    pub items: Vec<PerfItem>,
    pub skipped: usize,
}

/// One `'label'=value[UOM];[warn];[crit];[min];[max]` item, as printed (no conversion).
#[derive(Debug, Clone, PartialEq)]
pub struct PerfItem {
    /// Unquoted, `''` unescaped.
    pub label: String,
    /// `None` for `U` (undetermined).
    pub value: Option<f64>,
    /// The unit as printed (`""` when none).
    pub uom: String,
    pub warn: Threshold,
    pub crit: Threshold,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// A warn or crit field.
#[derive(Debug, Clone, PartialEq)]
pub enum Threshold {
    /// Empty or missing.
    None,
    /// A plain number, e.g. `10` (alert above 10).
    Number(f64),
    /// A range (`10:20`, `~:5`, `@10:20`, `10:`), kept as printed.
    Range(String),
}

/// Parses perfdata (plugin guidelines, "Performance data"): space-separated items
/// `'label'=value[UOM];[warn];[crit];[min];[max]`. Labels may be single-quoted, which lets
/// them hold spaces and `=`; inside quotes `''` stands for one quote. Trailing fields may
/// be left out, trailing `;` are allowed. The value is a decimal number (a sign, a
/// fraction and an exponent are accepted) or `U`.
///
/// Lenient and total: a malformed item (no `=`, an unterminated quote, a value that is
/// not a number, a non-finite number) is skipped up to the next whitespace and counted;
/// a malformed warn/crit/min/max field is treated as absent. Never panics.
pub fn parse_perfdata(text: &str) -> Perfdata {
    let mut perfdata = Perfdata::default();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return perfdata;
        }
        let (item, after) = next_item(rest);
        rest = after;
        match item {
            Some(item) => perfdata.items.push(item),
            None => perfdata.skipped += 1,
        }
    }
}

/// Parses one item at the start of `text` (no leading whitespace); returns it (or `None`
/// when malformed) and the text after it.
fn next_item(text: &str) -> (Option<PerfItem>, &str) {
    let (label, after_label) = if let Some(quoted) = text.strip_prefix('\'') {
        match read_quoted(quoted) {
            Some(found) => found,
            // Unterminated quote: the rest of the text cannot be trusted.
            None => return (None, ""),
        }
    } else {
        let end = text.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(text.len());
        (text[..end].to_owned(), &text[end..])
    };
    let Some(after_equals) = after_label.strip_prefix('=') else {
        return (None, skip_token(after_label));
    };
    let end = after_equals.find(char::is_whitespace).unwrap_or(after_equals.len());
    let (fields, after) = (&after_equals[..end], &after_equals[end..]);
    if label.is_empty() {
        return (None, after);
    }
    (parse_fields(label, fields), after)
}

/// The text after the token at the start of `text` (up to the next whitespace).
fn skip_token(text: &str) -> &str {
    text.find(char::is_whitespace).map_or("", |end| &text[end..])
}

/// Reads a quoted label after its opening quote: `''` is a quote, a single `'` ends it.
fn read_quoted(text: &str) -> Option<(String, &str)> {
    let mut label = String::new();
    let mut chars = text.char_indices();
    while let Some((index, c)) = chars.next() {
        if c != '\'' {
            label.push(c);
            continue;
        }
        if text[index + 1..].starts_with('\'') {
            label.push('\'');
            chars.next();
        } else {
            return Some((label, &text[index + 1..]));
        }
    }
    None
}

/// `value[UOM];warn;crit;min;max`.
fn parse_fields(label: String, fields: &str) -> Option<PerfItem> {
    let mut parts = fields.split(';');
    let value_and_uom = parts.next().unwrap_or("");
    let (value, uom) = if let Some(uom) = value_and_uom.strip_prefix('U') {
        (None, uom)
    } else {
        let (value, uom) = split_number(value_and_uom)?;
        (Some(value), uom)
    };
    if !uom.chars().all(|c| c.is_alphabetic() || c == '%') {
        return None;
    }
    let warn = parse_threshold(parts.next().unwrap_or(""));
    let crit = parse_threshold(parts.next().unwrap_or(""));
    let min = parts.next().and_then(parse_plain_number);
    let max = parts.next().and_then(parse_plain_number);
    Some(PerfItem { label, value, uom: uom.to_owned(), warn, crit, min, max })
}

/// A leading decimal number (`-1.5e3`) and the rest; `None` when there is none or it is
/// not finite.
fn split_number(text: &str) -> Option<(f64, &str)> {
    let bytes = text.as_bytes();
    let mut end = 0;
    if matches!(bytes.first(), Some(b'-' | b'+')) {
        end += 1;
    }
    let digits_start = end;
    while end < bytes.len() && (bytes[end].is_ascii_digit() || bytes[end] == b'.') {
        end += 1;
    }
    if !bytes[digits_start..end].iter().any(u8::is_ascii_digit) {
        return None;
    }
    // An exponent only when digits follow: "5e" would otherwise swallow a unit.
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let mut exponent_end = end + 1;
        if matches!(bytes.get(exponent_end), Some(b'-' | b'+')) {
            exponent_end += 1;
        }
        let exponent_digits = exponent_end;
        while exponent_end < bytes.len() && bytes[exponent_end].is_ascii_digit() {
            exponent_end += 1;
        }
        if exponent_end > exponent_digits {
            end = exponent_end;
        }
    }
    let value: f64 = text[..end].parse().ok()?;
    value.is_finite().then_some((value, &text[end..]))
}

/// A whole field that is a plain finite number.
fn parse_plain_number(text: &str) -> Option<f64> {
    match split_number(text.trim()) {
        Some((value, "")) => Some(value),
        _ => None,
    }
}

fn parse_threshold(text: &str) -> Threshold {
    let text = text.trim();
    if text.is_empty() {
        return Threshold::None;
    }
    if let Some(value) = parse_plain_number(text) {
        return Threshold::Number(value);
    }
    let is_range = text.contains(':') || text.starts_with('@');
    if is_range { Threshold::Range(text.to_owned()) } else { Threshold::None }
}

/// The factor to base units (seconds, bytes) for a unit; 1 for the rest.
fn unit_factor(uom: &str) -> f64 {
    const KIB: f64 = 1024.0;
    match uom {
        "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "B" => 1.0,
        "KB" | "kB" | "KiB" => KIB,
        "MB" | "MiB" => KIB * KIB,
        "GB" | "GiB" => KIB * KIB * KIB,
        "TB" | "TiB" => KIB * KIB * KIB * KIB,
        "PB" | "PiB" => KIB * KIB * KIB * KIB * KIB,
        _ => 1.0,
    }
}

/// A label as a metric name: lowercase, runs of characters outside `[a-z0-9_./-]` become
/// one `_`, no leading/trailing `_`, at most 200 bytes. May be empty.
pub fn metric_name(label: &str) -> String {
    let mut name = String::with_capacity(label.len());
    for c in label.chars().flat_map(char::to_lowercase) {
        let allowed = c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '/' | '-');
        if allowed {
            name.push(c);
        } else if !name.ends_with('_') {
            name.push('_');
        }
    }
    let trimmed = name.trim_matches('_');
    // ASCII only by now: any byte index is a char boundary.
    trimmed[..trimmed.len().min(MAX_METRIC_NAME_BYTES)].to_owned()
}

/// The metrics for perfdata items (see the module doc), at most `max` of them.
pub fn perf_metrics(items: &[PerfItem], max: usize) -> HashMap<String, f64> {
    let mut metrics = HashMap::new();
    let mut dropped = 0usize;
    for item in items {
        let name = metric_name(&item.label);
        if name.is_empty() {
            dropped += 1;
            continue;
        }
        let factor = unit_factor(&item.uom);
        let threshold = |threshold: &Threshold| match threshold {
            Threshold::Number(value) => Some(*value),
            Threshold::None | Threshold::Range(_) => None,
        };
        let candidates = [
            (String::new(), item.value),
            ("_warn".to_owned(), threshold(&item.warn)),
            ("_crit".to_owned(), threshold(&item.crit)),
            ("_min".to_owned(), item.min),
            ("_max".to_owned(), item.max),
        ];
        for (suffix, value) in candidates {
            let Some(value) = value.map(|value| value * factor).filter(|value| value.is_finite()) else {
                continue;
            };
            if metrics.len() >= max {
                dropped += 1;
                continue;
            }
            if let Entry::Vacant(vacant) = metrics.entry(format!("{name}{suffix}")) {
                vacant.insert(value);
            }
        }
    }
    if dropped > 0 {
        tracing::debug!(dropped, "perfdata items or metrics dropped (unnamed or over the cap)");
    }
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PLUGINS: &str = "/usr/lib/nagios/plugins";

    fn item(label: &str, value: Option<f64>, uom: &str) -> PerfItem {
        PerfItem {
            label: label.to_owned(),
            value,
            uom: uom.to_owned(),
            warn: Threshold::None,
            crit: Threshold::None,
            min: None,
            max: None,
        }
    }

    fn with(
        mut item: PerfItem,
        warn: Threshold,
        crit: Threshold,
        min: Option<f64>,
        max: Option<f64>,
    ) -> PerfItem {
        (item.warn, item.crit, item.min, item.max) = (warn, crit, min, max);
        item
    }

    fn number(value: f64) -> Threshold {
        Threshold::Number(value)
    }

    fn range(text: &str) -> Threshold {
        Threshold::Range(text.to_owned())
    }

    #[test]
    fn perfdata_table() {
        use Threshold::None as No;
        let cases: Vec<(&str, Vec<PerfItem>, usize)> = vec![
            ("", vec![], 0),
            ("   \t\n ", vec![], 0),
            // check_tcp
            (
                "time=0.000203s;;;0.000000;10.000000",
                vec![with(item("time", Some(0.000203), "s"), No, No, Some(0.0), Some(10.0))],
                0,
            ),
            // check_disk
            (
                "/=19069403136B;108221012377;162331518566;0;270552530944",
                vec![with(
                    item("/", Some(19069403136.0), "B"),
                    number(108221012377.0),
                    number(162331518566.0),
                    Some(0.0),
                    Some(270552530944.0),
                )],
                0,
            ),
            // Quoted label with a space, trailing empty fields.
            ("'rt time'=1.5s;;", vec![item("rt time", Some(1.5), "s")], 0),
            // '' inside quotes is one quote; '=' inside quotes is part of the label.
            ("'it''s'=3 'a=b'=4", vec![item("it's", Some(3.0), ""), item("a=b", Some(4.0), "")], 0),
            ("''''=1", vec![item("'", Some(1.0), "")], 0),
            (
                "conns=0;5;10;0",
                vec![with(item("conns", Some(0.0), ""), number(5.0), number(10.0), Some(0.0), None)],
                0,
            ),
            (
                "load1=0.5;15.000;30.000;0; load5=0.3;10;25;0;",
                vec![
                    with(item("load1", Some(0.5), ""), number(15.0), number(30.0), Some(0.0), None),
                    with(item("load5", Some(0.3), ""), number(10.0), number(25.0), Some(0.0), None),
                ],
                0,
            ),
            // Ranges are kept as ranges.
            (
                "rta=0.05ms;200:;@500;0 pl=0%;~:5;10:20",
                vec![
                    with(item("rta", Some(0.05), "ms"), range("200:"), range("@500"), Some(0.0), None),
                    with(item("pl", Some(0.0), "%"), range("~:5"), range("10:20"), None, None),
                ],
                0,
            ),
            ("pl=U;;", vec![item("pl", None, "")], 0),
            (
                "x=-1.5e3 y=+2 z=.5 w=3.",
                vec![
                    item("x", Some(-1500.0), ""),
                    item("y", Some(2.0), ""),
                    item("z", Some(0.5), ""),
                    item("w", Some(3.0), ""),
                ],
                0,
            ),
            // An 'e' without exponent digits is a unit, not half a number.
            ("x=5e", vec![item("x", Some(5.0), "e")], 0),
            (
                "temp=40C size=2MB c=17c",
                vec![
                    item("temp", Some(40.0), "C"),
                    item("size", Some(2.0), "MB"),
                    item("c", Some(17.0), "c"),
                ],
                0,
            ),
            // Extra fields are ignored; junk fields are absent.
            ("a=1;;;;;;extra", vec![item("a", Some(1.0), "")], 0),
            ("a=1;x;y;z;w", vec![item("a", Some(1.0), "")], 0),
            ("a=1;5ms;;-;", vec![item("a", Some(1.0), "")], 0),
            // Whitespace of any kind separates items.
            (
                "a=1\tb=2\nc=3\r\n",
                vec![item("a", Some(1.0), ""), item("b", Some(2.0), ""), item("c", Some(3.0), "")],
                0,
            ),
            ("'Größe'=5MiB", vec![item("Größe", Some(5.0), "MiB")], 0),
            // Malformed items are skipped and counted; good neighbours survive.
            ("good=1 bad good2=2", vec![item("good", Some(1.0), ""), item("good2", Some(2.0), "")], 1),
            ("novalue", vec![], 1),
            ("=5", vec![], 1),
            ("a=", vec![], 1),
            ("a=abc", vec![], 1),
            ("a=1x2", vec![], 1),
            ("a=1,5", vec![], 1),
            ("a=nan b=inf c=1e999 d=-", vec![], 4),
            ("a b=1", vec![item("b", Some(1.0), "")], 1),
            ("'a b'c=1 d=2", vec![item("d", Some(2.0), "")], 1),
            ("a =1", vec![], 2),
            // An unterminated quote ends the parse.
            ("x=1 'unterminated=5 y=2", vec![item("x", Some(1.0), "")], 1),
            ("'", vec![], 1),
            ("|", vec![], 1),
            ("====", vec![], 1),
            (";;;", vec![], 1),
        ];
        for (text, items, skipped) in cases {
            let parsed = parse_perfdata(text);
            assert_eq!(parsed, Perfdata { items, skipped }, "{text:?}");
        }
    }

    #[test]
    fn plugin_output_message_and_perfdata_on_several_lines() {
        // The example of the plugin guidelines.
        let text = "DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n\
                    / 15272 MB (77%);\n\
                    /boot 68 MB (69%);\n\
                    /var/log 819 MB (84%); | /boot=68MB;88;93;0;98\n\
                    /home=69357MB;253404;253409;0;253414 \n\
                    /var/log=818MB;970;975;0;980\n";
        let parsed = parse_plugin_output(text);
        assert_eq!(parsed.message, "DISK OK - free space: / 3326 MB (56%);");
        let labels: Vec<&str> = parsed.perfdata.items.iter().map(|item| item.label.as_str()).collect();
        assert_eq!(labels, ["/", "/boot", "/home", "/var/log"]);
        assert_eq!(parsed.perfdata.skipped, 0);

        let plain = parse_plugin_output("  OK: all good  \nlong text without perfdata\n");
        assert_eq!(plain, PluginOutput { message: "OK: all good".to_owned(), perfdata: Perfdata::default() });
        assert_eq!(parse_plugin_output(""), PluginOutput::default());
        assert_eq!(parse_plugin_output("|a=1").message, "");
        assert_eq!(parse_plugin_output("|a=1").perfdata.items, [item("a", Some(1.0), "")]);

        // Capped at 1 KiB, on a char boundary.
        let long = parse_plugin_output(&"é".repeat(2000));
        assert!(long.message.len() <= MAX_MESSAGE_BYTES && long.message.len() > 1000);
        assert!(long.message.chars().all(|c| c == 'é'));
    }

    #[test]
    fn perf_metrics_convert_units_and_keep_simple_thresholds() {
        let items = parse_perfdata(
            "rt=150ms;200;500;0;1000 size=2MB;;;0;4KiB wait=250us up=3s used=50%;80;90;0;100 \
             hits=17c temp=40C;~:50;@60 pl=U;5;10 'Rt Time'=9 '***'=1 ok=1;10:;;;",
        )
        .items;
        let metrics = perf_metrics(&items, 250);
        let expected: HashMap<String, f64> = [
            ("rt", 0.15),
            ("rt_warn", 0.2),
            ("rt_crit", 0.5),
            ("rt_min", 0.0),
            ("rt_max", 1.0),
            ("size", 2.0 * 1024.0 * 1024.0),
            ("size_min", 0.0),
            // min/max are converted with the value's unit ("4KiB" itself is no number).
            ("wait", 0.00025),
            ("up", 3.0),
            ("used", 50.0),
            ("used_warn", 80.0),
            ("used_crit", 90.0),
            ("used_min", 0.0),
            ("used_max", 100.0),
            ("hits", 17.0),
            ("temp", 40.0),
            ("pl_warn", 5.0),
            ("pl_crit", 10.0),
            ("rt_time", 9.0),
            ("ok", 1.0),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        assert_eq!(metrics.len(), expected.len(), "{metrics:?}");
        for (name, value) in &expected {
            let got = metrics.get(name).unwrap_or_else(|| panic!("{name} missing: {metrics:?}"));
            assert!((got - value).abs() <= 1e-12 * value.abs().max(1.0), "{name}: {got} != {value}");
        }

        // Collisions: the first wins. The cap holds.
        let metrics = perf_metrics(&parse_perfdata("a=1 A=2 'a '=3").items, 250);
        assert_eq!(metrics, HashMap::from([("a".to_owned(), 1.0)]));
        let many: String = (0..300).map(|i| format!("m{i}=1;2;3;4;5 ")).collect();
        assert_eq!(perf_metrics(&parse_perfdata(&many).items, 248).len(), 248);
    }

    #[test]
    fn metric_names_are_sanitised() {
        for (label, name) in [
            ("time", "time"),
            ("Rt Time", "rt_time"),
            ("/var/lib", "/var/lib"),
            ("C:\\ Used Space", "c_used_space"),
            ("eth0.rx-bytes", "eth0.rx-bytes"),
            ("__x__", "x"),
            ("a  b", "a_b"),
            ("Größe", "gr_e"),
            ("***", ""),
            ("", ""),
        ] {
            assert_eq!(metric_name(label), name, "{label:?}");
        }
        assert_eq!(metric_name(&"x".repeat(500)).len(), MAX_METRIC_NAME_BYTES);
    }

    fn allowed_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= MAX_METRIC_NAME_BYTES + 5
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_./-".contains(&b))
    }

    proptest! {
        #[test]
        fn random_text_never_panics(text in ".{0,300}") {
            let parsed = parse_plugin_output(&text);
            prop_assert!(parsed.message.len() <= MAX_MESSAGE_BYTES);
            let metrics = perf_metrics(&parsed.perfdata.items, 20);
            prop_assert!(metrics.len() <= 20);
            prop_assert!(metrics.keys().all(|name| allowed_name(name)), "{:?}", metrics);
            prop_assert!(metrics.values().all(|value| value.is_finite()));
        }

        #[test]
        fn perfdata_like_text_never_panics(text in "[a-zA-Z' =;:@~.0-9U%eE+|\n-]{0,200}") {
            let parsed = parse_perfdata(&text);
            for item in &parsed.items {
                prop_assert!(!item.label.is_empty());
                prop_assert!(item.value.is_none_or(f64::is_finite));
            }
            let metrics = perf_metrics(&parsed.items, 250);
            prop_assert!(metrics.keys().all(|name| allowed_name(name)), "{:?}", metrics);
        }

        #[test]
        fn well_formed_items_round_trip(
            label in "[a-z][a-z0-9 _']{0,20}",
            value in -1e12f64..1e12,
            warn in proptest::option::of(0f64..1e6),
        ) {
            let quoted = label.replace('\'', "''");
            let warn_text = warn.map(|w| w.to_string()).unwrap_or_default();
            let parsed = parse_perfdata(&format!("'{quoted}'={value}B;{warn_text};;0"));
            prop_assert_eq!(parsed.skipped, 0);
            prop_assert_eq!(parsed.items.len(), 1);
            let got = &parsed.items[0];
            prop_assert_eq!(&got.label, &label);
            prop_assert_eq!(got.value, Some(value));
            prop_assert_eq!(&got.warn, &warn.map_or(Threshold::None, Threshold::Number));
            prop_assert_eq!(got.min, Some(0.0));
        }
    }

    fn config(argv: &[&str]) -> CommandConfig {
        CommandConfig {
            name: "test".to_owned(),
            command: argv.iter().map(|arg| arg.to_string()).collect(),
            timeout: None,
            interval: None,
        }
    }

    #[test]
    fn validate_names_the_problem() {
        assert_eq!(config(&["/usr/lib/nagios/plugins/check_dummy", "0"]).validate(), Ok(()));
        assert_eq!(config(&["check_dummy", "0"]).validate(), Ok(()));
        let cases = [
            (config(&[]), "command: must not be empty"),
            (config(&[""]), "command[0]: empty program"),
            (config(&["./check_x"]), "command[0]: \"./check_x\" is a relative path"),
            (config(&["plugins/check_x"]), "command[0]: \"plugins/check_x\" is a relative path"),
            (config(&["/bin/echo", "a\0b"]), "command[1]: contains a NUL"),
            (
                CommandConfig { timeout: Some(HumanDuration(Duration::from_millis(10))), ..config(&["/x"]) },
                "timeout: 10ms is out of range",
            ),
            (
                CommandConfig { timeout: Some(HumanDuration(Duration::from_secs(7200))), ..config(&["/x"]) },
                "timeout: 2h is out of range",
            ),
            (CommandConfig { name: "a b".to_owned(), ..config(&["/x"]) }, "name \"a b\""),
        ];
        for (config, prefix) in cases {
            let error = config.validate().unwrap_err();
            assert!(error.starts_with(prefix), "{config:?}: {error}");
        }
    }

    #[test]
    fn config_deserializes_and_rejects_unknown_fields() {
        #[derive(Debug, Deserialize)]
        struct Wrapper {
            command: Vec<CommandConfig>,
        }
        let wrapper: Wrapper = toml::from_str(
            "[[command]]\nname = \"root\"\ncommand = [\"/usr/lib/nagios/plugins/check_disk\", \"-p\", \"/\"]\n\
             timeout = \"3s\"\ninterval = \"1m\"\n",
        )
        .unwrap();
        let parsed = &wrapper.command[0];
        assert_eq!(parsed.command, ["/usr/lib/nagios/plugins/check_disk", "-p", "/"]);
        assert_eq!(parsed.timeout(), Duration::from_secs(3));
        assert_eq!(parsed.interval, Some(HumanDuration(Duration::from_secs(60))));
        assert_eq!(config(&["/x"]).timeout(), DEFAULT_TIMEOUT);
        let error =
            toml::from_str::<Wrapper>("[[command]]\nname = \"x\"\ncommand = [\"/x\"]\nshell = true\n")
                .unwrap_err();
        assert!(error.to_string().contains("shell"), "{error}");
        let missing: Wrapper = toml::from_str("[[command]]\nname = \"x\"\n").unwrap();
        assert!(missing.command[0].validate().unwrap_err().starts_with("command: must not be empty"));
        let error =
            toml::from_str::<Wrapper>("[[command]]\nname = \"x\"\ncommand = \"/x -v\"\n").unwrap_err();
        assert!(error.to_string().contains("sequence"), "{error}");
    }

    fn output(code: Option<i32>, stdout: &str, stderr: &str) -> exec::ExecOutput {
        exec::ExecOutput {
            code,
            stdout: stdout.to_owned(),
            stderr: stderr.to_owned(),
            truncated: false,
            elapsed: Duration::from_millis(12),
        }
    }

    #[test]
    fn results_from_exit_codes_signals_and_errors() {
        let id = || "command:x".to_owned();
        let elapsed = Duration::from_millis(12);
        let ok = to_result(id(), Ok(output(Some(0), "OK - fine|a=1s\n", "")), elapsed);
        assert_eq!(
            (ok.status(), ok.message.as_str(), ok.kind.as_str()),
            (ProbeStatus::Ok, "OK - fine", "command")
        );
        assert_eq!(ok.metrics["a"], 1.0);
        assert_eq!(ok.metrics["exit_code"], 0.0);
        assert_eq!(ok.metrics["duration_ms"], 12.0);

        let odd = to_result(id(), Ok(output(Some(127), "", "sh: check_x: not found\n")), elapsed);
        assert_eq!(odd.status(), ProbeStatus::Unknown);
        assert_eq!(odd.message, "exit code 127 is not a plugin status (0-3): sh: check_x: not found");
        assert_eq!(odd.metrics["exit_code"], 127.0);

        let killed = to_result(id(), Ok(output(None, "", "")), elapsed);
        assert_eq!(killed.status(), ProbeStatus::Unknown);
        assert_eq!(killed.message, "the plugin was killed by a signal");
        assert!(!killed.metrics.contains_key("exit_code"));

        // Built-ins win over perfdata of the same name.
        let clash = to_result(id(), Ok(output(Some(1), "W|exit_code=9 duration_ms=1", "")), elapsed);
        assert_eq!((clash.metrics["exit_code"], clash.metrics["duration_ms"]), (1.0, 12.0));

        // A truncated output loses its last, possibly cut, item.
        let mut cut = output(Some(0), "OK|a=1 b=2 c=12", "");
        cut.truncated = true;
        let cut = to_result(id(), Ok(cut), elapsed);
        assert!(cut.metrics.contains_key("b") && !cut.metrics.contains_key("c"), "{cut:?}");

        let timed_out = to_result(
            id(),
            Err(ExecError::TimedOut { program: "/x".to_owned(), timeout: Duration::from_millis(300) }),
            Duration::from_millis(305),
        );
        assert_eq!(timed_out.status(), ProbeStatus::Unknown);
        assert!(timed_out.message.starts_with("timed out after 300ms"), "{timed_out:?}");
        assert_eq!(timed_out.metrics["duration_ms"], 305.0);
    }

    // --- With real plugins -------------------------------------------------------------

    async fn run(argv: &[&str], timeout: Duration) -> CheckResult {
        let state = tempfile::tempdir().unwrap();
        let context = ProbeContext { state_dir: state.path().to_path_buf() };
        let config = CommandConfig { timeout: Some(HumanDuration(timeout)), ..config(argv) };
        assert_eq!(config.validate(), Ok(()));
        let mut results = CommandProbe::new(&config, &context).sample().await;
        assert_eq!(results.len(), 1, "{results:?}");
        let result = results.remove(0);
        assert_eq!((result.check_id.as_str(), result.kind.as_str()), ("command:test", "command"));
        result
    }

    /// The plugin's path, or `None` after a loud SKIP line.
    fn plugin(name: &str) -> Option<String> {
        let path = format!("{PLUGINS}/{name}");
        if std::path::Path::new(&path).exists() {
            Some(path)
        } else {
            eprintln!("SKIP: {path} is missing (tests/run.sh installs monitoring-plugins-basic)");
            None
        }
    }

    #[tokio::test]
    async fn check_dummy_exit_codes_become_statuses() {
        let dummy = plugin("check_dummy");
        for (code, status) in [
            (0, ProbeStatus::Ok),
            (1, ProbeStatus::Warning),
            (2, ProbeStatus::Critical),
            (3, ProbeStatus::Unknown),
        ] {
            let code_text = code.to_string();
            let script = format!("echo \"STATE: hello owl\"; exit {code}");
            let argv: Vec<&str> = match &dummy {
                Some(path) => vec![path, &code_text, "hello owl"],
                None => vec!["/bin/sh", "-c", &script],
            };
            let result = run(&argv, Duration::from_secs(10)).await;
            assert_eq!(result.status(), status, "{result:?}");
            assert!(result.message.ends_with(": hello owl"), "{result:?}");
            assert_eq!(result.metrics["exit_code"], f64::from(code));
            assert!(result.metrics["duration_ms"] >= 0.0);
        }
    }

    #[tokio::test]
    async fn check_tcp_against_a_real_listener_and_a_closed_port() {
        let Some(check_tcp) = plugin("check_tcp") else { return };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let result = run(&[&check_tcp, "-H", "127.0.0.1", "-p", &port], Duration::from_secs(10)).await;
        assert_eq!(result.status(), ProbeStatus::Ok, "{result:?}");
        assert!(result.message.starts_with("TCP OK"), "{result:?}");
        let time = result.metrics["time"];
        assert!((0.0..5.0).contains(&time), "{result:?}");
        assert_eq!(result.metrics["time_max"], 10.0);
        drop(listener);

        // The port is free again: nobody listens.
        let result = run(&[&check_tcp, "-H", "127.0.0.1", "-p", &port], Duration::from_secs(10)).await;
        assert_eq!(result.status(), ProbeStatus::Critical, "{result:?}");
        assert!(result.message.contains("refused"), "{result:?}");
        assert_eq!(result.metrics["exit_code"], 2.0);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn check_disk_on_root_follows_its_thresholds() {
        let Some(check_disk) = plugin("check_disk") else { return };
        let stat = rustix::fs::statvfs("/").unwrap();
        let frsize = stat.f_frsize.max(1) as f64;
        let (used, avail) = ((stat.f_blocks - stat.f_bfree) as f64 * frsize, stat.f_bavail as f64 * frsize);
        let total = stat.f_blocks as f64 * frsize;
        // check_disk's free % (of what users can use).
        let free_pct = avail / (used + avail) * 100.0;
        if !(4.0..96.0).contains(&free_pct) {
            eprintln!("SKIP: / is {free_pct:.1}% free; thresholds around it would be flaky");
            return;
        }
        let between_free_and_full = (free_pct + 100.0) / 2.0;
        for (warn, crit, status) in [
            (free_pct / 2.0, free_pct / 4.0, ProbeStatus::Ok),
            (between_free_and_full, free_pct / 2.0, ProbeStatus::Warning),
            (between_free_and_full, between_free_and_full, ProbeStatus::Critical),
        ] {
            let (warn, crit) = (format!("{warn:.1}%"), format!("{crit:.1}%"));
            let result =
                run(&[&check_disk, "-w", &warn, "-c", &crit, "-p", "/"], Duration::from_secs(10)).await;
            assert_eq!(result.status(), status, "-w {warn} -c {crit}: {result:?}");
            assert!(result.message.starts_with("DISK "), "{result:?}");
            let metrics = &result.metrics;
            assert!((metrics["/_max"] - total).abs() <= 0.01 * total, "{metrics:?} vs total {total}");
            assert!((metrics["/"] - used).abs() <= 0.05 * total, "{metrics:?} vs used {used}");
            assert_eq!(metrics["/_min"], 0.0);
            assert!(metrics["/_warn"] > 0.0 && metrics["/_crit"] > 0.0, "{metrics:?}");
        }
    }

    #[tokio::test]
    async fn a_script_plugin_with_quoted_perfdata_labels() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("check_db");
        std::fs::write(
            &script,
            "#!/bin/sh\n\
             echo \"CRITICAL - db down | conns=0;5;10;0 'rt time'=1.5s;;\"\n\
             echo \"replica lag unknown | 'it''s'=250ms\"\n\
             exit 2\n",
        )
        .unwrap();
        // Through /bin/sh rather than exec'ing the fresh file: a concurrent fork in another
        // test thread may still hold it open for writing (ETXTBSY).
        let result = run(&["/bin/sh", script.to_str().unwrap()], Duration::from_secs(10)).await;
        assert_eq!(result.status(), ProbeStatus::Critical, "{result:?}");
        assert_eq!(result.message, "CRITICAL - db down");
        let expected =
            [("conns", 0.0), ("conns_warn", 5.0), ("conns_crit", 10.0), ("conns_min", 0.0), ("rt_time", 1.5)];
        for (name, value) in expected {
            assert_eq!(result.metrics.get(name), Some(&value), "{name}: {result:?}");
        }
        assert_eq!(result.metrics["it_s"], 0.25);
        assert_eq!(result.metrics["exit_code"], 2.0);
        assert_eq!(result.metrics.len(), 8, "{result:?}");
    }

    #[tokio::test]
    async fn a_hanging_plugin_is_unknown_quickly() {
        let started = Instant::now();
        let result = run(&["/bin/sleep", "30"], Duration::from_millis(300)).await;
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!(result.status(), ProbeStatus::Unknown, "{result:?}");
        assert!(result.message.starts_with("timed out after 300ms"), "{result:?}");
        assert!(!result.metrics.contains_key("exit_code"));
        assert!(result.metrics["duration_ms"] >= 300.0, "{result:?}");
    }

    #[tokio::test]
    async fn a_missing_plugin_is_unknown() {
        let result = run(&["/nonexistent/check_x"], Duration::from_secs(1)).await;
        assert_eq!(result.status(), ProbeStatus::Unknown);
        assert!(result.message.starts_with("cannot run /nonexistent/check_x"), "{result:?}");
    }
}
