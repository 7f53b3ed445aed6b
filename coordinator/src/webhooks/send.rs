//! One POST of one event to one receiver: the HTTP client (rustls, short timeouts, no
//! redirects followed), the signed body, and what the receiver answered (its status, and
//! at most [`MAX_READ`] bytes of its body for the error). Not here: retries or records.

use std::time::Duration;

use futures_util::StreamExt;
use hoist_protocol::operator::{
    WebhookEvent, EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER,
};
use hoist_protocol::secret::Secret;
use hoist_protocol::text::esc;

/// Longest wait for a receiver's TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a whole send may take, answer included.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of a receiver's answer read (for the error of a non-2xx answer).
pub const MAX_READ: usize = 512;

/// How one send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it is not delivered.
    pub error: Option<String>,
}

impl Attempt {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The client every send uses: redirects are not followed (a 3xx is a failed try), so a
/// receiver cannot send a signed body elsewhere.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(TOTAL_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hoist-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// POSTs `event` to `url`, signed with `secret`.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    secret: &Secret,
    event: &WebhookEvent,
) -> Attempt {
    // A plain struct of strings serialises without fail.
    let body = serde_json::to_vec(event).unwrap_or_default();
    let sig = super::signature(secret.expose().as_bytes(), &body);
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, sig)
        .header(EVENT_ID_HEADER, &event.id)
        .header(EVENT_TYPE_HEADER, event.kind.as_str())
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            return Attempt {
                status: None,
                error: Some(describe(&e)),
            }
        }
    };
    let status = resp.status();
    if status.is_success() {
        return Attempt {
            status: Some(status.as_u16()),
            error: None,
        };
    }
    let mut head = Vec::new();
    let mut stream = resp.bytes_stream();
    while head.len() < MAX_READ {
        match tokio::time::timeout(TOTAL_TIMEOUT, stream.next()).await {
            Ok(Some(Ok(chunk))) => head.extend_from_slice(&chunk),
            _ => break,
        }
    }
    head.truncate(MAX_READ);
    let text = String::from_utf8_lossy(&head);
    let text = esc(text.trim());
    Attempt {
        status: Some(status.as_u16()),
        error: Some(if text.is_empty() {
            format!("answered {status}")
        } else {
            format!("answered {status}: {text}")
        }),
    }
}

/// A failed send's reason, its causes included, without the URL (it may carry a token).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "sending failed"
    };
    let mut s = what.to_owned();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    esc(&s)
}
