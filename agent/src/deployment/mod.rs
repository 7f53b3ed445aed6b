//! Drives one deployment through its lifecycle events, in CodeDeploy's order.
//!
//! The [`Deployer`] is the same for `hoist-agent deploy` and the daemon: it prepares the
//! revision (DownloadBundle), installs it (Install), runs the appspec's hooks for the other
//! events, records every step durably in the state directory and tells an [`Observer`] (the
//! CLI's progress printer, or the daemon's report outbox) as each event starts and ends.
//!
//! The lifecycle is a [`Phase`] moved on by one `match` in [`Deployer::run`]: the events of
//! the group's previous revision, DownloadBundle, then the new revision's events, which take
//! the [`Prepared`] revision DownloadBundle produced (so an event of the new revision cannot
//! run without it). The work of each phase is in `phases`, the bookkeeping around every
//! event (marker, log, record, observer) in `journal`, and what an event produced in
//! `records`.
//!
//! It deliberately does not talk to a coordinator: the daemon hands it a [`Source`] and turns
//! observer calls into reports.

mod journal;
mod phases;
mod records;
mod release;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hoist_appspec::{AppSpec, FileExistsBehavior, LifecycleEvent};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::bundle::extract::ExtractLimits;
use crate::bundle::fetch::{self, FetchSettings};
use crate::client::Client;
use crate::config::Config;
use crate::state::{self, DeploymentRecord, Ending, HostCredentials, LastSuccess, StateDir};
use crate::trust::Trust;

use journal::Journal;
pub use records::EventResult;

/// Settings that hold for every deployment on this host.
#[derive(Debug, Clone)]
pub struct DeployerSettings {
    pub kill_grace: Duration,
    pub stop_grace: Duration,
    pub environment_file: Option<PathBuf>,
    pub limits: ExtractLimits,
    /// Deployment directories kept per group.
    pub keep: usize,
    /// How Install makes new files durable.
    pub install_sync: crate::install::SyncMode,
    /// How to fetch [`Source::Remote`] revisions; `None` for local deployments.
    pub fetch: Option<FetchContext>,
    /// The signing keys this host trusts, checked in DownloadBundle before extraction.
    pub trust: Trust,
}

/// The HTTP client and settings used to fetch remote revisions.
#[derive(Debug, Clone)]
pub struct FetchContext {
    pub client: reqwest::Client,
    pub settings: fetch::FetchSettings,
}

/// The deployer's settings from the config; with a client and `host`, it can fetch remote
/// revisions too, over the same HTTP client as the coordinator's API.
pub fn deployer_settings(
    config: &Config,
    trust: Trust,
    remote: Option<(&Client, &HostCredentials)>,
) -> DeployerSettings {
    DeployerSettings {
        kill_grace: config.hooks.kill_grace(),
        stop_grace: config.hooks.stop_grace(),
        environment_file: config.hooks.environment_file.clone(),
        limits: ExtractLimits::from_config(&config.bundles),
        keep: config.deployments.keep,
        install_sync: config.deployments.install_sync,
        trust,
        fetch: remote.map(|(client, host)| FetchContext {
            client: client.http().clone(),
            settings: FetchSettings {
                coordinator: Some(client.coordinator_access(host)),
                ..FetchSettings::from_config(config)
            },
        }),
    }
}

/// Where the new revision comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A directory or an archive file on this host.
    Local(PathBuf),
    /// A revision to fetch during DownloadBundle (the daemon's commands).
    Remote(hoist_protocol::agent::Revision),
    /// A release kept on this host, by the deployment that installed it
    /// (`hoist-agent rollback`): switched back to without a download.
    Kept(String),
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
    pub revision_description: String,
    /// Appspec path inside the bundle, when not `appspec.yml` / `appspec.yaml`.
    pub appspec_path: Option<String>,
    /// Events to run; run in lifecycle order whatever order they are given in.
    pub events: Vec<LifecycleEvent>,
    /// The deployment's option; the appspec's own `file_exists_behavior` wins.
    pub file_exists_behavior: Option<FileExistsBehavior>,
    pub ignore_application_stop_failures: bool,
    /// BUNDLE_BUCKET, BUNDLE_KEY, BUNDLE_VERSION, BUNDLE_ETAG, BUNDLE_COMMIT where they apply.
    pub bundle_env: Vec<(String, String)>,
    /// The deployment's own variables (a pipeline stage's, `--var`), checked by
    /// `hoist_protocol::variables`; the hook variables above are set after them.
    pub variables: Vec<(String, String)>,
    /// The revision's signed manifest, checked against [`DeployerSettings::trust`].
    pub signature: Option<hoist_protocol::signature::SignedManifest>,
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

/// Runs deployments on this host, one at a time, each start to end.
pub struct Deployer {
    pub state: StateDir,
    pub settings: DeployerSettings,
}

