//! Webhooks and their outbox, shared by both backends: the rows (a webhook, an event, one
//! event's delivery to one webhook), their columns and decoding, and the change capture
//! that turns a written row into an event.
//!
//! Change capture: each backend calls [`deployment_event`], [`release_event`] and
//! [`host_event`] inside the transaction that writes a deployment, a release or a host's
//! sync row, with the state stored before the write, and inserts what they return with one
//! delivery per webhook of the application subscribed to its kind, in that transaction. So
//! no state change commits without its event, and no event without its change. This is
//! capture, not a rule: which state a deployment or release is in is decided by the service
//! (`service::states`, `service::pipelines::stage`); here a changed column is only noticed.
//! Deliberately not here: sending, signing, retry times (`crate::webhooks`).

use hoist_protocol::operator::{DeliveryStatus, EventKind};
use hoist_protocol::secret::Secret;

use super::rows::{u, Raw};
use super::{DeploymentRow, HostSyncRow, ReleaseRow, Result, StoreError};

/// A receiver of one application's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRow {
    pub id: String,
    pub application: String,
    pub url: String,
    /// What it subscribes to (of deployment, release, host).
    pub events: Vec<EventKind>,
    /// Kept as given, since each body is signed with it: private as the database is, and
    /// never answered by the API.
    pub secret: Secret,
    pub created_ms: u64,
}

/// One state change, as its webhooks will be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub id: String,
    pub kind: EventKind,
    /// Events of one subject are delivered to a webhook in the order they were written:
    /// `deployment:ID`, `release:ID`, `host:HOST_ID:GROUP_ID`.
    pub subject: String,
    pub application: String,
    pub group: Option<String>,
    pub deployment_id: Option<String>,
    pub release_id: Option<String>,
    pub host: Option<String>,
    pub state: String,
    pub summary: String,
    /// The dashboard path of the subject (`/deployments/ID`), put after the public URL.
    pub page: String,
    pub at_ms: u64,
}

/// One event's delivery to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    /// Increasing in the order deliveries were written.
    pub seq: i64,
    pub webhook_id: String,
    pub event_id: String,
    pub subject: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub next_attempt_ms: u64,
    /// Claimed by a sender until then.
    pub lease_until_ms: u64,
    pub created_ms: u64,
    pub ended_ms: Option<u64>,
}

/// A delivery claimed for sending, with what it needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: DeliveryRow,
    pub event: EventRow,
    pub webhook: WebhookRow,
}

/// How one try of a delivery ended, written by [`super::Store::finish_delivery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOutcome {
    pub seq: i64,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub next_attempt_ms: u64,
    pub ended_ms: Option<u64>,
}

pub(crate) const WEBHOOK_COLS: &str = "id, application, url, events, secret, created_ms";
pub(crate) const EVENT_COLS: &str = "id, kind, subject, application, group_name, \
    deployment_id, release_id, host, state, summary, page, at_ms";
pub(crate) const DELIVERY_COLS: &str = "seq, webhook_id, event_id, subject, status, attempts, \
    last_status, last_error, next_attempt_ms, lease_until_ms, created_ms, ended_ms";

