//! Bundles: a revision's files, as an archive (zip, tar, tar.gz) or a directory.
//!
//! This module finds a bundle's root and its appspec once the files are on disk; fetching
//! and unpacking live in the submodules. It does not parse the appspec (that is
//! `hoist_appspec`'s job).

pub mod extract;
pub mod fetch;
pub mod local;

use std::fs;
use std::path::{Component, Path, PathBuf};

/// The appspec file names looked for, in order, when the deployment names none.
pub const APPSPEC_NAMES: [&str; 2] = ["appspec.yml", "appspec.yaml"];

/// Why [`find_appspec`] found no appspec to read (the coordinator's bundle store has errors of
/// its own; these are about a bundle already on this host).
#[derive(Debug, thiserror::Error)]
pub enum FindAppSpecError {
    #[error("no appspec in bundle {root}: looked for {}", looked_for.join(", "))]
    AppSpecNotFound {
        root: PathBuf,
        looked_for: Vec<String>,
    },
    #[error("appspec path {path:?} {reason}")]
    InvalidAppSpecPath { path: String, reason: String },
    #[error("appspec {path} is not a regular file")]
    AppSpecNotFile { path: PathBuf },
    #[error("reading bundle {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The directory a revision's paths are relative to.
///
/// Archives made from a repository hosting service (GitHub's `owner-repo-sha/`) wrap the whole
/// tree in one top directory: when `extracted` holds exactly one entry, a real directory (not a
/// symlink) holding an appspec, and no appspec of its own, that directory is the root. As in
/// CodeDeploy's agent, "holding an appspec" means an entry whose name contains `appspec` in any
/// case, so a deployment naming its own appspec file (`appspec-prod.yml`) finds it too.
/// Otherwise `extracted` itself is, including when it cannot be read (the appspec lookup that
/// follows then reports the problem).
pub fn bundle_root(extracted: &Path) -> PathBuf {
    let has_appspec = |dir: &Path| {
        APPSPEC_NAMES
            .iter()
            .any(|name| fs::symlink_metadata(dir.join(name)).is_ok())
    };
    if has_appspec(extracted) {
        return extracted.to_path_buf();
    }
    let Ok(listing) = fs::read_dir(extracted) else {
        return extracted.to_path_buf();
    };
    let entries: Vec<_> = listing.take(2).collect();
    if let [Ok(only)] = entries.as_slice() {
        let is_dir = only.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && names_an_appspec(&only.path()) {
            return only.path();
        }
    }
    extracted.to_path_buf()
}

/// Whether `dir` holds an entry whose name contains `appspec`, in any case.
fn names_an_appspec(dir: &Path) -> bool {
    let Ok(listing) = fs::read_dir(dir) else {
        return false;
    };
    listing.flatten().any(|entry| {
        entry
            .file_name()
            .to_string_lossy()
            .to_ascii_lowercase()
            .contains("appspec")
    })
}

/// Finds the appspec under `root`: `custom` (a path relative to the root) when given, else
/// `appspec.yml`, then `appspec.yaml`.
///
/// The result is a regular file that, symlinks resolved, lies inside `root`: a bundle cannot
/// make the agent read a file elsewhere on the host as its appspec.
pub fn find_appspec(root: &Path, custom: Option<&str>) -> Result<PathBuf, FindAppSpecError> {
    let candidates: Vec<String> = match custom {
        Some(custom) => {
            check_relative(custom)?;
            vec![custom.to_string()]
        }
        None => APPSPEC_NAMES.iter().map(|s| s.to_string()).collect(),
    };
    for name in &candidates {
        let path = root.join(name);
        match fs::symlink_metadata(&path) {
            Ok(_) => return check_inside(root, &path, name),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(FindAppSpecError::Io { path, source }),
        }
    }
    Err(FindAppSpecError::AppSpecNotFound {
        root: root.to_path_buf(),
        looked_for: candidates,
    })
}

/// A custom appspec path must be relative and must not climb above the root.
fn check_relative(custom: &str) -> Result<(), FindAppSpecError> {
    let invalid = |reason: &str| FindAppSpecError::InvalidAppSpecPath {
        path: custom.to_string(),
        reason: reason.to_string(),
    };
    if custom.is_empty() {
        return Err(invalid("is empty"));
    }
    let mut depth: usize = 0;
    for component in Path::new(custom).components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| invalid("points outside the bundle"))?;
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid("must be relative to the bundle root"));
            }
        }
    }
    if depth == 0 {
        return Err(invalid("names the bundle root itself"));
    }
    Ok(())
}

