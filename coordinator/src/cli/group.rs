//! `hoist group create NAME --app APP [--tag k=v]... [--tag-filter 'k=v,k2=v2']...
//! [--config C] [--auto-rollback] [--no-catch-up] [--bake SECONDS]`, `hoist group update
//! NAME --app APP [--catch-up|--no-catch-up] [--bake SECONDS] [--config C]
//! [--auto-rollback|--no-auto-rollback]`, `hoist group list --app APP`, `hoist group show
//! NAME --app APP` (with the target revision and the hosts counted by sync state).
//!
//! The `--tag` options together form one filter (every tag must match); each
//! `--tag-filter` is a further filter; a host belongs to the group when any filter matches.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use hoist_protocol::operator::{
    CreateGroup, DeploymentGroup, GroupList, RolloutConfig, TagFilter, UpdateGroup,
};

use super::client::{seg, Client};
use super::{esc, print_json, table, UsageError};

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a deployment group.
    Create {
        name: String,
        #[arg(long)]
        app: String,
        /// A `key=value` tag; all `--tag`s form one filter.
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Another filter, `k=v,k2=v2`; a host matching any filter belongs to the group.
        #[arg(long = "tag-filter", value_name = "K=V,...")]
        tag_filters: Vec<String>,
        /// AllAtOnce, HalfAtATime, OneAtATime (default), min-healthy=N or min-healthy=N%.
        #[arg(long, default_value = "OneAtATime", value_parser = parse_config)]
        config: RolloutConfig,
        /// Deploy the last successful revision again when a deployment fails.
        #[arg(long)]
        auto_rollback: bool,
        /// Do not deploy the target revision to hosts that join the group or come back.
        #[arg(long)]
        no_catch_up: bool,
        /// Seconds to wait after each batch succeeds before the next starts.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        bake: u64,
        #[arg(long)]
        json: bool,
    },
    /// Change a deployment group's options (what is not given stays).
    Update {
        name: String,
        #[arg(long)]
        app: String,
        /// Deploy the target revision to hosts that join the group or come back.
        #[arg(long, conflicts_with = "no_catch_up")]
        catch_up: bool,
        #[arg(long)]
        no_catch_up: bool,
        /// Seconds to wait after each batch succeeds before the next starts (0: none).
        #[arg(long, value_name = "SECONDS")]
        bake: Option<u64>,
        /// AllAtOnce, HalfAtATime, OneAtATime, min-healthy=N or min-healthy=N%.
        #[arg(long, value_parser = parse_config)]
        config: Option<RolloutConfig>,
        #[arg(long, conflicts_with = "no_auto_rollback")]
        auto_rollback: bool,
        #[arg(long)]
        no_auto_rollback: bool,
        #[arg(long)]
        json: bool,
    },
    /// List an application's deployment groups.
    List {
        #[arg(long)]
        app: String,
        #[arg(long)]
        json: bool,
    },
    /// Show a deployment group: the hosts it matches now, its target revision and the
    /// deployment that set it, its hosts counted by sync state.
    Show {
        name: String,
        #[arg(long)]
        app: String,
        #[arg(long)]
        json: bool,
    },
}

fn parse_config(s: &str) -> Result<RolloutConfig, String> {
    s.parse()
}

fn parse_tag(s: &str) -> Result<(String, String), UsageError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(UsageError(format!("tag {s:?} is not key=value"))),
    }
}

/// Builds the filters from `--tag` and `--tag-filter` values.
pub fn filters(tags: &[String], tag_filters: &[String]) -> Result<Vec<TagFilter>, UsageError> {
    let mut out = Vec::new();
    if !tags.is_empty() {
        out.push(
            tags.iter()
                .map(|t| parse_tag(t))
                .collect::<Result<TagFilter, _>>()?,
        );
    }
    for f in tag_filters {
        let filter = f
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(parse_tag)
            .collect::<Result<TagFilter, _>>()?;
        if filter.is_empty() {
            return Err(UsageError(format!("--tag-filter {f:?} has no key=value")));
        }
        out.push(filter);
    }
    if out.is_empty() {
        return Err(UsageError(
            "a deployment group needs at least one --tag or --tag-filter".into(),
        ));
    }
    Ok(out)
}

