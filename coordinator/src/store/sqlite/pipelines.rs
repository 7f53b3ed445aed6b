//! The SQL of pipelines (with their stages and source standing) and releases (with their
//! stages). Each write of a pipeline or a release is one transaction over its row and its
//! stages' rows. Not here: which release moves where (`service::pipelines`).

use rusqlite::{params, Connection};

use super::rows::{db, i, to_json};
use super::SqliteStore;
use crate::store::rows::{
    approval, pipeline_row, release_row, release_stage_row, stage_row, PIPELINE_COLS, RELEASE_COLS,
    RELEASE_STAGE_COLS, STAGE_COLS,
};
use crate::store::{PipelineRow, ReleaseRow, Result};
use hoist_protocol::operator::SourceStatus;

fn write_status(conn: &Connection, name: &str, st: &SourceStatus) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE pipelines SET source_last = ?2, source_error = ?3, source_checked_ms = ?4, \
         source_failures = ?5, source_next_ms = ?6 WHERE name = ?1",
        params![
            name,
            st.last,
            st.error,
            st.checked_ms.map(i),
            st.failures,
            i(st.next_ms)
        ],
    )
}

pub(super) fn save_pipeline(s: &SqliteStore, p: &PipelineRow) -> Result<()> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(db("starting a transaction"))?;
    tx.execute(
        &format!(
            "INSERT INTO pipelines ({PIPELINE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, \
             NULL, 0, 0) ON CONFLICT (name) DO UPDATE SET application = ?2, source_json = ?3, \
             updated_ms = ?5"
        ),
        params![
            p.name,
            p.application,
            p.source.as_ref().map(to_json),
            i(p.created_ms),
            i(p.updated_ms)
        ],
    )
    .map_err(db("writing a pipeline"))?;
    write_status(&tx, &p.name, &p.source_status).map_err(db("writing a pipeline's source"))?;
    tx.execute("DELETE FROM pipeline_stages WHERE pipeline = ?1", [&p.name])
        .map_err(db("replacing a pipeline's stages"))?;
    for (n, st) in p.stages.iter().enumerate() {
        tx.execute(
            &format!(
                "INSERT INTO pipeline_stages (pipeline, position, {STAGE_COLS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5)"
            ),
            params![
                p.name,
                n as i64,
                st.group,
                approval(st.manual_approval),
                to_json(&st.variables)
            ],
        )
        .map_err(db("writing a pipeline's stage"))?;
    }
    tx.commit().map_err(db("committing a pipeline"))
}

fn with_stages(s: &SqliteStore, mut p: PipelineRow) -> Result<PipelineRow> {
    p.stages = s.query(
        "reading a pipeline's stages",
        &format!("SELECT {STAGE_COLS} FROM pipeline_stages WHERE pipeline = ?1 ORDER BY position"),
        [&p.name],
        stage_row,
    )?;
    Ok(p)
}

pub(super) fn pipeline(s: &SqliteStore, name: &str) -> Result<Option<PipelineRow>> {
    let p = s.query_one(
        "reading a pipeline",
        &format!("SELECT {PIPELINE_COLS} FROM pipelines WHERE name = ?1"),
        [name],
        pipeline_row,
    )?;
    p.map(|p| with_stages(s, p)).transpose()
}

pub(super) fn pipelines(s: &SqliteStore, application: Option<&str>) -> Result<Vec<PipelineRow>> {
    let rows = s.query(
        "listing pipelines",
        &format!(
            "SELECT {PIPELINE_COLS} FROM pipelines WHERE ?1 IS NULL OR application = ?1 \
             ORDER BY name"
        ),
        [application],
        pipeline_row,
    )?;
    rows.into_iter().map(|p| with_stages(s, p)).collect()
}

pub(super) fn delete_pipeline(s: &SqliteStore, name: &str) -> Result<bool> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(db("starting a transaction"))?;
    tx.execute("DELETE FROM pipeline_stages WHERE pipeline = ?1", [name])
        .map_err(db("deleting a pipeline's stages"))?;
    let n = tx
        .execute("DELETE FROM pipelines WHERE name = ?1", [name])
        .map_err(db("deleting a pipeline"))?;
    tx.commit()
        .map_err(db("committing a pipeline's deletion"))?;
    Ok(n > 0)
}

pub(super) fn save_source_status(s: &SqliteStore, name: &str, st: &SourceStatus) -> Result<()> {
    let conn = s.conn();
    write_status(&conn, name, st).map_err(db("writing a pipeline's source"))?;
    Ok(())
}

