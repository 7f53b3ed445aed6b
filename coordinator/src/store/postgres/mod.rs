//! [`Store`] on PostgreSQL, for several coordinator replicas on one database: the
//! tokio-postgres client behind a deadpool pool, with numbered migrations recorded in a
//! `schema_version` table (its own list, `schema`).
//!
//! The trait is blocking and called from blocking threads (`spawn_blocking`); each method
//! runs its queries on the runtime whose [`Handle`] the store was opened with
//! (`Handle::block_on`, never from inside an async task), and the pool's connections are
//! driven by that runtime. Not here: caching, or rules (the service's).
//!
//! Files: this one (the pool, the query helpers and the [`Store`] methods, each handed to
//! the file of its concern), [`catalog`] (applications, groups, revisions), [`hosts`]
//! (registration tokens, hosts, contacts), [`deployments`] (deployments and commands),
//! [`leases`] (command leases), [`pipelines`] (pipelines and releases), [`replicas`] (the coordinators running on the database),
//! [`reports`] (event reports), [`sync`] (hosts' standing per group), [`webhooks`] (webhooks, their outbox and the
//! change capture that fills it), [`schema`] (the
//! numbered migrations and their runner), [`rows`] (rows to and from PostgreSQL values),
//! [`locks`] (the decision lock replicas share), [`notices`] (`LISTEN`/`NOTIFY` between
//! replicas), [`url`] (the database URL, printed without
//! its password).

mod catalog;
mod deployments;
mod hosts;
mod leases;
mod locks;
mod notices;
mod operators;
mod pipelines;
mod replicas;
mod reports;
mod rows;
mod schema;
mod sessions;
mod sync;
mod url;
mod webhooks;

pub use schema::SCHEMA_VERSION;
pub use url::DatabaseUrl;

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;

use super::rows::Raw;
use super::{
    AppRow, Changes, Claimed, CommandLease, CommandRow, DecisionLock, DeliveryOutcome, DeliveryRow,
    DeploymentRow, EventRow, GroupRow, HostContact, HostRow, HostSyncRow, Notice, NoticeHandler,
    OperatorTokenRow, PipelineRow, RegistrationTokenRow, ReleaseRow, ReplicaRow, ReportRow, Result,
    RevisionRow, SessionRow, Store, StoreError, WebhookRow,
};
use hoist_protocol::operator::{CommandState, DeploymentState, SourceStatus};
use rows::{pg, read};

/// Connections per replica: the report writer, the contacts writer, the decision lock and
/// the requests' reads, with room to spare.
const POOL_SIZE: usize = 16;

/// How long a request waits for a free connection, or for a new one to open.
const POOL_WAIT: Duration = Duration::from_secs(30);

pub struct PgStore {
    pool: Pool,
    rt: Handle,
    /// For the listening connection, which is not pooled.
    config: tokio_postgres::Config,
    /// This store's mark on its notices, so that it ignores its own.
    origin: String,
}

impl PgStore {
    /// Connects to the database (checking that it answers) and brings its schema up to
    /// date; a database newer than this build is refused untouched. Blocking: call it off
    /// the runtime's worker threads.
    pub fn open(url: &DatabaseUrl, rt: Handle) -> Result<PgStore> {
        let manager = Manager::from_config(
            url.config().clone(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::BadUrl(format!("{url}: {e}")))?;
        let store = PgStore {
            pool,
            rt,
            config: url.config().clone(),
            origin: hex::encode(rand::random::<[u8; 8]>()),
        };
        store.run(async {
            let mut client = store.client("connecting to the database").await?;
            schema::migrate(&mut client).await
        })?;
        Ok(store)
    }

    /// Runs `fut` on the store's runtime, waiting for it on this (blocking) thread.
    fn run<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        self.rt.block_on(fut)
    }

    async fn client(&self, op: &'static str) -> Result<Object> {
        self.pool
            .get()
            .await
            .map_err(|source| StoreError::Pool { op, source })
    }

    fn query<T>(
        &self,
        op: &'static str,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
        decode: fn(Raw) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.run(async {
            let client = self.client(op).await?;
            let stmt = client.prepare_cached(sql).await.map_err(pg(op))?;
            let rows = client.query(&stmt, args).await.map_err(pg(op))?;
            let raws = rows
                .iter()
                .map(read)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(pg(op))?;
            raws.into_iter().map(decode).collect()
        })
    }

    fn query_one<T>(
        &self,
        op: &'static str,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
        decode: fn(Raw) -> Result<T>,
    ) -> Result<Option<T>> {
        Ok(self.query(op, sql, args, decode)?.into_iter().next())
    }

    /// One statement on its own (its own transaction).
    fn execute(&self, op: &'static str, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        self.run(async {
            let client = self.client(op).await?;
            let stmt = client.prepare_cached(sql).await.map_err(pg(op))?;
            client.execute(&stmt, args).await.map_err(pg(op))
        })
    }
}

impl Store for PgStore {
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

    fn lock_decisions(&self) -> Result<Box<dyn DecisionLock + '_>> {
        Ok(Box::new(locks::take(self)?))
    }

    fn publish(&self, notice: &Notice) -> Result<()> {
        notices::publish(self, notice)
    }

    fn listen(&self, handler: NoticeHandler) -> Result<()> {
        notices::listen(self, handler)
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

    fn deployment_state_counts(&self) -> Result<Vec<(DeploymentState, u64)>> {
        operators::deployment_state_counts(self)
    }

    fn active_command_state_counts(&self) -> Result<Vec<(CommandState, u64)>> {
        operators::active_command_state_counts(self)
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
}
