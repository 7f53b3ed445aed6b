//! Durability of exactly what Install changed: the regular files it created and the
//! directories whose entries it added, replaced or removed.
//!
//! Two ways to get the new files' data on disk, chosen per deployment ([`SyncMode`]):
//! - **each file**: writeback of every new file is started in one pass once the copy is done
//!   (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so the disk sees all of them at once, then
//!   one `fdatasync` per file from a small pool of threads, so the waits overlap (a
//!   journalling filesystem commits concurrent syncs together). Its cost follows the number of
//!   files: each sync is a journal commit. Starting writeback while the copy goes on was
//!   measured slower: thousands of small writes submitted one by one halve the copy's speed.
//! - **the filesystem**: one `syncfs` per filesystem written to. The kernel writes every dirty
//!   page of that filesystem back in bulk, merged across files, with one journal commit: for
//!   20 000 small files several times faster than 20 000 syncs, but it also flushes every other
//!   process's unwritten data there, so on a busy host it costs as much as their backlog.
//!
//! `auto` (the default) estimates both from what the deployment wrote and what the kernel
//! reports unwritten (`Dirty` + `Writeback` of `/proc/meminfo`) and takes the cheaper
//! ([`choose`]): the filesystem only when the data nobody asked this deployment to write is
//! less than what its per-file syncs would cost, so a busy host still pays only for what the
//! deployment wrote. Then one `fsync` per touched directory ([`Written::sync`]). A file that
//! replaces another is not in the set: it is synced before its rename (`files`), so its path
//! never has partial contents.
//!
//! It does not decide what to write, and it does not sync the state directory (`state` does).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{io_err, InstallError};

/// Threads waiting for syncs at once: enough to keep a disk's queue busy, few enough not to
/// matter on a small host.
const SYNC_THREADS: usize = 8;

/// What one file's own sync costs, in bytes a bulk writeback writes in the same time: about
/// 85 µs a file from [`SYNC_THREADS`] threads against about 600 MB/s of merged writeback, on
/// the virtio disk the figures come from (README), rounded down to favour per-file syncs.
const FILE_SYNC_COST_BYTES: u64 = 32 * 1024;

/// How Install makes the new files' data durable (`deployments.install_sync`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Whichever of the two is cheaper for this deployment on this host now ([`choose`]).
    #[default]
    Auto,
    /// One `fdatasync` per new file.
    Files,
    /// One `syncfs` per filesystem written to.
    Filesystem,
}

/// What a deployment changed on the host and must make durable before Install succeeds.
#[derive(Debug, Default)]
pub struct Written {
    /// New regular files, not synced yet.
    files: Vec<PathBuf>,
    /// Bytes of contents in `files`.
    bytes: u64,
    /// One directory on each filesystem (by device) that holds a file of `files`.
    filesystems: BTreeMap<u64, PathBuf>,
    /// Directories that gained, replaced or lost an entry.
    dirs: BTreeSet<PathBuf>,
}

/// What [`Written::sync`] made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    pub files: usize,
    pub dirs: usize,
}

impl Written {
    /// A new regular file at `path` of `bytes` bytes on device `device`, to be synced, in
    /// directory `parent`.
    pub(super) fn new_file(&mut self, path: &Path, parent: &Path, bytes: u64, device: u64) {
        self.files.push(path.to_path_buf());
        self.bytes += bytes;
        self.filesystems
            .entry(device)
            .or_insert_with(|| parent.to_path_buf());
        self.entry_changed(parent);
    }

    /// `dir` gained, replaced or lost an entry.
    pub(super) fn entry_changed(&mut self, dir: &Path) {
        self.dirs.insert(dir.to_path_buf());
    }

    /// Adds what `other` changed.
    pub fn merge(&mut self, other: Written) {
        self.files.extend(other.files);
        self.bytes += other.bytes;
        for (device, dir) in other.filesystems {
            self.filesystems.entry(device).or_insert(dir);
        }
        self.dirs.extend(other.dirs);
    }

    /// The new files to sync, in the order they were written.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The directories to sync.
    pub fn dirs(&self) -> &BTreeSet<PathBuf> {
        &self.dirs
    }

    /// Waits until every new file's data is on disk, the way `mode` says ([`choose`] for
    /// `auto`), and takes them out of the set; how many, and how. Done before `permissions`
    /// apply, while the agent can still open every file it wrote (a rule may take its own
    /// read access away).
    pub fn sync_files(&mut self, mode: SyncMode) -> Result<(usize, SyncedBy), InstallError> {
        let files = std::mem::take(&mut self.files);
        let synced_by = match mode {
            SyncMode::Files => SyncedBy::EachFile,
            SyncMode::Filesystem => SyncedBy::Filesystem,
            // Nothing to sync (as when `sync` follows this): the kernel's backlog is not read.
            SyncMode::Auto if files.is_empty() => SyncedBy::EachFile,
            SyncMode::Auto => choose(files.len(), self.bytes, host_unwritten_bytes()),
        };
        if files.is_empty() {
            return Ok((0, synced_by));
        }
        match synced_by {
            SyncedBy::Filesystem => {
                for dir in self.filesystems.values() {
                    File::open(dir)
                        .map_err(io_err("opening directory", dir))
                        .and_then(|d| {
                            nix::unistd::syncfs(&d)
                                .map_err(|e| io_err("syncing the filesystem of", dir)(e.into()))
                        })?;
                }
            }
            SyncedBy::EachFile => {
                // All writeback submitted first, in one pass, then the waits.
                for path in &files {
                    if let Ok(file) = File::open(path) {
                        start_writeback(&file);
                    }
                }
                in_pool(&files, |path| {
                    File::open(path)
                        .and_then(|f| f.sync_data())
                        .map_err(io_err("syncing", path))
                })?;
            }
        }
        self.bytes = 0;
        self.filesystems.clear();
        Ok((files.len(), synced_by))
    }

