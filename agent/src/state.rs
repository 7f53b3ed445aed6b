//! The state directory: where every piece of agent state lives, how it is written, and the
//! host lock.
//!
//! Layout (all below `state_dir`, default `/var/lib/hoist`):
//! ```text
//! agent.lock                      flock held by the one agent or local deploy; holds its pid
//! in-flight.json                  the deployment and event running now (absent when idle)
//! deployment-groups/<group id>/
//!   group.json                    the group's id, name and application (for `status`)
//!   last-successful-install.json  the revision whose hooks ApplicationStop & co. run next time
//!   installed-files.json          what the group's last Install put on disk (removed next time)
//!   deployments/<id>/
//!     bundle                      the fetched archive (when the revision was an archive)
//!     archive/                    the extracted or copied revision
//!     logs/hooks.log              timestamped output of every script
//!     result.json                 how the deployment ended
//! ```
//! Per-group state is keyed by deployment group **id**, as CodeDeploy keys it: two
//! applications may each have a group `web` on one host. A coordinator's command carries the
//! id; a local deployment's id is [`local_group_id`] of its application and group.
//! Versions before this layout kept `groups/<group name>/`; [`StateDir::migrate`] moves those
//! on start (see there).
//!
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

    fn groups_root(&self) -> PathBuf {
        self.root.join("deployment-groups")
    }

    /// The state of one deployment group, by its id.
    pub fn group_dir(&self, group_id: &str) -> PathBuf {
        self.groups_root().join(encode_name(group_id))
    }

    pub fn deployments_dir(&self, group_id: &str) -> PathBuf {
        self.group_dir(group_id).join("deployments")
    }

    pub fn deployment_dir(&self, group_id: &str, deployment_id: &str) -> PathBuf {
        self.deployments_dir(group_id)
            .join(encode_name(deployment_id))
    }

    pub fn last_success_path(&self, group_id: &str) -> PathBuf {
        self.group_dir(group_id)
            .join("last-successful-install.json")
    }

    pub fn installed_files_path(&self, group_id: &str) -> PathBuf {
        self.group_dir(group_id).join("installed-files.json")
    }

    /// The directory of deployment `deployment_id`, in whichever group holds it.
    pub fn find_deployment_dir(&self, deployment_id: &str) -> Option<PathBuf> {
        let entries = fs::read_dir(self.groups_root()).ok()?;
        entries
            .flatten()
            .map(|e| {
                e.path()
                    .join("deployments")
                    .join(encode_name(deployment_id))
            })
            .find(|p| p.is_dir())
    }

    /// The groups that have state here, with their names, sorted by name and application.
    pub fn groups(&self) -> anyhow::Result<Vec<(PathBuf, GroupInfo)>> {
        let dir = self.groups_root();
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let info = match read_json::<GroupInfo>(&path.join(GROUP_INFO)) {
                Ok(Some(info)) => info,
                // A group whose deployment has not written group.json yet (or a damaged
                // one): still listed, under its directory's name.
                _ => GroupInfo {
                    schema_version: SCHEMA_VERSION,
                    group_id: entry.file_name().to_str().map(decode_name),
                    application: String::new(),
                    group: entry
                        .file_name()
                        .to_str()
                        .map(decode_name)
                        .unwrap_or_default(),
                },
            };
            out.push((path, info));
        }
        out.sort_by(|a, b| (&a.1.group, &a.1.application).cmp(&(&b.1.group, &b.1.application)));
        Ok(out)
    }

    /// Makes sure the state of group `group_id` is in place before a deployment to it:
    /// `group.json` names it, and a coordinator's group (`claim_legacy`) takes over the state
    /// [`StateDir::migrate`] set aside for its application and group name, if any.
    pub fn prepare_group(
        &self,
        group_id: &str,
        application: &str,
        group: &str,
        claim_legacy: bool,
    ) -> anyhow::Result<()> {
        let dir = self.group_dir(group_id);
        let info = GroupInfo {
            schema_version: SCHEMA_VERSION,
            group_id: Some(group_id.to_string()),
            application: application.to_string(),
            group: group.to_string(),
        };
        if !dir.exists() && claim_legacy {
            let unclaimed = self.group_dir(&unclaimed_group_id(application, group));
            if unclaimed.is_dir() {
                move_group(&unclaimed, &dir, &info)?;
                tracing::info!(
                    deployment_group = group,
                    application,
                    "state of group {group} kept from the previous layout now keyed by its id {group_id}"
                );
                return Ok(());
            }
        }
        create_dir(&dir, 0o755)?;
        if read_json::<GroupInfo>(&dir.join(GROUP_INFO))
            .ok()
            .flatten()
            .as_ref()
            != Some(&info)
        {
            write_json(&dir.join(GROUP_INFO), &info)?;
        }
        Ok(())
    }

    /// Moves per-group state written by earlier versions (`groups/<group name>/`) into the
    /// layout keyed by group id. Run on start, under the host lock, before recovery.
    ///
    /// The old layout does not know the group's id. The owner of an old group directory is
    /// the application of its last successful install (else of its newest deployment):
    /// - when that deployment was local, the directory becomes [`local_group_id`] of that
    ///   application and the group name, final;
    /// - when it came from a coordinator, it becomes `unclaimed-…` ([`unclaimed_group_id`]),
    ///   and the first command for the same application and group name takes it over under
    ///   the command's group id ([`StateDir::prepare_group`]).
    ///
    /// Each move rewrites the paths recorded inside (last successful install, logs) to the
    /// new place first, then renames the directory: a crash at any point leaves either the
    /// old directory (done again next start, to the same result) or the new one. A finished
    /// claim interrupted before its rename is completed here too. Idempotent.
    pub fn migrate(&self) -> anyhow::Result<Vec<GroupInfo>> {
        let mut moved = Vec::new();
        let legacy_root = self.root.join("groups");
        if let Ok(entries) = fs::read_dir(&legacy_root) {
            for entry in entries.flatten() {
                let old = entry.path();
                if !old.is_dir() {
                    continue;
                }
                let name = entry
                    .file_name()
                    .to_str()
                    .map(decode_name)
                    .unwrap_or_default();
                let (application, local) = legacy_owner(&old);
                let target_id = if local {
                    local_group_id(&application, &name)
                } else {
                    unclaimed_group_id(&application, &name)
                };
                let info = GroupInfo {
                    schema_version: SCHEMA_VERSION,
                    group_id: local.then(|| target_id.clone()),
                    application,
                    group: name,
                };
                let new = self.group_dir(&target_id);
                if new.exists() {
                    tracing::warn!(
                        "not moving {} to {}: it exists already; remove one of them",
                        old.display(),
                        new.display()
                    );
                    continue;
                }
                create_dir(&self.groups_root(), 0o755)?;
                move_group(&old, &new, &info)?;
                tracing::info!(
                    "moved group state {} to {} (keyed by group id)",
                    old.display(),
                    new.display()
                );
                moved.push(info);
            }
            // Empty once everything moved; a left-over directory stays for the operator.
            let _ = fs::remove_dir(&legacy_root);
        }
        // A claim that wrote its group.json but crashed before renaming.
        if let Ok(entries) = fs::read_dir(self.groups_root()) {
            for entry in entries.flatten() {
                let dir = entry.path();
                let Ok(Some(info)) = read_json::<GroupInfo>(&dir.join(GROUP_INFO)) else {
                    continue;
                };
                let Some(id) = &info.group_id else { continue };
                let wanted = self.group_dir(id);
                if wanted != dir && !wanted.exists() {
                    move_group(&dir, &wanted, &info)?;
                    moved.push(info);
                }
            }
        }
        Ok(moved)
    }
}

