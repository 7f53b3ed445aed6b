//! Durability of exactly what Install changed: the regular files it created and the
//! directories whose entries it added, replaced or removed, and nothing else on the host.
//!
//! Writeback of each new file is started as soon as its contents are written
//! ([`start_writeback`], `sync_file_range(SYNC_FILE_RANGE_WRITE)`), so the disk works while
//! the next files are copied; at the end one `fdatasync` per new file ([`Written::sync_files`],
//! before `permissions` apply), then one `fsync` per touched directory ([`Written::sync`]), each
//! from a small pool of threads so the waits overlap (a journalling filesystem commits concurrent syncs together). A whole-filesystem
//! `syncfs` would also flush every other process's dirty data, so a busy host would make a
//! deployment as slow as its write backlog. A file that replaces another is not in the set: it
//! is synced before its rename (`files`), so its path never has partial contents.
//!
//! It does not decide what to write, and it does not sync the state directory (`state` does).

use std::collections::BTreeSet;
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

/// What a deployment changed on the host and must make durable before Install succeeds.
#[derive(Debug, Default)]
pub struct Written {
    /// New regular files, not synced yet.
    files: Vec<PathBuf>,
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
    /// A new regular file at `path`, to be synced, in directory `parent`.
    pub(super) fn new_file(&mut self, path: &Path, parent: &Path) {
        self.files.push(path.to_path_buf());
        self.entry_changed(parent);
    }

    /// `dir` gained, replaced or lost an entry.
    pub(super) fn entry_changed(&mut self, dir: &Path) {
        self.dirs.insert(dir.to_path_buf());
    }

    /// Adds what `other` changed.
    pub fn merge(&mut self, other: Written) {
        self.files.extend(other.files);
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

    /// Waits until every new file's data is on disk, from [`SYNC_THREADS`] threads, and
    /// takes them out of the set; how many. Done before `permissions` apply, while the agent
    /// can still open every file it wrote (a rule may take its own read access away).
    pub fn sync_files(&mut self) -> Result<usize, InstallError> {
        let files = std::mem::take(&mut self.files);
        in_pool(&files, |path| {
            File::open(path)
                .and_then(|f| f.sync_data())
                .map_err(io_err("syncing", path))
        })?;
        Ok(files.len())
    }

    /// Waits until every new file still in the set and every changed directory is on disk:
    /// files first, then directories, each set from [`SYNC_THREADS`] threads. A directory
    /// that no longer exists (removed once empty) is skipped: its parent is in the set. On a
    /// journalling filesystem the directories' syncs also commit the inode changes made since
    /// (modes, owners).
    pub fn sync(mut self) -> Result<Synced, InstallError> {
        let files = self.sync_files()?;
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
pub(super) fn start_writeback(file: &File) {
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
