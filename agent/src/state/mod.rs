//! The state directory: where every piece of agent state lives, how it is written, and the
//! host lock. Every path below the state directory is named here, by a typed accessor; no
//! other module joins a file name onto a state path.
//!
//! Layout (all below `state_dir`, default `/var/lib/hoist`):
//! ```text
//! agent.lock                      flock held by the one agent or local deploy; holds its pid
//! agent.json                      the running daemon: pid, version, coordinator (for `status`)
//! host.json                       the host's id and secret at the coordinator (0600)
//! contact.json                    the last exchange with the coordinator and its last error
//! sync.json                       the host's sync state per group, as the coordinator said
//! in-flight.log                   the deployment and event running now, a line per event
//!                                 (absent when idle; [`StateDir::in_flight`])
//! in-flight-script.json           its running script and process group (written unsynced)
//! in-flight.json                  the marker as versions before the log wrote it (read, removed)
//! local-rollbacks/<id>.json      a `hoist-agent rollback` not yet acknowledged by the coordinator
//! commands/<command id>.json      a command this host has started (never run twice)
//! outbox/<command id>/            reports not yet acknowledged by the coordinator (0700)
//!   next-seq                      the sequence number of the command's next report
//!   <seq, 10 digits>.json         one report; `.refused` when set aside, `.corrupt` unreadable
//! deployment-groups/<group id>/
//!   group.json                    the group's id, name and application (for `status`)
//!   last-successful-install.json  the revision whose hooks ApplicationStop & co. run next time
//!   installed-files.json          what the group's last Install put on disk (removed next time)
//!   releases.json                 the releases kept under `hoist.releases` (`releases`)
//!   deployments/<id>/
//!     download/                   what DownloadBundle fetched: `bundle` (`bundle.part` while
//!                                 it streams) for an archive, a checkout for Git
//!     archive/                    the extracted or copied revision
//!     logs/hooks.log              timestamped output of every script
//!     result.json                 how the deployment ended
//! groups/<group name>/            the layout before group ids; moved on start ([`StateDir::migrate`])
//! ```
//! Per-group state is keyed by deployment group **id**, as CodeDeploy keys it: two
//! applications may each have a group `web` on one host. A coordinator's command carries the
//! id; a local deployment's id is [`local_group_id`] of its application and group.
//!
//! Every file is written atomically (temp file in the same directory, fsync, rename, fsync of
//! the directory), so a crash leaves either the old or the new content, never a torn file.
//! The types persisted here are in [`records`] (and [`sync`]), each with a `schema_version`. This module
//! decides paths and persistence; it does not decide what a deployment does.

mod files;
mod groups;
mod in_flight;
mod lock;
pub mod records;
pub mod releases;
pub mod sync;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

