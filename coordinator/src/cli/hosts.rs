//! `hoist hosts list [--json]` (tags, requested changes, online, and per group the
//! revision it runs and its sync state, with the failing event and error when out of sync),
//! `hoist hosts tag HOST [KEY=VALUE]... [--remove KEY]... [--accept]`, `hoist hosts retry
//! HOST` (one more catch-up try) and `hoist hosts revoke ID`.
//!
//! A host's tags are the operator's: the host proposes (its config, sent with its polls),
//! `hosts tag --accept` applies the proposal.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use hoist_protocol::operator::{HostInfo, HostList, SetHostTags};

use super::client::{seg, Client};
use super::{esc, print_json, table, when, UsageError};

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// List registered hosts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Set a host's tags, or accept the name and tags the host asks for.
    Tag {
        /// The host's id, or the name of an active host.
        host: String,
        /// Tags to set.
        #[arg(value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// A tag key to remove (repeat the flag for several).
        #[arg(long, value_name = "KEY")]
        remove: Vec<String>,
        /// Apply the name and tags the host asks for (shown by `hosts list`).
        #[arg(long)]
        accept: bool,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a host's secret; its requests are refused from then on.
    Revoke { id: String },
    /// Give a host held out of sync one more catch-up try, at its next poll.
    Retry {
        /// The host's id, or the name of an active host.
        host: String,
        #[arg(long)]
        json: bool,
    },
}

/// Per group: `app/group: REVISION SYNC`, and for a host out of sync why.
fn sync_list(h: &HostInfo) -> String {
    let parts: Vec<String> = h
        .groups
        .iter()
        .map(|g| {
            let revision = g
                .revision
                .as_ref()
                .map_or_else(|| "-".to_owned(), |r| r.describe());
            let mut s = format!(
                "{}/{}: {revision} {}",
                g.application, g.deployment_group, g.sync
            );
            if let Some(st) = g.failed_state {
                s.push_str(&format!(" ({st}"));
                if let Some(e) = &g.failed_event {
                    s.push_str(&format!(" in {e}"));
                }
                s.push(')');
            }
            if let Some(e) = &g.error {
                s.push_str(&format!(": {e}"));
            }
            esc(&s)
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

fn tag_list(tags: &BTreeMap<String, String>) -> String {
    tags.iter()
        .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// What the host asks for that differs from what it has, or `-`.
fn requested(h: &HostInfo) -> String {
    let mut parts = Vec::new();
    if let Some(n) = &h.requested_name {
        parts.push(format!("name {}", esc(n)));
    }
    if let Some(t) = &h.requested_tags {
        parts.push(format!("tags {}", tag_list(t)));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
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
                    let status = if h.revoked {
                        "revoked"
                    } else if h.online {
                        "online"
                    } else {
                        "offline"
                    };
                    vec![
                        esc(&h.name),
                        esc(&h.id),
                        status.into(),
                        tag_list(&h.tags),
                        requested(h),
                        esc(&h.agent_version),
                        when(h.last_seen_ms),
                        sync_list(h),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "NAME",
                        "ID",
                        "STATUS",
                        "TAGS",
                        "REQUESTED",
                        "AGENT",
                        "LAST SEEN",
                        "GROUPS"
                    ],
                    &rows
                )
            );
        }
        HostsCommand::Tag {
            host,
            tags,
            remove,
            accept,
            json,
        } => {
            let mut set = BTreeMap::new();
            for t in &tags {
                let (k, v) = t
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| UsageError(format!("tag {t:?} must look like KEY=VALUE")))?;
                set.insert(k.to_owned(), v.to_owned());
            }
            if set.is_empty() && remove.is_empty() && !accept {
                return Err(
                    UsageError("give KEY=VALUE tags, --remove KEY or --accept".into()).into(),
                );
            }
            let h: HostInfo = client
                .post(
                    &format!("/v1/hosts/{}/tags", seg(&host)),
                    &SetHostTags {
                        accept,
                        set,
                        remove,
                    },
                )
                .await?;
            if json {
                print_json(&h)?;
            } else {
                eprintln!(
                    "host {} ({}) tags: {}",
                    esc(&h.name),
                    esc(&h.id),
                    tag_list(&h.tags)
                );
            }
        }
        HostsCommand::Revoke { id } => {
            let h: HostInfo = client
                .post(
                    &format!("/v1/hosts/{}/revoke", seg(&id)),
                    &serde_json::json!({}),
                )
                .await?;
            eprintln!("host {} ({}) revoked", esc(&h.name), esc(&h.id));
        }
        HostsCommand::Retry { host, json } => {
            let h: HostInfo = client
                .post(
                    &format!("/v1/hosts/{}/retry", seg(&host)),
                    &serde_json::json!({}),
                )
                .await?;
            if json {
                print_json(&h)?;
            } else {
                eprintln!(
                    "host {} ({}) gets one more catch-up try at its next poll",
                    esc(&h.name),
                    esc(&h.id)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
