//! Rows to and from SQL values: the column lists, the decoding of a row read as raw
//! values, the encodings of states, enums and JSON columns, and the shared writes of a
//! deployment, a command and a host. Not here: the queries themselves (the store's
//! methods) or the schema (`schema`).

use rusqlite::{params, Connection, Row};
use serde::de::DeserializeOwned;

use crate::store::{
    CommandRow, DeploymentRow, GroupRow, HostRow, HostSyncRow, RegistrationTokenRow, Result,
    StoreError,
};
use hoist_protocol::operator::{CommandState, Creator, DeploymentState, RolloutConfig};

pub(super) fn db(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Db { op, source }
}

pub(super) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Serialising plain data (maps of strings, vectors, enums) to a string cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

pub(super) fn from_json<T: DeserializeOwned>(what: &'static str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|source| StoreError::Decode { what, source })
}

pub(super) fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn deployment_state(s: &str) -> Result<DeploymentState> {
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

pub(super) fn command_state(s: &str) -> Result<CommandState> {
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

fn creator_str(c: Creator) -> &'static str {
    match c {
        Creator::Rollback => "rollback",
        Creator::CatchUp => "catch-up",
        Creator::Pipeline => "pipeline",
        Creator::User | Creator::Unknown => "user",
    }
}

fn creator(s: &str) -> Creator {
    match s {
        "rollback" => Creator::Rollback,
        "catch-up" => Creator::CatchUp,
        "pipeline" => Creator::Pipeline,
        _ => Creator::User,
    }
}

pub(super) fn rollout(s: &str) -> Result<RolloutConfig> {
    s.parse().map_err(|_| StoreError::BadValue {
        what: "rollout configuration",
        value: s.into(),
    })
}

/// Raw column values read inside rusqlite's row closure; decoded to rows outside it so
/// decoding errors keep their own type.
pub(super) struct Raw(Vec<rusqlite::types::Value>);

impl Raw {
    pub(super) fn read(row: &Row<'_>) -> rusqlite::Result<Raw> {
        let n = row.as_ref().column_count();
        (0..n)
            .map(|i| row.get(i))
            .collect::<rusqlite::Result<_>>()
            .map(Raw)
    }
    pub(super) fn text(&self, i: usize) -> String {
        match self.0.get(i) {
            Some(rusqlite::types::Value::Text(s)) => s.clone(),
            _ => String::new(),
        }
    }
    pub(super) fn opt_text(&self, i: usize) -> Option<String> {
        match self.0.get(i) {
            Some(rusqlite::types::Value::Text(s)) => Some(s.clone()),
            _ => None,
        }
    }
    pub(super) fn int(&self, i: usize) -> i64 {
        match self.0.get(i) {
            Some(rusqlite::types::Value::Integer(v)) => *v,
            _ => 0,
        }
    }
    pub(super) fn opt_int(&self, i: usize) -> Option<i64> {
        match self.0.get(i) {
            Some(rusqlite::types::Value::Integer(v)) => Some(*v),
            _ => None,
        }
    }
}

pub(super) const GROUP_COLS: &str = "id, application, name, tag_filters_json, rollout, \
    auto_rollback, created_ms, catch_up, bake_secs, target_deployment_id";
pub(super) fn group_row(r: Raw) -> Result<GroupRow> {
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

pub(super) const HOST_COLS: &str =
    "id, name, tags_json, agent_version, secret_sha256, first_seen_ms, \
    last_seen_ms, revoked, requested_name, requested_tags_json";
pub(super) fn host_row(r: Raw) -> Result<HostRow> {
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

pub(super) const TOKEN_COLS: &str =
    "id, token_sha256, created_ms, expires_ms, max_uses, uses, revoked, allowed_tags_json";
pub(super) fn token_row(r: Raw) -> Result<RegistrationTokenRow> {
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

pub(super) const DEPLOYMENT_COLS: &str = "id, application, group_id, group_name, revision_id, \
    revision_json, state, creator, rollback_of, rolled_back_by, message, rollout, \
    file_exists_behavior, ignore_application_stop_failures, events_json, appspec_path, \
    created_ms, ended_ms, bake_secs, bake_until_ms, variables_json, release_id";
pub(super) fn deployment_row(r: Raw) -> Result<DeploymentRow> {
    Ok(DeploymentRow {
        id: r.text(0),
        application: r.text(1),
        group_id: r.text(2),
        group_name: r.text(3),
        revision_id: r.opt_text(4),
        revision: from_json("revision", &r.text(5))?,
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

pub(super) const COMMAND_COLS: &str = "id, deployment_id, host_id, host_name, position, state, \
    current_event, failed_event, script, exit_code, error_code, message, log_tail, events_json, \
    started_ms, ended_ms, last_report_ms";
pub(super) fn command_row(r: Raw) -> Result<CommandRow> {
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

/// Whether a row is new or replaces its stored self. An update rewrites the row in place
/// and leaves alone the indexes of columns that never change.
#[derive(Clone, Copy)]
pub(super) enum Write {
    Insert,
    Update,
}

pub(super) fn write_deployment(
    conn: &Connection,
    d: &DeploymentRow,
    how: Write,
) -> rusqlite::Result<usize> {
    let sql = match how {
        Write::Insert => format!(
            "INSERT INTO deployments ({DEPLOYMENT_COLS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
             ?19, ?20, ?21, ?22)"
        ),
        // Parameters as for the insert; the unchanging ones go unused.
        Write::Update => "UPDATE deployments SET state = ?7, rollback_of = ?9, \
             rolled_back_by = ?10, message = ?11, ended_ms = ?18, bake_until_ms = ?20, \
             release_id = ?22 WHERE id = ?1"
            .to_owned(),
    };
    conn.prepare_cached(&sql)?.execute(params![
        d.id,
        d.application,
        d.group_id,
        d.group_name,
        d.revision_id,
        to_json(&d.revision),
        d.state.as_str(),
        creator_str(d.creator),
        d.rollback_of,
        d.rolled_back_by,
        d.message,
        d.rollout.to_string(),
        d.file_exists_behavior,
        d.ignore_application_stop_failures,
        to_json(&d.events),
        d.appspec_path,
        i(d.created_ms),
        d.ended_ms.map(i),
        i(d.bake_secs),
        d.bake_until_ms.map(i),
        to_json(&d.variables),
        d.release_id,
    ])
}

pub(super) fn write_command(
    conn: &Connection,
    c: &CommandRow,
    how: Write,
) -> rusqlite::Result<usize> {
    let sql = match how {
        Write::Insert => format!(
            "INSERT INTO commands ({COMMAND_COLS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
        ),
        // Parameters as for the insert; the unchanging ones go unused.
        Write::Update => "UPDATE commands SET state = ?6, current_event = ?7, \
             failed_event = ?8, script = ?9, exit_code = ?10, error_code = ?11, message = ?12, \
             log_tail = ?13, events_json = ?14, started_ms = ?15, ended_ms = ?16, \
             last_report_ms = ?17 WHERE id = ?1"
            .to_owned(),
    };
    // Cached: a large deployment writes thousands of rows in one go.
    conn.prepare_cached(&sql)?.execute(params![
        c.id,
        c.deployment_id,
        c.host_id,
        c.host_name,
        c.position,
        c.state.as_str(),
        c.current_event,
        c.failed_event,
        c.script,
        c.exit_code,
        c.error_code,
        c.message,
        c.log_tail,
        to_json(&c.events),
        c.started_ms.map(i),
        c.ended_ms.map(i),
        c.last_report_ms.map(i),
    ])
}

pub(super) fn insert_host(conn: &Connection, h: &HostRow) -> rusqlite::Result<usize> {
    conn.execute(
        &format!(
            "INSERT INTO hosts ({HOST_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ),
        params![
            h.id,
            h.name,
            to_json(&h.tags),
            h.agent_version,
            h.secret_sha256,
            i(h.first_seen_ms),
            i(h.last_seen_ms),
            h.revoked,
            h.requested_name,
            h.requested_tags.as_ref().map(to_json)
        ],
    )
}

pub(super) const SYNC_COLS: &str = "host_id, group_id, revision_id, revision_json, deployment_id, \
    hold, attempts, next_attempt_ms, pending_command_id, failed_state, failed_event, error, \
    updated_ms";
pub(super) fn sync_row(r: Raw) -> Result<HostSyncRow> {
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

pub(super) fn write_sync(conn: &Connection, h: &HostSyncRow) -> rusqlite::Result<usize> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO host_sync ({SYNC_COLS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    ))?
    .execute(params![
        h.host_id,
        h.group_id,
        h.revision_id,
        h.revision.as_ref().map(to_json),
        h.deployment_id,
        h.hold,
        h.attempts,
        i(h.next_attempt_ms),
        h.pending_command_id,
        h.failed_state.map(|s| s.as_str()),
        h.failed_event,
        h.error,
        i(h.updated_ms),
    ])
}
