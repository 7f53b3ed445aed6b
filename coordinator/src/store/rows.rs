//! Rows to and from column values, shared by both backends: the column lists, the decoding
//! of a row read as raw values ([`Raw`]), and the encodings of states, enums and JSON columns.
//! Not here: SQL, parameters or a backend's own value types (`sqlite/rows`, `postgres/rows`).

use serde::de::DeserializeOwned;

use crate::store::{
    AppRow, CommandRow, DeploymentRow, GroupRow, HostRow, HostSyncRow, OperatorTokenRow,
    PipelineRow, PipelineStageRow, RegistrationTokenRow, ReleaseRow, ReleaseStageRow, ReplicaRow,
    ReportRow, Result, RevisionRow, SessionRow, StoreError,
};
use hoist_protocol::agent::Revision;
use hoist_protocol::operator::{
    CommandState, Creator, DeploymentState, PipelineSource, ReleaseState, Role, RolloutConfig,
    SourceStatus, StageState,
};
use hoist_protocol::signature::SignedManifest;

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Serialising plain data (maps of strings, vectors, enums) to a string cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

pub(crate) fn from_json<T: DeserializeOwned>(what: &'static str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|source| StoreError::Decode { what, source })
}

/// The `revision_json` of a revision or a deployment: the revision's own JSON, with its
/// signed manifest, when it has one, beside its fields as `"signature"` (older readers of
/// the revision ignore the extra key, so no column or migration is needed).
pub(crate) fn signed_revision_json(
    revision: &Revision,
    signature: Option<&SignedManifest>,
) -> String {
    let mut value = serde_json::to_value(revision).unwrap_or_default();
    if let (Some(signed), serde_json::Value::Object(map)) = (signature, &mut value) {
        map.insert(
            "signature".into(),
            serde_json::to_value(signed).unwrap_or_default(),
        );
    }
    value.to_string()
}

/// The revision and its signed manifest from a `revision_json` ([`signed_revision_json`]).
pub(crate) fn signed_revision(s: &str) -> Result<(Revision, Option<SignedManifest>)> {
    #[derive(serde::Deserialize)]
    struct Signature {
        #[serde(default)]
        signature: Option<SignedManifest>,
    }
    let revision = from_json("revision", s)?;
    let Signature { signature } = from_json("revision signature", s)?;
    Ok((revision, signature))
}

pub(crate) fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn deployment_state(s: &str) -> Result<DeploymentState> {
    Ok(match s {
        "pending" => DeploymentState::Pending,
        "in_progress" => DeploymentState::InProgress,
        "succeeded" => DeploymentState::Succeeded,
        "failed" => DeploymentState::Failed,
        "stopped" => DeploymentState::Stopped,
        other => {
            return Err(StoreError::BadValue {
                what: "deployment state",
                value: other.into(),
            })
        }
    })
}

pub(crate) fn command_state(s: &str) -> Result<CommandState> {
    Ok(match s {
        "pending" => CommandState::Pending,
        "in_progress" => CommandState::InProgress,
        "succeeded" => CommandState::Succeeded,
        "failed" => CommandState::Failed,
        "stopped" => CommandState::Stopped,
        "skipped" => CommandState::Skipped,
        "interrupted" => CommandState::Interrupted,
        "unknown" => CommandState::Unknown,
        other => {
            return Err(StoreError::BadValue {
                what: "command state",
                value: other.into(),
            })
        }
    })
}

pub(crate) fn creator_str(c: Creator) -> &'static str {
    match c {
        Creator::Rollback => "rollback",
        Creator::CatchUp => "catch-up",
        Creator::Pipeline => "pipeline",
        Creator::User | Creator::Unknown => "user",
    }
}

pub(crate) fn creator(s: &str) -> Creator {
    match s {
        "rollback" => Creator::Rollback,
        "catch-up" => Creator::CatchUp,
        "pipeline" => Creator::Pipeline,
        _ => Creator::User,
    }
}

pub(crate) fn rollout(s: &str) -> Result<RolloutConfig> {
    s.parse().map_err(|_| StoreError::BadValue {
        what: "rollout configuration",
        value: s.into(),
    })
}

/// One column's value as read from either database: SQLite's integers and booleans, and
/// PostgreSQL's `BIGINT` and `BOOLEAN`, are all `Int`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
}

/// Raw column values of one row, read by a backend and decoded here, so decoding errors keep
/// their own type and both backends share one decoding.
pub(crate) struct Raw(pub(crate) Vec<Value>);

