//! The SQL of applications, deployment groups and revisions. Not here: hosts, deployments
//! or reports (their own files), or any rule about names and filters (the service's).

use super::rows::{group_row, i, is_unique_violation, pg, to_json, GROUP_COLS};
use super::PgStore;
use crate::store::rows::{app_row, revision_row, signed_revision_json, REVISION_COLS};
use crate::store::{AppRow, GroupRow, Result, RevisionRow, StoreError};

pub(super) fn insert_application(s: &PgStore, app: &AppRow) -> Result<()> {
    s.run(async {
        let client = s.client("inserting an application").await?;
        client
            .execute(
                "INSERT INTO applications (name, created_ms) VALUES ($1, $2)",
                &[&app.name, &i(app.created_ms)],
            )
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("application {}", app.name))
                } else {
                    pg("inserting an application")(e)
                }
            })
    })?;
    Ok(())
}

pub(super) fn applications(s: &PgStore) -> Result<Vec<AppRow>> {
    s.query(
        "listing applications",
        "SELECT name, created_ms FROM applications ORDER BY name",
        &[],
        app_row,
    )
}

pub(super) fn application(s: &PgStore, name: &str) -> Result<Option<AppRow>> {
    s.query_one(
        "reading an application",
        "SELECT name, created_ms FROM applications WHERE name = $1",
        &[&name],
        app_row,
    )
}

pub(super) fn insert_group(s: &PgStore, g: &GroupRow) -> Result<()> {
    s.run(async {
        let client = s.client("inserting a deployment group").await?;
        client
            .execute(
                &format!(
                    "INSERT INTO deployment_groups ({GROUP_COLS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ),
                &[
                    &g.id,
                    &g.application,
                    &g.name,
                    &to_json(&g.tag_filters),
                    &g.rollout.to_string(),
                    &g.auto_rollback,
                    &i(g.created_ms),
                    &g.catch_up,
                    &i(g.bake_secs),
                    &g.target_deployment_id,
                ],
            )
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!(
                        "deployment group {} of application {}",
                        g.name, g.application
                    ))
                } else {
                    pg("inserting a deployment group")(e)
                }
            })
    })?;
    Ok(())
}

pub(super) fn groups(s: &PgStore, application: &str) -> Result<Vec<GroupRow>> {
    s.query(
        "listing deployment groups",
        &format!("SELECT {GROUP_COLS} FROM deployment_groups WHERE application = $1 ORDER BY name"),
        &[&application],
        group_row,
    )
}

pub(super) fn group(s: &PgStore, application: &str, name: &str) -> Result<Option<GroupRow>> {
    s.query_one(
        "reading a deployment group",
        &format!("SELECT {GROUP_COLS} FROM deployment_groups WHERE application = $1 AND name = $2"),
        &[&application, &name],
        group_row,
    )
}

pub(super) fn group_by_id(s: &PgStore, id: &str) -> Result<Option<GroupRow>> {
    s.query_one(
        "reading a deployment group",
        &format!("SELECT {GROUP_COLS} FROM deployment_groups WHERE id = $1"),
        &[&id],
        group_row,
    )
}

pub(super) fn all_groups(s: &PgStore) -> Result<Vec<GroupRow>> {
    s.query(
        "listing deployment groups",
        &format!("SELECT {GROUP_COLS} FROM deployment_groups ORDER BY application, name"),
        &[],
        group_row,
    )
}

/// Writes the options an operator may change; the target moves only with a deployment.
pub(super) fn update_group(s: &PgStore, g: &GroupRow) -> Result<()> {
    s.execute(
        "updating a deployment group",
        "UPDATE deployment_groups SET rollout = $2, auto_rollback = $3, catch_up = $4, \
         bake_secs = $5 WHERE id = $1",
        &[
            &g.id,
            &g.rollout.to_string(),
            &g.auto_rollback,
            &g.catch_up,
            &i(g.bake_secs),
        ],
    )?;
    Ok(())
}

pub(super) fn insert_revision(s: &PgStore, r: &RevisionRow) -> Result<()> {
    s.execute(
        "inserting a revision",
        &format!("INSERT INTO revisions ({REVISION_COLS}) VALUES ($1, $2, $3, $4)"),
        &[
            &r.id,
            &r.application,
            &signed_revision_json(&r.revision, r.signature.as_ref()),
            &i(r.created_ms),
        ],
    )?;
    Ok(())
}

pub(super) fn revision(s: &PgStore, id: &str) -> Result<Option<RevisionRow>> {
    s.query_one(
        "reading a revision",
        &format!("SELECT {REVISION_COLS} FROM revisions WHERE id = $1"),
        &[&id],
        revision_row,
    )
}
