//! The coordinator's rules applied to its store: applications, deployment groups, host
//! registration and authentication, deployments driven by [`crate::rollout`], event
//! reports, stops, host leases and auto-rollback.
//!
//! Every method is blocking (store calls); the API runs them on `spawn_blocking`. Every
//! read-modify-write sequence holds [`Service::lock`], so two reports, a stop and the lease
//! sweep never interleave; wake-ups ([`Service::host_waker`]) and the change counter
//! ([`Service::subscribe`]) fire after the store has committed.
//!
//! Deliberately not here: HTTP (the `api` module), the rollout arithmetic (`rollout`), SQL
//! (`store`). With PostgreSQL and several coordinators, `lock` would become a row lock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hoist_protocol::agent::{
    self, CommandStatus, EventStatus, Heartbeat, HeartbeatAck, PollRequest, RegisterRequest,
    RegisterResponse, Report, ReportAck, ReportBody, Revision,
};
use hoist_protocol::operator::{
    self as op, CommandState, Creator, DeploymentState, HostCounts, HostEvent, RolloutConfig,
    TagFilter, LIFECYCLE_EVENTS,
};
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, watch, Notify};

use crate::bounds::{self, shown};
use crate::bundles::BundleStore;
use crate::rollout::{self, HostState, Outcome, Tally};
use crate::store::{
    AppRow, CommandRow, DeploymentRow, GroupRow, HostContact, HostDetails, HostRow,
    RegistrationTokenRow, ReportRow, RevisionRow, Store, StoreError,
};

/// Timing rules of the service.
#[derive(Debug, Clone, Copy)]
pub struct ServiceConfig {
    /// A command with neither a report nor a heartbeat naming it for this long has failed
    /// ("host lost", or "no report" when the host still polls); also how recently a host
    /// must have polled to be a target.
    pub host_lease: Duration,
    /// A host seen within this window is online.
    pub online_window: Duration,
}

impl ServiceConfig {
    /// How often an agent running a command says it is alive: a quarter of the lease, so
    /// three heartbeats may be lost before the host counts as lost; at most a minute.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.host_lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(60))
    }

    /// Longest a poll is held: well inside the lease, so a host that keeps polling is
    /// always seen recently enough to be a deployment target.
    pub fn poll_wait_cap(&self) -> Duration {
        (self.host_lease / 2).max(Duration::from_secs(1))
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            host_lease: Duration::from_secs(600),
            online_window: Duration::from_secs(90),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A failure shared by several requests (a batch that could not be written).
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

pub struct Service {
    store: Arc<dyn Store>,
    bundles: BundleStore,
    config: ServiceConfig,
    /// Held across every read-modify-write of deployments and commands.
    lock: Mutex<()>,
    /// One waker per host with a poll in flight or recently seen; woken, with the
    /// command, when a command starts for that host. Bounded by the fleet size.
    wakers: Mutex<HashMap<String, Arc<HostWaker>>>,
    /// Bumped after every change an operator may watch (`--wait`).
    changes: watch::Sender<u64>,
    /// Hosts' last contacts not yet written: written by the server's timer
    /// ([`Service::flush_contacts`]), and before anything reads hosts.
    contacts: Mutex<HashMap<String, HostContact>>,
    /// Event reports waiting to be written together (group commit).
    queued_reports: Mutex<ReportQueue>,
    /// Hosts by id as last read, to authenticate agent requests without reading the
    /// store each time. Holds only hosts that exist; a revocation updates its entry.
    credentials: Mutex<HashMap<String, HostRow>>,
    /// Commands in progress that a poll has answered with since this service started: when
    /// first, and the last heartbeat naming them. Once a command is with its host, only its
    /// reports and these heartbeats renew its lease, never the host's polls (a host that
    /// polls but cannot work would otherwise keep it in progress forever).
    leases: Mutex<HashMap<String, CommandLease>>,
}

#[derive(Debug, Clone, Copy)]
struct CommandLease {
    delivered_ms: u64,
    beat_ms: u64,
}

#[derive(Default)]
struct ReportQueue {
    reports: Vec<QueuedReport>,
    /// A writer ([`Service::write_reports`]) is running and will take what is queued.
    writing: bool,
}

/// An event report waiting for its batch, and where its answer goes.
struct QueuedReport {
    host_id: String,
    host_name: String,
    command_id: String,
    report: Report,
    answer: oneshot::Sender<Result<ReportAck>>,
}

/// Marks the report writer stopped if it unwinds; a writer that returns has already done
/// so itself, under the lock with which it found the queue empty (resetting it again here
/// could clear the flag of a writer started since).
struct WriterRunning<'a>(&'a Mutex<ReportQueue>);

impl Drop for WriterRunning<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            locked(self.0).writing = false;
        }
    }
}

/// A batch of reports being checked and applied before its one write.
#[derive(Default)]
struct Staged {
    /// Commands as the reports staged so far left them.
    commands: HashMap<String, CommandRow>,
    deployments: HashMap<String, DeploymentRow>,
    seqs: HashSet<(String, u64)>,
    rows: Vec<(ReportRow, CommandRow)>,
}

/// What a queued report gets once its batch is staged.
enum Staging {
    /// Known already (a resend): answered without writing.
    Answered(ReportAck),
    /// Written with the batch as `rows[row]`.
    Written {
        row: usize,
        ended: bool,
        aborted: bool,
    },
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each guarded value is whole between statements; a panic cannot leave it half-changed.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the polls of one host wait, and where the service leaves the command it has just
/// started for that host, so a woken poll answers without reading the store again: with
/// 20 000 hosts started at once, that read would be 20 000 queries on the one connection.
///
/// The store stays the truth. A poll looks in the store when it starts and takes the
/// handed-over command only when woken, so a command left here while no poll waited
/// (since stopped, or lost) is never answered from here.
#[derive(Default)]
pub struct HostWaker {
    notify: Notify,
    handoff: Mutex<Option<agent::Command>>,
}

impl HostWaker {
    /// A wake-up future; enable it before looking in the store so a command started
    /// between the look and the wait is not missed.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// The command handed over by the last wake-up, if no poll has taken it yet.
    pub fn take(&self) -> Option<agent::Command> {
        locked(&self.handoff).take()
    }

    fn wake(&self, command: agent::Command) {
        *locked(&self.handoff) = Some(command);
        self.notify.notify_waiters();
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// A fresh secret: 32 random bytes, hex.
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// An error with its causes, `outer: inner: ...`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Compares two strings in time independent of where they differ (their lengths, fixed
/// by the token formats, are not secret).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn is_hex(s: &str, lens: &[usize]) -> bool {
    lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "{what} name {name:?} must be 1 to 100 letters, digits, '.', '_' or '-'"
        )))
    }
}

fn matches(filters: &[TagFilter], tags: &BTreeMap<String, String>) -> bool {
    filters
        .iter()
        .any(|f| f.iter().all(|(k, v)| tags.get(k) == Some(v)))
}

fn to_rollout(config: RolloutConfig) -> Option<rollout::Config> {
    Some(match config {
        RolloutConfig::AllAtOnce => rollout::Config::AllAtOnce,
        RolloutConfig::HalfAtATime => rollout::Config::HalfAtATime,
        RolloutConfig::OneAtATime => rollout::Config::OneAtATime,
        RolloutConfig::MinHealthyHosts { count } => rollout::Config::MinHealthyHosts(count),
        RolloutConfig::MinHealthyPercent { percent } => rollout::Config::MinHealthyPercent(percent),
        RolloutConfig::Unknown => return None,
    })
}

/// Where a command leaves its host for the rollout rules.
fn host_state(state: CommandState) -> HostState {
    match state {
        CommandState::Pending => HostState::Pending,
        CommandState::InProgress => HostState::InProgress,
        CommandState::Succeeded => HostState::Succeeded,
        CommandState::Failed
        | CommandState::Stopped
        | CommandState::Skipped
        | CommandState::Unknown => HostState::Failed,
    }
}

