//! Safe extraction of zip, tar and tar.gz archives into a deployment directory.
//!
//! [`detect_format`] sniffs the archive's magic bytes (never the file name) and [`extract`]
//! unpacks into an empty directory, validating every entry itself rather than trusting the
//! archive libraries' own unpack routines. The guarantee is that nothing is ever created,
//! modified or removed outside `dest`:
//!
//! - entry names are relative, contain no NUL and no `..` component at all (honest archivers
//!   never write one; `a/../b` is refused rather than normalised), `.` components are dropped;
//! - before anything is written, every directory between `dest` and the entry is checked with
//!   `lstat` to be a real directory, never a symlink, so an archive cannot plant `a -> /etc` and
//!   then write `a/passwd`; files are created with `O_CREAT | O_EXCL | O_NOFOLLOW`, and an
//!   existing file or symlink at the entry's path is unlinked first (a later duplicate replaces
//!   an earlier entry, as tar does, without ever following a link);
//! - a symlink is a leaf: its target may be absolute or leave the bundle (`logs -> /var/log`
//!   is common, and a directory bundle may hold one too), but no entry is ever written through
//!   it (the `lstat` walk above), no hard link goes through it, and Install copies it as a
//!   link; [`link_leaves_bundle`] tells `validate` which links point out;
//! - hard links must point at a regular file this extraction already wrote;
//! - devices, FIFOs, sockets, sparse files and unknown entry types are refused;
//! - the count of entries and the bytes actually written (not the sizes headers claim) are
//!   capped, so a lying zip bomb stops as soon as it crosses the cap;
//! - before a byte is written, a zip is refused from its central directory when its declared
//!   sizes exceed the cap, when an entry over 4 MiB declares more than 1000:1 compression, or
//!   when the declared total does not fit the destination's free space with a margin; a tar
//!   entry is refused when its declared size does not fit; and while writing (a tar.gz
//!   declares no total, and headers may lie) free space is checked every MiB, stopping while
//!   the margin (a twentieth of the filesystem, 4 to 256 MiB; an eighth of one under 32 MiB) is still free.
//!
//! Permission bits are kept, minus group and other write (another user could otherwise change
//! a script the agent runs as root) and minus setuid, setgid and sticky unless allowed; entries
//! without mode information get 0644 (files) or 0755 (directories). Ownership from the archive is
//! ignored unless asked for (tar only). File and directory mtimes are kept (one the system cannot
//! represent is dropped); symlinks, and entries whose mtime was dropped, get the time of
//! extraction. Zip's MS-DOS timestamps carry no time zone and are read as UTC unless
//! the entry has an extended (Unix) timestamp.
//!
//! On error the function stops and returns; whatever it wrote lies inside `dest`, which the
//! caller deletes. It assumes `dest` is private to the agent while extraction runs (a directory
//! under the agent's state directory): it guards against the archive, not against another local
//! process racing it inside `dest`. It is deliberately not a general unarchiver: no
//! compression other than deflate and gzip, no encryption, no extended attributes or ACLs.
//!
//! Layout: this file holds the limits, the errors and the one `Extractor` that checks and
//! writes every entry; `sniff` tells the format from the first bytes, `read_tar` and
//! `read_zip` feed each format's entries to the extractor (`read_zip` after refusing what the
//! central directory declares too big), `names` checks entry names and link targets, and
//! `space` measures free space and the margin kept.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::libc;

use crate::config::BundlesConfig;

mod names;
mod read_tar;
mod read_zip;
mod sniff;
mod space;

pub use names::link_leaves_bundle;
use names::{check_symlink_target, entry_path, unsafe_entry};
use read_tar::extract_tar;
use read_zip::extract_zip;
pub use sniff::detect_format;
use space::{fits, free_space};
#[cfg(test)]
use space::{margin, Space};

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

