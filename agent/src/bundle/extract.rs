//! Safe extraction of zip, tar and tar.gz archives into a deployment directory.
//!
//! Interface (owned by this module):
//! - [`detect_format`] sniffs the archive's magic bytes (never trusts the file name alone).
//! - [`extract`] unpacks into an empty directory; nothing is ever written outside it.

use std::path::{Path, PathBuf};

/// Caps and switches for extraction. Defaults are safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Total bytes of file contents unpacked, summed over entries.
    pub max_total_bytes: u64,
    /// Number of entries (files, directories, links).
    pub max_entries: u64,
    /// Keep setuid/setgid bits from the archive.
    pub allow_setuid: bool,
    /// Apply the archive's numeric uid/gid (tar only; root only).
    pub preserve_owner: bool,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_total_bytes: 8 * 1024 * 1024 * 1024,
            max_entries: 200_000,
            allow_setuid: false,
            preserve_owner: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    Zip,
    Tar,
    TarGz,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractSummary {
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("reading archive {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a zip, tar or tar.gz archive")]
    UnknownFormat { path: PathBuf },
    #[error("refusing archive entry {entry:?}: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    #[error("archive exceeds the limit of {limit}: {what}")]
    LimitExceeded { what: String, limit: u64 },
    #[error("corrupt archive {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// Detects the archive format from its first bytes.
pub fn detect_format(path: &Path) -> Result<ArchiveFormat, ExtractError> {
    Err(ExtractError::UnknownFormat {
        path: path.to_path_buf(),
    })
}

/// Extracts `archive` into `dest` (created if missing, must be empty).
pub fn extract(
    archive: &Path,
    dest: &Path,
    limits: &ExtractLimits,
) -> Result<ExtractSummary, ExtractError> {
    let _ = (dest, limits);
    Err(ExtractError::UnknownFormat {
        path: archive.to_path_buf(),
    })
}
