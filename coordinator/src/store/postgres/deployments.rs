//! The SQL of deployments and their commands: inserted together, saved together, read by
//! state for the rollout rules. Not here: event reports (`reports`) or the rollout rules.

use super::rows::{
    command_row, command_state, deployment_row, pg, write_commands, Write, COMMAND_COLS,
    DEPLOYMENT_COLS,
};
use super::webhooks::{write_deployment_captured, write_syncs_captured};
use super::PgStore;
use crate::store::{Changes, CommandRow, DeploymentRow, HostSyncRow, Result};
use hoist_protocol::operator::CommandState;

pub(super) fn insert_deployment_with(
    s: &PgStore,
    d: &DeploymentRow,
    commands: &[CommandRow],
    syncs: &[HostSyncRow],
) -> Result<()> {
    s.run(async {
        let mut client = s.client("writing a deployment").await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("starting a transaction"))?;
        write_deployment_captured(&tx, d, Write::Insert).await?;
        write_commands(&tx, commands, Write::Insert)
            .await
            .map_err(pg("writing a command"))?;
        write_syncs_captured(&tx, syncs).await?;
        tx.commit().await.map_err(pg("committing a deployment"))
    })
}

pub(super) fn save_changes(s: &PgStore, c: &Changes<'_>) -> Result<()> {
    let d = c.deployment;
    s.run(async {
        let mut client = s.client("writing a deployment").await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("starting a transaction"))?;
        write_deployment_captured(&tx, d, Write::Update).await?;
        write_commands(&tx, c.commands, Write::Update)
            .await
            .map_err(pg("writing a command"))?;
        write_commands(&tx, c.new_commands, Write::Insert)
            .await
            .map_err(pg("adding a command"))?;
        write_syncs_captured(&tx, c.syncs).await?;
        if c.sets_target {
            tx.execute(
                "UPDATE deployment_groups SET target_deployment_id = $2 WHERE id = $1",
                &[&d.group_id, &d.id],
            )
            .await
            .map_err(pg("setting a group's target"))?;
        }
        tx.commit().await.map_err(pg("committing a deployment"))
    })
}

pub(super) fn command_total(s: &PgStore, deployment_id: &str) -> Result<u32> {
    let n = s.query_one(
        "counting commands",
        "SELECT count(*) FROM commands WHERE deployment_id = $1",
        &[&deployment_id],
        |r| Ok(r.int(0)),
    )?;
    Ok(u32::try_from(n.unwrap_or(0)).unwrap_or(u32::MAX))
}

pub(super) fn deployment(s: &PgStore, id: &str) -> Result<Option<DeploymentRow>> {
    s.query_one(
        "reading a deployment",
        &format!("SELECT {DEPLOYMENT_COLS} FROM deployments WHERE id = $1"),
        &[&id],
        deployment_row,
    )
}

pub(super) fn deployments(
    s: &PgStore,
    application: Option<&str>,
    limit: u32,
) -> Result<Vec<DeploymentRow>> {
    s.query(
        "listing deployments",
        &format!(
            "SELECT {DEPLOYMENT_COLS} FROM deployments \
             WHERE $1::text IS NULL OR application = $1 \
             ORDER BY created_ms DESC, seq DESC LIMIT $2"
        ),
        &[&application, &i64::from(limit)],
        deployment_row,
    )
}

pub(super) fn active_deployments(s: &PgStore) -> Result<Vec<DeploymentRow>> {
    s.query(
        "listing active deployments",
        &format!(
            "SELECT {DEPLOYMENT_COLS} FROM deployments \
             WHERE state IN ('pending', 'in_progress') ORDER BY created_ms, seq"
        ),
        &[],
        deployment_row,
    )
}

pub(super) fn last_successful_deployment(
    s: &PgStore,
    group_id: &str,
) -> Result<Option<DeploymentRow>> {
    s.query_one(
        "reading the last successful deployment",
        &format!(
            "SELECT {DEPLOYMENT_COLS} FROM deployments WHERE group_id = $1 \
             AND state = 'succeeded' ORDER BY ended_ms DESC NULLS LAST, seq DESC LIMIT 1"
        ),
        &[&group_id],
        deployment_row,
    )
}

