//! The SQL of command leases: batched upserts merged with the stored lease (so two
//! replicas noting the same command keep the earliest hand-out and the latest heartbeat),
//! the leases of commands in progress, and forgetting those of ended commands. Not here:
//! when a lease has run out (the service's `leases`).

use std::collections::BTreeMap;

use super::rows::{i, pg};
use super::PgStore;
use crate::store::rows::u;
use crate::store::{CommandLease, Result};

pub(super) fn write_leases(s: &PgStore, leases: &[(String, CommandLease)]) -> Result<()> {
    if leases.is_empty() {
        return Ok(());
    }
    s.run(async {
        let mut client = s.client("writing command leases").await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("starting a transaction"))?;
        // One statement over column arrays (`UNNEST`): a wave hands out a fleet's worth of
        // commands in a second. Inserted in command order, so two replicas writing the same
        // leases never deadlock.
        let stmt = tx
            .prepare_cached(
                "INSERT INTO command_leases (command_id, delivered_ms, beat_ms) \
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) ORDER BY 1 \
                 ON CONFLICT (command_id) DO UPDATE SET \
                 delivered_ms = LEAST(command_leases.delivered_ms, EXCLUDED.delivered_ms), \
                 beat_ms = GREATEST(command_leases.beat_ms, EXCLUDED.beat_ms)",
            )
            .await
            .map_err(pg("writing command leases"))?;
        // Each command once (one statement may not write a row twice), its notes merged as
        // the statement merges them with the stored lease; in command order.
        let mut merged: BTreeMap<&str, CommandLease> = BTreeMap::new();
        for (id, l) in leases {
            merged
                .entry(id.as_str())
                .and_modify(|m| m.merge(*l))
                .or_insert(*l);
        }
        let ids: Vec<&str> = merged.keys().copied().collect();
        let delivered: Vec<i64> = merged.values().map(|l| i(l.delivered_ms)).collect();
        let beat: Vec<i64> = merged.values().map(|l| i(l.beat_ms)).collect();
        tx.execute(&stmt, &[&ids, &delivered, &beat])
            .await
            .map_err(pg("writing command leases"))?;
        tx.commit().await.map_err(pg("committing command leases"))
    })
}

pub(super) fn command_leases(s: &PgStore) -> Result<Vec<(String, CommandLease)>> {
    s.query(
        "listing command leases",
        "SELECT l.command_id, l.delivered_ms, l.beat_ms FROM command_leases l \
         JOIN commands c ON c.id = l.command_id WHERE c.state = 'in_progress'",
        &[],
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

pub(super) fn drop_ended_leases(s: &PgStore) -> Result<usize> {
    let n = s.execute(
        "forgetting ended commands' leases",
        "DELETE FROM command_leases l WHERE NOT EXISTS \
         (SELECT 1 FROM commands c WHERE c.id = l.command_id AND c.state = 'in_progress')",
        &[],
    )?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}
