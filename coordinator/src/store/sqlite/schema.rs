//! The SQLite schema as numbered migrations, each recorded in `schema_version` when it
//! has run, and the runner that brings a database up to date (refusing one newer than this
//! build). Not here: reading or writing rows (`rows` and the store's methods).

use rusqlite::{params, Connection};

use crate::store::{Result, StoreError};

use super::rows::db;

/// Each entry moves the schema from version `index` to `index + 1`; never edit a shipped one.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE applications (
    name TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
);
CREATE TABLE deployment_groups (
    id TEXT PRIMARY KEY,
    application TEXT NOT NULL REFERENCES applications(name),
    name TEXT NOT NULL,
    tag_filters_json TEXT NOT NULL,
    rollout TEXT NOT NULL,
    auto_rollback INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE (application, name)
);
CREATE TABLE registration_tokens (
    token_sha256 TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
);
CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tags_json TEXT NOT NULL,
    agent_version TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE revisions (
    id TEXT PRIMARY KEY,
    application TEXT NOT NULL REFERENCES applications(name),
    revision_json TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
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
    ignore_application_stop_failures INTEGER NOT NULL,
    events_json TEXT NOT NULL,
    appspec_path TEXT,
    created_ms INTEGER NOT NULL,
    ended_ms INTEGER
);
CREATE INDEX deployments_by_group ON deployments (group_id, state);
CREATE INDEX deployments_by_app ON deployments (application, created_ms);
CREATE TABLE commands (
    id TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL REFERENCES deployments(id),
    host_id TEXT NOT NULL,
    host_name TEXT NOT NULL,
    position INTEGER NOT NULL,
    state TEXT NOT NULL,
    current_event TEXT,
    failed_event TEXT,
    script TEXT,
    exit_code INTEGER,
    error_code TEXT,
    message TEXT,
    log_tail TEXT,
    events_json TEXT NOT NULL,
    started_ms INTEGER,
    ended_ms INTEGER,
    last_report_ms INTEGER
);
CREATE INDEX commands_by_deployment ON commands (deployment_id, position);
CREATE INDEX commands_by_host ON commands (host_id, state);
CREATE TABLE reports (
    command_id TEXT NOT NULL REFERENCES commands(id),
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    body_json TEXT NOT NULL,
    PRIMARY KEY (command_id, seq)
);
"#,
    r#"
-- Rollout decisions count a deployment's commands by state and take its first pending
-- ones: both from this index alone. It also serves listing a deployment's commands, so
-- the older index goes: one less B-tree to update per command written.
CREATE INDEX commands_by_deployment_state ON commands (deployment_id, state, position);
DROP INDEX commands_by_deployment;
"#,
    r#"
-- Registration tokens get an id (to list and revoke them), an expiry, a use limit and a
-- tag scope. Tokens of older databases keep working: no expiry, no limit, any tags.
ALTER TABLE registration_tokens ADD COLUMN id TEXT;
ALTER TABLE registration_tokens ADD COLUMN expires_ms INTEGER;
ALTER TABLE registration_tokens ADD COLUMN max_uses INTEGER;
ALTER TABLE registration_tokens ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE registration_tokens ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE registration_tokens ADD COLUMN allowed_tags_json TEXT NOT NULL DEFAULT '{}';
UPDATE registration_tokens SET id = 't-' || substr(token_sha256, 1, 16) WHERE id IS NULL;
CREATE UNIQUE INDEX registration_tokens_by_id ON registration_tokens (id);
-- What a host's polls ask for when it differs from what an operator set.
ALTER TABLE hosts ADD COLUMN requested_name TEXT;
ALTER TABLE hosts ADD COLUMN requested_tags_json TEXT;
CREATE INDEX hosts_by_name ON hosts (name, revoked);
"#,
    r#"
-- Fleet convergence. A group's options: catch-up (on) and a bake between batches; its
-- target, the deployment whose revision its hosts should run (the last successful one).
ALTER TABLE deployment_groups ADD COLUMN catch_up INTEGER NOT NULL DEFAULT 1;
ALTER TABLE deployment_groups ADD COLUMN bake_secs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deployment_groups ADD COLUMN target_deployment_id TEXT;
UPDATE deployment_groups SET target_deployment_id = (
    SELECT d.id FROM deployments d WHERE d.group_id = deployment_groups.id
    AND d.state = 'succeeded' ORDER BY d.ended_ms DESC, d.rowid DESC LIMIT 1);
