//! The fleet's figures at one moment, for `GET /metrics`: hosts online, lost and revoked;
//! (host, group) pairs by sync state; deployments by state; the commands of deployments
//! not ended by state; catch-ups pending; releases awaiting approval. Read from the store
//! (as the listings are), never kept. Not here: their names and encoding (`metrics`).

use hoist_protocol::operator::{CommandState, DeploymentState, ReleaseState, SyncState};

use super::{Result, Service};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    pub hosts_online: u64,
    pub hosts_lost: u64,
    pub hosts_revoked: u64,
    /// Hosts not revoked, per group they match, by sync state.
    pub sync: Vec<(SyncState, u64)>,
    pub deployments: Vec<(DeploymentState, u64)>,
    pub commands: Vec<(CommandState, u64)>,
    /// (host, group) pairs a catch-up is on its way to or due at the host's next poll.
    pub catch_ups_pending: u64,
    pub releases_awaiting_approval: u64,
}

impl Service {
    pub fn figures(&self) -> Result<Figures> {
        let mut f = Figures::default();
        for h in self.hosts()?.hosts {
            if h.revoked {
                f.hosts_revoked += 1;
                continue;
            }
            if h.online {
                f.hosts_online += 1;
            } else {
                f.hosts_lost += 1;
            }
            for g in &h.groups {
                match f.sync.iter_mut().find(|(s, _)| *s == g.sync) {
                    Some((_, n)) => *n += 1,
                    None => f.sync.push((g.sync, 1)),
                }
                if g.sync == SyncState::CatchingUp {
                    f.catch_ups_pending += 1;
                }
            }
        }
        f.deployments = self.store.deployment_state_counts()?;
        f.commands = self.store.active_command_state_counts()?;
        f.releases_awaiting_approval = self
            .store
            .active_releases()?
            .iter()
            .filter(|r| r.state == ReleaseState::AwaitingApproval)
            .count() as u64;
        Ok(f)
    }
}
