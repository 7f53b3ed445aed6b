//! The only module of the agent that speaks HTTP to the coordinator.
//!
//! It builds the one `reqwest::Client` (rustls, the system's roots plus `coordinator.ca_file`,
//! the coordinator's certificate pinned by `coordinator.pin_sha256`, `proxy` from the config
//! or HTTPS_PROXY/NO_PROXY from the environment) and wraps the agent
//! routes of `hoist_protocol::agent`. It decides nothing about retries: callers get a
//! [`ClientError`] that says whether trying again makes sense and how long the server asked
//! to wait.

use std::time::Duration;

use anyhow::Context;
use hoist_protocol::agent::{
    Heartbeat, HeartbeatAck, PollRequest, PollResponse, RegisterRequest, RegisterResponse, Report,
    ReportAck,
};
use hoist_protocol::{ErrorBody, API_PREFIX, HOST_ID_HEADER};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::secret::Secret;

/// Deadline of a request other than a long poll.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The host's identity at the coordinator, kept in `host.json` (mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostCredentials {
    pub schema_version: u32,
    pub host_id: String,
    pub host_secret: String,
    /// The coordinator that issued them; a changed URL keeps them (same fleet behind a new
    /// name), but it is shown by `status`.
    pub coordinator_url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the coordinator at {url}")]
    Network {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the coordinator answered {status} to {what}: {message}")]
    Status {
        what: &'static str,
        status: u16,
        message: String,
        /// From `Retry-After` (seconds or a date), as the server sent it: callers cap it
        /// through [`crate::retry::RetryPolicy::next_delay`].
        retry_after: Option<Duration>,
    },
    #[error("the coordinator's answer to {what} could not be read")]
    Decode {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
}

impl ClientError {
    /// Whether the same request may succeed later (network trouble, 5xx, 429, 408).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Network { .. } | ClientError::Decode { .. } => true,
            ClientError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
        }
    }

    /// The coordinator refused the credentials (401): a revoked host or a wrong secret.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, ClientError::Status { status: 401, .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// Builds the agent's HTTP client from the config (custom CA, proxy); `coordinator`
    /// must be configured. Bundle downloads share it (see [`Client::http`]).
    pub fn new(config: &Config) -> anyhow::Result<Client> {
        let coordinator = config
            .coordinator
            .as_ref()
            .context("the config has no coordinator section")?;
        // A long poll is silent until it answers, so reads may idle a little longer than it.
        let read_timeout = Duration::from_secs(config.poll.wait_secs.max(45) + 15);
        let pin = coordinator.pin()?;
        let http = crate::bundle::fetch::http_client(
            coordinator.ca_file.as_deref(),
            pin.as_ref(),
            config.proxy.as_deref(),
            Duration::from_secs(10),
            read_timeout,
        )?;
        Ok(Client {
            http,
            base: coordinator.url.trim_end_matches('/').to_string(),
        })
    }

    /// The underlying client, for bundle downloads that share its TLS and proxy settings.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{API_PREFIX}{path}", self.base)
    }

    pub async fn register(
        &self,
        token: &Secret,
        req: &RegisterRequest,
    ) -> Result<RegisterResponse, ClientError> {
        let url = self.url("/hosts/register");
        let resp = self
            .http
            .post(&url)
            .bearer_auth(token.expose())
            .json(req)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|source| ClientError::Network { url, source })?;
        decode(resp, "registration").await
    }

    /// A long poll: held by the coordinator up to `req.wait_secs`.
    pub async fn poll(
        &self,
        host: &HostCredentials,
        req: &PollRequest,
    ) -> Result<PollResponse, ClientError> {
        let wait = req.wait_secs.unwrap_or(30);
        self.post_as_host(
            host,
            "/hosts/poll",
            req,
            Duration::from_secs(wait + 15),
            "poll",
        )
        .await
    }

    /// Tells the coordinator this host is alive while it runs `req.command_id`.
    pub async fn heartbeat(
        &self,
        host: &HostCredentials,
        req: &Heartbeat,
    ) -> Result<HeartbeatAck, ClientError> {
        self.post_as_host(host, "/hosts/heartbeat", req, REQUEST_TIMEOUT, "heartbeat")
            .await
    }

    pub async fn report(
        &self,
        host: &HostCredentials,
        command_id: &str,
        report: &Report,
    ) -> Result<ReportAck, ClientError> {
        // The id comes from the coordinator: one path segment, whatever it holds.
        let path = format!("/commands/{}/reports", path_segment(command_id));
        self.post_as_host(host, &path, report, REQUEST_TIMEOUT, "event report")
            .await
    }

    /// POSTs `body` to `path` with the host's credentials and decodes the answer.
    async fn post_as_host<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        host: &HostCredentials,
        path: &str,
        body: &B,
        timeout: Duration,
        what: &'static str,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let resp = self
            .http
            .post(&url)
            .header(HOST_ID_HEADER, &host.host_id)
            .bearer_auth(&host.host_secret)
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|source| ClientError::Network { url, source })?;
        decode(resp, what).await
    }
}

/// `segment` percent-encoded for use as one URL path segment: every byte but RFC 3986's
/// unreserved characters, so `/`, `..`, `?` and `#` cannot change the route.
pub fn path_segment(segment: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    // `.` and `..` alone are still dot segments that a URL parser resolves.
    match out.as_str() {
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        _ => out,
    }
}

async fn decode<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    what: &'static str,
) -> Result<T, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return resp
            .json::<T>()
            .await
            .map_err(|source| ClientError::Decode { what, source });
    }
    let retry_after = crate::retry::retry_after(resp.headers());
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&text)
        .map(|b| b.error)
        .unwrap_or_else(|_| {
            let t = text.trim();
            if t.is_empty() {
                status.canonical_reason().unwrap_or("error").to_string()
            } else {
                t.chars().take(300).collect()
            }
        });
    Err(ClientError::Status {
        what,
        status: status.as_u16(),
        message,
        retry_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        for (raw, encoded) in [
            ("c-1_a.b~", "c-1_a.b~"),
            ("c 1/../x?y#z", "c%201%2F..%2Fx%3Fy%23z"),
            ("..", "%2E%2E"),
            (".", "%2E"),
            ("é%", "%C3%A9%25"),
        ] {
            assert_eq!(path_segment(raw), encoded, "{raw:?}");
        }
    }
}
