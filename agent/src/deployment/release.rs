//! Releases in a deployment (`hoist.releases`): the Install of a revision into its release
//! directory ending with the switch of `current`, and the instant rollback to a release kept
//! on this host, which skips the download and the copy and only switches `current` back.
//!
//! Instant rollback is chosen when the revision asked for is one of the group's kept releases
//! (by identity: the sha256 of an archive, the commit of a Git revision), or named by
//! `hoist-agent rollback`, and its extracted revision is still here to run its start hooks
//! from. [`check_kept_revision`] is the one check of a kept release against the revision
//! asked for, made right before the switch; a coordinator's command to switch back is also
//! held to the host's trusted keys (`trust::check`), as a download would be.
//!
//! It does not switch or prune itself (`install::releases`) nor own the record of releases
//! (`state::releases`).

use std::path::{Path, PathBuf};

use hoist_appspec::{AppSpec, FileExistsBehavior, LifecycleEvent, Releases};
use hoist_protocol::agent::ErrorCode;
use hoist_protocol::signature::Subject;

use super::records::{Halt, Step};
use super::{DeploymentRequest, Prepared, Source};
use crate::hooks::HookLog;
use crate::install::{self, releases as layout, InstalledFiles, SyncMode};
use crate::state::{self, GroupState, KeptRelease, LastSuccess, ReleasesRecord, RevisionIdentity};

/// The identity of the revision a deployment asks for, when it has one.
pub(super) fn asked_identity(req: &DeploymentRequest) -> Option<RevisionIdentity> {
    match &req.source {
        Source::Remote(revision) => RevisionIdentity::of(revision),
        Source::Local(_) | Source::Kept(_) => None,
    }
}

/// The kept release this deployment switches back to instead of downloading, if any: the one
/// `hoist-agent rollback` names, or the newest kept release of the revision asked for that
/// is not the current one, when Install is among the events and the release's extracted
/// revision is still on the host.
pub(super) fn kept_release_for(
    group: &GroupState,
    req: &DeploymentRequest,
) -> anyhow::Result<Option<KeptRelease>> {
    if !req.events.contains(&LifecycleEvent::Install) {
        return Ok(None);
    }
    let Some(record) = group.releases()? else {
        return Ok(None);
    };
    let Some(current) = record.current_release() else {
        return Ok(None);
    };
    let usable = |r: &&KeptRelease| {
        r.dir != current.dir
            && r.dir.is_dir()
            && r.appspec.as_deref().is_some_and(Path::is_file)
            && r.bundle_root.as_deref().is_some_and(Path::is_dir)
    };
    let found = match &req.source {
        Source::Kept(deployment_id) => record.find(deployment_id).filter(usable),
        Source::Remote(_) => {
            let Some(asked) = asked_identity(req) else {
                return Ok(None);
            };
            record
                .releases
                .iter()
                .rev()
                .filter(|r| r.identity.as_ref() == Some(&asked))
                .find(usable)
        }
        Source::Local(_) => None,
    };
    Ok(found.cloned())
}

impl super::Deployer {
    /// DownloadBundle's revision: a kept release of the revision asked for (or the one
    /// `hoist-agent rollback` names), with why nothing was downloaded, else the revision
    /// fetched and prepared as always.
    pub(super) async fn new_revision(
        &self,
        journal: &super::journal::Journal<'_>,
    ) -> anyhow::Result<Result<(Prepared, Option<String>), Halt>> {
        let req = journal.req;
        let kept = kept_release_for(&self.state.group(&req.group_id), req)?;
        if let Some(kept) = kept {
            // A kept release switched back to by a coordinator's command is held to the
            // host's trusted keys as a download would be: the command's signed manifest must
            // name the kept revision's sha256 or commit. A rollback by `hoist-agent rollback`
            // (`Source::Kept`) is the box's own operator's and needs none.
            if matches!(req.source, Source::Remote(_)) {
                let subject = match &kept.identity {
                    Some(RevisionIdentity::Sha256(sha256)) => Some(Subject::Bundle { sha256 }),
                    Some(RevisionIdentity::Commit(commit)) => Some(Subject::Commit { commit }),
                    None => None,
                };
                if let Err(halt) = self.verify_signature(subject, journal) {
                    return Ok(Err(halt));
                }
            }
            return Ok(match prepared_from(&kept) {
                Ok(revision) => {
                    let why = format!(
                        "{} is kept on this host as release {}: nothing to download",
                        kept.revision_description,
                        kept.dir.display()
                    );
                    journal.log.note(&why);
                    Ok((revision, Some(why)))
                }
                Err(why) => Err(Halt::failed(ErrorCode::BundleInvalid, why)),
            });
        }
        if matches!(req.source, Source::Kept(_)) {
            return Ok(Err(Halt::failed(
                ErrorCode::BundleInvalid,
                "no such kept release to roll back to (it is the current one, was pruned, or \
                 its revision is no longer on this host)",
            )));
        }
        Ok(self
            .download(journal)
            .await?
            .map(|revision| (revision, None)))
    }
}

