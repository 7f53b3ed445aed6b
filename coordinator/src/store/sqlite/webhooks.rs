//! The SQL of webhooks and their outbox on SQLite: webhooks, the change capture the other
//! files' transactions call (a deployment, a release, sync rows written with their events),
//! claiming due deliveries in order per subject, ending a try, pruning. One process opens
//! the database, so a claim is a transaction of this connection. Not here: what an event
//! says (`store::webhooks`) or sending (`crate::webhooks`).

use rusqlite::{params, Connection, OptionalExtension};

use super::rows::{db, i, read, sync_row, write_deployment, write_sync, Write, SYNC_COLS};
use super::SqliteStore;
use crate::store::rows::Raw;
use crate::store::webhooks::{
    choose, claimed_row, delivery_row, deployment_event, event_at, events_str, host_event,
    prefixed, release_event, webhook_row, written_now as now_ms, Claimed, DeliveryOutcome,
    DeliveryRow, EventRow, HostPlace, WebhookRow, CANDIDATES_SQLITE, CLAIM_SCAN, DELIVERY_COLS,
    EVENT_COLS, WEBHOOK_COLS,
};
use crate::store::{DeploymentRow, HostSyncRow, ReleaseRow, Result};

/// Whether any webhook exists: without one, writes capture nothing and read nothing more.
fn watched(conn: &Connection) -> Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM webhooks)")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, bool>(0)))
        .map_err(db("looking for webhooks"))
}

fn stored_state(conn: &Connection, sql: &str, id: &str) -> Result<Option<String>> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.query_row([id], |r| r.get::<_, String>(0)).optional())
        .map_err(db("reading a stored state"))
}

/// Inserts `ev` with one delivery per webhook of its application subscribed to its kind;
/// nothing when there is none.
fn enqueue(conn: &Connection, ev: &EventRow) -> Result<()> {
    let n = conn
        .prepare_cached(
            "INSERT INTO webhook_deliveries (webhook_id, event_id, subject, status, attempts, \
             next_attempt_ms, lease_until_ms, created_ms) \
             SELECT id, ?1, ?2, 'pending', 0, ?3, 0, ?3 FROM webhooks \
             WHERE application = ?4 AND instr(',' || events || ',', ',' || ?5 || ',') > 0 \
             ORDER BY created_ms, id",
        )
        .and_then(|mut s| {
            s.execute(params![
                ev.id,
                ev.subject,
                i(ev.at_ms),
                ev.application,
                ev.kind.as_str()
            ])
        })
        .map_err(db("queueing an event's deliveries"))?;
    if n == 0 {
        return Ok(());
    }
    conn.prepare_cached(&format!(
        "INSERT INTO webhook_events ({EVENT_COLS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            ev.id,
            ev.kind.as_str(),
            ev.subject,
            ev.application,
            ev.group,
            ev.deployment_id,
            ev.release_id,
            ev.host,
            ev.state,
            ev.summary,
            ev.page,
            i(ev.at_ms)
        ])
    })
    .map_err(db("queueing an event"))?;
    Ok(())
}

/// Writes a deployment and, when its state changed, its event.
pub(super) fn write_deployment_captured(
    conn: &Connection,
    d: &DeploymentRow,
    how: Write,
) -> Result<()> {
    let watched = watched(conn)?;
    let old = match (watched, how) {
        (true, Write::Update) => {
            stored_state(conn, "SELECT state FROM deployments WHERE id = ?1", &d.id)?
        }
        _ => None,
    };
    write_deployment(conn, d, how).map_err(db("writing a deployment"))?;
    if watched {
        if let Some(ev) = deployment_event(old.as_deref(), d, now_ms()) {
            enqueue(conn, &ev)?;
        }
    }
    Ok(())
}

/// Captures the event of writing release `r`: call before writing it (`insert`: it is new);
/// the returned event is queued by [`queue`] after the write.
pub(super) fn release_before(
    conn: &Connection,
    r: &ReleaseRow,
    insert: bool,
) -> Result<Option<EventRow>> {
    if !watched(conn)? {
        return Ok(None);
    }
    let old = if insert {
        None
    } else {
        stored_state(conn, "SELECT state FROM releases WHERE id = ?1", &r.id)?
    };
    Ok(release_event(old.as_deref(), r, now_ms()))
}

/// Queues an event captured before its write.
pub(super) fn queue(conn: &Connection, ev: Option<EventRow>) -> Result<()> {
    match ev {
        Some(ev) => enqueue(conn, &ev),
        None => Ok(()),
    }
}

/// Writes sync rows, replacing stored ones, and the events of those whose standing changed.
pub(super) fn write_syncs_captured(conn: &Connection, rows: &[HostSyncRow]) -> Result<()> {
    let watched = !rows.is_empty() && watched(conn)?;
    for h in rows {
        let old = if watched {
            conn.prepare_cached(&format!(
                "SELECT {SYNC_COLS} FROM host_sync WHERE host_id = ?1 AND group_id = ?2"
            ))
            .and_then(|mut s| s.query_row([&h.host_id, &h.group_id], read).optional())
            .map_err(db("reading a host's sync row"))?
            .map(sync_row)
            .transpose()?
        } else {
            None
        };
        write_sync(conn, h).map_err(db("writing a host's sync row"))?;
        if !watched {
            continue;
        }
        let place = conn
            .prepare_cached(
                "SELECT h.name, g.application, g.name FROM hosts h, deployment_groups g \
                 WHERE h.id = ?1 AND g.id = ?2",
            )
            .and_then(|mut s| {
                s.query_row([&h.host_id, &h.group_id], |r| {
                    Ok(HostPlace {
                        host: r.get(0)?,
                        application: r.get(1)?,
                        group: r.get(2)?,
                    })
                })
                .optional()
            })
            .map_err(db("reading a host's name and group"))?;
        if let Some(place) = place {
            if let Some(ev) = host_event(old.as_ref(), h, &place, now_ms()) {
                enqueue(conn, &ev)?;
            }
        }
    }
    Ok(())
}

