//! The coordinator's durable state behind one interface: applications, deployment groups,
//! hosts, registration tokens, operator tokens, revisions, deployments, commands, event reports, and
//! pipelines with their releases (row types in [`pipelines`]).
//!
//! [`Store`] is what the service calls; [`sqlite::SqliteStore`] is the embedded
//! implementation (one file, WAL), [`postgres::PgStore`] the one several coordinator
//! replicas share. Both decode rows through [`rows`].
//!
//! Deliberately not here: any rule. The store saves and loads rows; which rows change and
//! why is the service's business, and it serialises its read-modify-write sequences itself
//! (with [`Store::lock_decisions`], which serialises them across every coordinator on the
//! same database).
//! Every method is blocking: async callers run them on `spawn_blocking`.

mod pipelines;
pub mod postgres;
mod rows;
pub mod sqlite;
#[cfg(test)]
mod tests;
pub mod webhooks;

use std::collections::BTreeMap;

use hoist_protocol::agent::Revision;
use hoist_protocol::operator::{
    CommandState, Creator, DeploymentState, HostEvent, Role, RolloutConfig, SourceStatus, TagFilter,
};
use hoist_protocol::signature::SignedManifest;

pub use pipelines::{PipelineRow, PipelineStageRow, ReleaseRow, ReleaseStageRow};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use webhooks::{Claimed, DeliveryOutcome, DeliveryRow, EventRow, WebhookRow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error while {op}")]
    Db {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database error while {op}")]
    Postgres {
        op: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("no database connection while {op}")]
    Pool {
        op: &'static str,
        #[source]
        source: deadpool_postgres::PoolError,
    },
    #[error("{0}")]
    BadUrl(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("decoding the stored {what}")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("stored {what} has an unknown value {value:?}")]
    BadValue { what: &'static str, value: String },
    #[error("creating the data directory {path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database schema version {found} is newer than this coordinator's {supported}")]
    SchemaTooNew { found: i64, supported: i64 },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRow {
    pub name: String,
    pub created_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub id: String,
    pub application: String,
    pub name: String,
    pub tag_filters: Vec<TagFilter>,
    pub rollout: RolloutConfig,
    pub auto_rollback: bool,
    pub created_ms: u64,
    /// Hosts not on the target revision get it by a catch-up deployment.
    pub catch_up: bool,
    /// Seconds between a batch's success and the next batch's start.
    pub bake_secs: u64,
    /// The deployment that set the target revision: the group's last successful one
    /// created by an operator or an auto-rollback.
    pub target_deployment_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRow {
    pub id: String,
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub agent_version: String,
    /// Hex sha256 of the host secret; the secret itself is never stored.
    pub secret_sha256: String,
    pub first_seen_ms: u64,
    /// 0 until the host's first poll: a host that never polled is no target.
    pub last_seen_ms: u64,
    pub revoked: bool,
    /// What the host's polls ask for when it differs from `name` / `tags`.
    pub requested_name: Option<String>,
    pub requested_tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationTokenRow {
    pub id: String,
    /// Hex sha256 of the token; the token itself is never stored.
    pub token_sha256: String,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub revoked: bool,
    /// Empty: any tags.
    pub allowed_tags: BTreeMap<String, Vec<String>>,
}

/// An operator token of the store (the token of the configuration is not one of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorTokenRow {
    pub id: String,
    /// Hex sha256 of the token; the token itself is never stored.
    pub token_sha256: String,
    pub role: Role,
    /// Who holds it; what approvals and rejections made with it record.
    pub name: Option<String>,
    pub created_ms: u64,
    pub revoked: bool,
}

/// A dashboard session: a browser signed in with an operator token. Both secrets are kept
/// hashed; the session's role is that of its token, read again at each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// Hex sha256 of the session's cookie value.
    pub session_sha256: String,
    /// Hex sha256 of the operator token it signed in with.
    pub token_sha256: String,
    pub created_ms: u64,
    pub expires_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionRow {
    pub id: String,
    pub application: String,
    pub revision: Revision,
    /// Its signed manifest (kept in `revision_json`, beside the revision's fields).
    pub signature: Option<SignedManifest>,
    pub created_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRow {
    pub id: String,
    pub application: String,
    pub group_id: String,
    pub group_name: String,
    pub revision_id: Option<String>,
    pub revision: Revision,
    /// The signed manifest its commands carry (kept in `revision_json`).
    pub signature: Option<SignedManifest>,
    pub state: DeploymentState,
    pub creator: Creator,
    pub rollback_of: Option<String>,
    pub rolled_back_by: Option<String>,
    pub message: Option<String>,
    /// The group's configuration when the deployment was created.
    pub rollout: RolloutConfig,
    pub file_exists_behavior: Option<String>,
    pub ignore_application_stop_failures: bool,
    pub events: Vec<String>,
    pub appspec_path: Option<String>,
    pub created_ms: u64,
    pub ended_ms: Option<u64>,
    /// The group's bake time when the deployment was created.
    pub bake_secs: u64,
    /// Baking: the next batch starts at this time.
    pub bake_until_ms: Option<u64>,
    /// Variables its hooks see (a catch-up's are those of the deployment it copies).
    pub variables: BTreeMap<String, String>,
    /// A pipeline's deployment: the release whose stage it deploys.
    pub release_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRow {
    pub id: String,
    pub deployment_id: String,
    pub host_id: String,
    pub host_name: String,
    /// Order in which the rollout considers hosts.
    pub position: u32,
    pub state: CommandState,
    pub current_event: Option<String>,
    pub failed_event: Option<String>,
    pub script: Option<String>,
    pub exit_code: Option<i32>,
    pub error_code: Option<String>,
    pub message: Option<String>,
    pub log_tail: Option<String>,
    pub events: Vec<HostEvent>,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    pub last_report_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    pub command_id: String,
    pub seq: u64,
    pub at_ms: u64,
    pub received_ms: u64,
    /// The report as received, for the record.
    pub body_json: String,
}

/// Where one host stands in one deployment group: what it runs there, and the catch-up
/// bookkeeping. Written with the command end that changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSyncRow {
    pub host_id: String,
    pub group_id: String,
    /// The revision of its last successful command in the group, and that deployment.
    pub revision_id: Option<String>,
    pub revision: Option<Revision>,
    pub deployment_id: Option<String>,
    /// Out of sync and left alone until an operator deploys the group again or retries.
    pub hold: bool,
    /// Failed catch-up tries since it last ran a revision of the group.
    pub attempts: u32,
    /// The next catch-up starts no earlier (ms since the epoch).
    pub next_attempt_ms: u64,
    /// The catch-up command handed to it last, while it may still run.
    pub pending_command_id: Option<String>,
    /// How its last bad command ended, in which event, and why.
    pub failed_state: Option<CommandState>,
    pub failed_event: Option<String>,
    pub error: Option<String>,
    pub updated_ms: u64,
}

impl HostSyncRow {
    pub fn new(host_id: &str, group_id: &str, now: u64) -> HostSyncRow {
        HostSyncRow {
            host_id: host_id.to_owned(),
            group_id: group_id.to_owned(),
            revision_id: None,
            revision: None,
            deployment_id: None,
            hold: false,
            attempts: 0,
            next_attempt_ms: 0,
            pending_command_id: None,
            failed_state: None,
            failed_event: None,
            error: None,
            updated_ms: now,
        }
    }
}

/// What one decision changed, written in one transaction.
#[derive(Debug, Clone, Copy)]
pub struct Changes<'a> {
    pub deployment: &'a DeploymentRow,
    /// Stored commands of the deployment to update.
    pub commands: &'a [CommandRow],
    /// Commands to add to the (stored) deployment.
    pub new_commands: &'a [CommandRow],
    pub syncs: &'a [HostSyncRow],
    /// The deployment succeeded and becomes its group's target.
    pub sets_target: bool,
}

/// When a host was last heard from, and what its last poll said about itself. Written in
/// batches: a host's contacts are too frequent to sync the database for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostContact {
    pub last_seen_ms: u64,
    pub details: Option<HostDetails>,
}

/// What a poll says about its host: a request for its name and tags, and its agent version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDetails {
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub agent_version: String,
}

impl HostContact {
    /// Folds a later contact into this one: the latest time, the latest details.
    pub fn merge(&mut self, later: HostContact) {
        self.last_seen_ms = self.last_seen_ms.max(later.last_seen_ms);
        if later.details.is_some() {
            self.details = later.details;
        }
    }
}

/// When a command was first handed to its host, and the last heartbeat naming it: its lease
/// runs on these and its reports alone once it is with its host. Written in batches, merged
/// with the stored one (the earliest hand-out, the latest heartbeat).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandLease {
    pub delivered_ms: u64,
    pub beat_ms: u64,
}

impl CommandLease {
    /// Folds another note of the same command into this one, as the store merges them.
    pub fn merge(&mut self, other: CommandLease) {
        self.delivered_ms = self.delivered_ms.min(other.delivered_ms);
        self.beat_ms = self.beat_ms.max(other.beat_ms);
    }
}

/// A running coordinator on this database: who it is, and when it last said it was alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRow {
    pub id: String,
    /// The machine's host name, as the replica read it.
    pub host: String,
    pub pid: u32,
    /// The address it listens on.
    pub listen: String,
    pub started_ms: u64,
    pub beat_ms: u64,
}

