//! The store lock as a value: a [`Locked`] exists only while the lock is held, and the
//! functions that read, decide and write deployments and commands take one as a
//! parameter, so calling them without the lock does not compile. Its fields are private to
//! this module: nothing else can make one out of some other guard.
//!
//! The lock is two: this process's mutex, then the store's decision lock
//! ([`Store::lock_decisions`]: an advisory lock on PostgreSQL, so two replicas on one
//! database never interleave a read-decide-write; nothing more on SQLite, which one process
//! opens). Taken in that order, released in the other.
//!
//! Deliberately not here: what the lock protects (the store's deployments and commands,
//! see `Service`) or the smaller mutexes of in-memory state, which are never held across
//! a store call.

use std::sync::{Mutex, MutexGuard};

use crate::store::{DecisionLock, Result, Store};

/// Proof that the caller holds the store lock; dropping it releases the lock.
pub(super) struct Locked<'a> {
    // Dropped first: the database lock goes before this process's.
    _db: Box<dyn DecisionLock + 'a>,
    _guard: MutexGuard<'a, ()>,
}

impl<'a> Locked<'a> {
    /// Waits for this process's lock, then for the store's decision lock.
    pub(super) fn take(lock: &'a Mutex<()>, store: &'a dyn Store) -> Result<Locked<'a>> {
        // The guarded data is the store, whose transactions stay consistent after a panic.
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let db = store.lock_decisions()?;
        Ok(Locked {
            _db: db,
            _guard: guard,
        })
    }
}
