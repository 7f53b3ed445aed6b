//! The operator CLI's HTTP client for the coordinator API: JSON requests with the operator
//! token, and errors turned into the coordinator's own sentence.
//!
//! Not here: what the calls mean (each subcommand's file) or S3 uploads (`push`).

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use hoist_protocol::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::UsageError;

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(server: &str, token: Option<&str>, ca_file: Option<&Path>) -> Result<Client> {
        let base = server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(UsageError(format!(
                "--server {server:?} must be an http:// or https:// URL"
            ))
            .into());
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("hoist/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading --ca-file {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--ca-file {}: not PEM certificates", path.display()))?;
            if certs.is_empty() {
                return Err(UsageError(format!(
                    "--ca-file {} holds no PEM certificate",
                    path.display()
                ))
                .into());
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Client {
            http,
            base,
            token: token.map(str::to_owned).filter(|t| !t.is_empty()),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The request builder with the operator token, or a usage error when there is none.
    pub fn request(&self, method: reqwest::Method, path: &str) -> Result<reqwest::RequestBuilder> {
        let token = self.token.as_deref().ok_or_else(|| {
            UsageError("no operator token: pass --token or set HOIST_TOKEN".into())
        })?;
        Ok(self.http.request(method, self.url(path)).bearer_auth(token))
    }

    /// Sends a request and decodes a JSON answer, or fails with the coordinator's sentence.
    pub async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        decode(resp).await
    }

    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        let mut msg = format!("cannot reach the coordinator at {}", self.base);
        let mut src: Option<&dyn std::error::Error> = Some(&e);
        let mut last = String::new();
        while let Some(s) = src {
            last = s.to_string();
            src = s.source();
        }
        if !last.is_empty() {
            msg.push_str(": ");
            msg.push_str(&last);
        }
        anyhow!(msg)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let req = self
            .request(reqwest::Method::GET, path)?
            .timeout(Duration::from_secs(60));
        self.send(req).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let req = self
            .request(reqwest::Method::POST, path)?
            .timeout(Duration::from_secs(60))
            .json(body);
        self.send(req).await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let req = self
            .request(reqwest::Method::PATCH, path)?
            .timeout(Duration::from_secs(60))
            .json(body);
        self.send(req).await
    }
}

/// Decodes a 2xx JSON answer; anything else becomes the `ErrorBody` sentence.
pub async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T> {
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .with_context(|| format!("reading the coordinator's answer ({status})"))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).with_context(|| {
            format!("the coordinator's answer ({status}) is not what was expected")
        });
    }
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        // The sentence may quote what a host sent.
        Ok(body) if body.problems.is_empty() => Err(anyhow!(super::esc(&body.error))),
        Ok(body) => {
            let mut text = super::esc(&body.error);
            for p in &body.problems {
                text.push_str("\n  ");
                text.push_str(&super::esc(p));
            }
            Err(anyhow!(text))
        }
        Err(_) => {
            let text = super::esc(String::from_utf8_lossy(&bytes).trim());
            let text = text.as_str();
            if text.is_empty() {
                Err(anyhow!("the coordinator answered {status}"))
            } else {
                Err(anyhow!("the coordinator answered {status}: {text}"))
            }
        }
    }
}

/// Percent-encodes one path segment (names are restricted, but stay safe).
pub fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