impl ExtractLimits {
    /// The limits the config's `bundles` section sets.
    pub fn from_config(bundles: &BundlesConfig) -> ExtractLimits {
        ExtractLimits {
            max_total_bytes: bundles.max_unpacked_bytes,
            max_entries: bundles.max_entries,
            allow_setuid: bundles.allow_setuid,
            preserve_owner: bundles.preserve_owner,
        }
    }
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
    /// Entries read from the archive, including directories, links and skipped metadata.
    pub entries: u64,
    /// Bytes of file contents written.
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
    #[error("{path}: gzip-compressed but not a tar archive")]
    GzipNotTar { path: PathBuf },
    #[error("refusing archive entry {entry:?}: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    #[error("archive exceeds the limit of {limit}: {what}")]
    LimitExceeded { what: String, limit: u64 },
    #[error("refusing archive entry {entry:?}: it declares {size} bytes from {compressed} compressed (more than {MAX_COMPRESSION_RATIO}:1), the mark of a zip bomb")]
    ImplausibleRatio {
        entry: String,
        size: u64,
        compressed: u64,
    },
    #[error("not enough space to unpack into {path}: {needed} bytes needed (with a margin of {margin}), {available} available")]
    NoSpace {
        path: PathBuf,
        needed: u64,
        margin: u64,
        available: u64,
    },
    #[error("corrupt archive {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("extraction directory {path} is not empty")]
    DestNotEmpty { path: PathBuf },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Group and other write bits, masked from every mode an archive carries.
pub const WRITE_BY_OTHERS: u32 = 0o022;
/// A zip entry larger than this whose declared sizes claim more than
/// [`MAX_COMPRESSION_RATIO`] is refused before anything is written. Deflate cannot do better
/// than about 1032:1, reached only by long runs of one byte: no real application file of
/// this size compresses like that, a zip bomb does.
pub const RATIO_CHECK_MIN_BYTES: u64 = 4 * 1024 * 1024;
/// See [`RATIO_CHECK_MIN_BYTES`].
pub const MAX_COMPRESSION_RATIO: u64 = 1000;
/// Free space is checked again after this many bytes written.
const SPACE_CHECK_EVERY: u64 = 1024 * 1024;

/// Bytes read to sniff a format: one tar header block.
const BLOCK: usize = 512;
/// Longest symlink target accepted (Linux's PATH_MAX).
const MAX_LINK_TARGET: u64 = 4096;

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFIFO: u32 = 0o010_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFSOCK: u32 = 0o140_000;

/// Extracts `archive` into `dest` (created if missing, must be empty).
///
/// On error, entries already written stay in `dest` (and only there): the caller removes it.
pub fn extract(
    archive: &Path,
    dest: &Path,
    limits: &ExtractLimits,
) -> Result<ExtractSummary, ExtractError> {
    let format = detect_format(archive)?;
    prepare_dest(dest)?;
    let mut out = Extractor {
        archive: archive.to_path_buf(),
        dest: dest.to_path_buf(),
        limits,
        summary: ExtractSummary::default(),
        files: HashSet::new(),
        dirs: BTreeMap::new(),
        next_space_check: 0,
    };
    let file = File::open(archive).map_err(|source| ExtractError::Io {
        path: archive.to_path_buf(),
        source,
    })?;
    match format {
        ArchiveFormat::Zip => extract_zip(&mut out, file)?,
        ArchiveFormat::Tar => extract_tar(&mut out, BufReader::new(file))?,
        ArchiveFormat::TarGz => {
            let gz = flate2::read::MultiGzDecoder::new(BufReader::new(file));
            extract_tar(&mut out, gz)?
        }
    }
    out.finish_dirs()?;
    Ok(out.summary)
}

fn prepare_dest(dest: &Path) -> Result<(), ExtractError> {
    let write_err = |source| ExtractError::Write {
        path: dest.to_path_buf(),
        source,
    };
    // Private to the agent while extraction runs (the module's assumption); the caller
    // decides who may reach it afterwards.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dest)
        .map_err(write_err)?;
    let mut listing = fs::read_dir(dest).map_err(write_err)?;
    if listing.next().is_some() {
        return Err(ExtractError::DestNotEmpty {
            path: dest.to_path_buf(),
        });
    }
    Ok(())
}

/// What an entry is, independent of the archive format.
enum Kind {
    File,
    Dir,
    Symlink(Vec<u8>),
    HardLink(Vec<u8>),
}

/// Metadata an entry may carry.
#[derive(Clone, Copy)]
struct Meta {
    /// Permission bits (including setuid/setgid/sticky, stripped later unless allowed).
    mode: u32,
    mtime: Option<SystemTime>,
    owner: Option<(u32, u32)>,
}

/// The state of one extraction: where it writes, what it wrote, the running totals.
struct Extractor<'a> {
    archive: PathBuf,
    dest: PathBuf,
    limits: &'a ExtractLimits,
    summary: ExtractSummary,
    /// Regular files written so far (relative paths): the only legal hard-link targets.
    files: HashSet<PathBuf>,
    /// Directories to give their final mode and mtime once everything is written, so that a
    /// read-only directory does not stop its own contents from being extracted.
    dirs: BTreeMap<PathBuf, Meta>,
    /// `summary.bytes` at which free space is checked next.
    next_space_check: u64,
}

