//! Bakes: after a batch of a rollout succeeds, a group with a bake time waits that long
//! before the next batch starts (`advance` starts and ends the bake; its end time is stored
//! with the deployment, so a restart resumes it with the time left). This file holds the
//! timer's side: ending bakes that are over, and failing the commands whose hosts were lost
//! while the deployment baked. Not here: the rollout rules (`deployments`).

use hoist_protocol::operator::CommandState;

use super::states::{command_transition, CommandEvent};
use super::sync::after_command;
use super::{now_ms, Result, Service};
use crate::store::{Changes, CommandRow};

impl Service {
    /// For every deployment baking: a host that succeeded in it and has been silent for
    /// the lease has failed after all; a bake that is over lets the next batch start.
    /// Returns how many deployments it advanced.
    pub fn advance_bakes(&self) -> Result<usize> {
        let mut advanced = 0;
        {
            let lock = self.lock()?;
            let baking: Vec<_> = self
                .store
                .active_deployments()?
                .into_iter()
                .filter(|d| d.bake_until_ms.is_some())
                .collect();
            if baking.is_empty() {
                return Ok(0);
            }
            // A host's last poll may not be written yet.
            self.flush_contacts()?;
            let now = now_ms();
            let lease = self.config.host_lease;
            for d in baking {
                let mut lost: Vec<CommandRow> = Vec::new();
                for mut c in self.store.commands(&d.id)? {
                    if c.state != CommandState::Succeeded {
                        continue;
                    }
                    let seen = self.store.host(&c.host_id)?.map_or(0, |h| h.last_seen_ms);
                    if self.within_lease(seen, now) {
                        continue;
                    }
                    if command_transition(&mut c, CommandEvent::LostWhileBaking { lease }, now) {
                        tracing::warn!(deployment_id = %d.id, host = ?c.host_name,
                            "host lost while the deployment baked");
                        lost.push(c);
                    }
                }
                let over = d.bake_until_ms.is_some_and(|until| now >= until);
                if lost.is_empty() && !over {
                    continue;
                }
                if !lost.is_empty() {
                    let base = self.config.catch_up_retry_base();
                    let mut syncs = Vec::new();
                    for c in &lost {
                        let prev = self.store.host_sync(&c.host_id, &d.group_id)?;
                        syncs.extend(after_command(prev, &d, c, now, base));
                    }
                    self.store.save_changes(&Changes {
                        deployment: &d,
                        commands: &lost,
                        new_commands: &[],
                        syncs: &syncs,
                        sets_target: false,
                    })?;
                }
                self.advance(&lock, &d.id)?;
                advanced += 1;
            }
        }
        if advanced > 0 {
            self.changed();
        }
        Ok(advanced)
    }
}
