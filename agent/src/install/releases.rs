//! The release layout of an appspec's `hoist.releases`: the files bound for `current` are
//! installed into `releases/<deployment id>/` beside it, and `current` becomes a symlink to
//! that directory by one atomic rename, so a host serves either the old release or the new
//! one, whole, and never a mix.
//!
//! The switch: a symlink to the new release is made under a temporary name beside `current`,
//! the directory is synced, the link is renamed over `current`, and the directory is synced
//! again. A `current` that is still a plain directory (from a deployment before the layout)
//! is exchanged with the new link in one `renameat2(RENAME_EXCHANGE)`, the link made at the
//! directory's place in `releases/`, so the old tree lands in `releases/` in the same step
//! and is kept, not deleted. At every moment `current` is a complete tree: the old one, or a
//! release whose files were made durable before the switch.
//!
//! This module rewrites paths, switches and prunes release directories; it does not decide
//! which release to switch to (the deployment does) nor keep the record of releases (`state`).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use hoist_appspec::{AppSpec, Releases};

use super::{io_err, normalize, EntryKind, InstallError, InstalledEntry, InstalledFiles};

/// The release directory of a deployment: `releases/<deployment id>/` beside `current`.
pub fn release_dir(releases: &Releases, deployment_id: &str) -> PathBuf {
    releases
        .releases_dir()
        .join(crate::state::encode_name(deployment_id))
}

/// Whether `path` is `current` or below it.
pub fn is_under(path: &Path, current: &Path) -> bool {
    normalize(path).starts_with(current)
}

/// `spec` with every `files` destination and `permissions` object at or below `current`
/// moved into the release directory `dir` (permissions then apply there).
pub fn retarget(spec: &AppSpec, current: &Path, dir: &Path) -> AppSpec {
    let moved = |path: &Path| -> PathBuf {
        let path = normalize(path);
        match path.strip_prefix(current) {
            Ok(rest) if rest.as_os_str().is_empty() => dir.to_path_buf(),
            Ok(rest) => dir.join(rest),
            Err(_) => path,
        }
    };
    let mut spec = spec.clone();
    for f in &mut spec.files {
        f.destination = moved(&f.destination);
    }
    for p in &mut spec.permissions {
        p.object = moved(&p.object);
    }
    spec
}

/// What a release deployment keeps in the group's record of installed paths: what it
/// installed outside its release directory, and `current` itself as a symlink once switched,
/// so that a later deployment without the layout removes the link (the releases stay).
/// The release's own files are not in it: a kept release is removed by pruning only.
pub fn record_of_release(
    installed: &InstalledFiles,
    release: &Path,
    current: &Path,
) -> InstalledFiles {
    let mut entries: Vec<InstalledEntry> = installed
        .entries
        .iter()
        .filter(|e| !e.path.starts_with(release))
        .cloned()
        .collect();
    entries.push(InstalledEntry {
        path: current.to_path_buf(),
        kind: EntryKind::Symlink,
    });
    InstalledFiles::new(entries)
}

/// How a switch went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    /// Where `current` pointed before, when it was a symlink.
    pub previous: Option<PathBuf>,
    /// Where the plain directory that was `current` was moved, when it was one.
    pub moved: Option<PathBuf>,
}

/// Points `current` at `target` atomically. A plain directory at `current` is moved to
/// `legacy` (inside `releases/`) in the same step. Both directories are synced.
pub fn switch(current: &Path, target: &Path, legacy: &Path) -> Result<Switched, InstallError> {
    let parent = current.parent().ok_or_else(|| InstallError::Io {
        op: "switching",
        path: current.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path has no parent directory"),
    })?;
    let existing = match fs::symlink_metadata(current) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("inspecting", current)(e)),
    };
    match existing {
        Some(meta) if meta.is_dir() => {
            exchange_with_directory(current, target, legacy, parent)?;
            Ok(Switched {
                previous: None,
                moved: Some(legacy.to_path_buf()),
            })
        }
        _ => {
            let previous = existing
                .filter(|m| m.file_type().is_symlink())
                .and_then(|_| fs::read_link(current).ok());
            let temp = temp_link_path(current);
            make_link(target, &temp)?;
            sync_dir(parent)?;
            fs::rename(&temp, current).map_err(io_err("renaming into place", current))?;
            sync_dir(parent)?;
            Ok(Switched {
                previous,
                moved: None,
            })
        }
    }
}

/// The first switch of a `current` that is a plain directory: the link is made at `legacy`
/// and exchanged with `current`, which leaves the directory at `legacy`.
fn exchange_with_directory(
    current: &Path,
    target: &Path,
    legacy: &Path,
    parent: &Path,
) -> Result<(), InstallError> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    let legacy_parent = legacy.parent().unwrap_or(parent);
    make_link(target, legacy)?;
    sync_dir(legacy_parent)?;
    renameat2(
        AT_FDCWD,
        legacy,
        AT_FDCWD,
        current,
        RenameFlags::RENAME_EXCHANGE,
    )
    .map_err(|errno| InstallError::Io {
        op: "exchanging with the release link",
        path: current.to_path_buf(),
        source: io::Error::from(errno),
    })?;
    sync_dir(parent)?;
    sync_dir(legacy_parent)
}

