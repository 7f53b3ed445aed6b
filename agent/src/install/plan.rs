//! The plan pass of the Install event: every `files` entry walked against the host, writing
//! nothing. Sources are resolved inside the bundle, missing directories are decided, and
//! every conflict is found (DISALLOW, a target installed twice, a file where a directory
//! must go) before the first write, so a rejected appspec installs nothing.
//!
//! It does not write (`files` does) and knows nothing of `permissions` (checked against
//! [`planned_record`] by `permissions`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use hoist_appspec::{AppSpec, FileExistsBehavior};

use super::{io_err, normalize, EntryKind, InstallError, InstalledEntry, InstalledFiles};

/// The record `execute` will produce for `ops` if nothing fails.
pub(super) fn planned_record(ops: &[Op]) -> InstalledFiles {
    let entries = ops
        .iter()
        .map(|op| match op {
            Op::Mkdir { path } => InstalledEntry {
                path: path.clone(),
                kind: EntryKind::Directory,
            },
            Op::Copy { target, kind, .. } => InstalledEntry {
                path: target.clone(),
                kind: match kind {
                    CopyKind::File => EntryKind::File,
                    CopyKind::Symlink => EntryKind::Symlink,
                },
            },
        })
        .collect();
    InstalledFiles::new(entries)
}

/// One step of an installation, decided before anything is written.
#[derive(Debug)]
pub(super) enum Op {
    Mkdir {
        path: PathBuf,
    },
    Copy {
        source: PathBuf,
        target: PathBuf,
        kind: CopyKind,
        /// Whether an existing target is replaced (OVERWRITE); otherwise the target must
        /// still be absent when the file lands.
        replace: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CopyKind {
    File,
    Symlink,
}

struct Planner {
    behavior: FileExistsBehavior,
    ops: Vec<Op>,
    /// Directories this installation creates, with the `files` entry that first needed each.
    dirs: HashMap<PathBuf, String>,
    /// Every file target of this appspec (retained ones included), with where it comes from.
    copies: HashMap<PathBuf, String>,
}

pub(super) fn plan_install(
    spec: &AppSpec,
    bundle_root: &Path,
    behavior: FileExistsBehavior,
) -> Result<Vec<Op>, InstallError> {
    let canonical_root = fs::canonicalize(bundle_root).map_err(io_err("resolving", bundle_root))?;
    let mut planner = Planner {
        behavior,
        ops: Vec::new(),
        dirs: HashMap::new(),
        copies: HashMap::new(),
    };
    for (index, mapping) in spec.files.iter().enumerate() {
        let (source, relative) = resolve_source(index, &mapping.source, &canonical_root)?;
        let destination = normalize(&mapping.destination);
        let meta = fs::symlink_metadata(&source).map_err(|_| InstallError::MissingSource {
            index,
            source_path: mapping.source.clone(),
        })?;
        let from = format!("files[{index}] {}", display_relative(&relative));
        if meta.is_dir() {
            planner.copy_dir(&source, &relative, &destination, index)?;
        } else {
            // A file source lands as destination/<file name>. The name exists: a source
            // without one resolves to the bundle root, which is a directory.
            let Some(name) = source.file_name() else {
                return Err(InstallError::MissingSource {
                    index,
                    source_path: mapping.source.clone(),
                });
            };
            let target = destination.join(name);
            if let Some(parent) = target.parent() {
                planner.ensure_dir(parent, &from)?;
            }
            planner.copy_entry(&source, &meta, target, from)?;
        }
    }
    Ok(planner.ops)
}

impl Planner {
    /// Plans `path` as a directory: nothing when it exists (following symlinks, as CodeDeploy
    /// does) or is already planned, otherwise its missing ancestors and then itself.
    fn ensure_dir(&mut self, path: &Path, from: &str) -> Result<(), InstallError> {
        if path.parent().is_none() || self.dirs.contains_key(path) {
            return Ok(());
        }
        if let Some(file_from) = self.copies.get(path) {
            return Err(InstallError::FileDirectoryClash {
                path: path.to_path_buf(),
                file_from: file_from.clone(),
                dir_from: from.to_string(),
            });
        }
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(InstallError::TargetNotDirectory {
                    path: path.to_path_buf(),
                    from: from.to_string(),
                })
            }
            // ENOTDIR: an ancestor is not a directory; walking up finds and reports it.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory => {}
            Err(e) => return Err(io_err("inspecting", path)(e)),
        }
        // A dangling symlink: metadata says missing, but creating the directory would fail.
        if let Ok(meta) = fs::symlink_metadata(path) {
            if meta.file_type().is_symlink() {
                return Err(InstallError::TargetNotDirectory {
                    path: path.to_path_buf(),
                    from: from.to_string(),
                });
            }
        }
        if let Some(parent) = path.parent() {
            self.ensure_dir(parent, from)?;
        }
        self.dirs.insert(path.to_path_buf(), from.to_string());
        self.ops.push(Op::Mkdir {
            path: path.to_path_buf(),
        });
        Ok(())
    }

