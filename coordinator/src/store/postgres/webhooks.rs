//! The SQL of webhooks and their outbox on PostgreSQL: webhooks, the change capture the
//! other files' transactions call (a deployment, a release, sync rows written with their
//! events), claiming due deliveries (`FOR UPDATE SKIP LOCKED`, then a lease, so two
//! replicas never claim one delivery), ending a try, pruning. Not here: what an event says
//! (`store::webhooks`) or sending (`crate::webhooks`).

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::rows::{i, pg, read, sync_row, write_deployment, write_syncs, Write, SYNC_COLS};
use super::PgStore;
use crate::store::rows::Raw;
use crate::store::webhooks::{
    choose, claimed_row, delivery_row, deployment_event, event_at, events_str, host_event,
    prefixed, release_event, webhook_row, written_now, Claimed, DeliveryOutcome, DeliveryRow,
    EventRow, HostPlace, WebhookRow, CANDIDATES_PG, CLAIM_SCAN, DELIVERY_COLS, EVENT_COLS,
    WEBHOOK_COLS,
};
use crate::store::{DeploymentRow, HostSyncRow, ReleaseRow, Result};

async fn watched(tx: &Transaction<'_>) -> Result<bool> {
    let row = tx
        .query_one("SELECT EXISTS (SELECT 1 FROM webhooks)", &[])
        .await
        .map_err(pg("looking for webhooks"))?;
    row.try_get::<_, bool>(0)
        .map_err(pg("looking for webhooks"))
}

async fn stored_state(tx: &Transaction<'_>, sql: &str, id: &str) -> Result<Option<String>> {
    let row = tx
        .query_opt(sql, &[&id])
        .await
        .map_err(pg("reading a stored state"))?;
    row.map(|r| r.try_get::<_, String>(0))
        .transpose()
        .map_err(pg("reading a stored state"))
}

/// Inserts `ev` with one delivery per webhook of its application subscribed to its kind;
/// nothing when there is none.
async fn enqueue(tx: &Transaction<'_>, ev: &EventRow) -> Result<()> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO webhook_deliveries (webhook_id, event_id, subject, status, attempts, \
             next_attempt_ms, lease_until_ms, created_ms) \
             SELECT id, $1, $2, 'pending', 0, $3, 0, $3 FROM webhooks \
             WHERE application = $4 AND position(',' || $5 || ',' in ',' || events || ',') > 0 \
             ORDER BY created_ms, id",
        )
        .await
        .map_err(pg("queueing an event's deliveries"))?;
    let n = tx
        .execute(
            &stmt,
            &[
                &ev.id,
                &ev.subject,
                &i(ev.at_ms),
                &ev.application,
                &ev.kind.as_str(),
            ],
        )
        .await
        .map_err(pg("queueing an event's deliveries"))?;
    if n == 0 {
        return Ok(());
    }
    tx.execute(
        &format!(
            "INSERT INTO webhook_events ({EVENT_COLS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ),
        &[
            &ev.id,
            &ev.kind.as_str(),
            &ev.subject,
            &ev.application,
            &ev.group,
            &ev.deployment_id,
            &ev.release_id,
            &ev.host,
            &ev.state,
            &ev.summary,
            &ev.page,
            &i(ev.at_ms),
        ],
    )
    .await
    .map_err(pg("queueing an event"))?;
    Ok(())
}

/// Writes a deployment and, when its state changed, its event.
pub(super) async fn write_deployment_captured(
    tx: &Transaction<'_>,
    d: &DeploymentRow,
    how: Write,
) -> Result<()> {
    let watched = watched(tx).await?;
    let old = match (watched, how) {
        (true, Write::Update) => {
            stored_state(tx, "SELECT state FROM deployments WHERE id = $1", &d.id).await?
        }
        _ => None,
    };
    write_deployment(tx, d, how)
        .await
        .map_err(pg("writing a deployment"))?;
    if watched {
        if let Some(ev) = deployment_event(old.as_deref(), d, written_now()) {
            enqueue(tx, &ev).await?;
        }
    }
    Ok(())
}