ALTER TABLE deployments ADD COLUMN bake_secs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deployments ADD COLUMN bake_until_ms INTEGER;
-- Where each host stands in each group: what it runs there and its catch-up retries.
CREATE TABLE host_sync (
    host_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    revision_id TEXT,
    revision_json TEXT,
    deployment_id TEXT,
    hold INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    pending_command_id TEXT,
    failed_state TEXT,
    failed_event TEXT,
    error TEXT,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (host_id, group_id)
);
-- What each host runs per group, from its newest succeeded command there.
INSERT INTO host_sync (host_id, group_id, revision_id, revision_json, deployment_id, updated_ms)
SELECT c.host_id, d.group_id, d.revision_id, d.revision_json, d.id, max(coalesce(c.ended_ms, 0))
FROM commands c JOIN deployments d ON d.id = c.deployment_id
WHERE c.state = 'succeeded' GROUP BY c.host_id, d.group_id;
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
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    source_last TEXT,
    source_error TEXT,
    source_checked_ms INTEGER,
    source_failures INTEGER NOT NULL DEFAULT 0,
    source_next_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE pipeline_stages (
    pipeline TEXT NOT NULL REFERENCES pipelines(name) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    group_name TEXT NOT NULL,
    approval TEXT,
    variables_json TEXT NOT NULL,
    PRIMARY KEY (pipeline, position)
);
-- A release: one revision through one pipeline, its stages copied from the pipeline when
-- it was created.
CREATE TABLE releases (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    application TEXT NOT NULL,
    revision_id TEXT NOT NULL,
    revision_json TEXT NOT NULL,
    state TEXT NOT NULL,
    creator TEXT NOT NULL,
    source_ref TEXT,
    message TEXT,
    created_ms INTEGER NOT NULL,
    ended_ms INTEGER
);
CREATE INDEX releases_by_pipeline ON releases (pipeline, created_ms);
CREATE INDEX releases_by_state ON releases (state, created_ms);
CREATE TABLE release_stages (
    release_id TEXT NOT NULL REFERENCES releases(id),
    position INTEGER NOT NULL,
    group_name TEXT NOT NULL,
    approval TEXT,
    variables_json TEXT NOT NULL,
    state TEXT NOT NULL,
    deployment_id TEXT,
    message TEXT,
    approved_by TEXT,
    approved_ms INTEGER,
    rejected_by TEXT,
    rejected_ms INTEGER,
    comment TEXT,
    started_ms INTEGER,
    ended_ms INTEGER,
    PRIMARY KEY (release_id, position)
);
"#,
    r#"
-- Command leases, in the store so that any coordinator expires a command handed out by
-- another: when it was first handed to its host, and its last heartbeat.
CREATE TABLE command_leases (
    command_id TEXT PRIMARY KEY,
    delivered_ms INTEGER NOT NULL,
    beat_ms INTEGER NOT NULL
);
-- The coordinators running on this database, with their heartbeats.
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    listen TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    beat_ms INTEGER NOT NULL
);
"#,
    r#"
-- Operator tokens with a role (admin, deployer or viewer) and an optional name, stored
-- hashed. The configured operator token is not one of them: it stays admin.
CREATE TABLE operator_tokens (
    id TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    name TEXT,
    created_ms INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
"#,
    r#"
-- Dashboard sessions: the cookie's and the operator token's sha256, never either secret.
CREATE TABLE sessions (
    session_sha256 TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_ms);
"#,
    r#"
-- Webhooks and their outbox. An event is written with the state change that causes it, one
-- delivery per subscribed webhook; deliveries are claimed (lease_until_ms), tried, retried
-- and ended (delivered or given up). The secret is kept as given: bodies are signed with it.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    application TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_ms INTEGER NOT NULL
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
    at_ms INTEGER NOT NULL
);
CREATE TABLE webhook_deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error TEXT,
    next_attempt_ms INTEGER NOT NULL,
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    ended_ms INTEGER
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (status, webhook_id, subject, seq);
CREATE INDEX webhook_deliveries_of ON webhook_deliveries (webhook_id, seq);
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);
"#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(db("creating the schema version table"))?;
    let current: i64 = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .map_err(db("reading the schema version"))?
        .unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction().map_err(db("starting a migration"))?;
        tx.execute_batch(sql).map_err(db("migrating the schema"))?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            params![index as i64 + 1],
        )
        .map_err(db("recording the schema version"))?;
        tx.commit().map_err(db("committing a migration"))?;
    }
    Ok(())
}
