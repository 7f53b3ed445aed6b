//! `hoist-agent status`: what is deployed, what runs now, what failed and why.
//! Exit 0 when the daemon runs, 3 when it does not (LSB).

use std::path::PathBuf;

use clap::Args;

use super::{CliError, Outcome};
use crate::state::StateDir;
use crate::status::Status;
use crate::trust::Trust;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the stable JSON form.
    #[arg(long)]
    pub json: bool,
    /// Agent config file (default: /etc/hoist/agent.yaml when it exists).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// State directory (default: from the config).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

pub async fn run(args: StatusArgs) -> Result<Outcome, CliError> {
    let config = super::load_config(args.config)?;
    let root = args.state_dir.unwrap_or(config.state_dir);
    // Reading never creates anything: a missing state directory reads as "not running".
    let mut status = Status::read(&StateDir::at(&root))?;
    // Shown, not enforced: a key that does not load is said here and stops `run`.
    status.trust = config.trust.as_ref().map(|t| match Trust::load(Some(t)) {
        Ok(trust) => trust.describe(),
        Err(e) => format!("{e:#}"),
    });
    let text = if args.json {
        format!("{}\n", serde_json::to_string_pretty(&status)?)
    } else {
        status.render()
    };
    super::print_stdout(&text)?;
    Ok(if status.running {
        Outcome::Ok
    } else {
        Outcome::NotRunning
    })
}
