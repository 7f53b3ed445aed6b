//! Fetching a revision's bundle onto the host: S3-compatible storage, an HTTP(S) URL, the
//! coordinator's bundle store, or a Git repository pinned to a commit.
//!
//! Archives are streamed to `WORK_DIR/bundle.part` with the sha256 computed on the way, and
//! renamed to `WORK_DIR/bundle` only once the digest matches the revision's (compared without
//! regard to case); a mismatch fails with `bundle checksum mismatch: expected …, got …` and
//! leaves no `bundle` behind. Downloads are retried with exponential backoff and jitter on
//! connection errors, 408, 429 (honouring `Retry-After`) and 5xx, never on other 4xx, and
//! resumed with `Range` (plus `If-Range`) after a dropped connection; a server that answers 200
//! to a range request is read again from the start. The size cap stops a download as soon as it
//! is exceeded. A Git revision is fetched (shallow where the server serves a bare commit id,
//! every ref otherwise), confirmed to be exactly the given commit, and checked out without
//! `.git` into the directory `WORK_DIR/bundle`.
//!
//! This module does not extract archives (see [`super::extract`]), decide where work
//! directories live, or fetch over SSH (`git` runs with `GIT_ALLOW_PROTOCOL=file:git:http:https`
//! and no keys). The size cap applies to archives only.
//!
//! Interface (owned by this module):
//! - [`fetch`]`(revision, work_dir, client, settings, cancel)` → [`Fetched`] or [`FetchError`];
//!   on error nothing named `bundle` or `bundle.part` is left in `work_dir`.
//! - [`FetchSettings`] (built by [`FetchSettings::from_config`]) with [`S3Settings`] (see
//!   [`S3Settings::with_env_defaults`] for the `AWS_*` variables), the coordinator's store
//!   ([`crate::client::CoordinatorAccess`]) and [`GitSettings`] / [`GitAuth`]; secrets are
//!   [`Secret`]s, which print as `***`.
//! - The HTTP client is the agent's one, built by [`crate::client::http_client`] and passed
//!   in; a coordinator-store request (route and credentials) comes from `client` too.
//!
//! Secrets never reach logs or error messages: URLs are shown without their query string and
//! user info, S3 revisions as `s3://bucket/key`, and Git credentials travel in the child's
//! environment (a credential helper reading it), never in its arguments.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hoist_protocol::agent::Revision;
use reqwest::header::RANGE;
use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED};
use reqwest::{RequestBuilder, StatusCode, Url};
use rusty_s3::S3Action;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::client::CoordinatorAccess;
use crate::config::Config;
use crate::retry::{retry_after, RetryPolicy};
use crate::state::HostCredentials;

/// File name of a fetched archive, or directory name of a checked-out Git revision, in the
/// work directory.
pub const BUNDLE_NAME: &str = "bundle";
/// File name of an archive while it is being downloaded.
pub const PART_NAME: &str = "bundle.part";

/// Secrets (S3 keys, host secret, Git passwords) print as `***`.
pub use crate::secret::Secret;

/// Everything [`fetch`] needs besides the revision and the HTTP client.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub s3: S3Settings,
    /// How to reach the coordinator's bundle store; `None` refuses coordinator revisions.
    pub coordinator: Option<CoordinatorAccess>,
    pub git: GitSettings,
    /// Largest archive accepted, in bytes; the download stops as soon as it is exceeded.
    pub max_bytes: u64,
    /// Retries after the first attempt of an HTTP download. An attempt that made progress
    /// (wrote bytes) resets the count, so a long download over a flaky link keeps going.
    pub retries: u32,
    /// The agent's one retry policy (the config's `poll` backoff): delays between attempts,
    /// and the cap on a server's `Retry-After`.
    pub retry: RetryPolicy,
    /// Lifetime of the presigned S3 URL made for each attempt.
    pub s3_presign_ttl: Duration,
}

impl FetchSettings {
    /// What the bundle fetchers need from the config: S3 settings (the AWS_* environment fills
    /// gaps), Git credentials, the download cap, the retry policy, and the coordinator's store
    /// when the host is registered (`host`).
    pub fn from_config(config: &Config, host: Option<&HostCredentials>) -> FetchSettings {
        let s3 = S3Settings {
            endpoint: config.s3.endpoint.clone(),
            region: config.s3.region.clone(),
            // Custom endpoints (MinIO, Garage, Ceph) are usually path-style.
            path_style: config.s3.path_style.unwrap_or(config.s3.endpoint.is_some()),
            access_key_id: config.s3.access_key_id.clone(),
            secret_access_key: config.s3.secret_access_key.clone(),
            session_token: config.s3.session_token.clone(),
        }
        .with_env_defaults();
        let mut git = GitSettings::default();
        if let (Some(username), Some(password)) = (&config.git.username, &config.git.password) {
            git.auth = Some(GitAuth::Basic {
                username: username.clone(),
                password: password.clone(),
            });
        }
        git.auth_hosts = config.git.hosts.clone();
        git.ca_file = config.coordinator.as_ref().and_then(|c| c.ca_file.clone());
        FetchSettings {
            s3,
            coordinator: match (&config.coordinator, host) {
                (Some(c), Some(h)) => Some(CoordinatorAccess::new(c, h)),
                _ => None,
            },
            git,
            max_bytes: config.bundles.max_download_bytes,
            retry: RetryPolicy::from_config(&config.poll),
            ..FetchSettings::default()
        }
    }
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            s3: S3Settings::default(),
            coordinator: None,
            git: GitSettings::default(),
            max_bytes: 8 * 1024 * 1024 * 1024,
            retries: 5,
            retry: RetryPolicy::default(),
            s3_presign_ttl: Duration::from_secs(3600),
        }
    }
}

