//! SQLite's side of rows: a row read as raw values, error mapping, and the shared writes of a
//! deployment, a command, a host and a sync row. The column lists and the decoding are both
//! backends' (`store::rows`, re-exported here). Not here: the queries themselves (the
//! store's methods) or the schema (`schema`).

use rusqlite::{params, Connection, Row};

pub(super) use crate::store::rows::{
    command_row, command_state, creator_str, deployment_row, group_row, host_row, i,
    signed_revision_json, sync_row, to_json, token_row, u, Raw, Value, COMMAND_COLS,
    DEPLOYMENT_COLS, GROUP_COLS, HOST_COLS, SYNC_COLS, TOKEN_COLS,
};
use crate::store::{CommandRow, DeploymentRow, HostRow, HostSyncRow, StoreError};

/// A row's values, read inside rusqlite's row closure.
pub(super) fn read(row: &Row<'_>) -> rusqlite::Result<Raw> {
    let n = row.as_ref().column_count();
    (0..n)
        .map(|i| {
            row.get::<_, rusqlite::types::Value>(i).map(|v| match v {
                rusqlite::types::Value::Integer(v) => Value::Int(v),
                rusqlite::types::Value::Text(s) => Value::Text(s),
                _ => Value::Null,
            })
        })
        .collect::<rusqlite::Result<_>>()
        .map(Raw)
}

pub(super) fn db(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Db { op, source }
}

pub(super) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
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
        signed_revision_json(&d.revision, d.signature.as_ref()),
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
