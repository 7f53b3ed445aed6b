//! Local revisions for `hoist-agent deploy --bundle DIR`: the directory is copied into the
//! deployment directory first, so later deployments can still run this revision's
//! ApplicationStop even after the developer has changed or removed the original.
//!
//! Also who may reach a deployment's copy of its revision ([`share_with_hook_users`]): it
//! holds scripts the agent runs as root, so other users get no way in, and the copy itself
//! carries no group or other write bits (as extraction does).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use hoist_appspec::AppSpec;
use nix::unistd::{Uid, User};

use crate::bundle::extract::WRITE_BY_OTHERS;

/// Limits the directory holding a deployment's copy of its revision (the child of
/// `deployment_dir` that `root` lies in: `archive`, or `download` for a Git checkout) to the
/// agent and the users its hooks run as: mode 0750, group root, or the primary group of the
/// `runas` users when they share one (they need to reach their scripts and working directory).
/// When they have several primary groups it is 0751: those users (and others) may pass
/// through to a path they know, but not list it; nothing inside has group or other write. An
/// agent that is not root cannot switch users anyway and only sets the mode. A root outside
/// `deployment_dir` (not a copy) is left alone.
pub fn share_with_hook_users(
    deployment_dir: &Path,
    root: &Path,
    spec: &AppSpec,
) -> anyhow::Result<()> {
    let Some(first) = root
        .strip_prefix(deployment_dir)
        .ok()
        .and_then(|rel| rel.components().next())
    else {
        return Ok(());
    };
    let dir = deployment_dir.join(first);
    let me = nix::unistd::geteuid();
    let mut groups = BTreeSet::new();
    for hook in spec.hooks.iter().flat_map(|(_, hooks)| hooks) {
        let Some(name) = &hook.runas else { continue };
        // An unknown user fails its hook with a clear message later; nothing to share here.
        if let Some(user) = lookup(name).filter(|u| u.uid != me && !u.uid.is_root()) {
            groups.insert(user.gid.as_raw());
        }
    }
    let (mode, group) = match (groups.len(), groups.first()) {
        (1, Some(&gid)) if me.is_root() => (0o750, Some(gid)),
        (0 | 1, _) => (0o750, None),
        _ => (0o751, None),
    };
    if let Some(gid) = group {
        std::os::unix::fs::chown(&dir, None, Some(gid))
            .with_context(|| format!("changing the group of {}", dir.display()))?;
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", dir.display()))
}

/// A `runas` value as a user: a name, or a numeric id.
fn lookup(name: &str) -> Option<User> {
    match User::from_name(name) {
        Ok(Some(user)) => Some(user),
        _ => name
            .parse()
            .ok()
            .and_then(|uid| User::from_uid(Uid::from_raw(uid)).ok().flatten()),
    }
}

/// Copies the tree at `src` into `dst` (created): regular files with their mode (minus group
/// and other write) and mtime, directories, symlinks as symlinks (never followed, wherever they
/// point). Other file types (sockets, FIFOs, devices) are refused.
pub fn copy_tree(src: &Path, dst: &Path) -> anyhow::Result<u64> {
    let meta = fs::metadata(src).with_context(|| format!("reading {}", src.display()))?;
    if !meta.is_dir() {
        anyhow::bail!("{} is not a directory", src.display());
    }
    // Private while it is filled; `share_with_hook_users` opens it to the hooks' users.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dst)
        .with_context(|| format!("creating {}", dst.display()))?;
    copy_dir(src, dst)
}

fn copy_dir(src: &Path, dst: &Path) -> anyhow::Result<u64> {
    let mut files = 0;
    let mut entries: Vec<_> = fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", src.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta =
            fs::symlink_metadata(&from).with_context(|| format!("reading {}", from.display()))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target =
                fs::read_link(&from).with_context(|| format!("reading {}", from.display()))?;
            symlink(&target, &to).with_context(|| format!("creating {}", to.display()))?;
        } else if ft.is_dir() {
            fs::create_dir(&to).with_context(|| format!("creating {}", to.display()))?;
            files += copy_dir(&from, &to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(masked(&meta)))
                .with_context(|| format!("setting the mode of {}", to.display()))?;
        } else if ft.is_file() {
            fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(masked(&meta)))
                .with_context(|| format!("setting the mode of {}", to.display()))?;
            let mtime = meta
                .modified()
                .with_context(|| format!("reading {}", from.display()))?;
            fs::File::options()
                .write(true)
                .open(&to)
                .and_then(|f| f.set_modified(mtime))
                .with_context(|| format!("setting the mtime of {}", to.display()))?;
            files += 1;
        } else {
            anyhow::bail!(
                "{}: not a regular file, directory or symlink; bundles may not contain it",
                from.display()
            );
        }
    }
    Ok(files)
}

