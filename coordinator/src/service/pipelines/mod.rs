//! Pipelines and releases: a pipeline applied from its file ([`spec`]), releases created by
//! an operator or by the pipeline's source ([`sources`]), moved stage by stage ([`drive`])
//! through the one transition function of a stage and the one of a release ([`stage`]),
//! approved or rejected at a gate, and their views.
//!
//! **Invariants:** a release's and a stage's state change only in `stage`; every
//! read-modify-write of releases holds the store lock; a stage's deployment is an ordinary
//! deployment (creator `pipeline`, `release_id` set) that `start` refuses while its group
//! has another deployment in progress, so two releases never deploy to one group at once.
//!
//! Deliberately not here: HTTP (`api`), SQL (`store`), the YAML rules (`spec`).

mod drive;
pub mod sources;
pub mod spec;
mod stage;

use hoist_protocol::operator::{self as op, ReleaseState, SourceStatus, StageState};

use super::lock::Locked;
use super::{new_id, now_ms, Result, Service, ServiceError};
use crate::store::{PipelineRow, ReleaseRow, ReleaseStageRow};
use stage::{release_transition, stage_transition, ReleaseEvent, StageEvent};

/// How many releases `pipeline show` and `release list` return.
const RECENT_RELEASES: u32 = 20;
const LISTED_RELEASES: u32 = 200;
/// Longest `--by` and `--comment` of an approval or a rejection.
pub(crate) const MAX_BY: usize = 100;
const MAX_COMMENT: usize = 1024;

impl Service {
    /// Creates or replaces pipeline `name` from its file; every problem of the file is
    /// listed at once. A source left as it was keeps its standing (so no release is made
    /// again for a commit already released); a new or changed source starts afresh.
    pub fn apply_pipeline(&self, req: op::ApplyPipeline) -> Result<op::Pipeline> {
        let spec = spec::parse(
            &req.yaml,
            |a| {
                self.store
                    .application(a)
                    .map(|a| a.is_some())
                    .unwrap_or(false)
            },
            |a, g| self.store.group(a, g).map(|g| g.is_some()).unwrap_or(false),
        )
        .map_err(|problems| ServiceError::Problems {
            what: "the pipeline file".into(),
            problems,
        })?;
        let now = now_ms();
        let row = {
            let _lock = self.lock()?;
            let existing = self.store.pipeline(&spec.name)?;
            if let Some(e) = existing
                .as_ref()
                .filter(|e| e.application != spec.application)
            {
                return Err(ServiceError::Conflict(format!(
                    "pipeline {} belongs to application {}; delete it first to move it",
                    e.name, e.application
                )));
            }
            let (created_ms, source_status) = match existing {
                Some(e) if e.source == spec.source => (e.created_ms, e.source_status),
                Some(e) => (e.created_ms, SourceStatus::default()),
                None => (now, SourceStatus::default()),
            };
            let row = PipelineRow {
                name: spec.name,
                application: spec.application,
                source: spec.source,
                stages: spec.stages,
                created_ms,
                updated_ms: now,
                source_status,
            };
            self.store.save_pipeline(&row)?;
            row
        };
        tracing::info!(pipeline = %row.name, application = %row.application,
            stages = row.stages.len(), "pipeline applied");
        self.changed();
        Ok(pipeline_view(row, Vec::new(), self.change_seq()))
    }

    pub fn pipelines(&self, application: Option<&str>) -> Result<op::PipelineList> {
        let seq = self.change_seq();
        let pipelines = self
            .store
            .pipelines(application)?
            .into_iter()
            .map(|p| pipeline_view(p, Vec::new(), seq))
            .collect();
        Ok(op::PipelineList { pipelines })
    }

    fn pipeline_row(&self, name: &str) -> Result<PipelineRow> {
        self.store
            .pipeline(name)?
            .ok_or_else(|| ServiceError::NotFound(format!("no pipeline named {name}")))
    }

