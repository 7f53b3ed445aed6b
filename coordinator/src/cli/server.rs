//! `hoist server`: flags (over the config file) for the coordinator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::config::{FileConfig, Overrides, Secret, ServerConfig};

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// YAML config file (unknown keys are rejected).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8443; port 0 picks a free port, printed as
    /// `listening on ADDR` on stderr).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Directory for the database, the bundle store and the generated operator token
    /// (default /var/lib/hoist-coordinator).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// PEM certificate chain; serves HTTPS with --tls-key.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// A host silent this long mid-command has failed, e.g. `10m` (default 10m); agents send
    /// heartbeats at a quarter of it while a command runs.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub host_lease: Option<std::time::Duration>,
}

pub async fn run(args: ServerArgs, cancel: CancellationToken) -> Result<ExitCode> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let env_token = std::env::var("HOIST_OPERATOR_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(|t| Secret(t.trim().to_owned()));
    let config = ServerConfig::resolve(
        file,
        Overrides {
            listen: args.listen,
            data_dir: args.data_dir,
            operator_token: env_token,
            host_lease: args.host_lease,
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
        },
    )?;
    crate::server::run(config, cancel).await?;
    Ok(ExitCode::SUCCESS)
}