/// A symlink at `path` to `target`, replacing a leftover symlink of an interrupted switch.
fn make_link(target: &Path, path: &Path) -> Result<(), InstallError> {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(path).map_err(io_err("removing", path))?;
    }
    std::os::unix::fs::symlink(target, path).map_err(io_err("creating symlink", path))
}

/// `.<name>.hoist-switch` beside `current`.
fn temp_link_path(current: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(current.file_name().unwrap_or_default());
    name.push(".hoist-switch");
    current.with_file_name(name)
}

fn sync_dir(dir: &Path) -> Result<(), InstallError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

/// Removes release directories beyond `keep`: `releases` is oldest first; `protect` (the
/// current and the previous release) are never removed, and the newest others fill up to
/// `keep`. Returns the directories removed (their records are the caller's to drop).
pub fn prune(
    releases: &[PathBuf],
    keep: usize,
    protect: &[&Path],
) -> Result<Vec<PathBuf>, InstallError> {
    let protected = |d: &PathBuf| protect.contains(&d.as_path());
    let mut room = keep.saturating_sub(releases.iter().filter(|d| protected(d)).count());
    let mut removed = Vec::new();
    for dir in releases.iter().rev() {
        if protected(dir) {
            continue;
        }
        if room > 0 {
            room -= 1;
            continue;
        }
        match fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing old release", dir)(e)),
        }
        removed.push(dir.clone());
    }
    Ok(removed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn switch_replaces_a_link_and_moves_a_plain_directory_into_releases() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("current");
        let releases = dir.path().join("releases");
        fs::create_dir_all(current.join("sub")).unwrap();
        fs::write(current.join("sub/old.txt"), "old").unwrap();
        fs::create_dir_all(releases.join("d1")).unwrap();
        fs::write(releases.join("d1/new.txt"), "one").unwrap();
        fs::create_dir_all(releases.join("d2")).unwrap();

        let legacy = releases.join("before");
        let s = switch(&current, &releases.join("d1"), &legacy).unwrap();
        assert_eq!(s.moved.as_deref(), Some(legacy.as_path()));
        assert_eq!(fs::read_link(&current).unwrap(), releases.join("d1"));
        assert_eq!(
            fs::read_to_string(legacy.join("sub/old.txt")).unwrap(),
            "old"
        );
        assert_eq!(fs::read_to_string(current.join("new.txt")).unwrap(), "one");

        let s = switch(&current, &releases.join("d2"), &legacy).unwrap();
        assert_eq!(s.previous.as_deref(), Some(releases.join("d1").as_path()));
        assert_eq!(fs::read_link(&current).unwrap(), releases.join("d2"));
        assert!(!temp_link_path(&current).exists());
        // A leftover link of an interrupted switch is replaced.
        std::os::unix::fs::symlink("/nowhere", temp_link_path(&current)).unwrap();
        switch(&current, &releases.join("d1"), &legacy).unwrap();
        assert_eq!(fs::read_link(&current).unwrap(), releases.join("d1"));
        assert!(fs::symlink_metadata(temp_link_path(&current)).is_err());
    }

    #[test]
    fn prune_keeps_the_newest_and_never_the_protected_ones() {
        let dir = tempfile::tempdir().unwrap();
        let all: Vec<PathBuf> = (1..=6).map(|i| dir.path().join(format!("r{i}"))).collect();
        for d in &all {
            fs::create_dir(d).unwrap();
        }
        // Current is r2 (rolled back), previous r6: kept with the newest one other, r5.
        let removed = prune(&all, 3, &[&all[1], &all[5]]).unwrap();
        assert_eq!(
            removed,
            vec![all[3].clone(), all[2].clone(), all[0].clone()]
        );
        let left: Vec<bool> = all.iter().map(|d| d.exists()).collect();
        assert_eq!(left, [false, true, false, false, true, true]);
    }

    #[test]
    fn retarget_moves_what_is_bound_for_current_only() {
        let mut spec = AppSpec::default();
        for dest in ["/srv/shop/current", "/srv/shop/current/conf/", "/etc/shop"] {
            spec.files.push(hoist_appspec::FileMapping {
                source: "/".into(),
                destination: dest.into(),
            });
        }
        let r = retarget(
            &spec,
            Path::new("/srv/shop/current"),
            Path::new("/srv/shop/releases/d1"),
        );
        let got: Vec<&Path> = r.files.iter().map(|f| f.destination.as_path()).collect();
        assert_eq!(
            got,
            [
                Path::new("/srv/shop/releases/d1"),
                Path::new("/srv/shop/releases/d1/conf"),
                Path::new("/etc/shop")
            ]
        );
    }
}
