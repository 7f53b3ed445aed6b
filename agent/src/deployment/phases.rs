//! The work of each lifecycle phase: the previous revision's hooks, DownloadBundle (fetch,
//! verify, extract or copy, find and validate the appspec), Install, and the new revision's
//! hooks with their environment. Each returns what the event produced; the journal records
//! it and [`super::Deployer::run`] decides what comes next.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hoist_appspec::{AppSpec, FileExistsBehavior, LifecycleEvent};
use hoist_protocol::agent::{ErrorCode, Revision};
use tokio_util::sync::CancellationToken;

use super::journal::Journal;
use super::records::{Halt, Problem, Step};
use super::release;
use super::{Deployer, DeploymentRequest, Prepared, Source};
use crate::bundle;
use crate::bundle::extract::ExtractLimits;
use crate::bundle::fetch::{self, FetchError, Fetched};
use crate::hooks::{self, HookLog, HookRun};
use crate::install::{self, InstalledFiles, SyncMode};
use crate::state::{self, DeploymentDir, LastSuccess};
use crate::trust::{self, Verdict};
use hoist_protocol::signature::Subject;

/// A revision on this host, ready to be put in the deployment directory.
enum OnHost {
    /// A directory to copy (a local deployment of a directory).
    Tree(std::path::PathBuf),
    /// An archive to extract, with the sha256 computed from its bytes when it was verified
    /// (always for a download; for a local archive when keys are trusted).
    Archive {
        path: std::path::PathBuf,
        verified: Option<String>,
    },
    /// A checkout already in the deployment directory (Git), used where it is.
    Checkout(std::path::PathBuf),
}

