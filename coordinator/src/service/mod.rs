//! The coordinator's service layer: its rules applied to its store. This file holds the
//! [`Service`] value (construction, timing rules, the store lock, the change counter); the
//! rules live in the child modules: [`catalog`] (applications, groups, revisions),
//! [`hosts`] (registration tokens, registration, polls, tags, revocation), [`operators`] (operator tokens with a role), [`sessions`] (dashboard sign-ins), [`figures`] (the fleet's
//! counts for metrics), [`auth`] (host secrets and registration tokens checked), [`reports`] (the
//! report queue and its group commit), [`deployments`] (create, advance, stop,
//! auto-rollback), [`leases`] (heartbeats and the lease sweep), [`bake`] (the wait between
//! batches), [`sync`] (where each host stands in its groups), [`catch_up`] (deployments
//! that bring hosts to their group's target), [`replicas`] (notices to and from other
//! coordinators on the same database), [`wakers`] (where held polls wait, and the hand-outs
//! that go before reports), [`states`] (the one transition function of a
//! command and the one of a deployment) and [`pipelines`] (pipelines, their sources
//! and releases).
//!
//! Every method is blocking (store calls); the API runs them on `spawn_blocking`. Every
//! read-modify-write sequence holds the store lock, whose guard ([`lock::Locked`]) the
//! functions that need it take as a parameter, so two reports, a stop and the lease sweep
//! never interleave; wake-ups ([`Service::host_waker`]) and the change counter
//! ([`Service::subscribe`]) fire after the store has committed.
//!
//! Deliberately not here: HTTP (the `api` module), the rollout arithmetic (`rollout`), SQL
//! (`store`). With PostgreSQL and several coordinators, the lock is also the database's
//! (an advisory lock), so decisions are serialised across replicas.

mod auth;
mod bake;
mod catalog;
mod catch_up;
mod deployments;
mod figures;
mod hosts;
mod leases;
mod lock;
mod operators;
pub mod pipelines;
mod previous;
mod replicas;
mod reports;
mod sessions;
mod signatures;
mod states;
mod sync;
mod wakers;
pub mod webhooks;

pub use auth::{constant_time_eq, new_secret, sha256_hex};
pub use figures::Figures;
pub use operators::Identity;
pub use replicas::{live_replicas, REPLICA_BEAT, REPLICA_LIVE};
pub use sessions::{csrf_token, SESSION_LIFETIME};
pub use sync::retry_delay;
pub use wakers::HostWaker;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::bundles::BundleStore;
use crate::store::{CommandLease, HostContact, HostRow, Store, StoreError};
use catch_up::CatchUpQueue;
use lock::Locked;
use reports::ReportQueue;
use wakers::{HandOuts, HAND_OUT_FIRST};

/// Timing rules of the service.
#[derive(Debug, Clone, Copy)]
pub struct ServiceConfig {
    /// A command with neither a report nor a heartbeat naming it for this long has failed
    /// ("host lost", or "no report" when the host still polls); also how recently a host
    /// must have polled to be a target.
    pub host_lease: Duration,
    /// A host seen within this window is online.
    pub online_window: Duration,
}

