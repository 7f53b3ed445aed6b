//! `hoist release create|list|status|approve|reject`.
//!
//! `create` prints the release id alone on stdout; with `--wait` it follows the release
//! (long-polling the coordinator for changes, each stage's progress on stderr) to its end or
//! to a gate: exit 0 when it succeeded, 1 when it failed (or was rejected or superseded), 3
//! when it waits for approval.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use hoist_protocol::operator::{CreateRelease, Decision, Release, ReleaseList, ReleaseState};

use super::client::{seg, Client};
use super::deploy::RevisionArgs;
use super::{esc, print_json, table, when};

/// Exit code of `release create --wait` when the release waits at a gate.
const AWAITING_APPROVAL: u8 = 3;

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Start a release of a revision through a pipeline.
    Create(Box<CreateArgs>),
    /// List releases, newest first.
    List {
        #[arg(long)]
        pipeline: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a release stage by stage.
    Status {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve the gate a release waits at: its stage starts.
    Approve(DecideArgs),
    /// Reject the gate a release waits at: the release ends rejected.
    Reject(DecideArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub pipeline: String,
    #[command(flatten)]
    pub rev: RevisionArgs,
    /// Follow the release to its end or to a gate: exit 0 succeeded, 1 failed, 3 awaiting
    /// approval.
    #[arg(long)]
    pub wait: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    pub id: String,
    /// Why, recorded with the decision.
    #[arg(long)]
    pub comment: Option<String>,
    /// Who decides (default: the login name).
    #[arg(long)]
    pub by: Option<String>,
    #[arg(long)]
    pub json: bool,
}

fn who(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "operator".into())
}

pub async fn run(client: &Client, cmd: ReleaseCommand) -> Result<ExitCode> {
    match cmd {
        ReleaseCommand::Create(args) => {
            let req = CreateRelease {
                revision: args.rev.source()?,
            };
            let r: Release = client
                .post(
                    &format!("/v1/pipelines/{}/releases", seg(&args.pipeline)),
                    &req,
                )
                .await?;
            // With --json the release itself is printed (with --wait, one JSON object per
            // change, one a line, as `deploy create` does); otherwise its id alone.
            if !args.json {
                println!("{}", r.id);
            } else if !args.wait {
                print_json(&r)?;
            }
            if !args.wait {
                return Ok(ExitCode::SUCCESS);
            }
            follow(client, r, args.json).await
        }
        ReleaseCommand::List { pipeline, json } => {
            let path = match &pipeline {
                Some(p) => format!("/v1/releases?pipeline={}", seg(p)),
                None => "/v1/releases".into(),
            };
            let list: ReleaseList = client.get(&path).await?;
            if json {
                print_json(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = list
                .releases
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.pipeline.clone(),
                        r.state.to_string(),
                        where_now(r),
                        esc(&r.creator),
                        when(r.created_ms),
                        esc(&r.revision.describe()),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &["ID", "PIPELINE", "STATE", "AT", "BY", "CREATED", "REVISION"],
                    &rows
                )
            );
            Ok(ExitCode::SUCCESS)
        }
        ReleaseCommand::Status { id, json } => {
            let r: Release = client.get(&format!("/v1/releases/{}", seg(&id))).await?;
            if json {
                print_json(&r)?;
            } else {
                print_status(&r);
            }
            Ok(ExitCode::SUCCESS)
        }
        ReleaseCommand::Approve(a) => decide(client, a, "approve").await,
        ReleaseCommand::Reject(a) => decide(client, a, "reject").await,
    }
}

async fn decide(client: &Client, a: DecideArgs, verb: &str) -> Result<ExitCode> {
    let req = Decision {
        comment: a.comment,
        by: Some(who(a.by)),
    };
    let r: Release = client
        .post(&format!("/v1/releases/{}/{verb}", seg(&a.id)), &req)
        .await?;
    if a.json {
        print_json(&r)?;
    } else {
        eprintln!("release {}: {}", r.id, where_now(&r));
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows a release until it ends or waits at a gate, a line on stderr per stage change.
async fn follow(client: &Client, mut r: Release, json: bool) -> Result<ExitCode> {
    let mut last = String::new();
    loop {
        let line = where_now(&r);
        if line != last {
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                eprintln!("release {}: {line}", r.id);
            }
            last = line;
        }
        match r.state {
            ReleaseState::Succeeded => return Ok(ExitCode::SUCCESS),
            ReleaseState::AwaitingApproval => return Ok(ExitCode::from(AWAITING_APPROVAL)),
            ReleaseState::Failed | ReleaseState::Rejected | ReleaseState::Superseded => {
                if let Some(m) = &r.message {
                    eprintln!("release {} {}: {}", r.id, r.state, esc(m));
                }
                return Ok(ExitCode::FAILURE);
            }
            ReleaseState::InProgress | ReleaseState::Unknown => {}
        }
        r = client
            .get(&format!(
                "/v1/releases/{}?since={}&wait_secs=25",
                seg(&r.id),
                r.change_seq
            ))
            .await?;
    }
}

/// Where a release is: `staging succeeded, production awaiting_approval`.
fn where_now(r: &Release) -> String {
    r.stages
        .iter()
        .map(|s| format!("{} {}", s.group, s.state))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One release as a line of `pipeline show`.
pub fn print_release_line(r: &Release) {
    println!(
        "  {}  {}  {}  {}  {}",
        r.id,
        r.state,
        when(r.created_ms),
        esc(&r.revision.describe()),
        where_now(r)
    );
}

fn print_status(r: &Release) {
    println!("release {}", r.id);
    println!("  pipeline:     {}", r.pipeline);
    println!("  application:  {}", r.application);
    println!("  state:        {}", r.state);
    println!(
        "  revision:     {} ({})",
        esc(&r.revision.describe()),
        r.revision_id
    );
    println!(
        "  created:      {} by {}{}",
        when(r.created_ms),
        esc(&r.creator),
        r.source_ref
            .as_deref()
            .map(|s| format!(" for {}", esc(s)))
            .unwrap_or_default()
    );
    if let Some(e) = r.ended_ms {
        println!("  ended:        {}", when(e));
    }
    if let Some(m) = &r.message {
        println!("  message:      {}", esc(m));
    }
    println!("stages:");
    for (i, s) in r.stages.iter().enumerate() {
        let mut line = format!("  {}. {}  {}", i + 1, s.group, s.state);
        if s.manual_approval {
            line.push_str("  (manual approval)");
        }
        if let Some(d) = &s.deployment_id {
            line.push_str(&format!("  deployment {d}"));
        }
        println!("{line}");
        for (k, v) in &s.variables {
            println!("       {}={}", esc(k), esc(v));
        }
        if let (Some(by), Some(at)) = (&s.approved_by, s.approved_ms) {
            println!("       approved by {} at {}", esc(by), when(at));
        }
        if let (Some(by), Some(at)) = (&s.rejected_by, s.rejected_ms) {
            println!("       rejected by {} at {}", esc(by), when(at));
        }
        if let Some(c) = &s.comment {
            println!("       comment: {}", esc(c));
        }
        if let Some(m) = &s.message {
            println!("       {}", esc(m));
        }
    }
}