pub(super) fn commands(s: &PgStore, deployment_id: &str) -> Result<Vec<CommandRow>> {
    s.query(
        "listing commands",
        &format!("SELECT {COMMAND_COLS} FROM commands WHERE deployment_id = $1 ORDER BY position"),
        &[&deployment_id],
        command_row,
    )
}

pub(super) fn command_counts(
    s: &PgStore,
    deployment_id: &str,
) -> Result<Vec<(CommandState, usize)>> {
    s.query(
        "counting commands",
        "SELECT state, count(*) FROM commands WHERE deployment_id = $1 GROUP BY state",
        &[&deployment_id],
        |r| {
            Ok((
                command_state(&r.text(0))?,
                usize::try_from(r.int(1)).unwrap_or(0),
            ))
        },
    )
}

pub(super) fn pending_commands(
    s: &PgStore,
    deployment_id: &str,
    limit: usize,
) -> Result<Vec<CommandRow>> {
    s.query(
        "listing pending commands",
        &format!(
            "SELECT {COMMAND_COLS} FROM commands WHERE deployment_id = $1 \
             AND state = 'pending' ORDER BY position LIMIT $2"
        ),
        &[&deployment_id, &i64::try_from(limit).unwrap_or(i64::MAX)],
        command_row,
    )
}

pub(super) fn command(s: &PgStore, id: &str) -> Result<Option<CommandRow>> {
    s.query_one(
        "reading a command",
        &format!("SELECT {COMMAND_COLS} FROM commands WHERE id = $1"),
        &[&id],
        command_row,
    )
}

pub(super) fn commands_among(s: &PgStore, ids: &[&str]) -> Result<Vec<CommandRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    s.query(
        "reading commands",
        &format!("SELECT {COMMAND_COLS} FROM commands WHERE id = ANY($1)"),
        &[&ids],
        command_row,
    )
}

/// The same order as [`in_progress_command_for_host`], per host.
pub(super) fn in_progress_commands_for_hosts(
    s: &PgStore,
    host_ids: &[&str],
) -> Result<Vec<CommandRow>> {
    if host_ids.is_empty() {
        return Ok(Vec::new());
    }
    s.query(
        "reading hosts' commands",
        &format!(
            "SELECT DISTINCT ON (host_id) {COMMAND_COLS} FROM commands \
             WHERE host_id = ANY($1) AND state = 'in_progress' \
             ORDER BY host_id, started_ms NULLS FIRST, seq"
        ),
        &[&host_ids],
        command_row,
    )
}

pub(super) fn in_progress_command_for_host(
    s: &PgStore,
    host_id: &str,
) -> Result<Option<CommandRow>> {
    s.query_one(
        "reading a host's command",
        &format!(
            "SELECT {COMMAND_COLS} FROM commands WHERE host_id = $1 \
             AND state = 'in_progress' ORDER BY started_ms NULLS FIRST, seq LIMIT 1"
        ),
        &[&host_id],
        command_row,
    )
}

pub(super) fn in_progress_commands(s: &PgStore) -> Result<Vec<CommandRow>> {
    s.query(
        "listing commands in progress",
        &format!("SELECT {COMMAND_COLS} FROM commands WHERE state = 'in_progress'"),
        &[],
        command_row,
    )
}

pub(super) fn succeeded_commands_of_host(
    s: &PgStore,
    host_id: &str,
) -> Result<Vec<(DeploymentRow, CommandRow)>> {
    let commands = s.query(
        "listing a host's commands",
        &format!(
            "SELECT {COMMAND_COLS} FROM commands WHERE host_id = $1 \
             AND state = 'succeeded' ORDER BY ended_ms DESC NULLS LAST"
        ),
        &[&host_id],
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