/// The kept release as the deployment's new revision: its kept appspec and extracted tree.
pub(super) fn prepared_from(kept: &KeptRelease) -> Result<Prepared, String> {
    let (Some(root), Some(appspec_path)) = (kept.bundle_root.clone(), kept.appspec.clone()) else {
        return Err(format!(
            "release {} has no kept revision to run hooks from",
            kept.dir.display()
        ));
    };
    let text = std::fs::read_to_string(&appspec_path)
        .map_err(|e| format!("reading {}: {e}", appspec_path.display()))?;
    let spec = hoist_appspec::parse(&text)
        .map_err(|_| format!("{} is no longer valid", appspec_path.display()))?
        .spec;
    Ok(Prepared {
        root,
        appspec_path,
        spec,
        kept: Some(Box::new(kept.clone())),
    })
}

/// The one check of a kept release before `current` is switched back to it: the identity
/// recorded with the release must be the revision asked for (a rollback by the host's own
/// command asks for the release itself). Further checks of a kept revision belong here.
pub(super) fn check_kept_revision(
    kept: &KeptRelease,
    asked: Option<&RevisionIdentity>,
) -> Result<(), String> {
    match asked {
        Some(asked) if kept.identity.as_ref() != Some(asked) => Err(format!(
            "release {} holds {}, not the {asked} asked for",
            kept.dir.display(),
            kept.identity.as_ref().map_or(
                "a revision of unknown identity".to_string(),
                ToString::to_string
            )
        )),
        _ => Ok(()),
    }
}

/// Install of an instant rollback: the kept release checked, then `current` switched back.
pub(super) fn switch_back(
    group: &GroupState,
    kept: &KeptRelease,
    asked: Option<&RevisionIdentity>,
    log: &HookLog,
) -> anyhow::Result<Step> {
    if let Err(why) = check_kept_revision(kept, asked) {
        return Ok(Step::failed(ErrorCode::InstallFailed, why));
    }
    let Some(record) = group.releases()? else {
        return Ok(Step::failed(
            ErrorCode::InstallFailed,
            "the group has no record of kept releases",
        ));
    };
    let legacy = record
        .current
        .parent()
        .unwrap_or(Path::new("/"))
        .join("releases")
        .join(format!("before-releases-{}", state::now_ms()));
    match layout::switch(&record.current, &kept.dir, &legacy) {
        Ok(switched) => {
            log.note(&format!(
                "instant rollback: {} now points to {} ({}), switched from {}; nothing downloaded or copied",
                record.current.display(),
                kept.dir.display(),
                kept.revision_description,
                switched
                    .previous
                    .as_deref()
                    .map_or("a plain directory".to_string(), |p| p.display().to_string())
            ));
            Ok(Step::Succeeded)
        }
        Err(e) => Ok(Step::failed(
            ErrorCode::InstallFailed,
            crate::error_chain(&e),
        )),
    }
}

/// What an Install into a release needs to know besides the appspec.
pub(super) struct ReleaseInstall {
    pub sync: SyncMode,
    pub group: GroupState,
    pub deployment_id: String,
    pub identity: Option<RevisionIdentity>,
    pub revision_description: String,
    pub bundle_root: PathBuf,
    pub appspec: PathBuf,
}

