//! The state directory: where every piece of agent state lives, how it is written, and the
//! host lock.
//!
//! Layout (all below `state_dir`, default `/var/lib/hoist`):
//! ```text
//! agent.lock                      flock held by the one agent or local deploy; holds its pid
//! in-flight.json                  the deployment and event running now (absent when idle)
//! groups/<group>/
//!   last-successful-install.json  the revision whose hooks ApplicationStop & co. run next time
//!   installed-files.json          what the group's last Install put on disk (removed next time)
//!   deployments/<id>/
//!     bundle                      the fetched archive (when the revision was an archive)
//!     archive/                    the extracted or copied revision
//!     logs/hooks.log              timestamped output of every script
//!     result.json                 how the deployment ended
//! ```
//! Every file is written atomically (temp file in the same directory, fsync, rename, fsync of
//! the directory), so a crash leaves either the old or the new content, never a torn file.
//! This module decides paths and persistence; it does not decide what a deployment does.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Version of the on-disk JSON layout; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// The state directory of one host.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creating, mode 0755) the state directory. It is traversable by everyone so
    /// hooks that `runas` another user can read their revision's scripts; what is secret in
    /// it (host credentials, logs) is in files and directories of mode 0600/0700.
    pub fn open(root: &Path) -> anyhow::Result<StateDir> {
        create_dir(root, 0o755)?;
        Ok(StateDir {
            root: root.to_path_buf(),
        })
    }

    /// The state directory at `root`, without creating anything (for read-only use).
    pub fn at(root: &Path) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn lock_path(&self) -> PathBuf {
        self.root.join("agent.lock")
    }

    pub fn in_flight_path(&self) -> PathBuf {
        self.root.join("in-flight.json")
    }

    pub fn group_dir(&self, group: &str) -> PathBuf {
        self.root.join("groups").join(encode_name(group))
    }

    pub fn deployments_dir(&self, group: &str) -> PathBuf {
        self.group_dir(group).join("deployments")
    }

    pub fn deployment_dir(&self, group: &str, deployment_id: &str) -> PathBuf {
        self.deployments_dir(group).join(encode_name(deployment_id))
    }

    pub fn last_success_path(&self, group: &str) -> PathBuf {
        self.group_dir(group).join("last-successful-install.json")
    }

    pub fn installed_files_path(&self, group: &str) -> PathBuf {
        self.group_dir(group).join("installed-files.json")
    }

    /// Names of the groups that have state here.
    pub fn groups(&self) -> anyhow::Result<Vec<String>> {
        let dir = self.root.join("groups");
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            if let Some(name) = entry.file_name().to_str() {
                out.push(decode_name(name));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The host lock: at most one agent daemon or local deployment per state directory.
/// Released when dropped (or when the process dies: it is an flock).
#[derive(Debug)]
pub struct HostLock {
    _lock: Flock<File>,
}

impl HostLock {
    /// Takes the lock or says which process holds it. `role` (e.g. "hoist-agent run") is
    /// written beside the pid so the refusal can name the holder.
    pub fn acquire(state: &StateDir, role: &str) -> anyhow::Result<HostLock> {
        let path = state.lock_path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, errno)) => {
                if errno == nix::errno::Errno::EWOULDBLOCK {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = holder.trim();
                    let holder = if holder.is_empty() {
                        "another process".to_string()
                    } else {
                        holder.to_string()
                    };
                    anyhow::bail!(
                        "another hoist-agent holds the lock on {} ({holder}); only one agent or deployment may run per host",
                        state.root().display()
                    );
                }
                return Err(std::io::Error::from(errno))
                    .with_context(|| format!("locking {}", path.display()));
            }
        };
        lock.set_len(0)
            .with_context(|| format!("writing {}", path.display()))?;
        let line = format!("pid {} ({role})\n", std::process::id());
        lock.write_all(line.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(HostLock { _lock: lock })
    }

    /// The pid written in the lock file, when a live process holds the lock.
    pub fn holder(state: &StateDir) -> Option<u32> {
        let path = state.lock_path();
        let file = File::open(&path).ok()?;
        // Probing with a shared non-blocking lock: if it succeeds nobody holds the lock.
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_unlocked) => None,
            Err((_, _)) => {
                let text = fs::read_to_string(&path).ok()?;
                text.split_whitespace().nth(1)?.parse().ok()
            }
        }
    }
}

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
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming a temp file to {}", path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(())
}

/// Serializes `value` as pretty JSON and writes it atomically (mode 0600).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .with_context(|| format!("serializing {}", path.display()))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes, 0o600)
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

/// The deployment and event running now, written before each event and each script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub schema_version: u32,
    pub deployment_id: String,
    /// Set for deployments handed out by a coordinator.
    #[serde(default)]
    pub command_id: Option<String>,
    pub application: String,
    pub group: String,
    /// Pid of the agent process running the deployment.
    pub agent_pid: u32,
    pub started_at_ms: u64,
    pub event: String,
    pub event_started_at_ms: u64,
    /// The script running now, if any.
    #[serde(default)]
    pub script: Option<String>,
    /// Process group of the running script, so a restarted agent can kill an orphan.
    #[serde(default)]
    pub pgid: Option<i32>,
}

/// The revision last installed successfully for a group: its hooks run for ApplicationStop,
/// BeforeBlockTraffic and AfterBlockTraffic of the next deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSuccess {
    pub schema_version: u32,
    pub deployment_id: String,
    pub application: String,
    /// The revision's root directory (inside its deployment directory).
    pub bundle_root: PathBuf,
    /// The appspec file that was used.
    pub appspec: PathBuf,
    pub revision: String,
    pub installed_at_ms: u64,
}

/// How a deployment ended, as kept on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub schema_version: u32,
    pub deployment_id: String,
    #[serde(default)]
    pub command_id: Option<String>,
    pub application: String,
    pub group: String,
    pub revision: String,
    pub started_at_ms: u64,
    #[serde(default)]
    pub ended_at_ms: Option<u64>,
    pub status: RecordStatus,
    pub events: Vec<EventRecord>,
    #[serde(default)]
    pub failed_event: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    pub log_path: PathBuf,
    #[serde(default)]
    pub log_tail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    InProgress,
    Succeeded,
    Failed,
    Stopped,
}

impl RecordStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordStatus::InProgress => "in progress",
            RecordStatus::Succeeded => "succeeded",
            RecordStatus::Failed => "failed",
            RecordStatus::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub event: String,
    pub status: hoist_protocol::agent::EventStatus,
    pub duration_ms: u64,
    #[serde(default)]
    pub error_code: Option<hoist_protocol::agent::ErrorCode>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub script: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
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
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(dir.path()).expect("open");
        let _first = HostLock::acquire(&state, "test holder").expect("first lock");
        let err = HostLock::acquire(&state, "second").expect_err("second must fail");
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("test holder"), "{msg}");
        assert_eq!(HostLock::holder(&state), Some(std::process::id()));
    }
}
