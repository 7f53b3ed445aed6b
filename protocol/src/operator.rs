//! Operator CLI ↔ coordinator messages (operator token in `Authorization: Bearer`).
//!
//! Routes (all JSON unless noted, all under [`crate::API_PREFIX`]):
//! - `POST /v1/applications` [`CreateApplication`] → [`Application`];
//!   `GET /v1/applications` → [`ApplicationList`].
//! - `POST /v1/applications/{app}/groups` [`CreateGroup`] → [`DeploymentGroup`];
//!   `GET /v1/applications/{app}/groups` → [`GroupList`];
//!   `GET /v1/applications/{app}/groups/{group}` → [`DeploymentGroup`];
//!   `PATCH /v1/applications/{app}/groups/{group}` [`UpdateGroup`] → [`DeploymentGroup`].
//! - `POST /v1/applications/{app}/revisions` [`CreateRevision`] → [`RevisionInfo`];
//!   `GET /v1/revisions/{id}` → [`RevisionInfo`].
//! - `POST /v1/registration-tokens` [`CreateRegistrationToken`] → [`RegistrationToken`];
//!   `GET /v1/registration-tokens` → [`RegistrationTokenList`];
//!   `POST /v1/registration-tokens/{id}/revoke` → [`RegistrationTokenInfo`].
//! - `GET /v1/hosts` → [`HostList`]; `POST /v1/hosts/{id}/revoke` → [`HostInfo`];
//!   `POST /v1/hosts/{id_or_name}/tags` [`SetHostTags`] → [`HostInfo`];
//!   `POST /v1/hosts/{id_or_name}/retry` → [`HostInfo`] (one more catch-up try).
//! - `PUT /v1/bundles` with the raw archive as body → [`BundleInfo`];
//!   `GET /v1/bundles/{sha256}` the bytes (operators and hosts; honours `Range`).
//! - `POST /v1/deployments` [`CreateDeployment`] → [`Deployment`];
//!   `GET /v1/deployments?application=APP` → [`DeploymentList`];
//!   `GET /v1/deployments/{id}?since=SEQ&wait_secs=N` → [`Deployment`] (held open until
//!   something changes after `since`, at most `wait_secs`, capped at 30);
//!   `POST /v1/deployments/{id}/stop` → [`Deployment`].
//! - Pipelines and releases: see [`pipelines`]. Operator tokens with a role: see [`roles`].
//!   Webhooks: see [`webhooks`].
//!
//! Every non-2xx answer carries [`crate::ErrorBody`]. Like the agent messages, these tolerate
//! unknown fields, and enums that may grow decode unknown values as `Unknown`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::agent::Revision;
use crate::signature::SignedManifest;

mod convergence;
mod pipelines;
mod roles;
mod webhooks;

use convergence::on;
pub use convergence::{GroupTarget, HostGroupSync, SyncCounts, SyncState, UpdateGroup};
pub use pipelines::{
    ApplyPipeline, CreateRelease, Decision, Pipeline, PipelineList, PipelineSource, PipelineStage,
    Release, ReleaseList, ReleaseStage, ReleaseState, SourceStatus, StageState,
};
pub use roles::{CreateOperatorToken, OperatorToken, OperatorTokenInfo, OperatorTokenList, Role};
pub use webhooks::{
    CreateWebhook, Delivery, DeliveryStatus, EventKind, Webhook, WebhookEvent, WebhookInfo,
    WebhookList, WebhookTest, EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER,
};

