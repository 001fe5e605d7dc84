//! The Nagios plugin output grammar: where perfdata is (`parse_plugin_output`), what an
//! item is (`parse_perfdata`), and the metrics it becomes (`perf_metrics`); see the
//! family's module doc for the rules in one list.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::{MAX_MESSAGE_BYTES, MAX_METRIC_NAME_BYTES};

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
