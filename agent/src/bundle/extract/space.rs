//! Free space of the destination's filesystem and the margin kept free while unpacking.

use super::*;

/// Space on a filesystem, from statvfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Space {
    /// Bytes an unprivileged writer may still use.
    pub(super) available: u64,
    /// Size of the filesystem.
    pub(super) total: u64,
}

// The statvfs fields are 64-bit here but 32-bit on some targets.
#[allow(clippy::useless_conversion)]
pub(super) fn free_space(path: &Path) -> Result<Space, ExtractError> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(|e| ExtractError::Write {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let block = u64::from(stat.fragment_size());
    Ok(Space {
        available: u64::from(stat.blocks_available()).saturating_mul(block),
        total: u64::from(stat.blocks()).saturating_mul(block),
    })
}

/// The space kept free while unpacking: a twentieth of the filesystem, at least 4 MiB (an
/// eighth of a filesystem smaller than 32 MiB, which could never keep 4 MiB free) and at
/// most 256 MiB, so the agent can still write its state, logs and reports afterwards.
pub(super) fn margin(space: Space) -> u64 {
    const MIB: u64 = 1024 * 1024;
    (space.total / 20)
        .max((space.total / 8).min(4 * MIB))
        .min(256 * MIB)
}

/// Whether `needed` more bytes fit in `space` with the margin left free. A filesystem that
/// reports no size at all (some network and virtual ones) gives nothing to check against.
pub(super) fn fits(path: &Path, needed: u64, space: Space) -> Result<(), ExtractError> {
    if space.total == 0 {
        return Ok(());
    }
    let margin = margin(space);
    if needed.saturating_add(margin) > space.available {
        return Err(ExtractError::NoSpace {
            path: path.to_path_buf(),
            needed,
            margin,
            available: space.available,
        });
    }
    Ok(())
}
