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
//! then creates directories
//! and lands each file atomically (temp file beside the target, fsync, rename), recording every
//! path as it goes so a failure half-way leaves an accurate record for the next cleanup.
//!
//! `permissions` follow CodeDeploy's agent exactly where bundles could notice: a directory
//! `object` applies to what was installed strictly below it (never to the object itself); a
//! `pattern` other than `**`, and every `except`, match only direct children of the object and
//! know only the `*` wildcard; a file `object` applies to that file and then allows only the
//! default pattern and no `except`; a path matched by two entries is an error. Where CodeDeploy
//! has a trap, this module does the sensible thing instead: symlinks get only their own
//! ownership changed (never mode, ACLs or context through the link), and a mode with setuid or
//! setgid bits is applied again after chown, which clears those bits.
//!
//! This module does not decide the file-exists behaviour (the caller resolves the appspec
//! value against the deployment's option), does not persist the record, and does not remove
//! SELinux file-context rules it added (they stay in the policy like any admin's rule).
//!
//! Synchronous and blocking: callers run it in `spawn_blocking`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, FileTimes, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use hoist_appspec::{AppSpec, FileExistsBehavior, ObjectType, Permission, SelinuxContext};
use nix::unistd::{Gid, Group, Uid, User};
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
    #[error("files[{index}].destination {destination:?} is not an absolute path")]
    RelativeDestination { index: usize, destination: PathBuf },
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

/// Removes what the previous deployment installed: files and symlinks, then directories it
/// created when they are empty. Missing paths are fine.
pub fn remove_previous(previous: &InstalledFiles) -> Result<(), InstallError> {
    let mut dirs = Vec::new();
    for entry in previous.entries.iter().rev() {
        // A relative path can only come from a damaged record; acting on it would remove
        // something relative to the agent's working directory.
        if !entry.path.is_absolute() {
            tracing::warn!(path = %entry.path.display(), "ignoring relative path in the record of installed files");
            continue;
        }
        match entry.kind {
            EntryKind::File | EntryKind::Symlink => remove_non_dir(&entry.path)?,
            EntryKind::Directory => dirs.push(entry.path.as_path()),
        }
    }
    // Deepest first, so a directory emptied by removing its children goes too.
    dirs.sort_by_key(|p| Reverse(p.components().count()));
    for dir in dirs {
        remove_dir_if_empty(dir)?;
    }
    Ok(())
}

fn remove_non_dir(path: &Path) -> Result<(), InstallError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("inspecting", path)(e)),
        Ok(meta) if meta.is_dir() => {
            tracing::warn!(path = %path.display(), "installed as a file but now a directory, leaving it");
            Ok(())
        }
        Ok(_) => match fs::remove_file(path) {
            Ok(()) => {
                tracing::debug!(path = %path.display(), "removed previously installed file");
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", path)(e)),
        },
    }
}

fn remove_dir_if_empty(path: &Path) -> Result<(), InstallError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspecting", path)(e)),
        Ok(meta) if !meta.is_dir() => {
            tracing::warn!(path = %path.display(), "created as a directory but now something else, leaving it");
            return Ok(());
        }
        Ok(_) => {}
    }
    match fs::remove_dir(path) {
        Ok(()) => {
            tracing::debug!(path = %path.display(), "removed previously created directory");
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e)
            if e.kind() == io::ErrorKind::DirectoryNotEmpty
                || e.raw_os_error() == Some(nix::errno::Errno::EEXIST as i32) =>
        {
            tracing::debug!(path = %path.display(), "keeping previously created directory: not empty");
            Ok(())
        }
        Err(e) => Err(io_err("removing directory", path)(e)),
    }
}

/// Installs the appspec's `files` from `bundle_root`, recording every path it creates in
/// `record` as it goes (so a failure half-way still leaves an accurate record).
///
/// `behavior` is used as given; `spec.file_exists_behavior` is not consulted here.
pub fn install_files(
    spec: &AppSpec,
    bundle_root: &Path,
    behavior: FileExistsBehavior,
    record: &mut InstalledFiles,
) -> Result<(), InstallError> {
    let ops = plan_install(spec, bundle_root, behavior)?;
    // Every permissions rule is resolved against what the plan will install before the
    // first write, so a rule that cannot apply installs nothing (CodeDeploy's installer
    // checks these before copying too).
    let planned = planned_record(&ops);
    check_permissions(spec, &planned, &search_path())?;
    execute(&ops, record)
}

