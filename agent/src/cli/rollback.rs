//! `hoist-agent rollback --app A --group G [--to DEPLOYMENT_ID]`: switches a group whose
//! appspec uses `hoist.releases` back to a release kept on this host (default: the one
//! before the current one), through the same engine as every deployment: the current
//! revision's stop hooks, the switch of `current`, the kept revision's start and validate
//! hooks, all recorded like a deployment (so `hoist-agent status` shows it). Nothing is
//! downloaded or copied.
//!
//! It takes the host lock as `hoist-agent deploy` does, so it never races the daemon's
//! deployment in flight: while the daemon runs, it refuses and names it. For a group of a
//! coordinator, the rollback is then told to the coordinator (at once when it answers, else
//! by the daemon at its next start). It does not choose releases by revision; that is a
//! redeploy from the coordinator.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hoist_appspec::LifecycleEvent;
use hoist_protocol::text::esc;
use tokio_util::sync::CancellationToken;

use super::{CliError, Outcome};
use crate::client::Client;
use crate::deployment::{deployer_settings, Deployer, DeploymentRequest, Source, Stop};
use crate::recovery;
use crate::state::{self, HostCredentials, HostLock, LocalRollbackNote, RecordStatus, StateDir};

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Application of the group.
    #[arg(long = "app", value_name = "A")]
    pub application: String,
    /// Deployment group.
    #[arg(long, value_name = "G")]
    pub group: String,
    /// The deployment whose kept release becomes current (default: the release before the
    /// current one).
    #[arg(long, value_name = "DEPLOYMENT_ID")]
    pub to: Option<String>,
    /// State directory (default: from the config, else /var/lib/hoist).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Agent config file (default: /etc/hoist/agent.yaml when it exists).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