/// The event of writing release `r` (`insert`: it is new), captured before the write and
/// queued by [`queue`] after it.
pub(super) async fn release_before(
    tx: &Transaction<'_>,
    r: &ReleaseRow,
    insert: bool,
) -> Result<Option<EventRow>> {
    if !watched(tx).await? {
        return Ok(None);
    }
    let old = if insert {
        None
    } else {
        stored_state(tx, "SELECT state FROM releases WHERE id = $1", &r.id).await?
    };
    Ok(release_event(old.as_deref(), r, written_now()))
}

pub(super) async fn queue(tx: &Transaction<'_>, ev: Option<EventRow>) -> Result<()> {
    match ev {
        Some(ev) => enqueue(tx, &ev).await,
        None => Ok(()),
    }
}

/// Writes sync rows, replacing stored ones, and the events of those whose standing changed.
pub(super) async fn write_syncs_captured(tx: &Transaction<'_>, rows: &[HostSyncRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let watched = watched(tx).await?;
    let mut olds = Vec::new();
    if watched {
        for h in rows {
            let old = tx
                .query_opt(
                    &format!(
                        "SELECT {SYNC_COLS} FROM host_sync WHERE host_id = $1 AND group_id = $2"
                    ),
                    &[&h.host_id, &h.group_id],
                )
                .await
                .map_err(pg("reading a host's sync row"))?;
            let old = match old {
                Some(r) => Some(sync_row(
                    read(&r).map_err(pg("reading a host's sync row"))?,
                )?),
                None => None,
            };
            olds.push(old);
        }
    }
    write_syncs(tx, rows)
        .await
        .map_err(pg("writing a host's sync row"))?;
    if !watched {
        return Ok(());
    }
    for (h, old) in rows.iter().zip(olds) {
        let place = tx
            .query_opt(
                "SELECT h.name, g.application, g.name FROM hosts h, deployment_groups g \
                 WHERE h.id = $1 AND g.id = $2",
                &[&h.host_id, &h.group_id],
            )
            .await
            .map_err(pg("reading a host's name and group"))?;
        let Some(place) = place else { continue };
        let place = HostPlace {
            host: place.try_get(0).map_err(pg("reading a host's name"))?,
            application: place.try_get(1).map_err(pg("reading a group"))?,
            group: place.try_get(2).map_err(pg("reading a group"))?,
        };
        if let Some(ev) = host_event(old.as_ref(), h, &place, written_now()) {
            enqueue(tx, &ev).await?;
        }
    }
    Ok(())
}

pub(super) fn insert_webhook(s: &PgStore, w: &WebhookRow) -> Result<()> {
    s.execute(
        "writing a webhook",
        &format!("INSERT INTO webhooks ({WEBHOOK_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"),
        &[
            &w.id,
            &w.application,
            &w.url,
            &events_str(&w.events),
            &w.secret.expose(),
            &i(w.created_ms),
        ],
    )?;
    Ok(())
}

pub(super) fn webhooks(s: &PgStore) -> Result<Vec<WebhookRow>> {
    s.query(
        "listing webhooks",
        &format!("SELECT {WEBHOOK_COLS} FROM webhooks ORDER BY created_ms, id"),
        &[],
        webhook_row,
    )
}

pub(super) fn webhook(s: &PgStore, id: &str) -> Result<Option<WebhookRow>> {
    s.query_one(
        "reading a webhook",
        &format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE id = $1"),
        &[&id],
        webhook_row,
    )
}

pub(super) fn delete_webhook(s: &PgStore, id: &str) -> Result<bool> {
    s.run(async {
        let mut client = s.client("deleting a webhook").await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("starting a transaction"))?;
        let n = tx
            .execute("DELETE FROM webhooks WHERE id = $1", &[&id])
            .await
            .map_err(pg("deleting a webhook"))?;
        tx.execute(
            "DELETE FROM webhook_deliveries WHERE webhook_id = $1",
            &[&id],
        )
        .await
        .map_err(pg("deleting a webhook's deliveries"))?;
        tx.execute(ORPHAN_EVENTS, &[])
            .await
            .map_err(pg("deleting events nobody is sent"))?;
        tx.commit()
            .await
            .map_err(pg("committing a webhook's deletion"))?;
        Ok(n > 0)
    })
}