pub use files::{
    create_dir, create_private_dir, decode_name, encode_name, is_no_space, now_ms, read_json,
    remove_file, reserve, write_atomic, write_failure, write_json, write_json_unsynced, Reserved,
};
#[cfg(test)]
pub(crate) use groups::rewrite_group_paths;
pub use groups::{local_group_id, unclaimed_group_id};
pub use in_flight::read_marker_log;
pub use lock::HostLock;
pub use records::{
    AgentInfo, CommandSeen, Contact, DeploymentRecord, Ending, EntryKind, EventRecord, GroupInfo,
    HostCredentials, InFlight, InstalledEntry, InstalledFiles, LastSuccess, RecordStatus,
};
pub use releases::{KeptRelease, LocalRollbackNote, ReleasesRecord, RevisionIdentity};
pub use sync::{GroupSyncEntry, SyncRecord};

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

    /// `agent.json`: the running daemon ([`AgentInfo`]).
    pub fn agent_info_path(&self) -> PathBuf {
        self.root.join("agent.json")
    }

    /// `host.json`: the host's credentials at the coordinator.
    pub fn host_credentials_path(&self) -> PathBuf {
        self.root.join("host.json")
    }

    /// `contact.json`: the last exchange with the coordinator ([`Contact`]).
    pub fn contact_path(&self) -> PathBuf {
        self.root.join("contact.json")
    }

    /// `sync.json`: the host's standing per group ([`SyncRecord`]).
    pub fn sync_path(&self) -> PathBuf {
        self.root.join("sync.json")
    }

    /// `in-flight.log`: the durable part of the in-flight marker ([`StateDir::in_flight`]).
    pub fn in_flight_log_path(&self) -> PathBuf {
        self.root.join("in-flight.log")
    }

    /// `in-flight.json`: the in-flight marker of versions before `in-flight.log`, still read.
    pub fn in_flight_path(&self) -> PathBuf {
        self.root.join("in-flight.json")
    }

    /// `in-flight-script.json`: the running script's part of the marker ([`StateDir::in_flight`]).
    pub fn in_flight_script_path(&self) -> PathBuf {
        self.root.join("in-flight-script.json")
    }

    /// `commands/`: a marker ([`CommandSeen`]) per command this host has started.
    pub fn commands_dir(&self) -> PathBuf {
        self.root.join("commands")
    }

    /// The marker of command `command_id`, in [`StateDir::commands_dir`].
    pub fn command_seen_path(&self, command_id: &str) -> PathBuf {
        self.commands_dir()
            .join(format!("{}.json", encode_name(command_id)))
    }

    /// `outbox/`: reports waiting for the coordinator's acknowledgement.
    pub fn outbox(&self) -> OutboxDir {
        OutboxDir {
            dir: self.root.join("outbox"),
        }
    }

    fn groups_root(&self) -> PathBuf {
        self.root.join("deployment-groups")
    }

    /// `groups/`: per-group state of the layout before group ids.
    fn legacy_groups_root(&self) -> PathBuf {
        self.root.join("groups")
    }

    /// The state of group `name` in the layout before group ids.
    #[cfg(test)]
    pub(crate) fn legacy_group(&self, name: &str) -> GroupState {
        GroupState {
            dir: self.legacy_groups_root().join(encode_name(name)),
        }
    }

    /// The state of one deployment group, by its id.
    pub fn group(&self, group_id: &str) -> GroupState {
        GroupState {
            dir: self.groups_root().join(encode_name(group_id)),
        }
    }

    /// The directory of deployment `deployment_id`, in whichever group holds it.
    pub fn find_deployment(&self, deployment_id: &str) -> Option<DeploymentDir> {
        let entries = fs::read_dir(self.groups_root()).ok()?;
        entries
            .flatten()
            .map(|e| GroupState { dir: e.path() }.deployment(deployment_id))
            .find(|d| d.path().is_dir())
    }

    /// The groups that have state here, with their names, sorted by name and application.
    pub fn groups(&self) -> anyhow::Result<Vec<(GroupState, GroupInfo)>> {
        let dir = self.groups_root();
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let group = GroupState { dir: entry.path() };
            if !group.dir.is_dir() {
                continue;
            }
            let info = match read_json::<GroupInfo>(&group.info_path()) {
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
            out.push((group, info));
        }
        out.sort_by(|a, b| (&a.1.group, &a.1.application).cmp(&(&b.1.group, &b.1.application)));
        Ok(out)
    }
}

/// The state of one deployment group: `deployment-groups/<group id>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    dir: PathBuf,
}

impl GroupState {
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `group.json` ([`GroupInfo`]).
    pub fn info_path(&self) -> PathBuf {
        self.dir.join("group.json")
    }

    /// `last-successful-install.json` ([`LastSuccess`]).
    pub fn last_success_path(&self) -> PathBuf {
        self.dir.join("last-successful-install.json")
    }

    /// `installed-files.json`: what the group's last Install put on disk.
    pub fn installed_files_path(&self) -> PathBuf {
        self.dir.join("installed-files.json")
    }

    pub fn deployments_dir(&self) -> PathBuf {
        self.dir.join("deployments")
    }

    pub fn deployment(&self, deployment_id: &str) -> DeploymentDir {
        DeploymentDir {
            dir: self.deployments_dir().join(encode_name(deployment_id)),
        }
    }

    /// Every deployment directory of the group, in no particular order; none when the
    /// group has no `deployments/` (yet).
    pub fn deployment_dirs(&self) -> std::io::Result<Vec<DeploymentDir>> {
        let dir = self.deployments_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            out.push(DeploymentDir { dir: entry?.path() });
        }
        Ok(out)
    }

    /// The records (`result.json`) of the group's deployments that have a readable one,
    /// newest first.
    pub fn records(&self) -> Vec<DeploymentRecord> {
        let mut records: Vec<DeploymentRecord> = self
            .deployment_dirs()
            .unwrap_or_default()
            .iter()
            .filter_map(|d| {
                read_json::<DeploymentRecord>(&d.record_path())
                    .ok()
                    .flatten()
            })
            .collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.started_at_ms));
        records
    }
}

/// The directory of one deployment: `deployment-groups/<group id>/deployments/<id>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentDir {
    dir: PathBuf,
}

impl DeploymentDir {
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `result.json` ([`DeploymentRecord`]).
    pub fn record_path(&self) -> PathBuf {
        self.dir.join("result.json")
    }

