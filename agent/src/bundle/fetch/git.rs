//! A Git revision: exactly one commit of a repository, fetched (shallow where the server
//! serves a bare commit id, every ref otherwise), confirmed to be that commit, and checked
//! out without `.git` into `WORK_DIR/bundle`.
//!
//! `git` runs with a clean environment, no system or global configuration, no terminal
//! prompt, `GIT_ALLOW_PROTOCOL=file:git:http:https` (no SSH), in its own process group that
//! is killed on timeout or cancellation. Credentials travel in the child's environment (a
//! credential helper reading it), never in its arguments, and only to a host the config's
//! `git.hosts` names, over HTTPS or to loopback. It does not download archives.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::Url;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::http::redact_url;
use super::{FetchError, Fetched, BUNDLE_NAME};
use hoist_protocol::secret::Secret;

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
pub(super) async fn fetch_git(
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
    fn repositories_are_redacted() {
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
}
