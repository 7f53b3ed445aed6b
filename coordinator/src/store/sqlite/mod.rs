//! [`Store`] on an embedded SQLite file (WAL journal, foreign keys on), with numbered
//! migrations recorded in a `schema_version` table.
//!
//! One connection behind a `std::sync::Mutex`: SQLite has a single writer anyway, and no
//! lock is held across an `.await` because every method is blocking. Not here: caching,
//! connection pools, or anything PostgreSQL-specific.
//!
//! Files: this one (the connection, and the [`Store`] methods, each handed to the file of
//! its concern), [`catalog`] (applications, groups, revisions), [`hosts`] (registration
//! tokens, hosts, contacts), [`deployments`] (deployments and commands), [`leases`]
//! (command leases), [`replicas`] (the coordinators running on the database), [`reports`]
//! (event reports), [`pipelines`] (pipelines and releases), [`sync`] (hosts' standing
//! per group), [`operators`] (operator tokens), [`figures`] (counts for
//! metrics), [`sessions`] (dashboard sessions), [`webhooks`] (webhooks, their outbox and the change
//! capture that fills it), [`schema`] (the numbered migrations and their runner), [`rows`] (rows
//! to and from SQL values).

mod catalog;
mod deployments;
mod figures;
mod hosts;
mod leases;
mod operators;
mod pipelines;
mod replicas;
mod reports;
mod rows;
mod schema;
mod sessions;
mod sync;
mod webhooks;

