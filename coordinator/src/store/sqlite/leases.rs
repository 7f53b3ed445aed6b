//! The SQL of command leases: batched upserts merged with the stored lease, the leases of
//! commands in progress, and forgetting those of ended commands. Not here: when a lease
//! has run out (the service's `leases`).

use rusqlite::params;

use super::rows::{db, i, u};
use super::SqliteStore;
use crate::store::{CommandLease, Result};

pub(super) fn write_leases(s: &SqliteStore, leases: &[(String, CommandLease)]) -> Result<()> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(db("starting a transaction"))?;
    for (id, l) in leases {
        tx.prepare_cached(
            "INSERT INTO command_leases (command_id, delivered_ms, beat_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (command_id) DO UPDATE SET \
             delivered_ms = min(delivered_ms, excluded.delivered_ms), \
             beat_ms = max(beat_ms, excluded.beat_ms)",
        )
        .and_then(|mut stmt| stmt.execute(params![id, i(l.delivered_ms), i(l.beat_ms)]))
        .map_err(db("writing a command lease"))?;
    }
    tx.commit().map_err(db("committing command leases"))
}

pub(super) fn command_leases(s: &SqliteStore) -> Result<Vec<(String, CommandLease)>> {
    s.query(
        "listing command leases",
        "SELECT l.command_id, l.delivered_ms, l.beat_ms FROM command_leases l \
         JOIN commands c ON c.id = l.command_id WHERE c.state = 'in_progress'",
        [],
        |r| {
            Ok((
                r.text(0),
                CommandLease {
                    delivered_ms: u(r.int(1)),
                    beat_ms: u(r.int(2)),
                },
            ))
        },
    )
}

pub(super) fn drop_ended_leases(s: &SqliteStore) -> Result<usize> {
    s.conn()
        .execute(
            "DELETE FROM command_leases WHERE command_id NOT IN \
             (SELECT id FROM commands WHERE state = 'in_progress')",
            [],
        )
        .map_err(db("forgetting ended commands' leases"))
}
