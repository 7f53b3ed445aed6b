//! `hoist deploy create|status|list|stop`.
//!
//! `create` prints the deployment id alone on stdout; with `--wait` it follows the
//! deployment (`progress`: long-polling the coordinator for changes, progress on stderr)
//! and exits 0 when it succeeded, 1 when it failed or was stopped.

use std::process::ExitCode;

use anyhow::Result;
use clap::{ArgGroup, Args, Subcommand};
use hoist_protocol::agent::Revision;
use hoist_protocol::operator::{
    CommandState, CreateDeployment, Deployment, DeploymentList, RevisionSource,
};
use tokio_util::sync::CancellationToken;

use super::client::{seg, Client};
use super::{esc, print_json, table, when, UsageError};

#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Start a deployment of a revision to a deployment group.
    Create(Box<CreateArgs>),
    /// Show a deployment with every host's progress.
    Status {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// List deployments, newest first.
    List {
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Stop a deployment: hosts not started get nothing, running hosts are told to abort.
    Stop {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub app: String,
    #[arg(long)]
    pub group: String,
    #[command(flatten)]
    pub rev: RevisionArgs,
    /// A signature file (`hoist sign --out`) for the revision: its manifest must name the
    /// revision's sha256 (or commit) and the application.
    #[arg(long, value_name = "FILE")]
    pub signature: Option<std::path::PathBuf>,
    /// The group's previous successful revision instead: with hoist.releases, hosts that
    /// kept it switch back without a download.
    #[arg(long, group = "source")]
    pub previous: bool,
    /// DISALLOW, OVERWRITE or RETAIN (the appspec's own value wins).
    #[arg(long)]
    pub file_exists_behavior: Option<String>,
    /// Treat failures of BeforeBlockTraffic, AfterBlockTraffic and ApplicationStop as warnings.
    #[arg(long)]
    pub ignore_application_stop_failures: bool,
    /// Lifecycle events to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub events: Vec<String>,
    /// The appspec's path inside the bundle, when not appspec.yml.
    #[arg(long)]
    pub appspec: Option<String>,
    /// A variable its hooks see in their environment, KEY=VALUE (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = hoist_protocol::variables::parse_assignment)]
    pub vars: Vec<(String, String)>,
    /// Follow the deployment to its end; exit 1 unless it succeeds.
    #[arg(long)]
    pub wait: bool,
    /// Print the deployment as JSON; with --wait, one JSON object per change, one a line.
    #[arg(long)]
    pub json: bool,
}

/// What to deploy: a registered revision or one given inline (`deploy create` and
/// `release create` take the same flags).
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["revision", "s3", "url", "git"])))]
pub struct RevisionArgs {
    /// A revision id from `hoist push`.
    #[arg(long)]
    pub revision: Option<String>,
    /// A bundle in S3: s3://bucket/key (with --sha256).
    #[arg(long, value_name = "s3://BUCKET/KEY", requires = "sha256")]
    pub s3: Option<String>,
    /// An S3 object version.
    #[arg(long, requires = "s3")]
    pub version_id: Option<String>,
    /// The S3 object's ETag.
    #[arg(long, requires = "s3")]
    pub etag: Option<String>,
    /// A bundle at an HTTPS URL (with --sha256).
    #[arg(long, requires = "sha256")]
    pub url: Option<String>,
    /// A Git repository (with --commit).
    #[arg(long, requires = "commit")]
    pub git: Option<String>,
    /// The full commit id for --git.
    #[arg(long, requires = "git")]
    pub commit: Option<String>,
    /// The bundle's sha256, for --s3 and --url.
    #[arg(long)]
    pub sha256: Option<String>,
}

impl RevisionArgs {
    pub fn source(&self) -> Result<RevisionSource, UsageError> {
        source(self)
    }
}

fn source(a: &RevisionArgs) -> Result<RevisionSource, UsageError> {
    if let Some(id) = &a.revision {
        return Ok(RevisionSource::Id(id.clone()));
    }
    let sha256 = || {
        a.sha256
            .clone()
            .ok_or_else(|| UsageError("--sha256 is required with --s3 and --url".into()))
    };
    if let Some(s3) = &a.s3 {
        let rest = s3.strip_prefix("s3://").unwrap_or("");
        let Some((bucket, key)) = rest
            .split_once('/')
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        else {
            return Err(UsageError(format!(
                "--s3 {s3:?} must look like s3://bucket/key"
            )));
        };
        return Ok(RevisionSource::Inline(Revision::S3 {
            bucket: bucket.into(),
            key: key.into(),
            version_id: a.version_id.clone(),
            etag: a.etag.clone(),
            sha256: sha256()?,
        }));
    }
    if let Some(url) = &a.url {
        return Ok(RevisionSource::Inline(Revision::Url {
            url: url.clone(),
            sha256: sha256()?,
        }));
    }
    if let (Some(repository), Some(commit)) = (&a.git, &a.commit) {
        return Ok(RevisionSource::Inline(Revision::Git {
            repository: repository.clone(),
            commit: commit.clone(),
        }));
    }
    Err(UsageError(
        "give one of --revision, --s3, --url or --git".into(),
    ))
}