impl Deployer {
    /// BeforeBlockTraffic, AfterBlockTraffic or ApplicationStop: the hooks of the group's
    /// last successfully installed revision, if it is still on this host.
    pub(super) async fn previous_revision_hooks(
        &self,
        event: LifecycleEvent,
        journal: &mut Journal<'_>,
    ) -> anyhow::Result<Step> {
        let req = journal.req;
        let last_path = self.state.group(&req.group_id).last_success_path();
        let Some(last) = state::read_json::<LastSuccess>(&last_path)? else {
            return Ok(Step::Skipped(format!(
                "no revision was installed before in group {}",
                req.group
            )));
        };
        let text = match std::fs::read_to_string(&last.appspec) {
            Ok(t) => t,
            Err(e) => {
                journal.log.note(&format!(
                    "previous revision's appspec {} cannot be read ({e}); nothing to run",
                    last.appspec.display()
                ));
                return Ok(Step::Skipped(format!(
                    "the previous revision ({}) is no longer on this host",
                    last.revision_description
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
        self.run_hooks(event, &spec, &last.bundle_root, journal)
            .await
    }

    /// DownloadBundle: the new revision fetched if remote, put in the deployment directory,
    /// its root and appspec found and the appspec validated.
    pub(super) async fn download(
        &self,
        journal: &Journal<'_>,
    ) -> anyhow::Result<Result<Prepared, Halt>> {
        let req = journal.req;
        // A Git revision is checked before it is fetched: the fetch then checks out exactly
        // the commit the manifest names, or fails.
        if let Source::Remote(Revision::Git { commit, .. }) = &req.source {
            if let Err(halt) = self.verify_signature(Some(Subject::Commit { commit }), journal) {
                return Ok(Err(halt));
            }
        }
        let on_host = match &req.source {
            Source::Remote(revision) => match self.fetch_remote(revision, journal).await {
                Ok(on_host) => on_host,
                Err(halt) => return Ok(Err(halt)),
            },
            Source::Local(path) if path.is_dir() => OnHost::Tree(path.clone()),
            Source::Local(path) => {
                let verified = match self.settings.trust.is_configured() {
                    true => Some(local_sha256(path).await?),
                    false => None,
                };
                OnHost::Archive {
                    path: path.clone(),
                    verified,
                }
            }
            Source::Kept(id) => {
                return Ok(Err(Halt::failed(
                    ErrorCode::BundleInvalid,
                    format!("release of deployment {id} is not kept on this host"),
                )))
            }
        };
        // Archives are checked against the sha256 of their own bytes, before extraction.
        let checked = match &on_host {
            OnHost::Archive {
                verified: Some(sha256),
                ..
            } => self.verify_signature(Some(Subject::Bundle { sha256 }), journal),
            OnHost::Tree(_) => self.verify_signature(None, journal),
            // Not hashed: a local archive on a host that trusts no key. A checkout was
            // checked before its fetch.
            OnHost::Archive { verified: None, .. } | OnHost::Checkout(_) => Ok(()),
        };
        if let Err(halt) = checked {
            if let (OnHost::Archive { path, .. }, Source::Remote(_)) = (&on_host, &req.source) {
                // Bytes nobody vouched for are not kept.
                let _ = std::fs::remove_file(path);
            }
            return Ok(Err(halt));
        }
        let deployment = journal.deployment.clone();
        let limits = self.settings.limits.clone();
        let custom = req.appspec_path.clone();
        let result = tokio::task::spawn_blocking(move || {
            prepare(&on_host, &deployment, &limits, custom.as_deref())
        })
        .await?;
        if let Ok(p) = &result {
            journal.log.note(&format!(
                "revision ready at {} (appspec {})",
                p.root.display(),
                p.appspec_path.display()
            ));
        }
        Ok(result.map_err(Halt::Failed))
    }

    /// Install: the files of `revision`, in place of the previous deployment's.
    pub(super) async fn install(
        &self,
        revision: &Prepared,
        journal: &Journal<'_>,
    ) -> anyhow::Result<Step> {
        let req = journal.req;
        let behavior = revision
            .spec
            .file_exists_behavior
            .or(req.file_exists_behavior)
            .unwrap_or_default();
        let spec = revision.spec.clone();
        let root = revision.root.clone();
        let group = self.state.group(&req.group_id);
        let record_path = group.installed_files_path();
        let log = Arc::clone(&journal.log);
        if let Some(kept) = revision.kept.clone() {
            let asked = release::asked_identity(req);
            return tokio::task::spawn_blocking(move || {
                release::switch_back(&group, &kept, asked.as_ref(), &log)
            })
            .await?;
        }
        if let Some(releases) = spec.releases.clone() {
            let ctx = release::ReleaseInstall {
                sync: self.settings.install_sync,
                group,
                deployment_id: req.deployment_id.clone(),
                identity: release::asked_identity(req),
                revision_description: req.revision_description.clone(),
                bundle_root: revision.root.clone(),
                appspec: revision.appspec_path.clone(),
            };
            return tokio::task::spawn_blocking(move || {
                release::install_release(&spec, &releases, &root, behavior, &ctx, &log)
            })
            .await?;
        }
        let sync = self.settings.install_sync;
        tokio::task::spawn_blocking(move || {
            install_step(&spec, &root, behavior, sync, &record_path, &log)
        })
        .await?
    }

    /// The scripts `spec` lists for `event`, run from `root` one after the other until one
    /// does not succeed.
    pub(super) async fn run_hooks(
        &self,
        event: LifecycleEvent,
        spec: &AppSpec,
        root: &Path,
        journal: &mut Journal<'_>,
    ) -> anyhow::Result<Step> {
        let scripts = spec.hooks_for(event);
        if scripts.is_empty() {
            return Ok(Step::Skipped(format!("the appspec has no {event} scripts")));
        }
        let env = self.hook_env(event, journal.req)?;
        for hook in scripts {
            if journal.stop.requested() {
                return Ok(Step::Halted(Halt::stopped(format!(
                    "deployment stopped before script {}",
                    hook.location
                ))));
            }
            journal.script_started(event, &hook.location)?;
            let run = HookRun {
                location: hook.location.clone(),
                bundle_root: root.to_path_buf(),
                timeout: Duration::from_secs(hook.timeout_secs),
                runas: hook.runas.clone(),
                env: env.clone(),
                kill_grace: self.settings.kill_grace,
                stop_grace: self.settings.stop_grace,
                label: format!("{event} {}", hook.location),
            };
            let record_pgid = journal.pgid_recorder();
            let outcome = hooks::run_hook(
                &run,
                &journal.log,
                journal.stop.shutdown.clone(),
                &record_pgid,
            )
            .await;
            let step = Step::of_script(&hook.location, outcome);
            if step != Step::Succeeded {
                return Ok(step);
            }
        }
        Ok(Step::Succeeded)
    }

    /// Downloads and verifies a remote revision into the deployment directory.
    async fn fetch_remote(
        &self,
        revision: &Revision,
        journal: &Journal<'_>,
    ) -> Result<OnHost, Halt> {
        let Some(ctx) = &self.settings.fetch else {
            return Err(Halt::failed(
                ErrorCode::BundleFetchFailed,
                "this agent is not set up to fetch remote revisions",
            ));
        };
        let (log, stop) = (&journal.log, journal.stop);
        log.note(&format!("fetching {}", revision.describe()));
        // Either way of stopping ends a download: it is not a script to let finish.
        let cancel = CancellationToken::new();
        let work_dir = journal.deployment.download_dir();
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
                Ok(OnHost::Archive {
                    path,
                    verified: Some(sha256),
                })
            }
            Ok(Fetched::Directory { path, commit }) => {
                log.note(&format!("checked out commit {commit}"));
                Ok(OnHost::Checkout(path))
            }
            Err(e @ FetchError::ChecksumMismatch { .. }) => Err(Halt::failed(
                ErrorCode::BundleChecksumMismatch,
                e.to_string(),
            )),
            Err(FetchError::Cancelled) => Err(Halt::stopped("download stopped")),
            Err(e) => Err(Halt::failed(
                ErrorCode::BundleFetchFailed,
                crate::error_chain(&e),
            )),
        }
    }

    /// The revision's signature against the keys this host trusts (`trust::check`), for a
    /// bundle that is `subject` (`None`: a local directory, which has no sha256 to sign).
    /// What was found goes to the event log; a refusal halts the deployment.
    pub(super) fn verify_signature(
        &self,
        subject: Option<Subject<'_>>,
        journal: &Journal<'_>,
    ) -> Result<(), Halt> {
        let (trust, req, log) = (&self.settings.trust, journal.req, &journal.log);
        let Some(subject) = subject else {
            if !trust.is_configured() {
                return Ok(());
            }
            if req.signature.is_none() && !trust.require_signature() {
                let warning = "no signature: a local directory cannot be signed, and \
                               trust.require_signature is off";
                log.note(&format!("warning: {warning}"));
                tracing::warn!("{warning}");
                return Ok(());
            }
            return Err(Halt::failed(
                ErrorCode::SignatureRefused,
                format!(
                    "signature refused: a local directory has no sha256 a manifest could name; \
                     deploy a signed archive (trusted keys: {})",
                    trust.key_ids().join(", ")
                ),
            ));
        };
        let verdict = trust::check(
            trust,
            &req.application,
            subject,
            req.signature.as_ref(),
            std::time::SystemTime::now(),
        )
        .map_err(|e| Halt::failed(ErrorCode::SignatureRefused, e.to_string()))?;
        match verdict {
            Verdict::NotConfigured => {}
            Verdict::Signed { key_id, manifest } => log.note(&format!(
                "signature by trusted key {key_id} verified: {} of application {}",
                manifest.subject(),
                manifest.application
            )),
            Verdict::Unsigned => {
                let warning = format!(
                    "no signature: the revision is not signed, and trust.require_signature \
                     is off (trusted keys: {})",
                    trust.key_ids().join(", ")
                );
                log.note(&format!("warning: {warning}"));
                tracing::warn!("{warning}");
            }
        }
        Ok(())
    }

    /// The environment of every hook of `event`: a clean one, never the agent's own, with
    /// this deployment's variables last (`hooks::hook_environment`).
    fn hook_env(
        &self,
        event: LifecycleEvent,
        req: &DeploymentRequest,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let ours = [
            ("LIFECYCLE_EVENT", event.to_string()),
            ("DEPLOYMENT_ID", req.deployment_id.clone()),
            ("APPLICATION_NAME", req.application.clone()),
            ("DEPLOYMENT_GROUP_NAME", req.group.clone()),
            ("DEPLOYMENT_GROUP_ID", req.group_id.clone()),
        ];
        let deployment = req.variables.iter().cloned().chain(
            ours.into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .chain(req.bundle_env.iter().cloned()),
        );
        hooks::hook_environment(self.settings.environment_file.as_deref(), deployment)
    }
}

/// DownloadBundle for a revision on this host: extract or copy it into the deployment's
/// `archive/`, find its root and appspec, and validate the appspec.
fn prepare(
    on_host: &OnHost,
    deployment: &DeploymentDir,
    limits: &ExtractLimits,
    custom_appspec: Option<&str>,
) -> Result<Prepared, Problem> {
    let archive_dir = deployment.archive_dir();
    if archive_dir.exists() {
        std::fs::remove_dir_all(&archive_dir).map_err(|e| {
            Problem::new(
                ErrorCode::BundleInvalid,
                format!("removing {}: {e}", archive_dir.display()),
            )
        })?;
    }
    let root = match on_host {
        OnHost::Checkout(path) => path.clone(),
        OnHost::Tree(path) => {
            bundle::local::copy_tree(path, &archive_dir)
                .map_err(|e| Problem::new(ErrorCode::BundleInvalid, format!("{e:#}")))?;
            archive_dir.clone()
        }
        OnHost::Archive { path, .. } => {
            if let Err(e) = bundle::extract::extract(path, &archive_dir, limits) {
                // Nothing outside archive_dir was written; drop the partial tree.
                let _ = std::fs::remove_dir_all(&archive_dir);
                let what = anyhow::Error::new(e);
                return Err(Problem::new(
                    ErrorCode::BundleInvalid,
                    format!("bundle {}: {what:#}", path.display()),
                ));
            }
            archive_dir.clone()
        }
    };
    let root = bundle::bundle_root(&root);
    let appspec_path = bundle::find_appspec(&root, custom_appspec)
        .map_err(|e| Problem::new(ErrorCode::AppspecInvalid, e.to_string()))?;
    let text = std::fs::read_to_string(&appspec_path).map_err(|e| {
        Problem::new(
            ErrorCode::AppspecInvalid,
            format!("reading {}: {e}", appspec_path.display()),
        )
    })?;
    let spec = hoist_appspec::parse(&text)
        .map_err(|invalid| {
            Problem::new(
                ErrorCode::AppspecInvalid,
                format!(
                    "{} is invalid: {}",
                    appspec_path.display(),
                    join_diagnostics(&invalid.errors)
                ),
            )
        })?
        .spec;
    bundle::local::share_with_hook_users(deployment.path(), &root, &spec)
        .map_err(|e| Problem::new(ErrorCode::BundleInvalid, format!("{e:#}")))?;
    Ok(Prepared {
        root,
        appspec_path,
        spec,
        kept: None,
    })
}

/// The Install event: remove what the group's previous deployment installed, install this
/// revision's files (recording each path durably whatever happens), apply permissions, then
/// make exactly what was written durable before the event can succeed.
fn install_step(
    spec: &AppSpec,
    root: &Path,
    behavior: FileExistsBehavior,
    sync: SyncMode,
    record_path: &Path,
    log: &HookLog,
) -> anyhow::Result<Step> {
    let failed =
        |e: &install::InstallError| Step::failed(ErrorCode::InstallFailed, crate::error_chain(e));
    let previous = state::read_json::<InstalledFiles>(record_path)?.unwrap_or_default();
    let mut written = match install::remove_previous(&previous) {
        Ok(written) => written,
        Err(e) => {
            return Ok(Step::failed(
                ErrorCode::InstallFailed,
                format!(
                    "removing the previous revision's files: {}",
                    crate::error_chain(&e)
                ),
            ))
        }
    };
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
    match result {
        Ok(installed) => written.merge(installed),
        Err(e) => return Ok(failed(&e)),
    }
    // The files' data before permissions apply (a rule may take the agent's read access
    // away), the directories after.
    let (files, synced_by) = match written.sync_files(sync) {
        Ok(synced) => synced,
        Err(e) => return Ok(failed(&e)),
    };
    log.note(&format!(
        "installed {} paths (file_exists_behavior {}; {} new files, {})",
        record.entries.len(),
        behavior.as_str(),
        files,
        synced_by.as_str()
    ));
    if let Err(e) = install::apply_permissions(spec, &record) {
        return Ok(failed(&e));
    }
    match written.sync(sync) {
        Ok(synced) => tracing::debug!(
            files = files + synced.files,
            directories = synced.dirs,
            ?synced_by,
            "installed files made durable"
        ),
        Err(e) => return Ok(failed(&e)),
    }
    Ok(Step::Succeeded)
}

fn join_diagnostics(d: &[hoist_appspec::Diagnostic]) -> String {
    d.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The sha256 of a local archive, read on a blocking thread.
async fn local_sha256(path: &Path) -> anyhow::Result<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use sha2::Digest;
        let mut file = std::fs::File::open(&path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let mut hasher = sha2::Sha256::new();
        std::io::copy(&mut file, &mut hasher)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Ok(hex::encode(hasher.finalize()))
    })
    .await?
}