/// S3-compatible storage: where it is and the agent's credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// e.g. `http://127.0.0.1:9000`; `None` means AWS (`https://s3.<region>.amazonaws.com`).
    pub endpoint: Option<String>,
    /// `None` means `us-east-1`.
    pub region: Option<String>,
    /// `endpoint/bucket/key` instead of `bucket.endpoint/key`.
    pub path_style: bool,
    /// Without an access key the request is sent unsigned (public buckets).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
}

impl S3Settings {
    /// Fills what the configuration left unset from the process environment, as the AWS tools
    /// do: see [`S3Settings::with_env_defaults_from`].
    pub fn with_env_defaults(self) -> Self {
        self.with_env_defaults_from(|name| std::env::var(name).ok())
    }

    /// Settings from the environment alone.
    pub fn from_env() -> Self {
        S3Settings::default().with_env_defaults()
    }

    /// Fills gaps from `var`: credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN` (only when the configuration gave no access key, so a configured key
    /// is never paired with another's secret), the region from `AWS_REGION` then
    /// `AWS_DEFAULT_REGION`, the endpoint from `AWS_ENDPOINT_URL_S3` then `AWS_ENDPOINT_URL`.
    pub fn with_env_defaults_from(mut self, var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        if self.access_key_id.is_none() {
            if let (Some(key), Some(secret)) =
                (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
            {
                self.access_key_id = Some(key);
                self.secret_access_key = Some(Secret::new(secret));
                self.session_token = var("AWS_SESSION_TOKEN").map(Secret::new);
            }
        }
        if self.region.is_none() {
            self.region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION"));
        }
        if self.endpoint.is_none() {
            self.endpoint = var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL"));
        }
        self
    }

    fn region(&self) -> &str {
        self.region.as_deref().unwrap_or("us-east-1")
    }
}

/// How `git` is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSettings {
    /// The `git` program; looked up on `PATH` when not absolute.
    pub program: PathBuf,
    /// Credentials for smart HTTP(S) repositories; sent only to a repository on one of
    /// `auth_hosts`, over HTTPS (or plain HTTP to a loopback address, which never leaves the
    /// machine), and only when the server asks.
    pub auth: Option<GitAuth>,
    /// Where `auth` may go: `host` (any port) or `host:port`, as in the config's `git.hosts`.
    /// Empty: nowhere.
    pub auth_hosts: Vec<String>,
    /// Limit for each `git` command.
    pub timeout: Duration,
    /// Extra CA bundle for HTTPS repositories (`GIT_SSL_CAINFO`).
    pub ca_file: Option<PathBuf>,
}

