//! Bundles: a revision's files, as an archive (zip, tar, tar.gz) or a directory.

pub mod extract;
pub mod fetch;
