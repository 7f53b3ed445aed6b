//! Deployments: created with a command per target host, advanced by the rollout rules,
//! stopped by an operator, rolled back automatically, and their views. Not here: the
//! arithmetic (`crate::rollout`) or the state changes themselves (`states`).

use std::sync::Arc;

use hoist_protocol::agent;
use hoist_protocol::operator::{
    self as op, CommandState, Creator, DeploymentState, HostCounts, LIFECYCLE_EVENTS,
};

use super::catalog::{matches, to_rollout};
use super::lock::Locked;
use super::states::{command_transition, deployment_transition, CommandEvent, DeploymentEvent};
use super::{locked, new_id, now_ms, HostWaker, Result, Service, ServiceError};
use crate::rollout::{self, HostState, Outcome, Tally};
use crate::store::{Changes, CommandRow, DeploymentRow, GroupRow, HostRow, Notice};

/// Where a command leaves its host for the rollout rules.
fn host_state(state: CommandState) -> HostState {
    match state {
        CommandState::Pending => HostState::Pending,
        CommandState::InProgress => HostState::InProgress,
        CommandState::Succeeded => HostState::Succeeded,
        CommandState::Failed
        | CommandState::Stopped
        | CommandState::Skipped
        | CommandState::Interrupted
        | CommandState::Unknown => HostState::Failed,
    }
}

impl Service {
    // ---- deployments ----