impl Default for GitSettings {
    fn default() -> Self {
        GitSettings {
            program: PathBuf::from("git"),
            auth: None,
            auth_hosts: Vec::new(),
            timeout: Duration::from_secs(600),
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitAuth {
    /// HTTP Basic, e.g. a user and a personal access token.
    Basic { username: String, password: Secret },
    /// `Authorization: Bearer <token>`.
    Bearer { token: Secret },
}

/// A verified revision on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// An archive (format not yet known) whose sha256 matched; `sha256` is lowercase hex.
    Archive {
        path: PathBuf,
        sha256: String,
        bytes: u64,
    },
    /// A Git checkout without `.git`, at exactly `commit` (lowercase hex).
    Directory { path: PathBuf, commit: String },
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("bundle checksum mismatch: expected {expected}, got {got}")]
    ChecksumMismatch { expected: String, got: String },
    #[error("invalid revision: {0}")]
    InvalidRevision(String),
    #[error("{0} revisions are not configured on this host")]
    NotConfigured(&'static str),
    #[error("invalid s3 settings: {0}")]
    S3Settings(String),
    #[error("invalid git settings: {0}")]
    GitSettings(String),
    #[error("fetching {url}: server answered {status}{detail}")]
    HttpStatus {
        url: String,
        status: u16,
        /// ` ` and the status's reason phrase, then `: ` and an S3 error code when the body
        /// holds a well-formed one; never other text from the body.
        detail: String,
    },
    #[error("fetching {url}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("fetching {url}: etag mismatch: expected {expected}, got {got}")]
    EtagMismatch {
        url: String,
        expected: String,
        got: String,
    },
    #[error("fetching {url}: bundle exceeds the limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("fetching {url}: gave up after {attempts} attempts")]
    GaveUp {
        url: String,
        attempts: u32,
        #[source]
        last: Box<FetchError>,
    },
    #[error("git {op} of {repository} failed ({status}): {stderr}")]
    Git {
        op: &'static str,
        repository: String,
        status: String,
        stderr: String,
    },
    #[error("git {op} of {repository} timed out after {}", humantime::format_duration(*after))]
    GitTimeout {
        op: &'static str,
        repository: String,
        after: Duration,
    },
    #[error("commit {commit} not found in {repository}")]
    CommitNotFound { repository: String, commit: String },
    #[error("running {program}")]
    GitSpawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fetch cancelled")]
    Cancelled,
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FetchError {
    fn io<'p>(
        action: &'static str,
        path: &'p Path,
    ) -> impl FnOnce(std::io::Error) -> FetchError + 'p {
        move |source| FetchError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Fetches `revision` into `work_dir` (created if missing; an earlier `bundle` or
/// `bundle.part` there is replaced) and verifies it: the sha256 for archives, the exact commit
/// for Git. On any error nothing named `bundle` is left in `work_dir`.
pub async fn fetch(
    revision: &Revision,
    work_dir: &Path,
    client: &reqwest::Client,
    settings: &FetchSettings,
    cancel: &CancellationToken,
) -> Result<Fetched, FetchError> {
    if cancel.is_cancelled() {
        return Err(FetchError::Cancelled);
    }
    tokio::fs::create_dir_all(work_dir)
        .await
        .map_err(FetchError::io("creating", work_dir))?;
    let bundle = work_dir.join(BUNDLE_NAME);
    let part = work_dir.join(PART_NAME);
    remove_any(&bundle).await?;
    remove_any(&part).await?;

    let result = match revision {
        Revision::Coordinator { sha256, size } => {
            let access = settings
                .coordinator
                .as_ref()
                .ok_or(FetchError::NotConfigured("coordinator"))?;
            let sha256 = check_sha256(sha256)?;
            let parsed = parse_http_url(&access.bundle_url(&sha256))?;
            let shown = redact_url(&parsed);
            if *size > settings.max_bytes {
                return Err(FetchError::TooLarge {
                    url: shown,
                    limit: settings.max_bytes,
                });
            }
            let request = || access.bundle_request(client, parsed.clone());
            let source = Source {
                shown,
                sha256: &sha256,
                etag: None,
            };
            download(&source, &request, work_dir, settings, cancel).await
        }
        Revision::S3 {
            bucket,
            key,
            version_id,
            etag,
            sha256,
        } => {
            let sha256 = check_sha256(sha256)?;
            check_s3_key(key)?;
            let s3 = &settings.s3;
            let endpoint = match &s3.endpoint {
                Some(e) => e.clone(),
                None => format!("https://s3.{}.amazonaws.com", s3.region()),
            };
            let endpoint = Url::parse(&endpoint)
                .map_err(|e| FetchError::S3Settings(format!("endpoint {endpoint:?}: {e}")))?;
            let style = if s3.path_style {
                rusty_s3::UrlStyle::Path
            } else {
                rusty_s3::UrlStyle::VirtualHost
            };
            let s3_bucket =
                rusty_s3::Bucket::new(endpoint, style, bucket.clone(), s3.region().to_owned())
                    .map_err(|e| FetchError::S3Settings(format!("bucket {bucket:?}: {e}")))?;
            let credentials = match (&s3.access_key_id, &s3.secret_access_key) {
                (Some(key), Some(secret)) => Some(match &s3.session_token {
                    Some(token) => rusty_s3::Credentials::new_with_token(
                        key.clone(),
                        secret.expose().to_owned(),
                        token.expose().to_owned(),
                    ),
                    None => rusty_s3::Credentials::new(key.clone(), secret.expose().to_owned()),
                }),
                (Some(_), None) => {
                    return Err(FetchError::S3Settings(
                        "an access key id without a secret access key".into(),
                    ))
                }
                _ => None,
            };
            // A fresh presigned URL per attempt, so a long backoff never outlives its expiry.
            let request = || {
                let mut action = s3_bucket.get_object(credentials.as_ref(), key);
                if let Some(v) = version_id {
                    action.query_mut().insert("versionId", v.clone());
                }
                client.get(action.sign(settings.s3_presign_ttl))
            };
            let source = Source {
                shown: revision.describe(),
                sha256: &sha256,
                etag: etag.as_deref(),
            };
            download(&source, &request, work_dir, settings, cancel).await
        }
        Revision::Url { url, sha256 } => {
            let sha256 = check_sha256(sha256)?;
            let parsed = parse_http_url(url)?;
            let request = || client.get(parsed.clone());
            let source = Source {
                shown: redact_url(&parsed),
                sha256: &sha256,
                etag: None,
            };
            download(&source, &request, work_dir, settings, cancel).await
        }
        Revision::Git { repository, commit } => {
            fetch_git(repository, commit, work_dir, &settings.git, cancel).await
        }
        Revision::Unknown { kind } => Err(FetchError::InvalidRevision(format!(
            "unsupported revision kind {kind:?}"
        ))),
    };
    if result.is_err() {
        // Best effort: the error being returned matters more than a failed cleanup.
        let _ = remove_any(&part).await;
        let _ = remove_any(&bundle).await;
    }
    result
}

/// Removes a file or directory tree at `path` if there is one.
async fn remove_any(path: &Path) -> Result<(), FetchError> {
    match tokio::fs::symlink_metadata(path).await {
        Ok(meta) if meta.is_dir() => tokio::fs::remove_dir_all(path)
            .await
            .map_err(FetchError::io("removing", path)),
        Ok(_) => tokio::fs::remove_file(path)
            .await
            .map_err(FetchError::io("removing", path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FetchError::io("inspecting", path)(e)),
    }
}

/// The sha256 from a revision, lowercased, or an error if it is not 64 hex digits.
fn check_sha256(sha256: &str) -> Result<String, FetchError> {
    if sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(sha256.to_ascii_lowercase())
    } else {
        Err(FetchError::InvalidRevision(format!(
            "sha256 {sha256:?} is not 64 hex digits"
        )))
    }
}

/// An S3 key must name an object inside its bucket: `.` and `..` segments would be resolved
/// by the URL (`s3://bkt/../../meta/x` is a request for `/meta/x`) and empty segments are
/// a mistake; all are refused before anything is signed.
fn check_s3_key(key: &str) -> Result<(), FetchError> {
    let invalid = |what: &str| {
        Err(FetchError::InvalidRevision(format!(
            "s3 key {key:?} {what}"
        )))
    };
    if key.is_empty() {
        return invalid("is empty");
    }
    for segment in key.split('/') {
        match segment {
            "" => return invalid("has an empty segment (a leading, trailing or doubled /)"),
            "." | ".." => return invalid(&format!("has a {segment:?} segment")),
            _ => {}
        }
    }
    Ok(())
}

fn parse_http_url(url: &str) -> Result<Url, FetchError> {
    let parsed = Url::parse(url).map_err(|e| {
        // The URL itself may carry a signature: name only what is wrong with it.
        FetchError::InvalidRevision(format!("bundle url is not a valid URL: {e}"))
    })?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(FetchError::InvalidRevision(format!(
            "bundle url scheme {other:?} is not http or https"
        ))),
    }
}

/// The URL without user info, query string and fragment: safe to log and to report.
fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    // These fail only for URLs that cannot have user info, which then have none to remove.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// What is being downloaded and what it must match.
struct Source<'a> {
    /// Safe to show: no credentials, no query signature.
    shown: String,
    /// Lowercase hex.
    sha256: &'a str,
    /// The S3 object's expected ETag, quotes optional.
    etag: Option<&'a str>,
}

/// The download so far: the open `.part` file and the digest of what it holds.
struct Progress {
    file: tokio::fs::File,
    path: PathBuf,
    hasher: Sha256,
    written: u64,
    /// ETag or Last-Modified of the response being resumed, for `If-Range`.
    validator: Option<String>,
}

impl Progress {
    async fn restart(&mut self) -> Result<(), FetchError> {
        self.file
            .set_len(0)
            .await
            .map_err(FetchError::io("truncating", &self.path))?;
        self.file
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(FetchError::io("seeking in", &self.path))?;
        self.hasher = Sha256::new();
        self.written = 0;
        self.validator = None;
        Ok(())
    }
}

enum AttemptError {
    /// Worth another attempt, after `after` if the server said when.
    Retry {
        error: FetchError,
        after: Option<Duration>,
    },
    Fatal(FetchError),
}

impl From<FetchError> for AttemptError {
    fn from(error: FetchError) -> Self {
        AttemptError::Fatal(error)
    }
}

/// Builds each attempt's request afresh (an S3 URL is presigned anew).
type MakeRequest<'a> = dyn Fn() -> RequestBuilder + 'a;

/// Streams the source to `work_dir/bundle.part`, retrying and resuming, then verifies the
/// sha256 and renames the file to `work_dir/bundle`.
async fn download(
    source: &Source<'_>,
    request: &MakeRequest<'_>,
    work_dir: &Path,
    settings: &FetchSettings,
    cancel: &CancellationToken,
) -> Result<Fetched, FetchError> {
    let part = work_dir.join(PART_NAME);
    let file = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&part)
        .await
        .map_err(FetchError::io("creating", &part))?;
    let mut progress = Progress {
        file,
        path: part.clone(),
        hasher: Sha256::new(),
        written: 0,
        validator: None,
    };
    debug!(url = %source.shown, "fetching bundle");

    let mut delays = settings.retry.delays();
    let mut attempts = 0u32;
    // Failed attempts since the last one that made progress.
    let mut failures = 0u32;
    loop {
        attempts += 1;
        let before = progress.written;
        let (error, after) = match attempt(source, request, &mut progress, settings, cancel).await {
            Ok(()) => break,
            Err(AttemptError::Fatal(error)) => return Err(error),
            Err(AttemptError::Retry { error, after }) => (error, after),
        };
        if progress.written > before {
            delays = settings.retry.delays();
            failures = 0;
        }
        failures += 1;
        if failures > settings.retries {
            return Err(FetchError::GaveUp {
                url: source.shown.clone(),
                attempts,
                last: Box::new(error),
            });
        }
        let delay = settings.retry.next_delay(&mut delays, after);
        warn!(
            url = %source.shown,
            attempt = attempts,
            resume_at = progress.written,
            delay_ms = delay.as_millis() as u64,
            error = %error_chain(&error),
            "bundle download failed, will retry"
        );
        tokio::select! {
            () = cancel.cancelled() => return Err(FetchError::Cancelled),
            () = tokio::time::sleep(delay) => {}
        }
    }

    progress
        .file
        .flush()
        .await
        .map_err(FetchError::io("writing", &part))?;
    progress
        .file
        .sync_all()
        .await
        .map_err(FetchError::io("syncing", &part))?;
    drop(progress.file);
    let got = hex::encode(progress.hasher.finalize());
    if !got.eq_ignore_ascii_case(source.sha256) {
        return Err(FetchError::ChecksumMismatch {
            expected: source.sha256.to_owned(),
            got,
        });
    }
    let bundle = work_dir.join(BUNDLE_NAME);
    tokio::fs::rename(&part, &bundle)
        .await
        .map_err(FetchError::io("renaming", &part))?;
    debug!(url = %source.shown, bytes = progress.written, "bundle fetched and verified");
    Ok(Fetched::Archive {
        path: bundle,
        sha256: got,
        bytes: progress.written,
    })
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

/// One request: resumes from `progress.written` when it is not zero.
async fn attempt(
    source: &Source<'_>,
    request: &MakeRequest<'_>,
    progress: &mut Progress,
    settings: &FetchSettings,
    cancel: &CancellationToken,
) -> Result<(), AttemptError> {
    let mut builder = request();
    if progress.written > 0 {
        builder = builder.header(RANGE, format!("bytes={}-", progress.written));
        if let Some(validator) = &progress.validator {
            builder = builder.header(IF_RANGE, validator);
        }
    }
    let transport = |source_error: reqwest::Error| FetchError::Http {
        url: source.shown.clone(),
        source: source_error.without_url(),
    };
    let sent = tokio::select! {
        () = cancel.cancelled() => return Err(FetchError::Cancelled.into()),
        sent = builder.send() => sent,
    };
    let mut response = match sent {
        Ok(r) => r,
        Err(e) if e.is_builder() => return Err(transport(e).into()),
        Err(e) => {
            return Err(AttemptError::Retry {
                error: transport(e),
                after: None,
            })
        }
    };

    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        let after = retry_after(response.headers());
        let detail = error_detail(response, cancel).await;
        return Err(AttemptError::Retry {
            error: FetchError::HttpStatus {
                url: source.shown.clone(),
                status: status.as_u16(),
                detail,
            },
            after,
        });
    }
    if status == StatusCode::RANGE_NOT_SATISFIABLE && progress.written > 0 {
        // The object changed or shrank under us: start over at once.
        progress.restart().await?;
        return Err(AttemptError::Retry {
            error: FetchError::HttpStatus {
                url: source.shown.clone(),
                status: status.as_u16(),
                detail: ": range not satisfiable, restarting".into(),
            },
            after: Some(Duration::ZERO),
        });
    }
    if !status.is_success() {
        let detail = error_detail(response, cancel).await;
        return Err(FetchError::HttpStatus {
            url: source.shown.clone(),
            status: status.as_u16(),
            detail,
        }
        .into());
    }

    if status == StatusCode::PARTIAL_CONTENT {
        let start = content_range_start(response.headers());
        if start != Some(progress.written) {
            // Not the continuation asked for (or no range asked at all): restart cleanly.
            progress.restart().await?;
            if start != Some(0) {
                return Err(AttemptError::Retry {
                    error: FetchError::HttpStatus {
                        url: source.shown.clone(),
                        status: status.as_u16(),
                        detail: ": unexpected content range, restarting".into(),
                    },
                    after: Some(Duration::ZERO),
                });
            }
        }
    } else if progress.written > 0 {
        debug!(url = %source.shown, "server ignored the range, restarting the download");
        progress.restart().await?;
    }

    let response_etag = header_str(response.headers(), &ETAG);
    if let Some(expected) = source.etag {
        let got = response_etag.as_deref().unwrap_or("");
        if unquote_etag(got) != unquote_etag(expected) {
            return Err(FetchError::EtagMismatch {
                url: source.shown.clone(),
                expected: unquote_etag(expected).to_owned(),
                got: if got.is_empty() {
                    "none".to_owned()
                } else {
                    unquote_etag(got).to_owned()
                },
            }
            .into());
        }
    }
    // If-Range takes only a strong ETag or a date.
    progress.validator = response_etag
        .filter(|e| !e.starts_with("W/"))
        .or_else(|| header_str(response.headers(), &LAST_MODIFIED));

    let too_large = || FetchError::TooLarge {
        url: source.shown.clone(),
        limit: settings.max_bytes,
    };
    if let Some(length) =
        header_str(response.headers(), &CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok())
    {
        if progress.written.saturating_add(length) > settings.max_bytes {
            return Err(too_large().into());
        }
    }

    loop {
        let chunk = tokio::select! {
            () = cancel.cancelled() => return Err(FetchError::Cancelled.into()),
            chunk = response.chunk() => chunk,
        };
        let chunk = match chunk {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(AttemptError::Retry {
                    error: transport(e),
                    after: None,
                })
            }
        };
        let len = chunk.len() as u64;
        if progress.written.saturating_add(len) > settings.max_bytes {
            return Err(too_large().into());
        }
        progress
            .file
            .write_all(&chunk)
            .await
            .map_err(FetchError::io("writing", &progress.path))?;
        progress.hasher.update(&chunk);
        progress.written += len;
    }
}

