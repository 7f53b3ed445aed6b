//! The SQL of hosts' standing per deployment group (`host_sync`): read one, some, all,
//! write some. The rows also travel with the command ends that change them (`deployments`,
//! `reports`). Not here: what a row means or when it changes (the service's `sync`).

use super::rows::{pg, sync_row, SYNC_COLS};
use super::PgStore;
use crate::store::{HostSyncRow, Result};

pub(super) fn host_sync(s: &PgStore, host_id: &str, group_id: &str) -> Result<Option<HostSyncRow>> {
    s.query_one(
        "reading a host's sync row",
        &format!("SELECT {SYNC_COLS} FROM host_sync WHERE host_id = $1 AND group_id = $2"),
        &[&host_id, &group_id],
        sync_row,
    )
}

pub(super) fn host_syncs(s: &PgStore) -> Result<Vec<HostSyncRow>> {
    s.query(
        "listing hosts' sync rows",
        &format!("SELECT {SYNC_COLS} FROM host_sync"),
        &[],
        sync_row,
    )
}

pub(super) fn host_syncs_of(s: &PgStore, host_id: &str) -> Result<Vec<HostSyncRow>> {
    s.query(
        "listing a host's sync rows",
        &format!("SELECT {SYNC_COLS} FROM host_sync WHERE host_id = $1"),
        &[&host_id],
        sync_row,
    )
}

pub(super) fn host_syncs_among(s: &PgStore, keys: &[(&str, &str)]) -> Result<Vec<HostSyncRow>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let hosts: Vec<&str> = keys.iter().map(|(h, _)| *h).collect();
    let groups: Vec<&str> = keys.iter().map(|(_, g)| *g).collect();
    s.query(
        "reading hosts' sync rows",
        &format!(
            "SELECT {SYNC_COLS} FROM host_sync WHERE (host_id, group_id) IN \
             (SELECT * FROM unnest($1::text[], $2::text[]))"
        ),
        &[&hosts, &groups],
        sync_row,
    )
}

pub(super) fn save_host_syncs(s: &PgStore, rows: &[HostSyncRow]) -> Result<()> {
    s.run(async {
        let mut client = s.client("writing hosts' sync rows").await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("starting a transaction"))?;
        super::webhooks::write_syncs_captured(&tx, rows).await?;
        tx.commit().await.map_err(pg("committing hosts' sync rows"))
    })
}