    /// Plans the contents of the bundle directory `source` merged into `destination`.
    fn copy_dir(
        &mut self,
        source: &Path,
        relative: &Path,
        destination: &Path,
        index: usize,
    ) -> Result<(), InstallError> {
        let from = format!("files[{index}] {}", display_relative(relative));
        self.ensure_dir(destination, &from)?;
        let mut entries = fs::read_dir(source)
            .map_err(io_err("reading directory", source))?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<Vec<OsString>, io::Error>>()
            .map_err(io_err("reading directory", source))?;
        entries.sort();
        for name in entries {
            let entry_source = source.join(&name);
            let entry_relative = relative.join(&name);
            let entry_target = destination.join(&name);
            let meta =
                fs::symlink_metadata(&entry_source).map_err(io_err("inspecting", &entry_source))?;
            if meta.is_dir() {
                self.copy_dir(&entry_source, &entry_relative, &entry_target, index)?;
            } else {
                let from = format!("files[{index}] {}", display_relative(&entry_relative));
                self.copy_entry(&entry_source, &meta, entry_target, from)?;
            }
        }
        Ok(())
    }

    /// Plans one file or symlink, applying the file-exists behaviour to an existing target.
    fn copy_entry(
        &mut self,
        source: &Path,
        meta: &fs::Metadata,
        target: PathBuf,
        from: String,
    ) -> Result<(), InstallError> {
        let kind = if meta.file_type().is_symlink() {
            CopyKind::Symlink
        } else if meta.is_file() {
            CopyKind::File
        } else {
            return Err(InstallError::UnsupportedFileType {
                path: source.to_path_buf(),
            });
        };
        if let Some(first) = self.copies.get(&target) {
            return Err(InstallError::DuplicateTarget {
                path: target,
                first: first.clone(),
                second: from,
            });
        }
        if let Some(dir_from) = self.dirs.get(&target) {
            return Err(InstallError::FileDirectoryClash {
                path: target,
                file_from: from,
                dir_from: dir_from.clone(),
            });
        }
        let replace = match fs::symlink_metadata(&target) {
            Ok(existing) if existing.is_dir() => {
                return Err(InstallError::TargetIsDirectory { path: target, from })
            }
            Ok(_) => match self.behavior {
                FileExistsBehavior::Disallow => return Err(InstallError::Exists { path: target }),
                FileExistsBehavior::Overwrite => true,
                FileExistsBehavior::Retain => {
                    tracing::debug!(path = %target.display(), "keeping existing file (RETAIN)");
                    self.copies.insert(target, from);
                    return Ok(());
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_err("inspecting", &target)(e)),
        };
        self.copies.insert(target.clone(), from);
        self.ops.push(Op::Copy {
            source: source.to_path_buf(),
            target,
            kind,
            replace,
        });
        Ok(())
    }
}

/// Resolves a `files[].source` inside the bundle: leading slashes mean the bundle root, `..`
/// may not climb above it, and no directory on the way may be a symlink leading out of it.
/// Returns the absolute path and the path relative to the bundle root.
///
/// These checks are not the parser's again: it checks only that `source` is a string, and
/// the bundle's own symlinks are untrusted content.
fn resolve_source(
    index: usize,
    source: &str,
    canonical_root: &Path,
) -> Result<(PathBuf, PathBuf), InstallError> {
    let outside = || InstallError::SourceOutsideBundle {
        index,
        source_path: source.to_string(),
    };
    let mut relative = PathBuf::new();
    for component in Path::new(source.trim_start_matches('/')).components() {
        match component {
            Component::Normal(name) => relative.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                if !relative.pop() {
                    return Err(outside());
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(outside()),
        }
    }
    let absolute = canonical_root.join(&relative);
    if let Some(parent) = absolute.parent().filter(|_| relative.parent().is_some()) {
        let real_parent = fs::canonicalize(parent).map_err(|_| InstallError::MissingSource {
            index,
            source_path: source.to_string(),
        })?;
        if !real_parent.starts_with(canonical_root) {
            return Err(outside());
        }
    }
    Ok((absolute, relative))
}

fn display_relative(relative: &Path) -> String {
    if relative.as_os_str().is_empty() {
        "/".to_string()
    } else {
        relative.display().to_string()
    }
}
