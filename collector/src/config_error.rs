//! Config errors that name the exact key and its line.
//!
//! A config file is read in one way only, [`Document`]: toml parses it into a tree that
//! keeps every key's span, and the typed value is deserialised from that tree through
//! `serde_path_to_error`, which records the path the deserialiser was at when it failed
//! (`service[1].bogus`, `sink[0].webhook.url`). The path comes from the deserialiser,
//! not from reading the text back, so comments after a table header, inline tables,
//! dotted keys and arrays of tables cannot make it name the wrong table. Errors found
//! later, by validation, name their key in the same terms ([`KeyError`]), and
//! [`Document::error`] finds that key's line in the tree.
//!
//! The agent compiles this same file as its `config::error` (a `#[path]` module): the
//! two binaries share no library besides the wire protocol, a crate for one small
//! module is not worth it, and one source cannot drift apart the way two copies would.
//! It may use only what both crates have (std, toml, serde, serde_path_to_error).

use std::fmt;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A problem in a config file: `<file>:<line>: key `<path>`: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file as given, or a name such as "<embedded defaults>".
    pub file: String,
    /// The key path in the file's own terms (`spool.max_reports`, `service[1].bogus`);
    /// empty when the problem is the file as a whole (unreadable, not TOML).
    pub key: String,
    /// 1-based line of the key (or of the syntax error), when known.
    pub line: Option<usize>,
    pub message: String,
}

impl ConfigError {
    /// A problem with the file as a whole (cannot be read, not found).
    pub fn file(file: &str, message: impl Into<String>) -> Self {
        Self { file: file.to_owned(), key: String::new(), line: None, message: message.into() }
    }

    /// "line 3, key `a.b`" (or the part known): where the problem is, without the file.
    pub fn position(&self) -> String {
        match (self.line, self.key.is_empty()) {
            (Some(line), false) => format!("line {line}, key `{}`", self.key),
            (Some(line), true) => format!("line {line}"),
            (None, false) => format!("key `{}`", self.key),
            (None, true) => String::new(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(formatter, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(formatter, ": key `{}`", self.key)?;
        }
        write!(formatter, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A problem at a key, as a validator reports it before the file is known: the key is
/// the path from the document root (`sink[0].concurrency`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub key: String,
    pub message: String,
}

impl KeyError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }

    /// The same problem with `prefix` in front of the key: `url` → `sink[2].webhook.url`.
    pub fn under(self, prefix: &str) -> Self {
        let key = if self.key.is_empty() { prefix.to_owned() } else { format!("{prefix}.{}", self.key) };
        Self { key, message: self.message }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for KeyError {}

/// A parsed config file: its text and its tree with spans, to deserialise from and to
/// find the line of any key.
pub struct Document<'text> {
    file: &'text str,
    text: &'text str,
    root: Spanned<DeTable<'text>>,
}

impl<'text> Document<'text> {
    /// Parses `text`; a syntax error names `file` and the line.
    pub fn parse(text: &'text str, file: &'text str) -> Result<Self, ConfigError> {
        let root = DeTable::parse(text).map_err(|error| ConfigError {
            file: file.to_owned(),
            key: String::new(),
            line: error.span().map(|span| line_at(text, span.start)),
            message: error.message().to_owned(),
        })?;
        Ok(Self { file, text, root })
    }

    /// The file name errors carry.
    pub fn file(&self) -> &str {
        self.file
    }

    /// The typed value; an error names the key path the deserialiser was at, and its line.
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let deserializer = toml::Deserializer::from(self.root.clone());
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let key = key_of(error.path());
            let error = error.into_inner();
            // toml's span is the exact key or value; the tree walk is the fallback for
            // errors raised where toml has no span (a missing field: the table's line).
            let line = error.span().map(|span| line_at(self.text, span.start)).or_else(|| self.line_of(&key));
            ConfigError { file: self.file.to_owned(), key, line, message: error.message().to_owned() }
        })
    }

    /// A validation error at `key` (a path as [`Document::deserialize`] names them),
    /// with the line of that key, or of its nearest ancestor written in the file.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            key: key.to_owned(),
            line: self.line_of(key),
            message: message.into(),
        }
    }

    /// [`Document::error`] for a validator's [`KeyError`].
    pub fn key_error(&self, error: KeyError) -> ConfigError {
        self.error(&error.key, error.message)
    }

    /// The line of `key` (`a.b[2].c`), or of the deepest part of it that the file has.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        let mut line = None;
        let mut table = self.root.get_ref();
        let mut segments = key.split('.').peekable();
        while let Some(segment) = segments.next() {
            let (name, indices) = match segment.find('[') {
                Some(bracket) => (&segment[..bracket], &segment[bracket..]),
                None => (segment, ""),
            };
            let Some((name_span, mut value)) = table
                .iter()
                .find(|(known, _)| known.get_ref() == name)
                .map(|(known, value)| (known.span(), value))
            else {
                break;
            };
            line = Some(line_at(self.text, name_span.start));
            for index in indices.split('[').filter(|index| !index.is_empty()) {
                let index: Option<usize> = index.strip_suffix(']').and_then(|index| index.parse().ok());
                let DeValue::Array(items) = value.get_ref() else { return line };
                let Some(item) = index.and_then(|index| items.get(index)) else { return line };
                line = Some(line_at(self.text, item.span().start));
                value = item;
            }
            match value.get_ref() {
                DeValue::Table(inner) => table = inner,
                _ if segments.peek().is_some() => break,
                _ => {}
            }
        }
        line
    }
}

/// The path in the file's terms: `a.b[1].c`; serde's unnamed steps (none in our
/// configs) are left out.
fn key_of(path: &serde_path_to_error::Path) -> String {
    let mut key = String::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key: name }
            | serde_path_to_error::Segment::Enum { variant: name } => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(name);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    key
}

/// 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|byte| **byte == b'\n').count() + 1
}