/// The record `execute` will produce for `ops` if nothing fails.
fn planned_record(ops: &[Op]) -> InstalledFiles {
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
    InstalledFiles { entries }
}

/// One step of an installation, decided before anything is written.
#[derive(Debug)]
enum Op {
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
enum CopyKind {
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

fn plan_install(
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
        let destination = normalize_absolute(&mapping.destination).ok_or_else(|| {
            InstallError::RelativeDestination {
                index,
                destination: mapping.destination.clone(),
            }
        })?;
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

/// Makes an absolute path canonical without touching the filesystem (`.` and `..` resolved,
/// trailing slashes dropped), as CodeDeploy's `File.expand_path` does. `None` when relative.
fn normalize_absolute(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
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
    Some(out)
}

fn execute(ops: &[Op], record: &mut InstalledFiles) -> Result<(), InstallError> {
    // Parents of everything created, synced once at the end so the renames are durable.
    let mut touched_dirs = BTreeSet::new();
    for op in ops {
        match op {
            Op::Mkdir { path } => {
                fs::create_dir(path).map_err(io_err("creating directory", path))?;
                tracing::debug!(path = %path.display(), "created directory");
                record.entries.push(InstalledEntry {
                    path: path.clone(),
                    kind: EntryKind::Directory,
                });
                touched_dirs.insert(parent_of(path)?.to_path_buf());
            }
            Op::Copy {
                source,
                target,
                kind,
                replace,
            } => {
                let parent = parent_of(target)?;
                let entry_kind = match kind {
                    CopyKind::File => {
                        install_regular_file(source, target, parent, *replace)?;
                        EntryKind::File
                    }
                    CopyKind::Symlink => {
                        install_symlink(source, target, parent, *replace)?;
                        EntryKind::Symlink
                    }
                };
                tracing::debug!(source = %source.display(), target = %target.display(), "installed");
                record.entries.push(InstalledEntry {
                    path: target.clone(),
                    kind: entry_kind,
                });
                touched_dirs.insert(parent.to_path_buf());
            }
        }
    }
    // Files were renamed into place, new ones unsynced (see `install_regular_file`): one
    // syncfs per filesystem makes every file and directory entry durable, far cheaper than
    // an fsync per file and per directory.
    let mut synced = HashSet::new();
    for dir in &touched_dirs {
        let dev = fs::metadata(dir).map_err(io_err("inspecting", dir))?.dev();
        if synced.insert(dev) {
            let d = File::open(dir).map_err(io_err("opening directory", dir))?;
            nix::unistd::syncfs(&d)
                .map_err(|e| io_err("syncing the filesystem of", dir)(e.into()))?;
        }
    }
    Ok(())
}

fn parent_of(path: &Path) -> Result<&Path, InstallError> {
    path.parent().ok_or_else(|| InstallError::Io {
        op: "installing",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path has no parent directory"),
    })
}

/// The temp name beside a target: `.hoist-tmp-<name>-<random>`, the name shortened so the
/// whole stays within NAME_MAX.
fn temp_prefix(target: &Path) -> OsString {
    let name = target.file_name().unwrap_or_default().as_bytes();
    let mut prefix = OsString::from(".hoist-tmp-");
    prefix.push(OsStr::from_bytes(&name[..name.len().min(96)]));
    prefix.push("-");
    prefix
}

/// Copies a regular file to a temp file beside `target` with the source's contents, owner
/// (when permitted), mode and times, then renames it into place. When it replaces an existing
/// file it is synced first, so a crash never leaves the old file's path with partial
/// contents; a new file is synced later with everything else (`execute`).
fn install_regular_file(
    source: &Path,
    target: &Path,
    parent: &Path,
    replace: bool,
) -> Result<(), InstallError> {
    let mut input = File::open(source).map_err(io_err("opening", source))?;
    let meta = input.metadata().map_err(io_err("inspecting", source))?;
    let mut temp = tempfile::Builder::new()
        .prefix(&temp_prefix(target))
        .tempfile_in(parent)
        .map_err(io_err("creating a temporary file in", parent))?;
    let temp_path = temp.path().to_path_buf();
    io::copy(&mut input, temp.as_file_mut()).map_err(io_err("writing", &temp_path))?;
    let file = temp.as_file();

    // CodeDeploy copies with ownership preserved; only root can, and an unprivileged agent
    // keeps its own ownership, as CodeDeploy's copy does.
    let current = file.metadata().map_err(io_err("inspecting", &temp_path))?;
    if (current.uid(), current.gid()) != (meta.uid(), meta.gid()) {
        match std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid())) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EPERM as i32) => {}
            Err(e) => return Err(io_err("changing owner of", &temp_path)(e)),
        }
    }
    // Mode after chown: chown clears setuid and setgid bits.
    file.set_permissions(Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(io_err("setting mode of", &temp_path))?;
    let times = FileTimes::new()
        .set_accessed(meta.accessed().map_err(io_err("inspecting", source))?)
        .set_modified(meta.modified().map_err(io_err("inspecting", source))?);
    file.set_times(times)
        .map_err(io_err("setting times of", &temp_path))?;
    if fs::symlink_metadata(target).is_ok() {
        file.sync_all().map_err(io_err("syncing", &temp_path))?;
    }

    let persisted = if replace {
        temp.persist(target)
    } else {
        temp.persist_noclobber(target)
    };
    persisted.map_err(|e| io_err("renaming into place", target)(e.error))?;
    Ok(())
}

