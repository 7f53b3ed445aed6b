//! The Hoist section of an appspec (`hoist:`), which CodeDeploy ignores as an unknown
//! top-level key: today `hoist.releases`, the release layout (`current` and `keep`).
//!
//! Unlike CodeDeploy's own keys, this section is strict: an unknown key in it is an error,
//! since a misspelt `keep` would silently keep the default. `current` must be one of the
//! appspec's `files` destinations, so the files bound for it are exactly those the release
//! holds. This module only checks the section; what the layout does on a host is the
//! agent's.

use std::path::{Component, Path, PathBuf};

use serde_yaml::Value;

use crate::walk::{key_path, key_text, mapping, shown, Report};
use crate::{FileMapping, Releases, DEFAULT_RELEASES_KEEP, RELEASES_KEEP_RANGE};

const HOIST_KEYS: &[&str] = &["releases"];
const RELEASES_KEYS: &[&str] = &["current", "keep"];

/// What each key of the section does, for `hoist-agent validate`.
pub const RELEASES_HELP: &[(&str, &str)] = &[
    (
        "hoist.releases.current",
        "files bound for this destination are installed into releases/<deployment id>/ beside \
         it, and it becomes a symlink to that directory by one atomic rename at the end of Install",
    ),
    (
        "hoist.releases.keep",
        "how many releases stay on the host (default 5, 2 to 50); the current and the previous \
         one are never removed, and redeploying a kept one switches back without a download",
    ),
];

/// Reads the `hoist` section; `files` are the appspec's (already read), to check `current`
/// against.
pub(crate) fn hoist_section(
    report: &mut Report,
    value: &Value,
    files: &[FileMapping],
) -> Option<Releases> {
    let top = mapping(report, "hoist", "a mapping (with releases)", value)?;
    strict_keys(report, top, "hoist", HOIST_KEYS);
    let releases = top.get("releases").filter(|v| !v.is_null())?;
    let path = "hoist.releases";
    let section = mapping(report, path, "a mapping with current and keep", releases)?;
    strict_keys(report, section, path, RELEASES_KEYS);
    let current = current(report, section.get("current"), files);
    let keep = keep(report, section.get("keep"));
    Some(Releases {
        current: current?,
        keep: keep?,
    })
}

/// Unknown keys in the Hoist section are errors, with the keys it knows.
fn strict_keys(report: &mut Report, map: &serde_yaml::Mapping, path: &str, known: &[&str]) {
    for key in map.keys() {
        let known_key = matches!(key, Value::String(s) if known.contains(&s.as_str()));
        if !known_key {
            report.error(
                &key_path(path, &key_text(key)),
                format!("unknown key (the keys of {path} are {})", known.join(", ")),
            );
        }
    }
}

fn current(report: &mut Report, value: Option<&Value>, files: &[FileMapping]) -> Option<PathBuf> {
    let path = "hoist.releases.current";
    let text = match value {
        None | Some(Value::Null) => {
            report.error(
                path,
                "required: the files destination that becomes a symlink",
            );
            return None;
        }
        Some(Value::String(s)) => s,
        Some(other) => {
            report.wrong_type(path, "an absolute path (a string)", other);
            return None;
        }
    };
    if !text.starts_with('/') {
        report.error(path, format!("must be an absolute path, got {text:?}"));
        return None;
    }
    let current = normalize(Path::new(text));
    if current.parent().is_none() {
        report.error(path, "must not be / (releases/ is made beside it)");
        return None;
    }
    if !files.iter().any(|f| normalize(&f.destination) == current) {
        report.error(
            path,
            format!(
                "{text:?} must be the destination of one of this appspec's files entries \
                 (the files installed into each release)"
            ),
        );
        return None;
    }
    // A destination above `current` would install over the symlink and the releases.
    let mut ok = true;
    for (i, f) in files.iter().enumerate() {
        let destination = normalize(&f.destination);
        if destination != current && current.starts_with(&destination) {
            report.error(
                &format!("files[{i}].destination"),
                format!(
                    "{} contains hoist.releases.current {text:?}: with releases, files go into \
                     current or beside it, not around it",
                    f.destination.display()
                ),
            );
            ok = false;
        }
    }
    ok.then_some(current)
}

fn keep(report: &mut Report, value: Option<&Value>) -> Option<usize> {
    let path = "hoist.releases.keep";
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Some(DEFAULT_RELEASES_KEEP);
    };
    let n = match value {
        Value::Number(n) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
        _ => None,
    };
    match n {
        Some(n) if RELEASES_KEEP_RANGE.contains(&n) => Some(n),
        _ => {
            report.error(
                path,
                format!(
                    "must be a whole number from {} to {} (the current and the previous release \
                     are always kept), got {}",
                    RELEASES_KEEP_RANGE.start(),
                    RELEASES_KEEP_RANGE.end(),
                    shown(value)
                ),
            );
            None
        }
    }
}

/// `.` and `..` resolved and trailing slashes dropped, without touching a filesystem.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}