impl ServiceConfig {
    /// How often an agent running a command says it is alive: a quarter of the lease, so
    /// three heartbeats may be lost before the host counts as lost; at most a minute.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.host_lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(60))
    }

    /// The delay before a failed catch-up's first retry (doubled for each next one): the
    /// heartbeat interval, so a short test lease retries quickly and the default waits a
    /// minute, then two, then four.
    pub fn catch_up_retry_base(&self) -> Duration {
        self.heartbeat_interval()
    }

    /// Longest a poll is held: well inside the lease, so a host that keeps polling is
    /// always seen recently enough to be a deployment target.
    pub fn poll_wait_cap(&self) -> Duration {
        (self.host_lease / 2).max(Duration::from_secs(1))
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            host_lease: Duration::from_secs(600),
            online_window: Duration::from_secs(90),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Input with several problems, each listed (a pipeline file).
    #[error("{what} has {} problem(s): {}", problems.len(), problems.join("; "))]
    Problems { what: String, problems: Vec<String> },
    /// A failure shared by several requests (a batch that could not be written).
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

pub struct Service {
    store: Arc<dyn Store>,
    bundles: BundleStore,
    config: ServiceConfig,
    /// Held across every read-modify-write of deployments and commands; taken only by
    /// [`Service::lock`], whose [`Locked`] guard the functions that need it take.
    lock: Mutex<()>,
    /// One waker per host with a poll in flight or recently seen; woken, with the
    /// command, when a command starts for that host. Bounded by the fleet size.
    wakers: Mutex<HashMap<String, Arc<HostWaker>>>,
    /// Commands handed to held polls and not yet taken: the report writer lets them go
    /// out first.
    hand_outs: Arc<HandOuts>,
    /// Bumped after every change an operator may watch (`--wait`).
    changes: watch::Sender<u64>,
    /// Hosts' last contacts not yet written: written by the server's timer
    /// ([`Service::flush_contacts`]), and before anything reads hosts.
    contacts: Mutex<HashMap<String, HostContact>>,
    /// Event reports waiting to be written together (group commit).
    queued_reports: Mutex<ReportQueue>,
    /// Hosts due a catch-up, waiting to be started together.
    catch_ups: Mutex<CatchUpQueue>,
    /// Hosts by id as last read, to authenticate agent requests without reading the
    /// store each time. Holds only hosts that exist; a revocation updates its entry.
    credentials: Mutex<HashMap<String, Arc<HostRow>>>,
    /// Bumped (under the credentials lock) whenever entries are dropped on another
    /// coordinator's word, so a read of the store that raced with it is not cached.
    credentials_epoch: AtomicU64,
    /// This coordinator's row among the replicas, once written at start.
    replica: Mutex<Option<crate::store::ReplicaRow>>,
    /// Hand-outs and heartbeats of commands not yet written to the store's leases (written
    /// with the contacts). Once a command is with its host, only its reports and its
    /// heartbeats renew its lease, never the host's polls (a host that polls but cannot
    /// work would otherwise keep it in progress forever).
    leases: Mutex<HashMap<String, CommandLease>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each guarded value is whole between statements; a panic cannot leave it half-changed.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// An error with its causes, `outer: inner: ...`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Service {
    pub fn new(store: Arc<dyn Store>, bundles: BundleStore, config: ServiceConfig) -> Service {
        Service {
            store,
            bundles,
            config,
            lock: Mutex::new(()),
            wakers: Mutex::new(HashMap::new()),
            hand_outs: Arc::new(HandOuts::default()),
            changes: watch::Sender::new(0),
            contacts: Mutex::new(HashMap::new()),
            queued_reports: Mutex::new(ReportQueue::default()),
            catch_ups: Mutex::new(CatchUpQueue::default()),
            credentials: Mutex::new(HashMap::new()),
            credentials_epoch: AtomicU64::new(0),
            replica: Mutex::new(None),
            leases: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> ServiceConfig {
        self.config
    }

    pub fn bundles(&self) -> &BundleStore {
        &self.bundles
    }

    /// Takes the store lock for one read-modify-write sequence (across replicas too: it
    /// fails when the database cannot be reached).
    fn lock(&self) -> Result<Locked<'_>> {
        Ok(Locked::take(&self.lock, &*self.store)?)
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
        // Operators may watch through another coordinator on the same database.
        self.tell_replicas(crate::store::Notice::Changed);
    }

    /// A receiver of the change counter, bumped after every deployment or command change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn change_seq(&self) -> u64 {
        *self.changes.borrow()
    }

    /// The waker the polls of `host_id` wait on.
    pub fn host_waker(&self, host_id: &str) -> Arc<HostWaker> {
        let mut wakers = locked(&self.wakers);
        wakers.entry(host_id.to_owned()).or_default().clone()
    }

    fn online(&self, host: &HostRow, now: u64) -> bool {
        now.saturating_sub(host.last_seen_ms) <= self.config.online_window.as_millis() as u64
    }

    fn within_lease(&self, last: u64, now: u64) -> bool {
        now.saturating_sub(last) <= self.config.host_lease.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_and_polls_fit_inside_the_lease() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        // (lease, heartbeat interval, longest poll)
        for (lease, beat, poll) in [
            (s(600), s(60), s(300)),
            (s(120), s(30), s(60)),
            (s(2), ms(500), s(1)),
            (s(1), ms(250), s(1)),
            (ms(200), ms(250), s(1)),
        ] {
            let c = ServiceConfig {
                host_lease: lease,
                ..ServiceConfig::default()
            };
            assert_eq!(c.heartbeat_interval(), beat, "{lease:?}");
            assert_eq!(c.poll_wait_cap(), poll, "{lease:?}");
        }
    }
}
