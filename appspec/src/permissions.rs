//! The `permissions` section: which installed paths get which owner, group, mode, ACLs and
//! SELinux context.
//!
//! This module validates and builds [`Permission`]s; it does not look at the host (whether
//! `object` exists, is a file, or whether users, groups and SELinux types exist is decided at
//! install time).

use std::path::PathBuf;

use serde_yaml::Value;

use crate::acl::canonical_entry;
use crate::parse::relative_path_message;
use crate::selinux::check_range;
use crate::walk::{index_path, list, mapping, shown, Fields, Report};
use crate::{ObjectType, Permission, SelinuxContext};

const PERMISSION_KEYS: &[&str] = &[
    "object", "pattern", "except", "type", "owner", "group", "mode", "acls", "context",
];
const CONTEXT_KEYS: &[&str] = &["name", "type", "range", "user"];

/// Validates the `permissions` list (already known to be present and not null).
pub(crate) fn permissions(report: &mut Report, value: &Value) -> Vec<Permission> {
    let path = "permissions";
    let Some(entries) = list(report, path, value) else {
        return Vec::new();
    };
    entries
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| permission(report, &index_path(path, i), entry))
        .collect()
}

fn permission(report: &mut Report, path: &str, value: &Value) -> Option<Permission> {
    let entry = mapping(report, path, "a permissions entry (a mapping)", value)?;
    let fields = Fields::new(report, entry, path, PERMISSION_KEYS);
    // Every field is checked even when an earlier one is wrong, so that one pass reports all.
    // A field in error falls back to its default: the result is only used when there were
    // no errors at all.
    let object = object(report, &fields);
    let pattern = fields.optional_string(report, "pattern").unwrap_or("**");
    let except = strings(report, &fields, "except");
    let types = types(report, &fields);
    let owner = fields.optional_name(report, "owner");
    let group = fields.optional_name(report, "group");
    let mode = fields.get("mode").and_then(|v| {
        mode(v)
            .map_err(|message| report.error(&fields.path("mode"), message))
            .ok()
    });
    let acls = acls(report, &fields);
    let context = fields
        .get("context")
        .and_then(|v| context(report, &fields.path("context"), v));
    Some(Permission {
        object: object?,
        pattern: pattern.to_owned(),
        except,
        types,
        owner,
        group,
        mode,
        acls,
        context,
    })
}

fn object(report: &mut Report, fields: &Fields<'_>) -> Option<PathBuf> {
    let object = fields.required_string(report, "object")?.trim();
    if !object.starts_with('/') {
        report.error(&fields.path("object"), relative_path_message(object));
        return None;
    }
    Some(PathBuf::from(object))
}

fn strings(report: &mut Report, fields: &Fields<'_>, key: &str) -> Vec<String> {
    let mut strings = Vec::new();
    fields.each_string(report, key, |_, _, s| strings.push(s.to_owned()));
    strings
}

fn types(report: &mut Report, fields: &Fields<'_>) -> Vec<ObjectType> {
    let mut types = Vec::new();
    let mut items = 0;
    let present = fields.each_string(report, "type", |report, path, name| {
        items += 1;
        match name {
            "file" => types.push(ObjectType::File),
            "directory" => types.push(ObjectType::Directory),
            other => report.error(path, format!("must be file or directory, got {other:?}")),
        }
    });
    if !present {
        return vec![ObjectType::File, ObjectType::Directory];
    }
    if items == 0 && matches!(fields.get("type"), Some(Value::Sequence(_))) {
        report.warn(
            &fields.path("type"),
            "empty list: this entry applies to nothing",
        );
    }
    types
}

fn acls(report: &mut Report, fields: &Fields<'_>) -> Vec<String> {
    let mut acls = Vec::new();
    fields.each_string(
        report,
        "acls",
        |report, path, entry| match canonical_entry(entry) {
            Ok(acl) => acls.push(acl),
            Err(message) => report.error(path, message),
        },
    );
    acls
}

/// Reads a `mode` as the octal digits written in the appspec.
///
/// `mode: 644`, `mode: 0644` and `mode: "0644"` all mean `0o644`. The trap: a YAML 1.1
/// parser (CodeDeploy's Ruby agent uses one) reads an unquoted `0644` as the octal integer
/// 420, whose digits then give mode `0o420`. The YAML 1.2 reader used here keeps a
/// leading-zero scalar such as `0644` as the string `"0644"`, and reads `644` as the integer
/// 644; in both cases the written digits are what count, so every spelling means `0o644`.
///
/// Not recoverable: YAML 1.2's explicit `0o644` and `0x1a4` notations arrive as the integer
/// 420 with their spelling lost, and are read as the digits 420 (mode `0o420`), as CodeDeploy
/// reads `0x1a4` (it rejects `0o644`, which its YAML 1.1 reader keeps as a string).
///
/// One to four digits, each 0–7; fewer than three mean leading zeros (`7` is `0o007`), a
/// fourth digit is the setuid/setgid/sticky bits.
fn mode(value: &Value) -> Result<u32, String> {
    let digits = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.as_u64().is_some() => n.to_string(),
        _ => String::new(),
    };
    let valid =
        (1..=4).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    if !valid {
        return Err(format!(
            "must be 1 to 4 octal digits (0-7), got {}",
            shown(value)
        ));
    }
    u32::from_str_radix(&digits, 8).map_err(|e| format!("cannot read {digits:?}: {e}"))
}

fn context(report: &mut Report, path: &str, value: &Value) -> Option<SelinuxContext> {
    let entry = mapping(
        report,
        path,
        "a context (a mapping with name, type, range)",
        value,
    )?;
    let fields = Fields::new(report, entry, path, CONTEXT_KEYS);
    let user = fields.optional_string(report, "name");
    let type_ = fields.required_string(report, "type");
    for (key, value) in [("name", user), ("type", type_)] {
        if value.is_some_and(|v| v.trim().is_empty()) {
            report.error(&fields.path(key), "must not be empty");
        }
    }
    if fields.get("user").is_some() {
        report.warn(
            &fields.path("user"),
            "ignored: CodeDeploy's agent reads the SELinux user from name, not user, so it \
             sets no user from this key; hoist does the same (write name: to set it)",
        );
    }
    let range = fields.optional_string(report, "range");
    if let Some(range) = range {
        if let Err(message) = check_range(range) {
            report.error(&fields.path("range"), message);
        }
    }
    Some(SelinuxContext {
        user: user.map(str::to_owned),
        type_: type_?.to_owned(),
        range: range.map(str::to_owned),
    })
}
