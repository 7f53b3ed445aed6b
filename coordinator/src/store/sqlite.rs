//! [`Store`] on an embedded SQLite file (WAL journal, foreign keys on), with numbered
//! migrations recorded in a `schema_version` table.
//!
//! One connection behind a `std::sync::Mutex`: SQLite has a single writer anyway, and no
//! lock is held across an `.await` because every method is blocking. Not here: caching,
//! connection pools, or anything PostgreSQL-specific.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::de::DeserializeOwned;

use super::{
    AppRow, CommandRow, DeploymentRow, GroupRow, HostContact, HostRow, RegistrationTokenRow,
    ReportRow, Result, RevisionRow, Store, StoreError,
};
use hoist_protocol::operator::{CommandState, Creator, DeploymentState, RolloutConfig};

/// Each entry moves the schema from version `index` to `index + 1`; never edit a shipped one.
const MIGRATIONS: &[&str] = &[
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
];

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn db(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Db { op, source }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Serialising plain data (maps of strings, vectors, enums) to a string cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

fn from_json<T: DeserializeOwned>(what: &'static str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|source| StoreError::Decode { what, source })
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn deployment_state(s: &str) -> Result<DeploymentState> {
    Ok(match s {
        "pending" => DeploymentState::Pending,
        "in_progress" => DeploymentState::InProgress,
        "succeeded" => DeploymentState::Succeeded,
        "failed" => DeploymentState::Failed,
        "stopped" => DeploymentState::Stopped,
        other => {
            return Err(StoreError::BadValue {
                what: "deployment state",
                value: other.into(),
            })
        }
    })
}

fn command_state(s: &str) -> Result<CommandState> {
    Ok(match s {
        "pending" => CommandState::Pending,
        "in_progress" => CommandState::InProgress,
        "succeeded" => CommandState::Succeeded,
        "failed" => CommandState::Failed,
        "stopped" => CommandState::Stopped,
        "skipped" => CommandState::Skipped,
        other => {
            return Err(StoreError::BadValue {
                what: "command state",
                value: other.into(),
            })
        }
    })
}

fn creator_str(c: Creator) -> &'static str {
    match c {
        Creator::Rollback => "rollback",
        Creator::User | Creator::Unknown => "user",
    }
}

fn rollout(s: &str) -> Result<RolloutConfig> {
    s.parse().map_err(|_| StoreError::BadValue {
        what: "rollout configuration",
        value: s.into(),
    })
}

/// Raw column values read inside rusqlite's row closure; decoded to rows outside it so
/// decoding errors keep their own type.
struct Raw(Vec<rusqlite::types::Value>);

impl Raw {
    fn read(row: &Row<'_>) -> rusqlite::Result<Raw> {
        let n = row.as_ref().column_count();
        (0..n)
            .map(|i| row.get(i))
            .collect::<rusqlite::Result<_>>()
            .map(Raw)
    }
    fn text(&self, i: usize) -> String {
        match self.0.get(i) {
            Some(rusqlite::types::Value::Text(s)) => s.clone(),
            _ => String::new(),
        }
    }
    fn opt_text(&self, i: usize) -> Option<String> {
        match self.0.get(i) {
            Some(rusqlite::types::Value::Text(s)) => Some(s.clone()),
            _ => None,
        }
    }
    fn int(&self, i: usize) -> i64 {
        match self.0.get(i) {
            Some(rusqlite::types::Value::Integer(v)) => *v,
            _ => 0,
        }
    }
    fn opt_int(&self, i: usize) -> Option<i64> {
        match self.0.get(i) {
            Some(rusqlite::types::Value::Integer(v)) => Some(*v),
            _ => None,
        }
    }
}

const GROUP_COLS: &str =
    "id, application, name, tag_filters_json, rollout, auto_rollback, created_ms";
fn group_row(r: Raw) -> Result<GroupRow> {
    Ok(GroupRow {
        id: r.text(0),
        application: r.text(1),
        name: r.text(2),
        tag_filters: from_json("tag filters", &r.text(3))?,
        rollout: rollout(&r.text(4))?,
        auto_rollback: r.int(5) != 0,
        created_ms: u(r.int(6)),
    })
}

const HOST_COLS: &str = "id, name, tags_json, agent_version, secret_sha256, first_seen_ms, \
    last_seen_ms, revoked, requested_name, requested_tags_json";
fn host_row(r: Raw) -> Result<HostRow> {
    Ok(HostRow {
        id: r.text(0),
        name: r.text(1),
        tags: from_json("host tags", &r.text(2))?,
        agent_version: r.text(3),
        secret_sha256: r.text(4),
        first_seen_ms: u(r.int(5)),
        last_seen_ms: u(r.int(6)),
        revoked: r.int(7) != 0,
        requested_name: r.opt_text(8),
        requested_tags: r
            .opt_text(9)
            .map(|t| from_json("requested host tags", &t))
            .transpose()?,
    })
}

const TOKEN_COLS: &str =
    "id, token_sha256, created_ms, expires_ms, max_uses, uses, revoked, allowed_tags_json";
fn token_row(r: Raw) -> Result<RegistrationTokenRow> {
    Ok(RegistrationTokenRow {
        id: r.text(0),
        token_sha256: r.text(1),
        created_ms: u(r.int(2)),
        expires_ms: r.opt_int(3).map(u),
        max_uses: r.opt_int(4).and_then(|v| u32::try_from(v).ok()),
        uses: u32::try_from(r.int(5)).unwrap_or(u32::MAX),
        revoked: r.int(6) != 0,
        allowed_tags: from_json("token tag scope", &r.text(7))?,
    })
}

const DEPLOYMENT_COLS: &str = "id, application, group_id, group_name, revision_id, \
    revision_json, state, creator, rollback_of, rolled_back_by, message, rollout, \
    file_exists_behavior, ignore_application_stop_failures, events_json, appspec_path, \
    created_ms, ended_ms";
fn deployment_row(r: Raw) -> Result<DeploymentRow> {
    Ok(DeploymentRow {
        id: r.text(0),
        application: r.text(1),
        group_id: r.text(2),
        group_name: r.text(3),
        revision_id: r.opt_text(4),
        revision: from_json("revision", &r.text(5))?,
        state: deployment_state(&r.text(6))?,
        creator: if r.text(7) == "rollback" {
            Creator::Rollback
        } else {
            Creator::User
        },
        rollback_of: r.opt_text(8),
        rolled_back_by: r.opt_text(9),
        message: r.opt_text(10),
        rollout: rollout(&r.text(11))?,
        file_exists_behavior: r.opt_text(12),
        ignore_application_stop_failures: r.int(13) != 0,
        events: from_json("deployment events", &r.text(14))?,
        appspec_path: r.opt_text(15),
        created_ms: u(r.int(16)),
        ended_ms: r.opt_int(17).map(u),
    })
}

const COMMAND_COLS: &str = "id, deployment_id, host_id, host_name, position, state, \
    current_event, failed_event, script, exit_code, error_code, message, log_tail, events_json, \
    started_ms, ended_ms, last_report_ms";
fn command_row(r: Raw) -> Result<CommandRow> {
    Ok(CommandRow {
        id: r.text(0),
        deployment_id: r.text(1),
        host_id: r.text(2),
        host_name: r.text(3),
        position: u32::try_from(r.int(4)).unwrap_or(0),
        state: command_state(&r.text(5))?,
        current_event: r.opt_text(6),
        failed_event: r.opt_text(7),
        script: r.opt_text(8),
        exit_code: r.opt_int(9).and_then(|v| i32::try_from(v).ok()),
        error_code: r.opt_text(10),
        message: r.opt_text(11),
        log_tail: r.opt_text(12),
        events: from_json("host events", &r.text(13))?,
        started_ms: r.opt_int(14).map(u),
        ended_ms: r.opt_int(15).map(u),
        last_report_ms: r.opt_int(16).map(u),
    })
}

/// Whether a row is new or replaces its stored self. An update rewrites the row in place
/// and leaves alone the indexes of columns that never change.
#[derive(Clone, Copy)]
enum Write {
    Insert,
    Update,
}

fn write_deployment(conn: &Connection, d: &DeploymentRow, how: Write) -> rusqlite::Result<usize> {
    let sql = match how {
        Write::Insert => format!(
            "INSERT INTO deployments ({DEPLOYMENT_COLS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
        ),
        // Parameters as for the insert; the unchanging ones go unused.
        Write::Update => "UPDATE deployments SET state = ?7, rollback_of = ?9, \
             rolled_back_by = ?10, message = ?11, ended_ms = ?18 WHERE id = ?1"
            .to_owned(),
    };
    conn.prepare_cached(&sql)?.execute(params![
        d.id,
        d.application,
        d.group_id,
        d.group_name,
        d.revision_id,
        to_json(&d.revision),
        d.state.as_str(),
        creator_str(d.creator),
        d.rollback_of,
        d.rolled_back_by,
        d.message,
        d.rollout.to_string(),
        d.file_exists_behavior,
        d.ignore_application_stop_failures,
        to_json(&d.events),
        d.appspec_path,
        i(d.created_ms),
        d.ended_ms.map(i),
    ])
}

fn write_command(conn: &Connection, c: &CommandRow, how: Write) -> rusqlite::Result<usize> {
    let sql = match how {
        Write::Insert => format!(
            "INSERT INTO commands ({COMMAND_COLS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
        ),
        // Parameters as for the insert; the unchanging ones go unused.
        Write::Update => "UPDATE commands SET state = ?6, current_event = ?7, \
             failed_event = ?8, script = ?9, exit_code = ?10, error_code = ?11, message = ?12, \
             log_tail = ?13, events_json = ?14, started_ms = ?15, ended_ms = ?16, \
             last_report_ms = ?17 WHERE id = ?1"
            .to_owned(),
    };
    // Cached: a large deployment writes thousands of rows in one go.
    conn.prepare_cached(&sql)?.execute(params![
        c.id,
        c.deployment_id,
        c.host_id,
        c.host_name,
        c.position,
        c.state.as_str(),
        c.current_event,
        c.failed_event,
        c.script,
        c.exit_code,
        c.error_code,
        c.message,
        c.log_tail,
        to_json(&c.events),
        c.started_ms.map(i),
        c.ended_ms.map(i),
        c.last_report_ms.map(i),
    ])
}

fn insert_host(conn: &Connection, h: &HostRow) -> rusqlite::Result<usize> {
    conn.execute(
        &format!(
            "INSERT INTO hosts ({HOST_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ),
        params![
            h.id,
            h.name,
            to_json(&h.tags),
            h.agent_version,
            h.secret_sha256,
            i(h.first_seen_ms),
            i(h.last_seen_ms),
            h.revoked,
            h.requested_name,
            h.requested_tags.as_ref().map(to_json)
        ],
    )
}

impl SqliteStore {
    /// Opens (creating when missing) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = Connection::open(path).map_err(db("opening the database"))?;
        Self::init(conn)
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> Result<SqliteStore> {
        let conn = Connection::open_in_memory().map_err(db("opening the database"))?;
        Self::init(conn)
    }

    fn init(mut conn: Connection) -> Result<SqliteStore> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db("enabling WAL"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db("setting synchronous"))?;
        // 64 MiB of page cache instead of SQLite's 2 MiB: a large fleet's hosts and a
        // large deployment's commands stay in memory rather than being re-read per query.
        conn.pragma_update(None, "cache_size", -65536)
            .map_err(db("setting the page cache size"))?;
        conn.pragma_update(None, "wal_autocheckpoint", 16384)
            .map_err(db("setting the checkpoint interval"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db("enabling foreign keys"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db("setting the busy timeout"))?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn write_deployment_with(
        &self,
        d: &DeploymentRow,
        commands: &[CommandRow],
        how: Write,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db("starting a transaction"))?;
        write_deployment(&tx, d, how).map_err(db("writing a deployment"))?;
        for c in commands {
            write_command(&tx, c, how).map_err(db("writing a command"))?;
        }
        tx.commit().map_err(db("committing a deployment"))
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-written row behind (SQLite
        // rolls back an unfinished transaction), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn query<T>(
        &self,
        op: &'static str,
        sql: &str,
        args: impl rusqlite::Params,
        decode: fn(Raw) -> Result<T>,
    ) -> Result<Vec<T>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql).map_err(db(op))?;
        let raws = stmt
            .query_map(args, Raw::read)
            .map_err(db(op))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db(op))?;
        raws.into_iter().map(decode).collect()
    }

    fn query_one<T>(
        &self,
        op: &'static str,
        sql: &str,
        args: impl rusqlite::Params,
        decode: fn(Raw) -> Result<T>,
    ) -> Result<Option<T>> {
        Ok(self.query(op, sql, args, decode)?.into_iter().next())
    }
}

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn migrate(conn: &mut Connection) -> Result<()> {
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

impl Store for SqliteStore {
    fn insert_application(&self, app: &AppRow) -> Result<()> {
        self.conn()
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

    fn applications(&self) -> Result<Vec<AppRow>> {
        self.query(
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

    fn application(&self, name: &str) -> Result<Option<AppRow>> {
        self.query_one(
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

    fn insert_group(&self, g: &GroupRow) -> Result<()> {
        self.conn()
            .execute(
                &format!("INSERT INTO deployment_groups ({GROUP_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    g.id,
                    g.application,
                    g.name,
                    to_json(&g.tag_filters),
                    g.rollout.to_string(),
                    g.auto_rollback,
                    i(g.created_ms)
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

    fn groups(&self, application: &str) -> Result<Vec<GroupRow>> {
        self.query(
            "listing deployment groups",
            &format!(
                "SELECT {GROUP_COLS} FROM deployment_groups WHERE application = ?1 ORDER BY name"
            ),
            [application],
            group_row,
        )
    }

    fn group(&self, application: &str, name: &str) -> Result<Option<GroupRow>> {
        self.query_one(
            "reading a deployment group",
            &format!(
                "SELECT {GROUP_COLS} FROM deployment_groups WHERE application = ?1 AND name = ?2"
            ),
            [application, name],
            group_row,
        )
    }

    fn group_by_id(&self, id: &str) -> Result<Option<GroupRow>> {
        self.query_one(
            "reading a deployment group",
            &format!("SELECT {GROUP_COLS} FROM deployment_groups WHERE id = ?1"),
            [id],
            group_row,
        )
    }

    fn insert_registration_token(&self, t: &RegistrationTokenRow) -> Result<()> {
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO registration_tokens ({TOKEN_COLS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                params![
                    t.id,
                    t.token_sha256,
                    i(t.created_ms),
                    t.expires_ms.map(i),
                    t.max_uses,
                    t.uses,
                    t.revoked,
                    to_json(&t.allowed_tags)
                ],
            )
            .map_err(db("inserting a registration token"))?;
        Ok(())
    }

    fn registration_token(&self, token_sha256: &str) -> Result<Option<RegistrationTokenRow>> {
        self.query_one(
            "reading a registration token",
            &format!("SELECT {TOKEN_COLS} FROM registration_tokens WHERE token_sha256 = ?1"),
            [token_sha256],
            token_row,
        )
    }

    fn registration_tokens(&self) -> Result<Vec<RegistrationTokenRow>> {
        self.query(
            "listing registration tokens",
            &format!("SELECT {TOKEN_COLS} FROM registration_tokens ORDER BY created_ms, id"),
            [],
            token_row,
        )
    }

    fn revoke_registration_token(&self, id: &str) -> Result<Option<RegistrationTokenRow>> {
        self.conn()
            .execute(
                "UPDATE registration_tokens SET revoked = 1 WHERE id = ?1",
                [id],
            )
            .map_err(db("revoking a registration token"))?;
        self.query_one(
            "reading a registration token",
            &format!("SELECT {TOKEN_COLS} FROM registration_tokens WHERE id = ?1"),
            [id],
            token_row,
        )
    }

    fn register_host(&self, h: &HostRow, token_id: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db("starting a transaction"))?;
        insert_host(&tx, h).map_err(db("inserting a host"))?;
        tx.execute(
            "UPDATE registration_tokens SET uses = uses + 1 WHERE id = ?1",
            [token_id],
        )
        .map_err(db("counting a registration token's use"))?;
        tx.commit().map_err(db("committing a registration"))
    }

    fn active_host_named(&self, name: &str) -> Result<Option<HostRow>> {
        self.query_one(
            "reading a host by name",
            &format!("SELECT {HOST_COLS} FROM hosts WHERE name = ?1 AND revoked = 0 LIMIT 1"),
            [name],
            host_row,
        )
    }

    fn insert_host(&self, h: &HostRow) -> Result<()> {
        insert_host(&self.conn(), h).map_err(db("inserting a host"))?;
        Ok(())
    }

    fn update_host(&self, h: &HostRow) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE hosts SET name = ?2, tags_json = ?3, agent_version = ?4, \
                 last_seen_ms = max(last_seen_ms, ?5), revoked = ?6, requested_name = ?7, \
                 requested_tags_json = ?8 WHERE id = ?1",
                params![
                    h.id,
                    h.name,
                    to_json(&h.tags),
                    h.agent_version,
                    i(h.last_seen_ms),
                    h.revoked,
                    h.requested_name,
                    h.requested_tags.as_ref().map(to_json)
                ],
            )
            .map_err(db("updating a host"))?;
        Ok(())
    }

    fn host(&self, id: &str) -> Result<Option<HostRow>> {
        self.query_one(
            "reading a host",
            &format!("SELECT {HOST_COLS} FROM hosts WHERE id = ?1"),
            [id],
            host_row,
        )
    }

    fn hosts(&self) -> Result<Vec<HostRow>> {
        self.query(
            "listing hosts",
            &format!("SELECT {HOST_COLS} FROM hosts ORDER BY name, id"),
            [],
            host_row,
        )
    }

    fn insert_revision(&self, r: &RevisionRow) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO revisions (id, application, revision_json, created_ms) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![r.id, r.application, to_json(&r.revision), i(r.created_ms)],
            )
            .map_err(db("inserting a revision"))?;
        Ok(())
    }

    fn revision(&self, id: &str) -> Result<Option<RevisionRow>> {
        self.query_one(
            "reading a revision",
            "SELECT id, application, revision_json, created_ms FROM revisions WHERE id = ?1",
            [id],
            |r| {
                Ok(RevisionRow {
                    id: r.text(0),
                    application: r.text(1),
                    revision: from_json("revision", &r.text(2))?,
                    created_ms: u(r.int(3)),
                })
            },
        )
    }

    fn insert_deployment(&self, d: &DeploymentRow, commands: &[CommandRow]) -> Result<()> {
        self.write_deployment_with(d, commands, Write::Insert)
    }

    fn deployment(&self, id: &str) -> Result<Option<DeploymentRow>> {
        self.query_one(
            "reading a deployment",
            &format!("SELECT {DEPLOYMENT_COLS} FROM deployments WHERE id = ?1"),
            [id],
            deployment_row,
        )
    }

    fn deployments(&self, application: Option<&str>, limit: u32) -> Result<Vec<DeploymentRow>> {
        self.query(
            "listing deployments",
            &format!(
                "SELECT {DEPLOYMENT_COLS} FROM deployments \
                 WHERE ?1 IS NULL OR application = ?1 ORDER BY created_ms DESC, rowid DESC LIMIT ?2"
            ),
            params![application, limit],
            deployment_row,
        )
    }

    fn active_deployments(&self) -> Result<Vec<DeploymentRow>> {
        self.query(
            "listing active deployments",
            &format!(
                "SELECT {DEPLOYMENT_COLS} FROM deployments \
                 WHERE state IN ('pending', 'in_progress') ORDER BY created_ms"
            ),
            [],
            deployment_row,
        )
    }

    fn last_successful_deployment(&self, group_id: &str) -> Result<Option<DeploymentRow>> {
        self.query_one(
            "reading the last successful deployment",
            &format!(
                "SELECT {DEPLOYMENT_COLS} FROM deployments WHERE group_id = ?1 \
                 AND state = 'succeeded' ORDER BY ended_ms DESC, rowid DESC LIMIT 1"
            ),
            [group_id],
            deployment_row,
        )
    }

    fn save_deployment(&self, d: &DeploymentRow, commands: &[CommandRow]) -> Result<()> {
        self.write_deployment_with(d, commands, Write::Update)
    }

    fn commands(&self, deployment_id: &str) -> Result<Vec<CommandRow>> {
        self.query(
            "listing commands",
            &format!(
                "SELECT {COMMAND_COLS} FROM commands WHERE deployment_id = ?1 ORDER BY position"
            ),
            [deployment_id],
            command_row,
        )
    }

    fn command_counts(&self, deployment_id: &str) -> Result<Vec<(CommandState, usize)>> {
        self.query(
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

    fn pending_commands(&self, deployment_id: &str, limit: usize) -> Result<Vec<CommandRow>> {
        self.query(
            "listing pending commands",
            &format!(
                "SELECT {COMMAND_COLS} FROM commands WHERE deployment_id = ?1 \
                 AND state = 'pending' ORDER BY position LIMIT ?2"
            ),
            params![deployment_id, i64::try_from(limit).unwrap_or(i64::MAX)],
            command_row,
        )
    }

    fn command(&self, id: &str) -> Result<Option<CommandRow>> {
        self.query_one(
            "reading a command",
            &format!("SELECT {COMMAND_COLS} FROM commands WHERE id = ?1"),
            [id],
            command_row,
        )
    }

    fn in_progress_command_for_host(&self, host_id: &str) -> Result<Option<CommandRow>> {
        self.query_one(
            "reading a host's command",
            &format!(
                "SELECT {COMMAND_COLS} FROM commands WHERE host_id = ?1 \
                 AND state = 'in_progress' ORDER BY started_ms, rowid LIMIT 1"
            ),
            [host_id],
            command_row,
        )
    }

    fn in_progress_commands(&self) -> Result<Vec<CommandRow>> {
        self.query(
            "listing commands in progress",
            &format!("SELECT {COMMAND_COLS} FROM commands WHERE state = 'in_progress'"),
            [],
            command_row,
        )
    }

    fn succeeded_commands_of_host(
        &self,
        host_id: &str,
    ) -> Result<Vec<(DeploymentRow, CommandRow)>> {
        let commands = self.query(
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
            if let Some(d) = self.deployment(&c.deployment_id)? {
                out.push((d, c));
            }
        }
        Ok(out)
    }

    fn report(&self, command_id: &str, seq: u64) -> Result<Option<ReportRow>> {
        self.query_one(
            "reading a report",
            "SELECT command_id, seq, at_ms, received_ms, body_json FROM reports \
             WHERE command_id = ?1 AND seq = ?2",
            params![command_id, i(seq)],
            |r| {
                Ok(ReportRow {
                    command_id: r.text(0),
                    seq: u(r.int(1)),
                    at_ms: u(r.int(2)),
                    received_ms: u(r.int(3)),
                    body_json: r.text(4),
                })
            },
        )
    }

    fn report_exists(&self, command_id: &str, seq: u64) -> Result<bool> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM reports WHERE command_id = ?1 AND seq = ?2",
                params![command_id, i(seq)],
                |_| Ok(()),
            )
            .optional()
            .map_err(db("reading a report"))?
            .is_some())
    }

    fn insert_reports(&self, reports: &[(ReportRow, CommandRow)]) -> Result<Vec<bool>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db("starting a transaction"))?;
        let mut recorded = Vec::with_capacity(reports.len());
        for (r, command) in reports {
            let inserted = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO reports (command_id, seq, at_ms, received_ms, body_json) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        r.command_id,
                        i(r.seq),
                        i(r.at_ms),
                        i(r.received_ms),
                        r.body_json
                    ])
                })
                .map_err(db("inserting a report"))?;
            if inserted > 0 {
                write_command(&tx, command, Write::Update).map_err(db("writing a command"))?;
            }
            recorded.push(inserted > 0);
        }
        tx.commit().map_err(db("committing reports"))?;
        Ok(recorded)
    }

    fn write_contacts(&self, contacts: &[(String, HostContact)]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db("starting a transaction"))?;
        for (id, c) in contacts {
            match &c.details {
                // What the host says about itself is only a request: its name and tags
                // are the operator's. A request equal to what is set clears it.
                Some(d) => tx
                    .prepare_cached(
                        "UPDATE hosts SET agent_version = ?4, \
                         last_seen_ms = max(last_seen_ms, ?5), \
                         requested_name = CASE WHEN ?2 = name THEN NULL ELSE ?2 END, \
                         requested_tags_json = CASE WHEN ?3 = tags_json THEN NULL ELSE ?3 END \
                         WHERE id = ?1",
                    )
                    .and_then(|mut stmt| {
                        stmt.execute(params![
                            id,
                            d.name,
                            to_json(&d.tags),
                            d.agent_version,
                            i(c.last_seen_ms)
                        ])
                    }),
                None => tx
                    .prepare_cached(
                        "UPDATE hosts SET last_seen_ms = max(last_seen_ms, ?2) WHERE id = ?1",
                    )
                    .and_then(|mut stmt| stmt.execute(params![id, i(c.last_seen_ms)])),
            }
            .map_err(db("updating a host's last contact"))?;
        }
        tx.commit().map_err(db("committing hosts' last contacts"))
    }

    fn reports(&self, command_id: &str) -> Result<Vec<ReportRow>> {
        self.query(
            "listing reports",
            "SELECT command_id, seq, at_ms, received_ms, body_json FROM reports \
             WHERE command_id = ?1 ORDER BY seq",
            [command_id],
            |r| {
                Ok(ReportRow {
                    command_id: r.text(0),
                    seq: u(r.int(1)),
                    at_ms: u(r.int(2)),
                    received_ms: u(r.int(3)),
                    body_json: r.text(4),
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_recorded_and_reopening_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hoist.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.insert_application(&AppRow {
                name: "web".into(),
                created_ms: 5,
            })
            .unwrap();
            let err = s
                .insert_application(&AppRow {
                    name: "web".into(),
                    created_ms: 6,
                })
                .unwrap_err();
            assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.applications().unwrap().len(), 1);
        let version: i64 = s
            .conn()
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let mode: String = s
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_version_2_database_keeps_its_tokens_and_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hoist.db");
        {
            // A database as the coordinator before token limits wrote it.
            let mut conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                .unwrap();
            for (n, sql) in MIGRATIONS.iter().take(2).enumerate() {
                let tx = conn.transaction().unwrap();
                tx.execute_batch(sql).unwrap();
                tx.execute("INSERT INTO schema_version VALUES (?1)", [n as i64 + 1])
                    .unwrap();
                tx.commit().unwrap();
            }
            conn.execute(
                "INSERT INTO registration_tokens (token_sha256, created_ms) VALUES ('ab12', 7)",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO hosts (id, name, tags_json, agent_version, secret_sha256, \
                 first_seen_ms, last_seen_ms) VALUES ('h-1', 'web-1', '{\"role\":\"web\"}', \
                 '0.1.0', 'cd', 1, 2)",
                [],
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let t = s
            .registration_token("ab12")
            .unwrap()
            .expect("the old token");
        assert_eq!(t.id, "t-ab12");
        assert_eq!(
            (t.expires_ms, t.max_uses, t.uses, t.revoked),
            (None, None, 0, false)
        );
        assert!(t.allowed_tags.is_empty());
        let h = s.host("h-1").unwrap().expect("the old host");
        assert_eq!(h.tags.get("role").map(String::as_str), Some("web"));
        assert_eq!((h.requested_name, h.requested_tags), (None, None));
        assert_eq!(
            s.active_host_named("web-1").unwrap().map(|h| h.id),
            Some("h-1".into())
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hoist.db");
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute("INSERT INTO schema_version (version) VALUES (99)", [])
            .unwrap();
        drop(conn);
        let err = SqliteStore::open(&path).err().unwrap();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
            "{err}"
        );
    }
}