fn header_str(headers: &HeaderMap, name: &reqwest::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

fn unquote_etag(etag: &str) -> &str {
    let etag = etag.trim();
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    etag.trim_matches('"')
}

/// The first byte position of `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    let value = header_str(headers, &CONTENT_RANGE)?;
    let range = value.strip_prefix("bytes ")?;
    let (start, _) = range.split_once('-')?;
    start.trim().parse().ok()
}

/// What an error response says, safe to put in a report: the status's standard reason phrase
/// and, from an S3 error body, its `<Code>` when that is a plain identifier
/// (`SignatureDoesNotMatch`). Nothing else from the body is kept: it is the server's text, of
/// any size and content, and would otherwise travel into reports and operators' terminals.
/// Reads at most a few KB.
async fn error_detail(mut response: reqwest::Response, cancel: &CancellationToken) -> String {
    const MAX: usize = 4096;
    let reason = response
        .status()
        .canonical_reason()
        .map(|r| format!(" {r}"))
        .unwrap_or_default();
    let mut body = Vec::new();
    while body.len() < MAX {
        let chunk = tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(Duration::from_secs(5)) => break,
            chunk = response.chunk() => chunk,
        };
        match chunk {
            Ok(Some(c)) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&body);
    match xml_element(&text, "Code").filter(|code| is_error_code(code)) {
        Some(code) => format!("{reason}: {code}"),
        None => reason,
    }
}

