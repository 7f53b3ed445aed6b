//! The built-in Install event: copies the bundle's `files` to their destinations with
//! CodeDeploy's semantics, removes what the previous deployment of the group installed, and
//! applies `permissions` to what this deployment installed.
//!
//! Installing is two passes. The plan pass walks every `files` entry against the host without
//! writing anything: it resolves sources inside the bundle, decides which missing directories
//! to create, and finds every conflict (DISALLOW, duplicate targets, a file where a directory
//! must go), then resolves every `permissions` entry against what it will install (which
//! targets are files and which directories, which paths each entry matches, users, groups and
//! tools), so a rejected appspec or a rule that cannot apply installs nothing. The execute pass
//! then creates directories and lands each file atomically (temp file beside the target,
//! rename), recording every path as it goes so a failure half-way leaves an accurate record
//! for the next cleanup, and `permissions` are applied to what it installed. Last, exactly
//! what was written (new files, and directories that gained or lost entries) is made durable
//! ([`Written::sync`]); nothing else on the host is flushed.
//!
//! Layout: this file holds the record of installed paths, the error type and the two entry
//! points ([`install_files`], [`apply_permissions`]); `plan` is the plan pass, `files` the
//! writing (and the removal of the previous deployment's files), `durable` the syncing of what
//! they wrote, `releases` the release layout of `hoist.releases` (paths moved into a release
//! directory, the atomic switch of `current`, pruning), `permissions` everything `permissions` does (matching, chmod, chown, ACLs,
//! SELinux).
//!
//! This module does not decide the file-exists behaviour (the caller resolves the appspec
//! value against the deployment's option), does not persist the record, and does not remove
//! SELinux file-context rules it added (they stay in the policy like any admin's rule).
//!
//! Synchronous and blocking: callers run it in `spawn_blocking`.

mod durable;
mod files;
mod permissions;
mod plan;
pub mod releases;

use std::io;
use std::path::{Component, Path, PathBuf};

use hoist_appspec::{AppSpec, FileExistsBehavior};

/// The record of installed paths is persisted by `state` (`installed-files.json`).
pub use crate::state::{EntryKind, InstalledEntry, InstalledFiles};
pub use durable::{SyncMode, Synced, SyncedBy, Written};
pub use files::remove_previous;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{path}: file already exists and was not installed by hoist (file_exists_behavior is DISALLOW)")]
    Exists { path: PathBuf },
    #[error("{path}: installed twice by this appspec (from {first} and {second})")]
    DuplicateTarget {
        path: PathBuf,
        first: String,
        second: String,
    },
    #[error("{path}: {dir_from} needs a directory where {file_from} installs a file")]
    FileDirectoryClash {
        path: PathBuf,
        file_from: String,
        dir_from: String,
    },
    #[error("files[{index}].source {source_path:?} does not exist in the bundle")]
    MissingSource { index: usize, source_path: String },
    #[error("files[{index}].source {source_path:?} is outside the bundle")]
    SourceOutsideBundle { index: usize, source_path: String },
    #[error("{path}: is a directory, but {from} installs a file there")]
    TargetIsDirectory { path: PathBuf, from: String },
    #[error("{path}: exists and is not a directory, but {from} needs a directory there")]
    TargetNotDirectory { path: PathBuf, from: String },
    #[error("{path}: only regular files, symlinks and directories can be installed")]
    UnsupportedFileType { path: PathBuf },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("permissions for {path}: {reason}")]
    Permission { path: PathBuf, reason: String },
    #[error("permissions for {path}: {tool} is not installed (install the {package} package)")]
    MissingTool {
        path: PathBuf,
        tool: &'static str,
        package: &'static str,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> InstallError + 'a {
    move |source| InstallError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Installs the appspec's `files` from `bundle_root`, recording every path it creates in
/// `record` as it goes (so a failure half-way still leaves an accurate record). What it
/// wrote is returned to be made durable ([`Written::sync`]) once permissions are applied.
///
/// `behavior` is used as given; `spec.file_exists_behavior` is not consulted here.
pub fn install_files(
    spec: &AppSpec,
    bundle_root: &Path,
    behavior: FileExistsBehavior,
    record: &mut InstalledFiles,
) -> Result<Written, InstallError> {
    let ops = plan::plan_install(spec, bundle_root, behavior)?;
    // Every permissions rule is resolved against what the plan will install before the
    // first write, so a rule that cannot apply installs nothing (CodeDeploy's installer
    // checks these before copying too).
    let planned = plan::planned_record(&ops);
    permissions::check_permissions(spec, &planned, &permissions::search_path())?;
    files::execute(&ops, record)
}

/// Applies the appspec's `permissions` to the paths this deployment installed.
pub fn apply_permissions(spec: &AppSpec, installed: &InstalledFiles) -> Result<(), InstallError> {
    permissions::apply_permissions_searching(spec, installed, &permissions::search_path())
}

/// Makes an absolute path canonical without touching the filesystem (`.` and `..` resolved,
/// trailing slashes dropped), as CodeDeploy's `File.expand_path` does.
///
/// `path` is a `files[].destination` or a `permissions[].object`, which a parsed appspec
/// guarantees absolute (`hoist_appspec::parse` rejects any other), so it is not checked again.
fn normalize(path: &Path) -> PathBuf {
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

#[cfg(test)]
mod tests;