/// The Install event of a revision with `hoist.releases`: what the previous deployment
/// installed outside `current` is removed (what is inside stays: it is the release serving
/// now), the files are installed into `releases/<deployment id>/` with permissions applied
/// there, made durable, recorded with the release, and `current` is switched to it; then old
/// releases are pruned to `keep`. Blocking.
pub(super) fn install_release(
    spec: &AppSpec,
    releases: &Releases,
    root: &Path,
    behavior: FileExistsBehavior,
    ctx: &ReleaseInstall,
    log: &HookLog,
) -> anyhow::Result<Step> {
    let failed =
        |e: &install::InstallError| Step::failed(ErrorCode::InstallFailed, crate::error_chain(e));
    let current = &releases.current;
    let release = layout::release_dir(releases, &ctx.deployment_id);
    let mut record = match ctx.group.releases()? {
        Some(r) if r.current == *current => r,
        _ => {
            // Written before the first file, so recovery after a crash knows where this
            // group's releases are, and removes an unfinished one.
            let r = ReleasesRecord::new(current);
            ctx.group.write_releases(&r)?;
            r
        }
    };
    if std::fs::symlink_metadata(&release).is_ok() {
        if std::fs::read_link(current).ok().as_deref() == Some(release.as_path()) {
            return Ok(Step::failed(
                ErrorCode::InstallFailed,
                format!("{} is the current release", release.display()),
            ));
        }
        std::fs::remove_dir_all(&release)
            .map_err(|e| anyhow::anyhow!("removing {}: {e}", release.display()))?;
    }
    let record_path = ctx.group.installed_files_path();
    let previous = state::read_json::<InstalledFiles>(&record_path)?.unwrap_or_default();
    let (serving, outside): (Vec<_>, Vec<_>) = previous
        .entries
        .into_iter()
        .partition(|e| layout::is_under(&e.path, current));
    let mut written = match install::remove_previous(&InstalledFiles::new(outside)) {
        Ok(w) => w,
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
    let retargeted = layout::retarget(spec, current, &release);
    let mut installed = InstalledFiles::default();
    let result = install::install_files(&retargeted, root, behavior, &mut installed);
    let unswitched = |installed: &InstalledFiles| {
        let mut entries = serving.clone();
        entries.extend(
            installed
                .entries
                .iter()
                .filter(|e| !e.path.starts_with(&release))
                .cloned(),
        );
        InstalledFiles::new(entries)
    };
    let outcome = result
        .map(|w| written.merge(w))
        .and_then(|()| written.sync_files(ctx.sync).map(drop))
        .and_then(|()| install::apply_permissions(&retargeted, &installed))
        .and_then(|()| std::mem::take(&mut written).sync(ctx.sync).map(drop));
    if let Err(e) = outcome {
        // The release is incomplete and never became current: it goes, the serving tree stays.
        state::write_json(&record_path, &unswitched(&installed))?;
        let _ = std::fs::remove_dir_all(&release);
        return Ok(failed(&e));
    }
    log.note(&format!(
        "installed {} paths into release {} (file_exists_behavior {})",
        installed.entries.len(),
        release.display(),
        behavior.as_str()
    ));

    // A plain directory at `current` (an install before the layout) is kept as a release of
    // the revision that installed it.
    let last = state::read_json::<LastSuccess>(&ctx.group.last_success_path())?;
    let plain = std::fs::symlink_metadata(current).is_ok_and(|m| m.is_dir());
    let legacy_name = last
        .as_ref()
        .map(|l| state::encode_name(&l.deployment_id))
        .filter(|n| !releases.releases_dir().join(n).exists())
        .unwrap_or_else(|| format!("before-releases-{}", state::now_ms()));
    let legacy = releases.releases_dir().join(legacy_name);
    if plain {
        record.releases.push(KeptRelease {
            deployment_id: last.as_ref().map_or_else(
                || "before-releases".to_string(),
                |l| l.deployment_id.clone(),
            ),
            dir: legacy.clone(),
            identity: last.as_ref().and_then(|l| l.identity.clone()),
            revision_description: last.as_ref().map_or_else(
                || format!("what was at {} before releases", current.display()),
                |l| l.revision_description.clone(),
            ),
            bundle_root: last.as_ref().map(|l| l.bundle_root.clone()),
            appspec: last.as_ref().map(|l| l.appspec.clone()),
            installed_at_ms: last.as_ref().map_or(0, |l| l.installed_at_ms),
        });
    }
    record.releases.retain(|r| r.dir != release);
    record.releases.push(KeptRelease {
        deployment_id: ctx.deployment_id.clone(),
        dir: release.clone(),
        identity: ctx.identity.clone(),
        revision_description: ctx.revision_description.clone(),
        bundle_root: Some(ctx.bundle_root.clone()),
        appspec: Some(ctx.appspec.clone()),
        installed_at_ms: state::now_ms(),
    });
    // Both records before the switch: a crash after it finds the release known and the
    // link tracked (a later install without the layout removes the link, never through it).
    ctx.group.write_releases(&record)?;
    state::write_json(
        &record_path,
        &layout::record_of_release(&installed, &release, current),
    )?;
    let switched = match layout::switch(current, &release, &legacy) {
        Ok(s) => s,
        Err(e) => {
            state::write_json(&record_path, &unswitched(&installed))?;
            return Ok(failed(&e));
        }
    };
    let was = switched
        .moved
        .as_ref()
        .map(|m| format!("the plain directory it was is kept as {}", m.display()))
        .or_else(|| {
            switched
                .previous
                .as_ref()
                .map(|p| format!("was {}", p.display()))
        })
        .unwrap_or_else(|| "it did not exist".to_string());
    log.note(&format!(
        "{} now points to {} ({was})",
        current.display(),
        release.display()
    ));

    let previous_dir = switched.previous.or(switched.moved);
    let dirs: Vec<PathBuf> = record.releases.iter().map(|r| r.dir.clone()).collect();
    let mut protect = vec![release.as_path()];
    protect.extend(previous_dir.as_deref());
    match layout::prune(&dirs, releases.keep, &protect) {
        Ok(removed) if !removed.is_empty() => {
            record.releases.retain(|r| !removed.contains(&r.dir));
            ctx.group.write_releases(&record)?;
            log.note(&format!(
                "removed {} old releases (keep {})",
                removed.len(),
                releases.keep
            ));
        }
        Ok(_) => {}
        Err(e) => log.note(&format!("pruning old releases: {}", crate::error_chain(&e))),
    }
    Ok(Step::Succeeded)
}

/// A kept release keeps its extracted revision for its hooks, not the archive it came from:
/// the downloaded archive goes once the release is installed (a Git checkout is the revision
/// itself and stays). Best effort: a failure only costs disk.
pub(super) fn drop_downloaded_archive(
    state: &state::StateDir,
    req: &DeploymentRequest,
    root: &Path,
) {
    let download = state
        .group(&req.group_id)
        .deployment(&req.deployment_id)
        .download_dir();
    if root.starts_with(&download) || !download.is_dir() {
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(&download) {
        tracing::warn!("removing {}: {e}", download.display());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hoist_protocol::agent::Revision;

    fn kept(identity: Option<RevisionIdentity>) -> KeptRelease {
        KeptRelease {
            deployment_id: "d-1".into(),
            dir: "/srv/releases/d-1".into(),
            identity,
            revision_description: "v1".into(),
            bundle_root: None,
            appspec: None,
            installed_at_ms: 1,
        }
    }

    #[test]
    fn a_kept_release_is_switched_to_only_for_the_revision_it_holds() {
        let sha = |s: &str| {
            RevisionIdentity::of(&Revision::Coordinator {
                sha256: s.into(),
                size: 1,
            })
        };
        let git = RevisionIdentity::of(&Revision::Git {
            repository: "https://git.example/shop".into(),
            commit: "AB".repeat(20),
        });
        assert_eq!(git, Some(RevisionIdentity::Commit("ab".repeat(20))));
        let release = kept(sha("AA11"));
        assert_eq!(check_kept_revision(&release, sha("aa11").as_ref()), Ok(()));
        assert_eq!(
            check_kept_revision(&release, None),
            Ok(()),
            "hoist-agent rollback"
        );
        let wrong = check_kept_revision(&release, sha("bb22").as_ref()).unwrap_err();
        assert_eq!(
            wrong,
            "release /srv/releases/d-1 holds sha256 aa11, not the sha256 bb22 asked for"
        );
        let unknown = check_kept_revision(&kept(None), git.as_ref()).unwrap_err();
        assert!(
            unknown.contains("a revision of unknown identity"),
            "{unknown}"
        );
    }
}
