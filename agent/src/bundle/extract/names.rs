//! Entry names and link targets: what a name may be and where a link may point.

use super::*;

pub(super) fn unsafe_entry(entry: &str, reason: String) -> ExtractError {
    ExtractError::UnsafeEntry {
        entry: entry.to_string(),
        reason,
    }
}

/// Turns an entry name into a path relative to `dest`, or `None` for the root itself.
pub(super) fn entry_path(name: &str, raw: &[u8]) -> Result<Option<PathBuf>, ExtractError> {
    if raw.is_empty() {
        return Err(unsafe_entry(name, "empty name".to_string()));
    }
    if raw.contains(&0) {
        return Err(unsafe_entry(name, "NUL byte in name".to_string()));
    }
    if raw.starts_with(b"/") {
        return Err(unsafe_entry(name, "absolute path".to_string()));
    }
    let mut rel = PathBuf::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(unsafe_entry(name, "path contains `..`".to_string())),
            _ => rel.push(OsStr::from_bytes(part)),
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// A symlink's target must be non-empty and hold no NUL. Where it points is not restricted:
/// a link is a leaf, never followed by extraction (every directory on an entry's way is
/// checked to be a real one) nor by Install, which copies it as a link.
pub(super) fn check_symlink_target(name: &str, target: &[u8]) -> Result<(), ExtractError> {
    if target.is_empty() {
        return Err(unsafe_entry(name, "empty symlink target".to_string()));
    }
    if target.contains(&0) {
        return Err(unsafe_entry(name, "NUL byte in symlink target".to_string()));
    }
    Ok(())
}

/// Whether a symlink at `rel` (relative to the bundle root) with `target` may resolve outside
/// the bundle: an absolute target, more leading `..` than the link's directory depth, or a `..`
/// after a name (the kernel resolves it physically, so `d/up/..` leaves when `d/up` is a link).
/// Such links are kept as links; `validate` names them.
pub fn link_leaves_bundle(rel: &Path, target: &[u8]) -> bool {
    if target.starts_with(b"/") {
        return true;
    }
    let depth = rel.components().count().saturating_sub(1);
    let mut ups = 0;
    let mut descended = false;
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if descended => return true,
            b".." => {
                ups += 1;
                if ups > depth {
                    return true;
                }
            }
            _ => descended = true,
        }
    }
    false
}
