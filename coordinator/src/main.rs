//! `hoist`: parse arguments, set up logging and the shutdown token, run, map the result
//! to an exit code (0 ok, 1 failed, 2 usage or config).

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use hoist_cli::usage;
use hoist_coordinator::cli::{self, Cli, UsageError};
use hoist_coordinator::config::ConfigError;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let args = match Cli::try_parse() {
        Ok(args) => args,
        Err(e) => match usage::render(&e, Cli::command(), std::env::args_os(), "hoist: error:") {
            Some(text) => {
                eprint!("{text}");
                return ExitCode::from(2);
            }
            None => e.exit(),
        },
    };
    if args.is_server() {
        hoist_coordinator::memory::limit_arenas();
    }
    let default_level = if args.is_server() { "info" } else { "warn" };
    // HOIST_LOG first, then RUST_LOG, as the agent reads them.
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOIST_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(hoist_cli::colour::stderr_colour())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hoist: error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let token = CancellationToken::new();
    runtime.spawn(cancel_on_signal(token.clone()));
    match runtime.block_on(cli::run(args, token)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hoist: error: {e:#}");
            if e.is::<UsageError>() || e.is::<ConfigError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn cancel_on_signal(token: CancellationToken) {
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
}
