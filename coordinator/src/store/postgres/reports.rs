//! The SQL of event reports: each recorded once per (command, seq), a batch with the
//! commands it updated in one transaction. Two replicas recording the same (command, seq)
//! at once record it once: the primary key decides, and the loser's insert does nothing.
//! Not here: checking or applying a report.

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
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO reports ({REPORT_COLS}) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (command_id, seq) DO NOTHING"
            ))
            .await
            .map_err(pg("inserting a report"))?;
        let inserts = reports.iter().map(|(r, _)| {
            let (stmt, tx) = (&stmt, &tx);
            async move {
                tx.execute(
                    stmt,
                    &[
                        &r.command_id,
                        &i(r.seq),
                        &i(r.at_ms),
                        &i(r.received_ms),
                        &r.body_json,
                    ],
                )
                .await
            }
        });
        let inserted = futures_util::future::try_join_all(inserts)
            .await
            .map_err(pg("inserting a report"))?;
        let recorded: Vec<bool> = inserted.iter().map(|n| *n > 0).collect();
        let updated: Vec<CommandRow> = reports
            .iter()
            .zip(&recorded)
            .filter(|(_, new)| **new)
            .map(|((_, c), _)| c.clone())
            .collect();
        // In batch order (pipelined statements run in the order sent): a command's last
        // report of the batch leaves it as the batch left it.
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
