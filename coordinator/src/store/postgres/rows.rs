//! PostgreSQL's side of rows: a row read as raw values, error mapping, and the shared
//! writes of a deployment, a host, and of commands and sync rows (many in one statement,
//! each column sent as an array) inside a transaction. The
//! column lists and the decoding are both backends' (`store::rows`). Not here: the queries
//! themselves (the store's methods) or the schema (`schema`).

use deadpool_postgres::Transaction;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

pub(super) use crate::store::rows::{
    command_row, command_state, creator_str, deployment_row, group_row, host_row, i,
    signed_revision_json, sync_row, to_json, token_row, Raw, Value, COMMAND_COLS, DEPLOYMENT_COLS,
    GROUP_COLS, HOST_COLS, SYNC_COLS, TOKEN_COLS,
};
use crate::store::{CommandRow, DeploymentRow, HostRow, HostSyncRow, Result, StoreError};

pub(super) fn pg(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |source| StoreError::Postgres { op, source }
}

pub(super) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// A row's values: `BIGINT`, `INTEGER` and `BOOLEAN` as integers, text as text.
pub(super) fn read(row: &Row) -> Result<Raw, tokio_postgres::Error> {
    let mut values = Vec::with_capacity(row.len());
    for (n, column) in row.columns().iter().enumerate() {
        let t = column.type_();
        let v = if *t == Type::INT8 {
            row.try_get::<_, Option<i64>>(n)?.map(Value::Int)
        } else if *t == Type::INT4 {
            row.try_get::<_, Option<i32>>(n)?
                .map(|v| Value::Int(i64::from(v)))
        } else if *t == Type::BOOL {
            row.try_get::<_, Option<bool>>(n)?
                .map(|v| Value::Int(i64::from(v)))
        } else {
            row.try_get::<_, Option<String>>(n)?.map(Value::Text)
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Raw(values))
}

/// Whether a row is new or replaces its stored self (only the columns that change).
#[derive(Clone, Copy)]
pub(super) enum Write {
    Insert,
    Update,
}

pub(super) async fn write_deployment(
    tx: &Transaction<'_>,
    d: &DeploymentRow,
    how: Write,
) -> Result<u64, tokio_postgres::Error> {
    match how {
        Write::Insert => {
            let stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO deployments ({DEPLOYMENT_COLS}) VALUES ($1, $2, $3, $4, $5, \
                     $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)"
                ))
                .await?;
            tx.execute(
                &stmt,
                &[
                    &d.id,
                    &d.application,
                    &d.group_id,
                    &d.group_name,
                    &d.revision_id,
                    &signed_revision_json(&d.revision, d.signature.as_ref()),
                    &d.state.as_str(),
                    &creator_str(d.creator),
                    &d.rollback_of,
                    &d.rolled_back_by,
                    &d.message,
                    &d.rollout.to_string(),
                    &d.file_exists_behavior,
                    &d.ignore_application_stop_failures,
                    &to_json(&d.events),
                    &d.appspec_path,
                    &i(d.created_ms),
                    &d.ended_ms.map(i),
                    &i(d.bake_secs),
                    &d.bake_until_ms.map(i),
                    &to_json(&d.variables),
                    &d.release_id,
                ],
            )
            .await
        }
        Write::Update => {
            let stmt = tx
                .prepare_cached(
                    "UPDATE deployments SET state = $2, rollback_of = $3, rolled_back_by = $4, \
                     message = $5, ended_ms = $6, bake_until_ms = $7, release_id = $8 \
                     WHERE id = $1",
                )
                .await?;
            tx.execute(
                &stmt,
                &[
                    &d.id,
                    &d.state.as_str(),
                    &d.rollback_of,
                    &d.rolled_back_by,
                    &d.message,
                    &d.ended_ms.map(i),
                    &d.bake_until_ms.map(i),
                    &d.release_id,
                ],
            )
            .await
        }
    }
}