/// The new revision once DownloadBundle prepared it.
struct Prepared {
    root: PathBuf,
    appspec_path: PathBuf,
    spec: AppSpec,
    /// A kept release this deployment switches back to (an instant rollback): Install is
    /// the switch, BeforeInstall and AfterInstall are skipped.
    kept: Option<Box<state::KeptRelease>>,
}

/// Where a deployment is in its lifecycle.
enum Phase {
    /// The hooks of the group's last installed revision (BeforeBlockTraffic,
    /// AfterBlockTraffic, ApplicationStop) still to run; then DownloadBundle and the new
    /// revision's `events`, when the deployment has any.
    PreviousRevision {
        events: VecDeque<LifecycleEvent>,
        then: Option<VecDeque<LifecycleEvent>>,
    },
    /// DownloadBundle, before the new revision's `events`.
    Download {
        events: VecDeque<LifecycleEvent>,
    },
    /// The new revision is ready: Install and its hooks still to run.
    NewRevision {
        revision: Prepared,
        events: VecDeque<LifecycleEvent>,
    },
    Ended(Ending),
}

impl Phase {
    fn start(requested: &[LifecycleEvent]) -> Phase {
        let planned = plan_events(requested);
        let download = planned.contains(&LifecycleEvent::DownloadBundle);
        let (previous, new): (VecDeque<_>, VecDeque<_>) = planned
            .into_iter()
            .filter(|e| *e != LifecycleEvent::DownloadBundle)
            .partition(|e| e.uses_previous_revision());
        Phase::PreviousRevision {
            events: previous,
            then: download.then_some(new),
        }
    }
}

impl Deployer {
    pub fn new(state: StateDir, settings: DeployerSettings) -> Deployer {
        Deployer { state, settings }
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
        let mut journal = Journal::start(&self.state, req, observer, stop)?;
        let mut phase = Phase::start(&req.events);
        // Every transition of the lifecycle is here; each event is begun and ended by the
        // journal, which also says when the deployment ends.
        let ending = loop {
            phase = match phase {
                Phase::Ended(ending) => break ending,
                Phase::PreviousRevision { mut events, then } => match (events.pop_front(), then) {
                    (None, Some(events)) => Phase::Download { events },
                    (None, None) => Phase::Ended(Ending::succeeded()),
                    (Some(event), then) => {
                        let Some(started) = journal.begin(event)? else {
                            break journal.stopped_before(event);
                        };
                        let step = self.previous_revision_hooks(event, &mut journal).await?;
                        match journal.end(event, step, started)? {
                            Some(ending) => Phase::Ended(ending),
                            None => Phase::PreviousRevision { events, then },
                        }
                    }
                },
                Phase::Download { events } => {
                    let event = LifecycleEvent::DownloadBundle;
                    let Some(started) = journal.begin(event)? else {
                        break journal.stopped_before(event);
                    };
                    match self.new_revision(&journal).await? {
                        Ok((revision, None)) => {
                            journal.succeeded(event, started)?;
                            Phase::NewRevision { revision, events }
                        }
                        // A kept release: DownloadBundle had nothing to do, and says why.
                        Ok((revision, Some(why))) => {
                            match journal.end(event, records::Step::Skipped(why), started)? {
                                Some(ending) => Phase::Ended(ending),
                                None => Phase::NewRevision { revision, events },
                            }
                        }
                        Err(halt) => Phase::Ended(journal.halted(event, halt, started)?),
                    }
                }
                Phase::NewRevision {
                    revision,
                    mut events,
                } => match events.pop_front() {
                    None => Phase::Ended(Ending::succeeded()),
                    Some(LifecycleEvent::Install) => {
                        let event = LifecycleEvent::Install;
                        let Some(started) = journal.begin(event)? else {
                            break journal.stopped_before(event);
                        };
                        let step = self.install(&revision, &journal).await?;
                        match journal.end(event, step, started)? {
                            Some(ending) => Phase::Ended(ending),
                            None => {
                                self.installed(&revision, req)?;
                                Phase::NewRevision { revision, events }
                            }
                        }
                    }
                    Some(event) => {
                        let Some(started) = journal.begin(event)? else {
                            break journal.stopped_before(event);
                        };
                        let step = match &revision.kept {
                            Some(kept)
                                if matches!(
                                    event,
                                    LifecycleEvent::BeforeInstall | LifecycleEvent::AfterInstall
                                ) =>
                            {
                                records::Step::Skipped(format!(
                                    "instant rollback to release {}: nothing is installed",
                                    kept.dir.display()
                                ))
                            }
                            _ => {
                                self.run_hooks(event, &revision.spec, &revision.root, &mut journal)
                                    .await?
                            }
                        };
                        match journal.end(event, step, started)? {
                            Some(ending) => Phase::Ended(ending),
                            None => Phase::NewRevision { revision, events },
                        }
                    }
                },
            };
        };
        let record = journal.finish(ending)?;
        if let Err(e) = self.prune(&req.group_id) {
            warn!("pruning old deployments of group {}: {e:#}", req.group);
        }
        Ok(record)
    }

