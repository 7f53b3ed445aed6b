//! PostgreSQL's side of rows: a row read as raw values, error mapping, and the shared
//! writes of a deployment, a command, a host and a sync row inside a transaction. The
//! column lists and the decoding are both backends' (`store::rows`). Not here: the queries
//! themselves (the store's methods) or the schema (`schema`).

use deadpool_postgres::Transaction;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
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

/// Writes commands, pipelined on the transaction's connection: a large deployment's
/// thousands of rows cost one round trip's wait, not one each.
pub(super) async fn write_commands(
    tx: &Transaction<'_>,
    commands: &[CommandRow],
    how: Write,
) -> Result<(), tokio_postgres::Error> {
    if commands.is_empty() {
        return Ok(());
    }
    let sql = match how {
        Write::Insert => format!(
            "INSERT INTO commands ({COMMAND_COLS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        ),
        Write::Update => "UPDATE commands SET state = $2, current_event = $3, \
             failed_event = $4, script = $5, exit_code = $6, error_code = $7, message = $8, \
             log_tail = $9, events_json = $10, started_ms = $11, ended_ms = $12, \
             last_report_ms = $13 WHERE id = $1"
            .to_owned(),
    };
    let stmt = tx.prepare_cached(&sql).await?;
    let writes = commands.iter().map(|c| {
        let stmt = &stmt;
        async move {
            let exit_code = c.exit_code.map(i64::from);
            let events = to_json(&c.events);
            let (started, ended, reported) = (
                c.started_ms.map(i),
                c.ended_ms.map(i),
                c.last_report_ms.map(i),
            );
            match how {
                Write::Insert => {
                    tx.execute(
                        stmt,
                        &[
                            &c.id,
                            &c.deployment_id,
                            &c.host_id,
                            &c.host_name,
                            &i64::from(c.position),
                            &c.state.as_str(),
                            &c.current_event,
                            &c.failed_event,
                            &c.script,
                            &exit_code,
                            &c.error_code,
                            &c.message,
                            &c.log_tail,
                            &events,
                            &started,
                            &ended,
                            &reported,
                        ],
                    )
                    .await
                }
                Write::Update => {
                    tx.execute(
                        stmt,
                        &[
                            &c.id,
                            &c.state.as_str(),
                            &c.current_event,
                            &c.failed_event,
                            &c.script,
                            &exit_code,
                            &c.error_code,
                            &c.message,
                            &c.log_tail,
                            &events,
                            &started,
                            &ended,
                            &reported,
                        ],
                    )
                    .await
                }
            }
        }
    });
    futures_util::future::try_join_all(writes).await?;
    Ok(())
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

/// Writes sync rows, replacing stored ones, pipelined.
pub(super) async fn write_syncs(
    tx: &Transaction<'_>,
    rows: &[HostSyncRow],
) -> Result<(), tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO host_sync ({SYNC_COLS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (host_id, group_id) DO UPDATE SET revision_id = EXCLUDED.revision_id, \
             revision_json = EXCLUDED.revision_json, deployment_id = EXCLUDED.deployment_id, \
             hold = EXCLUDED.hold, attempts = EXCLUDED.attempts, \
             next_attempt_ms = EXCLUDED.next_attempt_ms, \
             pending_command_id = EXCLUDED.pending_command_id, \
             failed_state = EXCLUDED.failed_state, failed_event = EXCLUDED.failed_event, \
             error = EXCLUDED.error, updated_ms = EXCLUDED.updated_ms"
        ))
        .await?;
    let writes = rows.iter().map(|h| {
        let stmt = &stmt;
        async move {
            tx.execute(
                stmt,
                &[
                    &h.host_id,
                    &h.group_id,
                    &h.revision_id,
                    &h.revision.as_ref().map(to_json),
                    &h.deployment_id,
                    &h.hold,
                    &i64::from(h.attempts),
                    &i(h.next_attempt_ms),
                    &h.pending_command_id,
                    &h.failed_state.map(|s| s.as_str()),
                    &h.failed_event,
                    &h.error,
                    &i(h.updated_ms),
                ],
            )
            .await
        }
    });
    futures_util::future::try_join_all(writes).await?;
    Ok(())
}