/// An S3 error code: a short identifier (`NoSuchKey`, `SlowDown`), nothing that could carry
/// a message.
fn is_error_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
}

fn xml_element<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&close)? + start;
    let value = text[start..end].trim();
    (!value.is_empty() && value.len() <= 300).then_some(value)
}

/// The commit id lowercased, or an error if it is not a full 40 or 64 hex digit id.
fn check_commit(commit: &str) -> Result<String, FetchError> {
    if (commit.len() == 40 || commit.len() == 64) && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(commit.to_ascii_lowercase())
    } else {
        Err(FetchError::InvalidRevision(format!(
            "git commit {commit:?} is not a full 40 or 64 hex digit commit id"
        )))
    }
}

/// A repository location safe to show: a URL's user info is removed.
fn redact_repository(repository: &str) -> String {
    match Url::parse(repository) {
        Ok(url) if url.has_authority() => redact_url(&url),
        _ => repository.to_owned(),
    }
}

/// Runs `git` with a clean environment and no system or global configuration.
struct GitRunner<'a> {
    settings: &'a GitSettings,
    repository: &'a str,
    shown: String,
    git_dir: PathBuf,
    env: Vec<(OsString, OsString)>,
    cancel: &'a CancellationToken,
}

struct GitOutput {
    stdout: String,
    stderr: String,
    success: bool,
    status: String,
}

