//! The operator messages of fleet convergence: a group's target revision, a change of its
//! options, and where each host stands (its sync state) in a group. Part of [`super`]'s
//! wire types (re-exported there); not the rules, which are the coordinator's.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{CommandState, RevisionInfo, RolloutConfig};
use crate::agent::Revision;

pub(super) fn on() -> bool {
    true
}

/// A change to a deployment group's options; what is absent stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateGroup {
    #[serde(default)]
    pub catch_up: Option<bool>,
    #[serde(default)]
    pub bake_secs: Option<u64>,
    #[serde(default)]
    pub rollout: Option<RolloutConfig>,
    #[serde(default)]
    pub auto_rollback: Option<bool>,
}

/// What a host of a group should run: the revision of the group's last successful
/// deployment by an operator or an auto-rollback, and that deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTarget {
    pub revision: RevisionInfo,
    pub deployment_id: String,
    /// When that deployment ended.
    #[serde(default)]
    pub set_ms: u64,
}

/// Whether a host runs its group's target revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// It runs the target revision (or the group has none and the host runs something).
    InSync,
    /// A catch-up deployment is on its way to it, or due at its next poll.
    CatchingUp,
    /// It does not run the target and nothing will change that without an operator: a
    /// command of an operator's deployment ended badly on it, its catch-ups failed four
    /// times, or the group's catch-up is off.
    OutOfSync,
    /// It never ran a revision of the group.
    NeverDeployed,
    /// A state from a newer coordinator.
    #[serde(other)]
    Unknown,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::InSync => "in_sync",
            SyncState::CatchingUp => "catching_up",
            SyncState::OutOfSync => "out_of_sync",
            SyncState::NeverDeployed => "never_deployed",
            SyncState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many of a group's hosts are in each [`SyncState`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCounts {
    #[serde(default)]
    pub in_sync: u32,
    #[serde(default)]
    pub catching_up: u32,
    #[serde(default)]
    pub out_of_sync: u32,
    #[serde(default)]
    pub never_deployed: u32,
}

/// One host in one deployment group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostGroupSync {
    pub application: String,
    pub deployment_group: String,
    /// The revision of its last successful command in the group.
    #[serde(default)]
    pub revision: Option<Revision>,
    #[serde(default)]
    pub revision_id: Option<String>,
    pub sync: SyncState,
    /// Out of sync: the state its last command ended in (`failed`, `interrupted`,
    /// `unknown`, `stopped`), the failing event and the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_state: Option<CommandState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failed catch-up tries since it last ran a revision of the group (at most 4).
    #[serde(default)]
    pub catch_up_attempts: u32,
    /// When the next catch-up may start (ms since the epoch), after a failed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_ms: Option<u64>,
}
