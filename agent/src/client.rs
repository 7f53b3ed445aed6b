//! The only module of the agent that speaks HTTP to the coordinator.
//!
//! It builds the one `reqwest::Client` ([`http_client`]: rustls, the system's roots plus
//! `coordinator.ca_file`, the coordinator's certificate pinned by `coordinator.pin_sha256`,
//! `proxy` from the config or HTTPS_PROXY/NO_PROXY from the environment), which bundle
//! downloads are handed too, and wraps the agent routes of `hoist_protocol::agent`, the
//! bundle store's included ([`CoordinatorAccess`]: `bundle::fetch` streams and verifies what
//! it returns, but the route and the host's credentials are this module's).
//!
//! With several coordinator URLs (`coordinator.urls`, replicas of one coordinator), a
//! request goes to the URL that answered last; a connection error or a 5xx sends it on to
//! the next URL at once, within the same call, so a dying replica costs a host no backoff.
//! Once requests have left the first URL, one request every `poll.max_backoff_secs` (the
//! longest the agent waits before trying a failed coordinator again) tries the first again. Replicas share one database, and reports are idempotent on (command id, seq), so a
//! request resent to another replica is recorded once.
//!
//! It decides nothing about retries beyond that: callers get a [`ClientError`] that says
//! whether trying again makes sense and how long the server asked to wait.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hoist_protocol::agent::{
    Heartbeat, HeartbeatAck, PollRequest, PollResponse, RegisterRequest, RegisterResponse, Report,
    ReportAck,
};
use hoist_protocol::{ErrorBody, API_PREFIX, HOST_ID_HEADER};
use reqwest::RequestBuilder;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::config::{CertPin, Config};
use crate::retry::RetryPolicy;
use crate::state::HostCredentials;
use hoist_protocol::secret::Secret;

/// Deadline of a request other than a long poll.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Why the HTTP client could not be built from the config.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("reading CA file {path}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("invalid proxy URL {url:?}")]
    Proxy {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("building the HTTP client")]
    Build(#[source] reqwest::Error),
    #[error("TLS settings: {0}")]
    Tls(String),
}

/// How the host reaches the coordinator's bundle store: the coordinator's URL and the
/// host's credentials. `bundle::fetch` streams and verifies the download; the route and the
/// credentials it carries are this module's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorAccess {
    /// e.g. `https://hoist.example.internal:8443`.
    pub base_url: String,
    pub host_id: String,
    pub host_secret: Secret,
}

impl CoordinatorAccess {
    /// The store's URL of the bundle whose sha256 is `sha256` (64 hex digits, checked by the
    /// caller).
    pub fn bundle_url(&self, sha256: &str) -> String {
        format!(
            "{}{API_PREFIX}/bundles/{sha256}",
            self.base_url.trim_end_matches('/')
        )
    }

    /// A GET of `url` (from [`CoordinatorAccess::bundle_url`]) with the host's credentials.
    pub fn bundle_request(&self, http: &reqwest::Client, url: reqwest::Url) -> RequestBuilder {
        http.get(url)
            .header(HOST_ID_HEADER, &self.host_id)
            .bearer_auth(self.host_secret.expose())
    }
}

/// The coordinator's URLs and which of them requests go to now.
#[derive(Debug)]
struct Endpoints {
    /// Base URLs without a trailing `/`, in the config's order.
    bases: Vec<String>,
    /// How long requests stay on a later URL before one tries the first again.
    return_after: Duration,
    now: Mutex<Current>,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    /// Index into `bases` of the URL requests go to.
    index: usize,
    /// When the first URL last failed, while requests go elsewhere.
    first_failed: Option<Instant>,
}

impl Endpoints {
    fn new(urls: &[&str], return_after: Duration) -> Endpoints {
        Endpoints {
            bases: urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            return_after,
            now: Mutex::new(Current {
                index: 0,
                first_failed: None,
            }),
        }
    }

