//! The `hoist` command line: `hoist server` and the operator subcommands, one file each.
//!
//! Every operator subcommand talks to the coordinator through [`client::Client`] with
//! `--server`/`HOIST_SERVER` and `--token`/`HOIST_TOKEN`; read commands take `--json`.
//! Errors from the coordinator are shown as its sentence, not as JSON. Exit codes: 0 ok,
//! 1 failed, 2 usage ([`UsageError`], and clap's own usage errors).
//!
//! Text that came from a host or a bundle (host names, tags, versions, event messages,
//! script paths, log tails) is printed through [`esc`], so it cannot move the cursor,
//! recolour the terminal or forge a line. `--json` output is JSON-escaped already.

pub mod app;
pub mod client;
pub mod deploy;
pub mod group;
pub mod hosts;
pub mod key;
pub mod pipeline;
pub mod progress;
pub mod push;
pub mod release;
pub mod server;
pub mod sign;
pub mod token;
pub mod webhook;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Default coordinator URL for the CLI, matching the server's default listen address.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8443";

#[derive(Debug, Parser)]
#[command(name = "hoist", version, about = "Hoist coordinator and operator CLI")]
pub struct Cli {
    /// Coordinator URL.
    #[arg(long, global = true, env = "HOIST_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Operator token.
    #[arg(long, global = true, env = "HOIST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM certificate to trust for an https:// coordinator besides the system's roots: its
    /// CA, or the certificate itself (the one `hoist server` generates is
    /// DATA_DIR/tls/cert.pem).
    #[arg(long, global = true, env = "HOIST_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the coordinator.
    Server(Box<server::ServerArgs>),
    /// Applications.
    #[command(subcommand)]
    App(app::AppCommand),
    /// Deployment groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Registration tokens for new hosts.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Registered hosts.
    #[command(subcommand)]
    Hosts(hosts::HostsCommand),
    /// Pack a bundle directory, upload it and register it as a revision (signed with --sign-key).
    Push(push::PushArgs),
    /// Signing keys for revisions (minisign's format).
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Sign a bundle's sha256 or a Git commit into a signature file, for --signature.
    Sign(sign::SignArgs),
    /// Deployments.
    #[command(subcommand)]
    Deploy(deploy::DeployCommand),
    /// Pipelines: a revision's way through stages (deployment groups).
    #[command(subcommand)]
    Pipeline(pipeline::PipelineCommand),
    /// Releases: one revision going through a pipeline.
    #[command(subcommand)]
    Release(release::ReleaseCommand),
    /// Webhooks: an application's events POSTed, signed, to a URL.
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// Shell completions and man pages, for the packages.
    #[command(subcommand, hide = true)]
    Generate(hoist_cli::assets::Generate),
}

impl Cli {
    pub fn is_server(&self) -> bool {
        matches!(self.command, Command::Server(_))
    }
}

/// Bad usage detected after parsing (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub async fn run(cli: Cli, cancel: CancellationToken) -> Result<ExitCode> {
    if let Command::Server(args) = cli.command {
        return server::run(*args, cancel).await;
    }
    if let Command::Generate(what) = &cli.command {
        use clap::CommandFactory;
        hoist_cli::assets::generate(Cli::command(), what, &mut std::io::stdout())
            .map_err(anyhow::Error::msg)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Signing is local: no coordinator is asked.
    match cli.command {
        Command::Key(c) => return key::run(c),
        Command::Sign(a) => return sign::run(a),
        _ => {}
    }
    let client = client::Client::new(&cli.server, cli.token.as_deref(), cli.ca_file.as_deref())?;
    let work = async {
        match cli.command {
            Command::Server(_) | Command::Generate(_) | Command::Key(_) | Command::Sign(_) => {
                Ok(ExitCode::SUCCESS)
            }
            Command::App(c) => app::run(&client, c).await,
            Command::Group(c) => group::run(&client, c).await,
            Command::Token(c) => token::run(&client, c).await,
            Command::Hosts(c) => hosts::run(&client, c).await,
            Command::Push(a) => push::run(&client, a).await,
            Command::Deploy(c) => deploy::run(&client, c, cancel.clone()).await,
            Command::Pipeline(c) => pipeline::run(&client, c).await,
            Command::Release(c) => release::run(&client, c).await,
            Command::Webhook(c) => webhook::run(&client, c).await,
        }
    };
    tokio::select! {
        r = work => r,
        _ = cancel.cancelled() => Err(anyhow::anyhow!("interrupted")),
    }
}

/// Every CLI prints text from a host or a bundle through this one escape.
pub use hoist_protocol::text::esc;

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A duration flag (`--expires 12h`): humantime's forms, with an error that says what is
/// expected.
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|_| "expected a duration such as 90s, 10m, 12h or 7d".to_owned())
}

/// Milliseconds since the epoch as a UTC timestamp, seconds precision; `never` for 0.
pub fn when(ms: u64) -> String {
    if ms == 0 {
        return "never".into();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Renders rows as left-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}
