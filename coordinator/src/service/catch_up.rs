//! Catch-up: a polling host that matches a group and is not on the group's target revision
//! gets an ordinary deployment of it (creator `catch-up`, the options of the deployment
//! that set the target). Hosts due at the same time share one: a host due while a catch-up
//! of its group runs is added to it. Never while another deployment of the group is in
//! progress; an operator's deployment supersedes a catch-up.
//!
//! Hosts found due at the same time are started together, one write per batch (the first
//! poll to find one due starts what is queued while the others wait, like the report
//! writer), so a wave of hundreds of returning hosts does not hold the store lock away from
//! another group's deployment for long.
//!
//! Every decision reads the store and is written to it (the host's sync row names the
//! command handed to it), so a restart neither forgets a due catch-up nor repeats one.
//! Deliberately not here: when a catch-up is due and how failures count (`sync`), the
//! rollout rules (`deployments`).

use std::sync::mpsc;

use hoist_protocol::agent;
use hoist_protocol::operator::{CommandState, Creator, DeploymentState};

use super::deployments::{agent_command, pending_command, start_first_batch};
use super::lock::Locked;
use super::states::{command_transition, deployment_transition, CommandEvent, DeploymentEvent};
use super::sync::due;
use super::{error_chain, locked, new_id, now_ms, Result, Service, ServiceError};
use crate::store::{Changes, CommandRow, DeploymentRow, GroupRow, HostRow, HostSyncRow};

/// Hosts found due a catch-up, waiting to be started together: a wave of returning hosts
/// costs one write (and one rollout step) per batch, not per host, so it does not hold the
/// store lock away from other deployments for long.
#[derive(Default)]
pub(super) struct CatchUpQueue {
    waiting: Vec<Waiting>,
    /// A poll is starting the queued catch-ups and takes what is queued meanwhile.
    starting: bool,
}

struct Waiting {
    host: HostRow,
    group_id: String,
    /// `None`: nothing started for it; else the command when it started at once.
    answer: mpsc::Sender<Result<Option<Option<agent::Command>>>>,
}

/// Marks the queue's starter gone if it unwinds; one that returns has already done so
/// under the lock with which it found the queue empty.
struct Starting<'a>(&'a std::sync::Mutex<CatchUpQueue>);

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            locked(self.0).starting = false;
        }
    }
}

impl Service {
    /// The command a catch-up hands `host` now, if it is due one in any of its groups.
    pub(super) fn catch_up_for(&self, host: &HostRow) -> Result<Option<agent::Command>> {
        if host.revoked {
            return Ok(None);
        }
        let now = now_ms();
        for (group, target) in self.groups_matching(host)? {
            let Some(target) = target else { continue };
            if !group.catch_up {
                continue;
            }
            // A first look without the lock: most polls find nothing due.
            if !self.is_due(host, &group, &target, now)? {
                continue;
            }
            if let Some(handed) = self.start_batched(host, &group.id)? {
                if handed.is_some() {
                    return Ok(handed);
                }
            }
        }
        Ok(None)
    }

    /// Queues `host` for a catch-up of group `group_id` and waits for the answer. The first
    /// poll to queue one starts every queued host, batch after batch, until none is left
    /// (the others only wait), as the report writer does for reports.
    fn start_batched(
        &self,
        host: &HostRow,
        group_id: &str,
    ) -> Result<Option<Option<agent::Command>>> {
        let (answer, answered) = mpsc::channel();
        let lead = {
            let mut queue = locked(&self.catch_ups);
            queue.waiting.push(Waiting {
                host: host.clone(),
                group_id: group_id.to_owned(),
                answer,
            });
            !std::mem::replace(&mut queue.starting, true)
        };
        if lead {
            let _starting = Starting(&self.catch_ups);
            loop {
                let batch = {
                    let mut queue = locked(&self.catch_ups);
                    if queue.waiting.is_empty() {
                        queue.starting = false;
                        break;
                    }
                    std::mem::take(&mut queue.waiting)
                };
                let started = match self.lock() {
                    Ok(lock) => self.start_catch_ups(&lock, batch),
                    Err(e) => {
                        let why = format!("starting a catch-up: {}", error_chain(&e));
                        tracing::error!(error = %why, "taking the decision lock");
                        for w in batch {
                            let _ = w.answer.send(Err(ServiceError::Internal(why.clone())));
                        }
                        false
                    }
                };
                if started {
                    self.changed();
                }
            }
        }
        answered.recv().unwrap_or_else(|_| {
            Err(ServiceError::Internal(
                "the catch-up batch was dropped before it was written".into(),
            ))
        })
    }

