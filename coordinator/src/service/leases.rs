//! Command leases: when a command was handed out, heartbeats naming it, and the sweep that
//! fails a command silent for the lease ("host lost", or "no report" while the host still
//! polls). The leases live in the store, so any coordinator on the database expires a
//! command another handed out; hand-outs and heartbeats are noted in memory and written
//! with the hosts' last contacts (once a second, and before the sweep reads them). Not
//! here: what a failed command does to its deployment (`deployments`).

use std::collections::HashMap;

use hoist_protocol::agent::{Heartbeat, HeartbeatAck};
use hoist_protocol::operator::{CommandState, DeploymentState};

use super::states::{command_transition, CommandEvent, LeaseErrorCode};
use super::sync::after_command;
use super::{locked, now_ms, Result, Service};
use crate::store::{Changes, CommandLease, CommandRow, HostContact, HostRow};

impl Service {
    /// Records that `host` is alive (its lease holds) and says whether the command it
    /// runs should stop. A command of another host is answered as not aborted.
    pub fn heartbeat(&self, host: &HostRow, req: &Heartbeat) -> Result<HeartbeatAck> {
        self.note_contact(
            &host.id,
            HostContact {
                last_seen_ms: now_ms(),
                details: None,
            },
        );
        let Some(command_id) = req.command_id.as_deref() else {
            return Ok(HeartbeatAck { aborted: false });
        };
        let Some(cmd) = self.store.command(command_id)? else {
            return Ok(HeartbeatAck { aborted: false });
        };
        if cmd.host_id != host.id {
            return Ok(HeartbeatAck { aborted: false });
        }
        if cmd.state == CommandState::InProgress {
            let now = now_ms();
            self.note_lease(
                &cmd.id,
                CommandLease {
                    delivered_ms: now,
                    beat_ms: now,
                },
            );
        }
        let stopped = match self.store.deployment(&cmd.deployment_id)? {
            Some(d) => d.state == DeploymentState::Stopped,
            None => false,
        };
        Ok(HeartbeatAck {
            aborted: cmd.state == CommandState::InProgress && stopped || expired_here(&cmd),
        })
    }
    /// Notes that a poll answered with `command_id`: from the first time on, the command's
    /// lease runs on its reports and heartbeats alone.
    pub fn command_delivered(&self, command_id: &str) {
        // No heartbeat: handing the command out again (each poll while it runs) renews
        // nothing, only the first hand-out counts.
        self.note_lease(
            command_id,
            CommandLease {
                delivered_ms: now_ms(),
                beat_ms: 0,
            },
        );
    }

    /// Notes a hand-out or a heartbeat, to be merged with the stored lease (the earliest
    /// hand-out, the latest heartbeat).
    fn note_lease(&self, command_id: &str, note: CommandLease) {
        locked(&self.leases)
            .entry(command_id.to_owned())
            .and_modify(|l| l.merge(note))
            .or_insert(note);
    }

    /// Writes the noted hand-outs and heartbeats; on failure they are kept for the next try.
    pub(super) fn flush_leases(&self) -> Result<()> {
        let notes: Vec<(String, CommandLease)> = std::mem::take(&mut *locked(&self.leases))
            .into_iter()
            .collect();
        if notes.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.store.write_leases(&notes) {
            let mut pending = locked(&self.leases);
            for (id, note) in notes {
                pending
                    .entry(id)
                    .and_modify(|l| l.merge(note))
                    .or_insert(note);
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Fails commands in progress that have had neither a report nor a heartbeat naming
    /// them for the lease ("host lost" when the host is silent too, "no report" when it
    /// still polls: its polls do not keep a command alive), then lets their deployments go
    /// on. Returns how many commands it failed.
    pub fn expire_leases(&self) -> Result<usize> {
        let now = now_ms();
        let mut expired = 0;
        {
            let lock = self.lock()?;
            // A host's last poll, and the last hand-outs and heartbeats, may not be written yet.
            self.flush_contacts()?;
            self.store.drop_ended_leases()?;
            let in_progress = self.store.in_progress_commands()?;
            let leases: HashMap<String, CommandLease> =
                self.store.command_leases()?.into_iter().collect();
            let mut deployments = Vec::new();
            for mut c in in_progress {
                let mut seen = None;
                let last = match leases.get(&c.id) {
                    Some(l) => [Some(l.delivered_ms), Some(l.beat_ms), c.last_report_ms]
                        .into_iter()
                        .flatten()
                        .max()
                        .unwrap_or(0),
                    // Never handed to its host (or the coordinator that did stopped before
                    // writing it): the host may be busy with another command; it holds while
                    // the host keeps in touch.
                    None => {
                        seen = self.store.host(&c.host_id)?.map(|h| h.last_seen_ms);
                        [c.started_ms, c.last_report_ms, seen]
                            .into_iter()
                            .flatten()
                            .max()
                            .unwrap_or(0)
                    }
                };
                if self.within_lease(last, now) {
                    continue;
                }
                let Some(d) = self.store.deployment(&c.deployment_id)? else {
                    continue;
                };
                if seen.is_none() {
                    seen = self.store.host(&c.host_id)?.map(|h| h.last_seen_ms);
                }
                let code = if seen.is_some_and(|s| self.within_lease(s, now)) {
                    LeaseErrorCode::NoReport
                } else {
                    LeaseErrorCode::HostLost
                };
                let lease = self.config.host_lease;
                if !command_transition(&mut c, CommandEvent::LeaseExpired { code, lease }, now) {
                    continue;
                }
                match code {
                    LeaseErrorCode::NoReport => tracing::warn!(command_id = %c.id,
                        host = ?c.host_name, "command failed: no report while the host polls"),
                    LeaseErrorCode::HostLost => {
                        tracing::warn!(command_id = %c.id, host = ?c.host_name, "host lost")
                    }
                }
                let prev = self.store.host_sync(&c.host_id, &d.group_id)?;
                let base = self.config.catch_up_retry_base();
                let syncs: Vec<_> = after_command(prev, &d, &c, now, base).into_iter().collect();
                self.store.save_changes(&Changes {
                    deployment: &d,
                    commands: std::slice::from_ref(&c),
                    new_commands: &[],
                    syncs: &syncs,
                    sets_target: false,
                })?;
                if !deployments.contains(&c.deployment_id) {
                    deployments.push(c.deployment_id.clone());
                }
                expired += 1;
            }
            for id in deployments {
                self.advance(&lock, &id)?;
            }
        }
        if expired > 0 {
            self.changed();
        }
        Ok(expired)
    }
}

/// The command was failed by the lease sweep, not by its host: the host is told to stop.
pub(super) fn expired_here(cmd: &CommandRow) -> bool {
    matches!(cmd.state, CommandState::Failed | CommandState::Unknown)
        && cmd
            .error_code
            .as_deref()
            .and_then(LeaseErrorCode::parse)
            .is_some()
}
