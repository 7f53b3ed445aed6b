//! The SQL of pipelines (with their stages and source standing) and releases (with their
//! stages) on PostgreSQL. Each write of a pipeline or a release is one transaction over its
//! row and its stages' rows; a list reads every listed row's stages in one more query.
//! Not here: the decoding (`store::rows`, both backends') or which release moves where
//! (`service::pipelines`).

use std::collections::HashMap;

use deadpool_postgres::{GenericClient, Transaction};

use super::rows::{i, pg, read, to_json};
use super::PgStore;
use crate::store::rows::{
    approval, pipeline_row, release_row, release_stage_row, stage_row, Raw, PIPELINE_COLS,
    RELEASE_COLS, RELEASE_STAGE_COLS, STAGE_COLS,
};
use crate::store::{PipelineRow, ReleaseRow, Result};
use hoist_protocol::operator::SourceStatus;

async fn write_status(
    c: &impl GenericClient,
    name: &str,
    st: &SourceStatus,
) -> Result<u64, tokio_postgres::Error> {
    c.execute(
        "UPDATE pipelines SET source_last = $2, source_error = $3, source_checked_ms = $4, \
         source_failures = $5, source_next_ms = $6 WHERE name = $1",
        &[
            &name,
            &st.last,
            &st.error,
            &st.checked_ms.map(i),
            &i64::from(st.failures),
            &i(st.next_ms),
        ],
    )
    .await
}

pub(super) fn save_pipeline(s: &PgStore, p: &PipelineRow) -> Result<()> {
    s.run(async {
        let mut client = s.client("writing a pipeline").await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("starting a transaction"))?;
        tx.execute(
            &format!(
                "INSERT INTO pipelines ({PIPELINE_COLS}) VALUES ($1, $2, $3, $4, $5, NULL, \
                 NULL, NULL, 0, 0) ON CONFLICT (name) DO UPDATE SET application = $2, \
                 source_json = $3, updated_ms = $5"
            ),
            &[
                &p.name,
                &p.application,
                &p.source.as_ref().map(to_json),
                &i(p.created_ms),
                &i(p.updated_ms),
            ],
        )
        .await
        .map_err(pg("writing a pipeline"))?;
        write_status(&tx, &p.name, &p.source_status)
            .await
            .map_err(pg("writing a pipeline's source"))?;
        tx.execute(
            "DELETE FROM pipeline_stages WHERE pipeline = $1",
            &[&p.name],
        )
        .await
        .map_err(pg("replacing a pipeline's stages"))?;
        for (n, st) in p.stages.iter().enumerate() {
            tx.execute(
                &format!(
                    "INSERT INTO pipeline_stages (pipeline, position, {STAGE_COLS}) \
                     VALUES ($1, $2, $3, $4, $5)"
                ),
                &[
                    &p.name,
                    &(n as i64),
                    &st.group,
                    &approval(st.manual_approval),
                    &to_json(&st.variables),
                ],
            )
            .await
            .map_err(pg("writing a pipeline's stage"))?;
        }
        tx.commit().await.map_err(pg("committing a pipeline"))
    })
}

/// Reads `sql` (its first column the key `keys` holds, the rest a stage), grouped by key in
/// the order read.
async fn stages_of(
    s: &PgStore,
    op: &'static str,
    sql: &str,
    keys: &[String],
) -> Result<HashMap<String, Vec<Raw>>> {
    let mut out: HashMap<String, Vec<Raw>> = HashMap::new();
    if keys.is_empty() {
        return Ok(out);
    }
    let client = s.client(op).await?;
    let stmt = client.prepare_cached(sql).await.map_err(pg(op))?;
    for row in client.query(&stmt, &[&keys]).await.map_err(pg(op))? {
        let mut raw = read(&row).map_err(pg(op))?;
        let key = raw.text(0);
        raw.0.remove(0);
        out.entry(key).or_default().push(raw);
    }
    Ok(out)
}

fn with_stages(s: &PgStore, pipelines: Vec<PipelineRow>) -> Result<Vec<PipelineRow>> {
    let names: Vec<String> = pipelines.iter().map(|p| p.name.clone()).collect();
    let mut stages = s.run(stages_of(
        s,
        "reading pipelines' stages",
        &format!(
            "SELECT pipeline, {STAGE_COLS} FROM pipeline_stages WHERE pipeline = ANY($1) \
             ORDER BY pipeline, position"
        ),
        &names,
    ))?;
    pipelines
        .into_iter()
        .map(|mut p| {
            p.stages = stages
                .remove(&p.name)
                .unwrap_or_default()
                .into_iter()
                .map(stage_row)
                .collect::<Result<_>>()?;
            Ok(p)
        })
        .collect()
}

pub(super) fn pipeline(s: &PgStore, name: &str) -> Result<Option<PipelineRow>> {
    let rows = s.query(
        "reading a pipeline",
        &format!("SELECT {PIPELINE_COLS} FROM pipelines WHERE name = $1"),
        &[&name],
        pipeline_row,
    )?;
    Ok(with_stages(s, rows)?.into_iter().next())
}

pub(super) fn pipelines(s: &PgStore, application: Option<&str>) -> Result<Vec<PipelineRow>> {
    let rows = s.query(
        "listing pipelines",
        &format!(
            "SELECT {PIPELINE_COLS} FROM pipelines WHERE $1::text IS NULL OR application = $1 \
             ORDER BY name"
        ),
        &[&application],
        pipeline_row,
    )?;
    with_stages(s, rows)
}

