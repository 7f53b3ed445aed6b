//! What other coordinators on the same database tell this one, and what this one tells
//! them ([`Notice`]s through the store): commands started for hosts whose polls are held
//! here wake those polls, which then look in the store; hosts changed elsewhere (revoked,
//! retagged) leave the credentials cache, so the next request reads them again. With one
//! coordinator (SQLite) nothing is sent or received.
//!
//! Not here: the transport (the store's `publish` and `listen`), or a cache of anything
//! else: what a notice cannot fix is read from the store.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{error_chain, locked, Result, Service};
use crate::store::{HostRow, Notice};

impl Service {
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

    fn on_notice(&self, notice: Notice) {
        match notice {
            Notice::CommandsStarted(hosts) => {
                let wakers = locked(&self.wakers);
                for h in &hosts {
                    if let Some(w) = wakers.get(h) {
                        w.nudge();
                    }
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
            Notice::Resync => {
                {
                    let mut credentials = locked(&self.credentials);
                    self.credentials_epoch.fetch_add(1, Ordering::SeqCst);
                    credentials.clear();
                }
                for w in locked(&self.wakers).values() {
                    w.nudge();
                }
                tracing::info!(
                    "back in touch with other replicas: caches dropped, polls look again"
                );
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
        locked(&self.credentials).insert(host.id.clone(), host.clone());
        self.tell_replicas(Notice::HostsChanged(vec![host.id.clone()]));
    }
}