/// Writes commands in one statement, each column sent as an array (`UNNEST`): a large
/// deployment's thousands of rows cost one statement, not one each. An update of a command
/// listed more than once applies its last row (a batch of reports leaves a command as its
/// last report did). Inserted rows take their `seq` in the order given.
pub(super) async fn write_commands(
    tx: &Transaction<'_>,
    commands: &[CommandRow],
    how: Write,
) -> Result<(), tokio_postgres::Error> {
    let rows = match how {
        Write::Insert => commands.iter().collect::<Vec<_>>(),
        Write::Update => last_of_each(commands, |c| c.id.as_str()),
    };
    if rows.is_empty() {
        return Ok(());
    }
    let c = CommandColumns::of(&rows);
    match how {
        Write::Insert => {
            let stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO commands ({COMMAND_COLS}) \
                     SELECT id, deployment_id, host_id, host_name, position, state, \
                     current_event, failed_event, script, exit_code, error_code, message, \
                     log_tail, events_json, started_ms, ended_ms, last_report_ms \
                     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
                     $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[], \
                     $12::text[], $13::text[], $14::text[], $15::bigint[], $16::bigint[], \
                     $17::bigint[]) WITH ORDINALITY AS r(id, deployment_id, host_id, host_name, \
                     position, state, current_event, failed_event, script, exit_code, \
                     error_code, message, log_tail, events_json, started_ms, ended_ms, \
                     last_report_ms, n) ORDER BY n"
                ))
                .await?;
            tx.execute(
                &stmt,
                &[
                    &[
                        &c.id as &(dyn ToSql + Sync),
                        &c.deployment_id,
                        &c.host_id,
                        &c.host_name,
                        &c.position,
                    ][..],
                    &c.changing(),
                ]
                .concat(),
            )
            .await?;
        }
        Write::Update => {
            let stmt = tx
                .prepare_cached(
                    "UPDATE commands c SET state = r.state, current_event = r.current_event, \
                     failed_event = r.failed_event, script = r.script, exit_code = r.exit_code, \
                     error_code = r.error_code, message = r.message, log_tail = r.log_tail, \
                     events_json = r.events_json, started_ms = r.started_ms, \
                     ended_ms = r.ended_ms, last_report_ms = r.last_report_ms \
                     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                     $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], \
                     $11::bigint[], $12::bigint[], $13::bigint[]) AS r(id, state, \
                     current_event, failed_event, script, exit_code, error_code, message, \
                     log_tail, events_json, started_ms, ended_ms, last_report_ms) \
                     WHERE c.id = r.id",
                )
                .await?;
            tx.execute(
                &stmt,
                &[&[&c.id as &(dyn ToSql + Sync)][..], &c.changing()].concat(),
            )
            .await?;
        }
    }
    Ok(())
}

/// Each row once, as its last listing in `rows` left it (by `key`), in the order of those
/// last listings: one statement may not write a row twice.
fn last_of_each<'a, T, K: std::hash::Hash + Eq>(
    rows: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> Vec<&'a T> {
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    let mut out: Vec<&T> = rows.iter().rev().filter(|r| seen.insert(key(r))).collect();
    out.reverse();
    out
}

/// Commands as one array per column, for [`write_commands`].
struct CommandColumns<'a> {
    id: Vec<&'a str>,
    deployment_id: Vec<&'a str>,
    host_id: Vec<&'a str>,
    host_name: Vec<&'a str>,
    position: Vec<i64>,
    state: Vec<&'static str>,
    current_event: Vec<Option<&'a str>>,
    failed_event: Vec<Option<&'a str>>,
    script: Vec<Option<&'a str>>,
    exit_code: Vec<Option<i64>>,
    error_code: Vec<Option<&'a str>>,
    message: Vec<Option<&'a str>>,
    log_tail: Vec<Option<&'a str>>,
    events: Vec<String>,
    started: Vec<Option<i64>>,
    ended: Vec<Option<i64>>,
    reported: Vec<Option<i64>>,
}

impl<'a> CommandColumns<'a> {
    /// The columns an update writes, in the order both statements list them after the
    /// identifying ones.
    fn changing(&self) -> [&(dyn ToSql + Sync); 12] {
        [
            &self.state,
            &self.current_event,
            &self.failed_event,
            &self.script,
            &self.exit_code,
            &self.error_code,
            &self.message,
            &self.log_tail,
            &self.events,
            &self.started,
            &self.ended,
            &self.reported,
        ]
    }