    /// Starts (or joins) each group's catch-up for the batch's hosts still due, answering
    /// each; whether anything started.
    fn start_catch_ups(&self, lock: &Locked<'_>, batch: Vec<Waiting>) -> bool {
        let mut by_group: Vec<(String, Vec<Waiting>)> = Vec::new();
        for w in batch {
            match by_group.iter_mut().find(|(g, _)| *g == w.group_id) {
                Some((_, ws)) => ws.push(w),
                None => by_group.push((w.group_id.clone(), vec![w])),
            }
        }
        let mut started = false;
        for (group_id, waiting) in by_group {
            let hosts: Vec<&HostRow> = waiting.iter().map(|w| &w.host).collect();
            match self.start_catch_up(lock, &hosts, &group_id) {
                Ok(answers) => {
                    for (w, a) in waiting.iter().zip(answers) {
                        started |= a.is_some();
                        // The poll may be gone; nothing to tell then.
                        let _ = w.answer.send(Ok(a));
                    }
                }
                Err(e) => {
                    let why = error_chain(&e);
                    tracing::error!(error = %why, deployment_group_id = %group_id,
                        "starting a catch-up");
                    for w in &waiting {
                        let _ = w.answer.send(Err(ServiceError::Internal(format!(
                            "starting a catch-up: {why}"
                        ))));
                    }
                }
            }
        }
        started
    }

    fn is_due(
        &self,
        host: &HostRow,
        group: &GroupRow,
        target: &DeploymentRow,
        now: u64,
    ) -> Result<bool> {
        let row = self.store.host_sync(&host.id, &group.id)?;
        let pending_alive = match row.as_ref().and_then(|r| r.pending_command_id.as_deref()) {
            Some(id) => self.store.command(id)?.is_some_and(|c| {
                matches!(c.state, CommandState::Pending | CommandState::InProgress)
            }),
            None => false,
        };
        Ok(due(row.as_ref(), target, now, pending_alive))
    }

