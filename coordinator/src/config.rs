//! The coordinator's configuration: a YAML file (`--config`, unknown keys rejected) overlaid
//! by command-line flags and `HOIST_OPERATOR_TOKEN`.
//!
//! ```yaml
//! listen: 127.0.0.1:8443            # default 127.0.0.1:8443; port 0 picks a free port
//! data_dir: /var/lib/hoist-coordinator
//! database: postgres://hoist@127.0.0.1:5432/hoist  # optional: PostgreSQL (replicas) instead of
//!                                   # DATA_DIR/hoist.db; or HOIST_DATABASE_URL / --database
//! operator_token: "..."             # or operator_token_file: /etc/hoist/operator-token
//! host_lease: 10m                   # a host silent this long mid-command (no heartbeat) has failed
//! tls:                              # optional; see below when it is absent
//!   cert: /etc/hoist/tls/cert.pem
//!   key: /etc/hoist/tls/key.pem
//! insecure_http: false              # plain HTTP on a non-loopback address (default false)
//! http2_cleartext: false            # also HTTP/2 with prior knowledge over plain HTTP
//! max_connections: 20000            # default: what RLIMIT_NOFILE allows
//! max_bundle_bytes: 4294967296      # largest bundle an upload may store
//! metrics_public: false             # GET /metrics without a token (default: any operator token)
//! bundle_store: s3://bucket/prefix  # default: DATA_DIR/bundles (endpoint, keys: AWS_* variables)
//! single_replica: false             # PostgreSQL with local bundles: this is the only replica
//! public_url: https://hoist.example.com:8443  # the dashboard's address in webhook links
//!                                   # (default: the scheme and the address it listens on)
//! webhooks:                         # retries of webhook deliveries (these are the defaults)
//!   initial_backoff: 10s            # the wait after a first failed try, doubled after each
//!   max_backoff: 1h                 # the longest wait between tries
//!   give_up_after: 1d               # a delivery still failing this long after its event
//! ```
//!
//! Without `tls`, a loopback listen address serves plain HTTP; any other serves HTTPS with a
//! self-signed certificate generated in `DATA_DIR/tls/` on first start, unless
//! `insecure_http` asks for plain HTTP.
//!
//! Precedence: flag, then environment, then file, then default. A database URL's password
//! is never printed (`DatabaseUrl` shows the URL without it). Pure parsing in
//! [`FileConfig::from_str`]; [`FileConfig::load`] reads the file. Not here: acting on it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hoist_protocol::secret::Secret;
use serde::Deserialize;

use crate::bundles::S3Location;
use crate::store::postgres::DatabaseUrl;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/hoist-coordinator";
pub const DEFAULT_HOST_LEASE: Duration = Duration::from_secs(600);
/// Default cap on one uploaded bundle (`--max-bundle-bytes`).
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 4 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// A `postgres://` URL (it may hold a password, hence a secret until parsed).
    pub database: Option<Secret>,
    pub operator_token: Option<Secret>,
    pub operator_token_file: Option<PathBuf>,
    #[serde(default, with = "humantime_opt")]
    pub host_lease: Option<Duration>,
    pub tls: Option<TlsFiles>,
    pub insecure_http: Option<bool>,
    pub http2_cleartext: Option<bool>,
    pub max_connections: Option<usize>,
    pub max_bundle_bytes: Option<u64>,
    pub metrics_public: Option<bool>,
    pub bundle_store: Option<String>,
    pub single_replica: Option<bool>,
    pub public_url: Option<String>,
    pub webhooks: Option<WebhookRetries>,
}

/// The `webhooks:` section: how deliveries are retried.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRetries {
    #[serde(default, with = "humantime_opt")]
    pub initial_backoff: Option<Duration>,
    #[serde(default, with = "humantime_opt")]
    pub max_backoff: Option<Duration>,
    #[serde(default, with = "humantime_opt")]
    pub give_up_after: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

mod humantime_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("reading the operator token file {path}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--tls-cert and --tls-key go together")]
    HalfTls,
    #[error("max_connections: must be at least 1")]
    NoConnections,
    #[error("bundle_store")]
    BundleStore(#[source] crate::s3::S3SettingsError),
    #[error(
        "the database is PostgreSQL, which several replicas may share, but bundles are kept in \
         the local directory {0}, which only this machine has: give --bundle-store \
         s3://BUCKET/PREFIX, or --single-replica when this is the only replica"
    )]
    LocalBundlesWithReplicas(PathBuf),
    #[error("database: {0}")]
    Database(String),
    #[error("public_url {0:?}: must be an http:// or https:// URL with a host")]
    PublicUrl(String),
    #[error("webhooks: {0}")]
    Webhooks(&'static str),
}