impl GitRunner<'_> {
    async fn run(
        &self,
        op: &'static str,
        args: &[&std::ffi::OsStr],
    ) -> Result<GitOutput, FetchError> {
        let mut command = tokio::process::Command::new(&self.settings.program);
        command
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--git-dir")
            .arg(&self.git_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        debug!(repository = %self.shown, op, "running git");
        let child = command.spawn().map_err(|source| FetchError::GitSpawn {
            program: self.settings.program.clone(),
            source,
        })?;
        let pid = child.id();
        let kill_group = || {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // The group holds git's helpers (remote-http, upload-pack); a failure means it
                // is already gone.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        };
        let output = tokio::select! {
            () = self.cancel.cancelled() => {
                kill_group();
                return Err(FetchError::Cancelled);
            }
            () = tokio::time::sleep(self.settings.timeout) => {
                kill_group();
                return Err(FetchError::GitTimeout {
                    op,
                    repository: self.shown.clone(),
                    after: self.settings.timeout,
                });
            }
            output = child.wait_with_output() => output.map_err(|source| FetchError::GitSpawn {
                program: self.settings.program.clone(),
                source,
            })?,
        };
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if self.shown != self.repository {
            stderr = stderr.replace(self.repository, &self.shown);
        }
        // Keep the end, where git says what went wrong.
        if stderr.len() > 2000 {
            let cut = stderr.len() - 2000;
            let cut = (cut..stderr.len())
                .find(|i| stderr.is_char_boundary(*i))
                .unwrap_or(stderr.len());
            stderr = format!("…{}", &stderr[cut..]);
        }
        Ok(GitOutput {
            stdout: String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            stderr,
            success: output.status.success(),
            status: output.status.to_string(),
        })
    }

    /// Runs and turns a non-zero exit into [`FetchError::Git`].
    async fn check(
        &self,
        op: &'static str,
        args: &[&std::ffi::OsStr],
    ) -> Result<GitOutput, FetchError> {
        let out = self.run(op, args).await?;
        if out.success {
            Ok(out)
        } else {
            Err(self.failed(op, out))
        }
    }

    fn failed(&self, op: &'static str, out: GitOutput) -> FetchError {
        FetchError::Git {
            op,
            repository: self.shown.clone(),
            status: out.status,
            stderr: out.stderr,
        }
    }

    /// Whether `commit` is present as a commit object, peeled.
    async fn has_commit(&self, commit: &str) -> Result<bool, FetchError> {
        let spec = format!("{commit}^{{commit}}");
        let out = self
            .run(
                "rev-parse",
                &[
                    "rev-parse".as_ref(),
                    "--verify".as_ref(),
                    "--quiet".as_ref(),
                    "--end-of-options".as_ref(),
                    spec.as_ref(),
                ],
            )
            .await?;
        Ok(out.success && out.stdout == commit)
    }
}

/// The environment every `git` runs with.
fn git_env(home: &Path, repository: &str, settings: &GitSettings) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vec![
        (
            "PATH".into(),
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        ),
        ("HOME".into(), home.as_os_str().to_owned()),
        ("LANG".into(), "C".into()),
        ("LC_ALL".into(), "C".into()),
        ("GIT_TERMINAL_PROMPT".into(), "0".into()),
        ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
        ("GIT_ALLOW_PROTOCOL".into(), "file:git:http:https".into()),
        ("GIT_ASKPASS".into(), "".into()),
        ("SSH_ASKPASS".into(), "".into()),
    ];
    for name in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        if let Some(value) = std::env::var_os(name) {
            env.push((name.into(), value));
        }
    }
    if let Some(ca) = &settings.ca_file {
        env.push(("GIT_SSL_CAINFO".into(), ca.as_os_str().to_owned()));
    }
    if let Some(auth) = &settings.auth {
        // Credentials reach git through GIT_CONFIG_* and HOIST_GIT_* variables, never through
        // argv (visible in /proc and echoed in errors), and only for the repository's host,
        // when the config binds them to it.
        let url = Url::parse(repository)
            .ok()
            .filter(|u| may_send_credentials(u, &settings.auth_hosts));
        if url.is_none() {
            debug!(
                repository = %redact_repository(repository),
                "git credentials not offered: the repository is not on a host of git.hosts over https"
            );
        }
        if let Some(url) = url {
            let mut scope = url;
            scope.set_path("");
            scope.set_query(None);
            scope.set_fragment(None);
            let _ = scope.set_username("");
            let _ = scope.set_password(None);
            let scope = scope.as_str().trim_end_matches('/').to_owned();
            let (key, value) = match auth {
                // A credential helper rather than a preset header: git sends the credentials
                // only when challenged, and says "Authentication failed" when they are wrong.
                GitAuth::Basic { username, password } => {
                    env.push(("HOIST_GIT_USERNAME".into(), username.into()));
                    env.push(("HOIST_GIT_PASSWORD".into(), password.expose().into()));
                    (
                        format!("credential.{scope}.helper"),
                        "!f() { test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' \
                         \"$HOIST_GIT_USERNAME\" \"$HOIST_GIT_PASSWORD\"; }; f"
                            .to_owned(),
                    )
                }
                GitAuth::Bearer { token } => (
                    format!("http.{scope}/.extraHeader"),
                    format!("Authorization: Bearer {}", token.expose()),
                ),
            };
            // A preset header would follow a redirect to another host: no redirects then.
            let no_redirects = matches!(auth, GitAuth::Bearer { .. });
            env.push((
                "GIT_CONFIG_COUNT".into(),
                if no_redirects { "2" } else { "1" }.into(),
            ));
            env.push(("GIT_CONFIG_KEY_0".into(), key.into()));
            env.push(("GIT_CONFIG_VALUE_0".into(), value.into()));
            if no_redirects {
                env.push(("GIT_CONFIG_KEY_1".into(), "http.followRedirects".into()));
                env.push(("GIT_CONFIG_VALUE_1".into(), "false".into()));
            }
        }
    }
    env
}

