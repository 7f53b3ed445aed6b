//! Where each host stands in each of its deployment groups: the pure rules (a host's row
//! after a command ends, its sync state, when a catch-up is due, the retry delays) and the
//! views built from them (`hosts list`, `group show`, `hosts retry`).
//!
//! A row (`HostSyncRow`) changes only with the command end that changes it, in the same
//! transaction, so a restart loses neither a retry count nor a due catch-up. Deliberately
//! not here: starting catch-ups (`catch_up`) or the command states themselves (`states`).

use std::collections::HashMap;
use std::time::Duration;

use hoist_protocol::agent;
use hoist_protocol::operator::{self as op, CommandState, Creator, SyncCounts, SyncState};

use super::catalog::matches;
use super::{now_ms, Result, Service, ServiceError};
use crate::bounds::shown;
use crate::store::{CommandRow, DeploymentRow, GroupRow, HostRow, HostSyncRow};

/// A failed catch-up is tried again at most this many times (four tries in all).
pub(super) const MAX_CATCH_UP_RETRIES: u32 = 3;

/// How long after its `attempts`-th failed catch-up a host waits for the next: `base`,
/// then twice, then four times as long.
pub fn retry_delay(base: Duration, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    base.saturating_mul(1u32 << doublings)
}

/// Whether two deployments installed the same revision.
fn same_revision(row: &HostSyncRow, target: &DeploymentRow) -> bool {
    match (&row.revision_id, &target.revision_id) {
        (Some(a), Some(b)) => a == b,
        _ => row.revision.as_ref() == Some(&target.revision),
    }
}

/// The host's row once command `c` of deployment `d` has ended; `None` when the end
/// changes nothing (a command that never ran, a catch-up an operator superseded).
pub(super) fn after_command(
    prev: Option<HostSyncRow>,
    d: &DeploymentRow,
    c: &CommandRow,
    now: u64,
    retry_base: Duration,
) -> Option<HostSyncRow> {
    let mut row = prev.unwrap_or_else(|| HostSyncRow::new(&c.host_id, &d.group_id, now));
    if row.pending_command_id.as_deref() == Some(c.id.as_str()) {
        row.pending_command_id = None;
    }
    row.updated_ms = now;
    let catch_up = d.creator == Creator::CatchUp;
    match c.state {
        CommandState::Succeeded => {
            row.revision_id = d.revision_id.clone();
            row.revision = Some(d.revision.clone());
            row.deployment_id = Some(d.id.clone());
            row.hold = false;
            row.attempts = 0;
            row.next_attempt_ms = 0;
            row.failed_state = None;
            row.failed_event = None;
            row.error = None;
        }
        // An operator's stop of a catch-up (or a newer deployment superseding it) is no
        // failed try: the operator's deployment takes over.
        CommandState::Stopped if catch_up => {}
        CommandState::Failed
        | CommandState::Interrupted
        | CommandState::Unknown
        | CommandState::Stopped => {
            row.failed_state = Some(c.state);
            row.failed_event = c.failed_event.clone();
            row.error = Some(match (&c.error_code, &c.message) {
                (Some(code), Some(m)) => format!("{code}: {m}"),
                (None, Some(m)) => m.clone(),
                (Some(code), None) => code.clone(),
                (None, None) => format!("the command ended {}", c.state),
            });
            if catch_up {
                row.attempts = row.attempts.saturating_add(1);
                if row.attempts > MAX_CATCH_UP_RETRIES {
                    row.hold = true;
                } else {
                    let delay = retry_delay(retry_base, row.attempts);
                    row.next_attempt_ms =
                        now.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
                }
            } else {
                // The operator saw it end badly: no automatic second try.
                row.hold = true;
            }
        }
        CommandState::Pending | CommandState::InProgress | CommandState::Skipped => {
            return None;
        }
    }
    Some(row)
}

/// A host's sync state in a group with `target` (the deployment that set it).
pub(super) fn sync_state(
    row: Option<&HostSyncRow>,
    target: Option<&DeploymentRow>,
    catch_up: bool,
) -> SyncState {
    let Some(row) = row else {
        return SyncState::NeverDeployed;
    };
    if row.hold {
        return SyncState::OutOfSync;
    }
    let Some(target) = target else {
        return if row.revision.is_some() {
            SyncState::InSync
        } else {
            SyncState::NeverDeployed
        };
    };
    if same_revision(row, target) {
        return SyncState::InSync;
    }
    if row.pending_command_id.is_some() {
        return SyncState::CatchingUp;
    }
    match (catch_up, row.revision.is_some()) {
        (true, _) => SyncState::CatchingUp,
        (false, false) => SyncState::NeverDeployed,
        (false, true) => SyncState::OutOfSync,
    }
}