/// The source's permission bits without group and other write.
fn masked(meta: &fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o7777 & !WRITE_BY_OTHERS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn spec_running_as(users: &[&str]) -> AppSpec {
        let hooks = users
            .iter()
            .map(|user| hoist_appspec::Hook {
                location: "a.sh".into(),
                timeout_secs: 60,
                runas: Some(user.to_string()),
            })
            .collect();
        AppSpec {
            hooks: vec![(hoist_appspec::LifecycleEvent::AfterInstall, hooks)],
            ..AppSpec::default()
        }
    }

    /// Regression: a 0777 script in a bundle directory stayed 0777 in the deployment's copy.
    #[test]
    fn the_copy_loses_group_and_other_write() {
        let src = tempfile::tempdir().expect("tempdir");
        let dst = tempfile::tempdir().expect("tempdir");
        fs::create_dir(src.path().join("scripts")).expect("mkdir");
        fs::write(src.path().join("scripts/stop.sh"), "#!/bin/sh\n").expect("write");
        for (path, mode) in [("scripts", 0o777), ("scripts/stop.sh", 0o777)] {
            fs::set_permissions(src.path().join(path), fs::Permissions::from_mode(mode))
                .expect("chmod");
        }
        let out = dst.path().join("copy");
        copy_tree(src.path(), &out).expect("copy");
        let mode = |p: &str| fs::metadata(out.join(p)).expect("stat").mode() & 0o7777;
        assert_eq!(mode("scripts"), 0o755);
        assert_eq!(mode("scripts/stop.sh"), 0o755);
        assert_eq!(mode(""), 0o700, "private while it is filled");
    }

    #[test]
    fn the_revision_copy_is_shared_only_with_the_hooks_users() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let deployment = tmp.path().join("d1");
        let root = deployment.join("archive/owner-repo-abc");
        fs::create_dir_all(&root).expect("mkdir");
        let archive = deployment.join("archive");
        let mode = |p: &Path| fs::metadata(p).expect("stat").mode() & 0o7777;

        share_with_hook_users(&deployment, &root, &AppSpec::default()).expect("share");
        assert_eq!(mode(&archive), 0o750);

        // A root outside the deployment directory is not a copy: left alone.
        let outside = tmp.path().join("elsewhere");
        fs::create_dir(&outside).expect("mkdir");
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).expect("chmod");
        share_with_hook_users(&deployment, &outside, &AppSpec::default()).expect("share");
        assert_eq!(mode(&outside), 0o755);

        if nix::unistd::geteuid().is_root() {
            let nobody = User::from_name("nobody")
                .expect("getpwnam")
                .expect("nobody");
            share_with_hook_users(&deployment, &root, &spec_running_as(&["nobody", "root"]))
                .expect("share");
            let meta = fs::metadata(&archive).expect("stat");
            assert_eq!(
                (meta.mode() & 0o7777, meta.gid()),
                (0o750, nobody.gid.as_raw())
            );
        }
    }

    #[test]
    fn copies_files_modes_and_symlinks() {
        let src = tempfile::tempdir().expect("tempdir");
        let dst = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(src.path().join("scripts")).expect("mkdir");
        fs::write(src.path().join("scripts/run.sh"), "#!/bin/sh\n").expect("write");
        fs::set_permissions(
            src.path().join("scripts/run.sh"),
            fs::Permissions::from_mode(0o750),
        )
        .expect("chmod");
        symlink("scripts/run.sh", src.path().join("link")).expect("symlink");
        let out = dst.path().join("copy");
        assert_eq!(copy_tree(src.path(), &out).expect("copy"), 1);
        let mode = fs::metadata(out.join("scripts/run.sh"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750);
        assert_eq!(
            fs::read_link(out.join("link")).expect("link"),
            Path::new("scripts/run.sh")
        );
    }
}