/// The lifecycle events in the order the agent runs them; a deployment runs all of them
/// unless it names a subset.
pub const LIFECYCLE_EVENTS: [&str; 11] = [
    "BeforeBlockTraffic",
    "AfterBlockTraffic",
    "ApplicationStop",
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
    "BeforeAllowTraffic",
    "AfterAllowTraffic",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateApplication {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    pub name: String,
    pub created_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationList {
    pub applications: Vec<Application>,
}

/// Every `key=value` of a filter must match a host's tags; a host belongs to a group when
/// any one of the group's filters matches.
pub type TagFilter = BTreeMap<String, String>;

/// How many hosts a deployment works on at once, and when it fails.
///
/// `AllAtOnce` keeps 0 hosts healthy, `HalfAtATime` half (rounded up), `OneAtATime` all but
/// one; `MinHealthyHosts`/`MinHealthyPercent` name the minimum directly (a percentage of the
/// deployment's hosts, rounded up). The coordinator's `rollout` module holds the exact rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RolloutConfig {
    AllAtOnce,
    HalfAtATime,
    OneAtATime,
    MinHealthyHosts {
        count: u32,
    },
    MinHealthyPercent {
        percent: u8,
    },
    /// A configuration from a newer peer.
    #[serde(other)]
    Unknown,
}

impl Default for RolloutConfig {
    /// CodeDeploy's default for EC2/on-premises deployment groups.
    fn default() -> Self {
        RolloutConfig::OneAtATime
    }
}

impl fmt::Display for RolloutConfig {
    /// The form the CLI accepts: `AllAtOnce`, `min-healthy=3`, `min-healthy=50%`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RolloutConfig::AllAtOnce => f.write_str("AllAtOnce"),
            RolloutConfig::HalfAtATime => f.write_str("HalfAtATime"),
            RolloutConfig::OneAtATime => f.write_str("OneAtATime"),
            RolloutConfig::MinHealthyHosts { count } => write!(f, "min-healthy={count}"),
            RolloutConfig::MinHealthyPercent { percent } => write!(f, "min-healthy={percent}%"),
            RolloutConfig::Unknown => f.write_str("unknown"),
        }
    }
}

