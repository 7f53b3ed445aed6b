//! The SQL of deployments and their commands: inserted together, saved together, read by
//! state for the rollout rules. Not here: event reports (`reports`) or the rollout rules.

use rusqlite::params;

use super::rows::{
    command_row, command_state, db, deployment_row, write_command, Write, COMMAND_COLS,
    DEPLOYMENT_COLS,
};
use super::webhooks::{write_deployment_captured, write_syncs_captured};
use super::SqliteStore;
use crate::store::{Changes, CommandRow, DeploymentRow, HostSyncRow, Result};
use hoist_protocol::operator::CommandState;

pub(super) fn insert_deployment_with(
    s: &SqliteStore,
    d: &DeploymentRow,
    commands: &[CommandRow],
    syncs: &[HostSyncRow],
) -> Result<()> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(db("starting a transaction"))?;
    write_deployment_captured(&tx, d, Write::Insert)?;
    for c in commands {
        write_command(&tx, c, Write::Insert).map_err(db("writing a command"))?;
    }
    write_syncs_captured(&tx, syncs)?;
    tx.commit().map_err(db("committing a deployment"))
}

pub(super) fn save_changes(s: &SqliteStore, c: &Changes<'_>) -> Result<()> {
    let d = c.deployment;
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(db("starting a transaction"))?;
    write_deployment_captured(&tx, d, Write::Update)?;
    for cmd in c.commands {
        write_command(&tx, cmd, Write::Update).map_err(db("writing a command"))?;
    }
    for cmd in c.new_commands {
        write_command(&tx, cmd, Write::Insert).map_err(db("adding a command"))?;
    }
    write_syncs_captured(&tx, c.syncs)?;
    if c.sets_target {
        tx.execute(
            "UPDATE deployment_groups SET target_deployment_id = ?2 WHERE id = ?1",
            params![d.group_id, d.id],
        )
        .map_err(db("setting a group's target"))?;
    }
    tx.commit().map_err(db("committing a deployment"))
}

pub(super) fn command_total(s: &SqliteStore, deployment_id: &str) -> Result<u32> {
    let n = s.query_one(
        "counting commands",
        "SELECT count(*) FROM commands WHERE deployment_id = ?1",
        [deployment_id],
        |r| Ok(r.int(0)),
    )?;
    Ok(u32::try_from(n.unwrap_or(0)).unwrap_or(u32::MAX))
}

pub(super) fn deployment(s: &SqliteStore, id: &str) -> Result<Option<DeploymentRow>> {
    s.query_one(
        "reading a deployment",
        &format!("SELECT {DEPLOYMENT_COLS} FROM deployments WHERE id = ?1"),
        [id],
        deployment_row,
    )
}

pub(super) fn deployments(
    s: &SqliteStore,
    application: Option<&str>,
    limit: u32,
) -> Result<Vec<DeploymentRow>> {
    s.query(
        "listing deployments",
        &format!(
            "SELECT {DEPLOYMENT_COLS} FROM deployments \
             WHERE ?1 IS NULL OR application = ?1 ORDER BY created_ms DESC, rowid DESC LIMIT ?2"
        ),
        params![application, limit],
        deployment_row,
    )
}

pub(super) fn active_deployments(s: &SqliteStore) -> Result<Vec<DeploymentRow>> {
    s.query(
        "listing active deployments",
        &format!(
            "SELECT {DEPLOYMENT_COLS} FROM deployments \
             WHERE state IN ('pending', 'in_progress') ORDER BY created_ms"
        ),
        [],
        deployment_row,
    )
}

pub(super) fn last_successful_deployment(
    s: &SqliteStore,
    group_id: &str,
) -> Result<Option<DeploymentRow>> {
    s.query_one(
        "reading the last successful deployment",
        &format!(
            "SELECT {DEPLOYMENT_COLS} FROM deployments WHERE group_id = ?1 \
             AND state = 'succeeded' ORDER BY ended_ms DESC, rowid DESC LIMIT 1"
        ),
        [group_id],
        deployment_row,
    )
}

pub(super) fn commands(s: &SqliteStore, deployment_id: &str) -> Result<Vec<CommandRow>> {
    s.query(
        "listing commands",
        &format!("SELECT {COMMAND_COLS} FROM commands WHERE deployment_id = ?1 ORDER BY position"),
        [deployment_id],
        command_row,
    )
}

pub(super) fn command_counts(
    s: &SqliteStore,
    deployment_id: &str,
) -> Result<Vec<(CommandState, usize)>> {
    s.query(
        "counting commands",
        "SELECT state, count(*) FROM commands WHERE deployment_id = ?1 GROUP BY state",
        [deployment_id],
        |r| {
            Ok((
                command_state(&r.text(0))?,
                usize::try_from(r.int(1)).unwrap_or(0),
            ))
        },
    )
}

pub(super) fn pending_commands(
    s: &SqliteStore,
    deployment_id: &str,
    limit: usize,
) -> Result<Vec<CommandRow>> {
    s.query(
        "listing pending commands",
        &format!(
            "SELECT {COMMAND_COLS} FROM commands WHERE deployment_id = ?1 \
             AND state = 'pending' ORDER BY position LIMIT ?2"
        ),
        params![deployment_id, i64::try_from(limit).unwrap_or(i64::MAX)],
        command_row,
    )
}

pub(super) fn command(s: &SqliteStore, id: &str) -> Result<Option<CommandRow>> {
    s.query_one(
        "reading a command",
        &format!("SELECT {COMMAND_COLS} FROM commands WHERE id = ?1"),
        [id],
        command_row,
    )
}

/// One cached statement per id: in process, a query costs no round trip.
pub(super) fn commands_among(s: &SqliteStore, ids: &[&str]) -> Result<Vec<CommandRow>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.extend(command(s, id)?);
    }
    Ok(out)
}

/// One cached statement per host: in process, a query costs no round trip.
pub(super) fn in_progress_commands_for_hosts(
    s: &SqliteStore,
    host_ids: &[&str],
) -> Result<Vec<CommandRow>> {
    let mut out = Vec::with_capacity(host_ids.len());
    for h in host_ids {
        out.extend(in_progress_command_for_host(s, h)?);
    }
    Ok(out)
}

pub(super) fn in_progress_command_for_host(
    s: &SqliteStore,
    host_id: &str,
) -> Result<Option<CommandRow>> {
    s.query_one(
        "reading a host's command",
        &format!(
            "SELECT {COMMAND_COLS} FROM commands WHERE host_id = ?1 \
             AND state = 'in_progress' ORDER BY started_ms, rowid LIMIT 1"
        ),
        [host_id],
        command_row,
    )
}

pub(super) fn in_progress_commands(s: &SqliteStore) -> Result<Vec<CommandRow>> {
    s.query(
        "listing commands in progress",
        &format!("SELECT {COMMAND_COLS} FROM commands WHERE state = 'in_progress'"),
        [],
        command_row,
    )
}

pub(super) fn succeeded_commands_of_host(
    s: &SqliteStore,
    host_id: &str,
) -> Result<Vec<(DeploymentRow, CommandRow)>> {
    let commands = s.query(
        "listing a host's commands",
        &format!(
            "SELECT {COMMAND_COLS} FROM commands WHERE host_id = ?1 \
             AND state = 'succeeded' ORDER BY ended_ms DESC"
        ),
        [host_id],
        command_row,
    )?;
    let mut out = Vec::with_capacity(commands.len());
    for c in commands {
        if let Some(d) = deployment(s, &c.deployment_id)? {
            out.push((d, c));
        }
    }
    Ok(out)
}
