//! `hoist-agent run`: the daemon in the foreground (systemd runs it).

use std::path::PathBuf;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::Exit;
use crate::config::{Config, DEFAULT_CONFIG_PATH};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Agent config file.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

pub async fn run(args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<Exit> {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hoist-agent: {e:#}");
            return Ok(Exit::Usage);
        }
    };
    tracing::debug!(?config, "configuration");
    for warning in config.warnings() {
        tracing::warn!("{}: {warning}", args.config.display());
    }
    crate::daemon::run(config, shutdown).await?;
    Ok(Exit::Ok)
}