/// Installs a symlink with the same target text as the bundle's. Replacing goes through a
/// temp link and a rename so the path never disappears.
fn install_symlink(
    source: &Path,
    target: &Path,
    parent: &Path,
    replace: bool,
) -> Result<(), InstallError> {
    let link = fs::read_link(source).map_err(io_err("reading symlink", source))?;
    if !replace {
        return std::os::unix::fs::symlink(&link, target)
            .map_err(io_err("creating symlink", target));
    }
    let temp = tempfile::Builder::new()
        .prefix(&temp_prefix(target))
        .make_in(parent, |path| std::os::unix::fs::symlink(&link, path))
        .map_err(io_err("creating a temporary symlink in", parent))?;
    temp.persist(target)
        .map_err(|e| io_err("renaming into place", target)(e.error))?;
    Ok(())
}

/// Applies the appspec's `permissions` to the paths this deployment installed.
pub fn apply_permissions(spec: &AppSpec, installed: &InstalledFiles) -> Result<(), InstallError> {
    apply_permissions_searching(spec, installed, &search_path())
}

/// Where `setfacl`, `semanage` and `restorecon` are looked for.
fn search_path() -> OsString {
    std::env::var_os("PATH").unwrap_or_else(|| {
        OsString::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    })
}

/// One installed path a `permissions` entry applies to.
struct PermissionTarget<'a> {
    path: &'a Path,
    kind: EntryKind,
    /// Index into `spec.permissions`.
    entry: usize,
}

/// Owner and group of a `permissions` entry, resolved by name before anything is changed.
#[derive(Clone, Copy, Default)]
struct Ids {
    uid: Option<Uid>,
    gid: Option<Gid>,
}

/// Tools found on the search path; `None` when no target needs them.
struct Tools {
    setfacl: Option<PathBuf>,
    semanage: Option<PathBuf>,
    restorecon: Option<PathBuf>,
}

/// [`apply_permissions`] with an explicit executable search path for `setfacl`, `semanage`
/// and `restorecon`. Everything is resolved and checked (matches, users, groups, tools)
/// before the first change.
fn apply_permissions_searching(
    spec: &AppSpec,
    installed: &InstalledFiles,
    search_path: &OsStr,
) -> Result<(), InstallError> {
    let checked = check_permissions(spec, installed, search_path)?;
    for target in &checked.targets {
        apply_one(
            target.path,
            &spec.permissions[target.entry],
            checked.ids[target.entry],
            &checked.tools,
        )?;
    }
    Ok(())
}

