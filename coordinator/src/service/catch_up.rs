//! Catch-up: a polling host that matches a group and is not on the group's target revision
//! gets an ordinary deployment of it (creator `catch-up`, the options of the deployment
//! that set the target). Hosts due at the same time share one: a host due while a catch-up
//! of its group runs is added to it. Never while another deployment of the group is in
//! progress; an operator's deployment supersedes a catch-up.
//!
//! Every decision reads the store and is written to it (the host's sync row names the
//! command handed to it), so a restart neither forgets a due catch-up nor repeats one.
//! Deliberately not here: when a catch-up is due and how failures count (`sync`), the
//! rollout rules (`deployments`).

use hoist_protocol::agent;
use hoist_protocol::operator::{CommandState, Creator, DeploymentState};

use super::catalog::matches;
use super::deployments::{agent_command, pending_command, start_first_batch};
use super::lock::Locked;
use super::states::{command_transition, deployment_transition, CommandEvent, DeploymentEvent};
use super::sync::due;
use super::{new_id, now_ms, Result, Service};
use crate::store::{Changes, CommandRow, DeploymentRow, GroupRow, HostRow, HostSyncRow};

impl Service {
    /// The command a catch-up hands `host` now, if it is due one in any of its groups.
    pub(super) fn catch_up_for(&self, host: &HostRow) -> Result<Option<agent::Command>> {
        if host.revoked {
            return Ok(None);
        }
        let now = now_ms();
        for (group, target) in self.groups_with_targets()? {
            let Some(target) = target else { continue };
            if !group.catch_up || !matches(&group.tag_filters, &host.tags) {
                continue;
            }
            // A first look without the lock: most polls find nothing due.
            if !self.is_due(host, &group, &target, now)? {
                continue;
            }
            let started = {
                let lock = self.lock();
                self.start_catch_up(&lock, host, &group.id, now)?
            };
            if let Some(handed) = started {
                self.changed();
                if handed.is_some() {
                    return Ok(handed);
                }
            }
        }
        Ok(None)
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

    /// Under the lock, decides again and starts (or joins) the group's catch-up for
    /// `host`: `None` when it did neither, else the command when it started at once.
    fn start_catch_up(
        &self,
        lock: &Locked<'_>,
        host: &HostRow,
        group_id: &str,
        now: u64,
    ) -> Result<Option<Option<agent::Command>>> {
        let Some(group) = self.store.group_by_id(group_id)? else {
            return Ok(None);
        };
        let target = match &group.target_deployment_id {
            Some(id) => self.store.deployment(id)?,
            None => None,
        };
        let Some(target) = target else {
            return Ok(None);
        };
        if !group.catch_up || !self.is_due(host, &group, &target, now)? {
            return Ok(None);
        }
        let active = self
            .store
            .active_deployments()?
            .into_iter()
            .find(|d| d.group_id == group.id);
        let mut row = self
            .store
            .host_sync(&host.id, &group.id)?
            .unwrap_or_else(|| HostSyncRow::new(&host.id, &group.id, now));
        row.updated_ms = now;
        let (deployment, command) = match active {
            // Another deployment of the group runs: the host's turn comes after it.
            Some(d) if d.creator != Creator::CatchUp => return Ok(None),
            Some(d) => {
                let position = self.store.command_total(&d.id)?;
                let command = pending_command(&d.id, host, position);
                row.pending_command_id = Some(command.id.clone());
                self.store.save_changes(&Changes {
                    deployment: &d,
                    commands: &[],
                    new_commands: std::slice::from_ref(&command),
                    syncs: std::slice::from_ref(&row),
                    sets_target: false,
                })?;
                tracing::info!(deployment_id = %d.id, host = ?host.name, "host joins a catch-up");
                self.advance(lock, &d.id)?;
                (d, command)
            }
            None => {
                let d = DeploymentRow {
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
                    ..target
                };
                let mut commands = vec![pending_command(&d.id, host, 0)];
                start_first_batch(&d, &mut commands, now);
                row.pending_command_id = commands.first().map(|c| c.id.clone());
                self.store
                    .insert_deployment_with(&d, &commands, std::slice::from_ref(&row))?;
                tracing::info!(deployment_id = %d.id, application = %d.application,
                    deployment_group = %d.group_name, host = ?host.name,
                    revision = %d.revision.describe(), "catch-up started");
                self.handed_out(
                    &d,
                    commands
                        .iter()
                        .filter(|c| c.state == CommandState::InProgress),
                );
                self.advance(lock, &d.id)?;
                let command = commands.swap_remove(0);
                (d, command)
            }
        };
        Ok(Some(
            self.store
                .command(&command.id)?
                .filter(|c| c.state == CommandState::InProgress)
                .map(|c| agent_command(&c, &deployment)),
        ))
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