impl Raw {
    pub(crate) fn text(&self, i: usize) -> String {
        match self.0.get(i) {
            Some(Value::Text(s)) => s.clone(),
            _ => String::new(),
        }
    }
    pub(crate) fn opt_text(&self, i: usize) -> Option<String> {
        match self.0.get(i) {
            Some(Value::Text(s)) => Some(s.clone()),
            _ => None,
        }
    }
    pub(crate) fn int(&self, i: usize) -> i64 {
        match self.0.get(i) {
            Some(Value::Int(v)) => *v,
            _ => 0,
        }
    }
    pub(crate) fn opt_int(&self, i: usize) -> Option<i64> {
        match self.0.get(i) {
            Some(Value::Int(v)) => Some(*v),
            _ => None,
        }
    }
}

pub(crate) const GROUP_COLS: &str = "id, application, name, tag_filters_json, rollout, \
    auto_rollback, created_ms, catch_up, bake_secs, target_deployment_id";
pub(crate) fn group_row(r: Raw) -> Result<GroupRow> {
    Ok(GroupRow {
        id: r.text(0),
        application: r.text(1),
        name: r.text(2),
        tag_filters: from_json("tag filters", &r.text(3))?,
        rollout: rollout(&r.text(4))?,
        auto_rollback: r.int(5) != 0,
        created_ms: u(r.int(6)),
        catch_up: r.int(7) != 0,
        bake_secs: u(r.int(8)),
        target_deployment_id: r.opt_text(9),
    })
}

pub(crate) const HOST_COLS: &str =
    "id, name, tags_json, agent_version, secret_sha256, first_seen_ms, \
    last_seen_ms, revoked, requested_name, requested_tags_json";
pub(crate) fn host_row(r: Raw) -> Result<HostRow> {
    Ok(HostRow {
        id: r.text(0),
        name: r.text(1),
        tags: from_json("host tags", &r.text(2))?,
        agent_version: r.text(3),
        secret_sha256: r.text(4),
        first_seen_ms: u(r.int(5)),
        last_seen_ms: u(r.int(6)),
        revoked: r.int(7) != 0,
        requested_name: r.opt_text(8),
        requested_tags: r
            .opt_text(9)
            .map(|t| from_json("requested host tags", &t))
            .transpose()?,
    })
}

pub(crate) const TOKEN_COLS: &str =
    "id, token_sha256, created_ms, expires_ms, max_uses, uses, revoked, allowed_tags_json";
pub(crate) fn token_row(r: Raw) -> Result<RegistrationTokenRow> {
    Ok(RegistrationTokenRow {
        id: r.text(0),
        token_sha256: r.text(1),
        created_ms: u(r.int(2)),
        expires_ms: r.opt_int(3).map(u),
        max_uses: r.opt_int(4).and_then(|v| u32::try_from(v).ok()),
        uses: u32::try_from(r.int(5)).unwrap_or(u32::MAX),
        revoked: r.int(6) != 0,
        allowed_tags: from_json("token tag scope", &r.text(7))?,
    })
}

pub(crate) const DEPLOYMENT_COLS: &str = "id, application, group_id, group_name, revision_id, \
    revision_json, state, creator, rollback_of, rolled_back_by, message, rollout, \
    file_exists_behavior, ignore_application_stop_failures, events_json, appspec_path, \
    created_ms, ended_ms, bake_secs, bake_until_ms, variables_json, release_id";
pub(crate) fn deployment_row(r: Raw) -> Result<DeploymentRow> {
    let (revision, signature) = signed_revision(&r.text(5))?;
    Ok(DeploymentRow {
        id: r.text(0),
        application: r.text(1),
        group_id: r.text(2),
        group_name: r.text(3),
        revision_id: r.opt_text(4),
        revision,
        signature,
        state: deployment_state(&r.text(6))?,
        creator: creator(&r.text(7)),
        rollback_of: r.opt_text(8),
        rolled_back_by: r.opt_text(9),
        message: r.opt_text(10),
        rollout: rollout(&r.text(11))?,
        file_exists_behavior: r.opt_text(12),
        ignore_application_stop_failures: r.int(13) != 0,
        events: from_json("deployment events", &r.text(14))?,
        appspec_path: r.opt_text(15),
        created_ms: u(r.int(16)),
        ended_ms: r.opt_int(17).map(u),
        bake_secs: u(r.int(18)),
        bake_until_ms: r.opt_int(19).map(u),
        variables: from_json("deployment variables", &r.text(20))?,
        release_id: r.opt_text(21),
    })
}