/// Every `permissions` entry resolved against `installed`, with its users, groups and tools.
struct CheckedPermissions<'a> {
    targets: Vec<PermissionTarget<'a>>,
    ids: Vec<Ids>,
    tools: Tools,
}

/// Resolves every `permissions` entry against `installed` (which paths each entry matches,
/// files against directories), and the users, groups and tools they need, changing nothing.
fn check_permissions<'a>(
    spec: &AppSpec,
    installed: &'a InstalledFiles,
    search_path: &OsStr,
) -> Result<CheckedPermissions<'a>, InstallError> {
    let targets = plan_permissions(spec, installed)?;

    let mut ids = vec![Ids::default(); spec.permissions.len()];
    let mut resolved = vec![false; spec.permissions.len()];
    for target in &targets {
        if !resolved[target.entry] {
            ids[target.entry] = resolve_ids(&spec.permissions[target.entry])?;
            resolved[target.entry] = true;
        }
    }

    let mut tools = Tools {
        setfacl: None,
        semanage: None,
        restorecon: None,
    };
    for target in targets.iter().filter(|t| t.kind != EntryKind::Symlink) {
        let permission = &spec.permissions[target.entry];
        if !permission.acls.is_empty() && tools.setfacl.is_none() {
            tools.setfacl = Some(find_tool(search_path, "setfacl", "acl", target.path)?);
        }
        if permission.context.is_some() && tools.semanage.is_none() {
            tools.semanage = Some(find_tool(
                search_path,
                "semanage",
                "policycoreutils-python-utils",
                target.path,
            )?);
            tools.restorecon = Some(find_tool(
                search_path,
                "restorecon",
                "policycoreutils",
                target.path,
            )?);
        }
    }

    Ok(CheckedPermissions {
        targets,
        ids,
        tools,
    })
}

/// Decides which installed paths each `permissions` entry applies to, in entry order, with
/// CodeDeploy's rules (see the module documentation).
fn plan_permissions<'a>(
    spec: &AppSpec,
    installed: &'a InstalledFiles,
) -> Result<Vec<PermissionTarget<'a>>, InstallError> {
    let installed_files: HashMap<&Path, EntryKind> = installed
        .entries
        .iter()
        .filter(|e| e.kind != EntryKind::Directory)
        .map(|e| (e.path.as_path(), e.kind))
        .collect();
    let created_dirs: HashSet<&Path> = installed
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Directory)
        .map(|e| e.path.as_path())
        .collect();

    let mut targets = Vec::new();
    let mut claimed: HashMap<&Path, usize> = HashMap::new();
    for (index, permission) in spec.permissions.iter().enumerate() {
        let Some(object) = normalize_absolute(&permission.object) else {
            return Err(InstallError::Permission {
                path: permission.object.clone(),
                reason: format!("permissions[{index}].object must be an absolute path"),
            });
        };
        let wants = |t: ObjectType| permission.types.is_empty() || permission.types.contains(&t);
        let mut matches: Vec<(&'a Path, EntryKind)> = Vec::new();

        if let Some((&path, &kind)) = installed_files.get_key_value(object.as_path()) {
            if wants(ObjectType::File) {
                if permission.pattern != "**" {
                    return Err(InstallError::Permission {
                        path: object,
                        reason: format!(
                            "permissions[{index}].pattern {:?} cannot apply to a file object (only \"**\" can)",
                            permission.pattern
                        ),
                    });
                }
                if !permission.except.is_empty() {
                    return Err(InstallError::Permission {
                        path: object,
                        reason: format!(
                            "permissions[{index}].except cannot apply to a file object"
                        ),
                    });
                }
                matches.push((path, kind));
            }
        } else if created_dirs.contains(object.as_path()) || object.is_dir() {
            let matcher = NameMatcher::new(index, permission)?;
            for entry in &installed.entries {
                let wanted = match entry.kind {
                    EntryKind::File | EntryKind::Symlink => wants(ObjectType::File),
                    EntryKind::Directory => false,
                };
                if wanted && matcher.matches(&object, &entry.path) {
                    matches.push((entry.path.as_path(), entry.kind));
                }
            }
            if wants(ObjectType::Directory) {
                for entry in &installed.entries {
                    if entry.kind == EntryKind::Directory && matcher.matches(&object, &entry.path) {
                        matches.push((entry.path.as_path(), entry.kind));
                    }
                }
            }
        }

        for (path, kind) in matches {
            if kind != EntryKind::Directory {
                if let Some(acl) = permission.acls.iter().find(|a| is_default_acl(a)) {
                    return Err(InstallError::Permission {
                        path: path.to_path_buf(),
                        reason: format!(
                            "permissions[{index}] default ACL entry {acl:?} applies only to directories"
                        ),
                    });
                }
            }
            if let Some(first) = claimed.insert(path, index) {
                return Err(InstallError::Permission {
                    path: path.to_path_buf(),
                    reason: format!(
                        "matched by both permissions[{first}] and permissions[{index}]"
                    ),
                });
            }
            targets.push(PermissionTarget {
                path,
                kind,
                entry: index,
            });
        }
    }
    Ok(targets)
}

