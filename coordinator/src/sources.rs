//! Looking at pipeline sources, for `hoist server`: once a second the sources due a look
//! (`Service::due_sources`) are looked at, one after the other, and each outcome is handed
//! to `Service::source_looked`, which decides under the store lock.
//!
//! - Git: `git ls-remote URL refs/heads/BRANCH` (no terminal prompt, a time limit); the
//!   head commit is the reference, the revision that commit.
//! - S3: a signed HEAD gives the object's version id (or its ETag when the bucket keeps no
//!   versions); a new one is read with a signed GET (of that version) and streamed into the
//!   bundle store, hashed on the way; a body shorter or longer than announced, or an ETag
//!   that changed during the read, is a failed look, so no release is made from a
//!   half-read object.
//!
//! Deliberately not here: any rule about releases (`service::pipelines::sources`).

use std::sync::Arc;
use std::time::Duration;

use hoist_protocol::agent::Revision;
use hoist_protocol::operator::PipelineSource;
use rusty_s3::S3Action;
use tokio_util::sync::CancellationToken;

use crate::s3::S3Settings;
use crate::service::pipelines::sources::{Due, Look};
use crate::service::{now_ms, Service};

/// Longest a `git ls-remote` or an S3 HEAD may take.
const LOOK_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest an S3 object's copy may take.
const COPY_TIMEOUT: Duration = Duration::from_secs(1800);
/// How much of a failing command's output goes into the error shown.
const MAX_ERROR: usize = 512;

/// What the watcher needs besides the service.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Largest object an S3 source copies (the bundle store's upload cap).
    pub max_bundle_bytes: u64,
    /// The S3 endpoint and credentials (`AWS_*` variables), when set.
    pub s3: Option<S3Settings>,
}

/// Looks at due sources until `cancel`.
pub async fn watch(service: Arc<Service>, settings: SourceSettings, cancel: CancellationToken) {
    let http = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "building the HTTP client of pipeline sources");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let s = service.clone();
        let due = match tokio::task::spawn_blocking(move || s.due_sources(now_ms())).await {
            Ok(Ok(due)) => due,
            Ok(Err(e)) => {
                tracing::error!(error = %crate::service::error_chain(&e), "reading pipeline sources");
                continue;
            }
            Err(_) => continue,
        };
        for d in due {
            let look = tokio::select! {
                _ = cancel.cancelled() => return,
                look = look_at(&service, &settings, &http, &d) => look,
            };
            let s = service.clone();
            let result = tokio::task::spawn_blocking(move || s.source_looked(&d, look)).await;
            if let Ok(Err(e)) = result {
                tracing::error!(error = %crate::service::error_chain(&e), "recording a pipeline source's look");
            }
        }
    }
}

async fn look_at(
    service: &Service,
    settings: &SourceSettings,
    http: &reqwest::Client,
    d: &Due,
) -> Look {
    match &d.source {
        PipelineSource::Git { url, branch, .. } => match git_head(url, branch).await {
            Ok(commit) if d.last.as_deref() == Some(commit.as_str()) => Look::Unchanged,
            Ok(commit) => Look::Found {
                reference: commit.clone(),
                revision: Revision::Git {
                    repository: url.clone(),
                    commit,
                },
            },
            Err(e) => Look::Failed(e),
        },
        PipelineSource::S3 { bucket, key, .. } => {
            let Some(s3) = &settings.s3 else {
                return Look::Failed(
                    "no S3 credentials: start hoist server with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
                );
            };
            match s3_look(service, settings, s3, http, bucket, key, d.last.as_deref()).await {
                Ok(look) => look,
                Err(e) => Look::Failed(e),
            }
        }
    }
}

