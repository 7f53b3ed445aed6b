//! `hoist-agent deploy`: a local deployment of a bundle directory or archive through the
//! same engine the daemon uses, with progress on stdout and a summary at the end.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hoist_appspec::{FileExistsBehavior, LifecycleEvent};
use hoist_protocol::agent::EventStatus;
use hoist_protocol::text::esc;
use tokio_util::sync::CancellationToken;

use super::{CliError, Outcome};
use crate::bundle::fetch::FetchSettings;
use crate::client::http_client;
use crate::deployment::{
    deployer_settings, Deployer, DeploymentRequest, EventResult, FetchContext, Observer, Source,
    Stop,
};
use crate::recovery;
use crate::state::{self, HostLock, RecordStatus, StateDir};
use hoist_protocol::agent::Revision;
use hoist_protocol::signature::{SignedManifest, MAX_SIGNATURE_FILE_BYTES};

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Bundle to deploy: a directory, a zip / tar / tar.gz archive, or an http(s) URL of one.
    #[arg(long, value_name = "PATH_OR_URL")]
    pub bundle: PathBuf,
    /// sha256 of the archive at a URL `--bundle` (required for URLs).
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Application name (default: the bundle's file name).
    #[arg(long = "app", value_name = "A")]
    pub application: Option<String>,
    /// Deployment group: previous revisions and installed files are tracked per application
    /// and group.
    #[arg(long, value_name = "G", default_value = "local")]
    pub group: String,
    /// Lifecycle events to run, comma-separated (default: all).
    #[arg(long, value_name = "E,...", value_delimiter = ',')]
    pub events: Vec<String>,
    /// DISALLOW, OVERWRITE or RETAIN for existing files Hoist did not install (the appspec's
    /// own value wins).
    #[arg(long, value_name = "B")]
    pub file_exists_behavior: Option<String>,
    /// Failures of ApplicationStop, BeforeBlockTraffic and AfterBlockTraffic become warnings.
    #[arg(long)]
    pub ignore_application_stop_failures: bool,
    /// State directory (default: from the config, else /var/lib/hoist).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Agent config file (default: /etc/hoist/agent.yaml when it exists).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// A signature file (`hoist sign --out`) for the bundle, checked against the config's
    /// trusted keys before the bundle is unpacked.
    #[arg(long, value_name = "FILE")]
    pub signature: Option<PathBuf>,
}

