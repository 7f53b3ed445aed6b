//! Local revisions for `hoist-agent deploy --bundle DIR`: the directory is copied into the
//! deployment directory first, so later deployments can still run this revision's
//! ApplicationStop even after the developer has changed or removed the original.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// Copies the tree at `src` into `dst` (created): regular files with their mode and mtime,
/// directories, symlinks as symlinks. Other file types (sockets, FIFOs, devices) are refused.
pub fn copy_tree(src: &Path, dst: &Path) -> anyhow::Result<u64> {
    let meta = fs::metadata(src).with_context(|| format!("reading {}", src.display()))?;
    if !meta.is_dir() {
        anyhow::bail!("{} is not a directory", src.display());
    }
    fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
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
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.permissions().mode()))
                .with_context(|| format!("setting the mode of {}", to.display()))?;
        } else if ft.is_file() {
            fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
