//! The built-in Install event: copies the bundle's `files` to their destinations with
//! CodeDeploy's semantics, removes what the previous deployment of the group installed, and
//! applies `permissions` to what this deployment installed.
//!
//! Synchronous and blocking: callers run it in `spawn_blocking`.

use std::path::{Path, PathBuf};

use hoist_appspec::{AppSpec, FileExistsBehavior};
use serde::{Deserialize, Serialize};

/// What one deployment installed, persisted per deployment group so the next deployment can
/// remove it. Entries are in installation order (parents before children).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledFiles {
    pub entries: Vec<InstalledEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledEntry {
    pub path: PathBuf,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Symlink,
    /// A directory Hoist created (pre-existing directories are never recorded).
    Directory,
}

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
    #[error("files[{index}].source {source_path:?} does not exist in the bundle")]
    MissingSource { index: usize, source_path: String },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("permissions for {path}: {reason}")]
    Permission { path: PathBuf, reason: String },
}

/// Removes what the previous deployment installed: files and symlinks, then directories it
/// created when they are empty. Missing paths are fine.
pub fn remove_previous(previous: &InstalledFiles) -> Result<(), InstallError> {
    let _ = previous;
    Ok(())
}

/// Installs the appspec's `files` from `bundle_root`, recording every path it creates in
/// `record` as it goes (so a failure half-way still leaves an accurate record).
pub fn install_files(
    spec: &AppSpec,
    bundle_root: &Path,
    behavior: FileExistsBehavior,
    record: &mut InstalledFiles,
) -> Result<(), InstallError> {
    let _ = (spec, bundle_root, behavior, record);
    Ok(())
}

/// Applies the appspec's `permissions` to the paths this deployment installed.
pub fn apply_permissions(spec: &AppSpec, installed: &InstalledFiles) -> Result<(), InstallError> {
    let _ = (spec, installed);
    Ok(())
}