pub async fn run(args: DeployArgs, shutdown: CancellationToken) -> Result<Outcome, CliError> {
    let config = super::load_config(args.config.clone())?;
    let origin = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG_PATH));
    let trust = super::load_trust(&config, &origin)?;
    let signature = match &args.signature {
        None => None,
        Some(path) => Some(read_signature(path).map_err(CliError::usage)?),
    };
    let events = parse_events(&args.events)
        .map_err(|e| CliError::usage(anyhow::anyhow!("--events: {e}")))?;
    let behavior = match args
        .file_exists_behavior
        .as_deref()
        .map(str::parse::<FileExistsBehavior>)
    {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => {
            return Err(CliError::usage(anyhow::anyhow!(
                "--file-exists-behavior {e}"
            )))
        }
    };
    let remote = match (args.bundle.to_str(), &args.sha256) {
        (Some(u), Some(sha256)) if u.starts_with("https://") || u.starts_with("http://") => {
            Some(Revision::Url {
                url: u.to_string(),
                sha256: sha256.clone(),
            })
        }
        (Some(u), None) if u.starts_with("https://") || u.starts_with("http://") => {
            return Err(CliError::usage(anyhow::anyhow!(
                "--bundle {u}: a URL needs --sha256 so the bundle is verified before it is unpacked"
            )));
        }
        _ => None,
    };
    let bundle = std::path::absolute(&args.bundle)
        .with_context(|| format!("resolving {}", args.bundle.display()))?;
    if remote.is_none() && !bundle.exists() {
        return Err(CliError::usage(anyhow::anyhow!(
            "--bundle {}: no such file or directory",
            bundle.display()
        )));
    }
    let state_root = args.state_dir.clone().unwrap_or(config.state_dir.clone());
    let state = StateDir::open(&state_root).with_context(|| {
        "opening the state directory (choose another with --state-dir)".to_string()
    })?;
    let _lock = HostLock::acquire(&state, "hoist-agent deploy")?;
    state
        .migrate()
        .context("moving per-group state to the layout keyed by group id")?;
    if let Some(r) = recovery::recover(&state, None, config.hooks.kill_grace()).await? {
        println!(
            "Recovered deployment {}: it was interrupted during {} and is recorded as failed",
            r.deployment_id, r.event
        );
    }

    let application = args.application.clone().unwrap_or_else(|| {
        bundle
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .split('.')
                    .next()
                    .unwrap_or("app")
                    .to_string()
            })
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "app".to_string())
    });
    let deployment_id = format!("local-{}-{}", state::now_ms(), std::process::id());
    let req = DeploymentRequest {
        deployment_id: deployment_id.clone(),
        command_id: None,
        application: application.clone(),
        group: args.group.clone(),
        group_id: state::local_group_id(&application, &args.group),
        source: match &remote {
            Some(r) => Source::Remote(r.clone()),
            None => Source::Local(bundle.clone()),
        },
        revision_description: match &remote {
            Some(r) => r.describe(),
            None => bundle.display().to_string(),
        },
        appspec_path: None,
        events,
        file_exists_behavior: behavior,
        ignore_application_stop_failures: args.ignore_application_stop_failures,
        bundle_env: Vec::new(),
        variables: Vec::new(),
        signature,
    };
    let mut settings = deployer_settings(&config, trust, None);
    if remote.is_some() {
        // Local deployments fetch only plain URLs, with no coordinator credentials.
        settings.fetch = Some(FetchContext {
            client: http_client(
                None,
                None,
                config.proxy.as_deref(),
                Duration::from_secs(10),
                Duration::from_secs(60),
            )?,
            settings: FetchSettings::from_config(&config),
        });
    }
    let engine = Deployer::new(state, settings);
    println!(
        "Deploying {} (application {application}, group {}, deployment {deployment_id})",
        bundle.display(),
        args.group
    );
    let stop = Stop {
        abort: CancellationToken::new(),
        shutdown,
    };
    let record = engine.run(&req, &Progress, &stop).await?;

    println!();
    println!("Deployment {deployment_id} {}", record.status.as_str());
    if record.status != RecordStatus::Succeeded {
        if let Some(event) = &record.failed_event {
            println!("  failed event: {event}");
        }
        if let Some(ev) = record.events.last() {
            if let Some(script) = &ev.script {
                println!("  script:       {}", esc(script));
            }
            if let Some(code) = ev.exit_code {
                println!("  exit code:    {code}");
            }
        }
        if let Some(error) = &record.error {
            println!("  reason:       {}", esc(error));
        }
        if let Some(tail) = &record.log_tail {
            println!("  log tail:");
            for line in tail.lines() {
                println!("    {}", esc(line));
            }
        }
    }
    println!("  full log:     {}", record.log_path.display());
    Ok(match record.status {
        RecordStatus::Succeeded => Outcome::Ok,
        _ => Outcome::Failed,
    })
}

/// Reads a signature file (`hoist sign --out`): JSON of a manifest and its signature.
fn read_signature(path: &std::path::Path) -> anyhow::Result<SignedManifest> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .with_context(|| format!("--signature {}: cannot be read", path.display()))?;
    let mut text = String::new();
    file.take(MAX_SIGNATURE_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("--signature {}: cannot be read", path.display()))?;
    SignedManifest::from_file_text(&text)
        .map_err(|e| anyhow::anyhow!("--signature {}: {e}", path.display()))
}

/// Parses `--events`; empty means every event.
fn parse_events(names: &[String]) -> Result<Vec<LifecycleEvent>, String> {
    if names.is_empty() {
        return Ok(LifecycleEvent::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .map(|n| n.parse::<LifecycleEvent>())
        .collect()
}

/// Prints one line when an event starts and one when it ends.
pub(super) struct Progress;

impl Observer for Progress {
    fn event_started(&self, event: LifecycleEvent) {
        println!("  {event:<20} ...");
        let _ = std::io::stdout().flush();
    }

    fn script_started(&self, _event: LifecycleEvent, location: &str) {
        println!("  {:<20}   running {}", "", esc(location));
        let _ = std::io::stdout().flush();
    }

    fn event_ended(&self, r: &EventResult) {
        let word = match r.status {
            EventStatus::Succeeded => "ok",
            EventStatus::Failed => "FAILED",
            EventStatus::FailedIgnored => "failed (ignored)",
            EventStatus::Skipped => "skipped",
            EventStatus::Unknown => "unknown",
        };
        let detail = match (&r.status, &r.message) {
            (EventStatus::Succeeded, _) | (_, None) => String::new(),
            (_, Some(m)) => format!(": {}", esc(m)),
        };
        println!(
            "  {:<20} {word} in {}{detail}",
            r.event.as_str(),
            format_duration(r.duration)
        );
        let _ = std::io::stdout().flush();
    }
}

fn format_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