    /// Waits until every new file still in the set and every changed directory is on disk:
    /// files first, then directories, each set from [`SYNC_THREADS`] threads. A directory
    /// that no longer exists (removed once empty) is skipped: its parent is in the set. On a
    /// journalling filesystem the directories' syncs also commit the inode changes made since
    /// (modes, owners).
    pub fn sync(mut self, mode: SyncMode) -> Result<Synced, InstallError> {
        let (files, _) = self.sync_files(mode)?;
        let dirs: Vec<PathBuf> = self.dirs.into_iter().collect();
        in_pool(&dirs, |dir| match File::open(dir) {
            Ok(d) => d.sync_all().map_err(io_err("syncing directory", dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("opening directory", dir)(e)),
        })?;
        Ok(Synced {
            files,
            dirs: dirs.len(),
        })
    }
}

/// How [`Written::sync_files`] made the new files durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncedBy {
    EachFile,
    Filesystem,
}

impl SyncedBy {
    /// How the hook log says it.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncedBy::EachFile => "each file synced",
            SyncedBy::Filesystem => "their filesystem synced",
        }
    }
}

/// The cheaper way to sync `files` new files of `bytes` bytes when the kernel holds
/// `unwritten` bytes not yet on disk (`None`: unknown). A `syncfs` also writes what else is
/// unwritten (the deployment's extracted bundle, other processes' data); per-file syncs cost
/// about [`FILE_SYNC_COST_BYTES`] each on top of the bytes. So the filesystem is synced only
/// when what it would write beyond the deployment's files is below what their own syncs
/// would cost.
pub fn choose(files: usize, bytes: u64, unwritten: Option<u64>) -> SyncedBy {
    let Some(unwritten) = unwritten else {
        return SyncedBy::EachFile;
    };
    let others = unwritten.saturating_sub(bytes);
    if others < (files as u64).saturating_mul(FILE_SYNC_COST_BYTES) {
        SyncedBy::Filesystem
    } else {
        SyncedBy::EachFile
    }
}

/// `Dirty` + `Writeback` of `/proc/meminfo` in bytes: what the kernel has not written yet.
fn host_unwritten_bytes() -> Option<u64> {
    unwritten_in(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn unwritten_in(meminfo: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find_map(|l| l.strip_prefix(name))?;
        let kib = line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
        kib.checked_mul(1024)
    };
    field("Dirty:")?.checked_add(field("Writeback:")?)
}

/// Runs `work` on every path from up to [`SYNC_THREADS`] threads; the first error, if any.
fn in_pool(
    paths: &[PathBuf],
    work: impl Fn(&Path) -> Result<(), InstallError> + Sync,
) -> Result<(), InstallError> {
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<InstallError>> = Mutex::new(None);
    let threads = paths.len().min(SYNC_THREADS);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                if let Err(e) = work(path) {
                    // A poisoned lock only means another thread panicked; its error is lost
                    // either way, keep this one.
                    let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
                    slot.get_or_insert(e);
                    next.store(paths.len(), Ordering::Relaxed);
                    break;
                }
            });
        }
    });
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Starts writing `file`'s dirty pages to disk without waiting, so the final sync finds
/// them written or on their way. A hint: a filesystem that does not support it is fine.
#[allow(unsafe_code)]
fn start_writeback(file: &File) {
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor is open for
    // the duration of the call (borrowed from `file`).
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if rc != 0 {
        tracing::debug!(
            "starting writeback: {} (ignored)",
            io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn the_filesystem_is_synced_only_when_what_else_it_holds_costs_less_than_per_file_syncs() {
        use SyncedBy::*;
        let check = |files, bytes, unwritten, want| {
            assert_eq!(
                choose(files, bytes, unwritten),
                want,
                "{files} files, {bytes} bytes, {unwritten:?} unwritten"
            );
        };
        // 20 000 small files, their extracted bundle beside them: the bulk writeback.
        check(20_000, 200 * MIB, Some(400 * MIB), Filesystem);
        // The same with 2 GiB of another process's data: each file.
        check(20_000, 200 * MIB, Some(2448 * MIB), EachFile);
        // Three files on a host with a few MiB unwritten: each file.
        check(3, 30_000, Some(4 * MIB), EachFile);
        // Three files on a host with nothing else unwritten: one syncfs is as cheap.
        check(3, 30_000, Some(60_000), Filesystem);
        // Few large files: their extraction alone outweighs the per-file cost.
        check(100, 1024 * MIB, Some(2048 * MIB), EachFile);
        // Nothing known about the kernel's backlog: each file.
        check(20_000, 200 * MIB, None, EachFile);
        check(0, 0, Some(0), EachFile);
    }

    #[test]
    fn unwritten_bytes_are_dirty_and_writeback_from_meminfo() {
        let meminfo = "MemTotal:       24576000 kB\nDirty:              1536 kB\nWriteback:           512 kB\nWritebackTmp:          0 kB\n";
        assert_eq!(unwritten_in(meminfo), Some(2048 * 1024));
        assert_eq!(unwritten_in("Dirty: 12 kB\n"), None);
        assert_eq!(unwritten_in("Dirty: many kB\nWriteback: 0 kB\n"), None);
    }
}