    /// A pipeline with its recent releases, newest first.
    pub fn pipeline(&self, name: &str) -> Result<op::Pipeline> {
        let p = self.pipeline_row(name)?;
        let releases = self.store.releases(Some(name), RECENT_RELEASES)?;
        Ok(pipeline_view(p, releases, self.change_seq()))
    }

    /// Deletes a pipeline with no release on its way; its releases stay listed.
    pub fn delete_pipeline(&self, name: &str) -> Result<op::Pipeline> {
        let p = {
            let _lock = self.lock()?;
            let p = self.pipeline_row(name)?;
            if let Some(r) = self
                .store
                .active_releases()?
                .into_iter()
                .find(|r| r.pipeline == name)
            {
                return Err(ServiceError::Conflict(format!(
                    "pipeline {name} has release {} {}; reject it or wait for its end first",
                    r.id, r.state
                )));
            }
            self.store.delete_pipeline(name)?;
            p
        };
        tracing::info!(pipeline = %name, "pipeline deleted");
        self.changed();
        Ok(pipeline_view(p, Vec::new(), self.change_seq()))
    }

    /// An operator's release of a revision through pipeline `name`; its first stage
    /// starts (or waits) at once.
    pub fn create_release(&self, name: &str, req: op::CreateRelease) -> Result<op::Release> {
        let p = self.pipeline_row(name)?;
        let (revision_id, revision, _) =
            self.resolve_revision(&p.application, req.revision, None)?;
        let id = {
            let lock = self.lock()?;
            let p = self.pipeline_row(name)?;
            let new = NewRelease {
                revision_id,
                revision,
                creator: "operator",
                source_ref: None,
            };
            self.make_release(&lock, &p, new, None)?
        };
        self.changed();
        self.release(&id)
    }

    /// Inserts a release of `p` (with the source's new standing, for a source's release)
    /// and moves it on.
    pub(super) fn make_release(
        &self,
        lock: &Locked<'_>,
        p: &PipelineRow,
        new: NewRelease<'_>,
        status: Option<&SourceStatus>,
    ) -> Result<String> {
        let r = ReleaseRow {
            id: new_id("rel"),
            pipeline: p.name.clone(),
            application: p.application.clone(),
            revision_id: new.revision_id,
            revision: new.revision,
            state: ReleaseState::InProgress,
            creator: new.creator.to_owned(),
            source_ref: new.source_ref,
            message: None,
            created_ms: now_ms(),
            ended_ms: None,
            stages: p.stages.iter().map(ReleaseStageRow::new).collect(),
        };
        self.store.insert_release(&r, status)?;
        tracing::info!(release_id = %r.id, pipeline = %r.pipeline, creator = %r.creator,
            revision = %r.revision.describe(), "release created");
        self.drive_release(lock, &r.id)?;
        Ok(r.id)
    }

    pub fn release(&self, id: &str) -> Result<op::Release> {
        let r = self
            .store
            .release(id)?
            .ok_or_else(|| ServiceError::NotFound(format!("no release {id}")))?;
        Ok(release_view(r, self.change_seq()))
    }

    pub fn releases(&self, pipeline: Option<&str>) -> Result<op::ReleaseList> {
        if let Some(p) = pipeline {
            self.pipeline_row(p)?;
        }
        let seq = self.change_seq();
        let releases = self
            .store
            .releases(pipeline, LISTED_RELEASES)?
            .into_iter()
            .map(|r| release_view(r, seq))
            .collect();
        Ok(op::ReleaseList { releases })
    }

    /// Approves the gate release `id` waits at; the stage starts (or waits for its group).
    pub fn approve_release(&self, id: &str, d: op::Decision) -> Result<op::Release> {
        self.decide(id, d, true)
    }

    /// Rejects the gate release `id` waits at: the release ends `rejected`.
    pub fn reject_release(&self, id: &str, d: op::Decision) -> Result<op::Release> {
        self.decide(id, d, false)
    }