pub(super) fn delete_pipeline(s: &PgStore, name: &str) -> Result<bool> {
    s.run(async {
        let mut client = s.client("deleting a pipeline").await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("starting a transaction"))?;
        tx.execute("DELETE FROM pipeline_stages WHERE pipeline = $1", &[&name])
            .await
            .map_err(pg("deleting a pipeline's stages"))?;
        let n = tx
            .execute("DELETE FROM pipelines WHERE name = $1", &[&name])
            .await
            .map_err(pg("deleting a pipeline"))?;
        tx.commit()
            .await
            .map_err(pg("committing a pipeline's deletion"))?;
        Ok(n > 0)
    })
}

pub(super) fn save_source_status(s: &PgStore, name: &str, st: &SourceStatus) -> Result<()> {
    s.run(async {
        let client = s.client("writing a pipeline's source").await?;
        write_status(&client, name, st)
            .await
            .map_err(pg("writing a pipeline's source"))?;
        Ok(())
    })
}

async fn write_release(
    tx: &Transaction<'_>,
    r: &ReleaseRow,
    insert: bool,
) -> Result<(), tokio_postgres::Error> {
    let sql = if insert {
        format!(
            "INSERT INTO releases ({RELEASE_COLS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )
    } else {
        "UPDATE releases SET pipeline = $2, application = $3, revision_id = $4, \
         revision_json = $5, state = $6, creator = $7, source_ref = $8, message = $9, \
         created_ms = $10, ended_ms = $11 WHERE id = $1"
            .to_owned()
    };
    tx.execute(
        &sql,
        &[
            &r.id,
            &r.pipeline,
            &r.application,
            &r.revision_id,
            &to_json(&r.revision),
            &r.state.as_str(),
            &r.creator,
            &r.source_ref,
            &r.message,
            &i(r.created_ms),
            &r.ended_ms.map(i),
        ],
    )
    .await?;
    tx.execute("DELETE FROM release_stages WHERE release_id = $1", &[&r.id])
        .await?;
    for (n, st) in r.stages.iter().enumerate() {
        tx.execute(
            &format!(
                "INSERT INTO release_stages (release_id, position, {RELEASE_STAGE_COLS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
            ),
            &[
                &r.id,
                &(n as i64),
                &st.group,
                &approval(st.manual_approval),
                &to_json(&st.variables),
                &st.state.as_str(),
                &st.deployment_id,
                &st.message,
                &st.approved_by,
                &st.approved_ms.map(i),
                &st.rejected_by,
                &st.rejected_ms.map(i),
                &st.comment,
                &st.started_ms.map(i),
                &st.ended_ms.map(i),
            ],
        )
        .await?;
    }
    Ok(())
}

pub(super) fn insert_release(
    s: &PgStore,
    r: &ReleaseRow,
    status: Option<&SourceStatus>,
) -> Result<()> {
    s.run(async {
        let mut client = s.client("writing a release").await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("starting a transaction"))?;
        let event = super::webhooks::release_before(&tx, r, true).await?;
        write_release(&tx, r, true)
            .await
            .map_err(pg("writing a release"))?;
        super::webhooks::queue(&tx, event).await?;
        if let Some(st) = status {
            write_status(&tx, &r.pipeline, st)
                .await
                .map_err(pg("writing a pipeline's source"))?;
        }
        tx.commit().await.map_err(pg("committing a release"))
    })
}

pub(super) fn save_release(s: &PgStore, r: &ReleaseRow) -> Result<()> {
    s.run(async {
        let mut client = s.client("writing a release").await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("starting a transaction"))?;
        let event = super::webhooks::release_before(&tx, r, false).await?;
        write_release(&tx, r, false)
            .await
            .map_err(pg("writing a release"))?;
        super::webhooks::queue(&tx, event).await?;
        tx.commit().await.map_err(pg("committing a release"))
    })
}

fn with_release_stages(s: &PgStore, releases: Vec<ReleaseRow>) -> Result<Vec<ReleaseRow>> {
    let ids: Vec<String> = releases.iter().map(|r| r.id.clone()).collect();
    let mut stages = s.run(stages_of(
        s,
        "reading releases' stages",
        &format!(
            "SELECT release_id, {RELEASE_STAGE_COLS} FROM release_stages \
             WHERE release_id = ANY($1) ORDER BY release_id, position"
        ),
        &ids,
    ))?;
    releases
        .into_iter()
        .map(|mut r| {
            r.stages = stages
                .remove(&r.id)
                .unwrap_or_default()
                .into_iter()
                .map(release_stage_row)
                .collect::<Result<_>>()?;
            Ok(r)
        })
        .collect()
}

pub(super) fn release(s: &PgStore, id: &str) -> Result<Option<ReleaseRow>> {
    let rows = s.query(
        "reading a release",
        &format!("SELECT {RELEASE_COLS} FROM releases WHERE id = $1"),
        &[&id],
        release_row,
    )?;
    Ok(with_release_stages(s, rows)?.into_iter().next())
}

pub(super) fn releases(s: &PgStore, pipeline: Option<&str>, limit: u32) -> Result<Vec<ReleaseRow>> {
    let rows = s.query(
        "listing releases",
        &format!(
            "SELECT {RELEASE_COLS} FROM releases WHERE $1::text IS NULL OR pipeline = $1 \
             ORDER BY created_ms DESC, seq DESC LIMIT $2"
        ),
        &[&pipeline, &i64::from(limit)],
        release_row,
    )?;
    with_release_stages(s, rows)
}

pub(super) fn active_releases(s: &PgStore) -> Result<Vec<ReleaseRow>> {
    let rows = s.query(
        "listing active releases",
        &format!(
            "SELECT {RELEASE_COLS} FROM releases \
             WHERE state IN ('in_progress', 'awaiting_approval') ORDER BY created_ms, seq"
        ),
        &[],
        release_row,
    )?;
    with_release_stages(s, rows)
}