/// Whether a host polling now is due a catch-up to `target`: not on it, not held, not
/// waiting for a retry's time, and no catch-up command of its own that may still run
/// (`pending_alive` says whether the row's pending command is still pending or running).
pub(super) fn due(
    row: Option<&HostSyncRow>,
    target: &DeploymentRow,
    now: u64,
    pending_alive: bool,
) -> bool {
    let Some(row) = row else {
        return true;
    };
    let waiting = row.pending_command_id.is_some() && pending_alive;
    !(row.hold || waiting || now < row.next_attempt_ms || same_revision(row, target))
}

impl Service {
    /// Each non-revoked host's rows by group, from one read.
    fn syncs_by_host(&self) -> Result<HashMap<String, HashMap<String, HostSyncRow>>> {
        let mut out: HashMap<String, HashMap<String, HostSyncRow>> = HashMap::new();
        for row in self.store.host_syncs()? {
            out.entry(row.host_id.clone())
                .or_default()
                .insert(row.group_id.clone(), row);
        }
        Ok(out)
    }

    /// Every group with the deployment that set its target.
    pub(super) fn groups_with_targets(&self) -> Result<Vec<(GroupRow, Option<DeploymentRow>)>> {
        let mut out = Vec::new();
        for g in self.store.all_groups()? {
            let target = match &g.target_deployment_id {
                Some(id) => self.store.deployment(id)?,
                None => None,
            };
            out.push((g, target));
        }
        Ok(out)
    }

    /// A host's standing in every group its tags match.
    pub(super) fn host_groups(
        &self,
        h: &HostRow,
        groups: &[(GroupRow, Option<DeploymentRow>)],
        rows: Option<&HashMap<String, HostSyncRow>>,
    ) -> Vec<op::HostGroupSync> {
        groups
            .iter()
            .filter(|(g, _)| matches(&g.tag_filters, &h.tags))
            .map(|(g, target)| {
                let row = rows.and_then(|r| r.get(&g.id));
                let sync = sync_state(row, target.as_ref(), g.catch_up);
                let out_of_sync = sync == SyncState::OutOfSync;
                op::HostGroupSync {
                    application: g.application.clone(),
                    deployment_group: g.name.clone(),
                    revision: row.and_then(|r| r.revision.clone()),
                    revision_id: row.and_then(|r| r.revision_id.clone()),
                    sync,
                    failed_state: row.and_then(|r| r.failed_state).filter(|_| out_of_sync),
                    failed_event: row
                        .and_then(|r| r.failed_event.clone())
                        .filter(|_| out_of_sync),
                    error: match (out_of_sync, row) {
                        (true, Some(r)) if r.error.is_none() && !g.catch_up => {
                            Some("catch-up is off for this group".into())
                        }
                        (true, Some(r)) => r.error.clone(),
                        _ => None,
                    },
                    catch_up_attempts: row.map_or(0, |r| r.attempts),
                    next_attempt_ms: row
                        .map(|r| r.next_attempt_ms)
                        .filter(|&t| t > 0 && sync == SyncState::CatchingUp),
                }
            })
            .collect()
    }

    /// One host's standing in every group it matches.
    pub(super) fn one_host_groups(&self, h: &HostRow) -> Result<Vec<op::HostGroupSync>> {
        let groups = self.groups_matching(h)?;
        let rows = self.sync_rows_of(h)?;
        Ok(self.host_groups(h, &groups, Some(&rows)))
    }

    /// The groups `h`'s tags match, with their targets: only those targets are read, since
    /// this runs for every poll (its catch-up look) and every idle poll answer.
    pub(super) fn groups_matching(
        &self,
        h: &HostRow,
    ) -> Result<Vec<(GroupRow, Option<DeploymentRow>)>> {
        let mut out = Vec::new();
        for g in self.store.all_groups()? {
            if !matches(&g.tag_filters, &h.tags) {
                continue;
            }
            let target = match &g.target_deployment_id {
                Some(id) => self.store.deployment(id)?,
                None => None,
            };
            out.push((g, target));
        }
        Ok(out)
    }

    fn sync_rows_of(&self, h: &HostRow) -> Result<HashMap<String, HostSyncRow>> {
        Ok(self
            .store
            .host_syncs_of(&h.id)?
            .into_iter()
            .map(|r| (r.group_id.clone(), r))
            .collect())
    }

    /// What a poll answer tells the host of its groups: one read of the groups, the targets
    /// of those it matches and its own sync rows.
    pub fn host_sync_view(&self, h: &HostRow) -> Result<Vec<agent::GroupSync>> {
        let groups = self.groups_matching(h)?;
        let rows = self.sync_rows_of(h)?;
        // `host_groups` keeps every group of `groups` (all match), in order.
        let ids = groups.iter().map(|(g, _)| g.id.clone());
        Ok(self
            .host_groups(h, &groups, Some(&rows))
            .into_iter()
            .zip(ids)
            .map(|(g, deployment_group_id)| agent::GroupSync {
                deployment_group_id,
                application: g.application,
                deployment_group: g.deployment_group,
                sync: g.sync,
                revision: g.revision.map(|r| r.describe()),
                failed_event: g.failed_event,
                error: g.error,
            })
            .collect())
    }

