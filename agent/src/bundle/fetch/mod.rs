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
//! Layout: this file holds the settings, the errors, [`fetch`] and the download of an archive
//! (stream to `bundle.part`, hash, retry, resume, verify, rename); `http` makes one HTTP
//! attempt and reads its headers; `s3` signs S3 requests; `git` fetches and checks out a
//! commit.
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
//!   [`Secret`](hoist_protocol::secret::Secret)s, which print as `***`.
//! - The HTTP client is the agent's one, built by [`crate::client::http_client`] and passed
//!   in; a coordinator-store request (route and credentials) comes from `client` too.
//!
//! Secrets never reach logs or error messages: URLs are shown without their query string and
//! user info, S3 revisions as `s3://bucket/key`, and Git credentials travel in the child's
//! environment (a credential helper reading it), never in its arguments.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hoist_protocol::agent::Revision;
use reqwest::RequestBuilder;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::client::CoordinatorAccess;
use crate::config::Config;
use crate::retry::RetryPolicy;

mod git;
mod http;
mod s3;

pub use git::{may_send_credentials, GitAuth, GitSettings};
pub use s3::S3Settings;

/// File name of a fetched archive, or directory name of a checked-out Git revision, in the
/// work directory.
pub const BUNDLE_NAME: &str = "bundle";
/// File name of an archive while it is being downloaded.
pub const PART_NAME: &str = "bundle.part";

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
    /// gaps), Git credentials, the download cap and the retry policy. The coordinator's store
    /// is not the config's: `client` gives it for a registered host
    /// ([`crate::client::Client::coordinator_access`]).
    pub fn from_config(config: &Config) -> FetchSettings {
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
            // Set by the caller from `client` for a registered host.
            coordinator: None,
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
            let parsed = http::parse_http_url(&access.bundle_url(&sha256))?;
            let shown = http::redact_url(&parsed);
            if *size > settings.max_bytes {
                return Err(FetchError::TooLarge {
                    url: shown,
                    limit: settings.max_bytes,
                });
            }
            let request = || access.bundle_request(client, parsed.clone());
            let remote = Remote {
                shown,
                sha256: &sha256,
                etag: None,
            };
            download(&remote, &request, work_dir, settings, cancel).await
        }
        Revision::S3 {
            bucket,
            key,
            version_id,
            etag,
            sha256,
        } => {
            let sha256 = check_sha256(sha256)?;
            let request = s3::object_request(
                client,
                &settings.s3,
                bucket,
                key,
                version_id.as_deref(),
                settings.s3_presign_ttl,
            )?;
            let remote = Remote {
                shown: revision.describe(),
                sha256: &sha256,
                etag: etag.as_deref(),
            };
            download(&remote, &request, work_dir, settings, cancel).await
        }
        Revision::Url { url, sha256 } => {
            let sha256 = check_sha256(sha256)?;
            let parsed = http::parse_http_url(url)?;
            let request = || client.get(parsed.clone());
            let remote = Remote {
                shown: http::redact_url(&parsed),
                sha256: &sha256,
                etag: None,
            };
            download(&remote, &request, work_dir, settings, cancel).await
        }
        Revision::Git { repository, commit } => {
            git::fetch_git(repository, commit, work_dir, &settings.git, cancel).await
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

/// An archive to download: how it is shown, and what it must match.
struct Remote<'a> {
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

/// Streams `remote` to `work_dir/bundle.part`, retrying and resuming, then verifies the
/// sha256 and renames the file to `work_dir/bundle`.
async fn download(
    remote: &Remote<'_>,
    request: &MakeRequest<'_>,
    work_dir: &Path,
    settings: &FetchSettings,
    cancel: &CancellationToken,
) -> Result<Fetched, FetchError> {
    let part = work_dir.join(PART_NAME);
    // 0600: a bundle may carry the application's secrets, and the work directory is 0755
    // so that `hoist-agent status` works unprivileged.
    let file = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
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
    debug!(url = %remote.shown, "fetching bundle");

    let mut delays = settings.retry.delays();
    let mut attempts = 0u32;
    // Failed attempts since the last one that made progress.
    let mut failures = 0u32;
    loop {
        attempts += 1;
        let before = progress.written;
        let (error, after) =
            match http::attempt(remote, request, &mut progress, settings, cancel).await {
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
                url: remote.shown.clone(),
                attempts,
                last: Box::new(error),
            });
        }
        let delay = settings.retry.next_delay(&mut delays, after);
        warn!(
            url = %remote.shown,
            attempt = attempts,
            resume_at = progress.written,
            delay_ms = delay.as_millis() as u64,
            error = %crate::error_chain(&error),
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
    if !got.eq_ignore_ascii_case(remote.sha256) {
        return Err(FetchError::ChecksumMismatch {
            expected: remote.sha256.to_owned(),
            got,
        });
    }
    let bundle = work_dir.join(BUNDLE_NAME);
    tokio::fs::rename(&part, &bundle)
        .await
        .map_err(FetchError::io("renaming", &part))?;
    debug!(url = %remote.shown, bytes = progress.written, "bundle fetched and verified");
    Ok(Fetched::Archive {
        path: bundle,
        sha256: got,
        bytes: progress.written,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn git_credentials_name_their_hosts() {
        let text = "git:\n  username: ci\n  password: pw\n  hosts: [git.example.com, 'git.internal:8443']\n";
        let c = Config::from_str(text, "agent.yaml").expect("parses");
        assert_eq!(
            FetchSettings::from_config(&c).git.auth_hosts,
            ["git.example.com", "git.internal:8443"]
        );
    }
}