    /// Under the lock, decides again for each host and starts (or joins) the group's
    /// catch-up for those due, in one write: per host, `None` when nothing started for
    /// it, else the command when it started at once.
    fn start_catch_up(
        &self,
        lock: &Locked<'_>,
        hosts: &[&HostRow],
        group_id: &str,
    ) -> Result<Vec<Option<Option<agent::Command>>>> {
        let none = || hosts.iter().map(|_| None).collect();
        let now = now_ms();
        let Some(group) = self.store.group_by_id(group_id)? else {
            return Ok(none());
        };
        let target = match &group.target_deployment_id {
            Some(id) => self.store.deployment(id)?,
            None => None,
        };
        let Some(target) = target else {
            return Ok(none());
        };
        let active = self
            .store
            .active_deployments()?
            .into_iter()
            .find(|d| d.group_id == group.id);
        // Another deployment of the group runs: the hosts' turn comes after it.
        if !group.catch_up
            || active
                .as_ref()
                .is_some_and(|d| d.creator != Creator::CatchUp)
        {
            return Ok(none());
        }
        let mut due_hosts: Vec<usize> = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            // A host polling twice at once is queued twice: it gets one command.
            let again = due_hosts.iter().any(|&j| hosts[j].id == h.id);
            if !again && self.is_due(h, &group, &target, now)? {
                due_hosts.push(i);
            }
        }
        if due_hosts.is_empty() {
            return Ok(none());
        }
        let (d, first_position) = match active {
            Some(d) => {
                let position = self.store.command_total(&d.id)?;
                (d, position)
            }
            None => (
                DeploymentRow {
                    id: new_id("d"),
                    group_name: group.name.clone(),
                    state: DeploymentState::InProgress,
                    creator: Creator::CatchUp,
                    rollback_of: None,
                    rolled_back_by: None,
                    message: None,
                    rollout: group.rollout,
                    created_ms: now,
                    ended_ms: None,
                    bake_secs: group.bake_secs,
                    bake_until_ms: None,
                    // The target's variables and signature come along: hosts caught
                    // up run the revision as that deployment ran it.
                    release_id: None,
                    ..target
                },
                0,
            ),
        };
        let mut commands: Vec<CommandRow> = Vec::with_capacity(due_hosts.len());
        let mut syncs: Vec<HostSyncRow> = Vec::with_capacity(due_hosts.len());
        for (k, &i) in due_hosts.iter().enumerate() {
            let host = hosts[i];
            let position = first_position.saturating_add(u32::try_from(k).unwrap_or(u32::MAX));
            let command = pending_command(&d.id, host, position);
            let mut row = self
                .store
                .host_sync(&host.id, &group.id)?
                .unwrap_or_else(|| HostSyncRow::new(&host.id, &group.id, now));
            row.pending_command_id = Some(command.id.clone());
            row.updated_ms = now;
            commands.push(command);
            syncs.push(row);
        }
        if first_position == 0 {
            start_first_batch(&d, &mut commands, now);
            self.store.insert_deployment_with(&d, &commands, &syncs)?;
            tracing::info!(deployment_id = %d.id, application = %d.application,
                deployment_group = %d.group_name, hosts = commands.len(),
                revision = %d.revision.describe(), "catch-up started");
            self.handed_out(
                &d,
                commands
                    .iter()
                    .filter(|c| c.state == CommandState::InProgress),
            );
        } else {
            self.store.save_changes(&Changes {
                deployment: &d,
                commands: &[],
                new_commands: &commands,
                syncs: &syncs,
                sets_target: false,
            })?;
            tracing::info!(deployment_id = %d.id, hosts = commands.len(), "hosts join a catch-up");
        }
        self.advance(lock, &d.id)?;
        let d = self.store.deployment(&d.id)?.unwrap_or(d);
        let mut answers: Vec<Option<Option<agent::Command>>> = none();
        for (c, &i) in commands.iter().zip(&due_hosts) {
            let now_state = if c.state == CommandState::InProgress {
                Some(c.clone())
            } else {
                self.store.command(&c.id)?
            };
            if let Some(slot) = answers.get_mut(i) {
                *slot = Some(
                    now_state
                        .filter(|c| c.state == CommandState::InProgress)
                        .map(|c| agent_command(&c, &d)),
                );
            }
        }
        Ok(answers)
    }

    /// Stops the group's catch-up in progress, if any, for an operator's deployment `by`:
    /// its hosts not started are skipped, the running ones told to stop.
    pub(super) fn supersede_catch_up(
        &self,
        _lock: &Locked<'_>,
        group: &GroupRow,
        by: &str,
    ) -> Result<()> {
        let now = now_ms();
        for mut d in self.store.active_deployments()? {
            if d.group_id != group.id || d.creator != Creator::CatchUp {
                continue;
            }
            let event = DeploymentEvent::Superseded { by: by.to_owned() };
            if !deployment_transition(&mut d, event, now) {
                continue;
            }
            let skipped: Vec<CommandRow> = self
                .store
                .pending_commands(&d.id, usize::MAX)?
                .into_iter()
                .filter_map(|mut c| {
                    command_transition(&mut c, CommandEvent::DeploymentStopped, now).then_some(c)
                })
                .collect();
            self.store.save_deployment(&d, &skipped)?;
            tracing::info!(deployment_id = %d.id, by = %by, "catch-up superseded");
        }
        Ok(())
    }

    /// After an operator deployed the group again: hosts held out of sync, and their
    /// catch-up retries, start afresh.
    pub(super) fn release_holds(&self, _lock: &Locked<'_>, group: &GroupRow) -> Result<()> {
        let now = now_ms();
        let released: Vec<HostSyncRow> = self
            .store
            .host_syncs()?
            .into_iter()
            .filter(|r| r.group_id == group.id && (r.hold || r.attempts > 0))
            .map(|mut r| {
                r.hold = false;
                r.attempts = 0;
                r.next_attempt_ms = 0;
                r.updated_ms = now;
                r
            })
            .collect();
        if !released.is_empty() {
            self.store.save_host_syncs(&released)?;
        }
        Ok(())
    }
}