pub(crate) const COMMAND_COLS: &str = "id, deployment_id, host_id, host_name, position, state, \
    current_event, failed_event, script, exit_code, error_code, message, log_tail, events_json, \
    started_ms, ended_ms, last_report_ms";
pub(crate) fn command_row(r: Raw) -> Result<CommandRow> {
    Ok(CommandRow {
        id: r.text(0),
        deployment_id: r.text(1),
        host_id: r.text(2),
        host_name: r.text(3),
        position: u32::try_from(r.int(4)).unwrap_or(0),
        state: command_state(&r.text(5))?,
        current_event: r.opt_text(6),
        failed_event: r.opt_text(7),
        script: r.opt_text(8),
        exit_code: r.opt_int(9).and_then(|v| i32::try_from(v).ok()),
        error_code: r.opt_text(10),
        message: r.opt_text(11),
        log_tail: r.opt_text(12),
        events: from_json("host events", &r.text(13))?,
        started_ms: r.opt_int(14).map(u),
        ended_ms: r.opt_int(15).map(u),
        last_report_ms: r.opt_int(16).map(u),
    })
}

pub(crate) const SYNC_COLS: &str = "host_id, group_id, revision_id, revision_json, deployment_id, \
    hold, attempts, next_attempt_ms, pending_command_id, failed_state, failed_event, error, \
    updated_ms";
pub(crate) fn sync_row(r: Raw) -> Result<HostSyncRow> {
    Ok(HostSyncRow {
        host_id: r.text(0),
        group_id: r.text(1),
        revision_id: r.opt_text(2),
        revision: r
            .opt_text(3)
            .map(|t| from_json("revision", &t))
            .transpose()?,
        deployment_id: r.opt_text(4),
        hold: r.int(5) != 0,
        attempts: u32::try_from(r.int(6)).unwrap_or(u32::MAX),
        next_attempt_ms: u(r.int(7)),
        pending_command_id: r.opt_text(8),
        failed_state: r.opt_text(9).map(|t| command_state(&t)).transpose()?,
        failed_event: r.opt_text(10),
        error: r.opt_text(11),
        updated_ms: u(r.int(12)),
    })
}

pub(crate) fn app_row(r: Raw) -> Result<AppRow> {
    Ok(AppRow {
        name: r.text(0),
        created_ms: u(r.int(1)),
    })
}

pub(crate) const REVISION_COLS: &str = "id, application, revision_json, created_ms";
pub(crate) fn revision_row(r: Raw) -> Result<RevisionRow> {
    let (revision, signature) = signed_revision(&r.text(2))?;
    Ok(RevisionRow {
        id: r.text(0),
        application: r.text(1),
        revision,
        signature,
        created_ms: u(r.int(3)),
    })
}

pub(crate) const REPORT_COLS: &str = "command_id, seq, at_ms, received_ms, body_json";
pub(crate) fn report_row(r: Raw) -> Result<ReportRow> {
    Ok(ReportRow {
        command_id: r.text(0),
        seq: u(r.int(1)),
        at_ms: u(r.int(2)),
        received_ms: u(r.int(3)),
        body_json: r.text(4),
    })
}

pub(crate) const REPLICA_COLS: &str = "id, host, pid, listen, started_ms, beat_ms";
pub(crate) fn replica_row(r: Raw) -> Result<ReplicaRow> {
    Ok(ReplicaRow {
        id: r.text(0),
        host: r.text(1),
        pid: u32::try_from(r.int(2)).unwrap_or(0),
        listen: r.text(3),
        started_ms: u(r.int(4)),
        beat_ms: u(r.int(5)),
    })
}

// Pipelines and releases, with their stages.

pub(crate) const PIPELINE_COLS: &str = "name, application, source_json, created_ms, updated_ms, \
    source_last, source_error, source_checked_ms, source_failures, source_next_ms";
pub(crate) const STAGE_COLS: &str = "group_name, approval, variables_json";
pub(crate) const RELEASE_COLS: &str =
    "id, pipeline, application, revision_id, revision_json, state, \
    creator, source_ref, message, created_ms, ended_ms";
pub(crate) const RELEASE_STAGE_COLS: &str =
    "group_name, approval, variables_json, state, deployment_id, \
    message, approved_by, approved_ms, rejected_by, rejected_ms, comment, started_ms, ended_ms";

pub(crate) fn release_state(s: &str) -> Result<ReleaseState> {
    Ok(match s {
        "in_progress" => ReleaseState::InProgress,
        "awaiting_approval" => ReleaseState::AwaitingApproval,
        "succeeded" => ReleaseState::Succeeded,
        "failed" => ReleaseState::Failed,
        "rejected" => ReleaseState::Rejected,
        "superseded" => ReleaseState::Superseded,
        other => {
            return Err(StoreError::BadValue {
                what: "release state",
                value: other.into(),
            })
        }
    })
}

