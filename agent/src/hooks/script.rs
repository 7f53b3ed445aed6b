//! Where a hook's script is: its `location` resolved inside the bundle root, refusing
//! anything that leads out of it, and made executable when it is not.
//!
//! The appspec parser checks only that a location is not empty, and the bundle's own
//! symbolic links are untrusted, so both `..` and links are checked here.

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;

use super::HookOutcome;

/// A hook's script found in the bundle.
pub(super) struct Resolved {
    pub(super) path: PathBuf,
    /// It had no execute permission and the agent added it.
    pub(super) made_executable: bool,
}

/// Finds the script of `location` inside `bundle_root`, refusing anything outside it (by
/// `..` or by a symbolic link), and makes it executable if it is not.
pub(super) fn resolve_script(bundle_root: &Path, location: &str) -> Result<Resolved, HookOutcome> {
    let not_exec = |reason: String| HookOutcome::NotExecutable { reason };
    let shown = format!("{location:?}");
    let relative =
        normalize_location(location).map_err(|why| not_exec(format!("{shown} {why}")))?;
    let root = std::fs::canonicalize(bundle_root).map_err(|err| HookOutcome::SpawnFailed {
        reason: format!("bundle root {}: {err}", bundle_root.display()),
    })?;
    let joined = root.join(&relative);
    let path = match std::fs::canonicalize(&joined) {
        Ok(path) => path,
        Err(err)
            if err.kind() == std::io::ErrorKind::NotFound
                || err.raw_os_error() == Some(Errno::ENOTDIR as i32) =>
        {
            return Err(HookOutcome::Missing)
        }
        Err(err) => return Err(not_exec(format!("{shown}: {err}"))),
    };
    if !path.starts_with(&root) {
        return Err(not_exec(format!(
            "{shown} resolves to {}, outside the bundle",
            path.display()
        )));
    }
    let meta = std::fs::metadata(&path).map_err(|err| not_exec(format!("{shown}: {err}")))?;
    if !meta.is_file() {
        return Err(not_exec(format!("{shown} is not a regular file")));
    }
    let mode = meta.permissions().mode();
    let mut made_executable = false;
    if mode & 0o111 != 0o111 {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode | 0o111))
            .map_err(|err| not_exec(format!("{shown} could not be made executable: {err}")))?;
        made_executable = true;
    }
    Ok(Resolved {
        path,
        made_executable,
    })
}

/// `location` as a path relative to the bundle root, or why it is refused.
fn normalize_location(location: &str) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for component in Path::new(location).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err("is outside the bundle");
                }
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err("names no file");
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn location_normalization() {
        let ok = [
            ("scripts/a.sh", "scripts/a.sh"),
            ("/scripts/a.sh", "scripts/a.sh"),
            ("./scripts/../a.sh", "a.sh"),
            ("//a.sh", "a.sh"),
        ];
        for (input, want) in ok {
            assert_eq!(
                normalize_location(input),
                Ok(PathBuf::from(want)),
                "{input}"
            );
        }
        for bad in ["../a.sh", "/../a.sh", "scripts/../../a.sh", "", "/", "."] {
            assert!(normalize_location(bad).is_err(), "{bad}");
        }
    }
}
