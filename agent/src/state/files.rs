//! How state files are written and read: atomic writes (temp file, fsync, rename, fsync of
//! the directory), unsynced atomic writes for what a crash of the host may lose (temp file,
//! rename: never torn for a reader while the host runs), space reserved ahead of a write,
//! JSON, directory modes, and the encoding of names into one path component. It knows nothing
//! of which file is which.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Creates a directory (and parents) with mode 0700 for the last component.
pub fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    create_dir(path, 0o700)
}

/// Creates a directory (and parents, mode 0755 subject to the umask); `mode` applies to the
/// last component whether or not it existed.
pub fn create_dir(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(path).with_context(|| format!("creating directory {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Writes `bytes` to `path` atomically: temp file beside it, fsync, rename, fsync of the
/// directory. `mode` applies to the new file.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    write_replacing(path, bytes, mode, true)
}

/// Temp file beside `path`, rename; with `sync`, the temp file's data and then the directory
/// are synced so the new contents survive a crash of the host.
fn write_replacing(path: &Path, bytes: &[u8], mode: u32, sync: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of a temp file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| {
            if sync {
                tmp.as_file().sync_all()
            } else {
                Ok(())
            }
        })
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming a temp file to {}", path.display()))?;
    if sync {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", dir.display()))?;
    }
    Ok(())
}

/// Space for a file, taken before what goes into it exists: a temp file of `size` bytes
/// beside `path`, written and synced. Committing overwrites those bytes in place, so a
/// filesystem that filled up meanwhile still takes content of up to `size` bytes.
pub struct Reserved {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
}

/// Reserves `size` bytes for `path` (mode `mode`), or says why that directory cannot take it.
pub fn reserve(path: &Path, size: usize, mode: u32) -> anyhow::Result<Reserved> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of a temp file in {}", dir.display()))?;
    tmp.write_all(&vec![b' '; size])
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("reserving {size} bytes for {}", path.display()))?;
    Ok(Reserved {
        tmp,
        path: path.to_path_buf(),
    })
}

impl Reserved {
    /// Writes `value` as pretty JSON into the reserved space and renames it into place.
    pub fn commit_json<T: Serialize>(mut self, value: &T) -> anyhow::Result<()> {
        use std::io::{Seek, SeekFrom};
        let path = self.path.clone();
        let mut bytes = serde_json::to_vec_pretty(value)
            .with_context(|| format!("serializing {}", path.display()))?;
        bytes.push(b'\n');
        self.tmp
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.tmp.write_all(&bytes))
            .and_then(|()| self.tmp.as_file().set_len(bytes.len() as u64))
            .and_then(|()| self.tmp.as_file().sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        self.tmp
            .persist(&path)
            .map_err(|e| e.error)
            .with_context(|| format!("renaming a temp file to {}", path.display()))?;
        if let Some(dir) = path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing directory {}", dir.display()))?;
        }
        Ok(())
    }
}

/// Whether `error` comes from a full filesystem (ENOSPC) or a used-up quota (EDQUOT).
pub fn is_no_space(error: &anyhow::Error) -> bool {
    use std::io::ErrorKind;
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| {
            // tempfile wraps the OS error with the path: the kind survives, the code not.
            matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
                || e.raw_os_error().is_some_and(|code| {
                    code == nix::errno::Errno::ENOSPC as i32
                        || code == nix::errno::Errno::EDQUOT as i32
                })
        })
    })
}

/// What to tell the coordinator when the state directory refused a write: "no space left in
/// the state directory <path>: ..." for a full disk.
pub fn write_failure(root: &Path, error: &anyhow::Error) -> String {
    if is_no_space(error) {
        format!(
            "no space left in the state directory {}: {error:#}",
            root.display()
        )
    } else {
        format!(
            "the state directory {} cannot be written: {error:#}",
            root.display()
        )
    }
}

/// Serializes `value` as pretty JSON and writes it atomically (mode 0600).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .with_context(|| format!("serializing {}", path.display()))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes, 0o600)
}

/// Serializes `value` as pretty JSON and writes it atomically for readers (mode 0600), but
/// without syncing: for what only matters while the host keeps running, or can be rebuilt
/// from a durable file. After a crash of the host the file may hold its old contents, none,
/// or be torn, so its readers must cope.
pub fn write_json_unsynced<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .with_context(|| format!("serializing {}", path.display()))?;
    bytes.push(b'\n');
    write_replacing(path, &bytes, 0o600, false)
}

/// Reads a JSON state file; `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .with_context(|| format!("parsing {}", path.display()))
}

/// Removes a state file; missing is fine.
pub fn remove_file(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Makes a group or deployment name safe as one path component: `[A-Za-z0-9._-]` stay, any
/// other byte becomes `%XX` (a leading `.` too, so `..` cannot name a parent).
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// The inverse of [`encode_name`].
pub fn decode_name(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = encoded.get(i + 1..i + 3).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                if b != 0 {
                    out.push(b);
                }
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_never_escape() {
        for name in ["web", "prod/web", "..", ".hidden", "a b", "ünï", "x%y", ""] {
            let enc = encode_name(name);
            assert!(!enc.contains('/'), "{enc}");
            assert!(!enc.starts_with('.'), "{enc}");
            if !name.is_empty() {
                assert_eq!(decode_name(&enc), name, "{enc}");
            }
        }
    }

    #[test]
    fn atomic_json_write_then_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/x.json");
        write_json(&path, &vec![1, 2, 3]).expect("write");
        let back: Option<Vec<i32>> = read_json(&path).expect("read");
        assert_eq!(back, Some(vec![1, 2, 3]));
        let missing: Option<Vec<i32>> = read_json(&dir.path().join("nope")).expect("read");
        assert_eq!(missing, None);
        let leftovers: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn reserved_space_takes_the_json_and_leaves_nothing_else() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("host.json");
        let reserved = reserve(&path, 4096, 0o600).expect("reserve");
        assert!(!path.exists(), "nothing in place before the commit");
        reserved.commit_json(&vec!["a", "b"]).expect("commit");
        let back: Option<Vec<String>> = read_json(&path).expect("read");
        assert_eq!(back, Some(vec!["a".to_string(), "b".to_string()]));
        let meta = fs::metadata(&path).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(meta.len() < 4096, "the reserve was cut to the content");
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn a_full_disk_is_named_as_such() {
        use std::io::Write;
        let err = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .and_then(|mut f| f.write_all(b"x").and_then(|()| f.sync_all()))
            .expect_err("/dev/full is always full");
        let err = anyhow::Error::new(err).context("writing x");
        assert!(is_no_space(&err));
        assert_eq!(
            write_failure(Path::new("/s"), &err),
            "no space left in the state directory /s: writing x: No space left on device (os error 28)"
        );
        let other = anyhow::anyhow!("permission denied");
        assert!(write_failure(Path::new("/s"), &other)
            .starts_with("the state directory /s cannot be written"));
    }
}
