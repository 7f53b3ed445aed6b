//! The agent's configuration, `/etc/hoist/agent.yaml`.
//!
//! Parsed strictly: an unknown key is an error naming it. Every path the agent uses comes
//! from here, so a test can run the whole agent inside a temporary directory. Secrets are
//! wrapped in [`Secret`], whose `Debug` prints `***`, so printing a config never leaks them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::ServerName;
use serde::Deserialize;

use hoist_protocol::secret::Secret;

use crate::install::SyncMode;

/// Where the agent looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hoist/agent.yaml";
/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hoist";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub coordinator: Option<CoordinatorConfig>,
    #[serde(default)]
    pub host: HostConfig,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub poll: PollConfig,
    #[serde(default)]
    pub hooks: HooksConfig,
    #[serde(default)]
    pub deployments: DeploymentsConfig,
    #[serde(default)]
    pub bundles: BundlesConfig,
    #[serde(default)]
    pub s3: S3Config,
    #[serde(default)]
    pub git: GitConfig,
    /// Proxy for HTTP(S) requests; HTTPS_PROXY / NO_PROXY from the environment also work.
    #[serde(default)]
    pub proxy: Option<String>,
    /// Signing keys this host trusts (`trust`); none: signatures are not looked at.
    #[serde(default)]
    pub trust: Option<TrustConfig>,
}

/// `trust:`: the minisign public keys whose signatures this host accepts. The key files are
/// read and parsed with the config (`trust::Trust::load`), so a bad one stops the agent at
/// start, naming the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Public key files (minisign's `.pub` format); several at once for a key rotation.
    pub keys: Vec<PathBuf>,
    /// Refuse a revision without a signature (the default); `false` lets one through with a
    /// warning in the event log (a bad signature is refused either way).
    #[serde(default = "default_require_signature")]
    pub require_signature: bool,
}

fn default_require_signature() -> bool {
    true
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// The coordinator; or `urls` instead.
    #[serde(default)]
    pub url: Option<String>,
    /// Several replicas of one coordinator, tried in this order (see `client`): requests go
    /// to the first that answers, and back to the first once it answers again.
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub registration_token: Option<Secret>,
    #[serde(default)]
    pub registration_token_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted for the coordinator and every other HTTPS host.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the coordinator's DER leaf certificate (hex, colons allowed): the
    /// coordinator's host then presents exactly that certificate, whoever signed it.
    #[serde(default)]
    pub pin_sha256: Option<String>,
    /// Allow an `http://` coordinator on a host other than loopback (credentials and
    /// commands then cross the network in the clear).
    #[serde(default)]
    pub allow_insecure_http: bool,
}

/// At most this many `coordinator.urls`.
pub const MAX_COORDINATOR_URLS: usize = 16;

impl CoordinatorConfig {
    /// The coordinator's URLs in the order to try them: `url` alone, or `urls` (exactly one
    /// of the two is set, checked by [`Config::from_str`]).
    pub fn urls(&self) -> Vec<&str> {
        match &self.url {
            Some(url) => vec![url.as_str()],
            None => self.urls.iter().map(String::as_str).collect(),
        }
    }

    /// The certificate pin, when `pin_sha256` is set (checked by [`Config::from_str`]): the
    /// one certificate every coordinator URL's host presents.
    pub fn pin(&self) -> anyhow::Result<Option<CertPin>> {
        self.pin_sha256
            .as_deref()
            .map(|p| CertPin::new(&self.urls(), p))
            .transpose()
            .map_err(|e| anyhow::anyhow!("coordinator.pin_sha256: {e}"))
    }
}

/// "Accept exactly this certificate from these hosts".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPin {
    /// The coordinator's hosts (one per replica URL), as TLS names them (DNS names or IP
    /// addresses).
    pub servers: Vec<ServerName<'static>>,
    /// SHA-256 of the server's DER leaf certificate.
    pub sha256: [u8; 32],
}

