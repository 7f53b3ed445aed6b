//! Bundles: a revision's files, as an archive (zip, tar, tar.gz) or a directory.

pub mod extract;
pub mod local;

use std::path::{Path, PathBuf};

pub fn bundle_root(extracted: &Path) -> PathBuf {
    extracted.to_path_buf()
}

pub fn find_appspec(root: &Path, custom: Option<&str>) -> Result<PathBuf, std::io::Error> {
    let _ = custom;
    Ok(root.join("appspec.yml"))
}
