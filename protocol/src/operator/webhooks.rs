//! Webhooks: `POST /v1/webhooks` [`CreateWebhook`] → [`Webhook`] (the secret shown once
//! when the coordinator generated it); `GET /v1/webhooks` → [`WebhookList`] (each with its
//! recent deliveries, never a secret); `DELETE /v1/webhooks/{id}` → [`WebhookInfo`];
//! `POST /v1/webhooks/{id}/test` → [`WebhookTest`]. Also [`WebhookEvent`], the JSON body
//! POSTed to a receiver. Only the wire shapes: which events are sent, how they are signed
//! and retried is the coordinator's.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The header carrying `sha256=HEX`, the HMAC-SHA256 of the exact body under the secret.
pub const SIGNATURE_HEADER: &str = "X-Hoist-Signature";
/// The header carrying the event's id (the same as the body's `id`).
pub const EVENT_ID_HEADER: &str = "X-Hoist-Event-Id";
/// The header carrying the event's type (the same as the body's `type`).
pub const EVENT_TYPE_HEADER: &str = "X-Hoist-Event";

/// What an event is about; a webhook subscribes to a subset of the first three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A deployment's state changed.
    Deployment,
    /// A release's state changed.
    Release,
    /// A host's standing in a deployment group changed.
    Host,
    /// Sent by `hoist webhook test` only.
    Test,
    /// A kind of a newer coordinator.
    #[serde(other)]
    Unknown,
}

impl EventKind {
    /// What a webhook may subscribe to.
    pub const SUBSCRIBABLE: [EventKind; 3] =
        [EventKind::Deployment, EventKind::Release, EventKind::Host];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Deployment => "deployment",
            EventKind::Release => "release",
            EventKind::Host => "host",
            EventKind::Test => "test",
            EventKind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<EventKind, String> {
        match s {
            "deployment" => Ok(EventKind::Deployment),
            "release" => Ok(EventKind::Release),
            "host" => Ok(EventKind::Host),
            other => Err(format!(
                "unknown event type {other:?}: expected deployment, release or host"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateWebhook {
    pub application: String,
    /// `http://` or `https://`.
    pub url: String,
    /// Empty: every kind (deployment, release, host).
    #[serde(default)]
    pub events: Vec<EventKind>,
    /// `None`: the coordinator generates one and answers it once.
    #[serde(default)]
    pub secret: Option<String>,
}

/// A webhook as created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    #[serde(flatten)]
    pub info: WebhookInfo,
    /// The generated secret, shown this once; `None` when the request gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A webhook as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookInfo {
    pub id: String,
    pub application: String,
    pub url: String,
    pub events: Vec<EventKind>,
    pub created_ms: u64,
    /// Newest first (only in lists).
    #[serde(default)]
    pub deliveries: Vec<Delivery>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet: waiting for its time, an earlier event of its subject, or sending.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Retried for as long as the coordinator retries, never answered 2xx.
    GivenUp,
    #[serde(other)]
    Unknown,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::GivenUp => "given_up",
            DeliveryStatus::Unknown => "unknown",
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event's delivery to one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub state: String,
    pub summary: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// The receiver's last HTTP status, if it answered.
    #[serde(default)]
    pub last_status: Option<u16>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// While pending: the next try is no earlier.
    pub next_attempt_ms: u64,
    pub created_ms: u64,
    #[serde(default)]
    pub ended_ms: Option<u64>,
}

/// What `POST /v1/webhooks/{id}/test` got from the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTest {
    pub event_id: String,
    /// Whether it answered 2xx.
    pub delivered: bool,
    /// Its HTTP status, if it answered.
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub error: Option<String>,
}

/// The body POSTed to a receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// Unique per event (a retried delivery carries the same one): de-duplicate on it.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When the change was written, RFC 3339 UTC.
    pub time: String,
    pub time_ms: u64,
    pub application: String,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub deployment: Option<String>,
    #[serde(default)]
    pub release: Option<String>,
    /// A host event's host name.
    #[serde(default)]
    pub host: Option<String>,
    /// The subject's state after the change (`deployment`: a deployment state; `release`: a
    /// release state; `host`: in_sync, out_of_sync, catching_up or never_deployed).
    pub state: String,
    pub summary: String,
    /// The dashboard page of the subject.
    pub link: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_body_has_its_documented_field_names() {
        let e = WebhookEvent {
            id: "ev-1".into(),
            kind: EventKind::Deployment,
            time: "2026-01-01T00:00:00Z".into(),
            time_ms: 1,
            application: "shop".into(),
            group: Some("web".into()),
            deployment: Some("d-1".into()),
            release: None,
            host: None,
            state: "succeeded".into(),
            summary: "s".into(),
            link: "http://x/deployments/d-1".into(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "deployment");
        assert_eq!(v["group"], "web");
        let back: WebhookEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        assert_eq!("host".parse::<EventKind>(), Ok(EventKind::Host));
        assert!("test".parse::<EventKind>().is_err());
    }
}