fn check_inside(root: &Path, path: &Path, name: &str) -> Result<PathBuf, FindAppSpecError> {
    let canonical = |p: &Path| {
        fs::canonicalize(p).map_err(|source| FindAppSpecError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let real_root = canonical(root)?;
    let real = canonical(path)?;
    if !real.starts_with(&real_root) {
        return Err(FindAppSpecError::InvalidAppSpecPath {
            path: name.to_string(),
            reason: "resolves outside the bundle".to_string(),
        });
    }
    let meta = fs::metadata(&real).map_err(|source| FindAppSpecError::Io {
        path: real.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(FindAppSpecError::AppSpecNotFile {
            path: path.to_path_buf(),
        });
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(path, text).expect("write");
    }

    #[test]
    fn bundle_root_descends_into_a_single_top_directory_with_an_appspec() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write(
            &tmp.path().join("owner-repo-abc123/appspec.yml"),
            "version: 0.0\n",
        );
        write(&tmp.path().join("owner-repo-abc123/scripts/start.sh"), "");
        assert_eq!(
            bundle_root(tmp.path()),
            tmp.path().join("owner-repo-abc123")
        );
    }

    #[test]
    fn bundle_root_accepts_appspec_yaml_in_the_top_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write(&tmp.path().join("top/appspec.yaml"), "version: 0.0\n");
        assert_eq!(bundle_root(tmp.path()), tmp.path().join("top"));
    }

    /// Regression: a top directory holding only a custom-named appspec was not taken as the
    /// root, so a deployment naming that appspec did not find it; CodeDeploy's agent strips
    /// the directory when any name in it contains "appspec".
    #[test]
    fn bundle_root_descends_into_a_top_directory_with_a_custom_appspec() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write(
            &tmp.path().join("top/AppSpec-prod.yml"),
            "version: 0.0
",
        );
        write(&tmp.path().join("top/scripts/start.sh"), "");
        let root = bundle_root(tmp.path());
        assert_eq!(root, tmp.path().join("top"));
        assert!(find_appspec(&root, Some("AppSpec-prod.yml")).is_ok());
    }

    #[test]
    fn bundle_root_stays_put_in_other_layouts() {
        // (files to create, why the root does not move)
        let cases: &[(&[&str], &str)] = &[
            (
                &["appspec.yml", "app/appspec.yml"],
                "top level has its own appspec",
            ),
            (&["top/appspec.yml", "README"], "two top-level entries"),
            (
                &["a/appspec.yml", "b/appspec.yml"],
                "two top-level directories",
            ),
            (
                &["top/app/appspec.yml"],
                "the appspec is deeper than the top directory",
            ),
            (&["appspec.yml"], "plain bundle"),
        ];
        for (files, why) in cases {
            let tmp = tempfile::tempdir().expect("tempdir");
            for file in *files {
                write(&tmp.path().join(file), "x");
            }
            assert_eq!(bundle_root(tmp.path()), tmp.path(), "{why}");
        }
    }

    #[test]
    fn bundle_root_ignores_a_symlinked_top_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        write(&elsewhere.path().join("appspec.yml"), "x");
        let root = tmp.path().join("root");
        fs::create_dir(&root).expect("mkdir");
        std::os::unix::fs::symlink(elsewhere.path(), root.join("top")).expect("symlink");
        assert_eq!(bundle_root(&root), root);
    }

    #[test]
    fn find_appspec_prefers_yml_then_yaml() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write(&tmp.path().join("appspec.yaml"), "x");
        assert_eq!(
            find_appspec(tmp.path(), None).expect("found"),
            tmp.path().join("appspec.yaml")
        );
        write(&tmp.path().join("appspec.yml"), "x");
        assert_eq!(
            find_appspec(tmp.path(), None).expect("found"),
            tmp.path().join("appspec.yml")
        );
    }

    #[test]
    fn find_appspec_uses_a_custom_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write(&tmp.path().join("appspec.yml"), "x");
        write(&tmp.path().join("deploy/prod.yml"), "x");
        assert_eq!(
            find_appspec(tmp.path(), Some("deploy/./prod.yml")).expect("found"),
            tmp.path().join("deploy/./prod.yml")
        );
        let err = find_appspec(tmp.path(), Some("deploy/missing.yml")).expect_err("missing");
        assert!(
            matches!(err, FindAppSpecError::AppSpecNotFound { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("deploy/missing.yml"), "{err}");
    }

    #[test]
    fn find_appspec_names_what_it_looked_for() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = find_appspec(tmp.path(), None).expect_err("nothing there");
        let text = err.to_string();
        assert!(text.contains("appspec.yml, appspec.yaml"), "{text}");
        assert!(text.contains(&tmp.path().display().to_string()), "{text}");
    }

    #[test]
    fn find_appspec_refuses_paths_leaving_the_bundle() {
        let outside = tempfile::tempdir().expect("tempdir");
        write(&outside.path().join("secret.yml"), "x");
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        fs::create_dir(&root).expect("mkdir");
        std::os::unix::fs::symlink(outside.path().join("secret.yml"), root.join("appspec.yml"))
            .expect("symlink");
        std::os::unix::fs::symlink(outside.path(), root.join("out")).expect("symlink");
        for custom in [
            None,
            Some("../x.yml"),
            Some("a/../../x.yml"),
            Some("/etc/passwd"),
            Some("out/secret.yml"),
            Some(""),
            Some("."),
        ] {
            let err = find_appspec(&root, custom).expect_err("must refuse");
            assert!(
                matches!(err, FindAppSpecError::InvalidAppSpecPath { .. }),
                "{custom:?}: {err:?}"
            );
        }
    }

    #[test]
    fn find_appspec_refuses_a_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir(tmp.path().join("appspec.yml")).expect("mkdir");
        let err = find_appspec(tmp.path(), None).expect_err("a directory");
        assert!(
            matches!(err, FindAppSpecError::AppSpecNotFile { .. }),
            "{err:?}"
        );
    }
}