fn is_default_acl(entry: &str) -> bool {
    let entry = entry.trim_start();
    entry.starts_with("d:") || entry.starts_with("default:")
}

/// CodeDeploy's name matching: `**` as the pattern matches everything below the object;
/// any other pattern, and every `except`, matches one path component (a direct child) with
/// `*` as the only wildcard.
struct NameMatcher {
    everything: bool,
    pattern: glob::Pattern,
    except: Vec<glob::Pattern>,
}

impl NameMatcher {
    fn new(index: usize, permission: &Permission) -> Result<Self, InstallError> {
        let compile = |glob: &str, key: &str| {
            glob::Pattern::new(&simple_glob(glob)).map_err(|e| InstallError::Permission {
                path: permission.object.clone(),
                reason: format!("permissions[{index}].{key} {glob:?}: {e}"),
            })
        };
        Ok(NameMatcher {
            everything: permission.pattern == "**",
            pattern: compile(&permission.pattern, "pattern")?,
            except: permission
                .except
                .iter()
                .map(|e| compile(e, "except"))
                .collect::<Result<_, _>>()?,
        })
    }

    fn matches(&self, object: &Path, path: &Path) -> bool {
        let Ok(relative) = path.strip_prefix(object) else {
            return false;
        };
        if relative.as_os_str().is_empty() {
            return false;
        }
        let name = relative.to_string_lossy();
        let included = self.everything || matches_one_component(&self.pattern, &name);
        included && !self.except.iter().any(|e| matches_one_component(e, &name))
    }
}

fn matches_one_component(pattern: &glob::Pattern, name: &str) -> bool {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    !name.contains('/') && pattern.matches_with(name, options)
}

/// Turns a CodeDeploy pattern (only `*` is special) into a glob pattern: other glob
/// metacharacters are escaped and runs of `*` collapse to one.
fn simple_glob(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut previous_star = false;
    for c in pattern.chars() {
        match c {
            '*' if previous_star => continue,
            '*' => out.push('*'),
            '?' | '[' | ']' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            _ => out.push(c),
        }
        previous_star = c == '*';
    }
    out
}

fn resolve_ids(permission: &Permission) -> Result<Ids, InstallError> {
    let uid = match &permission.owner {
        None => None,
        Some(name) => match User::from_name(name) {
            Ok(Some(user)) => Some(user.uid),
            Ok(None) => {
                return Err(InstallError::Permission {
                    path: permission.object.clone(),
                    reason: format!("unknown user {name:?}"),
                })
            }
            Err(e) => {
                return Err(InstallError::Permission {
                    path: permission.object.clone(),
                    reason: format!("looking up user {name:?}: {e}"),
                })
            }
        },
    };
    let gid = match &permission.group {
        None => None,
        Some(name) => match Group::from_name(name) {
            Ok(Some(group)) => Some(group.gid),
            Ok(None) => {
                return Err(InstallError::Permission {
                    path: permission.object.clone(),
                    reason: format!("unknown group {name:?}"),
                })
            }
            Err(e) => {
                return Err(InstallError::Permission {
                    path: permission.object.clone(),
                    reason: format!("looking up group {name:?}: {e}"),
                })
            }
        },
    };
    Ok(Ids { uid, gid })
}

