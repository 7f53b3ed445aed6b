//! The writing of the Install event: directories created and each file landed atomically
//! (a temp file beside the target, renamed into place), every path recorded as it goes, an
//! fsync before a rename that replaces a file, and what else must be made durable collected
//! in a [`Written`] (synced by `durable` once permissions are applied); and the removal of
//! what the previous deployment of the group installed.
//!
//! It decides nothing: the plan (`plan`) has settled every target and conflict before it runs.

use std::cmp::Reverse;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, FileTimes, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::durable::Written;
use super::plan::{CopyKind, Op};
use super::{io_err, EntryKind, InstallError, InstalledEntry, InstalledFiles};

/// Removes what the previous deployment installed: files and symlinks, then directories it
/// created when they are empty. Missing paths are fine. Returns the directories it removed
/// entries from, to be synced with what the deployment installs.
pub fn remove_previous(previous: &InstalledFiles) -> Result<Written, InstallError> {
    let mut written = Written::default();
    let mut dirs = Vec::new();
    for entry in previous.entries.iter().rev() {
        // This guards the record read back from the state directory, not the appspec: a
        // relative path can only come from a damaged record, and acting on it would remove
        // something relative to the agent's working directory.
        if !entry.path.is_absolute() {
            tracing::warn!(path = %entry.path.display(), "ignoring relative path in the record of installed files");
            continue;
        }
        match entry.kind {
            EntryKind::File | EntryKind::Symlink => {
                if let (true, Some(parent)) = (remove_non_dir(&entry.path)?, entry.path.parent()) {
                    written.entry_changed(parent);
                }
            }
            EntryKind::Directory => dirs.push(entry.path.as_path()),
        }
    }
    // Deepest first, so a directory emptied by removing its children goes too.
    dirs.sort_by_key(|p| Reverse(p.components().count()));
    for dir in dirs {
        if let (true, Some(parent)) = (remove_dir_if_empty(dir)?, dir.parent()) {
            written.entry_changed(parent);
        }
    }
    Ok(written)
}

/// Removes a file or symlink; whether it removed one.
fn remove_non_dir(path: &Path) -> Result<bool, InstallError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("inspecting", path)(e)),
        Ok(meta) if meta.is_dir() => {
            tracing::warn!(path = %path.display(), "installed as a file but now a directory, leaving it");
            Ok(false)
        }
        Ok(_) => match fs::remove_file(path) {
            Ok(()) => {
                tracing::debug!(path = %path.display(), "removed previously installed file");
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("removing", path)(e)),
        },
    }
}

/// Removes a directory if it is empty; whether it removed it.
fn remove_dir_if_empty(path: &Path) -> Result<bool, InstallError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("inspecting", path)(e)),
        Ok(meta) if !meta.is_dir() => {
            tracing::warn!(path = %path.display(), "created as a directory but now something else, leaving it");
            return Ok(false);
        }
        Ok(_) => {}
    }
    match fs::remove_dir(path) {
        Ok(()) => {
            tracing::debug!(path = %path.display(), "removed previously created directory");
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e)
            if e.kind() == io::ErrorKind::DirectoryNotEmpty
                || e.raw_os_error() == Some(nix::errno::Errno::EEXIST as i32) =>
        {
            tracing::debug!(path = %path.display(), "keeping previously created directory: not empty");
            Ok(false)
        }
        Err(e) => Err(io_err("removing directory", path)(e)),
    }
}

/// Carries out the plan's operations, recording each path as it goes; what must still be made
/// durable (new files and every directory that gained an entry) is returned, not synced.
pub(super) fn execute(ops: &[Op], record: &mut InstalledFiles) -> Result<Written, InstallError> {
    let mut written = Written::default();
    for op in ops {
        match op {
            Op::Mkdir { path } => {
                fs::create_dir(path).map_err(io_err("creating directory", path))?;
                tracing::debug!(path = %path.display(), "created directory");
                record.entries.push(InstalledEntry {
                    path: path.clone(),
                    kind: EntryKind::Directory,
                });
                written.entry_changed(parent_of(path)?);
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
                        match install_regular_file(source, target, parent, *replace)? {
                            Landed::Replaced => written.entry_changed(parent),
                            Landed::New { bytes, device } => {
                                written.new_file(target, parent, bytes, device)
                            }
                        }
                        EntryKind::File
                    }
                    CopyKind::Symlink => {
                        install_symlink(source, target, parent, *replace)?;
                        written.entry_changed(parent);
                        EntryKind::Symlink
                    }
                };
                tracing::debug!(source = %source.display(), target = %target.display(), "installed");
                record.entries.push(InstalledEntry {
                    path: target.clone(),
                    kind: entry_kind,
                });
            }
        }
    }
    Ok(written)
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

/// What [`install_regular_file`] did at the target's path.
enum Landed {
    /// An existing file was replaced, synced before the rename.
    Replaced,
    /// A new file, not synced yet: `bytes` long, on filesystem `device`.
    New { bytes: u64, device: u64 },
}

/// Copies a regular file to a temp file beside `target` with the source's contents, owner
/// (when permitted), mode and times, then renames it into place. When it replaces an existing
/// file it is synced first, so a crash never leaves the old file's path with partial
/// contents; a new file is synced later with everything else ([`Written::sync`]).
fn install_regular_file(
    source: &Path,
    target: &Path,
    parent: &Path,
    replace: bool,
) -> Result<Landed, InstallError> {
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
    let replaces = fs::symlink_metadata(target).is_ok();
    if replaces {
        file.sync_all().map_err(io_err("syncing", &temp_path))?;
    }

    let persisted = if replace {
        temp.persist(target)
    } else {
        temp.persist_noclobber(target)
    };
    persisted.map_err(|e| io_err("renaming into place", target)(e.error))?;
    Ok(if replaces {
        Landed::Replaced
    } else {
        Landed::New {
            bytes: current.len(),
            device: current.dev(),
        }
    })
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