impl FromStr for RolloutConfig {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "unknown rollout configuration {s:?}: expected AllAtOnce, HalfAtATime, \
                 OneAtATime, min-healthy=N or min-healthy=N%"
            )
        };
        match s {
            "AllAtOnce" => return Ok(RolloutConfig::AllAtOnce),
            "HalfAtATime" => return Ok(RolloutConfig::HalfAtATime),
            "OneAtATime" => return Ok(RolloutConfig::OneAtATime),
            _ => {}
        }
        let value = s.strip_prefix("min-healthy=").ok_or_else(bad)?;
        match value.strip_suffix('%') {
            Some(p) => match p.parse::<u8>() {
                Ok(percent) if percent <= 100 => Ok(RolloutConfig::MinHealthyPercent { percent }),
                _ => Err(format!(
                    "{s:?}: the percentage must be a whole number from 0 to 100"
                )),
            },
            None => value
                .parse::<u32>()
                .map(|count| RolloutConfig::MinHealthyHosts { count })
                .map_err(|_| format!("{s:?}: the host count must be a whole number")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateGroup {
    pub name: String,
    /// At least one filter, each with at least one tag.
    pub tag_filters: Vec<TagFilter>,
    #[serde(default)]
    pub rollout: RolloutConfig,
    #[serde(default)]
    pub auto_rollback: bool,
    /// Hosts that come to match the group, or come back after its last successful
    /// deployment, get its target revision by a catch-up deployment. On unless set false.
    #[serde(default = "on")]
    pub catch_up: bool,
    /// Seconds to wait after each batch of a rollout succeeds before the next starts.
    #[serde(default)]
    pub bake_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentGroup {
    pub id: String,
    pub application: String,
    pub name: String,
    pub tag_filters: Vec<TagFilter>,
    pub rollout: RolloutConfig,
    pub auto_rollback: bool,
    pub created_ms: u64,
    /// Hosts whose tags match now (a deployment takes those that match when it starts).
    #[serde(default)]
    pub matching_hosts: Vec<String>,
    /// The revision of the group's last successful deployment.
    #[serde(default)]
    pub last_successful_revision: Option<RevisionInfo>,
    /// Absent from older coordinators (read as on).
    #[serde(default = "on")]
    pub catch_up: bool,
    #[serde(default)]
    pub bake_secs: u64,
    /// What the group's hosts should run; `None` before its first successful deployment.
    #[serde(default)]
    pub target: Option<GroupTarget>,
    /// The matching hosts by sync state.
    #[serde(default)]
    pub sync_counts: SyncCounts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupList {
    pub groups: Vec<DeploymentGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRevision {
    pub revision: Revision,
    /// A signed manifest naming this revision's sha256 (or commit) and application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignedManifest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionInfo {
    pub id: String,
    pub application: String,
    pub revision: Revision,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignedManifest>,
}

/// What a new registration token allows. Every field is optional: `{}` makes a token
/// that never expires, has no use limit and lets hosts claim any tags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRegistrationToken {
    /// Refused after this many seconds.
    #[serde(default)]
    pub expires_secs: Option<u64>,
    /// Refused once this many hosts registered with it.
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// When not empty, a host registering with this token may claim only these tags:
    /// key → allowed values.
    #[serde(default)]
    pub allowed_tags: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationToken {
    /// Shown once; the coordinator keeps only its hash.
    pub token: String,
    /// The id that `hoist token list` and `hoist token revoke` use. Absent from older
    /// coordinators.
    #[serde(default)]
    pub id: String,
}

/// A registration token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationTokenInfo {
    pub id: String,
    pub created_ms: u64,
    #[serde(default)]
    pub expires_ms: Option<u64>,
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// How many hosts registered with it.
    #[serde(default)]
    pub uses: u32,
    #[serde(default)]
    pub revoked: bool,
    /// Empty: any tags.
    #[serde(default)]
    pub allowed_tags: BTreeMap<String, Vec<String>>,
    /// Whether it registers hosts now, judged by the coordinator's clock.
    #[serde(default)]
    pub status: TokenStatus,
}

/// Whether a registration token registers hosts now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    Usable,
    Expired,
    UsedUp,
    Revoked,
    /// A status of a newer coordinator, or none from an older one.
    #[default]
    #[serde(other)]
    Unknown,
}

impl TokenStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Usable => "usable",
            TokenStatus::Expired => "expired",
            TokenStatus::UsedUp => "used up",
            TokenStatus::Revoked => "revoked",
            TokenStatus::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationTokenList {
    pub tokens: Vec<RegistrationTokenInfo>,
}

/// An operator's change to a host's tags, applied in this order: the host's requested
/// name and tags when `accept`, then `set`, then `remove`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetHostTags {
    #[serde(default)]
    pub accept: bool,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub id: String,
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub agent_version: String,
    pub first_seen_ms: u64,
    /// 0 when the host registered but has not polled yet.
    pub last_seen_ms: u64,
    /// Seen within a few poll periods.
    pub online: bool,
    #[serde(default)]
    pub revoked: bool,
    /// Tags the host asks for (from its config) that differ from `tags`; applied only when
    /// an operator accepts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_tags: Option<BTreeMap<String, String>>,
    /// A name the host asks for that differs from `name`; applied on accept, like tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_name: Option<String>,
    /// Per deployment group, the revision this host last installed successfully.
    #[serde(default)]
    pub deployed: Vec<HostRevision>,
    /// Per deployment group the host matches: what it runs and whether that is the
    /// group's target.
    #[serde(default)]
    pub groups: Vec<HostGroupSync>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRevision {
    pub application: String,
    pub deployment_group: String,
    pub deployment_id: String,
    pub revision: Revision,
    pub ended_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostList {
    pub hosts: Vec<HostInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleInfo {
    pub sha256: String,
    pub size: u64,
}

/// What to deploy: a registered revision, or a new one given inline (registered on the way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevisionSource {
    Id(String),
    Inline(Revision),
    /// The group's previous successful revision: the newest one an operator's, a rollback's
    /// or a pipeline's deployment installed successfully that differs from its target now
    /// (`hoist deploy create --previous`).
    Previous,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateDeployment {
    pub application: String,
    pub deployment_group: String,
    pub revision: RevisionSource,
    #[serde(default)]
    pub file_exists_behavior: Option<String>,
    #[serde(default)]
    pub ignore_application_stop_failures: bool,
    /// Lifecycle events to run; all of [`LIFECYCLE_EVENTS`] when empty.
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub appspec_path: Option<String>,
    /// Variables its hooks see as environment variables (`--var KEY=VALUE`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// A signed manifest made elsewhere (`--signature FILE`), attached to the revision for
    /// this deployment; without one, the registered revision's own signature is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignedManifest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    Pending,
    InProgress,
    Succeeded,
    Failed,
    Stopped,
    #[serde(other)]
    Unknown,
}

impl DeploymentState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            DeploymentState::Succeeded | DeploymentState::Failed | DeploymentState::Stopped
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Pending => "pending",
            DeploymentState::InProgress => "in_progress",
            DeploymentState::Succeeded => "succeeded",
            DeploymentState::Failed => "failed",
            DeploymentState::Stopped => "stopped",
            DeploymentState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for DeploymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Creator {
    User,
    Rollback,
    /// The coordinator itself, bringing hosts to their group's target revision.
    #[serde(rename = "catch-up")]
    CatchUp,
    /// A release of a pipeline, deploying one of its stages.
    Pipeline,
    #[serde(other)]
    Unknown,
}

impl Creator {
    pub fn as_str(self) -> &'static str {
        match self {
            Creator::User => "user",
            Creator::Rollback => "rollback",
            Creator::CatchUp => "catch-up",
            Creator::Pipeline => "pipeline",
            Creator::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Creator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One host's command within a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// Not handed out yet.
    Pending,
    /// Handed out; the host works on it.
    InProgress,
    Succeeded,
    Failed,
    Stopped,
    /// Never handed out: the deployment ended first.
    Skipped,
    /// Its host's agent restarted in the middle of an event.
    Interrupted,
    /// Its host was lost (silent past the lease) mid-command: it may or may not have run.
    /// Also what a state from a newer coordinator decodes as.
    #[serde(other)]
    Unknown,
}

impl CommandState {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Pending => "pending",
            CommandState::InProgress => "in_progress",
            CommandState::Succeeded => "succeeded",
            CommandState::Failed => "failed",
            CommandState::Stopped => "stopped",
            CommandState::Skipped => "skipped",
            CommandState::Interrupted => "interrupted",
            CommandState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for CommandState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One lifecycle event as a host reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEvent {
    pub event: String,
    /// `started`, or the ended status (`succeeded`, `failed`, `failed_ignored`, `skipped`).
    pub status: String,
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentHost {
    pub host_id: String,
    pub host_name: String,
    pub command_id: String,
    pub state: CommandState,
    /// The event running now (last started, not yet ended).
    #[serde(default)]
    pub current_event: Option<String>,
    #[serde(default)]
    pub failed_event: Option<String>,
    #[serde(default)]
    pub script: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub log_tail: Option<String>,
    #[serde(default)]
    pub events: Vec<HostEvent>,
    #[serde(default)]
    pub started_ms: Option<u64>,
    #[serde(default)]
    pub ended_ms: Option<u64>,
    #[serde(default)]
    pub last_report_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCounts {
    pub pending: u32,
    pub in_progress: u32,
    pub succeeded: u32,
    /// Every command that failed, `interrupted` and `unknown` ones included.
    pub failed: u32,
    pub stopped: u32,
    pub skipped: u32,
    /// Of `failed`: interrupted by an agent restart.
    #[serde(default)]
    pub interrupted: u32,
    /// Of `failed`: their host was lost mid-command.
    #[serde(default)]
    pub unknown: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub application: String,
    pub deployment_group: String,
    #[serde(default)]
    pub revision_id: Option<String>,
    pub revision: Revision,
    pub state: DeploymentState,
    pub creator: Creator,
    /// For a rollback: the failed deployment it rolls back.
    #[serde(default)]
    pub rollback_of: Option<String>,
    /// For a failed deployment: the rollback it started.
    #[serde(default)]
    pub rolled_back_by: Option<String>,
    /// Why it failed or stopped, as a sentence.
    #[serde(default)]
    pub message: Option<String>,
    pub rollout: RolloutConfig,
    #[serde(default)]
    pub file_exists_behavior: Option<String>,
    #[serde(default)]
    pub ignore_application_stop_failures: bool,
    #[serde(default)]
    pub events: Vec<String>,
    pub created_ms: u64,
    #[serde(default)]
    pub ended_ms: Option<u64>,
    pub counts: HostCounts,
    /// Per host; empty in lists and in the answer to create.
    #[serde(default)]
    pub hosts: Vec<DeploymentHost>,
    /// The coordinator's change counter when this view was taken; pass it back as `since`
    /// to wait for the next change.
    #[serde(default)]
    pub change_seq: u64,
    /// The group's bake time when the deployment was created.
    #[serde(default)]
    pub bake_secs: u64,
    /// Baking: a batch succeeded and the next starts at this time (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baking_until_ms: Option<u64>,
    /// The variables its hooks see.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// For a pipeline's deployment: the release it deploys a stage of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_id: Option<String>,
    /// The key id its signed manifest claims (the coordinator verifies no signature; hosts
    /// that trust keys do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentList {
    pub deployments: Vec<Deployment>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_config_parses_and_prints_the_cli_forms() {
        for (text, want) in [
            ("AllAtOnce", RolloutConfig::AllAtOnce),
            ("HalfAtATime", RolloutConfig::HalfAtATime),
            ("OneAtATime", RolloutConfig::OneAtATime),
            ("min-healthy=3", RolloutConfig::MinHealthyHosts { count: 3 }),
            (
                "min-healthy=50%",
                RolloutConfig::MinHealthyPercent { percent: 50 },
            ),
        ] {
            assert_eq!(text.parse::<RolloutConfig>(), Ok(want), "{text}");
            assert_eq!(want.to_string(), text);
        }
        for bad in [
            "allatonce",
            "min-healthy=",
            "min-healthy=101%",
            "min-healthy=-1",
            "x",
        ] {
            assert!(bad.parse::<RolloutConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rollout_config_wire_form_tolerates_newer_values() {
        let json = serde_json::to_string(&RolloutConfig::MinHealthyPercent { percent: 40 })
            .expect("serializes");
        assert_eq!(json, r#"{"type":"min_healthy_percent","percent":40}"#);
        let r: RolloutConfig =
            serde_json::from_str(r#"{"type":"canary_10_percent_5_minutes"}"#).expect("parses");
        assert_eq!(r, RolloutConfig::Unknown);
    }

    #[test]
    fn new_creators_and_states_keep_the_wire_compatible() {
        let json = serde_json::to_string(&Creator::CatchUp).expect("serializes");
        assert_eq!(json, r#""catch-up""#);
        assert_eq!(
            serde_json::from_str::<Creator>(r#""catch-up""#).expect("parses"),
            Creator::CatchUp
        );
        assert_eq!(
            serde_json::from_str::<Creator>(r#""scheduler""#).expect("parses"),
            Creator::Unknown
        );
        for state in [CommandState::Interrupted, CommandState::Unknown] {
            let json = serde_json::to_string(&state).expect("serializes");
            assert_eq!(json, format!("\"{state}\""));
            assert_eq!(
                serde_json::from_str::<CommandState>(&json).expect("parses"),
                state
            );
        }
        // A state from a newer coordinator reads as unknown, as before.
        assert_eq!(
            serde_json::from_str::<CommandState>(r#""quarantined""#).expect("parses"),
            CommandState::Unknown
        );
        // An older coordinator's group has catch-up on and no bake.
        let g: CreateGroup =
            serde_json::from_str(r#"{"name":"web","tag_filters":[{"role":"web"}]}"#)
                .expect("parses");
        assert!(g.catch_up);
        assert_eq!(g.bake_secs, 0);
    }

    #[test]
    fn the_previous_revision_is_a_plain_word_beside_the_earlier_forms() {
        let json = serde_json::to_string(&RevisionSource::Previous).expect("serializes");
        assert_eq!(json, r#""previous""#);
        for (text, want) in [
            (r#""previous""#, RevisionSource::Previous),
            (r#"{"id":"r-1"}"#, RevisionSource::Id("r-1".into())),
        ] {
            assert_eq!(
                serde_json::from_str::<RevisionSource>(text).expect("parses"),
                want
            );
        }
    }

    #[test]
    fn create_deployment_names_a_missing_field() {
        let err = serde_json::from_str::<CreateDeployment>(
            r#"{"application":"a","revision":{"id":"r-1"}}"#,
        )
        .expect_err("must fail");
        assert!(err.to_string().contains("deployment_group"), "{err}");
    }
}