    pub fn create_deployment(&self, req: op::CreateDeployment) -> Result<op::Deployment> {
        let group = self.group_row(&req.application, &req.deployment_group)?;
        let (revision_id, revision, signature) = match req.revision {
            op::RevisionSource::Previous => self.previous_revision(&group, req.signature)?,
            source => self.resolve_revision(&req.application, source, req.signature)?,
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
            signature,
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
            bake_secs: group.bake_secs,
            bake_until_ms: None,
            variables: checked_variables(req.variables)?,
            release_id: None,
        };
        let id = row.id.clone();
        {
            let lock = self.lock()?;
            // An operator's deployment replaces a catch-up of the group, and releases the
            // hosts left out of sync: its own outcome decides where they stand next.
            self.supersede_catch_up(&lock, &group, &id)?;
            self.start(&lock, row, &group)?;
            self.release_holds(&lock, &group)?;
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
    pub(super) fn start(
        &self,
        lock: &Locked<'_>,
        row: DeploymentRow,
        group: &GroupRow,
    ) -> Result<()> {
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
            .map(|(i, h)| pending_command(&row.id, h, u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        start_first_batch(&row, &mut commands, now);
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
        self.advance(lock, &row.id)
    }

    /// Wakes the hosts of commands just committed as started: other coordinators first
    /// (their polls wait for the database to pass the notice on), then the polls held here,
    /// each handed its command; a command is built only for a host whose poll is here.
    pub(super) fn handed_out<'a>(
        &self,
        d: &DeploymentRow,
        started: impl IntoIterator<Item = &'a CommandRow>,
    ) {
        let started: Vec<&CommandRow> = started.into_iter().collect();
        if started.is_empty() {
            return;
        }
        self.tell_replicas(Notice::CommandsStarted(
            started.iter().map(|c| c.host_id.clone()).collect(),
        ));
        let held: Vec<(&CommandRow, Arc<HostWaker>)> = {
            let wakers = locked(&self.wakers);
            started
                .iter()
                .filter_map(|c| {
                    let w = wakers.get(&c.host_id).filter(|w| w.is_held())?;
                    Some((*c, w.clone()))
                })
                .collect()
        };
        for (c, w) in &held {
            w.wake(agent_command(c, d), &self.hand_outs);
        }
        tracing::info!(deployment_id = %d.id, commands = started.len(), polls_held_here = held.len(),
            "commands handed out");
        for c in &started {
            tracing::debug!(deployment_id = %d.id, host = ?c.host_name, command_id = %c.id,
                "command handed out");
        }
    }

    /// Applies the rollout decision to a deployment in progress: starts commands, ends
    /// the deployment, and starts an auto-rollback when it failed.
    pub(super) fn advance(&self, lock: &Locked<'_>, id: &str) -> Result<()> {
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
        // With a bake, a batch that is over waits out the bake before the next starts.
        let between_batches = room > 0
            && tally.pending > 0
            && tally.running == 0
            && tally.succeeded + tally.failed > 0
            && matches!(outcome, Outcome::Running);
        let mut bake_ended = false;
        let room = match (d.bake_secs, d.bake_until_ms) {
            (0, _) => room,
            (_, Some(until)) if now >= until => {
                bake_ended = deployment_transition(&mut d, DeploymentEvent::BakeEnded, now);
                room
            }
            (_, Some(_)) => 0,
            (secs, None) if between_batches => {
                let until = now.saturating_add(secs.saturating_mul(1000));
                deployment_transition(&mut d, DeploymentEvent::BakeStarted { until }, now);
                tracing::info!(deployment_id = %d.id, bake_secs = secs, "batch done; baking");
                self.store.save_deployment(&d, &[])?;
                self.changed();
                return Ok(());
            }
            (_, None) => room,
        };
        let mut started = if room > 0 {
            self.store.pending_commands(id, room)?
        } else {
            Vec::new()
        };
        // Read as pending just now, under the lock: each of them starts.
        started.retain_mut(|c| command_transition(c, CommandEvent::Started, now));
        let mut skipped: Vec<CommandRow> = Vec::new();
        let mut failed = false;
        let mut sets_target = false;
        match outcome {
            Outcome::Running => {}
            Outcome::Succeeded => {
                // A catch-up brings hosts to the target; it never moves it.
                sets_target = deployment_transition(&mut d, DeploymentEvent::Succeeded, now)
                    && d.creator != Creator::CatchUp;
            }
            Outcome::Failed(why) => {
                failed = deployment_transition(&mut d, DeploymentEvent::Failed(why), now);
                // A failed deployment starts nothing: every pending host is skipped.
                for mut c in self.store.pending_commands(id, usize::MAX)? {
                    if command_transition(&mut c, CommandEvent::DeploymentFailed, now) {
                        skipped.push(c);
                    }
                }
            }
        }
        if started.is_empty()
            && skipped.is_empty()
            && !bake_ended
            && d.state == DeploymentState::InProgress
        {
            return Ok(());
        }
        let changed_rows: Vec<CommandRow> = started.iter().chain(&skipped).cloned().collect();
        self.store.save_changes(&Changes {
            deployment: &d,
            commands: &changed_rows,
            new_commands: &[],
            syncs: &[],
            sets_target,
        })?;
        self.handed_out(&d, &started);
        if d.state.is_terminal() {
            tracing::info!(deployment_id = %d.id, state = %d.state,
                message = d.message.as_deref().unwrap_or(""), "deployment ended");
        }
        let ended = d.state.is_terminal().then(|| d.clone());
        if failed {
            self.auto_rollback(lock, d)?;
        }
        if let Some(d) = ended {
            // Under the same lock: a release waiting for this deployment moves on.
            self.after_deployment_end(lock, &d);
        }
        Ok(())
    }

    /// When the failed deployment's group enables auto-rollback, starts a deployment of
    /// the group's last successful revision, linked both ways. A rollback that fails does
    /// not itself roll back.
    fn auto_rollback(&self, lock: &Locked<'_>, mut failed: DeploymentRow) -> Result<()> {
        // Neither a rollback nor a catch-up (which deploys the target itself) rolls back;
        // an operator's deployment and a pipeline's stage do.
        if !matches!(failed.creator, Creator::User | Creator::Pipeline) {
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
            bake_secs: group.bake_secs,
            bake_until_ms: None,
            // The good deployment's variables and signature come along; it belongs to no
            // release.
            release_id: None,
            ..good
        };
        let rollback_id = rollback.id.clone();
        match self.start(lock, rollback, &group) {
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
            let lock = self.lock()?;
            let mut d = self
                .store
                .deployment(id)?
                .ok_or_else(|| ServiceError::NotFound(format!("no deployment {id}")))?;
            let now = now_ms();
            if !deployment_transition(&mut d, DeploymentEvent::Stopped, now) {
                return Err(ServiceError::Conflict(format!(
                    "deployment {id} already ended ({})",
                    d.state
                )));
            }
            let skipped: Vec<CommandRow> = self
                .store
                .commands(id)?
                .into_iter()
                .filter_map(|mut c| {
                    command_transition(&mut c, CommandEvent::DeploymentStopped, now).then_some(c)
                })
                .collect();
            self.store.save_deployment(&d, &skipped)?;
            tracing::info!(deployment_id = %id, "deployment stopped");
            self.after_deployment_end(&lock, &d);
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

    /// Re-evaluates every deployment in progress; run at startup so a decision that was
    /// due when the coordinator stopped is taken now.
    pub fn resume(&self) -> Result<()> {
        let lock = self.lock()?;
        for d in self.store.active_deployments()? {
            self.advance(&lock, &d.id)?;
        }
        // A stage deployment that ended while the coordinator was down moves its release.
        self.resume_releases(&lock)
    }
}

/// Deployment variables as given, or every problem with them.
pub(super) fn checked_variables(
    vars: std::collections::BTreeMap<String, String>,
) -> Result<std::collections::BTreeMap<String, String>> {
    let problems = hoist_protocol::variables::problems(&vars);
    if problems.is_empty() {
        return Ok(vars);
    }
    Err(ServiceError::Invalid(format!(
        "variables: {}",
        problems.join("; ")
    )))
}

/// A new, pending command of deployment `deployment_id` for `host`.
pub(super) fn pending_command(deployment_id: &str, host: &HostRow, position: u32) -> CommandRow {
    CommandRow {
        id: new_id("c"),
        deployment_id: deployment_id.to_owned(),
        host_id: host.id.clone(),
        host_name: host.name.clone(),
        position,
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
    }
}

/// Marks the first batch of a new deployment's commands started, so it is written started
/// in the insert's transaction: with a large fleet, writing every command twice before the
/// first host hears of it is slow.
pub(super) fn start_first_batch(d: &DeploymentRow, commands: &mut [CommandRow], now: u64) {
    let all_pending = Tally {
        pending: commands.len(),
        ..Tally::default()
    };
    if let Some((room, Outcome::Running)) =
        to_rollout(d.rollout).map(|config| rollout::decide_tally(config, all_pending))
    {
        for c in commands.iter_mut().take(room) {
            command_transition(c, CommandEvent::Started, now);
        }
    }
}

/// What an agent is told to do for command `cmd` of deployment `d`.
pub(super) fn agent_command(cmd: &CommandRow, d: &DeploymentRow) -> agent::Command {
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
        variables: d.variables.clone(),
        signature: d.signature.clone(),
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
            CommandState::Failed => counts.failed += n,
            CommandState::Interrupted => {
                counts.failed += n;
                counts.interrupted += n;
            }
            CommandState::Unknown => {
                counts.failed += n;
                counts.unknown += n;
            }
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
        bake_secs: d.bake_secs,
        baking_until_ms: d
            .bake_until_ms
            .filter(|_| d.state == DeploymentState::InProgress),
        variables: d.variables,
        release_id: d.release_id,
        signed_by: d.signature.as_ref().and_then(|s| s.key_id()),
    }
}
