//! `hoist app create NAME`, `hoist app list [--json]`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use hoist_protocol::operator::{Application, ApplicationList, CreateApplication};

use super::client::Client;
use super::{print_json, table, when};

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create an application.
    Create {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List applications.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(client: &Client, cmd: AppCommand) -> Result<ExitCode> {
    match cmd {
        AppCommand::Create { name, json } => {
            let app: Application = client
                .post("/v1/applications", &CreateApplication { name })
                .await?;
            if json {
                print_json(&app)?;
            } else {
                println!("{}", app.name);
            }
        }
        AppCommand::List { json } => {
            let list: ApplicationList = client.get("/v1/applications").await?;
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .applications
                    .iter()
                    .map(|a| vec![a.name.clone(), when(a.created_ms)])
                    .collect();
                println!("{}", table(&["NAME", "CREATED"], &rows));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
