//! The store lock as a value: a [`Locked`] exists only while the lock is held, and the
//! functions that read, decide and write deployments and commands take one as a
//! parameter, so calling them without the lock does not compile. Its field is private to
//! this module: nothing else can make one out of some other guard.
//!
//! Deliberately not here: what the lock protects (the store's deployments and commands,
//! see `Service`) or the smaller mutexes of in-memory state, which are never held across
//! a store call.

use std::sync::{Mutex, MutexGuard};

/// Proof that the caller holds the store lock; dropping it releases the lock.
pub(super) struct Locked<'a> {
    _guard: MutexGuard<'a, ()>,
}

impl Locked<'_> {
    /// Waits for the store lock.
    pub(super) fn take(lock: &Mutex<()>) -> Locked<'_> {
        // The guarded data is the store, whose transactions stay consistent after a panic.
        Locked {
            _guard: lock.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}