/// Whether Git credentials may be offered to `url`: its host (or `host:port`) is one of
/// `hosts` (case-insensitive), and it is HTTPS, or plain HTTP to a loopback address (which
/// never leaves the machine). Never over plain HTTP across a network, never to a host the
/// config did not name, whatever URL a revision gives.
pub fn may_send_credentials(url: &Url, hosts: &[String]) -> bool {
    let secure = match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            _ => false,
        },
        _ => false,
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let with_port = format!("{host}:{port}");
    secure
        && hosts
            .iter()
            .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
            .any(|h| h == host || h == with_port)
}

/// Fetches exactly `commit` from `repository` and checks it out into `work_dir/bundle`
/// without `.git`.
async fn fetch_git(
    repository: &str,
    commit: &str,
    work_dir: &Path,
    settings: &GitSettings,
    cancel: &CancellationToken,
) -> Result<Fetched, FetchError> {
    let commit = check_commit(commit)?;
    if repository.is_empty() || repository.starts_with('-') {
        return Err(FetchError::InvalidRevision(format!(
            "git repository {repository:?} is not a repository location"
        )));
    }
    if let Some(GitAuth::Basic { username, password }) = &settings.auth {
        if [username.as_str(), password.expose()]
            .iter()
            .any(|v| v.contains(['\n', '\0']))
        {
            return Err(FetchError::GitSettings(
                "credentials must not contain newlines or NUL".into(),
            ));
        }
    }
    let shown = redact_repository(repository);
    let scratch = tempfile::Builder::new()
        .prefix(".git-fetch-")
        .tempdir_in(work_dir)
        .map_err(FetchError::io("creating a directory in", work_dir))?;
    let home = scratch.path().join("home");
    let git_dir = scratch.path().join("repo.git");
    tokio::fs::create_dir(&home)
        .await
        .map_err(FetchError::io("creating", &home))?;

    let runner = GitRunner {
        settings,
        repository,
        shown: shown.clone(),
        git_dir: git_dir.clone(),
        env: git_env(&home, repository, settings),
        cancel,
    };
    let result = checkout_commit(&runner, repository, &commit, work_dir).await;
    // The scratch repository may be large: remove it off the async threads.
    let _ = tokio::task::spawn_blocking(move || drop(scratch)).await;
    let path = result?;
    debug!(repository = %shown, commit = %commit, "git revision checked out");
    Ok(Fetched::Directory { path, commit })
}

