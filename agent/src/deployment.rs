//! Drives one deployment through its lifecycle events, in CodeDeploy's order.
//!
//! The [`Engine`] is the same for `hoist-agent deploy` and the daemon: it prepares the
//! revision (DownloadBundle), installs it (Install), runs the appspec's hooks for the other
//! events, records every step durably in the state directory and tells an [`Observer`] (the
//! CLI's progress printer, or the daemon's report outbox) as each event starts and ends.
//!
//! It deliberately does not fetch from the network itself or talk to a coordinator: the
//! daemon hands it a [`Source`] and turns observer calls into reports.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hoist_appspec::{AppSpec, FileExistsBehavior, LifecycleEvent};
use hoist_protocol::agent::{ErrorCode, EventStatus};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bundle;
use crate::bundle::extract::ExtractLimits;
use crate::bundle::fetch::{self, FetchError, FetchSettings, Fetched};
use crate::client::Client;
use crate::config::Config;
use crate::hooks::{self, HookLog, HookOutcome, LogFields, ScriptRun};
use crate::install::{self, InstalledFiles};
use crate::state::{
    self, DeploymentRecord, EventRecord, HostCredentials, InFlight, LastSuccess, RecordStatus,
    StateDir, SCHEMA_VERSION,
};

/// PATH given to every hook.
const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Settings that hold for every deployment on this host.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub kill_grace: Duration,
    pub stop_grace: Duration,
    pub environment_file: Option<PathBuf>,
    pub limits: ExtractLimits,
    /// Deployment directories kept per group.
    pub keep: usize,
    /// How to fetch [`Source::Remote`] revisions; `None` for local deployments.
    pub fetch: Option<FetchContext>,
}

/// The HTTP client and settings used to fetch remote revisions.
#[derive(Debug, Clone)]
pub struct FetchContext {
    pub client: reqwest::Client,
    pub settings: fetch::FetchSettings,
}

/// The engine's settings from the config; with a client and `host`, it can fetch remote
/// revisions too, over the same HTTP client as the coordinator's API.
pub fn engine_settings(
    config: &Config,
    remote: Option<(&Client, &HostCredentials)>,
) -> EngineSettings {
    EngineSettings {
        kill_grace: config.hooks.kill_grace(),
        stop_grace: config.hooks.stop_grace(),
        environment_file: config.hooks.environment_file.clone(),
        limits: ExtractLimits::from_config(&config.bundles),
        keep: config.deployments.keep,
        fetch: remote.map(|(client, host)| FetchContext {
            client: client.http().clone(),
            settings: FetchSettings::from_config(config, Some(host)),
        }),
    }
}

/// Where the new revision comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A directory or an archive file on this host.
    Local(PathBuf),
    /// An archive already downloaded and verified into the deployment directory.
    Archive(PathBuf),
    /// A directory already checked out into the deployment directory (Git).
    Directory(PathBuf),
    /// A revision to fetch during DownloadBundle (the daemon's commands).
    Remote(hoist_protocol::agent::Revision),
}

/// One deployment to run.
#[derive(Debug, Clone)]
pub struct DeploymentRequest {
    pub deployment_id: String,
    pub command_id: Option<String>,
    pub application: String,
    pub group: String,
    pub group_id: String,
    pub source: Source,
    /// Human description of the revision, kept in records.
    pub revision: String,
    /// Appspec path inside the bundle, when not `appspec.yml` / `appspec.yaml`.
    pub appspec_path: Option<String>,
    /// Events to run; run in lifecycle order whatever order they are given in.
    pub events: Vec<LifecycleEvent>,
    /// The deployment's option; the appspec's own `file_exists_behavior` wins.
    pub file_exists_behavior: Option<FileExistsBehavior>,
    pub ignore_application_stop_failures: bool,
    /// BUNDLE_BUCKET, BUNDLE_KEY, BUNDLE_VERSION, BUNDLE_ETAG, BUNDLE_COMMIT where they apply.
    pub bundle_env: Vec<(String, String)>,
}

/// How one event ended, as told to the observer and recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventResult {
    pub event: LifecycleEvent,
    pub status: EventStatus,
    pub duration: Duration,
    pub error_code: Option<ErrorCode>,
    pub message: Option<String>,
    pub script: Option<String>,
    pub exit_code: Option<i32>,
    /// The last lines of this event's script output.
    pub log_tail: Option<String>,
}

/// Told about progress. Implementations must be quick (they run on the deployment's task).
pub trait Observer: Send + Sync {
    fn event_started(&self, event: LifecycleEvent);
    fn script_started(&self, _event: LifecycleEvent, _location: &str) {}
    fn event_ended(&self, result: &EventResult);
}

/// Two ways to stop a deployment early.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    /// Finish the running script, then stop (the coordinator answered "aborted").
    pub abort: CancellationToken,
    /// Agent shutdown: the running script gets the stop grace period, then is killed.
    pub shutdown: CancellationToken,
}

impl Stop {
    fn requested(&self) -> bool {
        self.abort.is_cancelled() || self.shutdown.is_cancelled()
    }
}

