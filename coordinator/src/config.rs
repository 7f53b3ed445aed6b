//! The coordinator's configuration: a YAML file (`--config`, unknown keys rejected) overlaid
//! by command-line flags and `HOIST_OPERATOR_TOKEN`.
//!
//! ```yaml
//! listen: 127.0.0.1:8443            # default 127.0.0.1:8443; port 0 picks a free port
//! data_dir: /var/lib/hoist-coordinator
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
//! ```
//!
//! Without `tls`, a loopback listen address serves plain HTTP; any other serves HTTPS with a
//! self-signed certificate generated in `DATA_DIR/tls/` on first start, unless
//! `insecure_http` asks for plain HTTP.
//!
//! Precedence: flag, then environment, then file, then default. Pure parsing in
//! [`FileConfig::from_str`]; [`FileConfig::load`] reads the file. Not here: acting on it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hoist_protocol::secret::Secret;
use serde::Deserialize;

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
}

/// Flag and environment values; `None` when not given.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
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
        let default_listen: SocketAddr = DEFAULT_LISTEN
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8443)));
        Ok(ServerConfig {
            listen: o.listen.or(file.listen).unwrap_or(default_listen),
            data_dir: o
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
