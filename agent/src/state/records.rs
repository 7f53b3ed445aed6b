//! Every type the agent persists in the state directory, each with a `schema_version`.
//! Field names are an on-disk format: a field renamed in Rust keeps its name on disk.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hoist_protocol::agent::{CommandStatus, ReportBody};
use serde::{Deserialize, Serialize};

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

/// What `status` reads to describe the running daemon (`agent.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInfo {
    pub schema_version: u32,
    pub pid: u32,
    pub version: String,
    pub started_at_ms: u64,
    pub coordinator_url: String,
    pub host_name: String,
    pub tags: BTreeMap<String, String>,
}

/// Last successful exchange with the coordinator (`contact.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Contact {
    pub schema_version: u32,
    pub at_ms: u64,
    /// The last error talking to the coordinator since then, if any.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Marker of a command this host has started (`commands/<command id>.json`), so a command
/// handed out again (the agent restarted before its reports arrived) is never run twice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandSeen {
    pub schema_version: u32,
    pub deployment_id: String,
    pub at_ms: u64,
}

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

/// The deployment and event running now: written durably before each event, and its script
/// part (script, process group) unsynced before each script (`state::in_flight`).
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
    /// The deployment's record as of this event's start, so recovery can rebuild
    /// `result.json` (written unsynced between events); absent in markers of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<DeploymentRecord>,
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
    /// How the revision was described (its source), for messages.
    #[serde(rename = "revision")]
    pub revision_description: String,
    pub installed_at_ms: u64,
    /// The revision's sha256 or commit, when it has one (absent from older records).
    #[serde(default)]
    pub identity: Option<super::RevisionIdentity>,
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
    /// How the revision was described (its source).
    #[serde(rename = "revision")]
    pub revision_description: String,
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

/// How a deployment ended: what its record keeps and its `Completed` report tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub status: RecordStatus,
    pub failed_event: Option<String>,
    pub error: Option<String>,
}

impl Ending {
    pub fn succeeded() -> Ending {
        Ending {
            status: RecordStatus::Succeeded,
            failed_event: None,
            error: None,
        }
    }

    /// A failure, in `failed_event` when one event failed.
    pub fn failed(failed_event: Option<String>, error: String) -> Ending {
        Ending {
            status: RecordStatus::Failed,
            failed_event,
            error: Some(error),
        }
    }

    /// The `Completed` report telling the coordinator this ending.
    pub fn report(&self) -> ReportBody {
        ReportBody::Completed {
            status: match self.status {
                RecordStatus::Succeeded => CommandStatus::Succeeded,
                RecordStatus::Stopped => CommandStatus::Stopped,
                RecordStatus::Failed | RecordStatus::InProgress => CommandStatus::Failed,
            },
            failed_event: self.failed_event.clone(),
            message: self.error.clone(),
        }
    }
}

impl DeploymentRecord {
    /// How the deployment ended (or, in progress, how it stands).
    pub fn ending(&self) -> Ending {
        Ending {
            status: self.status,
            failed_event: self.failed_event.clone(),
            error: self.error.clone(),
        }
    }

    /// Records that the deployment ended as `ending`, at `at_ms`.
    pub fn end(&mut self, ending: Ending, at_ms: u64) {
        self.status = ending.status;
        self.failed_event = ending.failed_event;
        self.error = ending.error;
        self.ended_at_ms = Some(at_ms);
    }
}

impl EventRecord {
    /// The `EventEnded` report telling the coordinator this event's end, with the last lines
    /// of its scripts' output.
    pub fn report(&self, log_tail: Option<String>) -> ReportBody {
        ReportBody::EventEnded {
            event: self.event.clone(),
            status: self.status,
            error_code: self.error_code,
            message: self.message.clone(),
            script: self.script.clone(),
            exit_code: self.exit_code,
            log_tail,
            duration_ms: self.duration_ms,
        }
    }
}

/// What one deployment installed, persisted per deployment group so the next deployment can
/// remove it. Entries are in installation order (parents before children).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledFiles {
    /// Absent from records written before it had one (read as 1).
    #[serde(default = "schema_version_1")]
    pub schema_version: u32,
    pub entries: Vec<InstalledEntry>,
}

