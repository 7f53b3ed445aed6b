//! The SQL of applications, deployment groups and revisions. Not here: hosts, deployments
//! or reports (their own files), or any rule about names and filters (the service's).

use rusqlite::params;

use super::rows::{db, group_row, i, is_unique_violation, to_json, u, GROUP_COLS};
use super::SqliteStore;
use crate::store::rows::{revision_row, signed_revision_json};
use crate::store::{AppRow, GroupRow, Result, RevisionRow, StoreError};

pub(super) fn insert_application(s: &SqliteStore, app: &AppRow) -> Result<()> {
    s.conn()
        .execute(
            "INSERT INTO applications (name, created_ms) VALUES (?1, ?2)",
            params![app.name, i(app.created_ms)],
        )
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!("application {}", app.name))
            } else {
                db("inserting an application")(e)
            }
        })?;
    Ok(())
}

pub(super) fn applications(s: &SqliteStore) -> Result<Vec<AppRow>> {
    s.query(
        "listing applications",
        "SELECT name, created_ms FROM applications ORDER BY name",
        [],
        |r| {
            Ok(AppRow {
                name: r.text(0),
                created_ms: u(r.int(1)),
            })
        },
    )
}

pub(super) fn application(s: &SqliteStore, name: &str) -> Result<Option<AppRow>> {
    s.query_one(
        "reading an application",
        "SELECT name, created_ms FROM applications WHERE name = ?1",
        [name],
        |r| {
            Ok(AppRow {
                name: r.text(0),
                created_ms: u(r.int(1)),
            })
        },
    )
}

pub(super) fn insert_group(s: &SqliteStore, g: &GroupRow) -> Result<()> {
    s.conn()
        .execute(
            &format!(
                "INSERT INTO deployment_groups ({GROUP_COLS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ),
            params![
                g.id,
                g.application,
                g.name,
                to_json(&g.tag_filters),
                g.rollout.to_string(),
                g.auto_rollback,
                i(g.created_ms),
                g.catch_up,
                i(g.bake_secs),
                g.target_deployment_id
            ],
        )
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!(
                    "deployment group {} of application {}",
                    g.name, g.application
                ))
            } else {
                db("inserting a deployment group")(e)
            }
        })?;
    Ok(())
}

pub(super) fn groups(s: &SqliteStore, application: &str) -> Result<Vec<GroupRow>> {
    s.query(
        "listing deployment groups",
        &format!("SELECT {GROUP_COLS} FROM deployment_groups WHERE application = ?1 ORDER BY name"),
        [application],
        group_row,
    )
}

pub(super) fn group(s: &SqliteStore, application: &str, name: &str) -> Result<Option<GroupRow>> {
    s.query_one(
        "reading a deployment group",
        &format!("SELECT {GROUP_COLS} FROM deployment_groups WHERE application = ?1 AND name = ?2"),
        [application, name],
        group_row,
    )
}

pub(super) fn group_by_id(s: &SqliteStore, id: &str) -> Result<Option<GroupRow>> {
    s.query_one(
        "reading a deployment group",
        &format!("SELECT {GROUP_COLS} FROM deployment_groups WHERE id = ?1"),
        [id],
        group_row,
    )
}

pub(super) fn all_groups(s: &SqliteStore) -> Result<Vec<GroupRow>> {
    s.query(
        "listing deployment groups",
        &format!("SELECT {GROUP_COLS} FROM deployment_groups ORDER BY application, name"),
        [],
        group_row,
    )
}

/// Writes the options an operator may change; the target moves only with a deployment.
pub(super) fn update_group(s: &SqliteStore, g: &GroupRow) -> Result<()> {
    s.conn()
        .execute(
            "UPDATE deployment_groups SET rollout = ?2, auto_rollback = ?3, catch_up = ?4, \
             bake_secs = ?5 WHERE id = ?1",
            params![
                g.id,
                g.rollout.to_string(),
                g.auto_rollback,
                g.catch_up,
                i(g.bake_secs)
            ],
        )
        .map_err(db("updating a deployment group"))?;
    Ok(())
}

pub(super) fn insert_revision(s: &SqliteStore, r: &RevisionRow) -> Result<()> {
    s.conn()
        .execute(
            "INSERT INTO revisions (id, application, revision_json, created_ms) \
             VALUES (?1, ?2, ?3, ?4)",
            params![
                r.id,
                r.application,
                signed_revision_json(&r.revision, r.signature.as_ref()),
                i(r.created_ms)
            ],
        )
        .map_err(db("inserting a revision"))?;
    Ok(())
}

pub(super) fn revision(s: &SqliteStore, id: &str) -> Result<Option<RevisionRow>> {
    s.query_one(
        "reading a revision",
        "SELECT id, application, revision_json, created_ms FROM revisions WHERE id = ?1",
        [id],
        revision_row,
    )
}