/// Longest webhook retry setting accepted.
const MAX_WEBHOOK_WAIT: Duration = Duration::from_secs(30 * 24 * 3600);

/// A public URL: http or https with a host, kept without a trailing slash.
fn check_public_url(s: String) -> Result<String, ConfigError> {
    match url::Url::parse(&s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Ok(s.trim_end_matches('/').to_owned())
        }
        _ => Err(ConfigError::PublicUrl(s)),
    }
}

/// The PostgreSQL database to use: the flag or environment value, else the file's.
pub fn database_url(
    over: Option<&Secret>,
    file: Option<&Secret>,
) -> Result<Option<DatabaseUrl>, ConfigError> {
    match over.or(file) {
        Some(text) if !text.expose().trim().is_empty() => DatabaseUrl::parse(text.expose())
            .map(Some)
            .map_err(|e| ConfigError::Database(e.to_string())),
        _ => Ok(None),
    }
}

impl std::str::FromStr for FileConfig {
    type Err = serde_yaml::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Ok(FileConfig::default());
        }
        serde_yaml::from_str(s)
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        text.parse().map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

/// What `hoist server` runs with, every default applied.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// PostgreSQL instead of `DATA_DIR/hoist.db`.
    pub database: Option<DatabaseUrl>,
    /// `None`: use `DATA_DIR/operator-token`, writing a new one on first start.
    pub operator_token: Option<Secret>,
    pub host_lease: Duration,
    pub tls: Option<TlsFiles>,
    /// Plain HTTP even on a non-loopback address.
    pub insecure_http: bool,
    /// HTTP/2 with prior knowledge on a plain-HTTP listener.
    pub http2_cleartext: bool,
    /// `None`: as many as the open-file limit allows.
    pub max_connections: Option<usize>,
    pub max_bundle_bytes: u64,
    /// `GET /metrics` answers without a token.
    pub metrics_public: bool,
    /// Where pushed bundles are kept: `None` for `DATA_DIR/bundles`.
    pub bundle_store: Option<S3Location>,
    /// Told that no other replica shares the database (local bundles are then allowed).
    pub single_replica: bool,
    /// The dashboard's base URL in webhook links; `None`: from the listen address.
    pub public_url: Option<String>,
    pub webhook_initial_backoff: Duration,
    pub webhook_max_backoff: Duration,
    pub webhook_give_up_after: Duration,
}

/// Flag and environment values; `None` when not given.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// `--database` or `HOIST_DATABASE_URL`.
    pub database: Option<Secret>,
    pub operator_token: Option<Secret>,
    pub host_lease: Option<Duration>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Flags that can only turn a setting on.
    pub insecure_http: bool,
    pub http2_cleartext: bool,
    pub max_connections: Option<usize>,
    pub max_bundle_bytes: Option<u64>,
    pub metrics_public: bool,
    pub bundle_store: Option<String>,
    pub single_replica: bool,
    /// `--public-url`.
    pub public_url: Option<String>,
}

