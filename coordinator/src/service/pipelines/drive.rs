//! Moving a release on: from the store's state of the release and of its stage's
//! deployment, the next step is taken (a gate reached, a deployment started, a stage
//! ended, the release ended), again until the release waits for something. Called under
//! the store lock after every event that may move a release: its creation, an approval, a
//! deployment's end (this one's or another's of a group a release waits for), and start.
//!
//! Nothing is decided in memory: a restart finds every release where the store has it,
//! and `resume_releases` takes the steps that were due.
//!
//! Deliberately not here: the transitions themselves (`stage`), views and requests (`mod`).

use hoist_protocol::operator::{
    Creator, DeploymentState, ReleaseState, StageState, LIFECYCLE_EVENTS,
};

use super::stage::{release_transition, stage_transition, ReleaseEvent, StageEvent};
use crate::service::lock::Locked;
use crate::service::{new_id, now_ms, Result, Service, ServiceError};
use crate::store::{DeploymentRow, ReleaseRow};

/// What one step did.
enum Step {
    /// Something changed: look again.
    Moved,
    /// The release waits (for a deployment, an approval, a busy group) or has ended.
    Rests,
}

impl Service {
    /// Takes every step release `id` can take now.
    pub(in crate::service) fn drive_release(&self, lock: &Locked<'_>, id: &str) -> Result<()> {
        // Each step changes a stage for good or starts a deployment; the bound only guards
        // against a store that does not keep what it is given.
        for _ in 0..64 {
            let Some(r) = self.store.release(id)? else {
                return Ok(());
            };
            match self.step(lock, r)? {
                Step::Moved => continue,
                Step::Rests => return Ok(()),
            }
        }
        tracing::error!(release_id = %id, "a release kept moving without resting; left as it is");
        Ok(())
    }

    fn step(&self, lock: &Locked<'_>, mut r: ReleaseRow) -> Result<Step> {
        if r.state.is_terminal() {
            return Ok(Step::Rests);
        }
        let now = now_ms();
        let Some(i) = r
            .stages
            .iter()
            .position(|s| s.state != StageState::Succeeded)
        else {
            release_transition(&mut r, ReleaseEvent::Succeeded, now);
            self.store.save_release(&r)?;
            tracing::info!(release_id = %r.id, pipeline = %r.pipeline, "release succeeded");
            return Ok(Step::Rests);
        };
        match r.stages[i].state {
            StageState::Deploying => {
                let deployment = match r.stages[i].deployment_id.as_deref() {
                    Some(d) => self.store.deployment(d)?,
                    None => None,
                };
                let Some(d) = deployment else {
                    // Written before its deployment, which never committed: start again.
                    let why = "its deployment was never created; starting again".to_owned();
                    stage_transition(&mut r.stages[i], StageEvent::Waiting { why }, now);
                    self.store.save_release(&r)?;
                    return Ok(Step::Moved);
                };
                if !d.state.is_terminal() {
                    return Ok(Step::Rests);
                }
                let ended = StageEvent::DeploymentEnded {
                    state: d.state,
                    message: d.message.as_deref(),
                };
                stage_transition(&mut r.stages[i], ended, now);
                if r.stages[i].state == StageState::Failed {
                    let group = r.stages[i].group.clone();
                    release_transition(&mut r, ReleaseEvent::Failed { group: &group }, now);
                    tracing::info!(release_id = %r.id, stage = %group, "release failed");
                }
                self.store.save_release(&r)?;
                Ok(Step::Moved)
            }
            StageState::Pending
                if r.stages[i].manual_approval && r.stages[i].approved_by.is_none() =>
            {
                self.reach_gate(r, i, now)
            }
            StageState::Pending => self.start_stage(lock, r, i, now),
            StageState::Failed => {
                let group = r.stages[i].group.clone();
                release_transition(&mut r, ReleaseEvent::Failed { group: &group }, now);
                self.store.save_release(&r)?;
                Ok(Step::Rests)
            }
            StageState::AwaitingApproval
            | StageState::Succeeded
            | StageState::Skipped
            | StageState::Unknown => Ok(Step::Rests),
        }
    }

    /// The release reaches gate `i`: older releases of the pipeline waiting there are
    /// superseded by it (or it by a newer one already waiting), and it waits.
    fn reach_gate(&self, mut r: ReleaseRow, i: usize, now: u64) -> Result<Step> {
        let waiting_here = |o: &ReleaseRow| {
            o.id != r.id
                && o.pipeline == r.pipeline
                && o.state == ReleaseState::AwaitingApproval
                && o.stages.get(i).is_some_and(|s| {
                    s.state == StageState::AwaitingApproval && s.group == r.stages[i].group
                })
        };
        let others: Vec<ReleaseRow> = self
            .store
            .active_releases()?
            .into_iter()
            .filter(waiting_here)
            .collect();
        let newer = |o: &ReleaseRow| (o.created_ms, &o.id) > (r.created_ms, &r.id);
        if let Some(n) = others
            .iter()
            .filter(|o| newer(o))
            .max_by_key(|o| o.created_ms)
        {
            // A newer release already waits here: this one is the older.
            let by = n.id.clone();
            stage_transition(&mut r.stages[i], StageEvent::ReachedGate, now);
            stage_transition(&mut r.stages[i], StageEvent::Superseded { by: &by }, now);
            release_transition(&mut r, ReleaseEvent::AtGate, now);
            release_transition(&mut r, ReleaseEvent::Superseded { by: &by }, now);
            self.store.save_release(&r)?;
            return Ok(Step::Rests);
        }
        for mut old in others {
            stage_transition(
                &mut old.stages[i],
                StageEvent::Superseded { by: &r.id },
                now,
            );
            release_transition(&mut old, ReleaseEvent::Superseded { by: &r.id }, now);
            self.store.save_release(&old)?;
            tracing::info!(release_id = %old.id, by = %r.id, "release superseded at a gate");
        }
        stage_transition(&mut r.stages[i], StageEvent::ReachedGate, now);
        release_transition(&mut r, ReleaseEvent::AtGate, now);
        self.store.save_release(&r)?;
        tracing::info!(release_id = %r.id, stage = %r.stages[i].group, "release waits for approval");
        Ok(Step::Rests)
    }

