//! The PostgreSQL schema as numbered migrations (its own list: the same tables and
//! concepts as SQLite's, written the PostgreSQL way), each recorded in `schema_version`,
//! and the runner that brings a database up to date or refuses one newer than this build.
//!
//! The runner works in one transaction holding an advisory lock, so replicas starting
//! together migrate once, and a refused database is left exactly as it was (PostgreSQL's
//! DDL is transactional). Not here: reading or writing rows.

use deadpool_postgres::Client;

use super::rows::pg;
use crate::store::{Result, StoreError};

/// Each entry moves the schema from version `index` to `index + 1`; never edit a shipped one.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE applications (
    name TEXT PRIMARY KEY,
    created_ms BIGINT NOT NULL
);
CREATE TABLE deployment_groups (
    id TEXT PRIMARY KEY,
    application TEXT NOT NULL REFERENCES applications(name),
    name TEXT NOT NULL,
    tag_filters_json TEXT NOT NULL,
    rollout TEXT NOT NULL,
    auto_rollback BOOLEAN NOT NULL,
    created_ms BIGINT NOT NULL,
    catch_up BOOLEAN NOT NULL DEFAULT TRUE,
    bake_secs BIGINT NOT NULL DEFAULT 0,
    target_deployment_id TEXT,
    UNIQUE (application, name)
);
CREATE TABLE registration_tokens (
    id TEXT NOT NULL UNIQUE,
    token_sha256 TEXT PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT,
    max_uses BIGINT,
    uses BIGINT NOT NULL DEFAULT 0,
    revoked BOOLEAN NOT NULL DEFAULT FALSE,
    allowed_tags_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tags_json TEXT NOT NULL,
    agent_version TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT FALSE,
    requested_name TEXT,
    requested_tags_json TEXT
);
CREATE INDEX hosts_by_name ON hosts (name, revoked);
CREATE TABLE revisions (
    id TEXT PRIMARY KEY,
    application TEXT NOT NULL REFERENCES applications(name),
    revision_json TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
-- `seq` orders rows inserted in the same millisecond, as SQLite's rowid does.
CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    seq BIGSERIAL NOT NULL,
    application TEXT NOT NULL REFERENCES applications(name),
    group_id TEXT NOT NULL REFERENCES deployment_groups(id),
    group_name TEXT NOT NULL,
    revision_id TEXT,
    revision_json TEXT NOT NULL,
    state TEXT NOT NULL,
    creator TEXT NOT NULL,
    rollback_of TEXT,
    rolled_back_by TEXT,
    message TEXT,
    rollout TEXT NOT NULL,
    file_exists_behavior TEXT,
    ignore_application_stop_failures BOOLEAN NOT NULL,
    events_json TEXT NOT NULL,
    appspec_path TEXT,
    created_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    bake_secs BIGINT NOT NULL DEFAULT 0,
    bake_until_ms BIGINT
);
CREATE INDEX deployments_by_group ON deployments (group_id, state);
CREATE INDEX deployments_by_app ON deployments (application, created_ms);
CREATE INDEX deployments_by_state ON deployments (state);
CREATE TABLE commands (
    id TEXT PRIMARY KEY,
    seq BIGSERIAL NOT NULL,
    deployment_id TEXT NOT NULL REFERENCES deployments(id),
    host_id TEXT NOT NULL,
    host_name TEXT NOT NULL,
    position BIGINT NOT NULL,
    state TEXT NOT NULL,
    current_event TEXT,
    failed_event TEXT,
    script TEXT,
    exit_code BIGINT,
    error_code TEXT,
    message TEXT,
    log_tail TEXT,
    events_json TEXT NOT NULL,
    started_ms BIGINT,
    ended_ms BIGINT,
    last_report_ms BIGINT
);
CREATE INDEX commands_by_deployment_state ON commands (deployment_id, state, position);
CREATE INDEX commands_by_host ON commands (host_id, state);
CREATE TABLE reports (
    command_id TEXT NOT NULL REFERENCES commands(id),
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    body_json TEXT NOT NULL,
    PRIMARY KEY (command_id, seq)
);
CREATE TABLE host_sync (
    host_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    revision_id TEXT,
    revision_json TEXT,
    deployment_id TEXT,
    hold BOOLEAN NOT NULL DEFAULT FALSE,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL DEFAULT 0,
    pending_command_id TEXT,
    failed_state TEXT,
    failed_event TEXT,
    error TEXT,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (host_id, group_id)
);
"#,
    r#"
-- Command leases, in the store so that any replica expires a command handed out by
-- another: when it was first handed to its host, and its last heartbeat.
CREATE TABLE command_leases (
    command_id TEXT PRIMARY KEY,
    delivered_ms BIGINT NOT NULL,
    beat_ms BIGINT NOT NULL
);
-- The replicas running on this database, with their heartbeats.
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    listen TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    beat_ms BIGINT NOT NULL
);
"#,
    r#"
