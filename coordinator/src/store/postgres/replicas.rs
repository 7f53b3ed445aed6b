//! The SQL of the replicas table: a coordinator's row written at start and at each
//! heartbeat, the live ones listed, a stopped one forgotten. Not here: how often it beats or
//! what counts as live (the service's `replicas`).

use super::rows::i;
use super::PgStore;
use crate::store::rows::{replica_row, REPLICA_COLS};
use crate::store::{ReplicaRow, Result};

pub(super) fn write_replica(s: &PgStore, r: &ReplicaRow) -> Result<()> {
    s.execute(
        "writing a replica",
        &format!(
            "INSERT INTO replicas ({REPLICA_COLS}) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, \
             listen = EXCLUDED.listen, started_ms = EXCLUDED.started_ms, \
             beat_ms = EXCLUDED.beat_ms"
        ),
        &[
            &r.id,
            &r.host,
            &i64::from(r.pid),
            &r.listen,
            &i(r.started_ms),
            &i(r.beat_ms),
        ],
    )?;
    Ok(())
}

pub(super) fn replicas(s: &PgStore, live_since_ms: u64) -> Result<Vec<ReplicaRow>> {
    s.query(
        "listing replicas",
        &format!("SELECT {REPLICA_COLS} FROM replicas WHERE beat_ms >= $1 ORDER BY started_ms, id"),
        &[&i(live_since_ms)],
        replica_row,
    )
}

pub(super) fn remove_replica(s: &PgStore, id: &str, stale_before_ms: u64) -> Result<()> {
    s.execute(
        "removing a replica",
        "DELETE FROM replicas WHERE id = $1 OR beat_ms < $2",
        &[&id, &i(stale_before_ms)],
    )?;
    Ok(())
}