/// What one coordinator tells the others on the same database, so that what they hold in
/// memory follows the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Commands started for these hosts: their polls held elsewhere look in the store.
    CommandsStarted(Vec<String>),
    /// These hosts changed (revoked, retagged): what others cached of them is stale.
    HostsChanged(Vec<String>),
    /// Deployments or commands changed: operators watching them elsewhere look again.
    Changed,
    /// Notices may have been missed (the listening connection was lost and is back):
    /// everything cached is stale and every held poll should look again.
    Resync,
}

/// Where a store delivers the notices of other coordinators.
pub type NoticeHandler = Box<dyn Fn(Notice) + Send + Sync>;

/// A lock on decisions, held in the database for as long as the value lives.
pub trait DecisionLock {}

/// No lock beyond the process's own: one coordinator on the database.
pub struct ProcessOnly;

impl DecisionLock for ProcessOnly {}

/// The coordinator's durable state. Each method is atomic on its own; methods taking
/// several rows write them in one transaction.
pub trait Store: Send + Sync + 'static {
    /// Waits until no other coordinator on this database is deciding (reading, deciding
    /// and writing deployments and commands), and keeps them waiting until the returned
    /// value is dropped. The caller already holds its own process's lock. The default is
    /// for a database only one coordinator opens (SQLite): nothing more to take.
    fn lock_decisions(&self) -> Result<Box<dyn DecisionLock + '_>> {
        Ok(Box::new(ProcessOnly))
    }

    /// Tells the other coordinators on this database (never this one). The default is for a
    /// database only one coordinator opens: nobody to tell.
    fn publish(&self, _notice: &Notice) -> Result<()> {
        Ok(())
    }

    /// Delivers other coordinators' notices to `handler` from now on, from a task of the
    /// store's own (not blocking: callable from async code). The default: none will come.
    fn listen(&self, _handler: NoticeHandler) -> Result<()> {
        Ok(())
    }

    fn insert_application(&self, app: &AppRow) -> Result<()>;
    fn applications(&self) -> Result<Vec<AppRow>>;
    fn application(&self, name: &str) -> Result<Option<AppRow>>;

    fn insert_group(&self, group: &GroupRow) -> Result<()>;
    fn groups(&self, application: &str) -> Result<Vec<GroupRow>>;
    fn group(&self, application: &str, name: &str) -> Result<Option<GroupRow>>;
    fn group_by_id(&self, id: &str) -> Result<Option<GroupRow>>;
    /// Every application's groups.
    fn all_groups(&self) -> Result<Vec<GroupRow>>;
    /// Writes a group's options (catch-up, bake, rollout, auto-rollback).
    fn update_group(&self, group: &GroupRow) -> Result<()>;

    fn insert_registration_token(&self, token: &RegistrationTokenRow) -> Result<()>;
    fn registration_token(&self, token_sha256: &str) -> Result<Option<RegistrationTokenRow>>;
    fn registration_tokens(&self) -> Result<Vec<RegistrationTokenRow>>;
    /// Marks the token revoked; the stored token afterwards, `None` when there is none.
    fn revoke_registration_token(&self, id: &str) -> Result<Option<RegistrationTokenRow>>;
    fn insert_operator_token(&self, token: &OperatorTokenRow) -> Result<()>;
    fn operator_token(&self, token_sha256: &str) -> Result<Option<OperatorTokenRow>>;
    /// Oldest first.
    fn operator_tokens(&self) -> Result<Vec<OperatorTokenRow>>;
    /// Marks the token revoked; the stored token afterwards, `None` when there is none.
    fn revoke_operator_token(&self, id: &str) -> Result<Option<OperatorTokenRow>>;
    /// Stores a new dashboard session and deletes those expired at `now_ms`.
    fn insert_session(&self, session: &SessionRow, now_ms: u64) -> Result<()>;
    /// The session with this hash, expired or not.
    fn session(&self, session_sha256: &str) -> Result<Option<SessionRow>>;
    /// Deletes the session (signing out); no error when there is none.
    fn delete_session(&self, session_sha256: &str) -> Result<()>;
    /// Inserts a host and counts one use of the token it registered with, in one
    /// transaction.
    fn register_host(&self, host: &HostRow, token_id: &str) -> Result<()>;
    /// A host with this name that is not revoked.
    fn active_host_named(&self, name: &str) -> Result<Option<HostRow>>;

    fn insert_host(&self, host: &HostRow) -> Result<()>;
    fn update_host(&self, host: &HostRow) -> Result<()>;
    fn host(&self, id: &str) -> Result<Option<HostRow>>;
    fn hosts(&self) -> Result<Vec<HostRow>>;

    fn insert_revision(&self, revision: &RevisionRow) -> Result<()>;
    fn revision(&self, id: &str) -> Result<Option<RevisionRow>>;

    /// Inserts a deployment with its commands.
    fn insert_deployment(&self, deployment: &DeploymentRow, commands: &[CommandRow]) -> Result<()> {
        self.insert_deployment_with(deployment, commands, &[])
    }
    fn deployment(&self, id: &str) -> Result<Option<DeploymentRow>>;
    /// Newest first; all applications when `application` is `None`.
    fn deployments(&self, application: Option<&str>, limit: u32) -> Result<Vec<DeploymentRow>>;
    /// Deployments still pending or in progress.
    fn active_deployments(&self) -> Result<Vec<DeploymentRow>>;
    /// The group's newest successful deployment.
    fn last_successful_deployment(&self, group_id: &str) -> Result<Option<DeploymentRow>>;
    /// Updates a stored deployment and any of its stored commands in one transaction.
    fn save_deployment(&self, deployment: &DeploymentRow, commands: &[CommandRow]) -> Result<()> {
        self.save_changes(&Changes {
            deployment,
            commands,
            new_commands: &[],
            syncs: &[],
            sets_target: false,
        })
    }
    /// Updates a stored deployment, adds and updates its commands, writes sync rows and
    /// the group's target, in one transaction.
    fn save_changes(&self, changes: &Changes<'_>) -> Result<()>;
    /// Inserts a deployment with its commands and sync rows, in one transaction.
    fn insert_deployment_with(
        &self,
        deployment: &DeploymentRow,
        commands: &[CommandRow],
        syncs: &[HostSyncRow],
    ) -> Result<()>;
    /// How many deployments are in each state.
    fn deployment_state_counts(&self) -> Result<Vec<(DeploymentState, u64)>>;
    /// How many commands of the deployments not ended (pending, in progress) are in each
    /// state.
    fn active_command_state_counts(&self) -> Result<Vec<(CommandState, u64)>>;
    /// How many commands the deployment has.
    fn command_total(&self, deployment_id: &str) -> Result<u32>;

    /// One host's row in one group.
    fn host_sync(&self, host_id: &str, group_id: &str) -> Result<Option<HostSyncRow>>;
    /// Every host's rows.
    fn host_syncs(&self) -> Result<Vec<HostSyncRow>>;
    /// One host's rows.
    fn host_syncs_of(&self, host_id: &str) -> Result<Vec<HostSyncRow>>;
    /// The stored rows among `keys` (host id, group id), in no particular order: a batch
    /// of reports reads the rows of the commands it ends at once, one query on PostgreSQL.
    fn host_syncs_among(&self, keys: &[(&str, &str)]) -> Result<Vec<HostSyncRow>>;
    /// Writes rows, replacing stored ones.
    fn save_host_syncs(&self, rows: &[HostSyncRow]) -> Result<()>;

    /// A deployment's commands in rollout order.
    fn commands(&self, deployment_id: &str) -> Result<Vec<CommandRow>>;
    fn command(&self, id: &str) -> Result<Option<CommandRow>>;
    /// The stored commands among `ids`, in no particular order (an id not found is left
    /// out): a batch of reports reads its commands at once, one query on PostgreSQL.
    fn commands_among(&self, ids: &[&str]) -> Result<Vec<CommandRow>>;
    /// How many of a deployment's commands are in each state: what a rollout decision
    /// reads after every command's end, without reading the commands.
    fn command_counts(&self, deployment_id: &str) -> Result<Vec<(CommandState, usize)>>;
    /// A deployment's first `limit` pending commands in rollout order.
    fn pending_commands(&self, deployment_id: &str, limit: usize) -> Result<Vec<CommandRow>>;
    /// The host's oldest command in progress.
    fn in_progress_command_for_host(&self, host_id: &str) -> Result<Option<CommandRow>>;
    /// [`Store::in_progress_command_for_host`] of each of `host_ids` that has one, in no
    /// particular order: what a replica hands the polls it holds when another started
    /// their commands, in one query on PostgreSQL.
    fn in_progress_commands_for_hosts(&self, host_ids: &[&str]) -> Result<Vec<CommandRow>>;
    fn in_progress_commands(&self) -> Result<Vec<CommandRow>>;
    /// Every succeeded command of a host with its deployment, newest first.
    fn succeeded_commands_of_host(&self, host_id: &str)
        -> Result<Vec<(DeploymentRow, CommandRow)>>;

    fn report_exists(&self, command_id: &str, seq: u64) -> Result<bool>;
    fn report(&self, command_id: &str, seq: u64) -> Result<Option<ReportRow>>;
    /// The recorded reports among `keys` (command id, seq), in no particular order: a
    /// batch of reports learns which of its own are resends at once.
    fn reports_among(&self, keys: &[(&str, u64)]) -> Result<Vec<ReportRow>>;
    /// Records event reports, each with the (stored) command it updated, in one
    /// transaction: one sync of the database for a whole batch. Per report, false when
    /// (command, seq) was already recorded; nothing of that report is written then.
    fn insert_reports(&self, reports: &[(ReportRow, CommandRow)]) -> Result<Vec<bool>> {
        self.insert_reports_with(reports, &[])
    }
    /// [`Store::insert_reports`], writing sync rows (of the commands the reports ended) in
    /// the same transaction.
    fn insert_reports_with(
        &self,
        reports: &[(ReportRow, CommandRow)],
        syncs: &[HostSyncRow],
    ) -> Result<Vec<bool>>;
    /// Writes hosts' last contacts (by host id) in one transaction; a contact never moves
    /// a host's last-seen time back.
    fn write_contacts(&self, contacts: &[(String, HostContact)]) -> Result<()>;
    fn reports(&self, command_id: &str) -> Result<Vec<ReportRow>>;

    /// Writes command leases (by command id) in one transaction, each merged with the
    /// stored one ([`CommandLease::merge`]).
    fn write_leases(&self, leases: &[(String, CommandLease)]) -> Result<()>;
    /// The leases of the commands in progress.
    fn command_leases(&self) -> Result<Vec<(String, CommandLease)>>;
    /// Forgets the leases of commands no longer in progress; how many.
    fn drop_ended_leases(&self) -> Result<usize>;

    /// Writes a replica's row (its start, or a heartbeat), replacing the stored one.
    fn write_replica(&self, replica: &ReplicaRow) -> Result<()>;
    /// Replicas whose last heartbeat is at `live_since_ms` or later, by start.
    fn replicas(&self, live_since_ms: u64) -> Result<Vec<ReplicaRow>>;
    /// Forgets a replica (it stopped), and any silent since before `stale_before_ms`.
    fn remove_replica(&self, id: &str, stale_before_ms: u64) -> Result<()>;

    /// Writes a pipeline and its stages, replacing a stored one of the same name, in one
    /// transaction.
    fn save_pipeline(&self, pipeline: &PipelineRow) -> Result<()>;
    fn pipeline(&self, name: &str) -> Result<Option<PipelineRow>>;
    /// By name; all applications' when `application` is `None`.
    fn pipelines(&self, application: Option<&str>) -> Result<Vec<PipelineRow>>;
    /// Deletes a pipeline and its stages (its releases stay, for the record); false when
    /// there was none.
    fn delete_pipeline(&self, name: &str) -> Result<bool>;
    /// Writes where a pipeline's source stands.
    fn save_source_status(&self, pipeline: &str, status: &SourceStatus) -> Result<()>;
    /// Inserts a release with its stages; a source's release writes the source's new
    /// standing (`status` of `release.pipeline`) in the same transaction, so a restart
    /// neither loses the release nor makes it twice.
    fn insert_release(&self, release: &ReleaseRow, status: Option<&SourceStatus>) -> Result<()>;
    /// Writes a stored release and its stages in one transaction.
    fn save_release(&self, release: &ReleaseRow) -> Result<()>;
    fn release(&self, id: &str) -> Result<Option<ReleaseRow>>;
    /// Newest first; all pipelines' when `pipeline` is `None`.
    fn releases(&self, pipeline: Option<&str>, limit: u32) -> Result<Vec<ReleaseRow>>;
    /// Releases not ended (in progress or awaiting approval), oldest first.
    fn active_releases(&self) -> Result<Vec<ReleaseRow>>;

    // Webhooks. A deployment's, release's or sync row's write above also writes, in its
    // transaction, the event of its state change with one delivery per subscribed webhook
    // (`webhooks` module doc).

    fn insert_webhook(&self, webhook: &WebhookRow) -> Result<()>;
    /// Oldest first.
    fn webhooks(&self) -> Result<Vec<WebhookRow>>;
    fn webhook(&self, id: &str) -> Result<Option<WebhookRow>>;
    /// Deletes a webhook with its deliveries; false when there was none.
    fn delete_webhook(&self, id: &str) -> Result<bool>;
    /// A webhook's newest deliveries with their events, newest first.
    fn recent_deliveries(
        &self,
        webhook_id: &str,
        limit: u32,
    ) -> Result<Vec<(DeliveryRow, EventRow)>>;
    /// Claims deliveries to send until `lease_until_ms`: pending, due at `now_ms`, claimed by
    /// no one else (a lease not past; on PostgreSQL rows another replica is claiming are
    /// skipped), each the earliest pending one of its webhook and subject, none of a webhook
    /// in `skip`, at most `per_webhook` of each; in the order they were written.
    fn claim_deliveries(
        &self,
        now_ms: u64,
        lease_until_ms: u64,
        skip: &[String],
        per_webhook: usize,
    ) -> Result<Vec<Claimed>>;
    /// Records how a claimed delivery's try ended, and ends its claim.
    fn finish_delivery(&self, outcome: &DeliveryOutcome) -> Result<()>;
    /// Deletes deliveries that ended before `ended_before_ms` (and events left without any);
    /// how many deliveries.
    fn prune_deliveries(&self, ended_before_ms: u64) -> Result<u64>;
}