/// `group.json` in every group directory.
const GROUP_INFO: &str = "group.json";

/// What a group directory belongs to, so `status` can show names and a legacy directory can
/// be claimed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub schema_version: u32,
    /// `None` for state kept from the old layout that no command has claimed yet.
    #[serde(default)]
    pub group_id: Option<String>,
    pub application: String,
    pub group: String,
}

/// The deployment group id of a local deployment: `local-` and the first 16 hex digits of
/// the SHA-256 of `application`, a NUL byte and `group`. Deterministic (every local deploy of
/// the same application and group shares its state) and unambiguous for any two names.
pub fn local_group_id(application: &str, group: &str) -> String {
    format!("local-{}", name_hash(application, group))
}

/// Where [`StateDir::migrate`] keeps an old group directory written by coordinator
/// deployments until a command names its id.
pub fn unclaimed_group_id(application: &str, group: &str) -> String {
    format!("unclaimed-{}", name_hash(application, group))
}

fn name_hash(application: &str, group: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(application.as_bytes());
    h.update([0u8]);
    h.update(group.as_bytes());
    let digest = hex::encode(h.finalize());
    digest[..16].to_string()
}

/// The application owning an old-layout group directory, and whether that deployment was
/// local: its last successful install's deployment, else its newest deployment.
fn legacy_owner(dir: &Path) -> (String, bool) {
    // A damaged file names no owner; it must not keep the agent from starting.
    let last = read_json::<LastSuccess>(&dir.join("last-successful-install.json"))
        .ok()
        .flatten();
    let mut records = Vec::new();
    if let Ok(entries) = fs::read_dir(dir.join("deployments")) {
        for entry in entries.flatten() {
            if let Ok(Some(r)) = read_json::<DeploymentRecord>(&entry.path().join("result.json")) {
                records.push(r);
            }
        }
    }
    records.sort_by_key(|r| std::cmp::Reverse(r.started_at_ms));
    let owner = last
        .as_ref()
        .and_then(|l| records.iter().find(|r| r.deployment_id == l.deployment_id))
        .or(records.first());
    let application = last
        .map(|l| l.application)
        .or_else(|| owner.map(|r| r.application.clone()))
        .unwrap_or_default();
    let local = owner.map(|r| r.command_id.is_none()).unwrap_or(true);
    (application, local)
}