/// The commit at the head of `branch` in `url`.
async fn git_head(url: &str, branch: &str) -> Result<String, String> {
    let refname = format!("refs/heads/{branch}");
    let mut cmd = tokio::process::Command::new("git");
    cmd.args(["ls-remote", "--exit-code", url, &refname])
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(LOOK_TIMEOUT, cmd.output()).await {
        Err(_) => {
            return Err(format!(
                "git ls-remote {url} took over {} s",
                LOOK_TIMEOUT.as_secs()
            ))
        }
        Ok(Err(e)) => return Err(format!("running git ls-remote: {e}")),
        Ok(Ok(out)) => out,
    };
    if out.status.code() == Some(2) {
        return Err(format!("no branch {branch} in {url}"));
    }
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let text = text.trim();
        let start = text.len().saturating_sub(MAX_ERROR);
        let tail = text.get(start..).unwrap_or(text);
        return Err(format!(
            "git ls-remote {url} failed ({}): {tail}",
            out.status
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        if let Some((sha, name)) = line.split_once('\t') {
            let full = matches!(sha.len(), 40 | 64) && sha.bytes().all(|b| b.is_ascii_hexdigit());
            if name == refname && full {
                return Ok(sha.to_ascii_lowercase());
            }
        }
    }
    Err(format!("git ls-remote {url} named no commit for {refname}"))
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Looks at `s3://bucket/key`; copies a new version into the bundle store.
async fn s3_look(
    service: &Service,
    settings: &SourceSettings,
    s3: &S3Settings,
    http: &reqwest::Client,
    bucket: &str,
    key: &str,
    last: Option<&str>,
) -> Result<Look, String> {
    let where_ = format!("s3://{bucket}/{key}");
    let b = s3.bucket(bucket).map_err(|e| e.to_string())?;
    let creds = s3.credentials();
    let head_url = b
        .head_object(Some(&creds), key)
        .sign(Duration::from_secs(300));
    let head = http
        .head(head_url)
        .timeout(LOOK_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("reaching {where_} at {}: {}", s3.endpoint, e.without_url()))?;
    if !head.status().is_success() {
        return Err(format!("{where_}: S3 answered {}", head.status()));
    }
    let etag = header(&head, "etag");
    let version = header(&head, "x-amz-version-id").filter(|v| v != "null");
    let Some(reference) = version.clone().or_else(|| etag.clone()) else {
        return Err(format!(
            "{where_}: S3 gave neither a version id nor an ETag"
        ));
    };
    if last == Some(reference.as_str()) {
        return Ok(Look::Unchanged);
    }
    let mut get = b.get_object(Some(&creds), key);
    if let Some(v) = &version {
        get.query_mut().insert("versionId", v.clone());
    }
    let get_url = get.sign(Duration::from_secs(COPY_TIMEOUT.as_secs()));
    let resp = http
        .get(get_url)
        .timeout(COPY_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("reading {where_}: {}", e.without_url()))?;
    if !resp.status().is_success() {
        return Err(format!("reading {where_}: S3 answered {}", resp.status()));
    }
    if version.is_none() && header(&resp, "etag") != etag {
        return Err(format!(
            "{where_} changed while it was read; looking again later"
        ));
    }
    let announced = resp.content_length();
    if let Some(n) = announced.filter(|&n| n > settings.max_bundle_bytes) {
        return Err(format!(
            "{where_} has {n} bytes, over the bundle limit of {}",
            settings.max_bundle_bytes
        ));
    }
    let Some(announced) = announced else {
        return Err(format!("{where_}: S3 announced no length"));
    };
    let (sha256, size) = service
        .bundles()
        .put(futures_util::StreamExt::map(resp.bytes_stream(), |r| {
            r.map_err(reqwest::Error::without_url)
        }))
        .await
        .map_err(|e| format!("copying {where_}: {}", crate::service::error_chain(&e)))?;
    if size != announced {
        return Err(format!(
            "copying {where_}: {size} bytes read of the {announced} announced"
        ));
    }
    tracing::info!(source = %where_, version = %reference, %sha256, size, "pipeline source copied");
    Ok(Look::Found {
        reference,
        revision: Revision::Coordinator { sha256, size },
    })
}
