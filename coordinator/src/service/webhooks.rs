//! Webhooks as operators manage them: created for an application (URL checked, events a
//! subset of deployment, release and host, a secret given or generated and shown once),
//! listed with their recent deliveries and never their secret, deleted; and the outbox as
//! the delivery worker sees it (claim, end a try, prune). Not here: which state changes are
//! events (the store captures them with the change), sending or signing (`crate::webhooks`).

use hoist_protocol::operator::{self as op, EventKind};
use hoist_protocol::secret::Secret;

use super::{new_id, new_secret, now_ms, Result, Service, ServiceError};
use crate::bounds::shown;
use crate::store::{Claimed, DeliveryOutcome, DeliveryRow, EventRow, WebhookRow};

/// Longest webhook URL.
pub const MAX_URL: usize = 2048;
/// Bounds of a secret an operator gives.
pub const MIN_SECRET: usize = 16;
pub const MAX_SECRET: usize = 256;
/// Deliveries listed per webhook.
pub const RECENT_DELIVERIES: u32 = 10;

/// Checks a webhook URL: http or https (plain http is allowed, for receivers on a private
/// network), a host, at most [`MAX_URL`] bytes, no credentials in it.
pub fn check_url(text: &str) -> Result<url::Url> {
    let bad = |why: &str| ServiceError::Invalid(format!("url {}: {why}", shown(text)));
    if text.len() > MAX_URL {
        return Err(bad(&format!("longer than {MAX_URL} bytes")));
    }
    let u = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad("must be http:// or https://"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad("must not carry a user name or password"));
    }
    Ok(u)
}

fn check_secret(s: &str) -> Result<()> {
    if s.len() < MIN_SECRET || s.len() > MAX_SECRET || s.chars().any(char::is_control) {
        return Err(ServiceError::Invalid(format!(
            "secret: must be {MIN_SECRET} to {MAX_SECRET} bytes without control characters"
        )));
    }
    Ok(())
}

fn info(w: WebhookRow, deliveries: Vec<op::Delivery>) -> op::WebhookInfo {
    op::WebhookInfo {
        id: w.id,
        application: w.application,
        url: w.url,
        events: w.events,
        created_ms: w.created_ms,
        deliveries,
    }
}

fn delivery((d, e): (DeliveryRow, EventRow)) -> op::Delivery {
    op::Delivery {
        event_id: e.id,
        kind: e.kind,
        state: e.state,
        summary: e.summary,
        status: d.status,
        attempts: d.attempts,
        last_status: d.last_status,
        last_error: d.last_error,
        next_attempt_ms: d.next_attempt_ms,
        created_ms: d.created_ms,
        ended_ms: d.ended_ms,
    }
}

impl Service {
    pub fn create_webhook(&self, req: op::CreateWebhook) -> Result<op::Webhook> {
        if self.store.application(&req.application)?.is_none() {
            return Err(ServiceError::NotFound(format!(
                "no application {}",
                shown(&req.application)
            )));
        }
        let url = check_url(&req.url)?;
        let mut events: Vec<EventKind> = if req.events.is_empty() {
            EventKind::SUBSCRIBABLE.to_vec()
        } else {
            req.events.clone()
        };
        if let Some(e) = events.iter().find(|e| !EventKind::SUBSCRIBABLE.contains(e)) {
            return Err(ServiceError::Invalid(format!(
                "events: {e} is not one of deployment, release, host"
            )));
        }
        events.sort();
        events.dedup();
        let generated = match &req.secret {
            Some(s) => {
                check_secret(s)?;
                None
            }
            None => Some(format!("whs_{}", new_secret())),
        };
        let secret = req
            .secret
            .clone()
            .or_else(|| generated.clone())
            .unwrap_or_default();
        let row = WebhookRow {
            id: new_id("wh"),
            application: req.application,
            url: url.to_string(),
            events,
            secret: Secret::new(secret),
            created_ms: now_ms(),
        };
        self.store.insert_webhook(&row)?;
        tracing::info!(webhook_id = %row.id, application = %row.application, "webhook created");
        Ok(op::Webhook {
            info: info(row, Vec::new()),
            secret: generated,
        })
    }

    pub fn webhooks(&self) -> Result<op::WebhookList> {
        let mut webhooks = Vec::new();
        for w in self.store.webhooks()? {
            let recent = self.store.recent_deliveries(&w.id, RECENT_DELIVERIES)?;
            webhooks.push(info(w, recent.into_iter().map(delivery).collect()));
        }
        Ok(op::WebhookList { webhooks })
    }

    /// The stored webhook, secret included (for sending a test event).
    pub fn webhook_row(&self, id: &str) -> Result<WebhookRow> {
        self.store
            .webhook(id)?
            .ok_or_else(|| ServiceError::NotFound(format!("no webhook {}", shown(id))))
    }

    pub fn delete_webhook(&self, id: &str) -> Result<op::WebhookInfo> {
        let w = self.webhook_row(id)?;
        self.store.delete_webhook(id)?;
        tracing::info!(webhook_id = %w.id, "webhook deleted");
        Ok(info(w, Vec::new()))
    }

    /// Claims due deliveries for this coordinator (see [`crate::store::Store::claim_deliveries`]).
    pub fn claim_deliveries(
        &self,
        lease_until_ms: u64,
        skip: &[String],
        per_webhook: usize,
    ) -> Result<Vec<Claimed>> {
        Ok(self
            .store
            .claim_deliveries(now_ms(), lease_until_ms, skip, per_webhook)?)
    }

    pub fn finish_delivery(&self, outcome: &DeliveryOutcome) -> Result<()> {
        Ok(self.store.finish_delivery(outcome)?)
    }

    pub fn prune_deliveries(&self, ended_before_ms: u64) -> Result<u64> {
        Ok(self.store.prune_deliveries(ended_before_ms)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_http_or_https_with_a_host_and_bounded() {
        assert!(check_url("https://hooks.example.com/x?y=1").is_ok());
        assert!(check_url("http://127.0.0.1:9000/").is_ok());
        for (bad, why) in [
            ("ftp://example.com/", "http:// or https://"),
            ("file:///etc/passwd", "http:// or https://"),
            ("not a url", "relative URL"),
            ("https://user:pw@example.com/", "user name or password"),
        ] {
            let e = check_url(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.starts_with("url "), "{bad}: {e}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL));
        assert!(check_url(&long)
            .unwrap_err()
            .to_string()
            .contains("longer than"));
        assert!(check_secret("short").is_err());
        assert!(check_secret(&"s".repeat(16)).is_ok());
    }
}
