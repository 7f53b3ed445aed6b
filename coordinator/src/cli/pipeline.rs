//! `hoist pipeline apply|list|show|delete`: a pipeline file sent as written (the coordinator
//! checks it and lists every problem), and the pipelines' views. Not here: releases
//! (`release`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use hoist_protocol::operator::{ApplyPipeline, Pipeline, PipelineList};

use super::client::{seg, Client};
use super::release::print_release_line;
use super::{esc, print_json, table, when, UsageError};

/// Largest pipeline file read.
const MAX_FILE: u64 = 32 * 1024;

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Create or update a pipeline from its YAML file.
    Apply {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List pipelines.
    List {
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a pipeline: its stages, its source's standing and its recent releases.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a pipeline (its releases stay listed).
    Delete { name: String },
}

pub async fn run(client: &Client, cmd: PipelineCommand) -> Result<ExitCode> {
    match cmd {
        PipelineCommand::Apply { file, json } => {
            let len = std::fs::metadata(&file)
                .with_context(|| format!("reading {}", file.display()))?
                .len();
            if len > MAX_FILE {
                return Err(UsageError(format!(
                    "{}: {len} bytes; a pipeline file has at most {MAX_FILE}",
                    file.display()
                ))
                .into());
            }
            let yaml = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let p: Pipeline = client
                .post("/v1/pipelines", &ApplyPipeline { yaml })
                .await
                .with_context(|| format!("applying {}", file.display()))?;
            if json {
                print_json(&p)?;
            } else {
                println!(
                    "pipeline {} of application {} applied: {}",
                    p.name,
                    p.application,
                    stages_line(&p)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PipelineCommand::List { app, json } => {
            let path = match &app {
                Some(a) => format!("/v1/pipelines?application={}", seg(a)),
                None => "/v1/pipelines".into(),
            };
            let list: PipelineList = client.get(&path).await?;
            if json {
                print_json(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = list
                .pipelines
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.application.clone(),
                        stages_line(p),
                        p.source
                            .as_ref()
                            .map_or_else(|| "-".into(), |s| esc(&s.describe())),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(&["NAME", "APPLICATION", "STAGES", "SOURCE"], &rows)
            );
            Ok(ExitCode::SUCCESS)
        }
        PipelineCommand::Show { name, json } => {
            let p: Pipeline = client.get(&format!("/v1/pipelines/{}", seg(&name))).await?;
            if json {
                print_json(&p)?;
            } else {
                print_pipeline(&p);
            }
            Ok(ExitCode::SUCCESS)
        }
        PipelineCommand::Delete { name } => {
            let req = client.request(
                reqwest::Method::DELETE,
                &format!("/v1/pipelines/{}", seg(&name)),
            )?;
            let p: Pipeline = client.send(req).await?;
            eprintln!("pipeline {} deleted", p.name);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `staging -> production (manual approval)`.
fn stages_line(p: &Pipeline) -> String {
    p.stages
        .iter()
        .map(|s| {
            if s.manual_approval {
                format!("{} (manual approval)", s.group)
            } else {
                s.group.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn print_pipeline(p: &Pipeline) {
    println!("pipeline {}", p.name);
    println!("  application:  {}", p.application);
    println!("  updated:      {}", when(p.updated_ms));
    println!("stages:");
    for (i, s) in p.stages.iter().enumerate() {
        println!(
            "  {}. {}{}",
            i + 1,
            s.group,
            if s.manual_approval {
                "  (manual approval)"
            } else {
                ""
            }
        );
        for (k, v) in &s.variables {
            println!("       {}={}", esc(k), esc(v));
        }
    }
    match (&p.source, &p.source_status) {
        (Some(src), status) => {
            println!("source:");
            println!("  {}  every {} s", esc(&src.describe()), src.poll_secs());
            let status = status.clone().unwrap_or_default();
            println!(
                "  last released: {}",
                status
                    .last
                    .as_deref()
                    .map_or_else(|| "none yet".into(), esc)
            );
            println!(
                "  last checked:  {}",
                status.checked_ms.map_or_else(|| "never".into(), when)
            );
            if let Some(e) = &status.error {
                println!(
                    "  error:         {} ({} failure(s) in a row; next try {})",
                    esc(e),
                    status.failures,
                    when(status.next_ms)
                );
            }
        }
        (None, _) => println!("source: none (releases are created with hoist release create)"),
    }
    println!("releases:");
    if p.releases.is_empty() {
        println!("  none");
    }
    for r in &p.releases {
        print_release_line(r);
    }
}
