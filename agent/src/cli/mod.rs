//! The command line of `hoist-agent`: argument definitions and one module per subcommand.
//!
//! Each subcommand returns an [`Outcome`] when it did its work, or a [`CliError`] that says
//! whether the usage or config was wrong or the work failed; it prints nothing of that error
//! itself. `main` prints the error once and maps the result to an [`Exit`] code in one place.
//! This module does no deploying, validating or status reading of its own.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::trust::Trust;

pub mod deploy;
pub mod rollback;
pub mod run;
pub mod status;
pub mod validate;

/// Exit codes shared by every subcommand (DESIGN.md "Public interfaces").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// The deployment or validation failed.
    Failed = 1,
    /// Bad usage or config.
    Usage = 2,
    /// `status`: the daemon is not running.
    NotRunning = 3,
}

/// How a subcommand that did its work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The deployment or validation succeeded, the daemon stopped cleanly, or `status`
    /// found the daemon running.
    Ok,
    /// The deployment or validation failed (and the subcommand said why on stdout).
    Failed,
    /// `status`: the daemon is not running.
    NotRunning,
}

/// Why a subcommand could not do its work. `?` on any other error makes a [`CliError::Failed`].
#[derive(Debug)]
pub enum CliError {
    /// Bad usage or config: an argument, a config file, a path that does not exist.
    Usage(anyhow::Error),
    /// Anything else that stopped the subcommand.
    Failed(anyhow::Error),
}

impl CliError {
    /// A usage error: `error` names the argument or file and what is wrong with it.
    pub fn usage(error: impl Into<anyhow::Error>) -> CliError {
        CliError::Usage(error.into())
    }
}

// `CliError` is not a `std::error::Error`, so this does not overlap `From<T> for T`.
impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(error: E) -> CliError {
        CliError::Failed(error.into())
    }
}

/// The config of a local subcommand: the file `flag` names, else the default path when it
/// exists, else the defaults. A file that does not load is a usage error.
pub fn load_config(flag: Option<PathBuf>) -> Result<Config, CliError> {
    match config_path(flag) {
        Some(path) => Config::load(&path).map_err(CliError::usage),
        None => Ok(Config::from_str("", "defaults")?),
    }
}

/// The signing keys `config` trusts, read from their files; a key that does not load is a
/// config error, naming the config file and the key file.
pub fn load_trust(config: &Config, origin: &std::path::Path) -> Result<Trust, CliError> {
    Trust::load(config.trust.as_ref())
        .map_err(|e| CliError::usage(e.context(format!("invalid config {}", origin.display()))))
}

#[derive(Debug, Parser)]
#[command(name = "hoist-agent", version, about = "Hoist deployment agent", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground: register, long-poll the coordinator, deploy.
    Run(run::RunArgs),
    /// Show whether the daemon runs, what is deployed, what runs now and what failed.
    Status(status::StatusArgs),
    /// Deploy a bundle on this host through the same engine the daemon uses, with no coordinator.
    Deploy(deploy::DeployArgs),
    /// Switch a group back to a release kept on this host (appspecs with hoist.releases),
    /// without a download.
    Rollback(rollback::RollbackArgs),
    /// Check an appspec file, a bundle directory or an archive, listing every problem.
    Validate(validate::ValidateArgs),
    /// Shell completions and man pages, for the packages.
    #[command(subcommand, hide = true)]
    Generate(hoist_cli::assets::Generate),
}

/// `hoist-agent generate ...`: completions on stdout, or man pages into a directory.
pub fn generate(what: &hoist_cli::assets::Generate) -> Result<Outcome, CliError> {
    use clap::CommandFactory;
    hoist_cli::assets::generate(Cli::command(), what, &mut std::io::stdout())
        .map_err(anyhow::Error::msg)?;
    Ok(Outcome::Ok)
}

/// Which log output a subcommand wants.
pub fn log_filter_default(command: &Command) -> &'static str {
    match command {
        Command::Run(_) => "info",
        // Local commands print their own progress; logs only for warnings.
        Command::Deploy(_)
        | Command::Rollback(_)
        | Command::Validate(_)
        | Command::Status(_)
        | Command::Generate(_) => "warn",
    }
}

/// Sets up tracing: to the systemd journal when running under systemd (`JOURNAL_STREAM` is
/// set) and the journal socket can be opened, else to stderr, in colour only when stderr is a
/// terminal and `NO_COLOR` is not set. `HOIST_LOG` (or `RUST_LOG`) overrides the default
/// filter.
pub fn init_tracing(default_filter: &str, journal: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("HOIST_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default_filter.to_string());
    let journald = if journal && std::env::var_os("JOURNAL_STREAM").is_some() {
        // Fields keep their own names (DEPLOYMENT_ID, LIFECYCLE_EVENT, ...), no F_ prefix.
        tracing_journald::layer()
            .map(|l| {
                l.with_field_prefix(None)
                    .with_syslog_identifier("hoist-agent".into())
            })
            .map_err(|e| eprintln!("hoist-agent: journal unavailable ({e}); logging to stderr"))
            .ok()
    } else {
        None
    };
    let registry = tracing_subscriber::registry().with(EnvFilter::new(filter));
    let _ = match journald {
        Some(layer) => registry.with(layer).try_init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(hoist_cli::colour::stderr_colour())
                    .with_target(false),
            )
            .try_init(),
    };
}

/// Writes `text` to stdout. A reader that went away (`hoist-agent status | head`) is not an
/// error: the output is simply cut, as with other Unix tools, instead of the panic `print!`
/// gives on a broken pipe.
pub fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other.map_err(|e| anyhow::anyhow!("writing to stdout: {e}"))?),
    }
}

/// The config file to read: `--config`, else the default path when it exists.
fn config_path(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| {
        let default = PathBuf::from(crate::config::DEFAULT_CONFIG_PATH);
        default.exists().then_some(default)
    })
}
