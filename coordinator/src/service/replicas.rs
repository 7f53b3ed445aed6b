//! This coordinator among the others on the same database: its row in the store (an id,
//! logged at start, and a heartbeat every [`REPLICA_BEAT`]; removed when it stops), the
//! live ones listed (`hoist server replicas`), and what they tell each other ([`Notice`]s
//! through the store): commands started for hosts whose polls are held here are read in
//! one query and handed to those polls (a host with none in progress is woken to look in
//! the store itself); hosts changed elsewhere (revoked, retagged) leave
//! the credentials cache, so the next request reads them again; changes of deployments end
//! the operators' watches (`--wait`) held here. With one coordinator
//! (SQLite) no notice is sent or received.
//!
//! Not here: the transport (the store's `publish` and `listen`), or a cache of anything
//! else: what a notice cannot fix is read from the store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::deployments::agent_command;
use super::{error_chain, locked, new_id, now_ms, HostWaker, Result, Service};
use crate::store::{CommandRow, DeploymentRow, HostRow, Notice, ReplicaRow, Store};

/// How often a replica's row says it is alive.
pub const REPLICA_BEAT: Duration = Duration::from_secs(5);

/// A replica silent this long is not listed as live (three heartbeats missed).
pub const REPLICA_LIVE: Duration = Duration::from_secs(15);

/// The replicas whose last heartbeat is recent enough, oldest first.
pub fn live_replicas(store: &dyn Store) -> Result<Vec<ReplicaRow>> {
    let since = now_ms().saturating_sub(REPLICA_LIVE.as_millis() as u64);
    Ok(store.replicas(since)?)
}

impl Service {
    /// Writes this coordinator's row (a new id, its host name, pid and address); call once,
    /// at start, then [`Service::beat_replica`].
    pub fn start_replica(&self, listen: SocketAddr) -> Result<ReplicaRow> {
        let now = now_ms();
        let row = ReplicaRow {
            id: new_id("rp"),
            host: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            pid: std::process::id(),
            listen: listen.to_string(),
            started_ms: now,
            beat_ms: now,
        };
        self.store.write_replica(&row)?;
        *locked(&self.replica) = Some(row.clone());
        Ok(row)
    }

    /// Renews this coordinator's row every [`REPLICA_BEAT`] until `cancel`, then removes
    /// it (and the rows of replicas long silent).
    pub async fn beat_replica(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(REPLICA_BEAT) => {}
                _ = cancel.cancelled() => break,
            }
            let s = self.clone();
            let beat = tokio::task::spawn_blocking(move || {
                let Some(mut row) = locked(&s.replica).clone() else {
                    return Ok(());
                };
                row.beat_ms = now_ms();
                s.store.write_replica(&row)
            })
            .await;
            match beat {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %error_chain(&e), "writing this replica's heartbeat")
                }
                Err(e) => tracing::warn!(error = %e, "writing this replica's heartbeat"),
            }
        }
        let s = self.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let Some(row) = locked(&s.replica).take() else {
                return Ok(());
            };
            // Rows silent ten times the live window are forgotten too (replicas killed).
            let stale = now_ms().saturating_sub(10 * REPLICA_LIVE.as_millis() as u64);
            s.store.remove_replica(&row.id, stale)
        })
        .await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(error = %error_chain(&e), "removing this replica's row");
        }
    }

    /// Follows the other coordinators' notices from now on; call once, at start.
    pub fn follow_replicas(self: &Arc<Self>) -> Result<()> {
        let service = Arc::downgrade(self);
        self.store.listen(Box::new(move |notice| {
            if let Some(s) = service.upgrade() {
                s.on_notice(notice);
            }
        }))?;
        Ok(())
    }

    fn on_notice(self: &Arc<Self>, notice: Notice) {
        match notice {
            Notice::CommandsStarted(hosts) => {
                let held: Vec<(String, Arc<HostWaker>)> = {
                    let wakers = locked(&self.wakers);
                    hosts
                        .into_iter()
                        .filter_map(|h| {
                            let w = wakers.get(&h).filter(|w| w.is_held())?.clone();
                            Some((h, w))
                        })
                        .collect()
                };
                if held.is_empty() {
                    return;
                }
                // Off the listener's task: it reads the store.
                let s = self.clone();
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => drop(rt.spawn_blocking(move || s.hand_over_started(held))),
                    Err(_) => s.hand_over_started(held),
                }
            }
            Notice::HostsChanged(hosts) => {
                let mut credentials = locked(&self.credentials);
                self.credentials_epoch.fetch_add(1, Ordering::SeqCst);
                for h in &hosts {
                    credentials.remove(h);
                }
                tracing::debug!(hosts = hosts.len(), "hosts changed on another replica");
            }
            Notice::Changed => self.changes.send_modify(|v| *v += 1),
            Notice::Resync => {
                {
                    let mut credentials = locked(&self.credentials);
                    self.credentials_epoch.fetch_add(1, Ordering::SeqCst);
                    credentials.clear();
                }
                for w in locked(&self.wakers).values() {
                    w.nudge();
                }
                self.changes.send_modify(|v| *v += 1);
                tracing::info!(
                    "back in touch with other replicas: caches dropped, polls look again"
                );
            }
        }
    }

    /// Hands the polls held here for `held` hosts the commands another coordinator has
    /// just started for them, read in one query, as that coordinator hands its own: a
    /// fleet's worth of woken polls then answers without a store read each. A host with
    /// no command in progress (a catch-up, say), or a failed read, is only woken: its poll
    /// looks in the store.
    fn hand_over_started(&self, held: Vec<(String, Arc<HostWaker>)>) {
        let ids: Vec<&str> = held.iter().map(|(h, _)| h.as_str()).collect();
        let commands = match self.store.in_progress_commands_for_hosts(&ids) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "reading commands started elsewhere");
                for (_, w) in &held {
                    w.nudge();
                }
                return;
            }
        };
        let by_host: HashMap<&str, &CommandRow> =
            commands.iter().map(|c| (c.host_id.as_str(), c)).collect();
        let mut deployments: HashMap<&str, Option<DeploymentRow>> = HashMap::new();
        for (h, w) in &held {
            let Some(c) = by_host.get(h.as_str()) else {
                w.nudge();
                continue;
            };
            let d = deployments
                .entry(c.deployment_id.as_str())
                .or_insert_with(|| self.store.deployment(&c.deployment_id).ok().flatten());
            match d {
                Some(d) => w.wake(agent_command(c, d), &self.hand_outs),
                None => w.nudge(),
            }
        }
    }

    /// Tells other coordinators; a failure is logged, not returned: what they hold is a
    /// hint (their polls look in the store when they end, their caches refill on a miss).
    pub(super) fn tell_replicas(&self, notice: Notice) {
        if let Err(e) = self.store.publish(&notice) {
            tracing::warn!(error = %error_chain(&e), "telling other replicas");
        }
    }

    /// A host row just written by an operator or a registration: this coordinator's
    /// credentials cache takes it, the others drop theirs.
    pub(super) fn host_written(&self, host: &HostRow) {
        locked(&self.credentials).insert(host.id.clone(), Arc::new(host.clone()));
        self.tell_replicas(Notice::HostsChanged(vec![host.id.clone()]));
    }
}
