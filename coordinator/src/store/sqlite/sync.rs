//! The SQL of hosts' standing per deployment group (`host_sync`): read one, some, all,
//! write some. The rows also travel with the command ends that change them (`deployments`,
//! `reports`). Not here: what a row means or when it changes (the service's `sync`).

use super::rows::{db, sync_row, SYNC_COLS};
use super::SqliteStore;
use crate::store::{HostSyncRow, Result};

pub(super) fn host_sync(
    s: &SqliteStore,
    host_id: &str,
    group_id: &str,
) -> Result<Option<HostSyncRow>> {
    s.query_one(
        "reading a host's sync row",
        &format!("SELECT {SYNC_COLS} FROM host_sync WHERE host_id = ?1 AND group_id = ?2"),
        [host_id, group_id],
        sync_row,
    )
}

pub(super) fn host_syncs(s: &SqliteStore) -> Result<Vec<HostSyncRow>> {
    s.query(
        "listing hosts' sync rows",
        &format!("SELECT {SYNC_COLS} FROM host_sync"),
        [],
        sync_row,
    )
}

pub(super) fn host_syncs_of(s: &SqliteStore, host_id: &str) -> Result<Vec<HostSyncRow>> {
    s.query(
        "listing a host's sync rows",
        &format!("SELECT {SYNC_COLS} FROM host_sync WHERE host_id = ?1"),
        [host_id],
        sync_row,
    )
}

/// One cached statement per key: in process, a query costs no round trip.
pub(super) fn host_syncs_among(s: &SqliteStore, keys: &[(&str, &str)]) -> Result<Vec<HostSyncRow>> {
    let mut out = Vec::with_capacity(keys.len());
    for (host, group) in keys {
        out.extend(host_sync(s, host, group)?);
    }
    Ok(out)
}

pub(super) fn save_host_syncs(s: &SqliteStore, rows: &[HostSyncRow]) -> Result<()> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(db("starting a transaction"))?;
    super::webhooks::write_syncs_captured(&tx, rows)?;
    tx.commit().map_err(db("committing hosts' sync rows"))
}
