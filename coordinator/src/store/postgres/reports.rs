//! The SQL of event reports: each recorded once per (command, seq), a batch with the
//! commands it updated in one transaction. Two replicas recording the same (command, seq)
//! at once record it once: the primary key decides, and the loser's insert does nothing.
//! Not here: checking or applying a report.

use std::collections::HashSet;

use super::rows::{i, pg, write_commands, Write};
use super::PgStore;
use crate::store::rows::{report_row, REPORT_COLS};
use crate::store::{CommandRow, HostSyncRow, ReportRow, Result};

pub(super) fn report(s: &PgStore, command_id: &str, seq: u64) -> Result<Option<ReportRow>> {
    s.query_one(
        "reading a report",
        &format!("SELECT {REPORT_COLS} FROM reports WHERE command_id = $1 AND seq = $2"),
        &[&command_id, &i(seq)],
        report_row,
    )
}

pub(super) fn reports_among(s: &PgStore, keys: &[(&str, u64)]) -> Result<Vec<ReportRow>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = keys.iter().map(|(c, _)| *c).collect();
    let seqs: Vec<i64> = keys.iter().map(|(_, seq)| i(*seq)).collect();
    s.query(
        "reading reports",
        &format!(
            "SELECT {REPORT_COLS} FROM reports WHERE (command_id, seq) IN \
             (SELECT * FROM unnest($1::text[], $2::bigint[]))"
        ),
        &[&ids, &seqs],
        report_row,
    )
}

pub(super) fn report_exists(s: &PgStore, command_id: &str, seq: u64) -> Result<bool> {
    Ok(s.query_one(
        "reading a report",
        "SELECT 1::bigint FROM reports WHERE command_id = $1 AND seq = $2",
        &[&command_id, &i(seq)],
        |_| Ok(()),
    )?
    .is_some())
}

pub(super) fn insert_reports_with(
    s: &PgStore,
    reports: &[(ReportRow, CommandRow)],
    syncs: &[HostSyncRow],
) -> Result<Vec<bool>> {
    s.run(async {
        let mut client = s.client("recording reports").await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("starting a transaction"))?;
        // One statement for the batch; the keys it returns are the reports recorded now.
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO reports ({REPORT_COLS}) SELECT * FROM UNNEST($1::text[], \
                 $2::bigint[], $3::bigint[], $4::bigint[], $5::text[]) \
                 ON CONFLICT (command_id, seq) DO NOTHING RETURNING command_id, seq"
            ))
            .await
            .map_err(pg("inserting reports"))?;
        let ids: Vec<&str> = reports.iter().map(|(r, _)| r.command_id.as_str()).collect();
        let seqs: Vec<i64> = reports.iter().map(|(r, _)| i(r.seq)).collect();
        let at: Vec<i64> = reports.iter().map(|(r, _)| i(r.at_ms)).collect();
        let received: Vec<i64> = reports.iter().map(|(r, _)| i(r.received_ms)).collect();
        let bodies: Vec<&str> = reports.iter().map(|(r, _)| r.body_json.as_str()).collect();
        let rows = tx
            .query(&stmt, &[&ids, &seqs, &at, &received, &bodies])
            .await
            .map_err(pg("inserting reports"))?;
        let mut new_keys = HashSet::with_capacity(rows.len());
        for row in &rows {
            let key: (String, i64) = (
                row.try_get(0).map_err(pg("inserting reports"))?,
                row.try_get(1).map_err(pg("inserting reports"))?,
            );
            new_keys.insert(key);
        }
        // A key sent twice in the batch is recorded once: by its first row.
        let recorded: Vec<bool> = reports
            .iter()
            .map(|(r, _)| new_keys.remove(&(r.command_id.clone(), i(r.seq))))
            .collect();
        let updated: Vec<CommandRow> = reports
            .iter()
            .zip(&recorded)
            .filter(|(_, new)| **new)
            .map(|((_, c), _)| c.clone())
            .collect();
        // A command's last report of the batch leaves it as the batch left it.
        write_commands(&tx, &updated, Write::Update)
            .await
            .map_err(pg("writing a command"))?;
        super::webhooks::write_syncs_captured(&tx, syncs).await?;
        tx.commit().await.map_err(pg("committing reports"))?;
        Ok(recorded)
    })
}

pub(super) fn reports(s: &PgStore, command_id: &str) -> Result<Vec<ReportRow>> {
    s.query(
        "listing reports",
        &format!("SELECT {REPORT_COLS} FROM reports WHERE command_id = $1 ORDER BY seq"),
        &[&command_id],
        report_row,
    )
}