    fn decide(&self, id: &str, d: op::Decision, approve: bool) -> Result<op::Release> {
        let by = d.by.unwrap_or_else(|| "operator".into());
        if by.is_empty() || by.len() > MAX_BY || by.chars().any(char::is_control) {
            return Err(ServiceError::Invalid(format!(
                "by: must be 1 to {MAX_BY} bytes without control characters"
            )));
        }
        if let Some(c) = d.comment.as_deref() {
            if c.len() > MAX_COMMENT {
                return Err(ServiceError::Invalid(format!(
                    "comment: {} bytes; at most {MAX_COMMENT} are accepted",
                    c.len()
                )));
            }
        }
        let comment = d.comment.as_deref();
        {
            let lock = self.lock()?;
            let mut r = self
                .store
                .release(id)?
                .ok_or_else(|| ServiceError::NotFound(format!("no release {id}")))?;
            let Some(i) = r
                .stages
                .iter()
                .position(|s| s.state == StageState::AwaitingApproval)
                .filter(|_| r.state == ReleaseState::AwaitingApproval)
            else {
                return Err(ServiceError::Conflict(format!(
                    "release {id} is not waiting for approval (it is {})",
                    r.state
                )));
            };
            let now = now_ms();
            if approve {
                stage_transition(
                    &mut r.stages[i],
                    StageEvent::Approved { by: &by, comment },
                    now,
                );
                release_transition(&mut r, ReleaseEvent::Approved, now);
            } else {
                stage_transition(
                    &mut r.stages[i],
                    StageEvent::Rejected { by: &by, comment },
                    now,
                );
                release_transition(&mut r, ReleaseEvent::Rejected { by: &by }, now);
            }
            self.store.save_release(&r)?;
            tracing::info!(release_id = %id, stage = %r.stages[i].group, by = %by,
                approved = approve, "release gate decided");
            self.drive_release(&lock, id)?;
        }
        self.changed();
        self.release(id)
    }
}

/// What a new release is made of.
pub(super) struct NewRelease<'a> {
    pub revision_id: String,
    pub revision: hoist_protocol::agent::Revision,
    pub creator: &'a str,
    pub source_ref: Option<String>,
}

fn pipeline_view(p: PipelineRow, releases: Vec<ReleaseRow>, seq: u64) -> op::Pipeline {
    op::Pipeline {
        source_status: p.source.is_some().then_some(p.source_status),
        name: p.name,
        application: p.application,
        source: p.source,
        stages: p
            .stages
            .into_iter()
            .map(|s| op::PipelineStage {
                group: s.group,
                manual_approval: s.manual_approval,
                variables: s.variables,
            })
            .collect(),
        created_ms: p.created_ms,
        updated_ms: p.updated_ms,
        releases: releases.into_iter().map(|r| release_view(r, seq)).collect(),
    }
}

fn release_view(r: ReleaseRow, change_seq: u64) -> op::Release {
    op::Release {
        id: r.id,
        pipeline: r.pipeline,
        application: r.application,
        revision_id: r.revision_id,
        revision: r.revision,
        state: r.state,
        creator: r.creator,
        source_ref: r.source_ref,
        message: r.message,
        created_ms: r.created_ms,
        ended_ms: r.ended_ms,
        stages: r
            .stages
            .into_iter()
            .map(|s| op::ReleaseStage {
                group: s.group,
                manual_approval: s.manual_approval,
                variables: s.variables,
                state: s.state,
                deployment_id: s.deployment_id,
                message: s.message,
                approved_by: s.approved_by,
                approved_ms: s.approved_ms,
                rejected_by: s.rejected_by,
                rejected_ms: s.rejected_ms,
                comment: s.comment,
                started_ms: s.started_ms,
                ended_ms: s.ended_ms,
            })
            .collect(),
        change_seq,
    }
}