pub async fn run(args: RollbackArgs, shutdown: CancellationToken) -> Result<Outcome, CliError> {
    let config = super::load_config(args.config.clone())?;
    let state_root = args.state_dir.clone().unwrap_or(config.state_dir.clone());
    let state = StateDir::open(&state_root).with_context(|| {
        "opening the state directory (choose another with --state-dir)".to_string()
    })?;
    let _lock = HostLock::acquire(&state, "hoist-agent rollback")?;
    state
        .migrate()
        .context("moving per-group state to the layout keyed by group id")?;
    if let Some(r) = recovery::recover(&state, None, config.hooks.kill_grace()).await? {
        println!(
            "Recovered deployment {}: it was interrupted during {} and is recorded as failed",
            r.deployment_id, r.event
        );
    }
    let (group_id, record) = state
        .groups()?
        .into_iter()
        .filter(|(_, info)| info.application == args.application && info.group == args.group)
        .find_map(|(group, info)| {
            let record = group.releases().ok().flatten()?;
            Some((info.group_id.unwrap_or_default(), record))
        })
        .ok_or_else(|| {
            CliError::usage(anyhow::anyhow!(
                "--app {} --group {}: this host keeps no releases of that group (its appspec has no hoist.releases, or it never deployed here)",
                esc(&args.application),
                esc(&args.group)
            ))
        })?;
    let current = record.current_release().cloned().ok_or_else(|| {
        CliError::usage(anyhow::anyhow!(
            "{} does not point to a kept release; nothing to roll back from",
            record.current.display()
        ))
    })?;
    let kept: Vec<&str> = record
        .releases
        .iter()
        .map(|r| r.deployment_id.as_str())
        .collect();
    let target = match &args.to {
        Some(id) if *id == current.deployment_id => {
            return Err(CliError::usage(anyhow::anyhow!(
                "--to {}: that release is the current one",
                esc(id)
            )))
        }
        Some(id) => record.find(id).cloned().ok_or_else(|| {
            CliError::usage(anyhow::anyhow!(
                "--to {}: no such release kept (kept: {})",
                esc(id),
                esc(&kept.join(", "))
            ))
        })?,
        None => {
            let at = record
                .releases
                .iter()
                .position(|r| r.dir == current.dir)
                .unwrap_or(0);
            at.checked_sub(1)
                .and_then(|i| record.releases.get(i))
                .cloned()
                .ok_or_else(|| {
                    CliError::usage(anyhow::anyhow!(
                        "no release older than the current one ({}) is kept; name one with --to (kept: {})",
                        esc(&current.deployment_id),
                        esc(&kept.join(", "))
                    ))
                })?
        }
    };

    let rollback_id = format!("rollback-{}-{}", state::now_ms(), std::process::id());
    let req = DeploymentRequest {
        deployment_id: rollback_id.clone(),
        command_id: None,
        application: args.application.clone(),
        group: args.group.clone(),
        group_id: group_id.clone(),
        source: Source::Kept(target.deployment_id.clone()),
        revision_description: format!(
            "rollback to {} (release of deployment {})",
            target.revision_description, target.deployment_id
        ),
        appspec_path: None,
        events: LifecycleEvent::ALL.to_vec(),
        file_exists_behavior: None,
        ignore_application_stop_failures: false,
        bundle_env: Vec::new(),
        variables: Vec::new(),
        // The box's own operator's rollback to a release this host already verified.
        signature: None,
    };
    println!(
        "Rolling back {} (application {}, group {}) from release {} to release {}",
        record.current.display(),
        esc(&args.application),
        esc(&args.group),
        esc(&current.deployment_id),
        esc(&target.deployment_id)
    );
    // A kept release is switched to with no signature check (`Source::Kept` is the box's
    // own operator's), so no key is loaded.
    let engine = Deployer::new(
        state.clone(),
        deployer_settings(&config, crate::trust::Trust::default(), None),
    );
    let stop = Stop {
        abort: CancellationToken::new(),
        shutdown,
    };
    let record = engine.run(&req, &super::deploy::Progress, &stop).await?;
    println!();
    println!("Rollback {rollback_id} {}", record.status.as_str());
    if record.status != RecordStatus::Succeeded {
        if let Some(error) = &record.error {
            println!("  reason:       {}", esc(error));
        }
        println!("  full log:     {}", record.log_path.display());
        return Ok(Outcome::Failed);
    }
    println!(
        "  {} -> {}",
        engine
            .state
            .group(&group_id)
            .releases()?
            .map(|r| r.current.display().to_string())
            .unwrap_or_default(),
        target.dir.display()
    );
    tell_coordinator(
        &config,
        &state,
        &group_id,
        &target.deployment_id,
        &rollback_id,
    )
    .await;
    Ok(Outcome::Ok)
}

/// For a group of a coordinator on a registered host: the rollback is noted durably and
/// sent; what cannot be sent now the daemon sends at its next start.
async fn tell_coordinator(
    config: &crate::config::Config,
    state: &StateDir,
    group_id: &str,
    deployment_id: &str,
    rollback_id: &str,
) {
    let host = state::read_json::<HostCredentials>(&state.host_credentials_path())
        .ok()
        .flatten();
    let (Some(host), Some(_)) = (host, &config.coordinator) else {
        return;
    };
    if group_id.starts_with("local-") {
        return;
    }
    let note = LocalRollbackNote {
        schema_version: state::SCHEMA_VERSION,
        group_id: group_id.to_string(),
        deployment_id: deployment_id.to_string(),
        rollback_id: rollback_id.to_string(),
        at_ms: state::now_ms(),
    };
    if let Err(e) = state.note_local_rollback(&note) {
        println!("  not told to the coordinator: {e:#}");
        return;
    }
    let sent = match Client::new(config) {
        Ok(client) => crate::daemon::rollbacks::send_local_rollbacks(&client, &host, state).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok(_) => println!("  told the coordinator: this host is shown out of sync in the group until a new deployment or `hoist hosts retry`"),
        Err(e) => println!("  {}; the daemon sends it at its next start", esc(&format!("{e:#}"))),
    }
}