impl ServerConfig {
    pub fn resolve(file: FileConfig, o: Overrides) -> Result<ServerConfig, ConfigError> {
        let token_from_file = match &file.operator_token_file {
            Some(path) => Some(Secret::new(
                std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::TokenFile {
                        path: path.clone(),
                        source,
                    })?
                    .trim()
                    .to_owned(),
            )),
            None => None,
        };
        let tls = match (o.tls_cert, o.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => file.tls,
            _ => return Err(ConfigError::HalfTls),
        };
        let max_connections = o.max_connections.or(file.max_connections);
        if max_connections == Some(0) {
            return Err(ConfigError::NoConnections);
        }
        let bundle_store = o
            .bundle_store
            .or(file.bundle_store)
            .map(|s| s.parse::<S3Location>())
            .transpose()
            .map_err(ConfigError::BundleStore)?;
        let database = database_url(o.database.as_ref(), file.database.as_ref())?;
        let public_url = o
            .public_url
            .or(file.public_url)
            .map(check_public_url)
            .transpose()?;
        let retries = file.webhooks.unwrap_or_default();
        let webhook_initial_backoff = retries
            .initial_backoff
            .unwrap_or(crate::webhooks::DEFAULT_INITIAL_BACKOFF);
        let webhook_max_backoff = retries
            .max_backoff
            .unwrap_or(crate::webhooks::DEFAULT_MAX_BACKOFF);
        let webhook_give_up_after = retries
            .give_up_after
            .unwrap_or(crate::webhooks::DEFAULT_GIVE_UP_AFTER);
        if webhook_initial_backoff.is_zero() || webhook_initial_backoff > webhook_max_backoff {
            return Err(ConfigError::Webhooks(
                "initial_backoff must be more than 0 and at most max_backoff",
            ));
        }
        if webhook_max_backoff > MAX_WEBHOOK_WAIT || webhook_give_up_after > MAX_WEBHOOK_WAIT {
            return Err(ConfigError::Webhooks(
                "max_backoff and give_up_after may be at most 30 days",
            ));
        }
        let default_listen: SocketAddr = DEFAULT_LISTEN
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8443)));
        Ok(ServerConfig {
            listen: o.listen.or(file.listen).unwrap_or(default_listen),
            data_dir: o
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            database,
            operator_token: o
                .operator_token
                .or(file.operator_token)
                .or(token_from_file)
                .filter(|t| !t.expose().is_empty()),
            host_lease: o
                .host_lease
                .or(file.host_lease)
                .unwrap_or(DEFAULT_HOST_LEASE),
            tls,
            insecure_http: o.insecure_http || file.insecure_http.unwrap_or(false),
            http2_cleartext: o.http2_cleartext || file.http2_cleartext.unwrap_or(false),
            max_connections,
            max_bundle_bytes: o
                .max_bundle_bytes
                .or(file.max_bundle_bytes)
                .unwrap_or(DEFAULT_MAX_BUNDLE_BYTES),
            metrics_public: o.metrics_public || file.metrics_public.unwrap_or(false),
            bundle_store,
            single_replica: o.single_replica || file.single_replica.unwrap_or(false),
            public_url,
            webhook_initial_backoff,
            webhook_max_backoff,
            webhook_give_up_after,
        })
    }

    /// The replicas rule: a server on PostgreSQL (which other replicas may share) keeps its
    /// bundles where every replica reaches them, unless told it is the only replica.
    pub fn check_bundles_for_replicas(&self, store_is_postgres: bool) -> Result<(), ConfigError> {
        if store_is_postgres && self.bundle_store.is_none() && !self.single_replica {
            return Err(ConfigError::LocalBundlesWithReplicas(
                self.data_dir.join("bundles"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replicas_example_is_a_valid_config_on_postgres() {
        let text = include_str!("../../examples/replicas/coordinator.yaml");
        let file: FileConfig = text.parse().unwrap();
        let url = DatabaseUrl::parse(file.database.as_ref().unwrap().expose()).unwrap();
        assert_eq!(
            url.to_string(),
            "postgres://hoist@db.example.internal:5432/hoist"
        );
        assert_eq!(file.listen, Some("0.0.0.0:8443".parse().unwrap()));
        assert!(file.tls.is_some() && file.operator_token_file.is_some());
        assert_eq!(file.host_lease, Some(Duration::from_secs(600)));
    }

    #[test]
    fn unknown_keys_are_rejected_naming_the_key() {
        let err = "listen: 127.0.0.1:1\nlisen: x\n"
            .parse::<FileConfig>()
            .unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let file: FileConfig = "listen: 127.0.0.1:9000\nhost_lease: 5m\noperator_token: abc\n"
            .parse()
            .unwrap();
        assert_eq!(format!("{:?}", file.operator_token), "Some(***)");
        let c = ServerConfig::resolve(
            file,
            Overrides {
                listen: Some("127.0.0.1:0".parse().unwrap()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.host_lease, Duration::from_secs(300));
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.operator_token, Some(Secret::new("abc")));
    }

    #[test]
    fn webhook_retries_and_the_public_url_are_read_with_defaults_and_bounds() {
        let c = ServerConfig::resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(c.webhook_initial_backoff, Duration::from_secs(10));
        assert_eq!(c.webhook_max_backoff, Duration::from_secs(3600));
        assert_eq!(c.webhook_give_up_after, Duration::from_secs(86400));
        assert_eq!(c.public_url, None);
        let file: FileConfig = "public_url: https://hoist.example.com/\nwebhooks:\n  \
                                initial_backoff: 200ms\n  max_backoff: 1s\n  give_up_after: 5s\n"
            .parse()
            .unwrap();
        let c = ServerConfig::resolve(file, Overrides::default()).unwrap();
        assert_eq!(c.webhook_initial_backoff, Duration::from_millis(200));
        assert_eq!(c.webhook_give_up_after, Duration::from_secs(5));
        assert_eq!(c.public_url.as_deref(), Some("https://hoist.example.com"));
        for (text, what) in [
            ("public_url: ftp://x\n", "public_url"),
            ("webhooks:\n  initial_backoff: 2h\n", "initial_backoff"),
            ("webhooks:\n  give_up_after: 90d\n", "30 days"),
        ] {
            let e = ServerConfig::resolve(text.parse().unwrap(), Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(what), "{text}: {e}");
        }
        assert!("webhooks:\n  backoff: 1s\n".parse::<FileConfig>().is_err());
    }

    #[test]
    fn transport_keys_are_read_and_flags_can_only_turn_them_on() {
        let file: FileConfig = "insecure_http: true\nhttp2_cleartext: false\n\
                                max_connections: 500\nmax_bundle_bytes: 1000\n"
            .parse()
            .unwrap();
        let c = ServerConfig::resolve(
            file,
            Overrides {
                http2_cleartext: true,
                ..Overrides::default()
            },
        )
        .unwrap();
        assert!(c.insecure_http && c.http2_cleartext);
        assert_eq!(c.max_connections, Some(500));
        assert_eq!(c.max_bundle_bytes, 1000);
        let err = ServerConfig::resolve(
            "max_connections: 0\n".parse().unwrap(),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_connections"), "{err}");
    }

    #[test]
    fn the_bundle_store_is_read_from_the_file_or_a_flag_and_checked() {
        let file: FileConfig = "bundle_store: s3://from-file/p\nsingle_replica: true\n"
            .parse()
            .unwrap();
        let c = ServerConfig::resolve(file.clone(), Overrides::default()).unwrap();
        let want = S3Location {
            bucket: "from-file".into(),
            prefix: "p".into(),
        };
        assert_eq!(c.bundle_store, Some(want));
        assert!(c.single_replica);
        let c = ServerConfig::resolve(
            file,
            Overrides {
                bundle_store: Some("s3://flag/a/b/".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.bundle_store.unwrap().prefix, "a/b");
        for bad in ["http://b/p", "s3://b/../x", "s3://b//x", "s3:///x"] {
            let err = ServerConfig::resolve(
                FileConfig::default(),
                Overrides {
                    bundle_store: Some(bad.into()),
                    ..Overrides::default()
                },
            )
            .unwrap_err();
            let text = format!("{:#}", anyhow::Error::new(err));
            assert!(
                text.contains("bundle_store") && text.contains(bad),
                "{text}"
            );
        }
    }

    #[test]
    fn the_database_url_comes_from_the_flag_or_the_file_and_its_password_is_not_printed() {
        let file: FileConfig = "database: postgres://hoist:pw-in-file@10.0.0.5:5432/fleet\n"
            .parse()
            .unwrap();
        assert!(!format!("{file:?}").contains("pw-in-file"));
        let c = ServerConfig::resolve(file.clone(), Overrides::default()).unwrap();
        let url = c.database.expect("the file's database");
        assert_eq!(url.to_string(), "postgres://hoist@10.0.0.5:5432/fleet");
        assert!(!format!("{c:?}", c = url).contains("pw-in-file"));
        let c = ServerConfig::resolve(
            file,
            Overrides {
                database: Some(Secret::new("postgres://other@127.0.0.1:6000/db2")),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(
            c.database.map(|u| u.to_string()).as_deref(),
            Some("postgres://other@127.0.0.1:6000/db2")
        );
        let none = ServerConfig::resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert!(none.database.is_none());
        let err = ServerConfig::resolve(
            "database: mysql://u:pw-bad@h/db\n".parse().unwrap(),
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("database: ") && err.contains("postgres://"),
            "{err}"
        );
        assert!(!err.contains("pw-bad"), "{err}");
    }

    #[test]
    fn postgres_with_local_bundles_needs_single_replica() {
        let resolve = |o: Overrides| ServerConfig::resolve(FileConfig::default(), o).unwrap();
        let local = resolve(Overrides::default());
        // SQLite: one server per database, local bundles are fine.
        local.check_bundles_for_replicas(false).unwrap();
        let err = local.check_bundles_for_replicas(true).unwrap_err();
        assert!(matches!(err, ConfigError::LocalBundlesWithReplicas(_)));
        assert!(err.to_string().contains("--single-replica"), "{err}");
        let single = resolve(Overrides {
            single_replica: true,
            ..Overrides::default()
        });
        single.check_bundles_for_replicas(true).unwrap();
        let s3 = resolve(Overrides {
            bundle_store: Some("s3://b/p".into()),
            ..Overrides::default()
        });
        s3.check_bundles_for_replicas(true).unwrap();
    }

    #[test]
    fn half_a_tls_pair_is_an_error() {
        let err = ServerConfig::resolve(
            FileConfig::default(),
            Overrides {
                tls_cert: Some("c.pem".into()),
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::HalfTls));
    }
}