fn describe_filters(filters: &[TagFilter]) -> String {
    filters
        .iter()
        .map(|f| {
            f.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn show(g: &DeploymentGroup) {
    println!(
        "deployment group {} (application {})",
        g.name, g.application
    );
    println!("  id:             {}", g.id);
    println!("  tag filters:    {}", describe_filters(&g.tag_filters));
    println!("  rollout:        {}", g.rollout);
    println!(
        "  auto-rollback:  {}",
        if g.auto_rollback { "on" } else { "off" }
    );
    let hosts = if g.matching_hosts.is_empty() {
        "none".to_owned()
    } else {
        esc(&g.matching_hosts.join(", "))
    };
    println!("  matching hosts: {hosts}");
    match &g.last_successful_revision {
        Some(r) => println!(
            "  last success:   {} ({})",
            esc(&r.revision.describe()),
            r.id
        ),
        None => println!("  last success:   none"),
    }
    println!(
        "  catch-up:       {}",
        if g.catch_up { "on" } else { "off" }
    );
    if g.bake_secs > 0 {
        println!("  bake:           {}s between batches", g.bake_secs);
    } else {
        println!("  bake:           none");
    }
    match &g.target {
        Some(t) => println!(
            "  target:         {} ({}), set by deployment {}",
            esc(&t.revision.revision.describe()),
            t.revision.id,
            t.deployment_id
        ),
        None => println!("  target:         none (no successful deployment yet)"),
    }
    let c = &g.sync_counts;
    println!(
        "  hosts:          {} in sync, {} catching up, {} out of sync, {} never deployed",
        c.in_sync, c.catching_up, c.out_of_sync, c.never_deployed
    );
}

/// `--flag` / `--no-flag` as a change: `None` when neither is given.
fn switch(on: bool, off: bool) -> Option<bool> {
    match (on, off) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

pub async fn run(client: &Client, cmd: GroupCommand) -> Result<ExitCode> {
    match cmd {
        GroupCommand::Create {
            name,
            app,
            tags,
            tag_filters,
            config,
            auto_rollback,
            no_catch_up,
            bake,
            json,
        } => {
            let req = CreateGroup {
                name,
                tag_filters: filters(&tags, &tag_filters)?,
                rollout: config,
                auto_rollback,
                catch_up: !no_catch_up,
                bake_secs: bake,
            };
            let g: DeploymentGroup = client
                .post(&format!("/v1/applications/{}/groups", seg(&app)), &req)
                .await?;
            if json {
                print_json(&g)?;
            } else {
                show(&g);
            }
        }
        GroupCommand::Update {
            name,
            app,
            catch_up,
            no_catch_up,
            bake,
            config,
            auto_rollback,
            no_auto_rollback,
            json,
        } => {
            let req = UpdateGroup {
                catch_up: switch(catch_up, no_catch_up),
                bake_secs: bake,
                rollout: config,
                auto_rollback: switch(auto_rollback, no_auto_rollback),
            };
            if req == UpdateGroup::default() {
                return Err(UsageError(
                    "nothing to change: give --catch-up, --no-catch-up, --bake, --config, \
                     --auto-rollback or --no-auto-rollback"
                        .into(),
                )
                .into());
            }
            let g: DeploymentGroup = client
                .patch(
                    &format!("/v1/applications/{}/groups/{}", seg(&app), seg(&name)),
                    &req,
                )
                .await?;
            if json {
                print_json(&g)?;
            } else {
                show(&g);
            }
        }
        GroupCommand::List { app, json } => {
            let list: GroupList = client
                .get(&format!("/v1/applications/{}/groups", seg(&app)))
                .await?;
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .groups
                    .iter()
                    .map(|g| {
                        vec![
                            g.name.clone(),
                            g.rollout.to_string(),
                            if g.auto_rollback { "on" } else { "off" }.into(),
                            g.matching_hosts.len().to_string(),
                            describe_filters(&g.tag_filters),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    table(
                        &["NAME", "ROLLOUT", "AUTO-ROLLBACK", "HOSTS", "TAG FILTERS"],
                        &rows
                    )
                );
            }
        }
        GroupCommand::Show { name, app, json } => {
            let g: DeploymentGroup = client
                .get(&format!(
                    "/v1/applications/{}/groups/{}",
                    seg(&app),
                    seg(&name)
                ))
                .await?;
            if json {
                print_json(&g)?;
            } else {
                show(&g);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_form_one_filter_and_tag_filters_add_more() {
        let f = filters(
            &["env=prod".into(), "role=web".into()],
            &["env=staging,role=web".into()],
        )
        .unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].len(), 2);
        assert_eq!(f[1].get("env").map(String::as_str), Some("staging"));
        assert!(filters(&[], &[]).is_err());
        assert!(filters(&["novalue".into()], &[]).is_err());
    }
}