pub(crate) fn stage_state(s: &str) -> Result<StageState> {
    Ok(match s {
        "pending" => StageState::Pending,
        "deploying" => StageState::Deploying,
        "awaiting_approval" => StageState::AwaitingApproval,
        "succeeded" => StageState::Succeeded,
        "failed" => StageState::Failed,
        "skipped" => StageState::Skipped,
        other => {
            return Err(StoreError::BadValue {
                what: "release stage state",
                value: other.into(),
            })
        }
    })
}

pub(crate) fn approval(manual: bool) -> Option<&'static str> {
    manual.then_some("manual")
}

pub(crate) fn pipeline_row(r: Raw) -> Result<PipelineRow> {
    let source_json = r.opt_text(2);
    let source: Option<PipelineSource> = match source_json {
        Some(j) => Some(from_json("pipeline source", &j)?),
        None => None,
    };
    Ok(PipelineRow {
        name: r.text(0),
        application: r.text(1),
        source,
        stages: Vec::new(),
        created_ms: u(r.int(3)),
        updated_ms: u(r.int(4)),
        source_status: SourceStatus {
            last: r.opt_text(5),
            error: r.opt_text(6),
            checked_ms: r.opt_int(7).map(u),
            failures: u32::try_from(r.int(8)).unwrap_or(u32::MAX),
            next_ms: u(r.int(9)),
        },
    })
}

pub(crate) fn stage_row(r: Raw) -> Result<PipelineStageRow> {
    Ok(PipelineStageRow {
        group: r.text(0),
        manual_approval: r.opt_text(1).is_some(),
        variables: from_json("stage variables", &r.text(2))?,
    })
}

pub(crate) fn release_row(r: Raw) -> Result<ReleaseRow> {
    Ok(ReleaseRow {
        id: r.text(0),
        pipeline: r.text(1),
        application: r.text(2),
        revision_id: r.text(3),
        revision: from_json("release revision", &r.text(4))?,
        state: release_state(&r.text(5))?,
        creator: r.text(6),
        source_ref: r.opt_text(7),
        message: r.opt_text(8),
        created_ms: u(r.int(9)),
        ended_ms: r.opt_int(10).map(u),
        stages: Vec::new(),
    })
}

pub(crate) fn release_stage_row(r: Raw) -> Result<ReleaseStageRow> {
    Ok(ReleaseStageRow {
        group: r.text(0),
        manual_approval: r.opt_text(1).is_some(),
        variables: from_json("stage variables", &r.text(2))?,
        state: stage_state(&r.text(3))?,
        deployment_id: r.opt_text(4),
        message: r.opt_text(5),
        approved_by: r.opt_text(6),
        approved_ms: r.opt_int(7).map(u),
        rejected_by: r.opt_text(8),
        rejected_ms: r.opt_int(9).map(u),
        comment: r.opt_text(10),
        started_ms: r.opt_int(11).map(u),
        ended_ms: r.opt_int(12).map(u),
    })
}

pub(crate) const OPERATOR_TOKEN_COLS: &str = "id, token_sha256, role, name, created_ms, revoked";
pub(crate) fn operator_token_row(r: Raw) -> Result<OperatorTokenRow> {
    let role = r.text(2);
    Ok(OperatorTokenRow {
        id: r.text(0),
        token_sha256: r.text(1),
        role: role.parse::<Role>().map_err(|_| StoreError::BadValue {
            what: "operator token role",
            value: role,
        })?,
        name: r.opt_text(3),
        created_ms: u(r.int(4)),
        revoked: r.int(5) != 0,
    })
}

pub(crate) const SESSION_COLS: &str = "session_sha256, token_sha256, created_ms, expires_ms";
pub(crate) fn session_row(r: Raw) -> Result<SessionRow> {
    Ok(SessionRow {
        session_sha256: r.text(0),
        token_sha256: r.text(1),
        created_ms: u(r.int(2)),
        expires_ms: u(r.int(3)),
    })
}

/// A `state, count(*)` row of deployments.
pub(crate) fn deployment_state_count(r: Raw) -> Result<(DeploymentState, u64)> {
    Ok((deployment_state(&r.text(0))?, u(r.int(1))))
}

/// A `state, count(*)` row of commands.
pub(crate) fn command_state_count(r: Raw) -> Result<(CommandState, u64)> {
    Ok((command_state(&r.text(0))?, u(r.int(1))))
}