impl CertPin {
    /// A pin for the hosts of `urls` (`https://` URLs) from `fingerprint`: 64 hex digits,
    /// optionally separated by colons (`AB:CD:...`, as `openssl x509 -fingerprint -sha256`
    /// prints it), in either case.
    pub fn new(urls: &[&str], fingerprint: &str) -> Result<CertPin, String> {
        let sha256 = parse_fingerprint(fingerprint)?;
        let mut servers = Vec::with_capacity(urls.len());
        for url in urls {
            let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
            let server = match parsed.host() {
                Some(url::Host::Domain(name)) => ServerName::try_from(name.to_owned())
                    .map_err(|e| format!("{name:?} is not a TLS server name: {e}"))?,
                Some(url::Host::Ipv4(ip)) => ServerName::IpAddress(std::net::IpAddr::V4(ip).into()),
                Some(url::Host::Ipv6(ip)) => ServerName::IpAddress(std::net::IpAddr::V6(ip).into()),
                None => return Err(format!("{url:?} names no host")),
            };
            if !servers.contains(&server) {
                servers.push(server);
            }
        }
        Ok(CertPin { servers, sha256 })
    }
}

/// 32 bytes from 64 hex digits, colons allowed between them.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{text:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
        ));
    }
    hex::decode_to_slice(&digits, &mut out).map_err(|e| format!("{text:?}: {e}"))?;
    Ok(out)
}

/// Checks one coordinator URL (`key` names it in errors): http(s), a URL, plain HTTP only
/// to loopback unless allowed, https when a certificate is pinned.
fn check_coordinator_url(
    raw: &str,
    key: &str,
    c: &CoordinatorConfig,
    origin: &str,
) -> anyhow::Result<()> {
    if !(raw.starts_with("https://") || raw.starts_with("http://")) {
        anyhow::bail!(
            "invalid config {origin}: {key} must start with https:// or http://, got {raw:?}"
        );
    }
    let url = url::Url::parse(raw)
        .with_context(|| format!("invalid config {origin}: {key} {raw:?} is not a URL"))?;
    if url.scheme() == "http" && !is_loopback(&url) && !c.allow_insecure_http {
        anyhow::bail!(
            "invalid config {origin}: {key} {raw:?} is plain HTTP to a host that is not \
             loopback: host secrets and commands would cross the network in the clear; use \
             https:// (with coordinator.ca_file or coordinator.pin_sha256), or set \
             coordinator.allow_insecure_http: true"
        );
    }
    if c.pin_sha256.is_some() && url.scheme() != "https" {
        anyhow::bail!(
            "invalid config {origin}: coordinator.pin_sha256 needs an https:// {key}, got {raw:?}"
        );
    }
    Ok(())
}

/// Whether `url`'s host is this machine's loopback (`127.0.0.0/8`, `::1`, `localhost`).
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        None => false,
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Default: the hostname.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// How long the coordinator may hold a poll.
    #[serde(default = "default_poll_wait")]
    pub wait_secs: u64,
    /// First delay after an error; doubles (with jitter) up to `max_backoff_secs`. The same
    /// policy retries bundle downloads.
    #[serde(default = "default_backoff_initial")]
    pub initial_backoff_ms: u64,
    /// Longest wait between attempts, also the cap on a server's `Retry-After`.
    #[serde(default = "default_backoff_max")]
    pub max_backoff_secs: u64,
}