fn find_tool(
    search_path: &OsStr,
    tool: &'static str,
    package: &'static str,
    path: &Path,
) -> Result<PathBuf, InstallError> {
    std::env::split_paths(search_path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(tool))
        .find(|candidate| {
            fs::metadata(candidate)
                .map(|m| m.is_file() && m.mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .ok_or_else(|| InstallError::MissingTool {
            path: path.to_path_buf(),
            tool,
            package,
        })
}

/// Applies one entry to one path: mode, owner and group, ACLs, SELinux context. A symlink
/// gets only its own owner and group: the rest would act on whatever the link points to.
fn apply_one(
    path: &Path,
    permission: &Permission,
    ids: Ids,
    tools: &Tools,
) -> Result<(), InstallError> {
    let meta = fs::symlink_metadata(path).map_err(io_err("inspecting", path))?;
    let is_link = meta.file_type().is_symlink();
    let chmod = |mode: u32| {
        fs::set_permissions(path, Permissions::from_mode(mode))
            .map_err(io_err("setting mode of", path))
    };
    if let (Some(mode), false) = (permission.mode, is_link) {
        chmod(mode)?;
    }
    if ids.uid.is_some() || ids.gid.is_some() {
        std::os::unix::fs::lchown(path, ids.uid.map(Uid::as_raw), ids.gid.map(Gid::as_raw))
            .map_err(io_err("changing owner of", path))?;
        // chown clears setuid and setgid; put them back as the appspec asked.
        if let (Some(mode), false) = (permission.mode, is_link) {
            if mode & 0o6000 != 0 {
                chmod(mode)?;
            }
        }
    }
    if is_link {
        return Ok(());
    }
    if let (false, Some(setfacl)) = (permission.acls.is_empty(), &tools.setfacl) {
        let entries = permission.acls.join(",");
        run(
            path,
            Command::new(setfacl).arg("-m").arg(&entries).arg(path),
        )?;
    }
    if let (Some(context), Some(semanage), Some(restorecon)) =
        (&permission.context, &tools.semanage, &tools.restorecon)
    {
        set_selinux_context(path, context, semanage, restorecon)?;
    }
    Ok(())
}

/// Adds a file-context rule for the path with `semanage fcontext` (changing it with `-m`
/// when one is already defined, e.g. by a previous deployment) and relabels the path with
/// `restorecon -F`, so the context survives a relabel of the filesystem. `-F` is needed for
/// the user and range to be applied, not only the type.
fn set_selinux_context(
    path: &Path,
    context: &SelinuxContext,
    semanage: &Path,
    restorecon: &Path,
) -> Result<(), InstallError> {
    let real = fs::canonicalize(path).map_err(io_err("resolving", path))?;
    let spec = regex_escape(&real.to_string_lossy());
    let fcontext = |action: &str| {
        let mut command = Command::new(semanage);
        command
            .arg("fcontext")
            .arg(action)
            .arg("-t")
            .arg(&context.type_);
        if let Some(user) = &context.user {
            command.arg("-s").arg(user);
        }
        if let Some(range) = &context.range {
            command.arg("-r").arg(range);
        }
        command.arg(&spec);
        command
    };
    match run(path, &mut fcontext("-a")) {
        Ok(()) => {}
        Err(InstallError::Permission { reason, .. }) if reason.contains("already defined") => {
            run(path, &mut fcontext("-m"))?;
        }
        Err(e) => return Err(e),
    }
    run(path, Command::new(restorecon).arg("-F").arg(&real))
}

/// Escapes a literal path for a file-context specification, which is a regular expression.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.^$*+?()[]{}|".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Runs a permission tool; a failure names the command line and carries its stderr.
fn run(path: &Path, command: &mut Command) -> Result<(), InstallError> {
    let line = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(command = %line, "running");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| InstallError::Permission {
            path: path.to_path_buf(),
            reason: format!("running {line}: {e}"),
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(InstallError::Permission {
        path: path.to_path_buf(),
        reason: format!("{line} failed ({}): {}", output.status, stderr.trim()),
    })
}

#[cfg(test)]
mod tests;