fn event_status_str(s: EventStatus) -> &'static str {
    match s {
        EventStatus::Succeeded => "succeeded",
        EventStatus::Failed => "failed",
        EventStatus::FailedIgnored => "failed_ignored",
        EventStatus::Skipped => "skipped",
        EventStatus::Unknown => "unknown",
    }
}

fn error_code_str(c: agent::ErrorCode) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// Applies one event report to its command; returns true when it ended the command.
fn apply_report(cmd: &mut CommandRow, body: &ReportBody, now: u64) -> bool {
    cmd.last_report_ms = Some(now);
    match body {
        ReportBody::EventStarted { event } => {
            cmd.current_event = Some(event.clone());
            cmd.events.push(HostEvent {
                event: event.clone(),
                status: "started".into(),
                duration_ms: None,
            });
            false
        }
        ReportBody::EventEnded {
            event,
            status,
            error_code,
            message,
            script,
            exit_code,
            log_tail,
            duration_ms,
        } => {
            let ended = HostEvent {
                event: event.clone(),
                status: event_status_str(*status).into(),
                duration_ms: Some(*duration_ms),
            };
            match cmd
                .events
                .iter_mut()
                .rev()
                .find(|e| e.event == *event && e.status == "started")
            {
                Some(e) => *e = ended,
                None => cmd.events.push(ended),
            }
            if cmd.current_event.as_deref() == Some(event.as_str()) {
                cmd.current_event = None;
            }
            if *status == EventStatus::Failed {
                cmd.failed_event = Some(event.clone());
                cmd.script = script.clone();
                cmd.exit_code = *exit_code;
                cmd.error_code = error_code.map(error_code_str);
                cmd.message = message.clone();
            }
            if log_tail.is_some() {
                cmd.log_tail = log_tail.clone();
            }
            false
        }
        ReportBody::Completed {
            status,
            failed_event,
            message,
        } => {
            cmd.current_event = None;
            if cmd.state != CommandState::InProgress {
                // Already ended here (host lost, or never handed out): keep that verdict.
                return false;
            }
            cmd.state = match status {
                CommandStatus::Succeeded => CommandState::Succeeded,
                CommandStatus::Stopped => CommandState::Stopped,
                CommandStatus::Failed | CommandStatus::Unknown => CommandState::Failed,
            };
            cmd.ended_ms = Some(now);
            if failed_event.is_some() {
                cmd.failed_event = failed_event.clone();
            }
            if message.is_some() {
                cmd.message = message.clone();
            }
            true
        }
        ReportBody::Unknown => false,
    }
}

