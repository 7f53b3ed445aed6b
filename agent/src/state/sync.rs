//! `sync.json`: where this host stands in each of its deployment groups, as the
//! coordinator last said in a poll answer (in sync, catching up, out of sync and why,
//! never deployed), kept so `hoist-agent status` shows it whether or not the daemon runs.
//!
//! A copy of the coordinator's view, never a decision: the agent acts on commands only.
//! Not here: the path (`StateDir::sync_path`) or how it is written (`files`).

use serde::{Deserialize, Serialize};

/// `sync.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub schema_version: u32,
    /// When the coordinator said so (ms since the epoch).
    pub received_ms: u64,
    pub groups: Vec<GroupSyncEntry>,
}

/// The host in one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSyncEntry {
    pub application: String,
    pub group: String,
    #[serde(default)]
    pub group_id: String,
    /// `in_sync`, `catching_up`, `out_of_sync` or `never_deployed`.
    pub sync: String,
    #[serde(default)]
    pub revision: Option<String>,
    #[serde(default)]
    pub failed_event: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

impl GroupSyncEntry {
    /// The entry for what a poll answer said of one group.
    pub fn from_wire(g: &hoist_protocol::agent::GroupSync) -> GroupSyncEntry {
        GroupSyncEntry {
            application: g.application.clone(),
            group: g.deployment_group.clone(),
            group_id: g.deployment_group_id.clone(),
            sync: g.sync.as_str().to_owned(),
            revision: g.revision.clone(),
            failed_event: g.failed_event.clone(),
            error: g.error.clone(),
        }
    }
}