/// `a, b` as `p.a, p.b`.
pub(crate) fn prefixed(p: &str, cols: &str) -> String {
    cols.split(',')
        .map(|c| format!("{p}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The candidates of a claim: pending, due, not claimed by another sender, and the earliest
/// pending delivery of their webhook and subject (so a subject's events go in order).
pub(crate) const CANDIDATES_SQLITE: &str = "SELECT d.seq, d.webhook_id FROM webhook_deliveries d \
    WHERE d.status = 'pending' AND d.next_attempt_ms <= ?1 AND d.lease_until_ms <= ?1 \
    AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e WHERE e.webhook_id = d.webhook_id \
    AND e.subject = d.subject AND e.status = 'pending' AND e.seq < d.seq) \
    ORDER BY d.seq LIMIT ?2";

/// The same on PostgreSQL, skipping rows another replica's claim has locked (that claim
/// then leases them, so they are not due for anyone else once it commits).
pub(crate) const CANDIDATES_PG: &str = "SELECT d.seq, d.webhook_id FROM webhook_deliveries d \
    WHERE d.status = 'pending' AND d.next_attempt_ms <= $1 AND d.lease_until_ms <= $1 \
    AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e WHERE e.webhook_id = d.webhook_id \
    AND e.subject = d.subject AND e.status = 'pending' AND e.seq < d.seq) \
    ORDER BY d.seq LIMIT $2 FOR UPDATE OF d SKIP LOCKED";

/// Which candidates to take: none of a webhook in `skip`, at most `per_webhook` of each.
pub(crate) fn choose(
    candidates: Vec<(i64, String)>,
    skip: &[String],
    per_webhook: usize,
) -> Vec<i64> {
    let mut taken: std::collections::HashMap<String, usize> = Default::default();
    let mut out = Vec::new();
    for (seq, webhook) in candidates {
        if skip.contains(&webhook) {
            continue;
        }
        let n = taken.entry(webhook).or_default();
        if *n < per_webhook {
            *n += 1;
            out.push(seq);
        }
    }
    out
}

/// Most delivery candidates one claim looks at.
pub(crate) const CLAIM_SCAN: i64 = 256;

pub(crate) fn events_str(events: &[EventKind]) -> String {
    events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn kind(s: &str) -> EventKind {
    match s {
        "deployment" => EventKind::Deployment,
        "release" => EventKind::Release,
        "host" => EventKind::Host,
        "test" => EventKind::Test,
        _ => EventKind::Unknown,
    }
}

fn status(s: &str) -> Result<DeliveryStatus> {
    Ok(match s {
        "pending" => DeliveryStatus::Pending,
        "delivered" => DeliveryStatus::Delivered,
        "given_up" => DeliveryStatus::GivenUp,
        other => {
            return Err(StoreError::BadValue {
                what: "delivery status",
                value: other.into(),
            })
        }
    })
}

pub(crate) fn webhook_row(r: Raw) -> Result<WebhookRow> {
    Ok(WebhookRow {
        id: r.text(0),
        application: r.text(1),
        url: r.text(2),
        events: r
            .text(3)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(kind)
            .collect(),
        secret: Secret::new(r.text(4)),
        created_ms: u(r.int(5)),
    })
}

/// Decodes an event from `EVENT_COLS` starting at column `at`.
pub(crate) fn event_at(r: &Raw, at: usize) -> EventRow {
    EventRow {
        id: r.text(at),
        kind: kind(&r.text(at + 1)),
        subject: r.text(at + 2),
        application: r.text(at + 3),
        group: r.opt_text(at + 4),
        deployment_id: r.opt_text(at + 5),
        release_id: r.opt_text(at + 6),
        host: r.opt_text(at + 7),
        state: r.text(at + 8),
        summary: r.text(at + 9),
        page: r.text(at + 10),
        at_ms: u(r.int(at + 11)),
    }
}

pub(crate) fn delivery_row(r: Raw) -> Result<DeliveryRow> {
    delivery_at(&r, 0)
}

/// Decodes a delivery from `DELIVERY_COLS` starting at column `at`.
pub(crate) fn delivery_at(r: &Raw, at: usize) -> Result<DeliveryRow> {
    Ok(DeliveryRow {
        seq: r.int(at),
        webhook_id: r.text(at + 1),
        event_id: r.text(at + 2),
        subject: r.text(at + 3),
        status: status(&r.text(at + 4))?,
        attempts: u32::try_from(r.int(at + 5)).unwrap_or(u32::MAX),
        last_status: r.opt_int(at + 6).and_then(|v| u16::try_from(v).ok()),
        last_error: r.opt_text(at + 7),
        next_attempt_ms: u(r.int(at + 8)),
        lease_until_ms: u(r.int(at + 9)),
        created_ms: u(r.int(at + 10)),
        ended_ms: r.opt_int(at + 11).map(u),
    })
}

/// A claim's row: `DELIVERY_COLS`, then `EVENT_COLS`, then `WEBHOOK_COLS`.
pub(crate) fn claimed_row(r: Raw) -> Result<Claimed> {
    let delivery = delivery_at(&r, 0)?;
    let event = event_at(&r, 12);
    let webhook = webhook_row(Raw(r.0.into_iter().skip(24).collect()))?;
    Ok(Claimed {
        delivery,
        event,
        webhook,
    })
}

/// The time of a write, which is its event's time.
pub(crate) fn written_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn new_event_id() -> String {
    format!("ev-{}", hex::encode(rand::random::<[u8; 12]>()))
}

/// The event of writing `d` over a stored deployment in state `old` (`None`: a new one);
/// `None` when its state did not change.
pub(crate) fn deployment_event(old: Option<&str>, d: &DeploymentRow, now: u64) -> Option<EventRow> {
    let state = d.state.as_str();
    if old == Some(state) {
        return None;
    }
    let mut summary = format!(
        "deployment {} of {} to group {}: {state}",
        d.id, d.application, d.group_name
    );
    if let Some(m) = d.message.as_deref().filter(|m| !m.is_empty()) {
        summary.push_str(&format!(" ({m})"));
    }
    Some(EventRow {
        id: new_event_id(),
        kind: EventKind::Deployment,
        subject: format!("deployment:{}", d.id),
        application: d.application.clone(),
        group: Some(d.group_name.clone()),
        deployment_id: Some(d.id.clone()),
        release_id: d.release_id.clone(),
        host: None,
        state: state.to_owned(),
        summary: bounded(summary),
        page: format!("/deployments/{}", d.id),
        at_ms: now,
    })
}

/// The event of writing release `r` over a stored one in state `old`; `None` when its state
/// did not change.
pub(crate) fn release_event(old: Option<&str>, r: &ReleaseRow, now: u64) -> Option<EventRow> {
    let state = r.state.as_str();
    if old == Some(state) {
        return None;
    }
    // The stage it is at: the first that has not succeeded.
    let stage = r
        .stages
        .iter()
        .find(|s| s.state != hoist_protocol::operator::StageState::Succeeded)
        .or(r.stages.last());
    let mut summary = format!("release {} of pipeline {}: {state}", r.id, r.pipeline);
    if let Some(s) = stage {
        summary.push_str(&format!(" (stage {}: {})", s.group, s.state.as_str()));
    }
    Some(EventRow {
        id: new_event_id(),
        kind: EventKind::Release,
        subject: format!("release:{}", r.id),
        application: r.application.clone(),
        group: stage.map(|s| s.group.clone()),
        deployment_id: stage.and_then(|s| s.deployment_id.clone()),
        release_id: Some(r.id.clone()),
        host: None,
        state: state.to_owned(),
        summary: bounded(summary),
        page: format!("/releases/{}", r.id),
        at_ms: now,
    })
}

/// A host's standing in a group as its row says it: held out of sync, catching up (a
/// catch-up handed to it or a failed one to be tried again), on the revision of its last
/// successful command there, or never deployed.
pub(crate) fn standing(row: &HostSyncRow) -> &'static str {
    if row.hold {
        "out_of_sync"
    } else if row.pending_command_id.is_some() || row.failed_state.is_some() {
        "catching_up"
    } else if row.revision.is_some() {
        "in_sync"
    } else {
        "never_deployed"
    }
}

/// Where a host event goes: the host's name, its group's application and name.
pub(crate) struct HostPlace {
    pub host: String,
    pub application: String,
    pub group: String,
}

/// The event of writing sync row `new` over `old`; `None` when neither the host's standing
/// nor the deployment it last ran changed.
pub(crate) fn host_event(
    old: Option<&HostSyncRow>,
    new: &HostSyncRow,
    place: &HostPlace,
    now: u64,
) -> Option<EventRow> {
    let state = standing(new);
    if let Some(old) = old {
        if standing(old) == state && old.deployment_id == new.deployment_id {
            return None;
        }
    }
    let mut summary = format!(
        "host {} in group {} of {}: {state}",
        place.host, place.group, place.application
    );
    if let (Some(e), true) = (&new.error, new.failed_state.is_some()) {
        summary.push_str(&format!(" ({e})"));
    }
    Some(EventRow {
        id: new_event_id(),
        kind: EventKind::Host,
        subject: format!("host:{}:{}", new.host_id, new.group_id),
        application: place.application.clone(),
        group: Some(place.group.clone()),
        deployment_id: new.deployment_id.clone(),
        release_id: None,
        host: Some(place.host.clone()),
        state: state.to_owned(),
        summary: bounded(summary),
        page: "/hosts".to_owned(),
        at_ms: now,
    })
}

/// Longest summary kept: messages are bounded already, this keeps a body small.
const MAX_SUMMARY: usize = 1024;

fn bounded(mut s: String) -> String {
    if s.len() > MAX_SUMMARY {
        let mut end = MAX_SUMMARY;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}