impl InstalledFiles {
    /// A record of `entries`, in installation order.
    pub fn new(entries: Vec<InstalledEntry>) -> InstalledFiles {
        InstalledFiles {
            schema_version: super::SCHEMA_VERSION,
            entries,
        }
    }
}

impl Default for InstalledFiles {
    fn default() -> InstalledFiles {
        InstalledFiles::new(Vec::new())
    }
}

fn schema_version_1() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledEntry {
    pub path: PathBuf,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Symlink,
    /// A directory Hoist created (pre-existing directories are never recorded).
    Directory,
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_protocol::agent::{ErrorCode, EventStatus};

    #[test]
    fn a_revision_description_keeps_its_field_name_on_disk() {
        let record = DeploymentRecord {
            schema_version: 1,
            deployment_id: "d-1".into(),
            command_id: None,
            application: "shop".into(),
            group: "web".into(),
            revision_description: "s3://b/k".into(),
            started_at_ms: 1,
            ended_at_ms: None,
            status: RecordStatus::InProgress,
            events: Vec::new(),
            failed_event: None,
            error: None,
            log_path: PathBuf::from("/l"),
            log_tail: None,
        };
        let json = serde_json::to_value(&record).expect("serialize");
        assert_eq!(json["revision"], "s3://b/k");
        assert!(json.get("revision_description").is_none());
        let last: LastSuccess = serde_json::from_str(
            r#"{"schema_version": 1, "deployment_id": "d", "application": "a",
                "bundle_root": "/r", "appspec": "/r/appspec.yml", "revision": "old",
                "installed_at_ms": 1}"#,
        )
        .expect("a record of an earlier version");
        assert_eq!(last.revision_description, "old");
    }

    #[test]
    fn an_ending_is_recorded_and_reported_alike() {
        let mut record: DeploymentRecord = serde_json::from_str(
            r#"{"schema_version": 1, "deployment_id": "d", "application": "a", "group": "g",
                "revision": "r", "started_at_ms": 1, "status": "in_progress", "events": [],
                "log_path": "/l"}"#,
        )
        .expect("record");
        assert_eq!(
            record.ending().report(),
            ReportBody::Completed {
                status: CommandStatus::Failed,
                failed_event: None,
                message: None,
            },
            "a record still in progress is reported failed"
        );
        let ending = Ending::failed(Some("Install".into()), "disk full".into());
        record.end(ending.clone(), 9);
        assert_eq!(record.ending(), ending);
        assert_eq!(record.ended_at_ms, Some(9));
        assert_eq!(
            ending.report(),
            ReportBody::Completed {
                status: CommandStatus::Failed,
                failed_event: Some("Install".into()),
                message: Some("disk full".into()),
            }
        );
        for (status, reported) in [
            (RecordStatus::Succeeded, CommandStatus::Succeeded),
            (RecordStatus::Stopped, CommandStatus::Stopped),
            (RecordStatus::Failed, CommandStatus::Failed),
        ] {
            let ending = Ending {
                status,
                failed_event: None,
                error: None,
            };
            assert!(
                matches!(ending.report(), ReportBody::Completed { status, .. } if status == reported),
                "{status:?}"
            );
        }
        let event = EventRecord {
            event: "ApplicationStart".into(),
            status: EventStatus::Failed,
            duration_ms: 5,
            error_code: Some(ErrorCode::AgentRestarted),
            message: Some("agent restarted during ApplicationStart".into()),
            script: Some("start.sh".into()),
            exit_code: None,
        };
        assert_eq!(
            event.report(None),
            ReportBody::EventEnded {
                event: "ApplicationStart".into(),
                status: EventStatus::Failed,
                error_code: Some(ErrorCode::AgentRestarted),
                message: Some("agent restarted during ApplicationStart".into()),
                script: Some("start.sh".into()),
                exit_code: None,
                log_tail: None,
                duration_ms: 5,
            }
        );
    }
}
