//! `hoist-agent`: parse arguments, set up logging and signals, run the subcommand, map its
//! result to an exit code in one place.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use hoist_agent::cli::{self, CliError, Command, Exit, Outcome};
use hoist_cli::usage;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => match usage::render(&e, cli::Cli::command(), std::env::args_os(), "hoist-agent:")
        {
            Some(text) => {
                eprint!("{text}");
                return ExitCode::from(Exit::Usage as u8);
            }
            None => e.exit(),
        },
    };
    let journal = matches!(args.command, Command::Run(_));
    cli::init_tracing(cli::log_filter_default(&args.command), journal);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hoist-agent: starting the async runtime: {e}");
            return ExitCode::from(Exit::Failed as u8);
        }
    };
    let exit = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        spawn_signal_handler(shutdown.clone());
        let result = match args.command {
            Command::Run(a) => cli::run::run(a, shutdown).await,
            Command::Status(a) => cli::status::run(a).await,
            Command::Deploy(a) => cli::deploy::run(a, shutdown).await,
            Command::Rollback(a) => cli::rollback::run(a, shutdown).await,
            Command::Validate(a) => cli::validate::run(a).await,
            Command::Generate(what) => cli::generate(&what),
        };
        match result {
            Ok(Outcome::Ok) => Exit::Ok,
            Ok(Outcome::Failed) => Exit::Failed,
            Ok(Outcome::NotRunning) => Exit::NotRunning,
            Err(CliError::Usage(e)) => {
                eprintln!("hoist-agent: {e:#}");
                Exit::Usage
            }
            Err(CliError::Failed(e)) => {
                eprintln!("hoist-agent: {e:#}");
                Exit::Failed
            }
        }
    });
    ExitCode::from(exit as u8)
}

/// SIGTERM and SIGINT cancel `token`. Later ones are ignored (tokio never unregisters its
/// handler): the hard stop is SIGKILL, which systemd sends after `TimeoutStopSec`.
fn spawn_signal_handler(token: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        token.cancel();
    });
}