    /// Every host's standing, by host id.
    pub(super) fn all_host_groups(
        &self,
        hosts: &[HostRow],
    ) -> Result<HashMap<String, Vec<op::HostGroupSync>>> {
        let groups = self.groups_with_targets()?;
        let rows = self.syncs_by_host()?;
        Ok(hosts
            .iter()
            .map(|h| (h.id.clone(), self.host_groups(h, &groups, rows.get(&h.id))))
            .collect())
    }

    /// The group's matching hosts counted by sync state.
    pub(super) fn sync_counts(
        &self,
        g: &GroupRow,
        target: Option<&DeploymentRow>,
    ) -> Result<SyncCounts> {
        let rows = self.syncs_by_host()?;
        let mut counts = SyncCounts::default();
        for h in self.store.hosts()? {
            if h.revoked || !matches(&g.tag_filters, &h.tags) {
                continue;
            }
            let row = rows.get(&h.id).and_then(|r| r.get(&g.id));
            match sync_state(row, target, g.catch_up) {
                SyncState::InSync => counts.in_sync += 1,
                SyncState::CatchingUp => counts.catching_up += 1,
                SyncState::OutOfSync | SyncState::Unknown => counts.out_of_sync += 1,
                SyncState::NeverDeployed => counts.never_deployed += 1,
            }
        }
        Ok(counts)
    }

    /// A host rolled a group back on the box (`hoist-agent rollback`) to the release of
    /// deployment `deployment_id`: its row now names that deployment's revision and is held
    /// out of sync with the rollback as the reason, so no catch-up undoes it until an
    /// operator deploys the group again or runs `hoist hosts retry`.
    pub fn local_rollback(
        &self,
        host: &HostRow,
        req: &agent::LocalRollback,
    ) -> Result<agent::LocalRollbackAck> {
        for (what, value) in [
            ("group_id", &req.group_id),
            ("deployment_id", &req.deployment_id),
            ("rollback_id", &req.rollback_id),
        ] {
            if value.is_empty() || value.len() > 128 || value.chars().any(char::is_control) {
                return Err(ServiceError::Invalid(format!(
                    "{what}: must be 1 to 128 characters without control characters"
                )));
            }
        }
        {
            let _lock = self.lock()?;
            let deployment = self
                .store
                .deployment(&req.deployment_id)?
                .filter(|d| d.group_id == req.group_id)
                .ok_or_else(|| {
                    ServiceError::NotFound(format!(
                        "no deployment {} in group {}",
                        shown(&req.deployment_id),
                        shown(&req.group_id)
                    ))
                })?;
            let now = now_ms();
            let mut row = self
                .store
                .host_sync(&host.id, &req.group_id)?
                .unwrap_or_else(|| HostSyncRow::new(&host.id, &req.group_id, now));
            row.revision_id = deployment.revision_id.clone();
            row.revision = Some(deployment.revision.clone());
            row.deployment_id = Some(deployment.id.clone());
            row.hold = true;
            row.pending_command_id = None;
            row.failed_state = None;
            row.failed_event = None;
            row.error = Some(format!(
                "rolled back on the host ({}) to the revision of deployment {}",
                shown(&req.rollback_id),
                deployment.id
            ));
            row.updated_ms = now;
            self.store.save_host_syncs(&[row])?;
            tracing::info!(host_id = %host.id, group_id = %req.group_id, deployment_id = %deployment.id, "host rolled back on the box");
        }
        self.changed();
        Ok(agent::LocalRollbackAck { recorded: true })
    }

    /// `hoist hosts retry`: one more catch-up try in each group where the host is held out
    /// of sync, at its next poll.
    pub fn retry_host(&self, key: &str) -> Result<op::HostInfo> {
        self.flush_contacts()?;
        let host = {
            let _lock = self.lock()?;
            let host = self.host_by_id_or_name(key)?;
            let held: Vec<HostSyncRow> = self
                .store
                .host_syncs()?
                .into_iter()
                .filter(|r| r.host_id == host.id && r.hold)
                .map(|mut r| {
                    r.hold = false;
                    // One failure more puts it back out of sync.
                    r.attempts = MAX_CATCH_UP_RETRIES;
                    r.next_attempt_ms = 0;
                    r.pending_command_id = None;
                    r.updated_ms = now_ms();
                    r
                })
                .collect();
            if held.is_empty() {
                return Err(ServiceError::Conflict(format!(
                    "host {} ({}) is not held out of sync in any group",
                    shown(&host.name),
                    host.id
                )));
            }
            self.store.save_host_syncs(&held)?;
            tracing::info!(host_id = %host.id, groups = held.len(), "catch-up retry requested");
            host
        };
        self.changed();
        self.host_info(host, now_ms())
    }
}

#[cfg(test)]
mod tests;
