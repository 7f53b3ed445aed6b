//! `hoist hosts list [--json]` (tags, online, current revision per group) and
//! `hoist hosts revoke ID`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use hoist_protocol::operator::{HostInfo, HostList};

use super::client::{seg, Client};
use super::{print_json, table, when};

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// List registered hosts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a host's secret; its requests are refused from then on.
    Revoke { id: String },
}

pub async fn run(client: &Client, cmd: HostsCommand) -> Result<ExitCode> {
    match cmd {
        HostsCommand::List { json } => {
            let list: HostList = client.get("/v1/hosts").await?;
            if json {
                print_json(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = list
                .hosts
                .iter()
                .map(|h| {
                    let tags = h
                        .tags
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",");
                    let status = if h.revoked {
                        "revoked"
                    } else if h.online {
                        "online"
                    } else {
                        "offline"
                    };
                    let deployed = h
                        .deployed
                        .iter()
                        .map(|d| {
                            format!(
                                "{}/{}: {}",
                                d.application,
                                d.deployment_group,
                                d.revision.describe()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    vec![
                        h.name.clone(),
                        h.id.clone(),
                        status.into(),
                        tags,
                        when(h.last_seen_ms),
                        if deployed.is_empty() {
                            "-".into()
                        } else {
                            deployed
                        },
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &["NAME", "ID", "STATUS", "TAGS", "LAST SEEN", "DEPLOYED"],
                    &rows
                )
            );
        }
        HostsCommand::Revoke { id } => {
            let h: HostInfo = client
                .post(
                    &format!("/v1/hosts/{}/revoke", seg(&id)),
                    &serde_json::json!({}),
                )
                .await?;
            eprintln!("host {} ({}) revoked", h.name, h.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}