-- Pipelines. A deployment carries variables for its hooks, and a pipeline's deployment
-- names the release whose stage it deploys.
ALTER TABLE deployments ADD COLUMN variables_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE deployments ADD COLUMN release_id TEXT;
-- A pipeline: an application's ordered stages, an optional source and where that source
-- stands (the last commit or object version turned into a release, the last error, the
-- failures in a row and the earliest next look).
CREATE TABLE pipelines (
    name TEXT PRIMARY KEY,
    application TEXT NOT NULL REFERENCES applications(name),
    source_json TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    source_last TEXT,
    source_error TEXT,
    source_checked_ms BIGINT,
    source_failures BIGINT NOT NULL DEFAULT 0,
    source_next_ms BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE pipeline_stages (
    pipeline TEXT NOT NULL REFERENCES pipelines(name) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    group_name TEXT NOT NULL,
    approval TEXT,
    variables_json TEXT NOT NULL,
    PRIMARY KEY (pipeline, position)
);
-- A release: one revision through one pipeline, its stages copied from the pipeline when
-- it was created. `seq` orders releases made in the same millisecond.
CREATE TABLE releases (
    id TEXT PRIMARY KEY,
    seq BIGSERIAL NOT NULL,
    pipeline TEXT NOT NULL,
    application TEXT NOT NULL,
    revision_id TEXT NOT NULL,
    revision_json TEXT NOT NULL,
    state TEXT NOT NULL,
    creator TEXT NOT NULL,
    source_ref TEXT,
    message TEXT,
    created_ms BIGINT NOT NULL,
    ended_ms BIGINT
);
CREATE INDEX releases_by_pipeline ON releases (pipeline, created_ms);
CREATE INDEX releases_by_state ON releases (state, created_ms);
CREATE TABLE release_stages (
    release_id TEXT NOT NULL REFERENCES releases(id),
    position BIGINT NOT NULL,
    group_name TEXT NOT NULL,
    approval TEXT,
    variables_json TEXT NOT NULL,
    state TEXT NOT NULL,
    deployment_id TEXT,
    message TEXT,
    approved_by TEXT,
    approved_ms BIGINT,
    rejected_by TEXT,
    rejected_ms BIGINT,
    comment TEXT,
    started_ms BIGINT,
    ended_ms BIGINT,
    PRIMARY KEY (release_id, position)
);
"#,
    r#"
-- SQLite's 7 and 8: operator tokens with a role (admin, deployer or viewer) and an optional
-- name, stored hashed (the configured operator token is not one of them: it stays admin);
-- dashboard sessions, the cookie's and the operator token's sha256, never either secret.
CREATE TABLE operator_tokens (
    id TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    name TEXT,
    created_ms BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE sessions (
    session_sha256 TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_ms);
"#,
    r#"
-- SQLite's 9: webhooks and their outbox. An event is written with the state change that
-- causes it, one delivery per subscribed webhook; a delivery is claimed by one replica
-- (FOR UPDATE SKIP LOCKED, then lease_until_ms), tried, retried and ended. The secret is
-- kept as given: bodies are signed with it.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    application TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX webhooks_by_application ON webhooks (application);
CREATE TABLE webhook_events (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    application TEXT NOT NULL,
    group_name TEXT,
    deployment_id TEXT,
    release_id TEXT,
    host TEXT,
    state TEXT NOT NULL,
    summary TEXT NOT NULL,
    page TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE TABLE webhook_deliveries (
    seq BIGSERIAL PRIMARY KEY,
    webhook_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_status BIGINT,
    last_error TEXT,
    next_attempt_ms BIGINT NOT NULL,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    ended_ms BIGINT
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (status, webhook_id, subject, seq);
CREATE INDEX webhook_deliveries_of ON webhook_deliveries (webhook_id, seq);
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);
"#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock key migrations hold (`locks::DECISION_LOCK` is the other key).
pub(super) const MIGRATION_LOCK: i64 = 0x686f_6973_7400_0001;

pub(super) async fn migrate(client: &mut Client) -> Result<()> {
    let tx = client
        .transaction()
        .await
        .map_err(pg("starting a migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg("waiting for other coordinators' migrations"))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .await
        .map_err(pg("creating the schema version table"))?;
    let current: i64 = tx
        .query_one("SELECT MAX(version) FROM schema_version", &[])
        .await
        .map_err(pg("reading the schema version"))?
        .try_get::<_, Option<i64>>(0)
        .map_err(pg("reading the schema version"))?
        .unwrap_or(0);
    if current > SCHEMA_VERSION {
        // Dropping the transaction rolls it back: the database is left untouched.
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql)
            .await
            .map_err(pg("migrating the schema"))?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(index as i64 + 1)],
        )
        .await
        .map_err(pg("recording the schema version"))?;
    }
    tx.commit().await.map_err(pg("committing the migrations"))
}
