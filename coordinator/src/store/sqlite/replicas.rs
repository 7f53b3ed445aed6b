//! The SQL of the replicas table: a coordinator's row written at start and at each
//! heartbeat, the live ones listed, a stopped one forgotten. Not here: how often it beats or
//! what counts as live (the service's `replicas`).

use rusqlite::params;

use super::rows::{db, i};
use super::SqliteStore;
use crate::store::rows::{replica_row, REPLICA_COLS};
use crate::store::{ReplicaRow, Result};

pub(super) fn write_replica(s: &SqliteStore, r: &ReplicaRow) -> Result<()> {
    s.conn()
        .execute(
            &format!(
                "INSERT OR REPLACE INTO replicas ({REPLICA_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ),
            params![r.id, r.host, r.pid, r.listen, i(r.started_ms), i(r.beat_ms)],
        )
        .map_err(db("writing a replica"))?;
    Ok(())
}

pub(super) fn replicas(s: &SqliteStore, live_since_ms: u64) -> Result<Vec<ReplicaRow>> {
    s.query(
        "listing replicas",
        &format!("SELECT {REPLICA_COLS} FROM replicas WHERE beat_ms >= ?1 ORDER BY started_ms, id"),
        [i(live_since_ms)],
        replica_row,
    )
}

pub(super) fn remove_replica(s: &SqliteStore, id: &str, stale_before_ms: u64) -> Result<()> {
    s.conn()
        .execute(
            "DELETE FROM replicas WHERE id = ?1 OR beat_ms < ?2",
            params![id, i(stale_before_ms)],
        )
        .map_err(db("removing a replica"))?;
    Ok(())
}