/// Moves a group directory from `from` to `to`: first `group.json` and every path recorded
/// under `from` rewritten to `to`, each file atomically, then one rename. Repeating it after
/// a crash gives the same result (paths already rewritten are left alone).
fn move_group(from: &Path, to: &Path, info: &GroupInfo) -> anyhow::Result<()> {
    rewrite_group_paths(from, to, info)?;
    fs::rename(from, to)
        .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
    if let Some(parent) = to.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", parent.display()))?;
    }
    Ok(())
}

pub(crate) fn rewrite_group_paths(from: &Path, to: &Path, info: &GroupInfo) -> anyhow::Result<()> {
    let moved =
        |p: &Path| -> Option<PathBuf> { p.strip_prefix(from).ok().map(|rest| to.join(rest)) };
    let last_path = from.join("last-successful-install.json");
    // A damaged record cannot be rewritten; it moves as it is.
    if let Ok(Some(mut last)) = read_json::<LastSuccess>(&last_path) {
        if let (Some(root), Some(appspec)) = (moved(&last.bundle_root), moved(&last.appspec)) {
            last.bundle_root = root;
            last.appspec = appspec;
            write_json(&last_path, &last)?;
        }
    }
    if let Ok(entries) = fs::read_dir(from.join("deployments")) {
        for entry in entries.flatten() {
            let path = entry.path().join("result.json");
            if let Ok(Some(mut r)) = read_json::<DeploymentRecord>(&path) {
                if let Some(log) = moved(&r.log_path) {
                    r.log_path = log;
                    write_json(&path, &r)?;
                }
            }
        }
    }
    write_json(&from.join(GROUP_INFO), info)
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
        // The pid line only names the holder to others; the flock is the lock. A full state
        // directory must not keep the agent from starting and saying what is wrong.
        let line = format!("pid {} ({role})\n", std::process::id());
        if let Err(e) = lock
            .set_len(0)
            .and_then(|()| lock.write_all(line.as_bytes()))
        {
            tracing::warn!("writing the holder's pid to {}: {e}", path.display());
        }
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
    /// The group's id (the state's key); absent in markers of earlier versions.
    #[serde(default)]
    pub group_id: Option<String>,
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
    /// The kernel's boot id when `pgid` was recorded: after a reboot the id means nothing.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// Start time of the group's leader (field 22 of `/proc/<pgid>/stat`, clock ticks since
    /// boot) when `pgid` was recorded: a reused pid has another.
    #[serde(default)]
    pub pgid_start_time: Option<u64>,
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

// The daemon's own files, read back by `status`.

/// The host's identity at the coordinator, kept in `host.json` (mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostCredentials {
    pub schema_version: u32,
    pub host_id: String,
    pub host_secret: String,
    /// The coordinator that issued them; a changed URL keeps them (same fleet behind a new
    /// name), but it is shown by `status`.
    pub coordinator_url: String,
}

/// What `status` reads to describe the running daemon (`state_dir/agent.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInfo {
    pub schema_version: u32,
    pub pid: u32,
    pub version: String,
    pub started_at_ms: u64,
    pub coordinator_url: String,
    pub host_name: String,
    pub tags: std::collections::BTreeMap<String, String>,
}

/// Last successful exchange with the coordinator (`state_dir/contact.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Contact {
    pub schema_version: u32,
    pub at_ms: u64,
    /// The last error talking to the coordinator since then, if any.
    #[serde(default)]
    pub last_error: Option<String>,
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

    #[test]
    fn a_damaged_file_of_the_name_keyed_layout_does_not_stop_the_migration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = dir.path().join("groups/web");
        fs::create_dir_all(&old).expect("mkdir");
        fs::write(old.join("last-successful-install.json"), "{").expect("write");
        let state = StateDir::open(dir.path()).expect("open");
        let moved = state.migrate().expect("migrate");
        assert_eq!(moved.len(), 1);
        assert!(!dir.path().join("groups").exists());
        let groups = state.groups().expect("groups");
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].1.group, "web");
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