pub struct Engine {
    pub state: StateDir,
    pub settings: EngineSettings,
}

/// The new revision once DownloadBundle prepared it.
struct Prepared {
    root: PathBuf,
    appspec_path: PathBuf,
    spec: AppSpec,
}

/// What an event produced, before timing and tail are added.
struct Step {
    status: EventStatus,
    error_code: Option<ErrorCode>,
    message: Option<String>,
    script: Option<String>,
    exit_code: Option<i32>,
    /// The deployment must end as Stopped rather than Failed.
    stopped: bool,
}

impl Step {
    fn ok() -> Step {
        Step {
            status: EventStatus::Succeeded,
            error_code: None,
            message: None,
            script: None,
            exit_code: None,
            stopped: false,
        }
    }

    fn skipped(why: impl Into<String>) -> Step {
        Step {
            status: EventStatus::Skipped,
            message: Some(why.into()),
            ..Step::ok()
        }
    }

    fn failed(code: ErrorCode, message: impl Into<String>) -> Step {
        Step {
            status: EventStatus::Failed,
            error_code: Some(code),
            message: Some(message.into()),
            ..Step::ok()
        }
    }
}

impl Engine {
    pub fn new(state: StateDir, settings: EngineSettings) -> Engine {
        Engine { state, settings }
    }