fn default_poll_wait() -> u64 {
    30
}
fn default_backoff_initial() -> u64 {
    500
}
fn default_backoff_max() -> u64 {
    60
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            wait_secs: default_poll_wait(),
            initial_backoff_ms: default_backoff_initial(),
            max_backoff_secs: default_backoff_max(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// KEY=VALUE lines added to every hook's environment.
    #[serde(default)]
    pub environment_file: Option<PathBuf>,
    /// Between SIGTERM and SIGKILL when a script times out or is stopped.
    #[serde(default = "default_kill_grace")]
    pub kill_grace_secs: u64,
    /// On agent shutdown, how long a running script may go on before it is stopped.
    #[serde(default = "default_stop_grace")]
    pub stop_grace_secs: u64,
}

fn default_kill_grace() -> u64 {
    10
}
fn default_stop_grace() -> u64 {
    60
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            environment_file: None,
            kill_grace_secs: default_kill_grace(),
            stop_grace_secs: default_stop_grace(),
        }
    }
}

impl HooksConfig {
    pub fn kill_grace(&self) -> Duration {
        Duration::from_secs(self.kill_grace_secs)
    }
    pub fn stop_grace(&self) -> Duration {
        Duration::from_secs(self.stop_grace_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentsConfig {
    /// Deployment directories kept per group (the last successful one is always kept too).
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// How Install makes the files it created durable: `auto` (the cheaper for the
    /// deployment on this host at that moment), `files` (one sync per file) or `filesystem`
    /// (one `syncfs` per filesystem written to, which also flushes other processes' data).
    #[serde(default)]
    pub install_sync: SyncMode,
}

fn default_keep() -> usize {
    5
}

impl Default for DeploymentsConfig {
    fn default() -> Self {
        DeploymentsConfig {
            keep: default_keep(),
            install_sync: SyncMode::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundlesConfig {
    /// Largest download accepted, in bytes.
    #[serde(default = "default_max_download")]
    pub max_download_bytes: u64,
    /// Largest total of unpacked file contents, in bytes.
    #[serde(default = "default_max_unpacked")]
    pub max_unpacked_bytes: u64,
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// Keep setuid/setgid bits from archives.
    #[serde(default)]
    pub allow_setuid: bool,
    /// Apply archives' numeric owners (tar only).
    #[serde(default)]
    pub preserve_owner: bool,
}

fn default_max_download() -> u64 {
    4 * 1024 * 1024 * 1024
}
fn default_max_unpacked() -> u64 {
    8 * 1024 * 1024 * 1024
}
fn default_max_entries() -> u64 {
    200_000
}

impl Default for BundlesConfig {
    fn default() -> Self {
        BundlesConfig {
            max_download_bytes: default_max_download(),
            max_unpacked_bytes: default_max_unpacked(),
            max_entries: default_max_entries(),
            allow_setuid: false,
            preserve_owner: false,
        }
    }
}

/// S3-compatible storage; the usual AWS_* environment variables fill what is not set here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub path_style: Option<bool>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    #[serde(default)]
    pub session_token: Option<Secret>,
}

/// Credentials for Git over HTTP(S), and the hosts they may be sent to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitConfig {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// The Git servers the credentials are for: `host` (any port) or `host:port`. They are
    /// offered to a repository on one of these over HTTPS only (plain HTTP to a loopback
    /// address too), never to another host a revision names. Without it they go nowhere.
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl Config {
    /// Parses a config's text; `origin` names it in errors.
    pub fn from_str(text: &str, origin: &str) -> anyhow::Result<Config> {
        let config: Config = if text.trim().is_empty() {
            Config {
                state_dir: default_state_dir(),
                ..Config::default()
            }
        } else {
            serde_yaml::from_str(text).with_context(|| format!("invalid config {origin}"))?
        };
        config.check(origin)?;
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Config::from_str(&text, &path.display().to_string())
    }

    fn check(&self, origin: &str) -> anyhow::Result<()> {
        if let Some(c) = &self.coordinator {
            let key = match (&c.url, c.urls.is_empty()) {
                (Some(_), true) => "coordinator.url",
                (None, false) => "coordinator.urls",
                (Some(_), false) => anyhow::bail!(
                    "invalid config {origin}: give coordinator.url or coordinator.urls, not both"
                ),
                (None, true) => anyhow::bail!(
                    "invalid config {origin}: the coordinator section needs coordinator.url \
                     (or coordinator.urls for several replicas)"
                ),
            };
            if c.urls.len() > MAX_COORDINATOR_URLS {
                anyhow::bail!(
                    "invalid config {origin}: coordinator.urls lists {} URLs; at most \
                     {MAX_COORDINATOR_URLS} are allowed",
                    c.urls.len()
                );
            }
            let urls = c.urls();
            for (i, raw) in urls.iter().enumerate() {
                let key = if c.url.is_some() {
                    key.to_owned()
                } else {
                    format!("{key}[{i}]")
                };
                check_coordinator_url(raw, &key, c, origin)?;
                if urls[..i].contains(raw) {
                    anyhow::bail!("invalid config {origin}: {key} {raw:?} is listed twice");
                }
            }
            c.pin()
                .with_context(|| format!("invalid config {origin}"))?;
            if c.registration_token.is_some() && c.registration_token_file.is_some() {
                anyhow::bail!(
                    "invalid config {origin}: give coordinator.registration_token or coordinator.registration_token_file, not both"
                );
            }
        }
        for (i, host) in self.git.hosts.iter().enumerate() {
            let bad = host.trim().is_empty()
                || host.contains("://")
                || host.contains(['/', '@', '?', '#', ' ']);
            if bad {
                anyhow::bail!(
                    "invalid config {origin}: git.hosts[{i}]: {host:?} is not a host name; give \
                     HOST or HOST:PORT, without a scheme, user or path"
                );
            }
        }
        if let Some(trust) = &self.trust {
            if trust.keys.is_empty() {
                anyhow::bail!(
                    "invalid config {origin}: trust.keys lists no key; list the public key \
                     files to trust, or leave the trust section out"
                );
            }
        }
        if !self.state_dir.is_absolute() {
            anyhow::bail!(
                "invalid config {origin}: state_dir must be an absolute path, got {}",
                self.state_dir.display()
            );
        }
        if self.poll.wait_secs == 0 || self.poll.max_backoff_secs == 0 {
            anyhow::bail!(
                "invalid config {origin}: poll.wait_secs and poll.max_backoff_secs must be positive"
            );
        }
        // Durations are added to clocks and to each other: bounded here, so nothing downstream
        // can overflow (`Instant + grace` panics) or wait for centuries.
        let day = 24 * 3600;
        for (key, value, max, unit) in [
            ("poll.wait_secs", self.poll.wait_secs, 3600, "s"),
            (
                "poll.initial_backoff_ms",
                self.poll.initial_backoff_ms,
                3_600_000,
                "ms",
            ),
            (
                "poll.max_backoff_secs",
                self.poll.max_backoff_secs,
                day,
                "s",
            ),
            (
                "hooks.kill_grace_secs",
                self.hooks.kill_grace_secs,
                day,
                "s",
            ),
            (
                "hooks.stop_grace_secs",
                self.hooks.stop_grace_secs,
                day,
                "s",
            ),
        ] {
            if value > max {
                anyhow::bail!(
                    "invalid config {origin}: {key}: {value} is too long, at most {max} {unit}"
                );
            }
        }
        Ok(())
    }

    /// What is allowed but probably not meant, for the daemon to log at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.git.username.is_some() && self.git.hosts.is_empty() {
            warnings.push(
                "git.username and git.password are bound to no host, so they are never sent; \
                 list the Git servers they are for in git.hosts"
                    .to_owned(),
            );
        }
        warnings
    }

    /// The host name: from the config, else the system hostname.
    pub fn host_name(&self) -> String {
        if let Some(name) = &self.host.name {
            return name.clone();
        }
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_string())
    }

    /// The registration token, read from the file when configured that way.
    pub fn registration_token(&self) -> anyhow::Result<Option<Secret>> {
        let Some(c) = &self.coordinator else {
            return Ok(None);
        };
        if let Some(t) = &c.registration_token {
            return Ok(Some(t.clone()));
        }
        if let Some(path) = &c.registration_token_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading registration token {}", path.display()))?;
            return Ok(Some(Secret::new(text.trim())));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replicas_example_lists_both_replicas_under_one_pin() {
        let text = include_str!("../../examples/replicas/agent.yaml");
        let c = Config::from_str(text, "examples/replicas/agent.yaml").expect("parses");
        let coordinator = c.coordinator.as_ref().expect("a coordinator section");
        assert_eq!(
            coordinator.urls(),
            [
                "https://hoist-1.example.internal:8443",
                "https://hoist-2.example.internal:8443"
            ]
        );
        assert!(coordinator.pin().expect("a valid pin").is_some());
    }

    #[test]
    fn full_example_parses_and_redacts_secrets() {
        let text = r#"
coordinator:
  url: https://hoist.example.internal:8443
  registration_token: "tok-123"
  ca_file: /etc/hoist/ca.pem
host:
  name: web-01
  tags: { env: prod, role: web }
state_dir: /var/lib/hoist
hooks:
  environment_file: /etc/hoist/hook.env
s3:
  endpoint: http://127.0.0.1:9000
  region: us-east-1
  path_style: true
  access_key_id: "AK"
  secret_access_key: "very-secret"
"#;
        let c = Config::from_str(text, "test").expect("parses");
        assert_eq!(c.host.tags.get("role").map(String::as_str), Some("web"));
        assert_eq!(c.deployments.keep, 5);
        let printed = format!("{c:?}");
        assert!(!printed.contains("very-secret"), "{printed}");
        assert!(!printed.contains("tok-123"), "{printed}");
        assert!(printed.contains("***"));
    }

    #[test]
    fn install_sync_is_auto_unless_set() {
        let c = Config::from_str("", "a").expect("empty");
        assert_eq!(c.deployments.install_sync, SyncMode::Auto);
        for (text, want) in [
            ("auto", SyncMode::Auto),
            ("files", SyncMode::Files),
            ("filesystem", SyncMode::Filesystem),
        ] {
            let c = Config::from_str(&format!("deployments:\n  install_sync: {text}\n"), "a")
                .expect(text);
            assert_eq!(c.deployments.install_sync, want);
        }
        let err = Config::from_str("deployments:\n  install_sync: never\n", "agent.yaml")
            .expect_err("never");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("install_sync") && msg.contains("never"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        for (text, key) in [
            ("colour: blue\n", "colour"),
            ("host:\n  nmae: x\n", "nmae"),
            ("hooks:\n  timeout: 3\n", "timeout"),
        ] {
            let err = Config::from_str(text, "agent.yaml").expect_err(text);
            let msg = format!("{err:#}");
            assert!(msg.contains(key) && msg.contains("agent.yaml"), "{msg}");
        }
    }

    #[test]
    fn bad_values_are_explained() {
        let err = Config::from_str("coordinator:\n  url: ftp://x\n", "a").expect_err("ftp");
        assert!(format!("{err:#}").contains("coordinator.url"));
        let err = Config::from_str("state_dir: relative/dir\n", "a").expect_err("relative");
        assert!(format!("{err:#}").contains("state_dir"));
    }

    #[test]
    fn huge_durations_are_config_errors_naming_the_key() {
        for key in [
            "poll:\n  wait_secs",
            "poll:\n  initial_backoff_ms",
            "poll:\n  max_backoff_secs",
            "hooks:\n  kill_grace_secs",
            "hooks:\n  stop_grace_secs",
        ] {
            let text = format!("{key}: 18446744073709551615\n");
            let err = Config::from_str(&text, "agent.yaml").expect_err(&text);
            let name = key.replace(":\n  ", ".");
            let msg = format!("{err:#}");
            assert!(msg.contains(&name) && msg.contains("too long"), "{msg}");
        }
        let ok = "poll:\n  max_backoff_secs: 86400\nhooks:\n  kill_grace_secs: 86400\n";
        assert!(Config::from_str(ok, "agent.yaml").is_ok());
    }

    #[test]
    fn plain_http_only_to_loopback_unless_allowed() {
        let config = |url: &str, extra: &str| {
            Config::from_str(
                &format!("coordinator:\n  url: {url}\n{extra}"),
                "agent.yaml",
            )
        };
        for url in [
            "http://127.0.0.1:8443",
            "http://127.8.9.10",
            "http://[::1]:8443",
            "http://localhost:8443",
            "https://hoist.example.internal:8443",
        ] {
            assert!(config(url, "").is_ok(), "{url}");
        }
        for url in ["http://10.0.0.5:8443", "http://hoist.example.internal"] {
            let msg = format!("{:#}", config(url, "").expect_err(url));
            assert!(
                msg.contains("coordinator.allow_insecure_http") && msg.contains(url),
                "{msg}"
            );
            assert!(
                config(url, "  allow_insecure_http: true\n").is_ok(),
                "{url}"
            );
        }
    }

    #[test]
    fn pin_sha256_is_checked() {
        let pin = vec!["AB"; 32].join(":");
        let text = format!("coordinator:\n  url: https://10.0.0.5:8443\n  pin_sha256: {pin}\n");
        let c = Config::from_str(&text, "agent.yaml").expect("a colon-separated pin");
        let pin = c.coordinator.as_ref().and_then(|c| c.pin().ok().flatten());
        assert_eq!(pin.map(|p| p.sha256), Some([0xab; 32]));
        for (text, what) in [
            (
                "coordinator:\n  url: https://h\n  pin_sha256: abc\n",
                "coordinator.pin_sha256",
            ),
            (
                "coordinator:\n  url: http://127.0.0.1\n  pin_sha256: '00000000000000000000000000000000000000000000000000000000000000ab'\n",
                "needs an https://",
            ),
        ] {
            let msg = format!("{:#}", Config::from_str(text, "agent.yaml").expect_err(text));
            assert!(msg.contains(what), "{msg}");
        }
    }

    #[test]
    fn git_credentials_name_their_hosts() {
        let text = "git:\n  username: ci\n  password: pw\n  hosts: [git.example.com, 'git.internal:8443']\n";
        let c = Config::from_str(text, "agent.yaml").expect("parses");
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        assert_eq!(c.git.hosts, ["git.example.com", "git.internal:8443"]);
        let unbound = Config::from_str("git:\n  username: ci\n  password: pw\n", "agent.yaml")
            .expect("still loads");
        assert!(unbound.warnings().iter().any(|w| w.contains("git.hosts")));
        for bad in [
            "https://git.example.com",
            "git.example.com/team",
            "ci@git.example.com",
            "",
        ] {
            let text = format!("git:\n  hosts: [{bad:?}]\n");
            let msg = format!(
                "{:#}",
                Config::from_str(&text, "agent.yaml").expect_err(bad)
            );
            assert!(msg.contains("git.hosts[0]"), "{msg}");
        }
    }

    #[test]
    fn empty_config_gives_defaults() {
        let c = Config::from_str("", "a").expect("empty is fine");
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert!(c.coordinator.is_none());
    }

    #[test]
    fn fingerprints_with_or_without_colons() {
        let plain = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&plain), Ok([0xab; 32]));
        assert_eq!(parse_fingerprint(&colons), Ok([0xab; 32]));
        for bad in [
            "",
            "abc",
            &"ab".repeat(31),
            &"zz".repeat(32),
            &"ab".repeat(33),
        ] {
            assert!(parse_fingerprint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_pin_names_each_url_host() {
        let names = |urls: &[&str]| -> Vec<String> {
            let pin = CertPin::new(urls, &"00".repeat(32)).unwrap_or_else(|e| panic!("{e}"));
            pin.servers
                .iter()
                .map(|s| s.to_str().into_owned())
                .collect()
        };
        assert_eq!(names(&["https://127.0.0.1:8443/"]), ["127.0.0.1"]);
        assert_eq!(names(&["https://[::1]:8443"]), ["::1"]);
        assert_eq!(
            names(&["https://hoist.example.internal"]),
            ["hoist.example.internal"]
        );
        // Replicas: every host, each once.
        assert_eq!(
            names(&["https://c1:8443", "https://c2:8443", "https://c1:9443"]),
            ["c1", "c2"]
        );
    }

    #[test]
    fn coordinator_urls_list_replicas_in_order() {
        let c = Config::from_str(
            "coordinator:\n  urls: [https://c1:8443, 'https://c2:8443/']\n",
            "a",
        )
        .unwrap();
        let c = c.coordinator.unwrap();
        assert_eq!(c.urls(), ["https://c1:8443", "https://c2:8443/"]);
        let one = Config::from_str("coordinator:\n  url: https://c1:8443\n", "a").unwrap();
        assert_eq!(one.coordinator.unwrap().urls(), ["https://c1:8443"]);
    }

    #[test]
    fn coordinator_urls_are_checked_one_by_one() {
        for (yaml, needle) in [
            (
                "coordinator:\n  url: https://c1\n  urls: [https://c2]\n",
                "coordinator.url or coordinator.urls, not both",
            ),
            ("coordinator:\n  urls: []\n", "needs coordinator.url"),
            ("coordinator: {}\n", "needs coordinator.url"),
            (
                "coordinator:\n  urls: [https://c1, ftp://c2]\n",
                "coordinator.urls[1] must start with https:// or http://",
            ),
            (
                "coordinator:\n  urls: [https://c1, http://10.0.0.2:8080]\n",
                "coordinator.urls[1] \"http://10.0.0.2:8080\" is plain HTTP",
            ),
            (
                "coordinator:\n  urls: [https://c1, https://c1]\n",
                "coordinator.urls[1] \"https://c1\" is listed twice",
            ),
        ] {
            let err = Config::from_str(yaml, "a").expect_err(yaml);
            let msg = format!("{err:#}");
            assert!(msg.contains(needle), "{yaml}: {msg}");
        }
        let many: Vec<String> = (0..17).map(|i| format!("https://c{i}")).collect();
        let yaml = format!("coordinator:\n  urls: [{}]\n", many.join(", "));
        let msg = format!("{:#}", Config::from_str(&yaml, "a").expect_err("17 urls"));
        assert!(msg.contains("at most 16"), "{msg}");
    }

    #[test]
    fn trust_takes_key_files_requires_signatures_by_default_and_refuses_unknown_keys() {
        let c = Config::from_str("trust:\n  keys: [/etc/hoist/release.pub]\n", "agent.yaml")
            .expect("parses");
        let trust = c.trust.expect("a trust section");
        assert_eq!(trust.keys, [PathBuf::from("/etc/hoist/release.pub")]);
        assert!(trust.require_signature);
        let c = Config::from_str(
            "trust:\n  keys: [/a.pub, /b.pub]\n  require_signature: false\n",
            "agent.yaml",
        )
        .expect("parses");
        assert!(!c.trust.expect("trust").require_signature);
        let err = format!(
            "{:#}",
            Config::from_str("trust:\n  keys: [/a.pub]\n  require: true\n", "agent.yaml")
                .expect_err("unknown key")
        );
        assert!(
            err.contains("require") && err.contains("agent.yaml"),
            "{err}"
        );
        let err = Config::from_str("trust:\n  keys: []\n", "agent.yaml")
            .expect_err("no key")
            .to_string();
        assert!(err.contains("trust.keys lists no key"), "{err}");
        assert!(Config::from_str("", "defaults")
            .expect("empty")
            .trust
            .is_none());
    }
}