fn write_release(conn: &Connection, r: &ReleaseRow, insert: bool) -> rusqlite::Result<()> {
    let sql = if insert {
        format!(
            "INSERT INTO releases ({RELEASE_COLS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        )
    } else {
        "UPDATE releases SET state = ?6, message = ?9, ended_ms = ?11, revision_id = ?4, \
         pipeline = ?2, application = ?3, revision_json = ?5, creator = ?7, source_ref = ?8, \
         created_ms = ?10 WHERE id = ?1"
            .to_owned()
    };
    conn.execute(
        &sql,
        params![
            r.id,
            r.pipeline,
            r.application,
            r.revision_id,
            to_json(&r.revision),
            r.state.as_str(),
            r.creator,
            r.source_ref,
            r.message,
            i(r.created_ms),
            r.ended_ms.map(i)
        ],
    )?;
    conn.execute("DELETE FROM release_stages WHERE release_id = ?1", [&r.id])?;
    for (n, st) in r.stages.iter().enumerate() {
        conn.execute(
            &format!(
                "INSERT INTO release_stages (release_id, position, {RELEASE_STAGE_COLS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
            ),
            params![
                r.id,
                n as i64,
                st.group,
                approval(st.manual_approval),
                to_json(&st.variables),
                st.state.as_str(),
                st.deployment_id,
                st.message,
                st.approved_by,
                st.approved_ms.map(i),
                st.rejected_by,
                st.rejected_ms.map(i),
                st.comment,
                st.started_ms.map(i),
                st.ended_ms.map(i)
            ],
        )?;
    }
    Ok(())
}

pub(super) fn insert_release(
    s: &SqliteStore,
    r: &ReleaseRow,
    status: Option<&SourceStatus>,
) -> Result<()> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(db("starting a transaction"))?;
    let event = super::webhooks::release_before(&tx, r, true)?;
    write_release(&tx, r, true).map_err(db("writing a release"))?;
    super::webhooks::queue(&tx, event)?;
    if let Some(st) = status {
        write_status(&tx, &r.pipeline, st).map_err(db("writing a pipeline's source"))?;
    }
    tx.commit().map_err(db("committing a release"))
}

pub(super) fn save_release(s: &SqliteStore, r: &ReleaseRow) -> Result<()> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(db("starting a transaction"))?;
    let event = super::webhooks::release_before(&tx, r, false)?;
    write_release(&tx, r, false).map_err(db("writing a release"))?;
    super::webhooks::queue(&tx, event)?;
    tx.commit().map_err(db("committing a release"))
}

fn with_release_stages(s: &SqliteStore, mut r: ReleaseRow) -> Result<ReleaseRow> {
    r.stages = s.query(
        "reading a release's stages",
        &format!(
            "SELECT {RELEASE_STAGE_COLS} FROM release_stages WHERE release_id = ?1 \
             ORDER BY position"
        ),
        [&r.id],
        release_stage_row,
    )?;
    Ok(r)
}

pub(super) fn release(s: &SqliteStore, id: &str) -> Result<Option<ReleaseRow>> {
    let r = s.query_one(
        "reading a release",
        &format!("SELECT {RELEASE_COLS} FROM releases WHERE id = ?1"),
        [id],
        release_row,
    )?;
    r.map(|r| with_release_stages(s, r)).transpose()
}

pub(super) fn releases(
    s: &SqliteStore,
    pipeline: Option<&str>,
    limit: u32,
) -> Result<Vec<ReleaseRow>> {
    let rows = s.query(
        "listing releases",
        &format!(
            "SELECT {RELEASE_COLS} FROM releases WHERE ?1 IS NULL OR pipeline = ?1 \
             ORDER BY created_ms DESC, rowid DESC LIMIT ?2"
        ),
        params![pipeline, limit],
        release_row,
    )?;
    rows.into_iter()
        .map(|r| with_release_stages(s, r))
        .collect()
}

pub(super) fn active_releases(s: &SqliteStore) -> Result<Vec<ReleaseRow>> {
    let rows = s.query(
        "listing active releases",
        &format!(
            "SELECT {RELEASE_COLS} FROM releases \
             WHERE state IN ('in_progress', 'awaiting_approval') ORDER BY created_ms, rowid"
        ),
        [],
        release_row,
    )?;
    rows.into_iter()
        .map(|r| with_release_stages(s, r))
        .collect()
}