    /// `logs/` (0700: script output may hold secrets).
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// `logs/hooks.log`.
    pub fn hook_log_path(&self) -> PathBuf {
        self.logs_dir().join("hooks.log")
    }

    /// `download/`: where DownloadBundle fetches a remote revision.
    pub fn download_dir(&self) -> PathBuf {
        self.dir.join("download")
    }

    /// `archive/`: the extracted or copied revision.
    pub fn archive_dir(&self) -> PathBuf {
        self.dir.join("archive")
    }
}

/// The report outbox: `outbox/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxDir {
    dir: PathBuf,
}

impl OutboxDir {
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `outbox/<command id>/`.
    pub fn command_dir(&self, command_id: &str) -> PathBuf {
        self.dir.join(encode_name(command_id))
    }

    /// The command whose reports `command_dir` (one of [`OutboxDir::command_dir`]) holds.
    pub fn command_id_of(command_dir: &Path) -> String {
        command_dir
            .file_name()
            .and_then(|n| n.to_str())
            .map(decode_name)
            .unwrap_or_default()
    }

    /// `outbox/<command id>/next-seq`.
    pub fn next_seq_path(&self, command_id: &str) -> PathBuf {
        self.command_dir(command_id).join(NEXT_SEQ)
    }

    /// `outbox/<command id>/<seq, 10 digits>.json`.
    pub fn report_path(&self, command_id: &str, seq: u64) -> PathBuf {
        self.command_dir(command_id).join(format!("{seq:010}.json"))
    }

    /// Whether `name` is the sequence counter of a command directory.
    pub fn is_next_seq(name: &std::ffi::OsStr) -> bool {
        name == NEXT_SEQ
    }

    /// Whether `path` is a queued report (not set aside, not the counter).
    pub fn is_report(path: &Path) -> bool {
        path.extension().is_some_and(|e| e == "json")
    }

    /// Where a report the coordinator refused is set aside.
    pub fn refused_path(report: &Path) -> PathBuf {
        report.with_extension("refused")
    }

    /// Where a report that cannot be read is set aside.
    pub fn corrupt_path(report: &Path) -> PathBuf {
        report.with_extension("corrupt")
    }
}

const NEXT_SEQ: &str = "next-seq";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every accessor against the layout the module doc lists: these names are an on-disk
    /// format that earlier versions and `status` read.
    #[test]
    fn every_path_is_where_the_layout_says() {
        let state = StateDir::at(Path::new("/s"));
        let group = state.group("g/1");
        let deployment = group.deployment("d-1");
        let outbox = state.outbox();
        let cases: [(PathBuf, &str); 20] = [
            (state.lock_path(), "/s/agent.lock"),
            (state.agent_info_path(), "/s/agent.json"),
            (state.host_credentials_path(), "/s/host.json"),
            (state.contact_path(), "/s/contact.json"),
            (state.in_flight_path(), "/s/in-flight.json"),
            (state.in_flight_log_path(), "/s/in-flight.log"),
            (state.commands_dir(), "/s/commands"),
            (state.command_seen_path("c 1"), "/s/commands/c%201.json"),
            (outbox.path().to_path_buf(), "/s/outbox"),
            (outbox.command_dir("c 1"), "/s/outbox/c%201"),
            (outbox.next_seq_path("c"), "/s/outbox/c/next-seq"),
            (outbox.report_path("c", 7), "/s/outbox/c/0000000007.json"),
            (group.info_path(), "/s/deployment-groups/g%2F1/group.json"),
            (
                group.last_success_path(),
                "/s/deployment-groups/g%2F1/last-successful-install.json",
            ),
            (
                group.installed_files_path(),
                "/s/deployment-groups/g%2F1/installed-files.json",
            ),
            (
                deployment.record_path(),
                "/s/deployment-groups/g%2F1/deployments/d-1/result.json",
            ),
            (
                deployment.hook_log_path(),
                "/s/deployment-groups/g%2F1/deployments/d-1/logs/hooks.log",
            ),
            (
                deployment.download_dir(),
                "/s/deployment-groups/g%2F1/deployments/d-1/download",
            ),
            (
                deployment.archive_dir(),
                "/s/deployment-groups/g%2F1/deployments/d-1/archive",
            ),
            (
                state.legacy_group("web").path().to_path_buf(),
                "/s/groups/web",
            ),
        ];
        for (path, want) in cases {
            assert_eq!(path, Path::new(want));
        }
        let report = outbox.report_path("c", 7);
        assert!(OutboxDir::is_report(&report));
        assert!(!OutboxDir::is_report(&OutboxDir::refused_path(&report)));
        assert_eq!(OutboxDir::command_id_of(&outbox.command_dir("c 1")), "c 1");
    }
}
