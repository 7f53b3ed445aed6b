//! `hoist-agent validate PATH`: checks an appspec file, a bundle directory or an archive and
//! lists every error and warning. For bundles it also checks that the files and scripts the
//! appspec names exist in the bundle, and names the symlinks that point out of it (kept as
//! links and never followed, but worth knowing about).

use std::path::{Path, PathBuf};

use clap::Args;
use hoist_appspec::{AppSpec, Diagnostic};

use super::{CliError, Outcome};
use crate::bundle;
use crate::bundle::extract::{self, ExtractLimits};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// An appspec file, a bundle directory, or a zip / tar / tar.gz bundle.
    pub path: PathBuf,
}

pub async fn run(args: ValidateArgs) -> Result<Outcome, CliError> {
    let path = args.path;
    tokio::task::spawn_blocking(move || validate(&path)).await?
}

fn validate(path: &Path) -> Result<Outcome, CliError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| CliError::usage(anyhow::anyhow!("cannot validate {}: {e}", path.display())))?;
    // Keeps an extracted archive alive until the checks are done.
    let mut _extracted: Option<tempfile::TempDir> = None;
    let (root, appspec_path) = if meta.is_dir() {
        let root = bundle::bundle_root(path);
        match bundle::find_appspec(&root, None) {
            Ok(p) => (Some(root), p),
            Err(e) => return Ok(report(path, &[problem("", e.to_string())], &[])),
        }
    } else if extract::detect_format(path).is_ok() {
        let tmp = tempfile::tempdir()?;
        let dest = tmp.path().join("bundle");
        if let Err(e) = extract::extract(path, &dest, &ExtractLimits::default()) {
            let e = anyhow::Error::new(e);
            return Ok(report(path, &[problem("", format!("{e:#}"))], &[]));
        }
        let root = bundle::bundle_root(&dest);
        _extracted = Some(tmp);
        match bundle::find_appspec(&root, None) {
            Ok(p) => (Some(root), p),
            Err(e) => return Ok(report(path, &[problem("", e.to_string())], &[])),
        }
    } else {
        (None, path.to_path_buf())
    };

    let text = match std::fs::read_to_string(&appspec_path) {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("reading {}: {e}", appspec_path.display());
            return Ok(report(path, &[problem("", msg)], &[]));
        }
    };
    if let Some(root) = &root {
        print_outward_links(root);
    }
    match hoist_appspec::parse(&text) {
        Ok(parsed) => {
            if let Some(releases) = &parsed.spec.releases {
                print_releases(releases);
            }
            let errors = match &root {
                Some(root) => check_bundle(&parsed.spec, root),
                None => Vec::new(),
            };
            Ok(report(path, &errors, &parsed.warnings))
        }
        Err(invalid) => Ok(report(path, &invalid.errors, &invalid.warnings)),
    }
}

/// Checks that what the appspec names exists in the bundle.
fn check_bundle(spec: &AppSpec, root: &Path) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (i, f) in spec.files.iter().enumerate() {
        let rel = f.source.trim_start_matches('/');
        if !rel.is_empty() && std::fs::symlink_metadata(root.join(rel)).is_err() {
            out.push(problem(
                &format!("files[{i}].source"),
                format!("{:?} does not exist in the bundle", f.source),
            ));
        }
    }
    for (event, hooks) in &spec.hooks {
        for (i, h) in hooks.iter().enumerate() {
            let rel = h.location.trim_start_matches('/');
            let key = format!("hooks.{event}[{i}].location");
            match std::fs::metadata(root.join(rel)) {
                Ok(m) if m.is_file() => {}
                Ok(_) => out.push(problem(
                    &key,
                    format!("{:?} is not a regular file", h.location),
                )),
                Err(_) => out.push(problem(
                    &key,
                    format!("script {:?} does not exist in the bundle", h.location),
                )),
            }
        }
    }
    out
}

/// Says what the `hoist.releases` keys of a valid appspec do, with their values.
fn print_releases(releases: &hoist_appspec::Releases) {
    for (key, what) in hoist_appspec::RELEASES_HELP {
        let value = match *key {
            "hoist.releases.current" => format!("{:?}", releases.current.display().to_string()),
            _ => releases.keep.to_string(),
        };
        println!("info:    {key} = {value}: {what}");
    }
    println!(
        "info:    releases are kept in {:?}",
        releases.releases_dir().display().to_string()
    );
}

/// Links shown by name before the rest are only counted.
const LINKS_SHOWN: usize = 20;

/// Prints an `info:` line for each symlink under `root` whose target is absolute or leaves the
/// bundle. Names are printed escaped (`{:?}`): they come from the bundle.
fn print_outward_links(root: &Path) {
    let links = outward_links(root);
    for (rel, target) in links.iter().take(LINKS_SHOWN) {
        println!(
            "info:    {:?} -> {:?}: symlink pointing out of the bundle; installed as a link, never followed",
            rel.display().to_string(),
            target.display().to_string()
        );
    }
    if links.len() > LINKS_SHOWN {
        println!(
            "info:    and {} more symlinks pointing out of the bundle",
            links.len() - LINKS_SHOWN
        );
    }
}

/// Symlinks under `root` (relative paths, sorted) whose target may resolve outside it; real
/// directories are walked, links never followed. Unreadable directories are skipped.
fn outward_links(root: &Path) -> Vec<(PathBuf, PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let Ok(listing) = std::fs::read_dir(root.join(&rel_dir)) else {
            continue;
        };
        for entry in listing.flatten() {
            let rel = rel_dir.join(entry.file_name());
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(rel);
            } else if kind.is_symlink() {
                if let Ok(target) = std::fs::read_link(entry.path()) {
                    if extract::link_leaves_bundle(&rel, target.as_os_str().as_bytes()) {
                        out.push((rel, target));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

fn problem(path: &str, message: String) -> Diagnostic {
    Diagnostic {
        path: path.to_string(),
        message,
    }
}

fn report(path: &Path, errors: &[Diagnostic], warnings: &[Diagnostic]) -> Outcome {
    for e in errors {
        println!("error:   {e}");
    }
    for w in warnings {
        println!("warning: {w}");
    }
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    if errors.is_empty() {
        println!(
            "{}: valid ({})",
            path.display(),
            plural(warnings.len(), "warning")
        );
        Outcome::Ok
    } else {
        println!(
            "{}: invalid ({}, {})",
            path.display(),
            plural(errors.len(), "error"),
            plural(warnings.len(), "warning")
        );
        Outcome::Failed
    }
}