    fn current(&self) -> Current {
        // The guarded value is two plain fields, consistent after any panic.
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the next request starts: the URL in use, or the first once `return_after` has
    /// passed since it failed.
    fn start(&self) -> usize {
        let c = self.current();
        match c.first_failed {
            Some(at) if c.index != 0 && at.elapsed() >= self.return_after => 0,
            _ => c.index,
        }
    }

    /// `index` could not be reached or answered 5xx.
    fn failed(&self, index: usize) {
        let mut c = self.now.lock().unwrap_or_else(|e| e.into_inner());
        if index == 0 {
            c.first_failed = Some(Instant::now());
        }
        if c.index == index && self.bases.len() > 1 {
            c.index = (index + 1) % self.bases.len();
            warn!(
                from = %self.bases[index],
                to = %self.bases[c.index],
                "coordinator unreachable; switching to the next URL"
            );
        }
    }

    /// `index` answered: requests stay on it.
    fn answered(&self, index: usize) {
        let mut c = self.now.lock().unwrap_or_else(|e| e.into_inner());
        if c.index != index {
            info!(url = %self.bases[index], "coordinator answers; requests go to it");
            c.index = index;
        }
        if index == 0 {
            c.first_failed = None;
        }
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoints: Arc<Endpoints>,
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
        let http = http_client(
            coordinator.ca_file.as_deref(),
            pin.as_ref(),
            config.proxy.as_deref(),
            Duration::from_secs(10),
            read_timeout,
        )?;
        let urls = coordinator.urls();
        if urls.is_empty() {
            anyhow::bail!("the config names no coordinator URL");
        }
        Ok(Client {
            http,
            endpoints: Arc::new(Endpoints::new(
                &urls,
                RetryPolicy::from_config(&config.poll).max,
            )),
        })
    }

    /// The underlying client, for bundle downloads that share its TLS and proxy settings.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The coordinator URL requests go to now.
    pub fn base_url(&self) -> &str {
        &self.endpoints.bases[self.endpoints.current().index]
    }

    /// The bundle store of the coordinator URL in use, for the registered host `host`.
    pub fn coordinator_access(&self, host: &HostCredentials) -> CoordinatorAccess {
        CoordinatorAccess {
            base_url: self.base_url().to_string(),
            host_id: host.host_id.clone(),
            host_secret: Secret::new(host.host_secret.clone()),
        }
    }

    /// Sends the request `build` makes for a base URL, from the URL in use on through the
    /// others while they cannot be reached or answer 5xx; the last answer or error is the
    /// caller's.
    async fn send(
        &self,
        path: &str,
        build: impl Fn(String) -> RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let e = &self.endpoints;
        let n = e.bases.len();
        let start = e.start();
        let mut last = None;
        for k in 0..n {
            let index = (start + k) % n;
            let url = format!("{}{API_PREFIX}{path}", e.bases[index]);
            match build(url.clone()).send().await {
                Ok(resp) if resp.status().is_server_error() && k + 1 < n => {
                    debug!(url = %url, status = %resp.status(), "trying the next coordinator URL");
                    e.failed(index);
                }
                Ok(resp) => {
                    if !resp.status().is_server_error() {
                        e.answered(index);
                    } else {
                        e.failed(index);
                    }
                    return Ok(resp);
                }
                Err(source) => {
                    e.failed(index);
                    last = Some(ClientError::Network { url, source });
                }
            }
        }
        // n >= 1 (checked in `new`), and every pass that does not return sets `last` or
        // answers: only a network error can end the loop.
        Err(last.unwrap_or_else(|| ClientError::Status {
            what: "request",
            status: 503,
            message: "no coordinator URL answered".into(),
            retry_after: None,
        }))
    }

    pub async fn register(
        &self,
        token: &Secret,
        req: &RegisterRequest,
    ) -> Result<RegisterResponse, ClientError> {
        let resp = self
            .send("/hosts/register", |url| {
                self.http
                    .post(url)
                    .bearer_auth(token.expose())
                    .json(req)
                    .timeout(REQUEST_TIMEOUT)
            })
            .await?;
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

    /// Tells the coordinator about a rollback made on the host (`hoist-agent rollback`).
    pub async fn local_rollback(
        &self,
        host: &HostCredentials,
        req: &hoist_protocol::agent::LocalRollback,
    ) -> Result<hoist_protocol::agent::LocalRollbackAck, ClientError> {
        self.post_as_host(
            host,
            "/hosts/rollbacks",
            req,
            REQUEST_TIMEOUT,
            "local rollback",
        )
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
        let resp = self
            .send(path, |url| {
                self.http
                    .post(url)
                    .header(HOST_ID_HEADER, &host.host_id)
                    .bearer_auth(&host.host_secret)
                    .json(body)
                    .timeout(timeout)
            })
            .await?;
        decode(resp, what).await
    }
}

/// The agent's one HTTP client, for the coordinator's API and (passed to `bundle::fetch`)
/// bundle downloads: an idle-read timeout rather than a total one (bundles can be large; API calls set
/// their own per-request limits), an optional PEM bundle of extra CAs, an optional pin of the
/// coordinator's certificate (see [`crate::tls`]), and a proxy from the config or else
/// reqwest's handling of `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`.
pub fn http_client(
    ca_file: Option<&Path>,
    pin: Option<&CertPin>,
    proxy: Option<&str>,
    connect_timeout: Duration,
    read_timeout: Duration,
) -> Result<reqwest::Client, HttpClientError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("hoist-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect_timeout)
        .read_timeout(read_timeout);
    if let Some(url) = proxy {
        let proxy = reqwest::Proxy::all(url)
            .map_err(|source| HttpClientError::Proxy {
                url: url.to_string(),
                source,
            })?
            .no_proxy(reqwest::NoProxy::from_env());
        builder = builder.proxy(proxy);
    }
    if let Some(pin) = pin {
        let tls = crate::tls::pinned_config(pin, ca_file).map_err(HttpClientError::Tls)?;
        return builder
            .use_preconfigured_tls(tls)
            .build()
            .map_err(HttpClientError::Build);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| HttpClientError::CaFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| HttpClientError::CaFile {
                path: path.to_path_buf(),
                source: Box::new(e),
            })?;
        if certs.is_empty() {
            return Err(HttpClientError::CaFile {
                path: path.to_path_buf(),
                source: "no PEM certificate in the file".into(),
            });
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(HttpClientError::Build)
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn http_client_rejects_a_ca_file_without_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");
        for path in [&ca, &missing] {
            let err = http_client(
                Some(path),
                None,
                None,
                Duration::from_secs(1),
                Duration::from_secs(1),
            )
            .unwrap_err();
            assert!(matches!(err, HttpClientError::CaFile { .. }), "{err:?}");
            assert_eq!(
                err.to_string(),
                format!("reading CA file {}", path.display())
            );
        }
    }

    #[test]
    fn coordinator_access_does_not_print_the_secret() {
        let s = CoordinatorAccess {
            base_url: "http://c".into(),
            host_id: "h".into(),
            host_secret: Secret::new("hunter2"),
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }

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