impl Extractor<'_> {
    fn count_entry(&mut self) -> Result<(), ExtractError> {
        self.summary.entries += 1;
        if self.summary.entries > self.limits.max_entries {
            return Err(ExtractError::LimitExceeded {
                what: "number of entries".to_string(),
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// Refuses when `needed` more bytes would not leave the margin free on `dest`'s
    /// filesystem.
    fn check_space(&self, needed: u64) -> Result<(), ExtractError> {
        let space = free_space(&self.dest)?;
        fits(&self.dest, needed, space)
    }

    fn corrupt(&self, entry: &str, err: impl std::fmt::Display) -> ExtractError {
        ExtractError::Corrupt {
            path: self.archive.clone(),
            reason: format!("entry {entry:?}: {err}"),
        }
    }

    fn write_err(path: &Path) -> impl FnOnce(io::Error) -> ExtractError + '_ {
        move |source| ExtractError::Write {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The archive's mode without group and other write (so no other user can change a
    /// script the agent later runs as root) and, unless allowed, without setuid, setgid and
    /// sticky.
    fn final_mode(&self, mode: u32) -> u32 {
        let mode = mode & !WRITE_BY_OTHERS;
        if self.limits.allow_setuid {
            mode & 0o7777
        } else {
            mode & 0o777
        }
    }

    /// Writes one entry. `data` is read only for files (and only up to the byte cap).
    fn entry(
        &mut self,
        name: &str,
        raw_name: &[u8],
        kind: Kind,
        meta: Meta,
        data: &mut dyn Read,
        expected_size: Option<u64>,
    ) -> Result<(), ExtractError> {
        let Some(rel) = entry_path(name, raw_name)? else {
            // The archive's root itself (`./`): nothing to create.
            return Ok(());
        };
        let target = self.prepare_parent(name, &rel)?;
        match kind {
            Kind::Dir => {
                let exists = self.clear_final(name, &rel, &target, true)?;
                if !exists {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&target)
                        .map_err(Self::write_err(&target))?;
                }
                self.dirs.insert(rel, meta);
            }
            Kind::File => {
                self.clear_final(name, &rel, &target, false)?;
                self.write_file(name, &target, meta, data, expected_size)?;
                self.files.insert(rel);
            }
            Kind::Symlink(link) => {
                check_symlink_target(name, &link)?;
                self.clear_final(name, &rel, &target, false)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target)
                    .map_err(Self::write_err(&target))?;
                if let (true, Some((uid, gid))) = (self.limits.preserve_owner, meta.owner) {
                    std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
                        .map_err(Self::write_err(&target))?;
                }
            }
            Kind::HardLink(link) => {
                let source = self.hard_link_source(name, &rel, &link)?;
                self.clear_final(name, &rel, &target, false)?;
                fs::hard_link(&source, &target).map_err(Self::write_err(&target))?;
                self.files.insert(rel);
            }
        }
        Ok(())
    }

    /// Makes sure every directory between `dest` and the entry is a real directory (creating
    /// missing ones) and returns the entry's absolute path.
    fn prepare_parent(&mut self, name: &str, rel: &Path) -> Result<PathBuf, ExtractError> {
        let mut current = self.dest.clone();
        let mut current_rel = PathBuf::new();
        let parents: Vec<_> = rel
            .parent()
            .map(|p| p.components().collect())
            .unwrap_or_default();
        for component in parents {
            current.push(component);
            current_rel.push(component);
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(unsafe_entry(
                        name,
                        format!("{} is a symlink", current_rel.display()),
                    ));
                }
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(unsafe_entry(
                        name,
                        format!("{} is not a directory", current_rel.display()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&current)
                        .map_err(Self::write_err(&current))?;
                    self.dirs.entry(current_rel.clone()).or_insert(Meta {
                        mode: 0o755,
                        mtime: None,
                        owner: None,
                    });
                }
                Err(e) => return Err(Self::write_err(&current)(e)),
            }
        }
        Ok(self.dest.join(rel))
    }

    /// Removes whatever non-directory sits at the entry's path. Returns whether a directory
    /// is there (allowed only when the entry is a directory too).
    fn clear_final(
        &mut self,
        name: &str,
        rel: &Path,
        target: &Path,
        entry_is_dir: bool,
    ) -> Result<bool, ExtractError> {
        match fs::symlink_metadata(target) {
            Ok(meta) if meta.is_dir() => {
                if entry_is_dir {
                    Ok(true)
                } else {
                    Err(unsafe_entry(name, "would replace a directory".to_string()))
                }
            }
            Ok(_) => {
                // unlink(2) removes a symlink itself, never what it points to.
                fs::remove_file(target).map_err(Self::write_err(target))?;
                self.files.remove(rel);
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Self::write_err(target)(e)),
        }
    }

    fn write_file(
        &mut self,
        name: &str,
        target: &Path,
        meta: Meta,
        data: &mut dyn Read,
        expected_size: Option<u64>,
    ) -> Result<(), ExtractError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(target)
            .map_err(Self::write_err(target))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut written: u64 = 0;
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.corrupt(name, e)),
            };
            written += n as u64;
            self.summary.bytes += n as u64;
            if self.summary.bytes > self.limits.max_total_bytes {
                return Err(ExtractError::LimitExceeded {
                    what: format!("total unpacked bytes (reached at entry {name:?})"),
                    limit: self.limits.max_total_bytes,
                });
            }
            // A tar.gz declares no total, and any header may lie: watch the disk itself and
            // stop while the margin is still free.
            if self.summary.bytes >= self.next_space_check {
                self.next_space_check = self.summary.bytes + SPACE_CHECK_EVERY;
                self.check_space(n as u64)?;
            }
            file.write_all(&buf[..n]).map_err(Self::write_err(target))?;
        }
        if let Some(expected) = expected_size {
            if written != expected {
                return Err(self.corrupt(
                    name,
                    format!("header says {expected} bytes, archive holds {written}"),
                ));
            }
        }
        if let (true, Some((uid, gid))) = (self.limits.preserve_owner, meta.owner) {
            // Before chmod: chown(2) clears setuid/setgid.
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                .map_err(Self::write_err(target))?;
        }
        file.set_permissions(Permissions::from_mode(self.final_mode(meta.mode)))
            .map_err(Self::write_err(target))?;
        if let Some(mtime) = meta.mtime {
            file.set_modified(mtime).map_err(Self::write_err(target))?;
        }
        Ok(())
    }

    /// Resolves a hard link's target (a path from the archive root) to a file written earlier.
    fn hard_link_source(
        &self,
        name: &str,
        rel: &Path,
        link: &[u8],
    ) -> Result<PathBuf, ExtractError> {
        let link_name = String::from_utf8_lossy(link);
        let source_rel = entry_path(name, link)
            .map_err(|_| unsafe_entry(name, format!("hard link target {link_name:?} is unsafe")))?
            .ok_or_else(|| unsafe_entry(name, "hard link to the archive root".to_string()))?;
        if source_rel == rel {
            return Err(unsafe_entry(name, "hard link to itself".to_string()));
        }
        if !self.files.contains(&source_rel) {
            return Err(unsafe_entry(
                name,
                format!("hard link target {link_name:?} is not a regular file extracted earlier"),
            ));
        }
        // Re-check on disk: no symlink on the way, a regular file at the end.
        let mut current = self.dest.clone();
        for component in source_rel.components() {
            current.push(component);
            let is_link = fs::symlink_metadata(&current)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(true);
            if is_link {
                return Err(unsafe_entry(
                    name,
                    format!("hard link target {link_name:?} goes through a symlink"),
                ));
            }
        }
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_file() => Ok(current),
            _ => Err(unsafe_entry(
                name,
                format!("hard link target {link_name:?} is not a regular file"),
            )),
        }
    }

    /// Gives directories their final mode and mtime, deepest first (a parent's mtime would
    /// change if a child were touched after it).
    fn finish_dirs(&mut self) -> Result<(), ExtractError> {
        let dirs = std::mem::take(&mut self.dirs);
        for (rel, meta) in dirs.iter().rev() {
            let path = self.dest.join(rel);
            let dir = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
                .open(&path)
                .map_err(Self::write_err(&path))?;
            if let (true, Some((uid, gid))) = (self.limits.preserve_owner, meta.owner) {
                std::os::unix::fs::fchown(&dir, Some(uid), Some(gid))
                    .map_err(Self::write_err(&path))?;
            }
            dir.set_permissions(Permissions::from_mode(self.final_mode(meta.mode)))
                .map_err(Self::write_err(&path))?;
            if let Some(mtime) = meta.mtime {
                dir.set_modified(mtime).map_err(Self::write_err(&path))?;
            }
        }
        Ok(())
    }
}

/// Seconds since the epoch as a time, or `None` when the system cannot represent it (a tar
/// header's base-256 field can hold any 64-bit value; `SystemTime + Duration` would panic).
fn unix_time(secs: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests;
