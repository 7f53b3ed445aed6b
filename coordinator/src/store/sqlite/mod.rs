//! [`Store`] on an embedded SQLite file (WAL journal, foreign keys on), with numbered
//! migrations recorded in a `schema_version` table.
//!
//! One connection behind a `std::sync::Mutex`: SQLite has a single writer anyway, and no
//! lock is held across an `.await` because every method is blocking. Not here: caching,
//! connection pools, or anything PostgreSQL-specific.
//!
//! Files: this one (the connection and the [`Store`] methods), [`schema`] (the numbered
//! migrations and their runner), [`rows`] (rows to and from SQL values).

mod rows;
mod schema;

pub use schema::SCHEMA_VERSION;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use super::{
    AppRow, CommandRow, DeploymentRow, GroupRow, HostContact, HostRow, RegistrationTokenRow,
    ReportRow, Result, RevisionRow, Store, StoreError,
};
use hoist_protocol::operator::CommandState;
use rows::{
    command_row, command_state, db, deployment_row, from_json, group_row, host_row, i, insert_host,
    is_unique_violation, to_json, token_row, u, write_command, write_deployment, Raw, Write,
    COMMAND_COLS, DEPLOYMENT_COLS, GROUP_COLS, HOST_COLS, TOKEN_COLS,
};
use schema::migrate;

pub struct SqliteStore {
    conn: Mutex<Connection>,
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
    use super::schema::MIGRATIONS;
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