    /// Runs the deployment to its end and returns its record (also written to disk).
    /// Errors of the state directory itself (disk full, permissions) are returned as `Err`;
    /// everything that goes wrong with the revision is a failed record.
    #[tracing::instrument(skip_all, fields(deployment_id = %req.deployment_id, application = %req.application, deployment_group = %req.group))]
    pub async fn run(
        &self,
        req: &DeploymentRequest,
        observer: &dyn Observer,
        stop: &Stop,
    ) -> anyhow::Result<DeploymentRecord> {
        // Per-group state is keyed by the group's id: two applications may each have a
        // group of the same name on this host.
        self.state.prepare_group(
            &req.group_id,
            &req.application,
            &req.group,
            req.command_id.is_some(),
        )?;
        let dir = self.state.deployment_dir(&req.group_id, &req.deployment_id);
        state::create_dir(&dir, 0o755)?;
        state::create_private_dir(&dir.join("logs"))?;
        let log_path = dir.join("logs").join("hooks.log");
        let log = Arc::new(HookLog::open(&log_path).map_err(|e| {
            anyhow::Error::new(e).context(format!("opening hook log {}", log_path.display()))
        })?);
        log.set_fields(LogFields {
            deployment_id: req.deployment_id.clone(),
            application: req.application.clone(),
            deployment_group: req.group.clone(),
            lifecycle_event: String::new(),
        });
        let started_at_ms = state::now_ms();
        let mut record = DeploymentRecord {
            schema_version: SCHEMA_VERSION,
            deployment_id: req.deployment_id.clone(),
            command_id: req.command_id.clone(),
            application: req.application.clone(),
            group: req.group.clone(),
            revision: req.revision.clone(),
            started_at_ms,
            ended_at_ms: None,
            status: RecordStatus::InProgress,
            events: Vec::new(),
            failed_event: None,
            error: None,
            log_path: log_path.clone(),
            log_tail: None,
        };
        let record_path = dir.join("result.json");
        state::write_json(&record_path, &record)?;
        info!(deployment_id = %req.deployment_id, application = %req.application, deployment_group = %req.group, revision = %req.revision, "deployment started");
        log.note(&format!(
            "deployment {} of {} to group {} started: {}",
            req.deployment_id, req.application, req.group, req.revision
        ));

        let mut in_flight = InFlight {
            schema_version: SCHEMA_VERSION,
            deployment_id: req.deployment_id.clone(),
            command_id: req.command_id.clone(),
            application: req.application.clone(),
            group: req.group.clone(),
            group_id: Some(req.group_id.clone()),
            agent_pid: std::process::id(),
            started_at_ms,
            event: String::new(),
            event_started_at_ms: started_at_ms,
            script: None,
            pgid: None,
            boot_id: None,
            pgid_start_time: None,
        };

        let mut prepared: Option<Prepared> = None;
        let mut final_status = RecordStatus::Succeeded;
        for event in plan_events(&req.events) {
            if stop.requested() {
                final_status = RecordStatus::Stopped;
                record.error = Some(format!("deployment stopped before {event}"));
                log.note(&format!("deployment stopped before {event}"));
                break;
            }
            in_flight.event = event.to_string();
            in_flight.event_started_at_ms = state::now_ms();
            in_flight.script = None;
            in_flight.pgid = None;
            in_flight.boot_id = None;
            in_flight.pgid_start_time = None;
            state::write_json(&self.state.in_flight_path(), &in_flight)?;

            log.set_event(event.as_str());
            observer.event_started(event);
            info!(deployment_id = %req.deployment_id, application = %req.application, deployment_group = %req.group, lifecycle_event = %event, "lifecycle event started");
            log.note(&format!("{event} started"));
            let t0 = Instant::now();
            let step = self
                .run_event(
                    event,
                    req,
                    &dir,
                    &mut prepared,
                    &log,
                    &mut in_flight,
                    observer,
                    stop,
                )
                .await?;
            let mut status = step.status;
            if status == EventStatus::Failed
                && event.uses_previous_revision()
                && req.ignore_application_stop_failures
                && !step.stopped
            {
                status = EventStatus::FailedIgnored;
            }
            let tail = log.take_tail();
            let result = EventResult {
                event,
                status,
                duration: t0.elapsed(),
                error_code: step.error_code,
                message: step.message.clone(),
                script: step.script.clone(),
                exit_code: step.exit_code,
                log_tail: (!tail.is_empty()).then_some(tail),
            };
            log.note(&format!(
                "{event} {}{}",
                status_word(status),
                step.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
            match status {
                EventStatus::Failed => {
                    warn!(deployment_id = %req.deployment_id, application = %req.application, deployment_group = %req.group, lifecycle_event = %event, error = ?step.message, "lifecycle event failed")
                }
                _ => {
                    info!(deployment_id = %req.deployment_id, application = %req.application, deployment_group = %req.group, lifecycle_event = %event, status = status_word(status), "lifecycle event ended")
                }
            }
            observer.event_ended(&result);
            record.events.push(EventRecord {
                event: event.to_string(),
                status,
                duration_ms: result.duration.as_millis() as u64,
                error_code: result.error_code,
                message: result.message.clone(),
                script: result.script.clone(),
                exit_code: result.exit_code,
            });
            if result.log_tail.is_some() {
                record.log_tail = result.log_tail.clone();
            }
            state::write_json(&record_path, &record)?;

            if status == EventStatus::Failed {
                final_status = if step.stopped {
                    RecordStatus::Stopped
                } else {
                    RecordStatus::Failed
                };
                record.failed_event = Some(event.to_string());
                record.error = step.message;
                break;
            }
            if event == LifecycleEvent::Install {
                if let Some(p) = &prepared {
                    let last = LastSuccess {
                        schema_version: SCHEMA_VERSION,
                        deployment_id: req.deployment_id.clone(),
                        application: req.application.clone(),
                        bundle_root: p.root.clone(),
                        appspec: p.appspec_path.clone(),
                        revision: req.revision.clone(),
                        installed_at_ms: state::now_ms(),
                    };
                    state::write_json(&self.state.last_success_path(&req.group_id), &last)?;
                }
            }
        }

        record.status = final_status;
        record.ended_at_ms = Some(state::now_ms());
        state::write_json(&record_path, &record)?;
        state::remove_file(&self.state.in_flight_path())?;
        log.note(&format!("deployment {}", final_status.as_str()));
        info!(deployment_id = %req.deployment_id, application = %req.application, deployment_group = %req.group, status = final_status.as_str(), "deployment ended");
        if let Err(e) = self.prune(&req.group_id) {
            warn!("pruning old deployments of group {}: {e:#}", req.group);
        }
        Ok(record)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_event(
        &self,
        event: LifecycleEvent,
        req: &DeploymentRequest,
        dir: &Path,
        prepared: &mut Option<Prepared>,
        log: &Arc<HookLog>,
        in_flight: &mut InFlight,
        observer: &dyn Observer,
        stop: &Stop,
    ) -> anyhow::Result<Step> {
        if event.uses_previous_revision() {
            let Some(last) =
                state::read_json::<LastSuccess>(&self.state.last_success_path(&req.group_id))?
            else {
                return Ok(Step::skipped(format!(
                    "no revision was installed before in group {}",
                    req.group
                )));
            };
            let text = match std::fs::read_to_string(&last.appspec) {
                Ok(t) => t,
                Err(e) => {
                    log.note(&format!(
                        "previous revision's appspec {} cannot be read ({e}); nothing to run",
                        last.appspec.display()
                    ));
                    return Ok(Step::skipped(format!(
                        "the previous revision ({}) is no longer on this host",
                        last.revision
                    )));
                }
            };
            let spec = match hoist_appspec::parse(&text) {
                Ok(p) => p.spec,
                Err(invalid) => {
                    return Ok(Step::failed(
                        ErrorCode::AppspecInvalid,
                        format!(
                            "previous revision's appspec {} is invalid: {}",
                            last.appspec.display(),
                            join_diagnostics(&invalid.errors)
                        ),
                    ))
                }
            };
            return self
                .run_hooks(
                    event,
                    &spec,
                    &last.bundle_root,
                    req,
                    log,
                    in_flight,
                    observer,
                    stop,
                )
                .await;
        }
        match event {
            LifecycleEvent::DownloadBundle => {
                let source = match &req.source {
                    Source::Remote(revision) => {
                        match self.fetch_remote(revision, dir, log, stop).await {
                            Ok(source) => source,
                            Err(step) => return Ok(step),
                        }
                    }
                    other => other.clone(),
                };
                let dir = dir.to_path_buf();
                let limits = self.settings.limits.clone();
                let custom = req.appspec_path.clone();
                let result = tokio::task::spawn_blocking(move || {
                    prepare(&source, &dir, &limits, custom.as_deref())
                })
                .await?;
                match result {
                    Ok(p) => {
                        log.note(&format!(
                            "revision ready at {} (appspec {})",
                            p.root.display(),
                            p.appspec_path.display()
                        ));
                        *prepared = Some(p);
                        Ok(Step::ok())
                    }
                    Err(PrepareError(code, message)) => Ok(Step::failed(code, message)),
                }
            }
            LifecycleEvent::Install => {
                let Some(p) = prepared.as_ref() else {
                    return Ok(Step::failed(
                        ErrorCode::InstallFailed,
                        "no revision to install: DownloadBundle did not run",
                    ));
                };
                let behavior = p
                    .spec
                    .file_exists_behavior
                    .or(req.file_exists_behavior)
                    .unwrap_or_default();
                let spec = p.spec.clone();
                let root = p.root.clone();
                let record_path = self.state.installed_files_path(&req.group_id);
                let log = Arc::clone(log);
                tokio::task::spawn_blocking(move || {
                    install_step(&spec, &root, behavior, &record_path, &log)
                })
                .await?
            }
            _ => {
                let Some(p) = prepared.as_ref() else {
                    return Ok(Step::failed(
                        ErrorCode::BundleInvalid,
                        format!("no revision for {event}: DownloadBundle did not run"),
                    ));
                };
                self.run_hooks(event, &p.spec, &p.root, req, log, in_flight, observer, stop)
                    .await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_hooks(
        &self,
        event: LifecycleEvent,
        spec: &AppSpec,
        root: &Path,
        req: &DeploymentRequest,
        log: &Arc<HookLog>,
        in_flight: &mut InFlight,
        observer: &dyn Observer,
        stop: &Stop,
    ) -> anyhow::Result<Step> {
        let scripts = spec.hooks_for(event);
        if scripts.is_empty() {
            return Ok(Step::skipped(format!("the appspec has no {event} scripts")));
        }
        let env = self.hook_env(event, req)?;
        for hook in scripts {
            if stop.requested() {
                return Ok(Step {
                    stopped: true,
                    ..Step::failed(
                        ErrorCode::Aborted,
                        format!("deployment stopped before script {}", hook.location),
                    )
                });
            }
            in_flight.script = Some(hook.location.clone());
            in_flight.pgid = None;
            in_flight.boot_id = None;
            in_flight.pgid_start_time = None;
            state::write_json(&self.state.in_flight_path(), &*in_flight)?;
            observer.script_started(event, &hook.location);
            let run = ScriptRun {
                location: hook.location.clone(),
                bundle_root: root.to_path_buf(),
                timeout: Duration::from_secs(hook.timeout_secs),
                runas: hook.runas.clone(),
                env: env.clone(),
                kill_grace: self.settings.kill_grace,
                stop_grace: self.settings.stop_grace,
                label: format!("{event} {}", hook.location),
            };
            let in_flight_path = self.state.in_flight_path();
            let snapshot = in_flight.clone();
            let record_pgid = move |pgid: i32| {
                let mut f = snapshot.clone();
                f.pgid = Some(pgid);
                // The script leads its own group: its identity lets recovery tell this group
                // from a later one that got the same id.
                f.boot_id = crate::recovery::boot_id();
                f.pgid_start_time = crate::recovery::process_start_time(pgid);
                if let Err(e) = state::write_json(&in_flight_path, &f) {
                    warn!("recording the process group of a running script: {e:#}");
                }
            };
            let outcome = hooks::run_script(&run, log, stop.shutdown.clone(), &record_pgid).await;
            let step = outcome_step(&hook.location, outcome);
            if step.status != EventStatus::Succeeded {
                return Ok(step);
            }
        }
        Ok(Step::ok())
    }

    /// Downloads and verifies a remote revision into the deployment directory.
    async fn fetch_remote(
        &self,
        revision: &hoist_protocol::agent::Revision,
        dir: &Path,
        log: &HookLog,
        stop: &Stop,
    ) -> Result<Source, Step> {
        let Some(ctx) = &self.settings.fetch else {
            return Err(Step::failed(
                ErrorCode::BundleFetchFailed,
                "this agent is not set up to fetch remote revisions",
            ));
        };
        log.note(&format!("fetching {}", revision.describe()));
        // Either way of stopping ends a download: it is not a script to let finish.
        let cancel = CancellationToken::new();
        let work_dir = dir.join("download");
        let fetched = tokio::select! {
            r = fetch::fetch(revision, &work_dir, &ctx.client, &ctx.settings, &cancel) => r,
            _ = stop.abort.cancelled() => { cancel.cancel(); Err(FetchError::Cancelled) }
            _ = stop.shutdown.cancelled() => { cancel.cancel(); Err(FetchError::Cancelled) }
        };
        match fetched {
            Ok(Fetched::Archive {
                path,
                sha256,
                bytes,
            }) => {
                log.note(&format!(
                    "downloaded {bytes} bytes, sha256 {sha256} verified"
                ));
                Ok(Source::Archive(path))
            }
            Ok(Fetched::Directory { path, commit }) => {
                log.note(&format!("checked out commit {commit}"));
                Ok(Source::Directory(path))
            }
            Err(e @ FetchError::ChecksumMismatch { .. }) => Err(Step::failed(
                ErrorCode::BundleChecksumMismatch,
                e.to_string(),
            )),
            Err(FetchError::Cancelled) => Err(Step {
                stopped: true,
                ..Step::failed(ErrorCode::Aborted, "download stopped")
            }),
            Err(e) => Err(Step::failed(
                ErrorCode::BundleFetchFailed,
                crate::error_chain(&e),
            )),
        }
    }

    /// The environment of every hook of `event`: a clean one, never the agent's own.
    fn hook_env(
        &self,
        event: LifecycleEvent,
        req: &DeploymentRequest,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let lang = std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".to_string());
        let mut env = vec![
            ("PATH".to_string(), HOOK_PATH.to_string()),
            ("LANG".to_string(), lang),
        ];
        // The operator's file comes before our variables so it can never override them.
        if let Some(path) = &self.settings.environment_file {
            for (k, v) in hooks::read_environment_file(path)? {
                env.retain(|(key, _)| *key != k);
                env.push((k, v));
            }
        }
        let ours = [
            ("LIFECYCLE_EVENT", event.to_string()),
            ("DEPLOYMENT_ID", req.deployment_id.clone()),
            ("APPLICATION_NAME", req.application.clone()),
            ("DEPLOYMENT_GROUP_NAME", req.group.clone()),
            ("DEPLOYMENT_GROUP_ID", req.group_id.clone()),
        ];
        for (k, v) in ours
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(req.bundle_env.iter().cloned())
        {
            env.retain(|(key, _)| *key != k);
            env.push((k, v));
        }
        Ok(env)
    }

    /// Keeps the newest `keep` deployment directories of a group (by id) and always the one
    /// holding the last successful install.
    pub fn prune(&self, group_id: &str) -> anyhow::Result<()> {
        let keep_root = state::read_json::<LastSuccess>(&self.state.last_success_path(group_id))?
            .map(|l| l.bundle_root);
        let dir = self.state.deployments_dir(group_id);
        let mut dirs = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            let started = state::read_json::<DeploymentRecord>(&entry.path().join("result.json"))
                .ok()
                .flatten()
                .map(|r| r.started_at_ms);
            dirs.push((started, modified, entry.path()));
        }
        // Newest first: by recorded start time, falling back to the directory's mtime.
        dirs.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        for (_, _, path) in dirs.into_iter().skip(self.settings.keep.max(1)) {
            if keep_root.as_ref().is_some_and(|r| r.starts_with(&path)) {
                continue;
            }
            std::fs::remove_dir_all(&path)
                .map_err(|e| anyhow::anyhow!("removing {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

/// The events to run, in lifecycle order, with DownloadBundle added when a later event needs
/// the new revision.
pub fn plan_events(requested: &[LifecycleEvent]) -> Vec<LifecycleEvent> {
    let needs_bundle = requested.iter().any(|e| !e.uses_previous_revision());
    LifecycleEvent::ALL
        .into_iter()
        .filter(|e| requested.contains(e) || (needs_bundle && *e == LifecycleEvent::DownloadBundle))
        .collect()
}

struct PrepareError(ErrorCode, String);

/// DownloadBundle for a source already on this host: extract or copy it into
/// `dir/archive`, find its root and appspec, and validate the appspec.
fn prepare(
    source: &Source,
    dir: &Path,
    limits: &ExtractLimits,
    custom_appspec: Option<&str>,
) -> Result<Prepared, PrepareError> {
    let archive_dir = dir.join("archive");
    if archive_dir.exists() {
        std::fs::remove_dir_all(&archive_dir).map_err(|e| {
            PrepareError(
                ErrorCode::BundleInvalid,
                format!("removing {}: {e}", archive_dir.display()),
            )
        })?;
    }
    let root = match source {
        Source::Directory(path) => path.clone(),
        Source::Local(path) if path.is_dir() => {
            bundle::local::copy_tree(path, &archive_dir)
                .map_err(|e| PrepareError(ErrorCode::BundleInvalid, format!("{e:#}")))?;
            archive_dir.clone()
        }
        Source::Remote(revision) => {
            return Err(PrepareError(
                ErrorCode::BundleFetchFailed,
                format!("{} was not fetched", revision.describe()),
            ))
        }
        Source::Local(path) | Source::Archive(path) => {
            if let Err(e) = bundle::extract::extract(path, &archive_dir, limits) {
                // Nothing outside archive_dir was written; drop the partial tree.
                let _ = std::fs::remove_dir_all(&archive_dir);
                let what = anyhow::Error::new(e);
                return Err(PrepareError(
                    ErrorCode::BundleInvalid,
                    format!("bundle {}: {what:#}", path.display()),
                ));
            }
            archive_dir.clone()
        }
    };
    let root = bundle::bundle_root(&root);
    let appspec_path = bundle::find_appspec(&root, custom_appspec)
        .map_err(|e| PrepareError(ErrorCode::AppspecInvalid, e.to_string()))?;
    let text = std::fs::read_to_string(&appspec_path).map_err(|e| {
        PrepareError(
            ErrorCode::AppspecInvalid,
            format!("reading {}: {e}", appspec_path.display()),
        )
    })?;
    let spec = hoist_appspec::parse(&text)
        .map_err(|invalid| {
            PrepareError(
                ErrorCode::AppspecInvalid,
                format!(
                    "{} is invalid: {}",
                    appspec_path.display(),
                    join_diagnostics(&invalid.errors)
                ),
            )
        })?
        .spec;
    bundle::local::share_with_hook_users(dir, &root, &spec)
        .map_err(|e| PrepareError(ErrorCode::BundleInvalid, format!("{e:#}")))?;
    Ok(Prepared {
        root,
        appspec_path,
        spec,
    })
}

/// The Install event: remove what the group's previous deployment installed, install this
/// revision's files (recording each path durably whatever happens), apply permissions.
fn install_step(
    spec: &AppSpec,
    root: &Path,
    behavior: FileExistsBehavior,
    record_path: &Path,
    log: &HookLog,
) -> anyhow::Result<Step> {
    let previous = state::read_json::<InstalledFiles>(record_path)?.unwrap_or_default();
    if let Err(e) = install::remove_previous(&previous) {
        return Ok(Step::failed(
            ErrorCode::InstallFailed,
            format!(
                "removing the previous revision's files: {}",
                crate::error_chain(&e)
            ),
        ));
    }
    if !previous.entries.is_empty() {
        log.note(&format!(
            "removed {} paths installed by the previous deployment",
            previous.entries.len()
        ));
    }
    let mut record = InstalledFiles::default();
    let result = install::install_files(spec, root, behavior, &mut record);
    // Written whatever the outcome: the next deployment must remove what this one placed.
    state::write_json(record_path, &record)?;
    if let Err(e) = result {
        return Ok(Step::failed(
            ErrorCode::InstallFailed,
            crate::error_chain(&e),
        ));
    }
    log.note(&format!(
        "installed {} paths (file_exists_behavior {})",
        record.entries.len(),
        behavior.as_str()
    ));
    if let Err(e) = install::apply_permissions(spec, &record) {
        return Ok(Step::failed(
            ErrorCode::InstallFailed,
            crate::error_chain(&e),
        ));
    }
    Ok(Step::ok())
}

fn outcome_step(location: &str, outcome: HookOutcome) -> Step {
    let with_script = |mut s: Step| {
        s.script = Some(location.to_string());
        s
    };
    match outcome {
        HookOutcome::Succeeded => Step::ok(),
        HookOutcome::Failed { code, signal } => {
            let message = match (code, signal) {
                (Some(c), _) => format!("script {location} exited with code {c}"),
                (None, Some(s)) => format!("script {location} was killed by signal {s}"),
                (None, None) => format!("script {location} failed"),
            };
            let mut s = with_script(Step::failed(ErrorCode::ScriptFailed, message));
            s.exit_code = code;
            s
        }
        HookOutcome::TimedOut { after } => with_script(Step::failed(
            ErrorCode::ScriptTimedOut,
            format!("script {location} timed out after {} s", after.as_secs()),
        )),
        HookOutcome::Missing => with_script(Step::failed(
            ErrorCode::ScriptMissing,
            format!("script {location} does not exist in the bundle"),
        )),
        HookOutcome::NotExecutable { reason } => with_script(Step::failed(
            ErrorCode::ScriptNotExecutable,
            format!("script {location} cannot be run: {reason}"),
        )),
        HookOutcome::RunAsFailed { reason } => with_script(Step::failed(
            ErrorCode::RunAsFailed,
            format!("script {location}: runas failed: {reason}"),
        )),
        HookOutcome::Interrupted => Step {
            stopped: true,
            ..with_script(Step::failed(
                ErrorCode::Aborted,
                format!("script {location} was stopped because the agent is shutting down"),
            ))
        },
        HookOutcome::SpawnFailed { reason } => with_script(Step::failed(
            ErrorCode::Unknown,
            format!("script {location} could not be started: {reason}"),
        )),
    }
}

fn status_word(status: EventStatus) -> &'static str {
    match status {
        EventStatus::Succeeded => "succeeded",
        EventStatus::Failed => "failed",
        EventStatus::FailedIgnored => "failed (ignored)",
        EventStatus::Skipped => "skipped",
        EventStatus::Unknown => "unknown",
    }
}

fn join_diagnostics(d: &[hoist_appspec::Diagnostic]) -> String {
    d.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use LifecycleEvent::*;

    struct Quiet;
    impl Observer for Quiet {
        fn event_started(&self, _: LifecycleEvent) {}
        fn event_ended(&self, _: &EventResult) {}
    }

    fn engine(state: &Path) -> Engine {
        Engine::new(
            StateDir::open(state).unwrap(),
            EngineSettings {
                kill_grace: Duration::from_secs(1),
                stop_grace: Duration::from_secs(1),
                environment_file: None,
                limits: ExtractLimits::default(),
                keep: 5,
                fetch: None,
            },
        )
    }

    /// A bundle installing `name.txt` into `dest`, whose ApplicationStop appends `name` to
    /// `dest/stops.log`.
    fn bundle(dir: &Path, name: &str, dest: &Path) {
        fs::create_dir_all(dir.join("files")).unwrap();
        fs::write(dir.join("files").join(format!("{name}.txt")), name).unwrap();
        fs::write(
            dir.join("appspec.yml"),
            format!(
                "version: 0.0\nos: linux\nfiles:\n  - source: files\n    destination: {}\nhooks:\n  ApplicationStop:\n    - location: stop.sh\n",
                dest.display()
            ),
        )
        .unwrap();
        let stop = dir.join("stop.sh");
        fs::write(
            &stop,
            format!("#!/bin/sh\necho {name} >> {}/stops.log\n", dest.display()),
        )
        .unwrap();
        fs::set_permissions(&stop, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn request(id: &str, app: &str, group: &str, group_id: &str, src: &Path) -> DeploymentRequest {
        DeploymentRequest {
            deployment_id: id.to_string(),
            command_id: (!group_id.starts_with("local-")).then(|| format!("cmd-{id}")),
            application: app.to_string(),
            group: group.to_string(),
            group_id: group_id.to_string(),
            source: Source::Local(src.to_path_buf()),
            revision: src.display().to_string(),
            appspec_path: None,
            events: LifecycleEvent::ALL.to_vec(),
            file_exists_behavior: None,
            ignore_application_stop_failures: false,
            bundle_env: Vec::new(),
        }
    }

    async fn deploy(engine: &Engine, req: &DeploymentRequest) -> DeploymentRecord {
        let record = engine.run(req, &Quiet, &Stop::default()).await.unwrap();
        assert_eq!(record.status, RecordStatus::Succeeded, "{record:?}");
        record
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_default()
    }

    /// Writes the state `groups/web/` exactly as the layout keyed by group name left it
    /// after deployment `old-1` of `app` (local when `command_id` is null) installed
    /// `dest/old.txt` from a revision whose ApplicationStop appends "old" to
    /// `dest/stops.log`.
    fn old_layout(state: &Path, app: &str, command_id: &str, dest: &Path) {
        let group = state.join("groups/web");
        let dep = group.join("deployments/old-1");
        let root = dep.join("archive");
        bundle(&root, "old", dest);
        fs::create_dir_all(dest).unwrap();
        fs::write(dest.join("old.txt"), "old").unwrap();
        let log = dep.join("logs/hooks.log");
        fs::create_dir_all(log.parent().unwrap()).unwrap();
        fs::write(&log, "").unwrap();
        fs::write(
            group.join("last-successful-install.json"),
            format!(
                r#"{{
  "schema_version": 1,
  "deployment_id": "old-1",
  "application": "{app}",
  "bundle_root": "{root}",
  "appspec": "{root}/appspec.yml",
  "revision": "old",
  "installed_at_ms": 1000
}}
"#,
                root = root.display()
            ),
        )
        .unwrap();
        fs::write(
            group.join("installed-files.json"),
            format!(
                "{{\n  \"entries\": [\n    {{\n      \"path\": \"{}/old.txt\",\n      \"kind\": \"file\"\n    }}\n  ]\n}}\n",
                dest.display()
            ),
        )
        .unwrap();
        fs::write(
            dep.join("result.json"),
            format!(
                r#"{{
  "schema_version": 1,
  "deployment_id": "old-1",
  "command_id": {command_id},
  "application": "{app}",
  "group": "web",
  "revision": "old",
  "started_at_ms": 900,
  "ended_at_ms": 1100,
  "status": "succeeded",
  "events": [],
  "failed_event": null,
  "error": null,
  "log_path": "{}",
  "log_tail": null
}}
"#,
                log.display()
            ),
        )
        .unwrap();
    }

    #[tokio::test]
    async fn two_applications_with_groups_of_one_name_keep_their_own_files_and_stop_scripts() {
        let tmp = tempfile::tempdir().unwrap();
        let (shop_dest, billing_dest) = (tmp.path().join("shop"), tmp.path().join("billing"));
        let (shop, billing) = (tmp.path().join("b-shop"), tmp.path().join("b-billing"));
        bundle(&shop, "shop", &shop_dest);
        bundle(&billing, "billing", &billing_dest);
        let engine = engine(&tmp.path().join("state"));
        deploy(&engine, &request("s1", "shop", "web", "g-shop", &shop)).await;
        deploy(
            &engine,
            &request("b1", "billing", "web", "g-billing", &billing),
        )
        .await;
        assert_eq!(
            read(&shop_dest.join("shop.txt")),
            "shop",
            "billing removed shop's files"
        );
        assert_eq!(
            read(&shop_dest.join("stops.log")),
            "",
            "billing ran shop's stop script"
        );
        deploy(&engine, &request("s2", "shop", "web", "g-shop", &shop)).await;
        deploy(
            &engine,
            &request("b2", "billing", "web", "g-billing", &billing),
        )
        .await;
        assert_eq!(read(&shop_dest.join("stops.log")), "shop\n");
        assert_eq!(read(&billing_dest.join("stops.log")), "billing\n");
        assert_eq!(read(&billing_dest.join("billing.txt")), "billing");
        let groups: Vec<(String, String)> = engine
            .state
            .groups()
            .unwrap()
            .into_iter()
            .map(|(_, g)| (g.group, g.application))
            .collect();
        assert_eq!(
            groups,
            [
                ("web".into(), "billing".into()),
                ("web".into(), "shop".into())
            ]
        );
    }

    #[tokio::test]
    async fn state_of_the_layout_keyed_by_group_name_is_migrated_for_a_local_group() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let dest = tmp.path().join("dest");
        old_layout(&state, "shop", "null", &dest);
        let engine = engine(&state);
        let moved = engine.state.migrate().unwrap();
        assert_eq!(moved.len(), 1);
        assert!(engine.state.migrate().unwrap().is_empty(), "idempotent");
        assert!(!state.join("groups").exists());
        let id = state::local_group_id("shop", "web");
        let last: LastSuccess = state::read_json(&engine.state.last_success_path(&id))
            .unwrap()
            .expect("last success moved");
        assert!(
            last.appspec.starts_with(engine.state.group_dir(&id)),
            "{last:?}"
        );

        let new = tmp.path().join("new");
        bundle(&new, "new", &dest);
        deploy(&engine, &request("n1", "shop", "web", &id, &new)).await;
        assert_eq!(
            read(&dest.join("stops.log")),
            "old\n",
            "the old revision's ApplicationStop ran"
        );
        assert!(
            !dest.join("old.txt").exists(),
            "the old revision's files were removed"
        );
        assert_eq!(read(&dest.join("new.txt")), "new");
        let status = crate::status::Status::read(&engine.state).unwrap();
        assert_eq!(status.groups.len(), 1);
        let ids: Vec<&str> = status.groups[0]
            .deployments
            .iter()
            .map(|d| d.deployment_id.as_str())
            .collect();
        assert_eq!(ids, ["n1", "old-1"]);
        assert!(status.groups[0].deployments[1]
            .log_path
            .starts_with(engine.state.group_dir(&id)));
    }

    #[tokio::test]
    async fn old_coordinator_group_state_is_claimed_by_the_first_command_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let dest = tmp.path().join("dest");
        old_layout(&state, "shop", "\"cmd-old\"", &dest);
        let engine = engine(&state);
        engine.state.migrate().unwrap();
        let unclaimed = engine
            .state
            .group_dir(&state::unclaimed_group_id("shop", "web"));
        assert!(unclaimed.is_dir());

        // Another application's group of the same name does not take it.
        let other = tmp.path().join("other");
        let other_dest = tmp.path().join("other-dest");
        bundle(&other, "other", &other_dest);
        deploy(
            &engine,
            &request("o1", "billing", "web", "g-billing", &other),
        )
        .await;
        assert!(unclaimed.is_dir());
        assert_eq!(read(&dest.join("stops.log")), "");

        let new = tmp.path().join("new");
        bundle(&new, "new", &dest);
        deploy(&engine, &request("n1", "shop", "web", "g-shop", &new)).await;
        assert!(!unclaimed.exists());
        assert_eq!(read(&dest.join("stops.log")), "old\n");
        assert!(!dest.join("old.txt").exists());
    }

    #[tokio::test]
    async fn a_migration_interrupted_after_rewriting_paths_is_finished_on_the_next_start() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let dest = tmp.path().join("dest");
        old_layout(&state, "shop", "null", &dest);
        let engine = engine(&state);
        let id = state::local_group_id("shop", "web");
        // The first half of a move, as a crash before the rename leaves it.
        let info = state::GroupInfo {
            schema_version: SCHEMA_VERSION,
            group_id: Some(id.clone()),
            application: "shop".into(),
            group: "web".into(),
        };
        state::rewrite_group_paths(
            &state.join("groups/web"),
            &engine.state.group_dir(&id),
            &info,
        )
        .unwrap();
        engine.state.migrate().unwrap();
        let new = tmp.path().join("new");
        bundle(&new, "new", &dest);
        deploy(&engine, &request("n1", "shop", "web", &id, &new)).await;
        assert_eq!(read(&dest.join("stops.log")), "old\n");
        assert!(!dest.join("old.txt").exists());
    }

    #[test]
    fn events_run_in_lifecycle_order_with_download_when_needed() {
        assert_eq!(
            plan_events(&[ApplicationStart, ApplicationStop, Install]),
            vec![ApplicationStop, DownloadBundle, Install, ApplicationStart]
        );
        assert_eq!(plan_events(&[ApplicationStop]), vec![ApplicationStop]);
        assert_eq!(
            plan_events(&LifecycleEvent::ALL),
            LifecycleEvent::ALL.to_vec()
        );
    }
}
