//! The SQL of event reports: each recorded once per (command, seq), a batch with the
//! commands it updated in one transaction. Not here: checking or applying a report.

use rusqlite::{params, OptionalExtension};

use super::rows::{db, i, u, write_command, Write};
use super::SqliteStore;
use crate::store::{CommandRow, HostSyncRow, ReportRow, Result};

pub(super) fn report(s: &SqliteStore, command_id: &str, seq: u64) -> Result<Option<ReportRow>> {
    s.query_one(
        "reading a report",
        "SELECT command_id, seq, at_ms, received_ms, body_json FROM reports \
         WHERE command_id = ?1 AND seq = ?2",
        params![command_id, i(seq)],
        |r| {
            Ok(ReportRow {
                command_id: r.text(0),
                seq: u(r.int(1)),
                at_ms: u(r.int(2)),
                received_ms: u(r.int(3)),
                body_json: r.text(4),
            })
        },
    )
}

/// One cached statement per key: in process, a query costs no round trip.
pub(super) fn reports_among(s: &SqliteStore, keys: &[(&str, u64)]) -> Result<Vec<ReportRow>> {
    let mut out = Vec::new();
    for (command_id, seq) in keys {
        out.extend(report(s, command_id, *seq)?);
    }
    Ok(out)
}

pub(super) fn report_exists(s: &SqliteStore, command_id: &str, seq: u64) -> Result<bool> {
    Ok(s.conn()
        .query_row(
            "SELECT 1 FROM reports WHERE command_id = ?1 AND seq = ?2",
            params![command_id, i(seq)],
            |_| Ok(()),
        )
        .optional()
        .map_err(db("reading a report"))?
        .is_some())
}

pub(super) fn insert_reports_with(
    s: &SqliteStore,
    reports: &[(ReportRow, CommandRow)],
    syncs: &[HostSyncRow],
) -> Result<Vec<bool>> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(db("starting a transaction"))?;
    let mut recorded = Vec::with_capacity(reports.len());
    for (r, command) in reports {
        let inserted = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO reports (command_id, seq, at_ms, received_ms, body_json) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    r.command_id,
                    i(r.seq),
                    i(r.at_ms),
                    i(r.received_ms),
                    r.body_json
                ])
            })
            .map_err(db("inserting a report"))?;
        if inserted > 0 {
            write_command(&tx, command, Write::Update).map_err(db("writing a command"))?;
        }
        recorded.push(inserted > 0);
    }
    super::webhooks::write_syncs_captured(&tx, syncs)?;
    tx.commit().map_err(db("committing reports"))?;
    Ok(recorded)
}

pub(super) fn reports(s: &SqliteStore, command_id: &str) -> Result<Vec<ReportRow>> {
    s.query(
        "listing reports",
        "SELECT command_id, seq, at_ms, received_ms, body_json FROM reports \
         WHERE command_id = ?1 ORDER BY seq",
        [command_id],
        |r| {
            Ok(ReportRow {
                command_id: r.text(0),
                seq: u(r.int(1)),
                at_ms: u(r.int(2)),
                received_ms: u(r.int(3)),
                body_json: r.text(4),
            })
        },
    )
}
