//! Webhook delivery: the worker that sends the outbox's events to their receivers, and the
//! shape of a send (the JSON body, its `X-Hoist-Signature`, the retry schedule).
//!
//! The worker is one task of the server (under its cancellation token). It claims due
//! deliveries from the store (each the earliest pending one of its webhook and subject, so a
//! deployment's events reach a receiver in order; leased, so no other replica sends it at
//! the same time), sends each webhook's claims in a task of their own (a dead receiver
//! holds up only its own webhook), and records each try: 2xx delivered; anything else
//! retried after a doubling delay (`webhooks.initial_backoff` to `webhooks.max_backoff`)
//! until `webhooks.give_up_after` from the event, then given up. At least once: a send whose
//! record is lost (a crash, a lease run out) is sent again with the same event id. It
//! wakes on every change the service announces (at most ten claims a second) and twice a
//! second.
//!
//! Deliberately not here: which changes are events (the store writes them in the change's
//! own transaction, so a state change only ever enqueues and never waits for a receiver),
//! the decision lock (never taken: claims and records are plain store calls). This module
//! speaks HTTP only as a client of receivers; `api` stays the server's one HTTP module.

mod send;

pub use send::{client, send, Attempt};

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use hoist_protocol::operator::{DeliveryStatus, EventKind, WebhookEvent};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::service::{now_ms, Service};
use crate::store::{Claimed, DeliveryOutcome, EventRow, WebhookRow};

/// How deliveries are retried, and where links point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The wait after a first failed try; doubled after each further one.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A delivery still failing this long after its event is given up.
    pub give_up_after: Duration,
    /// The dashboard's base URL in links, without a trailing slash.
    pub public_url: String,
}

impl Settings {
    /// The server's settings; links under `public_url`, else this server's scheme and bound
    /// address (a wildcard address as the machine's host name, `host`).
    pub fn new(config: &ServerConfig, addr: SocketAddr, tls: bool, host: &str) -> Settings {
        let scheme = if tls { "https" } else { "http" };
        let public_url = match &config.public_url {
            Some(u) => u.clone(),
            None if addr.ip().is_unspecified() && !host.is_empty() => {
                format!("{scheme}://{host}:{}", addr.port())
            }
            None => format!("{scheme}://{addr}"),
        };
        Settings {
            initial_backoff: config.webhook_initial_backoff,
            max_backoff: config.webhook_max_backoff,
            give_up_after: config.webhook_give_up_after,
            public_url,
        }
    }
}

pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(3600);
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How long a claim keeps a delivery from other senders: longer than a send may take.
const LEASE: Duration = Duration::from_secs(60);
/// How often the worker looks for due deliveries when nothing wakes it.
const TICK: Duration = Duration::from_millis(500);
/// Least time between two claims: changes come in bursts (a report batch, a rollout step),
/// and one claim after a burst finds all of its events.
const MIN_GAP: Duration = Duration::from_millis(100);
/// Most deliveries of one webhook claimed at once.
const PER_WEBHOOK: usize = 16;
/// Ended deliveries are kept this long (what `webhook list` shows), then pruned.
const KEEP_ENDED: Duration = Duration::from_secs(7 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Time claimed sends get to finish once the server stops.
const STOP_GRACE: Duration = Duration::from_secs(5);

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The body of `event` for a receiver, its link under `public_url`.
pub fn body(event: &EventRow, public_url: &str) -> WebhookEvent {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(event.at_ms);
    WebhookEvent {
        id: event.id.clone(),
        kind: event.kind,
        time: humantime::format_rfc3339_millis(time).to_string(),
        time_ms: event.at_ms,
        application: event.application.clone(),
        group: event.group.clone(),
        deployment: event.deployment_id.clone(),
        release: event.release_id.clone(),
        host: event.host.clone(),
        state: event.state.clone(),
        summary: event.summary.clone(),
        link: format!("{}{}", public_url.trim_end_matches('/'), event.page),
    }
}

/// `sha256=HEX`: the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The wait after the `attempts`-th failed try: the catch-up retries' doubling
/// (`service::retry_delay`), capped at `max_backoff`.
pub fn backoff(s: &Settings, attempts: u32) -> Duration {
    crate::service::retry_delay(s.initial_backoff, attempts).min(s.max_backoff)
}

/// What a try of `c` that ended as `attempt` at `now` leaves: delivered, retried, or given
/// up once the retry would fall after `give_up_after` from the event.
pub fn outcome(s: &Settings, c: &Claimed, attempt: &Attempt, now: u64) -> DeliveryOutcome {
    let attempts = c.delivery.attempts.saturating_add(1);
    let ended = |status| DeliveryOutcome {
        seq: c.delivery.seq,
        status,
        attempts,
        last_status: attempt.status,
        last_error: attempt.error.clone(),
        next_attempt_ms: 0,
        ended_ms: Some(now),
    };
    if attempt.delivered() {
        return ended(DeliveryStatus::Delivered);
    }
    let next = now.saturating_add(ms(backoff(s, attempts)));
    if next > c.event.at_ms.saturating_add(ms(s.give_up_after)) {
        return ended(DeliveryStatus::GivenUp);
    }
    DeliveryOutcome {
        next_attempt_ms: next,
        ended_ms: None,
        status: DeliveryStatus::Pending,
        ..ended(DeliveryStatus::Pending)
    }
}

/// The event `hoist webhook test` sends: of kind `test`, never queued.
pub fn test_event(w: &WebhookRow) -> EventRow {
    EventRow {
        id: crate::store::webhooks::new_event_id(),
        kind: EventKind::Test,
        subject: format!("test:{}", w.id),
        application: w.application.clone(),
        group: None,
        deployment_id: None,
        release_id: None,
        host: None,
        state: "test".into(),
        summary: format!("a test event for webhook {} of {}", w.id, w.application),
        page: "/webhooks".into(),
        at_ms: now_ms(),
    }
}

/// The worker: runs until `cancel`, then gives sends in flight [`STOP_GRACE`].
pub async fn run(service: Arc<Service>, settings: Settings, cancel: CancellationToken) {
    let client = match client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "building the webhook client: webhooks are not sent");
            return;
        }
    };
    let settings = Arc::new(settings);
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let tracker = TaskTracker::new();
    let done = Arc::new(tokio::sync::Notify::new());
    let mut changes = service.subscribe();
    let mut pruned_at = 0u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(TICK) => {}
            _ = changes.changed() => {}
            _ = done.notified() => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(MIN_GAP) => {}
        }
        let now = now_ms();
        if now.saturating_sub(pruned_at) >= ms(PRUNE_EVERY) {
            pruned_at = now;
            let e = service.clone();
            let before = now.saturating_sub(ms(KEEP_ENDED));
            match tokio::task::spawn_blocking(move || e.prune_deliveries(before)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::debug!(deliveries = n, "old webhook deliveries pruned"),
                Ok(Err(e)) => tracing::error!(error = %e, "pruning webhook deliveries"),
                Err(e) => tracing::error!(error = %e, "pruning webhook deliveries"),
            }
        }
        let skip: Vec<String> = lock(&busy).iter().cloned().collect();
        let e = service.clone();
        let lease_until = now.saturating_add(ms(LEASE));
        let claimed = match tokio::task::spawn_blocking(move || {
            e.claim_deliveries(lease_until, &skip, PER_WEBHOOK)
        })
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "claiming webhook deliveries");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "claiming webhook deliveries");
                continue;
            }
        };
        let mut by_webhook: BTreeMap<String, Vec<Claimed>> = BTreeMap::new();
        for c in claimed {
            by_webhook.entry(c.webhook.id.clone()).or_default().push(c);
        }
        for (id, batch) in by_webhook {
            lock(&busy).insert(id.clone());
            let (service, settings, client, cancel) = (
                service.clone(),
                settings.clone(),
                client.clone(),
                cancel.clone(),
            );
            let (busy, done) = (busy.clone(), done.clone());
            tracker.spawn(async move {
                for c in batch {
                    if cancel.is_cancelled() {
                        // Left to its lease: sent again later, by this replica or another.
                        break;
                    }
                    deliver(&service, &settings, &client, c).await;
                }
                lock(&busy).remove(&id);
                done.notify_one();
            });
        }
    }
    tracker.close();
    if tokio::time::timeout(STOP_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("webhook sends still running at shutdown are left to their lease");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A set of ids is whole between statements; a panic cannot leave it half-changed.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One try of one claimed delivery, recorded.
async fn deliver(service: &Arc<Service>, s: &Settings, client: &reqwest::Client, c: Claimed) {
    let event = body(&c.event, &s.public_url);
    let attempt = send(client, &c.webhook.url, &c.webhook.secret, &event).await;
    let outcome = outcome(s, &c, &attempt, now_ms());
    match outcome.status {
        DeliveryStatus::Delivered => tracing::debug!(webhook_id = %c.webhook.id,
            event_id = %c.event.id, "webhook event delivered"),
        DeliveryStatus::GivenUp => tracing::warn!(webhook_id = %c.webhook.id,
            event_id = %c.event.id, attempts = outcome.attempts,
            error = attempt.error.as_deref().unwrap_or(""), "webhook delivery given up"),
        _ => tracing::info!(webhook_id = %c.webhook.id, event_id = %c.event.id,
            attempts = outcome.attempts, error = attempt.error.as_deref().unwrap_or(""),
            "webhook delivery failed; will retry"),
    }
    let e = service.clone();
    match tokio::task::spawn_blocking(move || e.finish_delivery(&outcome)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "recording a webhook delivery"),
        Err(e) => tracing::error!(error = %e, "recording a webhook delivery"),
    }
}

#[cfg(test)]
mod tests;