pub(super) fn insert_webhook(s: &SqliteStore, w: &WebhookRow) -> Result<()> {
    s.conn()
        .execute(
            &format!("INSERT INTO webhooks ({WEBHOOK_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            params![
                w.id,
                w.application,
                w.url,
                events_str(&w.events),
                w.secret.expose(),
                i(w.created_ms)
            ],
        )
        .map_err(db("writing a webhook"))?;
    Ok(())
}

pub(super) fn webhooks(s: &SqliteStore) -> Result<Vec<WebhookRow>> {
    s.query(
        "listing webhooks",
        &format!("SELECT {WEBHOOK_COLS} FROM webhooks ORDER BY created_ms, id"),
        [],
        webhook_row,
    )
}

pub(super) fn webhook(s: &SqliteStore, id: &str) -> Result<Option<WebhookRow>> {
    s.query_one(
        "reading a webhook",
        &format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE id = ?1"),
        [id],
        webhook_row,
    )
}

pub(super) fn delete_webhook(s: &SqliteStore, id: &str) -> Result<bool> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(db("starting a transaction"))?;
    let n = tx
        .execute("DELETE FROM webhooks WHERE id = ?1", [id])
        .map_err(db("deleting a webhook"))?;
    tx.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?1", [id])
        .map_err(db("deleting a webhook's deliveries"))?;
    tx.execute(
        "DELETE FROM webhook_events WHERE NOT EXISTS \
         (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)",
        [],
    )
    .map_err(db("deleting events nobody is sent"))?;
    tx.commit().map_err(db("committing a webhook's deletion"))?;
    Ok(n > 0)
}

fn recent_row(r: Raw) -> Result<(DeliveryRow, EventRow)> {
    let event = event_at(&r, 12);
    Ok((delivery_row(r)?, event))
}

pub(super) fn recent_deliveries(
    s: &SqliteStore,
    webhook_id: &str,
    limit: u32,
) -> Result<Vec<(DeliveryRow, EventRow)>> {
    let d_cols = prefixed("d", DELIVERY_COLS);
    let e_cols = prefixed("e", EVENT_COLS);
    s.query(
        "listing a webhook's deliveries",
        &format!(
            "SELECT {d_cols}, {e_cols} FROM webhook_deliveries d \
             JOIN webhook_events e ON e.id = d.event_id \
             WHERE d.webhook_id = ?1 ORDER BY d.seq DESC LIMIT ?2"
        ),
        params![webhook_id, limit],
        recent_row,
    )
}

pub(super) fn claim_deliveries(
    s: &SqliteStore,
    now: u64,
    lease_until: u64,
    skip: &[String],
    per_webhook: usize,
) -> Result<Vec<Claimed>> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(db("starting a transaction"))?;
    let candidates = tx
        .prepare_cached(CANDIDATES_SQLITE)
        .and_then(|mut st| {
            st.query_map(params![i(now), CLAIM_SCAN], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db("finding due deliveries"))?;
    let seqs = choose(candidates, skip, per_webhook);
    let d_cols = prefixed("d", DELIVERY_COLS);
    let e_cols = prefixed("e", EVENT_COLS);
    let w_cols = prefixed("w", WEBHOOK_COLS);
    let mut out = Vec::with_capacity(seqs.len());
    for seq in seqs {
        tx.execute(
            "UPDATE webhook_deliveries SET lease_until_ms = ?2 WHERE seq = ?1",
            params![seq, i(lease_until)],
        )
        .map_err(db("claiming a delivery"))?;
        let raw = tx
            .prepare_cached(&format!(
                "SELECT {d_cols}, {e_cols}, {w_cols} FROM webhook_deliveries d \
                 JOIN webhook_events e ON e.id = d.event_id \
                 JOIN webhooks w ON w.id = d.webhook_id WHERE d.seq = ?1"
            ))
            .and_then(|mut st| st.query_row([seq], read).optional())
            .map_err(db("reading a claimed delivery"))?;
        if let Some(raw) = raw {
            out.push(claimed_row(raw)?);
        }
    }
    tx.commit().map_err(db("committing a claim"))?;
    Ok(out)
}

pub(super) fn finish_delivery(s: &SqliteStore, o: &DeliveryOutcome) -> Result<()> {
    s.conn()
        .execute(
            "UPDATE webhook_deliveries SET status = ?2, attempts = ?3, last_status = ?4, \
             last_error = ?5, next_attempt_ms = ?6, ended_ms = ?7, lease_until_ms = 0 \
             WHERE seq = ?1",
            params![
                o.seq,
                o.status.as_str(),
                o.attempts,
                o.last_status,
                o.last_error,
                i(o.next_attempt_ms),
                o.ended_ms.map(i)
            ],
        )
        .map_err(db("recording a delivery's try"))?;
    Ok(())
}

pub(super) fn prune_deliveries(s: &SqliteStore, ended_before: u64) -> Result<u64> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(db("starting a transaction"))?;
    let n = tx
        .execute(
            "DELETE FROM webhook_deliveries WHERE status != 'pending' AND ended_ms < ?1",
            [i(ended_before)],
        )
        .map_err(db("pruning deliveries"))?;
    tx.execute(
        "DELETE FROM webhook_events WHERE NOT EXISTS \
         (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)",
        [],
    )
    .map_err(db("pruning events"))?;
    tx.commit().map_err(db("committing a prune"))?;
    Ok(n as u64)
}