impl Service {
    pub fn new(store: Arc<dyn Store>, bundles: BundleStore, config: ServiceConfig) -> Service {
        Service {
            store,
            bundles,
            config,
            lock: Mutex::new(()),
            wakers: Mutex::new(HashMap::new()),
            changes: watch::Sender::new(0),
            contacts: Mutex::new(HashMap::new()),
            queued_reports: Mutex::new(ReportQueue::default()),
            credentials: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> ServiceConfig {
        self.config
    }

    pub fn bundles(&self) -> &BundleStore {
        &self.bundles
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is the store, whose transactions stay consistent after a panic.
        locked(&self.lock)
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// A receiver of the change counter, bumped after every deployment or command change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn change_seq(&self) -> u64 {
        *self.changes.borrow()
    }

    /// The waker the polls of `host_id` wait on.
    pub fn host_waker(&self, host_id: &str) -> Arc<HostWaker> {
        let mut wakers = locked(&self.wakers);
        wakers.entry(host_id.to_owned()).or_default().clone()
    }

    /// Hands `command`, just committed, to the polls of its host waiting now; a host
    /// between two polls finds it in the store when its next poll starts.
    fn wake(&self, host_id: &str, command: agent::Command) {
        let waker = {
            let wakers = locked(&self.wakers);
            wakers.get(host_id).cloned()
        };
        if let Some(w) = waker {
            w.wake(command);
        }
    }

    fn online(&self, host: &HostRow, now: u64) -> bool {
        now.saturating_sub(host.last_seen_ms) <= self.config.online_window.as_millis() as u64
    }

    fn within_lease(&self, last: u64, now: u64) -> bool {
        now.saturating_sub(last) <= self.config.host_lease.as_millis() as u64
    }

    // ---- applications and groups ----

    pub fn create_application(&self, req: op::CreateApplication) -> Result<op::Application> {
        check_name("application", &req.name)?;
        let row = AppRow {
            name: req.name,
            created_ms: now_ms(),
        };
        self.store.insert_application(&row).map_err(conflict)?;
        Ok(op::Application {
            name: row.name,
            created_ms: row.created_ms,
        })
    }

    pub fn applications(&self) -> Result<op::ApplicationList> {
        Ok(op::ApplicationList {
            applications: self
                .store
                .applications()?
                .into_iter()
                .map(|a| op::Application {
                    name: a.name,
                    created_ms: a.created_ms,
                })
                .collect(),
        })
    }

    fn app(&self, name: &str) -> Result<AppRow> {
        self.store
            .application(name)?
            .ok_or_else(|| ServiceError::NotFound(format!("no application named {name}")))
    }

    fn group_row(&self, app: &str, name: &str) -> Result<GroupRow> {
        self.app(app)?;
        self.store.group(app, name)?.ok_or_else(|| {
            ServiceError::NotFound(format!(
                "application {app} has no deployment group named {name}"
            ))
        })
    }

    pub fn create_group(&self, app: &str, req: op::CreateGroup) -> Result<op::DeploymentGroup> {
        self.app(app)?;
        check_name("deployment group", &req.name)?;
        if req.tag_filters.is_empty() {
            return Err(ServiceError::Invalid(
                "tag_filters: a deployment group needs at least one tag filter".into(),
            ));
        }
        for (i, f) in req.tag_filters.iter().enumerate() {
            if f.is_empty() {
                return Err(ServiceError::Invalid(format!(
                    "tag_filters[{i}]: a tag filter needs at least one key=value"
                )));
            }
            if f.keys().any(|k| k.is_empty()) {
                return Err(ServiceError::Invalid(format!(
                    "tag_filters[{i}]: a tag key must not be empty"
                )));
            }
        }
        if to_rollout(req.rollout).is_none() {
            return Err(ServiceError::Invalid(
                "rollout: unknown rollout configuration".into(),
            ));
        }
        if let RolloutConfig::MinHealthyPercent { percent } = req.rollout {
            if percent > 100 {
                return Err(ServiceError::Invalid(
                    "rollout: the percentage must be at most 100".into(),
                ));
            }
        }
        let row = GroupRow {
            id: new_id("g"),
            application: app.to_owned(),
            name: req.name,
            tag_filters: req.tag_filters,
            rollout: req.rollout,
            auto_rollback: req.auto_rollback,
            created_ms: now_ms(),
        };
        self.store.insert_group(&row).map_err(conflict)?;
        self.group_view(row)
    }

    fn group_view(&self, g: GroupRow) -> Result<op::DeploymentGroup> {
        self.flush_contacts()?;
        let now = now_ms();
        let matching_hosts = self
            .store
            .hosts()?
            .into_iter()
            .filter(|h| !h.revoked && matches(&g.tag_filters, &h.tags))
            .map(|h| {
                if self.online(&h, now) {
                    h.name
                } else {
                    format!("{} (offline)", h.name)
                }
            })
            .collect();
        let last_successful_revision =
            self.store
                .last_successful_deployment(&g.id)?
                .map(|d| op::RevisionInfo {
                    id: d.revision_id.unwrap_or_default(),
                    application: d.application,
                    revision: d.revision,
                    created_ms: d.created_ms,
                });
        Ok(op::DeploymentGroup {
            id: g.id,
            application: g.application,
            name: g.name,
            tag_filters: g.tag_filters,
            rollout: g.rollout,
            auto_rollback: g.auto_rollback,
            created_ms: g.created_ms,
            matching_hosts,
            last_successful_revision,
        })
    }

    pub fn groups(&self, app: &str) -> Result<op::GroupList> {
        self.app(app)?;
        let groups = self
            .store
            .groups(app)?
            .into_iter()
            .map(|g| self.group_view(g))
            .collect::<Result<_>>()?;
        Ok(op::GroupList { groups })
    }

    pub fn group(&self, app: &str, name: &str) -> Result<op::DeploymentGroup> {
        let g = self.group_row(app, name)?;
        self.group_view(g)
    }

    // ---- revisions ----

    fn check_revision(&self, r: &Revision) -> Result<Revision> {
        let sha = |s: &str, field: &str| {
            if is_hex(s, &[64]) {
                Ok(s.to_ascii_lowercase())
            } else {
                Err(ServiceError::Invalid(format!(
                    "revision.{field}: {s:?} is not a sha256 (64 hex digits)"
                )))
            }
        };
        let non_empty = |s: &str, field: &str| {
            if s.trim().is_empty() {
                Err(ServiceError::Invalid(format!(
                    "revision.{field}: must not be empty"
                )))
            } else {
                Ok(())
            }
        };
        Ok(match r {
            Revision::Coordinator { sha256, .. } => {
                let sha256 = sha(sha256, "sha256")?;
                let size = self.bundles.size_of(&sha256).ok_or_else(|| {
                    ServiceError::Invalid(format!(
                        "revision.sha256: no bundle {sha256} in the coordinator's store \
                         (upload it first)"
                    ))
                })?;
                Revision::Coordinator { sha256, size }
            }
            Revision::S3 {
                bucket,
                key,
                version_id,
                etag,
                sha256,
            } => {
                non_empty(bucket, "bucket")?;
                non_empty(key, "key")?;
                // The agent signs a request for the key's path: `..` would leave the bucket.
                if key.split('/').any(|seg| matches!(seg, "" | "." | "..")) {
                    return Err(ServiceError::Invalid(format!(
                        "revision.key: {}: an S3 key must not have empty, '.' or '..' segments",
                        shown(key)
                    )));
                }
                Revision::S3 {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    version_id: version_id.clone(),
                    etag: etag.clone(),
                    sha256: sha(sha256, "sha256")?,
                }
            }
            Revision::Url { url, sha256 } => {
                let parsed = url::Url::parse(url).map_err(|e| {
                    ServiceError::Invalid(format!("revision.url: {url:?} is not a URL: {e}"))
                })?;
                if !matches!(parsed.scheme(), "https" | "http") {
                    return Err(ServiceError::Invalid(format!(
                        "revision.url: {url:?} must be an https (or http) URL"
                    )));
                }
                Revision::Url {
                    url: url.clone(),
                    sha256: sha(sha256, "sha256")?,
                }
            }
            Revision::Git { repository, commit } => {
                non_empty(repository, "repository")?;
                if !is_hex(commit, &[40, 64]) {
                    return Err(ServiceError::Invalid(format!(
                        "revision.commit: {commit:?} is not a full commit id (40 or 64 hex digits)"
                    )));
                }
                Revision::Git {
                    repository: repository.clone(),
                    commit: commit.to_ascii_lowercase(),
                }
            }
            Revision::Unknown { kind } => {
                return Err(ServiceError::Invalid(format!(
                    "revision.kind: unsupported revision kind {kind:?}"
                )))
            }
        })
    }

    pub fn create_revision(&self, app: &str, revision: Revision) -> Result<op::RevisionInfo> {
        self.app(app)?;
        let row = RevisionRow {
            id: new_id("r"),
            application: app.to_owned(),
            revision: self.check_revision(&revision)?,
            created_ms: now_ms(),
        };
        self.store.insert_revision(&row)?;
        Ok(revision_info(row))
    }

    pub fn revision(&self, id: &str) -> Result<op::RevisionInfo> {
        self.store
            .revision(id)?
            .map(revision_info)
            .ok_or_else(|| ServiceError::NotFound(format!("no revision {id}")))
    }

    // ---- registration tokens and hosts ----

    pub fn create_registration_token(
        &self,
        req: op::CreateRegistrationToken,
    ) -> Result<op::RegistrationToken> {
        if req.max_uses == Some(0) {
            return Err(ServiceError::Invalid("max_uses: must be at least 1".into()));
        }
        if req.expires_secs == Some(0) {
            return Err(ServiceError::Invalid(
                "expires_secs: must be at least 1".into(),
            ));
        }
        for (k, values) in &req.allowed_tags {
            if values.is_empty() {
                return Err(ServiceError::Invalid(format!(
                    "allowed_tags.{k}: give at least one allowed value"
                )));
            }
            for v in values {
                bounds::check_tag(k, v)
                    .map_err(|e| ServiceError::Invalid(format!("allowed_tags: {e}")))?;
            }
        }
        let now = now_ms();
        let token = format!("hrt_{}", new_secret());
        let row = RegistrationTokenRow {
            id: new_id("t"),
            token_sha256: sha256_hex(&token),
            created_ms: now,
            expires_ms: req
                .expires_secs
                .map(|s| now.saturating_add(s.saturating_mul(1000))),
            max_uses: req.max_uses,
            uses: 0,
            revoked: false,
            allowed_tags: req.allowed_tags,
        };
        self.store.insert_registration_token(&row)?;
        tracing::info!(token_id = %row.id, "registration token created");
        Ok(op::RegistrationToken { token, id: row.id })
    }

    pub fn registration_tokens(&self) -> Result<op::RegistrationTokenList> {
        Ok(op::RegistrationTokenList {
            tokens: self
                .store
                .registration_tokens()?
                .into_iter()
                .map(token_info)
                .collect(),
        })
    }

    pub fn revoke_registration_token(&self, id: &str) -> Result<op::RegistrationTokenInfo> {
        let t = self.store.revoke_registration_token(id)?.ok_or_else(|| {
            ServiceError::NotFound(format!("no registration token {}", shown(id)))
        })?;
        tracing::info!(token_id = %t.id, "registration token revoked");
        Ok(token_info(t))
    }

    /// Registers a host with a registration token that is known, not revoked, not expired
    /// and not used up, whose tag scope allows the host's tags, under a name no active host
    /// has (a host of that name that never polled is revoked instead). The host counts as
    /// seen only from its first poll.
    pub fn register(&self, token: &str, req: RegisterRequest) -> Result<RegisterResponse> {
        let now = now_ms();
        // A token's use count and the uniqueness of names are read, then written.
        let _guard = self.lock();
        let t = self.usable_registration_token(token, now)?;
        bounds::check_host_name(&req.name).map_err(ServiceError::Invalid)?;
        bounds::check_tags(&req.tags).map_err(ServiceError::Invalid)?;
        bounds::check_agent_version(&req.agent_version).map_err(ServiceError::Invalid)?;
        if !t.allowed_tags.is_empty() {
            for (k, v) in &req.tags {
                if !t.allowed_tags.get(k).is_some_and(|vs| vs.contains(v)) {
                    return Err(ServiceError::Unauthorized(format!(
                        "registration token {} does not allow tag {k}={v} (it allows {})",
                        t.id,
                        describe_scope(&t.allowed_tags)
                    )));
                }
            }
        }
        // Whether a host of that name has polled: its last poll may not be written yet.
        self.flush_contacts()?;
        if let Some(mut orphan) = self
            .store
            .active_host_named(&req.name)?
            .filter(|h| h.last_seen_ms == 0)
        {
            // Registered but never polled: its agent lost the answer (it could not write
            // host.json, say) and registers again. The orphan never was a target.
            orphan.revoked = true;
            self.store.update_host(&orphan)?;
            locked(&self.credentials).insert(orphan.id.clone(), orphan.clone());
            tracing::info!(host_id = %orphan.id, name = ?orphan.name,
                "host that never polled revoked: its name registers again");
        }
        if let Some(taken) = self.store.active_host_named(&req.name)? {
            return Err(ServiceError::Conflict(format!(
                "host name {} is taken by active host {}; if that host is gone, revoke it \
                 with `hoist hosts revoke {}` and register again",
                req.name, taken.id, taken.id
            )));
        }
        let secret = new_secret();
        let host = HostRow {
            id: new_id("h"),
            name: req.name,
            tags: req.tags,
            agent_version: req.agent_version,
            secret_sha256: sha256_hex(&secret),
            first_seen_ms: now,
            last_seen_ms: 0,
            revoked: false,
            requested_name: None,
            requested_tags: None,
        };
        self.store.register_host(&host, &t.id)?;
        tracing::info!(host_id = %host.id, name = ?host.name, token_id = %t.id, "host registered");
        Ok(RegisterResponse {
            host_id: host.id,
            host_secret: secret,
        })
    }

    /// Resolves a host by id, or else by the name of an active host.
    fn host_by_id_or_name(&self, key: &str) -> Result<HostRow> {
        if let Some(h) = self.store.host(key)? {
            return Ok(h);
        }
        self.store.active_host_named(key)?.ok_or_else(|| {
            ServiceError::NotFound(format!("no host with id or name {}", shown(key)))
        })
    }

    /// An operator's change of a host's tags (and, on accept, its name): the host's own
    /// requests take effect only through here.
    pub fn set_host_tags(&self, key: &str, req: op::SetHostTags) -> Result<op::HostInfo> {
        if !req.accept && req.set.is_empty() && req.remove.is_empty() {
            return Err(ServiceError::Invalid(
                "nothing to change: give KEY=VALUE tags, --remove KEY or --accept".into(),
            ));
        }
        // The host's latest requests.
        self.flush_contacts()?;
        let _guard = self.lock();
        let mut host = self.host_by_id_or_name(key)?;
        if host.revoked {
            return Err(ServiceError::Conflict(format!(
                "host {} ({}) was revoked",
                host.name, host.id
            )));
        }
        if req.accept {
            if host.requested_name.is_none() && host.requested_tags.is_none() {
                return Err(ServiceError::Conflict(format!(
                    "host {} ({}) asks for no change to accept",
                    host.name, host.id
                )));
            }
            if let Some(name) = host.requested_name.take() {
                bounds::check_host_name(&name).map_err(ServiceError::Invalid)?;
                if let Some(taken) = self
                    .store
                    .active_host_named(&name)?
                    .filter(|t| t.id != host.id)
                {
                    return Err(ServiceError::Conflict(format!(
                        "host {} asks for the name {name}, which active host {} has",
                        host.id, taken.id
                    )));
                }
                host.name = name;
            }
            if let Some(tags) = host.requested_tags.take() {
                host.tags = tags;
            }
        }
        for (k, v) in req.set {
            host.tags.insert(k, v);
        }
        for k in &req.remove {
            host.tags.remove(k);
        }
        bounds::check_tags(&host.tags).map_err(ServiceError::Invalid)?;
        if host.requested_tags.as_ref() == Some(&host.tags) {
            host.requested_tags = None;
        }
        self.store.update_host(&host)?;
        locked(&self.credentials).insert(host.id.clone(), host.clone());
        tracing::info!(host_id = %host.id, name = ?host.name, tags = ?host.tags, "host tags set");
        self.host_info(host, now_ms())
    }

    /// The host named by `host_id` when `secret` is its secret and it is not revoked.
    pub fn authenticate_host(&self, host_id: &str, secret: &str) -> Result<HostRow> {
        if let Some(known) = self.authenticate_known_host(host_id, secret) {
            return known;
        }
        let host = self.store.host(host_id)?;
        if let Some(h) = &host {
            // A revocation since the read has written its own entry: keep that one.
            locked(&self.credentials)
                .entry(h.id.clone())
                .or_insert_with(|| h.clone());
        }
        check_host(host_id, secret, host)
    }

    /// [`Service::authenticate_host`] without the store: `None` when the host is not known
    /// here yet. Cheap enough for the async runtime.
    pub fn authenticate_known_host(&self, host_id: &str, secret: &str) -> Option<Result<HostRow>> {
        let host = locked(&self.credentials).get(host_id).cloned()?;
        Some(check_host(host_id, secret, Some(host)))
    }

    /// Whether `token` is a registration token that may register a host now; the API calls
    /// it from the request head, before reading a registration's body. `register` checks
    /// again under the service lock, since a use may have been taken in between.
    pub fn check_registration_token(&self, token: &str) -> Result<()> {
        self.usable_registration_token(token, now_ms()).map(|_| ())
    }

    /// The registration token `token` if it may register a host at `now`: known, not
    /// revoked, not expired and not used up.
    fn usable_registration_token(&self, token: &str, now: u64) -> Result<RegistrationTokenRow> {
        let t = self
            .store
            .registration_token(&sha256_hex(token))?
            .ok_or_else(|| ServiceError::Unauthorized("unknown registration token".into()))?;
        if t.revoked {
            return Err(ServiceError::Unauthorized(format!(
                "registration token {} was revoked",
                t.id
            )));
        }
        if let Some(expires) = t.expires_ms.filter(|e| now >= *e) {
            return Err(ServiceError::Unauthorized(format!(
                "registration token {} expired at {}",
                t.id,
                rfc3339(expires)
            )));
        }
        if let Some(max) = t.max_uses.filter(|m| t.uses >= *m) {
            return Err(ServiceError::Unauthorized(format!(
                "registration token {} is used up ({max} of {max} registrations)",
                t.id
            )));
        }
        Ok(t)
    }

    /// Notes what a poll says about its host: name, tags, agent version, last seen. Kept
    /// in memory until the next write of contacts (at most a second or so).
    /// A name or tags that differ from the host's are recorded as a request for an
    /// operator; a request that breaks the limits of [`bounds`] is not recorded at all.
    pub fn host_polled(&self, host_id: &str, req: &PollRequest) {
        let valid = bounds::check_host_name(&req.name)
            .and_then(|()| bounds::check_tags(&req.tags))
            .and_then(|()| bounds::check_agent_version(&req.agent_version));
        let details = match valid {
            Ok(()) => Some(HostDetails {
                name: req.name.clone(),
                tags: req.tags.clone(),
                agent_version: req.agent_version.clone(),
            }),
            Err(why) => {
                tracing::warn!(host_id = ?host_id, problem = ?why,
                    "ignoring what a poll says about its host");
                None
            }
        };
        self.note_contact(
            host_id,
            HostContact {
                last_seen_ms: now_ms(),
                details,
            },
        );
    }

    fn note_contact(&self, host_id: &str, contact: HostContact) {
        let mut contacts = locked(&self.contacts);
        match contacts.get_mut(host_id) {
            Some(c) => c.merge(contact),
            None => {
                contacts.insert(host_id.to_owned(), contact);
            }
        }
    }

    fn take_contacts(&self) -> Vec<(String, HostContact)> {
        locked(&self.contacts).drain().collect()
    }

    /// Puts back contacts whose write failed, under any noted since.
    fn restore_contacts(&self, taken: Vec<(String, HostContact)>) {
        let mut contacts = locked(&self.contacts);
        for (id, mut c) in taken {
            if let Some(newer) = contacts.remove(&id) {
                c.merge(newer);
            }
            contacts.insert(id, c);
        }
    }

    /// Writes the hosts' contacts noted since the last write, in one transaction. A host's
    /// last contact is a liveness hint: one lost in a crash is renewed by its next poll.
    pub fn flush_contacts(&self) -> Result<()> {
        let contacts = self.take_contacts();
        if contacts.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.store.write_contacts(&contacts) {
            self.restore_contacts(contacts);
            return Err(e.into());
        }
        Ok(())
    }

    /// Records that `host` is alive (its lease holds) and says whether the command it
    /// runs should stop. A command of another host is answered as not aborted.
    pub fn heartbeat(&self, host: HostRow, req: &Heartbeat) -> Result<HeartbeatAck> {
        self.note_contact(
            &host.id,
            HostContact {
                last_seen_ms: now_ms(),
                details: None,
            },
        );
        let Some(command_id) = req.command_id.as_deref() else {
            return Ok(HeartbeatAck { aborted: false });
        };
        let Some(cmd) = self.store.command(command_id)? else {
            return Ok(HeartbeatAck { aborted: false });
        };
        if cmd.host_id != host.id {
            return Ok(HeartbeatAck { aborted: false });
        }
        if cmd.state == CommandState::InProgress {
            let now = now_ms();
            locked(&self.leases)
                .entry(cmd.id.clone())
                .and_modify(|l| l.beat_ms = now)
                .or_insert(CommandLease {
                    delivered_ms: now,
                    beat_ms: now,
                });
        }
        let stopped = match self.store.deployment(&cmd.deployment_id)? {
            Some(d) => d.state == DeploymentState::Stopped,
            None => false,
        };
        Ok(HeartbeatAck {
            aborted: cmd.state == CommandState::InProgress && stopped || expired_here(&cmd),
        })
    }

    pub fn revoke_host(&self, host_id: &str) -> Result<op::HostInfo> {
        self.flush_contacts()?;
        let mut host = self
            .store
            .host(host_id)?
            .ok_or_else(|| ServiceError::NotFound(format!("no host {host_id}")))?;
        host.revoked = true;
        self.store.update_host(&host)?;
        // Overwrites whatever the credentials held, so its next request is refused.
        locked(&self.credentials).insert(host.id.clone(), host.clone());
        self.host_info(host, now_ms())
    }

    fn host_info(&self, h: HostRow, now: u64) -> Result<op::HostInfo> {
        let mut deployed: Vec<op::HostRevision> = Vec::new();
        for (d, c) in self.store.succeeded_commands_of_host(&h.id)? {
            if deployed
                .iter()
                .any(|r| r.application == d.application && r.deployment_group == d.group_name)
            {
                continue;
            }
            deployed.push(op::HostRevision {
                application: d.application,
                deployment_group: d.group_name,
                deployment_id: d.id,
                revision: d.revision,
                ended_ms: c.ended_ms.unwrap_or(0),
            });
        }
        Ok(op::HostInfo {
            online: !h.revoked && self.online(&h, now),
            id: h.id,
            name: h.name,
            tags: h.tags,
            agent_version: h.agent_version,
            first_seen_ms: h.first_seen_ms,
            last_seen_ms: h.last_seen_ms,
            revoked: h.revoked,
            requested_tags: h.requested_tags,
            requested_name: h.requested_name,
            deployed,
        })
    }

    pub fn hosts(&self) -> Result<op::HostList> {
        self.flush_contacts()?;
        let now = now_ms();
        let hosts = self
            .store
            .hosts()?
            .into_iter()
            .map(|h| self.host_info(h, now))
            .collect::<Result<_>>()?;
        Ok(op::HostList { hosts })
    }

    /// Notes that a poll answered with `command_id`: from the first time on, the command's
    /// lease runs on its reports and heartbeats alone.
    pub fn command_delivered(&self, command_id: &str) {
        let now = now_ms();
        locked(&self.leases)
            .entry(command_id.to_owned())
            .or_insert(CommandLease {
                delivered_ms: now,
                beat_ms: now,
            });
    }

    /// The command the host should work on: its oldest command in progress (handed out
    /// again after an agent restart; the agent dedupes by command id).
    pub fn next_command(&self, host_id: &str) -> Result<Option<agent::Command>> {
        let Some(cmd) = self.store.in_progress_command_for_host(host_id)? else {
            return Ok(None);
        };
        let Some(d) = self.store.deployment(&cmd.deployment_id)? else {
            return Ok(None);
        };
        Ok(Some(agent_command(&cmd, &d)))
    }

    // ---- event reports ----

    /// Queues an event report of `host`'s command for writing; idempotent on (command,
    /// seq). The answer comes once the report is durable. Reports queued together are
    /// written in one transaction (group commit) by one writer: when this returns true,
    /// no writer is running and the caller must run [`Service::write_reports`] on a
    /// blocking thread.
    pub fn queue_report(
        &self,
        host: &HostRow,
        command_id: &str,
        report: Report,
    ) -> (oneshot::Receiver<Result<ReportAck>>, bool) {
        let (answer, answered) = oneshot::channel();
        // Refused or capped before it takes a place in the queue.
        let report = match bounds::bound_report(report) {
            Ok(r) => r,
            Err(why) => {
                let _ = answer.send(Err(ServiceError::Invalid(why)));
                return (answered, false);
            }
        };
        let mut queue = locked(&self.queued_reports);
        queue.reports.push(QueuedReport {
            host_id: host.id.clone(),
            host_name: host.name.clone(),
            command_id: command_id.to_owned(),
            report,
            answer,
        });
        let start = !queue.writing;
        queue.writing = true;
        (answered, start)
    }

    /// Writes queued reports, a batch at a time, until none is left. Blocking.
    pub fn write_reports(&self) {
        let _running = WriterRunning(&self.queued_reports);
        loop {
            let batch = {
                let mut queue = locked(&self.queued_reports);
                if queue.reports.is_empty() {
                    // Stopped under the same lock a new report would see it by.
                    queue.writing = false;
                    return;
                }
                std::mem::take(&mut queue.reports)
            };
            let _guard = self.lock();
            self.record_reports_locked(batch);
        }
    }

    fn record_reports_locked(&self, batch: Vec<QueuedReport>) {
        let now = now_ms();
        let mut staged = Staged::default();
        let steps: Vec<Result<Staging>> = batch
            .iter()
            .map(|q| self.stage_report(q, now, &mut staged))
            .collect();
        for q in &batch {
            let contact = HostContact {
                last_seen_ms: now,
                details: None,
            };
            self.note_contact(&q.host_id, contact);
        }
        // The contacts are written by the timer, merged per host: a host reporting five
        // times a second costs one row update, not five.
        let written = match self.store.insert_reports(&staged.rows) {
            Ok(flags) => Ok(flags),
            Err(e) => {
                tracing::error!(error = %error_chain(&e), reports = staged.rows.len(),
                    "writing event reports");
                Err(format!("writing the report: {}", error_chain(&e)))
            }
        };
        let mut ended: Vec<&str> = Vec::new();
        if written.is_ok() {
            for (q, step) in batch.iter().zip(&steps) {
                if let Ok(Staging::Written {
                    row, ended: true, ..
                }) = step
                {
                    if let Some((_, cmd)) = staged.rows.get(*row) {
                        tracing::info!(command_id = %cmd.id, deployment_id = %cmd.deployment_id,
                            host = ?q.host_name, state = %cmd.state, "command ended");
                        if !ended.contains(&cmd.deployment_id.as_str()) {
                            ended.push(&cmd.deployment_id);
                        }
                    }
                }
            }
            for id in &ended {
                // The reports are written; a failure here leaves the deployment to be
                // advanced at the next report, sweep or restart.
                if let Err(e) = self.advance_locked(id) {
                    tracing::error!(deployment_id = %id, error = %e, "advancing a deployment");
                }
            }
            if !staged.rows.is_empty() {
                self.changed();
            }
        }
        for (q, step) in batch.into_iter().zip(steps) {
            let answer = match step {
                Err(e) => Err(e),
                Ok(Staging::Answered(ack)) => Ok(ack),
                Ok(Staging::Written { row, aborted, .. }) => match &written {
                    Ok(flags) => Ok(ReportAck {
                        recorded: flags.get(row).copied().unwrap_or(false),
                        aborted,
                    }),
                    Err(why) => Err(ServiceError::Internal(why.clone())),
                },
            };
            // The caller may be gone (its request dropped); nothing to tell then.
            let _ = q.answer.send(answer);
        }
    }

    /// Checks one queued report against its command and applies it to the staged copy.
    fn stage_report(&self, q: &QueuedReport, now: u64, staged: &mut Staged) -> Result<Staging> {
        let command_id = q.command_id.as_str();
        let not_found = || ServiceError::NotFound(format!("no command {command_id} for this host"));
        let mut cmd = match staged.commands.get(command_id) {
            Some(c) => c.clone(),
            None => self.store.command(command_id)?.ok_or_else(not_found)?,
        };
        if cmd.host_id != q.host_id {
            return Err(not_found());
        }
        let stopped = match staged.deployments.get(&cmd.deployment_id) {
            Some(d) => d.state == DeploymentState::Stopped,
            None => {
                let d = self
                    .store
                    .deployment(&cmd.deployment_id)?
                    .ok_or_else(not_found)?;
                let stopped = d.state == DeploymentState::Stopped;
                staged.deployments.insert(d.id.clone(), d);
                stopped
            }
        };
        let aborted = |cmd: &CommandRow| {
            cmd.state == CommandState::InProgress && stopped || expired_here(cmd)
        };
        let seq = q.report.seq;
        let key = (command_id.to_owned(), seq);
        let resent = || {
            Ok(Staging::Answered(ReportAck {
                recorded: false,
                aborted: aborted(&cmd),
            }))
        };
        if staged.seqs.contains(&key) {
            return resent();
        }
        let body_json = serde_json::to_string(&q.report).unwrap_or_default();
        // A command that has ended takes no more reports, except an identical resend of
        // one it recorded (its acknowledgement was lost).
        let ended_already = !matches!(cmd.state, CommandState::Pending | CommandState::InProgress);
        match self.store.report(command_id, seq)? {
            Some(stored) if !ended_already || stored.body_json == body_json => return resent(),
            Some(_) => {
                return Err(ServiceError::Conflict(format!(
                    "command {command_id} has ended ({}); report {seq} differs from the one \
                     recorded under that number",
                    cmd.state
                )))
            }
            None if ended_already => {
                return Err(ServiceError::Conflict(format!(
                    "command {command_id} has ended ({}); it takes no more reports",
                    cmd.state
                )))
            }
            None => {}
        }
        let ended = apply_report(&mut cmd, &q.report.body, now);
        let row = ReportRow {
            command_id: command_id.to_owned(),
            seq,
            at_ms: q.report.at_ms,
            received_ms: now,
            body_json,
        };
        let step = Staging::Written {
            row: staged.rows.len(),
            ended,
            aborted: !ended && aborted(&cmd),
        };
        staged.seqs.insert(key);
        staged.rows.push((row, cmd.clone()));
        staged.commands.insert(command_id.to_owned(), cmd);
        Ok(step)
    }

    // ---- deployments ----

    pub fn create_deployment(&self, req: op::CreateDeployment) -> Result<op::Deployment> {
        let group = self.group_row(&req.application, &req.deployment_group)?;
        let (revision_id, revision) = match req.revision {
            op::RevisionSource::Id(id) => {
                let r = self
                    .store
                    .revision(&id)?
                    .ok_or_else(|| ServiceError::NotFound(format!("no revision {id}")))?;
                if r.application != req.application {
                    return Err(ServiceError::Invalid(format!(
                        "revision {id} belongs to application {}, not {}",
                        r.application, req.application
                    )));
                }
                (r.id, r.revision)
            }
            op::RevisionSource::Inline(revision) => {
                let info = self.create_revision(&req.application, revision)?;
                (info.id, info.revision)
            }
        };
        let file_exists_behavior = match req.file_exists_behavior {
            None => None,
            Some(b) => {
                let up = b.to_ascii_uppercase();
                if !["DISALLOW", "OVERWRITE", "RETAIN"].contains(&up.as_str()) {
                    return Err(ServiceError::Invalid(format!(
                        "file_exists_behavior: {b:?} is not DISALLOW, OVERWRITE or RETAIN"
                    )));
                }
                Some(up)
            }
        };
        let events = if req.events.is_empty() {
            LIFECYCLE_EVENTS.iter().map(|e| (*e).to_owned()).collect()
        } else {
            for e in &req.events {
                if !LIFECYCLE_EVENTS.contains(&e.as_str()) {
                    return Err(ServiceError::Invalid(format!(
                        "events: {e:?} is not a lifecycle event (expected one of {})",
                        LIFECYCLE_EVENTS.join(", ")
                    )));
                }
            }
            // Lifecycle order, each once.
            LIFECYCLE_EVENTS
                .iter()
                .filter(|e| req.events.iter().any(|r| r == *e))
                .map(|e| (*e).to_owned())
                .collect()
        };
        let row = DeploymentRow {
            id: new_id("d"),
            application: group.application.clone(),
            group_id: group.id.clone(),
            group_name: group.name.clone(),
            revision_id: Some(revision_id),
            revision,
            state: DeploymentState::InProgress,
            creator: Creator::User,
            rollback_of: None,
            rolled_back_by: None,
            message: None,
            rollout: group.rollout,
            file_exists_behavior,
            ignore_application_stop_failures: req.ignore_application_stop_failures,
            events,
            appspec_path: req.appspec_path,
            created_ms: now_ms(),
            ended_ms: None,
        };
        let id = row.id.clone();
        {
            let _guard = self.lock();
            self.start_locked(row, &group)?;
        }
        self.changed();
        let d = self
            .store
            .deployment(&id)?
            .ok_or_else(|| ServiceError::NotFound(format!("no deployment {id}")))?;
        self.deployment_summary(d, self.change_seq())
    }

    /// Inserts a deployment with a pending command per target host and hands out the
    /// first commands. Refuses a second deployment in progress for the group, and a group
    /// that matches no host.
    fn start_locked(&self, mut row: DeploymentRow, group: &GroupRow) -> Result<()> {
        // Targets are chosen by tags and last contact: take the latest.
        self.flush_contacts()?;
        if let Some(busy) = self
            .store
            .active_deployments()?
            .into_iter()
            .find(|d| d.group_id == group.id)
        {
            return Err(ServiceError::Conflict(format!(
                "deployment group {} of application {} already has deployment {} in progress; \
                 wait for it or stop it first",
                group.name, group.application, busy.id
            )));
        }
        let now = now_ms();
        let mut targets: Vec<HostRow> = self
            .store
            .hosts()?
            .into_iter()
            .filter(|h| {
                !h.revoked
                    && matches(&group.tag_filters, &h.tags)
                    && self.within_lease(h.last_seen_ms, now)
            })
            .collect();
        if targets.is_empty() {
            return Err(ServiceError::Conflict(format!(
                "deployment group {} of application {} matches no host seen in the last {}",
                group.name,
                group.application,
                humantime::format_duration(self.config.host_lease)
            )));
        }
        // Online hosts first, then by name: the rollout starts hosts in this order.
        targets.sort_by(|a, b| {
            (!self.online(a, now), &a.name, &a.id).cmp(&(!self.online(b, now), &b.name, &b.id))
        });
        let mut commands: Vec<CommandRow> = targets
            .iter()
            .enumerate()
            .map(|(i, h)| CommandRow {
                id: new_id("c"),
                deployment_id: row.id.clone(),
                host_id: h.id.clone(),
                host_name: h.name.clone(),
                position: u32::try_from(i).unwrap_or(u32::MAX),
                state: CommandState::Pending,
                current_event: None,
                failed_event: None,
                script: None,
                exit_code: None,
                error_code: None,
                message: None,
                log_tail: None,
                events: Vec::new(),
                started_ms: None,
                ended_ms: None,
                last_report_ms: None,
            })
            .collect();
        row.state = DeploymentState::InProgress;
        // The first batch is written already started, in the same transaction: with a large
        // fleet, writing every command twice before the first host hears of it is slow.
        let all_pending = Tally {
            pending: commands.len(),
            ..Tally::default()
        };
        if let Some((room, Outcome::Running)) =
            to_rollout(row.rollout).map(|config| rollout::decide_tally(config, all_pending))
        {
            for c in commands.iter_mut().take(room) {
                c.state = CommandState::InProgress;
                c.started_ms = Some(now);
            }
        }
        self.store.insert_deployment(&row, &commands)?;
        tracing::info!(deployment_id = %row.id, application = %row.application,
            deployment_group = %row.group_name, hosts = commands.len(),
            revision = %row.revision.describe(), "deployment created");
        self.handed_out(
            &row,
            commands
                .iter()
                .filter(|c| c.state == CommandState::InProgress),
        );
        // Ends it at once when nothing could start (an unknown rollout, a minimum that
        // leaves no host to deploy to).
        self.advance_locked(&row.id)
    }

    /// Wakes the hosts of commands just committed as started.
    fn handed_out<'a>(&self, d: &DeploymentRow, started: impl IntoIterator<Item = &'a CommandRow>) {
        for c in started {
            tracing::info!(deployment_id = %d.id, host = ?c.host_name, command_id = %c.id,
                "command handed out");
            self.wake(&c.host_id, agent_command(c, d));
        }
    }

    /// Applies the rollout decision to a deployment in progress: starts commands, ends
    /// the deployment, and starts an auto-rollback when it failed.
    fn advance_locked(&self, id: &str) -> Result<()> {
        let Some(mut d) = self.store.deployment(id)? else {
            return Ok(());
        };
        if d.state != DeploymentState::InProgress {
            return Ok(());
        }
        let mut tally = Tally::default();
        for (state, n) in self.store.command_counts(id)? {
            tally.add(host_state(state), n);
        }
        let (room, outcome) = match to_rollout(d.rollout) {
            Some(config) => rollout::decide_tally(config, tally),
            None => (
                0,
                Outcome::Failed(format!("unknown rollout configuration {}", d.rollout)),
            ),
        };
        let now = now_ms();
        let mut started = if room > 0 {
            self.store.pending_commands(id, room)?
        } else {
            Vec::new()
        };
        for c in &mut started {
            c.state = CommandState::InProgress;
            c.started_ms = Some(now);
        }
        let mut skipped: Vec<CommandRow> = Vec::new();
        let mut failed = false;
        match outcome {
            Outcome::Running => {}
            Outcome::Succeeded => {
                d.state = DeploymentState::Succeeded;
                d.ended_ms = Some(now);
            }
            Outcome::Failed(why) => {
                failed = true;
                d.state = DeploymentState::Failed;
                d.ended_ms = Some(now);
                d.message = Some(why);
                // A failed deployment starts nothing: every pending host is skipped.
                for mut c in self.store.pending_commands(id, usize::MAX)? {
                    c.state = CommandState::Skipped;
                    c.message = Some("not started: the deployment failed".into());
                    skipped.push(c);
                }
            }
        }
        if started.is_empty() && skipped.is_empty() && d.state == DeploymentState::InProgress {
            return Ok(());
        }
        let changed_rows: Vec<CommandRow> = started.iter().chain(&skipped).cloned().collect();
        self.store.save_deployment(&d, &changed_rows)?;
        self.handed_out(&d, &started);
        if d.state.is_terminal() {
            tracing::info!(deployment_id = %d.id, state = %d.state,
                message = d.message.as_deref().unwrap_or(""), "deployment ended");
        }
        if failed {
            self.auto_rollback_locked(d)?;
        }
        Ok(())
    }

    /// When the failed deployment's group enables auto-rollback, starts a deployment of
    /// the group's last successful revision, linked both ways. A rollback that fails does
    /// not itself roll back.
    fn auto_rollback_locked(&self, mut failed: DeploymentRow) -> Result<()> {
        if failed.creator == Creator::Rollback {
            return Ok(());
        }
        let Some(group) = self.store.group_by_id(&failed.group_id)? else {
            return Ok(());
        };
        if !group.auto_rollback {
            return Ok(());
        }
        let note = |failed: &mut DeploymentRow, what: String| {
            let base = failed.message.take().unwrap_or_default();
            failed.message = Some(format!("{base}; {what}"));
        };
        let Some(good) = self.store.last_successful_deployment(&group.id)? else {
            note(
                &mut failed,
                "no earlier successful revision to roll back to".into(),
            );
            return Ok(self.store.save_deployment(&failed, &[])?);
        };
        let rollback = DeploymentRow {
            id: new_id("d"),
            creator: Creator::Rollback,
            rollback_of: Some(failed.id.clone()),
            rolled_back_by: None,
            message: None,
            rollout: group.rollout,
            state: DeploymentState::InProgress,
            created_ms: now_ms(),
            ended_ms: None,
            group_name: group.name.clone(),
            ..good
        };
        let rollback_id = rollback.id.clone();
        match self.start_locked(rollback, &group) {
            Ok(()) => {
                tracing::info!(deployment_id = %failed.id, rollback = %rollback_id,
                    "auto-rollback started");
                failed.rolled_back_by = Some(rollback_id);
            }
            Err(e) => note(&mut failed, format!("auto-rollback could not start: {e}")),
        }
        Ok(self.store.save_deployment(&failed, &[])?)
    }

    pub fn stop_deployment(&self, id: &str) -> Result<op::Deployment> {
        {
            let _guard = self.lock();
            let mut d = self
                .store
                .deployment(id)?
                .ok_or_else(|| ServiceError::NotFound(format!("no deployment {id}")))?;
            if d.state.is_terminal() {
                return Err(ServiceError::Conflict(format!(
                    "deployment {id} already ended ({})",
                    d.state
                )));
            }
            let now = now_ms();
            d.state = DeploymentState::Stopped;
            d.ended_ms = Some(now);
            d.message = Some("stopped by an operator".into());
            let skipped: Vec<CommandRow> = self
                .store
                .commands(id)?
                .into_iter()
                .filter(|c| c.state == CommandState::Pending)
                .map(|mut c| {
                    c.state = CommandState::Skipped;
                    c.message = Some("not started: the deployment was stopped".into());
                    c
                })
                .collect();
            self.store.save_deployment(&d, &skipped)?;
            tracing::info!(deployment_id = %id, "deployment stopped");
        }
        self.changed();
        self.deployment(id)
    }

    pub fn deployment(&self, id: &str) -> Result<op::Deployment> {
        let d = self
            .store
            .deployment(id)?
            .ok_or_else(|| ServiceError::NotFound(format!("no deployment {id}")))?;
        let commands = self.store.commands(id)?;
        let counts = host_counts(commands.iter().map(|c| (c.state, 1)));
        let hosts = commands.into_iter().map(deployment_host).collect();
        Ok(deployment_view(d, counts, hosts, self.change_seq()))
    }

    /// A deployment without its per-host detail: counts only.
    fn deployment_summary(&self, d: DeploymentRow, change_seq: u64) -> Result<op::Deployment> {
        let counts = host_counts(self.store.command_counts(&d.id)?);
        Ok(deployment_view(d, counts, Vec::new(), change_seq))
    }

    pub fn deployments(&self, application: Option<&str>) -> Result<op::DeploymentList> {
        if let Some(app) = application {
            self.app(app)?;
        }
        let seq = self.change_seq();
        let deployments = self
            .store
            .deployments(application, 200)?
            .into_iter()
            .map(|d| self.deployment_summary(d, seq))
            .collect::<Result<_>>()?;
        Ok(op::DeploymentList { deployments })
    }

    /// Fails commands in progress that have had neither a report nor a heartbeat naming
    /// them for the lease ("host lost" when the host is silent too, "no report" when it
    /// still polls: its polls do not keep a command alive), then lets their deployments go
    /// on. Returns how many commands it failed.
    pub fn expire_leases(&self) -> Result<usize> {
        let now = now_ms();
        let mut expired = 0;
        {
            let _guard = self.lock();
            // A host's last poll may not be written yet.
            self.flush_contacts()?;
            let in_progress = self.store.in_progress_commands()?;
            let leases: HashMap<String, CommandLease> = {
                let ids: HashSet<&str> = in_progress.iter().map(|c| c.id.as_str()).collect();
                let mut leases = locked(&self.leases);
                leases.retain(|id, _| ids.contains(id.as_str()));
                leases.clone()
            };
            let mut deployments = Vec::new();
            for mut c in in_progress {
                let mut seen = None;
                let last = match leases.get(&c.id) {
                    Some(l) => [Some(l.delivered_ms), Some(l.beat_ms), c.last_report_ms]
                        .into_iter()
                        .flatten()
                        .max()
                        .unwrap_or(0),
                    // Not handed to its host since this service started: the host may be
                    // busy with another command (or the coordinator restarted); it holds while
                    // the host keeps in touch.
                    None => {
                        seen = self.store.host(&c.host_id)?.map(|h| h.last_seen_ms);
                        [c.started_ms, c.last_report_ms, seen]
                            .into_iter()
                            .flatten()
                            .max()
                            .unwrap_or(0)
                    }
                };
                if self.within_lease(last, now) {
                    continue;
                }
                let Some(d) = self.store.deployment(&c.deployment_id)? else {
                    continue;
                };
                if seen.is_none() {
                    seen = self.store.host(&c.host_id)?.map(|h| h.last_seen_ms);
                }
                let lease = humantime::format_duration(self.config.host_lease);
                c.state = CommandState::Failed;
                c.ended_ms = Some(now);
                if seen.is_some_and(|s| self.within_lease(s, now)) {
                    c.error_code = Some("no_report".into());
                    c.message = Some(format!(
                        "no report or heartbeat for this command for {lease} although the host \
                         still polls"
                    ));
                    tracing::warn!(command_id = %c.id, host = ?c.host_name,
                        "command failed: no report while the host polls");
                } else {
                    c.error_code = Some("host_lost".into());
                    c.message = Some(format!("host lost: no report or poll for {lease}"));
                    tracing::warn!(command_id = %c.id, host = ?c.host_name, "host lost");
                }
                self.store.save_deployment(&d, &[c.clone()])?;
                if !deployments.contains(&c.deployment_id) {
                    deployments.push(c.deployment_id.clone());
                }
                expired += 1;
            }
            for id in deployments {
                self.advance_locked(&id)?;
            }
        }
        if expired > 0 {
            self.changed();
        }
        Ok(expired)
    }

    /// Re-evaluates every deployment in progress; run at startup so a decision that was
    /// due when the coordinator stopped is taken now.
    pub fn resume(&self) -> Result<()> {
        let _guard = self.lock();
        for d in self.store.active_deployments()? {
            self.advance_locked(&d.id)?;
        }
        Ok(())
    }
}

/// The command was failed by the lease sweep, not by its host: the host is told to stop.
fn expired_here(cmd: &CommandRow) -> bool {
    cmd.state == CommandState::Failed
        && matches!(cmd.error_code.as_deref(), Some("host_lost" | "no_report"))
}

fn rfc3339(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `env=prod, role=web|db`
fn describe_scope(scope: &BTreeMap<String, Vec<String>>) -> String {
    scope
        .iter()
        .map(|(k, vs)| format!("{k}={}", vs.join("|")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn token_info(t: RegistrationTokenRow) -> op::RegistrationTokenInfo {
    op::RegistrationTokenInfo {
        id: t.id,
        created_ms: t.created_ms,
        expires_ms: t.expires_ms,
        max_uses: t.max_uses,
        uses: t.uses,
        revoked: t.revoked,
        allowed_tags: t.allowed_tags,
    }
}

/// What an agent is told to do for command `cmd` of deployment `d`.
fn agent_command(cmd: &CommandRow, d: &DeploymentRow) -> agent::Command {
    agent::Command {
        command_id: cmd.id.clone(),
        deployment_id: d.id.clone(),
        application: d.application.clone(),
        deployment_group: d.group_name.clone(),
        deployment_group_id: d.group_id.clone(),
        revision: d.revision.clone(),
        appspec_path: d.appspec_path.clone(),
        file_exists_behavior: d.file_exists_behavior.clone(),
        events: d.events.clone(),
        ignore_application_stop_failures: d.ignore_application_stop_failures,
    }
}

/// `host` (as stored under `host_id`) when `secret` is its secret and it is not revoked.
fn check_host(host_id: &str, secret: &str, host: Option<HostRow>) -> Result<HostRow> {
    match host {
        Some(h) if !h.revoked && constant_time_eq(&h.secret_sha256, &sha256_hex(secret)) => Ok(h),
        Some(h) if h.revoked => Err(ServiceError::Unauthorized(format!(
            "host {host_id} was revoked"
        ))),
        _ => Err(ServiceError::Unauthorized(
            "unknown host or wrong host secret".into(),
        )),
    }
}

fn host_counts(states: impl IntoIterator<Item = (CommandState, usize)>) -> HostCounts {
    let mut counts = HostCounts::default();
    for (state, n) in states {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        match state {
            CommandState::Pending => counts.pending += n,
            CommandState::InProgress => counts.in_progress += n,
            CommandState::Succeeded => counts.succeeded += n,
            CommandState::Failed | CommandState::Unknown => counts.failed += n,
            CommandState::Stopped => counts.stopped += n,
            CommandState::Skipped => counts.skipped += n,
        }
    }
    counts
}

fn deployment_host(c: CommandRow) -> op::DeploymentHost {
    op::DeploymentHost {
        host_id: c.host_id,
        host_name: c.host_name,
        command_id: c.id,
        state: c.state,
        current_event: c.current_event,
        failed_event: c.failed_event,
        script: c.script,
        exit_code: c.exit_code,
        error_code: c.error_code,
        message: c.message,
        log_tail: c.log_tail,
        events: c.events,
        started_ms: c.started_ms,
        ended_ms: c.ended_ms,
        last_report_ms: c.last_report_ms,
    }
}

fn conflict(e: StoreError) -> ServiceError {
    match e {
        StoreError::Conflict(what) => ServiceError::Conflict(format!("{what} already exists")),
        other => ServiceError::Store(other),
    }
}

fn revision_info(r: RevisionRow) -> op::RevisionInfo {
    op::RevisionInfo {
        id: r.id,
        application: r.application,
        revision: r.revision,
        created_ms: r.created_ms,
    }
}

/// A deployment as operators see it. `hosts` is empty in lists and in the answer to
/// create (a large deployment's per-host detail is what `GET /v1/deployments/{id}` is for).
fn deployment_view(
    d: DeploymentRow,
    counts: HostCounts,
    hosts: Vec<op::DeploymentHost>,
    change_seq: u64,
) -> op::Deployment {
    op::Deployment {
        id: d.id,
        application: d.application,
        deployment_group: d.group_name,
        revision_id: d.revision_id,
        revision: d.revision,
        state: d.state,
        creator: d.creator,
        rollback_of: d.rollback_of,
        rolled_back_by: d.rolled_back_by,
        message: d.message,
        rollout: d.rollout,
        file_exists_behavior: d.file_exists_behavior,
        ignore_application_stop_failures: d.ignore_application_stop_failures,
        events: d.events,
        created_ms: d.created_ms,
        ended_ms: d.ended_ms,
        counts,
        hosts,
        change_seq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_and_polls_fit_inside_the_lease() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        // (lease, heartbeat interval, longest poll)
        for (lease, beat, poll) in [
            (s(600), s(60), s(300)),
            (s(120), s(30), s(60)),
            (s(2), ms(500), s(1)),
            (s(1), ms(250), s(1)),
            (ms(200), ms(250), s(1)),
        ] {
            let c = ServiceConfig {
                host_lease: lease,
                ..ServiceConfig::default()
            };
            assert_eq!(c.heartbeat_interval(), beat, "{lease:?}");
            assert_eq!(c.poll_wait_cap(), poll, "{lease:?}");
        }
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        let hash = sha256_hex("s3cret");
        assert!(constant_time_eq(&hash, &sha256_hex("s3cret")));
        assert!(!constant_time_eq(&hash, &sha256_hex("s3creT")));
        assert!(!constant_time_eq(&hash, &hash[..63]));
        assert!(!constant_time_eq("", &hash));
        assert!(constant_time_eq("", ""));
    }
}
