//! Applications, deployment groups and revisions: created, validated, listed. Not here:
//! deployments of them (`deployments`) or the hosts a group matches as targets.

use std::collections::BTreeMap;

use hoist_protocol::agent::Revision;
use hoist_protocol::operator::{self as op, RolloutConfig, TagFilter};
use hoist_protocol::signature::SignedManifest;

use super::{error_chain, new_id, now_ms, Result, Service, ServiceError};
use crate::bounds::shown;
use crate::rollout;
use crate::store::{AppRow, GroupRow, RevisionRow, StoreError};

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

pub(super) fn matches(filters: &[TagFilter], tags: &BTreeMap<String, String>) -> bool {
    filters
        .iter()
        .any(|f| f.iter().all(|(k, v)| tags.get(k) == Some(v)))
}

pub(super) fn to_rollout(config: RolloutConfig) -> Option<rollout::Config> {
    Some(match config {
        RolloutConfig::AllAtOnce => rollout::Config::AllAtOnce,
        RolloutConfig::HalfAtATime => rollout::Config::HalfAtATime,
        RolloutConfig::OneAtATime => rollout::Config::OneAtATime,
        RolloutConfig::MinHealthyHosts { count } => rollout::Config::MinHealthyHosts(count),
        RolloutConfig::MinHealthyPercent { percent } => rollout::Config::MinHealthyPercent(percent),
        RolloutConfig::Unknown => return None,
    })
}

fn check_rollout(rollout: RolloutConfig) -> Result<()> {
    if to_rollout(rollout).is_none() {
        return Err(ServiceError::Invalid(
            "rollout: unknown rollout configuration".into(),
        ));
    }
    if let RolloutConfig::MinHealthyPercent { percent } = rollout {
        if percent > 100 {
            return Err(ServiceError::Invalid(
                "rollout: the percentage must be at most 100".into(),
            ));
        }
    }
    Ok(())
}

/// Longest bake between two batches: a day.
pub const MAX_BAKE_SECS: u64 = 86_400;

fn check_bake(secs: u64) -> Result<()> {
    if secs > MAX_BAKE_SECS {
        return Err(ServiceError::Invalid(format!(
            "bake_secs: {secs} is over the limit of {MAX_BAKE_SECS} (a day)"
        )));
    }
    Ok(())
}

impl Service {
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

    pub(super) fn app(&self, name: &str) -> Result<AppRow> {
        self.store
            .application(name)?
            .ok_or_else(|| ServiceError::NotFound(format!("no application named {name}")))
    }

    pub(super) fn group_row(&self, app: &str, name: &str) -> Result<GroupRow> {
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
        check_rollout(req.rollout)?;
        check_bake(req.bake_secs)?;
        let row = GroupRow {
            id: new_id("g"),
            application: app.to_owned(),
            name: req.name,
            tag_filters: req.tag_filters,
            rollout: req.rollout,
            auto_rollback: req.auto_rollback,
            created_ms: now_ms(),
            catch_up: req.catch_up,
            bake_secs: req.bake_secs,
            target_deployment_id: None,
        };
        self.store.insert_group(&row).map_err(conflict)?;
        self.group_view(row)
    }

    /// Changes a group's options; a deployment already created keeps the ones it took.
    pub fn update_group(
        &self,
        app: &str,
        name: &str,
        req: op::UpdateGroup,
    ) -> Result<op::DeploymentGroup> {
        if req == op::UpdateGroup::default() {
            return Err(ServiceError::Invalid(
                "nothing to change: give catch_up, bake_secs, rollout or auto_rollback".into(),
            ));
        }
        let g = {
            let _lock = self.lock()?;
            let mut g = self.group_row(app, name)?;
            if let Some(rollout) = req.rollout {
                check_rollout(rollout)?;
                g.rollout = rollout;
            }
            if let Some(secs) = req.bake_secs {
                check_bake(secs)?;
                g.bake_secs = secs;
            }
            if let Some(on) = req.catch_up {
                g.catch_up = on;
            }
            if let Some(on) = req.auto_rollback {
                g.auto_rollback = on;
            }
            self.store.update_group(&g)?;
            tracing::info!(application = %g.application, deployment_group = %g.name,
                catch_up = g.catch_up, bake_secs = g.bake_secs, rollout = %g.rollout,
                auto_rollback = g.auto_rollback, "deployment group updated");
            g
        };
        self.group_view(g)
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
                    signature: d.signature,
                });
        let target = match &g.target_deployment_id {
            Some(id) => self.store.deployment(id)?,
            None => None,
        };
        let sync_counts = self.sync_counts(&g, target.as_ref())?;
        let target = target.map(|d| op::GroupTarget {
            revision: op::RevisionInfo {
                id: d.revision_id.unwrap_or_default(),
                application: d.application,
                revision: d.revision,
                created_ms: d.created_ms,
                signature: d.signature,
            },
            deployment_id: d.id,
            set_ms: d.ended_ms.unwrap_or(0),
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
            catch_up: g.catch_up,
            bake_secs: g.bake_secs,
            target,
            sync_counts,
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
                let size = self
                    .bundles
                    .size_of(&sha256)
                    .map_err(|e| ServiceError::Internal(error_chain(&e)))?
                    .ok_or_else(|| {
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

    /// Registers `revision` of `app`, with its signed manifest when it has one (checked to
    /// name this application and revision, `signatures::check`).
    pub fn create_revision(
        &self,
        app: &str,
        revision: Revision,
        signature: Option<SignedManifest>,
    ) -> Result<op::RevisionInfo> {
        self.app(app)?;
        let revision = self.check_revision(&revision)?;
        if let Some(signed) = &signature {
            super::signatures::check(app, &revision, signed)?;
        }
        let row = RevisionRow {
            id: new_id("r"),
            application: app.to_owned(),
            revision,
            signature,
            created_ms: now_ms(),
        };
        self.store.insert_revision(&row)?;
        Ok(revision_info(row))
    }

    /// A registered revision of `application`, or a new one given inline (registered now),
    /// with the signed manifest its deployment carries: `signature` when given (checked to
    /// name this revision and application), else the registered revision's own.
    pub(super) fn resolve_revision(
        &self,
        application: &str,
        source: op::RevisionSource,
        signature: Option<SignedManifest>,
    ) -> Result<(String, Revision, Option<SignedManifest>)> {
        match source {
            op::RevisionSource::Id(id) => {
                let r = self
                    .store
                    .revision(&id)?
                    .ok_or_else(|| ServiceError::NotFound(format!("no revision {id}")))?;
                if r.application != application {
                    return Err(ServiceError::Invalid(format!(
                        "revision {id} belongs to application {}, not {application}",
                        r.application
                    )));
                }
                let signature = match signature {
                    Some(signed) => {
                        super::signatures::check(application, &r.revision, &signed)?;
                        Some(signed)
                    }
                    None => r.signature,
                };
                Ok((r.id, r.revision, signature))
            }
            op::RevisionSource::Inline(revision) => {
                let info = self.create_revision(application, revision, signature)?;
                Ok((info.id, info.revision, info.signature))
            }
            op::RevisionSource::Previous => Err(ServiceError::Invalid(
                "revision: previous names a deployment group's revision; only a deployment can use it".into(),
            )),
        }
    }

    pub fn revision(&self, id: &str) -> Result<op::RevisionInfo> {
        self.store
            .revision(id)?
            .map(revision_info)
            .ok_or_else(|| ServiceError::NotFound(format!("no revision {id}")))
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
        signature: r.signature,
    }
}
