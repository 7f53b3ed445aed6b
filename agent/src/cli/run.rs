//! `hoist-agent run`: the daemon in the foreground (systemd runs it).

use std::path::PathBuf;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{CliError, Outcome};
use crate::config::{Config, DEFAULT_CONFIG_PATH};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Agent config file.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

pub async fn run(args: RunArgs, shutdown: CancellationToken) -> Result<Outcome, CliError> {
    let config = Config::load(&args.config).map_err(CliError::usage)?;
    tracing::debug!(?config, "configuration");
    for warning in config.warnings() {
        tracing::warn!("{}: {warning}", args.config.display());
    }
    let trust = super::load_trust(&config, &args.config)?;
    tracing::info!("{}", trust.describe());
    crate::daemon::run(config, trust, shutdown).await?;
    Ok(Outcome::Ok)
}