const ORPHAN_EVENTS: &str = "DELETE FROM webhook_events WHERE NOT EXISTS \
    (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)";

fn recent_row(r: Raw) -> Result<(DeliveryRow, EventRow)> {
    let event = event_at(&r, 12);
    Ok((delivery_row(r)?, event))
}

pub(super) fn recent_deliveries(
    s: &PgStore,
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
             WHERE d.webhook_id = $1 ORDER BY d.seq DESC LIMIT $2"
        ),
        &[&webhook_id, &i64::from(limit)],
        recent_row,
    )
}

pub(super) fn claim_deliveries(
    s: &PgStore,
    now: u64,
    lease_until: u64,
    skip: &[String],
    per_webhook: usize,
) -> Result<Vec<Claimed>> {
    s.run(async {
        let mut client = s.client("claiming deliveries").await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("starting a transaction"))?;
        let rows = tx
            .query(CANDIDATES_PG, &[&i(now), &CLAIM_SCAN])
            .await
            .map_err(pg("finding due deliveries"))?;
        let mut candidates = Vec::with_capacity(rows.len());
        for r in rows {
            candidates.push((
                r.try_get::<_, i64>(0)
                    .map_err(pg("finding due deliveries"))?,
                r.try_get::<_, String>(1)
                    .map_err(pg("finding due deliveries"))?,
            ));
        }
        let seqs = choose(candidates, skip, per_webhook);
        let d_cols = prefixed("d", DELIVERY_COLS);
        let e_cols = prefixed("e", EVENT_COLS);
        let w_cols = prefixed("w", WEBHOOK_COLS);
        let mut out = Vec::with_capacity(seqs.len());
        if !seqs.is_empty() {
            tx.execute(
                "UPDATE webhook_deliveries SET lease_until_ms = $2 WHERE seq = ANY($1)",
                &[&seqs, &i(lease_until)],
            )
            .await
            .map_err(pg("claiming deliveries"))?;
            let args: [&(dyn ToSql + Sync); 1] = [&seqs];
            let rows = tx
                .query(
                    &format!(
                        "SELECT {d_cols}, {e_cols}, {w_cols} FROM webhook_deliveries d \
                         JOIN webhook_events e ON e.id = d.event_id \
                         JOIN webhooks w ON w.id = d.webhook_id WHERE d.seq = ANY($1) \
                         ORDER BY d.seq"
                    ),
                    &args,
                )
                .await
                .map_err(pg("reading claimed deliveries"))?;
            for r in &rows {
                out.push(claimed_row(
                    read(r).map_err(pg("reading claimed deliveries"))?,
                )?);
            }
        }
        tx.commit().await.map_err(pg("committing a claim"))?;
        Ok(out)
    })
}

pub(super) fn finish_delivery(s: &PgStore, o: &DeliveryOutcome) -> Result<()> {
    s.execute(
        "recording a delivery's try",
        "UPDATE webhook_deliveries SET status = $2, attempts = $3, last_status = $4, \
         last_error = $5, next_attempt_ms = $6, ended_ms = $7, lease_until_ms = 0 \
         WHERE seq = $1",
        &[
            &o.seq,
            &o.status.as_str(),
            &i64::from(o.attempts),
            &o.last_status.map(i64::from),
            &o.last_error,
            &i(o.next_attempt_ms),
            &o.ended_ms.map(i),
        ],
    )?;
    Ok(())
}

pub(super) fn prune_deliveries(s: &PgStore, ended_before: u64) -> Result<u64> {
    s.run(async {
        let mut client = s.client("pruning deliveries").await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("starting a transaction"))?;
        let n = tx
            .execute(
                "DELETE FROM webhook_deliveries WHERE status != 'pending' AND ended_ms < $1",
                &[&i(ended_before)],
            )
            .await
            .map_err(pg("pruning deliveries"))?;
        tx.execute(ORPHAN_EVENTS, &[])
            .await
            .map_err(pg("pruning events"))?;
        tx.commit().await.map_err(pg("committing a prune"))?;
        Ok(n)
    })
}