pub use schema::SCHEMA_VERSION;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use super::{
    AppRow, Changes, Claimed, CommandLease, CommandRow, DeliveryOutcome, DeliveryRow,
    DeploymentRow, EventRow, GroupRow, HostContact, HostRow, HostSyncRow, OperatorTokenRow,
    PipelineRow, RegistrationTokenRow, ReleaseRow, ReplicaRow, ReportRow, Result, RevisionRow,
    SessionRow, Store, WebhookRow,
};
use hoist_protocol::operator::{CommandState, DeploymentState, SourceStatus};
use rows::{db, read, Raw};
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
            .query_map(args, read)
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
    fn insert_webhook(&self, w: &WebhookRow) -> Result<()> {
        webhooks::insert_webhook(self, w)
    }

    fn webhooks(&self) -> Result<Vec<WebhookRow>> {
        webhooks::webhooks(self)
    }

    fn webhook(&self, id: &str) -> Result<Option<WebhookRow>> {
        webhooks::webhook(self, id)
    }

    fn delete_webhook(&self, id: &str) -> Result<bool> {
        webhooks::delete_webhook(self, id)
    }

    fn recent_deliveries(
        &self,
        webhook_id: &str,
        limit: u32,
    ) -> Result<Vec<(DeliveryRow, EventRow)>> {
        webhooks::recent_deliveries(self, webhook_id, limit)
    }

    fn claim_deliveries(
        &self,
        now_ms: u64,
        lease_until_ms: u64,
        skip: &[String],
        per_webhook: usize,
    ) -> Result<Vec<Claimed>> {
        webhooks::claim_deliveries(self, now_ms, lease_until_ms, skip, per_webhook)
    }

    fn finish_delivery(&self, outcome: &DeliveryOutcome) -> Result<()> {
        webhooks::finish_delivery(self, outcome)
    }

    fn prune_deliveries(&self, ended_before_ms: u64) -> Result<u64> {
        webhooks::prune_deliveries(self, ended_before_ms)
    }

    fn insert_application(&self, app: &AppRow) -> Result<()> {
        catalog::insert_application(self, app)
    }

    fn applications(&self) -> Result<Vec<AppRow>> {
        catalog::applications(self)
    }

    fn application(&self, name: &str) -> Result<Option<AppRow>> {
        catalog::application(self, name)
    }

    fn insert_group(&self, g: &GroupRow) -> Result<()> {
        catalog::insert_group(self, g)
    }

    fn groups(&self, application: &str) -> Result<Vec<GroupRow>> {
        catalog::groups(self, application)
    }

    fn group(&self, application: &str, name: &str) -> Result<Option<GroupRow>> {
        catalog::group(self, application, name)
    }

    fn group_by_id(&self, id: &str) -> Result<Option<GroupRow>> {
        catalog::group_by_id(self, id)
    }

    fn all_groups(&self) -> Result<Vec<GroupRow>> {
        catalog::all_groups(self)
    }

    fn update_group(&self, g: &GroupRow) -> Result<()> {
        catalog::update_group(self, g)
    }

    fn insert_registration_token(&self, t: &RegistrationTokenRow) -> Result<()> {
        hosts::insert_registration_token(self, t)
    }

    fn registration_token(&self, token_sha256: &str) -> Result<Option<RegistrationTokenRow>> {
        hosts::registration_token(self, token_sha256)
    }

    fn registration_tokens(&self) -> Result<Vec<RegistrationTokenRow>> {
        hosts::registration_tokens(self)
    }

    fn revoke_registration_token(&self, id: &str) -> Result<Option<RegistrationTokenRow>> {
        hosts::revoke_registration_token(self, id)
    }

    fn deployment_state_counts(&self) -> Result<Vec<(DeploymentState, u64)>> {
        figures::deployment_state_counts(self)
    }

    fn active_command_state_counts(&self) -> Result<Vec<(CommandState, u64)>> {
        figures::active_command_state_counts(self)
    }

    fn insert_operator_token(&self, t: &OperatorTokenRow) -> Result<()> {
        operators::insert(self, t)
    }

    fn operator_token(&self, token_sha256: &str) -> Result<Option<OperatorTokenRow>> {
        operators::by_hash(self, token_sha256)
    }

    fn operator_tokens(&self) -> Result<Vec<OperatorTokenRow>> {
        operators::all(self)
    }

    fn revoke_operator_token(&self, id: &str) -> Result<Option<OperatorTokenRow>> {
        operators::revoke(self, id)
    }

    fn insert_session(&self, session: &SessionRow, now_ms: u64) -> Result<()> {
        sessions::insert(self, session, now_ms)
    }

    fn session(&self, session_sha256: &str) -> Result<Option<SessionRow>> {
        sessions::by_hash(self, session_sha256)
    }

    fn delete_session(&self, session_sha256: &str) -> Result<()> {
        sessions::delete(self, session_sha256)
    }

    fn register_host(&self, h: &HostRow, token_id: &str) -> Result<()> {
        hosts::register_host(self, h, token_id)
    }

    fn active_host_named(&self, name: &str) -> Result<Option<HostRow>> {
        hosts::active_host_named(self, name)
    }

    fn insert_host(&self, h: &HostRow) -> Result<()> {
        hosts::insert_host(self, h)
    }

    fn update_host(&self, h: &HostRow) -> Result<()> {
        hosts::update_host(self, h)
    }

    fn host(&self, id: &str) -> Result<Option<HostRow>> {
        hosts::host(self, id)
    }

    fn hosts(&self) -> Result<Vec<HostRow>> {
        hosts::hosts(self)
    }

    fn insert_revision(&self, r: &RevisionRow) -> Result<()> {
        catalog::insert_revision(self, r)
    }

    fn revision(&self, id: &str) -> Result<Option<RevisionRow>> {
        catalog::revision(self, id)
    }

    fn insert_deployment_with(
        &self,
        d: &DeploymentRow,
        commands: &[CommandRow],
        syncs: &[HostSyncRow],
    ) -> Result<()> {
        deployments::insert_deployment_with(self, d, commands, syncs)
    }

    fn deployment(&self, id: &str) -> Result<Option<DeploymentRow>> {
        deployments::deployment(self, id)
    }

    fn deployments(&self, application: Option<&str>, limit: u32) -> Result<Vec<DeploymentRow>> {
        deployments::deployments(self, application, limit)
    }

    fn active_deployments(&self) -> Result<Vec<DeploymentRow>> {
        deployments::active_deployments(self)
    }

    fn last_successful_deployment(&self, group_id: &str) -> Result<Option<DeploymentRow>> {
        deployments::last_successful_deployment(self, group_id)
    }

    fn save_changes(&self, changes: &Changes<'_>) -> Result<()> {
        deployments::save_changes(self, changes)
    }

    fn command_total(&self, deployment_id: &str) -> Result<u32> {
        deployments::command_total(self, deployment_id)
    }

    fn host_sync(&self, host_id: &str, group_id: &str) -> Result<Option<HostSyncRow>> {
        sync::host_sync(self, host_id, group_id)
    }

    fn host_syncs(&self) -> Result<Vec<HostSyncRow>> {
        sync::host_syncs(self)
    }

    fn host_syncs_of(&self, host_id: &str) -> Result<Vec<HostSyncRow>> {
        sync::host_syncs_of(self, host_id)
    }

    fn host_syncs_among(&self, keys: &[(&str, &str)]) -> Result<Vec<HostSyncRow>> {
        sync::host_syncs_among(self, keys)
    }

    fn save_host_syncs(&self, rows: &[HostSyncRow]) -> Result<()> {
        sync::save_host_syncs(self, rows)
    }

    fn commands(&self, deployment_id: &str) -> Result<Vec<CommandRow>> {
        deployments::commands(self, deployment_id)
    }

    fn command_counts(&self, deployment_id: &str) -> Result<Vec<(CommandState, usize)>> {
        deployments::command_counts(self, deployment_id)
    }

    fn pending_commands(&self, deployment_id: &str, limit: usize) -> Result<Vec<CommandRow>> {
        deployments::pending_commands(self, deployment_id, limit)
    }

    fn command(&self, id: &str) -> Result<Option<CommandRow>> {
        deployments::command(self, id)
    }

    fn commands_among(&self, ids: &[&str]) -> Result<Vec<CommandRow>> {
        deployments::commands_among(self, ids)
    }

    fn in_progress_command_for_host(&self, host_id: &str) -> Result<Option<CommandRow>> {
        deployments::in_progress_command_for_host(self, host_id)
    }

    fn in_progress_commands_for_hosts(&self, host_ids: &[&str]) -> Result<Vec<CommandRow>> {
        deployments::in_progress_commands_for_hosts(self, host_ids)
    }

    fn in_progress_commands(&self) -> Result<Vec<CommandRow>> {
        deployments::in_progress_commands(self)
    }

    fn succeeded_commands_of_host(
        &self,
        host_id: &str,
    ) -> Result<Vec<(DeploymentRow, CommandRow)>> {
        deployments::succeeded_commands_of_host(self, host_id)
    }

    fn report(&self, command_id: &str, seq: u64) -> Result<Option<ReportRow>> {
        reports::report(self, command_id, seq)
    }

    fn reports_among(&self, keys: &[(&str, u64)]) -> Result<Vec<ReportRow>> {
        reports::reports_among(self, keys)
    }

    fn report_exists(&self, command_id: &str, seq: u64) -> Result<bool> {
        reports::report_exists(self, command_id, seq)
    }

    fn insert_reports_with(
        &self,
        reports: &[(ReportRow, CommandRow)],
        syncs: &[HostSyncRow],
    ) -> Result<Vec<bool>> {
        reports::insert_reports_with(self, reports, syncs)
    }

    fn write_contacts(&self, contacts: &[(String, HostContact)]) -> Result<()> {
        hosts::write_contacts(self, contacts)
    }

    fn reports(&self, command_id: &str) -> Result<Vec<ReportRow>> {
        reports::reports(self, command_id)
    }

    fn write_leases(&self, l: &[(String, CommandLease)]) -> Result<()> {
        leases::write_leases(self, l)
    }

    fn command_leases(&self) -> Result<Vec<(String, CommandLease)>> {
        leases::command_leases(self)
    }

    fn drop_ended_leases(&self) -> Result<usize> {
        leases::drop_ended_leases(self)
    }

    fn write_replica(&self, r: &ReplicaRow) -> Result<()> {
        replicas::write_replica(self, r)
    }

    fn replicas(&self, live_since_ms: u64) -> Result<Vec<ReplicaRow>> {
        replicas::replicas(self, live_since_ms)
    }

    fn remove_replica(&self, id: &str, stale_before_ms: u64) -> Result<()> {
        replicas::remove_replica(self, id, stale_before_ms)
    }

    fn save_pipeline(&self, p: &PipelineRow) -> Result<()> {
        pipelines::save_pipeline(self, p)
    }

    fn pipeline(&self, name: &str) -> Result<Option<PipelineRow>> {
        pipelines::pipeline(self, name)
    }

    fn pipelines(&self, application: Option<&str>) -> Result<Vec<PipelineRow>> {
        pipelines::pipelines(self, application)
    }

    fn delete_pipeline(&self, name: &str) -> Result<bool> {
        pipelines::delete_pipeline(self, name)
    }

    fn save_source_status(&self, pipeline: &str, status: &SourceStatus) -> Result<()> {
        pipelines::save_source_status(self, pipeline, status)
    }

    fn insert_release(&self, r: &ReleaseRow, status: Option<&SourceStatus>) -> Result<()> {
        pipelines::insert_release(self, r, status)
    }

    fn save_release(&self, r: &ReleaseRow) -> Result<()> {
        pipelines::save_release(self, r)
    }

    fn release(&self, id: &str) -> Result<Option<ReleaseRow>> {
        pipelines::release(self, id)
    }

    fn releases(&self, pipeline: Option<&str>, limit: u32) -> Result<Vec<ReleaseRow>> {
        pipelines::releases(self, pipeline, limit)
    }

    fn active_releases(&self) -> Result<Vec<ReleaseRow>> {
        pipelines::active_releases(self)
    }
}

#[cfg(test)]
mod tests {
    use super::schema::MIGRATIONS;
    use super::*;
    use crate::store::StoreError;

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