    /// Starts stage `i`'s deployment, or notes why it waits or failed.
    fn start_stage(
        &self,
        lock: &Locked<'_>,
        mut r: ReleaseRow,
        i: usize,
        now: u64,
    ) -> Result<Step> {
        let stage = &r.stages[i];
        let Some(group) = self.store.group(&r.application, &stage.group)? else {
            let why = format!(
                "deployment group {} of application {} no longer exists",
                stage.group, r.application
            );
            stage_transition(&mut r.stages[i], StageEvent::StartFailed { why }, now);
            self.store.save_release(&r)?;
            return Ok(Step::Moved);
        };
        // Two releases never deploy to one group at once, nor a release over an operator's
        // deployment; a catch-up gives way, as it does to an operator.
        if let Some(busy) = self
            .store
            .active_deployments()?
            .into_iter()
            .find(|d| d.group_id == group.id && d.creator != Creator::CatchUp)
        {
            let why = format!(
                "waiting for deployment {} of group {} to end",
                busy.id, group.name
            );
            if stage_transition(&mut r.stages[i], StageEvent::Waiting { why }, now) {
                self.store.save_release(&r)?;
            }
            return Ok(Step::Rests);
        }
        let row = DeploymentRow {
            id: new_id("d"),
            application: group.application.clone(),
            group_id: group.id.clone(),
            group_name: group.name.clone(),
            revision_id: Some(r.revision_id.clone()),
            revision: r.revision.clone(),
            // A release of a signed revision carries its signature to every stage.
            signature: self
                .store
                .revision(&r.revision_id)?
                .and_then(|registered| registered.signature),
            state: DeploymentState::InProgress,
            creator: Creator::Pipeline,
            rollback_of: None,
            rolled_back_by: None,
            message: None,
            rollout: group.rollout,
            file_exists_behavior: None,
            ignore_application_stop_failures: false,
            events: LIFECYCLE_EVENTS.iter().map(|e| (*e).to_owned()).collect(),
            appspec_path: None,
            created_ms: now,
            ended_ms: None,
            bake_secs: group.bake_secs,
            bake_until_ms: None,
            variables: stage.variables.clone(),
            release_id: Some(r.id.clone()),
        };
        let id = row.id.clone();
        // The stage names its deployment before the deployment exists, so that a
        // deployment ending at once (inside `start`) finds the stage it ends.
        stage_transition(
            &mut r.stages[i],
            StageEvent::Starting { deployment_id: &id },
            now,
        );
        self.store.save_release(&r)?;
        let started = self
            .supersede_catch_up(lock, &group, &id)
            .and_then(|()| self.start(lock, row, &group))
            .and_then(|()| self.release_holds(lock, &group));
        match started {
            Ok(()) => {
                tracing::info!(release_id = %r.id, stage = %group.name, deployment_id = %id,
                    "release stage started");
                Ok(Step::Moved)
            }
            Err(ServiceError::Store(e)) => Err(ServiceError::Store(e)),
            // Refused before anything was written (no host, a bad rollout): the stage fails.
            Err(e) => {
                let Some(mut r) = self.store.release(&r.id)? else {
                    return Ok(Step::Rests);
                };
                let why = format!("its deployment could not start: {e}");
                stage_transition(&mut r.stages[i], StageEvent::StartFailed { why }, now);
                self.store.save_release(&r)?;
                Ok(Step::Moved)
            }
        }
    }

    /// A deployment ended: its release moves on, and so do releases waiting for its group.
    /// A failure here is logged, not returned: the deployment's end is written already, and
    /// the next start resumes the releases.
    pub(in crate::service) fn after_deployment_end(&self, lock: &Locked<'_>, d: &DeploymentRow) {
        let mut result = match &d.release_id {
            Some(id) => self.drive_release(lock, id),
            None => Ok(()),
        };
        if result.is_ok() {
            result = self.drive_waiting(lock, d);
        }
        if let Err(e) = result {
            tracing::error!(deployment_id = %d.id, error = %crate::service::error_chain(&e),
                "moving releases after a deployment's end");
        }
    }

    /// Releases of `d`'s application whose next stage waits for `d`'s group, oldest first.
    fn drive_waiting(&self, lock: &Locked<'_>, d: &DeploymentRow) -> Result<()> {
        for r in self.store.active_releases()? {
            if Some(&r.id) == d.release_id.as_ref() || r.application != d.application {
                continue;
            }
            let next = r.stages.iter().find(|s| s.state != StageState::Succeeded);
            if next.is_some_and(|s| s.state == StageState::Pending && s.group == d.group_name) {
                self.drive_release(lock, &r.id)?;
            }
        }
        Ok(())
    }

    /// At start: every release not ended takes the steps that were due.
    pub(in crate::service) fn resume_releases(&self, lock: &Locked<'_>) -> Result<()> {
        for r in self.store.active_releases()? {
            self.drive_release(lock, &r.id)?;
        }
        Ok(())
    }
}