pub async fn run(
    client: &Client,
    cmd: DeployCommand,
    cancel: CancellationToken,
) -> Result<ExitCode> {
    match cmd {
        DeployCommand::Create(args) => {
            let req = CreateDeployment {
                application: args.app.clone(),
                deployment_group: args.group.clone(),
                revision: if args.previous {
                    RevisionSource::Previous
                } else {
                    args.rev.source()?
                },
                file_exists_behavior: args.file_exists_behavior.clone(),
                ignore_application_stop_failures: args.ignore_application_stop_failures,
                events: args.events.clone(),
                appspec_path: args.appspec.clone(),
                variables: args.vars.iter().cloned().collect(),
                signature: args
                    .signature
                    .as_deref()
                    .map(super::sign::read_signature_file)
                    .transpose()?,
            };
            let d: Deployment = client.post("/v1/deployments", &req).await?;
            if !args.wait {
                if args.json {
                    print_json(&d)?;
                } else {
                    println!("{}", d.id);
                }
                return Ok(ExitCode::SUCCESS);
            }
            if !args.json {
                println!("{}", d.id);
            }
            let output = super::progress::Output::choose(args.json);
            super::progress::follow(client, d, output, cancel).await
        }
        DeployCommand::Status { id, json } => {
            let d: Deployment = client.get(&format!("/v1/deployments/{}", seg(&id))).await?;
            if json {
                print_json(&d)?;
            } else {
                print_status(&d);
            }
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::List { app, json } => {
            let path = match &app {
                Some(a) => format!("/v1/deployments?application={}", seg(a)),
                None => "/v1/deployments".into(),
            };
            let list: DeploymentList = client.get(&path).await?;
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .deployments
                    .iter()
                    .map(|d| {
                        vec![
                            d.id.clone(),
                            d.application.clone(),
                            d.deployment_group.clone(),
                            d.state.to_string(),
                            d.creator.to_string(),
                            format!(
                                "{}/{}",
                                d.counts.succeeded,
                                d.counts.pending
                                    + d.counts.in_progress
                                    + d.counts.succeeded
                                    + d.counts.failed
                                    + d.counts.stopped
                                    + d.counts.skipped
                            ),
                            when(d.created_ms),
                            esc(&d.revision.describe()),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    table(
                        &[
                            "ID",
                            "APPLICATION",
                            "GROUP",
                            "STATE",
                            "BY",
                            "OK/HOSTS",
                            "CREATED",
                            "REVISION"
                        ],
                        &rows
                    )
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Stop { id, json } => {
            let d: Deployment = client
                .post(
                    &format!("/v1/deployments/{}/stop", seg(&id)),
                    &serde_json::json!({}),
                )
                .await?;
            if json {
                print_json(&d)?;
            } else {
                eprintln!(
                    "deployment {} stopped; {} host(s) still finishing their current script",
                    d.id, d.counts.in_progress
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_status(d: &Deployment) {
    println!("deployment {}", d.id);
    println!("  application:  {}", d.application);
    println!("  group:        {}", d.deployment_group);
    println!("  state:        {}", d.state);
    println!(
        "  revision:     {}{}",
        esc(&d.revision.describe()),
        d.revision_id
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    if let Some(key) = &d.signed_by {
        println!("  signature:    by key {key} (verified by the hosts that trust it)");
    }
    println!("  rollout:      {}", d.rollout);
    println!(
        "  created:      {}{}",
        when(d.created_ms),
        match d.creator {
            hoist_protocol::operator::Creator::Rollback => " by auto-rollback",
            hoist_protocol::operator::Creator::CatchUp => " by catch-up",
            hoist_protocol::operator::Creator::Pipeline => " by pipeline",
            _ => "",
        }
    );
    if let Some(r) = &d.release_id {
        println!("  release:      {r}");
    }
    for (k, v) in &d.variables {
        println!("  variable:     {}={}", esc(k), esc(v));
    }
    if let Some(until) = d.baking_until_ms {
        println!(
            "  baking:       until {} (then the next batch)",
            when(until)
        );
    }
    if let Some(e) = d.ended_ms {
        println!("  ended:        {}", when(e));
    }
    if let Some(m) = &d.message {
        println!("  message:      {}", esc(m));
    }
    if let Some(r) = &d.rollback_of {
        println!("  rollback of:  {r}");
    }
    if let Some(r) = &d.rolled_back_by {
        println!("  rolled back:  by {r}");
    }
    println!("hosts:");
    for h in &d.hosts {
        let mut line = format!("  {}  {}", esc(&h.host_name), h.state);
        if h.state == CommandState::InProgress {
            if let Some(e) = &h.current_event {
                line.push_str(&format!("  event {}", esc(e)));
            }
        }
        if let Some(e) = &h.failed_event {
            line.push_str(&format!("  failed event {}", esc(e)));
        }
        if let Some(s) = &h.script {
            line.push_str(&format!("  script {}", esc(s)));
        }
        if let Some(c) = h.exit_code {
            line.push_str(&format!("  exit code {c}"));
        }
        println!("{line}");
        if let Some(m) = &h.message {
            println!("      {}", esc(m));
        }
        // The tail says why a host failed or what it is doing; a succeeded host's last lines
        // are noise in a fleet's listing (`--json` keeps them).
        let done = matches!(h.state, CommandState::Succeeded | CommandState::Skipped);
        if let Some(t) = h
            .log_tail
            .as_deref()
            .filter(|t| !done && !t.trim().is_empty())
        {
            println!("      log tail:");
            for l in t.lines() {
                println!("      | {}", esc(l));
            }
        }
    }
}
