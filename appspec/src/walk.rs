//! Helpers for walking a `serde_yaml::Value` while collecting every problem with its key path.
//!
//! This module knows YAML shapes (mapping, list, string) and how to describe them in a
//! message; it knows nothing about what an appspec means. Nothing here stops at the first
//! problem: a helper that cannot produce a value records why and returns `None`.

use serde_yaml::{Mapping, Value};

use crate::Diagnostic;

/// The errors and warnings found so far.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) errors: Vec<Diagnostic>,
    pub(crate) warnings: Vec<Diagnostic>,
}

impl Report {
    pub(crate) fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub(crate) fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(Diagnostic {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// Records "expected X, found Y" for a value of the wrong shape.
    pub(crate) fn wrong_type(&mut self, path: &str, expected: &str, found: &Value) {
        self.error(
            path,
            format!("expected {expected}, found {}", describe(found)),
        );
    }
}

/// `parent.key`, or just `key` at the top level.
pub(crate) fn key_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[index]`.
pub(crate) fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// A value as a message shows what was found: `the string "soon"`, `a list`, `null`.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// A value as written, for "got ..." in messages: strings quoted, scalars bare, and
/// collections named by their shape.
pub(crate) fn shown(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => describe(value),
    }
}

/// A mapping key as it appears in a path or a message.
pub(crate) fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => shown(other),
    }
}

/// The entries of a mapping whose keys are known in advance.
///
/// Creating it warns about every key not in `known` (CodeDeploy ignores unknown keys, so
/// they are warnings, not errors). A key whose value is YAML null counts as absent, as it
/// does for CodeDeploy.
pub(crate) struct Fields<'a> {
    mapping: &'a Mapping,
    path: String,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(
        report: &mut Report,
        mapping: &'a Mapping,
        path: &str,
        known: &[&str],
    ) -> Self {
        for key in mapping.keys() {
            let known_key = matches!(key, Value::String(s) if known.contains(&s.as_str()));
            if !known_key {
                report.warn(&key_path(path, &key_text(key)), "unknown key, ignored");
            }
        }
        Fields {
            mapping,
            path: path.to_owned(),
        }
    }

    /// The value of `key`, unless it is missing or null.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.mapping.get(key).filter(|v| !v.is_null())
    }

    /// The path of `key` inside this mapping.
    pub(crate) fn path(&self, key: &str) -> String {
        key_path(&self.path, key)
    }

    /// A required string; records "required" or a type error and returns `None`.
    pub(crate) fn required_string(&self, report: &mut Report, key: &str) -> Option<&'a str> {
        match self.get(key) {
            None => {
                report.error(&self.path(key), "required");
                None
            }
            Some(v) => string(report, &self.path(key), v),
        }
    }

    /// An optional string; a value of another type is recorded and yields `None`.
    pub(crate) fn optional_string(&self, report: &mut Report, key: &str) -> Option<&'a str> {
        self.get(key)
            .and_then(|v| string(report, &self.path(key), v))
    }

    /// An optional user or group name: a non-empty string, or a whole number (a numeric id,
    /// which YAML reads as a number when it is not quoted).
    pub(crate) fn optional_name(&self, report: &mut Report, key: &str) -> Option<String> {
        let path = self.path(key);
        let name = match self.get(key)? {
            Value::String(s) => s.trim().to_owned(),
            Value::Number(n) if n.as_u64().is_some() => n.to_string(),
            other => {
                report.wrong_type(&path, "a name (a string)", other);
                return None;
            }
        };
        if name.is_empty() {
            report.error(&path, "must not be empty");
            return None;
        }
        Some(name)
    }

    /// Walks an optional list of strings in order, handing each string and its path to
    /// `each`; items of another type are recorded as errors where they stand, so that
    /// diagnostics stay in document order. Returns `false` when the key is absent.
    pub(crate) fn each_string(
        &self,
        report: &mut Report,
        key: &str,
        mut each: impl FnMut(&mut Report, &str, &'a str),
    ) -> bool {
        let path = self.path(key);
        let Some(value) = self.get(key) else {
            return false;
        };
        for (i, item) in list(report, &path, value)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let item_path = index_path(&path, i);
            if let Some(s) = string(report, &item_path, item) {
                each(report, &item_path, s);
            }
        }
        true
    }
}

/// The value as a string, or a recorded type error.
pub(crate) fn string<'a>(report: &mut Report, path: &str, value: &'a Value) -> Option<&'a str> {
    match value {
        Value::String(s) => Some(s),
        other => {
            report.wrong_type(path, "a string", other);
            None
        }
    }
}

/// The value as a list, or a recorded type error.
pub(crate) fn list<'a>(report: &mut Report, path: &str, value: &'a Value) -> Option<&'a [Value]> {
    match value {
        Value::Sequence(items) => Some(items),
        other => {
            report.wrong_type(path, "a list", other);
            None
        }
    }
}

/// The value as a mapping, or a recorded type error.
pub(crate) fn mapping<'a>(
    report: &mut Report,
    path: &str,
    expected: &str,
    value: &'a Value,
) -> Option<&'a Mapping> {
    match value {
        Value::Mapping(m) => Some(m),
        other => {
            report.wrong_type(path, expected, other);
            None
        }
    }
}
