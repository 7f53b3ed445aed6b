//! `hoist token create`: prints a new registration token alone on stdout.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use hoist_protocol::operator::RegistrationToken;

use super::client::Client;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a registration token for new hosts (shown once).
    Create,
}

pub async fn run(client: &Client, cmd: TokenCommand) -> Result<ExitCode> {
    match cmd {
        TokenCommand::Create => {
            let t: RegistrationToken = client
                .post("/v1/registration-tokens", &serde_json::json!({}))
                .await?;
            println!("{}", t.token);
        }
    }
    Ok(ExitCode::SUCCESS)
}
