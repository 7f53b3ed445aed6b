//! The SQL of pipelines (with their stages and source standing) and releases (with their
//! stages). Each write of a pipeline or a release is one transaction over its row and its
//! stages' rows. Not here: which release moves where (`service::pipelines`).

use rusqlite::{params, Connection};

use super::rows::{db, from_json, i, to_json, u, Raw};
use super::SqliteStore;
use crate::store::{
    PipelineRow, PipelineStageRow, ReleaseRow, ReleaseStageRow, Result, StoreError,
};
use hoist_protocol::operator::{PipelineSource, ReleaseState, SourceStatus, StageState};

const PIPELINE_COLS: &str = "name, application, source_json, created_ms, updated_ms, \
    source_last, source_error, source_checked_ms, source_failures, source_next_ms";
const STAGE_COLS: &str = "group_name, approval, variables_json";
const RELEASE_COLS: &str = "id, pipeline, application, revision_id, revision_json, state, \
    creator, source_ref, message, created_ms, ended_ms";
const RELEASE_STAGE_COLS: &str = "group_name, approval, variables_json, state, deployment_id, \
    message, approved_by, approved_ms, rejected_by, rejected_ms, comment, started_ms, ended_ms";

fn release_state(s: &str) -> Result<ReleaseState> {
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

fn stage_state(s: &str) -> Result<StageState> {
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

fn approval(manual: bool) -> Option<&'static str> {
    manual.then_some("manual")
}

fn pipeline_row(r: Raw) -> Result<PipelineRow> {
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

fn stage_row(r: Raw) -> Result<PipelineStageRow> {
    Ok(PipelineStageRow {
        group: r.text(0),
        manual_approval: r.opt_text(1).is_some(),
        variables: from_json("stage variables", &r.text(2))?,
    })
}

fn release_row(r: Raw) -> Result<ReleaseRow> {
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

fn release_stage_row(r: Raw) -> Result<ReleaseStageRow> {
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
    write_release(&tx, r, true).map_err(db("writing a release"))?;
    if let Some(st) = status {
        write_status(&tx, &r.pipeline, st).map_err(db("writing a pipeline's source"))?;
    }
    tx.commit().map_err(db("committing a release"))
}

pub(super) fn save_release(s: &SqliteStore, r: &ReleaseRow) -> Result<()> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(db("starting a transaction"))?;
    write_release(&tx, r, false).map_err(db("writing a release"))?;
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