async fn checkout_commit(
    git: &GitRunner<'_>,
    repository: &str,
    commit: &str,
    work_dir: &Path,
) -> Result<PathBuf, FetchError> {
    let object_format = if commit.len() == 64 {
        "--object-format=sha256"
    } else {
        "--object-format=sha1"
    };
    let git_dir = git.git_dir.as_os_str();
    git.check(
        "init",
        &[
            "init".as_ref(),
            "--bare".as_ref(),
            "--quiet".as_ref(),
            "--template=".as_ref(),
            object_format.as_ref(),
            git_dir,
        ],
    )
    .await?;

    // A shallow fetch of just the commit works where the server serves unadvertised objects
    // (protocol v2, or uploadpack.allowReachableSHA1InWant); otherwise fetch every ref.
    let shallow = git
        .run(
            "fetch",
            &[
                "fetch".as_ref(),
                "--quiet".as_ref(),
                "--no-tags".as_ref(),
                "--no-write-fetch-head".as_ref(),
                "--depth=1".as_ref(),
                "--".as_ref(),
                repository.as_ref(),
                commit.as_ref(),
            ],
        )
        .await?;
    if !(shallow.success && git.has_commit(commit).await?) {
        debug!(
            repository = %git.shown,
            stderr = %shallow.stderr,
            "shallow fetch of the commit failed, fetching every ref"
        );
        git.check(
            "fetch",
            &[
                "fetch".as_ref(),
                "--quiet".as_ref(),
                "--no-write-fetch-head".as_ref(),
                "--".as_ref(),
                repository.as_ref(),
                "+refs/*:refs/fetched/*".as_ref(),
            ],
        )
        .await?;
        if !git.has_commit(commit).await? {
            return Err(FetchError::CommitNotFound {
                repository: git.shown.clone(),
                commit: commit.to_owned(),
            });
        }
    }

    let dest = work_dir.join(BUNDLE_NAME);
    tokio::fs::create_dir(&dest)
        .await
        .map_err(FetchError::io("creating", &dest))?;
    git.check("read-tree", &["read-tree".as_ref(), commit.as_ref()])
        .await?;
    git.check(
        "checkout-index",
        &[
            "--work-tree".as_ref(),
            dest.as_os_str(),
            "checkout-index".as_ref(),
            "--all".as_ref(),
            "--force".as_ref(),
        ],
    )
    .await?;
    Ok(dest)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn env_fills_only_gaps() {
        let env = |name: &str| {
            match name {
                "AWS_ACCESS_KEY_ID" => Some("ENVKEY"),
                "AWS_SECRET_ACCESS_KEY" => Some("envsecret"),
                "AWS_SESSION_TOKEN" => Some("envtoken"),
                "AWS_REGION" => Some(""),
                "AWS_DEFAULT_REGION" => Some("eu-west-3"),
                "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9000"),
                _ => None,
            }
            .map(str::to_owned)
        };
        let filled = S3Settings::default().with_env_defaults_from(env);
        assert_eq!(filled.access_key_id.as_deref(), Some("ENVKEY"));
        assert_eq!(
            filled.secret_access_key.as_ref().map(Secret::expose),
            Some("envsecret")
        );
        assert_eq!(
            filled.session_token.as_ref().map(Secret::expose),
            Some("envtoken")
        );
        assert_eq!(filled.region.as_deref(), Some("eu-west-3"));
        assert_eq!(filled.endpoint.as_deref(), Some("http://127.0.0.1:9000"));

        let configured = S3Settings {
            endpoint: Some("http://s3.internal".into()),
            region: Some("us-west-2".into()),
            access_key_id: Some("CONFKEY".into()),
            secret_access_key: None,
            ..S3Settings::default()
        }
        .with_env_defaults_from(env);
        assert_eq!(configured.access_key_id.as_deref(), Some("CONFKEY"));
        assert_eq!(configured.secret_access_key, None);
        assert_eq!(configured.session_token, None);
        assert_eq!(configured.region.as_deref(), Some("us-west-2"));
        assert_eq!(configured.endpoint.as_deref(), Some("http://s3.internal"));
    }

    #[test]
    fn git_credentials_go_only_to_configured_hosts_over_https() {
        let hosts = vec![
            "git.example.com".to_owned(),
            "Other.Example:8443".to_owned(),
        ];
        for (url, expected) in [
            ("https://git.example.com/team/app.git", true),
            ("https://GIT.example.com:443/app.git", true),
            ("https://git.example.com:9000/app.git", true),
            ("https://other.example:8443/app.git", true),
            ("https://other.example/app.git", false),
            ("https://evil.example/app.git", false),
            ("https://git.example.com.evil.example/app.git", false),
            ("http://git.example.com/app.git", false),
            ("git://git.example.com/app.git", false),
        ] {
            let parsed = Url::parse(url).unwrap();
            assert_eq!(may_send_credentials(&parsed, &hosts), expected, "{url}");
        }
        let loopback = vec!["127.0.0.1".to_owned(), "[::1]".to_owned()];
        for (url, expected) in [
            ("http://127.0.0.1:8080/app.git", true),
            ("http://[::1]:8080/app.git", true),
            ("http://localhost:8080/app.git", false),
        ] {
            let parsed = Url::parse(url).unwrap();
            assert_eq!(may_send_credentials(&parsed, &loopback), expected, "{url}");
        }
        // Unbound credentials go nowhere; the environment then carries none.
        assert!(!may_send_credentials(
            &Url::parse("https://git.example.com/a.git").unwrap(),
            &[]
        ));
        let settings = GitSettings {
            auth: Some(GitAuth::Basic {
                username: "ci".into(),
                password: Secret::new("hunter2"),
            }),
            auth_hosts: vec!["git.example.com".into()],
            ..GitSettings::default()
        };
        let home = Path::new("/nonexistent");
        let carries = |repository: &str| {
            git_env(home, repository, &settings)
                .iter()
                .any(|(k, v)| k == "HOIST_GIT_PASSWORD" || v.to_string_lossy().contains("hunter2"))
        };
        assert!(carries("https://git.example.com/a.git"));
        assert!(!carries("http://git.example.com/a.git"));
        assert!(!carries("https://elsewhere.example/a.git"));
    }

    #[test]
    fn git_credentials_name_their_hosts() {
        let text = "git:\n  username: ci\n  password: pw\n  hosts: [git.example.com, 'git.internal:8443']\n";
        let c = Config::from_str(text, "agent.yaml").expect("parses");
        assert_eq!(
            FetchSettings::from_config(&c, None).git.auth_hosts,
            ["git.example.com", "git.internal:8443"]
        );
    }

    #[test]
    fn urls_are_redacted() {
        let cases = [
            (
                "https://user:pw@bucket.example/k.zip?X-Amz-Signature=abc#f",
                "https://bucket.example/k.zip",
            ),
            ("http://127.0.0.1:8080/a/b", "http://127.0.0.1:8080/a/b"),
        ];
        for (input, expected) in cases {
            let url = Url::parse(input).unwrap();
            assert_eq!(redact_url(&url), expected, "{input}");
        }
        assert_eq!(
            redact_repository("https://tok:x@git.example/r.git"),
            "https://git.example/r.git"
        );
        assert_eq!(redact_repository("/srv/git/r.git"), "/srv/git/r.git");
    }

    #[test]
    fn commit_ids_must_be_full() {
        let ok40 = "0123456789abcdef0123456789ABCDEF01234567";
        assert_eq!(check_commit(ok40).unwrap(), ok40.to_ascii_lowercase());
        assert!(check_commit(&"a".repeat(64)).is_ok());
        for bad in ["", "abc1234", &"g".repeat(40), &"a".repeat(41), "HEAD"] {
            assert!(check_commit(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn header_parsing() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_RANGE, "bytes 100-199/200".parse().unwrap());
        assert_eq!(content_range_start(&h), Some(100));
        assert_eq!(unquote_etag("W/\"abc\""), "abc");
        assert_eq!(unquote_etag("\"abc-2\""), "abc-2");
    }

    #[test]
    fn s3_error_detail_is_the_code() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                    <Message>The request signature we calculated does not match</Message></Error>";
        assert_eq!(xml_element(body, "Code"), Some("SignatureDoesNotMatch"));
        assert!(is_error_code("SignatureDoesNotMatch"));
        for bad in ["", "Evil Code", "a\u{1b}[31m", &"A".repeat(65), "x<y"] {
            assert!(!is_error_code(bad), "{bad:?}");
        }
    }
}