    /// Records `revision` as the group's last successful install: the next deployment runs
    /// its ApplicationStop & co.
    fn installed(&self, revision: &Prepared, req: &DeploymentRequest) -> anyhow::Result<()> {
        sync_what_the_next_deployment_runs(revision)?;
        let last = LastSuccess {
            schema_version: state::SCHEMA_VERSION,
            deployment_id: req.deployment_id.clone(),
            application: req.application.clone(),
            bundle_root: revision.root.clone(),
            appspec: revision.appspec_path.clone(),
            revision_description: req.revision_description.clone(),
            installed_at_ms: state::now_ms(),
            identity: match &revision.kept {
                Some(kept) => kept.identity.clone(),
                None => release::asked_identity(req),
            },
        };
        state::write_json(&self.state.group(&req.group_id).last_success_path(), &last)?;
        if revision.spec.releases.is_some() && revision.kept.is_none() {
            release::drop_downloaded_archive(&self.state, req, &revision.root);
        }
        Ok(())
    }

    /// Keeps the newest `keep` deployment directories of a group (by id) and always the one
    /// holding the last successful install.
    pub fn prune(&self, group_id: &str) -> anyhow::Result<()> {
        let group = self.state.group(group_id);
        let mut keep_roots: Vec<PathBuf> =
            state::read_json::<LastSuccess>(&group.last_success_path())?
                .map(|l| l.bundle_root)
                .into_iter()
                .collect();
        // A kept release's revision stays: an instant rollback runs its start hooks.
        if let Some(releases) = group.releases()? {
            keep_roots.extend(releases.releases.into_iter().filter_map(|r| r.bundle_root));
        }
        let mut dirs = Vec::new();
        for deployment in group.deployment_dirs()? {
            let modified = std::fs::symlink_metadata(deployment.path())
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            let started = state::read_json::<DeploymentRecord>(&deployment.record_path())
                .ok()
                .flatten()
                .map(|r| r.started_at_ms);
            dirs.push((started, modified, deployment.path().to_path_buf()));
        }
        // Newest first: by recorded start time, falling back to the directory's mtime.
        dirs.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        for (_, _, path) in dirs.into_iter().skip(self.settings.keep.max(1)) {
            if keep_roots.iter().any(|r| r.starts_with(&path)) {
                continue;
            }
            std::fs::remove_dir_all(&path)
                .map_err(|e| anyhow::anyhow!("removing {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

/// Makes durable what the next deployment of the group runs from this revision once it is
/// the last successful install ([`needed_by_next`]).
fn sync_what_the_next_deployment_runs(revision: &Prepared) -> anyhow::Result<()> {
    use anyhow::Context;
    let (files, dirs) = needed_by_next(revision)?;
    for file in files {
        std::fs::File::open(&file)
            .and_then(|f| f.sync_data())
            .with_context(|| format!("syncing {}", file.display()))?;
    }
    for dir in dirs {
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", dir.display()))?;
    }
    Ok(())
}

/// The files and directories the next deployment needs from `revision`: its appspec and the
/// scripts of BeforeBlockTraffic, AfterBlockTraffic and ApplicationStop, and every directory
/// on the way to them from the group's `deployments/` (inclusive). Extraction leaves the
/// revision unsynced (it can be fetched again until Install succeeds), and the rest of it is
/// not needed later. A script that is not there or leads outside the revision is left out:
/// running it fails on its own.
fn needed_by_next(revision: &Prepared) -> anyhow::Result<(BTreeSet<PathBuf>, BTreeSet<PathBuf>)> {
    use anyhow::Context;
    let root = std::fs::canonicalize(&revision.root)
        .with_context(|| format!("resolving {}", revision.root.display()))?;
    let mut files = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    // The root is deployments/<id>/archive (or a top folder in it, or a checkout).
    let Some(deployments) = root
        .ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "deployments"))
        .map(Path::to_path_buf)
    else {
        return Ok((files, dirs));
    };
    // A release's revision is kept for instant rollbacks, which run its later hooks too.
    let releases = revision.spec.releases.is_some();
    let scripts = LifecycleEvent::ALL
        .into_iter()
        .filter(|e| releases || e.uses_previous_revision())
        .flat_map(|e| revision.spec.hooks_for(e))
        .map(|hook| root.join(hook.location.trim_start_matches('/')));
    for file in std::iter::once(revision.appspec_path.clone()).chain(scripts) {
        let Ok(file) = std::fs::canonicalize(&file) else {
            continue;
        };
        if !file.starts_with(&root) || !file.is_file() {
            continue;
        }
        dirs.extend(
            file.ancestors()
                .skip(1)
                .take_while(|d| d.starts_with(&deployments))
                .map(Path::to_path_buf),
        );
        files.insert(file);
    }
    Ok((files, dirs))
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