    fn of(rows: &[&'a CommandRow]) -> CommandColumns<'a> {
        CommandColumns {
            id: rows.iter().map(|c| c.id.as_str()).collect(),
            deployment_id: rows.iter().map(|c| c.deployment_id.as_str()).collect(),
            host_id: rows.iter().map(|c| c.host_id.as_str()).collect(),
            host_name: rows.iter().map(|c| c.host_name.as_str()).collect(),
            position: rows.iter().map(|c| i64::from(c.position)).collect(),
            state: rows.iter().map(|c| c.state.as_str()).collect(),
            current_event: rows.iter().map(|c| c.current_event.as_deref()).collect(),
            failed_event: rows.iter().map(|c| c.failed_event.as_deref()).collect(),
            script: rows.iter().map(|c| c.script.as_deref()).collect(),
            exit_code: rows.iter().map(|c| c.exit_code.map(i64::from)).collect(),
            error_code: rows.iter().map(|c| c.error_code.as_deref()).collect(),
            message: rows.iter().map(|c| c.message.as_deref()).collect(),
            log_tail: rows.iter().map(|c| c.log_tail.as_deref()).collect(),
            events: rows.iter().map(|c| to_json(&c.events)).collect(),
            started: rows.iter().map(|c| c.started_ms.map(i)).collect(),
            ended: rows.iter().map(|c| c.ended_ms.map(i)).collect(),
            reported: rows.iter().map(|c| c.last_report_ms.map(i)).collect(),
        }
    }
}

pub(super) async fn insert_host(
    tx: &Transaction<'_>,
    h: &HostRow,
) -> Result<u64, tokio_postgres::Error> {
    tx.execute(
        &format!(
            "INSERT INTO hosts ({HOST_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ),
        &[
            &h.id,
            &h.name,
            &to_json(&h.tags),
            &h.agent_version,
            &h.secret_sha256,
            &i(h.first_seen_ms),
            &i(h.last_seen_ms),
            &h.revoked,
            &h.requested_name,
            &h.requested_tags.as_ref().map(to_json),
        ],
    )
    .await
}

/// Writes sync rows, replacing stored ones, in one statement (each column an array); a
/// (host, group) listed more than once is written as its last row.
pub(super) async fn write_syncs(
    tx: &Transaction<'_>,
    rows: &[HostSyncRow],
) -> Result<(), tokio_postgres::Error> {
    let rows = last_of_each(rows, |h| (h.host_id.as_str(), h.group_id.as_str()));
    if rows.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO host_sync ({SYNC_COLS}) SELECT * FROM UNNEST($1::text[], $2::text[], \
             $3::text[], $4::text[], $5::text[], $6::boolean[], $7::bigint[], $8::bigint[], \
             $9::text[], $10::text[], $11::text[], $12::text[], $13::bigint[]) \
             ON CONFLICT (host_id, group_id) DO UPDATE SET revision_id = EXCLUDED.revision_id, \
             revision_json = EXCLUDED.revision_json, deployment_id = EXCLUDED.deployment_id, \
             hold = EXCLUDED.hold, attempts = EXCLUDED.attempts, \
             next_attempt_ms = EXCLUDED.next_attempt_ms, \
             pending_command_id = EXCLUDED.pending_command_id, \
             failed_state = EXCLUDED.failed_state, failed_event = EXCLUDED.failed_event, \
             error = EXCLUDED.error, updated_ms = EXCLUDED.updated_ms"
        ))
        .await?;
    let host_id: Vec<&str> = rows.iter().map(|h| h.host_id.as_str()).collect();
    let group_id: Vec<&str> = rows.iter().map(|h| h.group_id.as_str()).collect();
    let revision_id: Vec<Option<&str>> = rows.iter().map(|h| h.revision_id.as_deref()).collect();
    let revision: Vec<Option<String>> = rows
        .iter()
        .map(|h| h.revision.as_ref().map(to_json))
        .collect();
    let deployment_id: Vec<Option<&str>> =
        rows.iter().map(|h| h.deployment_id.as_deref()).collect();
    let hold: Vec<bool> = rows.iter().map(|h| h.hold).collect();
    let attempts: Vec<i64> = rows.iter().map(|h| i64::from(h.attempts)).collect();
    let next_attempt: Vec<i64> = rows.iter().map(|h| i(h.next_attempt_ms)).collect();
    let pending: Vec<Option<&str>> = rows
        .iter()
        .map(|h| h.pending_command_id.as_deref())
        .collect();
    let failed_state: Vec<Option<&str>> = rows
        .iter()
        .map(|h| h.failed_state.map(|s| s.as_str()))
        .collect();
    let failed_event: Vec<Option<&str>> = rows.iter().map(|h| h.failed_event.as_deref()).collect();
    let error: Vec<Option<&str>> = rows.iter().map(|h| h.error.as_deref()).collect();
    let updated: Vec<i64> = rows.iter().map(|h| i(h.updated_ms)).collect();
    tx.execute(
        &stmt,
        &[
            &host_id,
            &group_id,
            &revision_id,
            &revision,
            &deployment_id,
            &hold,
            &attempts,
            &next_attempt,
            &pending,
            &failed_state,
            &failed_event,
            &error,
            &updated,
        ],
    )
    .await?;
    Ok(())
}
