//! The decision lock across replicas: a session-level advisory lock taken on a pooled
//! connection of its own and held for the guard's life, so every other coordinator's
//! read-decide-write waits until this one's writes have committed. Dropping the guard
//! unlocks; when the unlock cannot be confirmed the connection is closed instead of
//! returned to the pool (closing it releases the lock), so a lock is never left behind on
//! a pooled connection.
//!
//! Not here: what the lock protects (the service's decisions), or the migrations' lock
//! (`schema`, transaction-scoped).

use deadpool_postgres::Object;

use super::rows::pg;
use super::PgStore;
use crate::store::{DecisionLock, Result};

/// The advisory lock key of decisions ("hoist" and 2); the migrations use `..01`.
pub(super) const DECISION_LOCK: i64 = 0x686f_6973_7400_0002;

pub(super) struct Advisory<'a> {
    store: &'a PgStore,
    client: Option<Object>,
}

impl DecisionLock for Advisory<'_> {}

pub(super) fn take(store: &PgStore) -> Result<Advisory<'_>> {
    let client = store.run(async {
        let client = store.client("taking the decision lock").await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&DECISION_LOCK])
            .await
            .map_err(pg("taking the decision lock"))?;
        Ok(client)
    })?;
    Ok(Advisory {
        store,
        client: Some(client),
    })
}

impl Drop for Advisory<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let unlocked = self.store.rt.block_on(async {
            client
                .query_one("SELECT pg_advisory_unlock($1)", &[&DECISION_LOCK])
                .await
                .and_then(|row| row.try_get::<_, bool>(0))
        });
        match unlocked {
            Ok(true) => {}
            Ok(false) => {
                // The session lost it (its connection was reset): it was released then.
                tracing::error!("the decision lock was no longer held when released");
            }
            Err(e) => {
                tracing::error!(error = %e, "releasing the decision lock; closing its connection");
                drop(Object::take(client));
            }
        }
    }
}
